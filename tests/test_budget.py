"""
Tests for L{pbext.budget}: the memory budget all connections of a factory
share, and the broker's write backpressure that feeds it.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer, task
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pbext.budget import MemoryBudget, budgetFor
from pbext.security import defaultPolicy
from tests._hostile import (
    HostileMixin,
    HostileRoot,
    RecordingServerFactory,
    callMessage,
    wireMessage,
)
from tests.test_hostile import policyWith


def _brokerState(broker: Any, name: str) -> Any:
    """
    The broker's private state C{name}: an attribute of its flow control
    part (L{pbext._flow.FlowControl}), or on branches from before that
    part, of the broker under its C{_pbext} name or its older one.
    """
    flow = vars(broker).get("_pbextFlow")
    if flow is not None:
        return getattr(flow, name)
    renamed = "_pbext" + name[0].upper() + name[1:]
    if renamed in vars(broker):
        return vars(broker)[renamed]
    return vars(broker)["_" + name]


class FakeBroker:
    """
    What a L{MemoryBudget} sees of a broker: its exact figures, and a cut
    that records itself.
    """

    def __init__(self, budget: MemoryBudget, name: str) -> None:
        self.budget = budget
        self.name = name
        self.bytes = 0
        self.objects = 0
        self.cut: list[str] = []

    def _pbextBufferedBytes(self) -> int:
        return self.bytes

    def _pbextHeldObjects(self) -> int:
        return self.objects

    def _pbextCut(self, kind: str, message: str) -> None:
        self.cut.append(kind)
        self.bytes = self.objects = 0

    def buffer(self, amount: int) -> None:
        self.bytes = amount
        self.budget.chargeBytes(self, amount)

    def hold(self, count: int) -> None:
        self.objects = count
        self.budget.chargeObjects(self, count)


class MemoryBudgetTests(SynchronousTestCase):
    """
    L{MemoryBudget} cuts the connections holding the most once a sum is
    past its limit, and nobody else.
    """

    def test_defaults(self) -> None:
        """
        L{budgetFor} takes the server-wide limits of a policy; the default
        policy's are 32 MiB of buffered bytes and 65536 held objects.
        """
        limits = defaultPolicy().limits
        budget = budgetFor(limits)
        self.assertEqual(budget.maxBufferedBytes, 32 * 1024 * 1024)
        self.assertEqual(budget.maxHeldObjects, 65536)

    def test_withinBudget(self) -> None:
        """
        Reports within the budget are summed and nothing is cut.
        """
        budget = MemoryBudget(1000, 10)
        a, b = FakeBroker(budget, "a"), FakeBroker(budget, "b")
        a.buffer(400)
        b.buffer(600)
        a.hold(5)
        b.hold(5)
        self.assertEqual((budget.bufferedBytes, budget.heldObjects), (1000, 10))
        self.assertEqual((a.cut, b.cut), ([], []))

    def test_worstCutFirst(self) -> None:
        """
        Past C{maxBufferedBytes}, the connection buffering the most is cut,
        then the next, until the sum is within the budget; small ones are
        left alone.
        """
        budget = MemoryBudget(1000, 10)
        small = FakeBroker(budget, "small")
        big = FakeBroker(budget, "big")
        bigger = FakeBroker(budget, "bigger")
        small.buffer(100)
        big.buffer(400)
        bigger.buffer(450)
        self.assertEqual(budget.cuts, 0)
        # The newcomer is not the largest: the largest goes.
        big.buffer(600)
        self.assertEqual(
            (small.cut, big.cut, bigger.cut), ([], ["maxServerBufferedBytes"], [])
        )
        self.assertEqual(budget.bufferedBytes, 550)
        self.assertEqual(budget.cuts, 1)

    def test_exactFiguresBeforeCutting(self) -> None:
        """
        Before cutting, every connection's exact figure is read: one whose
        buffer drained since it last reported is not cut for it.
        """
        budget = MemoryBudget(1000, 10)
        drained = FakeBroker(budget, "drained")
        other = FakeBroker(budget, "other")
        drained.buffer(900)
        drained.bytes = 0
        other.buffer(500)
        self.assertEqual((drained.cut, other.cut), ([], []))
        self.assertEqual(budget.bufferedBytes, 500)

    def test_heldObjects(self) -> None:
        """
        Past C{maxHeldObjects}, the connection holding the most objects is
        cut.
        """
        budget = MemoryBudget(1000, 10)
        few, many = FakeBroker(budget, "few"), FakeBroker(budget, "many")
        few.hold(3)
        many.hold(8)
        self.assertEqual((few.cut, many.cut), ([], ["maxServerHeldObjects"]))
        self.assertEqual(budget.heldObjects, 3)

    def test_release(self) -> None:
        """
        A connection that is gone holds nothing any more.
        """
        budget = MemoryBudget(1000, 10)
        a = FakeBroker(budget, "a")
        a.buffer(700)
        a.hold(7)
        budget.release(a)
        self.assertEqual((budget.bufferedBytes, budget.heldObjects), (0, 0))


class NeverReadsTests(HostileMixin, TestCase):
    """
    Write backpressure over a real TCP connection, by the transport's
    real buffer.
    """

    def setUp(self) -> None:
        self.setUpHostile()

    @defer.inlineCallbacks
    def flood(self, policy: Any, bufferSize: int | None = None) -> Any:
        """
        Send calls with 60 KB answers and never read them; fire with the
        server's broker once it stopped reading.
        """
        self.startServer(policy)
        peer = yield self.connectRaw()
        broker = self.serverBroker()
        if bufferSize is not None:
            broker.transport.bufferSize = bufferSize
        peer.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        peer.transport.pauseProducing()
        calls = b"".join(
            wireMessage(callMessage(i, b"echo", [b"tuple", b"p" * 60_000]))
            for i in range(1, 201)
        )
        peer.transport.write(calls)
        yield self.poll(lambda: broker._pbextFlow.outputFull)
        return broker, peer

    @defer.inlineCallbacks
    def test_pausedAtLimit(self) -> None:
        """
        A peer that never reads is no longer read from, nor are its queued
        messages handled, once more than C{maxPendingWriteBytes} wait in
        the transport's buffer; what waits stays near the limit.
        """
        limit = 512 * 1024
        broker, peer = yield self.flood(policyWith(maxPendingWriteBytes=limit))
        pending = broker._pbextFlow.pendingOut()
        self.assertGreater(pending, limit)
        self.assertLess(pending, limit + 200_000)
        self.assertIn("backpressure", _brokerState(broker, "readPauses"))
        handled = len(self.root.calls)
        yield task.deferLater(self.reactor, 0.2, lambda: None)
        self.assertEqual(len(self.root.calls), handled)
        self.assertLess(handled, 200)
        # Once the peer reads, everything is answered.
        peer.transport.resumeProducing()
        yield peer.waitFor(lambda: len(peer.answers) >= 200 or None, self.reactor)
        self.assertFalse(broker._pbextFlow.outputFull)
        yield self.stockEcho()

    @defer.inlineCallbacks
    def test_bufferSizeRaised(self) -> None:
        """
        Raising the transport's C{bufferSize} (which decides when Twisted
        pauses a producer) does not delay write backpressure.
        """
        limit = 512 * 1024
        broker, peer = yield self.flood(
            policyWith(maxPendingWriteBytes=limit), bufferSize=64 * 1024 * 1024
        )
        self.assertFalse(_brokerState(broker, "writePaused"))
        self.assertLess(broker._pbextFlow.pendingOut(), limit + 200_000)
        self.assertLess(len(self.root.calls), 200)
        peer.transport.resumeProducing()
        yield peer.waitFor(lambda: len(peer.answers) >= 200 or None, self.reactor)
        yield self.stockEcho()

    @defer.inlineCallbacks
    def test_budgetCutsWorst(self) -> None:
        """
        With a small C{maxServerBufferedBytes}, of two peers that never
        read, the one buffering the most is cut; a stock client is served.
        """
        self.startServer(
            policyWith(
                maxPendingWriteBytes=1024 * 1024, maxServerBufferedBytes=768 * 1024
            )
        )
        peer = yield self.connectRaw()
        peer.transport.pauseProducing()
        peer.transport.write(
            b"".join(
                wireMessage(callMessage(i, b"echo", [b"tuple", b"p" * 60_000]))
                for i in range(1, 201)
            )
        )
        yield self.waitLost(peer)
        self.assertDropped("maxServerBufferedBytes")
        self.assertLessEqual(self.factory._pbext.budget.bufferedBytes, 768 * 1024)
        yield self.stockEcho()

    def assertDropped(self, kind: str) -> None:
        self.assertIn(kind, self.recorder.kinds())


class MakerRoot(pb.Root):
    """
    Gives out a new referenceable on every C{make}.
    """

    def remote_make(self) -> pb.Referenceable:
        return pb.Referenceable()

    def remote_echo(self, value: Any) -> Any:
        return value


class HeldObjectsTests(HostileMixin, TestCase):
    """
    C{maxServerHeldObjects} over real connections.
    """

    def setUp(self) -> None:
        self.setUpHostile()

    @defer.inlineCallbacks
    def test_greediestCut(self) -> Any:
        """
        Of two clients that collect references, the one holding the most
        is closed once the server holds more than C{maxServerHeldObjects}
        for them together; the other keeps working.
        """
        factory = RecordingServerFactory(
            MakerRoot(), policy=policyWith(maxServerHeldObjects=50)
        )
        port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(self._dropAll, factory)
        factory.portNumber = port.getHost().port  # type: ignore[attr-defined]
        self.factory = factory
        modest = yield self.connectRaw()
        greedy = yield self.connectRaw()
        for requestID in range(1, 16):
            modest.transport.write(wireMessage(callMessage(requestID, b"make")))
        yield modest.answerTo(15, self.reactor)
        for requestID in range(1, 41):
            greedy.transport.write(wireMessage(callMessage(requestID, b"make")))
        yield self.waitLost(greedy)
        self.assertIn("maxServerHeldObjects", self.recorder.kinds())
        modest.transport.write(
            wireMessage(callMessage(99, b"echo", [b"tuple", b"still"]))
        )
        answer = yield modest.answerTo(99, self.reactor)
        self.assertEqual(answer, [b"answer", 99, b"still"])
        self.assertLessEqual(factory._pbext.budget.heldObjects, 50)


class TLSBackpressureTests(TestCase):
    """
    On TLS the broker is a producer of the transport under TLS: it learns
    when the peer stops reading, and closing still works.
    """

    timeout = 60

    def setUp(self) -> None:
        try:
            from tests.test_tls import Certificates
        except ImportError:
            raise self.skipException("cryptography is not installed")
        from twisted.internet import reactor
        from twisted.python.filepath import FilePath

        self.reactor = reactor
        self.certificates = Certificates(FilePath(self.mktemp()))

    @defer.inlineCallbacks
    def test_loseConnection(self) -> Any:
        """
        Both brokers of a TLS connection are registered producers (on the
        TCP transport under TLS), and C{loseConnection} on either side
        closes the connection.
        """
        from twisted.internet import endpoints

        import pbext

        factory = RecordingServerFactory(HostileRoot())
        endpoint = endpoints.serverFromString(
            self.reactor, self.certificates.serverDescription()
        )
        port = yield endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        for closing in ("client", "server"):
            client = pbext.PBClientFactory()
            yield endpoints.clientFromString(
                self.reactor,
                self.certificates.clientDescription(port.getHost().port),
            ).connect(client)
            root = yield client.getRootObject()
            self.assertEqual((yield root.callRemote("echo", 1)), 1)
            server = factory.brokers[-1]
            for broker in (root.broker, server):
                self.assertTrue(_brokerState(broker, "producing"))
                self.assertIs(broker._pbextFlow.producerOn, broker.transport.transport)
                self.assertIsNotNone(broker._pbextFlow.pendingOut)
            lost: defer.Deferred[None] = defer.Deferred()
            root.broker.notifyOnDisconnect(lambda lost=lost: lost.callback(None))
            side = root.broker if closing == "client" else server
            side.transport.loseConnection()
            yield lost.addTimeout(10, self.reactor)


class BacklogChargedTests(SynchronousTestCase):
    """
    Messages received and waiting to be handled count as buffered bytes
    of their connection, by the bytes they arrived in.
    """

    def test_backlogCounted(self) -> None:
        """
        With C{maxMessagesPerTurn} 1, three calls arriving in one read
        leave two waiting: the connection buffers at least their bytes
        until they are handled, and nothing once they are.
        """
        import pbext
        from pbext.testing import connectedPair

        clock = task.Clock()
        factory = pbext.PBServerFactory(
            HostileRoot(), reactor=clock, policy=policyWith(maxMessagesPerTurn=1)
        )
        conn = connectedPair(factory, pbext.PBClientFactory(), clock=clock)
        self.addCleanup(conn.disconnect)
        call = wireMessage(
            callMessage(1, b"keep", [b"tuple", b"k" * 10_000], answerRequired=0)
        )
        broker = conn.serverBroker
        broker.dataReceived(call * 3)
        self.assertEqual(len(_brokerState(broker, "backlog")), 2)
        self.assertGreaterEqual(broker._pbextBufferedBytes(), 2 * len(call))
        clock.advance(0)
        clock.advance(0)
        self.assertEqual(len(_brokerState(broker, "backlog")), 0)
        self.assertEqual(broker._pbextBufferedBytes(), 0)
