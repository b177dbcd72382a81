# -*- test-case-name: tests.test_twisted_internals -*-
"""
Every private Twisted name pbext relies on, in one place.

pbext extends Twisted's Perspective Broker by subclassing and calling parts
of Twisted that are not public API: jelly's jellier and unjellier, pb's
broker methods and login helpers, the endpoint wrapper, crefutil's
placeholders, banana's prefix limit and the TCP transport's write buffer.
Twisted may change any of them in any release.  So the rest of pbext never
names them: it uses what this module gives.

This module holds three lists:

  - the private classes, functions and constants of Twisted's modules,
    imported here only (L{Jellier}, L{Unjellier}, L{DictKeyAndValue} ...);
  - accessor functions for the private methods and attributes pbext calls
    or reads on Twisted's objects (L{checkMutable}, L{cbLogin},
    L{writeBufferEmpty} ...), listed in L{MEMBERS};
  - the private methods pbext's subclasses override and call, whose names
    must stay as Twisted spells them because Twisted calls them
    (L{OVERRIDDEN}).

C{tests/test_twisted_internals.py} checks the shape pbext expects of every
entry (that it exists, how it is called, which attributes it sets), so a
Twisted release that moves one fails there, naming it; and it checks that
no other pbext module touches a private Twisted name directly.

This is a private module: its API changes with pbext's needs.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from twisted.internet import abstract, endpoints
from twisted.persisted import crefutil
from twisted.spread import banana, flavors, jelly, pb

# --- Private classes, functions and constants --------------------------------

#: The base of L{pbext._jelly.Jellier}.
Jellier = jelly._Jellier

#: The base of L{pbext._jelly.Unjellier}.
Unjellier = jelly._Unjellier

#: Make an instance of a class without calling its C{__init__}.
createBlank = jelly._createBlank

#: Make an instance of a class from a state dictionary, without C{__init__}.
newInstance = jelly._newInstance

#: The namespace jelly's module-level functions run in, holding the type
#: names jelly writes (read once: attribute lookups on the jelly module go
#: through a slow deprecation proxy).
JELLY_NAMESPACE: Mapping[str, Any] = jelly.jelly.__globals__

#: crefutil's placeholder that fills C{dict[key] = value} once both are known.
DictKeyAndValue = crefutil._DictKeyAndValue


#: The root object of a portal-backed PB server (base of pbext's).
PortalWrapper = pb._PortalWrapper

#: Classic PB's challenger and credentials (base of pbext's).
PortalAuthChallenger = pb._PortalAuthChallenger

#: What Twisted's client endpoints put between the transport and the
#: protocol, or L{None} if this Twisted has none.
WrappingProtocol: type | None = getattr(endpoints, "_WrappingProtocol", None)


# --- Private members and globals pbext calls or reads ------------------------


def prefixLimit() -> int:
    """
    The prefix length banana gives a new connection (C{banana._PREFIX_LIMIT},
    which C{banana.setPrefixLimit} changes), read when asked.
    """
    limit: int = banana._PREFIX_LIMIT  # type: ignore[assignment]  # typed by its first value, None
    return limit


def checkMutable(jellier: Any, obj: object) -> Any:
    """
    A jellier's back reference to C{obj} if it was jellied already in this
    message (C{jelly._Jellier._checkMutable}), else L{None}.
    """
    return jellier._checkMutable(obj)


def mutableChecker(jellier: object) -> Callable[[object], Any] | None:
    """
    C{jellier}'s L{checkMutable} as a bound method, or L{None} if it is not
    a jelly jellier.
    """
    return getattr(jellier, "_checkMutable", None)


def maybePostUnjelly(unjellier: Any, unjellied: object) -> Any:
    """
    Queue C{unjellied}'s C{postUnjelly} on C{unjellier}, if it has one
    (C{jelly._Unjellier._maybePostUnjelly}); return C{unjellied}.
    """
    return unjellier._maybePostUnjelly(unjellied)


def borgify(cache: flavors.RemoteCache) -> Any:
    """
    A new copy of the remote cache C{cache} sharing its state
    (C{flavors.RemoteCache._borgify}).
    """
    return cache._borgify()


def cbLogin(wrapper: Any, result: tuple[Any, Any, Callable[[], None]]) -> Any:
    """
    Hand a logged-in avatar back to the client as a reference, with its
    logout run when the connection ends (C{pb._JellyableAvatarMixin._cbLogin}).
    """
    return wrapper._cbLogin(result)


def sendUsername(
    factory: Any, root: Any, username: bytes, password: bytes, client: object
) -> Any:
    """
    Classic PB's login on C{root} through C{factory}'s hook
    (C{pb.PBClientFactory._cbSendUsername}, which Buildbot overrides).
    """
    return factory._cbSendUsername(root, username, password, client)


def loginAnonymous(factory: Any, root: Any, client: object) -> Any:
    """
    Classic PB's anonymous login on C{root} through C{factory}'s hook
    (C{pb.PBClientFactory._cbLoginAnonymous}).
    """
    return factory._cbLoginAnonymous(root, client)


def failAll(factory: Any, reason: Any) -> None:
    """
    Fail everything waiting on C{factory}'s connection
    (C{pb.PBClientFactory._failAll}, which Buildbot overrides).
    """
    factory._failAll(reason)


def wrappedProtocol(wrapper: object) -> object:
    """
    The protocol a L{WrappingProtocol} hands its bytes to, or L{None}.
    """
    return getattr(wrapper, "_wrappedProtocol", None)


#: The attributes of Twisted's TCP connections that L{writeBufferEmpty},
#: L{bufferedBytes} and L{discardWriteBuffer} use, with the public ones
#: pbext's direct writes and reads also need.
TCP_ATTRIBUTES = (
    "socket",
    "dataBuffer",
    "offset",
    "_tempDataLen",
    "connected",
    "disconnecting",
    "_writeDisconnected",
)


def writeBufferEmpty(transport: abstract.FileDescriptor) -> bool:
    """
    Whether a file-descriptor transport holds no bytes to write and may
    still write (its C{dataBuffer}, C{offset}, C{_tempDataLen} and
    C{_writeDisconnected}).
    """
    return bool(
        transport.offset == len(transport.dataBuffer)
        and not transport._tempDataLen
        and not transport._writeDisconnected
    )


def bufferedBytes(transport: Any) -> int:
    """
    The bytes a file-descriptor transport holds that its socket has not
    taken yet.
    """
    buffered: int = len(transport.dataBuffer) - transport.offset
    return buffered + transport._tempDataLen  # type: ignore[no-any-return]  # a private attribute of tcp.Connection, not in its stubs


def discardWriteBuffer(transport: Any) -> None:
    """
    Drop what a file-descriptor transport holds for writing.
    """
    transport.dataBuffer = b""
    transport.offset = 0
    transport._tempDataBuffer = []
    transport._tempDataLen = 0


def tlsHeldBytes(tls: object) -> int:
    """
    The bytes a L{twisted.protocols.tls.TLSMemoryBIOProtocol} holds back
    (C{_appSendBuffer}) until its handshake is done.
    """
    return sum(map(len, getattr(tls, "_appSendBuffer", ())))


def discardTLSHeld(tls: object) -> None:
    """
    Drop what a TLS protocol holds back (see L{tlsHeldBytes}).
    """
    try:
        tls._appSendBuffer = []  # type: ignore[attr-defined]  # a private attribute of TLSMemoryBIOProtocol
    except AttributeError:
        pass


#: The private members of Twisted's objects the accessors above use, by
#: the class that defines them.
MEMBERS: Mapping[str, tuple[str, ...]] = {
    "twisted.spread.jelly._Jellier": ("_checkMutable",),
    "twisted.spread.jelly._Unjellier": ("_maybePostUnjelly",),
    "twisted.spread.flavors.RemoteCache": ("_borgify",),
    "twisted.spread.pb._JellyableAvatarMixin": ("_cbLogin",),
    "twisted.spread.pb.PBClientFactory": (
        "_cbSendUsername",
        "_cbLoginAnonymous",
        "_failAll",
    ),
    "twisted.internet.endpoints._WrappingProtocol": ("_wrappedProtocol",),
    "twisted.internet.abstract.FileDescriptor": (
        "_tempDataLen",
        "_tempDataBuffer",
        "_writeDisconnected",
    ),
    "twisted.protocols.tls.TLSMemoryBIOProtocol": ("_appSendBuffer",),
    "twisted.spread.banana": ("_PREFIX_LIMIT",),
}


# --- Private methods pbext overrides ----------------------------------------

#: The private methods pbext's subclasses override, by the Twisted class
#: that defines them.  Twisted calls them, so pbext's overrides keep their
#: names and arguments, and call Twisted's with C{super()}.  The unjellier's
#: C{_unjelly_<tag>} methods are the dispatch on a type tag.
#: (L{pbext.client.PBClientService}'s C{_log} is a L{twisted.logger.Logger}
#: like the one of C{ClientService} it replaces.)
OVERRIDDEN: Mapping[str, tuple[str, ...]] = {
    "twisted.application.internet.ClientService": ("_log",),
    "twisted.spread.pb.Broker": (
        "_sendMessage",
        "_recvMessage",
        "_sendAnswer",
        "_sendError",
    ),
    "twisted.spread.banana.Banana": ("_selectDialect",),
    "twisted.spread.jelly._Unjellier": (
        "_genericUnjelly",
        "_unjelly_None",
        "_unjelly_unicode",
        "_unjelly_boolean",
        "_unjelly_decimal",
        "_unjelly_datetime",
        "_unjelly_date",
        "_unjelly_time",
        "_unjelly_timedelta",
        "_unjelly_list",
        "_unjelly_tuple",
        "_unjelly_set",
        "_unjelly_frozenset",
        "_unjelly_dictionary",
        "_unjelly_reference",
        "_unjelly_dereference",
        "_unjelly_unpersistable",
    ),
}
