"""Sphinx configuration of rnnfast's documentation.

Build (rnnfast installed, or compiled in place and on PYTHONPATH)::

    sphinx-build -W --keep-going -b html docs /tmp/rnnfast-html
    sphinx-build -W -b doctest docs /tmp/rnnfast-doctest

The build reads nothing from the network (no intersphinx). It writes only into its output
directory and into the git-ignored docs/auto_examples/ (the gallery) and docs/api/generated/
(the module pages of autosummary).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import rnnfast

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

project = "rnnfast"
author = "rnnfast developers"
copyright = "2026, rnnfast developers"
release = rnnfast.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "matplotlib.sphinxext.plot_directive",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/*.ipynb"]

# --- autodoc, napoleon, autosummary ----------------------------------------------------------
autodoc_default_options = {"members": True}
autodoc_member_order = "bysource"
# The docstrings say what each argument takes; the annotations (mostly Any: anything NumPy
# converts) would only clutter the signatures.
autodoc_typehints = "none"
autodoc_preserve_defaults = True  # dtype=np.float32, not <class ...>
autoclass_content = "class"
autosummary_generate = True
# A module's page documents the names in its __all__ (imported ones included) and links to
# the top-level page for those that rnnfast itself exports (see _templates/autosummary).
autosummary_ignore_module_all = False
autosummary_imported_members = False
autosummary_context = {"top_level": sorted(rnnfast.__all__)}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "x, h0, w_ih: ..." in Args stays one entry instead of one copy per name.
napoleon_use_param = False

# --- doctest: the docstrings' examples run as they are written ------------------------------
# Each group starts with NumPy as np, rnnfast, and the public names of rnnfast's public modules
# (a docstring's example may use its own module's names, as `python -m doctest` allows), then
# rnnfast's own names on top; in a scratch directory (examples that save a model must not
# write into the source tree).
doctest_global_setup = """
import importlib as _importlib
import os as _os
import tempfile as _tempfile

import numpy as np
import rnnfast

for _name in ("functional", "datasets", "diagnostics", "nn", "models", "train", "benchmark"):
    try:
        _module = _importlib.import_module("rnnfast." + _name)
    except ImportError:  # a module of another version of the layout
        continue
    _public = getattr(_module, "__all__", [n for n in vars(_module) if not n.startswith("_")])
    globals().update({n: getattr(_module, n) for n in _public})
from rnnfast import *

_doctest_cwd = _os.getcwd()
_os.chdir(_tempfile.mkdtemp(prefix="rnnfast-doctest-"))
"""
doctest_global_cleanup = """
_os.chdir(_doctest_cwd)
"""

# --- MyST -------------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# --- the gallery: examples/*.py run at every HTML build -------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "show_signature": False,
    "abort_on_example_error": True,
}

# --- the measurements page's plots (matplotlib's plot directive) ----------------------------
plot_basedir = str(DOCS)
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.figsize": (8, 4.2)}
plot_apply_rcparams = True

# --- HTML ---------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"rnnfast {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_static_path: list[str] = []
html_show_sourcelink = False

# No network: no intersphinx, no remote images, no version switcher.
os.environ.setdefault("MPLBACKEND", "Agg")


def _results_markdown() -> str:
    """bench/RESULTS.md for the measurements/results page, its headings one level up (the
    file goes from # to ###), so that the page's outline is # then ##."""
    text = (ROOT / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    return re.sub(r"^###\s", "## ", text, flags=re.MULTILINE)


def _source_read(app, docname: str, source: list[str]) -> None:
    if docname == "measurements/results":
        source[0] = source[0].replace("<!-- bench/RESULTS.md -->", _results_markdown())


def _builder_inited(app) -> None:
    # The doctest builder needs the pages, not the gallery's runs (the HTML build does them).
    if app.builder.name == "doctest":
        app.config.plot_gallery = "False"


def setup(app) -> None:
    app.connect("source-read", _source_read)
    app.connect("builder-inited", _builder_inited, priority=5)
