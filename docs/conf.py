"""
Sphinx configuration for pbext's documentation.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from pbext import __version__  # noqa: E402

project = "pbext"
author = "The pbext developers"
copyright = "2026, The pbext developers"
release = __version__.public()
version = release

extensions = ["sphinx.ext.intersphinx"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
intersphinx_mapping: dict[str, tuple[str, None]] = {}
nitpicky = False
