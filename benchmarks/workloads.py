"""
The benchmark workloads: what each one does, its unit, and how much work it
runs in each mode of the runner.

A measurement runs at most C{count} operations and stops early once
C{seconds} have passed; its value is the rate over the operations that
completed.  The counts are high enough that the time bound ends the
measurements of every system, the raw Twisted echo floor included, so
that paired systems are timed over windows of the same length.  Modes:
C{full} (the default), C{quick} (under two minutes on two cores) and
C{smoke} (a few operations each, to check that everything runs;
its numbers mean nothing).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Tuple

#: The runner's modes, from the most work to the least.
MODES: Tuple[str, ...] = ("full", "quick", "smoke")

#: Rounds per mode when C{--rounds} is not given.
DEFAULT_ROUNDS: Mapping[str, int] = {"full": 7, "quick": 2, "smoke": 1}


@dataclasses.dataclass(frozen=True)
class Workload:
    """
    One benchmark workload.

    @ivar name: Its name on the command line and in the JSON output.
    @ivar title: A line for the table.
    @ivar short: A short label for the chart (C{"\\n"} splits lines).
    @ivar unit: What the measured value counts per second.
    @ivar description: What it measures, for the JSON output and the README.
    @ivar network: Whether it needs a server (all but C{serialize}).
    @ivar parameters: For each mode, the client's parameters: C{count}
        (operations at most), C{seconds} (time bound), C{warmup}
        (operations run before timing), and per workload C{lanes} (calls
        kept in flight), C{objects} (objects per call), C{dicts}
        (dictionaries in the structure, if not 1,000), C{clients} and
        C{calls} (calls per client).
    """

    name: str
    title: str
    short: str
    unit: str
    description: str
    network: bool
    parameters: Mapping[str, Mapping[str, int | float]]


WORKLOADS: Tuple[Workload, ...] = (
    Workload(
        name="small",
        title="sequential small calls echo(42)",
        short="echo(42)\nsequential",
        unit="calls/s",
        description="One client calls echo(42) and waits for each answer "
        "before the next call: the round-trip latency of a small call.",
        network=True,
        parameters={
            "full": {"count": 100000, "seconds": 2.0, "warmup": 200},
            "quick": {"count": 30000, "seconds": 0.5, "warmup": 100},
            "smoke": {"count": 5, "seconds": 5.0, "warmup": 1},
        },
    ),
    Workload(
        name="inflight",
        title="100 small calls in flight",
        short="100 calls\nin flight",
        unit="calls/s",
        description="One client keeps 100 echo(42) calls outstanding on one "
        "connection: per-call CPU cost with pipelining.",
        network=True,
        parameters={
            "full": {"count": 600000, "seconds": 2.0, "warmup": 500, "lanes": 100},
            "quick": {"count": 150000, "seconds": 0.5, "warmup": 200, "lanes": 100},
            "smoke": {"count": 10, "seconds": 5.0, "warmup": 1, "lanes": 5},
        },
    ),
    Workload(
        name="struct",
        title="echo of a ~100 KB nested structure",
        short="100 KB\nstructure",
        unit="calls/s",
        description="echo() of a list of 1,000 dictionaries of 10 short text "
        "keys and values (about 120 KB as compact JSON, 340 KB on PB's "
        "wire), sequentially.",
        network=True,
        parameters={
            "full": {"count": 30000, "seconds": 3.0, "warmup": 1},
            "quick": {"count": 10000, "seconds": 1.0, "warmup": 1},
            "smoke": {"count": 1, "seconds": 10.0, "warmup": 1, "dicts": 20},
        },
    ),
    Workload(
        name="bytes",
        title="echo of 512 KB bytes",
        short="512 KB\nbytes",
        unit="MB/s",
        description="echo() of a 512 KiB byte string, sequentially; MB/s "
        "counts the argument once per call, in 10^6 bytes.",
        network=True,
        parameters={
            "full": {"count": 12000, "seconds": 2.0, "warmup": 2},
            "quick": {"count": 3000, "seconds": 0.5, "warmup": 1},
            "smoke": {"count": 2, "seconds": 10.0, "warmup": 1},
        },
    ),
    Workload(
        name="copyables",
        title="return 1,000 small copyable objects (pbext: typed registry)",
        short="1,000\ncopyables",
        unit="objects/s",
        description="objects(1000) returns a list of 1,000 small objects "
        "copied by value (three fields each), sequentially.",
        network=True,
        parameters={
            "full": {"count": 4000, "seconds": 2.5, "warmup": 1, "objects": 1000},
            "quick": {"count": 1000, "seconds": 0.8, "warmup": 1, "objects": 1000},
            "smoke": {"count": 2, "seconds": 10.0, "warmup": 1, "objects": 20},
        },
    ),
    Workload(
        name="classiccopies",
        title="return 1,000 classic pb.Copyable objects",
        short="1,000 classic\ncopyables",
        unit="objects/s",
        description="objects(1000) returns a list of 1,000 small pb.Copyable "
        "objects (three fields each), received as a pb.RemoteCopy registered "
        "with pb.setUnjellyableForClass, as every existing PB program does: "
        "pbext takes this path too, even where it has a typed registry.",
        network=True,
        parameters={
            "full": {"count": 4000, "seconds": 2.5, "warmup": 1, "objects": 1000},
            "quick": {"count": 1000, "seconds": 0.8, "warmup": 1, "objects": 1000},
            "smoke": {"count": 2, "seconds": 10.0, "warmup": 1, "objects": 20},
        },
    ),
    Workload(
        name="clients",
        title="200 clients x 20 calls",
        short="200 clients\nx 20 calls",
        unit="calls/s",
        description="200 connections, each making 20 sequential echo(42) "
        "calls, all at once; before that, the server's RSS growth with "
        "the 200 connections open and idle is measured per connection.",
        network=True,
        parameters={
            "full": {"count": 4000, "seconds": 10.0, "clients": 200, "calls": 20},
            "quick": {"count": 4000, "seconds": 5.0, "clients": 200, "calls": 20},
            "smoke": {"count": 10, "seconds": 10.0, "clients": 5, "calls": 2},
        },
    ),
    Workload(
        name="serialize",
        title="jelly+banana encode+decode, 100 KB structure",
        short="serialize\n100 KB (no net)",
        unit="round trips/s",
        description="No network: jelly and banana-encode the nested "
        "structure, then banana-decode it (fed in 64 KiB chunks, as a TCP "
        "transport delivers it) and unjelly it.",
        network=False,
        parameters={
            "full": {"count": 20000, "seconds": 2.5, "warmup": 1},
            "quick": {"count": 5000, "seconds": 1.0, "warmup": 1},
            "smoke": {"count": 1, "seconds": 10.0, "warmup": 1, "dicts": 20},
        },
    ),
)

#: The derived row: server memory per idle connection, from C{clients}.
MEMORY = Workload(
    name="memory",
    title="server memory per idle connection",
    short="memory per\nidle connection",
    unit="KB/conn",
    description="The server process's VmRSS growth with the clients "
    "workload's connections open and idle, divided by their number "
    "(lower is better).",
    network=True,
    parameters={},
)

BY_NAME: Dict[str, Workload] = {w.name: w for w in WORKLOADS}
