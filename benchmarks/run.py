"""
Benchmark classic Perspective Broker and pbext side by side.

    python benchmarks/run.py [--quick] [--rounds N]
        [--systems classic,pbext[,pyro5,rpyc,floor]] [--workloads small,...]
        [--json FILE] [--chart FILE.svg]

Servers and clients run in separate processes on 127.0.0.1 (a client
worker per system forks a fresh process for each measurement).  In each round
every workload is measured once per system, the systems taking turns
(classic, pbext, ...), so machine noise hits them alike.  The table on
stdout shows each system's median and its ratio to classic PB (and, with
the raw Twisted echo C{floor}, pbext's ratio to the floor); the JSON
file holds every sample, and the SVG chart is drawn from it.  Progress goes
to stderr, one line per measurement.  See C{benchmarks/README.rst}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO, Any, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import chart, report  # noqa: E402
from benchmarks.systems import (  # noqa: E402
    ALL_SYSTEMS,
    BASELINE,
    available,
    peerVersion,
    unsupported,
)
from benchmarks.workloads import (  # noqa: E402
    BY_NAME,
    DEFAULT_ROUNDS,
    WORKLOADS,
    Workload,
)

#: Seconds a server may take to print its port.
SERVER_START_SECONDS = 30.0

#: Seconds a measurement may run past its workload's time bound before it is
#: killed (warm-up, opening connections).
CLIENT_GRACE_SECONDS = 90.0

#: Where results go unless C{--json}/C{--chart} say otherwise.
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")

SCHEMA = "pbext-benchmarks/1"


def _environment() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [ROOT, env.get("PYTHONPATH", "")] if p
    )
    return env


def _progress(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class ChildProcess:
    """
    A child process of the runner that answers with lines of JSON on its
    stdout, logs to a file, and exits when its stdin closes (so it cannot
    outlive the runner); L{stop} also terminates and, if need be, kills it.
    """

    def __init__(self, argv: Sequence[str], name: str, logDirectory: str) -> None:
        self.argv = list(argv)
        self.name = name
        self.logPath = os.path.join(logDirectory, f"{name}-{time.time()}.log")
        self._log: Optional[IO[bytes]] = None
        self._pending = b""
        self.process: Optional[subprocess.Popen[bytes]] = None

    def launch(self) -> None:
        """
        Start the process.
        """
        self._log = open(self.logPath, "ab")
        self.process = subprocess.Popen(
            [sys.executable, *self.argv],
            cwd=ROOT,
            env=_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, message: Dict[str, Any]) -> None:
        """
        Write C{message} as a line of JSON to the process's stdin.

        @raise OSError: If the process is gone.
        """
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode("utf-8") + b"\n")
        self.process.stdin.flush()

    def receive(self, timeout: float) -> Dict[str, Any]:
        """
        Read one line of JSON from the process's stdout, waiting at most
        C{timeout} seconds.

        @raise RuntimeError: If it exits, stays silent or writes no JSON.
        """
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while b"\n" not in self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise RuntimeError(f"{self.name}: no answer in {timeout:.0f} s")
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(
                        f"{self.name} exited: {self.errors() or 'no output'}"
                    )
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        try:
            message = json.loads(line.decode("utf-8"))
        except ValueError:
            raise RuntimeError(f"{self.name} wrote {line[:200]!r}")
        if not isinstance(message, dict):
            raise RuntimeError(f"{self.name} wrote {line[:200]!r}")
        return message

    def errors(self) -> str:
        """
        The end of what the process wrote to stderr.
        """
        try:
            with open(self.logPath, "rb") as f:
                return f.read()[-2000:].decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def stop(self) -> None:
        """
        Stop the process: close its stdin, then SIGTERM, then SIGKILL.
        """
        process = self.process
        if process is not None:
            for step in (self._closeInput, process.terminate, process.kill):
                if process.poll() is not None:
                    break
                try:
                    step()
                    process.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            if process.stdout is not None:
                process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _closeInput(self) -> None:
        if self.process is not None and self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except OSError:
                pass


class ServerProcess(ChildProcess):
    """
    A benchmark server (C{python -m benchmarks.server}).

    @ivar info: What the server announced: C{port}, C{pid}, C{copyables}...
    """

    def __init__(self, system: str, logDirectory: str) -> None:
        super().__init__(
            ["-m", "benchmarks.server", "--system", system],
            f"{system} server",
            logDirectory,
        )
        self.system = system
        self.info: Dict[str, Any] = {}

    def ready(self) -> ServerProcess:
        """
        Wait (bounded) for the launched server's announcement.

        @raise RuntimeError: If it exits or stays silent.
        """
        try:
            self.info = self.receive(SERVER_START_SECONDS)
            int(self.info["port"])
        except (RuntimeError, KeyError, TypeError, ValueError) as e:
            self.stop()
            raise RuntimeError(f"{self.system} server did not start: {e}")
        return self


class ClientWorker(ChildProcess):
    """
    A client worker (C{python -m benchmarks.worker}) that makes one
    system's measurements, each in a fresh process it forks.
    """

    def __init__(self, system: str, logDirectory: str) -> None:
        super().__init__(
            ["-m", "benchmarks.worker", "--system", system],
            f"{system} client worker",
            logDirectory,
        )
        self.system = system

    def measure(self, argv: Sequence[str], timeout: float) -> Dict[str, Any]:
        """
        Make one measurement with L{benchmarks.client} arguments C{argv}.

        @return: Its sample; if the worker fails, a sample with C{error}
            set (and the worker is stopped, to be started again next time).
        """
        from benchmarks.sample import sample

        try:
            if not self.alive:
                self.stop()
                self.launch()
            self.send({"argv": list(argv), "timeout": timeout})
            # The worker enforces the timeout; this is a backstop.
            return self.receive(timeout + 30)
        except (OSError, RuntimeError) as e:
            self.stop()
            return sample(None, 0, 0.0, False, error=str(e))


def clientArguments(
    system: str,
    workload: Workload,
    parameters: Dict[str, Any],
    server: Optional[ServerProcess],
) -> List[str]:
    """
    The L{benchmarks.client} arguments of one measurement.
    """
    argv = ["--system", system, "--workload", workload.name]
    for key, value in parameters.items():
        argv += [f"--{key}", str(value)]
    if server is not None:
        argv += ["--port", str(server.info["port"])]
        argv += ["--server-pid", str(server.info["pid"])]
        if server.info.get("copyables") == "typed":
            argv += ["--copyables", "typed"]
    return argv


def machineInfo() -> Dict[str, Any]:
    """
    What the numbers were measured on and with.
    """
    import twisted

    try:
        import pbext

        pbextVersion: Optional[str] = _versionString(pbext.__version__)
    except Exception as e:
        pbextVersion = f"not importable: {e!r}"
    info: Dict[str, Any] = {
        "cpuCount": os.cpu_count(),
        "cpuModel": _cpuModel(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "twisted": twisted.__version__,
        "pbext": pbextVersion,
        "pbextRevision": _gitRevision(),
    }
    for system in ("pyro5", "rpyc", "msgpack"):
        info[system] = peerVersion(system)
    return info


def _versionString(version: Any) -> str:
    public = getattr(version, "public", None)
    return public() if callable(public) else str(version)


def _cpuModel() -> Optional[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _gitRevision() -> Optional[str]:
    """
    The working tree's commit, with C{+dirty} if C{pbext/} has changes.
    """

    def git(*args: str) -> Optional[str]:
        try:
            done = subprocess.run(
                ["git", "-C", ROOT, *args],
                capture_output=True,
                timeout=10,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.decode("utf-8", "replace").strip()

    revision = git("rev-parse", "--short=12", "HEAD")
    if revision and git("status", "--porcelain", "--", "pbext"):
        revision += "+dirty"
    return revision


def parseArguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Benchmark classic PB and pbext side by side.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="less work: under two minutes"
    )
    mode.add_argument(
        "--smoke",
        action="store_true",
        help="a few operations per workload, to check that everything runs "
        "(the numbers mean nothing)",
    )
    parser.add_argument("--rounds", type=int, help="rounds (default: 7, quick 2)")
    parser.add_argument(
        "--systems",
        default=",".join(ALL_SYSTEMS),
        help="comma-separated, from: " + ", ".join(ALL_SYSTEMS) + " (default: all;"
        " peers that do not import are skipped with a note)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(w.name for w in WORKLOADS),
        help="comma-separated, from: " + ", ".join(w.name for w in WORKLOADS),
    )
    parser.add_argument(
        "--json",
        default=os.path.join(RESULTS_DIR, "latest.json"),
        help="where to write all samples and summaries (default: %(default)s)",
    )
    parser.add_argument(
        "--chart",
        default=os.path.join(RESULTS_DIR, "latest.svg"),
        help="where to draw the SVG chart (default: %(default)s)",
    )
    options = parser.parse_args(argv)
    options.mode = "quick" if options.quick else "smoke" if options.smoke else "full"
    if options.rounds is None:
        options.rounds = DEFAULT_ROUNDS[options.mode]
    if options.rounds < 1:
        parser.error("--rounds must be at least 1")
    options.systems = [s.strip() for s in options.systems.split(",") if s.strip()]
    for system in options.systems:
        if system not in ALL_SYSTEMS:
            parser.error(f"unknown system {system!r}; choose from {ALL_SYSTEMS}")
    options.workloads = [w.strip() for w in options.workloads.split(",") if w.strip()]
    for name in options.workloads:
        if name not in BY_NAME:
            parser.error(f"unknown workload {name!r}; choose from {list(BY_NAME)}")
    return options


def _raiseInterrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _describeSample(result: Dict[str, Any], workload: Workload) -> str:
    if result.get("value") is None:
        return "error: " + str(result.get("error"))[:160]
    text = f"{report.formatNumber(result['value'])} {workload.unit}"
    text += f"  ({result['completed']} in {result['elapsed']:.2f} s"
    text += ", time bound)" if result.get("truncated") else ")"
    memory = result.get("extra", {}).get("memoryPerConnectionKB")
    if memory is not None:
        text += f"  server {memory:.1f} KB/conn"
    return text


def acceleratorNote() -> str:
    """
    Whether the pbext measured runs with its C accelerator: in a source
    tree it must be built in place first.
    """
    try:
        from pbext import _accelerator
    except ImportError:
        return "pbext has no C accelerator module"
    if _accelerator.speedups is not None:
        return "pbext runs with its C accelerator"
    return (
        f"pbext runs in pure Python ({_accelerator.reason}); build the "
        "accelerator with: python setup.py build_ext --inplace"
    )


def run(options: argparse.Namespace) -> Dict[str, Any]:
    """
    Run every measurement C{options} asks for.

    @return: The summarised results.
    """
    started = time.monotonic()
    systems: List[str] = []
    skipped: Dict[str, str] = {}
    notes: List[str] = []
    if BASELINE not in options.systems:
        notes.append(f"{BASELINE} added: it is the baseline of every ratio")
        options.systems.insert(0, BASELINE)
    for system in options.systems:
        ok, detail = available(system)
        if ok:
            systems.append(system)
        else:
            skipped[system] = detail
            _progress(f"note: {system} skipped: {detail}")
    if "pbext" in systems:
        note = acceleratorNote()
        notes.append(note)
        _progress(f"note: {note}")
    workloads = [BY_NAME[name] for name in options.workloads]
    results: Dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
        "mode": options.mode,
        "rounds": options.rounds,
        "machine": machineInfo(),
        "baseline": BASELINE,
        "systems": systems,
        "skipped": skipped,
        "notes": notes,
        "servers": [],
        "workloads": [],
    }
    rows: Dict[str, Dict[str, Any]] = {}
    for workload in workloads:
        # A system that cannot do a workload is left out of its row, with
        # the reason in the row's notes.
        left = {s: unsupported(s, workload.name) for s in systems}
        measured = [s for s in systems if left[s] is None]
        rows[workload.name] = {
            "name": workload.name,
            "title": workload.title,
            "short": workload.short,
            "unit": workload.unit,
            "description": workload.description,
            "higherIsBetter": True,
            "parameters": dict(workload.parameters[options.mode]),
            "samples": {s: [] for s in measured},
            "skipped": {s: reason for s, reason in left.items() if reason},
        }
        results["workloads"].append(rows[workload.name])
    total = sum(len(rows[w.name]["samples"]) for w in workloads) * options.rounds
    _progress(
        f"pbext benchmarks: {options.mode} mode, {options.rounds} round(s), "
        f"{len(workloads)} workload(s), systems {', '.join(systems)}: "
        f"{total} measurements"
    )
    done = 0
    with tempfile.TemporaryDirectory(prefix="pbext-bench-") as logs:
        processes = Processes(logs)
        results["servers"] = processes.started
        try:
            shared = any(w.network and w.name != "clients" for w in workloads)
            notes.extend(processes.startAll(systems, shared))
            for number in range(1, options.rounds + 1):
                order = systems if number % 2 else systems[::-1]
                for workload in workloads:
                    row = rows[workload.name]
                    for system in order:
                        if system not in row["samples"]:
                            continue
                        result = _measure(system, workload, processes, options.mode)
                        result["round"] = number
                        row["samples"][system].append(result)
                        done += 1
                        elapsed = time.monotonic() - started
                        _progress(
                            f"[{done:3d}/{total} {elapsed:5.0f}s] round "
                            f"{number}/{options.rounds}  {workload.name:<9} "
                            f"{system:<7} {_describeSample(result, workload)}"
                        )
        finally:
            processes.stopAll()
    results["elapsedSeconds"] = round(time.monotonic() - started, 1)
    return report.summarise(results)


class Processes:
    """
    The child processes of one run: a client worker per system, a shared
    server per system for most workloads, and a fresh server per
    measurement of the clients workload.

    A server that fails to start is not tried again: its system's
    measurements then fail at once with the reason.

    @ivar started: What every server started announced, for the results.
    """

    def __init__(self, logDirectory: str) -> None:
        self.logDirectory = logDirectory
        self.started: List[Dict[str, Any]] = []
        self._shared: Dict[str, ServerProcess] = {}
        self._workers: Dict[str, ClientWorker] = {}
        self._failed: Dict[str, str] = {}

    def start(self, system: str) -> ServerProcess:
        """
        Start a server of C{system}.

        @raise RuntimeError: If it does not start, now or before.
        """
        return self._ready(self._launch(system))

    def _launch(self, system: str) -> ServerProcess:
        if system in self._failed:
            raise RuntimeError(self._failed[system])
        server = ServerProcess(system, self.logDirectory)
        server.launch()
        return server

    def _ready(self, server: ServerProcess) -> ServerProcess:
        try:
            server.ready()
        except RuntimeError as e:
            self._failed[server.system] = str(e)
            raise
        self.started.append(dict(server.info))
        return server

    def startAll(self, systems: Sequence[str], sharedServers: bool) -> List[str]:
        """
        Start the client workers of C{systems} and, if C{sharedServers},
        their shared servers, all at once.

        @return: Notes: what the servers said, and which did not start.
        """
        notes: List[str] = []
        for system in systems:
            worker = self._workers[system] = ClientWorker(system, self.logDirectory)
            worker.launch()
        launched = [self._launch(system) for system in systems if sharedServers]
        for server in launched:
            try:
                self._shared[server.system] = self._ready(server)
            except RuntimeError as e:
                _progress(f"{server.system}: {e}")
                notes.append(str(e))
                continue
            _progress(f"started {server.system} server on port {server.info['port']}")
            notes.extend(f"{server.system} server: {n}" for n in server.info["notes"])
        return notes

    def shared(self, system: str) -> ServerProcess:
        """
        The shared server of C{system}, started (or restarted, if it died)
        as needed.

        @raise RuntimeError: If it does not start.
        """
        server = self._shared.get(system)
        if server is not None and not server.alive:
            _progress(f"the {system} server died: {server.errors()[-300:]}")
            server.stop()
            server = None
        if server is None:
            server = self._shared[system] = self.start(system)
            _progress(f"started {system} server on port {server.info['port']}")
        return server

    def worker(self, system: str) -> ClientWorker:
        """
        The client worker of C{system}.
        """
        if system not in self._workers:
            self._workers[system] = ClientWorker(system, self.logDirectory)
        return self._workers[system]

    def stopAll(self) -> None:
        """
        Stop every client worker and shared server.
        """
        for child in [*self._workers.values(), *self._shared.values()]:
            child.stop()
        self._workers.clear()
        self._shared.clear()


def _measure(
    system: str, workload: Workload, processes: Processes, mode: str
) -> Dict[str, Any]:
    """
    One measurement: the clients workload gets a fresh server, so that its
    memory reading starts from a server that has done nothing else.
    """
    from benchmarks.sample import sample

    parameters = dict(workload.parameters[mode])
    timeout = float(parameters.get("seconds", 1.0)) + CLIENT_GRACE_SECONDS
    worker = processes.worker(system)
    fresh = None
    try:
        if not workload.network:
            server = None
        elif workload.name == "clients":
            server = fresh = processes.start(system)
        else:
            server = processes.shared(system)
    except RuntimeError as e:
        return sample(None, 0, 0.0, False, error=str(e))
    try:
        argv = clientArguments(system, workload, parameters, server)
        result = worker.measure(argv, timeout)
        if server is not None and not server.alive:
            result["error"] = result.get("error") or "the server died"
            result.setdefault("notes", []).append(server.errors()[-500:])
        return result
    finally:
        if fresh is not None:
            fresh.stop()


def writeResults(results: Dict[str, Any], jsonPath: str, chartPath: str) -> None:
    """
    Write the results as JSON and draw the chart from them.
    """
    for path in (jsonPath, chartPath):
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
    with open(jsonPath, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    chart.writeChart(results, chartPath)


def main(argv: Optional[Sequence[str]] = None) -> int:
    options = parseArguments(argv)
    # Ctrl-C and SIGTERM both end the run through the same clean-up, even
    # when the runner was started with SIGINT ignored (in the background).
    signal.signal(signal.SIGINT, _raiseInterrupt)
    signal.signal(signal.SIGTERM, _raiseInterrupt)
    try:
        results = run(options)
    except KeyboardInterrupt:
        _progress("interrupted: servers stopped, no results written")
        return 130
    writeResults(results, options.json, options.chart)
    sys.stdout.write(report.formatTable(results))
    sys.stdout.write(
        f"\n{results['elapsedSeconds']:.0f} s; samples in {options.json}, "
        f"chart in {options.chart}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
