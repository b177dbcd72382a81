"""
Run pbext's trial suite, or one part of it: what every tox test
environment runs.

::

    python tools/suite.py              # the quick part (tox -e py)
    python tools/suite.py endtoend     # the end-to-end part (tox -e endtoend)
    python tools/suite.py all          # both (tox -e py-pure)
    python tools/suite.py tests.test_broker tests.test_codec   # these only

The suite has two parts.  The end-to-end part (L{END_TO_END}) runs real
processes and measures them: the memory a real C{twistd pbserver} holds
under attack, a client process against hostile servers, every command the
docs show, a newcomer's first hour.  It takes minutes, mostly waiting,
and its timing bounds want a quiet machine, so it runs once, on its own,
one test at a time.  The quick part is everything else; it runs in two
trial workers (C{-j 2}), so the environment for each Python claimed stays
short.

The exit status is trial's (the first failing part's).
"""

from __future__ import annotations

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

#: Trial workers for the quick part.
WORKERS = 2

_TESTS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"
)


def allModules() -> list[str]:
    """
    Every test module, by dotted name, in name order.
    """
    return sorted(
        "tests." + name[:-3]
        for name in os.listdir(_TESTS)
        if name.startswith("test_") and name.endswith(".py")
    )


def quickModules() -> list[str]:
    """
    The test modules of the quick part.
    """
    return [name for name in allModules() if name not in END_TO_END]


def trial(modules: list[str], workers: int = 1) -> int:
    """
    Run trial on C{modules} and return its exit status.
    """
    command = [sys.executable, "-m", "twisted.trial", "--reporter=text"]
    if workers > 1:
        command.append(f"-j{workers}")
    return subprocess.call(command + modules)


def main(argv: list[str]) -> int:
    """
    Run the part named by C{argv} (C{quick}, C{endtoend} or C{all}; quick
    if empty), or the test names it gives.
    """
    part = argv[0] if len(argv) == 1 else None
    if not argv or part == "quick":
        return trial(quickModules(), WORKERS)
    if part == "endtoend":
        return trial(list(END_TO_END))
    if part == "all":
        quick = trial(quickModules(), WORKERS)
        return trial(list(END_TO_END)) or quick
    return trial(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
