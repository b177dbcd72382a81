"""
Throttling of password logins: slow guessers down without locking the real
user out.

An attacker who knows a username must not be able to lock its owner out
(NIST SP 800-63B section 5.2.2; OWASP's authentication and credential
stuffing guidance).  So L{LoginThrottle} never refuses a username outright;
it limits what each I{source} may do:

    - B{per address} (the peer's IP address, an IPv6 peer's /64 network):
      once it has failed, at most C{maxAttemptsPerSecond} attempts a
      second; after C{addressFreeFailures} failures, growing delays
      between its attempts; after C{addressRefuseAfter} failures, every
      attempt from it is refused for C{refuseFor} seconds;
    - B{per (address, username) pair}: after C{freeFailures} failures,
      growing delays between its attempts; after C{refuseAfter} failures,
      that username is refused I{from that address} for C{refuseFor}
      seconds;
    - B{per username}, across addresses: at most C{maxAttemptsPerSecond}
      attempts a second are checked; the others wait for a turn.  Attempts
      from addresses that are not attacking the username (no failure for
      it, below their own threshold) get the next turns first and are
      never refused; the others are refused once they waited
      C{maxUsernameDelay}.  An address that logged in as that user before
      (within C{trustFor}) needs no turn at all.

The result: a brute-force run against one username from one address gets
a handful of guesses, then slows to one every C{maxDelay} seconds and is
refused after C{refuseAfter}; from many addresses it gets at most
C{maxAttemptsPerSecond} checked guesses a second; and meanwhile the real
user logs in at once from an address used before, and from any other
address that is not attacking after at most a turn's wait (a fraction of a
second, unless many fresh addresses queue for that username at once: each
of them gets one turn before it counts as attacking).

@since: pbext NEXT
"""

from __future__ import annotations

import ipaddress
from hashlib import sha256
from typing import Any, Callable, Hashable

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, task
from twisted.internet.address import UNIXAddress
from twisted.internet.interfaces import IAddress, IReactorTime

from pbext._throttletables import (
    FailureRecords,
    TrustedPairs,
    UsernameGates,
    _Record,
)

#: The limits a throttled attempt names (L{LoginThrottled.limit}, the
#: C{limit} field of C{loginThrottled} audit events).
ADDRESS = "address"
PAIR = "addressAndUsername"
USERNAME = "username"


class LoginThrottled(UnauthorizedLogin):
    """
    A login refused without checking it, because too many logins failed
    recently from its address, or for its username from its address, or
    because too many are waiting for its username.

    @ivar retryAfter: seconds until an attempt may be checked again.
    @ivar limit: which limit refused it: L{ADDRESS}, L{PAIR} or
        L{USERNAME}.
    @since: pbext NEXT
    """

    def __init__(self, retryAfter: float, limit: str = ADDRESS) -> None:
        self.retryAfter = round(retryAfter, 6)
        self.limit = limit
        seconds = int(f"{max(retryAfter, 1):.0f}")
        super().__init__(
            f"too many failed logins; try again in {seconds} "
            f"second{'' if seconds == 1 else 's'}"
        )


# Remote errors are named by their class's qualified name on the wire: keep
# the name clients already know (pbext.login re-exports the class).
LoginThrottled.__module__ = "pbext.login"


class Attempt:
    """
    One login attempt admitted by L{LoginThrottle.reserve}: hand it back to
    L{LoginThrottle.failed}, L{LoginThrottle.succeeded} or
    L{LoginThrottle.abandoned} once its outcome is known.

    @ivar delay: seconds it must wait before it is checked.
    @ivar limit: the limit that made it wait (L{None} if it need not).
    @ivar trusted: its address logged in as its username before.
    @since: pbext NEXT
    """

    __slots__ = ("address", "username", "delay", "limit", "trusted", "done")

    def __init__(
        self,
        address: Hashable,
        username: Hashable | None,
        delay: float,
        limit: str | None,
        trusted: bool,
    ) -> None:
        self.address = address
        self.username = username
        self.delay = delay
        self.limit = limit
        self.trusted = trusted
        self.done = False


def _checkDelays(
    initialDelay: float,
    maxDelay: float,
    refuseAfter: int | None,
    addressRefuseAfter: int | None,
    refuseFor: float,
    forgetAfter: float,
) -> None:
    """
    Refuse delays and refusals of L{LoginThrottle} that cannot work: a
    first delay longer than the longest, refusals after no failure or for
    no time, records forgotten before their delay or refusal ends.

    @raise ValueError: if one is out of range.
    """
    if initialDelay < 0 or maxDelay < initialDelay:
        raise ValueError(
            f"initialDelay={initialDelay!r}, maxDelay={maxDelay!r}: the "
            f"first delay must be 0 seconds or more and no longer than the "
            f"longest; raise maxDelay or lower initialDelay"
        )
    for name, value in (
        ("refuseAfter", refuseAfter),
        ("addressRefuseAfter", addressRefuseAfter),
    ):
        if value is not None and value < 1:
            raise ValueError(
                f"{name}={value!r}: give a number of failures of 1 or more, "
                f"or None to never refuse"
            )
    if refuseFor <= 0:
        raise ValueError(
            f"refuseFor={refuseFor!r}: a refusal must last more than 0 "
            f"seconds; give a positive number of seconds"
        )
    refusing = refuseAfter is not None or addressRefuseAfter is not None
    if forgetAfter < max(maxDelay, refuseFor if refusing else 0.0):
        raise ValueError(
            f"forgetAfter={forgetAfter!r}: records would be forgotten "
            f"before their delay or refusal ends; give at least "
            f"{max(maxDelay, refuseFor if refusing else 0.0)!r} seconds"
        )


def _checkSettings(
    freeFailures: int,
    initialDelay: float,
    maxDelay: float,
    refuseAfter: int | None,
    refuseFor: float,
    forgetAfter: float,
    maxRecords: int,
    addressFreeFailures: int,
    addressRefuseAfter: int | None,
    maxAttemptsPerSecond: float,
    maxUsernameDelay: float,
    trustFor: float,
    maxTrusted: int,
) -> None:
    """
    Refuse settings of L{LoginThrottle} that cannot work, saying which and
    what to give instead.

    @raise ValueError: if one is out of range.
    """
    if freeFailures < 0 or addressFreeFailures < 0:
        raise ValueError(
            f"freeFailures={freeFailures!r}, addressFreeFailures="
            f"{addressFreeFailures!r}: failure counts cannot be negative; "
            f"give 0 or more"
        )
    _checkDelays(
        initialDelay, maxDelay, refuseAfter, addressRefuseAfter, refuseFor, forgetAfter
    )
    if maxRecords < 1 or maxTrusted < 1:
        raise ValueError(
            f"maxRecords={maxRecords!r}, maxTrusted={maxTrusted!r}: give "
            f"1 or more for each"
        )
    if not maxAttemptsPerSecond > 0:
        raise ValueError(
            f"maxAttemptsPerSecond={maxAttemptsPerSecond!r}: give a "
            f"number of attempts greater than 0"
        )
    if maxUsernameDelay < 0 or trustFor < 0:
        raise ValueError(
            f"maxUsernameDelay={maxUsernameDelay!r}, trustFor={trustFor!r}: "
            f"give 0 seconds or more for each"
        )


class LoginThrottle:
    """
    Slows down failed logins per address, per (address, username) pair and
    per username, without ever locking a username out; see the module
    docstring for the model, and the how-to on authentication for the
    threats each limit answers.

    With the defaults: an address may fail 10 times (at most 5 attempts a
    second once it has failed), then waits 1, 2, 4 ... up to 30 seconds
    between attempts, and is refused for 15 minutes after 100 failures.
    One username from one address may fail 3 times, then waits 1, 2, 4, 8,
    16 and then 30 seconds between attempts, and is refused from that
    address for 15 minutes after 20 failures.  A username is checked at
    most 5 times a second across all addresses; an attempt from an address
    attacking it is refused after waiting a second for its turn, one from
    any other address waits until its turn comes (ahead of the attackers),
    and one from an address that logged in as that user in the last 30
    days does not wait.

    Attempts arriving while others wait queue behind them; one that would
    wait longer than C{maxDelay} for its address or pair is refused, so
    more connections do not raise the rate.

    State is per instance (one per server factory) and bounded: at most
    C{maxRecords} failure records and C{maxTrusted} trusted (address,
    username) pairs are kept, the least recently used dropped first, and
    a record with no failure for C{forgetAfter} seconds is forgotten.

    @ivar clock: the L{IReactorTime} delays are scheduled on.
    @since: pbext NEXT
    """

    def __init__(
        self,
        clock: IReactorTime,
        freeFailures: int = 3,
        initialDelay: float = 1.0,
        maxDelay: float = 30.0,
        refuseAfter: int | None = 20,
        refuseFor: float = 900.0,
        forgetAfter: float = 3600.0,
        maxRecords: int = 100_000,
        addressFreeFailures: int = 10,
        addressRefuseAfter: int | None = 100,
        maxAttemptsPerSecond: float = 5.0,
        maxUsernameDelay: float = 1.0,
        trustFor: float = 30 * 86400.0,
        maxTrusted: int = 100_000,
    ) -> None:
        """
        @param freeFailures: failures of one (address, username) pair
            before its attempts are delayed.
        @param initialDelay: the first delay, doubled with each further
            failure.
        @param maxDelay: the longest delay between two attempts of an
            address or pair; an attempt that would wait longer is refused.
        @param refuseAfter: failures of a pair after which that username is
            refused from that address for C{refuseFor} seconds (L{None}:
            never).
        @param refuseFor: seconds a refusal lasts.
        @param forgetAfter: seconds without a failure after which a record
            is forgotten.
        @param maxRecords: how many records are kept at most.
        @param addressFreeFailures: failures of an address (for any
            username) before its attempts are delayed.
        @param addressRefuseAfter: failures of an address after which all
            its attempts are refused for C{refuseFor} seconds (L{None}:
            never).
        @param maxAttemptsPerSecond: the most attempts checked each second
            for an address, and for a username, once they have failed.
        @param maxUsernameDelay: the longest an attempt from an address
            attacking a username waits for its turn before it is refused.
        @param trustFor: seconds an (address, username) pair that logged in
            is trusted: it skips the username's queue.
        @param maxTrusted: how many trusted pairs are kept at most.
        """
        _checkSettings(
            freeFailures=freeFailures,
            initialDelay=initialDelay,
            maxDelay=maxDelay,
            refuseAfter=refuseAfter,
            refuseFor=refuseFor,
            forgetAfter=forgetAfter,
            maxRecords=maxRecords,
            addressFreeFailures=addressFreeFailures,
            addressRefuseAfter=addressRefuseAfter,
            maxAttemptsPerSecond=maxAttemptsPerSecond,
            maxUsernameDelay=maxUsernameDelay,
            trustFor=trustFor,
            maxTrusted=maxTrusted,
        )
        self.clock = clock
        self.freeFailures = freeFailures
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self.refuseAfter = refuseAfter
        self.refuseFor = refuseFor
        self.forgetAfter = forgetAfter
        self.maxRecords = maxRecords
        self.addressFreeFailures = addressFreeFailures
        self.addressRefuseAfter = addressRefuseAfter
        self.maxAttemptsPerSecond = maxAttemptsPerSecond
        self.maxUsernameDelay = maxUsernameDelay
        self.trustFor = trustFor
        self.maxTrusted = maxTrusted
        self._failures = FailureRecords(self)
        self._trust = TrustedPairs(self)
        self._turns = UsernameGates(self, clock, self._fresh, self._refuseTurn)
        # The tables themselves, by the names tests and debuggers know.
        self._records = self._failures.records
        self._trusted = self._trust.pairs
        self._gates = self._turns.gates

    # -- public queries ----------------------------------------------------

    def delayAfter(self, failures: int, free: int | None = None) -> float:
        """
        The seconds between attempts of a pair (or, with C{free}
        L{addressFreeFailures}, of an address) that failed C{failures}
        times.
        """
        extra = failures - (self.freeFailures if free is None else free)
        if extra < 0:
            return 0.0
        return min(self.initialDelay * 2.0 ** min(extra, 64), self.maxDelay)

    def failures(self, key: Hashable) -> int:
        """
        How many recent failures C{key} has: C{("address", address)},
        C{("pair", address, username)} or C{("username", username)}.
        """
        record = self._get(key, self.clock.seconds())
        return record.failures if record is not None else 0

    def trusted(self, address: Hashable, username: Hashable) -> bool:
        """
        Whether C{address} logged in as C{username} within C{trustFor}
        seconds.
        """
        return self._trust.trusted(address, username, self.clock.seconds())

    def __len__(self) -> int:
        """
        How many failure records are kept (not counting trusted pairs).
        """
        return len(self._failures)

    # -- attempts ----------------------------------------------------------

    def reserve(self, address: Hashable, username: Hashable | None) -> Attempt:
        """
        Admit a login attempt from C{address} for C{username} (L{None} for
        logins without one): decide how long its address and pair make it
        wait before it is checked, and hold its place so later attempts of
        the same address wait behind it.

        The username's turn is taken later, by L{wait}: at most
        C{maxAttemptsPerSecond} checks of one username a second.  Attempts
        from an address that is not attacking the username (no failure and
        no other attempt waiting for it, the address below its own
        threshold) take the next turns first and are never refused; the
        others are refused once they waited C{maxUsernameDelay}.  An
        attempt from an address trusted for the username takes no turn.

        @return: the L{Attempt}; wait for it with L{wait}, check it, then
            report its outcome with L{failed}, L{succeeded} or
            L{abandoned}.
        @raise LoginThrottled: if a limit refuses it.
        """
        now = self.clock.seconds()
        self._expire(now)
        addressKey = ("address", address)
        pairKey = ("pair", address, username)
        userKey = ("username", username)
        addr = self._get(addressKey, now)
        pair = self._get(pairKey, now) if username is not None else None
        user = self._get(userKey, now) if username is not None else None
        trusted = username is not None and self.trusted(address, username)

        if pair is not None and pair.refusedUntil > now:
            raise LoginThrottled(pair.refusedUntil - now, PAIR)
        if addr is not None and addr.refusedUntil > now:
            raise LoginThrottled(addr.refusedUntil - now, ADDRESS)

        wait = 0.0
        limit: str | None = None
        if addr is not None and (addr.failures or addr.pending) and not trusted:
            if addr.nextAttempt - now > wait:
                wait, limit = addr.nextAttempt - now, ADDRESS
        if pair is not None and pair.nextAttempt - now > wait:
            wait, limit = pair.nextAttempt - now, PAIR
        # Round away the float noise of sums of delays.
        wait = round(wait, 6)
        if wait > self.maxDelay:
            raise LoginThrottled(wait - self.maxDelay, limit or ADDRESS)

        start = now + wait
        spacing = 1.0 / self.maxAttemptsPerSecond
        if addr is None:
            addr = _Record(now)
        if not trusted:
            # The next attempt from this address waits its turn if this one
            # is still unchecked then, or has failed.
            addressDelay = self.delayAfter(addr.failures, self.addressFreeFailures)
            addr.nextAttempt = max(addr.nextAttempt, start + max(spacing, addressDelay))
        addr.pending += 1
        self._touch(addressKey, addr, now)
        if username is not None:
            if pair is None:
                pair = _Record(now)
            if pair.failures >= self.freeFailures:
                pair.nextAttempt = max(
                    pair.nextAttempt, start + self.delayAfter(pair.failures)
                )
            pair.pending += 1
            self._touch(pairKey, pair, now)
            if user is None:
                user = _Record(now)
            user.pending += 1
            self._touch(userKey, user, now)
        self._shrink()
        return Attempt(address, username, wait, limit, trusted)

    def wait(
        self,
        attempt: Attempt,
        delayed: Callable[[float, str], None] | None = None,
    ) -> defer.Deferred[None]:
        """
        A L{defer.Deferred} that fires when C{attempt} may be checked: after
        C{attempt.delay} seconds, then when its username has a turn (see
        L{reserve}).  It fails with L{LoginThrottled} if its address or
        pair has been refused meanwhile, or if it is refused a turn.

        @param delayed: called with the seconds an attempt is expected to
            wait for its username's turn, and L{USERNAME}, if it must.
        """

        def check(ignored: object = None) -> Any:
            now = self.clock.seconds()
            keys: list[tuple[Hashable, str]] = [(("address", attempt.address), ADDRESS)]
            if attempt.username is not None:
                keys.append((("pair", attempt.address, attempt.username), PAIR))
            for key, limit in keys:
                record = self._get(key, now)
                if record is not None and record.refusedUntil > now:
                    self.abandoned(attempt)
                    raise LoginThrottled(record.refusedUntil - now, limit)
            return self._turns.enter(
                attempt,
                None if delayed is None else lambda s: delayed(s, USERNAME),
            )

        if attempt.delay <= 0:
            return defer.maybeDeferred(check)
        return task.deferLater(self.clock, attempt.delay, check)

    # -- the username gate -------------------------------------------------

    def _fresh(self, attempt: Attempt, now: float) -> bool:
        """
        Whether C{attempt} comes from an address that is not attacking its
        username: no failure for it from that address, no other attempt
        of that pair waiting, and the address below its own threshold.
        """
        pair = self._get(("pair", attempt.address, attempt.username), now)
        if pair is not None and (pair.failures or pair.pending > 1):
            return False
        addr = self._get(("address", attempt.address), now)
        return addr is None or addr.failures < self.addressFreeFailures

    def _refuseTurn(
        self, attempt: Attempt, d: defer.Deferred[None], retryAfter: float
    ) -> None:
        """
        C{attempt} waited its longest for its username's turn: give its
        place back and refuse it.
        """
        self.abandoned(attempt)
        d.errback(LoginThrottled(retryAfter, USERNAME))

    def failed(self, attempt: Attempt) -> None:
        """
        Count a failed check of C{attempt} against its address, its pair
        and its username.
        """
        if attempt.done:
            return
        attempt.done = True
        now = self.clock.seconds()
        self._failures.count(
            ("address", attempt.address),
            now,
            self.addressFreeFailures,
            self.addressRefuseAfter,
        )
        if attempt.username is not None:
            self._failures.count(
                ("pair", attempt.address, attempt.username),
                now,
                self.freeFailures,
                self.refuseAfter,
            )
            self._failures.count(("username", attempt.username), now, None, None)
        self._shrink()

    def succeeded(self, attempt: Attempt) -> None:
        """
        C{attempt} was checked and logged in: forget its pair's failures
        and trust its (address, username) pair.  The address keeps its
        failures: logging in to one account must not reset the guesses
        made against others.
        """
        if attempt.done:
            return
        attempt.done = True
        now = self.clock.seconds()
        self._release(("address", attempt.address), now)
        if attempt.username is None:
            return
        self._failures.forget(("pair", attempt.address, attempt.username))
        self._release(("username", attempt.username), now)
        if self.trustFor > 0:
            self._trust.trust(attempt.address, attempt.username, now)

    def abandoned(self, attempt: Attempt) -> None:
        """
        C{attempt} was never checked (its connection closed, or a refusal
        came first): give its turn back without counting anything.
        """
        if attempt.done:
            return
        attempt.done = True
        now = self.clock.seconds()
        self._release(("address", attempt.address), now)
        if attempt.username is not None:
            self._release(("pair", attempt.address, attempt.username), now)
            self._release(("username", attempt.username), now)

    # -- records -----------------------------------------------------------

    def _get(self, key: Hashable, now: float) -> _Record | None:
        return self._failures.get(key, now)

    def _touch(self, key: Hashable, record: _Record, now: float) -> None:
        self._failures.touch(key, record, now)

    def _release(self, key: Hashable, now: float) -> None:
        self._failures.release(key)

    def _shrink(self) -> None:
        self._failures.shrink()

    def _expire(self, now: float) -> None:
        self._failures.expire(now)
        self._turns.expire(now)
        self._trust.expire(now)


def addressKey(address: IAddress) -> str:
    """
    The throttling key of a peer address: its IP address (IPv6 addresses by
    their /64 network, which one host usually controls), or one key for all
    UNIX socket peers.

    @since: pbext NEXT
    """
    host = getattr(address, "host", None)
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if isinstance(host, str):
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return host
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip)
    if isinstance(address, UNIXAddress):
        return "unix"
    return type(address).__name__


def usernameKey(username: object) -> bytes:
    """
    The throttling key of a username: its bytes, or a digest of long ones
    so that remembered keys stay small.
    """
    if isinstance(username, str):
        username = username.encode("utf-8")
    if not isinstance(username, bytes):
        username = repr(username).encode("utf-8", "backslashreplace")
    if len(username) > 64:
        return b"sha256:" + sha256(username).digest()
    return username


__all__ = [
    "ADDRESS",
    "PAIR",
    "USERNAME",
    "Attempt",
    "LoginThrottle",
    "LoginThrottled",
    "addressKey",
]
