"""
Tests for L{pbext._dispatch}: a broker's incoming dispatch, in memory.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

import pbext
from pbext.broker import Broker, MessageTooLarge, PolicyViolation
from pbext.security import defaultPolicy
from pbext.testing import PBConnection, connectedPair
from tests._parts import PartsRoot, connect, rootOf


class IncomingDispatchTests(SynchronousTestCase):
    """
    L{pbext._dispatch.IncomingDispatch} admits, runs and answers the peer's
    calls, and keeps those still running.
    """

    def test_runningKeptUntilAnswered(self) -> None:
        """
        A call whose method returns a Deferred is kept as running until it
        fires, then answered.
        """
        connection, server, client, root = connect(self)
        ref = rootOf(connection)
        d = ref.callRemote("wait")
        connection.pump()
        running = server._pbextDispatcher.running
        self.assertEqual(len(running), 1)
        root.waiting[0].callback("done")
        connection.pump()
        self.assertEqual(self.successResultOf(d), "done")
        self.assertEqual(running, {})

    def test_cancel(self) -> None:
        """
        L{IncomingDispatch.cancel} cancels a running call by request ID; an
        unknown or malformed ID is ignored.
        """
        connection, server, client, root = connect(self)
        ref = rootOf(connection)
        ref.callRemote("wait").addErrback(lambda f: None)
        connection.pump()
        dispatcher = server._pbextDispatcher
        (requestID,) = dispatcher.running
        dispatcher.cancel("x")
        dispatcher.cancel(requestID + 1)
        self.assertEqual(root.cancelled, 0)
        dispatcher.cancel(requestID)
        self.assertEqual(root.cancelled, 1)

    def test_tooManyRunning(self) -> None:
        """
        Past C{maxOutstandingCalls} running calls, a call is refused with a
        L{PolicyViolation} without running.
        """
        policy = defaultPolicy()
        policy.limits = dataclasses.replace(policy.limits, maxOutstandingCalls=1)
        connection, server, client, root = connect(self, policy=policy)
        ref = rootOf(connection)
        ref.callRemote("wait").addErrback(lambda f: None)
        d = ref.callRemote("wait")
        connection.pump()
        failure = self.failureResultOf(d)
        self.assertIn("more than 1 calls unanswered", str(failure.value))
        self.assertTrue(failure.check(PolicyViolation), failure.type)
        self.assertEqual(len(root.waiting), 1)

    def test_noSuchMethod(self) -> None:
        """
        A call of a method the target lacks is answered with the classic
        C{NoSuchMethod} error.
        """
        connection, server, client, root = connect(self)
        ref = rootOf(connection)
        d = ref.callRemote("missing")
        connection.pump()
        self.assertIn("No such method", str(self.failureResultOf(d).value))

    def test_closedCancelsRunning(self) -> None:
        """
        When the connection is lost, every running call is cancelled.
        """
        connection, server, client, root = connect(self)
        ref = rootOf(connection)
        ref.callRemote("wait").addErrback(lambda f: None)
        connection.pump()
        connection.disconnect()
        self.assertEqual(root.cancelled, 1)
        self.assertEqual(server._pbextDispatcher.running, {})


class _SpyingBroker(Broker):
    """
    A server broker whose class overrides C{sendCall}, recording the
    command of each expression it sends.
    """

    def sendCall(self, *exp: object) -> None:
        self.factory.spiedCommands.append(exp[0])
        super().sendCall(*exp)


def _readTogether(
    connection: PBConnection, count: int, calls: Callable[[], object]
) -> None:
    """
    Make C{calls} on the client (C{count} calls, each written as one
    chunk) and deliver them to the server in one read, as several calls
    arriving at once are.
    """
    direction = connection.clientToServer
    direction.hold()
    calls()
    data = direction.pending()
    direction.corruptNext(lambda chunk: data)
    for _ in range(count - 1):
        direction.corruptNext(lambda chunk: b"")
    direction.release()
    connection.pump()


class BatchedAnswerTests(SynchronousTestCase):
    """
    The answers to calls read together are held back and leave together,
    sent by L{pbext._dispatch.sendAnswer} without the broker's
    C{_sendAnswer}, C{sendCall} and C{sendEncoded} when its class keeps
    pbext's.
    """

    def test_directWhenNotOverridden(self) -> None:
        """
        Answers to calls read together are sent, in order, without calling
        the broker's C{sendCall}.
        """
        connection, server, client, root = connect(self)
        ref = rootOf(connection)
        sent: list[object] = []
        server.sendCall = lambda *exp: sent.append(exp)  # type: ignore[method-assign] # a spy
        results: list[object] = []
        _readTogether(
            connection,
            5,
            lambda: [
                ref.callRemote("echo", i).addCallback(results.append) for i in range(5)
            ],
        )
        self.assertEqual(results, [0, 1, 2, 3, 4])
        self.assertEqual(sent, [])

    def test_overriddenSendCallSeesEveryAnswer(self) -> None:
        """
        A broker class that overrides C{sendCall} sends every answer of
        calls read together through it, as classic PB does.
        """
        clock = Clock()
        serverFactory = pbext.PBServerFactory(PartsRoot(), reactor=clock)
        serverFactory.protocol = _SpyingBroker
        serverFactory.spiedCommands = []  # type: ignore[attr-defined] # the spy's list
        connection = connectedPair(
            serverFactory, pbext.PBClientFactory(reactor=clock), clock=clock
        )
        self.addCleanup(connection.disconnect)
        ref = rootOf(connection)
        del serverFactory.spiedCommands[:]  # type: ignore[attr-defined] # the spy's list
        results: list[object] = []
        _readTogether(
            connection,
            3,
            lambda: [
                ref.callRemote("echo", i).addCallback(results.append) for i in range(3)
            ],
        )
        self.assertEqual(results, [0, 1, 2])
        self.assertEqual(serverFactory.spiedCommands, [b"answer"] * 3)  # type: ignore[attr-defined] # the spy's list

    def test_tooLargeAnswerInBatch(self) -> None:
        """
        An answer too large to send, among answers read together, becomes
        a L{MessageTooLarge} error answer; the other calls are answered.
        """
        policy = defaultPolicy()
        policy.limits = dataclasses.replace(policy.limits, maxOutgoingMessageBytes=4000)
        clock = Clock()
        connection = connectedPair(
            pbext.PBServerFactory(PartsRoot(), reactor=clock, policy=policy),
            pbext.PBClientFactory(reactor=clock),
            clock=clock,
        )
        self.addCleanup(connection.disconnect)
        ref = rootOf(connection)
        results: list[object] = []

        def calls() -> None:
            ref.callRemote("echo", 1).addBoth(results.append)
            ref.callRemote("echo", "x" * 5000).addBoth(results.append)
            ref.callRemote("echo", 3).addBoth(results.append)

        _readTogether(connection, 3, calls)
        self.assertEqual(results[0], 1)
        self.assertEqual(results[2], 3)
        failure = results[1]
        assert isinstance(failure, Failure)
        self.assertTrue(failure.check(MessageTooLarge), failure)
