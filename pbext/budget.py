"""
A memory budget shared by every connection of one factory.

Each connection's own limits bound what one peer can make the process
hold (L{pbext.security.Limits.maxPendingWriteBytes},
C{maxMessageBytes}, C{maxReferences} ...), but a hundred peers each at its
own bound still add up.  A L{MemoryBudget} adds up what every broker of a
factory holds for its peer, in two sums:

 - B{buffered bytes}: output written but not yet taken by the peer's
   socket, and the part of an incoming message received so far;
 - B{held objects}: references and cacheables given to the peer, copies
   cached for it, and its calls still running.

Brokers report their figures as they change (coarsely: a change of less
than L{BYTES_STEP} bytes is not reported).  When a sum passes its limit
(C{maxServerBufferedBytes}, C{maxServerHeldObjects}), every broker's
figure is read again, exactly, and the connections holding the most are
closed, largest first, until the sum is back within the budget: the worst
offenders go, and a connection holding little (a well-behaved client
between calls holds almost nothing) is never cut while a larger one is
open.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from twisted.logger import Logger

if TYPE_CHECKING:
    from pbext._flow import FlowControl
    from pbext.security import Limits

#: Changes of a broker's buffered bytes smaller than this are not reported
#: (the budget reads the exact figure before it cuts anything).
BYTES_STEP = 64 * 1024

_log = Logger()


class Charged(Protocol):
    """
    What a L{MemoryBudget} needs of a broker.
    """

    def _pbextBufferedBytes(self) -> int:
        """
        How many bytes are buffered for this connection now.
        """

    def _pbextHeldObjects(self) -> int:
        """
        How many objects are held for this connection's peer now.
        """

    def _pbextCut(self, kind: str, message: str) -> None:
        """
        Close this connection because the budget is exhausted.
        """


class MemoryBudget:
    """
    The buffered bytes and held objects of every connection of one
    factory, and their limits.

    @ivar maxBufferedBytes: The most bytes all connections together may
        buffer.
    @ivar maxHeldObjects: The most objects all connections together may
        hold for their peers.
    @ivar bufferedBytes: The sum of what the connections last reported.
    @ivar heldObjects: The sum of what the connections last reported.
    @ivar cuts: How many connections were closed for the budget.
    """

    def __init__(self, maxBufferedBytes: int, maxHeldObjects: int) -> None:
        self.maxBufferedBytes = maxBufferedBytes
        self.maxHeldObjects = maxHeldObjects
        self.bufferedBytes = 0
        self.heldObjects = 0
        self.cuts = 0
        self._bytes: dict[Charged, int] = {}
        self._objects: dict[Charged, int] = {}
        self._enforcing = False

    def chargeBytes(self, broker: Charged, amount: int) -> None:
        """
        C{broker} buffers C{amount} bytes now.
        """
        old = self._bytes.pop(broker, 0)
        if amount > 0:
            self._bytes[broker] = amount
        self.bufferedBytes += amount - old
        if amount > old and self.bufferedBytes > self.maxBufferedBytes:
            self._enforce()

    def chargeObjects(self, broker: Charged, count: int) -> None:
        """
        C{broker} holds C{count} objects for its peer now.
        """
        old = self._objects.pop(broker, 0)
        if count > 0:
            self._objects[broker] = count
        self.heldObjects += count - old
        if count > old and self.heldObjects > self.maxHeldObjects:
            self._enforce()

    def release(self, broker: Charged) -> None:
        """
        C{broker}'s connection is gone: it holds nothing any more.
        """
        self.bufferedBytes -= self._bytes.pop(broker, 0)
        self.heldObjects -= self._objects.pop(broker, 0)

    def _refresh(self) -> None:
        """
        Read every broker's exact figures again (reports are coarse, and
        decreases may not have been reported).
        """
        for broker in list(self._bytes):
            self.bufferedBytes -= self._bytes.pop(broker)
            amount = broker._pbextBufferedBytes()
            if amount > 0:
                self._bytes[broker] = amount
                self.bufferedBytes += amount
        for broker in list(self._objects):
            self.heldObjects -= self._objects.pop(broker)
            count = broker._pbextHeldObjects()
            if count > 0:
                self._objects[broker] = count
                self.heldObjects += count

    def _enforce(self) -> None:
        """
        A sum is past its limit: cut the connections holding the most until
        both are within the budget.
        """
        if self._enforcing:
            return
        self._enforcing = True
        try:
            self._refresh()
            for table, limit, kind in (
                (self._bytes, self.maxBufferedBytes, "maxServerBufferedBytes"),
                (self._objects, self.maxHeldObjects, "maxServerHeldObjects"),
            ):
                while table and sum(table.values()) > limit:
                    worst = max(table, key=table.__getitem__)
                    held = table[worst]
                    self.release(worst)
                    self.cuts += 1
                    worst._pbextCut(
                        kind,
                        f"the server's {kind} ({limit}) is exhausted and this "
                        f"connection holds the most ({held}); closing it",
                    )
        finally:
            self._enforcing = False


def budgetFor(limits: Limits) -> MemoryBudget:
    """
    A new L{MemoryBudget} with the server-wide limits of C{limits} (a
    L{pbext.security.Limits}).
    """
    return MemoryBudget(limits.maxServerBufferedBytes, limits.maxServerHeldObjects)


__all__ = ["BYTES_STEP", "MemoryBudget", "budgetFor"]


def precharge(flow: FlowControl, pieces: list[bytes]) -> bool:
    """
    Before a large message (C{pieces}) joins output that already waits for
    a peer that is not reading, charge it to the server's budget through
    the connection's flow control, C{flow}: if that makes this connection
    the one to cut, it is cut before the transport copies the message into
    its buffer (a copy the budget would otherwise only see afterwards).

    @return: Whether the message may still be written.
    """
    measure = flow.pendingOut
    if measure is None:
        return True
    pending = measure()
    if not pending:
        return True
    size = sum(map(len, pieces))
    if size < BYTES_STEP:
        return True
    budget = flow.budget
    assert budget is not None
    flow.unwritten = size
    try:
        flow.chargedBytes = pending + size
        budget.chargeBytes(flow.broker, pending + size)
    finally:
        flow.unwritten = 0
    broker = flow.broker
    return not (broker._pbextDropped or broker.disconnected)
