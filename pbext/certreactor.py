# -*- test-case-name: tests.test_tls -*-
"""
Make a server's TLS ports ask clients for certificates.

L{askForClientCertificates} wraps a reactor so that the TLS ports it
listens on ask each client for a certificate and verify it against the
certificate authorities L{loadAuthorities} read; the verified certificate
can then log the client in (L{pbext.clientcerts}).

@since: pbext NEXT
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLContextFactory,
    IReactorCore,
)
from zope.interface import implementer

if TYPE_CHECKING:
    from OpenSSL.SSL import Context
    from twisted.internet.protocol import ServerFactory
    from twisted.internet.ssl import Certificate

__all__ = ["askForClientCertificates", "loadAuthorities"]


@implementer(IOpenSSLContextFactory)
class _AskForClientCertificates:
    """
    Wraps a TLS server context factory so the context asks the client for a
    certificate (optional) and verifies it against C{authorities}.
    """

    def __init__(self, contextFactory: Any, authorities: Sequence[Certificate]) -> None:
        self._contextFactory = contextFactory
        self._authorities = list(authorities)
        self._configured: set[int] = set()

    def getContext(self) -> Context:
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

    def __init__(self, reactor: Any, authorities: Sequence[Certificate]) -> None:
        # Any: the reactor askForClientCertificates was given, whose
        # listenSSL is called (IReactorSSL) and every other attribute
        # passed on; no one type says both.
        self._reactor = reactor
        self._authorities = list(authorities)

    def listenSSL(
        self,
        port: int,
        factory: ServerFactory[Any],
        contextFactory: IOpenSSLContextFactory,
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        wrapped = _AskForClientCertificates(contextFactory, self._authorities)
        return self._reactor.listenSSL(port, factory, wrapped, backlog, interface)

    def __getattr__(self, name: str) -> Any:
        # Any: whatever the wrapped reactor's attribute is.
        return getattr(self._reactor, name)


def askForClientCertificates(
    reactor: IReactorCore, authorities: Sequence[Certificate]
) -> Any:
    """
    Wrap C{reactor} so that TLS ports it listens on (C{ssl:} endpoint
    descriptions, also under C{haproxy:}) ask each client for a
    certificate and verify it against C{authorities}.

    A client without a certificate still connects (and can log in with a
    password); a client with a certificate that does not verify fails the
    TLS handshake.  Use it where endpoint descriptions are turned into
    ports, e.g. C{PBServerService(factory, listen, reactor=...)}.

    @param reactor: the reactor to wrap; it provides
        L{twisted.internet.interfaces.IReactorSSL} too if C{ssl:} ports
        are listened on.
    @param authorities: L{twisted.internet.ssl.Certificate}s of the
        certificate authorities whose client certificates are accepted.
    @return: a proxy of C{reactor}: its own C{listenSSL}, every other
        attribute C{reactor}'s.  (Typed C{Any}: it stands for C{reactor}
        with whatever interfaces C{reactor} provides, which no one type
        says, and is passed on as a reactor, e.g. as the C{IReactorCore} of
        L{pbext.server.PBServerService}.)
    @since: pbext NEXT
    """
    return _ClientCertificateReactor(reactor, authorities)


def loadAuthorities(path: str) -> list[Certificate]:
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
