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

The parts live in modules of their own; this module gathers their public
names, where the documentation shows them:

    - L{pbext.loginprotocol}: what both ends agree on (method names, the
      pbext marker, the nonce answer);
    - L{pbext.loginserver}: the server's root object and its logins, and
      the audit log;
    - L{pbext.loginclient}: the client's choice of login;
    - L{pbext.clientcerts}: TLS client certificates as credentials;
    - L{pbext.certreactor}: TLS ports that ask clients for certificates;
    - L{pbext.throttle}: the login throttle.

@since: pbext NEXT
"""

from __future__ import annotations

from pbext.certreactor import askForClientCertificates, loadAuthorities
from pbext.clientcerts import (
    CertificateLogin,
    ClientCertificate,
    ClientCertificateChecker,
    IClientCertificate,
    commonName,
    verifiedPeerCertificate,
)
from pbext.loginclient import login, loginOnRoot
from pbext.loginprotocol import (
    ANONYMOUS,
    CERTIFICATE,
    CLASSIC,
    NONCE,
    NONCE_SIZE,
    PBEXT_FEATURE,
    PLAINTEXT,
    nonceResponse,
    peerIsPbext,
)
from pbext.loginserver import auditLog
from pbext.throttle import LoginThrottle, LoginThrottled, addressKey

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
