# -*- test-case-name: tests.test_security -*-
"""
The jelly security policy: which types a peer may send, and how much.

Classic PB hands one L{twisted.spread.jelly.SecurityOptions} object to
jelly in both directions.  Its C{isTypeAllowed} lets I{any} dotted name
through to a module and class check (U{twisted#6355
<https://github.com/twisted/twisted/issues/6355>}), it places no bound on
message size, nesting, outstanding calls or time, and it belongs to the
whole process (C{globalSecurity}).

A L{SecurityPolicy} is a drop-in for C{SecurityOptions} with a I{closed}
allowlist: a dotted type name passes only if the local program named it
(L{SecurityPolicy.allowTypes}, L{SecurityPolicy.allowInstancesOf}), if a
copyable registry of the connection knows it (L{SecurityPolicy.forConnection})
or, while C{acceptClassicRegistry} is true, if local code registered it with
C{pb.setUnjellyableForClass}.  Nothing is ever imported because a peer named
it.  Each policy carries L{Limits} for the brokers and codecs that use it.

Policies are built fresh by the presets (L{classicPolicy}, L{defaultPolicy},
L{strictPolicy}), by installed policy plugins, or from a policy
file; L{loadPolicy} finds any of them from the string an operator gives to
C{twistd pbserver --policy}.

The policy model lives here; reading policy files is
L{pbext.policyfile}'s job, and finding a policy by the name an operator
gives (presets, plugins, dotted names, files) L{pbext.policylookup}'s.
L{loadPolicy} is importable from here too, as the documentation shows it.

@since: pbext NEXT
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from twisted.logger import Logger
from twisted.python.reflect import qual
from twisted.spread import jelly
from zope.interface import implementer

from pbext._twisted import JELLY_NAMESPACE
from pbext.interfaces import ICopyableRegistry, ISecurityPolicy

if TYPE_CHECKING:
    from pbext.policylookup import loadPolicy

__all__ = [
    "UNLIMITED",
    "Limits",
    "PolicyError",
    "SecurityPolicy",
    "UnsendableError",
    "BoundPolicy",
    "classicPolicy",
    "defaultPolicy",
    "strictPolicy",
    "presets",
    "loadPolicy",
]

_log = Logger()

UNLIMITED: int = sys.maxsize
"""
A limit so large it is never met.  The classic preset uses it for every
bound that stock PB does not have.
"""

_KIB = 1024
_MIB = 1024 * 1024

_TIMEOUT_FIELDS = frozenset(
    {"handshakeTimeout", "messageTimeout", "idleTimeout", "loginTimeout"}
)


@dataclass(frozen=True)
class Limits:
    """
    The bounds one connection works within.

    Sizes and counts are positive integers (L{UNLIMITED} for "no bound");
    timeouts are positive numbers of seconds or L{None} for "off".  The
    defaults are chosen so that ordinary traffic, including everything a
    stock PB peer can send, never meets them; L{Limits.strict} and
    L{Limits.classic} give the other presets' values.  Build variants with
    L{dataclasses.replace}, which validates again.

    @since: pbext NEXT
    """

    maxPrefixBytes: int = 64
    """
    The longest banana number prefix accepted, in bytes.  64 is stock
    banana's own prefix limit, so no stock peer sends longer ones.
    """

    maxStringBytes: int = 640 * _KIB
    """
    The longest string accepted, in bytes.  640 KiB is banana's
    C{SIZE_LIMIT}: a stock peer refuses longer strings, so nothing that
    interoperates with stock PB is larger.
    """

    maxListLength: int = 640 * _KIB
    """
    The most elements one list may declare.  Stock banana refuses lists
    longer than C{SIZE_LIMIT} (640 Ki), so the default is the same.
    """

    maxDepth: int = 100
    """
    How many lists may be open at once while a message is decoded.  Deep
    nesting costs stack in the unjellier; 100 is far beyond what ordinary
    data structures reach through jelly (each level of Python nesting costs
    one or two lists).
    """

    maxMessageTokens: int = 160_000
    """
    How many banana tokens one message may hold.  Bounds the objects built
    for one message (each token can become an object of its own, and a
    message of references and cycles costs the receiver about 70 bytes
    and a microsecond of unjelly per token) and so the memory and the
    time one message can take; it still holds a 150,000-item sequence.
    """

    maxMessageBytes: int = 4 * _MIB
    """
    How many bytes one incoming message may take.  4 MiB holds six
    maximum-size strings while keeping what one peer can make the process
    hold (the message, what it is unjellied into, and its answer) well
    under 16 MB.
    """

    maxOutgoingMessageBytes: int = 4 * _MIB
    """
    The largest message this side sends; a bigger reply is replaced by an
    error answer.  Stops reference amplification (a small request whose
    answer repeats one large object many times) and matches what a pbext
    peer accepts (L{maxMessageBytes}).
    """

    maxOutstandingCalls: int = 1024
    """
    How many incoming calls of one connection may wait for their answers
    at once.  A thousand in flight is ten times what busy clients pipeline.
    """

    maxReferences: int = 1024
    """
    How many L{pb.Referenceable} objects one connection may hold
    references to.  1024 is classic PB's C{MAX_BROKER_REFS}.
    """

    maxWaitingValues: int = 4096
    """
    How many tuples, sets, frozensets and dictionary keys of one received
    message may wait for a value that is still being built: a reference
    cycle through something immutable, which the unjellier can only
    complete once that value is made, at a cost of about a kilobyte and
    a few microseconds each (a cycle through lists and dictionary values
    costs nothing of the kind).  Past it the message is refused.  Stock
    jelly sends one for each tuple in a cycle, which ordinary data
    rarely has; a peer sending a message full of them made a server
    hold 24 MB and stall for most of a second per message.

    @since: pbext NEXT
    """

    maxCachedObjects: int = 1024
    """
    How many L{pb.Cacheable} objects may be cached on one connection;
    classic PB applies C{MAX_BROKER_REFS} (1024) here too.
    """

    maxMethodNameLength: int = 256
    """
    The longest remote method name a peer may call.  Python names are
    rarely longer than 60 characters.
    """

    maxPendingWriteBytes: int = 2 * _MIB
    """
    How many bytes written to a connection may wait to be sent (in the
    transport's buffer) before the broker stops reading from that peer and
    handling its messages, until the buffer drains to half of this.  A
    peer that sends calls and never reads the answers then costs at most
    this plus one answer.  Only the peer's own reading decides: Twisted's
    C{bufferSize} (raised by some applications for larger reads) does not
    change it, and TLS connections are paused as TCP ones are.
    """

    handshakeTimeout: float | None = 30.0
    """
    Seconds within which the banana and broker version handshake must
    finish; a real peer needs one round trip.
    """

    messageTimeout: float | None = 120.0
    """
    Seconds a partly received message may take to arrive completely, so a
    peer cannot hold a buffer open by dribbling bytes.  A maximum-size
    message arrives well within it at 2 Mbit/s.
    """

    idleTimeout: float | None = None
    """
    Seconds without any traffic after which a connection is closed, or
    L{None} (the default) to keep idle connections, as classic PB does.
    """

    maxConnections: int = 4096
    """
    How many connections one server accepts at once; about what a default
    file descriptor limit allows.
    """

    maxConnectionsPerAddress: int = 1024
    """
    How many connections one server accepts from one peer address at once.
    Generous, so that clients behind one NAT (or a 200-client load test on
    127.0.0.1) are not refused.
    """

    maxConnectionsPerPrefix: int = 1024
    """
    How many connections one server holds from one network prefix (an IPv4
    /24, an IPv6 /64) at once, so that a peer with many addresses cannot
    take every slot.  A newcomer past it takes the slot of the least
    valuable connection of its prefix, if one can be evicted (see
    L{pbext.admission}).

    @since: pbext NEXT
    """

    loginTimeout: float | None = 60.0
    """
    Seconds a connection to a server with logins (a
    L{twisted.cred.portal.Portal} root) may stay without logging in; a
    server with a plain root has no login and no such deadline.  L{None}
    keeps connections that never log in, as classic PB does.

    @since: pbext NEXT
    """

    maxMessagesPerTurn: int = 100
    """
    How many messages the broker processes from one C{dataReceived} before
    letting other connections run.  Does not refuse anything, only takes
    turns.
    """

    maxPeerCPUPercent: int = 20
    """
    The share of the process's time, in per cent, that one peer of a
    server with other connections may take with messages that are costly
    to handle: after a read whose decoding, unjellying and garbage
    collection took more than 5 ms of CPU time, the broker stops reading
    that peer for long enough that it had at most this share (four times
    as long, at 20), so that a peer sending maximum-size messages of
    containers or reference cycles back to back cannot keep the reactor
    from answering everybody else.  Does not refuse anything, only slows
    such a peer down; 100 turns it off.

    @since: pbext NEXT
    """

    maxErrorEventsPerMinute: int = 30
    """
    How many limit-violation log events one peer may cause per minute;
    further ones are counted, not logged, so a hostile peer cannot flood
    the log.
    """

    maxServerBufferedBytes: int = 32 * _MIB
    """
    How many bytes all connections of one factory together may buffer:
    output waiting for peers that do not read it, and incoming messages
    partly received.  Past it the connections buffering the most are
    closed, largest first, until the sum is within it again, so many
    hostile peers together cannot exhaust memory while clients that read
    their answers keep being served.  64 MiB suits a small server (a few
    hundred MB of memory); raise it with the memory you give the server.

    @since: pbext NEXT
    """

    maxServerHeldObjects: int = 65536
    """
    How many objects all connections of one factory together may hold for
    their peers: references and cacheables given to them, copies cached
    for them, and their calls still running.  Past it the connections
    holding the most are closed, largest first.  Sixteen connections at
    every per-connection limit.

    @since: pbext NEXT
    """

    # -- pbext.streams --------------------------------------------------

    maxOpenStreams: int = 64
    """
    How many remote streams (L{pbext.streams}) one connection may have
    open at once, sent and received together; one more is refused with
    L{pbext.streams.TooManyStreams}.

    @since: pbext NEXT
    """

    maxStreamBufferedItems: int = 65536
    """
    The most items the streams one connection receives may have sent
    ahead of their readers, together: each stream's window is granted out
    of it (one more stream when it is all granted is refused with
    L{pbext.streams.TooManyStreams}), and a producer sends no more in one
    batch, however much credit the peer asks for.

    @since: pbext NEXT
    """

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in _TIMEOUT_FIELDS:
                _checkTimeout(field.name, value)
            else:
                _checkCount(field.name, value)

    @classmethod
    def classic(cls) -> Limits:
        """
        The limits stock PB has, and no others: banana's prefix and size
        limits, C{MAX_BROKER_REFS}, no timeouts.

        @since: pbext NEXT
        """
        counts = {
            field.name: UNLIMITED
            for field in dataclasses.fields(cls)
            if field.name not in _TIMEOUT_FIELDS
        }
        counts.update(
            maxPrefixBytes=64,
            maxStringBytes=640 * _KIB,
            maxListLength=640 * _KIB,
            maxReferences=1024,
            maxCachedObjects=1024,
        )
        return cls(
            handshakeTimeout=None,
            messageTimeout=None,
            idleTimeout=None,
            loginTimeout=None,
            **counts,
        )

    @classmethod
    def strict(cls) -> Limits:
        """
        Tighter limits for servers exposed to untrusted networks: smaller
        messages and strings, fewer calls and references per connection,
        shorter timeouts, and idle connections closed after ten minutes.

        @since: pbext NEXT
        """
        return cls(
            maxStringBytes=128 * _KIB,
            maxListLength=64 * _KIB,
            maxDepth=48,
            maxMessageTokens=100_000,
            maxMessageBytes=4 * _MIB,
            maxOutgoingMessageBytes=4 * _MIB,
            maxOutstandingCalls=256,
            maxReferences=512,
            maxWaitingValues=1024,
            maxCachedObjects=256,
            maxMethodNameLength=64,
            maxPendingWriteBytes=1 * _MIB,
            handshakeTimeout=10.0,
            messageTimeout=30.0,
            idleTimeout=600.0,
            maxConnections=1024,
            maxConnectionsPerAddress=256,
            maxConnectionsPerPrefix=256,
            loginTimeout=30.0,
            maxMessagesPerTurn=32,
            maxPeerCPUPercent=10,
            maxErrorEventsPerMinute=10,
        )

    def framingLimits(self) -> dict[str, int]:
        """
        The keyword arguments for L{pbext.codec.makeDecoder}: the limits that
        banana framing checks while bytes arrive.

        @since: pbext NEXT
        """
        return {
            "maxPrefixBytes": self.maxPrefixBytes,
            "maxStringBytes": self.maxStringBytes,
            "maxListLength": self.maxListLength,
            "maxDepth": self.maxDepth,
            "maxMessageTokens": self.maxMessageTokens,
            "maxMessageBytes": self.maxMessageBytes,
        }


def _checkCount(name: str, value: object) -> None:
    """
    Refuse anything but a positive C{int} for a size or count limit.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"Limits.{name} must be a whole number, not {type(value).__name__} "
            f"({value!r})"
        )
    if value <= 0:
        raise ValueError(
            f"Limits.{name} must be at least 1, not {value!r} "
            f"(use pbext.security.UNLIMITED for no bound)"
        )


def _checkTimeout(name: str, value: object) -> None:
    """
    Refuse anything but L{None} or a positive finite number of seconds.
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"Limits.{name} must be a number of seconds or None, not "
            f"{type(value).__name__} ({value!r})"
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"Limits.{name} must be a positive number of seconds, not {value!r} "
            f"(use None to turn it off)"
        )


class PolicyError(ValueError):
    """
    A security policy could not be found or built: an unknown name, a
    broken plugin, or a policy file with a mistake.  The message says what
    to change.

    @since: pbext NEXT
    """


class UnsendableError(Exception):
    """
    A value cannot be sent under the sender's policy: an instance of a
    class that is neither a L{pb.Copyable} (or other
    L{twisted.spread.jelly.Jellyable}), nor registered for sending in a
    copyable registry of the connection, nor allowed with
    L{SecurityPolicy.allowInstancesOf} -- typically a class registered
    only for I{receiving} copies.

    Classic jelly sends such a value as an C{unpersistable} placeholder,
    which the receiver gets as the value (a string-like object saying the
    class was "deemed insecure"); pbext's policies fail the call instead,
    on the side that tried to send it, unless C{sendUnpersistable}.  A
    result that cannot be sent fails the call (the server logs it, the
    caller gets this error as a remote error); call arguments that cannot
    be sent fail C{callRemote}'s Deferred with it, and nothing is sent.

    @ivar className: The fully qualified name of the value's class.

    @since: pbext NEXT
    """

    def __init__(self, message: str, className: str) -> None:
        super().__init__(message)
        self.className = className

    def __reduce__(self) -> tuple[type[UnsendableError], tuple[str, str]]:
        return (type(self), (str(self), self.className))


def _typeName(typeName: object) -> bytes | None:
    """
    The C{bytes} form of a jelly type name, or L{None} if it is neither
    C{bytes} nor C{str}.
    """
    if isinstance(typeName, bytes):
        return typeName
    if isinstance(typeName, str):
        return typeName.encode("utf-8")
    return None


# The types jelly itself defines that are harmless to receive: atoms, the
# containers, references, and stock SecurityOptions' own basic names.
_BASIC_TYPES = frozenset(
    {
        b"None",
        b"NoneType",
        b"bool",
        b"boolean",
        b"string",
        b"str",
        b"unicode",
        b"int",
        b"long",
        b"long_int",
        b"float",
        b"decimal",
        b"datetime",
        b"date",
        b"time",
        b"timedelta",
        b"list",
        b"tuple",
        b"dict",
        b"dictionary",
        b"set",
        b"frozenset",
        b"reference",
        b"dereference",
        b"unpersistable",
    }
)

# PB's own copy tags: references, caches and the failures that carry
# errors (and login errors) back to the caller.
_PB_TYPES = frozenset(
    {
        b"remote",
        b"local",
        b"cached",
        b"lcache",
        b"twisted.spread.pb.CopyableFailure",
    }
)

# Expressions that make stock jelly import something by name.
_IMPORTING_TYPES = frozenset(
    {
        b"module",
        b"class",
        b"classobj",
        b"function",
        b"method",
        b"instance",
        b"persistent",
    }
)

# The names stock jelly gives its taster when *sending* builtin values
# (C{qual(type(obj))}).  Allowing them lets a policy serve as the only
# taster of a stock broker; no unjellier builds anything from them.
_SENT_BUILTIN_TYPES = frozenset(
    qual(t).encode("utf-8")
    for t in (
        bytes,
        str,
        int,
        float,
        bool,
        type(None),
        list,
        tuple,
        dict,
        set,
        frozenset,
    )
) | frozenset(
    {
        b"datetime.datetime",
        b"datetime.date",
        b"datetime.time",
        b"datetime.timedelta",
        b"decimal.Decimal",
    }
)

_ALWAYS_ALLOWED = _BASIC_TYPES | _PB_TYPES | _SENT_BUILTIN_TYPES


#: The namespace of L{twisted.spread.jelly} itself.  Twisted wraps that
#: module in a deprecation proxy, which makes every attribute lookup on it
#: cost microseconds; its registries are read from here instead, once per
#: received object.  They are the same dictionaries, and stay current when
#: code (tests, say) replaces them on the module.
_JELLY_NAMESPACE: Mapping[str, Any] = JELLY_NAMESPACE


def _inClassicRegistry(name: bytes) -> bool:
    """
    Whether local code registered C{name} with Twisted's global copier
    registries (C{pb.setUnjellyableForClass} and friends).
    """
    namespace = _JELLY_NAMESPACE
    return (
        name in namespace["unjellyableRegistry"]
        or name in namespace["unjellyableFactoryRegistry"]
    )


@implementer(ISecurityPolicy)
class SecurityPolicy(jelly.SecurityOptions):
    """
    A jelly security policy: a closed type allowlist plus L{Limits}.

    It answers the questions of L{jelly.SecurityOptions} (and has its
    C{allow*} methods), so it can be handed to anything that takes one;
    pbext's broker uses L{forConnection} for what it receives and
    L{outgoingTaster} for what it sends.

    Received type names pass L{isTypeAllowed} if they are jelly's basic
    types, PB's own copy tags (C{remote}, C{local}, C{cached}, C{lcache},
    C{twisted.spread.pb.CopyableFailure}), names given to L{allowTypes} or
    L{allowInstancesOf}, or -- with C{acceptClassicRegistry} -- names local
    code registered with C{pb.setUnjellyableForClass}.  The expressions
    that make stock jelly import by name (C{module}, C{class},
    C{function}, C{method}, C{instance}, C{persistent}) never pass.

    With C{classic=True} the policy behaves exactly like stock
    C{globalSecurity}: any dotted name passes to jelly's module and class
    checks, and the other arguments default to stock behaviour too.

    @ivar name: A short name used in logs.
    @ivar limits: The L{Limits} of every connection using this policy.
    @ivar allowPrivateMethods: Whether a peer may call remote methods whose
        names start with an underscore.
    @ivar acceptClassicRegistry: Whether type names registered in Twisted's
        global copier registries are accepted.
    @ivar checkCopyState: Whether state received for classes registered
        with Twisted's global registries (classic L{pb.RemoteCopy} and
        L{jelly.Unjellyable} classes, copy factories) and for
        L{allowInstancesOf} classes is checked before any of their code
        sees it: a dictionary of identifier keys, no dunder names, no key
        hiding a class attribute, or only the fields the class declares
        (see L{pbext.copystate}).
    @ivar classic: Whether stock jelly's type semantics apply.
    @ivar sendUnpersistable: Whether a value that cannot be sent (an
        instance of a class registered only for receiving, say) is sent as
        classic jelly's C{unpersistable} placeholder, as classic PB does,
        instead of failing the call with L{UnsendableError}.

    @since: pbext NEXT
    """

    def __init__(
        self,
        name: str = "custom",
        limits: Limits | None = None,
        allowPrivateMethods: bool | None = None,
        acceptClassicRegistry: bool | None = None,
        checkCopyState: bool | None = None,
        classic: bool = False,
        sendUnpersistable: bool | None = None,
    ) -> None:
        """
        @param name: A short name for logs.
        @param limits: The limits; by default L{Limits()} (or
            L{Limits.classic} when C{classic}).
        @param allowPrivateMethods: Let peers call C{_private} remote
            methods; by default only when C{classic}.
        @param acceptClassicRegistry: Accept type names registered with
            C{pb.setUnjellyableForClass}; by default C{True}.
        @param checkCopyState: Check state received for classic
            C{RemoteCopy} classes; by default unless C{classic}.
        @param classic: Use stock jelly's type semantics.
        @param sendUnpersistable: Send what cannot be sent as classic
            jelly's C{unpersistable} placeholder instead of failing the
            call with L{UnsendableError}; by default only when C{classic}.

        @raise TypeError: If C{limits} is not a L{Limits}.
        """
        super().__init__()
        if limits is None:
            limits = Limits.classic() if classic else Limits()
        if not isinstance(limits, Limits):
            raise TypeError(
                f"limits={limits!r}: give a pbext.security.Limits, such as "
                f"Limits(maxDepth=100)"
            )
        self.name = name
        self.limits = limits
        self.classic = bool(classic)
        self.allowPrivateMethods = (
            self.classic if allowPrivateMethods is None else bool(allowPrivateMethods)
        )
        self.acceptClassicRegistry = (
            True if acceptClassicRegistry is None else bool(acceptClassicRegistry)
        )
        self.checkCopyState = (
            (not self.classic) if checkCopyState is None else bool(checkCopyState)
        )
        self.sendUnpersistable = (
            self.classic if sendUnpersistable is None else bool(sendUnpersistable)
        )
        self._instanceClasses: dict[bytes, type] = {}
        if self.classic:
            # What globalSecurity holds once pb is imported.
            self.allowBasicTypes()
            self.allowTypes(*_PB_TYPES)
        self._outgoing = _OutgoingTaster(self)

    def __repr__(self) -> str:
        classic = " (classic)" if self.classic else ""
        return f"<{type(self).__name__} {self.name!r}{classic}>"

    def allowBasicTypes(self) -> None:
        """
        Allow jelly's basic types.  A non-classic policy always allows them
        (except C{persistent}, which it never allows).
        """
        if self.classic:
            super().allowBasicTypes()
        else:
            self.allowTypes(*(t for t in self.basicTypes if t != "persistent"))

    def allowTypes(self, *types: bytes | str | type) -> None:
        """
        Allow type names (or, given classes, their qualified names).

        A non-classic policy ignores (and logs) C{module}, C{class},
        C{classobj}, C{function}, C{method}, C{instance} and C{persistent}:
        those make stock jelly import what a peer names.  Ignoring them,
        rather than failing, lets the allowed types of an existing
        C{SecurityOptions} be copied into a policy.
        """
        for typ in types:
            name = _typeName(typ)
            if name is None:
                name = qual(typ).encode("utf-8")  # type: ignore[arg-type]  # a type without a registry name: qual names the class
            if not self.classic and name in _IMPORTING_TYPES:
                _log.info(
                    "Security policy {policy!r} ignores allowing {typeName!r}: "
                    "nothing is imported because a peer named it",
                    policy=self.name,
                    typeName=name.decode("utf-8", "replace"),
                )
                continue
            self.allowedTypes[name] = 1

    def allowInstancesOf(self, *classes: type) -> None:
        """
        Allow instances of these classes to be sent and received, as
        C{[b"module.Class", state]} expressions.

        A non-classic policy remembers the class objects, so receiving
        never imports anything, and does not allow the C{instance},
        C{class} or C{module} expressions stock jelly enables here.
        """
        if self.classic:
            super().allowInstancesOf(*classes)
        for klass in classes:
            name = qual(klass).encode("utf-8")
            self.allowedTypes[name] = 1
            self.allowedClasses[klass] = 1
            self.allowModules(klass.__module__)
            self._instanceClasses[name] = klass

    def instanceClassFor(self, typeName: bytes) -> type | None:
        """
        The class given to L{allowInstancesOf} (or put in C{allowedClasses})
        whose qualified name is C{typeName}, or L{None}.
        """
        klass = self._instanceClasses.get(typeName)
        if klass is None:
            for candidate in self.allowedClasses:
                if (
                    isinstance(candidate, type)
                    and qual(candidate).encode("utf-8") == typeName
                ):
                    return candidate
        return klass

    def isTypeAllowed(self, typeName: bytes | str) -> bool:  # type: ignore[override]  # accepts str too, as Twisted's SecurityOptions does at run time
        """
        Whether a peer may send a jelly expression tagged C{typeName}.
        """
        name = _typeName(typeName)
        if name is None:
            return False
        if self.classic:
            return (
                name in self.allowedTypes
                or b"." in name
                or (self.acceptClassicRegistry and _inClassicRegistry(name))
            )
        if name in _ALWAYS_ALLOWED:
            return True
        if name in _IMPORTING_TYPES:
            return False
        return name in self.allowedTypes or (
            self.acceptClassicRegistry and _inClassicRegistry(name)
        )

    def isMethodAllowed(self, name: str | bytes) -> bool:
        """
        Whether a peer may call the remote method C{name}.

        A non-classic policy refuses names that are not Python identifiers,
        names longer than C{limits.maxMethodNameLength}, and names starting
        with an underscore unless C{allowPrivateMethods}.  A classic policy
        allows every name, like stock PB.
        """
        if self.classic:
            return True
        if isinstance(name, bytes):
            try:
                name = name.decode("utf-8")
            except UnicodeDecodeError:
                return False
        if not isinstance(name, str):
            return False
        if len(name) > self.limits.maxMethodNameLength or not name.isidentifier():
            return False
        return self.allowPrivateMethods or not name.startswith("_")

    def forConnection(self, registries: Iterable[object] = ()) -> BoundPolicy:
        """
        Bind this policy to the copyable registries of one connection.

        @param registries: L{ICopyableRegistry} providers.
        @return: A taster that also allows exactly the type names these
            registries know.
        @raise TypeError: If a registry does not provide L{ICopyableRegistry}.
        """
        return BoundPolicy(self, registries)

    def outgoingTaster(self) -> object:
        """
        The taster for what this side sends: stock C{globalSecurity}'s
        semantics (any dotted type name; instances of classes this policy
        or C{globalSecurity} allows), since the local program chooses what
        it sends.
        """
        return self._outgoing


class BoundPolicy:
    """
    A L{SecurityPolicy} bound to the copyable registries of one connection:
    the C{SecurityOptions}-compatible taster pbext's unjellier consults.

    Nothing is shared between two bound policies: each knows only its own
    registries.

    @ivar policy: The policy.
    @ivar registries: The L{ICopyableRegistry} providers, in lookup order.

    @since: pbext NEXT
    """

    def __init__(self, policy: SecurityPolicy, registries: Iterable[object]) -> None:
        registries = tuple(registries)
        for registry in registries:
            if not ICopyableRegistry.providedBy(registry):
                raise TypeError(
                    f"{registry!r} does not provide "
                    f"pbext.interfaces.ICopyableRegistry; give a "
                    f"pbext.copyable.CopyableRegistry"
                )
        self.policy = policy
        self.registries: tuple[Any, ...] = registries

    def __repr__(self) -> str:
        return f"<BoundPolicy {self.policy!r} registries={len(self.registries)}>"

    @property
    def limits(self) -> Limits:
        """
        The policy's limits.
        """
        return self.policy.limits

    def isTypeAllowed(self, typeName: bytes | str) -> bool:
        """
        Whether the policy, or one of the registries, allows C{typeName}.
        """
        if self.policy.isTypeAllowed(typeName):
            return True
        name = _typeName(typeName)
        if name is None:
            return False
        return any(registry.isTypeKnown(name) for registry in self.registries)

    def isModuleAllowed(self, moduleName: bytes | str) -> bool:
        """
        The policy's answer.
        """
        return bool(self.policy.isModuleAllowed(moduleName))

    def isClassAllowed(self, klass: type) -> bool:
        """
        The policy's answer.
        """
        return bool(self.policy.isClassAllowed(klass))


class _OutgoingTaster:
    """
    The taster of what a policy's broker sends: stock C{globalSecurity}
    semantics.  Instances of a class are sent if the policy allows the
    class, or if local code allowed it on Twisted's C{globalSecurity} (as
    classic PB programs do with C{globalSecurity.allowInstancesOf}): what
    to send is the local program's choice.
    """

    def __init__(self, policy: SecurityPolicy) -> None:
        self.policy = policy

    def isTypeAllowed(self, typeName: bytes | str) -> bool:
        name = _typeName(typeName)
        if name is None:
            return False
        return (
            name in _ALWAYS_ALLOWED or name in self.policy.allowedTypes or b"." in name
        )

    def isModuleAllowed(self, moduleName: bytes | str) -> bool:
        return bool(self.policy.isModuleAllowed(moduleName))

    def isClassAllowed(self, klass: type) -> bool:
        return bool(
            self.policy.isClassAllowed(klass)
            # From the module's namespace: the module itself is a
            # deprecation proxy, slow to read from on every check.
            or _JELLY_NAMESPACE["globalSecurity"].isClassAllowed(klass)
        )


def _policyOf(taster: object) -> SecurityPolicy | None:
    """
    The L{SecurityPolicy} whose stock C{isTypeAllowed} implementation
    decides for C{taster}, if there is one.
    """
    if type(taster) in (BoundPolicy, _OutgoingTaster):
        taster = taster.policy  # type: ignore[attr-defined]  # the type check above lists exactly the classes with .policy
    if (
        isinstance(taster, SecurityPolicy)
        and type(taster).isTypeAllowed is SecurityPolicy.isTypeAllowed
    ):
        return taster
    return None


def _allowsBasicTypes(taster: object) -> bool:
    """
    Whether C{taster} is known to allow every type in C{_BASIC_TYPES}, so
    the unjellier need not ask it for each basic expression.
    """
    return _policyOf(taster) is not None


def _allowsSentBuiltins(taster: object) -> bool:
    """
    Whether C{taster} is known to allow the names stock jelly checks when
    sending builtin values (C{b"builtins.int"} and so on), so the jellier
    need not build and check them for each value.
    """
    isTypeAllowed = getattr(type(taster), "isTypeAllowed", None)
    return isTypeAllowed in _STOCK_SENT_TASTERS or (_policyOf(taster) is not None)


# The isTypeAllowed implementations known to allow builtin type names,
# looked up once: twisted.spread.jelly is wrapped in a deprecation proxy
# that makes each attribute access cost a few function calls.
_STOCK_SENT_TASTERS = (
    jelly.SecurityOptions.isTypeAllowed,
    jelly.DummySecurityOptions.isTypeAllowed,
    _OutgoingTaster.isTypeAllowed,
)


def classicPolicy() -> SecurityPolicy:
    """
    Exactly stock PB: any dotted type name passes to jelly's module and
    class checks, private methods are callable, only banana's and PB's own
    limits apply and there are no timeouts.

    @since: pbext NEXT
    """
    return SecurityPolicy(name="classic", classic=True)


def defaultPolicy() -> SecurityPolicy:
    """
    What pbext factories and C{twistd pbserver} use: a closed type
    allowlist (PB's types, the connection's registries and types local code
    registered with C{pb.setUnjellyableForClass}), nothing imported because
    a peer named it, checked copy state, no private methods, and limits
    ordinary traffic never meets.

    @since: pbext NEXT
    """
    return SecurityPolicy(name="default")


def strictPolicy() -> SecurityPolicy:
    """
    For untrusted networks: only PB's own types and those of the
    connection's registries (Twisted's global copier registry is ignored),
    L{Limits.strict}, and idle connections closed.

    @since: pbext NEXT
    """
    return SecurityPolicy(
        name="strict", limits=Limits.strict(), acceptClassicRegistry=False
    )


presets: Mapping[str, Callable[[], SecurityPolicy]] = types.MappingProxyType(
    {
        "classic": classicPolicy,
        "default": defaultPolicy,
        "strict": strictPolicy,
    }
)
"""
The preset policies by name, each a function building a fresh policy.
"""


def __getattr__(name: str) -> Callable[..., ISecurityPolicy]:
    """
    C{loadPolicy}, documented as C{pbext.security.loadPolicy}, lives in
    L{pbext.policylookup}, which builds on this module; it is imported on
    first use.
    """
    if name == "loadPolicy":
        from pbext.policylookup import loadPolicy

        return loadPolicy
    raise AttributeError(f"module 'pbext.security' has no attribute {name!r}")
