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

from twisted.trial.unittest import SynchronousTestCase

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
    against classic PB and pbext.
    """

    skip = skipReason

    def test_smokeRun(self) -> None:
        """
        C{run.py --smoke} measures every workload once for classic PB and
        pbext with servers and clients in separate processes, prints the
        table, writes JSON with every sample and an SVG chart, and leaves no
        server running.
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
                "classic,pbext",
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
        self.assertEqual(results["systems"], ["classic", "pbext"])
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
                continue
            self.assertEqual(sorted(row["samples"]), ["classic", "pbext"])
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
