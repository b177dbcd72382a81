"""
One benchmark measurement, in a process of its own: forked by a client
worker (L{benchmarks.worker}) or run as a command,

    python -m benchmarks.client --system pbext --workload small --port 4321 \\
        --count 1000 --seconds 1

which prints one line of JSON to stdout: the measured C{value} (a rate, or
L{None} if the measurement failed), how many operations C{completed} in how
many seconds (C{elapsed}), whether the time bound cut it short
(C{truncated}), an C{error} message and C{notes}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # pragma: no cover - run as a file
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import payloads, serialization
from benchmarks.sample import MeasurementError, check, now, rate, sample
from benchmarks.systems import (
    ALL_SYSTEMS,
    FLOOR,
    RPYC_CONFIG,
    TWISTED_SYSTEMS,
    configurePyroClient,
    readRSS,
)

#: Connections are opened in batches of this many (the listen backlog).
CONNECT_BATCH = 50

#: Extra seconds a measurement may take past its bound before it fails.
GRACE = 30.0

#: How long the pbext client waits for the typed-copyable probe.
PROBE_SECONDS = 5.0

#: Seconds the server gets to settle before its memory is read.
SETTLE_SECONDS = 0.5


def split(count: int, lanes: int) -> List[int]:
    """
    Share C{count} operations between C{lanes} as evenly as possible.
    """
    return [count // lanes + (1 if i < count % lanes else 0) for i in range(lanes)]


def _checkPoints(points: Any, count: int) -> None:
    check(isinstance(points, list) and len(points) == count, "objects() length")
    if count:
        last = points[-1]
        check(
            (last.x, last.y, last.name)
            == (count - 1, 2 * (count - 1), f"p{count - 1}"),
            "objects() content",
        )


# Twisted clients: classic PB and pbext.


class _Lanes:
    """
    Run asynchronous operations on several lanes until every lane has used
    its budget, the deadline passes or one fails.

    Each lane runs one operation at a time, so the number of lanes is the
    number of operations in flight.
    """

    def __init__(
        self,
        operations: Sequence[Callable[[], Any]],
        budgets: Sequence[int],
        seconds: float,
    ) -> None:
        from twisted.internet.defer import Deferred

        self._operations = operations
        self._budgets = list(budgets)
        self._seconds = seconds
        self._active = 0
        self._failure: Any = None
        self.completed = 0
        self.elapsed = 0.0
        self.done: Deferred[None] = Deferred()

    def start(self) -> Any:
        self._start = now()
        self._deadline = self._start + self._seconds
        self._last = self._start
        self._active = len(self._operations)
        if not self._active:
            self.done.callback(None)
        for lane in range(len(self._operations)):
            self._next(lane)
        return self.done

    def _next(self, lane: int) -> None:
        if self._failure is None and self._budgets[lane] > 0:
            if now() < self._deadline:
                self._budgets[lane] -= 1
                d = self._operations[lane]()
                d.addCallbacks(
                    self._succeeded,
                    self._failed,
                    callbackArgs=(lane,),
                    errbackArgs=(lane,),
                )
                return
        self._active -= 1
        if self._active == 0 and not self.done.called:
            self.elapsed = self._last - self._start
            if self._failure is not None:
                self.done.errback(self._failure)
            else:
                self.done.callback(None)

    def _succeeded(self, result: object, lane: int) -> None:
        self.completed += 1
        self._last = now()
        self._next(lane)

    def _failed(self, failure: Any, lane: int) -> None:
        if self._failure is None:
            self._failure = failure
        self._next(lane)


def _withTimeout(reactor: Any, d: Any, seconds: float, what: str) -> Any:
    """
    Fail C{d} with L{MeasurementError} if it has not fired in C{seconds}.
    """
    from twisted.python.failure import Failure

    def expire() -> None:
        if not d.called:
            d.errback(Failure(MeasurementError(f"{what}: no answer in {seconds} s")))

    call = reactor.callLater(seconds, expire)

    def cancel(result: object) -> object:
        if call.active():
            call.cancel()
        return result

    return d.addBoth(cancel)


class _TwistedClient:
    """
    Measurements with Twisted PB clients: classic or pbext factories.
    """

    def __init__(self, reactor: Any, system: str, options: argparse.Namespace):
        self.reactor = reactor
        self.system = system
        self.options = options
        self.notes: List[str] = []
        self.factories: List[Any] = []
        self.registry: Any = None
        if system == "pbext" and options.copyables == "typed":
            self.registry, note = payloads.typedRegistry()
            if self.registry is None:
                self.notes.append(note)

    def makeFactory(self) -> Any:
        if self.system == "classic":
            from twisted.spread import pb

            return pb.PBClientFactory()
        import pbext

        if self.registry is not None:
            return pbext.PBClientFactory(registry=self.registry)
        return pbext.PBClientFactory()

    async def connect(self) -> Any:
        factory = self.makeFactory()
        self.factories.append(factory)
        self.reactor.connectTCP("127.0.0.1", self.options.port, factory, timeout=30)
        root = factory.getRootObject()
        return await _withTimeout(self.reactor, root, 30.0, "getRootObject")

    def disconnect(self) -> None:
        for factory in self.factories:
            factory.disconnect()
        self.factories = []

    def smallCall(self, root: Any) -> Any:
        """
        One small call, C{echo(42)}, on the connection C{root} came from.
        """
        return root.callRemote("echo", 42)

    async def sequence(
        self, operation: Callable[[], Any], count: int, lanes: int = 1
    ) -> Dict[str, Any]:
        budgets = split(count, lanes)
        return await self.run([operation] * lanes, budgets, count, 1.0)

    async def run(
        self,
        operations: Sequence[Callable[[], Any]],
        budgets: Sequence[int],
        target: int,
        perOperation: float,
    ) -> Dict[str, Any]:
        o = self.options
        lanes = _Lanes(operations, budgets, o.seconds)
        await _withTimeout(self.reactor, lanes.start(), o.seconds + GRACE, "workload")
        return rate(lanes.completed, lanes.elapsed, perOperation, target)

    async def warm(self, operation: Callable[[], Any], count: int) -> Any:
        result = None
        deadline = now() + max(self.options.seconds, 5.0)
        for _i in range(max(1, count)):
            result = await _withTimeout(self.reactor, operation(), 60.0, "warm-up")
            if now() > deadline:
                break
        return result

    async def measure(self) -> Dict[str, Any]:
        o = self.options
        if o.workload == "clients":
            return await self.clients()
        root = await self.connect()
        if o.workload in ("small", "inflight"):
            answer = await self.warm(lambda: root.callRemote("echo", 42), o.warmup)
            check(answer == 42, "echo(42)")
            lanes = o.lanes if o.workload == "inflight" else 1
            result = await self.sequence(
                lambda: root.callRemote("echo", 42), o.count, lanes
            )
        elif o.workload == "struct":
            structure = payloads.makeStructure(o.dicts)
            answer = await self.warm(
                lambda: root.callRemote("echo", structure), o.warmup
            )
            check(answer == structure, "echo(structure)")
            result = await self.sequence(
                lambda: root.callRemote("echo", structure), o.count
            )
        elif o.workload == "bytes":
            blob = payloads.makeBlob()
            answer = await self.warm(lambda: root.callRemote("echo", blob), o.warmup)
            check(answer == blob, "echo(blob)")
            result = await self.sequence(lambda: root.callRemote("echo", blob), o.count)
            if result["value"] is not None:
                result["value"] = result["value"] * len(blob) / 1e6
        elif o.workload in ("copyables", "classiccopies"):
            if o.workload == "classiccopies":
                method = "objects"
            else:
                method = await self.chooseCopyables(root)
            answer = await self.warm(
                lambda: root.callRemote(method, o.objects), o.warmup
            )
            _checkPoints(answer, o.objects)
            result = await self.sequence(
                lambda: root.callRemote(method, o.objects), o.count
            )
            if result["value"] is not None:
                result["value"] *= o.objects
        else:
            raise MeasurementError(f"unknown workload {o.workload!r}")
        result["notes"] = self.notes + result["notes"]
        return result

    async def chooseCopyables(self, root: Any) -> str:
        """
        Pick the remote method whose objects this client receives: the typed
        dataclass if server and client both have a typed registry and a
        probe call works, else the classic copyable.
        """
        if self.registry is None:
            if self.system == "pbext":
                self.notes.append("pbext returns classic pb.Copyable objects")
            return "objects"
        try:
            probe = root.callRemote("typedObjects", 2)
            points = await _withTimeout(self.reactor, probe, PROBE_SECONDS, "probe")
            _checkPoints(points, 2)
        except Exception as e:
            self.notes.append(
                "typed copyables failed, pbext returns classic pb.Copyable "
                f"objects ({e!r:.200})"
            )
            return "objects"
        self.notes.append("pbext returns dataclasses from a typed registry")
        return "typedObjects"

    async def clients(self) -> Dict[str, Any]:
        from twisted.internet import defer, task

        o = self.options
        # One connection warms the server up before its memory is read.
        warmRoot = await self.connect()
        await self.warm(lambda: self.smallCall(warmRoot), 10)
        before = readRSS(o.server_pid)
        roots: List[Any] = []
        while len(roots) < o.clients:
            batch = min(CONNECT_BATCH, o.clients - len(roots))
            connecting = [defer.ensureDeferred(self.connect()) for _ in range(batch)]
            roots.extend(await defer.gatherResults(connecting, consumeErrors=True))
        await task.deferLater(self.reactor, SETTLE_SECONDS, lambda: None)
        after = readRSS(o.server_pid)
        extra: Dict[str, Any] = {"connections": len(roots)}
        if before is not None and after is not None:
            extra["serverRSSBeforeKB"] = before
            extra["serverRSSAfterKB"] = after
            extra["memoryPerConnectionKB"] = (after - before) / len(roots)
        else:
            self.notes.append("server memory not measured (no /proc)")
        operations = [(lambda r=root: self.smallCall(r)) for root in roots]
        result = await self.run(
            operations, [o.calls] * len(roots), o.calls * len(roots), 1.0
        )
        result["extra"].update(extra)
        result["notes"] = self.notes + result["notes"]
        return result


def _runTwisted(system: str, options: argparse.Namespace) -> Dict[str, Any]:
    from twisted.internet import defer, reactor
    from twisted.python.failure import Failure

    payloads.registerClassicCopyables()
    client: _TwistedClient
    if system == FLOOR:
        from benchmarks.floor import FloorClient

        client = FloorClient(reactor, system, options)
    else:
        client = _TwistedClient(reactor, system, options)
    outcome: Dict[str, Any] = {}

    async def main() -> None:
        try:
            outcome.update(await client.measure())
        finally:
            client.disconnect()

    def done(result: Any) -> None:
        if isinstance(result, Failure):
            error = _describeFailure(result)
            outcome.update(sample(None, 0, 0.0, False, client.notes, error=error))
        reactor.callLater(0.05, reactor.stop)

    def begin() -> None:
        defer.ensureDeferred(main()).addBoth(done)

    reactor.callWhenRunning(begin)
    reactor.run(installSignalHandlers=True)
    return outcome


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]


def _describeFailure(failure: Any) -> str:
    """
    Describe a failure, local or remote (a remote error arrives as a
    C{CopiedFailure} whose C{type} is the remote class name as C{bytes}).
    """
    kind = failure.type
    if isinstance(kind, type):
        name = kind.__name__
    elif isinstance(kind, bytes):
        name = "remote " + kind.decode("utf-8", "replace")
    else:
        name = str(kind)
    return f"{name}: {failure.getErrorMessage()}"[:500]


# Synchronous clients: Pyro5 and RPyC, one thread per lane.


class _SyncClient:
    """
    Measurements with a blocking client library, one thread and one
    connection per lane.
    """

    def __init__(self, system: str, options: argparse.Namespace) -> None:
        self.system = system
        self.options = options
        self.notes: List[str] = []
        #: The server's RSS before the clients workload's connections.
        self.rssBefore: Optional[int] = None
        if system == "pyro5":
            configurePyroClient()

    def connect(self) -> Any:
        o = self.options
        if self.system == "pyro5":
            import Pyro5.api

            proxy = Pyro5.api.Proxy(f"PYRO:bench@127.0.0.1:{o.port}")
            proxy._pyroBind()
            return proxy
        import rpyc

        connection = rpyc.connect("127.0.0.1", o.port, config=dict(RPYC_CONFIG))
        connection._benchRoot = connection.root
        return connection

    def close(self, connection: Any) -> None:
        try:
            if self.system == "pyro5":
                connection._pyroRelease()
            else:
                connection.close()
        except Exception:
            pass

    def call(self, connection: Any, method: str, *args: Any) -> Any:
        if self.system == "pyro5":
            return getattr(connection, method)(*args)
        import rpyc
        from rpyc.utils.classic import obtain

        value = getattr(connection._benchRoot, method)(*args)
        if isinstance(value, rpyc.BaseNetref):
            value = obtain(value)
        return value

    def operation(self) -> Callable[[Any], Any]:
        o = self.options
        if o.workload in ("small", "inflight", "clients"):
            return lambda c: self.call(c, "echo", 42)
        if o.workload == "struct":
            structure = payloads.makeStructure(o.dicts)
            return lambda c: self.call(c, "echo", structure)
        if o.workload == "bytes":
            blob = payloads.makeBlob()
            return lambda c: self.call(c, "echo", blob)
        if o.workload in ("copyables", "classiccopies"):
            return lambda c: self.call(c, "objects", o.objects)
        raise MeasurementError(f"unknown workload {o.workload!r}")

    def measure(self) -> Dict[str, Any]:
        o = self.options
        operation = self.operation()
        if o.workload == "clients":
            budgets = [o.calls] * o.clients
        else:
            lanes = o.lanes if o.workload == "inflight" else 1
            budgets = split(o.count, lanes)
        # One connection warms the server up (and, for the clients
        # workload, stays open while the server's memory is read).
        warmConnection = self.connect()
        try:
            answer = None
            deadline = now() + max(o.seconds, 5.0)
            for _i in range(max(1, o.warmup)):
                answer = operation(warmConnection)
                if now() > deadline:
                    break
            self.checkAnswer(answer)
            if o.workload == "clients":
                self.rssBefore = readRSS(o.server_pid)
            result = self.runLanes(operation, budgets)
        finally:
            self.close(warmConnection)
        result["notes"] = self.notes + result["notes"]
        if self.system == "rpyc" and o.workload in (
            "struct",
            "copyables",
            "classiccopies",
        ):
            result["notes"].append("RPyC copies lists and objects with obtain()")
        if o.workload == "bytes" and result["value"] is not None:
            result["value"] = result["value"] * payloads.BLOB_BYTES / 1e6
        if o.workload in ("copyables", "classiccopies") and result["value"] is not None:
            result["value"] *= o.objects
        return result

    def checkAnswer(self, answer: Any) -> None:
        o = self.options
        if o.workload in ("small", "inflight", "clients"):
            check(answer == 42, "echo(42)")
        elif o.workload == "struct":
            check(answer == payloads.makeStructure(o.dicts), "echo(structure)")
        elif o.workload == "bytes":
            check(answer == payloads.makeBlob(), "echo(blob)")
        else:
            _checkPoints(answer, o.objects)

    def runLanes(
        self, operation: Callable[[Any], Any], budgets: Sequence[int]
    ) -> Dict[str, Any]:
        o = self.options
        lanes = len(budgets)
        connected = threading.Barrier(lanes + 1, timeout=60)
        go = threading.Barrier(lanes + 1, timeout=60)
        counts = [0] * lanes
        errors: List[str] = []
        state = {"deadline": 0.0, "last": 0.0}
        lock = threading.Lock()

        def lane(index: int) -> None:
            connection = None
            try:
                connection = self.connect()
                connected.wait()
                go.wait()
                for _i in range(budgets[index]):
                    if errors or now() >= state["deadline"]:
                        break
                    operation(connection)
                    counts[index] += 1
                    with lock:
                        state["last"] = max(state["last"], now())
            except threading.BrokenBarrierError:
                pass
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}"[:500])
                connected.abort()
                go.abort()
            finally:
                if connection is not None:
                    self.close(connection)

        threads = [
            threading.Thread(target=lane, args=(i,), daemon=True) for i in range(lanes)
        ]
        for t in threads:
            t.start()
        extra: Dict[str, Any] = {}
        start = now()
        try:
            connected.wait()
            if o.workload == "clients":
                extra = self.memory(lanes)
            start = now()
            state["deadline"] = start + o.seconds
            state["last"] = start
            go.wait()
        except threading.BrokenBarrierError:
            pass
        stop = now() + o.seconds + GRACE
        for t in threads:
            t.join(max(0.0, stop - now()))
        if errors:
            raise MeasurementError(errors[0])
        if any(t.is_alive() for t in threads):
            raise MeasurementError("workload: threads still busy after the bound")
        result = rate(sum(counts), state["last"] - start, 1.0, sum(budgets))
        result["extra"].update(extra)
        return result

    def memory(self, connections: int) -> Dict[str, Any]:
        """
        The server's RSS growth per connection since L{rssBefore}.
        """
        time.sleep(SETTLE_SECONDS)
        after = readRSS(self.options.server_pid)
        before = self.rssBefore
        if before is None or after is None:
            self.notes.append("server memory not measured (no /proc)")
            return {"connections": connections}
        return {
            "connections": connections,
            "serverRSSBeforeKB": before,
            "serverRSSAfterKB": after,
            "memoryPerConnectionKB": (after - before) / connections,
        }


def _runSync(system: str, options: argparse.Namespace) -> Dict[str, Any]:
    if options.workload == "clients":
        options.warmup = 10
    return _SyncClient(system, options).measure()


def _runSerialization(system: str, options: argparse.Namespace) -> Dict[str, Any]:
    codec, notes = serialization.codecFor(system)
    if codec is None:
        return sample(None, 0, 0.0, False, notes, error=notes[0] if notes else None)
    result = serialization.measure(
        codec, options.count, options.seconds, options.warmup, options.dicts
    )
    result["notes"] = notes + result.get("notes", [])
    return result


def parseArguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", required=True, choices=ALL_SYSTEMS)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--lanes", type=int, default=100)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--dicts", type=int, default=payloads.STRUCTURE_DICTS)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--copyables", choices=("typed", "classic"), default="classic")
    return parser.parse_args(argv)


def measure(options: argparse.Namespace) -> Dict[str, Any]:
    """
    Make the measurement C{options} describe, in this process.
    """
    try:
        if options.workload == "serialize":
            return _runSerialization(options.system, options)
        if options.system in TWISTED_SYSTEMS or options.system == FLOOR:
            return _runTwisted(options.system, options)
        return _runSync(options.system, options)
    except Exception as e:
        return sample(None, 0, 0.0, False, error=_describe(e))


def main(argv: Optional[Sequence[str]] = None) -> int:
    result = measure(parseArguments(argv))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    # Threads of blocking clients may still hold sockets; do not wait.
    os._exit(0)


if __name__ == "__main__":
    main()
