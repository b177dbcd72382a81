"""
Tests for the example programs in C{docs/examples}, so the documentation
cannot rot.

Each example starts with a comment block, its I{header}::

    # Run with: python docs/examples/tutorial_first.py
    # Expect: 2 + 3 = 5

Every C{.py} file whose header has a C{Run with: python ...} line naming the
file itself is run as a subprocess from the top of the checkout, with the
working tree first on C{PYTHONPATH}; it must exit with status 0 within
L{TIMEOUT} seconds and print every C{Expect:} line (each must be one whole
line of its standard output, in any order).  Every C{.tac} file is loaded
the way C{twistd -y} loads it (which parses its endpoint descriptions but
listens on nothing) and must define an C{application}.  A file that cannot
be run that way says so with a header line C{# Not run by tests: REASON}:
its test is skipped with that reason, so it shows in every test run.  A
file with neither header fails.

Files are discovered when this module is imported, so examples added later
are covered without changing this module.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"

TIMEOUT = 60.0
"""
Seconds an example may run before it is killed and its test fails.  Not a
timing assertion: a hung example would otherwise hang the suite.
"""

_RUN = re.compile(r"^#\s*Run with:\s*(?P<command>\S.*?)\s*$")
_EXPECT = re.compile(r"^#\s*Expect:\s?(?P<line>.*?)\s*$")
_NOT_RUN = re.compile(r"^#\s*Not run by tests:\s*(?P<reason>.*?)\s*$")


class HeaderError(ValueError):
    """
    An example's header does not say how the tests should treat it.
    """


@dataclass(frozen=True)
class Header:
    """
    What an example's header says.

    @ivar command: the words of its C{Run with:} line, or L{None}.
    @ivar expected: its C{Expect:} lines, in order.
    @ivar notRun: the reason given by C{Not run by tests:}, or L{None}.
    """

    command: tuple[str, ...] | None
    expected: tuple[str, ...]
    notRun: str | None


def parseHeader(text: str) -> Header:
    """
    Read the header of an example: the comment lines it starts with (a
    blank line or the first line of code ends it).

    @param text: the example's source.
    @raise HeaderError: if a C{Run with:} line is not valid shell words, or
        appears twice.
    """
    command: tuple[str, ...] | None = None
    expected: list[str] = []
    notRun = None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("#"):
            break
        if run := _RUN.match(line):
            if command is not None:
                raise HeaderError("more than one 'Run with:' line")
            try:
                command = tuple(shlex.split(run.group("command")))
            except ValueError as e:
                raise HeaderError(f"cannot read 'Run with:' line: {e}") from e
        elif expect := _EXPECT.match(line):
            expected.append(expect.group("line"))
        elif skip := _NOT_RUN.match(line):
            notRun = skip.group("reason") or "no reason given"
    return Header(command, tuple(expected), notRun)


def pythonArguments(header: Header, relativePath: str) -> list[str]:
    """
    The arguments to give the Python interpreter to run an example, from
    its header's C{Run with: python PATH [ARG ...]} line.  Words from the
    first one in square brackets on are usage notation for optional
    arguments (C{python docs/examples/client.py [HOST [PORT]]}) and are not
    passed.

    @param relativePath: the example's path from the top of the checkout,
        with C{/} separators, as the header must spell it.
    @raise HeaderError: if the header has no such line, runs something
        other than C{python}, or names another file (a header copied from
        another example and not updated).
    """
    command = header.command
    if command is None:
        raise HeaderError(
            f"{relativePath} has neither '# Run with: python {relativePath}' "
            f"nor '# Not run by tests: REASON' in its header"
        )
    if command[0] not in ("python", "python3") or len(command) < 2:
        raise HeaderError(
            f"{relativePath}: 'Run with:' must start with 'python "
            f"{relativePath}', not {' '.join(command)!r}"
        )
    if command[1] != relativePath:
        raise HeaderError(
            f"{relativePath}: 'Run with:' names {command[1]!r}, not this file"
        )
    arguments = []
    for word in command[1:]:
        if word.startswith("["):
            break
        arguments.append(word)
    return arguments


def _environment() -> dict[str, str]:
    """
    The environment of an example: this one, with the working tree first
    on C{PYTHONPATH} so the examples use the pbext being tested.
    """
    env = dict(os.environ)
    paths = [str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _run(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    """
    Run the Python interpreter with C{arguments} from the top of the
    checkout, with no standard input, for at most L{TIMEOUT} seconds.
    """
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=ROOT,
        env=_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def _describe(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit status {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


def _loadTac(path: Path) -> list[str]:
    """
    Arguments that load a C{.tac} file as C{twistd -y} does and fail unless
    it defines an application.
    """
    program = (
        "import sys\n"
        "from twisted.application import service\n"
        "app = service.loadApplication(sys.argv[1], 'python')\n"
        "service.IService(app)\n"
    )
    return ["-c", program, str(path)]


def _testName(path: Path) -> str:
    kind = "tac" if path.suffix == ".tac" else "run"
    return f"test_{kind}_" + re.sub(r"\W", "_", path.stem)


def _examples() -> list[Path]:
    if not EXAMPLES.is_dir():
        return []
    return sorted(
        p for p in EXAMPLES.iterdir() if p.is_file() and p.suffix in (".py", ".tac")
    )


def _makeTest(path: Path) -> Callable[[SynchronousTestCase], None]:
    relativePath = path.relative_to(ROOT).as_posix()

    def test(self: SynchronousTestCase) -> None:
        header = parseHeader(path.read_text(encoding="utf-8"))
        if header.notRun is not None:
            raise SkipTest(f"{relativePath}: {header.notRun}")
        if path.suffix == ".tac":
            arguments = _loadTac(path)
        else:
            arguments = pythonArguments(header, relativePath)
        try:
            result = _run(arguments)
        except subprocess.TimeoutExpired as e:
            self.fail(f"{relativePath} still running after {TIMEOUT} s:\n{e}")
        if result.returncode != 0:
            self.fail(f"{relativePath} failed: {_describe(result)}")
        printed = {line.rstrip() for line in result.stdout.splitlines()}
        missing = [line for line in header.expected if line not in printed]
        if missing:
            self.fail(f"{relativePath} did not print {missing!r}: {_describe(result)}")

    test.__name__ = _testName(path)
    if path.suffix == ".tac":
        test.__doc__ = (
            f"{relativePath} loads as a twistd application, as C{{twistd -y}} "
            f"would load it."
        )
    else:
        test.__doc__ = (
            f"{relativePath} runs as its header says, exits with status 0 and "
            f"prints each line its header expects."
        )
    return test


class ExamplesTests(SynchronousTestCase):
    """
    Every example in C{docs/examples} runs as documented; test methods are
    added below, one per file.
    """

    def test_discovered(self) -> None:
        """
        The examples the tutorial includes are found and would be run, so a
        change to discovery cannot quietly turn this suite into no tests.
        """
        names = {p.name for p in _examples()}
        self.assertIn("tutorial_first.py", names)
        self.assertTrue(hasattr(self, _testName(EXAMPLES / "tutorial_first.py")))


for _path in _examples():
    setattr(ExamplesTests, _testName(_path), _makeTest(_path))
del _path


class ParseHeaderTests(SynchronousTestCase):
    """
    Tests for L{parseHeader} and L{pythonArguments}.
    """

    def test_runAndExpect(self) -> None:
        """
        The C{Run with:} command is split into words, and each C{Expect:}
        line is kept in order, without the marker.
        """
        header = parseHeader(
            "# Run with:  python docs/examples/a.py --verbose\n"
            "# Expect: 2 + 3 = 5\n"
            "# Expect: done\n"
            "import sys\n"
        )
        self.assertEqual(
            header,
            Header(
                ("python", "docs/examples/a.py", "--verbose"),
                ("2 + 3 = 5", "done"),
                None,
            ),
        )
        self.assertEqual(
            pythonArguments(header, "docs/examples/a.py"),
            ["docs/examples/a.py", "--verbose"],
        )

    def test_optionalArguments(self) -> None:
        """
        Words in square brackets describe optional arguments and are not
        passed to the example.
        """
        header = parseHeader(
            "# Run with: python docs/examples/a.py -v [HOST [PORT]] extra\n"
        )
        self.assertEqual(
            pythonArguments(header, "docs/examples/a.py"), ["docs/examples/a.py", "-v"]
        )

    def test_headerEndsAtCode(self) -> None:
        """
        Comment lines after the first non-comment line are not part of the
        header.
        """
        header = parseHeader(
            "# Run with: python docs/examples/a.py\n\n# Expect: never read\n"
        )
        self.assertEqual(header.expected, ())

    def test_notRun(self) -> None:
        """
        C{Not run by tests:} gives the reason the example is skipped.
        """
        header = parseHeader(
            "# Run with: twistd -ny docs/examples/a.tac\n"
            "# Not run by tests: needs a server\n"
        )
        self.assertEqual(header.notRun, "needs a server")

    def test_missingHeader(self) -> None:
        """
        An example that says neither how to run it nor why it is not run is
        an error that names the file and both markers.
        """
        header = parseHeader('"""No header."""\n')
        e = self.assertRaises(
            HeaderError, pythonArguments, header, "docs/examples/b.py"
        )
        self.assertIn("docs/examples/b.py", str(e))
        self.assertIn("Not run by tests", str(e))

    def test_otherFile(self) -> None:
        """
        A C{Run with:} line naming another file (a header copied and not
        updated) is an error.
        """
        header = parseHeader("# Run with: python docs/examples/a.py\n")
        self.assertRaises(HeaderError, pythonArguments, header, "docs/examples/b.py")

    def test_notPython(self) -> None:
        """
        A C{.py} example must be run with C{python}, so the tests can run it
        with the interpreter running them.
        """
        header = parseHeader("# Run with: twistd -ny docs/examples/a.py\n")
        self.assertRaises(HeaderError, pythonArguments, header, "docs/examples/a.py")

    def test_twoRunLines(self) -> None:
        """
        Two C{Run with:} lines are ambiguous, so an error.
        """
        self.assertRaises(
            HeaderError,
            parseHeader,
            "# Run with: python docs/examples/a.py\n"
            "# Run with: python docs/examples/b.py\n",
        )
