"""
End-to-end tests: a real C{twistd pbserver} (or C{twistd -ny} of the .tac
example) in a subprocess on 127.0.0.1, called by stock L{twisted.spread.pb}
clients and by pbext clients.
"""

from __future__ import annotations

import os

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, endpoints, reactor
from twisted.spread import pb
from twisted.trial.unittest import TestCase

import pbext
from tests._process import LOOPBACK, startPBServer, startTwistd

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "examples")


class StockClient:
    """
    A stock L{pb.PBClientFactory} connected to a local port, disconnected at
    cleanup.
    """

    def __init__(
        self, test: TestCase, port: int, factory: pb.PBClientFactory | None = None
    ):
        self.factory = factory if factory is not None else pb.PBClientFactory()
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
        self.connected = endpoint.connect(self.factory)
        test.addCleanup(self.disconnect)

    def disconnect(self) -> None:
        self.factory.disconnect()


class PBServerProcessTests(TestCase):
    """
    A real C{twistd pbserver} subprocess serves stock PB clients.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_demoRootEcho(self):
        """
        With no options, a stock client gets the demo root and C{echo},
        C{ping} and C{version} answer.
        """
        proc = yield startPBServer(self)
        client = StockClient(self, proc.port)
        root = yield client.factory.getRootObject()
        value = [1, "two", b"three", {"four": 4.0}, (None, True)]
        self.assertEqual((yield root.callRemote("echo", value)), value)
        self.assertEqual((yield root.callRemote("ping")), "pong")
        self.assertEqual((yield root.callRemote("version")), pbext.__version__.public())

    @defer.inlineCallbacks
    def test_demoRealmLogin(self):
        """
        With C{--auth memory:alice:secret}, a stock client's classic login
        succeeds and the avatar's C{whoami} answers C{"alice"}.
        """
        proc = yield startPBServer(self, "--auth", "memory:alice:secret")
        client = StockClient(self, proc.port)
        avatar = yield client.factory.login(UsernamePassword(b"alice", b"secret"))
        self.assertEqual((yield avatar.callRemote("whoami")), "alice")
        self.assertEqual((yield avatar.callRemote("echo", "hi")), "hi")

    @defer.inlineCallbacks
    def test_demoRealmWrongPassword(self):
        """
        A wrong password fails the stock client's login with
        L{UnauthorizedLogin}.
        """
        proc = yield startPBServer(self, "--auth", "memory:alice:secret")
        client = StockClient(self, proc.port)
        login = client.factory.login(UsernamePassword(b"alice", b"wrong"))
        (failure,) = yield login.addCallbacks(
            lambda avatar: self.fail(f"wrong password logged in: {avatar!r}"),
            lambda f: [f],
        )
        # Remote errors arrive as CopiedFailure, whose type is the name.
        self.assertTrue(failure.check(UnauthorizedLogin), failure)

    @defer.inlineCallbacks
    def test_pbextClient(self):
        """
        pbext's own client factory works against the server too.
        """
        proc = yield startPBServer(self)
        client = StockClient(self, proc.port, pbext.PBClientFactory())
        root = yield client.factory.getRootObject()
        self.assertEqual((yield root.callRemote("echo", 42)), 42)

    @defer.inlineCallbacks
    def test_tacExample(self):
        """
        C{twistd -ny docs/examples/pbserver.tac} serves the same demo root.
        """
        proc = yield startTwistd(
            self,
            ["-y", os.path.join(EXAMPLES, "pbserver.tac")],
            env={"PBEXT_LISTEN": LOOPBACK},
        )
        client = StockClient(self, proc.port)
        root = yield client.factory.getRootObject()
        self.assertEqual((yield root.callRemote("echo", "tac")), "tac")
