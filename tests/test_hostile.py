"""
Hostile-input tests: real bytes from a hostile peer over a real loopback
connection to a real pbext server, then proof that a well-behaved stock
PB client is still served and that the server's buffers stayed bounded.

Each test names, in one comment, what classic PB does with the same bytes
(measured on Twisted 26.10); none runs classic PB into its stall.

These tests are in the integration part of the suite (C{tools/suite.py}).
The timeouts (idle, handshake, message) do not depend on the transport:
L{tests.test_hostile_inmemory} pins them, and the caps, on in-memory
connections with a clock.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from typing import Any

from twisted.internet import defer, task
from twisted.logger import formatEventAsClassicLogText, globalLogPublisher
from twisted.spread import banana, pb
from twisted.spread.jelly import globalSecurity, unjellyableRegistry
from twisted.trial.unittest import TestCase

from pbext.codec import encode
from pbext.security import SecurityPolicy, defaultPolicy
from tests._hostile import (
    HostileMixin,
    callMessage,
    errorText,
    flattenBytes,
    wireMessage,
)

#: A module name nothing imports; a peer naming it must not make it appear.
NEVER_IMPORTED = "tests.never_imported_xyz"


def policyWith(**limits: Any) -> SecurityPolicy:
    """
    The default policy with some limits changed.
    """
    return SecurityPolicy(
        name="hostile-test",
        limits=dataclasses.replace(defaultPolicy().limits, **limits),
    )


def header(length: int, typeByte: bytes) -> bytes:
    """
    A banana header: C{length} in base 128, then the type byte.
    """
    return _prefix(length) + typeByte


def _prefix(number: int) -> bytes:
    out = bytearray()
    while True:
        out.append(number & 0x7F)
        number >>= 7
        if not number:
            return bytes(out)


#: The most a server may log for one hostile connection.
LOG_PER_CONNECTION = 64 * 1024


class _Base(HostileMixin, TestCase):
    def setUp(self) -> None:
        self.setUpHostile()
        # Everything logged while the test runs, formatted as a log file
        # would hold it: a hostile peer must not be able to fill disks.
        self.logBytes = 0
        self.hostileConnections = 0

        def count(event: dict[str, Any]) -> None:
            self.logBytes += len(formatEventAsClassicLogText(event) or "")

        globalLogPublisher.addObserver(count)
        self.addCleanup(globalLogPublisher.removeObserver, count)
        self.addCleanup(self.assertLogBounded)

    def connectRaw(self, handshake: bool = True) -> Any:
        self.hostileConnections += 1
        return super().connectRaw(handshake)

    def assertLogBounded(self) -> None:
        """
        The server logged less than L{LOG_PER_CONNECTION} bytes per hostile
        connection.
        """
        connections = max(self.hostileConnections, 1)
        self.assertLess(self.logBytes / connections, LOG_PER_CONNECTION)

    def assertDropped(self, kind: str, limit: str | None = None) -> None:
        """
        Assert that the server logged a violation of C{kind} (and of the
        framing limit C{limit}).
        """
        matching = [e for e in self.recorder.events if e.get("kind") == kind]
        self.assertTrue(matching, f"no {kind!r} event in {self.recorder.kinds()}")
        if limit is not None:
            self.assertIn(limit, [e.get("limit") for e in matching])


class FramingTests(_Base):
    """
    Bad framing drops the hostile connection at once, with its buffer
    bounded, and nobody else notices.
    """

    @defer.inlineCallbacks
    def test_oversizeStringPrefix(self) -> Any:
        """
        A string header declaring 10 MB is refused at the header: the
        connection is dropped before any of the string is buffered, and a
        stock client is served.
        """
        # Classic banana refuses it too (SIZE_LIMIT), but only after the
        # quadratic re-slicing of whatever else is buffered.
        self.startServer()
        peer = yield self.connectRaw()
        broker = self.serverBroker()
        peer.transport.write(header(10 * 1024 * 1024, banana.STRING) + b"x" * 65536)
        yield self.waitLost(peer)
        self.assertDropped("framingError", "maxStringBytes")
        self.assertIsNone(broker._pbextDecoder)
        self.assertTrue(broker.disconnected)
        yield self.stockEcho()

    @defer.inlineCallbacks
    def test_deepNesting(self) -> Any:
        """
        List headers nested beyond C{maxDepth} drop the connection at the
        first header too deep.
        """
        # Classic banana has no depth limit: it keeps every level and the
        # recursive unjelly later overflows the stack.
        self.startServer()
        peer = yield self.connectRaw()
        peer.transport.write(header(1, banana.LIST) * 500)
        yield self.waitLost(peer)
        self.assertDropped("framingError", "maxDepth")
        yield self.stockEcho()

    @defer.inlineCallbacks
    def test_tokenFlood(self) -> Any:
        """
        A message of more than C{maxMessageTokens} tiny tokens drops the
        connection while it arrives; the decoder never held more than the
        limit allows.
        """
        # Classic banana has no token limit and decodes such a flood in
        # quadratic time (348 KB: 1.4 s of a blocked reactor).
        self.startServer(policyWith(maxMessageTokens=1000))
        peer = yield self.connectRaw()
        broker = self.serverBroker()
        fed: list[int] = []
        broker._pbextDecoder = _RecordingDecoder(broker._pbextDecoder, fed)
        sublist = header(100, banana.LIST) + encode(0) * 100
        flood = header(50, banana.LIST) + sublist * 50
        # In small pieces, so that the server sees it arrive.
        for start in range(0, len(flood), 256):
            if not peer.connected:
                break
            peer.transport.write(flood[start : start + 256])
            yield task.deferLater(self.reactor, 0.005, lambda: None)
        yield self.waitLost(peer)
        self.assertDropped("framingError", "maxMessageTokens")
        # Refused within the first 1000 tokens (2 bytes each, plus the
        # headers): the rest of the 10 KB flood was never buffered.
        self.assertTrue(fed, "no chunk was accepted before the flood")
        self.assertLess(max(fed), 2200)
        self.assertLess(len(fed) * 256, 2500)
        yield self.stockEcho()

    @defer.inlineCallbacks
    def test_unclosedListsNested(self) -> Any:
        """
        512 KB of list headers that are never closed cost the server no
        more than C{maxDepth} headers: the connection is dropped at once.
        """
        # Classic PB buffers all of them: +34 MB for 512 KB.
        self.startServer()
        peer = yield self.connectRaw()
        broker = self.serverBroker()
        peer.transport.write(header(2, banana.LIST) * (256 * 1024))
        yield self.waitLost(peer)
        self.assertDropped("framingError", "maxDepth")
        self.assertIsNone(broker._pbextDecoder)
        yield self.stockEcho()

    @defer.inlineCallbacks
    def test_unclosedListsOpen(self) -> Any:
        """
        A message whose list is never completed is held only for
        C{messageTimeout}, its buffer bounded by what arrived, and other
        clients are served meanwhile.
        """
        # Classic PB keeps the partial message forever.
        self.startServer(policyWith(messageTimeout=1.0))
        peer = yield self.connectRaw()
        broker = self.serverBroker()
        partial = header(1000, banana.LIST) + header(0, banana.LIST) * 500
        peer.transport.write(partial)
        yield self.poll(
            lambda: (
                broker._pbextDecoder is not None
                and broker._pbextDecoder.pendingBytes == len(partial)
            )
        )
        self.assertLessEqual(broker._pbextDecoder.pendingBytes, len(partial))
        yield self.stockEcho()
        yield self.waitLost(peer)
        self.assertDropped("messageTimeout")

    @defer.inlineCallbacks
    def test_badTypeByte(self) -> Any:
        """
        A type byte banana does not define drops the connection.
        """
        self.startServer()
        peer = yield self.connectRaw()
        peer.transport.write(b"\x01\xff")
        yield self.waitLost(peer)
        self.assertDropped("framingError", "badTypeByte")
        yield self.stockEcho()


class CallTests(_Base):
    """
    Bad calls get an error answer, and the connection stays usable.
    """

    @defer.inlineCallbacks
    def call(self, peer: Any, requestID: int, *args: Any, **kw: Any) -> Any:
        peer.transport.write(wireMessage(callMessage(requestID, *args, **kw)))
        answer = yield peer.answerTo(requestID, self.reactor)
        return answer

    @defer.inlineCallbacks
    def assertStillAnswers(self, peer: Any, requestID: int = 999_999) -> Any:
        """
        The hostile connection itself still gets a good call answered.
        """
        answer = yield self.call(peer, requestID, b"echo", [b"tuple", b"ok"])
        self.assertEqual(answer, [b"answer", requestID, b"ok"])

    @defer.inlineCallbacks
    def test_forwardReferenceContainer(self) -> Any:
        """
        A 150,000-item tuple holding one forward reference is unjellied in
        linear time and echoed back correctly.
        """
        # Classic crefutil._Container removes from a list per element:
        # seconds of blocked reactor for this one call.
        self.startServer()
        peer = yield self.connectRaw()
        count = 150_000
        items: list[Any] = [[b"dereference", 1]]
        items += [7] * count
        items.append([b"reference", 1, [b"list", b"target"]])
        peer.transport.write(
            wireMessage(callMessage(1, b"echo", [b"tuple", [b"tuple", *items]]))
        )
        answer = yield peer.answerTo(1, self.reactor)
        self.assertEqual(answer[0], b"answer", flattenBytes(answer)[:500])
        result = answer[2]
        self.assertEqual(result[0], b"tuple")
        self.assertEqual(len(result), count + 3)
        self.assertEqual(result[2 : count + 2], [7] * count)
        # The first and last items are the same list, sent once and then
        # referred to.
        self.assertIn(b"target", flattenBytes(result[1]) + flattenBytes(result[-1]))
        yield self.stockEcho()

    @defer.inlineCallbacks
    def test_referenceAmplification(self) -> Any:
        """
        A small call whose argument repeats one string by reference is
        answered with C{MessageTooLarge} when the echoed answer would
        exceed C{maxOutgoingMessageBytes}; nothing that large is written.
        """
        # Classic PB buffers the 450x larger reply without limit.
        self.startServer(policyWith(maxOutgoingMessageBytes=256 * 1024))
        peer = yield self.connectRaw()
        repeated = [[b"reference", 1, b"x" * 10_000]]
        repeated += [[b"dereference", 1]] * 999
        request = wireMessage(callMessage(1, b"echo", [b"tuple", [b"list", *repeated]]))
        self.assertLess(len(request), 64 * 1024)
        peer.transport.write(request)
        answer = yield peer.answerTo(1, self.reactor)
        self.assertEqual(answer[0], b"error")
        self.assertIn(b"MessageTooLarge", errorText(answer))
        self.assertLess(peer.receivedBytes, 256 * 1024)
        self.assertEqual(self.root.calls, ["echo"])
        yield self.assertStillAnswers(peer)
        yield self.stockEcho()

    @defer.inlineCallbacks
    def test_callFlood(self) -> Any:
        """
        30,000 calls to a missing method are each answered with an error,
        no traceback is logged, and a stock client is served meanwhile.
        """
        # Classic PB delays other clients by 3.4 s and logs 7 MB of
        # tracebacks for this.
        self.startServer()
        peer = yield self.connectRaw()
        count = 30_000
        flood = b"".join(
            wireMessage(callMessage(i, b"noSuchMethod")) for i in range(1, count + 1)
        )
        peer.transport.write(flood)
        yield self.stockEcho()
        # Reading 30,000 error answers (25 MB) takes this process a while:
        # a generous bound, not a speed requirement.
        yield peer.waitFor(
            lambda: peer.counts.get(b"error", 0) >= count or None,
            self.reactor,
            timeout=90,
        )
        errors = peer.messages(b"error")
        self.assertEqual(sorted(e[1] for e in errors), list(range(1, count + 1)))
        self.assertIn(b"NoSuchMethod", errorText(errors[0]))
        self.assertEqual(self.flushLoggedErrors(), [])
        # Violations are rate-limited: far fewer events than calls.
        self.assertLessEqual(len(self.recorder.events), 100)
        # And the log they make is small (but counted).
        self.assertGreater(self.logBytes, 0)
        self.assertLess(self.logBytes, LOG_PER_CONNECTION)
        yield self.assertStillAnswers(peer)

    @defer.inlineCallbacks
    def test_decrefFlood(self) -> Any:
        """
        Thousands of C{decref} of bogus object IDs change nothing, log no
        traceback, and leave the connection working.
        """
        # Classic PB raises KeyError from proto_decref for each one.
        self.startServer()
        peer = yield self.connectRaw()
        broker = self.serverBroker()
        before = dict(broker.localObjects)
        bogus = [12345 + i for i in range(5000)] + [b"root", -1, [b"list"], 2.5]
        peer.transport.write(
            b"".join(wireMessage([b"decref", objectID]) for objectID in bogus)
        )
        yield self.assertStillAnswers(peer)
        self.assertEqual(broker.localObjects, before)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertDropped("badDecref")
        yield self.stockEcho()

    @defer.inlineCallbacks
    def test_unknownCommand(self) -> Any:
        """
        An unknown command is answered with C{didNotUnderstand} naming it.
        """
        # Classic PB's didNotUnderstand reply can crash on a str command.
        self.startServer()
        peer = yield self.connectRaw()
        peer.transport.write(wireMessage([b"frobnicate", 1, 2]))
        reply = yield peer.waitFor(
            lambda: peer.messages(b"didNotUnderstand") or None, self.reactor
        )
        self.assertEqual(reply, [[b"didNotUnderstand", b"frobnicate"]])
        self.assertEqual(self.flushLoggedErrors(), [])
        yield self.assertStillAnswers(peer)
        yield self.stockEcho()

    @defer.inlineCallbacks
    def test_bogusObjectID(self) -> Any:
        """
        A call to an object ID the server never gave out is answered with
        an error.
        """
        self.startServer()
        peer = yield self.connectRaw()
        answer = yield self.call(peer, 1, b"echo", [b"tuple", 1], objectID=424242)
        self.assertEqual(answer[0], b"error")
        self.assertIn(b"Invalid Object ID", errorText(answer))
        answer = yield self.call(peer, 2, b"echo", [b"tuple", 1], objectID=b"nobody")
        self.assertEqual(answer[0], b"error")
        self.assertEqual(self.root.calls, [])
        self.assertEqual(self.flushLoggedErrors(), [])
        yield self.assertStillAnswers(peer)
        yield self.stockEcho()

    @defer.inlineCallbacks
    def test_privateMethod(self) -> Any:
        """
        Under the C{default} policy a call to C{_private} is refused with
        an error answer and the root method does not run.
        """
        # Classic PB runs remote__private for any peer.
        self.startServer()
        peer = yield self.connectRaw()
        answer = yield self.call(peer, 1, b"_private")
        self.assertEqual(answer[0], b"error")
        self.assertIn(b"PolicyViolation", errorText(answer))
        self.assertEqual(self.root.calls, [])
        self.assertDropped("methodRefused")
        yield self.assertStillAnswers(peer)
        yield self.stockEcho()

    @defer.inlineCallbacks
    def test_malformedCall(self) -> Any:
        """
        A C{message} with the wrong number of parts is bad framing of the
        PB protocol: the connection is dropped.
        """
        self.startServer()
        peer = yield self.connectRaw()
        peer.transport.write(wireMessage([b"message", 1, b"root"]))
        yield self.waitLost(peer)
        self.assertDropped("badMessage")
        yield self.stockEcho()


class Injected(pb.RemoteCopy):
    """
    A classic copy class (inheriting L{pb.RemoteCopy.setCopyableState},
    which assigns state wholesale) whose state the hostile peer tries to
    poison.

    @cvar built: Every instance created, built or not.
    """

    built: list[Any] = []

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        instance = super().__new__(cls)
        Injected.built.append(instance)
        return instance


class TypeTests(_Base):
    """
    Types a peer names are refused unless the policy allows them; nothing
    is imported, nothing is built, nothing runs.
    """

    INJECTED = b"tests.test_hostile.HostileInjected"

    def registerInjected(self) -> None:
        Injected.built = []
        name = self.INJECTED.decode("ascii")
        pb.setUnjellyableForClass(name, Injected)

        def cleanup() -> None:
            unjellyableRegistry.pop(name, None)
            unjellyableRegistry.pop(self.INJECTED, None)
            globalSecurity.allowedTypes.pop(name, None)
            globalSecurity.allowedTypes.pop(self.INJECTED, None)

        self.addCleanup(cleanup)

    @defer.inlineCallbacks
    def callRefused(self, peer: Any, requestID: int, argument: Any) -> Any:
        """
        Send C{keep(argument)} and check it is refused with an error.
        """
        peer.transport.write(
            wireMessage(callMessage(requestID, b"keep", [b"tuple", argument]))
        )
        answer = yield peer.answerTo(requestID, self.reactor)
        self.assertEqual(answer[0], b"error", answer)
        self.assertIn(b"PolicyViolation", errorText(answer))
        return answer

    @defer.inlineCallbacks
    def test_attributeInjection(self) -> Any:
        """
        Copy state with C{__class__} or C{__dict__} keys for a classic
        L{pb.RemoteCopy} class is refused with an error answer; no object
        is built and the method is not run.
        """
        # Classic RemoteCopy.setCopyableState assigns any attribute, even
        # __class__.
        self.registerInjected()
        self.startServer()
        peer = yield self.connectRaw()
        poisoned = [
            [b"dictionary", [[b"unicode", b"__class__"], [b"unicode", b"x"]]],
            [b"dictionary", [b"__dict__", [b"dictionary"]]],
            [b"dictionary", [[b"unicode", b"__init__"], 1]],
        ]
        for requestID, state in enumerate(poisoned, 1):
            yield self.callRefused(peer, requestID, [self.INJECTED, state])
        # Blank instances may have been made, but none got any state.
        self.assertEqual(
            [(type(i), vars(i)) for i in Injected.built],
            [(Injected, {})] * len(Injected.built),
        )
        self.assertEqual(self.root.calls, [])
        # The class itself is accepted with clean state.
        answer = yield self.call(
            peer, 10, [self.INJECTED, [b"dictionary", [[b"unicode", b"a"], 1]]]
        )
        self.assertEqual(answer[:2], [b"answer", 10])
        self.assertIsInstance(self.root.kept[0], Injected)
        self.assertEqual(vars(self.root.kept[0]), {"a": 1})
        yield self.stockEcho()

    @defer.inlineCallbacks
    def call(self, peer: Any, requestID: int, argument: Any) -> Any:
        peer.transport.write(
            wireMessage(callMessage(requestID, b"keep", [b"tuple", argument]))
        )
        answer = yield peer.answerTo(requestID, self.reactor)
        return answer

    @defer.inlineCallbacks
    def test_foreignReferences(self) -> Any:
        """
        C{module}, C{class}, C{function} and instance expressions naming
        anything (C{os}, or a module nobody imported) are refused with an
        error answer; nothing is imported and the method is not run.
        """
        # Classic jelly imports any dotted name that passes
        # SecurityOptions.isTypeAllowed, which passes any dotted name
        # (twisted#6355).
        self.assertNotIn(NEVER_IMPORTED, sys.modules)
        self.startServer()
        peer = yield self.connectRaw()
        never = NEVER_IMPORTED.encode("ascii")
        arguments = [
            [b"module", b"os"],
            [b"class", b"os.system"],
            [b"function", b"os.system"],
            [b"os._wrap_close", [b"dictionary"]],
            [b"module", never],
            [b"class", never + b".Thing"],
            [b"function", never + b".thing"],
            [b"method", b"thing", [b"None"], [b"class", never + b".Thing"]],
            [never + b".Thing", [b"dictionary"]],
            [b"instance", [b"class", never + b".Thing"], [b"dictionary"]],
        ]
        for requestID, argument in enumerate(arguments, 1):
            yield self.callRefused(peer, requestID, argument)
        self.assertNotIn(NEVER_IMPORTED, sys.modules)
        self.assertEqual(self.root.calls, [])
        self.assertEqual(self.flushLoggedErrors(), [])
        yield self.stockEcho()


class ConnectionTests(_Base):
    """
    Connections beyond a cap are closed.  (The timeouts that close
    connections holding resources without using them are pinned with a
    clock in L{tests.test_hostile_inmemory.TimeoutTests}.)
    """

    @defer.inlineCallbacks
    def test_connectionsPerAddress(self) -> Any:
        """
        With C{maxConnectionsPerAddress=3}, connections beyond three from
        127.0.0.1 are closed at once, before any byte is sent, while the
        others are served.
        """
        # Classic PB accepts every connection.
        self.startServer(policyWith(maxConnectionsPerAddress=3))
        first = yield self.connectRaw()
        second = yield self.connectRaw()
        third = yield self.connectRaw()
        extra = yield self.connectRaw(handshake=False)
        yield self.waitLost(extra)
        self.assertEqual(extra.receivedBytes, 0)
        for requestID, peer in enumerate([first, second, third], 1):
            peer.transport.write(
                wireMessage(callMessage(requestID, b"echo", [b"tuple", 5]))
            )
            answer = yield peer.answerTo(requestID, self.reactor)
            self.assertEqual(answer, [b"answer", requestID, 5])
        # Once one leaves, a stock client gets its place.
        first.transport.abortConnection()
        yield self.waitLost(first)
        yield self.poll(lambda: self.factory._pbext.connectionCount == 2)
        yield self.stockEcho()


class FuzzTests(_Base):
    """
    Random bytes after the handshake never harm the server.
    """

    @defer.inlineCallbacks
    def test_randomBytes(self) -> Any:
        """
        200 random byte strings (half noise, half mutated calls), each on a
        fresh post-handshake connection, cause no traceback, and the server
        still answers a stock client afterwards.
        """
        rng = random.Random(1234)
        self.startServer(policyWith(messageTimeout=2.0))
        good = wireMessage(callMessage(1, b"echo", [b"tuple", [b"list", 1, b"a"]]))
        cases = []
        for i in range(200):
            if i % 2:
                data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
            else:
                mutated = bytearray(good)
                for _ in range(rng.randrange(1, 4)):
                    mutated[rng.randrange(len(mutated))] = rng.randrange(256)
                data = bytes(mutated)
            cases.append(data)
        for start in range(0, len(cases), 20):
            peers = yield defer.gatherResults(
                [self.connectRaw() for _ in cases[start : start + 20]]
            )
            for peer, data in zip(peers, cases[start : start + 20]):
                peer.transport.write(data)
            # Let the server handle the bytes, then close our side.
            yield task.deferLater(self.reactor, 0.05, lambda: None)
            for peer in peers:
                if peer.connected:
                    peer.transport.loseConnection()
            yield defer.gatherResults([self.waitLost(peer) for peer in peers])
        self.assertEqual(self.flushLoggedErrors(), [])
        yield self.stockEcho()
        yield self.poll(lambda: self.factory._pbext.connectionCount == 0)


class _RecordingDecoder:
    """
    A decoder that records, after each L{feedTo}, how many bytes of an
    incomplete message the decoder it wraps holds.  Every other attribute
    is the wrapped decoder's.
    """

    def __init__(self, decoder: Any, fed: list[int]) -> None:
        self._decoder = decoder
        self._fed = fed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._decoder, name)

    def feedTo(self, data: bytes, emit: Any) -> None:
        self._decoder.feedTo(data, emit)
        self._fed.append(self._decoder.pendingBytes)
