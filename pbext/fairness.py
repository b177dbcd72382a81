"""
How long a broker stops reading a peer whose messages take the process a
long time to handle, so that other connections are answered meanwhile.

A message of many containers (a maximum-size list of lists, reference
cycles) takes tens of milliseconds to decode and unjelly, and the garbage
collection its objects trigger takes as long again; a peer sending such
messages back to back would otherwise keep the reactor busy with
nothing but its messages.  After a read whose handling took more than
L{HEAVY_READ} seconds of the process's CPU time, the broker stops
reading that peer (and handling its queued messages) for long enough
that the peer had at most C{maxPeerCPUPercent} per cent of the process
(L{pbext.security.Limits.maxPeerCPUPercent}), if other connections are
open: those of its server factory, or for a client those its reactor
reads.  Nothing is refused; a peer whose messages are cheap, or that is
alone, is never paused.

Reading the process's CPU clock is a system call (about half a
microsecond, as much as a tenth of a small call's whole cost), so a read
is first timed with the wall clock (L{wallTime}), which is cheap: the
reactor's thread cannot spend more CPU time on a read than the time that
passed, so a read that took at most L{HEAVY_READ} on the wall clock is not
heavy, and only a longer one reads the CPU clock.  Where it started on the
CPU clock is the last CPU reading, taken when a read starts if the last
one is older than L{FRESH} (so on a busy connection, once for many reads):
what it counts before the read started is at most L{FRESH}.

@since: pbext NEXT
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IReactorFDSet

if TYPE_CHECKING:
    from pbext._flow import FlowControl
    from pbext.broker import Broker

#: A read whose handling took more CPU time than this, in seconds, is
#: heavy: its peer waits before the next one.  Far above what an ordinary
#: call costs (tens of microseconds), below what a person notices.
HEAVY_READ = 0.005

#: The clock handling is measured with: the process's CPU time, which a
#: loaded machine does not inflate as it inflates wall-clock time (tests
#: replace it).
cpuTime: Callable[[], float] = time.process_time

#: The clock a read is timed with first: a wall clock, cheap to read
#: (tests replace it with one that moves with their C{cpuTime}).
wallTime: Callable[[], float] = time.perf_counter

#: How old, in wall-clock seconds, the last CPU reading may be and still
#: stand for the CPU time at the start of a read: at most this much CPU time
#: spent before a read is counted as the read's.
FRESH = HEAVY_READ / 10


class _CPUReading:
    """
    The last reading of L{cpuTime}, and the wall-clock time it was taken.
    """

    __slots__ = ("cpu", "wall")

    def __init__(self) -> None:
        self.cpu = 0.0
        self.wall = float("-inf")


#: What every broker's reads start from: one reading serves the reads of
#: all connections started within L{FRESH} of it.
lastCPU = _CPUReading()


def readStarted() -> float:
    """
    A read starts being handled: read the CPU clock if its last reading is
    not fresh.  (L{pbext._flow.FlowControl.parse} has this inline.)

    @return: The wall-clock time the read started (for L{spentSince}).
    """
    now = wallTime()
    if not 0.0 <= now - lastCPU.wall <= FRESH:
        readCPU(now)
    return now


def readCPU(now: float) -> None:
    """
    Read the CPU clock, at the wall-clock time C{now}: the last reading is
    stale, or was taken on another clock (tests replace the clocks).
    """
    lastCPU.cpu = cpuTime()
    lastCPU.wall = now


def othersConnected(reactor: object) -> bool:
    """
    Whether C{reactor} reads more than one connection: a client broker,
    which knows only its own factory's one connection, asks the reactor
    whether anybody else would be served while it waits.

    @param reactor: The broker's clock: a reactor providing
        L{IReactorFDSet}, or a test clock (then: no).
    """
    if not IReactorFDSet.providedBy(reactor):
        return False
    connections = 0
    for reader in reactor.getReaders():  # type: ignore[attr-defined]  # providedBy above narrows nothing for mypy
        # Connections have a protocol; listening ports, the waker and
        # process pipes do not.
        if isinstance(reader, FileDescriptor) and getattr(reader, "protocol", None):
            connections += 1
            if connections > 1:
                return True
    return False


def pauseAfter(spent: float, percent: int) -> float:
    """
    How long to stop reading a peer after handling one of its reads took
    C{spent} seconds of CPU time.

    @param percent: The share of the process one peer may take, in per
        cent (C{maxPeerCPUPercent}); 100 or more never pauses.

    @return: Seconds to wait, 0 for none.
    """
    if spent <= HEAVY_READ or percent >= 100:
        return 0.0
    return spent * (100.0 / percent - 1.0)


__all__ = [
    "FRESH",
    "HEAVY_READ",
    "cpuTime",
    "othersConnected",
    "pauseAfter",
    "spentSince",
    "takeTurns",
    "lastCPU",
    "readCPU",
    "readStarted",
    "wallTime",
]


def spentSince(started: float, ended: float) -> float:
    """
    The CPU time spent since the wall-clock time C{started} (a read's start
    from L{readStarted}), now C{ended}: at most L{FRESH} more than it was,
    never more than the time that passed.
    """
    last = lastCPU
    now = cpuTime()
    # A reading taken after the read started (by a read nested in it)
    # misses the CPU time before it: at most the time that passed.
    spent = now - last.cpu + max(0.0, last.wall - started)
    last.cpu = now
    last.wall = ended
    return min(spent, ended - started)


def takeTurns(flow: FlowControl, broker: Broker, spent: float) -> None:
    """
    Handling one read of C{broker}'s peer took C{spent} seconds of CPU
    time: if that is much, and other connections are open, stop reading it
    (through its flow control, C{flow}) for a while, so that it has at
    most C{maxPeerCPUPercent} of the process.
    """
    pause = pauseAfter(spent, broker._pbextLimits.maxPeerCPUPercent)
    if pause <= 0 or broker.disconnected:
        return
    state = broker._pbextFactoryState
    if state is not None and state.admission is not None:
        others = state.connectionCount > 1
    else:
        others = othersConnected(broker._pbextGetClock())
    if not others:
        # Nobody else would be served meanwhile.
        return
    timers = broker._pbextTimers
    waiting = timers.calls.get("cpuShare")
    if waiting is not None and waiting.active():
        # Bytes already read (a TLS record after another) still cost: the
        # pause grows by their share too.
        waiting.delay(pause)
        return
    flow.pauseReading("cpuShare")

    def resume() -> None:
        timers.fired("cpuShare")
        flow.resumeReading("cpuShare")

    timers.set("cpuShare", pause, resume)
