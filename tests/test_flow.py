"""
Tests for L{pbext._flow}: a broker's flow control, in memory.
"""

from __future__ import annotations

import dataclasses

from twisted.trial.unittest import SynchronousTestCase

from pbext.security import defaultPolicy
from tests._parts import connect, rootOf


class FlowControlTests(SynchronousTestCase):
    """
    L{pbext._flow.FlowControl} queues a connection's messages, handles a
    few each reactor turn and pauses reading while they wait.
    """

    def test_fairness(self) -> None:
        """
        Past C{maxMessagesPerTurn} messages arrived at once, the rest wait
        for the next reactor turn, with reading paused; then all are
        answered and reading resumes.
        """
        policy = defaultPolicy()
        policy.limits = dataclasses.replace(policy.limits, maxMessagesPerTurn=2)
        connection, server, client, root = connect(self, policy=policy)
        ref = rootOf(connection)
        calls = [ref.callRemote("echo", n) for n in range(5)]
        flow = server._pbextFlow
        connection.clientToServer.hold()
        connection.pump()
        connection.clientToServer.release()
        server.dataReceived(connection.clientToServer.pending())
        self.assertEqual(len(flow.backlog), 3)
        self.assertIn("fairness", flow.readPauses)
        self.assertIsNotNone(flow.drainCall)
        connection.advance(0)
        connection.advance(0)
        self.assertEqual(flow.backlog, type(flow.backlog)())
        self.assertEqual(flow.readPauses, set())
        for n, d in enumerate(calls):
            self.assertEqual(self.successResultOf(d), n)

    def test_outputFullStopsHandling(self) -> None:
        """
        While the output is backed up, queued messages are not handled;
        when it drains they are.
        """
        connection, server, client, root = connect(self)
        flow = server._pbextFlow
        flow.outputFull = True
        flow.backlog.append([b"didNotUnderstand", b"x"])
        flow.drain()
        self.assertEqual(len(flow.backlog), 1)
        flow.outputFull = False
        flow.drain()
        self.assertEqual(len(flow.backlog), 0)

    def test_pausedReasons(self) -> None:
        """
        Reading is paused once for any number of reasons, and resumes only
        when the last reason is gone.
        """
        connection, server, client, root = connect(self)
        flow = server._pbextFlow
        transport = connection.serverTransport
        flow.pauseReading("fairness")
        flow.pauseReading("backpressure")
        self.assertEqual(flow.readPauses, {"fairness", "backpressure"})
        flow.resumeReading("fairness")
        self.assertEqual(flow.readPauses, {"backpressure"})
        flow.resumeReading("backpressure")
        self.assertEqual(flow.readPauses, set())
        self.assertTrue(transport is not None)

    def test_lostReleases(self) -> None:
        """
        When the connection is lost, the queue is emptied and no drain is
        left scheduled.
        """
        connection, server, client, root = connect(self)
        flow = server._pbextFlow
        flow.backlog.append([b"didNotUnderstand", b"x"])
        flow.pauseReading("fairness")
        flow.drainCall = connection.clock.callLater(0, flow.drain)
        connection.disconnect()
        self.assertEqual(len(flow.backlog), 0)
        self.assertIsNone(flow.drainCall)
        self.assertEqual(connection.clock.getDelayedCalls(), [])

    def test_answersInOneWrite(self) -> None:
        """
        The answers to several calls that arrived in one read leave in one
        write, in order; a call alone is answered with a write of its own.
        """
        connection, server, client, root = connect(self)
        ref = rootOf(connection)
        writes: list[int] = []
        write, writeSequence = server._pbextWrite, server._pbextWriteSequence

        def recordWrite(data: bytes) -> None:
            writes.append(1)
            write(data)

        def recordSequence(pieces: list[bytes]) -> None:
            writes.append(len(pieces))
            writeSequence(pieces)

        server._pbextWrite = recordWrite
        server._pbextWriteSequence = recordSequence
        calls = [ref.callRemote("echo", n) for n in range(5)]
        connection.clientToServer.hold()
        connection.pump()
        connection.clientToServer.release()
        server.dataReceived(connection.clientToServer.pending())
        self.assertEqual(writes, [5])
        connection.pump()
        for n, d in enumerate(calls):
            self.assertEqual(self.successResultOf(d), n)
        del writes[:]
        alone = ref.callRemote("echo", 9)
        connection.pump()
        self.assertEqual(self.successResultOf(alone), 9)
        self.assertEqual(writes, [1])

    def test_drainReentered(self) -> None:
        """
        A message whose handling leads to the queue being drained again
        does not get the messages after it handled twice or out of order:
        the drain already running goes on with them.
        """
        connection, server, client, root = connect(self)
        flow = server._pbextFlow
        handled: list[object] = []

        def handle(expression: object) -> None:
            handled.append(expression)
            flow.drain()

        server.callExpressionReceived = handle  # type: ignore[method-assign]  # records each message
        flow.backlog.extend([[b"a"], [b"b"], [b"c"]])
        flow.drain()
        self.assertEqual(handled, [[b"a"], [b"b"], [b"c"]])
        self.assertEqual(len(flow.backlog), 0)
        self.assertFalse(flow.draining)
