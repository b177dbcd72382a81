"""
End-to-end tests of pbext's logins over real loopback connections: TLS with
certificates the tests make, client certificates, the PROXY protocol, and
C{twistd pbserver} serving TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import sys
from typing import Any

from twisted.cred import checkers, credentials
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer, endpoints, protocol, reactor, ssl, utils
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.protocols import policies
from twisted.python.filepath import FilePath
from twisted.spread import pb
from twisted.trial.unittest import TestCase

import pbext
from pbext import demo, login
from pbext.login import LoginThrottle
from tests._process import _environment, startTwistd

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:  # pragma: no cover
    x509 = None  # type: ignore[assignment]

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "examples")


# --- certificates ------------------------------------------------------------


def _name(commonName: str) -> Any:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])


def _certificate(
    key: Any,
    subject: str,
    issuerKey: Any,
    issuer: str,
    authority: bool = False,
    usage: Any = None,
    addresses: bool = False,
) -> Any:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=authority, path_length=None), True)
    )
    if authority:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
    if addresses:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            False,
        )
    return builder.sign(issuerKey, hashes.SHA256())


def _writePEM(path: FilePath, *items: Any) -> str:
    data = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            data += item.public_bytes(serialization.Encoding.PEM)
        else:
            data += item.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
    path.setContent(data)
    return path.path


class Certificates:
    """
    A certificate authority, a server certificate for 127.0.0.1 and
    localhost, client certificates for alice and for a user with no
    commonName, and a client certificate from another authority, as PEM
    files in C{directory}.

    @ivar trustRoots: a directory holding only the authority's certificate,
        for C{tls:}'s C{trustRoots=}.
    """

    def __init__(self, directory: FilePath) -> None:
        directory.makedirs(ignoreExistingDirectory=True)
        self.directory = directory
        caKey = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate(caKey, "pbext test CA", caKey, "pbext test CA", True)
        roots = directory.child("roots")
        roots.makedirs(ignoreExistingDirectory=True)
        self.trustRoots = roots.path
        self.ca = _writePEM(roots.child("ca.pem"), ca)
        serverKey = ec.generate_private_key(ec.SECP256R1())
        server = _certificate(
            serverKey,
            "localhost",
            caKey,
            "pbext test CA",
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            addresses=True,
        )
        self.serverKey = _writePEM(directory.child("server.key"), serverKey)
        self.serverCert = _writePEM(directory.child("server.pem"), server)
        self.alice = self._client(caKey, "pbext test CA", "alice")
        rogueKey = ec.generate_private_key(ec.SECP256R1())
        self.rogue = self._client(rogueKey, "rogue CA", "alice", "rogue")

    def _client(
        self, issuerKey: Any, issuer: str, commonName: str, prefix: str = ""
    ) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(
            key, commonName, issuerKey, issuer, usage=ExtendedKeyUsageOID.CLIENT_AUTH
        )
        name = prefix + commonName
        return (
            _writePEM(self.directory.child(name + ".pem"), cert),
            _writePEM(self.directory.child(name + ".key"), key),
        )

    def serverDescription(self, port: int | str = 0) -> str:
        """
        A C{ssl:} server endpoint description on 127.0.0.1.
        """
        return (
            f"ssl:{port}:interface=127.0.0.1:privateKey={self.serverKey}"
            f":certKey={self.serverCert}"
        )

    def serverOptions(self) -> ssl.CertificateOptions:
        """
        TLS server options that ask clients for a certificate (optional)
        and verify it against the test authority.
        """
        with open(self.serverCert, "rb") as c, open(self.serverKey, "rb") as k:
            server = ssl.PrivateCertificate.loadPEM(c.read() + k.read())
        with open(self.ca, "rb") as f:
            authority = ssl.Certificate.loadPEM(f.read())
        return ssl.CertificateOptions(
            privateKey=server.privateKey.original,
            certificate=server.original,
            verify=True,
            caCerts=[authority.original],
            requireCertificate=False,
        )

    def clientDescription(
        self, port: int, certificate: tuple[str, str] | None = None
    ) -> str:
        """
        A C{tls:} client endpoint description for 127.0.0.1:C{port},
        trusting the test authority, with a client certificate if given.
        """
        description = f"tls:127.0.0.1:{port}:trustRoots={self.trustRoots}"
        if certificate is not None:
            description += f":certificate={certificate[0]}:privateKey={certificate[1]}"
        return description


# --- in-process servers and clients ------------------------------------------


class TrackingServerFactory(pbext.PBServerFactory):
    """
    A pbext server factory that remembers its brokers so tests can wait
    for them to close.
    """

    def buildProtocol(self, addr: Any) -> Any:
        broker = super().buildProtocol(addr)
        if broker is not None:
            lost: defer.Deferred[None] = defer.Deferred()
            broker.notifyOnDisconnect(lambda: lost.callback(None))
            self.closed.append(lost)
        return broker


class EndToEndMixin:
    """
    Start servers and connect clients on 127.0.0.1, cleaned up after each
    test.
    """

    timeout = 60

    def setUp(self) -> None:
        if x509 is None:
            raise self.skipException("cryptography is not installed")  # type: ignore[attr-defined]
        self.certificates = Certificates(FilePath(self.mktemp()))  # type: ignore[attr-defined]
        self.passwords = checkers.InMemoryUsernamePasswordDatabaseDontUse(
            alice=b"wonderland", bob=b"builder"
        )
        self.clock = Clock()

    def serverFactory(self, *checkerList: Any, **options: Any) -> TrackingServerFactory:
        options.setdefault("loginThrottle", LoginThrottle(self.clock))
        portal = Portal(demo.DemoRealm(), checkerList or [self.passwords])
        factory = TrackingServerFactory(portal, **options)
        factory.closed = []
        return factory

    @defer.inlineCallbacks
    def listen(self, endpoint: Any, factory: pb.PBServerFactory) -> Any:
        if isinstance(endpoint, str):
            endpoint = endpoints.serverFromString(reactor, endpoint)
        port = yield endpoint.listen(factory)
        self.addCleanup(self._closeServer, port, factory)  # type: ignore[attr-defined]
        return getattr(port.getHost(), "port", None)

    def _closeServer(self, port: Any, factory: Any) -> defer.Deferred[Any]:
        return defer.gatherResults(
            [defer.maybeDeferred(port.stopListening), *factory.closed]
        )

    @defer.inlineCallbacks
    def connect(
        self,
        description: str,
        factory: pb.PBClientFactory | None = None,
        wrap: Any = None,
    ) -> Any:
        """
        Connect a client factory (pbext's by default) and return it once
        connected; it is disconnected at cleanup.
        """
        if factory is None:
            factory = pbext.PBClientFactory()
        endpoint = endpoints.clientFromString(reactor, description)
        connected = yield endpoint.connect(wrap(factory) if wrap else factory)
        lost: defer.Deferred[None] = defer.Deferred()
        root = yield factory.getRootObject()
        root.broker.notifyOnDisconnect(lambda: lost.callback(None))

        def disconnect() -> defer.Deferred[None]:
            if not lost.called:
                # abortConnection, not loseConnection: a TLS transport's
                # loseConnection waits for its producer to unregister, and
                # pbext's broker stays registered (reported to the broker's
                # owner).
                root.broker.transport.abortConnection()
            return lost

        self.addCleanup(disconnect)  # type: ignore[attr-defined]
        del connected
        return factory

    def whenLogged(self, kind: str) -> defer.Deferred[dict[str, Any]]:
        """
        A Deferred firing with the next login event of C{kind}.
        """
        seen: defer.Deferred[dict[str, Any]] = defer.Deferred()

        def observer(event: dict[str, Any]) -> None:
            if event.get("pbextEvent") == kind and not seen.called:
                seen.callback(event)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)  # type: ignore[attr-defined]
        return seen

    @defer.inlineCallbacks
    def assertLoginFails(self, d: defer.Deferred[Any], *types: type) -> Any:
        """
        Wait for C{d} to fail with one of C{types} (remote errors arrive as
        L{pb.CopiedFailure}, which checks against the type's name).
        """
        (failure,) = yield d.addCallbacks(
            lambda result: self.fail(f"login succeeded: {result!r}"),  # type: ignore[attr-defined]
            lambda failure: [failure],
        )
        self.assertTrue(failure.check(*types), failure)  # type: ignore[attr-defined]
        self.flushLoggedErrors(*types)  # type: ignore[attr-defined]


class TLSLoginTests(EndToEndMixin, TestCase):
    """
    Logins over real TLS connections on 127.0.0.1.
    """

    @defer.inlineCallbacks
    def test_stockClientClassicLogin(self):
        """
        A stock L{pb.PBClientFactory} logs in to a pbext server over plain
        TCP with the classic MD5 challenge.
        """
        port = yield self.listen("tcp:0:interface=127.0.0.1", self.serverFactory())
        client = yield self.connect(f"tcp:127.0.0.1:{port}", pb.PBClientFactory())
        avatar = yield client.login(
            credentials.UsernamePassword(b"alice", b"wonderland")
        )
        self.assertEqual((yield avatar.callRemote("whoami")), "alice")

    @defer.inlineCallbacks
    def test_plaintextOverTLSHashedPasswords(self):
        """
        A pbext client connected with C{tls:} logs in with the plaintext
        login to a server whose checker only holds hashed passwords.
        """
        from tests.test_login import hashPassword

        path = FilePath(self.mktemp())
        path.setContent(
            b"alice:" + hashPassword(b"alice", b"wonderland", b"salt$") + b"\n"
        )
        hashed = checkers.FilePasswordDB(path.path, hash=hashPassword)
        port = yield self.listen(
            self.certificates.serverDescription(), self.serverFactory(hashed)
        )
        chosen = self.whenLogged("loginMethodChosen")
        client = yield self.connect(self.certificates.clientDescription(port))
        avatar = yield client.login(
            credentials.UsernamePassword(b"alice", b"wonderland")
        )
        self.assertEqual((yield avatar.callRemote("whoami")), "alice")
        self.assertEqual((yield chosen)["method"], "plaintext")

    @defer.inlineCallbacks
    def test_plaintextRefusedWithoutTLS(self):
        """
        Over plain TCP the server refuses a plaintext password, and a pbext
        client facing a hashed-password checker fails without sending it.
        """
        hashed = checkers.FilePasswordDB(self.mktemp(), hash=lambda u, p, s: p)
        port = yield self.listen(
            "tcp:0:interface=127.0.0.1", self.serverFactory(hashed)
        )
        client = yield self.connect(f"tcp:127.0.0.1:{port}")
        root = yield client.getRootObject()
        yield self.assertLoginFails(
            root.callRemote("loginWithPassword", b"alice", b"wonderland", None),
            UnauthorizedLogin,
        )
        yield self.assertLoginFails(
            client.login(credentials.UsernamePassword(b"alice", b"wonderland")),
            UnauthorizedLogin,
        )

    @defer.inlineCallbacks
    def test_nonceChallenge(self):
        """
        Over plain TCP a pbext client logs in to a pbext server with the
        nonce challenge.
        """
        port = yield self.listen("tcp:0:interface=127.0.0.1", self.serverFactory())
        chosen = self.whenLogged("loginMethodChosen")
        client = yield self.connect(f"tcp:127.0.0.1:{port}")
        avatar = yield client.login(credentials.UsernamePassword(b"bob", b"builder"))
        self.assertEqual((yield avatar.callRemote("whoami")), "bob")
        self.assertEqual((yield chosen)["method"], "nonce")

    @defer.inlineCallbacks
    def test_stockClientOverTLS(self):
        """
        A stock client connected with C{tls:} logs in with the classic
        login.
        """
        port = yield self.listen(
            self.certificates.serverDescription(), self.serverFactory()
        )
        client = yield self.connect(
            self.certificates.clientDescription(port), pb.PBClientFactory()
        )
        avatar = yield client.login(credentials.UsernamePassword(b"bob", b"builder"))
        self.assertEqual((yield avatar.callRemote("whoami")), "bob")


class UNIXSocketTests(EndToEndMixin, TestCase):
    """
    Plaintext passwords over a UNIX socket, where the operator allows them.
    """

    @defer.inlineCallbacks
    def test_allowPlaintextLogin(self):
        """
        With C{allowPlaintextLogin=True} on the server, a pbext client that
        opts in too logs in with the plaintext login over a UNIX socket, to
        a checker of hashed passwords; a client that does not opt in keeps
        its password.
        """
        from tests.test_login import hashPassword

        path = FilePath(self.mktemp())
        path.setContent(b"bob:" + hashPassword(b"bob", b"builder", b"salt$") + b"\n")
        hashed = checkers.FilePasswordDB(path.path, hash=hashPassword)
        socket = FilePath(self.mktemp())
        socket.parent().makedirs(ignoreExistingDirectory=True)
        yield self.listen(
            f"unix:{socket.path}", self.serverFactory(hashed, allowPlaintextLogin=True)
        )
        client = yield self.connect(
            f"unix:{socket.path}", pbext.PBClientFactory(allowPlaintextLogin=True)
        )
        avatar = yield client.login(credentials.UsernamePassword(b"bob", b"builder"))
        self.assertEqual((yield avatar.callRemote("whoami")), "bob")
        wary = yield self.connect(f"unix:{socket.path}")
        yield self.assertLoginFails(
            wary.login(credentials.UsernamePassword(b"bob", b"builder")),
            UnauthorizedLogin,
        )


class ClientCertificateTests(EndToEndMixin, TestCase):
    """
    Logging in with a verified TLS client certificate.
    """

    @defer.inlineCallbacks
    def serve(self) -> Any:
        factory = self.serverFactory(self.passwords, login.ClientCertificateChecker())
        endpoint = endpoints.SSL4ServerEndpoint(
            reactor, 0, self.certificates.serverOptions(), interface="127.0.0.1"
        )
        return (yield self.listen(endpoint, factory))

    @defer.inlineCallbacks
    def test_certificateLogin(self):
        """
        A client presenting a certificate from the trusted authority logs
        in as the certificate's commonName.
        """
        port = yield self.serve()
        client = yield self.connect(
            self.certificates.clientDescription(port, self.certificates.alice)
        )
        root = yield client.getRootObject()
        self.assertIn("certificate", (yield root.callRemote("loginMethods")))
        logged = self.whenLogged("login")
        avatar = yield client.login(login.CertificateLogin())
        self.assertEqual((yield avatar.callRemote("whoami")), "alice")
        event = yield logged
        self.assertEqual((event["method"], event["username"]), ("certificate", "alice"))

    @defer.inlineCallbacks
    def test_noCertificate(self):
        """
        Without a client certificate the certificate login is not offered
        and fails; a password login over the same TLS listener works.
        """
        port = yield self.serve()
        client = yield self.connect(self.certificates.clientDescription(port))
        root = yield client.getRootObject()
        self.assertNotIn("certificate", (yield root.callRemote("loginMethods")))
        yield self.assertLoginFails(
            client.login(login.CertificateLogin()), UnauthorizedLogin
        )
        avatar = yield client.login(credentials.UsernamePassword(b"bob", b"builder"))
        self.assertEqual((yield avatar.callRemote("whoami")), "bob")

    @defer.inlineCallbacks
    def test_untrustedCertificate(self):
        """
        A client certificate from another authority fails the TLS
        handshake: the connection closes before any login.
        """
        port = yield self.serve()
        factory = pbext.PBClientFactory()
        endpoint = endpoints.clientFromString(
            reactor, self.certificates.clientDescription(port, self.certificates.rogue)
        )
        yield endpoint.connect(factory)
        try:
            yield factory.getRootObject()
        except Exception as e:
            self.assertNotIsInstance(e, AssertionError)
        else:
            self.fail("a rogue client certificate was accepted")


class ProxyHeader(policies.ProtocolWrapper):
    """
    Send a PROXY protocol v1 header before the wrapped protocol's bytes, as
    a load balancer would.
    """

    def makeConnection(self, transport: Any) -> None:
        transport.write(self.factory.header)
        super().makeConnection(transport)


class ProxyHeaderFactory(policies.WrappingFactory):
    protocol = ProxyHeader

    def __init__(self, wrapped: protocol.ClientFactory, source: str) -> None:
        super().__init__(wrapped)
        self.header = f"PROXY TCP4 {source} 127.0.0.1 5555 8787\r\n".encode("ascii")


class ProxyProtocolTests(EndToEndMixin, TestCase):
    """
    Behind a proxy speaking the PROXY protocol (a C{haproxy:} endpoint),
    throttling uses the client address the proxy reports.
    """

    @defer.inlineCallbacks
    def test_throttlingUsesProxiedAddress(self):
        """
        Failures from one proxied address slow down that address only: its
        next attempt waits on the throttle's clock while another proxied
        address logs in at once, though both connect from 127.0.0.1.
        """
        throttle = LoginThrottle(self.clock, freeFailures=2, initialDelay=5.0)
        factory = self.serverFactory(loginThrottle=throttle)
        port = yield self.listen("haproxy:tcp:0:interface=127.0.0.1", factory)
        target = f"tcp:127.0.0.1:{port}"

        attacker = yield self.connect(
            target, wrap=lambda f: ProxyHeaderFactory(f, "203.0.113.7")
        )
        for _ in range(2):
            # Slower than the address's five attempts a second.
            self.clock.advance(1)
            yield self.assertLoginFails(
                attacker.login(credentials.UsernamePassword(b"mallory", b"guess")),
                UnauthorizedLogin,
            )
        self.assertEqual(throttle.failures(("address", "203.0.113.7")), 2)
        self.assertEqual(throttle.failures(("address", "127.0.0.1")), 0)

        delayed = self.whenLogged("loginThrottled")
        waiting = attacker.login(credentials.UsernamePassword(b"mallory", b"guess"))
        answered: list[object] = []
        waiting.addBoth(lambda result: answered.append(result) or result)
        event = yield delayed
        self.assertEqual((event["peer"], event["delay"]), ("203.0.113.7:5555", 5.0))

        bystander = yield self.connect(
            target, wrap=lambda f: ProxyHeaderFactory(f, "198.51.100.9")
        )
        avatar = yield bystander.login(credentials.UsernamePassword(b"bob", b"builder"))
        self.assertEqual((yield avatar.callRemote("whoami")), "bob")
        self.assertEqual(answered, [])

        self.clock.advance(5)
        yield self.assertLoginFails(waiting, UnauthorizedLogin)
        self.assertEqual(throttle.failures(("address", "203.0.113.7")), 3)


class TwistdTLSTests(EndToEndMixin, TestCase):
    """
    C{twistd pbserver} serving C{--listen ssl:...}, in a subprocess.
    """

    @defer.inlineCallbacks
    def test_sslListen(self):
        """
        C{twistd pbserver --listen ssl:...} serves TLS: a pbext client
        connecting with C{tls:} logs in with the plaintext login, and a
        stock client with the classic one.
        """
        passwords = FilePath(self.mktemp())
        passwords.setContent(b"alice:wonderland\n")
        proc = yield startTwistd(
            self,
            [
                "pbserver",
                "--listen",
                self.certificates.serverDescription(),
                "--auth",
                f"file:{passwords.path}",
            ],
        )
        description = self.certificates.clientDescription(proc.port)
        chosen = self.whenLogged("loginMethodChosen")
        client = yield self.connect(description)
        avatar = yield client.login(
            credentials.UsernamePassword(b"alice", b"wonderland")
        )
        self.assertEqual((yield avatar.callRemote("whoami")), "alice")
        self.assertEqual((yield chosen)["method"], "plaintext")
        stock = yield self.connect(description, pb.PBClientFactory())
        avatar = yield stock.login(
            credentials.UsernamePassword(b"alice", b"wonderland")
        )
        self.assertEqual((yield avatar.callRemote("whoami")), "alice")

    @defer.inlineCallbacks
    def test_tlsClientCA(self):
        """
        With C{--tls-client-ca}, C{ssl:} listeners ask for a client
        certificate: a pbext client presenting one from that authority
        logs in as its commonName, and one without still logs in with a
        password.
        """
        proc = yield startTwistd(
            self,
            [
                "pbserver",
                "--listen",
                self.certificates.serverDescription(),
                "--tls-client-ca",
                self.certificates.ca,
                "--auth",
                "memory:bob:builder",
            ],
        )
        client = yield self.connect(
            self.certificates.clientDescription(proc.port, self.certificates.alice)
        )
        avatar = yield client.login(login.CertificateLogin())
        self.assertEqual((yield avatar.callRemote("whoami")), "alice")
        other = yield self.connect(self.certificates.clientDescription(proc.port))
        avatar = yield other.login(credentials.UsernamePassword(b"bob", b"builder"))
        self.assertEqual((yield avatar.callRemote("whoami")), "bob")


class AuthExampleTests(EndToEndMixin, TestCase):
    """
    The how-to's example: C{docs/examples/auth_server.tac} under C{twistd}
    and C{docs/examples/auth_client.py} against it.
    """

    @defer.inlineCallbacks
    def test_example(self):
        """
        The example client logs in to the example server with a password
        and with a client certificate, and prints each line its header
        expects.
        """
        from tests.test_examples import parseHeader

        demo = FilePath(self.mktemp())
        env = {"PBEXT_AUTH_DIR": demo.path, "PBEXT_PORT": "0"}
        proc = yield startTwistd(
            self, ["-y", os.path.join(EXAMPLES, "auth_server.tac")], env=env
        )
        client = os.path.join(EXAMPLES, "auth_client.py")
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable,
            [client, str(proc.port)],
            env=_environment(env),
        )
        self.assertEqual(code, 0, err)
        printed = out.decode("utf-8").splitlines()
        with open(client, encoding="utf-8") as f:
            expected = parseHeader(f.read()).expected
        self.assertEqual(len(expected), 3)
        for line in expected:
            self.assertIn(line, printed)
