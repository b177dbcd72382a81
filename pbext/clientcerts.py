# -*- test-case-name: tests.test_tls -*-
"""
TLS client certificates as twisted.cred credentials.

A server whose TLS layer asked each client for a certificate and verified
it (L{pbext.certreactor.askForClientCertificates}) can let the certificate
itself log the client in: the server's portal receives
L{ClientCertificate} credentials (L{IClientCertificate}) for a verified
certificate (L{verifiedPeerCertificate}), and L{ClientCertificateChecker}
maps it to an avatar ID.  A client asks for such a login by logging in
with L{CertificateLogin}.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.interfaces import ISSLTransport
from zope.interface import Attribute, implementer

if TYPE_CHECKING:
    from twisted.internet.ssl import Certificate

__all__ = [
    "CertificateLogin",
    "ClientCertificate",
    "ClientCertificateChecker",
    "IClientCertificate",
    "commonName",
    "verifiedPeerCertificate",
]


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

    def __init__(self, certificate: Certificate) -> None:
        self.certificate = certificate


def commonName(certificate: Certificate) -> bytes | None:
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
        self, avatarIdFor: Callable[[Certificate], bytes | None] | None = None
    ) -> None:
        self.avatarIdFor = avatarIdFor if avatarIdFor is not None else commonName

    def requestAvatarId(
        self, credentials: IClientCertificate
    ) -> defer.Deferred[bytes | tuple[()]]:
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


def verifiedPeerCertificate(transport: object) -> Certificate | None:
    """
    The peer's TLS certificate, if C{transport} is TLS, asked the peer for a
    certificate and verified it.

    @return: a L{twisted.internet.ssl.Certificate}, or C{None}.
    @since: pbext NEXT
    """
    if not ISSLTransport.providedBy(transport):
        return None
    try:
        x509 = transport.getPeerCertificate()  # type: ignore[attr-defined]  # ISSLTransport.providedBy above narrows nothing for mypy
        handle = transport.getHandle()  # type: ignore[attr-defined]  # as above
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
