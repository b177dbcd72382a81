"""
Tests for L{pbext._timers}: the timers of one broker's connection, on a
L{task.Clock}.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from pbext._timers import ConnectionTimers


class ConnectionTimersTests(SynchronousTestCase):
    """
    L{ConnectionTimers} runs the named timeouts of one connection and asks
    its owner to drop the connection when one expires.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.expired: list[tuple[str, str]] = []
        self.timers = ConnectionTimers(self.clock, None)

    def expire(self, kind: str, message: str) -> None:
        self.expired.append((kind, message))

    def test_clockFromTransport(self) -> None:
        """
        Without a clock of its own, the timers run on the reactor of the
        protocol's transport, found once.
        """
        protocol = Protocol()
        protocol.makeConnection(StringTransport())
        protocol.transport.reactor = self.clock  # type: ignore[union-attr]
        timers = ConnectionTimers(None, protocol)
        self.assertIs(timers.clock(), self.clock)
        protocol.transport.reactor = None  # type: ignore[union-attr]
        self.assertIs(timers.clock(), self.clock)

    def test_handshakeTimeout(self) -> None:
        """
        The handshake timeout expires with its kind and a message naming it,
        unless it is cancelled first.
        """
        self.timers.start(5, None, self.expire)
        self.clock.advance(4.9)
        self.assertEqual(self.expired, [])
        self.clock.advance(0.1)
        self.assertEqual(
            self.expired,
            [("handshakeTimeout", "handshakeTimeout reached; closing the connection")],
        )
        self.assertFalse(self.timers.running("handshakeTimeout"))

    def test_handshakeCancelled(self) -> None:
        """
        A cancelled timer never fires.
        """
        self.timers.start(5, None, self.expire)
        self.timers.cancel("handshakeTimeout")
        self.clock.advance(10)
        self.assertEqual(self.expired, [])

    def test_idleTimeoutWaitsForSilence(self) -> None:
        """
        The idle timeout expires only after C{idleTimeout} seconds with no
        bytes heard; bytes heard only record the time, and the timer waits
        for the rest.
        """
        self.timers.start(None, 10, self.expire)
        self.clock.advance(6)
        self.timers.heard()
        self.clock.advance(4)
        self.assertEqual(self.expired, [])
        self.assertEqual(self.timers.lastHeard, 6)
        self.clock.advance(5.9)
        self.assertEqual(self.expired, [])
        self.clock.advance(0.1)
        self.assertEqual([kind for kind, _ in self.expired], ["idleTimeout"])

    def test_messageTimeout(self) -> None:
        """
        The message timeout runs while a message is partly received, is
        not restarted by more of it, and stops when it is complete.
        """
        self.timers.start(None, None, self.expire)
        self.timers.messageProgress(True, 3)
        self.clock.advance(2)
        self.timers.messageProgress(True, 3)
        self.clock.advance(1)
        self.assertEqual([kind for kind, _ in self.expired], ["messageTimeout"])
        self.expired.clear()
        self.timers.messageProgress(True, 3)
        self.timers.messageProgress(False, 3)
        self.clock.advance(10)
        self.assertEqual(self.expired, [])

    def test_stopCancelsAll(self) -> None:
        """
        L{ConnectionTimers.stop} cancels every timer and the keepalive.
        """
        self.timers.start(1, 2, self.expire)
        self.timers.set("backpressure", 0.5, lambda: self.expire("x", "y"))
        self.timers.startKeepalive(
            object(), 1, 1, lambda: None, lambda: self.expire("k", "k")
        )
        self.timers.stop()
        self.assertIsNone(self.timers.keepalive)
        self.clock.advance(10)
        self.assertEqual(self.expired, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
