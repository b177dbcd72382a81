"""
How two pbext peers find each other on the classic wire: a pbext server
adds L{PBEXT_DIALECT} to banana's dialect offer, a pbext client that sees
it says hello to the control object every pbext broker publishes as
C{b"pbext"}, which also answers pings and cancels calls.  A stock peer
ignores the offer and never calls the control object.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.spread import pb

from pbext import keepalive
from pbext._wire import CONTROL_NAME, PBEXT_DIALECT

if TYPE_CHECKING:
    from pbext.broker import Broker


#: What a pbext peer says it supports, as every pbext peer says it today:
#: one frozenset shared by the connections that hear it, not one each.
PBEXT_ONLY: frozenset[bytes] = frozenset([PBEXT_DIALECT])


def peerFeatures(features: object) -> frozenset[bytes]:
    """
    The features a peer's C{hello} names (short byte strings only), as a
    frozenset; the shared L{PBEXT_ONLY} when that is all they are.
    """
    named = frozenset(
        f
        for f in features  # type: ignore[attr-defined] # not iterable: TypeError, an error answer
        if isinstance(f, bytes) and len(f) < 64
    )
    return PBEXT_ONLY if named == PBEXT_ONLY else named


class Control(pb.Referenceable):
    """
    The object a pbext broker publishes as C{b"pbext"} for a pbext peer:
    hello, ping and remote cancellation.

    No connection stores one: L{localObjectForID} makes one for each call
    to it (a handful per connection: the hello, pings, cancels), so an
    idle connection holds nothing for it.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def remote_hello(self, features: list[bytes]) -> list[bytes]:
        """
        The peer says it is pbext and which features it has.
        """
        self.broker._pbextPeerFeatures = peerFeatures(features)
        return [PBEXT_DIALECT]

    def remote_ping(self) -> bool:
        """
        Answer a keepalive ping.
        """
        return True

    def remote_cancel(self, requestID: int) -> None:
        """
        Cancel the running call C{requestID} of this connection, if any.
        """
        self.broker._pbextDispatcher.cancel(requestID)

    # -- introspection (pbext.introspect) --
    def remote_describe(self, target: object) -> object:
        """
        Describe C{target}, an object the peer holds a reference to.
        """
        from pbext import introspect

        return introspect.answerDescribe(self.broker, target)


#: The control object's name as text (Twisted accepts either).
_CONTROL_TEXT = CONTROL_NAME.decode("ascii")


def localObjectForID(broker: Broker, luid: object) -> object:
    """
    C{Broker.localObjectForID}: the local object C{luid} names, as
    Twisted's broker finds it, or for C{b"pbext"} a L{Control} of
    C{broker}, made for this call and stored nowhere.
    """
    lob = broker.localObjects.get(luid)
    if lob is not None:
        return lob.object
    if luid == CONTROL_NAME or luid == _CONTROL_TEXT:
        return Control(broker)
    return pb.Broker.localObjectForID(broker, luid)


def acceptDialect(broker: Broker, obj: object) -> bool:
    """
    Check the first expression of banana's handshake before C{broker}
    handles it: the server's offer (a list, noting whether the server is
    pbext) on a client, the client's choice (a known dialect) on a server.
    A bad one drops the connection.

    @return: whether the broker may handle C{obj}.
    """
    if broker.isClient:
        if isinstance(obj, list) and PBEXT_DIALECT in obj:
            broker._pbextPeerFeatures = PBEXT_ONLY
        if not isinstance(obj, list):
            broker._pbextDropConnection("badHandshake", "dialect offer is not a list")
            return False
    elif obj not in broker.knownDialects:
        broker._pbextDropConnection(
            "badHandshake", "client chose an unknown dialect", dialect=obj
        )
        return False
    return True


def sayHello(broker: Broker) -> None:
    """
    The connection is about to be ready: a pbext client whose server
    offered L{PBEXT_DIALECT} tells the server's control object it is pbext.
    Said after the version and before the application hears of the
    connection (first among C{broker.connects}), so that the server knows
    this side is pbext before its first call: what it may answer (streams,
    descriptions) depends on it.
    """
    if broker.isClient and PBEXT_DIALECT in broker._pbextPeerFeatures:

        def hello() -> None:
            broker.remoteForName(CONTROL_NAME).callRemote(
                "hello", [PBEXT_DIALECT], pbanswer=0
            )

        broker.connects.insert(0, hello)


def ping(broker: Broker) -> defer.Deferred[Any]:
    """
    Ask C{broker}'s peer for an answer: a pbext peer's control object's
    C{ping}, else a request every stock broker answers without side effects
    (see L{pbext.keepalive.pingPeer}).
    """
    if PBEXT_DIALECT in broker._pbextPeerFeatures:
        return broker.remoteForName(CONTROL_NAME).callRemote("ping")
    return keepalive.pingPeer(broker)
