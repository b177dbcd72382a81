"""
Dead-peer detection for Perspective Broker connections.

A TCP connection to a peer that stopped (a suspended process, a host that
lost power, a network that drops packets silently) stays "connected" for
hours: nothing is sent, so nothing fails.  Classic PB has no way to notice.
This module gives pbext's broker the pieces to notice within a bounded time:

  - L{KeepAlive}: the timing logic.  The broker calls L{KeepAlive.activity}
    whenever bytes arrive; after C{interval} seconds without any, it pings
    the peer, and if neither an answer nor any other bytes arrive within
    C{timeout} seconds it declares the peer dead.
  - L{pingPeer}: a ping every PB broker answers, stock Twisted included.
  - L{enableTcpKeepAlive}: turns on the operating system's TCP keepalive on
    the TCP connection under any wrapping transport (TLS, protocol
    wrappers), so idle dead connections are also reaped by the kernel.

The ping
========
A stock broker answers every C{message} that asks for an answer, and the
cheapest, quietest answer it gives is to a message addressed to an object
ID it never registered: C{Broker._recvMessage} looks the object up before it
unserializes anything, finds nothing and replies with an C{error} carrying
C{pb.Error("Invalid Object ID")}.  That branch logs nothing, calls no
application code, allocates nothing that outlives the call and changes no
reference counts, so it is safe to send as often as the keepalive needs.

The other candidates are worse: an unknown protocol command gets a
C{didNotUnderstand} reply that carries no request ID and that the pinging
side logs; calling a missing method on the root logs a traceback on the
peer ("Peer will receive following PB traceback"); C{cachemessage} to an
unknown ID and C{decref} of an unknown ID raise C{KeyError} inside the
protocol, which logs and drops the connection.

The ping is addressed to L{PING_OBJECT_ID}, a name (not a number, so it can
never collide with a locally unique ID) that pbext reserves: no broker
registers an object under it.  A pbext peer may answer it with an ordinary
C{answer} instead of the error; L{pingPeer} treats any answer as proof of
life.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb

__all__ = ["KeepAlive", "PING_OBJECT_ID", "enableTcpKeepAlive", "pingPeer"]

#: The object ID pings are addressed to.  Reserved by pbext: no broker may
#: register a local object under this name.
PING_OBJECT_ID = b"pbext.ping"

#: How many C{.transport} links L{enableTcpKeepAlive} follows at most.
_MAX_WRAPPING = 8


class KeepAlive:
    """
    Notice a peer that stopped sending bytes and stopped answering pings.

    The owner (pbext's broker) calls L{activity} whenever bytes arrive, calls
    L{start} once the connection can carry pings and L{stop} when the
    connection is lost.  When no bytes arrived for C{interval} seconds,
    C{sendPing} is called; if neither its L{Deferred} fires nor any bytes
    arrive within C{timeout} seconds more, C{onDead} is called, once.  A
    dead peer is therefore noticed at most C{interval + timeout} seconds
    after the last bytes it sent.

    Only one ping is outstanding at a time, and none is sent while bytes
    keep arriving, so a busy connection carries no pings at all.

    L{KeepAlive} only keeps time; C{onDead} decides what to do (the broker
    logs and aborts the connection).

    @ivar interval: seconds of silence before a ping is sent.
    @ivar timeout: seconds to wait for an answer to a ping.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        interval: float,
        timeout: float,
        # Deferred[Any]: a Deferred of any result (its result is not used;
        # Deferred is invariant, so Deferred[object] would refuse most).
        sendPing: Callable[[], Deferred[Any]],
        onDead: Callable[[], object],
    ) -> None:
        """
        @param clock: the clock to schedule with: the reactor, or a
            L{twisted.internet.task.Clock} in tests.
        @param interval: seconds without incoming bytes before a ping.
        @param timeout: seconds to wait for the answer to a ping.
        @param sendPing: sends a ping and returns a L{Deferred} that fires
            when the peer answered (L{pingPeer} bound to a broker).  A
            failure of that L{Deferred} is not an answer.
        @param onDead: called with no arguments when the peer is considered
            dead.
        @raise ValueError: if C{interval} or C{timeout} is not positive.
        """
        if not interval > 0:
            raise ValueError(
                f"keepalive interval {interval!r}: give a number of seconds "
                f"greater than 0"
            )
        if not timeout > 0:
            raise ValueError(
                f"keepalive timeout {timeout!r}: give a number of seconds "
                f"greater than 0"
            )
        self.interval = interval
        self.timeout = timeout
        self._clock = clock
        self._sendPing = sendPing
        self._onDead = onDead
        self._lastActivity = 0.0
        self._idleCall: IDelayedCall | None = None
        self._deadCall: IDelayedCall | None = None
        self._ping: Deferred[Any] | None = None

    @property
    def running(self) -> bool:
        """
        Whether the keepalive is between L{start} and L{stop} (or the peer
        being declared dead).
        """
        return self._idleCall is not None or self._deadCall is not None

    def start(self) -> None:
        """
        Start watching: the first ping is due C{interval} seconds from now
        unless bytes arrive.  Does nothing if already started.
        """
        if self.running:
            return
        self._lastActivity = self._clock.seconds()
        self._idleCall = self._clock.callLater(self.interval, self._idle)

    def stop(self) -> None:
        """
        Stop watching: cancel every pending timer and the outstanding ping,
        if any.  Safe to call at any time, any number of times.
        """
        for call in (self._idleCall, self._deadCall):
            if call is not None and call.active():
                call.cancel()
        self._idleCall = self._deadCall = None
        ping, self._ping = self._ping, None
        if ping is not None:
            ping.cancel()

    def activity(self) -> None:
        """
        Bytes arrived from the peer: it is alive.

        This is called for every chunk of bytes received, so it only records
        the time; the idle timer notices the new deadline when it fires.
        """
        self._lastActivity = self._clock.seconds()
        if self._deadCall is not None:
            self._alive()

    def _idle(self) -> None:
        """
        The idle timer fired: ping if the peer has really been silent for
        C{interval} seconds, otherwise wait for the rest of the interval.
        """
        self._idleCall = None
        silent = self._clock.seconds() - self._lastActivity
        if silent < self.interval:
            self._idleCall = self._clock.callLater(self.interval - silent, self._idle)
            return
        self._deadCall = self._clock.callLater(self.timeout, self._dead)
        try:
            ping = self._sendPing()
        except Exception:
            # No ping went out, so no answer can come; the timeout decides.
            self._log.failure("Could not send a keepalive ping")
            return
        if self._deadCall is None:
            # Sending the ping ended the watch (the connection was lost, or
            # the peer answered synchronously); nothing to wait for.
            ping.addErrback(lambda f: None)
            return
        self._ping = ping
        ping.addCallbacks(
            self._answered,
            self._notAnswered,
            callbackArgs=(ping,),
            errbackArgs=(ping,),
        )

    def _answered(self, result: object, ping: Deferred[Any]) -> None:
        if ping is self._ping:
            self._alive()

    def _notAnswered(self, reason: Failure, ping: Deferred[Any]) -> None:
        # A failed ping (the connection was lost, or the ping was cancelled)
        # proves nothing: the dead timer keeps running, or was cancelled.
        if ping is self._ping and not reason.check(CancelledError):
            self._log.debug("Keepalive ping failed: {reason}", reason=reason)

    def _alive(self) -> None:
        """
        The peer showed signs of life while a ping was outstanding.
        """
        if self._deadCall is not None and self._deadCall.active():
            self._deadCall.cancel()
        self._deadCall = None
        # Forget the outstanding ping without cancelling it: its answer is
        # on the way, and cancelling would only add work.
        self._ping = None
        self._idleCall = self._clock.callLater(self.interval, self._idle)

    def _dead(self) -> None:
        self._deadCall = None
        self.stop()
        self._onDead()


def pingPeer(broker: pb.Broker) -> Deferred[None]:
    """
    Send a ping over C{broker} and fire when the peer answers.

    The ping is a C{message} addressed to L{PING_OBJECT_ID}, which every PB
    broker (stock Twisted included) answers promptly and quietly; see the
    module docstring for why it is safe.

    @param broker: a connected broker whose banana negotiation is done.
    @return: a L{Deferred} that fires with L{None} when any answer arrives,
        or fails with L{pb.PBConnectionLost} if the connection is lost first
        (or L{pb.DeadReferenceError} if it already was).  Cancelling it
        stops waiting; the answer, when it comes, is then discarded quietly.
    """
    if broker.disconnected:
        return fail(pb.DeadReferenceError("Calling Stale Broker"))
    requestID = broker.newRequestID()
    answer: Deferred[object] = Deferred()
    # The broker fires this with the answer (or the error, which for a ping
    # is the expected answer) and removes it; connectionLost fails it.
    # The ignore below: pb.Broker declares it None until the connection is made.
    waiting: dict[int, Deferred[Any]] = broker.waitingForAnswers  # type: ignore[assignment]
    waiting[requestID] = answer
    broker.sendCall(
        b"message",
        requestID,
        PING_OBJECT_ID,
        b"ping",
        1,
        broker.serialize(()),
        broker.serialize({}),
    )
    # Deliver through a second Deferred so that cancelling it never touches
    # the broker's table: the entry stays until the answer arrives.
    result: Deferred[None] = Deferred(lambda d: None)

    def deliver(outcome: object) -> None:
        if result.called:
            return
        if isinstance(outcome, Failure) and outcome.check(pb.PBConnectionLost):
            result.errback(outcome)
        else:
            result.callback(None)

    answer.addBoth(deliver)
    return result


def enableTcpKeepAlive(transport: object) -> bool:
    """
    Turn on C{SO_KEEPALIVE} on C{transport}, or on the TCP transport it
    wraps.

    TLS and protocol-wrapping transports keep the transport they write to
    in their C{transport} attribute; that chain is followed until a
    transport providing L{ITCPTransport} is found.

    @return: C{True} if a TCP transport was found and changed, C{False}
        otherwise (a UNIX socket, an in-memory transport, or an error from
        the operating system).
    """
    tcp = tcpTransportOf(transport)
    if tcp is None:
        return False
    try:
        tcp.setTcpKeepAlive(True)
    except OSError:
        return False
    return True


def tcpTransportOf(transport: object) -> ITCPTransport | None:
    """
    Find the TCP transport under C{transport}, following the C{transport}
    attributes of wrappers such as TLS.

    @return: the L{ITCPTransport} provider, or L{None} if there is none
        (a UNIX socket, an in-memory transport).
    """
    for _ in range(_MAX_WRAPPING):
        if transport is None:
            return None
        if ITCPTransport.providedBy(transport):
            return transport
        transport = getattr(transport, "transport", None)
    return None
