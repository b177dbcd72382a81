# Not run by tests: a trial suite, not a program; tests/test_examples_testing.py
# runs it.  Tests for greeter.py written with pbext.testing: no sockets, no
# reactor.  To run them, from this directory (docs/examples/testing_app):
#     python -m twisted.trial test_greeter
"""
Tests for the greeter, through a client and a server connected in memory.
"""

from __future__ import annotations

from greeter import UNAVAILABLE, GreeterClient, greeterFactory
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import pbext
from pbext.testing import connectedPair


class GreeterTests(SynchronousTestCase):
    """
    Tests for the greeter's root object and for L{GreeterClient}.
    """

    def setUp(self) -> None:
        # One clock drives both the server's timers and the connection.
        self.clock = Clock()
        self.conn = connectedPair(
            greeterFactory(self.clock), pbext.PBClientFactory(), clock=self.clock
        )
        self.addCleanup(self.conn.disconnect)
        self.root = self.conn.rootObject()

    def test_greet(self) -> None:
        """
        The greeter greets by name.
        """
        greeting = self.conn.resultOf(self.root.callRemote("greet", "Ada"))
        self.assertEqual(greeting, "Hello, Ada!")

    def test_greetLater(self) -> None:
        """
        A delayed greeting arrives once its time has come, not before.
        """
        d = self.root.callRemote("greetLater", "Ada", 30)
        self.conn.advance(29)
        self.assertNoResult(d)
        self.conn.advance(1)
        self.assertEqual(self.successResultOf(d), "Hello, Ada!")

    def test_slowNetwork(self) -> None:
        """
        Over a slow network, the client's greeting arrives after the
        latency.
        """
        self.conn.serverToClient.delay(2)
        d = ensureDeferred(GreeterClient(self.root).greet("Ada"))
        self.conn.pump()
        self.assertNoResult(d)
        self.conn.advance(2)
        self.assertEqual(self.successResultOf(d), "Hello, Ada!")

    def test_connectionLostDuringCall(self) -> None:
        """
        If the connection is lost while a greeting is on its way, the
        client answers politely instead of failing.
        """
        self.conn.clientToServer.hold()
        d = ensureDeferred(GreeterClient(self.root).greet("Ada"))
        self.conn.pump()
        self.conn.dropConnection()
        self.assertEqual(self.successResultOf(d), UNAVAILABLE)

    def test_connectionLostBeforeCall(self) -> None:
        """
        Once the connection is gone, the client answers politely too.
        """
        self.conn.disconnect()
        greeting = self.conn.resultOf(GreeterClient(self.root).greet("Ada"))
        self.assertEqual(greeting, UNAVAILABLE)


class LoginTests(SynchronousTestCase):
    """
    Tests for logging in to the greeter.
    """

    def setUp(self) -> None:
        self.conn = connectedPair(
            greeterFactory(Clock(), {b"ada": b"lovelace"}), pbext.PBClientFactory()
        )
        self.addCleanup(self.conn.disconnect)

    def test_welcome(self) -> None:
        """
        A member who logs in is welcomed back by name.
        """
        member = self.conn.login(UsernamePassword(b"ada", b"lovelace"))
        greeting = self.conn.resultOf(member.callRemote("greet"))
        self.assertEqual(greeting, "Welcome back, ada.")

    def test_wrongPassword(self) -> None:
        """
        A wrong password is refused with L{UnauthorizedLogin}.
        """
        login = self.conn.clientFactory.login(UsernamePassword(b"ada", b"babbage"))
        failure = self.conn.failureOf(login)
        self.assertTrue(failure.check(UnauthorizedLogin))
        # Classic PB logs, on the server, every failure it sends that is not
        # a pb.Error; trial fails a test that leaves logged errors behind.
        self.flushLoggedErrors(UnauthorizedLogin)
