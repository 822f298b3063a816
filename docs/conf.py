"""Sphinx configuration of the repair_jax manual (Sphinx + MyST-NB, the optax / flax convention)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))  # the local extension that generates the results pages

project = "repair_jax"
author = "repair_jax developers"
copyright = "2026, repair_jax developers"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "generate_pages",
]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
autosummary_generate = True
autodoc_default_options = {"members": True, "undoc-members": False}
autodoc_typehints = "none"
autodoc_member_order = "bysource"
# the notebooks run at smoke size during the build (REPAIR_JAX_SMOKE is set by generate_pages)
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_merge_streams = True
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["mystnb.unknown_mime_type"]

html_theme = "sphinx_book_theme"
html_title = "repair_jax"
html_theme_options = {"repository_url": "", "use_repository_button": False, "show_toc_level": 2}
html_static_path: list[str] = []
nitpicky = False

# Offline rendering of the formulas (e.g. `make screenshots`): a local MathJax 2, such as Debian's
# libjs-mathjax, instead of the CDN's MathJax 3 that the published site loads.
if os.environ.get("REPAIR_JAX_DOCS_MATHJAX"):
    mathjax_path = "file://" + os.environ["REPAIR_JAX_DOCS_MATHJAX"] + "?config=TeX-AMS-MML_HTMLorMML"
    mathjax2_config = {"tex2jax": {"processClass": "math|tex2jax_process", "ignoreClass": "tex2jax_ignore|mathjax_ignore"}}
