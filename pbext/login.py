"""
Logging in to a PB server: every twisted.cred checker, TLS client
certificates, throttling of failed logins and audit events.

Classic PB has one login: the server sends a challenge, the client answers
C{md5(md5(password) + challenge)}.  It needs a checker that holds every
password (or its MD5 digest), lets the server choose everything the client
hashes, and slows nobody down.  pbext keeps serving it to stock clients and
adds, for pbext clients, logins negotiated with ordinary PB calls on the
server's root object:

    - C{"plaintext"}: the password itself, accepted only over TLS (or where
      the operator allows it), so any C{IUsernamePassword} checker works:
      C{--auth unix}, a file of hashed passwords, bcrypt.
    - C{"nonce"}: a challenge/response over a server nonce and a client
      nonce, so a malicious server cannot make the client answer a challenge
      of its choosing.
    - C{"certificate"}: the verified TLS client certificate is the
      credential (L{IClientCertificate}, L{ClientCertificateChecker}).
    - C{"classic"} and C{"anonymous"}: PB's own.

A pbext client asks the root for C{loginMethods()} only when the server
marked itself as pbext in its banana dialect offer
(C{broker.peerFeatures}), so stock servers never see a call they do not
know.  It then picks the strongest login both ends allow (L{login}).

Failed password logins are slowed down per peer address, per (address,
username) pair and per username, without locking any username out
(L{LoginThrottle}, in L{pbext.throttle}); every login, failure, throttled
attempt and logout is a structured L{twisted.logger} event on L{auditLog}
(never a password or a hash).

@since: pbext NEXT
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from hashlib import md5, sha256
from typing import Any, Callable, Sequence

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import (
    Anonymous,
    IAnonymous,
    ICredentials,
    IUsernameHashedPassword,
    IUsernamePassword,
    UsernamePassword,
)
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.address import UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IOpenSSLContextFactory,
    ISSLTransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from zope.interface import Attribute, implementer

from pbext._peer import peerText
from pbext.throttle import Attempt, LoginThrottle, LoginThrottled

#: The marker a pbext server adds to banana's dialect offer; a broker that
#: saw it lists it in C{broker.peerFeatures}.
PBEXT_FEATURE = b"pbext/1"

#: The audit log: one event per login, failed login, throttled attempt and
#: logout.  Events carry C{pbextEvent} (C{"login"}, C{"loginFailed"},
#: C{"loginThrottled"}, C{"logout"}), C{peer}, C{username} and C{method}.
auditLog = Logger(namespace="pbext.login.audit")

_log = Logger(namespace="pbext.login")

#: Login methods, strongest first, as C{loginMethods()} names them.
PLAINTEXT = "plaintext"
NONCE = "nonce"
CLASSIC = "classic"
CERTIFICATE = "certificate"
ANONYMOUS = "anonymous"

#: Length in bytes of each nonce of the C{"nonce"} login.
NONCE_SIZE = 32

_NONCE_LABEL = b"pbext nonce login v1\x00"

#: Where challenges and nonces come from (tests replace it).
_randomBytes = os.urandom

#: Usernames longer than this are cut short in log events.
_LOG_USERNAME_LENGTH = 128


# --- credentials -----------------------------------------------------------


class IClientCertificate(ICredentials):
    """
    A TLS client certificate the server's TLS layer has verified against the
    certificate authorities it trusts.

    @since: pbext NEXT
    """

    certificate = Attribute(
        "The peer's certificate, a L{twisted.internet.ssl.Certificate}."
    )


@implementer(IClientCertificate)
class ClientCertificate:
    """
    The credentials of a C{loginWithCertificate} login.

    @ivar certificate: the verified L{twisted.internet.ssl.Certificate}.
    @since: pbext NEXT
    """

    def __init__(self, certificate: Any) -> None:
        self.certificate = certificate


def commonName(certificate: Any) -> bytes | None:
    """
    The subject commonName of C{certificate} as UTF-8 bytes, or C{None} if it
    has none or more than one.

    @param certificate: a L{twisted.internet.ssl.Certificate}.
    @since: pbext NEXT
    """
    from cryptography.x509.oid import NameOID

    subject = certificate.original.to_cryptography().subject
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        return None
    value = names[0].value
    if isinstance(value, bytes):
        return value or None
    return value.encode("utf-8") or None


@implementer(ICredentialsChecker)
class ClientCertificateChecker:
    """
    Map a verified TLS client certificate to an avatar ID.

    Every certificate the server's TLS layer accepts logs in, so trust a
    certificate authority that issues certificates for this service only.

    @ivar avatarIdFor: called with the L{twisted.internet.ssl.Certificate};
        returns the avatar ID, or C{None} to refuse it.  The default,
        L{commonName}, uses the subject commonName.
    @since: pbext NEXT
    """

    credentialInterfaces = (IClientCertificate,)

    def __init__(
        self, avatarIdFor: Callable[[Any], bytes | None] | None = None
    ) -> None:
        self.avatarIdFor = avatarIdFor if avatarIdFor is not None else commonName

    def requestAvatarId(self, credentials: IClientCertificate) -> defer.Deferred[Any]:
        avatarId = self.avatarIdFor(credentials.certificate)
        if not avatarId:
            return defer.fail(
                UnauthorizedLogin(
                    "the client certificate names no usable user; connect with "
                    "a certificate issued to a user of this server"
                )
            )
        return defer.succeed(avatarId)


class CertificateLogin:
    """
    Client-side credentials: "log me in as whoever the TLS client
    certificate of this connection says".  Pass it to
    L{pbext.PBClientFactory.login}; the connection must present a client
    certificate (a C{tls:} description with C{certificate=} and
    C{privateKey=}).

    @since: pbext NEXT
    """


def verifiedPeerCertificate(transport: object) -> Any:
    """
    The peer's TLS certificate, if C{transport} is TLS, asked the peer for a
    certificate and verified it.

    @return: a L{twisted.internet.ssl.Certificate}, or C{None}.
    @since: pbext NEXT
    """
    if not ISSLTransport.providedBy(transport):
        return None
    try:
        x509 = transport.getPeerCertificate()  # type: ignore[attr-defined]
        handle = transport.getHandle()  # type: ignore[attr-defined]
        from OpenSSL import SSL

        # Verification asked for, and a chain to a trusted authority built.
        verifying = handle.get_verify_mode() & SSL.VERIFY_PEER
        verified = bool(handle.get_verified_chain())
    except Exception:
        return None
    if x509 is None or not verifying or not verified:
        return None
    from twisted.internet.ssl import Certificate

    return Certificate(x509)


@implementer(IOpenSSLContextFactory)
class _AskForClientCertificates:
    """
    Wraps a TLS server context factory so the context asks the client for a
    certificate (optional) and verifies it against C{authorities}.
    """

    def __init__(self, contextFactory: Any, authorities: Sequence[Any]) -> None:
        self._contextFactory = contextFactory
        self._authorities = list(authorities)
        self._configured: set[int] = set()

    def getContext(self) -> Any:
        from OpenSSL import SSL

        context = self._contextFactory.getContext()
        if id(context) not in self._configured:
            store = context.get_cert_store()
            for authority in self._authorities:
                store.add_cert(authority.original)
            context.set_client_ca_list(
                [authority.original.get_subject() for authority in self._authorities]
            )
            context.set_verify(SSL.VERIFY_PEER)
            self._configured.add(id(context))
        return context


class _ClientCertificateReactor:
    """
    A reactor whose C{listenSSL} asks clients for a certificate; see
    L{askForClientCertificates}.
    """

    def __init__(self, reactor: Any, authorities: Sequence[Any]) -> None:
        self._reactor = reactor
        self._authorities = list(authorities)

    def listenSSL(
        self,
        port: int,
        factory: Any,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> Any:
        wrapped = _AskForClientCertificates(contextFactory, self._authorities)
        return self._reactor.listenSSL(port, factory, wrapped, backlog, interface)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def askForClientCertificates(reactor: Any, authorities: Sequence[Any]) -> Any:
    """
    Wrap C{reactor} so that TLS ports it listens on (C{ssl:} endpoint
    descriptions, also under C{haproxy:}) ask each client for a
    certificate and verify it against C{authorities}.

    A client without a certificate still connects (and can log in with a
    password); a client with a certificate that does not verify fails the
    TLS handshake.  Use it where endpoint descriptions are turned into
    ports, e.g. C{PBServerService(factory, listen, reactor=...)}.

    @param authorities: L{twisted.internet.ssl.Certificate}s of the
        certificate authorities whose client certificates are accepted.
    @since: pbext NEXT
    """
    return _ClientCertificateReactor(reactor, authorities)


def loadAuthorities(path: str) -> list[Any]:
    """
    Load every PEM certificate in the file C{path}.

    @return: a non-empty list of L{twisted.internet.ssl.Certificate}.
    @raise ValueError: if the file holds no certificate.
    @raise OSError: if it cannot be read.
    @since: pbext NEXT
    """
    from twisted.internet.ssl import Certificate

    with open(path, "rb") as f:
        data = f.read()
    end = b"-----END CERTIFICATE-----"
    blocks = [b + end for b in data.split(end) if b"-----BEGIN CERTIFICATE-----" in b]
    if not blocks:
        raise ValueError(
            f"{path}: no PEM certificate in it; give a file holding "
            f"-----BEGIN CERTIFICATE----- blocks"
        )
    return [Certificate.loadPEM(block.strip()) for block in blocks]


def nonceResponse(
    password: bytes, username: bytes, serverNonce: bytes, clientNonce: bytes
) -> bytes:
    """
    The answer to a C{"nonce"} login challenge.

    It is C{HMAC-SHA256(md5(password), label + serverNonce + clientNonce +
    username)}: keyed like classic PB's response, so a checker that holds
    MD5 digests (C{IUsernameMD5Password}) still works, but over input both
    ends chose.

    @since: pbext NEXT
    """
    return _nonceDigest(md5(password).digest(), username, serverNonce, clientNonce)


def _nonceDigest(
    key: bytes, username: bytes, serverNonce: bytes, clientNonce: bytes
) -> bytes:
    message = _NONCE_LABEL + serverNonce + clientNonce + username
    return hmac.new(key, message, sha256).digest()


def _toBytes(value: object, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise UnauthorizedLogin(
        f"the {what} is a {type(value).__name__}; send it as bytes or str"
    )


# --- throttling -------------------------------------------------------------


def addressKey(address: IAddress) -> str:
    """
    The throttling key of a peer address: its IP address (IPv6 addresses by
    their /64 network, which one host usually controls), or one key for all
    UNIX socket peers.

    @since: pbext NEXT
    """
    host = getattr(address, "host", None)
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if isinstance(host, str):
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return host
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip)
    if isinstance(address, UNIXAddress):
        return "unix"
    return type(address).__name__


#: How log events name a peer (one format for all of pbext's events).
_peerText = peerText


def _usernameKey(username: object) -> bytes:
    """
    The throttling key of a username: its bytes, or a digest of long ones
    so that remembered keys stay small.
    """
    if isinstance(username, str):
        username = username.encode("utf-8")
    if not isinstance(username, bytes):
        username = repr(username).encode("utf-8", "backslashreplace")
    if len(username) > 64:
        return b"sha256:" + sha256(username).digest()
    return username


def _usernameText(username: object) -> str | None:
    if username is None:
        return None
    if isinstance(username, bytes):
        text = username.decode("utf-8", "backslashreplace")
    else:
        text = str(username)
    if len(text) > _LOG_USERNAME_LENGTH:
        text = text[:_LOG_USERNAME_LENGTH] + "..."
    return text


# --- the server -------------------------------------------------------------


class _PortalAuthChallenger(pb._PortalAuthChallenger):
    """
    Classic PB's challenge/response credentials, hardened: one answer per
    challenge, a constant-time comparison, and tolerant of checkers that
    keep passwords as C{str} (L{twisted.cred.strcred}'s C{memory:} does).
    """

    def __init__(
        self,
        portal: Portal,
        broker: pb.Broker,
        username: object,
        challenge: bytes,
        wrapper: _PortalWrapper | None = None,
    ) -> None:
        super().__init__(portal, broker, username, challenge)
        self._wrapper = wrapper
        self._answered = False
        self.response: object = None

    def remote_respond(self, response: object, mind: object) -> Any:
        # Arguments are annotated object: classic PB accepts anything here,
        # and a wrong type is a failed login, not a typed-call error.
        if self._answered:
            raise UnauthorizedLogin(
                "this challenge was answered already; log in again from the start"
            )
        self._answered = True
        if self._wrapper is None:
            return super().remote_respond(response, mind)
        self.response = response
        return self._wrapper.portalLogin(self, mind, CLASSIC, self.username)

    def checkPassword(self, password: bytes | str) -> bool:
        if isinstance(password, str):
            password = password.encode("utf-8")
        return super().checkPassword(password)

    def checkMD5Password(self, md5Password: bytes) -> bool:
        expected = md5(md5Password + self.challenge).digest()
        response = self.response
        return isinstance(response, bytes) and hmac.compare_digest(response, expected)


@implementer(IUsernameHashedPassword, pb.IUsernameMD5Password)
class _NonceChallenger(pb.Referenceable):
    """
    The challenger of a C{"nonce"} login, and its credentials: the client
    answers C{respond(response, mind)} with L{nonceResponse}.
    """

    def __init__(
        self,
        wrapper: _PortalWrapper,
        username: bytes,
        serverNonce: bytes,
        clientNonce: bytes,
    ) -> None:
        self._wrapper = wrapper
        self.username = username
        self.serverNonce = serverNonce
        self.clientNonce = clientNonce
        self.response: bytes | None = None

    def remote_respond(self, response: object, mind: object) -> Any:
        if self.response is not None:
            raise UnauthorizedLogin(
                "this challenge was answered already; log in again from the start"
            )
        if not isinstance(response, bytes):
            raise UnauthorizedLogin("the response must be bytes")
        self.response = response
        return self._wrapper.portalLogin(self, mind, NONCE, self.username)

    def checkPassword(self, password: bytes | str) -> bool:
        if isinstance(password, str):
            password = password.encode("utf-8")
        return self.checkMD5Password(md5(password).digest())

    def checkMD5Password(self, md5Password: bytes) -> bool:
        if self.response is None:
            return False
        expected = _nonceDigest(
            md5Password, self.username, self.serverNonce, self.clientNonce
        )
        return hmac.compare_digest(self.response, expected)


class _PortalWrapper(pb._PortalWrapper):
    """
    The root object of a portal-backed server, one per connection.

    Stock clients call C{login} and C{loginAnonymous} as always; pbext
    clients call C{loginMethods} and then one of C{loginWithPassword},
    C{loginWithNonce} or C{loginWithCertificate}.
    """

    def __init__(
        self, portal: Portal, broker: pb.Broker, root: _PortalRoot | None = None
    ) -> None:
        super().__init__(portal, broker)
        self.loginRoot = root if root is not None else _PortalRoot(portal)

    # Stock PB's login calls.

    def remote_login(self, username: object) -> tuple[bytes, _PortalAuthChallenger]:
        if not self.loginRoot.classicLogin:
            self._auditFailure(CLASSIC, username, "classic login turned off")
            raise UnauthorizedLogin(
                "this server does not accept classic PB logins; log in with a "
                "pbext client"
            )
        c = _randomBytes(16)
        return c, _PortalAuthChallenger(self.portal, self.broker, username, c, self)

    def remote_loginAnonymous(self, mind: object) -> Any:
        return self.portalLogin(Anonymous(), mind, ANONYMOUS, None, throttle=False)

    # pbext's login calls.

    def remote_loginMethods(self) -> list[str]:
        """
        The logins this server accepts on this connection, strongest first.
        """
        interfaces = set(self.portal.listCredentialsInterfaces())
        methods = []
        if IUsernamePassword in interfaces and self._plaintextAllowed():
            methods.append(PLAINTEXT)
        if interfaces & {IUsernameHashedPassword, pb.IUsernameMD5Password}:
            methods.append(NONCE)
            if self.loginRoot.classicLogin:
                methods.append(CLASSIC)
        if IClientCertificate in interfaces and self._peerCertificate() is not None:
            methods.append(CERTIFICATE)
        if IAnonymous in interfaces:
            methods.append(ANONYMOUS)
        return methods

    def remote_loginWithPassword(
        self, username: object, password: object, mind: object
    ) -> Any:
        if not self._plaintextAllowed():
            self._auditFailure(PLAINTEXT, username, "connection is not TLS")
            raise UnauthorizedLogin(
                "this server accepts plaintext passwords only over TLS; "
                "connect through a TLS endpoint"
            )
        user = _toBytes(username, "username")
        credentials = UsernamePassword(user, _toBytes(password, "password"))
        return self.portalLogin(credentials, mind, PLAINTEXT, user)

    def remote_loginWithNonce(
        self, username: object, clientNonce: object
    ) -> tuple[bytes, _NonceChallenger]:
        user = _toBytes(username, "username")
        if not isinstance(clientNonce, bytes) or len(clientNonce) != NONCE_SIZE:
            raise UnauthorizedLogin(f"the client nonce must be {NONCE_SIZE} bytes")
        serverNonce = _randomBytes(NONCE_SIZE)
        return serverNonce, _NonceChallenger(self, user, serverNonce, clientNonce)

    def remote_loginWithCertificate(self, mind: object) -> Any:
        certificate = self._peerCertificate()
        if certificate is None:
            self._auditFailure(CERTIFICATE, None, "no verified client certificate")
            raise UnauthorizedLogin(
                "this connection has no verified TLS client certificate; "
                "connect over TLS with a certificate the server's authorities "
                "signed"
            )
        return self.portalLogin(
            ClientCertificate(certificate),
            mind,
            CERTIFICATE,
            commonName(certificate),
            throttle=False,
        )

    # The common path.

    def portalLogin(
        self,
        credentials: object,
        mind: object,
        method: str,
        username: object,
        throttle: bool = True,
    ) -> defer.Deferred[Any]:
        """
        Log C{credentials} in through the portal: wait out the throttle,
        audit the outcome and hand back the avatar as a reference.
        """
        peer = self.broker.transport.getPeer()
        throttler = self.loginRoot.loginThrottle if throttle else None
        fields = {
            "peer": _peerText(peer),
            "username": _usernameText(username),
            "method": method,
        }
        attempt: Attempt | None = None

        if throttler is None:
            d: defer.Deferred[None] = defer.succeed(None)
        else:
            try:
                attempt = throttler.reserve(
                    addressKey(peer),
                    None if username is None else _usernameKey(username),
                )
            except LoginThrottled as e:
                self._auditThrottled(fields, 0.0, e.retryAfter, e.limit)
                return defer.fail(e)
            if attempt.delay:
                self._auditThrottled(fields, attempt.delay, None, attempt.limit)
            d = throttler.wait(
                attempt,
                lambda delay, limit: self._auditThrottled(fields, delay, None, limit),
            )

        def check(ignored: None) -> Any:
            if self.broker.disconnected:
                # Nobody to hand the avatar to, and nothing would log it out.
                raise ConnectionDone("the connection closed while the login waited")
            return self.portal.login(credentials, mind, pb.IPerspective)

        def succeeded(result: tuple[Any, Any, Callable[[], None]]) -> Any:
            interface, avatar, logout = result
            if throttler is not None and attempt is not None:
                throttler.succeeded(attempt)
            auditLog.info(
                "pbext: {method} login of {username!r} from {peer} succeeded",
                pbextEvent="login",
                trusted=attempt is not None and attempt.trusted,
                **fields,
            )
            onLogin = self.loginRoot.onLogin
            if onLogin is not None:
                onLogin(self.broker, method)

            def auditedLogout() -> None:
                auditLog.info(
                    "pbext: {username!r} from {peer} logged out",
                    pbextEvent="logout",
                    **fields,
                )
                logout()

            return self._cbLogin((interface, avatar, auditedLogout))

        def failed(failure: Failure) -> Failure:
            if failure.check(LoginThrottled):
                value = failure.value
                self._auditThrottled(
                    fields,
                    0.0,
                    value.retryAfter,  # type: ignore[union-attr]
                    value.limit,  # type: ignore[union-attr]
                )
                return failure
            if throttler is not None and attempt is not None:
                if failure.check(UnauthorizedLogin):
                    throttler.failed(attempt)
                else:
                    throttler.abandoned(attempt)
            reason = failure.type.__name__ if failure.type else "error"
            auditLog.warn(
                "pbext: {method} login of {username!r} from {peer} failed: {reason}",
                pbextEvent="loginFailed",
                reason=reason,
                **fields,
            )
            return failure

        d.addCallback(check)
        d.addCallbacks(succeeded, failed)
        return d

    def _plaintextAllowed(self) -> bool:
        return self.loginRoot.allowPlaintextLogin or ISSLTransport.providedBy(
            self.broker.transport
        )

    def _peerCertificate(self) -> Any:
        return verifiedPeerCertificate(self.broker.transport)

    def _auditFailure(self, method: str, username: object, reason: str) -> None:
        auditLog.warn(
            "pbext: {method} login of {username!r} from {peer} failed: {reason}",
            pbextEvent="loginFailed",
            peer=_peerText(self.broker.transport.getPeer()),
            username=_usernameText(username),
            method=method,
            reason=reason,
        )

    def _auditThrottled(
        self,
        fields: dict[str, Any],
        delay: float,
        retryAfter: float | None,
        limit: str | None,
    ) -> None:
        if retryAfter is None:
            auditLog.warn(
                "pbext: {method} login of {username!r} from {peer} delayed "
                "{delay:.1f} s by the {limit} limit after recent failures",
                pbextEvent="loginThrottled",
                delay=delay,
                refused=False,
                limit=limit,
                **fields,
            )
        else:
            auditLog.warn(
                "pbext: {method} login of {username!r} from {peer} refused by "
                "the {limit} limit after recent failures; retry in "
                "{retryAfter:.0f} s",
                pbextEvent="loginThrottled",
                retryAfter=retryAfter,
                refused=True,
                limit=limit,
                **fields,
            )


@implementer(pb.IPBRoot)
class _PortalRoot:
    """
    Adapts a L{Portal} to L{pb.IPBRoot} with pbext's login objects, holding
    the login settings and the throttle shared by one factory's connections.

    @ivar classicLogin: serve classic PB's MD5 challenge (stock clients).
    @ivar allowPlaintextLogin: accept plaintext passwords without TLS.
    @ivar loginThrottle: the L{LoginThrottle}, or C{None} for none.
    @ivar onLogin: called with the broker and the login method each time a
        connection logs in, or L{None}; the server factory uses it to tell
        logged-in connections from the others (L{pbext.admission}).
    """

    onLogin: Callable[[pb.Broker, str], None] | None = None

    def __init__(
        self,
        portal: Portal,
        classicLogin: bool = True,
        allowPlaintextLogin: bool = False,
        loginThrottle: LoginThrottle | None = None,
    ) -> None:
        self.portal = portal
        self.classicLogin = classicLogin
        self.allowPlaintextLogin = allowPlaintextLogin
        self.loginThrottle = loginThrottle

    @classmethod
    def fromOptions(cls, portal: Portal, options: dict[str, Any]) -> _PortalRoot:
        """
        Build from a factory's pbext options: C{classicLogin},
        C{allowPlaintextLogin}, C{loginThrottle} (a L{LoginThrottle}, or
        C{None} to turn throttling off; a default L{LoginThrottle} on
        C{reactor} when absent) and C{reactor}.
        """
        if "loginThrottle" in options:
            throttle = options["loginThrottle"]
        else:
            clock: Any = options.get("reactor")
            if clock is None:
                from twisted.internet import reactor as clock
            throttle = LoginThrottle(clock)
        return cls(
            portal,
            classicLogin=bool(options.get("classicLogin", True)),
            allowPlaintextLogin=bool(options.get("allowPlaintextLogin", False)),
            loginThrottle=throttle,
        )

    def rootObject(self, broker: pb.Broker) -> _PortalWrapper:
        return _PortalWrapper(self.portal, broker, self)


# --- the client -------------------------------------------------------------


def peerIsPbext(broker: object) -> bool:
    """
    Whether C{broker}'s peer marked itself as pbext in its dialect offer.

    @since: pbext NEXT
    """
    return PBEXT_FEATURE in getattr(broker, "_pbextPeerFeatures", frozenset())


def _loginOptions(factory: object) -> dict[str, Any]:
    """
    The login options of C{factory}: those it was built with if it is one
    of pbext's factories (held in its C{_pbext} state, never read from a
    plain attribute an application's subclass may have), else none.
    """
    from pbext.broker import FactoryState

    state = getattr(factory, "_pbext", None)
    return state.options if isinstance(state, FactoryState) else {}


def loginOnRoot(
    factory: Any, root: pb.RemoteReference, credentials: object, client: object = None
) -> defer.Deferred[Any]:
    """
    Log in on C{root}, the root object of one of C{factory}'s connections:
    what L{pbext.PBClientFactory.login} does once it has the root.

    Against a stock server, classic PB's login, through the factory's
    C{_cbSendUsername} and C{_cbLoginAnonymous} hooks.  Against a pbext
    server, the strongest login both ends allow: C{"plaintext"} if the
    connection is TLS (or the factory option C{allowPlaintextLogin} is
    true), else C{"nonce"}, else C{"classic"} unless the factory option
    C{classicLogin} is false.  The choice is logged (C{pbextEvent}
    C{"loginMethodChosen"}).

    @param factory: the L{pb.PBClientFactory}; if it is pbext's, the
        pbext options it was built with hold the login options.
    @param credentials: L{IUsernamePassword} (username and password as
        bytes or str), L{IAnonymous} or L{CertificateLogin}.
    @param client: the mind handed to the server's realm.
    @return: a L{defer.Deferred} firing with the avatar's
        L{pb.RemoteReference}.
    @since: pbext NEXT
    """
    return defer.maybeDeferred(_ClientLogin(factory, credentials, client).start, root)


def login(factory: Any, credentials: object, client: object = None) -> Any:
    """
    Get C{factory}'s root object and log in on it with L{loginOnRoot}.

    @since: pbext NEXT
    """
    d = factory.getRootObject()
    return d.addCallback(lambda root: loginOnRoot(factory, root, credentials, client))


class _ClientLogin:
    """
    One login attempt of a client factory.
    """

    def __init__(self, factory: Any, credentials: object, client: object) -> None:
        self.factory = factory
        self.credentials = credentials
        self.client = client
        self.options: dict[str, Any] = _loginOptions(factory)

    def start(self, root: pb.RemoteReference) -> Any:
        self.root = root
        broker = root.broker
        self.pbext = peerIsPbext(broker)
        self.peer = _peerText(broker.transport.getPeer())
        credentials = self.credentials
        if IAnonymous.providedBy(credentials):
            self._chose(ANONYMOUS, None)
            return self.factory._cbLoginAnonymous(root, self.client)
        if isinstance(credentials, CertificateLogin):
            if not self.pbext:
                raise UnauthorizedLogin(
                    "certificate logins need a pbext server; this one is stock PB"
                )
            self._chose(CERTIFICATE, None)
            return root.callRemote("loginWithCertificate", self.client)
        self.username = _toBytes(credentials.username, "username")  # type: ignore[attr-defined]
        self.password = _toBytes(credentials.password, "password")  # type: ignore[attr-defined]
        if not self.pbext:
            return self._classic(None)
        d = root.callRemote("loginMethods")
        d.addCallbacks(self._choose, self._noMethods)
        return d

    def _noMethods(self, failure: Failure) -> Any:
        # A pbext server whose root is not a portal (pbext's broker reports
        # the unknown method as a policy violation, stock PB's as
        # NoSuchMethod): try the classic login, which that root may have.
        if failure.check(pb.PBConnectionLost, pb.DeadReferenceError):
            return failure
        return self._classic(None)

    def _choose(self, offered: object) -> Any:
        methods = (
            [m for m in offered if isinstance(m, str)]
            if isinstance(offered, (list, tuple))
            else []
        )
        encrypted = ISSLTransport.providedBy(self.root.broker.transport)
        plaintextOK = encrypted or bool(self.options.get("allowPlaintextLogin"))
        classicOK = bool(self.options.get("classicLogin", True))
        if PLAINTEXT in methods and plaintextOK:
            self._chose(PLAINTEXT, methods)
            return self.root.callRemote(
                "loginWithPassword", self.username, self.password, self.client
            )
        if NONCE in methods:
            self._chose(NONCE, methods)
            return self._nonce()
        if CLASSIC in methods and classicOK:
            return self._classic(methods)
        hints = []
        if PLAINTEXT in methods:
            hints.append(
                "the server wants the password itself, which this client sends "
                "only over TLS (connect with tls:, or set allowPlaintextLogin=True "
                "on a trusted connection)"
            )
        if CLASSIC in methods and not classicOK:
            hints.append("classic MD5 login is turned off on this client")
        raise UnauthorizedLogin(
            f"no login method both ends allow (the server offers "
            f"{', '.join(methods) or 'none'})"
            + (": " + "; ".join(hints) if hints else "")
        )

    def _classic(self, offered: list[str] | None) -> Any:
        if not self.options.get("classicLogin", True):
            raise UnauthorizedLogin(
                "this client turned classic MD5 login off, and the server "
                "offers no other password login"
            )
        self._chose(CLASSIC, offered)
        return self.factory._cbSendUsername(
            self.root, self.username, self.password, self.client
        )

    def _nonce(self) -> Any:
        clientNonce = _randomBytes(NONCE_SIZE)
        d = self.root.callRemote("loginWithNonce", self.username, clientNonce)

        def respond(result: object) -> Any:
            if not (isinstance(result, (list, tuple)) and len(result) == 2):
                raise UnauthorizedLogin("the server's nonce challenge is malformed")
            serverNonce, challenger = result
            if not isinstance(serverNonce, bytes) or len(serverNonce) < 16:
                raise UnauthorizedLogin("the server's nonce is too short")
            response = nonceResponse(
                self.password, self.username, serverNonce, clientNonce
            )
            return challenger.callRemote("respond", response, self.client)

        return d.addCallback(respond)

    def _chose(self, method: str, offered: list[str] | None) -> None:
        username = getattr(self, "username", None)
        _log.info(
            "pbext: logging in to {peer} with the {method} login"
            " (server offers: {offered})",
            pbextEvent="loginMethodChosen",
            peer=self.peer,
            username=_usernameText(username),
            method=method,
            offered=", ".join(offered)
            if offered is not None
            else ("pbext, not asked" if self.pbext else "stock PB, classic only"),
            pbextPeer=self.pbext,
        )


__all__ = [
    "PBEXT_FEATURE",
    "PLAINTEXT",
    "NONCE",
    "CLASSIC",
    "CERTIFICATE",
    "ANONYMOUS",
    "NONCE_SIZE",
    "IClientCertificate",
    "ClientCertificate",
    "ClientCertificateChecker",
    "CertificateLogin",
    "LoginThrottle",
    "LoginThrottled",
    "addressKey",
    "auditLog",
    "commonName",
    "askForClientCertificates",
    "loadAuthorities",
    "login",
    "loginOnRoot",
    "nonceResponse",
    "peerIsPbext",
    "verifiedPeerCertificate",
]
