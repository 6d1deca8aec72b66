"""Sphinx configuration: ``python -m sphinx -W -b html docs docs/_build/html``.

Built by ``tests/docs/test_docs.py`` with warnings as errors.  No extension that needs
the network at build time (no intersphinx) or a system tool (no pandoc).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# document this checkout, whatever copy of the package is installed
sys.path.insert(0, str(ROOT))

import dask_asyncopt  # noqa: E402

project = "dask_asyncopt"
author = "dask_asyncopt developers"
copyright = "dask_asyncopt developers"
release = version = dask_asyncopt.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# myst: $...$ / $$...$$ math in the user guide, anchors for in-page links
myst_enable_extensions = ["dollarmath", "amsmath", "deflist"]
myst_heading_anchors = 3

# numpydoc renders the docstrings; autodoc lists the members (no per-member
# autosummary tables, which would need generated stub pages)
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"

html_theme = "alabaster"
html_title = f"dask_asyncopt {release}"
html_static_path = []
