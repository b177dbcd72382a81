"""
Fuzz target: plain-jelly decoding and unjellying of jelly expressions,
with registered types and classic copy classes.

The input is a small program that builds a jelly expression (plain tags,
references, registered wire names with right or wrong state, shared
constants such as empty tuples, atoms); the expression is sent as a
message, cut where the input says.  The C accelerator's plain-jelly
decoder and plain unjellier must give what the Python twin and the full
unjellier give (L{tests._parity}).

Run: C{python fuzz/unjelly.py -max_total_time=60 [corpus dir]}.
"""

from __future__ import annotations

import sys
from typing import Any

from _harness import Bytes, fuzz, instrumented

with instrumented():
    from pbext import codec
    from tests._parity import CLASSIC_TAGS, checkDecoding, checkUnjelly
    from tests.test_plaintypes import OUTGOING

TAGS = [
    b"unicode",
    b"tuple",
    b"list",
    b"dictionary",
    b"set",
    b"frozenset",
    b"None",
    b"boolean",
    b"reference",
    b"dereference",
    b"t.Flat",
    b"t.Point",
    b"t.Frozen",
    b"t.Positive",
    b"t.Versioned",
    b"t.AttrsPair",
    b"t.Plain",
    b"nonesuch",
]
WORDS = [b"true", b"false", b"", b"x", b"\xff", b"unicode", b"pbext.version"]
KEYS = [
    b"x",
    b"y",
    b"ratio",
    b"name",
    b"tags",
    b"data",
    b"flag",
    b"anything",
    b"value",
    b"count",
    b"label",
    b"left",
    b"right",
    b"size",
    b"note",
    b"pbext.version",
    b"other",
]


def build(reader: Bytes, depth: int = 0) -> Any:
    """
    The expression the next bytes describe.
    """
    op = reader.byte() % (16 if depth < 8 else 6)
    if op == 0:
        return reader.number(600) - 300
    if op == 1:
        return int.from_bytes(reader.take(reader.number(12)), "big") * (
            -1 if reader.byte() & 1 else 1
        )
    if op == 2:
        return reader.number(2000) / 7
    if op == 3:
        return WORDS[reader.number(len(WORDS) - 1)]
    if op == 4:
        return reader.take(reader.number(10))
    if op == 5:
        return [[b"tuple"], [b"frozenset"], [b"None"], [b"list"]][reader.number(3)]
    if op == 6:
        return [b"unicode", reader.take(reader.number(8))]
    if op in (7, 8, 9):
        tag = TAGS[reader.number(len(TAGS) - 1)]
        return [tag, *(build(reader, depth + 1) for _ in range(reader.number(4)))]
    if op == 10:
        pairs = [
            [build(reader, depth + 1), build(reader, depth + 1)]
            for _ in range(reader.number(3))
        ]
        return [b"dictionary", *pairs]
    if op == 11:
        return [b"reference", reader.number(3), build(reader, depth + 1)]
    if op == 12:
        return [b"dereference", reader.number(3)]
    # A registered type's state, right or wrong.
    tag = TAGS[10 + reader.number(7)]
    pairs = []
    for _ in range(reader.number(5)):
        key: Any = KEYS[reader.number(len(KEYS) - 1)]
        if reader.byte() & 3:
            key = [b"unicode", key]
        pairs.append([key, build(reader, depth + 1)])
    return [tag, [b"dictionary", *pairs]]


#: State keys for classic copies: fields, a method, a class-level flag,
#: special and malformed names.
CLASSIC_KEYS = [b"x", b"name", b"isAdmin", b"greet", b"__class__", b"a b", b"", b"_x"]


def classicCopies(reader: Bytes) -> Any:
    """
    A list of classic copies (L{tests._parity.CLASSIC_TAGS}) with right or
    wrong state, from the bytes left after the other elements (so that the
    inputs kept before it was added still build what they built).
    """
    copies: list[Any] = [b"list"]
    for _ in range(1 + reader.number(3)):
        tag = CLASSIC_TAGS[reader.number(len(CLASSIC_TAGS) - 1)]
        pairs = []
        for _ in range(reader.number(4)):
            key: Any = CLASSIC_KEYS[reader.number(len(CLASSIC_KEYS) - 1)]
            if reader.byte() & 3:
                key = [b"unicode", key]
            pairs.append([key, build(reader, 6)])
        state: Any = [b"dictionary", *pairs]
        if reader.byte() % 8 == 0:
            state = build(reader, 6)
        copies.append([tag, state])
    return copies


def check(data: bytes) -> None:
    """
    One input: see the module docstring.
    """
    reader = Bytes(data)
    cuts = [reader.number(2047) for _ in range(reader.number(3))]
    elements = [build(reader) for _ in range(1 + reader.number(2))]
    if reader.left():
        elements.append(classicCopies(reader))
    checkDecoding(
        codec._encodePython([b"answer", 1, *elements], OUTGOING), cuts, {}, True
    )
    for element in elements:
        checkUnjelly(element)


if __name__ == "__main__":
    fuzz(check, sys.argv)
