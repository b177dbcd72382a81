"""
Fuzz target: the plain-jelly encoder on odd values.

The input is a small program that builds a value: builtins, registered
copyable objects, classic copies, containers shared or in cycles, strings
that are not valid UTF-8, and registered objects whose field reads run
code that changes what is being sent (clears, shortens or grows a list or a dict,
drops the last reference to an object being sent, or raises).  Each of
the C accelerator's entry points (C{jellyPlain}, C{isPlain},
C{encodeIfPlain}, C{preparePlain}, C{encode} of C{Jellied}) is run on a
freshly built value.

Where no field read changed anything, every entry point must agree with
the Python twin (C{pbext._jelly._jellyPlainPython} and
C{pbext.codec._encodePython}).  Where one did, the only requirement is
safety: no crash, and whatever bytes are produced decode as exactly one
message (a wrong list header desynchronises a peer).

Run: C{python fuzz/encoder.py -max_total_time=60 [corpus dir]}.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Callable

from _harness import Bytes, fuzz, instrumented
from twisted.spread import pb

with instrumented():
    from pbext import _jelly, codec
    from pbext._accelerator import speedups
    from pbext._classiccopies import sendSpec
    from pbext.copyable import CopyableRegistry
    from pbext.security import defaultPolicy
    from tests._parity import Mismatch, _same
    from tests.test_plaintypes import OUTGOING, Flat


@dataclasses.dataclass
class Mutator:
    """
    A registered copyable whose field reads run an action first.
    """

    first: Any
    second: Any

    def __getattribute__(self, name: str) -> Any:
        if name in ("first", "second"):
            action = _actions.get(id(self))
            if action is not None:
                action()
        return object.__getattribute__(self, name)


class ClassicSent(pb.Copyable):
    """
    A classic copyable keeping Twisted's methods, its attributes set by
    the fuzzer.
    """


#: Attribute names of classic copies: short ASCII (kept by the encoder),
#: not ASCII, and too long to keep.
CLASSIC_KEYS = ["x", "y", "name", "\u00e9t\u00e9", "k" * 300, "other"]


#: What reading a Mutator's fields does, by id: set while a value is built.
_actions: dict[int, Callable[[], None]] = {}
#: How many actions changed something during the current walk.
_changes = [0]


def _registry() -> Any:
    registry = CopyableRegistry()
    registry.register(Flat, "t.Flat")
    registry.register(Mutator, "t.Mutator")
    return registry


REGISTRY = _registry()
TASTER = defaultPolicy().forConnection((REGISTRY,))
SEND = {
    **(_jelly.PlainTypes((REGISTRY,), TASTER).send or {}),
    ClassicSent: sendSpec(ClassicSent),
}
LIMIT = 1 << 20


class Builder:
    """
    Builds a value from the fuzzer's bytes; the same bytes build the same
    value again (each entry point gets a fresh one).
    """

    def __init__(self, data: bytes) -> None:
        self.reader = Bytes(data)
        self.containers: list[Any] = []
        self.mutators: list[tuple[Mutator, int, int]] = []
        self.keep: list[Any] = []

    def atom(self) -> Any:
        reader = self.reader
        op = reader.byte() % 9
        if op == 0:
            return reader.number(600) - 300
        if op == 1:
            return int.from_bytes(reader.take(reader.number(12)), "big")
        if op == 2:
            return reader.number(2000) / 3
        if op == 3:
            return reader.take(reader.number(8)).decode("latin-1")
        if op == 4:
            return "\ud800x"  # not encodable as UTF-8
        if op == 5:
            return reader.take(reader.number(8))
        if op == 6:
            return bool(reader.byte() & 1)
        if op == 7:
            return None
        return ()

    def value(self, depth: int = 0) -> Any:
        reader = self.reader
        op = reader.byte() % (10 if depth < 6 else 1)
        if op == 0:
            return self.atom()
        if op in (1, 2):
            made: Any = [self.value(depth + 1) for _ in range(reader.number(5))]
            if op == 2:
                made = tuple(made)
        elif op == 3:
            made = {}
            for _ in range(reader.number(4)):
                made[self.atom()] = self.value(depth + 1)
        elif op == 4:
            made = {self.atom() for _ in range(reader.number(4))}
            if reader.byte() & 1:
                made = frozenset(made)
        elif op == 5:
            return Flat(reader.number(100), 0.5, "n", b"d", True)
        elif op in (6, 7):
            mutator = Mutator(self.value(depth + 1), self.value(depth + 1))
            # Its action, on a container made so far (or made later).
            self.mutators.append((mutator, reader.byte(), reader.byte()))
            return mutator
        elif op == 8 and self.containers:
            # The same container again: shared, or a cycle.
            return self.containers[reader.number(len(self.containers) - 1)]
        else:
            return self.atom()
        self.containers.append(made)
        return made

    def classicCopies(self) -> list[Any]:
        """
        Classic copies, most with the keys of the one before, their
        state dictionaries among the containers actions change.
        """
        reader = self.reader
        copies: list[Any] = []
        keys: list[str] = []
        for _ in range(1 + reader.number(4)):
            if reader.byte() % 4 == 0:
                keys = [
                    CLASSIC_KEYS[reader.number(len(CLASSIC_KEYS) - 1)]
                    for _ in range(reader.number(4))
                ]
            copy = ClassicSent()
            for key in keys:
                setattr(copy, key, self.value(4))
            if reader.byte() % 4 == 0:
                self.containers.append(vars(copy))
            copies.append(copy)
        return copies

    def build(self) -> Any:
        value = self.value()
        if self.reader.left():
            # From the bytes left after the value, so that the inputs kept
            # before this was added still build what they built.
            value = [value, *self.classicCopies()]
        for mutator, kind, which in self.mutators:
            _actions[id(mutator)] = self.action(kind, which)
        # Held for the walk: an action may drop the last reference the
        # value holds, and the ids in _actions must stay unique.
        self.keep = [value, self.containers, [m for m, _, _ in self.mutators]]
        return value

    def action(self, kind: int, which: int) -> Callable[[], None]:
        containers = self.containers
        kind %= 8
        if kind == 0 or not containers:
            return lambda: None
        target = containers[which % len(containers)]

        def act() -> None:
            _changes[0] += 1
            if kind == 7:
                raise ValueError("a getter that fails")
            if isinstance(target, list):
                if kind == 1:
                    target.clear()
                elif kind == 2:
                    del target[len(target) // 2 :]
                elif kind == 3:
                    target.extend(range(8))
                elif kind == 4:
                    # Drop what the list held (perhaps the last reference).
                    target[:] = [0] * len(target)
                elif kind == 5:
                    target.append(target)
                else:
                    target.insert(0, {"new": [1]})
            elif isinstance(target, dict):
                if kind in (1, 4):
                    target.clear()
                elif kind == 2 and target:
                    del target[next(iter(target))]
                else:
                    for i in range(8):
                        target[f"grown{i}"] = [i]
            elif isinstance(target, set):
                if kind == 1:
                    target.clear()
                else:
                    target.update(range(100, 108))
            else:
                _changes[0] -= 1

        return act


def outcome(f: Callable[[Any], Any], data: bytes) -> tuple[Any, int]:
    """
    C{f} on a value built from C{data}: C{(("ok", result) or ("error",
    type name), changes made during the walk)}.
    """
    builder = Builder(data)
    value = builder.build()
    _changes[0] = 0
    try:
        result: Any = ("ok", f(value))
    except Exception as e:
        result = ("error", type(e).__name__)
    changed = _changes[0]
    _actions.clear()
    builder.keep = []
    return result, changed


def _bytes(encoded: Any) -> bytes:
    """
    The bytes of C{encode}'s, C{encodePieces}' or an C{Encoded}'s output.
    """
    if type(encoded) is bytes:
        return encoded
    if type(encoded) is not list:
        encoded = encoded.pieces
    return b"".join(bytes(piece) for piece in encoded)


def oneMessage(data: bytes) -> None:
    """
    C{data} decodes as exactly one message.
    """
    decoder = codec.makeDecoder(
        vocabulary={v: k for k, v in OUTGOING.items()},
        accelerated=False,
        maxMessageTokens=1 << 30,
        maxMessageBytes=1 << 30,
    )
    try:
        messages = decoder.feed(data)
    except codec.FramingError as e:
        raise Mismatch(f"the encoder wrote bytes that do not decode: {e}")
    if len(messages) != 1 or decoder.messageStarted:
        raise Mismatch(f"the encoder wrote {len(messages)} messages, not one")


def check(data: bytes) -> None:
    """
    One input: see the module docstring.  With C{PBEXT_FUZZ_CRASHES_ONLY=1}
    in the environment, differences are ignored and only crashes count
    (to look past a known difference).
    """
    if speedups is None:
        return
    if os.environ.get("PBEXT_FUZZ_CRASHES_ONLY") == "1":
        try:
            compare(data)
        except Mismatch:
            pass
        return
    compare(data)


def compare(data: bytes) -> None:
    """
    Run every entry point on C{data}'s value; raise L{Mismatch} on a
    difference from the twin, or on bytes that are not one message.
    """

    def python(value: Any) -> Any:
        sexp = _jelly._jellyPlainPython(value, SEND)
        if sexp is _jelly.NOT_PLAIN:
            return None
        return codec._encodePython([b"answer", 1, sexp], OUTGOING)

    def encodeIfPlain(value: Any) -> Any:
        encoded = speedups.encodeIfPlain(value, SEND, OUTGOING, LIMIT)
        if encoded is None:
            return None
        oneMessage(_bytes(speedups.encodePieces([encoded], OUTGOING)))
        return _bytes(speedups.encodePieces([b"answer", 1, encoded], OUTGOING))

    def preparePlain(value: Any) -> Any:
        prepared = speedups.preparePlain(value, SEND, OUTGOING, LIMIT)
        if prepared is None:
            return None
        return _bytes(speedups.encodePieces([b"answer", 1, prepared], OUTGOING))

    def jellied(value: Any) -> Any:
        message = [b"answer", 1, speedups.Jellied(value, SEND)]
        try:
            return codec.encode(message, OUTGOING)
        except speedups.NotPlainError:
            return None

    expected, changed = outcome(python, data)
    jellyPy, _ = outcome(lambda v: _jelly._jellyPlainPython(v, SEND), data)
    jellyC, changedC = outcome(lambda v: speedups.jellyPlain(v, SEND), data)
    if not changed and not changedC and not _same(jellyC, jellyPy):
        raise Mismatch(f"jellyPlain: C {jellyC!r} / Python {jellyPy!r}")
    plainC, changedC = outcome(lambda v: speedups.isPlain(v, SEND), data)
    if not changed and not changedC and expected[0] == "ok":
        if plainC != ("ok", expected[1] is not None):
            raise Mismatch(f"isPlain: {plainC!r} / Python {expected!r}")
    for f in (encodeIfPlain, preparePlain, jellied):
        got, changedC = outcome(f, data)
        if got[0] == "ok" and got[1] is not None:
            oneMessage(got[1])
        # Giving up (None: the general path then runs, and raises as the
        # twin did) is always allowed.
        gaveUp = expected[0] == "error" and got == ("ok", None)
        if not changed and not changedC and got != expected and not gaveUp:
            raise Mismatch(f"{f.__name__}: C {got!r} / Python {expected!r}")


if __name__ == "__main__":
    fuzz(check, sys.argv)
