"""
Tests for L{pbext.login}: pbext's logins, negotiation, throttling and audit
events, with clients and servers connected in memory and a fake clock.
"""

from __future__ import annotations

from hashlib import md5
from typing import Any

from twisted.cred import checkers, credentials
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import alsoProvides

import pbext
from pbext import demo, login
from pbext.login import LoginThrottle, LoginThrottled

SERVER = IPv4Address("TCP", "192.0.2.1", 8787)


def hashPassword(username: bytes, password: bytes, stored: bytes) -> bytes:
    """
    The hash function of the hashed-password file the tests use: salted
    SHA-256, as C{salt$hexdigest}.
    """
    salt = stored.split(b"$", 1)[0]
    from hashlib import sha256

    return salt + b"$" + sha256(salt + password).hexdigest().encode("ascii")


class Connection:
    """
    A client factory connected in memory to a server factory.
    """

    def __init__(
        self,
        serverFactory: pb.PBServerFactory,
        clientFactory: pb.PBClientFactory,
        host: str = "198.51.100.7",
        tls: bool = False,
    ) -> None:
        self.peer = IPv4Address("TCP", host, 40000)
        self.server = serverFactory.buildProtocol(self.peer)
        self.client = clientFactory.buildProtocol(SERVER)
        self.serverTransport = iosim.FakeTransport(
            self.server, isServer=True, hostAddress=SERVER, peerAddress=self.peer
        )
        self.clientTransport = iosim.FakeTransport(
            self.client, isServer=False, hostAddress=self.peer, peerAddress=SERVER
        )
        if tls:
            alsoProvides(self.serverTransport, ISSLTransport)
            alsoProvides(self.clientTransport, ISSLTransport)
        self.pump = iosim.connect(
            self.server,
            self.serverTransport,
            self.client,
            self.clientTransport,
            greet=True,
        )
        self.clientFactory = clientFactory

    def flush(self) -> None:
        self.pump.flush()

    def login(self, creds: object, mind: object = None) -> Any:
        """
        Log in with C{creds} and pump until nothing moves.
        """
        d = self.clientFactory.login(creds, mind)
        self.flush()
        return d

    def root(self) -> pb.RemoteReference:
        d = self.clientFactory.getRootObject()
        self.flush()
        return d.result  # type: ignore[attr-defined,no-any-return]

    def call(self, ref: pb.RemoteReference, method: str, *args: object) -> Any:
        d = ref.callRemote(method, *args)
        self.flush()
        return d

    def disconnect(self) -> None:
        self.clientTransport.loseConnection()
        self.flush()


class LoginTestsMixin:
    """
    Builds in-memory servers and clients on a fake clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.passwords = checkers.InMemoryUsernamePasswordDatabaseDontUse(
            alice=b"wonderland", bob=b"builder"
        )

    def serverFactory(
        self, *checkerList: object, **options: Any
    ) -> pbext.PBServerFactory:
        portal = Portal(demo.DemoRealm(), checkerList or [self.passwords])
        options.setdefault("reactor", self.clock)
        if "loginThrottle" not in options:
            options["loginThrottle"] = LoginThrottle(self.clock)
        return pbext.PBServerFactory(portal, **options)

    def clientFactory(self, **options: Any) -> pbext.PBClientFactory:
        options.setdefault("reactor", self.clock)
        return pbext.PBClientFactory(**options)

    def connect(
        self,
        server: pb.PBServerFactory | None = None,
        client: pb.PBClientFactory | None = None,
        **kwargs: Any,
    ) -> Connection:
        return Connection(
            server if server is not None else self.serverFactory(),
            client if client is not None else self.clientFactory(),
            **kwargs,
        )

    def loggedIn(self, d: Any) -> Any:
        """
        The avatar reference C{d} fired with.
        """
        return self.successResultOf(d)  # type: ignore[attr-defined]

    def whoami(self, conn: Connection, avatar: pb.RemoteReference) -> str:
        return self.successResultOf(conn.call(avatar, "whoami"))  # type: ignore[attr-defined,no-any-return]

    def loginFailure(self, d: Any, *types: type[BaseException]) -> Failure:
        failure = self.failureResultOf(d)  # type: ignore[attr-defined]
        self.assertTrue(failure.check(*types), failure)  # type: ignore[attr-defined]
        # The server's broker logs the error it sends, as classic PB does.
        self.flushLoggedErrors(*types)  # type: ignore[attr-defined]
        return failure  # type: ignore[no-any-return]


def answers(d: Any) -> list[object]:
    """
    A list that gets C{d}'s result once it has one (a Deferred chained to
    another one is C{called} before it has a result).
    """
    results: list[object] = []

    def record(result: object) -> object:
        results.append(result)
        return result

    d.addBoth(record)
    return results


def chosenMethods(events: list[dict[str, Any]]) -> list[str]:
    return [e["method"] for e in events if e.get("pbextEvent") == "loginMethodChosen"]


def audit(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("pbextEvent") == kind]


class ClassicLoginTests(LoginTestsMixin, SynchronousTestCase):
    """
    Stock PB clients still log in with the classic MD5 challenge.
    """

    def test_stockClient(self) -> None:
        """
        A stock L{pb.PBClientFactory} logs in to a pbext server with the
        classic challenge, and the avatar answers.
        """
        conn = self.connect(client=pb.PBClientFactory())
        avatar = self.loggedIn(
            conn.login(credentials.UsernamePassword(b"alice", b"wonderland"))
        )
        self.assertEqual(self.whoami(conn, avatar), "alice")

    def test_stockClientWrongPassword(self) -> None:
        """
        A wrong password fails a stock client's login with
        L{UnauthorizedLogin}.
        """
        conn = self.connect(client=pb.PBClientFactory())
        self.loginFailure(
            conn.login(credentials.UsernamePassword(b"alice", b"guess")),
            UnauthorizedLogin,
        )

    def test_challengeFromOSRandom(self) -> None:
        """
        The classic challenge is 16 bytes from the operating system's
        random source (L{os.urandom}), not from L{random}.
        """
        asked = []

        def fakeRandom(n: int) -> bytes:
            asked.append(n)
            return b"\x01" * n

        self.patch(login, "_randomBytes", fakeRandom)
        conn = self.connect(client=pb.PBClientFactory())
        root = conn.root()
        challenge, challenger = self.successResultOf(conn.call(root, "login", b"alice"))
        self.assertEqual((challenge, asked), (b"\x01" * 16, [16]))

    def test_challengeAnsweredOnce(self) -> None:
        """
        A classic challenge takes one answer: a second C{respond} on the same
        challenger is refused, even with the right response.
        """
        conn = self.connect(client=pb.PBClientFactory())
        root = conn.root()
        challenge, challenger = self.successResultOf(conn.call(root, "login", b"alice"))
        wrong = conn.call(challenger, "respond", b"x" * 16, None)
        self.loginFailure(wrong, UnauthorizedLogin)
        right = conn.call(
            challenger, "respond", pb.respond(challenge, b"wonderland"), None
        )
        self.loginFailure(right, UnauthorizedLogin)

    def test_textPasswords(self) -> None:
        """
        A checker that keeps passwords as C{str} works with the classic
        login (the C{memory:} checker of strcred does).
        """
        textChecker = checkers.InMemoryUsernamePasswordDatabaseDontUse()
        textChecker.users = {b"alice": "wonderland"}
        conn = self.connect(self.serverFactory(textChecker), pb.PBClientFactory())
        avatar = self.loggedIn(
            conn.login(credentials.UsernamePassword(b"alice", b"wonderland"))
        )
        self.assertEqual(self.whoami(conn, avatar), "alice")

    def test_classicLoginOff(self) -> None:
        """
        With C{classicLogin=False}, the classic challenge is refused, so a
        stock client cannot log in; a pbext client still can.
        """
        server = self.serverFactory(classicLogin=False)
        conn = self.connect(server, pb.PBClientFactory())
        self.loginFailure(
            conn.login(credentials.UsernamePassword(b"alice", b"wonderland")),
            UnauthorizedLogin,
        )
        conn = self.connect(server)
        avatar = self.loggedIn(
            conn.login(credentials.UsernamePassword(b"alice", b"wonderland"))
        )
        self.assertEqual(self.whoami(conn, avatar), "alice")

    def test_pbextClientStockServer(self) -> None:
        """
        A pbext client logs in to a stock L{pb.PBServerFactory} with the
        classic login, and says so in its log.
        """
        stock = pb.PBServerFactory(Portal(demo.DemoRealm(), [self.passwords]))
        with capturedLogs() as events:
            conn = self.connect(stock)
            avatar = self.loggedIn(
                conn.login(credentials.UsernamePassword(b"alice", b"wonderland"))
            )
        self.assertEqual(self.whoami(conn, avatar), "alice")
        self.assertEqual(chosenMethods(events), ["classic"])
        self.assertFalse(audit(events, "loginMethodChosen")[0]["pbextPeer"])

    def test_pbextClientClassicOff(self) -> None:
        """
        A pbext client with C{classicLogin=False} refuses to fall back to
        the classic login of a stock server.
        """
        stock = pb.PBServerFactory(Portal(demo.DemoRealm(), [self.passwords]))
        conn = self.connect(stock, self.clientFactory(classicLogin=False))
        self.loginFailure(
            conn.login(credentials.UsernamePassword(b"alice", b"wonderland")),
            UnauthorizedLogin,
        )

    def test_buildbotHook(self) -> None:
        """
        The classic path goes through the factory's C{_cbSendUsername}
        hook, which Buildbot overrides.
        """
        calls = []

        class HookedFactory(pbext.PBClientFactory):
            def _cbSendUsername(self, root, username, password, client):  # type: ignore[no-untyped-def]
                calls.append(username)
                return super()._cbSendUsername(root, username, password, client)

        stock = pb.PBServerFactory(Portal(demo.DemoRealm(), [self.passwords]))
        conn = self.connect(stock, HookedFactory(reactor=self.clock))
        self.loggedIn(conn.login(credentials.UsernamePassword("alice", "wonderland")))
        self.assertEqual(calls, [b"alice"])


class NegotiationTests(LoginTestsMixin, SynchronousTestCase):
    """
    A pbext client asks a pbext server which logins it accepts, and picks
    the strongest both ends allow.
    """

    def methods(self, conn: Connection) -> list[str]:
        return self.successResultOf(conn.call(conn.root(), "loginMethods"))  # type: ignore[no-any-return]

    def test_pbextPeerSeen(self) -> None:
        """
        A pbext client knows a pbext server from its dialect offer.
        """
        conn = self.connect()
        conn.root()
        self.assertTrue(login.peerIsPbext(conn.client))

    def test_methodsPlainTransport(self) -> None:
        """
        On a transport without TLS, a server whose checker holds passwords
        offers the nonce and classic logins, not the plaintext one.
        """
        self.assertEqual(self.methods(self.connect()), ["nonce", "classic"])

    def test_methodsTLS(self) -> None:
        """
        Over TLS, the plaintext login is offered first.
        """
        self.assertEqual(
            self.methods(self.connect(tls=True)), ["plaintext", "nonce", "classic"]
        )

    def test_methodsFollowCheckers(self) -> None:
        """
        The logins offered follow the portal's checkers: a checker of
        plaintext passwords only is served by the plaintext login; an
        anonymous checker adds the anonymous login; C{classicLogin=False}
        removes the classic one.
        """
        hashed = checkers.FilePasswordDB(self.mktemp(), hash=hashPassword)
        server = self.serverFactory(hashed, checkers.AllowAnonymousAccess())
        self.assertEqual(self.methods(self.connect(server)), ["anonymous"])
        self.assertEqual(
            self.methods(self.connect(server, tls=True)), ["plaintext", "anonymous"]
        )
        server = self.serverFactory(self.passwords, classicLogin=False)
        self.assertEqual(self.methods(self.connect(server)), ["nonce"])

    def test_nonceByDefault(self) -> None:
        """
        Without TLS, a pbext client logs in to a pbext server with the nonce
        challenge, and logs its choice.
        """
        with capturedLogs() as events:
            conn = self.connect()
            avatar = self.loggedIn(
                conn.login(credentials.UsernamePassword(b"bob", b"builder"))
            )
        self.assertEqual(self.whoami(conn, avatar), "bob")
        self.assertEqual(chosenMethods(events), ["nonce"])
        (chosen,) = audit(events, "loginMethodChosen")
        self.assertEqual(chosen["offered"], "nonce, classic")
        self.assertEqual([e["method"] for e in audit(events, "login")], ["nonce"])

    def test_plaintextOverTLS(self) -> None:
        """
        Over TLS, a pbext client sends the password itself, so a checker of
        hashed passwords (which cannot serve a challenge) logs it in.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"alice:" + hashPassword(b"alice", b"wonderland", b"s4lt$") + b"\n")
        hashed = checkers.FilePasswordDB(path, hash=hashPassword)
        with capturedLogs() as events:
            conn = self.connect(self.serverFactory(hashed), tls=True)
            avatar = self.loggedIn(
                conn.login(credentials.UsernamePassword(b"alice", b"wonderland"))
            )
        self.assertEqual(self.whoami(conn, avatar), "alice")
        self.assertEqual(chosenMethods(events), ["plaintext"])

    def test_plaintextRefusedWithoutTLS(self) -> None:
        """
        Without TLS the server refuses the plaintext login, even when a
        client asks for it directly.
        """
        conn = self.connect()
        d = conn.call(conn.root(), "loginWithPassword", b"alice", b"wonderland", None)
        self.loginFailure(d, UnauthorizedLogin)

    def test_clientKeepsPasswordWithoutTLS(self) -> None:
        """
        A pbext client never sends the password itself on a connection
        without TLS, even when the server offers the plaintext login; the
        error says how to proceed.
        """
        hashed = checkers.FilePasswordDB(self.mktemp(), hash=hashPassword)
        server = self.serverFactory(hashed, allowPlaintextLogin=True)
        conn = self.connect(server)
        self.assertEqual(self.methods(conn), ["plaintext"])
        sent: list[object] = []
        self.patch(
            login._PortalWrapper,
            "remote_loginWithPassword",
            lambda *a: sent.append(a),
        )
        failure = self.loginFailure(
            conn.login(credentials.UsernamePassword(b"alice", b"wonderland")),
            UnauthorizedLogin,
        )
        self.assertEqual(sent, [])
        self.assertIn("allowPlaintextLogin", failure.getErrorMessage())

    def test_allowPlaintextLogin(self) -> None:
        """
        When both the server (C{allowPlaintextLogin=True}, for a trusted
        network) and the client opt in, the plaintext login works without
        TLS.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"bob:" + hashPassword(b"bob", b"builder", b"pepper$") + b"\n")
        hashed = checkers.FilePasswordDB(path, hash=hashPassword)
        server = self.serverFactory(hashed, allowPlaintextLogin=True)
        conn = self.connect(server, self.clientFactory(allowPlaintextLogin=True))
        avatar = self.loggedIn(
            conn.login(credentials.UsernamePassword(b"bob", b"builder"))
        )
        self.assertEqual(self.whoami(conn, avatar), "bob")

    def test_noCommonMethod(self) -> None:
        """
        When the client can use none of the logins the server offers, the
        login fails saying what the server offered.
        """
        hashed = checkers.FilePasswordDB(self.mktemp(), hash=hashPassword)
        conn = self.connect(self.serverFactory(hashed))
        failure = self.loginFailure(
            conn.login(credentials.UsernamePassword(b"bob", b"builder")),
            UnauthorizedLogin,
        )
        self.assertIn("the server offers none", failure.getErrorMessage())

    def test_rootWithoutLogin(self) -> None:
        """
        A pbext client logging in to a pbext server whose root is not a
        portal falls back to the classic login call, which that root may
        implement itself.
        """

        called = []

        class OwnLogin(pb.Root):
            def remote_login(self, username: bytes) -> bytes:
                called.append(username)
                return b"own login of " + username

        server = pbext.PBServerFactory(OwnLogin(), reactor=self.clock)
        conn = self.connect(server)
        d = conn.login(credentials.UsernamePassword(b"alice", b"wonderland"))
        # The classic path unpacks (challenge, challenger): this root's
        # answer is not that, so the login fails, but only after calling it.
        self.failureResultOf(d)
        self.flushLoggedErrors()
        self.assertEqual(called, [b"alice"])

    def test_anonymous(self) -> None:
        """
        With an anonymous checker, an anonymous login gets an avatar.
        """
        server = self.serverFactory(checkers.AllowAnonymousAccess())
        conn = self.connect(server)
        avatar = self.loggedIn(conn.login(credentials.Anonymous()))
        self.assertEqual(self.whoami(conn, avatar), "anonymous")

    def test_anonymousNotConfigured(self) -> None:
        """
        Without an anonymous checker, anonymous logins are refused.
        """
        conn = self.connect()
        self.loginFailure(conn.login(credentials.Anonymous()), UnhandledCredentials)

    def test_certificateLoginNeedsTLS(self) -> None:
        """
        A certificate login on a connection without a verified client
        certificate is refused, and not offered.
        """
        server = self.serverFactory(login.ClientCertificateChecker())
        conn = self.connect(server, tls=True)
        self.assertEqual(self.methods(conn), [])
        self.loginFailure(conn.login(login.CertificateLogin()), UnauthorizedLogin)


class NonceLoginTests(LoginTestsMixin, SynchronousTestCase):
    """
    The nonce challenge: the client's answer covers a nonce of its own.
    """

    def challenger(self, username: bytes, password: bytes, clientNonce: bytes) -> Any:
        conn = self.connect()
        wrapper = login._PortalWrapper(conn.server.factory.root.portal, conn.server)
        serverNonce, challenger = wrapper.remote_loginWithNonce(username, clientNonce)
        challenger.response = login.nonceResponse(
            password, username, serverNonce, clientNonce
        )
        return challenger

    def test_responseChecks(self) -> None:
        """
        The response made by L{login.nonceResponse} checks against the
        password and against its MD5 digest.
        """
        challenger = self.challenger(b"alice", b"wonderland", b"c" * 32)
        self.assertTrue(challenger.checkPassword(b"wonderland"))
        self.assertTrue(challenger.checkPassword("wonderland"))
        self.assertTrue(challenger.checkMD5Password(md5(b"wonderland").digest()))
        self.assertFalse(challenger.checkPassword(b"wonderlan"))

    def test_responseCoversClientNonce(self) -> None:
        """
        A response computed for another client nonce (or another username)
        does not check: the client's nonce is part of what it answers, so a
        server cannot pick everything the client hashes.
        """
        challenger = self.challenger(b"alice", b"wonderland", b"c" * 32)
        challenger.response = login.nonceResponse(
            b"wonderland", b"alice", challenger.serverNonce, b"d" * 32
        )
        self.assertFalse(challenger.checkPassword(b"wonderland"))
        challenger.response = login.nonceResponse(
            b"wonderland", b"alicf", challenger.serverNonce, b"c" * 32
        )
        self.assertFalse(challenger.checkPassword(b"wonderland"))

    def test_clientNonceFresh(self) -> None:
        """
        The client sends a fresh 32-byte nonce from L{os.urandom} with
        each nonce login.
        """
        seen: list[bytes] = []
        original = login._PortalWrapper.remote_loginWithNonce

        def spy(self: login._PortalWrapper, username: object, nonce: bytes) -> Any:
            seen.append(nonce)
            return original(self, username, nonce)

        self.patch(login._PortalWrapper, "remote_loginWithNonce", spy)
        for _ in range(2):
            conn = self.connect()
            self.loggedIn(conn.login(credentials.UsernamePassword(b"bob", b"builder")))
        self.assertEqual([len(n) for n in seen], [32, 32])
        self.assertNotEqual(seen[0], seen[1])

    def test_badClientNonce(self) -> None:
        """
        A client nonce that is not 32 bytes is refused.
        """
        conn = self.connect()
        d = conn.call(conn.root(), "loginWithNonce", b"bob", b"short")
        self.loginFailure(d, UnauthorizedLogin)

    def test_wrongPassword(self) -> None:
        """
        A wrong password fails the nonce login with L{UnauthorizedLogin}.
        """
        conn = self.connect()
        self.loginFailure(
            conn.login(credentials.UsernamePassword(b"bob", b"fixer")),
            UnauthorizedLogin,
        )

    def test_answeredOnce(self) -> None:
        """
        A nonce challenger takes one answer.
        """
        conn = self.connect()
        root = conn.root()
        serverNonce, challenger = self.successResultOf(
            conn.call(root, "loginWithNonce", b"bob", b"n" * 32)
        )
        self.loginFailure(
            conn.call(challenger, "respond", b"?", None), UnauthorizedLogin
        )
        right = login.nonceResponse(b"builder", b"bob", serverNonce, b"n" * 32)
        self.loginFailure(
            conn.call(challenger, "respond", right, None), UnauthorizedLogin
        )


class LoginThrottleTests(SynchronousTestCase):
    """
    Tests for L{LoginThrottle}'s timing, on a fake clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.throttle = LoginThrottle(self.clock)

    def fail(self, *keys: object, times: int = 1) -> None:  # type: ignore[override]
        for _ in range(times):
            self.throttle.failed(keys)

    def test_freeFailures(self) -> None:
        """
        The first three failures of a key cost nothing.
        """
        self.fail("a", times=2)
        self.assertEqual(self.throttle.reserve(["a"]), 0.0)
        self.fail("a")
        self.assertEqual(self.throttle.reserve(["a"]), 1.0)

    def test_delayDoubles(self) -> None:
        """
        From the third failure on, the delay before the next check starts at
        one second and doubles with each failure, up to 30 seconds.
        """
        delays = [self.throttle.delayAfter(n) for n in range(2, 11)]
        self.assertEqual(delays, [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0])

    def test_refusedAfterTwentyFailures(self) -> None:
        """
        After 20 failures a key is refused for 15 minutes; then one attempt
        is checked again, and one more failure refuses it again.
        """
        self.fail("a", times=20)
        error = self.assertRaises(LoginThrottled, self.throttle.reserve, ["a"])
        self.assertEqual(error.retryAfter, 900.0)
        self.clock.advance(900)
        self.assertEqual(self.throttle.reserve(["a"]), 0.0)
        self.fail("a")
        self.assertRaises(LoginThrottled, self.throttle.reserve, ["a"])

    def test_successForgets(self) -> None:
        """
        A success forgets the failures of its keys.
        """
        self.fail("a", "b", times=10)
        self.throttle.succeeded(["a"])
        self.assertEqual(self.throttle.failures("a"), 0)
        self.assertEqual(self.throttle.failures("b"), 10)
        self.assertEqual(self.throttle.reserve(["a"]), 0.0)

    def test_otherKeysUnaffected(self) -> None:
        """
        Failures of one key do not slow down another.
        """
        self.fail("a", times=10)
        self.assertEqual(self.throttle.reserve(["b"]), 0.0)

    def test_slowestKeyWins(self) -> None:
        """
        An attempt with several keys waits for the slowest of them.
        """
        self.fail("a", times=4)
        self.fail("b", times=5)
        self.assertEqual(self.throttle.reserve(["a", "b"]), 4.0)

    def test_parallelAttemptsQueue(self) -> None:
        """
        Attempts arriving together wait one behind the other, and one that
        would wait longer than the longest delay is refused, so opening
        more connections does not raise the rate.
        """
        self.fail("a", times=5)
        waits = []
        for _ in range(10):
            try:
                waits.append(self.throttle.reserve(["a"]))
            except LoginThrottled:
                waits.append(-1.0)
        self.assertEqual(
            waits, [4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 28.0, -1.0, -1.0, -1.0]
        )

    def test_forgetAfter(self) -> None:
        """
        A key that has not failed for an hour is forgotten.
        """
        self.fail("a", times=10)
        self.clock.advance(3599)
        self.assertEqual(self.throttle.failures("a"), 10)
        self.clock.advance(1)
        self.assertEqual(self.throttle.failures("a"), 0)

    def test_boundedMemory(self) -> None:
        """
        At most C{maxRecords} keys are remembered; the least recently
        failed are dropped first.
        """
        throttle = LoginThrottle(self.clock, maxRecords=3)
        for key in "abcd":
            throttle.failed([key])
        self.assertEqual([throttle.failures(k) for k in "abcd"], [0, 1, 1, 1])

    def test_waitRechecks(self) -> None:
        """
        L{LoginThrottle.wait} fires after the delay, on the clock, but fails
        with L{LoginThrottled} if the key was refused meanwhile.
        """
        self.fail("a", times=3)
        d = self.throttle.wait(["a"], self.throttle.reserve(["a"]))
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(d))
        d = self.throttle.wait(["a"], 2.0)
        self.fail("a", times=20)
        self.clock.advance(2)
        self.failureResultOf(d, LoginThrottled)

    def test_badSettings(self) -> None:
        """
        Settings that make no sense are a L{ValueError}.
        """
        for kwargs in (
            {"freeFailures": -1},
            {"initialDelay": 10.0, "maxDelay": 1.0},
            {"refuseAfter": 0},
            {"forgetAfter": 10.0},
            {"maxRecords": 0},
        ):
            self.assertRaises(ValueError, LoginThrottle, self.clock, **kwargs)

    def test_addressKey(self) -> None:
        """
        Addresses are throttled by IP; IPv6 by /64 network, IPv4-mapped IPv6
        as IPv4; UNIX socket peers share one key.
        """
        self.assertEqual(
            login.addressKey(IPv4Address("TCP", "203.0.113.9", 1)), "203.0.113.9"
        )
        self.assertEqual(
            login.addressKey(IPv6Address("TCP", "2001:db8:1:2:3:4:5:6", 1)),
            "2001:db8:1:2::/64",
        )
        self.assertEqual(
            login.addressKey(IPv6Address("TCP", "::ffff:192.0.2.5", 1)), "192.0.2.5"
        )
        self.assertEqual(login.addressKey(UNIXAddress(b"/tmp/sock")), "unix")
        self.assertEqual(login.addressKey(UNIXAddress(None)), "unix")


class ThrottledLoginTests(LoginTestsMixin, SynchronousTestCase):
    """
    Failed logins slow down per address and username, through the real
    login objects, on a fake clock.
    """

    def test_fiftyWrongPasswords(self) -> None:
        """
        Fifty wrong passwords in a row from one address get the documented
        rate: three at once, then 1, 2, 4, 8, 16 and 30 seconds apart, and
        after twenty failures immediate refusal for 15 minutes.  Meanwhile
        another address logs in at once.
        """
        server = self.serverFactory()
        attacker = self.connect(server, host="203.0.113.66")
        answeredAt = []
        refused = 0
        for _ in range(50):
            d = attacker.login(credentials.UsernamePassword(b"alice", b"guess"))
            done = answers(d)
            for _step in range(64):
                if done:
                    break
                self.clock.advance(0.5)
                attacker.flush()
            failure = self.failureResultOf(d, UnauthorizedLogin)
            if failure.check(LoginThrottled):
                refused += 1
            else:
                answeredAt.append(self.clock.seconds())
        self.flushLoggedErrors(UnauthorizedLogin)
        gaps = [b - a for a, b in zip(answeredAt, answeredAt[1:])]
        self.assertEqual(len(answeredAt), 20)
        self.assertEqual(gaps[:8], [0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0])
        self.assertEqual(set(gaps[8:]), {30.0})
        self.assertEqual(refused, 30)

        bystander = self.connect(server, host="198.51.100.20")
        avatar = self.loggedIn(
            bystander.login(credentials.UsernamePassword(b"bob", b"builder"))
        )
        self.assertEqual(self.whoami(bystander, avatar), "bob")

    def test_usernameThrottledFromEverywhere(self) -> None:
        """
        Failures for one username slow down attempts for it from other
        addresses too; other usernames from those addresses are not slowed.
        """
        server = self.serverFactory()
        for n in range(3):
            conn = self.connect(server, host=f"203.0.113.{n}")
            self.loginFailure(
                conn.login(credentials.UsernamePassword(b"alice", b"guess")),
                UnauthorizedLogin,
            )
        conn = self.connect(server, host="198.51.100.30")
        d = conn.login(credentials.UsernamePassword(b"alice", b"wonderland"))
        self.assertNoResult(d)
        other = conn.login(credentials.UsernamePassword(b"bob", b"builder"))
        self.loggedIn(other)
        self.clock.advance(1)
        conn.flush()
        self.loggedIn(d)

    def test_successResets(self) -> None:
        """
        A successful login resets its address and username.
        """
        server = self.serverFactory()
        conn = self.connect(server)
        for _ in range(3):
            self.loginFailure(
                conn.login(credentials.UsernamePassword(b"alice", b"guess")),
                UnauthorizedLogin,
            )
        d = conn.login(credentials.UsernamePassword(b"alice", b"wonderland"))
        self.clock.advance(1)
        conn.flush()
        self.loggedIn(d)
        self.loggedIn(conn.login(credentials.UsernamePassword(b"alice", b"wonderland")))
        throttle = server.root.loginThrottle
        self.assertEqual(throttle.failures(("username", b"alice")), 0)

    def test_stockClientThrottled(self) -> None:
        """
        The classic login of stock clients is throttled the same way.
        """
        server = self.serverFactory()
        conn = self.connect(server, pb.PBClientFactory())
        for _ in range(3):
            self.loginFailure(
                conn.login(credentials.UsernamePassword(b"alice", b"guess")),
                UnauthorizedLogin,
            )
        d = conn.login(credentials.UsernamePassword(b"alice", b"wonderland"))
        self.assertNoResult(d)
        self.clock.advance(1)
        conn.flush()
        self.loggedIn(d)

    def test_usernameKeys(self) -> None:
        """
        A username counts the same whether a client sent it as bytes or as
        text, and long usernames are remembered by a short digest.
        """
        server = self.serverFactory()
        conn = self.connect(server, pb.PBClientFactory())
        root = conn.root()
        for username in (b"alice", "alice", b"x" * 1000):
            challenge, challenger = self.successResultOf(
                conn.call(root, "login", username)
            )
            self.loginFailure(
                conn.call(challenger, "respond", b"?" * 16, None), UnauthorizedLogin
            )
        throttle = server.root.loginThrottle
        self.assertEqual(throttle.failures(("username", b"alice")), 2)
        longKeys = [
            key
            for key in throttle._records
            if key[0] == "username" and key[1].startswith(b"sha256:")
        ]
        self.assertEqual([len(key[1]) for key in longKeys], [39])

    def test_perFactory(self) -> None:
        """
        Each factory has its own throttle: failures on one server do not
        slow down another.
        """
        first = pbext.PBServerFactory(
            Portal(demo.DemoRealm(), [self.passwords]), reactor=self.clock
        )
        second = pbext.PBServerFactory(
            Portal(demo.DemoRealm(), [self.passwords]), reactor=self.clock
        )
        self.assertIsInstance(first.root.loginThrottle, LoginThrottle)
        self.assertIsNot(first.root.loginThrottle, second.root.loginThrottle)
        self.assertIs(first.root.loginThrottle.clock, self.clock)

    def test_throttleOff(self) -> None:
        """
        C{loginThrottle=None} turns throttling off.
        """
        server = self.serverFactory(loginThrottle=None)
        conn = self.connect(server)
        for _ in range(10):
            self.loginFailure(
                conn.login(credentials.UsernamePassword(b"alice", b"guess")),
                UnauthorizedLogin,
            )
        self.loggedIn(conn.login(credentials.UsernamePassword(b"alice", b"wonderland")))

    def test_disconnectWhileWaiting(self) -> None:
        """
        A login whose connection closes while it waits is not checked, so no
        avatar is left logged in with nobody to log it out.
        """
        realm = demo.DemoRealm()
        requested = []
        original = realm.requestAvatar
        self.patch(
            realm,
            "requestAvatar",
            lambda *a: requested.append(a) or original(*a),
        )
        server = pbext.PBServerFactory(
            Portal(realm, [self.passwords]),
            reactor=self.clock,
            loginThrottle=LoginThrottle(self.clock),
        )
        conn = self.connect(server)
        for _ in range(3):
            self.loginFailure(
                conn.login(credentials.UsernamePassword(b"alice", b"guess")),
                UnauthorizedLogin,
            )
        d = conn.login(credentials.UsernamePassword(b"alice", b"wonderland"))
        conn.disconnect()
        self.failureResultOf(d)
        self.clock.advance(5)
        self.assertEqual(requested, [])


class AuditTests(LoginTestsMixin, SynchronousTestCase):
    """
    Logins, failures, throttled attempts and logouts are structured events
    with the peer, the username and the method, and no secret.
    """

    def test_events(self) -> None:
        """
        A failed login, a throttled one, a successful one and the logout each
        emit one event with the fields an operator filters on, and no event
        carries the password or anything derived from it.
        """
        with capturedLogs() as events:
            conn = self.connect(host="203.0.113.5")
            for _ in range(3):
                self.loginFailure(
                    conn.login(credentials.UsernamePassword(b"alice", b"s3cr3t-guess")),
                    UnauthorizedLogin,
                )
            d = conn.login(credentials.UsernamePassword(b"alice", b"wonderland"))
            self.clock.advance(1)
            conn.flush()
            self.loggedIn(d)
            conn.disconnect()
        failed = audit(events, "loginFailed")
        self.assertEqual(len(failed), 3)
        self.assertEqual(
            {(e["peer"], e["username"], e["method"], e["reason"]) for e in failed},
            {("203.0.113.5:40000", "alice", "nonce", "UnauthorizedLogin")},
        )
        (throttled,) = audit(events, "loginThrottled")
        self.assertEqual((throttled["delay"], throttled["refused"]), (1.0, False))
        (success,) = audit(events, "login")
        self.assertEqual(
            (success["peer"], success["username"], success["method"]),
            ("203.0.113.5:40000", "alice", "nonce"),
        )
        (logout,) = audit(events, "logout")
        self.assertEqual(logout["username"], "alice")
        secrets = [b"wonderland", b"s3cr3t-guess", md5(b"wonderland").digest()]
        for event in events:
            text = repr(event).encode("utf-8")
            for secret in secrets:
                self.assertNotIn(secret, text)
                self.assertNotIn(repr(secret).encode("utf-8"), text)

    def test_refusedEvent(self) -> None:
        """
        A refused attempt is an event with C{refused} true and the seconds
        left.
        """
        server = self.serverFactory(
            loginThrottle=LoginThrottle(self.clock, freeFailures=1, refuseAfter=1)
        )
        conn = self.connect(server)
        self.loginFailure(
            conn.login(credentials.UsernamePassword(b"bob", b"x")), UnauthorizedLogin
        )
        with capturedLogs() as events:
            self.loginFailure(
                conn.login(credentials.UsernamePassword(b"bob", b"builder")),
                LoginThrottled,
            )
        (refused,) = audit(events, "loginThrottled")
        self.assertEqual((refused["refused"], refused["retryAfter"]), (True, 900.0))

    def test_anonymousEvents(self) -> None:
        """
        Anonymous logins are audited with the method C{anonymous} and no
        username.
        """
        server = self.serverFactory(checkers.AllowAnonymousAccess())
        with capturedLogs() as events:
            conn = self.connect(server)
            self.loggedIn(conn.login(credentials.Anonymous()))
        (success,) = audit(events, "login")
        self.assertEqual((success["method"], success["username"]), ("anonymous", None))
