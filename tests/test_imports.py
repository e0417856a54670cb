"""No import cycles inside cosuda, read from the source with `ast` (nothing is imported).

Every import statement counts, wherever it is: module level, inside a function (a deferred
import that only hides a cycle) or under `if TYPE_CHECKING:` (a cycle in the design, even when
it is not one at run time). A package's `__init__` is a node of its own, named like the package.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cosuda"


def module_names(package_dir: Path) -> dict[str, Path]:
    """{dotted module name: file} for every .py file under `package_dir` (itself a package)."""
    root = package_dir.parent
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _known_prefix(name: str, modules) -> str | None:
    """The longest prefix of `name` that is a module of the package: `a.b.func` -> `a.b`."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _imported(node: ast.AST, module: str, is_package: bool, modules) -> set[str]:
    """The package's modules that one Import / ImportFrom statement of `module` loads."""
    if isinstance(node, ast.Import):
        return {m for m in (_known_prefix(alias.name, modules) for alias in node.names) if m}
    if node.level:
        # `from . import x` in a.b.c means a.b; in the package a.b (a.b/__init__) it means a.b itself
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    found = set()
    for alias in node.names:
        # `from .pkg import name` loads the submodule pkg.name when there is one, else pkg itself
        target = f"{base}.{alias.name}" if alias.name != "*" else base
        found.add(target if target in modules else _known_prefix(base, modules))
    return found - {None}


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """{module: the package's modules it imports} from every import statement of every file."""
    modules = module_names(package_dir)
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets |= _imported(node, module, is_package, modules)
        graph[module] = targets - {module}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(components)


def _shortest_cycle(graph: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one component (breadth first)."""
    previous, frontier = {}, [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & within):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"{start} is in a strongly connected component but on no cycle")


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles as paths [a, b, ..., a]: for each strongly connected component, the shortest
    cycle through each of its modules, each cycle once (rotated to start at its smallest name)."""
    cycles = []
    for component in strongly_connected(graph):
        within = set(component)
        for start in component:
            ring = _shortest_cycle(graph, start, within)[:-1]
            first = ring.index(min(ring))
            ring = ring[first:] + ring[:first]
            if ring + ring[:1] not in cycles:
                cycles.append(ring + ring[:1])
    return cycles


def describe(cycles: list[list[str]]) -> str:
    return "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_cosuda_has_no_import_cycles():
    cycles = find_cycles(import_graph(PACKAGE))
    assert not cycles, f"import cycles in cosuda (break each so the dependency goes one way):\n{describe(cycles)}"


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_graph_resolves_every_import_form_and_finds_a_planted_cycle(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from .a import f\n",
        "pkg/a.py": "import os\n\ndef f():\n    from .sub import b  # b is a submodule of sub\n    return b\n",
        "pkg/sub/__init__.py": "helper = 1\n",
        "pkg/sub/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import a\n",
        "pkg/c.py": "import pkg.sub.b\nfrom pkg.sub import helper\nfrom . import d\n",
        "pkg/d.py": "from .sub.b import *\nfrom .sub import nothing_there\n",
    })
    graph = import_graph(tmp_path / "pkg")
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.b"},  # os is outside the package
        "pkg.sub": set(),
        "pkg.sub.b": {"pkg.a"},  # `from .. import a` in pkg.sub.b is pkg.a
        "pkg.c": {"pkg.sub.b", "pkg.sub", "pkg.d"},
        "pkg.d": {"pkg.sub.b", "pkg.sub"},
    }
    cycles = find_cycles(graph)
    assert cycles == [["pkg.a", "pkg.sub.b", "pkg.a"]]
    assert describe(cycles) == "pkg.a -> pkg.sub.b -> pkg.a"


def test_every_cycle_of_a_larger_component_is_named():
    graph = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert find_cycles(graph) == [["a", "b", "a"], ["a", "b", "c", "a"]]
    del graph["b"]
    assert find_cycles(graph) == []
