"""
Run a real Buildbot master and a real Buildbot worker, unmodified, under
C{twistd} subprocesses on 127.0.0.1, with Twisted's PB factories or with
pbext's put in their place the way a user would try pbext: by replacing
C{twisted.spread.pb.PBServerFactory} and C{PBClientFactory} before Buildbot
is imported.

Used by L{tests.test_buildbot}; needs the C{buildbot} and C{buildbot-worker}
distributions (C{tox -e interop} installs them).  Every wait is bounded,
every process runs in its own process group and is killed with it, and
everything is written below one temporary directory.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from typing import Callable

try:
    import buildbot  # noqa: F401
    import buildbot_worker  # noqa: F401
except ImportError:
    BUILDBOT_MISSING: str | None = (
        "Buildbot is not installed: the interop tests need the buildbot and "
        "buildbot-worker distributions (python -m tox -e interop installs them)"
    )
else:
    BUILDBOT_MISSING = None

#: The longest any one step (start, attach, build, keepalive, stop) waits.
STEP_TIMEOUT = 60.0

#: The longest a whole master/worker combination may take.
RUN_TIMEOUT = 120.0

#: How often, in seconds, the worker sends its keepalive (C{--keepalive 2}).
KEEPALIVE = 2

#: The marker the drop-in wrapper logs once it has replaced the factories.
DROPIN_MARKER = "pbext-interop: twisted.spread.pb factories are pbext's"

#: Buildbot's result code for a successful build or step.
SUCCESS = 0

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: What a user would do to try pbext with an unmodified PB application:
#: put pbext's factories in twisted.spread.pb, then run twistd.
_TWISTD_WITH_PBEXT = textwrap.dedent(
    f"""
    import pbext
    from twisted.python import log
    from twisted.spread import pb
    pb.PBServerFactory = pbext.PBServerFactory
    pb.PBClientFactory = pbext.PBClientFactory
    from twisted.internet import reactor
    reactor.callWhenRunning(log.msg, {DROPIN_MARKER!r})
    from twisted.scripts.twistd import run
    run()
    """
)

_TWISTD_STOCK = "from twisted.scripts.twistd import run; run()"

_MASTER_CFG = """\
import sys
from buildbot.plugins import schedulers, steps, util, worker

c = BuildmasterConfig = {}
c["title"] = "pbext interop"
c["buildbotNetUsageData"] = None
c["db"] = {"db_url": "sqlite:///state.sqlite"}
c["protocols"] = {"pb": {"port": "tcp:0:interface=127.0.0.1"}}
c["workers"] = [worker.Worker("w1", "secret")]
factory = util.BuildFactory([
    steps.ShellCommand(
        name="hello",
        command=[sys.executable, "-c", "print('hello from the worker')"],
    ),
    steps.StringDownload("from the master\\n", workerdest="fromMaster.txt"),
    steps.FileUpload(workersrc="fromMaster.txt", masterdest="uploaded.txt"),
])
c["builders"] = [
    util.BuilderConfig(name="interop", workernames=["w1"], factory=factory)
]
# A periodic scheduler that has never run builds as soon as it starts.
c["schedulers"] = [
    schedulers.Periodic(
        name="atStart", builderNames=["interop"], periodicBuildTimer=24 * 3600
    )
]
"""

_MASTER_TAC = """\
from twisted.application import service
from buildbot.master import BuildMaster

application = service.Application("buildmaster")
BuildMaster({basedir!r}, "master.cfg", umask=None).setServiceParent(application)
"""

_WORKER_TAC = """\
from twisted.application import service
from buildbot_worker.bot import Worker

application = service.Application("buildbot-worker")
Worker(
    "127.0.0.1", {port}, "w1", "secret", {basedir!r}, {keepalive},
    umask=None, maxdelay=5,
).setServiceParent(application)
"""

_PORT = re.compile(r"PBServerFactory starting on (\d+)")

#: How twistd ends after a clean shutdown asked for by SIGTERM: it stops the
#: reactor, then ends itself with the signal that stopped it.
_CLEAN_EXIT = (0, -signal.SIGTERM)

#: Lines in a log that mean something went wrong.
_TROUBLE = re.compile(r"Traceback \(most recent call last\)|Unhandled [Ee]rror")


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    # pbext from this checkout, as trial sees it.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [_ROOT, env.get("PYTHONPATH", "")] if p
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class InteropFailure(AssertionError):
    """
    A Buildbot master/worker run did not do what it should; the message
    holds both logs' tails.
    """


class Daemon:
    """
    One C{twistd -n} child in its own process group, logging to a file.
    """

    def __init__(self, name: str, basedir: str, tac: str, pbext: bool) -> None:
        self.name = name
        self.basedir = basedir
        self.logPath = os.path.join(basedir, "twistd.log")
        self.flavour = "pbext" if pbext else "stock PB"
        code = _TWISTD_WITH_PBEXT if pbext else _TWISTD_STOCK
        argv = [
            sys.executable,
            "-c",
            code,
            "--nodaemon",
            "--pidfile=",
            "--logfile",
            self.logPath,
            "--python",
            tac,
        ]
        with open(os.path.join(basedir, "stdout.txt"), "wb") as out:
            self.process = subprocess.Popen(
                argv,
                cwd=basedir,
                env=_environment(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        try:
            with open(self.logPath, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        with open(
            os.path.join(self.basedir, "stdout.txt"), encoding="utf-8", errors="replace"
        ) as f:
            return f.read()

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = STEP_TIMEOUT) -> int | None:
        """
        Send C{SIGTERM} and wait for the exit code; kill the whole process
        group if it does not end in time (and return L{None}).
        """
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass


class BuildbotRun:
    """
    A real master and a real worker in C{tmpdir}, each on stock PB or on
    pbext.

    L{run} does the whole scenario and raises L{InteropFailure} saying which
    step went wrong; L{cleanUp} kills whatever is left.
    """

    def __init__(self, tmpdir: str, pbextMaster: bool, pbextWorker: bool) -> None:
        self.tmpdir = tmpdir
        self.pbextMaster = pbextMaster
        self.pbextWorker = pbextWorker
        self.masterDir = os.path.join(tmpdir, "master")
        self.workerDir = os.path.join(tmpdir, "worker")
        self.master: Daemon | None = None
        self.worker: Daemon | None = None
        self.deadline = time.monotonic() + RUN_TIMEOUT

    # Steps

    def createMaster(self) -> None:
        """
        Create the master's directory and database with Buildbot's own
        C{buildbot create-master}, then write its configuration.
        """
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from buildbot.scripts.runner import run; run()",
                "create-master",
                "--relocatable",
                "--quiet",
                self.masterDir,
            ],
            env=_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=STEP_TIMEOUT,
        )
        if result.returncode != 0:
            raise InteropFailure(
                "buildbot create-master failed:\n"
                + result.stdout.decode("utf-8", "replace")
            )
        with open(os.path.join(self.masterDir, "master.cfg"), "w") as f:
            f.write(_MASTER_CFG)
        with open(os.path.join(self.masterDir, "master.tac"), "w") as f:
            f.write(_MASTER_TAC.format(basedir=self.masterDir))

    def startMaster(self) -> int:
        """
        Start the master and return the port its PB server listens on.
        """
        self.master = Daemon("master", self.masterDir, "master.tac", self.pbextMaster)
        match = self.waitFor(
            "the master to listen", lambda: _PORT.search(self.master.log())
        )
        return int(match.group(1))

    def startWorker(self, port: int) -> None:
        os.makedirs(self.workerDir)
        with open(os.path.join(self.workerDir, "worker.tac"), "w") as f:
            f.write(
                _WORKER_TAC.format(
                    port=port, basedir=self.workerDir, keepalive=KEEPALIVE
                )
            )
        self.worker = Daemon("worker", self.workerDir, "worker.tac", self.pbextWorker)

    def builds(self) -> list[tuple[int, int | None]]:
        """
        The master's builds as C{(number, results)}, read from its database.
        """
        path = os.path.join(self.masterDir, "state.sqlite")
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error:
            return []
        try:
            return list(db.execute("SELECT number, results FROM builds ORDER BY id"))
        except sqlite3.Error:
            return []
        finally:
            db.close()

    def stepResults(self) -> list[tuple[str, int | None]]:
        path = os.path.join(self.masterDir, "state.sqlite")
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return list(db.execute("SELECT name, results FROM steps ORDER BY id"))
        finally:
            db.close()

    def run(self) -> None:
        """
        Attach, build, keep alive, detach, shut down: raise
        L{InteropFailure} at the first step that does not happen.
        """
        self.createMaster()
        port = self.startMaster()
        assert self.master is not None
        self.startWorker(port)
        assert self.worker is not None
        master, worker = self.master, self.worker

        self.waitFor(
            "the worker to attach",
            lambda: (
                "bot attached" in master.log() and "worker is ready" in worker.log()
            ),
        )
        finished = self.waitFor(
            "the build to finish",
            lambda: [b for b in self.builds() if b[1] is not None],
        )
        if finished != [(1, SUCCESS)]:
            raise InteropFailure(
                f"expected one build with result SUCCESS (0), got (number, "
                f"result) {finished}; steps {self.stepResults()}" + self.logs()
            )
        uploaded = os.path.join(self.masterDir, "uploaded.txt")
        with open(uploaded) as f:
            if f.read() != "from the master\n":
                raise InteropFailure("the uploaded file is wrong" + self.logs())

        # The master greets the worker with a keyword-argument call,
        # print(message="attached"), which the worker's Bot logs.
        if "message from master: attached" not in worker.log():
            raise InteropFailure(
                "the worker did not log the master's print(message=...) call"
                + self.logs()
            )
        # The worker's keepalive (every KEEPALIVE seconds) is answered by the
        # master's perspective_keepalive; the worker logs the answer.
        self.waitFor(
            "the master to answer a keepalive from the worker",
            lambda: "Master replied to keepalive" in worker.log(),
            timeout=KEEPALIVE * 5 + 10,
        )

        # Detach: the worker goes first, and the master notices.
        code = worker.stop()
        if code not in _CLEAN_EXIT:
            raise InteropFailure(f"the worker exited with {code}" + self.logs())
        self.waitFor(
            "the master to see the worker detach",
            lambda: "Worker.detached(w1)" in master.log(),
        )
        code = master.stop()
        if code not in _CLEAN_EXIT:
            raise InteropFailure(f"the master exited with {code}" + self.logs())

        for daemon in (master, worker):
            text = daemon.log() + daemon.output()
            if _TROUBLE.search(text):
                raise InteropFailure(
                    f"the {daemon.name}'s log holds a traceback" + self.logs()
                )
            if ("Main loop terminated" not in text) or ("Server Shut Down" not in text):
                raise InteropFailure(
                    f"the {daemon.name} did not shut down cleanly" + self.logs()
                )
            wantMarker = self.pbextMaster if daemon is master else self.pbextWorker
            if (DROPIN_MARKER in text) != wantMarker:
                raise InteropFailure(
                    f"the {daemon.name} should{'' if wantMarker else ' not'} "
                    "run with pbext's factories" + self.logs()
                )

    # Helpers

    def waitFor(
        self,
        what: str,
        condition: Callable[[], object],
        timeout: float = STEP_TIMEOUT,
    ) -> object:
        """
        Poll C{condition} until it returns something true, for at most
        C{timeout} seconds and within the run's deadline; fail early if
        either process has ended.
        """
        end = min(time.monotonic() + timeout, self.deadline)
        while True:
            result = condition()
            if result:
                return result
            for daemon in (self.master, self.worker):
                if daemon is not None and daemon.process.poll() is not None:
                    raise InteropFailure(
                        f"the {daemon.name} exited ({daemon.process.returncode}) "
                        f"while waiting for {what}" + self.logs()
                    )
            if time.monotonic() > end:
                raise InteropFailure(f"timed out waiting for {what}" + self.logs())
            time.sleep(0.2)

    def logs(self, lines: int = 60) -> str:
        parts = []
        for daemon in (self.master, self.worker):
            if daemon is None:
                continue
            tail = (daemon.log() + daemon.output()).splitlines()[-lines:]
            parts.append(
                f"\n--- {daemon.name} ({daemon.flavour}) log, last {lines} "
                "lines ---\n" + "\n".join(tail)
            )
        return "".join(parts)

    def cleanUp(self) -> None:
        for daemon in (self.worker, self.master):
            if daemon is not None and daemon.process.poll() is None:
                daemon.kill()
