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
(L{pbext.security.Limits.maxPeerCPUPercent}).  Nothing is refused; a
peer whose messages are cheap is never paused.

@since: pbext NEXT
"""

from __future__ import annotations

import time
from typing import Callable

#: A read whose handling took more CPU time than this, in seconds, is
#: heavy: its peer waits before the next one.  Far above what an ordinary
#: call costs (tens of microseconds), below what a person notices.
HEAVY_READ = 0.005

#: The clock handling is measured with: the process's CPU time, which a
#: loaded machine does not inflate as it inflates wall-clock time (tests
#: replace it).
cpuTime: Callable[[], float] = time.process_time


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


__all__ = ["HEAVY_READ", "cpuTime", "pauseAfter"]
