"""
The clock and results side of L{pbext.testing}'s pumping: stepping a
L{Clock} from one due event to the next, and taking a L{Deferred}'s
outcome once the bytes have settled (or saying why there is none).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.spread import pb

if TYPE_CHECKING:
    from pbext.testing import Direction

_T = TypeVar("_T")


class PumpError(AssertionError):
    """
    Pumping could not bring a L{PBConnection} to the state asked for.

    Raised when the bytes never settle (a protocol answers every message with
    another), when a L{Deferred} has no result once they have settled, or
    when a failure was expected and a result came instead.  It is an
    L{AssertionError}, so trial reports it as a test failure.
    """


# Its public home is pbext.testing, which exports it.
PumpError.__module__ = "pbext.testing"


def advance(
    clock: Clock,
    seconds: float,
    maxRounds: int,
    pump: Callable[[], object],
    nextEventTime: Callable[[], float | None],
) -> None:
    """
    Move C{clock} C{seconds} forward, stopping and calling C{pump} at each
    time C{nextEventTime} says something falls due, so that timers and
    bytes interleave as they would in real time.

    @raise ValueError: if C{seconds} is negative.
    @raise PumpError: if more than C{maxRounds} timed steps fall inside
        C{seconds}.
    """
    if seconds < 0:
        raise ValueError(f"the clock cannot go back: {seconds!r}")
    target = clock.seconds() + seconds
    pump()
    for _ in range(maxRounds):
        nextTime = nextEventTime()
        if nextTime is None or nextTime > target:
            break
        clock.advance(max(0.0, nextTime - clock.seconds()))
        pump()
    else:
        raise PumpError(f"more than {maxRounds} timed events within {seconds} seconds")
    clock.advance(max(0.0, target - clock.seconds()))
    pump()


def nextEventTime(clock: Clock, directions: Iterable[Direction]) -> float | None:
    """
    When the next call scheduled on C{clock}, or the next chunk delayed in
    one of C{directions}, falls due; L{None} if nothing waits.
    """
    times = [call.getTime() for call in clock.getDelayedCalls()]
    for direction in directions:
        when = direction._nextTime()
        if when is not None:
            times.append(when)
    return min(times, default=None)


def settle(deferred: Deferred[_T], pump: Callable[[], object]) -> list[_T | Failure]:
    """
    Pump, then take C{deferred}'s result if it has one.

    A L{Deferred} with no result is left as it was, so it can be asked
    again after the clock moves or bytes are released.

    @return: its result (or failure) alone in a list, or an empty list.
    """
    pump()
    captured: list[_T | Failure] = []

    def capture(result: _T | Failure) -> _T | Failure:
        captured.append(result)
        return result

    deferred.addBoth(capture)
    if captured:
        # The result is the caller's now; nothing is left to be logged
        # as unhandled when the Deferred is collected.
        deferred.addBoth(lambda result: None)
    return captured


def resultFrom(result: _T | Failure) -> _T:
    """
    C{result}, or raise it if it is a failure: a L{pb.CopiedFailure} as the
    L{pb.RemoteError} an C{inlineCallbacks} or C{async} caller would see.
    """
    if isinstance(result, pb.CopiedFailure):
        # The ignore below: CopiedFailure keeps the remote text.
        remoteTraceback = result.traceback  # type: ignore[attr-defined]
        raise pb.RemoteError(result.type, result.value, remoteTraceback)
    if isinstance(result, Failure):
        result.raiseException()
    return result


def failureFrom(result: object) -> Failure:
    """
    C{result}, if it is a failure.

    @raise PumpError: if it is not.
    """
    if not isinstance(result, Failure):
        raise PumpError(f"expected a failure, got a result: {result!r}")
    return result


def noResult(
    deferred: Deferred[Any],
    connected: bool,
    directions: Iterable[Direction],
    clock: Clock,
) -> PumpError:
    """
    The error for C{deferred} without a result after pumping, saying what
    might still be waiting: undelivered bytes and scheduled calls.
    """
    waiting = [f"{len(d.pending())} bytes {d.name}" for d in directions if d.pending()]
    calls = len(clock.getDelayedCalls())
    return PumpError(
        f"{deferred!r} has no result after pumping "
        f"(connected: {connected}; undelivered: "
        f"{', '.join(waiting) or 'none'}; calls scheduled on the clock: "
        f"{calls})"
    )
