"""
A pbext client application, run as its own process by
L{tests.test_hostile_client}, that talks to a hostile server and to a
well-behaved one at the same time.

Run as C{python -m tests._victim HOSTILE_PORT GOOD_PORT SECONDS}.  It
connects to both with L{pbext.PBClientFactory}, gives the hostile server a
L{Callback} object (C{register}), then calls C{echo} on each every 50 ms
(hostile calls with a 1 s timeout) for C{SECONDS}.  At the end it prints
one JSON line: how each hostile call ended (by result or exception
name), the good server's answer times, how many C{Thing} copies it
received and whether any got state it should not have, and how many
times the hostile server's calls to C{Callback} ran.  Its log goes to
stderr, so the test can measure it.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from twisted.spread import pb


class Thing(pb.RemoteCopy):
    """
    A classic copy class this client registers, keeping
    L{pb.RemoteCopy.setCopyableState}: the hostile server tries to inject
    state into it.
    """


class OwnStateThing(pb.RemoteCopy):
    """
    A classic copy class with its own C{setCopyableState} that calls
    C{super()}, the commonest classic pattern.
    """

    received: list[dict[str, Any]] = []

    def setCopyableState(self, state: dict[str, Any]) -> None:
        # Application code: records exactly what it was given.
        OwnStateThing.received.append(dict(state))
        super().setCopyableState(state)


pb.setUnjellyableForClass("tests._victim.Thing", Thing)
pb.setUnjellyableForClass("tests._victim.OwnStateThing", OwnStateThing)


class Callback(pb.Referenceable):
    """
    An object the hostile server may call.
    """

    pokes = 0

    def remote_poke(self, value: object) -> object:
        Callback.pokes += 1
        return value


def main(hostilePort: int, goodPort: int, seconds: float) -> None:
    from twisted.internet import defer, reactor, task
    from twisted.logger import globalLogBeginner, textFileLogObserver

    import pbext

    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )
    outcomes: dict[str, int] = {}
    latencies: list[float] = []
    goodFailures: list[str] = []
    hostileTimes: list[float] = []
    received: list[dict[str, Any]] = []

    def record(name: str) -> None:
        outcomes[name] = outcomes.get(name, 0) + 1

    hostile = pbext.PBClientFactory(callTimeout=1.0)
    good = pbext.PBClientFactory(callTimeout=5.0)
    reactor.connectTCP("127.0.0.1", hostilePort, hostile)  # type: ignore[attr-defined]
    reactor.connectTCP("127.0.0.1", goodPort, good)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def run() -> Any:
        goodRoot = yield good.getRootObject()
        try:
            hostileRoot = yield hostile.getRootObject()
        except Exception as e:
            record("connect:" + type(e).__name__)
            hostileRoot = None
        if hostileRoot is not None:
            hostileRoot.callRemote("register", Callback()).addErrback(lambda f: None)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        end = time.monotonic() + seconds
        busy = {"good": False, "hostile": False}

        def callHostile() -> None:
            if busy["hostile"] or hostileRoot is None:
                return
            busy["hostile"] = True
            started = time.monotonic()

            def done(result: object) -> None:
                busy["hostile"] = False
                hostileTimes.append(time.monotonic() - started)
                if hasattr(result, "type"):
                    kind = result.type  # type: ignore[attr-defined]
                    record(kind.__name__ if isinstance(kind, type) else str(kind))
                else:
                    record("answer:" + type(result).__name__)
                    if isinstance(result, (Thing, OwnStateThing)):
                        received.append(dict(vars(result)))

            try:
                d = hostileRoot.callRemote("echo", "x")
            except Exception as e:
                busy["hostile"] = False
                record(type(e).__name__)
                return
            d.addBoth(done)

        def callGood() -> None:
            if busy["good"]:
                return
            busy["good"] = True
            started = time.monotonic()

            def done(result: object) -> None:
                busy["good"] = False
                latencies.append(time.monotonic() - started)
                if result != "good":
                    goodFailures.append(repr(result)[:200])

            goodRoot.callRemote("echo", "good").addBoth(done)

        def tick() -> None:
            if time.monotonic() > end:
                loop.stop()
                return
            callGood()
            callHostile()

        loop = task.LoopingCall(tick)
        yield loop.start(0.05)

    def finish(outcome: object) -> None:
        latencies.sort()
        suspicious = [
            sorted(state)
            for state in received + OwnStateThing.received
            if any(not k.isidentifier() or k.startswith("_") for k in state)
        ]
        result = {
            "hostile": outcomes,
            "goodCalls": len(latencies),
            "goodFailures": goodFailures,
            "goodSlowest": latencies[-1] if latencies else None,
            "goodP90": latencies[int(len(latencies) * 0.9)] if latencies else None,
            "things": len(received),
            "hostileSlowest": max(hostileTimes, default=None),
            "injected": suspicious,
            "pokes": Callback.pokes,
            "error": None if outcome is None else repr(outcome)[:500],
        }
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        reactor.stop()  # type: ignore[attr-defined]

    run().addBoth(finish)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
