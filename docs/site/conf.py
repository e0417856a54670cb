"""Sphinx configuration of the course site. Built by `bash scripts/site.sh` (cosuda/site.py
stages this folder with the notebooks under build/site/src): run it rather than sphinx-build."""
import importlib
import re
import shutil
from pathlib import Path

from sphinx.pycode import ModuleAnalyzer

project = "cosuda"
html_title = "cosuda course"
author = "cosuda contributors"
copyright = "cosuda contributors (code: MIT)"

extensions = [
    "myst_nb",                 # notebooks (.ipynb) and MyST markdown pages
    "sphinx.ext.autodoc",      # the API reference, from the docstrings
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
]
exclude_patterns = ["notebooks/_source", "**/.ipynb_checkpoints"]

# Notebooks are rendered from their stored outputs; nothing is executed here.
nb_execution_mode = "off"
nb_output_stderr = "remove"   # progress bars and warnings are noise on a reading page
nb_merge_streams = True
nb_ipywidgets_js = {}         # the widget manager would come from a CDN: widgets show their text form
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

default_role = "literal"      # docstrings write `name` for code, as in Markdown
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autosummary_generate = False

# A broken reference to a cosuda object is an error (the build runs with -W); references to
# other libraries' types in signatures (torch.Tensor, ...) are not ours to resolve offline.
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(?!cosuda\.).*")]

html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_css_files = ["cosuda.css"]
html_copy_source = False  # the pages link their notebooks (.py and .ipynb) already: no third copy
html_favicon = "_static/favicon.svg"  # else browsers ask for /favicon.ico and log a 404
html_context = {"default_mode": "auto"}  # else the theme logs "invalid theme mode" on a first visit
html_theme_options = {
    "home_page_in_toc": True,
    "use_download_button": True,
    "show_toc_level": 2,
}

# MathJax from the sphinx-mathjax-offline package, never from a CDN. Only what CommonHTML
# output of TeX needs is copied (about 5 MB of its 24 MB).
_MATHJAX = Path(importlib.import_module("sphinx-mathjax-offline").__file__).parent / "static" / "mathjax"
mathjax_path = "mathjax/tex-chtml.js"


def _copy_mathjax(app, exception):
    if exception is None and app.builder.format == "html":
        skip = shutil.ignore_patterns("sre", "svg", "*svg*.js", "mml-*.js", "tex-mml-*.js", "tex-chtml-full*.js",
                                      "node-main.js")
        shutil.copytree(_MATHJAX, Path(app.outdir) / "_static" / "mathjax", ignore=skip, dirs_exist_ok=True)


def _drop_type_docstring(app, what, name, obj, options, lines):
    # Data without a doc comment (`#:` or a string after it) would show the docstring of its
    # value's type (dict, ndarray, ...), which says nothing about the constant.
    if what == "data":
        module, attr = name.rsplit(".", 1)
        if ("", attr) not in ModuleAnalyzer.for_module(module).find_attr_docs():
            lines.clear()


def _plain_text_docstring(app, what, name, obj, options, lines):
    # The docstrings are plain text (aligned columns, formulas with `*` and `|`), not reST.
    # Shown like help() shows them: the summary paragraph as text, with the characters reST
    # would take for markup escaped outside `code` spans, and the rest verbatim.
    cut = lines.index("") if "" in lines else len(lines)
    for i in range(cut):
        parts = re.split(r"(``.*?``|`[^`]*`)", lines[i])
        parts[::2] = [re.sub(r"(\w)_(?=[\s.,:;!?)\]}'\"/-]|$)", r"\1\\_", re.sub(r"([*|])", r"\\\1", p))
                      for p in parts[::2]]
        lines[i] = "".join(parts)
    body = "\n".join(lines[cut:]).strip("\n").splitlines()
    lines[cut:] = ["", ".. code-block:: text", "   :class: docstring", ""] + ["   " + line for line in body] + [""] \
        if body else []


def _quiet_in_api(app, domain, node):
    # In the API page itself, a signature naming a cosuda class its module keeps private
    # (not in __all__) just stays unlinked; links from the lessons and the map must resolve.
    return node.get("refdoc") == "api" or None


def setup(app):
    app.connect("build-finished", _copy_mathjax)
    app.connect("warn-missing-reference", _quiet_in_api)
    app.connect("autodoc-process-docstring", _drop_type_docstring)
    app.connect("autodoc-process-docstring", _plain_text_docstring)
