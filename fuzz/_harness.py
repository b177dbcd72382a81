"""
What pbext's fuzz targets share: a reader of the fuzzer's bytes that
needs no fuzzer (so that saved inputs replay in the test suite without
atheris), and the loop that runs a target under atheris.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable, ContextManager

#: This checkout, importable by the targets (they import pbext and tests).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


class Bytes:
    """
    Reads small numbers and byte strings off the front of an input; past
    its end every read gives zeros, so any input is a valid one.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        """
        How many bytes are left.
        """
        return max(len(self.data) - self.pos, 0)

    def byte(self) -> int:
        """
        The next byte, 0 at the end.
        """
        if self.pos >= len(self.data):
            self.pos += 1
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def number(self, most: int) -> int:
        """
        A number from 0 to C{most}, from one or two bytes.
        """
        if most < 256:
            return self.byte() % (most + 1)
        return (self.byte() << 8 | self.byte()) % (most + 1)

    def take(self, size: int) -> bytes:
        """
        The next C{size} bytes (fewer at the end).
        """
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def rest(self) -> bytes:
        """
        Every byte left.
        """
        return self.take(self.left())


def instrumented() -> ContextManager[Any]:
    """
    Import pbext and the test helpers inside this: run as a fuzz target,
    their code is instrumented for coverage (only theirs: instrumenting
    everything loaded takes minutes); replayed by the test suite, nothing
    is.
    """
    if os.environ.get("PBEXT_FUZZING") != "1":
        return contextlib.nullcontext()
    import atheris

    return atheris.instrument_imports(include=["pbext", "tests"])


def fuzz(check: Callable[[bytes], None], argv: list[str]) -> None:
    """
    Run C{check} under atheris with libFuzzer's command line C{argv}
    (C{-max_total_time=60}, a corpus directory, ...).
    """
    import atheris

    atheris.Setup(argv, check)
    atheris.Fuzz()
