"""
Tests for L{pbext.login}: pbext's logins, negotiation, throttling and audit
events, with clients and servers connected in memory and a fake clock.
"""

from __future__ import annotations

import dataclasses
from hashlib import md5
from typing import Any

from twisted.cred import checkers, credentials
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase

import pbext
from pbext import demo, login, loginserver, security, throttle
from pbext.login import LoginThrottle, LoginThrottled
from pbext.testing import connectedPair
from pbext.throttle import Attempt

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
    A client factory connected in memory to a server factory (a
    L{pbext.testing.PBConnection}), from the address C{host}, over a
    transport that says it is TLS if C{tls}.
    """

    def __init__(
        self,
        serverFactory: pb.PBServerFactory,
        clientFactory: pb.PBClientFactory,
        host: str = "198.51.100.7",
        tls: bool = False,
    ) -> None:
        self.peer = IPv4Address("TCP", host, 40000)
        self.connection = connectedPair(
            serverFactory,
            clientFactory,
            serverAddress=SERVER,
            clientAddress=self.peer,
            tls=tls,
        )
        self.server = self.connection.serverBroker
        self.client = self.connection.clientBroker
        self.clientFactory = clientFactory

    def flush(self) -> None:
        self.connection.pump()

    def login(self, creds: object, mind: object = None) -> Any:
        """
        Log in with C{creds} and pump until nothing moves.
        """
        d = self.clientFactory.login(creds, mind)
        self.flush()
        return d

    def root(self) -> pb.RemoteReference:
        return self.connection.rootObject()

    def call(self, ref: pb.RemoteReference, method: str, *args: object) -> Any:
        d = ref.callRemote(method, *args)
        self.flush()
        return d

    def disconnect(self) -> None:
        self.connection.disconnect()


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

    def settle(self, conn: Connection, d: Any, seconds: float = 120.0) -> Any:
        """
        Advance the clock in tenths of a second, pumping C{conn}, until
        C{d} has a result (at most C{seconds}); return C{d}.
        """
        done = answers(d)
        for _ in range(int(seconds * 10)):
            if done:
                break
            self.clock.advance(0.1)
            conn.flush()
        return d

    def loginFailure(self, d: Any, *types: type[BaseException]) -> Failure:
        failure = self.failureResultOf(d)  # type: ignore[attr-defined]
        self.assertTrue(failure.check(*types), failure)  # type: ignore[attr-defined]
        # The server's broker logs the error it sends, as classic PB does.
        self.flushLoggedErrors(*types)  # type: ignore[attr-defined]
        return failure  # type: ignore[no-any-return]


def noLoginDeadline() -> Any:
    """
    The default policy without a login deadline, for tests in which one
    connection keeps failing to log in for longer than it.
    """
    policy = security.defaultPolicy()
    policy.limits = dataclasses.replace(policy.limits, loginTimeout=None)
    return policy


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


def collect(d: Any) -> list[object]:
    """
    A list that gets C{d}'s result, success or failure, once it has one;
    C{d} is left with C{None}, so a failure is not reported unhandled.
    """
    results: list[object] = []
    d.addBoth(results.append)
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

        self.patch(loginserver, "_randomBytes", fakeRandom)
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
        failure = self.loginFailure(d, UnauthorizedLogin)
        self.assertEqual(
            failure.getErrorMessage(),
            "this server accepts plaintext passwords only over TLS; connect "
            "through a TLS endpoint",
        )

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
            loginserver._PortalWrapper,
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
        wrapper = loginserver._PortalWrapper(
            conn.server.factory.root.portal, conn.server
        )
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
        original = loginserver._PortalWrapper.remote_loginWithNonce

        def spy(
            self: loginserver._PortalWrapper, username: object, nonce: bytes
        ) -> Any:
            seen.append(nonce)
            return original(self, username, nonce)

        self.patch(loginserver._PortalWrapper, "remote_loginWithNonce", spy)
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
    Tests for L{LoginThrottle}'s limits, on a fake clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.throttle = LoginThrottle(self.clock)

    def attempt(
        self, address: str, username: bytes | None, ok: bool = False
    ) -> Attempt:
        """
        Reserve an attempt, wait its delay on the clock and report it as a
        failure (or, with C{ok}, a success).
        """
        attempt = self.throttle.reserve(address, username)
        d = self.throttle.wait(attempt)
        done = answers(d)
        self.clock.advance(attempt.delay)
        for _ in range(100):
            if done:
                break
            self.clock.advance(0.1)
        self.successResultOf(d)
        if ok:
            self.throttle.succeeded(attempt)
        else:
            self.throttle.failed(attempt)
        return attempt

    def failTimes(self, address: str, username: bytes | None, times: int = 1) -> None:
        for _ in range(times):
            self.attempt(address, username)

    def test_pairFreeFailures(self) -> None:
        """
        One username from one address fails three times at the address's
        rate (5 a second), then waits a second before the fourth check.
        """
        delays = [self.attempt("a", b"u").delay for _ in range(3)]
        self.assertEqual(delays, [0.0, 0.2, 0.2])
        attempt = self.throttle.reserve("a", b"u")
        self.assertEqual((attempt.delay, attempt.limit), (1.0, throttle.PAIR))

    def test_delayDoubles(self) -> None:
        """
        From a pair's third failure on, the delay before the next check
        starts at one second and doubles with each failure, up to 30
        seconds; an address's delays start after its tenth failure.
        """
        delays = [self.throttle.delayAfter(n) for n in range(2, 11)]
        self.assertEqual(delays, [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0])
        addressDelays = [self.throttle.delayAfter(n, 10) for n in (9, 10, 11, 15)]
        self.assertEqual(addressDelays, [0.0, 1.0, 2.0, 30.0])

    def test_pairRefusedOnlyFromItsAddress(self) -> None:
        """
        After 20 failures a username is refused from that address for 15
        minutes (the limit named C{addressAndUsername}); the same username
        from another address, and other usernames from that address, are
        still checked.
        """
        self.failTimes("a", b"u", times=20)
        error = self.assertRaises(LoginThrottled, self.throttle.reserve, "a", b"u")
        self.assertEqual((error.retryAfter, error.limit), (900.0, throttle.PAIR))
        self.assertEqual(str(error), "too many failed logins; try again in 900 seconds")
        other = self.throttle.reserve("b", b"u")
        self.assertLessEqual(other.delay, self.throttle.maxUsernameDelay)
        self.throttle.abandoned(other)
        self.clock.advance(30)
        self.assertEqual(self.throttle.reserve("a", b"v").limit, None)

    def test_addressRefusedAfterHundredFailures(self) -> None:
        """
        An address that failed 100 times, for any usernames, is refused for
        15 minutes (the C{address} limit), then checked again.
        """
        for n in range(100):
            self.attempt("a", b"user%d" % n)
        error = self.assertRaises(LoginThrottled, self.throttle.reserve, "a", b"x")
        self.assertEqual((error.retryAfter, error.limit), (900.0, throttle.ADDRESS))
        self.clock.advance(900)
        self.throttle.abandoned(self.throttle.reserve("a", b"x"))

    def test_addressRate(self) -> None:
        """
        Attempts from an address that failed are checked at most five a
        second, whatever usernames they name, even when they arrive
        together; an address that never failed is not slowed.
        """
        self.failTimes("a", b"u0")
        waits = [self.throttle.reserve("a", b"u%d" % n).delay for n in range(1, 6)]
        self.assertEqual(waits, [0.2, 0.4, 0.6, 0.8, 1.0])
        for _ in range(5):
            self.attempt("clean", b"v", ok=True)
        self.assertEqual(self.throttle.reserve("clean", b"v").delay, 0.0)

    def test_concurrentFirstAttempts(self) -> None:
        """
        Attempts arriving together from an address that never failed wait
        behind the first one, at five a second, until its outcome is known.
        """
        waits = [self.throttle.reserve("a", b"u%d" % n).delay for n in range(4)]
        self.assertEqual(waits, [0.0, 0.2, 0.4, 0.6])

    def test_parallelAttemptsQueue(self) -> None:
        """
        Parallel attempts of a pair queue one behind the other, and one
        that would wait longer than the longest delay is refused, so more
        connections do not raise the rate.
        """
        self.failTimes("a", b"u", times=5)
        waits = []
        for _ in range(10):
            try:
                waits.append(self.throttle.reserve("a", b"u").delay)
            except LoginThrottled:
                waits.append(-1.0)
        self.assertEqual(
            waits, [4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 28.0, -1.0, -1.0, -1.0]
        )

    def crowd(self, count: int, prefix: str = "a") -> list[list[object]]:
        """
        C{count} addresses that each failed once for C{b"u"}, then a
        second later each try again at once; the results of their waits.
        """
        for n in range(count):
            self.attempt(f"{prefix}{n}", b"u")
        self.clock.advance(2)
        return [
            collect(self.throttle.wait(self.throttle.reserve(f"{prefix}{n}", b"u")))
            for n in range(count)
        ]

    def test_usernameRateAcrossAddresses(self) -> None:
        """
        A username is checked at most five times a second across all
        addresses: of twenty attacking addresses trying together, five are
        checked at once, five a second later, and the others, having waited
        C{maxUsernameDelay}, are refused (the C{username} limit).
        """
        waits = self.crowd(20)
        self.assertEqual(sum(1 for w in waits if w), 5)
        self.clock.advance(1)
        self.assertEqual(sum(1 for w in waits if w == [None]), 10)
        refused = [w[0] for w in waits if w and w != [None]]
        self.assertEqual(len(refused), 10)
        for failure in refused:
            self.assertEqual(failure.value.limit, throttle.USERNAME)  # type: ignore[attr-defined]
            failure.trap(LoginThrottled)  # type: ignore[attr-defined]

    def test_usernameNeverRefusesFreshAddress(self) -> None:
        """
        While attacking addresses fill a username's turns, addresses that
        are not attacking it get the next turns and are never refused,
        however long they wait.
        """
        self.crowd(20)
        fresh = [
            collect(self.throttle.wait(self.throttle.reserve(f"b{n}", b"u")))
            for n in range(12)
        ]
        owner = collect(self.throttle.wait(self.throttle.reserve("owner", b"u")))
        self.assertEqual(owner, [])
        self.clock.advance(1)
        self.assertEqual(sum(1 for w in fresh if w == [None]), 5)
        for _ in range(2):
            self.clock.advance(1)
        self.assertEqual(owner, [None])
        self.assertTrue(all(w == [None] for w in fresh))

    def test_trustedAddressSkipsUsernameQueue(self) -> None:
        """
        An address that logged in as a user before is checked at once for
        that user, however many attempts from elsewhere are waiting.
        """
        self.attempt("home", b"u", ok=True)
        self.assertTrue(self.throttle.trusted("home", b"u"))
        waits = self.crowd(20)
        self.assertIn([], waits)
        home = self.throttle.reserve("home", b"u")
        self.assertEqual((home.delay, home.trusted), (0.0, True))
        self.successResultOf(self.throttle.wait(home))
        self.clock.advance(30 * 86400)
        self.assertFalse(self.throttle.trusted("home", b"u"))

    def test_successForgetsPairOnly(self) -> None:
        """
        A success forgets its pair's failures, but not its address's: a
        login to one account does not reset the guesses made against
        others.
        """
        self.failTimes("a", b"u", times=2)
        self.failTimes("a", b"v", times=2)
        self.clock.advance(1)
        self.attempt("a", b"u", ok=True)
        self.assertEqual(self.throttle.failures(("pair", "a", b"u")), 0)
        self.assertEqual(self.throttle.failures(("pair", "a", b"v")), 2)
        self.assertEqual(self.throttle.failures(("address", "a")), 4)

    def test_otherAddressesUnaffected(self) -> None:
        """
        Failures of one address do not slow down another address logging
        in as another user.
        """
        self.failTimes("a", b"u", times=10)
        self.assertEqual(self.throttle.reserve("b", b"v").delay, 0.0)

    def test_forgetAfter(self) -> None:
        """
        A record with no failure for an hour is forgotten.
        """
        self.failTimes("a", b"u", times=10)
        self.clock.advance(3599)
        self.assertEqual(self.throttle.failures(("address", "a")), 10)
        self.clock.advance(1)
        self.assertEqual(self.throttle.failures(("address", "a")), 0)

    def test_boundedMemory(self) -> None:
        """
        At most C{maxRecords} records and C{maxTrusted} trusted pairs are
        remembered, however many addresses and usernames fail or log in;
        the least recently used are dropped first.
        """
        bounded = LoginThrottle(self.clock, maxRecords=50, maxTrusted=20)
        for n in range(1000):
            attempt = bounded.reserve(f"a{n}", b"u%d" % n)
            if n % 2:
                bounded.failed(attempt)
            else:
                bounded.succeeded(attempt)
            self.clock.advance(0.001)
        self.assertLessEqual(len(bounded), 50)
        self.assertLessEqual(len(bounded._trusted), 20)
        self.assertEqual(bounded.failures(("address", "a999")), 1)
        self.assertEqual(bounded.failures(("address", "a1")), 0)
        self.assertTrue(bounded.trusted("a998", b"u998"))
        self.assertFalse(bounded.trusted("a0", b"u0"))

    def test_usernameTurnsForgotten(self) -> None:
        """
        What the throttle keeps of a username's turns is forgotten once
        nobody waits for them and they are a second old, however many
        usernames were tried.
        """
        for batch in range(10):
            for n in range(100):
                self.attempt(f"a{batch}", f"user{batch}-{n}".encode())
            self.clock.advance(2)
        self.throttle.abandoned(self.throttle.reserve("b", b"x"))
        self.assertLessEqual(len(self.throttle._gates), 100)

    def test_succeededForgetsCleanRecords(self) -> None:
        """
        Logins that succeed leave nothing behind but their trusted pair.
        """
        for n in range(10):
            self.attempt(f"a{n}", b"u%d" % n, ok=True)
        self.assertEqual(len(self.throttle), 0)

    def test_waitRechecks(self) -> None:
        """
        L{LoginThrottle.wait} fires after the delay, on the clock, but fails
        with L{LoginThrottled} if the pair was refused meanwhile.
        """
        self.failTimes("a", b"u", times=3)
        attempt = self.throttle.reserve("a", b"u")
        d = self.throttle.wait(attempt)
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(d))
        self.throttle.abandoned(attempt)

        self.throttle = LoginThrottle(self.clock, freeFailures=10, refuseAfter=2)
        self.failTimes("a", b"u")
        waiting = self.throttle.wait(self.throttle.reserve("a", b"u"))
        self.throttle.failed(self.throttle.reserve("a", b"u"))
        self.clock.advance(1)
        self.assertEqual(
            self.failureResultOf(waiting, LoginThrottled).value.limit, throttle.PAIR
        )

    def test_badSettings(self) -> None:
        """
        Settings that make no sense are a L{ValueError}.
        """
        for kwargs in (
            {"freeFailures": -1},
            {"initialDelay": 10.0, "maxDelay": 1.0},
            {"refuseAfter": 0},
            {"addressRefuseAfter": 0},
            {"forgetAfter": 10.0},
            {"maxRecords": 0},
            {"maxTrusted": 0},
            {"maxAttemptsPerSecond": 0},
            {"maxUsernameDelay": -1},
        ):
            self.assertRaises(ValueError, LoginThrottle, self.clock, **kwargs)

    def test_throttledMessageUnits(self) -> None:
        """
        A throttled login's message counts whole seconds in plain words:
        "1 second", never "1 seconds".
        """
        self.assertEqual(
            str(LoginThrottled(0.2)), "too many failed logins; try again in 1 second"
        )
        self.assertEqual(
            str(LoginThrottled(2.4)), "too many failed logins; try again in 2 seconds"
        )

    def test_badSettingsMessages(self) -> None:
        """
        A bad setting's L{ValueError} names the setting and its value as
        given, then what to give instead.
        """
        for kwargs, expected in (
            (
                {"freeFailures": -1},
                "freeFailures=-1, addressFreeFailures=10: failure counts "
                "cannot be negative; give 0 or more",
            ),
            (
                {"initialDelay": 10.0, "maxDelay": 1.0},
                "initialDelay=10.0, maxDelay=1.0: the first delay must be 0 "
                "seconds or more and no longer than the longest; raise "
                "maxDelay or lower initialDelay",
            ),
            (
                {"refuseAfter": 0},
                "refuseAfter=0: give a number of failures of 1 or more, or "
                "None to never refuse",
            ),
            (
                {"refuseFor": 0},
                "refuseFor=0: a refusal must last more than 0 seconds; give a "
                "positive number of seconds",
            ),
            (
                {"forgetAfter": 10.0},
                "forgetAfter=10.0: records would be forgotten before their "
                "delay or refusal ends; give at least 900.0 seconds",
            ),
            (
                {"maxRecords": 0},
                "maxRecords=0, maxTrusted=100000: give 1 or more for each",
            ),
            (
                {"maxAttemptsPerSecond": 0},
                "maxAttemptsPerSecond=0: give a number of attempts greater than 0",
            ),
            (
                {"maxUsernameDelay": -1},
                "maxUsernameDelay=-1, trustFor=2592000.0: give 0 seconds or "
                "more for each",
            ),
        ):
            error = self.assertRaises(ValueError, LoginThrottle, self.clock, **kwargs)
            self.assertEqual(str(error), expected)

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
    Failed logins slow down per address, pair and username, through the
    real login objects, on a fake clock; no username is locked out.
    """

    def test_fiftyWrongPasswords(self) -> None:
        """
        Fifty wrong passwords in a row from one address get the documented
        rate: three at five a second, then 1, 2, 4, 8, 16 and 30 seconds
        apart, and after twenty failures that username is refused from that
        address for 15 minutes.  Meanwhile another address logs in as
        another user at once, and as the attacked user too.
        """
        server = self.serverFactory(policy=noLoginDeadline())
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
        self.assertEqual(gaps[:8], [0.5, 0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0])
        self.assertEqual(set(gaps[8:]), {30.0})
        self.assertEqual(refused, 30)

        for user, password, host in (
            (b"bob", b"builder", "198.51.100.20"),
            (b"alice", b"wonderland", "198.51.100.21"),
        ):
            bystander = self.connect(server, host=host)
            avatar = self.loggedIn(
                bystander.login(credentials.UsernamePassword(user, password))
            )
            self.assertEqual(self.whoami(bystander, avatar), user.decode())

    def test_usernameNotLockedOut(self) -> None:
        """
        While one address guesses a username's password as fast as it is
        allowed, the real user logs in from another address, at once; and
        once the attacker's address is refused for that username, the real
        user still logs in, from a new address and from the one used before.
        """
        server = self.serverFactory(policy=noLoginDeadline())
        attacker = self.connect(server, host="203.0.113.66")
        home = "198.51.100.30"
        for n in range(25):
            d = attacker.login(credentials.UsernamePassword(b"alice", b"guess"))
            self.settle(attacker, d)
            self.failureResultOf(d, UnauthorizedLogin)
            if n in (2, 10, 24):
                user = self.connect(server, host=home)
                started = self.clock.seconds()
                d = user.login(credentials.UsernamePassword(b"alice", b"wonderland"))
                avatar = self.loggedIn(self.settle(user, d, 1.0))
                self.assertLessEqual(self.clock.seconds() - started, 0.3)
                self.assertEqual(self.whoami(user, avatar), "alice")
        self.flushLoggedErrors(UnauthorizedLogin)
        self.loginFailure(
            attacker.login(credentials.UsernamePassword(b"alice", b"wonderland")),
            LoginThrottled,
        )
        for host in (home, "198.51.100.31"):
            user = self.connect(server, host=host)
            d = user.login(credentials.UsernamePassword(b"alice", b"wonderland"))
            self.loggedIn(self.settle(user, d, 1.0))

    def test_usernameSlowedFromEverywhere(self) -> None:
        """
        Failures for one username slow attempts for it from other addresses
        to five a second, a bounded delay; other usernames from other
        addresses are not slowed.
        """
        server = self.serverFactory()
        conns = [self.connect(server, host=f"203.0.113.{n}") for n in range(7)]
        pending = [
            conn.login(credentials.UsernamePassword(b"alice", b"guess"))
            for conn in conns
        ]
        self.failureResultOf(pending[0], UnauthorizedLogin)
        self.assertNoResult(pending[6])
        conn = self.connect(server, host="198.51.100.30")
        d = conn.login(credentials.UsernamePassword(b"alice", b"wonderland"))
        self.assertNoResult(d)
        bystander = self.connect(server, host="198.51.100.31")
        self.loggedIn(bystander.login(credentials.UsernamePassword(b"bob", b"builder")))
        self.settle(conn, d, 1.5)
        self.loggedIn(d)
        for c, p in zip(conns[1:], pending[1:]):
            self.settle(c, p, 2.0)
            self.failureResultOf(p, UnauthorizedLogin)
        self.flushLoggedErrors(UnauthorizedLogin)

    def test_successResets(self) -> None:
        """
        A successful login resets its pair (address and username); the
        username's failures from elsewhere are kept.
        """
        server = self.serverFactory()
        conn = self.connect(server)
        for _ in range(3):
            self.loginFailure(
                self.settle(
                    conn, conn.login(credentials.UsernamePassword(b"alice", b"guess"))
                ),
                UnauthorizedLogin,
            )
        d = conn.login(credentials.UsernamePassword(b"alice", b"wonderland"))
        self.clock.advance(1)
        conn.flush()
        self.loggedIn(d)
        self.loggedIn(conn.login(credentials.UsernamePassword(b"alice", b"wonderland")))
        throttler = server.root.loginThrottle
        self.assertEqual(throttler.failures(("pair", "198.51.100.7", b"alice")), 0)
        self.assertEqual(throttler.failures(("address", "198.51.100.7")), 3)

    def test_stockClientThrottled(self) -> None:
        """
        The classic login of stock clients is throttled the same way.
        """
        server = self.serverFactory()
        conn = self.connect(server, pb.PBClientFactory())
        for _ in range(3):
            self.loginFailure(
                self.settle(
                    conn, conn.login(credentials.UsernamePassword(b"alice", b"guess"))
                ),
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
                self.settle(conn, conn.call(challenger, "respond", b"?" * 16, None)),
                UnauthorizedLogin,
            )
        throttler = server.root.loginThrottle
        self.assertEqual(throttler.failures(("username", b"alice")), 2)
        longKeys = [
            key
            for key in throttler._records
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
                self.settle(
                    conn, conn.login(credentials.UsernamePassword(b"alice", b"guess"))
                ),
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
                self.settle(
                    conn, conn.login(credentials.UsernamePassword(b"alice", b"guess"))
                ),
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
                    self.settle(
                        conn,
                        conn.login(
                            credentials.UsernamePassword(b"alice", b"s3cr3t-guess")
                        ),
                    ),
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
        throttled = audit(events, "loginThrottled")
        self.assertEqual(
            [(e["delay"], e["refused"], e["limit"]) for e in throttled],
            [
                (0.2, False, "address"),
                (0.2, False, "address"),
                (1.0, False, "addressAndUsername"),
            ],
        )
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
            self.settle(conn, conn.login(credentials.UsernamePassword(b"bob", b"x"))),
            UnauthorizedLogin,
        )
        with capturedLogs() as events:
            self.loginFailure(
                self.settle(
                    conn, conn.login(credentials.UsernamePassword(b"bob", b"builder"))
                ),
                LoginThrottled,
            )
        (refused,) = audit(events, "loginThrottled")
        self.assertEqual(
            (refused["refused"], refused["retryAfter"], refused["limit"]),
            (True, 900.0, "addressAndUsername"),
        )

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
