"""
Every input kept in C{fuzz/corpus/} (the fuzz targets' seeds, and each
input that once found a crash or a difference between the C accelerator
and its Python twin) still passes its target's check.

Each target's inputs are replayed in a child process, so that a crash is
a test failure, not the end of the test run; atheris is not needed.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from pbext._accelerator import speedups

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")

REPLAY = """
import os, sys
sys.path.insert(0, os.path.join({root!r}, "fuzz"))
import {target}
for name in sorted(os.listdir({corpus!r})):
    print(name, flush=True)
    with open(os.path.join({corpus!r}, name), "rb") as f:
        {target}.check(f.read())
"""


class CorpusTests(SynchronousTestCase):
    """
    The fuzz targets' kept inputs, replayed.
    """

    def replay(self, target: str) -> None:
        if speedups is None:
            raise SkipTest("the C accelerator is not built")
        corpus = os.path.join(CORPUS, target)
        if not os.path.isdir(corpus) or not os.listdir(corpus):
            raise SkipTest(f"no kept inputs for {target}")
        script = REPLAY.format(root=ROOT, target=target, corpus=corpus)
        env = dict(os.environ)
        env.pop("PBEXT_FUZZING", None)
        done = subprocess.run(
            [sys.executable, "-X", "faulthandler", "-c", script],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=300,
        )
        self.assertEqual(
            done.returncode,
            0,
            f"{target}: the last input named failed:\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}",
        )

    def test_decoder(self) -> None:
        """
        The decoder target's kept inputs decode the same on both paths.
        """
        self.replay("decoder")

    def test_unjelly(self) -> None:
        """
        The plain-jelly target's kept inputs unjelly the same on both paths
        (among them a set of unhashable values once left as values).
        """
        self.replay("unjelly")

    def test_encoder(self) -> None:
        """
        The encoder target's kept inputs (values changed by their own
        getters while they are sent) neither crash nor desynchronise.
        """
        self.replay("encoder")
