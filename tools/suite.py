"""
Run pbext's trial suite, or one part of it: what every tox test
environment runs.

::

    python tools/suite.py                # the quick part (tox -e py)
    python tools/suite.py integration    # sockets, processes (tox -e integration)
    python tools/suite.py endtoend       # processes measured (tox -e endtoend)
    python tools/suite.py all            # all three (tox -e py-pure)
    python tools/suite.py quick integration   # two of them (tox -e twisted-oldest)
    python tools/suite.py tests.test_broker tests.test_codec   # these only

The suite has three parts:

  - The end-to-end part (L{END_TO_END}) runs real processes and measures
    them: the memory a real C{twistd pbserver} holds under attack, a client
    process against hostile servers, every command the docs show, a
    newcomer's first hour.  It takes minutes, mostly waiting, and its
    timing bounds want a quiet machine, so it runs once, on its own, one
    test at a time.
  - The integration part (L{INTEGRATION}) is the tests whose point is a
    real socket or a real process: hostile bytes over loopback TCP to a
    listening server, C{twistd pbserver} and HAProxy subprocesses, the
    documented examples and the command line run as programs, TLS and
    UNIX sockets, the benchmark runner's smoke test, a trial run under
    C{PBEXT_PURE_PYTHON}.  They use the real reactor and wait on the
    network, so they run in their own tox environment.
  - The quick part is everything else: unit tests on in-memory
    connections (L{pbext.testing}, C{StringTransport}) and a
    L{twisted.internet.task.Clock}, whose time moves only when the test
    says.  It is the inner loop (C{tox -e py} on each Python claimed), run
    in two trial workers.

A test joins the integration or end-to-end part by its dotted name in
L{INTEGRATION} or L{END_TO_END}: a whole module (C{tests.test_tls}) or one
test class (C{tests.test_client.ConnectEndToEndTests}); everything not
named there is quick.  A short C{python -c} probe of what an import does
is not integration: it stays quick.

The exit status is trial's (the first failing part's); every part named
runs, even after one fails.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

#: Test modules that run real processes and time or measure them.
END_TO_END = (
    "tests.test_hostile_memory",
    "tests.test_hostile_client",
    "tests.test_doccommands",
    "tests.test_firsthour",
    "tests.test_streams_endtoend",
)

#: Test modules and classes that use real sockets or processes: loopback
#: TCP, TLS and UNIX connections on the real reactor, C{twistd}, HAProxy,
#: example programs, the benchmark runner, a trial subprocess.
INTEGRATION = (
    "tests.test_accelerator.PureBrokerTests",
    "tests.test_admission.FullServerEndToEndTests",
    "tests.test_admission.TwistdAdmissionTests",
    "tests.test_benchmarks.ClientCommandTests",
    "tests.test_benchmarks.RunnerTests",
    "tests.test_budget.HeldObjectsTests",
    "tests.test_budget.NeverReadsTests",
    "tests.test_budget.TLSBackpressureTests",
    "tests.test_cancellation.RemoteCancellationTests",
    "tests.test_cli.CallTests",
    "tests.test_cli.DescribeTests",
    "tests.test_cli.PingTests",
    "tests.test_client.ConnectEndToEndTests",
    "tests.test_client.ExampleTests",
    "tests.test_client.PBClientServiceEndToEndTests",
    "tests.test_client.StockServerTests",
    "tests.test_endtoend",
    "tests.test_examples.ExamplesTests",
    "tests.test_examples_testing",
    "tests.test_haproxy",
    "tests.test_hostile",
    "tests.test_hostile_copystate",
    "tests.test_hostile_logins",
    "tests.test_metrics.PrometheusTests",
    "tests.test_metrics.TapMetricsTests",
    "tests.test_peerdecoding.PeerDecodingTests",
    "tests.test_stubs.MypyTests",
    "tests.test_tls",
    "tests.test_transport.DirectWriterTests",
)

#: Trial workers for the quick and integration parts.
WORKERS = 2

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TESTS = os.path.join(_ROOT, "tests")


def allModules() -> list[str]:
    """
    Every test module, by dotted name, in name order.
    """
    return sorted(
        "tests." + name[:-3]
        for name in os.listdir(_TESTS)
        if name.startswith("test_") and name.endswith(".py")
    )


def testClasses(module: str) -> list[str]:
    """
    The dotted names of the test classes trial finds in C{module}, in
    name order.
    """
    from twisted.trial.runner import isTestCase

    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)
    loaded = importlib.import_module(module)
    return sorted(
        f"{module}.{name}"
        for name, value in vars(loaded).items()
        if isTestCase(value) and any(n.startswith("test") for n in dir(value))
    )


def _split(names: tuple[str, ...]) -> tuple[set[str], dict[str, set[str]]]:
    """
    Split dotted names into whole modules and, per module, classes.
    """
    modules = set(allModules())
    whole: set[str] = set()
    classes: dict[str, set[str]] = {}
    for name in names:
        if name in modules:
            whole.add(name)
        else:
            classes.setdefault(name.rpartition(".")[0], set()).add(name)
    return whole, classes


def quickNames() -> list[str]:
    """
    The test modules and classes of the quick part: every module not named
    in L{END_TO_END} or L{INTEGRATION}, but only the classes not named there
    of a module with some classes named.
    """
    whole, classes = _split(END_TO_END + INTEGRATION)
    names: list[str] = []
    for module in allModules():
        if module in whole:
            continue
        if module in classes:
            names += [c for c in testClasses(module) if c not in classes[module]]
        else:
            names.append(module)
    return names


def trial(names: list[str], workers: int = 1) -> int:
    """
    Run trial on C{names} and return its exit status.
    """
    command = [sys.executable, "-m", "twisted.trial", "--reporter=text"]
    if workers > 1:
        command.append(f"-j{workers}")
    return subprocess.call(command + names)


#: The parts C{all} runs, in order.
PARTS = ("quick", "integration", "endtoend")


def runPart(part: str) -> int:
    """
    Run one part of the suite and return trial's exit status.
    """
    if part == "quick":
        return trial(quickNames(), WORKERS)
    if part == "integration":
        return trial(list(INTEGRATION), WORKERS)
    return trial(list(END_TO_END))


def main(argv: list[str]) -> int:
    """
    Run the parts named by C{argv} (C{quick}, C{integration}, C{endtoend},
    or C{all} for the three; quick if empty), one after the other, or else
    the test names it gives.
    """
    parts = ["quick"] if not argv else list(argv)
    if parts == ["all"]:
        parts = list(PARTS)
    if not all(part in PARTS for part in parts):
        return trial(argv)
    statuses = [runPart(part) for part in parts]
    return next((status for status in statuses if status), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
