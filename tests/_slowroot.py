"""
A PB root for the cancellation tests: its C{wait} never answers by itself,
and it remembers whether the caller cancelled it.

Served by a real C{twistd pbserver --root tests._slowroot.SlowRoot}; the
test reads the answer back with C{wasCancelled}, and, when the environment
variable L{MARKER_VARIABLE} names a file, from that file too.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.logger import Logger
from twisted.spread import pb

#: The environment variable naming the file a cancelled C{wait} writes.
MARKER_VARIABLE = "PBEXT_TEST_CANCEL_MARKER"

_log = Logger()


class SlowRoot(pb.Root):
    """
    A root whose C{wait} answers only when cancelled (with
    L{defer.CancelledError}).

    One instance serves every connection of the server, so a second client
    can ask what happened to the first one's call.

    @ivar markerPath: the file written when a C{wait} is cancelled, or
        L{None}.
    @ivar cancelled: whether the last C{wait} was cancelled.
    """

    def __init__(self, markerPath: str | None = None) -> None:
        """
        @param markerPath: the file written when a C{wait} is cancelled;
            by default the one named by L{MARKER_VARIABLE}, if set.
        """
        if markerPath is None:
            markerPath = os.environ.get(MARKER_VARIABLE) or None
        self.markerPath = markerPath
        self.cancelled = False

    def remote_wait(self) -> defer.Deferred[None]:
        """
        Start a wait that never ends by itself.

        @return: a L{defer.Deferred} whose canceller records the
            cancellation.
        """
        self.cancelled = False

        def canceller(d: defer.Deferred[None]) -> None:
            self.cancelled = True
            _log.info("SlowRoot: wait cancelled", pbextEvent="slowRootCancelled")
            if self.markerPath is not None:
                with open(self.markerPath, "w") as marker:
                    marker.write("cancelled\n")

        return defer.Deferred(canceller)

    def remote_wasCancelled(self) -> bool:
        """
        @return: whether the last C{wait} was cancelled.
        """
        return self.cancelled
