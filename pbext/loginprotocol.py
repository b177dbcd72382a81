# -*- test-case-name: tests.test_login -*-
"""
What both ends of a pbext login agree on: the names of the login methods,
the marker of a pbext peer, and the answer to a C{"nonce"} challenge.

The server side is L{pbext.loginserver}, the client side
L{pbext.loginclient}; L{pbext.login} gathers the public names.

@since: pbext NEXT
"""

from __future__ import annotations

import hmac
from hashlib import md5, sha256

from twisted.cred.error import UnauthorizedLogin

__all__ = [
    "ANONYMOUS",
    "CERTIFICATE",
    "CLASSIC",
    "NONCE",
    "NONCE_SIZE",
    "PBEXT_FEATURE",
    "PLAINTEXT",
    "nonceResponse",
    "peerIsPbext",
]

#: The marker a pbext server adds to banana's dialect offer; a broker that
#: saw it lists it in C{broker.peerFeatures}.
PBEXT_FEATURE = b"pbext/1"

#: Login methods, strongest first, as C{loginMethods()} names them.
PLAINTEXT = "plaintext"
NONCE = "nonce"
CLASSIC = "classic"
CERTIFICATE = "certificate"
ANONYMOUS = "anonymous"

#: Length in bytes of each nonce of the C{"nonce"} login.
NONCE_SIZE = 32

_NONCE_LABEL = b"pbext nonce login v1\x00"

#: Usernames longer than this are cut short in log events.
_LOG_USERNAME_LENGTH = 128


def peerIsPbext(broker: object) -> bool:
    """
    Whether C{broker}'s peer marked itself as pbext in its dialect offer.

    @since: pbext NEXT
    """
    return PBEXT_FEATURE in getattr(broker, "_pbextPeerFeatures", frozenset())


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
    return nonceDigest(md5(password).digest(), username, serverNonce, clientNonce)


def nonceDigest(
    key: bytes, username: bytes, serverNonce: bytes, clientNonce: bytes
) -> bytes:
    """
    L{nonceResponse} from the MD5 digest of the password, as a checker
    holding digests compares it.
    """
    message = _NONCE_LABEL + serverNonce + clientNonce + username
    return hmac.new(key, message, sha256).digest()


def toBytes(value: object, what: str) -> bytes:
    """
    A username or password as bytes (text is UTF-8 encoded).

    @raise UnauthorizedLogin: if C{value} is neither bytes nor text.
    """
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise UnauthorizedLogin(
        f"the {what} is a {type(value).__name__}; send it as bytes or str"
    )


def usernameText(username: object) -> str | None:
    """
    How log events show a username: as text, long ones cut short.
    """
    if username is None:
        return None
    if isinstance(username, bytes):
        text = username.decode("utf-8", "backslashreplace")
    else:
        text = str(username)
    if len(text) > _LOG_USERNAME_LENGTH:
        text = text[:_LOG_USERNAME_LENGTH] + "..."
    return text
