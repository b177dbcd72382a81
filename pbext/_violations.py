"""
The broker's log of what a peer did wrong: one structured event per policy
violation, at most C{maxErrorEventsPerMinute} a minute for a connection,
then one event saying how many were left out.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.logger import Logger

from pbext._peer import peerText

#: Longest repr of peer data put in a log event.
REPR_LIMIT = 200

#: How long the window of C{maxErrorEventsPerMinute} is, in seconds.
WINDOW = 60.0

_log = Logger()


def short(value: object) -> str:
    """
    The repr of C{value}, cut to L{REPR_LIMIT} characters: peer data in a
    log event.
    """
    text = repr(value)
    if len(text) > REPR_LIMIT:
        text = text[:REPR_LIMIT] + "..."
    return text


def seconds(count: float) -> str:
    """
    C{count} seconds for a person: C{"1 second"}, C{"2 seconds"},
    C{"0.5 seconds"}.
    """
    return f"{count:g} second" + ("" if count == 1 else "s")


def peerName(transport: Any) -> str:
    """
    The peer of C{transport} as C{HOST:PORT}, or C{"?"} when there is
    none to name.
    """
    try:
        return peerText(transport.getPeer()) if transport is not None else "?"
    except Exception:
        return "?"


def eventFields(fields: dict[str, Any]) -> dict[str, Any]:
    """
    C{fields} as they go into a log event: short strings and ints as they
    are, anything else as a L{short} repr.
    """
    return {
        k: (v if isinstance(v, (str, int)) and len(str(v)) <= REPR_LIMIT else short(v))
        for k, v in fields.items()
    }


class ViolationLog:
    """
    The rate-limited violation events of one connection.

    A connection's broker makes one when its peer first does something
    wrong; a well-behaved peer's connection never has one.

    @ivar maxPerWindow: how many events are logged each L{WINDOW} seconds.
    """

    # One of each part per connection: no instance dict.
    __slots__ = (
        "_now",
        "_peer",
        "_policyName",
        "maxPerWindow",
        "_windowStart",
        "_count",
        "_suppressed",
    )

    def __init__(
        self,
        now: Callable[[], float],
        peer: Callable[[], str],
        policyName: str,
        maxPerWindow: int,
    ) -> None:
        self._now = now
        self._peer = peer
        self._policyName = policyName
        self.maxPerWindow = maxPerWindow
        self._windowStart = 0.0
        self._count = 0
        self._suppressed = 0

    def report(self, kind: str, message: str, fields: dict[str, Any]) -> bool:
        """
        Log one violation, unless this window's events are used up.

        @return: whether it was logged.
        """
        now = self._now()
        if now - self._windowStart >= WINDOW:
            if self._suppressed:
                _log.warn(
                    "pbext: {suppressed} more policy violations from {peer} "
                    "were not logged",
                    suppressed=self._suppressed,
                    peer=self._peer(),
                    pbextEvent="violationsSuppressed",
                )
            self._windowStart = now
            self._count = 0
            self._suppressed = 0
        self._count += 1
        if self._count > self.maxPerWindow:
            self._suppressed += 1
            return False
        _log.warn(
            "pbext: {kind} from {peer}: {message}",
            kind=kind,
            message=message,
            peer=self._peer(),
            policy=self._policyName,
            pbextEvent="policyViolation",
            **eventFields(fields),
        )
        return True
