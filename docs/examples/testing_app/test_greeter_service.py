# Not run by tests: a trial suite, not a program; tests/test_examples_testing.py
# runs it.  Tests of a PBClientService that stays logged in to the greeter,
# through pbext.testing's in-memory endpoint: reconnection, re-login and
# timeouts, with no sockets and no waiting.  To run them, from this
# directory (docs/examples/testing_app):
#     python -m twisted.trial test_greeter_service
"""
Tests for a L{pbext.PBClientService} logged in to the greeter, through
L{pbext.testing.memoryEndpoint}.
"""

from __future__ import annotations

from greeter import greeterFactory
from twisted.cred.credentials import UsernamePassword
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import pbext
from pbext.testing import memoryEndpoint

ADA = UsernamePassword(b"ada", b"lovelace")


class GreeterServiceTests(SynchronousTestCase):
    """
    A client service that logs in to the greeter and stays logged in.
    """

    def setUp(self) -> None:
        # One clock for the server, the connections and the service.
        self.clock = Clock()
        server = greeterFactory(self.clock, {b"ada": b"lovelace"})
        self.endpoint = memoryEndpoint(server, clock=self.clock)
        self.service = pbext.PBClientService(
            self.endpoint,
            ADA,
            factory=pbext.PBClientFactory(reactor=self.clock),
            clock=self.clock,
            timeout=10,
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def test_logsIn(self) -> None:
        """
        The service connects and logs in; the avatar answers.
        """
        self.endpoint.pump()
        avatar = self.successResultOf(self.service.whenConnected())
        greeting = self.endpoint.connection.resultOf(avatar.callRemote("greet"))
        self.assertEqual(greeting, "Welcome back, ada.")

    def test_logsInAgain(self) -> None:
        """
        When the connection drops, the service connects and logs in again
        after its backoff, and hands out the new avatar.
        """
        self.endpoint.pump()
        first = self.successResultOf(self.service.whenConnected())
        self.endpoint.connection.dropConnection()
        self.assertEqual(self.service.state, "waiting")
        self.endpoint.advance(5)
        second = self.successResultOf(self.service.whenConnected())
        self.assertIsNot(first, second)
        self.assertEqual(len(self.endpoint.connections), 2)

    def test_retriesWhileRefused(self) -> None:
        """
        While the server refuses connections, the service keeps trying,
        backing off, and connects once it is back.
        """
        self.service.stopService()
        self.endpoint.refuse()
        self.service.startService()
        self.endpoint.advance(10)
        self.assertEqual(self.service.state, "waiting")
        self.assertGreater(self.endpoint.attempts, 2)
        self.endpoint.accept()
        self.endpoint.advance(60)
        self.assertEqual(self.service.state, "connected")

    def test_timeout(self) -> None:
        """
        A server that accepts but never answers is given up on after the
        service's timeout, and tried again.
        """
        self.service.stopService()
        self.endpoint.stall()
        self.service.startService()
        self.endpoint.advance(10)
        self.assertEqual(self.service.state, "waiting")
        self.endpoint.accept()
        self.endpoint.advance(5)
        self.assertEqual(self.service.state, "connected")
