# -*- test-case-name: tests.test_login -*-
"""
The server side of logging in: the root object a portal-backed server
gives each connection, and what its login calls do.

Stock clients call C{login} (classic PB's MD5 challenge) and
C{loginAnonymous} on the root as always; pbext clients call
C{loginMethods} and then one of C{loginWithPassword}, C{loginWithNonce}
or C{loginWithCertificate} (L{pbext.loginprotocol} names them).  Every
login goes through L{_PortalLogin}: it waits out the factory's
L{LoginThrottle}, checks the credentials with the portal, and audits the
outcome on L{auditLog}.

@since: pbext NEXT
"""

from __future__ import annotations

import hmac
import os
from hashlib import md5
from typing import Any, Callable

from twisted.cred.credentials import (
    Anonymous,
    IAnonymous,
    IUsernameHashedPassword,
    IUsernamePassword,
    UsernamePassword,
)
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from zope.interface import implementer

from pbext import _twisted
from pbext._peer import peerText
from pbext.clientcerts import (
    ClientCertificate,
    IClientCertificate,
    commonName,
    verifiedPeerCertificate,
)
from pbext.loginprotocol import (
    ANONYMOUS,
    CERTIFICATE,
    CLASSIC,
    NONCE,
    NONCE_SIZE,
    PLAINTEXT,
    nonceDigest,
    toBytes,
    usernameText,
)
from pbext.throttle import (
    Attempt,
    LoginThrottle,
    LoginThrottled,
    addressKey,
    usernameKey,
)

__all__ = ["auditLog"]

#: The audit log: one event per login, failed login, throttled attempt and
#: logout.  Events carry C{pbextEvent} (C{"login"}, C{"loginFailed"},
#: C{"loginThrottled"}, C{"logout"}), C{peer}, C{username} and C{method}.
auditLog = Logger(namespace="pbext.login.audit")

#: Where challenges and nonces come from (tests replace it).
_randomBytes = os.urandom


class _PortalAuthChallenger(_twisted.PortalAuthChallenger):
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
        expected = nonceDigest(
            md5Password, self.username, self.serverNonce, self.clientNonce
        )
        return hmac.compare_digest(self.response, expected)


class _PortalWrapper(_twisted.PortalWrapper):
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
        user = toBytes(username, "username")
        credentials = UsernamePassword(user, toBytes(password, "password"))
        return self.portalLogin(credentials, mind, PLAINTEXT, user)

    def remote_loginWithNonce(
        self, username: object, clientNonce: object
    ) -> tuple[bytes, _NonceChallenger]:
        user = toBytes(username, "username")
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
        return _PortalLogin(self, credentials, mind, method, username, throttle).start()

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
            peer=peerText(self.broker.transport.getPeer()),
            username=usernameText(username),
            method=method,
            reason=reason,
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


class _PortalLogin:
    """
    One login through the portal of a L{_PortalWrapper}: wait out the
    throttle, check the credentials, audit the outcome and hand back the
    avatar as a reference.

    @ivar fields: the fields of every audit event of this login.
    @ivar attempt: the throttle's L{Attempt}, or L{None} when this login
        is not throttled.
    """

    def __init__(
        self,
        wrapper: _PortalWrapper,
        credentials: object,
        mind: object,
        method: str,
        username: object,
        throttle: bool,
    ) -> None:
        self.wrapper = wrapper
        self.credentials = credentials
        self.mind = mind
        self.method = method
        self.username = username
        self.peer = wrapper.broker.transport.getPeer()
        self.throttler: LoginThrottle | None = (
            wrapper.loginRoot.loginThrottle if throttle else None
        )
        self.fields = {
            "peer": peerText(self.peer),
            "username": usernameText(username),
            "method": method,
        }
        self.attempt: Attempt | None = None

    def start(self) -> defer.Deferred[Any]:
        """
        Run the login; the result fires with the avatar's reference.
        """
        throttler = self.throttler
        if throttler is None:
            d: defer.Deferred[None] = defer.succeed(None)
        else:
            username = self.username
            try:
                attempt = throttler.reserve(
                    addressKey(self.peer),
                    None if username is None else usernameKey(username),
                )
            except LoginThrottled as e:
                _auditThrottled(self.fields, 0.0, e.retryAfter, e.limit)
                return defer.fail(e)
            self.attempt = attempt
            if attempt.delay:
                _auditThrottled(self.fields, attempt.delay, None, attempt.limit)
            d = throttler.wait(
                attempt,
                lambda delay, limit: _auditThrottled(self.fields, delay, None, limit),
            )
        d.addCallback(self._check)
        d.addCallbacks(self._succeeded, self._failed)
        return d

    def _check(self, ignored: None) -> Any:
        wrapper = self.wrapper
        if wrapper.broker.disconnected:
            # Nobody to hand the avatar to, and nothing would log it out.
            raise ConnectionDone("the connection closed while the login waited")
        return wrapper.portal.login(self.credentials, self.mind, pb.IPerspective)

    def _succeeded(self, result: tuple[Any, Any, Callable[[], None]]) -> Any:
        interface, avatar, logout = result
        attempt = self.attempt
        if self.throttler is not None and attempt is not None:
            self.throttler.succeeded(attempt)
        fields = self.fields
        auditLog.info(
            "pbext: {method} login of {username!r} from {peer} succeeded",
            pbextEvent="login",
            trusted=attempt is not None and attempt.trusted,
            **fields,
        )
        wrapper = self.wrapper
        onLogin = wrapper.loginRoot.onLogin
        if onLogin is not None:
            onLogin(wrapper.broker, self.method)

        def auditedLogout() -> None:
            auditLog.info(
                "pbext: {username!r} from {peer} logged out",
                pbextEvent="logout",
                **fields,
            )
            logout()

        return _twisted.cbLogin(wrapper, (interface, avatar, auditedLogout))

    def _failed(self, failure: Failure) -> Failure:
        if failure.check(LoginThrottled):
            value = failure.value
            _auditThrottled(
                self.fields,
                0.0,
                value.retryAfter,  # type: ignore[union-attr]  # the throttle's failure carries these; Failure.value is typed BaseException
                value.limit,  # type: ignore[union-attr]  # as above
            )
            return failure
        attempt = self.attempt
        if self.throttler is not None and attempt is not None:
            if failure.check(UnauthorizedLogin):
                self.throttler.failed(attempt)
            else:
                self.throttler.abandoned(attempt)
        reason = failure.type.__name__ if failure.type else "error"
        auditLog.warn(
            "pbext: {method} login of {username!r} from {peer} failed: {reason}",
            pbextEvent="loginFailed",
            reason=reason,
            **self.fields,
        )
        return failure


def _auditThrottled(
    fields: dict[str, Any],
    delay: float,
    retryAfter: float | None,
    limit: str | None,
) -> None:
    """
    Audit a login the throttle delayed (C{retryAfter} is L{None}) or
    refused.
    """
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
