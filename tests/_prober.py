"""
A well-behaved stock PB client, run as its own process by
L{tests.test_hostile_memory}: it calls C{echo} on a server every 50 ms
for a given time and prints, as one JSON line, how many calls were
answered, how many failed, and the slowest, 90th percentile and median
answer times in seconds.

Run as C{python -m tests._prober PORT SECONDS}.  In its own process, its
timings are the server's, not those of the test process that runs the
hostile peers.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def main(port: int, seconds: float) -> None:
    from twisted.internet import reactor, task
    from twisted.python.failure import Failure
    from twisted.spread import pb

    result: dict[str, Any] = {"calls": 0, "failures": 0, "slowest": 0.0}
    latencies: list[float] = []
    client = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, client)  # type: ignore[attr-defined]

    def probe(root: Any) -> Any:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        busy = [False]
        end = time.monotonic() + seconds

        def once() -> None:
            if time.monotonic() > end:
                loop.stop()
                return
            if busy[0]:
                return
            busy[0] = True
            started = time.monotonic()

            def answered(value: object) -> None:
                busy[0] = False
                result["calls"] += 1
                latencies.append(time.monotonic() - started)
                if value != "probe":
                    result["failures"] += 1

            root.callRemote("echo", "probe").addBoth(answered)

        loop = task.LoopingCall(once)
        return loop.start(0.05)

    def done(outcome: object) -> None:
        if isinstance(outcome, Failure):
            result["error"] = str(outcome)
        latencies.sort()
        if latencies:
            result["slowest"] = latencies[-1]
            result["p90"] = latencies[int(len(latencies) * 0.9)]
            result["median"] = latencies[len(latencies) // 2]
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        reactor.stop()  # type: ignore[attr-defined]

    client.getRootObject().addCallback(probe).addBoth(done)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
