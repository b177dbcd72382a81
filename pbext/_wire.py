"""
The names of pbext's broker that a peer sees: the dialect a pbext server
offers, the name of its control object, and the exceptions a refused or
timed-out call fails with.

The exceptions travel by their qualified name, C{pbext.broker.*}, which
is where applications import them from; they are defined here so that
each part of the broker (L{pbext._dispatch}, L{pbext._calls}, ...) can
raise them without importing the broker.

@since: pbext NEXT
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.spread import pb

#: The entry a pbext server adds to banana's dialect offer.
PBEXT_DIALECT = b"pbext/1"

#: The name under which every pbext broker publishes its control object.
CONTROL_NAME = b"pbext"

#: The module the exceptions below say they belong to: their name on the
#: wire (a peer traps C{pbext.broker.PolicyViolation}) and in the docs.
_PUBLIC_MODULE = "pbext.broker"


class PolicyViolation(pb.Error):
    """
    A call was refused by the connection's security policy or limits.

    Sent to the peer as the error answer of the refused call.  A
    L{pb.Error} subclass, so the server logs no traceback for it.
    """


class MessageTooLarge(PolicyViolation):
    """
    An answer or call would exceed the policy's outgoing message limit.
    """


class CallTimeout(defer.TimeoutError):
    """
    A remote call got no answer in the time allowed.

    The late answer, if one comes, is discarded quietly.
    """


for _exception in (PolicyViolation, MessageTooLarge, CallTimeout):
    _exception.__module__ = _PUBLIC_MODULE
del _exception
