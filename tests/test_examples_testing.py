"""
Run the downstream-style example suite in C{docs/examples/testing_app}, so
that the testing how-to cannot rot.

The example is an application of its own: its tests import C{greeter} from
their own directory and L{pbext.testing} from wherever pbext is installed.
They are run here exactly as the files' headers tell a reader to run them,
C{python -m twisted.trial test_greeter} from that directory, in a child
process.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "docs", "examples", "testing_app")

#: How long the example suite may take, in seconds, before it counts as hung.
TIMEOUT = 120

#: The command each example file's header gives.
COMMAND = "python -m twisted.trial test_greeter"


class ExampleSuiteTests(SynchronousTestCase):
    """
    Tests for the example application in C{docs/examples/testing_app}.
    """

    def test_suitePasses(self) -> None:
        """
        The example's trial suite passes when run from its directory.
        """
        env = dict(os.environ)
        # The working tree's pbext, as trial gives these tests.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [ROOT, env.get("PYTHONPATH", "")] if p
        )
        # Leave no __pycache__ or _trial_temp in the docs.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        temp = os.path.abspath(self.mktemp())
        argv = [sys.executable, "-m", "twisted.trial", "--temp-directory", temp]
        result = subprocess.run(
            argv + ["test_greeter", "test_greeter_service"],
            cwd=APP,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=TIMEOUT,
        )
        output = result.stdout.decode("utf-8", "replace")
        self.assertEqual(result.returncode, 0, output)
        self.assertIn("PASSED", output)
        self.assertNotIn("[SKIPPED]", output)

    def test_headers(self) -> None:
        """
        Each example file starts with a comment that says how to run its
        tests.
        """
        for name in ("greeter.py", "test_greeter.py"):
            with open(os.path.join(APP, name), encoding="utf-8") as f:
                header = f.read().split('"""', 1)[0]
            self.assertIn(COMMAND, header, name)
