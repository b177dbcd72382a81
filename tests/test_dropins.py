"""
Tests for the cost of pbext's twistd dropins: a plugin scan imports
pbext's package and its interfaces, nothing more.
"""

from __future__ import annotations

import json
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

import pbext
from tests._process import _environment

#: Run in a fresh interpreter: scan for plugins the way twistd's commands
#: and C{--policy} lookups do, then name the modules the scan imported.
_SCAN = """
import json, sys
from twisted.plugin import IPlugin, getPlugins
from twisted.application.service import IServiceMaker
from pbext.interfaces import IPolicyPlugin
# Every plugin of every dropin, as a scan that rebuilds the cache imports
# them; then the ones twistd and --policy ask for.
list(getPlugins(IPlugin))
list(getPlugins(IServiceMaker))
policies = sorted(p.name for p in getPlugins(IPolicyPlugin))
print(json.dumps({
    "pbext": sorted(m for m in sys.modules if m == "pbext" or m.startswith("pbext.")),
    "reactor": "twisted.internet.reactor" in sys.modules,
    "policies": policies,
}))
"""

#: The same for C{twistd --help}, which lists every command.
_HELP = """
import atexit, json, sys
def report():
    sys.stderr.write("\\nMODULES " + json.dumps(sorted(
        m for m in sys.modules if m == "pbext" or m.startswith("pbext.")
    )) + "\\n")
atexit.register(report)
sys.argv = ["twistd", "--help"]
from twisted.scripts.twistd import run
run()
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_environment({"PBEXT_REQUIRE_SPEEDUPS": ""}),
        timeout=120,
    )


class DropinCostTests(SynchronousTestCase):
    """
    Scanning for plugins costs pbext two small modules.
    """

    def test_scan(self) -> None:
        """
        A scan that imports every dropin, and finds pbext's command and
        policies, imports exactly C{pbext} (whose public names load lazily)
        and C{pbext.interfaces}: not the broker, codec, login, security
        module or C accelerator, and not the reactor.
        """
        done = _run(_SCAN)
        self.assertEqual(done.returncode, 0, done.stderr)
        report = json.loads(done.stdout.strip().splitlines()[-1])
        self.assertEqual(report["pbext"], ["pbext", "pbext.interfaces"])
        self.assertFalse(report["reactor"])
        self.assertTrue({"classic", "default", "strict"} <= set(report["policies"]))

    def test_twistdHelp(self) -> None:
        """
        C{twistd --help} lists C{pbserver} and imports no pbext module beyond
        what the dropins need.
        """
        done = _run(_HELP)
        self.assertIn("pbserver", done.stdout)
        [line] = [x for x in done.stderr.splitlines() if x.startswith("MODULES ")]
        modules = set(json.loads(line[len("MODULES ") :]))
        self.assertLessEqual(modules, {"pbext", "pbext.interfaces"})


class LazyPackageTests(SynchronousTestCase):
    """
    The package's public names load on first use.
    """

    def test_allNames(self) -> None:
        """
        Every name of C{pbext.__all__} can be read, is listed by C{dir()},
        and is the object its module defines.
        """
        from pbext import server

        for name in pbext.__all__:
            self.assertIsNotNone(getattr(pbext, name), name)
            self.assertIn(name, dir(pbext))
        self.assertIs(pbext.PBServerFactory, server.PBServerFactory)

    def test_unknownName(self) -> None:
        """
        An unknown name is an L{AttributeError}, as for any module.
        """
        self.assertRaises(AttributeError, getattr, pbext, "NoSuchName")
        self.assertFalse(hasattr(pbext, "alsoMissing"))
