"""
Tests for L{pbext._calls}: the outgoing call table of a broker, in memory.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase

import pbext
from pbext._calls import ABANDONED_MEMORY
from pbext._serialization import Serialization
from pbext.broker import Broker, CallTimeout, MessageTooLarge
from pbext.codec import encodePieces
from pbext.security import defaultPolicy
from pbext.testing import PBConnection, connectedPair
from tests._parts import PartsRoot, connect, rootOf
from tests.test_dispatch import _readTogether


class OutgoingCallsTests(SynchronousTestCase):
    """
    L{pbext._calls.OutgoingCalls} sends calls, answers their callers, times
    them out and cancels them.
    """

    def setUp(self) -> None:
        self.connection, self.server, self.client, self.root = connect(self)
        self.ref = rootOf(self.connection)
        self.calls = self.client._pbextOutgoing()

    def test_answered(self) -> None:
        """
        A call's caller gets the answer, and the table forgets the call.
        """
        d = self.ref.callRemote("echo", [1, "two"])
        self.connection.pump()
        self.assertEqual(self.successResultOf(d), [1, "two"])
        self.assertEqual(self.client.waitingForAnswers, {})

    def test_timeout(self) -> None:
        """
        A call with C{pbtimeout} and no answer in time fails with a
        L{CallTimeout} naming the method, the time and what to change; a
        pbext peer is asked to cancel it, and the late answer is dropped.
        """
        d = self.ref.callRemote("wait", pbtimeout=2)
        self.connection.pump()
        self.connection.advance(2)
        failure = self.failureResultOf(d, CallTimeout)
        self.assertIn("no answer to wait()", str(failure.value))
        self.assertIn("2 seconds", str(failure.value))
        self.connection.pump()
        self.assertEqual(self.root.cancelled, 1)
        self.assertEqual(self.client.waitingForAnswers, {})

    def test_cancelled(self) -> None:
        """
        Cancelling a call's Deferred forgets it and cancels it remotely.
        """
        d = self.ref.callRemote("wait")
        self.connection.pump()
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.connection.pump()
        self.assertEqual(self.root.cancelled, 1)

    def test_lateAnswerDropped(self) -> None:
        """
        The answer to an abandoned call is dropped quietly: no violation.
        """
        violations: list[str] = []
        self.client._pbextViolation = (  # type: ignore[method-assign]
            lambda kind, message, **fields: violations.append(kind)
        )
        d = self.ref.callRemote("wait")
        self.connection.pump()
        requestID = max(self.client.waitingForAnswers)
        d.cancel()
        self.failureResultOf(d)
        self.calls.answer(requestID, 42)
        self.assertEqual(violations, [])
        self.calls.answer(requestID, 42)
        self.assertEqual(violations, ["unexpectedAnswer"])

    def test_abandonedMemoryBounded(self) -> None:
        """
        At most L{ABANDONED_MEMORY} abandoned request IDs are remembered.
        """
        waiting = self.client.waitingForAnswers
        for requestID in range(ABANDONED_MEMORY + 10):
            waiting[requestID] = defer.Deferred()
            self.calls.abandon(requestID)
        abandoned: Any = self.calls._abandoned
        self.assertEqual(len(abandoned), ABANDONED_MEMORY)
        self.assertNotIn(0, abandoned)

    def test_noAbandonedTableUntilNeeded(self) -> None:
        """
        A connection whose calls are all answered keeps no table of
        abandoned calls.
        """
        d = self.ref.callRemote("echo", 1)
        self.connection.pump()
        self.successResultOf(d)
        self.assertIsNone(self.calls._abandoned)

    def test_errorAnswer(self) -> None:
        """
        An error answer fails the caller's Deferred with the remote error.
        """
        d = self.ref.callRemote("fail")
        self.connection.pump()
        failure = self.failureResultOf(d)
        self.assertIn("the method failed", str(failure.value))
        self.flushLoggedErrors(ValueError)


class InlineAnswerTests(SynchronousTestCase):
    """
    An answer that needs no unjellying reaches its caller without the
    serializer's C{unserialize}; any other answer goes through it.
    """

    def test_atomsAndListsAnswered(self) -> None:
        """
        An int, float or bytes answer is given to its caller as it is,
        without a call to C{Serialization.unserialize}; a list answer is
        unjellied (by the decoder when accelerated, else by
        C{unserialize}) and arrives equal to what was sent.
        """
        seen: list[object] = []
        original = Serialization.unserialize

        def spy(self: Serialization, sexp: Any, perspective: Any = None) -> Any:
            seen.append(sexp)
            return original(self, sexp, perspective)

        self.patch(Serialization, "unserialize", spy)
        connection, server, client, root = connect(self)
        ref = rootOf(connection)
        del seen[:]
        results = [ref.callRemote("echo", v) for v in (42, 2.5, b"x")]
        connection.pump()
        self.assertEqual([self.successResultOf(d) for d in results], [42, 2.5, b"x"])
        # Only lists (the server's arguments, in pure-Python mode) went
        # through it: never an answer that is an atom.
        self.assertEqual([s for s in seen if type(s) in (int, float, bytes)], [])
        del seen[:]
        d = ref.callRemote("echo", [1, "two"])
        connection.pump()
        self.assertEqual(self.successResultOf(d), [1, "two"])


def _connectClient(
    test: SynchronousTestCase, brokerClass: type[Broker] = Broker, policy: Any = None
) -> tuple[PBConnection, Broker, pb.RemoteReference, PartsRoot]:
    """
    Connect a pbext client whose brokers are C{brokerClass} to a pbext
    server serving a L{PartsRoot}.

    @return: the connection, the client's broker, its reference to the
        root, and the root.
    """
    clock = Clock()
    root = PartsRoot()
    clientFactory = pbext.PBClientFactory(reactor=clock, policy=policy)
    clientFactory.protocol = brokerClass
    connection = connectedPair(
        pbext.PBServerFactory(root, reactor=clock), clientFactory, clock=clock
    )
    test.addCleanup(connection.disconnect)
    client = connection.clientBroker
    assert isinstance(client, Broker)
    return connection, client, rootOf(connection), root


def _whileAnswered(
    connection: PBConnection,
    ref: pb.RemoteReference,
    then: Callable[[int], object],
    before: Callable[[], object] = lambda: None,
    count: int = 3,
) -> list[object]:
    """
    Make C{count} calls whose answers the client reads together, so that
    it handles them in one turn, and call C{then(i)} from the callback of
    the C{i}th: what C{then} sends is held back with the rest, as a
    pipelining caller's next calls are.  C{before} runs once the first
    calls are written.

    @return: the answers, in the order they arrived.
    """
    answers: list[object] = []

    def answered(value: int) -> None:
        answers.append(value)
        then(value)

    def calls() -> None:
        for i in range(count):
            ref.callRemote("echo", i).addCallback(answered)
        before()

    # The calls arrive together, so their answers leave in one write and
    # arrive in one read.
    _readTogether(connection, count, calls)
    connection.pump()
    return answers


class HeldCallTests(SynchronousTestCase):
    """
    Calls made while the client handles several answers of one read are
    held back and leave together; when the broker's class keeps pbext's
    C{sendCall} and C{sendEncoded} and Twisted's C{newRequestID},
    L{pbext._calls.sendMessage} numbers, encodes and holds them itself,
    and behaves as that chain of calls does.
    """

    def test_heldWithoutSendCall(self) -> None:
        """
        Calls made from the callbacks of answers read together are sent
        without the broker's C{sendCall}, and answered.
        """
        connection, client, ref, root = _connectClient(self)
        sent: list[object] = []
        results: list[object] = []

        def spy() -> None:
            client.sendCall = lambda *exp: sent.append(exp)  # type: ignore[method-assign] # a spy

        _whileAnswered(
            connection,
            ref,
            lambda i: ref.callRemote("echo", i + 10).addCallback(results.append),
            before=spy,
        )
        self.assertEqual(results, [10, 11, 12])
        self.assertEqual(sent, [])
        self.assertEqual(client.waitingForAnswers, {})

    def test_overriddenSendCallSeesEveryCall(self) -> None:
        """
        A broker class that overrides C{sendCall} sends every call through
        it, those made while answers are handled together too.
        """
        commands: list[object] = []

        class SpyingBroker(Broker):
            def sendCall(self, *exp: object) -> None:
                commands.append(exp[0])
                super().sendCall(*exp)

        connection, client, ref, root = _connectClient(self, SpyingBroker)
        results: list[object] = []
        del commands[:]
        answers = _whileAnswered(
            connection,
            ref,
            lambda i: ref.callRemote("echo", i + 10).addCallback(results.append),
        )
        self.assertEqual((answers, results), ([0, 1, 2], [10, 11, 12]))
        self.assertEqual(commands, [b"message"] * 6)

    def test_overriddenNewRequestID(self) -> None:
        """
        A broker class that overrides C{newRequestID} numbers every call
        with it.
        """
        numbered: list[int] = []

        class NumberingBroker(Broker):
            def newRequestID(self) -> int:
                requestID = self.currentRequestID = self.currentRequestID + 7
                numbered.append(requestID)
                return requestID

        connection, client, ref, root = _connectClient(self, NumberingBroker)
        results: list[object] = []
        del numbered[:]
        _whileAnswered(
            connection,
            ref,
            lambda i: ref.callRemote("echo", i + 10).addCallback(results.append),
        )
        self.assertEqual(results, [10, 11, 12])
        self.assertEqual(len(numbered), 6)
        self.assertEqual({n % 7 for n in numbered}, {numbered[0] % 7})

    def test_tooLargeCallFailsCaller(self) -> None:
        """
        A call too large to send, made while answers are handled together,
        fails its caller with L{MessageTooLarge}; the other calls are
        answered.
        """
        policy = defaultPolicy()
        policy.limits = dataclasses.replace(policy.limits, maxOutgoingMessageBytes=4000)
        connection, client, ref, root = _connectClient(self, policy=policy)
        results: list[defer.Deferred[Any]] = []
        _whileAnswered(
            connection,
            ref,
            lambda i: results.append(
                ref.callRemote("echo", b"x" * 5000 if i == 1 else i + 10)
            ),
        )
        self.assertEqual(self.successResultOf(results[0]), 10)
        self.failureResultOf(results[1], MessageTooLarge)
        self.assertEqual(self.successResultOf(results[2]), 12)
        self.assertEqual(client.waitingForAnswers, {})

    def test_timeoutAndNoAnswer(self) -> None:
        """
        A call with C{pbtimeout}, made while answers are handled together,
        times out; one with C{pbanswer=0} has no Deferred and reaches the
        server.
        """
        connection, client, ref, root = _connectClient(self)
        timed: list[defer.Deferred[Any]] = []
        unanswered: list[object] = []

        def then(i: int) -> None:
            if i == 0:
                timed.append(ref.callRemote("wait", pbtimeout=3))
            else:
                unanswered.append(ref.callRemote("wait", pbanswer=0))

        _whileAnswered(connection, ref, then)
        self.assertEqual(unanswered, [None, None])
        self.assertEqual(len(root.waiting), 3)
        self.assertNoResult(timed[0])
        connection.advance(3)
        self.failureResultOf(timed[0], CallTimeout)
        connection.pump()
        self.assertEqual(root.cancelled, 1)


class RoutedAnswerTests(SynchronousTestCase):
    """
    The queue's drain hands answers straight to the outgoing call table
    when the broker's class keeps C{callExpressionReceived},
    C{expressionReceived} and C{proto_answer}; a class that overrides one
    sees every answer through it.
    """

    def test_withoutProtoAnswer(self) -> None:
        """
        Answers reach their callers without the broker's C{proto_answer}.
        """
        connection, client, ref, root = _connectClient(self)
        seen: list[object] = []
        client.proto_answer = lambda *a: seen.append(a)  # type: ignore[method-assign] # a spy
        d = ref.callRemote("echo", 5)
        connection.pump()
        self.assertEqual(self.successResultOf(d), 5)
        self.assertEqual(_whileAnswered(connection, ref, lambda i: None), [0, 1, 2])
        self.assertEqual(seen, [])

    def test_overriddenSeeEveryAnswer(self) -> None:
        """
        A broker class that overrides C{callExpressionReceived},
        C{expressionReceived} or C{proto_answer} gets every answer through
        its override.
        """
        for name in ("callExpressionReceived", "expressionReceived", "proto_answer"):
            seen: list[object] = []

            def spy(
                self: Broker, *a: Any, _name: str = name, _seen: list[object] = seen
            ) -> None:
                _seen.append(a)
                getattr(Broker, _name)(self, *a)

            brokerClass = type("SpyingBroker", (Broker,), {name: spy})
            connection, client, ref, root = _connectClient(self, brokerClass)
            del seen[:]
            answers = _whileAnswered(connection, ref, lambda i: None)
            self.assertEqual(answers, [0, 1, 2])
            self.assertEqual(len(seen), 3, name)
            connection.disconnect()

    def test_unexpectedAnswer(self) -> None:
        """
        An answer for no pending call is still a violation, and a
        malformed one goes the usual way (an unusual expression).
        """
        connection, client, ref, root = _connectClient(self)
        violations: list[str] = []
        client._pbextViolation = (  # type: ignore[method-assign] # a spy
            lambda kind, message, **fields: violations.append(kind)
        )
        d = ref.callRemote("echo", 1)
        connection.pump()
        self.successResultOf(d)
        vocabulary = client.outgoingSymbols
        for exp in ([b"answer", 999, 1], [b"answer", 999]):
            connection.sendRawToClient(b"".join(encodePieces(exp, vocabulary, 4096)))
            connection.pump()
        self.assertEqual(violations[0], "unexpectedAnswer")
        self.assertEqual(len(violations), 2, violations)


class CallArgumentsTests(SynchronousTestCase):
    """
    L{pbext._calls.sendMessage} serializes a call's arguments as the
    serializer's C{serializeOut} does.
    """

    def test_notPlain(self) -> None:
        """
        Arguments that are not plain values (a L{pb.Referenceable}) are
        serialized by the broker's C{serialize}, and the call is answered.
        """
        connection, client, ref, root = _connectClient(self)
        seen: list[object] = []
        original = client.serialize

        def spy(value: object, *a: Any) -> object:
            seen.append(value)
            return original(value, *a)

        client.serialize = spy  # type: ignore[method-assign,assignment] # a spy
        thing = pb.Referenceable()
        d = ref.callRemote("echo", thing)
        connection.pump()
        self.successResultOf(d)
        self.assertEqual(seen, [(thing,)])

    def test_tooLongList(self) -> None:
        """
        A call whose arguments are too large to send, found while they are
        prepared, fails its caller with L{MessageTooLarge}.
        """
        policy = defaultPolicy()
        policy.limits = dataclasses.replace(policy.limits, maxOutgoingMessageBytes=4000)
        connection, client, ref, root = _connectClient(self, policy=policy)
        d = ref.callRemote("echo", [1] * 5000)
        self.failureResultOf(d, MessageTooLarge)
        self.assertEqual(client.waitingForAnswers, {})
