"""
Tests for L{pbext.codec}: byte-for-byte agreement with Twisted's banana, and
the limits checked while bytes arrive.
"""

from __future__ import annotations

import enum
import math
import random
import sys
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.spread import banana, jelly
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface.verify import verifyObject

from pbext import codec
from pbext._accelerator import reason, speedups
from pbext.codec import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_MESSAGE_TOKENS,
    AcceleratedDecoder,
    FramingError,
    PythonDecoder,
    encode,
    encodePieces,
    makeDecoder,
)
from pbext.interfaces import IDecoder

OUTGOING = banana.Banana.outgoingVocabulary
INCOMING = banana.Banana.incomingVocabulary
SIZE_LIMIT = banana.SIZE_LIMIT
LARGEST_LONG = 2 ** (64 * 7) - 1

# Limits high enough never to trigger on test data, for comparing with
# stock banana, which has no such limits.
UNLIMITED = {
    "maxDepth": 10**9,
    "maxMessageTokens": 10**12,
    "maxMessageBytes": 10**12,
}


def stockBanana(dialect: Optional[bytes]) -> Tuple[banana.Banana, List[object]]:
    """
    A stock L{banana.Banana} in C{dialect} (L{None} for C{b"none"}), and
    the list its C{expressionReceived} appends to.
    """
    proto = banana.Banana(isClient=1)
    proto.setPrefixLimit(64)
    proto.currentDialect = b"none" if dialect is None else dialect
    received: List[object] = []
    proto.expressionReceived = received.append  # type: ignore[method-assign]
    return proto, received


def stockEncode(obj: object, dialect: Optional[bytes] = b"pb") -> bytes:
    """
    What stock banana writes for C{obj} in C{dialect}.
    """
    proto, _ = stockBanana(dialect)
    written: List[bytes] = []
    proto._encode(obj, written.append)
    return b"".join(written)


def stockDecode(
    chunks: Iterable[bytes], dialect: Optional[bytes] = b"pb"
) -> Tuple[List[object], Optional[BaseException]]:
    """
    What stock banana delivers to C{expressionReceived} for C{chunks}, and
    the exception it raised, if any.
    """
    proto, received = stockBanana(dialect)
    try:
        for chunk in chunks:
            proto.dataReceived(chunk)
    except Exception as e:
        return received, e
    return received, None


def vocabularyFor(dialect: Optional[bytes]) -> Optional[dict]:
    """
    The outgoing vocabulary L{encode} takes for C{dialect}.
    """
    return OUTGOING if dialect == b"pb" else None


def canonical(value: object) -> object:
    """
    A form of a decoded value that compares equal only to an identical
    value: types are exact and floats compare by their representation
    (so NaN equals NaN and -0.0 differs from 0.0).
    """
    if isinstance(value, list):
        return ("list", tuple(canonical(item) for item in value))
    if isinstance(value, float):
        return ("float", repr(value))
    return (type(value).__name__, value)


def splitAt(data: bytes, sizes: Iterable[int]) -> List[bytes]:
    """
    Cut C{data} into chunks of the given sizes (cycled), the last one
    whatever remains.
    """
    sizes = list(sizes) or [len(data) or 1]
    chunks = []
    pos = 0
    index = 0
    while pos < len(data):
        size = max(1, sizes[index % len(sizes)])
        chunks.append(data[pos : pos + size])
        pos += size
        index += 1
    return chunks


def randomChunks(data: bytes, seed: int) -> List[bytes]:
    """
    Cut C{data} into chunks of random sizes, from 1 byte to 1/3 of it.
    """
    rng = random.Random(seed)
    top = max(1, len(data) // 3)
    return splitAt(data, [rng.randint(1, top) for _ in range(64)])


def feedAll(decoder: IDecoder, chunks: Iterable[bytes]) -> List[object]:
    """
    Feed C{chunks} to C{decoder} and gather what it returns.
    """
    received: List[object] = []
    for chunk in chunks:
        received.extend(decoder.feed(chunk))
    return received


def tokenBytes(number: int, typeByte: bytes) -> bytes:
    """
    A banana token header: C{number} in base 128 and C{typeByte}.
    """
    prefix: List[bytes] = []
    banana.int2b128(number, prefix.append)
    return b"".join(prefix) + typeByte


INT_BOUNDARIES = [
    0,
    1,
    127,
    128,
    129,
    1023,
    1024,
    16383,
    16384,
    2**31 - 1,
    2**31,
    2**32,
    2**63,
    LARGEST_LONG,
    -1,
    -127,
    -128,
    -1024,
    -1025,
    -(2**31) + 1,
    -(2**31),
    -(2**31) - 1,
    -(2**63),
    -LARGEST_LONG,
]

FLOATS = [
    0.0,
    -0.0,
    1.5,
    -2.25,
    1e308,
    5e-324,
    math.pi,
    float("inf"),
    float("-inf"),
    float("nan"),
]

BYTES = [
    b"",
    b"x",
    b"\x80\x81\xff\x00",
    b"a" * 127,
    b"a" * 128,
    b"b" * 1023,
    b"b" * 1024,
    b"c" * 16383,
    b"c" * 16384,
    b"d" * SIZE_LIMIT,
]


class Colour(enum.IntEnum):
    """
    An C{int} subclass, which banana encodes as an C{int}.
    """

    RED = 1
    BIG = 2**40


class BytesSubclass(bytes):
    """
    A C{bytes} subclass.
    """


class ListSubclass(list):
    """
    A C{list} subclass.
    """


class FloatSubclass(float):
    """
    A C{float} subclass.
    """


def sampleValues() -> List[object]:
    """
    Values covering every banana type, boundary and nesting shape.
    """
    words = [word for word in OUTGOING]
    return [
        *INT_BOUNDARIES,
        *FLOATS,
        *BYTES[:-1],
        *words,
        [],
        [[]],
        [[[], []], []],
        (),
        (1, (2, (3, ()))),
        [b"dictionary", [b"key", 1], [b"other", [b"list", 2.5, b"None"]]],
        list(range(-200, 200)),
        [b"x" * 300, [b"y" * 20000, -(2**40)], 2**200],
        [True, False],
        [Colour.RED, Colour.BIG, BytesSubclass(b"word"), BytesSubclass(b"tuple")],
        ListSubclass([1, ListSubclass([2])]),
        FloatSubclass(2.5),
        [0] * 1000,
    ]


class _Implementation:
    """
    The codec under test: every test below runs twice, against the C
    accelerator (L{pbext._speedups}) and against the pure-Python code it
    must agree with.
    """

    encode = staticmethod(encode)
    encodePieces = staticmethod(encodePieces)
    Decoder: Callable[..., IDecoder] = staticmethod(makeDecoder)
    #: The most bytes one receive buffer holds.
    mostReceived = sys.maxsize


class _PurePython(_Implementation):
    encode = staticmethod(codec._encodePython)
    encodePieces = staticmethod(codec._encodePiecesPython)
    Decoder = PythonDecoder


class _Accelerated(_Implementation):
    if speedups is None:
        skip = f"the C accelerator is not available: {reason}"
    else:
        encode = staticmethod(speedups.encode)
        encodePieces = staticmethod(speedups.encodePieces)
    Decoder = AcceleratedDecoder
    mostReceived = 64 * 1024


class EncodeTestsMixin(_Implementation):
    """
    L{encode} writes exactly what C{Banana._encode} writes, and fails where
    it fails.
    """

    def assertSameEncoding(self, value: object) -> None:
        """
        C{value} encodes to stock's bytes in both dialects.
        """
        for dialect in (b"pb", None):
            self.assertEqual(
                self.encode(value, vocabularyFor(dialect)),
                stockEncode(value, dialect),
                f"dialect {dialect!r}: {value!r:.200}",
            )

    def test_intBoundaries(self) -> None:
        """
        Integers at every size and type boundary (INT, NEG, LONGINT,
        LONGNEG, one to 64 bytes of prefix) encode identically.
        """
        for value in INT_BOUNDARIES:
            self.assertSameEncoding(value)
            self.assertSameEncoding([value])

    def test_floats(self) -> None:
        """
        Floats, including signed zeros, infinities and NaN, encode
        identically.
        """
        for value in FLOATS:
            self.assertSameEncoding(value)

    def test_bytes(self) -> None:
        """
        Byte strings of every prefix length up to stock's size limit encode
        identically.
        """
        for value in BYTES:
            self.assertSameEncoding(value)

    def test_vocabulary(self) -> None:
        """
        Vocabulary words are VOCAB tokens with the pb vocabulary and plain
        strings without one, as in stock's C{b"pb"} and C{b"none"}
        dialects.
        """
        for word, number in OUTGOING.items():
            self.assertEqual(self.encode(word, OUTGOING), bytes((number, 0x87)))
            self.assertEqual(
                self.encode(word, None), tokenBytes(len(word), b"\x82") + word
            )
            self.assertSameEncoding(word)

    def test_otherVocabulary(self) -> None:
        """
        Any word-to-number mapping is used as the vocabulary, including
        numbers that need more than one byte of prefix.
        """
        vocabulary = {b"a": 0, b"b": 5000, b"c": 2}
        proto, _ = stockBanana(b"pb")
        proto.outgoingSymbols = vocabulary
        written: List[bytes] = []
        value = [b"a", b"b", b"c", b"d"]
        proto._encode(value, written.append)
        self.assertEqual(self.encode(value, vocabulary), b"".join(written))

    def test_samples(self) -> None:
        """
        Nested lists and tuples of every type encode identically; tuples
        encode as lists, and subclasses (C{bool}, C{IntEnum}, C{bytes},
        C{list} and C{float} subclasses) as their base types.
        """
        for value in sampleValues():
            self.assertSameEncoding(value)
        self.assertEqual(self.encode((1, 2), None), self.encode([1, 2], None))
        self.assertEqual(self.encode(True, None), self.encode(1, None))

    def test_jelly(self) -> None:
        """
        A jellied PB-like message encodes identically.
        """
        value = [{f"key{j}": [j, f"v{j}", (j, 2.5)] for j in range(10)}] * 3
        self.assertSameEncoding(jelly.jelly(value))

    def assertSameError(self, value: object) -> None:
        """
        Stock and L{encode} both raise C{BananaError}, with the same
        message, for C{value}.
        """
        for dialect in (b"pb", None):
            stockError = self.assertRaises(
                banana.BananaError, stockEncode, value, dialect
            )
            error = self.assertRaises(
                banana.BananaError, encode, value, vocabularyFor(dialect)
            )
            self.assertNotIsInstance(error, FramingError)
            self.assertEqual(str(error), str(stockError))

    def test_errors(self) -> None:
        """
        Over-long strings and lists, out-of-range integers and unsupported
        types raise C{BananaError} as they do in stock, also inside lists.
        """
        for value in [
            b"x" * (SIZE_LIMIT + 1),
            [0] * (SIZE_LIMIT + 1),
            (0,) * (SIZE_LIMIT + 1),
            LARGEST_LONG + 1,
            -LARGEST_LONG - 1,
            "text",
            None,
            {1: 2},
            object,
            bytearray(b"x"),
        ]:
            self.assertSameError(value)
            self.assertSameError([1, [b"ok", value]])

    def test_cycle(self) -> None:
        """
        A list that contains itself raises C{RecursionError}, as it does in
        stock, instead of encoding forever.
        """
        value: List[object] = [1]
        value.append(value)
        self.assertRaises(RecursionError, stockEncode, value)
        self.assertRaises(RecursionError, encode, value, OUTGOING)

    def test_maxMessageBytes(self) -> None:
        """
        An encoding of exactly C{maxMessageBytes} is returned; one byte
        more raises L{FramingError} with limit C{"maxMessageBytes"},
        whatever token crosses the limit.
        """
        for value in [
            [1, 2, 3],
            [b"x" * 5000, b"y"],
            [b"y", b"x" * 5000],
            [[], [[]]],
            [2.5, b"None"],
            [2**100],
            b"z" * 2000,
        ]:
            encoded = self.encode(value, OUTGOING)
            self.assertEqual(self.encode(value, OUTGOING, len(encoded)), encoded)
            error = self.assertRaises(
                FramingError, encode, value, OUTGOING, len(encoded) - 1
            )
            self.assertEqual(error.limit, "maxMessageBytes")

    def test_maxMessageBytesEarly(self) -> None:
        """
        Encoding stops as soon as C{maxMessageBytes} is passed: it does not
        reach the unsupported value at the end of the list.
        """
        value = [b"x" * 600000, b"y" * 600000, "not bytes"]
        error = self.assertRaises(FramingError, encode, value, None, 1000)
        self.assertEqual(error.limit, "maxMessageBytes")
        self.assertIsInstance(error, banana.BananaError)


class DecodeTestsMixin(_Implementation):
    """
    A decoder returns what stock banana delivers to C{expressionReceived},
    however the bytes are split.
    """

    def assertDecodesLikeStock(
        self, data: bytes, dialect: Optional[bytes] = b"pb"
    ) -> List[object]:
        """
        C{data} decodes, fed whole, byte by byte and in random chunks, to
        exactly what stock delivers.

        @return: The expressions.
        """
        expected, error = stockDecode([data], dialect)
        self.assertIsNone(error)
        vocabulary = INCOMING if dialect == b"pb" else None
        for chunks in [
            [data],
            splitAt(data, [1]),
            randomChunks(data, 1),
            randomChunks(data, 2),
            splitAt(data, [3, 65536]),
        ]:
            decoder = self.Decoder(vocabulary=vocabulary)
            received = feedAll(decoder, chunks)
            self.assertEqual(canonical(received), canonical(expected))
            self.assertEqual(decoder.pendingBytes, 0)
            self.assertFalse(decoder.messageStarted)
        return expected

    def test_roundTrip(self) -> None:
        """
        Every sample value decodes from its encoding to itself (tuples and
        subclasses as lists and base types), alone and all in one stream.
        """
        stream = []
        for dialect in (b"pb", None):
            for value in sampleValues():
                data = self.encode(value, vocabularyFor(dialect))
                stream.append(data)
                [decoded] = self.assertDecodesLikeStock(data, dialect)
                expected = stockDecode([data], dialect)[0][0]
                self.assertEqual(canonical(decoded), canonical(expected))
                if not isinstance(value, (float, tuple)):
                    self.assertEqual(decoded, value)
            data = b"".join(stream)
            self.assertEqual(
                len(self.assertDecodesLikeStock(data, dialect)), len(stream)
            )
            stream = []

    def test_jelly(self) -> None:
        """
        A jellied message with nested containers decodes like stock.
        """
        value = [{f"key{j}": [j, f"v{j}", (j, 2.5), {j}] for j in range(40)}]
        self.assertDecodesLikeStock(stockEncode(jelly.jelly(value)))

    def test_integerQuirks(self) -> None:
        """
        As in stock, INT values are not range-checked, a negative zero is
        zero, an empty prefix is zero, and up to 64 bytes of prefix are
        accepted for every type.
        """
        data = b"".join(
            [
                b"\x7f" * 64 + b"\x81",
                b"\x7f" * 64 + b"\x83",
                b"\x00\x83",
                b"\x86",
                b"\x81",
                b"\x01" * 64 + b"\x85",
                b"\x00" * 64 + b"\x80",
                b"\x00" * 63 + b"\x82",
            ]
        )
        received = self.assertDecodesLikeStock(data)
        self.assertEqual(
            received[:5], [2 ** (7 * 64) - 1, -(2 ** (7 * 64) - 1), 0, 0, 0]
        )

    def test_float(self) -> None:
        """
        A FLOAT is a type byte and eight big-endian bytes, however split.
        """
        data = self.encode([1.5, -0.0, float("inf")], None)
        self.assertDecodesLikeStock(data, None)

    def test_vocabularyBeforeDialect(self) -> None:
        """
        A VOCAB token before a vocabulary is set raises L{FramingError}
        with limit C{"badVocabulary"} (stock raises C{NotImplementedError}).
        """
        _, stockError = stockDecode([b"\x01\x87"], None)
        self.assertIsInstance(stockError, NotImplementedError)
        error = self.assertRaises(
            FramingError, self.Decoder().feed, b"\x02\x80\x01\x87"
        )
        self.assertEqual(error.limit, "badVocabulary")

    def test_unknownVocabulary(self) -> None:
        """
        A VOCAB token for a number not in the vocabulary raises
        L{FramingError} with limit C{"badVocabulary"}.
        """
        decoder = self.Decoder(vocabulary=INCOMING)
        error = self.assertRaises(FramingError, decoder.feed, b"\x7f\x87")
        self.assertEqual(error.limit, "badVocabulary")

    def test_setVocabulary(self) -> None:
        """
        After L{IDecoder.setVocabulary}, VOCAB tokens decode to their words.
        """
        decoder = self.Decoder()
        decoder.setVocabulary(INCOMING)
        self.assertEqual(
            decoder.feed(b"\x02\x80\x13\x87\x0a\x87"), [[b"version", b"persistent"]]
        )

    def test_dialectSelectionInOneChunk(self) -> None:
        """
        L{IDecoder.feedTo} lets its callback set the vocabulary on the
        dialect selection, and a vocabulary message in the same chunk then
        decodes, as in stock, where the client's selection and its first
        PB message usually arrive together.
        """
        chunk = self.encode(b"pb", None) + self.encode([b"version", 6], OUTGOING)
        decoder = self.Decoder()
        received: List[object] = []

        def expressionReceived(expression: object) -> None:
            received.append(expression)
            if expression == b"pb":
                decoder.setVocabulary(INCOMING)

        decoder.feedTo(chunk, expressionReceived)
        self.assertEqual(received, [b"pb", [b"version", 6]])

    def test_feedUsesCurrentVocabulary(self) -> None:
        """
        L{IDecoder.feed} parses a whole chunk with the vocabulary in force
        when it is called, so the dialect selection and a vocabulary message
        in one chunk fail there (which is why L{IDecoder.feedTo} exists).
        """
        chunk = self.encode(b"pb", None) + self.encode([b"version", 6], OUTGOING)
        error = self.assertRaises(FramingError, self.Decoder().feed, chunk)
        self.assertEqual(error.limit, "badVocabulary")

    def test_feedToDeliversBeforeError(self) -> None:
        """
        L{IDecoder.feedTo} delivers the expressions completed before a
        framing error, then raises it.
        """
        received: List[object] = []
        decoder = self.Decoder()
        self.assertRaises(
            FramingError, decoder.feedTo, b"\x01\x81\x02\x81\x01\x88", received.append
        )
        self.assertEqual(received, [1, 2])

    def test_callbackRaises(self) -> None:
        """
        If the L{IDecoder.feedTo} callback raises, the exception propagates,
        and the bytes after that expression are kept and decoded by the
        next call.
        """
        decoder = self.Decoder()

        def explode(expression: object) -> None:
            raise ZeroDivisionError(expression)

        data = self.encode([1, 2], None) + self.encode(3, None) + b"\x01"
        self.assertRaises(ZeroDivisionError, decoder.feedTo, data, explode)
        self.assertEqual(decoder.feed(b"\x81"), [3, 1])
        self.assertFalse(decoder.messageStarted)

    def test_notReentrant(self) -> None:
        """
        Feeding a decoder from its own callback raises C{RuntimeError}.
        """
        decoder = self.Decoder()

        def reenter(expression: object) -> None:
            decoder.feed(b"\x01\x81")

        self.assertRaises(RuntimeError, decoder.feedTo, b"\x01\x81", reenter)

    def test_badTypeByte(self) -> None:
        """
        A type byte banana does not define raises L{FramingError} with
        limit C{"badTypeByte"}, as stock raises C{NotImplementedError}.
        """
        for typeByte in range(0x88, 0x100):
            data = bytes((1, typeByte))
            _, stockError = stockDecode([data])
            self.assertIsInstance(stockError, NotImplementedError)
            error = self.assertRaises(FramingError, self.Decoder().feed, data)
            self.assertEqual(error.limit, "badTypeByte")

    def test_deadAfterError(self) -> None:
        """
        After a L{FramingError}, every call raises it again, even with
        valid bytes.
        """
        decoder = self.Decoder()
        self.assertRaises(FramingError, decoder.feed, b"\x99")
        for data in (b"\x01\x81", b""):
            error = self.assertRaises(FramingError, decoder.feed, data)
            self.assertEqual(error.limit, "badTypeByte")
        self.assertRaises(FramingError, decoder.feedTo, b"\x01\x81", print)

    def test_bytesLike(self) -> None:
        """
        C{bytearray} and C{memoryview} chunks decode like C{bytes}, and
        strings come out as C{bytes}.
        """
        decoder = self.Decoder()
        self.assertEqual(decoder.feed(bytearray(b"\x02\x82a")), [])
        [value] = decoder.feed(memoryview(b"b"))
        self.assertEqual(value, b"ab")
        self.assertIs(type(value), bytes)

    def test_badLimits(self) -> None:
        """
        Limits must be positive integers.
        """
        for name in (
            "maxPrefixBytes",
            "maxStringBytes",
            "maxListLength",
            "maxDepth",
            "maxMessageTokens",
            "maxMessageBytes",
        ):
            for value in (0, -1, 1.5, None):
                self.assertRaises(ValueError, self.Decoder, **{name: value})

    def test_defaults(self) -> None:
        """
        The defaults are stock's for prefix, string and list limits, and
        pbext's documented ones for depth, tokens and bytes.
        """
        decoder = self.Decoder()
        self.assertEqual(
            (
                decoder.maxPrefixBytes,
                decoder.maxStringBytes,
                decoder.maxListLength,
                decoder.maxDepth,
                decoder.maxMessageTokens,
                decoder.maxMessageBytes,
            ),
            (
                64,
                SIZE_LIMIT,
                SIZE_LIMIT,
                DEFAULT_MAX_DEPTH,
                DEFAULT_MAX_MESSAGE_TOKENS,
                DEFAULT_MAX_MESSAGE_BYTES,
            ),
        )


class StateTestsMixin(_Implementation):
    """
    L{IDecoder.pendingBytes} and L{IDecoder.messageStarted} describe the
    message in progress; messages come out once each, in order.
    """

    def test_progress(self) -> None:
        """
        C{pendingBytes} counts the bytes received of the incomplete message,
        whether parsed or held, and drops to 0 when it completes.
        """
        decoder = self.Decoder()
        self.assertEqual((decoder.pendingBytes, decoder.messageStarted), (0, False))
        steps: Sequence[Tuple[bytes, int, List[object]]] = [
            (b"\x02", 1, []),
            (b"\x80", 2, []),
            (b"\x05\x82ab", 6, []),
            (b"c", 7, []),
            (b"de", 9, []),
            (b"\x00", 10, []),
            (b"\x81", 0, [[b"abcde", 0]]),
        ]
        for data, pending, received in steps:
            self.assertEqual(decoder.feed(data), received)
            self.assertEqual(decoder.pendingBytes, pending)
            self.assertEqual(decoder.messageStarted, pending > 0)

    def test_idleBetweenMessages(self) -> None:
        """
        Bytes of a second message held after a first completes count as a
        started message.
        """
        decoder = self.Decoder()
        self.assertEqual(decoder.feed(b"\x01\x81\x03"), [1])
        self.assertEqual(decoder.pendingBytes, 1)
        self.assertTrue(decoder.messageStarted)

    def test_twoMessagesOneChunk(self) -> None:
        """
        Two messages in one chunk come out in order.
        """
        data = self.encode([b"first", 1], None) + self.encode([b"second", [2]], None)
        self.assertEqual(self.Decoder().feed(data), [[b"first", 1], [b"second", [2]]])

    def test_splitMessageOnce(self) -> None:
        """
        A message split across feeds comes out once, from the feed that
        completes it.
        """
        data = self.encode([b"x" * 3000, [1, 2.5], b"y"], None)
        decoder = self.Decoder()
        results = [decoder.feed(chunk) for chunk in splitAt(data, [1000])]
        self.assertEqual(results[:-1], [[]] * (len(results) - 1))
        self.assertEqual(results[-1], [[b"x" * 3000, [1, 2.5], b"y"]])
        self.assertEqual(decoder.feed(b""), [])


class LimitTestsMixin(_Implementation):
    """
    Every limit raises L{FramingError} naming it, as soon as the bytes that
    break it arrive.
    """

    def assertLimit(self, decoder: IDecoder, data: bytes, limit: str) -> None:
        """
        Feeding C{data} raises L{FramingError} for C{limit}.
        """
        error = self.assertRaises(FramingError, decoder.feed, data)
        self.assertEqual(error.limit, limit)
        self.assertIsInstance(error, banana.BananaError)
        self.assertTrue(error.message)

    def test_stringHeader(self) -> None:
        """
        A string header claiming 10 MB raises C{"maxStringBytes"} on the
        header bytes alone; a string of exactly C{maxStringBytes} is
        accepted.
        """
        self.assertLimit(
            self.Decoder(), tokenBytes(10 * 1024 * 1024, b"\x82"), "maxStringBytes"
        )
        self.assertLimit(self.Decoder(maxStringBytes=3), b"\x04\x82", "maxStringBytes")
        self.assertEqual(self.Decoder(maxStringBytes=3).feed(b"\x03\x82abc"), [b"abc"])

    def test_listHeader(self) -> None:
        """
        A list header declaring more than C{maxListLength} elements raises
        C{"maxListLength"} at the header.
        """
        self.assertLimit(
            self.Decoder(), tokenBytes(SIZE_LIMIT + 1, b"\x80"), "maxListLength"
        )
        self.assertLimit(self.Decoder(maxListLength=2), b"\x03\x80", "maxListLength")
        self.assertEqual(
            self.Decoder(maxListLength=2).feed(b"\x02\x80\x01\x81\x02\x81"), [[1, 2]]
        )

    def test_depth(self) -> None:
        """
        A flood of nested list headers raises C{"maxDepth"} at header
        C{maxDepth + 1}, not before; an empty list counts as a level.
        """
        decoder = self.Decoder()
        self.assertEqual(decoder.feed(b"\x01\x80" * DEFAULT_MAX_DEPTH), [])
        self.assertLimit(decoder, b"\x01\x80", "maxDepth")
        decoder = self.Decoder(maxDepth=3)
        self.assertEqual(decoder.feed(b"\x01\x80\x01\x80\x01\x80"), [])
        self.assertLimit(decoder, b"\x00\x80", "maxDepth")
        self.assertEqual(
            self.Decoder(maxDepth=3).feed(
                b"\x01\x80\x01\x80\x00\x80\x02\x80\x00\x80\x00\x80"
            ),
            [[[[]]], [[], []]],
        )

    def test_tokensNested(self) -> None:
        """
        A message may hold C{maxMessageTokens} tokens; in a chain of nested
        lists the header that declares one more raises
        C{"maxMessageTokens"}.
        """
        decoder = self.Decoder(maxMessageTokens=10)
        # Nine singleton lists and an INT: ten tokens.
        self.assertEqual(
            decoder.feed(b"\x01\x80" * 9 + b"\x00\x81"), [[[[[[[[[[0]]]]]]]]]]
        )
        decoder = self.Decoder(maxMessageTokens=10)
        self.assertEqual(decoder.feed(b"\x01\x80" * 9), [])
        self.assertLimit(decoder, b"\x01\x80", "maxMessageTokens")

    def test_tokensFlat(self) -> None:
        """
        A message of many tiny tokens raises C{"maxMessageTokens"} as soon
        as its list header declares C{maxMessageTokens} elements (one token
        too many with the header), before any element arrives; one element
        fewer is accepted.
        """
        limit = 1000
        decoder = self.Decoder(maxMessageTokens=limit)
        self.assertEqual(
            decoder.feed(self.encode([0] * (limit - 1), None)), [[0] * (limit - 1)]
        )
        self.assertLimit(decoder, tokenBytes(limit, b"\x80"), "maxMessageTokens")

    def test_tokensPerMessage(self) -> None:
        """
        The token count starts again with each message.
        """
        decoder = self.Decoder(maxMessageTokens=3)
        data = self.encode([1, 2], None) * 50
        self.assertEqual(decoder.feed(data), [[1, 2]] * 50)

    def test_bytesExact(self) -> None:
        """
        A message of exactly C{maxMessageBytes} bytes is accepted, in any
        chunking; one more byte raises C{"maxMessageBytes"}.
        """
        value = [b"abc", [1, 2**40, 2.5], b"None", b"x" * 200]
        data = self.encode(value, None)
        for chunks in ([data], splitAt(data, [1]), randomChunks(data, 3)):
            decoder = self.Decoder(maxMessageBytes=len(data))
            self.assertEqual(feedAll(decoder, chunks * 3), [value] * 3)
            decoder = self.Decoder(maxMessageBytes=len(data) - 1)
            error = self.assertRaises(FramingError, feedAll, decoder, chunks)
            self.assertEqual(error.limit, "maxMessageBytes")

    def test_bytesDeclaredString(self) -> None:
        """
        A string is counted against C{maxMessageBytes} at its header, before
        its body arrives.
        """
        first = b"\x02\x80" + tokenBytes(900, b"\x82") + b"x" * 900
        decoder = self.Decoder(maxMessageBytes=1000)
        self.assertEqual(decoder.feed(first + tokenBytes(93, b"\x82")), [])
        decoder = self.Decoder(maxMessageBytes=1000)
        self.assertEqual(decoder.feed(first), [])
        self.assertLimit(decoder, tokenBytes(94, b"\x82"), "maxMessageBytes")

    def test_bytesScalars(self) -> None:
        """
        A run of small tokens that takes a message past C{maxMessageBytes}
        raises within the same feed, even before the message ends.
        """
        decoder = self.Decoder(maxMessageBytes=20)
        self.assertLimit(decoder, b"\x64\x80" + b"\x01\x81" * 10, "maxMessageBytes")

    def test_bytesIncompletePrefix(self) -> None:
        """
        The held bytes of an incomplete number prefix count against
        C{maxMessageBytes}.
        """
        decoder = self.Decoder(maxMessageBytes=10)
        self.assertEqual(decoder.feed(b"\x05\x80" + b"\x01\x81" * 3), [])
        self.assertEqual(decoder.pendingBytes, 8)
        self.assertLimit(decoder, b"\x01\x01\x01", "maxMessageBytes")

    def test_prefix(self) -> None:
        """
        More than C{maxPrefixBytes} bytes of prefix raise
        C{"maxPrefixBytes"}, whether or not the type byte has arrived;
        exactly C{maxPrefixBytes} wait for it.
        """
        for chunks in (
            [b"\x01" * 65],
            [b"\x01" * 64, b"\x01"],
            [b"\x01" * 65 + b"\x81"],
        ):
            _, stockError = stockDecode(chunks)
            self.assertIsInstance(stockError, banana.BananaError)
            error = self.assertRaises(FramingError, feedAll, self.Decoder(), chunks)
            self.assertEqual(error.limit, "maxPrefixBytes")
        decoder = self.Decoder(maxPrefixBytes=2)
        self.assertEqual(decoder.feed(b"\x01\x01"), [])
        self.assertLimit(decoder, b"\x01", "maxPrefixBytes")
        self.assertEqual(self.Decoder(maxPrefixBytes=1).feed(b"\x01\x81"), [1])
        self.assertLimit(
            self.Decoder(maxPrefixBytes=1), b"\x01\x01\x81", "maxPrefixBytes"
        )

    def test_prefixLimitBeforeTypeByte(self) -> None:
        """
        With C{maxPrefixBytes} 1, two bytes of prefix raise
        C{"maxPrefixBytes"} at once, before a type byte arrives (and after
        whole tokens): they do not wait for a third byte.
        """
        self.assertLimit(self.Decoder(maxPrefixBytes=1), b"\x01\x01", "maxPrefixBytes")
        self.assertLimit(
            self.Decoder(maxPrefixBytes=1), b"\x01\x81\x01\x01", "maxPrefixBytes"
        )


def jellyable() -> st.SearchStrategy[object]:
    """
    Random values that jelly can serialize and banana can send.
    """
    hashable = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**300), max_value=2**300),
        st.text(max_size=20),
        st.binary(max_size=20),
    )
    scalars = st.one_of(
        hashable,
        st.floats(),
        st.integers(min_value=-LARGEST_LONG, max_value=LARGEST_LONG),
        st.binary(max_size=300),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=6),
            st.lists(children, max_size=6).map(tuple),
            st.dictionaries(hashable, children, max_size=5),
            st.sets(hashable, max_size=5),
            st.frozensets(hashable, max_size=5),
        ),
        max_leaves=40,
    )


def chunkSizes() -> st.SearchStrategy[List[int]]:
    """
    Random chunk sizes for L{splitAt}.
    """
    return st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=20)


# These properties run once per implementation (the C accelerator and the
# pure-Python codec): hypothesis sees one test called from two classes,
# which is intended, and an example saved by one is a fine one for both.
PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.differing_executors,
    ],
)


class PropertyTestsMixin(_Implementation):
    """
    Random values and random bytes decode exactly as stock decodes them.
    """

    @PROPERTY_SETTINGS
    @given(value=jellyable(), sizes=chunkSizes(), pb=st.booleans())
    def test_jellyLikeStock(self, value: object, sizes: List[int], pb: bool) -> None:
        """
        Any jellied value encodes to stock's bytes, and those bytes fed in
        random chunks decode to exactly what stock delivers.
        """
        dialect = b"pb" if pb else None
        sexp = jelly.jelly(value)
        data = stockEncode(sexp, dialect)
        self.assertEqual(self.encode(sexp, vocabularyFor(dialect)), data)
        expected, error = stockDecode([data], dialect)
        self.assertIsNone(error)
        decoder = self.Decoder(vocabulary=INCOMING if pb else None)
        received = feedAll(decoder, splitAt(data * 2, sizes))
        self.assertEqual(canonical(received), canonical(expected * 2))
        self.assertFalse(decoder.messageStarted)

    @PROPERTY_SETTINGS
    @given(
        data=st.binary(max_size=400),
        sizes=chunkSizes(),
        pb=st.booleans(),
        limits=st.fixed_dictionaries(
            {},
            optional={
                name: st.integers(min_value=1, max_value=12)
                for name in (
                    "maxPrefixBytes",
                    "maxStringBytes",
                    "maxListLength",
                    "maxDepth",
                    "maxMessageTokens",
                    "maxMessageBytes",
                )
            },
        ),
    )
    def test_fuzz(self, data: bytes, sizes: List[int], pb: bool, limits: dict) -> None:
        """
        Arbitrary bytes in arbitrary chunks, with arbitrary limits, either
        decode or raise L{FramingError}, never anything else.
        """
        decoder = self.Decoder(vocabulary=INCOMING if pb else None, **limits)
        try:
            feedAll(decoder, splitAt(data, sizes))
        except FramingError:
            self.assertRaises(FramingError, decoder.feed, b"")

    @PROPERTY_SETTINGS
    @given(
        data=st.one_of(
            st.binary(max_size=400),
            st.lists(
                st.sampled_from(
                    [
                        b"\x00\x80",
                        b"\x01\x80",
                        b"\x02\x80",
                        b"\x03\x81",
                        b"\x02\x83",
                        b"\x01\x82",
                        b"\x05\x87",
                        b"\x84",
                        b"\x01",
                        b"\x7f\x7f\x85",
                        b"\x03\x82",
                        b"\x00\x86",
                        b"\x1f\x87",
                        b"\x40\x87",
                    ]
                ),
                max_size=60,
            ).map(b"".join),
        ),
        sizes=chunkSizes(),
        pb=st.booleans(),
    )
    def test_fuzzLikeStock(self, data: bytes, sizes: List[int], pb: bool) -> None:
        """
        Arbitrary bytes in arbitrary chunks give exactly the expressions
        stock delivers, and fail (with L{FramingError}) exactly when stock
        fails, after the same expressions; an incomplete message is
        reported as started exactly when stock holds part of one.
        """
        dialect = b"pb" if pb else None
        chunks = splitAt(data, sizes)
        proto, expected = stockBanana(dialect)
        decoder = self.Decoder(vocabulary=INCOMING if pb else None, **UNLIMITED)
        received: List[object] = []
        for chunk in chunks:
            try:
                proto.dataReceived(chunk)
            except Exception:
                self.assertRaises(FramingError, decoder.feedTo, chunk, received.append)
                break
            decoder.feedTo(chunk, received.append)
            self.assertEqual(
                decoder.messageStarted, bool(proto.listStack or proto.buffer)
            )
        self.assertEqual(canonical(received), canonical(expected))


#: The longest string L{encodePieces} copies into a piece.
LONG_PIECE = 64 * 1024

#: A long string's length, and the share of it that must arrive before the
#: decoder receives it in place.
LONG = 300_000
SHARE = 16


def fillFrom(decoder: IDecoder, data: bytes, count: int, received: List[object]) -> int:
    """
    Write the first C{count} bytes of C{data} into C{decoder}'s receive
    buffer and report them; return how many were written.
    """
    buffer = decoder.receiveBuffer()
    assert buffer is not None
    with memoryview(buffer) as view:
        count = min(count, len(view), len(data))
        view[:count] = data[:count]
    decoder.bufferFilled(count, received.append)
    return count


class ReceiveBufferTestsMixin(_Implementation):
    """
    A long string can be received straight into its final buffer
    (L{IDecoder.receiveBuffer} and L{IDecoder.bufferFilled}), with exactly the
    results of feeding the same bytes, and one copy.
    """

    def message(self) -> Tuple[List[object], bytes]:
        """
        A PB-like call carrying a long string, with tokens after it, and its
        encoding followed by a second message.
        """
        body = bytes(range(256)) * (LONG // 256) + b"tail"
        sexp: List[object] = [b"message", 7, b"root", [b"tuple", body], [b"x"]]
        return sexp, self.encode(sexp, None) + self.encode([b"next", 1.5], None)

    def test_awkwardSplits(self) -> None:
        """
        Fed in chunks split anywhere (inside the header, one byte either
        side of the point where the string is made, at its last byte), the
        message decodes as whole, by both ways of receiving.
        """
        sexp, data = self.message()
        start = data.index(b"\x82", data.index(b"tuple")) + 1
        share = LONG // SHARE
        points = [
            start - 1,
            start,
            start + 1,
            start + share - 1,
            start + share,
            start + share + 1,
            start + LONG + 3,
            start + LONG + 4,
            start + LONG + 5,
        ]
        for cut in points:
            for second in (1, 1000, 65536, len(data)):
                chunks = [data[:cut], data[cut : cut + second], data[cut + second :]]
                self.assertEqual(
                    feedAll(self.Decoder(), chunks), [sexp, [b"next", 1.5]]
                )
                decoder = self.Decoder()
                received: List[object] = []
                pos = 0
                for chunk in chunks:
                    decoder.feedTo(chunk, received.append)
                    pos += len(chunk)
                    if decoder.receiveBuffer() is not None:
                        pos += fillFrom(decoder, data[pos:], second, received)
                        decoder.feedTo(data[pos:], received.append)
                        break
                self.assertEqual(received, [sexp, [b"next", 1.5]], cut)
                self.assertFalse(decoder.messageStarted)

    def test_randomSplits(self) -> None:
        """
        Random mixes of fed chunks and filled buffers give the same
        messages.
        """
        sexp, data = self.message()
        for seed in range(20):
            rng = random.Random(seed)
            decoder = self.Decoder()
            received: List[object] = []
            pos = 0
            while pos < len(data):
                if decoder.receiveBuffer() is not None and rng.random() < 0.7:
                    pos += fillFrom(
                        decoder, data[pos:], rng.randint(0, 100_000), received
                    )
                else:
                    size = rng.choice([1, 3, 4096, 65536, 200_000])
                    decoder.feedTo(data[pos : pos + size], received.append)
                    pos += size
            self.assertEqual(received, [sexp, [b"next", 1.5]], seed)

    def test_onlyOnceAShareArrived(self) -> None:
        """
        The string is made at its final size only once a sixteenth of it
        has arrived, so a peer that declares a long string and sends little
        of it costs little memory; short strings are never received in
        place.
        """
        data = self.encode(b"z" * LONG, None)
        header = len(data) - LONG
        decoder = self.Decoder()
        decoder.feed(data[: header + LONG // SHARE - 1])
        self.assertIsNone(decoder.receiveBuffer())
        decoder.feed(data[header + LONG // SHARE - 1 : header + LONG // SHARE])
        buffer = decoder.receiveBuffer()
        self.assertIsNotNone(buffer)
        # The whole rest (Python), or as much of it as the accelerator's
        # receive buffer holds (64 KiB).
        self.assertEqual(
            len(memoryview(buffer)), min(decoder.wantedBytes, self.mostReceived)
        )
        self.assertEqual(decoder.wantedBytes, LONG - LONG // SHARE)
        self.assertEqual(decoder.pendingBytes, header + LONG // SHARE)
        self.assertTrue(decoder.messageStarted)
        short = self.Decoder()
        short.feed(self.encode(b"s" * 65536, None)[:-1])
        self.assertIsNone(short.receiveBuffer())
        self.assertEqual(short.wantedBytes, 1)

    def test_stateWhileReceiving(self) -> None:
        """
        C{wantedBytes}, C{pendingBytes} and C{messageStarted} follow bytes
        written into the buffer as they follow bytes fed.
        """
        sexp, data = self.message()
        decoder = self.Decoder()
        decoder.feed(data[:100_000])
        received: List[object] = []
        fillFrom(decoder, data[100_000:], 50_000, received)
        fed = self.Decoder()
        fed.feed(data[:150_000])
        self.assertEqual(
            (decoder.wantedBytes, decoder.pendingBytes, decoder.messageStarted),
            (fed.wantedBytes, fed.pendingBytes, fed.messageStarted),
        )
        self.assertEqual(received, [])

    def test_noBufferOutstanding(self) -> None:
        """
        C{bufferFilled} needs the buffer just handed out: none asked for,
        bytes fed since, or more bytes than it holds raise L{ValueError}.
        """
        _, data = self.message()
        decoder = self.Decoder()
        decoder.feed(data[:100_000])
        self.assertRaises(ValueError, decoder.bufferFilled, 1, list.append)
        buffer = decoder.receiveBuffer()
        assert buffer is not None
        self.assertRaises(
            ValueError, decoder.bufferFilled, len(memoryview(buffer)) + 1, print
        )
        self.assertRaises(ValueError, decoder.bufferFilled, -1, print)
        decoder.feed(data[100_000:100_010])
        self.assertRaises(ValueError, decoder.bufferFilled, 1, print)
        self.assertIsNone(self.Decoder().receiveBuffer())

    def test_lingeringView(self) -> None:
        """
        Writing through a view of a buffer kept past C{bufferFilled} does
        not change the string delivered.
        """
        body = b"q" * LONG
        data = self.encode(body, None)
        decoder = self.Decoder()
        decoder.feed(data[:50_000])
        received: List[object] = []
        at = 50_000
        views = []
        while not received:
            buffer = decoder.receiveBuffer()
            assert buffer is not None
            view = memoryview(buffer)
            views.append(view)
            count = min(len(view), len(data) - at)
            view[:count] = data[at : at + count]
            at += count
            decoder.bufferFilled(count, received.append)
        for view in views:
            view[:10] = b"0123456789"
        self.assertEqual(received, [body])
        for view in views:
            view.release()

    def test_framingErrorAfter(self) -> None:
        """
        A framing error in the bytes fed after a long string completes is
        raised, and the decoder stays dead.
        """
        data = self.encode(b"e" * LONG, None)
        decoder = self.Decoder()
        decoder.feed(data[:40_000])
        self.assertRaises(FramingError, decoder.feed, data[40_000:] + b"\x01\x8f")
        self.assertRaises(FramingError, decoder.feed, b"")
        self.assertIsNone(decoder.receiveBuffer())


class PiecesTestsMixin(_Implementation):
    """
    L{encodePieces} gives the bytes L{encode} gives, in pieces: every
    string longer than 64 KiB a piece of its own, not copied.
    """

    def test_sameBytes(self) -> None:
        """
        The pieces of every sample value, and of values holding long
        strings (one byte either side of 64 KiB, first, last, next to each
        other, vocabulary words), join to stock's bytes; no piece is empty.
        """
        long = b"L" * (LONG_PIECE + 1)
        values = sampleValues() + [
            long,
            [long],
            [long, long, 1],
            [b"x" * LONG_PIECE, 2],
            [1, [b"tuple", long], [b"dictionary"]],
            (b"tuple", b"y" * 200_000, b"z" * (LONG_PIECE + 7)),
        ]
        for value in values:
            for dialect in (None, b"pb"):
                pieces = self.encodePieces(value, vocabularyFor(dialect))
                self.assertEqual(b"".join(pieces), stockEncode(value, dialect))
                self.assertTrue(all(type(piece) is bytes and piece for piece in pieces))

    def test_longStringsNotCopied(self) -> None:
        """
        Long strings are their own pieces, the very objects given; the rest
        is joined between them.
        """
        first = b"F" * (LONG_PIECE + 1)
        second = bytes(range(256)) * 1000
        pieces = self.encodePieces([b"message", first, 7, second, [b"x"]], None)
        self.assertEqual(len(pieces), 5)
        self.assertIs(pieces[1], first)
        self.assertIs(pieces[3], second)
        self.assertEqual(len(self.encodePieces([b"s" * LONG_PIECE], None)), 1)

    def test_limit(self) -> None:
        """
        The size limit counts every piece.
        """
        long = b"L" * (LONG_PIECE + 1)
        size = len(self.encode([long, long], None))
        self.assertEqual(len(self.encodePieces([long, long], None, size)), 4)
        error = self.assertRaises(
            FramingError, self.encodePieces, [long, long, 1], None, size
        )
        self.assertEqual(error.limit, "maxMessageBytes")
        self.assertRaises(FramingError, self.encodePieces, [long, long], None, size - 1)


class PairEncodingTestsMixin(_Implementation):
    """
    L{encode}'s in-place path for two-element lists of short strings
    (jelly's C{[b"unicode", text]}) writes stock banana's bytes.
    """

    def test_pairsLikeStock(self) -> None:
        """
        Pairs of short strings, vocabulary words, long strings and other
        values encode exactly as stock banana encodes them, with and
        without the C{b"pb"} vocabulary.
        """
        strings = [b"", b"unicode", b"list", b"x" * 127, b"y" * 128, b"z" * 1023]
        strings.append(b"w" * 1024)
        pairs: List[object] = [[a, b] for a in strings for b in strings]
        pairs += [(b"tuple", b"None"), [b"a", 1], [1, b"a"], [b"a", [b"b"]]]
        for value in pairs + [pairs]:
            self.assertEqual(self.encode(value, OUTGOING), stockEncode(value))
            self.assertEqual(self.encode(value), stockEncode(value, None))

    def test_pairsLimit(self) -> None:
        """
        A pair that takes the encoding past C{maxMessageBytes} raises
        L{FramingError}, and one that ends exactly at it does not.
        """
        value = [[b"unicode", b"text"], [b"unicode", b"more text"]]
        encoded = self.encode(value, OUTGOING)
        self.assertEqual(self.encode(value, OUTGOING, len(encoded)), encoded)
        error = self.assertRaises(
            FramingError, encode, value, OUTGOING, len(encoded) - 1
        )
        self.assertEqual(error.limit, "maxMessageBytes")


class EncodeTests(EncodeTestsMixin, _Accelerated, SynchronousTestCase):
    pass


class PythonEncodeTests(EncodeTestsMixin, _PurePython, SynchronousTestCase):
    pass


class DecodeTests(DecodeTestsMixin, _Accelerated, SynchronousTestCase):
    pass


class PythonDecodeTests(DecodeTestsMixin, _PurePython, SynchronousTestCase):
    pass


class StateTests(StateTestsMixin, _Accelerated, SynchronousTestCase):
    pass


class PythonStateTests(StateTestsMixin, _PurePython, SynchronousTestCase):
    pass


class LimitTests(LimitTestsMixin, _Accelerated, SynchronousTestCase):
    pass


class PythonLimitTests(LimitTestsMixin, _PurePython, SynchronousTestCase):
    pass


class PropertyTests(PropertyTestsMixin, _Accelerated, SynchronousTestCase):
    pass


class PythonPropertyTests(PropertyTestsMixin, _PurePython, SynchronousTestCase):
    pass


class PairEncodingTests(PairEncodingTestsMixin, _Accelerated, SynchronousTestCase):
    pass


class PythonPairEncodingTests(PairEncodingTestsMixin, _PurePython, SynchronousTestCase):
    pass


class ReceiveBufferTests(ReceiveBufferTestsMixin, _Accelerated, SynchronousTestCase):
    pass


class PythonReceiveBufferTests(
    ReceiveBufferTestsMixin, _PurePython, SynchronousTestCase
):
    pass


class PiecesTests(PiecesTestsMixin, _Accelerated, SynchronousTestCase):
    pass


class PythonPiecesTests(PiecesTestsMixin, _PurePython, SynchronousTestCase):
    pass


class DecoderInterfaceTests(SynchronousTestCase):
    """
    Both decoders provide L{IDecoder}, and L{makeDecoder} chooses one of
    them once, by class.
    """

    def test_pythonProvides(self) -> None:
        """
        L{PythonDecoder} provides L{IDecoder} and is not accelerated.
        """
        decoder = PythonDecoder()
        self.assertTrue(verifyObject(IDecoder, decoder))
        self.assertFalse(decoder.accelerated)

    def test_acceleratedProvides(self) -> None:
        """
        L{AcceleratedDecoder} provides L{IDecoder} and is accelerated.
        """
        if speedups is None:
            raise SkipTest(f"the C accelerator is not available: {reason}")
        decoder = AcceleratedDecoder()
        self.assertTrue(verifyObject(IDecoder, decoder))
        self.assertTrue(decoder.accelerated)

    def test_acceleratedUnavailable(self) -> None:
        """
        Without the accelerator, making an L{AcceleratedDecoder} is a
        C{ValueError} that says why the accelerator is not there.
        """
        if speedups is not None:
            raise SkipTest("the C accelerator is available")
        error = self.assertRaises(ValueError, AcceleratedDecoder)
        self.assertIn(str(reason), str(error))

    def test_factoryChooses(self) -> None:
        """
        L{makeDecoder} makes an L{AcceleratedDecoder} where the accelerator
        is loaded and a L{PythonDecoder} otherwise, or the one C{accelerated}
        asks for, with the limits and vocabulary it is given.
        """
        expected = PythonDecoder if speedups is None else AcceleratedDecoder
        self.assertIs(type(makeDecoder()), expected)
        python = makeDecoder(accelerated=False, maxDepth=7, vocabulary={1: b"pb"})
        self.assertIs(type(python), PythonDecoder)
        self.assertEqual(python.maxDepth, 7)
        self.assertEqual(python.feed(b"\x01\x87"), [b"pb"])
        if speedups is not None:
            fast = makeDecoder(accelerated=True, maxDepth=7, vocabulary={1: b"pb"})
            self.assertIs(type(fast), AcceleratedDecoder)
            self.assertEqual(fast.maxDepth, 7)
            self.assertEqual(fast.feed(b"\x01\x87"), [b"pb"])

    def test_methodsOfTheClass(self) -> None:
        """
        A decoder's methods are its class's: nothing is put on the instance
        (the C decoder's methods are inherited from the accelerator's type,
        not copied onto each decoder).
        """
        for decoder in self.decoders():
            onInstance = getattr(decoder, "__dict__", {}).keys()
            self.assertEqual(onInstance & _METHODS, set(), type(decoder))
            for name in _METHODS:
                self.assertTrue(callable(getattr(type(decoder), name)), name)

    def decoders(self) -> List[IDecoder]:
        """
        One decoder of each implementation available.
        """
        made: List[IDecoder] = [PythonDecoder()]
        if speedups is not None:
            made.append(AcceleratedDecoder())
        return made


#: The methods of L{IDecoder}.
_METHODS = {
    "feed",
    "feedTo",
    "setVocabulary",
    "receiveBuffer",
    "bufferFilled",
    "setPlainJelly",
    "setPlainTypes",
}


class ImportAloneTests(SynchronousTestCase):
    """
    A program may import L{pbext.codec} (or L{pbext._jelly}) on its own,
    without the package's lazily loaded public names.
    """

    def runAlone(self, script: str) -> str:
        """
        Run C{script} in a new Python process that can import this
        checkout's pbext, and return what it printed; it must print no
        error.
        """
        import os
        import subprocess
        import sys

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=dict(os.environ, PYTHONPATH=root),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(out.stderr, "")
        return out.stdout.strip()

    def test_decoderAlone(self) -> None:
        """
        A decoder made by a program that imported only L{pbext.codec}
        works, with the accelerator when it is built: importing
        L{pbext.codec} gives the accelerator all of its configuration.
        """
        printed = self.runAlone(
            "from pbext import codec\n"
            "d = codec.makeDecoder()\n"
            "print(d.accelerated, d.feed(codec.encode([b'x', 1])))\n"
        )
        self.assertEqual(printed, f"{speedups is not None} [[b'x', 1]]")

    def test_jellyAlone(self) -> None:
        """
        The plain paths of L{pbext._jelly} work in a program that imported
        only that module: importing it gives the accelerator all of its
        configuration too.
        """
        printed = self.runAlone(
            "from pbext import _jelly\n"
            "print(_jelly.unjellyPlain([b'list', 1, [b'tuple']]))\n"
        )
        self.assertEqual(printed, "[1, ()]")
