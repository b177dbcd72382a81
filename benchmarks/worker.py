"""
A client worker: imports one system's client code once, then makes each
measurement it is asked for in a fresh child process.

    python -m benchmarks.worker --system pbext

Each line on standard input is a JSON object: C{argv}, the arguments of
L{benchmarks.client} for one measurement, and C{timeout}, the seconds it
may take.  For each, the worker forks a child that makes the measurement
(so every measurement starts from a clean process with no reactor yet, as
a new C{python -m benchmarks.client} would, without paying for the imports
again) and answers with one line of JSON: the child's sample, or a sample
with C{error} set if the child failed or took too long.  The worker exits
when its standard input closes, killing a child that is still running;
a child also dies with its worker.

Where C{os.fork} does not exist, each measurement runs as a new
C{python -m benchmarks.client} process instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # pragma: no cover - run as a file
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import client
from benchmarks.sample import sample
from benchmarks.systems import ALL_SYSTEMS

#: What each system's measurements import, loaded once by the worker.
PRELOAD: Dict[str, Sequence[str]] = {
    "classic": ("twisted.spread.pb", "twisted.internet.defer"),
    "pbext": (
        "pbext",
        "pbext.broker",
        "pbext.client",
        "pbext.codec",
        "pbext.copyable",
        "pbext._jelly",
        "pbext.security",
    ),
    "pyro5": ("Pyro5.api", "msgpack"),
    "rpyc": ("rpyc", "rpyc.utils.classic"),
    "floor": ("benchmarks.floor", "msgpack"),
}

_PR_SET_PDEATHSIG = 1


def preload(system: str) -> List[str]:
    """
    Import what C{system}'s measurements use; modules that do not import
    are left for the measurement to report.

    @return: The modules that did not import.
    """
    missing = []
    for name in PRELOAD.get(system, ()):
        try:
            importlib.import_module(name)
        except Exception:
            missing.append(name)
    return missing


def canFork() -> bool:
    """
    Whether measurements can be forked from this process: there is
    C{os.fork}, no reactor has been installed and no other thread runs.
    """
    import threading

    return (
        hasattr(os, "fork")
        and "twisted.internet.reactor" not in sys.modules
        and threading.active_count() == 1
    )


def _dieWithParent() -> None:
    """
    Ask Linux to kill this process when its parent (the worker) dies.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _child(argv: Sequence[str], output: int) -> None:
    """
    In the forked child: make the measurement, write its JSON to
    C{output}, and exit without running the worker's clean-up.
    """
    status = 0
    try:
        _dieWithParent()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        # Only the result goes back to the worker: anything a library
        # prints goes to the worker's stderr.
        os.dup2(2, 1)
        result = client.measure(client.parseArguments(argv))
        data = json.dumps(result).encode("utf-8")
        while data:
            data = data[os.write(output, data) :]
    except BaseException:
        status = 1
    finally:
        os._exit(status)


def _kill(pid: int) -> int:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    return os.waitpid(pid, 0)[1]


def forkMeasurement(
    argv: Sequence[str], timeout: float, control: int
) -> Optional[Dict[str, Any]]:
    """
    Make one measurement in a forked child.

    @param control: The worker's standard input: if it closes meanwhile,
        the child is killed and L{None} returned.
    @return: The child's sample, an error sample, or L{None}.
    """
    readable, writable = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(readable)
        _child(argv, writable)
    os.close(writable)
    received = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _kill(pid)
                return sample(None, 0, 0.0, False, error=f"killed after {timeout} s")
            ready, _, _ = select.select([readable, control], [], [], remaining)
            if control in ready and not os.read(control, 1):
                _kill(pid)
                return None
            if readable in ready:
                chunk = os.read(readable, 65536)
                if not chunk:
                    break
                received += chunk
    finally:
        os.close(readable)
    status = os.waitpid(pid, 0)[1]
    try:
        result: Dict[str, Any] = json.loads(received.decode("utf-8"))
    except ValueError:
        return sample(
            None, 0, 0.0, False, error=f"measurement process failed (status {status})"
        )
    return result


def spawnMeasurement(argv: Sequence[str], timeout: float) -> Dict[str, Any]:
    """
    Make one measurement in a new C{python -m benchmarks.client} process.
    """
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.client", *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return sample(None, 0, 0.0, False, error=f"killed after {timeout} s")
    lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        result: Dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        stderr = done.stderr.decode("utf-8", "replace").strip()[-1000:]
        return sample(
            None,
            0,
            0.0,
            False,
            error=f"client exited {done.returncode} without a result: {stderr}",
        )
    return result


def serve(system: str, control: int = 0) -> int:
    """
    Answer measurement requests read from C{control} until it closes.
    """
    preload(system)
    fork = canFork()
    pending = b""
    while True:
        while b"\n" not in pending:
            chunk = os.read(control, 65536)
            if not chunk:
                return 0
            pending += chunk
        line, pending = pending.split(b"\n", 1)
        request = json.loads(line.decode("utf-8"))
        argv = [str(a) for a in request["argv"]]
        timeout = float(request["timeout"])
        if fork:
            result = forkMeasurement(argv, timeout, control)
            if result is None:
                return 0
        else:
            result = spawnMeasurement(argv, timeout)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", required=True, choices=ALL_SYSTEMS)
    options = parser.parse_args(argv)
    # Ctrl-C reaches the whole process group: the runner decides when the
    # worker stops, by closing its standard input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return serve(options.system)


if __name__ == "__main__":
    sys.exit(main())
