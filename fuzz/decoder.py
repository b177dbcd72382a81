"""
Fuzz target: the banana decoder on arbitrary bytes.

The input chooses whether the C{b"pb"} vocabulary is on, whether a long
string is received in place (C{receiveBuffer}), low or default limits and
up to four places where the bytes are cut; the rest is the bytes.  The C
accelerator (raw and plain-jelly decoding with registered types) must
agree with the pure-Python decoder on every expression, every value the
broker would make of them and every framing error (see
L{tests._parity.checkDecoding}); anything else it raises, or a crash, is a
finding.

Run: C{python fuzz/decoder.py -max_total_time=60 [corpus dir]}.
"""

from __future__ import annotations

import sys

from _harness import Bytes, fuzz, instrumented

with instrumented():
    from tests._parity import LIMITS, checkDecoding


def check(data: bytes) -> None:
    """
    One input: see the module docstring.
    """
    reader = Bytes(data)
    flags = reader.byte()
    limits = {}
    if flags & 4:
        # Low limits, so that every one of them is reached.
        for name in LIMITS:
            limits[name] = reader.number(300) + 1
    cuts = [reader.number(4095) for _ in range(reader.number(4))]
    checkDecoding(reader.rest(), cuts, limits, bool(flags & 1), bool(flags & 2))


if __name__ == "__main__":
    fuzz(check, sys.argv)
