"""
The timers of one broker's connection: the handshake, idle and message
timeouts of the policy, the backpressure re-check, and the application
keepalive (L{pbext.keepalive.KeepAlive}).

Each timer runs on the broker's clock (the one its factory was given,
else its transport's reactor, else the global reactor) and, when it
expires, asks its owner to drop the connection.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall

from pbext import keepalive


def _BROKER_DROPS(kind: str, message: str) -> None:
    """
    A marker, never called: L{ConnectionTimers.start} was given no
    C{expired}, so the broker's C{_pbextDropConnection} drops the
    connection.
    """


#: The timers of a connection that runs none: one empty dict every such
#: connection reads (never written to: L{ConnectionTimers.set} makes a
#: dict of the connection's own first).
_NONE_RUNNING: dict[str, IDelayedCall] = {}

#: Called when a timeout expires, with its kind and a message: drops the
#: connection.
Expired = Callable[[str, str], None]


class ConnectionTimers:
    """
    The named timers of one connection, and when its peer was last heard.

    @ivar calls: the timers running, by name (read-only: an idle
        connection shares one empty dict, see L{set}).
    @ivar lastHeard: when bytes last arrived from the peer (for the idle
        timeout, and for L{pbext.admission}'s choice of whom to evict).
    @ivar keepalive: the running L{pbext.keepalive.KeepAlive}, or L{None}.
    """

    # One of each part per connection: no instance dict.
    __slots__ = (
        "_clock",
        "_protocol",
        "calls",
        "lastHeard",
        "keepalive",
        "_idleTimeout",
        "_expired",
    )

    def __init__(self, clock: Any, protocol: Any) -> None:
        """
        @param clock: the clock to run on, or L{None} to use the C{reactor}
            of C{protocol}'s transport (or, if it has none, the global
            reactor) when first needed.
        @param protocol: the broker whose connection this is.
        """
        self._clock = clock
        self._protocol = protocol
        self.calls: dict[str, IDelayedCall] = _NONE_RUNNING
        self.lastHeard = 0.0
        self.keepalive: keepalive.KeepAlive | None = None
        self._idleTimeout: float | None = None
        self._expired: Expired | None = None

    def clock(self) -> Any:
        """
        The clock timers run on: the one given, else the transport's
        reactor, else the global reactor.
        """
        clock = self._clock
        if clock is None:
            clock = getattr(self._protocol.transport, "reactor", None)
            if clock is None:
                from twisted.internet import reactor as clock
            self._clock = clock
        return clock

    def set(self, name: str, seconds: float | None, f: Callable[[], None]) -> None:
        """
        (Re)start the timer C{name} to call C{f} in C{seconds}; L{None}
        only cancels it.
        """
        self.cancel(name)
        if seconds is not None:
            calls = self.calls
            if calls is _NONE_RUNNING:
                calls = self.calls = {}
            calls[name] = self.clock().callLater(seconds, f)

    def cancel(self, name: str) -> None:
        """
        Cancel the timer C{name}, if it runs.
        """
        call = self._forget(name)
        if call is not None and call.active():
            call.cancel()

    def _forget(self, name: str) -> IDelayedCall | None:
        """
        Forget the timer C{name}; once none runs, the connection's dict
        goes (most connections run a timer only during the handshake).
        """
        calls = self.calls
        call = calls.pop(name, None)
        if not calls and calls is not _NONE_RUNNING:
            self.calls = _NONE_RUNNING
        return call

    def fired(self, name: str) -> None:
        """
        The timer C{name} fired: forget it.
        """
        self._forget(name)

    def running(self, name: str) -> bool:
        """
        Whether the timer C{name} runs.
        """
        return name in self.calls

    def start(
        self,
        handshakeTimeout: float | None,
        idleTimeout: float | None,
        expired: Expired | None = None,
    ) -> None:
        """
        The connection is made: start the handshake and idle timeouts.
        C{expired} drops the connection when one of them (or the message
        timeout) expires; by default the broker's C{_pbextDropConnection}
        does, found when it is needed (no bound method kept for each
        connection).
        """
        self._expired = _BROKER_DROPS if expired is None else expired
        self.set(
            "handshakeTimeout", handshakeTimeout, self.timedOut("handshakeTimeout")
        )
        self._idleTimeout = idleTimeout
        if idleTimeout is not None:
            self.lastHeard = self.clock().seconds()
            self.set("idleTimeout", idleTimeout, self._idleFired)

    def timedOut(self, kind: str) -> Callable[[], None]:
        """
        What the timer C{kind} calls when it expires: drop the connection.
        """

        def expire() -> None:
            self._forget(kind)
            self._expire(kind, f"{kind} reached; closing the connection")

        return expire

    def _idleFired(self) -> None:
        """
        The idle timer fired: close the connection if the peer has really
        been silent for C{idleTimeout} seconds, else wait for the rest.

        Bytes arriving only record the time (see L{heard}): moving the
        timer for every chunk would cost a reactor call each.
        """
        self._forget("idleTimeout")
        timeout = self._idleTimeout
        assert timeout is not None
        quiet = self.clock().seconds() - self.lastHeard
        if quiet < timeout:
            self.set("idleTimeout", timeout - quiet, self._idleFired)
            return
        self._expire("idleTimeout", "idleTimeout reached; closing the connection")

    def _expire(self, kind: str, message: str) -> None:
        """
        A timeout expired: have the connection dropped, once started.
        """
        expired = self._expired
        if expired is _BROKER_DROPS:
            self._protocol._pbextDropConnection(kind, message)
        elif expired is not None:
            expired(kind, message)

    def heard(self) -> None:
        """
        Bytes arrived from the peer: the keepalive and the idle timeout
        start over.
        """
        if self.keepalive is not None:
            self.keepalive.activity()
        clock = self._clock
        if clock is None:
            clock = self.clock()
        self.lastHeard = clock.seconds()

    def messageProgress(self, started: bool, timeout: float | None) -> None:
        """
        After bytes were parsed: run the message timeout while a message is
        partly received (C{started}), and only then.
        """
        if started:
            if "messageTimeout" not in self.calls:
                self.set("messageTimeout", timeout, self.timedOut("messageTimeout"))
        elif "messageTimeout" in self.calls:
            self.cancel("messageTimeout")

    def startKeepalive(
        self,
        transport: Any,
        interval: float,
        timeout: float,
        ping: Callable[[], Any],
        dead: Callable[[], None],
    ) -> None:
        """
        Ping the peer after C{interval} seconds of silence; call C{dead}
        if a ping gets no answer in C{timeout} seconds.
        """
        keepalive.enableTcpKeepAlive(transport)
        self.keepalive = keepalive.KeepAlive(
            self.clock(), interval, timeout, ping, dead
        )
        self.keepalive.start()

    def stop(self) -> None:
        """
        The connection is lost: cancel every timer and the keepalive.
        """
        for name in list(self.calls):
            self.cancel(name)
        if self.keepalive is not None:
            self.keepalive.stop()
            self.keepalive = None
