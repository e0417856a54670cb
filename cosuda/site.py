"""Builds the course site: every notebook rendered from its stored outputs, plus the API reference.

    python -m cosuda.site --out _site          # what scripts/site.sh runs

Sphinx reads a staged copy of `docs/site/` (under `build/site/src`, git-ignored) into which
this module copies `notebooks/*.ipynb` and their `.py` pairs, adding to each notebook page a
box that links its source notebook and the API reference of the `cosuda` names it uses, and
turning `# Figure: <caption>` comments in code cells into figure captions. Nothing is executed
and nothing is downloaded.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parents[1]

# The modules of the API reference (docs/site/api.md). A package also brings its public
# submodules. A module that fails to import stops the build: a silently missing section
# would make the notebook pages' API links point nowhere.
API_MODULES = ("cosuda.labels", "cosuda.data", "cosuda.synthetic", "cosuda.models", "cosuda.method",
               "cosuda.method_fast", "cosuda.pseudo", "cosuda.metrics", "cosuda.alignment", "cosuda.adversarial",
               "cosuda.paper_results", "cosuda.config", "cosuda.uda", "cosuda.train", "cosuda.runs",
               "cosuda.evaluate", "cosuda.predict", "cosuda.distributed", "cosuda.provenance", "cosuda.jobs",
               "cosuda.executors", "cosuda.cluster", "cosuda.main_job", "cosuda.results", "cosuda.runner",
               "cosuda.toy2d", "cosuda.plots")

FIGURE_COMMENT = re.compile(r"^\s*#\s*Figure:\s*(.+?)\s*$", re.MULTILINE)
API_MARKER = "<!-- api-modules -->"


def api_catalog(names=API_MODULES) -> dict[str, dict[str, str]]:
    """{module: {public name: "object" | "data"}} of what the API reference documents, with the
    public submodules of packages added. Every module is imported: one that fails stops the
    build here, naming it. A module's `__all__` decides what is public when it has one;
    classes and functions count where they are defined, data where it is assigned."""
    catalog = {}
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception as error:
            raise ImportError(f"API reference: `import {name}` failed ({type(error).__name__}: {error}). "
                              f"Fix the module, or remove it from API_MODULES in cosuda/site.py.") from error
        assigned = set()  # names given a value at the top level of the module's source
        for node in ast.parse(inspect.getsource(module)).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) and node.value is not None else []
            assigned |= {t.id for t in targets if isinstance(t, ast.Name)}
        public = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
        catalog[name] = {}
        for n in public:
            obj = getattr(module, n)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                if obj.__module__ == name:
                    catalog[name][n] = "object"
            elif n in assigned and not inspect.ismodule(obj):
                catalog[name][n] = "data"
        if hasattr(module, "__path__"):  # a package: document its submodules too
            subs = sorted(m.name for m in pkgutil.iter_modules(module.__path__) if not m.name.startswith("_"))
            catalog.update(api_catalog([f"{name}.{s}" for s in subs]))
    return catalog


def _code(source: str) -> str:
    # IPython magics and shell escapes are not Python: blank them so `ast` can parse the rest.
    # A cell magic other than these runs another language (%%bash, %%html...): skip the cell.
    if source.lstrip().startswith("%%") and not source.lstrip().startswith(("%%time", "%%capture")):
        return ""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def api_used(sources: list[str]) -> list[str]:
    """Dotted `cosuda.*` names that code cells import or reach through an imported module, sorted.

    Only what the source spells out is found (`from cosuda.method import cosine_loss`,
    `import cosuda.method as m; m.process_a(...)`, `cosuda.labels.PALETTE`); a chain stops
    before its first `_` name (`m.cosine_loss.__name__` uses `cosuda.method.cosine_loss`).
    """
    aliases, used = {}, set()  # local name -> dotted cosuda name it stands for
    trees = [ast.parse(_code(s)) for s in sources]
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "cosuda":
                        aliases[a.asname or "cosuda"] = a.name if a.asname else "cosuda"
                        used.add(a.name)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] == "cosuda":
                for a in node.names:  # `import *` counts as using the module
                    name = node.module if a.name == "*" else f"{node.module}.{a.name}"
                    aliases[a.asname or a.name] = name
                    used.add(name)
    for tree in trees:
        inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and id(node) not in inner:  # a whole chain a.b.c
                parts, head = [], node
                while isinstance(head, ast.Attribute):
                    parts.insert(0, head.attr)
                    head = head.value
                if isinstance(head, ast.Name) and head.id in aliases:
                    cut = next((i for i, p in enumerate(parts) if p.startswith("_")), len(parts))
                    used.add(".".join([aliases[head.id]] + parts[:cut]))
    return sorted(n for n in used if n != "cosuda" and not any(p.startswith("_") for p in n.split(".")))


def reference(name: str, catalog: dict[str, dict[str, str]]) -> str:
    """MyST text for one used name: a cross-reference to its entry in the API reference, or the
    name as plain code when it has none (an instance attribute, a name the module keeps private)."""
    parts, plain = name.split("."), f"`{name}`"
    for cut in range(len(parts), 0, -1):  # the longest importable prefix is the module
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
            break
        except ModuleNotFoundError:
            continue
    module, rest = obj.__name__, parts[cut:]
    for attr in rest:
        if not hasattr(obj, attr):
            return plain
        obj = getattr(obj, attr)
    if inspect.ismodule(obj):
        return f"{{py:mod}}`{obj.__name__}`" if obj.__name__ in catalog else plain
    if inspect.isclass(obj) or inspect.isfunction(obj):  # documented where it is defined
        module, rest = obj.__module__, obj.__qualname__.split(".")
    if rest and rest[0] in catalog.get(module, {}):
        if catalog[module][rest[0]] == "data":  # `CLASS_NAMES.index`: the entry is CLASS_NAMES
            rest = rest[:1]
        return f"{{py:obj}}`{module}.{'.'.join(rest)}`"
    return plain


def figure_caption(source: str) -> str | None:
    """The caption a code cell declares with a `# Figure: <caption>` comment line, if any."""
    found = FIGURE_COMMENT.findall(source)
    return found[-1] if found else None


def has_figure(cell) -> bool:
    """Whether a code cell has a stored image output."""
    return any(k.startswith("image/") for o in cell.get("outputs", []) for k in o.get("data", {}))


def prepare_notebook(nb, stem: str, catalog: dict[str, dict[str, str]]) -> list[str]:
    """Turns `# Figure:` comments into captions (myst-nb `mystnb.figure` cell metadata) and adds
    the "source and API" box after the title cell, in place. Returns the figure cells without
    a caption, as "<stem>.ipynb cell <index>", so the build can list them."""
    uncaptioned = []
    for i, cell in enumerate(nb.cells):
        caption = figure_caption(cell.source) if cell.cell_type == "code" else None
        if caption and not has_figure(cell):
            raise ValueError(f"notebooks/{stem}.ipynb cell {i} has `# Figure: {caption}` but no stored image "
                             f"output. Run the notebook and save it with its outputs, or drop the comment.")
        if caption:
            cell.metadata.setdefault("mystnb", {})["figure"] = {"caption": caption}
        elif cell.cell_type == "code" and has_figure(cell):
            uncaptioned.append(f"{stem}.ipynb cell {i}")
    try:
        used = api_used([c.source for c in nb.cells if c.cell_type == "code"])
    except SyntaxError as error:
        raise ValueError(f"notebooks/{stem}.ipynb: a code cell is not Python ({error.msg}, line {error.lineno}: "
                         f"{(error.text or '').strip()!r}); the site scans code cells for the cosuda API "
                         f"they use.") from error
    api = ", ".join(dict.fromkeys(reference(n, catalog) for n in used)) or "none"
    box = nbformat.v4.new_markdown_cell(
        "```{admonition} Source and API\n:class: seealso\n\n"
        f"**Source notebook:** {{download}}`{stem}.py <_source/{stem}.py>` (the reviewed jupytext source; "
        f"JupyterLab opens it as a notebook) · {{download}}`{stem}.ipynb <_source/{stem}.ipynb>` "
        "(with the outputs shown here)\n\n"
        f"**API used on this page:** {api}\n```")
    titled = bool(nb.cells) and nb.cells[0].cell_type == "markdown" and nb.cells[0].source.lstrip().startswith("#")
    nb.cells.insert(1 if titled else 0, box)
    return uncaptioned


def link_existing(markdown: str, stems: set[str]) -> str:
    """Turns `[name](notebooks/name.ipynb)` links to notebooks that do not exist (yet) into plain
    text, so the landing page's map never carries a broken link."""
    def keep(m):
        return m.group(0) if m.group(2) in stems else f"{m.group(1)} *(coming)*"
    return re.sub(r"\[([^\]]+)\]\(notebooks/([\w-]+)\.ipynb\)", keep, markdown)


def api_sections(catalog: dict[str, dict[str, str]]) -> str:
    """The MyST text of the API reference: an autosummary of the modules, then one section each.
    autodoc skips module-level data that has no doc comment, so data is listed explicitly
    (its value shown when short): notebooks and the landing page link to PALETTE, VARIANTS..."""
    out = "```{eval-rst}\n.. autosummary::\n\n" + "".join(f"   {m}\n" for m in catalog) + "```\n"
    for m, names in catalog.items():
        module = importlib.import_module(m)
        data = [n for n, kind in names.items() if kind == "data"]
        # autodoc documents names that `__all__` re-exports (cosuda.models.FCN8s) a second time;
        # they are documented once, in the module that defines them.
        again = [n for n in getattr(module, "__all__", []) if n not in names
                 and getattr(getattr(module, n), "__module__", None) in catalog]
        rst = f".. automodule:: {m}\n   :members:\n   :undoc-members:\n   :show-inheritance:\n"
        if data or again:
            rst += f"   :exclude-members: {', '.join(data + again)}\n"
        for n in data:
            short = len(repr(getattr(module, n))) <= 80
            rst += f"\n.. autodata:: {m}.{n}\n" + ("" if short else "   :no-value:\n")
        out += f"\n## `{m}`\n\n```{{eval-rst}}\n{rst}```\n"
    return out


def stage(repo: Path, src: Path) -> list[str]:
    """Writes the Sphinx source tree into `src`: docs/site, the API sections, and every
    notebooks/*.ipynb with its .py pair. Returns the figure cells without a caption."""
    site, nbdir = repo / "docs" / "site", repo / "notebooks"
    if not (site / "conf.py").is_file():
        raise FileNotFoundError(f"{site / 'conf.py'} is missing: build from a cosuda checkout (--repo).")
    catalog = api_catalog()
    notebooks = sorted(nbdir.glob("*.ipynb"))
    stems = {p.stem for p in notebooks}
    files, uncaptioned = {}, []  # path relative to src -> bytes
    for f in sorted(site.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            files[f.relative_to(site)] = f.read_bytes()
    index = link_existing(files[Path("index.md")].decode(), stems)
    if not stems:  # a fresh checkout may have no notebook yet; an empty toctree glob is a warning
        index = index.replace("\nnotebooks/*\n", "\n")
    files[Path("index.md")] = index.encode()
    files[Path("api.md")] = files[Path("api.md")].decode().replace(API_MARKER, api_sections(catalog)).encode()
    for nb_path in notebooks:
        py = nb_path.with_suffix(".py")
        if not py.is_file():
            raise FileNotFoundError(f"{py} is missing: every notebook is a jupytext pair "
                                    f"(jupytext --to py:percent {nb_path}).")
        nb = nbformat.read(nb_path, as_version=4)
        uncaptioned += prepare_notebook(nb, nb_path.stem, catalog)
        files[Path("notebooks", nb_path.name)] = nbformat.writes(nb).encode()
        for f in (py, nb_path):  # the originals, offered for download on the page
            files[Path("notebooks", "_source", f.name)] = f.read_bytes()
    shutil.rmtree(src, ignore_errors=True)  # a notebook deleted since the last build must not linger
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    return uncaptioned


def build(out: Path, repo: Path = REPO_ROOT, work: Path | None = None) -> float:
    """Stages the sources under `work` and runs sphinx-build into `out`, from scratch (-E), with
    every Sphinx warning an error. Returns the seconds taken."""
    start = time.perf_counter()
    work = work or repo / "build" / "site"
    for cell in stage(repo, work / "src"):
        print(f"[site] figure without a caption (add a `# Figure: ...` line to the cell): {cell}")
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-E", "-q", "-W", "--keep-going",
           "-d", str(work / "doctrees"), str(work / "src"), str(out)]
    # Sphinx imports the package the same way this process did, wherever it runs from.
    package_root = str(Path(importlib.import_module("cosuda").__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    if subprocess.run(cmd, env=env).returncode:
        raise RuntimeError(f"[site] sphinx-build failed: each warning above is an error; fix it in the file it "
                           f"names (notebooks and pages are staged in {work / 'src'}).")
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "_site", help="static site folder")
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="cosuda checkout to build from")
    parser.add_argument("--work", type=Path, default=None, help="staging folder (default REPO/build/site)")
    args = parser.parse_args(argv)
    try:
        seconds = build(args.out.resolve(), args.repo.resolve(), args.work)
    except (RuntimeError, ImportError, FileNotFoundError, ValueError) as error:
        sys.exit(str(error))
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"[site] built {args.out} in {seconds:.1f} s, {size / 1e6:.1f} MB; open {args.out / 'index.html'}")


if __name__ == "__main__":
    main()
