"""
CPU time per operation of each process, server and client, for the Twisted
systems: where a throughput row's time goes when the two ends run as the
benchmark runs them (separate processes over loopback TCP).

    python -m benchmarks.cpupercall --rounds 3 --workload inflight \\
        --systems pbext,floor

For each round and each system in turn (paired: alternating systems in one
run), it starts L{benchmarks.server}, runs one L{benchmarks.client}
measurement of a fixed count, and reports the rate and the CPU seconds
(user and system) each process spent per completed operation.  What each
process spends starting up, importing and connecting is measured by a run
of one operation first and subtracted.

On a machine whose cores are busy, the two ends of a pipelined workload
share the CPU that is left, and the rate follows the sum of the two
figures; on idle cores it follows the larger one, if the ends overlap their
work.  Linux only (it reads C{/proc}).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The systems measured: those whose server runs a Twisted reactor.
SYSTEMS = ("classic", "pbext", "floor")

#: One round of one system: the rate, and microseconds of CPU per
#: operation of the client and of the server.
Figures = Tuple[float, float, float]


def processCPU(pid: int) -> float:
    """
    The CPU seconds (user and system) process C{pid} has used so far.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def childrenCPU() -> float:
    """
    The CPU seconds the children of this process that have ended used.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _client(
    system: str, workload: str, port: int, count: int
) -> Tuple[Dict[str, object], float]:
    """
    One client measurement of C{count} operations: its sample and the CPU
    seconds its process used.
    """
    before = childrenCPU()
    argv = [sys.executable, "-m", "benchmarks.client", "--system", system]
    argv += ["--workload", workload, "--port", str(port), "--count", str(count)]
    argv += ["--seconds", "120", "--warmup", "200", "--lanes", "100"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=300)
    result: Dict[str, object] = json.loads(done.stdout.decode().splitlines()[-1])
    return result, childrenCPU() - before


def measure(system: str, workload: str, count: int) -> Figures:
    """
    The rate and the CPU per operation of each end for one run of
    C{workload} on C{system}.
    """
    argv = [sys.executable, "-m", "benchmarks.server", "--system", system]
    server = subprocess.Popen(
        [*argv, "--port", "0"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        port = json.loads(server.stdout.readline())["port"]
        start = processCPU(server.pid)
        _, clientBase = _client(system, workload, port, 1)
        middle = processCPU(server.pid)
        result, clientCPU = _client(system, workload, port, count)
        end = processCPU(server.pid)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(30)
    completed = result.get("completed")
    value = result.get("value")
    if not isinstance(completed, int) or not isinstance(value, float):
        raise RuntimeError(f"{system} {workload}: {result.get('error')}")
    serverCPU = (end - middle) - (middle - start)
    perOperation = 1e6 / completed
    return value, (clientCPU - clientBase) * perOperation, serverCPU * perOperation


def summary(results: Dict[str, List[Figures]]) -> List[str]:
    """
    Lines giving the range of each figure over the rounds, and the ratios of
    the first system's rate to the last's, round by round.
    """
    lines = []
    for system, rounds in results.items():
        rates, clients, servers = zip(*rounds)
        lines.append(
            f"{system:8s} rate {min(rates):,.0f}-{max(rates):,.0f}/s  "
            f"client {min(clients):.1f}-{max(clients):.1f} us  "
            f"server {min(servers):.1f}-{max(servers):.1f} us per operation"
        )
    names = list(results)
    if len(names) > 1:
        first, last = results[names[0]], results[names[-1]]
        ratios = sorted(a[0] / b[0] for a, b in zip(first, last))
        shown = " ".join(f"{r:.2f}" for r in ratios)
        lines.append(f"rate {names[0]}/{names[-1]} by round: {shown}")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default="pbext,floor")
    parser.add_argument("--workload", default="inflight")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, help="default 150000, small 20000")
    options = parser.parse_args(argv)
    systems = options.systems.split(",")
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"not a Twisted system: {', '.join(sorted(unknown))}")
    count = options.count or (20000 if options.workload == "small" else 150000)
    results: Dict[str, List[Figures]] = {system: [] for system in systems}
    for _ in range(options.rounds):
        for system in systems:
            figures = measure(system, options.workload, count)
            results[system].append(figures)
            print(
                f"{system:8s} {figures[0]:9,.0f}/s  client {figures[1]:5.1f} us  "
                f"server {figures[2]:5.1f} us",
                flush=True,
            )
    print("\n".join(summary(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
