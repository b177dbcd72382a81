"""
Sphinx configuration for pbext's documentation.

The narrative documentation (tutorial, how-tos, references) is Sphinx.  The
API reference is generated from pbext's docstrings by pydoctor, the way
Twisted's own documentation is built: pbext's docstrings are epytext
(L{...}, @param), which Sphinx's autodoc would render as noise.  pydoctor's
Sphinx extension runs pydoctor when the HTML builder starts and puts its
pages in api/ of the HTML output, in place of the placeholder page
docs/api/index.rst, so the "API reference" entry of the table of contents
opens pydoctor's index.  Narrative pages link to any documented name with
the usual :class:, :func: and :mod: roles, resolved through the inventory
pydoctor writes (and, for Twisted's names, the one built below).

Build it the way `tox -e docs` does:

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import sys
from contextlib import redirect_stdout
from io import StringIO
from typing import Any

from sphinx.util import logging as sphinxLogging

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from pbext import __version__  # noqa: E402

project = "pbext"
author = "The pbext developers"
copyright = "2026, The pbext developers"
release = __version__.public()
version = release

extensions = [
    "sphinx.ext.intersphinx",
    "pydoctor.sphinx_ext.build_apidocs",
]
exclude_patterns = ["_build"]
html_theme = "alabaster"
# Roles such as :class:`twisted.spread.pb.Root` link where an inventory
# knows the name and render as plain code where none does: the build must
# not depend on which inventories could be loaded (see below).
nitpicky = False

# No inventory is fetched over the network: CI has no network but package
# registries, and a build that fails when a web site is down is not a test
# of our documentation.  The inventories used are built locally below.
intersphinx_mapping: dict[str, Any] = {}

TWISTED_API = "https://docs.twisted.org/en/stable/api/"

# The API reference.  pydoctor writes {outdir}/api/ and an objects.inv that
# the extension registers with intersphinx under the URL "api/" (relative,
# so it works wherever the HTML is served).
pydoctor_args = [
    f"--project-name=pbext {release}",
    f"--project-version={release}",
    f"--project-base-dir={ROOT}",
    "--docformat=epytext",
    "--html-output={outdir}/api",
    # Private modules and names stay out of the reference.
    "--privacy=HIDDEN:pbext._*",
    "--privacy=HIDDEN:pbext.*._*",
    str(ROOT / "pbext"),
]
pydoctor_url_path = "api/"


# How pydoctor's warnings are treated.
#
# `sphinx-build -W` must fail on any Sphinx warning: a broken reference, a
# bad directive, a page missing from every toctree.  pydoctor's extension
# forwards every line pydoctor prints (one per docstring problem) as a Sphinx
# warning, so under -W any docstring problem anywhere in pbext would fail the
# documentation build.  Most of those lines are "Cannot find link target"
# for L{...} links to Python's standard library, which an offline build has
# no inventory for; the rest are docstring defects that belong to the code
# review of the module that has them, not to this build.  Making them fatal
# here would either keep the docs build red while modules land in parallel,
# or push people to turn -W off, which would hide the real Sphinx warnings.
#
# So pydoctor's lines are reported in the build output, each prefixed with
# "pydoctor:", with a count at the end, but as information, not warnings:
# every real Sphinx warning still fails the build.  Set PBEXT_STRICT_APIDOCS=1
# to get them as warnings (and so as errors under -W) when cleaning up
# docstrings.
_PYDOCTOR_LOGGER = "sphinx.pydoctor.sphinx_ext.build_apidocs"
_STRICT_APIDOCS = os.environ.get("PBEXT_STRICT_APIDOCS", "") not in ("", "0")


_log = sphinxLogging.getLogger("pbext")


class _PydoctorReport(logging.Filter):
    """
    Turn the warnings pydoctor's extension logs into counted information.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.count += 1
            record.levelno = logging.INFO
            record.levelname = "INFO"
            record.nonl = False  # type: ignore[attr-defined]
            record.msg = "pydoctor: " + str(record.msg)
        return True


def _twistedInventory(app: Any) -> pathlib.Path | None:
    """
    Return an intersphinx inventory of the installed Twisted's API, built
    with pydoctor once per Twisted version and kept in the user's cache
    directory, or L{None} if it cannot be built.

    pbext is a set of subclasses of Twisted's classes, so its reference
    should link to Twisted's; Twisted publishes no inventory in its wheel
    and the build may not use the network, so the inventory is made from
    the installed sources (about half a minute, the first time only).
    """
    import twisted

    cacheHome = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    cache = pathlib.Path(cacheHome) / "pbext-docs"
    inventory = cache / f"twisted-{twisted.__version__}-objects.inv"
    if inventory.exists():
        return inventory
    from pydoctor.driver import main as pydoctor

    work = cache / f"twisted-{twisted.__version__}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    _log.info(
        "building an inventory of Twisted %s's API for links (once)",
        twisted.__version__,
    )
    try:
        with redirect_stdout(StringIO()):
            pydoctor(
                [
                    "--make-intersphinx",
                    "--quiet",
                    "--docformat=epytext",
                    f"--html-output={work}",
                    "--project-name=Twisted",
                    os.path.dirname(twisted.__file__),
                ]
            )
        (work / "objects.inv").replace(inventory)
    except Exception as e:
        _log.info("no Twisted inventory (%s); links to Twisted stay plain text", e)
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return inventory


def _useTwistedInventory(app: Any) -> None:
    """
    Before pydoctor and intersphinx start, point both at the Twisted
    inventory, so pbext's API pages and the narrative pages link to
    Twisted's documentation.
    """
    if not app.builder or app.builder.name != "html":
        return
    inventory = _twistedInventory(app)
    if inventory is None:
        return
    app.config.pydoctor_args = [
        f"--intersphinx-file={inventory}::{TWISTED_API}",
        *app.config.pydoctor_args,
    ]
    app.config.intersphinx_mapping["twisted"] = (
        "twisted",
        (TWISTED_API, (str(inventory),)),
    )


_pydoctorReport = _PydoctorReport()


# Pages other engineers are writing.  A :doc: link to one of them resolves
# once the page exists and renders as its plain title until then, so the
# pages that link ahead to them do not fail the build meanwhile.  Only these
# names are forgiven: a mistyped link still fails -W.
PENDING_PAGES: frozenset[str] = frozenset()


def _linkToPendingPage(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    from sphinx.util import docname_join

    if node.get("reftype") != "doc":
        return None
    target = docname_join(node.get("refdoc", ""), node["reftarget"])
    if target in PENDING_PAGES and target not in env.found_docs:
        return contnode
    return None


def _reportPydoctor(app: Any, exception: Exception | None) -> None:
    if _pydoctorReport.count:
        _log.info(
            "pydoctor reported %d docstring problem(s), listed above with a "
            "'pydoctor:' prefix; they do not fail this build "
            "(PBEXT_STRICT_APIDOCS=1 makes them warnings).",
            _pydoctorReport.count,
        )


def setup(app: Any) -> dict[str, Any]:
    # Before build_apidocs (490) and intersphinx (500) read their settings.
    app.connect("builder-inited", _useTwistedInventory, priority=450)
    if not _STRICT_APIDOCS:
        logging.getLogger(_PYDOCTOR_LOGGER).addFilter(_pydoctorReport)
    app.connect("build-finished", _reportPydoctor)
    app.connect("missing-reference", _linkToPendingPage)
    return {"parallel_read_safe": True}
