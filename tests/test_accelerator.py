"""
Tests for pbext's optional C accelerator, L{pbext._speedups}: it agrees
with the pure-Python codec and jelly fast paths on every input, down to
error messages, leaks nothing on error paths, and can be turned off.

The codec and plain-jelly test suites (L{tests.test_codec},
L{tests.test_jelly}) also run every one of their tests against both.
"""

from __future__ import annotations

import errno
import gc
import os
import socket
import subprocess
import sys
import tracemalloc
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.spread import banana, jelly
from twisted.trial.unittest import SynchronousTestCase

from pbext import _jelly, codec
from pbext._accelerator import reason, speedups
from pbext.interfaces import IDecoder
from tests.test_jelly import bound, jellyExpressions, values

OUTGOING = banana.Banana.outgoingVocabulary
INCOMING = banana.Banana.incomingVocabulary
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LIMIT_NAMES = (
    "maxPrefixBytes",
    "maxStringBytes",
    "maxListLength",
    "maxDepth",
    "maxMessageTokens",
    "maxMessageBytes",
)


def outcome(function: Callable[[], Any]) -> Tuple[str, Any]:
    """
    What calling C{function} gives, comparable across implementations: its
    result, or the type and text of what it raised (with the C{limit} of a
    L{codec.FramingError}).
    """
    try:
        return ("ok", function())
    except codec.FramingError as e:
        return ("framing", (e.limit, str(e)))
    except Exception as e:
        return ("error", (type(e), str(e)))


def decodeAll(
    decoder: IDecoder, chunks: List[bytes]
) -> Tuple[List[object], Optional[Tuple[str, str]], int]:
    """
    Feed C{chunks}; return what was delivered, the failure (limit and
    message) if one was raised, and the bytes pending at the end.
    """
    received: List[object] = []
    try:
        for chunk in chunks:
            decoder.feedTo(chunk, received.append)
    except codec.FramingError as e:
        return received, (e.limit, str(e)), -1
    return received, None, decoder.pendingBytes


class BigInt(int):
    """
    An C{int} subclass, which the C encoder hands to the Python helper.
    """


tokens = st.sampled_from(
    [
        b"\x00\x80",
        b"\x01\x80",
        b"\x02\x80",
        b"\x03\x80",
        b"\x03\x81",
        b"\x02\x83",
        b"\x01\x82a",
        b"\x07\x82unicode",
        b"\x05\x87",
        b"\x84\x3f\xf8\x00\x00\x00\x00\x00\x00",
        b"\x01",
        b"\x7f\x7f\x85",
        b"\x7f" * 10 + b"\x81",
        b"\x00" * 12 + b"\x80",
        b"\x03\x82",
        b"\x00\x86",
        b"\x1f\x87",
        b"\x40\x87",
        b"\x88",
    ]
)

sexpValues = st.recursive(
    st.one_of(
        st.binary(max_size=20),
        st.sampled_from([b"dictionary", b"unicode", b"list", b"None"]),
        st.integers(min_value=-(2**470), max_value=2**470),
        st.floats(allow_nan=False),
        st.booleans(),
        st.builds(BigInt, st.integers(min_value=-(2**70), max_value=2**70)),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=6), st.tuples(children, children)
    ),
    max_leaves=40,
)


def plainValues(*leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """
    Trees of the builtin values jelly's plain paths handle, with C{leaves}
    as more leaves.
    """
    return st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False),
            st.text(max_size=10),
            st.binary(max_size=10),
            *leaves,
        ),
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.tuples(children, children),
            st.frozensets(st.integers(), max_size=3),
            st.sets(st.text(max_size=3), max_size=3),
            st.dictionaries(st.text(max_size=5), children, max_size=4),
            st.dictionaries(st.integers(), children, max_size=3),
        ),
        max_leaves=30,
    )


AGREEMENT = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class AgreementTests(SynchronousTestCase):
    """
    The C accelerator and the pure-Python code give the same results and
    the same errors on the same inputs.
    """

    if speedups is None:
        skip = f"the C accelerator is not available: {reason}"

    @AGREEMENT
    @given(
        data=st.one_of(st.binary(max_size=300), st.lists(tokens).map(b"".join)),
        cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6),
        pb=st.booleans(),
        limits=st.fixed_dictionaries(
            {},
            optional={
                name: st.integers(min_value=1, max_value=40) for name in LIMIT_NAMES
            },
        ),
    )
    def test_decode(self, data: bytes, cuts: List[int], pb: bool, limits: dict) -> None:
        """
        Random bytes in random chunks, with random limits: the same
        expressions, the same failure and message, the same bytes pending.
        """
        points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
        chunks = [data[a:b] for a, b in zip(points, points[1:])] or [b""]
        vocabulary = INCOMING if pb else None
        results = [
            decodeAll(
                codec.makeDecoder(vocabulary=vocabulary, accelerated=flag, **limits),
                chunks,
            )
            for flag in (True, False)
        ]
        self.assertEqual(repr(results[0]), repr(results[1]))

    @AGREEMENT
    @given(
        value=sexpValues,
        pb=st.booleans(),
        limit=st.one_of(st.none(), st.integers(min_value=0, max_value=200)),
    )
    def test_encode(self, value: object, pb: bool, limit: Optional[int]) -> None:
        """
        Random expressions, subclasses and out-of-range integers included:
        the same bytes or the same error.
        """
        vocabulary = OUTGOING if pb else None
        self.assertEqual(
            outcome(lambda: speedups.encode(value, vocabulary, limit)),
            outcome(lambda: codec._encodePython(value, vocabulary, limit)),
        )

    @AGREEMENT
    @given(value=plainValues())
    def test_jellyRoundTrip(self, value: object) -> None:
        """
        Plain values jelly to the same expression, and that expression
        unjellies to the same value, both ways.
        """
        sexp = speedups.jellyPlain(value)
        self.assertEqual(repr(sexp), repr(_jelly._jellyPlainPython(value)))
        self.assertEqual(
            repr(speedups.unjellyPlain(sexp)),
            repr(_jelly._unjellyPlainPython(sexp)),
        )

    @AGREEMENT
    @given(
        value=plainValues(
            st.integers(min_value=-(2**500), max_value=2**500),
            st.sampled_from([object(), BigInt(3), "\ud800", b"unicode"]),
            # Texts that are words of PB's vocabulary are sent as
            # vocabulary tokens.
            st.sampled_from(["error", "message", "None", "list", "copy", "x"]),
        ),
        pb=st.booleans(),
        limit=st.one_of(st.none(), st.integers(min_value=0, max_value=300)),
    )
    def test_jellied(self, value: object, pb: bool, limit: Optional[int]) -> None:
        """
        L{speedups.isPlain} says whether L{_jelly.jellyPlain} answers, and
        a L{speedups.Jellied} of a plain value, inside a message, encodes
        to the same bytes (or the same error) as its plain jelly.
        """
        try:
            sexp = _jelly._jellyPlainPython(value)
        except UnicodeEncodeError:
            sexp = _jelly.NOT_PLAIN
        plain = sexp is not _jelly.NOT_PLAIN
        self.assertEqual(speedups.isPlain(value), plain)
        vocabulary = OUTGOING if pb else None
        message = (b"answer", 7, speedups.Jellied(value))
        if plain:
            self.assertEqual(
                outcome(lambda: speedups.encode(message, vocabulary, limit)),
                outcome(
                    lambda: codec._encodePython((b"answer", 7, sexp), vocabulary, limit)
                ),
            )
        else:
            # Never written: refused as not plain, or for an encoding error
            # met before the part that is not plain.
            self.assertRaises(
                (speedups.NotPlainError, UnicodeEncodeError, banana.BananaError),
                speedups.encode,
                message,
                vocabulary,
            )
        self.assertIs(message[2].value, value)

    @AGREEMENT
    @given(
        value=plainValues(),
        pb=st.booleans(),
        limit=st.one_of(st.none(), st.integers(min_value=0, max_value=300)),
    )
    def test_encodeIfPlain(self, value: object, pb: bool, limit: Optional[int]) -> None:
        """
        L{speedups.encodeIfPlain} encodes a plain value to the pieces of its
        L{speedups.Jellied} (or fails as they fail), and a message holding
        the L{speedups.Encoded} encodes as one holding the value's plain
        jelly, in one byte string or in pieces.
        """
        vocabulary = OUTGOING if pb else None
        encoded = outcome(
            lambda: speedups.encodeIfPlain(value, None, vocabulary, limit)
        )
        expected = outcome(
            lambda: speedups.encodePieces(speedups.Jellied(value), vocabulary, limit)
        )
        if expected[0] != "ok":
            self.assertEqual(encoded, expected)
            return
        self.assertEqual(encoded[0], "ok")
        self.assertEqual(encoded[1].pieces, expected[1])
        sexp = _jelly._jellyPlainPython(value)
        message = (b"answer", 7, encoded[1])
        for messageLimit in (None, limit):
            want = outcome(
                partial(
                    codec._encodePython, (b"answer", 7, sexp), vocabulary, messageLimit
                )
            )
            self.assertEqual(
                outcome(partial(speedups.encode, message, vocabulary, messageLimit)),
                want,
            )
            pieces = outcome(
                partial(speedups.encodePieces, message, vocabulary, messageLimit)
            )
            if want[0] == "ok":
                self.assertEqual(("ok", b"".join(pieces[1])), want)
            else:
                self.assertEqual(pieces, want)

    def test_encodeIfPlainNotPlain(self) -> None:
        """
        L{speedups.encodeIfPlain} answers L{None} for a value that is not
        plain, or too deeply nested for the plain path.
        """
        deep: list = []
        for _ in range(100_000):
            deep = [deep]
        for value in ([1, object()], {"a": "\ud800"}, BigInt(3), deep):
            self.assertIsNone(speedups.encodeIfPlain(value, None, OUTGOING, None))

    @AGREEMENT
    @given(value=plainValues(), pb=st.booleans())
    def test_preparePlain(self, value: object, pb: bool) -> None:
        """
        L{speedups.preparePlain} gives a plain value's L{speedups.Jellied}
        if it holds few values, else its L{speedups.Encoded}; either way a
        message holding it encodes as one holding the value's plain jelly.
        """
        vocabulary = OUTGOING if pb else None
        prepared = speedups.preparePlain(value, None, vocabulary, None)
        self.assertIn(type(prepared), (speedups.Jellied, speedups.Encoded))
        if type(prepared) is speedups.Jellied:
            self.assertIs(prepared.value, value)
        sexp = _jelly._jellyPlainPython(value)
        self.assertEqual(
            speedups.encode((b"answer", 7, prepared), vocabulary),
            codec._encodePython((b"answer", 7, sexp), vocabulary),
        )

    def test_preparePlainSizes(self) -> None:
        """
        L{speedups.preparePlain} looks at a few dozen values before it
        encodes instead, whatever their nesting, and answers L{None} for
        what is not plain, small or large.
        """
        for small in (42, "x", [1, 2, 3], {"a": [1, 2]}, ([1] * 30,)):
            self.assertIs(
                type(speedups.preparePlain(small, None, OUTGOING, None)),
                speedups.Jellied,
            )
        for large in (
            list(range(100)),
            ([{"k": i} for i in range(40)],),
            {"a": [[1] * 80]},
        ):
            self.assertIs(
                type(speedups.preparePlain(large, None, OUTGOING, None)),
                speedups.Encoded,
            )
        deep: list = []
        for _ in range(100_000):
            deep = [deep]
        for value in ([object()], [*range(100), object()], ("\ud800",), deep):
            self.assertIsNone(speedups.preparePlain(value, None, OUTGOING, None))
        self.assertRaises(
            codec.FramingError,
            speedups.preparePlain,
            [b"x" * 100] * 100,
            None,
            OUTGOING,
            1000,
        )
        self.assertRaises(TypeError, speedups.preparePlain, 1, None, None)

    def test_encodedLongStrings(self) -> None:
        """
        Long byte strings in an L{speedups.Encoded} stay pieces of their own
        when the message is encoded in pieces: they are not copied.
        """
        blob = b"z" * (200 * 1024)
        encoded = speedups.encodeIfPlain([blob, blob], None, OUTGOING, None)
        pieces = speedups.encodePieces((b"answer", 7, encoded), OUTGOING)
        self.assertIs(pieces[1], blob)
        self.assertIs(pieces[3], blob)
        self.assertEqual(
            b"".join(pieces),
            codec._encodePython((b"answer", 7, [b"list", blob, blob]), OUTGOING),
        )

    def test_largePlainValueInPieces(self) -> None:
        """
        A large plain value encoded in pieces is cut into pieces of at most
        about 64 KiB (memory the allocator hands out again, not one buffer
        grown into fresh pages), and a message holding its
        L{speedups.Encoded} sends those very pieces, not copies of them.
        """
        value = [{f"k{j}": f"{i:x}{j}" for j in range(10)} for i in range(1000)]
        encoded = speedups.encodeIfPlain(value, None, OUTGOING, None)
        ahead = encoded.pieces
        self.assertGreater(len(ahead), 3)
        self.assertTrue(all(0 < len(piece) <= 64 * 1024 for piece in ahead))
        self.assertEqual(
            ahead, speedups.encodePieces(speedups.Jellied(value), OUTGOING)
        )
        pieces = speedups.encodePieces((b"answer", 7, encoded), OUTGOING)
        self.assertEqual(pieces[1:], ahead)
        for sent, made in zip(pieces[1:], encoded.pieces):
            self.assertIs(sent, made)
        self.assertEqual(
            b"".join(pieces),
            codec._encodePython(
                (b"answer", 7, _jelly._jellyPlainPython(value)), OUTGOING
            ),
        )

    def test_largePlainValueEncoded(self) -> None:
        """
        L{speedups.encode} writes a large plain value in pieces too, joined
        once: the bytes are those of the plain jelly's encoding, with long
        strings and an L{speedups.Encoded} among the values, and the size
        limit counts every piece.
        """
        blob = b"b" * (100 * 1024)
        value = [
            {f"k{j}": f"{i:x}{j}" for j in range(10)} if i % 300 else [blob, "x"]
            for i in range(1000)
        ]
        sexp = (b"answer", 7, _jelly._jellyPlainPython(value))
        expected = codec._encodePython(sexp, OUTGOING)
        message = (b"answer", 7, speedups.Jellied(value))
        encoded = speedups.encode(message, OUTGOING)
        self.assertIs(type(encoded), bytes)
        self.assertEqual(encoded, expected)
        ahead = speedups.encodeIfPlain(value, None, OUTGOING, None)
        self.assertEqual(speedups.encode((b"answer", 7, ahead), OUTGOING), expected)
        self.assertEqual(speedups.encode(message, OUTGOING, len(expected)), expected)
        error = self.assertRaises(
            codec.FramingError,
            speedups.encode,
            message,
            OUTGOING,
            len(expected) - 1,
        )
        self.assertEqual(error.limit, "maxMessageBytes")

    def test_jelliedVocabularyWords(self) -> None:
        """
        A text that is a word of the vocabulary is written as the plain
        jelly's encoding writes it: a vocabulary token.
        """
        value = {"error": ["message", "answer"], "k": "None", "": "list"}
        for vocabulary in (OUTGOING, None, {b"": 3, b"k": 4}):
            self.assertEqual(
                speedups.encode(speedups.Jellied(value), vocabulary),
                codec._encodePython(_jelly._jellyPlainPython(value), vocabulary),
            )

    def test_textsAtTheLimit(self) -> None:
        """
        Texts of every kind the encoder writes its own way (short ASCII,
        empty, one character, a vocabulary word, non-ASCII, 128 bytes and
        more, whose length takes two bytes) encode as the plain jelly's
        encoding does, and fail the same way when the message is one byte
        over its limit.
        """
        texts = ["", "x", "k0", "3e7", "message", "caf\u00e9", "\u20ac" * 5]
        texts += ["a" * 127, "b" * 128, "c" * 300]
        for text in texts:
            for value in (text, [text, {text: text}]):
                sexp = _jelly._jellyPlainPython(value)
                expected = codec._encodePython((b"answer", 7, sexp), OUTGOING)
                message = (b"answer", 7, speedups.Jellied(value))
                for limit in (len(expected), len(expected) - 1):
                    self.assertEqual(
                        outcome(partial(speedups.encode, message, OUTGOING, limit)),
                        outcome(
                            partial(
                                codec._encodePython,
                                (b"answer", 7, sexp),
                                OUTGOING,
                                limit,
                            )
                        ),
                        (text, limit),
                    )
        # Each text decodes back to an equal str, alone, in a list and as a
        # dictionary's key and value.
        for text in texts:
            for value in (text, [text, {text: text}]):
                data = speedups.encode(
                    (b"answer", 7, speedups.Jellied(value)), OUTGOING
                )
                decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=True)
                decoder.setPlainJelly(True)
                [message], failure, pending = decodeAll(decoder, [data])
                self.assertEqual(receivedValue(message[2]), ("ok", canonical(value)))

    def test_unjellyOddExpressions(self) -> None:
        """
        Expressions no decoder makes (tags that are not exact C{bytes}, say)
        get the same answer from both.
        """

        class Tag(bytes):
            pass

        for sexp in (
            [bytearray(b"unicode"), b"x"],
            [Tag(b"None")],
            [b"boolean", bytearray(b"true")],
            [b"boolean", Tag(b"true")],
            ["unicode", b"x"],
            [b"unicode", bytearray(b"x")],
            [b"dictionary", [[b"list"], 1]],
            [b"dictionary", ([b"x"], 1)],
            [b"set", [b"list"]],
            [b"tuple", [b"unicode", b"\xff"]],
        ):
            self.assertIs(
                speedups.unjellyPlain(sexp),
                _jelly._unjellyPlainPython(sexp),
            )

    def test_jellyStepsAside(self) -> None:
        """
        Shared and cyclic containers, subclasses and other types step aside
        in both; a string that is not UTF-8 encodable raises in both.
        """
        shared = [1]
        cyclic: list = []
        cyclic.append(cyclic)
        for value in ([shared, shared], cyclic, [BigInt(1)], {1: object()}):
            self.assertIs(speedups.jellyPlain(value), _jelly.NOT_PLAIN)
            self.assertIs(_jelly._jellyPlainPython(value), _jelly.NOT_PLAIN)
        self.assertRaises(UnicodeEncodeError, speedups.jellyPlain, ["\ud800"])
        self.assertRaises(UnicodeEncodeError, _jelly._jellyPlainPython, ["\ud800"])

    def test_deepNesting(self) -> None:
        """
        Nesting too deep for the recursion limit is a L{RecursionError} from
        the encoder and a step aside from the plain jelly paths, in both.
        """
        deep: list = []
        for _i in range(sys.getrecursionlimit() + 10):
            deep = [deep]
        for encode in (speedups.encode, codec._encodePython):
            self.assertRaises(RecursionError, encode, deep)
        for jellyPlain in (speedups.jellyPlain, _jelly._jellyPlainPython):
            self.assertIs(jellyPlain(deep), _jelly.NOT_PLAIN)


def canonical(value: object) -> object:
    """
    A form of C{value} that compares equal only for equal values of the
    same types, ignoring the order of set members (which the full
    unjellier's sets, built in another order, may iterate differently).
    """
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, sorted(repr(canonical(v)) for v in value))
    if isinstance(value, dict):
        return ("dict", [(canonical(k), canonical(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [canonical(v) for v in value])
    return (type(value).__name__, repr(value))


def unjellyBoth(sexp: object) -> Tuple[str, Any]:
    """
    What pbext's broker makes of an expression without plain-jelly
    decoding: L{_jelly.unjellyPlain}, else the full unjellier.
    """

    def unjellyIt() -> Any:
        value = _jelly._unjellyPlainPython(sexp)
        if value is _jelly.NOT_PLAIN:
            value = _jelly.Unjellier(bound()).unjellyFull(sexp)
        return value

    kind, result = outcome(unjellyIt)
    if kind == "ok":
        return kind, canonical(result)
    return kind, result[0]


def receivedValue(element: object) -> Tuple[str, Any]:
    """
    What pbext's broker makes of a message element decoded in plain-jelly
    mode.
    """
    if speedups is not None and type(element) is speedups.Jellied:
        return "ok", canonical(element.value)
    return unjellyBoth(element)


class PlainJellyDecodingTests(SynchronousTestCase):
    """
    L{pbext.interfaces.IDecoder.setPlainJelly}: messages decoded with plain values
    already unjellied give the broker exactly what decoding and then
    unjellying gives, for any expressions, malformed ones included.
    """

    if speedups is None:
        skip = f"the C accelerator is not available: {reason}"

    def assertSameAsTwoSteps(
        self, message: list, sizes: List[int], **limits: int
    ) -> None:
        try:
            data = codec._encodePython(message, OUTGOING)
        except (banana.BananaError, RecursionError):
            return
        cuts = sorted({min(size, len(data)) for size in sizes} | {0, len(data)})
        chunks = [data[a:b] for a, b in zip(cuts, cuts[1:])]
        fused = codec.makeDecoder(vocabulary=INCOMING, accelerated=True, **limits)
        fused.setPlainJelly(True)
        plain = codec.makeDecoder(vocabulary=INCOMING, accelerated=False, **limits)
        got = decodeAll(fused, chunks)
        expected = decodeAll(plain, chunks)
        self.assertEqual(got[1:], expected[1:])
        self.assertEqual(len(got[0]), len(expected[0]))
        for gotMessage, expectedMessage in zip(got[0], expected[0]):
            if type(expectedMessage) is not list:
                self.assertEqual(repr(gotMessage), repr(expectedMessage))
                continue
            self.assertEqual(len(gotMessage), len(expectedMessage))
            for a, b in zip(gotMessage, expectedMessage):
                self.assertEqual(receivedValue(a), unjellyBoth(b), (a, b))

    @AGREEMENT
    @given(
        data=st.data(),
        sizes=st.lists(st.integers(min_value=0, max_value=400), max_size=5),
    )
    def test_randomExpressions(self, data: Any, sizes: List[int]) -> None:
        """
        Random jelly expressions, well-formed or not, as call arguments.
        """
        first = data.draw(jellyExpressions)
        second = data.draw(jellyExpressions)
        self.assertSameAsTwoSteps(
            [b"message", 3, 0, b"method", 1, first, second], sizes
        )

    @AGREEMENT
    @given(
        data=st.data(),
        sizes=st.lists(st.integers(min_value=0, max_value=400), max_size=5),
    )
    def test_randomValues(self, data: Any, sizes: List[int]) -> None:
        """
        The jelly of random values, plain or not (shared containers and
        dates need the full unjellier), as an answer and as arguments.
        """

        value = data.draw(values)
        sexp = jelly.jelly(value)
        self.assertSameAsTwoSteps([b"answer", 9, sexp], sizes)
        self.assertSameAsTwoSteps(
            [b"message", 3, 0, b"m", 1, [b"tuple", sexp, sexp], [b"dictionary"]],
            sizes,
        )

    @AGREEMENT
    @given(
        items=st.lists(
            st.tuples(
                st.one_of(st.text(max_size=6), st.sampled_from(["k0", "x" * 40])),
                st.one_of(
                    st.text(max_size=40),
                    st.integers(min_value=-(2**70), max_value=2**70),
                    st.booleans(),
                ),
            ),
            min_size=1,
            max_size=6,
        ),
        nesting=st.integers(min_value=0, max_value=3),
        badKey=st.booleans(),
        limits=st.fixed_dictionaries(
            {},
            optional={
                "maxDepth": st.integers(min_value=1, max_value=8),
                "maxMessageTokens": st.integers(min_value=1, max_value=90),
                "maxListLength": st.integers(min_value=1, max_value=4),
                "maxStringBytes": st.integers(min_value=1, max_value=12),
                "maxPrefixBytes": st.integers(min_value=1, max_value=3),
            },
        ),
        sizes=st.lists(st.integers(min_value=0, max_value=400), max_size=5),
    )
    def test_dictionaryPairs(
        self,
        items: List[Tuple[str, object]],
        nesting: int,
        badKey: bool,
        limits: Dict[str, int],
        sizes: List[int],
    ) -> None:
        """
        Dictionaries of texts and ints (whose pairs the decoder reads
        whole), nested, with a key that is not UTF-8 or not, cut anywhere
        and under tight limits, give what decoding and then unjellying
        gives, failures included.
        """
        sexp: list = jelly.jelly(dict(items))
        if badKey:
            sexp.append([[b"unicode", b"\xff"], [b"unicode", b"v"]])
        for _i in range(nesting):
            sexp = [b"list", sexp, [b"dictionary", [[b"unicode", b"n"], sexp]]]
        self.assertSameAsTwoSteps([b"answer", 9, sexp], sizes, **limits)

    def test_mixed(self) -> None:
        """
        A plain part followed by one that is not: the values made for the
        plain part are jellied back for the full unjellier.
        """
        sexp = [
            b"list",
            [b"unicode", b"text"],
            [b"dictionary", [[b"unicode", b"k"], [b"set", 1, 2]], [b"x", 1]],
            [b"tuple", [b"boolean", b"true"], [b"None"]],
            [b"reference", 1, [b"list", [b"unicode", b"a"]]],
            [b"dereference", 1],
        ]
        for message in (
            [b"answer", 1, sexp],
            [b"answer", 1, [b"list", [b"unicode", b"\xff"], [b"list"]]],
            [b"answer", 1, [b"dictionary", [[b"list"], 1]]],
            [b"answer", 1, [b"dictionary", [b"unicode", b"k"]]],
            [b"answer", 1, [[b"unicode", b"x"], 1]],
            [b"answer", 1, [b"unicode", b"x"], []],
        ):
            self.assertSameAsTwoSteps(message, [1, 7, 30])

    def test_deep(self) -> None:
        """
        Deeper than the plain-jelly decoder goes, the full unjellier takes
        over, with the same result.
        """
        sexp: list = [b"unicode", b"bottom"]
        for _i in range(230):
            sexp = [b"list", sexp]
        decoder = codec.makeDecoder(
            vocabulary=INCOMING, accelerated=True, maxDepth=1000
        )
        decoder.setPlainJelly(True)
        (message,) = decoder.feed(codec.encode([b"answer", 1, sexp], OUTGOING))
        self.assertIsNot(type(message[2]), speedups.Jellied)
        self.assertEqual(receivedValue(message[2]), unjellyBoth(sexp))

    def test_onlyBetweenMessages(self) -> None:
        """
        The mode is chosen before bytes arrive (or between messages); the
        pure-Python decoder does not offer it.
        """
        decoder = codec.makeDecoder(accelerated=True)
        decoder.feed(b"\x02\x80")
        self.assertRaises(RuntimeError, decoder.setPlainJelly, True)
        self.assertRaises(
            ValueError, codec.makeDecoder(accelerated=False).setPlainJelly, True
        )


class LongStringTests(SynchronousTestCase):
    """
    Long strings held across chunks are copied straight from the chunks,
    with the same results as the pure-Python decoder, wherever the chunks
    are cut.
    """

    if speedups is None:
        skip = f"the C accelerator is not available: {reason}"

    def test_cuts(self) -> None:
        """
        Long strings in a list, followed by more messages, cut at the
        header, just after it, in the middle and at the end.
        """
        big = bytes(range(256)) * 400
        messages = [
            [b"answer", 1, [b"list", big, b"tail", big[:70000]]],
            [b"answer", 2, [b"unicode", b"a" * 100000]],
            [b"x", 3],
        ]
        data = b"".join(codec.encode(m, OUTGOING) for m in messages)
        starts = [data.find(b"\x82", 10) - 3, data.find(b"\x82\x00\x01\x02")]
        cutPoints = {1, 9, 12, 13, 14, 50000, 102410, len(data) - 5}
        for start in starts:
            cutPoints.update(range(start - 2, start + 4))
        for cut in sorted(c for c in cutPoints if 0 < c < len(data)):
            for step in (cut, 65536, 7777):
                chunks = [data[:cut]] + [
                    data[i : i + step] for i in range(cut, len(data), step)
                ]
                for limits in ({}, {"maxMessageBytes": 150000}):
                    results = [
                        decodeAll(
                            codec.makeDecoder(
                                vocabulary=INCOMING, accelerated=flag, **limits
                            ),
                            chunks,
                        )
                        for flag in (True, False)
                    ]
                    self.assertEqual(results[0], results[1], (cut, step, limits))
                fused = codec.makeDecoder(vocabulary=INCOMING, accelerated=True)
                fused.setPlainJelly(True)
                received, failure, pending = decodeAll(fused, chunks)
                self.assertEqual(
                    [m[2].value for m in received[:2]],
                    [[big, b"tail", big[:70000]], "a" * 100000],
                )
                self.assertEqual((failure, pending), (None, 0))

    def test_wantedBytes(self) -> None:
        """
        While a long string arrives, the decoder says how much is missing.
        """
        for flag in (True, False):
            decoder = codec.makeDecoder(accelerated=flag)
            data = codec.encode([b"x" * 200000], None)
            decoder.feed(data[:1000])
            self.assertEqual(decoder.wantedBytes, len(data) - 1000)
            decoder.feed(data[1000:5000])
            self.assertEqual(decoder.wantedBytes, len(data) - 5000)
            decoder.feed(data[5000:])
            self.assertEqual(decoder.wantedBytes, 0)


class ReceiveFromTests(SynchronousTestCase):
    """
    C{DecoderCore.receiveFrom} receives the rest of a long string from a
    socket straight into the string, for C{bufferFilled} to count.
    """

    if speedups is None or not hasattr(speedups.DecoderCore, "receiveFrom"):
        skip = "the C accelerator does not receive from sockets here"

    def setUp(self) -> None:
        self.ours, self.peer = socket.socketpair()
        self.addCleanup(self.ours.close)
        self.addCleanup(self.peer.close)
        self.ours.setblocking(False)
        self.blob = bytes(range(256)) * 1024
        self.data = codec.encode([b"answer", 1, self.blob]) + codec.encode([b"x"])
        self.received: List[object] = []
        self.decoder = codec.makeDecoder(accelerated=True)

    def started(self) -> None:
        """
        Feed the first 20,000 bytes: the string is then received in place.
        """
        self.decoder.feedTo(self.data[:20_000], self.received.append)
        self.assertTrue(self.decoder.receivingString)

    def test_noString(self) -> None:
        """
        With no long string arriving, nothing is read: L{None}.
        """
        self.assertFalse(self.decoder.receivingString)
        self.peer.sendall(b"abc")
        self.assertIsNone(self.decoder.receiveFrom(self.ours))
        self.assertEqual(self.ours.recv(10), b"abc")

    def test_whole(self) -> None:
        """
        What the socket has goes into the string, however many reads it
        takes; the message is the one fed whole, and what follows the
        string is fed as usual.
        """
        self.started()
        rest = self.data[20_000:]
        end = len(rest) - len(codec.encode([b"x"]))
        for piece in (rest[:70_000], rest[70_000:end]):
            self.peer.sendall(piece)
            got = 0
            while got < len(piece):
                count = self.decoder.receiveFrom(self.ours)
                self.assertGreater(count, 0)
                self.decoder.bufferFilled(count, self.received.append)
                got += count
        self.assertFalse(self.decoder.receivingString)
        self.assertEqual(self.received, [[b"answer", 1, self.blob]])
        self.decoder.feedTo(rest[end:], self.received.append)
        self.assertEqual(self.received[1:], [[b"x"]])

    def test_onlyTheString(self) -> None:
        """
        Bytes after the string stay in the socket.
        """
        self.started()
        self.peer.setblocking(False)
        unsent = memoryview(self.data[20_000:])
        for _ in range(10_000):
            if not self.decoder.receivingString:
                break
            if unsent:
                unsent = unsent[self.peer.send(unsent) :]
            count = self.decoder.receiveFrom(self.ours)
            self.decoder.bufferFilled(count, self.received.append)
        self.assertEqual(self.received, [[b"answer", 1, self.blob]])
        self.peer.sendall(unsent)
        self.assertEqual(self.ours.recv(100), codec.encode([b"x"]))

    def test_wouldBlock(self) -> None:
        """
        A socket with nothing to read raises L{BlockingIOError}, as
        C{socket.recv_into} does; at its end, 0.
        """
        self.started()
        self.assertRaises(BlockingIOError, self.decoder.receiveFrom, self.ours)
        self.peer.close()
        self.assertEqual(self.decoder.receiveFrom(self.ours), 0)

    def test_wrongCount(self) -> None:
        """
        C{bufferFilled} must be given the count received.
        """
        self.started()
        self.peer.sendall(self.data[20_000:30_000])
        count = self.decoder.receiveFrom(self.ours)
        self.assertRaises(
            ValueError, self.decoder.bufferFilled, count + 1, self.received.append
        )

    def test_dropped(self) -> None:
        """
        Bytes received but not counted are dropped when the decoder is fed
        instead (or asked for a buffer): what is fed takes their place.
        """
        for other in ("feed", "buffer"):
            decoder = codec.makeDecoder(accelerated=True)
            received: List[object] = []
            decoder.feedTo(self.data[:20_000], received.append)
            self.peer.sendall(b"\xff" * 5000)
            self.assertEqual(decoder.receiveFrom(self.ours), 5000)
            if other == "buffer":
                self.assertIsNotNone(decoder.receiveBuffer())
            decoder.feedTo(self.data[20_000:], received.append)
            self.assertEqual(received, [[b"answer", 1, self.blob], [b"x"]], other)

    def test_notASocket(self) -> None:
        """
        Anything without a file descriptor is refused.
        """
        self.started()
        self.assertRaises(TypeError, self.decoder.receiveFrom, "socket")

    def test_closedSocket(self) -> None:
        """
        A closed socket raises what C{socket.recv_into} raises: L{OSError}.
        """
        self.started()
        self.ours.close()
        with self.assertRaises(OSError) as caught:
            self.decoder.receiveFrom(self.ours)
        self.assertEqual(caught.exception.errno, errno.EBADF)


class MemoryTests(SynchronousTestCase):
    """
    The C accelerator frees what it allocates, on success and on every
    error path, and keeps decoded expressions away from the garbage
    collector.
    """

    if speedups is None:
        skip = f"the C accelerator is not available: {reason}"

    def assertNoGrowth(self, work: Callable[[], None]) -> None:
        """
        Running C{work} many times leaves no memory behind.
        """
        for _i in range(200):
            work()
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _i in range(2000):
                work()
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        self.assertLess(after - before, 20000)

    def test_heldTokenNotJoinedWithChunk(self) -> None:
        """
        A chunk that completes a token cut at the end of the chunk before
        (a header, or a string) is not copied into one buffer with the
        bytes held: only what completes the token is joined, and the rest
        is parsed where it is.  The messages decoded are the same as from
        the uncut stream.
        """
        message = codec.encode([b"message", 12345, b"abcdefgh", [1, 2.5]])
        stream = message * 4000
        expected = codec.makeDecoder(accelerated=True).feed(stream)
        for cut in (1, 8, 9, 12, 18, 24):
            first, second = stream[: len(message) + cut], stream[len(message) + cut :]
            decoder = codec.makeDecoder(accelerated=True)
            received: List[object] = []
            decoder.feedTo(first, received.append)
            tracemalloc.start()
            try:
                decoder.feedTo(second, lambda expression: None)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            self.assertLess(peak, len(second) // 4)
            decoder = codec.makeDecoder(accelerated=True)
            decoder.feedTo(first, received.append)
            decoder.feedTo(second, received.append)
            self.assertEqual(received[1:], expected)

    def test_decodeErrors(self) -> None:
        """
        Every way decoding fails frees the partly built expression and the
        held bytes.
        """
        bad = [
            (b"\x02\x80\x01\x81\x88", {}),
            (b"\x02\x80\x05\x82abc", {"maxMessageBytes": 6}),
            (b"\x03\x80\x01\x80\x01\x80", {"maxDepth": 2}),
            (b"\x02\x80\x09\x82", {"maxStringBytes": 8}),
            (b"\x01\x80" + b"\x00" * 12 + b"\x87", {}),
            (b"\x01\x80" + b"\x7f" * 70, {}),
            (b"\x02\x80\x05\x80", {"maxMessageTokens": 4}),
            (b"\x02\x80" + b"\x7f" * 12 + b"\x82", {}),
        ]

        def work() -> None:
            for data, limits in bad:
                decoder = codec.makeDecoder(accelerated=True, **limits)
                try:
                    decoder.feed(data[:3])
                    decoder.feed(data[3:])
                except codec.FramingError:
                    pass
                else:
                    raise AssertionError(f"{data!r} decoded")

        self.assertNoGrowth(work)

    def test_longStrings(self) -> None:
        """
        Long strings received in place (through receive buffers, fed, with
        a view left open, or abandoned half way) and encoded in pieces
        leave nothing behind.
        """
        data = codec.encode([b"a" * 70_000, b"b" * 70_000, [1]])

        def work() -> None:
            decoder = codec.makeDecoder(accelerated=True)
            received: List[object] = []
            decoder.feedTo(data[:10_000], received.append)
            buffer = decoder.receiveBuffer()
            assert buffer is not None
            with memoryview(buffer) as view:
                view[:30_000] = data[10_000:40_000]
            decoder.bufferFilled(30_000, received.append)
            view = memoryview(decoder.receiveBuffer())
            decoder.feedTo(data[40_000:100_000], received.append)
            view.release()
            decoder.feedTo(data[100_000:], received.append)
            assert len(received) == 1, received
            abandoned = codec.makeDecoder(accelerated=True)
            abandoned.feed(data[:20_000])
            abandoned.receiveBuffer()
            if hasattr(speedups.DecoderCore, "receiveFrom"):
                ours, peer = socket.socketpair()
                with ours, peer:
                    fromSocket = codec.makeDecoder(accelerated=True)
                    fromSocket.feedTo(data[:10_000], received.append)
                    peer.sendall(data[10_000:60_000])
                    count = fromSocket.receiveFrom(ours)
                    fromSocket.bufferFilled(count, received.append)
                    fromSocket.feedTo(data[10_000 + count :], received.append)
                    assert len(received) == 2, received
            speedups.encodePieces([b"a" * 70_000, b"b" * 70_000, [1]])
            try:
                speedups.encodePieces([b"a" * 70_000, b"b" * 70_000], None, 100_000)
            except codec.FramingError:
                pass

        self.assertNoGrowth(work)

    def test_decodeCallbackRaises(self) -> None:
        """
        A callback that raises leaves the rest held, and nothing leaks.
        """
        data = codec.encode([[b"x" * 100, 1], 2.5], None) * 3

        def boom(expression: object) -> None:
            raise ValueError("boom")

        def work() -> None:
            decoder = codec.makeDecoder(accelerated=True)
            try:
                decoder.feedTo(data, boom)
            except ValueError:
                pass
            self.assertEqual(decoder.pendingBytes, len(data) * 2 // 3)

        self.assertNoGrowth(work)

    def test_encodeErrors(self) -> None:
        """
        Encoding errors free the partial output.
        """

        def work() -> None:
            for value, limit in (
                ([b"x" * 500, object()], None),
                ([b"y" * 500, 2**600], None),
                ([b"z" * 500], 100),
            ):
                try:
                    speedups.encode(value, None, limit)
                except (banana.BananaError, codec.FramingError):
                    pass

        self.assertNoGrowth(work)

    def test_jellyErrors(self) -> None:
        """
        Stepping aside, part-way through a structure, frees what was built.
        """
        shared = {"k": "v"}
        values = [[{"a": "b"}, shared, [1, shared]], ["x", "\ud800"], ("a", object())]

        def work() -> None:
            for value in values:
                try:
                    speedups.jellyPlain(value)
                except UnicodeEncodeError:
                    pass
            speedups.unjellyPlain([b"list", [b"unicode", b"ok"], [b"reference", 1]])

        self.assertNoGrowth(work)

    def test_plainJellyDecoding(self) -> None:
        """
        Decoding in plain-jelly mode, values jellied back and failures
        included, leaves nothing behind.
        """
        messages = [
            [b"answer", 1, [b"list", [b"unicode", b"a"], [b"dictionary"]]],
            [b"answer", 1, [b"list", [b"unicode", b"a"], [b"reference", 1, [1]]]],
            [b"answer", 1, [b"dictionary", [[b"unicode", b"k"], [b"set", 1]], 5]],
            [b"answer", 1, [b"unicode", b"\xff"]],
        ]
        data = b"".join(codec.encode(m, OUTGOING) for m in messages)

        def work() -> None:
            decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=True)
            decoder.setPlainJelly(True)
            decoder.feed(data[:17])
            decoder.feed(data[17:])
            decoder = codec.makeDecoder(
                vocabulary=INCOMING, accelerated=True, maxMessageBytes=40
            )
            decoder.setPlainJelly(True)
            try:
                decoder.feed(data)
            except codec.FramingError:
                pass

        self.assertNoGrowth(work)

    def test_tracked(self) -> None:
        """
        Decoded and jellied s-expression lists are ordinary lists, tracked
        by the garbage collector like the unjellied values handed to
        application code (the accelerator never hides objects from it).
        """
        sexp = speedups.jellyPlain([["a"], {"b": [1]}])
        (decoded,) = codec.makeDecoder(accelerated=True).feed(speedups.encode(sexp))
        self.assertEqual(decoded, sexp)
        for expression in (sexp, decoded):
            self.assertTrue(gc.is_tracked(expression))
            self.assertTrue(gc.is_tracked(expression[1]))
        value = speedups.unjellyPlain(decoded)
        self.assertEqual(value, [["a"], {"b": [1]}])
        self.assertTrue(gc.is_tracked(value))
        self.assertTrue(gc.is_tracked(value[0]))


def _pureEnvironment() -> Dict[str, str]:
    """
    This process's environment, with the accelerator turned off.
    """
    env = dict(os.environ, PBEXT_PURE_PYTHON="1")
    env.pop("PBEXT_REQUIRE_SPEEDUPS", None)
    return env


class SwitchTests(SynchronousTestCase):
    """
    Whether the accelerator is used is decided once, at import.
    """

    def test_requiredWhereBuilt(self) -> None:
        """
        Where the test environment says the accelerator must be built (tox
        sets C{PBEXT_REQUIRE_SPEEDUPS}, as pip builds it from source), it
        is loaded and used by default.
        """
        if not os.environ.get("PBEXT_REQUIRE_SPEEDUPS"):
            raise self.skipTest("PBEXT_REQUIRE_SPEEDUPS is not set")
        self.assertIsNotNone(speedups, reason)
        self.assertIs(codec.encode, speedups.encode)
        self.assertIs(_jelly.jellyPlain, speedups.jellyPlain)
        self.assertTrue(codec.makeDecoder().accelerated)

    def test_accelerationRequestedButMissing(self) -> None:
        """
        C{makeDecoder(accelerated=True)} without the accelerator is a clear
        error; C{accelerated=False} always gives the Python parser.
        """
        self.assertFalse(codec.makeDecoder(accelerated=False).accelerated)
        if speedups is None:
            error = self.assertRaises(ValueError, codec.makeDecoder, accelerated=True)
            self.assertIn("accelerator", str(error))

    def test_pureImport(self) -> None:
        """
        With C{PBEXT_PURE_PYTHON} set, pbext imports without the
        accelerator: the codec and plain jelly are the Python twins.
        """
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "from pbext import _accelerator, codec, _jelly;"
                "print(_accelerator.speedups, codec.encode is codec._encodePython,"
                " _jelly.jellyPlain.__name__, codec.makeDecoder().accelerated)",
            ],
            env=_pureEnvironment(),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=os.path.join(ROOT, "tests"),
        )
        self.assertEqual(
            probe.stdout.split(),
            ["None", "True", "_jellyPlainPython", "False"],
            probe.stderr,
        )


class PureBrokerTests(SynchronousTestCase):
    """
    pbext's broker works on the pure-Python codec (a trial subprocess: in
    the integration part of the suite).
    """

    def test_pureBroker(self) -> None:
        """
        With C{PBEXT_PURE_PYTHON} set, pbext's broker tests (in-memory
        brokers, typed copyables, hostile peers over real connections, and
        Twisted's own PB tests against pbext) pass on the pure-Python
        codec.
        """
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "twisted.trial",
                "--temp-directory",
                os.path.abspath(self.mktemp()),
                "tests.test_broker",
                "tests.test_copyable",
                "tests.test_hostile",
                "tests.test_transport",
                "tests.test_twisted_pb",
            ],
            env=_pureEnvironment(),
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        self.assertEqual(run.returncode, 0, run.stdout[-3000:] + run.stderr[-2000:])
        self.assertIn("PASSED", run.stdout)
