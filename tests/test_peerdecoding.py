"""
Decoding a peer's bytes, end to end: values the decoder builds are
ordinary objects the application owns, the C accelerator and the Python
twin answer the same bytes the same way, and nothing that goes wrong while
decoding a peer's bytes escapes C{Broker.dataReceived}.
"""

from __future__ import annotations

import gc
import os
import sys
import weakref
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pbext import codec
from pbext._accelerator import speedups
from tests._hostile import HostileMixin, callMessage, flattenBytes, wireMessage
from tests._parity import checkDecoding, checkUnjelly
from tests.test_plaintypes import (
    INCOMING,
    OUTGOING,
    TWIN,
    TYPES,
    Flat,
    fullJelly,
    stateExpressions,
)

#: Two empty tuples (the interpreter's one shared empty tuple, twice) and a
#: jelly reference after them in the same list, so that the values decoded
#: first must be jellied back for the full unjellier.
SHARED_EMPTY = [
    b"tuple",
    [
        b"list",
        [b"list", [b"tuple"], [b"tuple"], [b"frozenset"], [b"frozenset"], 1, 1],
        [b"reference", 1, [b"list", [b"unicode", b"x"], [b"unicode", b"x"]]],
        [b"dereference", 1],
    ],
]


class _Holder:
    """
    An object that can be weakly referenced, to put in a cycle.
    """

    value: Any = None


class DecodedValuesTests(SynchronousTestCase):
    """
    What the decoder hands to application code is tracked by the garbage
    collector like any other object, and decoding leaves the collector as
    the application set it.
    """

    def setUp(self) -> None:
        if speedups is None:
            self.skipTest("the C accelerator is not built")

    def inCycle(self, value: list[Any]) -> weakref.ref[_Holder]:
        """
        Put C{value} in a reference cycle with a new object; return a
        weak reference to that object.
        """
        holder = _Holder()
        holder.value = value
        value.append(holder)
        return weakref.ref(holder)

    def assertCollected(self, ref: weakref.ref[_Holder]) -> None:
        """
        The cycle of C{ref}'s object, dropped by the caller, is collected.
        """
        gc.collect()
        self.assertIsNone(ref())

    def test_fedListsTracked(self) -> None:
        """
        The lists L{pbext.interfaces.IDecoder.feed} returns, and every list inside
        them, are tracked by the garbage collector; one put in a cycle by
        the application is collected.
        """
        data = codec.encode([b"list", [b"x", [1, 2.5]], [], [b"y"]])
        for accelerated in (True, False):
            (decoded,) = codec.makeDecoder(accelerated=accelerated).feed(data)
            self.assertEqual(decoded, [b"list", [b"x", [1, 2.5]], [], [b"y"]])
            for lst in (decoded, decoded[1], decoded[1][1], decoded[2], decoded[3]):
                self.assertTrue(gc.is_tracked(lst), (accelerated, lst))
            ref = self.inCycle(decoded)
            del decoded, lst
            self.assertCollected(ref)

    def test_plainValuesTracked(self) -> None:
        """
        In plain-jelly mode the values built while parsing (and the
        expressions left for the full unjellier) are tracked and
        collectable.
        """
        data = codec.encode(
            [b"answer", 1, [b"list", [b"dictionary", [b"k", [b"list"]]]]], OUTGOING
        )
        decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=True)
        decoder.setPlainJelly(True)
        (message,) = decoder.feed(data)
        value = message[2].value
        self.assertEqual(value, [{b"k": []}])
        self.assertTrue(gc.is_tracked(message))
        self.assertTrue(gc.is_tracked(value))
        self.assertTrue(gc.is_tracked(value[0][b"k"]))
        refs = [self.inCycle(value), self.inCycle(message)]
        del value, message
        for ref in refs:
            self.assertCollected(ref)

    def test_copiesTracked(self) -> None:
        """
        Copies of registered types read straight from the bytes are
        tracked from the moment they are built, and delivered tracked.
        """
        flats = [Flat(i, 0.5, f"n{i}", b"d", True) for i in range(300)]
        data = codec.encode([b"answer", 1, fullJelly(flats)], OUTGOING)
        seen: list[bool] = []
        for feedTo in (True, False):
            decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=True)
            decoder.setPlainJelly(True)
            decoder.setPlainTypes(TYPES.receive)
            if feedTo:
                received: list[Any] = []
                decoder.feedTo(data, received.append)
            else:
                received = decoder.feed(data)
            got = received[0][2].value
            self.assertEqual(got, flats)
            seen.append(all(gc.is_tracked(copy) for copy in got))
        self.assertEqual(seen, [True, True])

    def test_collectorStateLeftAlone(self) -> None:
        """
        Python code the parser runs (a C{feedTo} callback) sees the
        collector as the application left it, and what it does to the
        collector stays done once C{feedTo} returns.
        """
        wasEnabled = gc.isenabled()
        self.addCleanup(gc.enable if wasEnabled else gc.disable)
        flats = [Flat(i, 0.5, f"n{i}", b"d", True) for i in range(50)]
        message = codec.encode([b"answer", 1, fullJelly(flats)], OUTGOING)
        for appWants in (False, True):
            decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=True)
            decoder.setPlainJelly(True)
            decoder.setPlainTypes(TYPES.receive)
            seen: list[bool] = []

            def callback(
                expression: object, appWants: bool = appWants, seen: list[bool] = seen
            ) -> None:
                seen.append(gc.isenabled())
                # The application changes its mind inside the callback.
                (gc.enable if appWants else gc.disable)()

            (gc.disable if appWants else gc.enable)()
            decoder.feedTo(message * 3, callback)
            self.assertEqual(seen, [not appWants, appWants, appWants])
            self.assertEqual(gc.isenabled(), appWants)

    def test_noCollectionWhileDisabled(self) -> None:
        """
        With the collector disabled by the application, decoding many
        copies runs no collection.
        """
        wasEnabled = gc.isenabled()
        self.addCleanup(gc.enable if wasEnabled else gc.disable)
        flats = [Flat(i, 0.5, f"n{i}", b"d", True) for i in range(3000)]
        data = codec.encode([b"answer", 1, fullJelly(flats)], OUTGOING)
        collections: list[int] = []

        def record(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                collections.append(info["generation"])

        gc.callbacks.append(record)
        self.addCleanup(gc.callbacks.remove, record)
        gc.disable()
        decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=True)
        decoder.setPlainJelly(True)
        decoder.setPlainTypes(TYPES.receive)
        received: list[Any] = []
        for start in range(0, len(data), 20_000):
            decoder.feedTo(data[start : start + 20_000], received.append)
        self.assertEqual(len(received), 1)
        self.assertEqual(collections, [])

    def test_longStringIsFresh(self) -> None:
        """
        A long string received in place through
        L{pbext.interfaces.IDecoder.receiveBuffer} is a new C{bytes} object
        that a buffer still held cannot change.
        """
        blob = bytes(range(256)) * 1024
        data = codec.encode([b"answer", 1, blob], OUTGOING)
        for accelerated in (True, False):
            decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=accelerated)
            received: list[Any] = []
            decoder.feedTo(data[:20_000], received.append)
            at = 20_000
            views = []
            while not received:
                buffer = decoder.receiveBuffer()
                self.assertIsNotNone(buffer)
                view = memoryview(buffer)
                views.append(view)
                count = min(len(view), len(data) - at)
                view[:count] = data[at : at + count]
                at += count
                decoder.bufferFilled(count, received.append)
            (message,) = received
            self.assertIs(type(message[2]), bytes)
            self.assertEqual(message[2], blob)
            # Writing through the old views changes nothing delivered.
            for view in views:
                view[:4] = b"XXXX"
                view.release()
            self.assertEqual(message[2], blob)


class PeerKeysTests(SynchronousTestCase):
    """
    The strs a peer sends as dictionary keys live no longer than the
    values that hold them.
    """

    def setUp(self) -> None:
        if speedups is None:
            self.skipTest("the C accelerator is not built")

    def decodedKey(self) -> str:
        """
        Decode, in plain-jelly mode, a dictionary whose one key is a short
        ASCII str never seen before, and return that key.
        """
        fresh = "q" + os.urandom(8).hex()
        data = codec.encode(
            [b"answer", 1, [b"dictionary", [[b"unicode", fresh.encode()], 1]]],
            OUTGOING,
        )
        decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=True)
        decoder.setPlainJelly(True)
        (message,) = decoder.feed(data)
        (key,) = message[2].value
        self.assertEqual(key, fresh)
        return key  # type: ignore[no-any-return] # a str, checked above

    def test_keysNotImmortal(self) -> None:
        """
        On CPython 3.12, whose interned strs are never freed, a key a peer
        sent is not interned (a peer sending ever new keys would grow the
        process without bound); elsewhere it is, so that it is found by
        identity where it names a field.
        """
        key = self.decodedKey()
        # An equal str made now: interning it gives the key only if the
        # key was interned already.
        probe = "".join(list(key))
        wasInterned = sys.intern(probe) is key
        self.assertEqual(wasInterned, sys.version_info[:2] != (3, 12))

    def test_keyFreed(self) -> None:
        """
        A key a peer sent is freed with the value that held it.
        """
        if sys.version_info[:2] != (3, 12):
            self.skipTest("interned strs are mortal on this CPython")
        key = self.decodedKey()
        self.assertLess(sys.getrefcount(key), 100)


class SharedConstantsTests(SynchronousTestCase):
    """
    The decoder's values hold the interpreter's shared constants (the
    empty tuple, empty frozensets, small ints, interned strs) many times;
    that is never mistaken for a shared container.
    """

    def test_emptyTuplesJelliedBack(self) -> None:
        """
        A list of empty tuples decoded in plain-jelly mode, then found to
        sit in an expression that is not plain, reaches the full unjellier
        as the expression of an equal value, and unjellies as the Python
        path's does.
        """
        if speedups is None:
            self.skipTest("the C accelerator is not built")
        from pbext import _jelly
        from pbext.security import defaultPolicy

        policy = defaultPolicy()
        data = codec.encode([b"answer", 1, SHARED_EMPTY], OUTGOING)
        decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=True)
        decoder.setPlainJelly(True)
        (message,) = decoder.feed(data)
        (python,) = codec.makeDecoder(vocabulary=INCOMING, accelerated=False).feed(data)
        taster = policy.forConnection(())
        fast = _jelly.unjelly(message[2], taster, None, (), policy)
        slow = _jelly.unjelly(python[2], taster, None, (), policy)
        self.assertEqual(fast, slow)
        empties = [(), (), frozenset(), frozenset(), 1, 1]
        self.assertEqual(fast, ([empties, ["x", "x"], ["x", "x"]],))


#: Atoms a peer may put anywhere: words of jelly, texts right and wrong,
#: numbers (the shared small ints among them).
atoms = st.one_of(
    st.sampled_from(
        [b"true", b"false", b"x", b"\xff", b"", b"unicode", b"tuple", b"None"]
    ),
    st.integers(min_value=-3, max_value=3),
    st.integers(),
    st.floats(allow_nan=False),
)
#: Tags, plain or not, registered or not.
tags = st.sampled_from(
    [
        b"unicode",
        b"tuple",
        b"tuple",
        b"list",
        b"dictionary",
        b"set",
        b"frozenset",
        b"frozenset",
        b"None",
        b"boolean",
        b"reference",
        b"dereference",
        b"t.Flat",
        b"t.Point",
        b"t.Positive",
        b"nonesuch",
    ]
)


def _expression(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(lambda t, rest: [t, *rest], tags, st.lists(children, max_size=4)),
        st.builds(
            lambda pairs: [b"dictionary", *[[k, v] for k, v in pairs]],
            st.lists(st.tuples(children, children), max_size=3),
        ),
        st.builds(lambda t: [t], tags),
        st.builds(lambda n, e: [b"reference", n, e], st.integers(1, 3), children),
        st.builds(lambda n: [b"dereference", n], st.integers(1, 3)),
    )


#: Jelly expressions, well formed or not, as a peer may send them.
expressions = st.recursive(
    st.one_of(atoms, stateExpressions), _expression, max_leaves=16
)


class ParityTests(SynchronousTestCase):
    """
    The C accelerator's decoder (raw and plain-jelly), plain unjellier and
    the Python twin agree on every input: the same expressions, the same
    values handed to application code, the same errors.
    """

    @TWIN
    @given(
        st.lists(expressions, min_size=1, max_size=3),
        st.lists(st.integers(min_value=0, max_value=400), max_size=4),
        st.booleans(),
    )
    def test_expressions(
        self, elements: list[Any], cuts: list[int], receiveBuffer: bool
    ) -> None:
        """
        A message of random jelly expressions, at any chunking.
        """
        data = codec._encodePython([b"answer", 1, *elements], OUTGOING)
        checkDecoding(data, cuts, {}, True, receiveBuffer)

    @TWIN
    @given(
        expressions,
        st.integers(min_value=1, max_value=12),
        st.integers(min_value=2, max_value=80),
        st.integers(min_value=1, max_value=400),
    )
    def test_limits(self, element: Any, depth: int, tokens: int, size: int) -> None:
        """
        Random expressions under low limits: the same limit is reported
        at the same point.
        """
        data = codec._encodePython([b"answer", 1, element], OUTGOING)
        limits = {
            "maxDepth": depth,
            "maxMessageTokens": tokens,
            "maxMessageBytes": size,
            "maxListLength": max(tokens // 2, 1),
            "maxStringBytes": max(size // 4, 1),
        }
        checkDecoding(data, [size // 2], limits, True)

    @TWIN
    @given(expressions)
    def test_unjellyPlain(self, sexp: Any) -> None:
        """
        The C plain unjellier, then the full one where it steps aside,
        gives what the Python twin gives.
        """
        checkUnjelly(sexp)

    def test_unhashableSetElements(self) -> None:
        """
        A set whose elements (decoded as values) cannot be hashed reaches
        the full unjellier as the expression it was sent as, which
        refuses it as it refuses the Python path's.
        """
        element = [b"set", [b"list", b"x"], [b"tuple"], -300]
        data = codec._encodePython([b"answer", 1, element, 2], OUTGOING)
        checkDecoding(data, [], {}, True)
        if speedups is None:
            self.skipTest("the C accelerator is not built")
        decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=True)
        decoder.setPlainJelly(True)
        (message,) = decoder.feed(data)
        self.assertEqual(message[2], element)

    def test_sharedConstants(self) -> None:
        """
        The input of issue 19 (two empty tuples, then a reference) decodes
        the same on both paths.
        """
        data = codec._encodePython([b"answer", 1, SHARED_EMPTY], OUTGOING)
        for cut in range(0, len(data), 7):
            checkDecoding(data, [cut], {}, True)


class PeerDecodingTests(HostileMixin, TestCase):
    """
    A raw peer over a real loopback connection: bytes that once made the
    decoder raise are answered, and an error while decoding is a logged
    policy violation that drops that peer only.
    """

    def setUp(self) -> None:
        self.setUpHostile()

    @defer.inlineCallbacks
    def test_sharedEmptyTuplesAnswered(self) -> None:
        """
        A call whose argument holds two empty tuples next to a jelly
        reference is answered with its echo (as classic PB and the
        pure-Python path answer it), and a stock client is still served.
        """
        self.startServer()
        peer = yield self.connectRaw()
        peer.transport.write(wireMessage(callMessage(1, b"echo", SHARED_EMPTY)))
        answer = yield peer.answerTo(1, self.reactor)
        self.assertEqual(answer[0], b"answer", flattenBytes(answer)[:500])
        self.assertNotIn("decodingError", self.recorder.kinds())
        self.assertEqual(self.flushLoggedErrors(), [])
        yield self.stockEcho()

    @defer.inlineCallbacks
    def test_decodingErrorDropsPeer(self) -> None:
        """
        Any exception raised while the broker decodes a peer's bytes
        drops that peer with one logged C{decodingError} violation instead
        of escaping C{dataReceived}; other clients are still served.
        """
        factory = self.startServer()
        peer = yield self.connectRaw()
        (broker,) = factory.brokers
        broker._pbextDecoder = _BrokenDecoder(broker._pbextDecoder)
        peer.transport.write(wireMessage(callMessage(1, b"echo", [b"tuple", 1])))
        yield self.waitLost(peer)
        self.assertIn("decodingError", self.recorder.kinds())
        self.assertEqual(self.flushLoggedErrors(), [])
        yield self.stockEcho()


class _BrokenDecoder:
    """
    A decoder whose L{feedTo} has a bug: it raises C{RuntimeError}.  Every
    other attribute is the wrapped decoder's.
    """

    def __init__(self, decoder: Any) -> None:
        self._decoder = decoder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._decoder, name)

    def feedTo(self, data: Any, sink: Any) -> None:
        raise RuntimeError("decoder bug")
