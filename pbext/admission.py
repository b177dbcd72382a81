"""
Admission of connections to a server: connection caps that a few hostile
peers cannot use to shut legitimate clients out.

Classic PB keeps every connection until its peer closes it, and a server
that refuses newcomers once it is full lets whoever fills it first keep
everyone else out: a handful of addresses opening idle connections is
enough.  L{Admission} keeps the caps of the server's
L{pbext.security.Limits} (C{maxConnections}, C{maxConnectionsPerAddress},
C{maxConnectionsPerPrefix}) but, when a cap other than the per-address one
is reached, makes room for the newcomer by evicting the least valuable
connection held:

    1. never one that logged in with credentials (a Buildbot worker idle
       for hours keeps its slot); an anonymous login protects a connection
       from the login deadline but not from eviction;
    2. from the network prefix (IPv4 /24, IPv6 /64) holding the most
       evictable connections, and within it from the address holding the
       most; for the per-prefix cap, from the newcomer's own prefix;
    3. of those, the one idle longest (among the oldest few).

Only when nothing can be evicted, or the newcomer's own address is at its
cap, is the newcomer refused.  On a server with logins (a portal root),
a connection that has not logged in within C{loginTimeout} seconds is
closed.  Evictions, refusals and login deadlines are structured log events
(C{pbextEvent} C{"connectionEvicted"}, C{"connectionRefused"},
C{"loginTimeout"}), at most C{eventsPerMinute} of each kind a minute, and
counted in L{Admission.counts}.

@since: pbext NEXT
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Hashable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.spread import pb

from pbext._peer import peerText
from pbext.security import Limits

if TYPE_CHECKING:
    from pbext.broker import Broker

_log = Logger(namespace="pbext.admission")

#: The group of peers without an IP address (UNIX sockets and others):
#: no per-address or per-prefix cap applies to it.
LOCAL = "local"

#: Outcomes, as L{Admission.counts} and the C{reason} of events name them.
EVICTED = "evicted"
REFUSED = "refused"
LOGIN_TIMEOUT = "loginTimeout"


def networkKeys(address: object) -> tuple[str | None, str | None]:
    """
    The address and network prefix a peer address counts against: an IPv4
    address and its /24, an IPv6 address and its /64 (an IPv4-mapped IPv6
    address as IPv4), or C{(None, None)} for peers without an IP address.

    @since: pbext NEXT
    """
    host = getattr(address, "host", None)
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return None, None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host, host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = 24 if isinstance(ip, ipaddress.IPv4Address) else 64
    prefix = ipaddress.ip_network(f"{ip}/{bits}", strict=False)
    return str(ip), str(prefix)


class _TopCounts:
    """
    A multiset of keys that knows a key with the highest count, in O(1)
    per change: keys are kept in buckets by count.
    """

    __slots__ = ("counts", "buckets", "top")

    def __init__(self) -> None:
        self.counts: dict[Hashable, int] = {}
        self.buckets: dict[int, dict[Hashable, None]] = {}
        self.top = 0

    def _move(self, key: Hashable, old: int, new: int) -> None:
        if old:
            bucket = self.buckets[old]
            del bucket[key]
            if not bucket:
                del self.buckets[old]
        if new:
            self.counts[key] = new
            self.buckets.setdefault(new, {})[key] = None
        else:
            del self.counts[key]

    def add(self, key: Hashable) -> None:
        count = self.counts.get(key, 0)
        self._move(key, count, count + 1)
        if count + 1 > self.top:
            self.top = count + 1

    def remove(self, key: Hashable) -> None:
        count = self.counts[key]
        self._move(key, count, count - 1)
        if count == self.top and count not in self.buckets:
            self.top = count - 1

    def topKey(self) -> Hashable | None:
        if not self.top:
            return None
        return next(iter(self.buckets[self.top]))

    def __len__(self) -> int:
        return len(self.counts)


class _Slot:
    """
    One admitted connection.
    """

    __slots__ = (
        "broker",
        "address",
        "prefix",
        "admitted",
        "loggedIn",
        "evictable",
        "deadline",
        "gone",
    )

    def __init__(self, address: str | None, prefix: str | None, now: float) -> None:
        self.broker: Any = None
        self.address = address
        self.prefix = prefix
        self.admitted = now
        self.loggedIn = False
        self.evictable = True
        self.deadline: IDelayedCall | None = None
        self.gone = False


class _EventLimiter:
    """
    Lets at most C{perMinute} log events of each kind through a minute;
    the next event after a quiet spell says how many were left out.
    """

    def __init__(self, perMinute: int) -> None:
        self.perMinute = perMinute
        self._windows: dict[str, tuple[float, int, int]] = {}

    def allow(self, kind: str, now: float) -> tuple[bool, int]:
        """
        Whether an event of C{kind} may be logged now, and how many of its
        kind were suppressed since the last one logged.
        """
        start, logged, suppressed = self._windows.get(kind, (now, 0, 0))
        if now - start >= 60.0:
            start, logged = now, 0
        if logged >= self.perMinute:
            self._windows[kind] = (start, logged, suppressed + 1)
            return False, 0
        self._windows[kind] = (start, logged + 1, 0)
        return True, suppressed


class Admission:
    """
    The connections one server factory holds, and who gets a slot; see the
    module docstring.

    @ivar counts: L{Counter} of outcomes by reason: C{("evicted", cap)},
        C{("refused", cap)} and C{("loginTimeout", "loginTimeout")}, where
        C{cap} names the limit reached (C{"maxConnections"},
        C{"maxConnectionsPerPrefix"}, C{"maxConnectionsPerAddress"}).
    @ivar loginRequired: connections must log in within the limits'
        C{loginTimeout} (the factory serves a portal).
    @ivar scanLimit: how many of an address's oldest connections are
        compared to find the one idle longest.
    @since: pbext NEXT
    """

    scanLimit = 32

    def __init__(
        self,
        clock: IReactorTime | None = None,
        loginRequired: bool = False,
        eventsPerMinute: int = 30,
    ) -> None:
        self._clock = clock
        self.loginRequired = loginRequired
        self.counts: Counter[tuple[str, str]] = Counter()
        self.observers: list[Callable[[str, str], None]] = []
        self._events = _EventLimiter(eventsPerMinute)
        self._slots: dict[int, _Slot] = {}
        self._total = 0
        self._perAddress: Counter[str] = Counter()
        self._perPrefix: Counter[str] = Counter()
        # Evictable connections: prefixes by how many they hold, and per
        # prefix its addresses by how many they hold, and per address its
        # connections, oldest first.
        self._evictablePrefixes = _TopCounts()
        self._evictableAddresses: dict[str, _TopCounts] = {}
        # Each group's slots in the order they became evictable (a dict
        # keeps it, for about 45 bytes less per connection than an
        # OrderedDict).
        self._evictable: dict[tuple[str, str], dict[_Slot, None]] = {}

    # -- queries -----------------------------------------------------------

    @property
    def connections(self) -> int:
        """
        How many connections are held now.
        """
        return self._total

    def fromAddress(self, address: str) -> int:
        """
        How many connections are held from C{address} (as L{networkKeys}
        names it).
        """
        return self._perAddress.get(address, 0)

    def fromPrefix(self, prefix: str) -> int:
        """
        How many connections are held from the network C{prefix}.
        """
        return self._perPrefix.get(prefix, 0)

    def _now(self) -> float:
        return float(self._getClock().seconds())

    def _getClock(self) -> Any:
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        return self._clock

    # -- the factory's hooks -----------------------------------------------

    def admit(self, peer: object, limits: Limits) -> _Slot | None:
        """
        Find a slot for a new connection from C{peer} (evicting another
        connection if a cap is reached and one can go), or refuse it.

        @return: the slot, to hand to L{attach} with the broker built for
            it (or to L{release} if none is built); L{None} if refused.
        """
        address, prefix = networkKeys(peer)
        if address is not None and (
            self._perAddress.get(address, 0) >= limits.maxConnectionsPerAddress
        ):
            self._refused(peer, "maxConnectionsPerAddress")
            return None
        if prefix is not None and (
            self._perPrefix.get(prefix, 0) >= limits.maxConnectionsPerPrefix
        ):
            victim = self._victimIn(prefix)
            if victim is None:
                self._refused(peer, "maxConnectionsPerPrefix")
                return None
            self._evict(victim, peer, "maxConnectionsPerPrefix")
        # More than one only if the limits were lowered meanwhile.
        for _ in range(4):
            if self._total < limits.maxConnections:
                break
            victim = self._victim()
            if victim is None:
                self._refused(peer, "maxConnections")
                return None
            self._evict(victim, peer, "maxConnections")
        if self._total >= limits.maxConnections:
            self._refused(peer, "maxConnections")
            return None
        slot = _Slot(address, prefix, self._now())
        self._total += 1
        if address is not None:
            self._perAddress[address] += 1
        if prefix is not None:
            self._perPrefix[prefix] += 1
        self._index(slot)
        return slot

    def attach(self, slot: _Slot, broker: Broker, limits: Limits) -> None:
        """
        The broker built for C{slot}; on a server with logins, start its
        login deadline.
        """
        slot.broker = broker
        self._slots[id(broker)] = slot
        timeout = limits.loginTimeout
        if self.loginRequired and timeout is not None and not slot.gone:
            slot.deadline = self._getClock().callLater(
                timeout, self._loginTimedOut, slot
            )

    def release(self, slot: _Slot) -> None:
        """
        Give C{slot} back: its connection is gone (or was never built).
        """
        if slot.gone:
            return
        slot.gone = True
        self._cancelDeadline(slot)
        self._unindex(slot)
        self._total -= 1
        pairs = ((self._perAddress, slot.address), (self._perPrefix, slot.prefix))
        for counter, key in pairs:
            if key is not None:
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]

    def lost(self, broker: Broker) -> None:
        """
        C{broker}'s connection was lost.
        """
        slot = self._slots.get(id(broker))
        if slot is None or slot.broker is not broker:
            return
        del self._slots[id(broker)]
        self.release(slot)

    def loggedIn(self, broker: pb.Broker, method: str) -> None:
        """
        C{broker}'s connection logged in with C{method}: no login deadline
        any more, and unless the login was anonymous, never evicted.
        """
        slot = self._slots.get(id(broker))
        if slot is None or slot.broker is not broker or slot.gone:
            return
        slot.loggedIn = True
        self._cancelDeadline(slot)
        if method != "anonymous":
            self._unindex(slot)

    # -- choosing ----------------------------------------------------------

    def _group(self, slot: _Slot) -> tuple[str, str]:
        return (slot.prefix or LOCAL, slot.address or LOCAL)

    def _index(self, slot: _Slot) -> None:
        prefix, address = self._group(slot)
        self._evictablePrefixes.add(prefix)
        addresses = self._evictableAddresses.get(prefix)
        if addresses is None:
            addresses = self._evictableAddresses[prefix] = _TopCounts()
        addresses.add(address)
        slots = self._evictable.get((prefix, address))
        if slots is None:
            slots = self._evictable[(prefix, address)] = {}
        slots[slot] = None
        slot.evictable = True

    def _unindex(self, slot: _Slot) -> None:
        if not slot.evictable:
            return
        slot.evictable = False
        prefix, address = self._group(slot)
        self._evictablePrefixes.remove(prefix)
        addresses = self._evictableAddresses[prefix]
        addresses.remove(address)
        if not len(addresses):
            del self._evictableAddresses[prefix]
        slots = self._evictable[(prefix, address)]
        del slots[slot]
        if not slots:
            del self._evictable[(prefix, address)]

    def _victim(self) -> _Slot | None:
        prefix = self._evictablePrefixes.topKey()
        if prefix is None:
            return None
        assert isinstance(prefix, str)
        return self._victimIn(prefix)

    def _victimIn(self, prefix: str) -> _Slot | None:
        addresses = self._evictableAddresses.get(prefix)
        if addresses is None:
            return None
        address = addresses.topKey()
        # The ignore below: topKey() is not None: the prefix has an address.
        slots = self._evictable[(prefix, address)]  # type: ignore[index]
        best: _Slot | None = None
        bestHeard = 0.0
        for n, slot in enumerate(slots):
            if n >= self.scanLimit:
                break
            heard = _lastActive(slot)
            if best is None or heard < bestHeard:
                best, bestHeard = slot, heard
        return best

    # -- acting ------------------------------------------------------------

    def _evict(self, slot: _Slot, newcomer: object, cap: str) -> None:
        broker = slot.broker
        self.release(slot)
        self._count(EVICTED, cap)
        idle = self._now() - _lastActive(slot)
        self._event(
            "connectionEvicted",
            "pbext: closed a connection from {peer} (idle {idle:.0f} s, never "
            "logged in) to admit {newcomer}: {cap} reached",
            peer=_peerOf(broker),
            newcomer=peerText(newcomer),
            cap=cap,
            idle=idle,
            connections=self._total,
        )
        _close(broker)

    def _refused(self, peer: object, cap: str) -> None:
        self._count(REFUSED, cap)
        self._event(
            "connectionRefused",
            "pbext: connection from {peer} refused: {cap} reached and no "
            "connection can make room",
            peer=peerText(peer),
            cap=cap,
            connections=self._total,
        )

    def _loginTimedOut(self, slot: _Slot) -> None:
        slot.deadline = None
        if slot.gone or slot.loggedIn:
            return
        broker = slot.broker
        self._count(LOGIN_TIMEOUT, "loginTimeout")
        self._event(
            "loginTimeout",
            "pbext: closed a connection from {peer} that did not log in "
            "within loginTimeout",
            peer=_peerOf(broker),
            connections=self._total,
        )
        _close(broker)

    def _cancelDeadline(self, slot: _Slot) -> None:
        deadline = slot.deadline
        slot.deadline = None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _count(self, outcome: str, reason: str) -> None:
        self.counts[(outcome, reason)] += 1
        for observer in self.observers:
            observer(outcome, reason)

    def _event(self, kind: str, format: str, **fields: Any) -> None:
        allowed, suppressed = self._events.allow(kind, self._now())
        if not allowed:
            return
        _log.warn(format, pbextEvent=kind, suppressedBefore=suppressed, **fields)


def _lastActive(slot: _Slot) -> float:
    """
    When C{slot}'s connection was last heard from: when bytes last arrived
    (every slot's broker is a L{pbext.broker.Broker}, which records it), or
    when it was admitted, if later.
    """
    broker = slot.broker
    if broker is None:
        return slot.admitted
    return max(slot.admitted, float(broker._pbextLastHeard))


def _peerOf(broker: Any) -> str:
    try:
        return peerText(broker.transport.getPeer())
    except Exception:
        return "?"


def _close(broker: Any) -> None:
    transport = getattr(broker, "transport", None)
    if transport is None:
        return
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()


__all__ = ["Admission", "networkKeys", "LOCAL", "EVICTED", "REFUSED", "LOGIN_TIMEOUT"]
