"""
Tests for L{pbext.broker}: the hardened broker, in memory.

These tests connect a client and a server broker in memory with
L{pbext.testing} and a L{task.Clock}; the same hostile cases over real
sockets are in L{tests.test_hostile}.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.python.failure import Failure
from twisted.spread import banana, jelly, pb
from twisted.trial.unittest import SynchronousTestCase

import pbext
from pbext import broker as pbbroker
from pbext import typecheck
from pbext.security import SecurityPolicy, classicPolicy, defaultPolicy
from pbext.testing import connectedPair


class Root(pb.Root):
    """
    A root with methods of every kind the tests call.
    """

    def __init__(self) -> None:
        self.pending: list[defer.Deferred[Any]] = []
        self.cancelled: list[int] = []
        self.privateCalled = False

    def remote_echo(self, value: Any) -> Any:
        return value

    def remote_wait(self) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred(
            lambda d: self.cancelled.append(len(self.pending))
        )
        self.pending.append(d)
        return d

    async def remote_add(self, a: int, b: int) -> int:
        return a + b

    async def remote_asyncFail(self) -> None:
        raise pb.Error("async failure")

    @typecheck.typed
    def remote_typed(self, count: int, name: str = "x") -> str:
        return name * count

    def remote_big(self, size: int) -> bytes:
        return b"x" * size

    def remote_many(self, count: int) -> list[bytes]:
        return [b"y" * 600_000] * count

    def remote_pieces(self, count: int, size: int) -> list[bytes]:
        return [b"y" * size] * count

    def remote_referenceables(self, count: int) -> list[pb.Referenceable]:
        return [Root() for _ in range(count)]

    def remote_manyInsecure(self, count: int) -> list[object]:
        return [Unregistered() for _ in range(count)]

    def remote__private(self) -> str:
        self.privateCalled = True
        return "secret"

    def remote_insecure(self) -> object:
        # A classic Copyable whose type no client registry knows.
        return Unregistered()


class Unregistered(pb.Copyable):
    """
    A copyable nobody registered a RemoteCopy for.
    """


class Pair:
    """
    A pbext (or classic) client and server connected in memory.
    """

    def __init__(
        self,
        test: SynchronousTestCase,
        root: Any = None,
        serverFactory: Any = None,
        clientFactory: Any = None,
        clock: task.Clock | None = None,
    ) -> None:
        self.clock = clock if clock is not None else task.Clock()
        self.root = root if root is not None else Root()
        if serverFactory is None:
            serverFactory = pbext.PBServerFactory(self.root, reactor=self.clock)
        if clientFactory is None:
            clientFactory = pbext.PBClientFactory(reactor=self.clock)
        self.serverFactory = serverFactory
        self.clientFactory = clientFactory
        self.connection = connectedPair(
            serverFactory,
            clientFactory,
            clock=self.clock,
            serverAddress=IPv4Address("TCP", "127.0.0.1", 8787),
            clientAddress=IPv4Address("TCP", "127.0.0.1", 40000),
            handshake=False,
        )
        self.server = self.connection.serverBroker
        self.client = self.connection.clientBroker
        self.clientTransport = self.connection.clientTransport
        test.addCleanup(self.close)

    def flush(self) -> None:
        """
        Move bytes both ways, and run what the brokers scheduled for "now"
        (fairness yields), until nothing is left to do.
        """
        for _ in range(10_000):
            self.connection.pump()
            now = self.clock.seconds()
            if not any(c.getTime() <= now for c in self.clock.getDelayedCalls()):
                return
            self.clock.advance(0)
        raise AssertionError("the connection never settled")

    def root_(self) -> pb.RemoteReference:
        d = self.clientFactory.getRootObject()
        self.flush()
        return self.test_successResultOf(d)

    def test_successResultOf(self, d: defer.Deferred[Any]) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        if not results:
            raise AssertionError(f"{d!r} has no result")
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]

    def call(self, _method: str, *args: Any, **kw: Any) -> defer.Deferred[Any]:
        d = self.root_().callRemote(_method, *args, **kw)
        self.flush()
        return d

    def close(self) -> None:
        self.connection.disconnect()


def remoteFailure(test: SynchronousTestCase, d: defer.Deferred[Any]) -> Failure:
    return test.failureResultOf(d)


class HandshakeTests(SynchronousTestCase):
    """
    Negotiating pbext features over banana's dialect offer.
    """

    def test_serverOffersMarker(self) -> None:
        """
        A pbext server adds L{pbbroker.PBEXT_DIALECT} to its dialect offer
        after the classic dialects, and a pbext client records it in
        C{peerFeatures}.
        """
        pair = Pair(self)
        pair.flush()
        self.assertEqual(pair.client.currentDialect, b"pb")
        self.assertIn(pbbroker.PBEXT_DIALECT, pair.client.peerFeatures)
        # The client says hello, so the server knows too.
        self.assertIn(pbbroker.PBEXT_DIALECT, pair.server.peerFeatures)

    def test_stockClientIgnoresMarker(self) -> None:
        """
        A stock client picks C{b"pb"} from a pbext server's offer and works.
        """
        pair = Pair(self, clientFactory=pb.PBClientFactory())
        self.assertEqual(self.successResultOf(pair.call("echo", 5)), 5)
        self.assertEqual(pair.server.peerFeatures, frozenset())

    def test_stockServer(self) -> None:
        """
        Against a stock server, a pbext client has no peer features and
        calls work.
        """
        root = Root()
        pair = Pair(self, root=root, serverFactory=pb.PBServerFactory(root))
        self.assertEqual(self.successResultOf(pair.call("echo", [1, "a"])), [1, "a"])
        self.assertEqual(pair.client.peerFeatures, frozenset())

    def test_callBytesAsStock(self) -> None:
        """
        A call, with keywords or without (whose empty dictionary pbext
        sends without jellying it), reaches a stock server as the very
        bytes a stock client would send.
        """

        def sent(pbextClient: bool) -> list[bytes]:
            root = Root()
            clock = task.Clock()
            pair = Pair(
                self,
                root=root,
                serverFactory=pb.PBServerFactory(root),
                clientFactory=(
                    pbext.PBClientFactory(reactor=clock)
                    if pbextClient
                    else pb.PBClientFactory()
                ),
                clock=clock,
            )
            remote = pair.root_()
            received: list[bytes] = []
            receive = pair.server.dataReceived

            def record(data: bytes) -> None:
                received.append(data)
                receive(data)

            pair.server.dataReceived = record  # type: ignore[method-assign]
            for d in [
                remote.callRemote("echo", 7),
                remote.callRemote("echo", value=[1, "x"]),
                remote.callRemote("echo", {}),
            ]:
                pair.flush()
                self.successResultOf(d)
            return received

        self.assertEqual(b"".join(sent(True)), b"".join(sent(False)))

    def test_handshakeTimeout(self) -> None:
        """
        A connection that never finishes banana's handshake is closed after
        C{handshakeTimeout}.
        """
        clock = task.Clock()
        factory = pbext.PBServerFactory(Root(), reactor=clock)
        connection = connectedPair(
            factory, pb.PBClientFactory(), clock=clock, handshake=False
        )
        # The client's bytes never arrive: it never picks a dialect.
        connection.clientToServer.hold()
        connection.pump()
        connection.advance(factory.pbextPolicy.limits.handshakeTimeout - 1)
        self.assertFalse(connection.serverBroker.disconnected)
        connection.advance(2)
        self.assertTrue(connection.serverBroker.disconnected)

    def test_idleTimeout(self) -> None:
        """
        A connection the peer has sent nothing on for C{idleTimeout} is
        closed; bytes arriving postpone that without moving a timer for
        each message.
        """
        clock = task.Clock()
        policy = SecurityPolicy(
            name="idle-test",
            limits=dataclasses.replace(defaultPolicy().limits, idleTimeout=10.0),
        )
        factory = pbext.PBServerFactory(Root(), reactor=clock, policy=policy)
        pair = Pair(self, serverFactory=factory, clock=clock)
        root = pair.root_()
        scheduled: list[float] = []
        callLater = clock.callLater

        def countingCallLater(delay: float, f: Any, *a: Any, **kw: Any) -> Any:
            scheduled.append(delay)
            return callLater(delay, f, *a, **kw)

        clock.callLater = countingCallLater  # type: ignore[method-assign]
        for _ in range(20):
            clock.advance(0.5)
            d = root.callRemote("echo", 1)
            pair.flush()
            self.assertEqual(self.successResultOf(d), 1)
        # Twenty messages, ten seconds: the idle timer fired once and waited
        # for the rest; it was not moved for each message.
        self.assertFalse(pair.server.disconnected)
        self.assertLessEqual(len(scheduled), 2)
        clock.advance(9)
        pair.flush()
        self.assertFalse(pair.server.disconnected)
        clock.advance(1.5)
        pair.flush()
        self.assertTrue(pair.server.disconnected)


class CallTests(SynchronousTestCase):
    """
    How the pbext broker runs incoming calls.
    """

    def test_echo(self) -> None:
        """
        A plain call round-trips its argument.
        """
        pair = Pair(self)
        value = {"a": [1, 2.5, None, True], b"b": (b"c", "d")}
        self.assertEqual(self.successResultOf(pair.call("echo", value)), value)

    def test_asyncMethod(self) -> None:
        """
        An C{async def} remote method is awaited and its result sent.
        """
        pair = Pair(self)
        self.assertEqual(self.successResultOf(pair.call("add", 2, 3)), 5)

    def test_asyncMethodFails(self) -> None:
        """
        An exception raised by an C{async def} method becomes the error
        answer.
        """
        pair = Pair(self)
        f = self.failureResultOf(pair.call("asyncFail"))
        self.assertTrue(f.check(pb.Error))

    def test_privateMethodRefused(self) -> None:
        """
        Under the default policy, a method whose name starts with C{_} is not
        called, and the caller gets a L{pbbroker.PolicyViolation}.
        """
        pair = Pair(self)
        f = self.failureResultOf(pair.call("_private"))
        self.assertTrue(f.check(pbbroker.PolicyViolation), f)
        self.assertFalse(pair.root.privateCalled)
        self.assertEqual(
            f.getErrorMessage(),
            "_private(): refused by the server's security policy",
        )

    def test_privateMethodClassic(self) -> None:
        """
        Under the classic policy, private methods are callable as in stock
        PB.
        """
        root = Root()
        pair = Pair(
            self,
            root=root,
            serverFactory=pbext.PBServerFactory(root, policy=classicPolicy()),
        )
        self.assertEqual(self.successResultOf(pair.call("_private")), "secret")

    def test_noSuchMethodNoTraceback(self) -> None:
        """
        A call to a missing method gets an error answer and logs no
        traceback.
        """
        pair = Pair(self)
        f = self.failureResultOf(pair.call("missing"))
        self.assertTrue(f.check(pb.NoSuchMethod), f)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_typedArgumentsRefused(self) -> None:
        """
        Arguments that do not match a method's annotations are refused before
        it runs.
        """
        pair = Pair(self)
        self.assertEqual(self.successResultOf(pair.call("typed", 2, name="ab")), "abab")
        f = self.failureResultOf(pair.call("typed", "two"))
        self.assertTrue(f.check(typecheck.TypedCallError), f)

    def test_outstandingCallsLimit(self) -> None:
        """
        Past C{maxOutstandingCalls} unanswered calls, further calls are
        refused at once; earlier ones are unaffected.
        """
        policy = defaultPolicy()
        limit = policy.limits.maxOutstandingCalls
        root = Root()
        clock = task.Clock()
        pair = Pair(
            self,
            root=root,
            clock=clock,
            serverFactory=pbext.PBServerFactory(root, policy=policy, reactor=clock),
        )
        ref = pair.root_()
        waiting = [ref.callRemote("wait") for _ in range(limit)]
        refused = ref.callRemote("wait")
        pair.flush()
        f = self.failureResultOf(refused)
        self.assertTrue(f.check(pbbroker.PolicyViolation), f)
        self.assertEqual(
            f.getErrorMessage(),
            f"wait(): more than {limit} calls unanswered; wait for an answer "
            f"before calling again",
        )
        self.assertEqual(len(root.pending), limit)
        root.pending[0].callback("done")
        pair.flush()
        self.assertEqual(self.successResultOf(waiting[0]), "done")
        for d in root.pending[1:]:
            d.callback(None)
        pair.flush()

    def test_answerTooLarge(self) -> None:
        """
        An answer larger than the outgoing message limit becomes an error
        answer instead of an unbounded write.
        """
        pair = Pair(self)
        limit = pair.server.pbextPolicy.limits.maxOutgoingMessageBytes
        f = self.failureResultOf(pair.call("many", limit // 600_000 + 2))
        self.assertTrue(f.check(pbbroker.MessageTooLarge), f)
        # The connection still works.
        self.assertEqual(self.successResultOf(pair.call("echo", 1)), 1)

    def test_longAnswerTooLarge(self) -> None:
        """
        A long list (encoded ahead of its message by the accelerated path)
        too large to send also becomes an error answer.
        """
        pair = Pair(self)
        limit = pair.server.pbextPolicy.limits.maxOutgoingMessageBytes
        f = self.failureResultOf(pair.call("pieces", 100, limit // 50))
        self.assertTrue(f.check(pbbroker.MessageTooLarge), f)
        self.assertEqual(
            self.successResultOf(pair.call("pieces", 100, 3)), [b"yyy"] * 100
        )

    def test_longAnswersNotPlain(self) -> None:
        """
        A long list of objects that are not plain is jellied the ordinary
        way: references arrive as references, and what the client's policy
        refuses fails the caller.
        """
        pair = Pair(self)
        references = self.successResultOf(pair.call("referenceables", 40))
        self.assertEqual(len(references), 40)
        self.assertTrue(all(isinstance(r, pb.RemoteReference) for r in references))
        echoed = references[39].callRemote("echo", 5)
        pair.flush()
        self.assertEqual(self.successResultOf(echoed), 5)
        f = self.failureResultOf(pair.call("manyInsecure", 40))
        self.assertTrue(f.check(jelly.InsecureJelly), f)

    def test_callTooLargeDoesNotLeak(self) -> None:
        """
        A call too large to send fails its Deferred and leaves nothing in
        C{waitingForAnswers} (classic PB raised and leaked it).
        """
        pair = Pair(self)
        ref = pair.root_()
        d = ref.callRemote("echo", b"z" * (banana.SIZE_LIMIT + 1))
        f = self.failureResultOf(d, pbbroker.MessageTooLarge)
        self.assertIn("too long", f.getErrorMessage())
        self.assertEqual(pair.client.waitingForAnswers, {})

    def test_insecureAnswerFailsCaller(self) -> None:
        """
        An answer the client's policy refuses fails the caller's Deferred
        (classic PB left it unfired forever).
        """
        pair = Pair(self)
        f = self.failureResultOf(pair.call("insecure"))
        self.assertTrue(f.check(jelly.InsecureJelly), f)

    def test_unknownCommand(self) -> None:
        """
        An unknown command is answered with C{didNotUnderstand} naming it in
        bytes (classic PB crashed encoding a str), and the connection stays.
        """
        pair = Pair(self)
        pair.flush()
        pair.client.sendCall(b"frobnicate", 1)
        pair.flush()
        self.assertFalse(pair.server.disconnected)
        self.assertEqual(self.successResultOf(pair.call("echo", 2)), 2)

    def test_bogusDecref(self) -> None:
        """
        A decref of an unknown or named object is ignored.
        """
        pair = Pair(self)
        pair.flush()
        pair.client.sendCall(b"decref", 12345)
        pair.client.sendCall(b"decref", b"root")
        pair.flush()
        self.assertFalse(pair.server.disconnected)
        self.assertEqual(self.successResultOf(pair.call("echo", 3)), 3)

    def test_unexpectedAnswer(self) -> None:
        """
        An answer to no pending call is ignored, not a crash.
        """
        pair = Pair(self)
        pair.flush()
        pair.server.sendCall(b"answer", 999, 1)
        pair.flush()
        self.assertFalse(pair.client.disconnected)


class LifecycleTests(SynchronousTestCase):
    """
    Timeouts, cancellation and disconnection of calls.
    """

    def test_callTimeout(self) -> None:
        """
        A call with C{pbtimeout} fails with L{pbbroker.CallTimeout} when no
        answer comes in time; the late answer is dropped quietly.
        """
        pair = Pair(self)
        ref = pair.root_()
        d = ref.callRemote("wait", pbtimeout=5)
        pair.flush()
        pair.clock.advance(5)
        self.failureResultOf(d, pbbroker.CallTimeout)
        self.assertEqual(pair.client.waitingForAnswers, {})
        pair.root.pending[0].callback("late")
        pair.flush()
        self.assertFalse(pair.client.disconnected)

    def test_factoryCallTimeout(self) -> None:
        """
        The factory's C{callTimeout} applies to every call.
        """
        clock = task.Clock()
        pair = Pair(
            self,
            clock=clock,
            clientFactory=pbext.PBClientFactory(reactor=clock, callTimeout=2),
        )
        d = pair.call("wait")
        clock.advance(2)
        self.failureResultOf(d, pbbroker.CallTimeout)

    def test_callTimeoutMessage(self) -> None:
        """
        L{pbbroker.CallTimeout}'s message names the method, says "1 second"
        or "2 seconds" as a person would, and says how to allow longer.
        """
        said = {1: "1 second;", 2: "2 seconds;", 0.5: "0.5 seconds;"}
        for seconds, words in said.items():
            clock = task.Clock()
            pair = Pair(
                self,
                clock=clock,
                clientFactory=pbext.PBClientFactory(reactor=clock, callTimeout=seconds),
            )
            d = pair.call("wait")
            clock.advance(seconds)
            message = str(self.failureResultOf(d, pbbroker.CallTimeout).value)
            self.assertIn("no answer to wait() (call ", message)
            self.assertIn(words, message)
            self.assertIn("pbtimeout=", message)

    def test_remoteCancellation(self) -> None:
        """
        Cancelling a call to a pbext server cancels the Deferred of the
        running remote method.
        """
        pair = Pair(self)
        ref = pair.root_()
        d = ref.callRemote("wait")
        pair.flush()
        d.cancel()
        pair.flush()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(pair.root.cancelled, [1])
        self.assertEqual(pair.server._pbextDispatcher.running, {})

    def test_cancellationAgainstStockServer(self) -> None:
        """
        Against a stock server, cancelling is local: the caller's Deferred
        fails and the late answer is dropped quietly.
        """
        root = Root()
        pair = Pair(self, root=root, serverFactory=pb.PBServerFactory(root))
        ref = pair.root_()
        d = ref.callRemote("wait")
        pair.flush()
        d.cancel()
        pair.flush()
        self.failureResultOf(d, defer.CancelledError)
        root.pending[0].callback("late")
        pair.flush()
        self.assertFalse(pair.client.disconnected)

    def test_connectionLostFailsCalls(self) -> None:
        """
        Every outstanding call of a lost connection fails with
        L{pb.PBConnectionLost}; calling on the dead reference raises
        L{pb.DeadReferenceError}, every time.
        """
        pair = Pair(self)
        ref = pair.root_()
        calls = [ref.callRemote("wait") for _ in range(3)]
        pair.flush()
        pair.clientTransport.loseConnection()
        pair.flush()
        for d in calls:
            self.failureResultOf(d, pb.PBConnectionLost)
        for _ in range(2):
            self.assertRaises(pb.DeadReferenceError, ref.callRemote, "echo", 1)
