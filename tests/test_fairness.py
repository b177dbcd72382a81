"""
Tests for L{pbext.fairness}: a peer whose reads are costly to handle waits
while the server's other connections are served.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase

import pbext
from pbext import fairness
from pbext.security import classicPolicy, defaultPolicy, strictPolicy
from pbext.testing import PBConnection, connectedPair
from tests._hostile import callMessage, wireMessage


class FakeCPU:
    """
    The CPU and wall clocks of a process that does nothing but handle
    reads: the wall clock moves by C{step} each time it is read (the
    handling of a read is timed between two readings of it, so each read
    handled takes C{step} seconds), and the CPU clock by C{busy} times
    that.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.cpu = 0.0
        self.step = 0.0
        # The share of the wall-clock time spent on the CPU: less than 1
        # on a machine other processes load.
        self.busy = 1.0
        self.cpuReadings = 0

    def __call__(self) -> float:
        self.cpuReadings += 1
        return self.cpu

    def wall(self) -> float:
        self.now += self.step
        self.cpu += self.step * self.busy
        return self.now


class Root(pb.Root):
    def __init__(self) -> None:
        self.calls = 0

    def remote_echo(self, value: Any) -> Any:
        self.calls += 1
        return value


class PauseAfterTests(SynchronousTestCase):
    """
    L{fairness.pauseAfter} gives a costly peer a pause that leaves it its
    share.
    """

    def test_cheapReads(self) -> None:
        """
        A read handled within L{fairness.HEAVY_READ} earns no pause.
        """
        self.assertEqual(fairness.pauseAfter(fairness.HEAVY_READ, 20), 0.0)
        self.assertEqual(fairness.pauseAfter(0.0, 1), 0.0)

    def test_share(self) -> None:
        """
        At 20 per cent, a peer waits four times as long as its read took;
        at 10 per cent, nine times.
        """
        self.assertAlmostEqual(fairness.pauseAfter(0.05, 20), 0.2)
        self.assertAlmostEqual(fairness.pauseAfter(0.05, 10), 0.45)

    def test_off(self) -> None:
        """
        100 per cent or more (the classic limits' L{UNLIMITED}) never
        pauses.
        """
        self.assertEqual(fairness.pauseAfter(1.0, 100), 0.0)
        self.assertEqual(fairness.pauseAfter(1.0, 2**63 - 1), 0.0)

    def test_defaults(self) -> None:
        """
        The default policy gives a costly peer 20 per cent, the strict one
        10, the classic one all of it.
        """
        self.assertEqual(defaultPolicy().limits.maxPeerCPUPercent, 20)
        self.assertEqual(strictPolicy().limits.maxPeerCPUPercent, 10)
        self.assertGreaterEqual(classicPolicy().limits.maxPeerCPUPercent, 100)


class BrokerTakesTurnsTests(SynchronousTestCase):
    """
    A server broker stops reading a peer whose read was costly, for the
    pause its share gives, when the server has other connections.
    """

    def setUp(self) -> None:
        self.cpu = FakeCPU()
        self.patch(fairness, "cpuTime", self.cpu)
        self.patch(fairness, "wallTime", self.cpu.wall)
        self.clock = Clock()
        self.root = Root()
        self.factory = pbext.PBServerFactory(self.root, reactor=self.clock)

    def connect(self) -> PBConnection:
        conn = connectedPair(self.factory, pbext.PBClientFactory(), clock=self.clock)
        self.addCleanup(conn.disconnect)
        return conn

    def send(self, conn: PBConnection, requestID: int, step: float = 0.0) -> None:
        """
        Send a call (no answer wanted) whose read is handled in C{step}
        seconds of (fake) CPU time.
        """
        call = callMessage(requestID, b"echo", [b"tuple", 1], answerRequired=0)
        conn.sendRawToServer(wireMessage(call))
        self.cpu.step = step
        try:
            conn.pump()
        finally:
            self.cpu.step = 0.0

    def heavyCall(self, conn: PBConnection, requestID: int) -> None:
        """
        Send a call whose read is handled in 50 ms of (fake) CPU time.
        """
        self.send(conn, requestID, 0.05)

    def test_pausedWhileOthersWait(self) -> None:
        """
        With another connection open, a peer whose read took 50 ms is not
        read from for 200 ms (20 per cent); its next call is handled once
        that has passed, while the other connection is answered at once.
        """
        costly = self.connect()
        other = self.connect()
        self.heavyCall(costly, 1)
        self.assertEqual(self.root.calls, 1)
        self.assertTrue(costly.serverTransport.readingPaused)
        self.send(costly, 2)
        self.assertEqual(self.root.calls, 1)
        self.send(other, 1)
        self.assertEqual(self.root.calls, 2)
        self.clock.advance(0.199)
        self.assertTrue(costly.serverTransport.readingPaused)
        self.clock.advance(0.002)
        costly.pump()
        self.assertFalse(costly.serverTransport.readingPaused)
        self.assertEqual(self.root.calls, 3)

    def test_aloneNotPaused(self) -> None:
        """
        A peer alone on its server is never paused: nobody would be served
        meanwhile.
        """
        costly = self.connect()
        self.heavyCall(costly, 1)
        self.assertFalse(costly.serverTransport.readingPaused)

    def test_cheapNotPaused(self) -> None:
        """
        Reads handled within L{fairness.HEAVY_READ} pause nobody.
        """
        first = self.connect()
        self.connect()
        self.send(first, 1, fairness.HEAVY_READ / 4)
        self.assertFalse(first.serverTransport.readingPaused)

    def test_classicNotPaused(self) -> None:
        """
        Under the classic limits a costly peer is read as stock PB reads
        it.
        """
        self.factory = pbext.PBServerFactory(
            self.root, reactor=self.clock, policy=classicPolicy()
        )
        costly = self.connect()
        self.connect()
        self.heavyCall(costly, 1)
        self.assertFalse(costly.serverTransport.readingPaused)

    def test_pauseGrows(self) -> None:
        """
        Costly bytes handled while the peer is already paused (bytes read
        before the pause, such as further TLS records of one read) make the
        pause longer by their own share.
        """
        costly = self.connect()
        self.connect()
        self.heavyCall(costly, 1)
        broker = costly.serverBroker
        self.cpu.step = 0.05
        try:
            broker.dataReceived(wireMessage(callMessage(2, b"echo", [b"tuple", 1])))
        finally:
            self.cpu.step = 0.0
        self.assertEqual(self.root.calls, 2)
        self.clock.advance(0.39)
        self.assertTrue(costly.serverTransport.readingPaused)
        self.clock.advance(0.02)
        self.assertFalse(costly.serverTransport.readingPaused)

    def test_cheapReadsSkipTheCPUClock(self) -> None:
        """
        Reads handled in less than L{fairness.HEAVY_READ} of wall-clock
        time, on a busy connection, do not read the CPU clock (a system
        call) each: one reading serves every read started within
        L{fairness.FRESH} of it.
        """
        conn = self.connect()
        self.connect()
        before = self.cpu.cpuReadings
        for requestID in range(1, 21):
            self.send(conn, requestID)
        self.assertEqual(self.root.calls, 20)
        self.assertLessEqual(self.cpu.cpuReadings - before, 1)

    def test_longOnTheWallClockOnly(self) -> None:
        """
        A read that took long on the wall clock but little CPU time (the
        machine was busy with other processes) pauses nobody: its CPU time
        is read, and it was cheap.
        """
        costly = self.connect()
        self.connect()
        self.cpu.busy = 0.05
        self.heavyCall(costly, 1)
        self.assertEqual(self.root.calls, 1)
        self.assertGreater(self.cpu.cpuReadings, 0)
        self.assertFalse(costly.serverTransport.readingPaused)
