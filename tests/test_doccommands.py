"""
Every shell command shown in README.rst and docs/ runs, as printed.

The commands are read from the C{.rst} sources, not retyped here:

  - in C{.. code-block:: console} (or C{shell}, C{bash}) blocks, each line
    starting with C{$ }, with its C{\\}-continued lines;
  - in C{::} literal blocks, each line starting with C{python}, C{twistd},
    C{pip}, C{openssl}, C{mkdir}, C{cd}, or an environment assignment
    (C{PBEXT_...=}, C{PYTHONPATH=}) before one of them.

A C{.. code-block::} of any language whose C{:caption:} is a file name
(C{app.py}, C{passwords}) is written to that file, in the directory the
commands have reached, before the commands after it run: that is how a
tutorial page goes from an empty directory to a service.

How they run (the rule; docs/architecture.rst says it too):

  1. One test per page.  A page's commands run in order, each with
     C{bash -c}, in a scratch directory holding a copy of C{docs/examples}
     (so C{docs/examples/...} paths work and nothing is written into the
     checkout), with this checkout's Python first on C{PATH} and on
     C{PYTHONPATH}.  A C{cd DIR} command changes the directory of the
     commands after it.
  2. A command starting with C{twistd -n} (after any C{NAME=VALUE})
     serves: it is started in the background and must accept connections
     on its ports (those it names, or pbserver's default 8787) within
     L{START_TIMEOUT}; it runs until the next such command or the end of
     the page, and must still be running when it is stopped.  If one of
     its ports is already in use on this machine the page is skipped, not
     failed.
  3. Any other command must exit with status 0 within L{TIMEOUT}.
  4. C{pip install} of pbext itself (C{pip install .}, C{-e ...},
     C{pbext[extra]}) is not run: the tests run against this checkout,
     installed with every extra.  In C{pip install ... && rest}, the rest
     runs.
  5. A page whose command needs a program that is not installed here
     (C{openssl}, say) is skipped, naming it.
  6. The commands that cannot run here are listed in L{SKIPPED}, each with
     its reason; the list is reviewed like code, and an entry that no
     longer matches a documented command fails the suite.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent

#: Seconds a command may run.
TIMEOUT = 60

#: Seconds a server may take to accept connections.
START_TIMEOUT = 30

#: Commands not run, and why.  Keys are the commands as extracted.
SKIPPED: dict[str, str] = {
    "python -m tox -e py -- tests.test_broker tests.test_twisted_internals": (
        "builds a tox environment, and this test runs inside one"
    ),
    "python -m tox -e py-pure -- tests.test_codec": (
        "builds a tox environment, and this test runs inside one"
    ),
    "python -m tox -e interop": (
        "installs Buildbot and runs it: tox -e interop is part of the CI run"
    ),
    "python -m pip install tox && python -m tox": (
        "runs the whole test suite in new environments: minutes, and this "
        "test is part of it"
    ),
    "twistd -n pbserver --listen ssl:8788:privateKey=server.key:certKey=server.pem "
    "\\\n    --auth file:/etc/myapp/passwords": "names the reader's own files",
    "twistd -n pbserver --listen ssl:8788:privateKey=server.key:certKey=server.pem "
    "\\\n    --tls-client-ca clients-ca.pem --auth file:/etc/myapp/passwords": (
        "names the reader's own files; tests/test_tls.py serves client certificates"
    ),
    "twistd -n pbserver --auth file:passwords \\\n    --login-throttle "
    "freeFailures=5,maxDelay=10,refuseAfter=0   # never refuse a pair": (
        "needs the reader's password file; tests/test_tap.py parses these options"
    ),
    "twistd -n pbserver --auth file:passwords \\\n    --login-throttle "
    "addressRefuseAfter=1000,maxAttemptsPerSecond=10": (
        "needs the reader's password file; tests/test_tap.py parses these options"
    ),
    "twistd -n pbserver --auth file:passwords --login-throttle off": (
        "needs the reader's password file; tests/test_tap.py parses these options"
    ),
    "twistd -ny docs/examples/auth_server.tac      # in one terminal": (
        "two terminals; tests/test_tls.py runs this server with its client"
    ),
    "python docs/examples/auth_client.py           # in another": (
        "two terminals; tests/test_tls.py runs this client with its server"
    ),
    "twistd -n pbserver --root myapp.server.root --registry myapp.wire.registry": (
        "names the reader's own modules"
    ),
    "twistd pbserver --policy classic ...": "an elided command line",
    "PBEXT_PASSWORD=secret python -m pbext call --username alice \\\n"
    "    tls:host=pb.example.com:port=8788 whoami": "a host that does not exist",
    "twistd -n pbserver --policy /etc/myapp/pb-policy.ini": (
        "names the reader's own file"
    ),
    "twistd -n pbserver --policy myapp.security.policy": (
        "names the reader's own module"
    ),
    "twistd -ny server.tac                       # foreground, log to stdout": (
        "server.tac is the reader's own file"
    ),
    "twistd -y server.tac --logfile=server.log --pidfile=server.pid": (
        "server.tac is the reader's own file, and this daemonizes"
    ),
    "python benchmarks/run.py --json results.json --chart benchmarks.svg": (
        "runs for many minutes; tests/test_benchmarks.py runs the benchmarks briefly"
    ),
}

_CAPTIONED = re.compile(r"\s*\.\. code-block::")
_FILENAME = re.compile(r"\s*:caption:\s*([\w.-]+)\s*$")
_PROGRAM = re.compile(r"^(\w+=\S*\s+)*([\w.-]+)")
_SERVER = re.compile(r"^(\w+=\S*\s+)*twistd -n")
_CONSOLE = re.compile(r"\s*\.\. code-block:: (console|shell|bash|sh|shell-session)\s*$")
_COMMAND = re.compile(
    r"((PBEXT_\w+|PYTHONPATH)=\S*\s+)*(python|twistd|pip|openssl|mkdir|cd)(\s|$)"
)
_PIP_PBEXT = re.compile(r"^(python -m )?pip install [^&]*&&\s*")
_PORT = re.compile(r"(?:port=|tcp:|ssl:)(\d{2,5})")


@dataclass
class Command:
    """
    A command shown in the docs, or a file a page shows in full.

    @ivar text: the command, continuation lines included; or the file's
        content.
    @ivar line: the line of the block it is in.
    @ivar filename: the file's name, for a file; L{None} for a command.
    """

    text: str
    line: int
    filename: str | None = None


def _blockLines(lines: list[str], start: int) -> tuple[list[str], int]:
    """
    The lines of the indented block after line C{start} (options of a
    directive skipped), dedented, and the index after it.
    """
    j = start + 1
    while j < len(lines) and (not lines[j].strip() or lines[j].strip().startswith(":")):
        j += 1
    if j >= len(lines) or not lines[j][:1].isspace():
        return [], j
    indent = len(lines[j]) - len(lines[j].lstrip())
    block: list[str] = []
    while j < len(lines) and (
        not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) >= indent
    ):
        block.append(lines[j][indent:])
        j += 1
    return block, j


def extractCommands(text: str) -> list[Command]:
    """
    The shell commands shown in the reStructuredText C{text}, in order.
    """
    lines = text.splitlines()
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        console = bool(_CONSOLE.match(line))
        if not console and _CAPTIONED.match(line):
            named = next(
                (
                    m.group(1)
                    for m in map(_FILENAME.match, lines[i + 1 : i + 4])
                    if m is not None
                ),
                None,
            )
            block, after = _blockLines(lines, i)
            if named is not None:
                content = "\n".join(block).strip("\n") + "\n"
                commands.append(Command(content, i + 1, named))
            i = max(after, i + 1)
            continue
        literal = line.rstrip().endswith("::") and not line.lstrip().startswith("..")
        if not (console or literal):
            i += 1
            continue
        block, after = _blockLines(lines, i)
        current = ""
        for entry in block:
            if current:
                current += "\n" + entry
            elif console and entry.startswith("$ "):
                current = entry[2:]
            elif not console and _COMMAND.match(entry):
                current = entry
            else:
                continue
            if not current.endswith("\\"):
                commands.append(Command(current, i + 1))
                current = ""
        i = max(after, i + 1)
    return commands


def documentedPages() -> list[Path]:
    """
    README.rst and every page under docs/.
    """
    return [ROOT / "README.rst", *sorted((ROOT / "docs").rglob("*.rst"))]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _ports(command: str) -> list[int]:
    ports = [int(p) for p in _PORT.findall(command)]
    return ports or [8787]


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


class _Server:
    """
    A documented C{twistd -n} command running in the background.
    """

    def __init__(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        self.command = command
        self.ports = _ports(command)
        self.log = cwd / f".server-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                ["bash", "-c", command],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def waitUntilListening(self) -> str | None:
        """
        Wait for every port to accept connections; the problem, if any.
        """
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"exited with status {self.process.returncode}"
            if all(_accepts(port) for port in self.ports):
                return None
            time.sleep(0.1)
        return f"not accepting connections on {self.ports} after {START_TIMEOUT} s"

    def stop(self) -> str | None:
        """
        Stop it (its whole process group); the problem, if it had ended.
        """
        ended = self.process.poll()
        if ended is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            return None
        return f"had ended with status {ended}"


def runPage(test: SynchronousTestCase, page: Path) -> None:
    """
    Run the commands of C{page} by the rule above.
    """
    relative = page.relative_to(ROOT).as_posix()
    scratch = Path(test.mktemp()).resolve()
    shutil.copytree(
        ROOT / "docs" / "examples",
        scratch / "docs" / "examples",
        ignore=shutil.ignore_patterns("__pycache__", "_trial_temp"),
    )
    env = _environment()
    cwd = scratch
    server: _Server | None = None

    def stopServer() -> None:
        nonlocal server
        if server is not None:
            problem = server.stop()
            if problem:
                test.fail(
                    f"{relative}: {server.command!r} {problem}:\n{server.output()}"
                )
            server = None

    test.addCleanup(lambda: server is not None and server.stop())
    for command in extractCommands(page.read_text(encoding="utf-8")):
        text = command.text
        if command.filename is not None:
            (cwd / command.filename).write_text(text, encoding="utf-8")
            continue
        if text in SKIPPED:
            continue
        text = _PIP_PBEXT.sub("", text)
        if re.match(r"^(python -m )?pip install", text):
            continue
        where = f"{relative}:{command.line}: {text!r}"
        if text.startswith("cd "):
            cwd = (cwd / text[3:].strip()).resolve()
            continue
        program = _PROGRAM.match(text)
        if program and shutil.which(program.group(2), path=env["PATH"]) is None:
            raise SkipTest(f"{where}: {program.group(2)} is not installed here")
        if _SERVER.match(text):
            stopServer()
            busy = [p for p in _ports(text) if _accepts(p)]
            if busy:
                raise SkipTest(f"{where}: port {busy} is in use on this machine")
            server = _Server(text, cwd, env)
            problem = server.waitUntilListening()
            if problem:
                test.fail(f"{where} {problem}:\n{server.output()}")
            continue
        try:
            result = subprocess.run(
                ["bash", "-c", text],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=TIMEOUT,
            )
        except subprocess.TimeoutExpired as e:
            test.fail(f"{where} still running after {TIMEOUT} s:\n{e.output!r}")
        if result.returncode != 0:
            test.fail(
                f"{where} exited with status {result.returncode}:\n"
                + result.stdout.decode("utf-8", "replace")
            )
    stopServer()


def _pageTest(page: Path):  # type: ignore[no-untyped-def]
    relative = page.relative_to(ROOT).as_posix()

    def test(self: SynchronousTestCase) -> None:
        runPage(self, page)

    test.__name__ = "test_" + re.sub(r"\W", "_", relative.removesuffix(".rst"))
    test.__doc__ = f"Every command shown in {relative} runs as printed."
    return test


class DocumentedCommandsTests(SynchronousTestCase):
    """
    The commands shown in README.rst and docs/, run as printed.
    """

    def test_skipListIsCurrent(self) -> None:
        """
        Every entry of L{SKIPPED} is still a documented command, so the list
        does not outlive what it excuses.
        """
        documented = {
            c.text
            for page in documentedPages()
            for c in extractCommands(page.read_text(encoding="utf-8"))
            if c.filename is None
        }
        self.assertEqual(sorted(set(SKIPPED) - documented), [])

    def test_extract(self) -> None:
        """
        Commands come from console blocks' C{$ } lines and from literal
        blocks' lines that start with a known program, with continuations;
        other lines (output, Python) are not commands.
        """
        text = (
            "Run::\n\n"
            "    python -m pbext ping tcp:host=h:port=1 \\\n"
            "        --count 3\n"
            "    import os\n\n"
            ".. code-block:: console\n\n"
            "    $ twistd -n pbserver\n"
            "    output line\n\n"
            ".. code-block:: python\n\n"
            "    python = 3\n"
        )
        self.assertEqual(
            [c.text for c in extractCommands(text)],
            [
                "python -m pbext ping tcp:host=h:port=1 \\\n    --count 3",
                "twistd -n pbserver",
            ],
        )


for _page in documentedPages():
    if extractCommands(_page.read_text(encoding="utf-8")):
        _test = _pageTest(_page)
        setattr(DocumentedCommandsTests, _test.__name__, _test)
del _page
