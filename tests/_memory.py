"""
Helpers for L{tests.test_hostile_memory}: read a process's resident set
size, and hostile PB peers that try to make a server hold memory (calls
whose answers are never read, reference cycles, maximum-size messages,
token floods, messages never finished).

Every attack is bounded in bytes sent and in time, and only writes while
its own transport is not asking it to pause, so the test process itself
stays small whatever the server does.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from tests._hostile import HostilePeer, callMessage, wireMessage

_KIB = 1024
_MIB = 1024 * 1024


def residentBytes(pid: int) -> int:
    """
    The resident set size of process C{pid} (C{VmRSS} of
    C{/proc/PID/status}), in bytes.
    """
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * _KIB
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpuSeconds(pid: int) -> float:
    """
    The CPU time (user and system) process C{pid} has used, in seconds.
    """
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RSSWatch:
    """
    Sample a process's resident set size every 20 ms and remember the
    largest seen.

    @ivar peak: The largest resident set size seen, in bytes.
    """

    def __init__(self, pid: int, reactor: Any) -> None:
        self.pid = pid
        self.peak = residentBytes(pid)
        self._loop = task.LoopingCall(self.sample)
        self._loop.clock = reactor
        self._loop.start(0.02)

    def sample(self) -> None:
        try:
            self.peak = max(self.peak, residentBytes(self.pid))
        except (OSError, RuntimeError):
            # The process is gone (or a zombie): the test will say so.
            if self._loop.running:
                self._loop.stop()

    def stop(self) -> int:
        """
        Stop sampling (sample once more first) and return the peak.
        """
        if self._loop.running:
            self._loop.stop()
            try:
                self.peak = max(self.peak, residentBytes(self.pid))
            except (OSError, RuntimeError):
                pass
        return self.peak


@implementer(IPushProducer)
class _Pacer:
    """
    Registered on an attacker's own transport: knows whether the
    transport's write buffer is full, so the attacker writes only while
    it is not.
    """

    def __init__(self) -> None:
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True


class Attacker(HostilePeer):
    """
    A hostile PB peer that, once handshaken, writes the messages
    L{nextMessages} gives while its transport takes them, for at most
    C{duration} seconds or C{budget} bytes.

    @ivar sent: How many bytes were written.
    @ivar done: Fires when the attack has finished sending.
    """

    duration = 3.0
    budget = 48 * _MIB
    tick = 0.01
    reads = True

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self.requestID = 0
        self.done: defer.Deferred[None] = defer.Deferred()
        self._pacer = _Pacer()
        self._loop: task.LoopingCall | None = None
        self._started = 0.0

    def start(self, reactor: Any) -> defer.Deferred[None]:
        """
        Start sending; fire L{done} when finished.
        """
        self.transport.registerProducer(self._pacer, True)
        if not self.reads:
            self.transport.pauseProducing()
        self._started = reactor.seconds()
        self._reactor = reactor
        self._loop = task.LoopingCall(self._step)
        self._loop.clock = reactor
        self._loop.start(self.tick)
        return self.done

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if not self.done.called:
            self.done.callback(None)

    def _step(self) -> None:
        elapsed = self._reactor.seconds() - self._started
        if not self.connected or elapsed > self.duration or self.sent >= self.budget:
            self.stop()
            return
        if self._pacer.paused:
            return
        for message in self.nextMessages():
            self.transport.write(message)
            self.sent += len(message)

    def nextID(self) -> int:
        self.requestID += 1
        return self.requestID

    def nextMessages(self) -> list[bytes]:
        """
        The messages to write on this tick (the transport is not full).
        """
        raise NotImplementedError()

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        super().connectionLost(reason)
        self.stop()


class NeverReads(Attacker):
    """
    Calls C{echo} with 60 KB strings and never reads the answers: the
    server's output to it piles up.
    """

    reads = False

    def connectionMade(self) -> None:
        super().connectionMade()
        # A small receive buffer: the kernel holds little for us, so the
        # server's own buffer fills sooner (cheaper for the attacker).
        tcp = getattr(self.transport, "transport", self.transport)
        handle = getattr(tcp, "socket", None)
        if handle is not None:
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * _KIB)

    def nextMessages(self) -> list[bytes]:
        return [
            wireMessage(callMessage(self.nextID(), b"echo", [b"tuple", b"r" * 60_000]))
            for _ in range(8)
        ]

    # Received bytes are never looked at (they are not read anyway).
    def dataReceived(self, data: bytes) -> None:
        if not self.handshake or not self.handshaken.called:
            super().dataReceived(data)


class Amplified(NeverReads):
    """
    Never reads, and asks for answers about sixty times larger than its
    calls: one 60 KB string sent once and referred to 60 times, echoed
    back in full (just under C{maxOutgoingMessageBytes}).
    """

    repeats = 60

    def nextMessages(self) -> list[bytes]:
        value = [[b"reference", 1, b"a" * 60_000]]
        value += [[b"dereference", 1]] * (self.repeats - 1)
        return [
            wireMessage(
                callMessage(self.nextID(), b"echo", [b"tuple", [b"list", *value]])
            )
        ]


class _Answered(Attacker):
    """
    Sends one message at a time and the next once the answer came, so the
    server's output never waits: only what a message itself costs counts.
    """

    def _expression(self, expression: object) -> None:
        if not self.handshaken.called:
            super()._expression(expression)
            return
        # An answer (or error): nothing is kept, the next call may go.
        self.waiting = False

    waiting = False

    def nextMessages(self) -> list[bytes]:
        if self.waiting:
            return []
        self.waiting = True
        return [self.message()]

    def message(self) -> bytes:
        raise NotImplementedError()


class Cycles(_Answered):
    """
    Calls C{echo} (no answer wanted) with a list that refers to itself
    through as many inner lists as a message may hold: cyclic garbage
    once the call is done.
    """

    #: How many tokens a message may hold.
    tokens = 140_000

    def message(self) -> bytes:
        # Seven tokens each.
        inner = [b"list", [b"dereference", 1], 1, 2]
        self.waiting = False
        count = (self.tokens - 40) // 7
        return wireMessage(
            callMessage(
                self.nextID(),
                b"echo",
                [b"tuple", [b"reference", 1, [b"list", *([inner] * count)]]],
                answerRequired=0,
            )
        )

    tick = 0.05


class ManyLists(Cycles):
    """
    Calls C{echo} (no answer wanted) with as many empty lists as a
    message may hold, one of them the list itself: a cycle that keeps
    them all until the garbage collector runs.
    """

    def message(self) -> bytes:
        self.waiting = False
        # Two tokens each, in rows of a thousand.
        rows = (self.tokens - 40) // 2002
        row = [b"list", *([[b"list"]] * 1000)]
        return wireMessage(
            callMessage(
                self.nextID(),
                b"echo",
                [
                    b"tuple",
                    [b"reference", 1, [b"list", [b"dereference", 1], *([row] * rows)]],
                ],
                answerRequired=0,
            )
        )


class TupleCycles(Cycles):
    """
    L{Cycles} through tuples: each inner tuple refers to the outer list,
    which only the full unjellier builds.
    """

    def message(self) -> bytes:
        inner = [b"tuple", [b"dereference", 1], 1, 2]
        self.waiting = False
        count = (self.tokens - 40) // 7
        return wireMessage(
            callMessage(
                self.nextID(),
                b"echo",
                [b"tuple", [b"reference", 1, [b"list", *([inner] * count)]]],
                answerRequired=0,
            )
        )


class LargeMessages(_Answered):
    """
    Calls C{echo} with the largest message the default policy accepts,
    of 640 KiB strings, and reads each answer before the next call.
    """

    size = 640 * _KIB

    def message(self) -> bytes:
        count = self.fill // (self.size + 8)
        return wireMessage(
            callMessage(
                self.nextID(),
                b"echo",
                [b"tuple", [b"list", *([b"m" * self.size] * count)]],
            )
        )

    fill = 4 * _MIB - 4 * _KIB


class ManyTokens(_Answered):
    """
    Calls C{echo} with one list of as many distinct integers as a message
    may hold tokens: each a new object for the server.
    """

    tokens = 250_000

    def message(self) -> bytes:
        base = 1_000_000 + self.requestID * self.tokens
        # Lists of 1000 (a list of more than maxListLength is refused).
        rows = (self.tokens - 40) // 1002
        value = [
            [b"list", *range(base + row * 1000, base + row * 1000 + 1000)]
            for row in range(rows)
        ]
        return wireMessage(
            callMessage(self.nextID(), b"echo", [b"tuple", [b"list", *value]])
        )


class Unfinished(Attacker):
    """
    Starts a message of the largest size accepted and never finishes it:
    the server holds what arrived until C{messageTimeout}.
    """

    def nextMessages(self) -> list[bytes]:
        if self.requestID:
            return []
        self.requestID = 1
        count = self.fill // (640 * _KIB + 8)
        strings = [b"u" * 640 * _KIB] * count
        whole = wireMessage(callMessage(1, b"echo", [b"tuple", [b"list", *strings]]))
        return [whole[: len(whole) - 10]]

    fill = 4 * _MIB - 4 * _KIB


ATTACKS: dict[str, type[Attacker]] = {
    "neverReads": NeverReads,
    "amplified": Amplified,
    "cycles": Cycles,
    "manyLists": ManyLists,
    "tupleCycles": TupleCycles,
    "largeMessages": LargeMessages,
    "manyTokens": ManyTokens,
    "unfinished": Unfinished,
}

__all__ = ["ATTACKS", "Attacker", "RSSWatch", "residentBytes"]
