"""
Tests for L{pbext.keepalive}: the keepalive timing logic on a L{Clock}, the
ping against stock L{twisted.spread.pb} brokers in memory, and TCP
keepalive on wrapped transports.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from pbext.keepalive import PING_OBJECT_ID, KeepAlive, enableTcpKeepAlive, pingPeer


class FakePinger:
    """
    A C{sendPing} whose answers the test fires by hand.

    @ivar pings: the L{Deferred} of every ping sent, oldest first.
    @ivar dead: how many times C{onDead} was called.
    """

    def __init__(self) -> None:
        self.pings: list[Deferred[None]] = []
        self.dead = 0
        self.cancelled = 0

    def sendPing(self) -> Deferred[None]:
        ping: Deferred[None] = Deferred(self._cancelled)
        self.pings.append(ping)
        return ping

    def _cancelled(self, ping: Deferred[None]) -> None:
        self.cancelled += 1

    def onDead(self) -> None:
        self.dead += 1


def advance(clock: Clock, seconds: float) -> None:
    """
    Advance C{clock} by C{seconds} in steps of a quarter second, as a
    running reactor would, so that each timer runs at its own time.
    """
    steps = int(seconds * 4)
    assert steps == seconds * 4, "use multiples of 0.25 to keep float sums exact"
    clock.pump([0.25] * steps)


class KeepAliveTests(SynchronousTestCase):
    """
    L{KeepAlive} pings after C{interval} seconds of silence and declares the
    peer dead when nothing arrives within C{timeout} seconds more.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.pinger = FakePinger()
        self.keepalive = KeepAlive(
            self.clock, 10, 5, self.pinger.sendPing, self.pinger.onDead
        )

    def test_nothingBeforeStart(self) -> None:
        """
        A keepalive that was not started schedules nothing and sends no
        ping.
        """
        self.keepalive.activity()
        advance(self.clock, 100)
        self.assertEqual(self.pinger.pings, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(self.keepalive.running)

    def test_pingAfterInterval(self) -> None:
        """
        The first ping goes out C{interval} seconds after L{start} when no
        bytes arrived, not before.
        """
        self.keepalive.start()
        self.assertTrue(self.keepalive.running)
        advance(self.clock, 9.75)
        self.assertEqual(self.pinger.pings, [])
        advance(self.clock, 0.25)
        self.assertEqual(len(self.pinger.pings), 1)

    def test_activityPostponesPing(self) -> None:
        """
        Bytes arriving push the ping back to C{interval} seconds after the
        latest of them.
        """
        self.keepalive.start()
        advance(self.clock, 8)
        self.keepalive.activity()
        advance(self.clock, 9.75)
        self.assertEqual(self.pinger.pings, [])
        advance(self.clock, 0.25)
        self.assertEqual(len(self.pinger.pings), 1)

    def test_busyConnectionNeverPings(self) -> None:
        """
        While bytes keep arriving more often than every C{interval}
        seconds, no ping is sent at all.
        """
        self.keepalive.start()
        for _ in range(100):
            advance(self.clock, 3)
            self.keepalive.activity()
        self.assertEqual(self.pinger.pings, [])
        self.assertEqual(self.pinger.dead, 0)

    def test_deadAfterIntervalPlusTimeout(self) -> None:
        """
        A peer that stops sending bytes and does not answer the ping is
        declared dead C{interval + timeout} seconds after its last bytes,
        not before, and once; nothing is left scheduled.
        """
        self.keepalive.start()
        advance(self.clock, 3)
        self.keepalive.activity()
        advance(self.clock, 10 + 5 - 0.25)
        self.assertEqual(self.pinger.dead, 0)
        advance(self.clock, 0.25)
        self.assertEqual(self.pinger.dead, 1)
        self.assertFalse(self.keepalive.running)
        advance(self.clock, 100)
        self.assertEqual(self.pinger.dead, 1)
        self.assertEqual(len(self.pinger.pings), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lateTimerMeasuresFromPing(self) -> None:
        """
        When the clock runs late (a blocked reactor), the answer is awaited
        for C{timeout} seconds after the ping actually went out: our own
        lateness is not the peer's fault.
        """
        self.keepalive.start()
        self.clock.advance(30)
        self.assertEqual(len(self.pinger.pings), 1)
        self.assertEqual(self.pinger.dead, 0)
        advance(self.clock, 4.75)
        self.assertEqual(self.pinger.dead, 0)
        advance(self.clock, 0.25)
        self.assertEqual(self.pinger.dead, 1)

    def test_answerKeepsAlive(self) -> None:
        """
        An answered ping keeps the peer alive; the next ping goes out
        C{interval} seconds after the answer.
        """
        self.keepalive.start()
        advance(self.clock, 14)
        self.pinger.pings[0].callback(None)
        advance(self.clock, 9.75)
        self.assertEqual(self.pinger.dead, 0)
        self.assertEqual(len(self.pinger.pings), 1)
        advance(self.clock, 0.25)
        self.assertEqual(len(self.pinger.pings), 2)
        advance(self.clock, 5)
        self.assertEqual(self.pinger.dead, 1)

    def test_activityWhilePingOutstanding(self) -> None:
        """
        Any bytes arriving while a ping is outstanding prove the peer alive,
        and the ping's late answer changes nothing: the next ping is due
        C{interval} seconds after those bytes.
        """
        self.keepalive.start()
        advance(self.clock, 14)
        self.keepalive.activity()
        advance(self.clock, 5)
        self.assertEqual(self.pinger.dead, 0)
        self.pinger.pings[0].callback(None)
        advance(self.clock, 4.75)
        self.assertEqual(len(self.pinger.pings), 1)
        advance(self.clock, 0.25)
        self.assertEqual(len(self.pinger.pings), 2)

    def test_synchronousAnswer(self) -> None:
        """
        A C{sendPing} whose L{Deferred} has already fired counts as an
        answer.
        """
        pings = []

        def sendPing() -> Deferred[None]:
            pings.append(self.clock.seconds())
            return succeed(None)

        keepalive = KeepAlive(self.clock, 10, 5, sendPing, self.pinger.onDead)
        keepalive.start()
        advance(self.clock, 30)
        self.assertEqual(pings, [10, 20, 30])
        self.assertEqual(self.pinger.dead, 0)

    def test_failedPingIsNoAnswer(self) -> None:
        """
        A ping whose L{Deferred} fails is not an answer: the failure is
        swallowed and the peer is still declared dead after C{timeout}.
        """
        self.keepalive.start()
        advance(self.clock, 10)
        self.pinger.pings[0].errback(pb.PBConnectionLost("gone"))
        advance(self.clock, 4.75)
        self.assertEqual(self.pinger.dead, 0)
        advance(self.clock, 0.25)
        self.assertEqual(self.pinger.dead, 1)

    def test_sendPingRaises(self) -> None:
        """
        When C{sendPing} raises, the error is logged and the timeout still
        decides.
        """

        def sendPing() -> Deferred[None]:
            raise RuntimeError("cannot send")

        keepalive = KeepAlive(self.clock, 10, 5, sendPing, self.pinger.onDead)
        keepalive.start()
        advance(self.clock, 10)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        advance(self.clock, 5)
        self.assertEqual(self.pinger.dead, 1)

    def test_stopCancelsEverything(self) -> None:
        """
        L{KeepAlive.stop} leaves no delayed call behind, cancels the
        outstanding ping and never declares the peer dead; it can be called
        again safely.
        """
        self.keepalive.start()
        advance(self.clock, 10)
        self.keepalive.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.pinger.cancelled, 1)
        self.keepalive.stop()
        advance(self.clock, 100)
        self.assertEqual(self.pinger.dead, 0)
        self.assertFalse(self.keepalive.running)

    def test_stopBeforePing(self) -> None:
        """
        Stopping while idle cancels the idle timer.
        """
        self.keepalive.start()
        self.keepalive.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stoppedBySendPing(self) -> None:
        """
        If sending the ping stops the keepalive (the connection was lost
        while writing), nothing is left scheduled and the peer is not
        declared dead.
        """
        pings: list[Deferred[None]] = []

        def sendPing() -> Deferred[None]:
            keepalive.stop()
            pings.append(Deferred())
            return pings[-1]

        keepalive = KeepAlive(self.clock, 10, 5, sendPing, self.pinger.onDead)
        keepalive.start()
        advance(self.clock, 10)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        pings[0].errback(pb.PBConnectionLost("gone"))
        advance(self.clock, 100)
        self.assertEqual(self.pinger.dead, 0)

    def test_restartAfterDeath(self) -> None:
        """
        A keepalive that declared its peer dead can be started again.
        """
        self.keepalive.start()
        advance(self.clock, 15)
        self.assertEqual(self.pinger.dead, 1)
        self.keepalive.start()
        advance(self.clock, 15)
        self.assertEqual(self.pinger.dead, 2)

    def test_startTwice(self) -> None:
        """
        Starting a running keepalive changes nothing.
        """
        self.keepalive.start()
        advance(self.clock, 5)
        self.keepalive.start()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        advance(self.clock, 5)
        self.assertEqual(len(self.pinger.pings), 1)

    def test_invalidTimes(self) -> None:
        """
        A zero or negative interval or timeout is refused.
        """
        for interval, timeout, message in [
            (0, 5, "keepalive interval 0: give a number of seconds greater than 0"),
            (-1, 5, "keepalive interval -1: give a number of seconds greater than 0"),
            (10, 0, "keepalive timeout 0: give a number of seconds greater than 0"),
            (10, -2, "keepalive timeout -2: give a number of seconds greater than 0"),
        ]:
            error = self.assertRaises(
                ValueError,
                KeepAlive,
                self.clock,
                interval,
                timeout,
                self.pinger.sendPing,
                self.pinger.onDead,
            )
            self.assertEqual(str(error), message)


class PingRoot(pb.Root):
    """
    A root that records what it is asked.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def remote_echo(self, value: Any) -> Any:
        self.calls.append("echo")
        return value


def stockPair(
    root: pb.Root | None = None,
) -> tuple[pb.Broker, pb.Broker, iosim.IOPump]:
    """
    Connect a stock L{pb.PBClientFactory} broker to a stock
    L{pb.PBServerFactory} broker in memory.
    """
    serverFactory = pb.PBServerFactory(root if root is not None else PingRoot())
    clientFactory = pb.PBClientFactory()
    client, server, pump = iosim.connectedServerAndClient(
        lambda: serverFactory.buildProtocol(None),
        lambda: clientFactory.buildProtocol(None),
    )
    return client, server, pump


class PingPeerTests(SynchronousTestCase):
    """
    L{pingPeer} gets an answer from a stock Twisted broker, quietly.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_stockServerAnswers(self) -> None:
        """
        A stock server broker answers a client's ping; neither side logs
        anything, the root is not called, and no request is left waiting.
        """
        root = PingRoot()
        client, server, pump = stockPair(root)
        del self.events[:]
        ping = pingPeer(client)
        self.assertNoResult(ping)
        pump.flush()
        self.assertIsNone(self.successResultOf(ping))
        self.assertEqual(self.events, [])
        self.assertEqual(root.calls, [])
        self.assertEqual(client.waitingForAnswers, {})

    def test_stockClientAnswers(self) -> None:
        """
        A stock client broker answers a server's ping the same way.
        """
        client, server, pump = stockPair()
        del self.events[:]
        ping = pingPeer(server)
        pump.flush()
        self.assertIsNone(self.successResultOf(ping))
        self.assertEqual(self.events, [])
        self.assertEqual(server.waitingForAnswers, {})

    def test_repeatedPings(self) -> None:
        """
        Pings can be sent again and again; the connection keeps working for
        ordinary calls in between.
        """
        client, server, pump = stockPair()
        root = client.remoteForName("root")
        for i in range(5):
            ping = pingPeer(client)
            echo = root.callRemote("echo", i)
            pump.flush()
            self.assertIsNone(self.successResultOf(ping))
            self.assertEqual(self.successResultOf(echo), i)

    def test_anyAnswerCounts(self) -> None:
        """
        A peer that answers the ping with an ordinary answer (as a pbext
        peer may) is alive too.
        """
        client, server, pump = stockPair()
        server.setNameForLocal(PING_OBJECT_ID, PingRoot())
        # Any method name the object answers will do; make "ping" one.
        server.localObjectForID(PING_OBJECT_ID).remote_ping = lambda: "pong"
        ping = pingPeer(client)
        pump.flush()
        self.assertIsNone(self.successResultOf(ping))

    def test_connectionLost(self) -> None:
        """
        A ping outstanding when the connection is lost fails with
        L{pb.PBConnectionLost}.
        """
        client, server, pump = stockPair()
        ping = pingPeer(client)
        client.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(ping, pb.PBConnectionLost)

    def test_disconnectedBroker(self) -> None:
        """
        Pinging over a broker whose connection is gone fails at once with
        L{pb.DeadReferenceError}.
        """
        client, server, pump = stockPair()
        client.transport.loseConnection()
        pump.flush()
        self.failureResultOf(pingPeer(client), pb.DeadReferenceError)

    def test_cancel(self) -> None:
        """
        A cancelled ping fails with L{CancelledError}; the answer that
        arrives later is discarded quietly and the connection stays usable.
        """
        client, server, pump = stockPair()
        del self.events[:]
        ping = pingPeer(client)
        ping.cancel()
        self.failureResultOf(ping, CancelledError)
        pump.flush()
        self.assertEqual(self.events, [])
        self.assertEqual(client.waitingForAnswers, {})
        self.assertFalse(client.disconnected)
        again = pingPeer(client)
        pump.flush()
        self.assertIsNone(self.successResultOf(again))


@implementer(ITCPTransport)
class FakeTCPTransport:
    """
    Records C{setTcpKeepAlive} calls.
    """

    def __init__(self, error: OSError | None = None) -> None:
        self.keepAlive: bool | None = None
        self._error = error

    def setTcpKeepAlive(self, enabled: bool) -> None:
        if self._error is not None:
            raise self._error
        self.keepAlive = enabled


class Wrapper:
    """
    A transport wrapping another, as TLS and protocol wrappers do.
    """

    def __init__(self, transport: object) -> None:
        self.transport = transport


class EnableTcpKeepAliveTests(SynchronousTestCase):
    """
    L{enableTcpKeepAlive} finds the TCP transport under wrapping transports.
    """

    def test_tcpTransport(self) -> None:
        """
        A TCP transport gets C{SO_KEEPALIVE}.
        """
        transport = FakeTCPTransport()
        self.assertTrue(enableTcpKeepAlive(transport))
        self.assertTrue(transport.keepAlive)

    def test_wrapped(self) -> None:
        """
        A TCP transport wrapped twice (TLS over a protocol wrapper) is found
        and changed.
        """
        transport = FakeTCPTransport()
        self.assertTrue(enableTcpKeepAlive(Wrapper(Wrapper(transport))))
        self.assertTrue(transport.keepAlive)

    def test_noTcp(self) -> None:
        """
        A transport with no TCP connection under it is left alone.
        """
        self.assertFalse(enableTcpKeepAlive(Wrapper(object())))
        self.assertFalse(enableTcpKeepAlive(None))

    def test_endlessWrapping(self) -> None:
        """
        A transport chain that loops is given up on.
        """
        loop = Wrapper(None)
        loop.transport = loop
        self.assertFalse(enableTcpKeepAlive(loop))

    def test_osError(self) -> None:
        """
        An error from the operating system is reported as C{False}.
        """
        self.assertFalse(enableTcpKeepAlive(FakeTCPTransport(OSError("no"))))
