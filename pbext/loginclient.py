# -*- test-case-name: tests.test_login -*-
"""
The client side of logging in: choosing the strongest login both ends
allow.

A pbext client asks the root for C{loginMethods()} only when the server
marked itself as pbext in its banana dialect offer
(L{pbext.loginprotocol.peerIsPbext}), so stock servers never see a call
they do not know; against them it logs in as classic PB does, through the
client factory's own hooks.

@since: pbext NEXT
"""

from __future__ import annotations

import os
from typing import Any

from twisted.cred.credentials import IAnonymous
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb

from pbext import _twisted
from pbext._peer import peerText
from pbext.clientcerts import CertificateLogin
from pbext.loginprotocol import (
    ANONYMOUS,
    CERTIFICATE,
    CLASSIC,
    NONCE,
    NONCE_SIZE,
    PLAINTEXT,
    nonceResponse,
    peerIsPbext,
    toBytes,
    usernameText,
)

__all__ = ["login", "loginOnRoot"]

_log = Logger(namespace="pbext.login")

#: Where client nonces come from (tests replace it).
_randomBytes = os.urandom


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
    factory: pb.PBClientFactory,
    root: pb.RemoteReference,
    credentials: object,
    client: object = None,
) -> defer.Deferred[pb.RemoteReference]:
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


def login(
    factory: pb.PBClientFactory, credentials: object, client: object = None
) -> defer.Deferred[pb.RemoteReference]:
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

    def __init__(
        self, factory: pb.PBClientFactory, credentials: object, client: object
    ) -> None:
        self.factory = factory
        self.credentials = credentials
        self.client = client
        self.options: dict[str, Any] = _loginOptions(factory)

    def start(self, root: pb.RemoteReference) -> Any:
        self.root = root
        broker = root.broker
        self.pbext = peerIsPbext(broker)
        self.peer = peerText(broker.transport.getPeer())
        credentials = self.credentials
        if IAnonymous.providedBy(credentials):
            self._chose(ANONYMOUS, None)
            return _twisted.loginAnonymous(self.factory, root, self.client)
        if isinstance(credentials, CertificateLogin):
            if not self.pbext:
                raise UnauthorizedLogin(
                    "certificate logins need a pbext server; this one is stock PB"
                )
            self._chose(CERTIFICATE, None)
            return root.callRemote("loginWithCertificate", self.client)
        self.username = toBytes(credentials.username, "username")  # type: ignore[attr-defined]  # IUsernamePassword's attributes, which zope's interface does not declare to mypy
        self.password = toBytes(credentials.password, "password")  # type: ignore[attr-defined]  # as above
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
        return _twisted.sendUsername(
            self.factory, self.root, self.username, self.password, self.client
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
            username=usernameText(username),
            method=method,
            offered=", ".join(offered)
            if offered is not None
            else ("pbext, not asked" if self.pbext else "stock PB, classic only"),
            pbextPeer=self.pbext,
        )
