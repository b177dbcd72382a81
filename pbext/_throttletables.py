"""
The per-key tables behind L{pbext.throttle.LoginThrottle}: the failure
records of addresses, (address, username) pairs and usernames, and the
turns of each username (its gate).  The throttle decides; these remember,
bounded and least recently used first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, Callable, Hashable

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime

if TYPE_CHECKING:
    from pbext.throttle import Attempt, LoginThrottle


class _Record:
    """
    What the throttle remembers of one address, (address, username) pair or
    username.
    """

    __slots__ = ("failures", "nextAttempt", "refusedUntil", "updated", "pending")

    def __init__(self, now: float) -> None:
        self.failures = 0
        self.nextAttempt = now
        self.refusedUntil = 0.0
        self.updated = now
        self.pending = 0


class FailureRecords:
    """
    The failure records of one throttle, by key (C{("address", address)},
    C{("pair", address, username)} or C{("username", username)}), in order
    of last update; the throttle's settings (C{forgetAfter},
    C{maxRecords}, C{refuseFor}, its delays) are read from it when used,
    so changing them on the throttle takes effect.

    @ivar records: the records, least recently updated first.
    """

    def __init__(self, throttle: LoginThrottle) -> None:
        self._throttle = throttle
        self.records: OrderedDict[Hashable, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: Hashable, now: float) -> _Record | None:
        """
        The record of C{key}, or L{None} if there is none or it is stale
        (then it is forgotten).
        """
        record = self.records.get(key)
        if record is not None and self._stale(record, now):
            del self.records[key]
            return None
        return record

    def touch(self, key: Hashable, record: _Record, now: float) -> None:
        """
        Keep C{record} for C{key}, updated at C{now}.
        """
        record.updated = now
        self.records[key] = record
        self.records.move_to_end(key)

    def forget(self, key: Hashable) -> None:
        """
        Forget C{key}'s record, if any.
        """
        self.records.pop(key, None)

    def count(
        self, key: Hashable, now: float, free: int | None, refuseAfter: int | None
    ) -> _Record:
        """
        Count a failure of C{key} (and its attempt no longer pending):
        delayed after C{free} failures, refused after C{refuseAfter}.
        """
        throttle = self._throttle
        record = self.get(key, now)
        if record is None:
            record = _Record(now)
        else:
            record.pending = max(record.pending - 1, 0)
        record.failures += 1
        if free is not None and record.failures >= free:
            record.nextAttempt = max(
                record.nextAttempt,
                now + throttle.delayAfter(record.failures, free),
            )
        if refuseAfter is not None and record.failures >= refuseAfter:
            record.refusedUntil = now + throttle.refuseFor
        self.touch(key, record, now)
        return record

    def release(self, key: Hashable) -> None:
        """
        An attempt of C{key} is no longer pending.
        """
        record = self.records.get(key)
        if record is None:
            return
        record.pending = max(record.pending - 1, 0)
        if not record.failures and not record.pending:
            # Nothing to remember of a key that never failed.
            del self.records[key]

    def shrink(self) -> None:
        """
        Drop the least recently updated records past C{maxRecords}.
        """
        while len(self.records) > self._throttle.maxRecords:
            self.records.popitem(last=False)

    def expire(self, now: float) -> None:
        """
        Drop stale records from the front, a bounded amount of work per
        call (records are kept in order of last update).
        """
        for _ in range(16):
            if not self.records:
                break
            key, record = next(iter(self.records.items()))
            if not self._stale(record, now):
                break
            del self.records[key]

    def _stale(self, record: _Record, now: float) -> bool:
        return (
            record.updated + self._throttle.forgetAfter <= now
            and record.refusedUntil <= now
            and record.nextAttempt <= now
        )


class TrustedPairs:
    """
    The (address, username) pairs that logged in recently, each with the
    time its trust ends, least recently trusted first, at most
    C{maxTrusted} of the throttle's.

    @ivar pairs: the pairs and the time their trust ends.
    """

    def __init__(self, throttle: LoginThrottle) -> None:
        self._throttle = throttle
        self.pairs: OrderedDict[tuple[Hashable, Hashable], float] = OrderedDict()

    def trusted(self, address: Hashable, username: Hashable, now: float) -> bool:
        """
        Whether C{address} logged in as C{username} recently enough.
        """
        until = self.pairs.get((address, username))
        return until is not None and until > now

    def trust(self, address: Hashable, username: Hashable, now: float) -> None:
        """
        Trust C{address} for C{username} for the throttle's C{trustFor}.
        """
        pairKey = (address, username)
        self.pairs[pairKey] = now + self._throttle.trustFor
        self.pairs.move_to_end(pairKey)
        while len(self.pairs) > self._throttle.maxTrusted:
            self.pairs.popitem(last=False)

    def expire(self, now: float) -> None:
        """
        Drop expired trust from the front, a bounded amount of work.
        """
        for _ in range(16):
            if not self.pairs:
                break
            pairKey, until = next(iter(self.pairs.items()))
            if until > now:
                break
            del self.pairs[pairKey]


class _Gate:
    """
    The turns of one username: when its recent checks were, and the
    attempts waiting for a turn (those of addresses that are not attacking
    it first).
    """

    __slots__ = ("checks", "fresh", "others", "timer")

    def __init__(self) -> None:
        self.checks: deque[float] = deque()
        self.fresh: deque[tuple[Attempt, defer.Deferred[None], float]] = deque()
        self.others: deque[tuple[Attempt, defer.Deferred[None], float]] = deque()
        self.timer: IDelayedCall | None = None

    def prune(self, now: float, window: float) -> None:
        checks = self.checks
        while checks and checks[0] + window <= now:
            checks.popleft()


class UsernameGates:
    """
    The turns of each username: at most the throttle's
    C{maxAttemptsPerSecond} checks of one username a second, attempts of
    addresses not attacking it first, the others refused after
    C{maxUsernameDelay}.

    @ivar gates: the gate of each username, least recently used first.
    """

    def __init__(
        self,
        throttle: LoginThrottle,
        clock: IReactorTime,
        isFresh: Callable[[Attempt, float], bool],
        refuse: Callable[[Attempt, defer.Deferred[None], float], None],
    ) -> None:
        """
        @param isFresh: whether an attempt comes from an address not
            attacking its username, at a time.
        @param refuse: refuse a waiting attempt, failing its L{Deferred},
            with the seconds until a turn may come.
        """
        self._throttle = throttle
        self._clock = clock
        self._isFresh = isFresh
        self._refuse = refuse
        self.gates: OrderedDict[Hashable, _Gate] = OrderedDict()

    def window(self) -> tuple[int, float]:
        """
        How many checks of one username a window holds, and the window's
        length in seconds: C{maxAttemptsPerSecond} checks a second.
        """
        perSecond = self._throttle.maxAttemptsPerSecond
        capacity = max(1, int(perSecond))
        return capacity, capacity / perSecond

    def enter(self, attempt: Attempt, delayed: Callable[[float], None] | None) -> Any:
        """
        Take a turn for C{attempt}'s username now (L{None}) or a
        L{defer.Deferred} that fires at its turn; C{delayed} is told the
        expected wait if it must.
        """
        if attempt.username is None or attempt.trusted or attempt.done:
            return None
        now = self._clock.seconds()
        gate = self.gates.get(attempt.username)
        if gate is None:
            gate = self.gates[attempt.username] = _Gate()
        else:
            self.gates.move_to_end(attempt.username)
        capacity, window = self.window()
        gate.prune(now, window)
        if not gate.fresh and not gate.others and len(gate.checks) < capacity:
            gate.checks.append(now)
            return None
        d: defer.Deferred[None] = defer.Deferred()
        fresh = self._isFresh(attempt, now)
        queue = gate.fresh if fresh else gate.others
        queue.append((attempt, d, now + self._throttle.maxUsernameDelay))
        if delayed is not None:
            ahead = len(gate.fresh) if fresh else len(gate.fresh) + len(gate.others)
            turn = max(gate.checks[0] + window - now, 0.0) if gate.checks else 0.0
            delayed(round(turn + (ahead - 1) * window / capacity, 6))
        self._schedule(attempt.username, gate, now)
        return d

    def _schedule(self, username: Hashable, gate: _Gate, now: float) -> None:
        if gate.timer is not None and gate.timer.active():
            gate.timer.cancel()
        gate.timer = None
        capacity, window = self.window()
        wakes = []
        if gate.fresh or gate.others:
            wakes.append(
                gate.checks[0] + window if len(gate.checks) >= capacity else now
            )
        if gate.others:
            wakes.append(gate.others[0][2])
        if wakes:
            gate.timer = self._clock.callLater(
                max(min(wakes) - now, 0.0), self._open, username
            )
        elif not gate.checks:
            self.gates.pop(username, None)

    def _open(self, username: Hashable) -> None:
        gate = self.gates.get(username)
        if gate is None:
            return
        gate.timer = None
        now = self._clock.seconds()
        capacity, window = self.window()
        gate.prune(now, window)
        while len(gate.checks) < capacity and (gate.fresh or gate.others):
            queue = gate.fresh if gate.fresh else gate.others
            attempt, d, deadline = queue.popleft()
            if attempt.done:
                continue
            gate.checks.append(now)
            d.callback(None)
        # Attacking addresses do not wait past maxUsernameDelay.
        while gate.others and gate.others[0][2] <= now:
            attempt, d, deadline = gate.others.popleft()
            if attempt.done:
                continue
            retry = gate.checks[0] + window - now if gate.checks else window
            self._refuse(attempt, d, max(retry, 0.0))
        if not gate.fresh and not gate.others:
            gate.prune(now, window)
        self._schedule(username, gate, now)

    def expire(self, now: float) -> None:
        """
        Forget gates of usernames nobody waits for and not checked within a
        window (or past C{maxRecords} of them), a bounded amount of work.
        """
        window = self.window()[1]
        for _ in range(16):
            if not self.gates:
                break
            username, gate = next(iter(self.gates.items()))
            idle = not gate.fresh and not gate.others and gate.timer is None
            old = not gate.checks or gate.checks[-1] + window <= now
            if not (idle and (old or len(self.gates) > self._throttle.maxRecords)):
                break
            del self.gates[username]
