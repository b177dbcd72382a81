"""
The C accelerator against its Python twin, on the same bytes: what each
path of pbext hands to application code for a peer's message, or the
error it raises.  Used by L{tests.test_peerdecoding} (with hypothesis) and
by the coverage-guided fuzz targets in C{fuzz/}.
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.spread import pb

from pbext import _jelly, codec
from pbext._accelerator import speedups
from pbext._classiccopies import receiveSpec
from pbext.copystate import stateFields
from tests.test_plaintypes import INCOMING, REGISTRY, TASTER, TYPES


class ClassicCopy(pb.RemoteCopy):
    """
    A classic copy class keeping Twisted's methods, with a method and a
    class-level flag a peer must not set.
    """

    isAdmin = False

    def greet(self) -> str:
        return "hello"


@stateFields("x", "name", "isAdmin")
class DeclaredCopy(pb.RemoteCopy):
    """
    A classic copy class declaring its fields.
    """

    isAdmin = False


#: The wire names of the classic copy classes above.
CLASSIC_TAGS = [b"c.Classic", b"c.Declared"]

#: Twisted's registry as the classic specs below see it: a private one, so
#: that nothing is registered process-wide (the full unjellier, which reads
#: the real one, refuses these names: only the plain paths are compared).
_CLASSIC_NAMESPACE = {
    "unjellyableRegistry": dict(zip(CLASSIC_TAGS, [ClassicCopy, DeclaredCopy]))
}


def _receiveTable() -> dict[bytes, Any]:
    """
    The receive specs of the registered types and the classic classes.
    """
    table = dict(TYPES.receive or {})
    for tag, cls in _CLASSIC_NAMESPACE["unjellyableRegistry"].items():
        spec = receiveSpec(cls, tag, True)
        assert spec is not None
        table[tag] = (spec[0], _CLASSIC_NAMESPACE, *spec[2:])
    return table


#: What the plain paths build here.
RECEIVE = _receiveTable()

#: Every limit of L{codec.makeDecoder}, in its keyword order.
LIMITS = (
    "maxPrefixBytes",
    "maxStringBytes",
    "maxListLength",
    "maxDepth",
    "maxMessageTokens",
    "maxMessageBytes",
)


class Mismatch(AssertionError):
    """
    The two paths disagree.
    """


def _decode(
    data: bytes,
    cuts: Sequence[int],
    limits: dict[str, int],
    vocabulary: bool,
    accelerated: bool,
    plain: bool,
    receiveBuffer: bool,
) -> tuple[list[Any], Any]:
    """
    Feed C{data} cut at C{cuts} to a new decoder; return the expressions
    received and the outcome: C{None}, or C{("framing", limit)}.  Any
    other exception propagates: neither path may raise one.
    """
    decoder = codec.makeDecoder(
        vocabulary=INCOMING if vocabulary else None,
        accelerated=accelerated,
        **limits,
    )
    if plain:
        decoder.setPlainJelly(True)
        decoder.setPlainTypes(RECEIVE)
    received: list[Any] = []
    points = sorted({min(max(c, 0), len(data)) for c in cuts} | {0, len(data)})
    try:
        for a, b in zip(points, points[1:]):
            piece = data[a:b]
            while piece:
                buffer = decoder.receiveBuffer() if receiveBuffer else None
                if buffer is None:
                    decoder.feedTo(piece, received.append)
                    break
                # As DirectReads does: receive straight into the buffer.
                view = memoryview(buffer)
                count = min(len(view), len(piece))
                view[:count] = piece[:count]
                view.release()
                decoder.bufferFilled(count, received.append)
                piece = piece[count:]
    except codec.FramingError as e:
        return received, ("framing", e.limit)
    return received, None


def unjellyOutcome(element: object, accelerated: bool) -> tuple[str, Any]:
    """
    What the broker makes of one element of a message: C{("ok", value)}
    or C{("error", exception type name)}.
    """
    if speedups is not None and type(element) is speedups.Jellied:
        return "ok", element.value
    plain = speedups.unjellyPlain if accelerated else _jelly._unjellyPlainPython
    try:
        value = plain(element, RECEIVE)
        if value is not _jelly.NOT_PLAIN:
            return "ok", value
        unjellier = _jelly.Unjellier(TASTER, None, (REGISTRY,))
        return "ok", unjellier.unjellyFull(element)
    except Exception as e:
        return "error", type(e).__name__


def _messages(received: list[Any], accelerated: bool) -> list[Any]:
    out = []
    for message in received:
        if type(message) is list:
            out.append([unjellyOutcome(e, accelerated) for e in message])
        else:
            out.append(("atom", message))
    return out


def shape(value: object, _path: dict[int, int] | None = None) -> object:
    """
    A comparable stand-in for C{value}: its type and contents all the way
    down, objects of registered types by their attributes, sets by their
    elements' shapes whatever their order, floats by C{repr} (so that NaN
    is itself).  A value that contains itself (a peer may send reference
    cycles) stands for the cycle as C{("cycle", N)}, N counting up from the
    outermost of the containers being walked.
    """
    if _path is None:
        _path = {}
    kind = type(value)
    walked = kind in (list, tuple, dict, set, frozenset) or (
        hasattr(value, "__dict__") and not isinstance(value, type)
    )
    if not walked:
        if kind is float:
            return ("float", repr(value))
        return (kind.__name__, repr(value))
    key = id(value)
    if key in _path:
        return ("cycle", _path[key])
    _path[key] = len(_path)
    try:
        if kind in (list, tuple):
            return (kind.__name__, [shape(v, _path) for v in value])  # type: ignore[attr-defined]
        if kind is dict:
            return (
                "dict",
                [(shape(k, _path), shape(v, _path)) for k, v in value.items()],  # type: ignore[attr-defined]
            )
        if kind in (set, frozenset):
            return (kind.__name__, sorted(repr(shape(v, _path)) for v in value))  # type: ignore[attr-defined]
        return (kind.__name__, shape(dict(vars(value)), _path))
    finally:
        del _path[key]


def _same(a: object, b: object) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) == 2:
        return a[0] == b[0] and shape(a[1]) == shape(b[1])
    return shape(a) == shape(b)


def checkDecoding(
    data: bytes,
    cuts: Sequence[int],
    limits: dict[str, int],
    vocabulary: bool,
    receiveBuffer: bool = False,
) -> None:
    """
    Decode C{data} with the Python twin and with the C accelerator, in raw
    and in plain-jelly mode; raise L{Mismatch} unless all agree on the
    framing outcome, the raw expressions, and what the broker would make
    of every element.
    """
    py, pyOutcome = _decode(data, cuts, limits, vocabulary, False, False, False)
    if speedups is None:
        return
    c, cOutcome = _decode(data, cuts, limits, vocabulary, True, False, receiveBuffer)
    if cOutcome != pyOutcome or not _same(c, py):
        raise Mismatch(f"raw decoding: C {c!r} {cOutcome} / Python {py!r} {pyOutcome}")
    fused, fusedOutcome = _decode(
        data, cuts, limits, vocabulary, True, True, receiveBuffer
    )
    if fusedOutcome != pyOutcome:
        raise Mismatch(f"plain-jelly decoding: {fusedOutcome} / Python {pyOutcome}")
    fast = _messages(fused, True)
    slow = _messages(py, False)
    if not _same(fast, slow):
        raise Mismatch(f"unjellied: C {fast!r} / Python {slow!r}")


def checkUnjelly(sexp: object) -> None:
    """
    Unjelly one expression with the C plain path and the Python one;
    raise L{Mismatch} unless they agree.
    """
    if speedups is None:
        return
    fast = unjellyOutcome(sexp, True)
    slow = unjellyOutcome(sexp, False)
    if not _same(fast, slow):
        raise Mismatch(f"unjellyPlain: C {fast!r} / Python {slow!r}")
