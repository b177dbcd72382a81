"""
Tests for C{benchmarks/}: the runner works end to end in its smallest
configuration, and its report and chart are well formed.

Nothing here times anything or asserts about speed: the benchmarks are the
measurement, these tests only prove they still run.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(ROOT, "benchmarks", "run.py")
SVG = "{http://www.w3.org/2000/svg}"

#: The smoke run's hard limit; it normally takes well under 30 seconds.
RUN_TIMEOUT = 300

try:
    from benchmarks import chart, report
    from benchmarks.workloads import WORKLOADS
except ImportError as e:  # pragma: no cover - run outside the source tree
    skipReason: Optional[str] = f"benchmarks/ is not importable: {e}"
else:
    skipReason = None

try:
    import msgpack  # noqa: F401
except ImportError:
    haveMsgpack = False
else:
    haveMsgpack = True


def _sample(value: Optional[float], **extra: Any) -> Dict[str, Any]:
    return {
        "value": value,
        "completed": 1,
        "elapsed": 1.0,
        "truncated": False,
        "notes": [],
        "extra": extra,
        "error": None if value is not None else "it broke",
    }


def _results() -> Dict[str, Any]:
    """
    A small unsummarised result set: two network workloads, three systems.
    """
    return {
        "schema": "pbext-benchmarks/1",
        "mode": "quick",
        "rounds": 3,
        "machine": {"cpuCount": 2, "python": "3.x", "twisted": "26.10.0"},
        "baseline": "classic",
        "systems": ["classic", "pbext", "rpyc"],
        "skipped": {"pyro5": "not importable"},
        "notes": [],
        "workloads": [
            {
                "name": "small",
                "title": "sequential small calls echo(42)",
                "short": "echo(42)\nsequential",
                "unit": "calls/s",
                "higherIsBetter": True,
                "samples": {
                    "classic": [_sample(100.0), _sample(300.0), _sample(200.0)],
                    "pbext": [_sample(400.0), _sample(None), _sample(600.0)],
                    "rpyc": [_sample(None)],
                },
            },
            {
                "name": "clients",
                "title": "200 clients x 20 calls",
                "short": "200 clients",
                "unit": "calls/s",
                "higherIsBetter": True,
                "samples": {
                    "classic": [_sample(10.0, memoryPerConnectionKB=8.0)],
                    "pbext": [_sample(20000.0, memoryPerConnectionKB=2.0)],
                    "rpyc": [_sample(5.0, memoryPerConnectionKB=16.0)],
                },
            },
        ],
    }


class ReportTests(SynchronousTestCase):
    """
    Tests for L{benchmarks.report}.
    """

    skip = skipReason

    def test_medianAndRatio(self) -> None:
        """
        Each system's median ignores failed samples, and its ratio is its
        median over the baseline's.
        """
        results = report.summarise(_results())
        small = results["workloads"][0]
        self.assertEqual(
            small["median"], {"classic": 200.0, "pbext": 500.0, "rpyc": None}
        )
        self.assertEqual(small["ratio"], {"classic": 1.0, "pbext": 2.5, "rpyc": None})
        self.assertIn("error: it broke", small["notes"]["pbext"])

    def test_memoryRow(self) -> None:
        """
        The clients workload's memory per connection becomes its own row,
        after it, where lower is better.
        """
        results = report.summarise(_results())
        names = [row["name"] for row in results["workloads"]]
        self.assertEqual(names, ["small", "clients", "memory"])
        memory = results["workloads"][2]
        self.assertFalse(memory["higherIsBetter"])
        self.assertEqual(memory["median"], {"classic": 8.0, "pbext": 2.0, "rpyc": 16.0})
        self.assertEqual(memory["ratio"]["pbext"], 0.25)

    def test_summariseTwice(self) -> None:
        """
        Summarising summarised results changes nothing (the memory row is
        rebuilt, not duplicated).
        """
        once = report.summarise(_results())
        twice = report.summarise(copy.deepcopy(once))
        self.assertEqual(once, twice)

    def test_table(self) -> None:
        """
        The table has a line per workload with its medians and ratios, says
        where a system failed, and lists skipped systems and errors.
        """
        table = report.formatTable(report.summarise(_results()))
        lines = table.splitlines()
        self.assertIn("pbext/classic", lines[0])
        small = [line for line in lines if line.startswith("sequential small")][0]
        self.assertEqual(small.split()[-5:], ["200", "500", "2.50x", "error", "-"])
        self.assertIn("2,000x", table)
        self.assertIn("note: pyro5 skipped: not importable", table)
        self.assertIn("note: small/pbext: error: it broke", table)


def _inRound(value: float, number: int, **extra: Any) -> Dict[str, Any]:
    result = _sample(value, **extra)
    result["round"] = number
    return result


def _floorResults() -> Dict[str, Any]:
    """
    A small unsummarised result set with the echo floor: two rounds of
    three workloads, the floor measured in two and skipped in one.
    """
    return {
        "schema": "pbext-benchmarks/1",
        "mode": "quick",
        "rounds": 2,
        "machine": {"cpuCount": 2},
        "baseline": "classic",
        "systems": ["classic", "floor", "pbext"],
        "skipped": {},
        "notes": [],
        "workloads": [
            {
                "name": "inflight",
                "title": "100 small calls in flight",
                "short": "in flight",
                "unit": "calls/s",
                "higherIsBetter": True,
                "samples": {
                    "classic": [_inRound(100.0, 1), _inRound(100.0, 2)],
                    "pbext": [_inRound(300.0, 1), _inRound(500.0, 2)],
                    "floor": [_inRound(600.0, 1), _inRound(500.0, 2)],
                },
                "skipped": {},
            },
            {
                "name": "copyables",
                "title": "return 1,000 small copyable objects",
                "short": "copyables",
                "unit": "objects/s",
                "higherIsBetter": True,
                "samples": {
                    "classic": [_inRound(10.0, 1), _inRound(10.0, 2)],
                    "pbext": [_inRound(80.0, 1), _inRound(120.0, 2)],
                },
                "skipped": {"floor": "no objects to copy"},
            },
            {
                "name": "serialize",
                "title": "encode+decode",
                "short": "serialize",
                "unit": "round trips/s",
                "higherIsBetter": True,
                "samples": {
                    system: [_inRound(value, 1, encodeSeconds=enc, decodeSeconds=dec)]
                    for system, value, enc, dec in [
                        ("classic", 2.0, 0.1, 0.4),
                        ("pbext", 200.0, 0.002, 0.003),
                        ("floor", 250.0, 0.001, 0.003),
                    ]
                },
                "skipped": {},
            },
        ],
    }


class FloorReportTests(SynchronousTestCase):
    """
    Tests for the echo floor in L{benchmarks.report}: ratios to the floor,
    paired round by round, skipped workloads and the codec phases.
    """

    skip = skipReason

    def setUp(self) -> None:
        self.results = report.summarise(_floorResults())
        self.rows = {row["name"]: row for row in self.results["workloads"]}

    def test_floorRatio(self) -> None:
        """
        Each system's median over the floor's median is its C{floorRatio};
        the ratios to the baseline are unchanged.
        """
        inflight = self.rows["inflight"]
        self.assertEqual(inflight["floorRatio"]["pbext"], 400.0 / 550.0)
        self.assertEqual(inflight["floorRatio"]["floor"], 1.0)
        self.assertEqual(inflight["ratio"]["pbext"], 4.0)
        self.assertNotIn("floorRatio", self.rows["copyables"])

    def test_paired(self) -> None:
        """
        The paired ratios divide each round's sample by the reference's
        sample of the same round, and keep their median and range.
        """
        pair = self.rows["inflight"]["paired"]["pbext/floor"]
        self.assertEqual(pair["ratios"], [0.5, 1.0])
        self.assertEqual((pair["low"], pair["median"], pair["high"]), (0.5, 0.75, 1.0))
        self.assertEqual(
            self.rows["copyables"]["paired"]["pbext/classic"]["ratios"], [8.0, 12.0]
        )

    def test_table(self) -> None:
        """
        The table puts the floor last, with pbext's ratio to it and the
        range of the paired ratios, says why the floor was not measured
        where it was not, and gives each codec's encode and decode times.
        """
        table = report.formatTable(self.results)
        lines = table.splitlines()
        self.assertEqual(lines[0].split()[-2:], ["floor", "pbext/floor"])
        inflight = [line for line in lines if line.startswith("100 small")][0]
        self.assertTrue(inflight.endswith("550  0.73x (0.50-1.00x)"), inflight)
        copyables = [line for line in lines if line.startswith("return 1,000")][0]
        self.assertEqual(copyables.split()[-2:], ["n/a", "-"])
        self.assertIn("note: copyables/floor: not measured: no objects to copy", lines)
        self.assertIn(
            "note: serialize: median encode / decode, us: classic 100,000 / "
            "400,000, pbext 2,000 / 3,000, floor (msgpack) 1,000 / 3,000",
            lines,
        )

    def test_chart(self) -> None:
        """
        The chart draws the floor's bars and names it in the legend.
        """
        root = ET.fromstring(chart.renderChart(self.results))
        texts = [t.text or "" for t in root.iter(SVG + "text")]
        self.assertTrue([t for t in texts if t.startswith("floor (raw Twisted")])


class FloorTests(SynchronousTestCase):
    """
    Tests for L{benchmarks.floor}, the raw Twisted echo, in memory.
    """

    skip = skipReason

    def _connected(self) -> Any:
        from twisted.internet.testing import StringTransport

        from benchmarks import floor

        client = floor.EchoClientProtocol()
        client.makeConnection(StringTransport())
        server = floor.EchoServerProtocol()
        server.makeConnection(StringTransport())
        return client, server

    def test_echo(self) -> None:
        """
        The server sends each frame back whole; the client gives each
        answer's body to the call that carried its request id, whatever
        the order the answers come in.
        """
        client, server = self._connected()
        first = client.call(b"one")
        second = client.call(b"x" * 200_000)
        server.dataReceived(client.transport.value())
        echoed = server.transport.value()
        self.assertEqual(echoed, client.transport.value())
        frames = []
        data = echoed
        while data:
            length = int.from_bytes(data[:4], "big")
            frames.append(data[: 4 + length])
            data = data[4 + length :]
        self.assertEqual(len(frames), 2)
        self.assertNoResult(first)
        client.dataReceived(frames[1])
        self.assertEqual(self.successResultOf(second), b"x" * 200_000)
        self.assertNoResult(first)
        client.dataReceived(frames[0])
        self.assertEqual(self.successResultOf(first), b"one")

    def test_connectionLost(self) -> None:
        """
        Calls still waiting when the connection is lost fail.
        """
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        client, _ = self._connected()
        waiting = client.call(b"echo")
        client.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(waiting, ConnectionLost)

    def test_bodies(self) -> None:
        """
        The floor echoes a few bytes for small calls, the blob of the
        bytes workload, and the structure as compact JSON; it has no body
        for the copyables workloads, which it is not measured in.
        """
        from benchmarks import floor, payloads, systems
        from benchmarks.sample import MeasurementError

        self.assertEqual(floor.makeBody("inflight"), floor.SMALL_BODY)
        self.assertEqual(floor.makeBody("bytes"), payloads.makeBlob())
        self.assertEqual(
            json.loads(floor.makeBody("struct", 3)), payloads.makeStructure(3)
        )
        self.assertRaises(MeasurementError, floor.makeBody, "copyables")
        self.assertIsNotNone(systems.unsupported("floor", "copyables"))
        self.assertIsNone(systems.unsupported("floor", "inflight"))
        self.assertIsNotNone(systems.unsupported("pyro5", "serialize"))

    def test_msgpackCodec(self) -> None:
        """
        In the serialization workload the floor is msgpack's own codec,
        measured like PB's: a round trip of the structure, with the time
        of each encoding and decoding.
        """
        from benchmarks import serialization, systems

        if not haveMsgpack:
            self.assertIsNotNone(systems.unsupported("floor", "serialize"))
            raise SkipTest("msgpack is not installed")
        self.assertIsNone(systems.unsupported("floor", "serialize"))
        codec, notes = serialization.codecFor("floor")
        assert codec is not None
        self.assertIn("msgpack", notes[0])
        result = serialization.measure(codec, 2, 10.0, 1, 20)
        self.assertIsNone(result["error"])
        self.assertEqual(result["completed"], 2)
        self.assertIn("encodeSeconds", result["extra"])


class CPUPerCallTests(SynchronousTestCase):
    """
    Tests for L{benchmarks.cpupercall}: its summary and its own CPU reading
    (nothing is timed).
    """

    skip = skipReason

    def test_summary(self) -> None:
        """
        The summary gives the range of each figure over the rounds and the
        ratio of the first system's rate to the last's, round by round.
        """
        from benchmarks import cpupercall

        lines = cpupercall.summary(
            {
                "pbext": [(50000.0, 6.0, 5.5), (60000.0, 6.5, 5.0)],
                "floor": [(100000.0, 4.5, 1.5), (100000.0, 4.4, 1.7)],
            }
        )
        self.assertEqual(
            lines,
            [
                "pbext    rate 50,000-60,000/s  client 6.0-6.5 us  "
                "server 5.0-5.5 us per operation",
                "floor    rate 100,000-100,000/s  client 4.4-4.5 us  "
                "server 1.5-1.7 us per operation",
                "rate pbext/floor by round: 0.50 0.60",
            ],
        )

    def test_processCPU(self) -> None:
        """
        The CPU a process used, read from C{/proc}, is a number of seconds
        that does not go down.
        """
        from benchmarks import cpupercall

        if not os.path.exists(f"/proc/{os.getpid()}/stat"):
            raise SkipTest("no /proc")
        first = cpupercall.processCPU(os.getpid())
        sum(range(10000))
        self.assertGreaterEqual(cpupercall.processCPU(os.getpid()), first)
        self.assertGreaterEqual(first, 0.0)

    def test_usage(self) -> None:
        """
        A system whose server is not a Twisted reactor is refused.
        """
        from benchmarks import cpupercall

        self.assertRaises(SystemExit, cpupercall.main, ["--systems", "pyro5"])


class ChartTests(SynchronousTestCase):
    """
    Tests for L{benchmarks.chart}.
    """

    skip = skipReason

    def _parse(self, svg: str) -> ET.Element:
        root = ET.fromstring(svg)
        self.assertEqual(root.tag, SVG + "svg")
        return root

    def test_barPerSystem(self) -> None:
        """
        The chart is an SVG document with one titled bar per system and
        workload that has a ratio, a legend entry per system, and no bar
        for the lower-is-better memory row.
        """
        root = self._parse(chart.renderChart(report.summarise(_results())))
        bars = [r for r in root.iter(SVG + "rect") if r.find(SVG + "title") is not None]
        titles = sorted(r.find(SVG + "title").text or "" for r in bars)
        # small: classic, pbext (rpyc failed); clients: all three.
        self.assertEqual(titles, sorted(["1.00x", "2.50x", "1.00x", "2,000x", "0.50x"]))
        texts = [t.text for t in root.iter(SVG + "text")]
        for label in ("classic (baseline)", "pbext", "rpyc", "n/a"):
            self.assertIn(label, texts)

    def test_standalone(self) -> None:
        """
        C{chart.py RESULTS OUT} draws the chart of a results file, even one
        that was never summarised.
        """
        source = self.mktemp()
        target = self.mktemp()
        with open(source, "w", encoding="utf-8") as f:
            json.dump(_results(), f)
        self.assertEqual(chart.main([source, target]), 0)
        with open(target, encoding="utf-8") as f:
            self._parse(f.read())

    def test_usage(self) -> None:
        """
        C{chart.py} with the wrong number of arguments fails with status 2.
        """
        self.patch(sys, "stderr", open(os.devnull, "w"))
        self.addCleanup(sys.stderr.close)
        self.assertEqual(chart.main(["only-one"]), 2)


class ClientCommandTests(SynchronousTestCase):
    """
    Tests for C{python -m benchmarks.client}, the command a worker falls
    back to where it cannot fork.
    """

    skip = skipReason

    def test_serialize(self) -> None:
        """
        The command makes one measurement and prints its sample as one line
        of JSON: here the serialization workload, which needs no server.
        """
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.client", "--system", "classic"]
            + ["--workload", "serialize", "--count", "2", "--dicts", "5"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=RUN_TIMEOUT,
        )
        lines = done.stdout.decode("utf-8").splitlines()
        self.assertEqual(len(lines), 1, done.stderr)
        result = json.loads(lines[0])
        self.assertIsNone(result["error"])
        self.assertEqual(result["completed"], 2)
        self.assertIn("wireBytes", result["extra"])


class RunnerTests(SynchronousTestCase):
    """
    Tests for C{benchmarks/run.py}, run as a command in its smoke mode
    against classic PB, pbext and the raw Twisted echo floor.
    """

    skip = skipReason

    def test_smokeRun(self) -> None:
        """
        C{run.py --smoke} measures every workload once for classic PB and
        pbext, and the echo floor where it applies (msgpack's codec for the
        serialization workload, if msgpack imports), with servers and
        clients in separate processes, prints the table with pbext's ratio
        to the floor, writes JSON with every sample and an SVG chart, and
        leaves no server running.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        jsonPath = os.path.join(directory, "results.json")
        chartPath = os.path.join(directory, "chart.svg")
        done = subprocess.run(
            [
                sys.executable,
                RUNNER,
                "--smoke",
                "--systems",
                "classic,pbext,floor",
                "--json",
                jsonPath,
                "--chart",
                chartPath,
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=RUN_TIMEOUT,
        )
        output = done.stdout.decode("utf-8", "replace")
        errors = done.stderr.decode("utf-8", "replace")
        self.assertEqual(done.returncode, 0, output + errors)

        with open(jsonPath, encoding="utf-8") as f:
            results = json.load(f)
        for key in ("schema", "created", "mode", "rounds", "machine", "systems"):
            self.assertIn(key, results)
        self.assertEqual(results["mode"], "smoke")
        self.assertEqual(results["systems"], ["classic", "pbext", "floor"])
        self.assertIn("pbext/floor", output.splitlines()[0])
        for key in ("cpuCount", "python", "twisted", "pbext", "pbextRevision"):
            self.assertIn(key, results["machine"])
        expected: List[str] = []
        for workload in WORKLOADS:
            expected.append(workload.name)
            if workload.name == "clients":
                expected.append("memory")
        self.assertEqual([row["name"] for row in results["workloads"]], expected)
        failures: List[str] = []
        for row in results["workloads"]:
            for key in ("title", "unit", "median", "ratio"):
                self.assertIn(key, row)
            if row["name"] == "memory":
                self.assertIn("pbext", row["floorRatio"])
                continue
            withFloor = row["name"] not in ("copyables", "classiccopies")
            if row["name"] == "serialize":
                withFloor = haveMsgpack
            measured = (
                ["classic", "floor", "pbext"] if withFloor else ["classic", "pbext"]
            )
            self.assertEqual(sorted(row["samples"]), measured)
            if not withFloor:
                self.assertIn("floor", row["skipped"])
            for system, samples in row["samples"].items():
                self.assertEqual(len(samples), 1)
                for key in ("value", "completed", "elapsed", "round", "error"):
                    self.assertIn(key, samples[0])
                if samples[0]["error"] is not None or samples[0]["value"] is None:
                    failures.append(f"{row['name']}/{system}: {samples[0]['error']}")
            self.assertIn(row["title"], output)
        self.assertEqual(failures, [], errors)

        root = ET.parse(chartPath).getroot()
        self.assertEqual(root.tag, SVG + "svg")

        # Every server the runner started has exited.
        self.assertTrue(results["servers"])
        for server in results["servers"]:
            self.assertRaises(ProcessLookupError, os.kill, server["pid"], 0)


class StreamsBenchmarkTests(SynchronousTestCase):
    """
    Tests for C{benchmarks/streams.py}, run as a command in its smoke mode.
    """

    skip = skipReason

    def test_smokeRun(self) -> None:
        """
        C{streams.py --smoke} measures pbext's streaming rows (and Pyro5's,
        when it imports) with servers and clients in separate processes,
        prints the table and writes JSON with both rows.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        jsonPath = os.path.join(directory, "streams.json")
        done = subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, "benchmarks", "streams.py"),
                "--smoke",
                "--json",
                jsonPath,
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=RUN_TIMEOUT,
        )
        output = done.stdout.decode("utf-8", "replace")
        errors = done.stderr.decode("utf-8", "replace")
        self.assertEqual(done.returncode, 0, output + errors)
        self.assertIn("items/s (small items)", output)
        with open(jsonPath, encoding="utf-8") as f:
            results = json.load(f)
        self.assertEqual(results["mode"], "smoke")
        row = results["systems"]["pbext"]
        for key in ("itemsPerSecond", "slowMemoryMB", "slowSeconds"):
            self.assertIn(key, row)
        self.assertGreater(row["itemsPerSecond"], 0)
