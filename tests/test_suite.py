"""
Tests for C{tools/suite.py}: the parts of the suite name real tests, and
every test is in exactly one part.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def loadSuite() -> ModuleType:
    """
    Import C{tools/suite.py} (C{tools} is not a package).
    """
    path = os.path.join(ROOT, "tools", "suite.py")
    spec = importlib.util.spec_from_file_location("pbext_tools_suite", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PartsTests(SynchronousTestCase):
    """
    The quick, integration and end-to-end parts of the suite.
    """

    def setUp(self) -> None:
        self.suite = loadSuite()

    def test_namesExist(self) -> None:
        """
        Every name in C{INTEGRATION} and C{END_TO_END} is a test module, or
        a test class trial finds in one, so a renamed test cannot silently
        leave the part it was put in (and join the quick part).
        """
        modules = set(self.suite.allModules())
        for name in self.suite.INTEGRATION + self.suite.END_TO_END:
            if name in modules:
                continue
            module = name.rpartition(".")[0]
            self.assertIn(module, modules, name)
            self.assertIn(name, self.suite.testClasses(module))

    def test_partition(self) -> None:
        """
        No name is in two parts, nor a class of a module named whole; the
        quick part holds every test module and class the others do not.
        """
        named = self.suite.INTEGRATION + self.suite.END_TO_END
        self.assertEqual(len(set(named)), len(named))
        for name in named:
            module = name.rpartition(".")[0]
            self.assertNotIn(module, named, name)
        quick = self.suite.quickNames()
        self.assertFalse(set(quick) & set(named))
        covered = set(quick) | set(named)
        for module in self.suite.allModules():
            if module in covered:
                continue
            for testClass in self.suite.testClasses(module):
                self.assertIn(testClass, covered)

    def test_quickHasNoNetwork(self) -> None:
        """
        The quick part runs no hostile test over real sockets and no
        C{twistd} subprocess, but does run the in-memory tests of a module
        whose other tests do.
        """
        quick = set(self.suite.quickNames())
        for name in (
            "tests.test_hostile",
            "tests.test_cancellation",
            "tests.test_cancellation.RemoteCancellationTests",
        ):
            self.assertNotIn(name, quick)
        self.assertIn("tests.test_cancellation.CancellationTests", quick)
        self.assertIn("tests.test_hostile_inmemory", quick)
        self.assertIn("tests.test_broker", quick)


class MainTests(SynchronousTestCase):
    """
    What C{tools/suite.py}'s command line runs.
    """

    def setUp(self) -> None:
        self.suite = loadSuite()
        self.ran: list[object] = []
        self.statuses: dict[str, int] = {}

        def runPart(part: str) -> int:
            self.ran.append(part)
            return self.statuses.get(part, 0)

        def trial(names: list[str], workers: int = 1) -> int:
            self.ran.append(names)
            return 0

        self.suite.runPart = runPart
        self.suite.trial = trial

    def test_parts(self) -> None:
        """
        No argument runs the quick part; C{all} runs the three parts in
        order; several part names run each, in the order given.
        """
        self.assertEqual(self.suite.main([]), 0)
        self.assertEqual(self.suite.main(["all"]), 0)
        self.assertEqual(self.suite.main(["quick", "integration"]), 0)
        self.assertEqual(
            self.ran,
            ["quick", "quick", "integration", "endtoend", "quick", "integration"],
        )

    def test_failingPart(self) -> None:
        """
        A failing part does not stop the next; the status is the first
        failing part's.
        """
        self.statuses = {"quick": 1, "integration": 2}
        self.assertEqual(self.suite.main(["all"]), 1)
        self.assertEqual(self.ran, ["quick", "integration", "endtoend"])

    def test_names(self) -> None:
        """
        Anything but part names is given to trial as test names.
        """
        self.assertEqual(self.suite.main(["tests.test_broker", "quick"]), 0)
        self.assertEqual(self.ran, [["tests.test_broker", "quick"]])
