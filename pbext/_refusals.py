"""
A refused login copied from the server, as the local exception callers
catch.

Twisted's classic C{login()} hands its caller the L{pb.CopiedFailure} the
server sent; C{failure.check(UnauthorizedLogin)} works on it, but awaiting
the L{Deferred} raises a bare L{pb.RemoteError}, which C{except
UnauthorizedLogin} does not catch and whose message is empty when the
server's was.  L{pbext.client.connect} turns refusals into local exceptions.
"""

from __future__ import annotations

from twisted.cred import error
from twisted.python.failure import Failure
from twisted.spread import pb

#: Local exceptions for refusals copied from a server, by the remote type's
#: dotted name; a subclass (such as pbext's LoginThrottled) maps to the
#: class it derives from.
_REFUSALS: list[tuple[str, type[Exception]]] = [
    ("twisted.cred.error.LoginDenied", error.LoginDenied),
    ("twisted.cred.error.UnauthorizedLogin", error.UnauthorizedLogin),
    ("twisted.cred.error.LoginFailed", error.LoginFailed),
]

#: The message of a refusal the server sent without one.
REFUSED = "the server refused the login; check the username and password"


def localRefusal(reason: Failure) -> Failure:
    """
    Turn a refused login copied from the server into a local failure of
    the same L{twisted.cred.error} type, with a message; leave any other
    failure as it is.
    """
    if not isinstance(reason, pb.CopiedFailure):
        return reason
    for name, kind in _REFUSALS:
        if reason.check(name):
            message = reason.getErrorMessage()
            if isinstance(message, bytes):
                message = message.decode("utf-8", "replace")
            return Failure(kind(message or REFUSED))
    return reason
