"""
Buildbot, the largest PB application in the field, on pbext: a real master
and a real worker from PyPI, unmodified, under C{twistd}.

L{BuildbotInteropTests} runs a master and a worker in the four combinations
of stock PB and pbext, each replacing C{twisted.spread.pb}'s factories before
Buildbot is imported, as a user trying pbext would.  L{PbextMasterTests}
plays the master's side with a pbext server against a real worker and
drives its file transfer commands directly.

Both need the C{buildbot} and C{buildbot-worker} distributions, which
C{python -m tox -e interop} installs; without them they are skipped, so
C{tox -e py} stays quick.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

from twisted.cred import checkers, portal
from twisted.internet import defer, reactor, task
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.trial import unittest
from zope.interface import implementer

import pbext
from tests import _buildbot
from tests._buildbot import BUILDBOT_MISSING, BuildbotRun, Daemon

#: How long one remote call to the real worker may take.
CALL_TIMEOUT = 30.0


class BuildbotInteropTests(unittest.SynchronousTestCase):
    """
    A real Buildbot master and worker attach, build with result SUCCESS,
    exchange keepalives, detach and shut down cleanly, whichever side runs
    on pbext.
    """

    skip = BUILDBOT_MISSING

    def combination(self, pbextMaster: bool, pbextWorker: bool) -> None:
        run = BuildbotRun(os.path.abspath(self.mktemp()), pbextMaster, pbextWorker)
        os.makedirs(run.tmpdir)
        self.addCleanup(run.cleanUp)
        run.run()

    def test_stockMasterStockWorker(self) -> None:
        """
        The baseline: stock PB on both sides builds, keeps alive and shuts
        down cleanly (so a failure of the other tests is pbext's).
        """
        self.combination(pbextMaster=False, pbextWorker=False)

    def test_pbextMaster(self) -> None:
        """
        A master whose C{pb.PBServerFactory} is pbext's serves a stock
        worker: the build (a shell step, a download to the worker, an upload
        from it) succeeds, the worker's keepalives are answered, and both
        shut down without a traceback.
        """
        self.combination(pbextMaster=True, pbextWorker=False)

    def test_pbextWorker(self) -> None:
        """
        A worker whose C{pb.PBClientFactory} is pbext's (under Buildbot's own
        subclass, which keeps a C{_reactor} class attribute) builds for a
        stock master and sends keepalives the master answers.
        """
        self.combination(pbextMaster=False, pbextWorker=True)

    def test_pbextBoth(self) -> None:
        """
        Master and worker both on pbext build, keep alive and shut down
        cleanly.
        """
        self.combination(pbextMaster=True, pbextWorker=True)


class _Command(pb.Referenceable):
    """
    The master's side of one worker command (Buildbot's C{RemoteCommand}):
    the worker reports on it with C{update} and C{complete}.
    """

    def __init__(self) -> None:
        self.updates: list[Any] = []
        self.completed: defer.Deferred[Failure | None] = defer.Deferred()

    def remote_update(self, updates):  # type: ignore[no-untyped-def]
        self.updates.extend(updates)
        return 0

    def remote_complete(self, failure=None):  # type: ignore[no-untyped-def]
        self.completed.callback(failure)

    def status(self) -> dict[str, Any]:
        """
        The updates merged into one dictionary (C{rc}, C{stderr}, ...).
        """
        merged: dict[str, Any] = {}
        for update, _ in self.updates:
            merged.update(update)
        return merged


class _Reader(pb.Referenceable):
    """
    Serves a file to the worker's C{downloadFile} command, as Buildbot's
    C{FileReader} does.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0
        self.closed = False

    def remote_read(self, maxLength):  # type: ignore[no-untyped-def]
        chunk = self.data[self.offset : self.offset + maxLength]
        self.offset += len(chunk)
        return chunk

    def remote_close(self):  # type: ignore[no-untyped-def]
        self.closed = True


class _Writer(pb.Referenceable):
    """
    Receives a file from the worker's C{uploadFile} command, as Buildbot's
    C{FileWriter} does; C{failAfter} writes make it raise.
    """

    def __init__(self, failAfter: int | None = None) -> None:
        self.chunks: list[bytes] = []
        self.times: Any = None
        self.closed = False
        self.failAfter = failAfter

    def remote_write(self, data):  # type: ignore[no-untyped-def]
        if self.failAfter is not None and len(self.chunks) >= self.failAfter:
            raise OSError("the master's disk is full (a test)")
        self.chunks.append(data)

    def remote_utime(self, accessModified):  # type: ignore[no-untyped-def]
        self.times = accessModified

    def remote_close(self):  # type: ignore[no-untyped-def]
        self.closed = True


class _WorkerAvatar(pb.Avatar):
    """
    The master's perspective for the worker: it answers keepalives.
    """

    def __init__(self) -> None:
        self.keepalive: defer.Deferred[None] = defer.Deferred()

    def perspective_keepalive(self):  # type: ignore[no-untyped-def]
        if not self.keepalive.called:
            self.keepalive.callback(None)


@implementer(portal.IRealm)
class _Realm:
    """
    Hands the worker its avatar and the test the worker's bot.
    """

    def __init__(self) -> None:
        self.avatar = _WorkerAvatar()
        self.attached: defer.Deferred[pb.RemoteReference] = defer.Deferred()
        self.detached: defer.Deferred[None] = defer.Deferred()

    def requestAvatar(self, avatarId, mind, *interfaces):  # type: ignore[no-untyped-def]
        self.attached.callback(mind)
        return pb.IPerspective, self.avatar, lambda: self.detached.callback(None)


class PbextMasterTests(unittest.TestCase):
    """
    A pbext L{pbext.PBServerFactory} plays a Buildbot master's side against
    a real, stock Buildbot worker: it logs the worker in, calls it with
    keyword arguments, runs its file download and upload commands (whose
    callbacks come back to the server's referenceables) and gets the remote
    errors the worker sends.
    """

    skip = BUILDBOT_MISSING
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        self.realm = _Realm()
        checker = checkers.InMemoryUsernamePasswordDatabaseDontUse(w1=b"secret")
        factory = pbext.PBServerFactory(portal.Portal(self.realm, [checker]))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.workerDir = os.path.abspath(self.mktemp())
        os.makedirs(self.workerDir)
        with open(os.path.join(self.workerDir, "worker.tac"), "w") as f:
            f.write(
                _buildbot._WORKER_TAC.format(
                    port=port.getHost().port,
                    basedir=self.workerDir,
                    keepalive=_buildbot.KEEPALIVE,
                )
            )
        self.worker = Daemon("worker", self.workerDir, "worker.tac", pbext=False)
        self.addCleanup(self.worker.kill)
        self.bot = yield self.within(self.realm.attached, "the worker to log in")
        self.addCleanup(self.stopWorker)

    def within(self, d: defer.Deferred[Any], what: str) -> defer.Deferred[Any]:
        """
        C{d}, failing with a message naming C{what} and the worker's log if
        it has not fired after L{CALL_TIMEOUT} seconds.
        """

        def timedOut(reason: Failure) -> Failure:
            if reason.check(defer.TimeoutError):
                self.fail(f"timed out waiting for {what}:\n{self.worker.log()}")
            return reason

        return d.addTimeout(CALL_TIMEOUT, reactor).addErrback(timedOut)

    def until(self, condition: Any, what: str) -> defer.Deferred[None]:
        """
        Fire once C{condition()} is true, polling every 0.1 s, or fail
        after L{CALL_TIMEOUT} seconds naming C{what}.
        """

        def poll() -> None:
            if condition():
                loop.stop()
                if not d.called:
                    d.callback(None)

        def cancelled(d: defer.Deferred[None]) -> None:
            if loop.running:
                loop.stop()

        d: defer.Deferred[None] = defer.Deferred(cancelled)
        loop = task.LoopingCall(poll)
        loop.start(0.1)
        return self.within(d, what)

    @defer.inlineCallbacks
    def stopWorker(self):  # type: ignore[no-untyped-def]
        self.worker.signal(signal.SIGTERM)
        yield self.within(self.realm.detached, "the worker to detach")
        code = yield _waitForExit(self.worker.process)
        self.assertIn(code, _buildbot._CLEAN_EXIT, self.worker.log())

    @defer.inlineCallbacks
    def builder(self):  # type: ignore[no-untyped-def]
        """
        Give the worker one builder, as the master does on attach, and
        return the worker's reference to it.
        """
        builders = yield self.within(
            self.bot.callRemote("setBuilderList", [("interop", "interopdir")]),
            "setBuilderList",
        )
        self.assertEqual(list(builders), ["interop"])
        builder = builders["interop"]
        yield self.within(builder.callRemote("startBuild"), "startBuild")
        return builder

    @defer.inlineCallbacks
    def test_infoAndKeywordCall(self):  # type: ignore[no-untyped-def]
        """
        The worker answers C{getWorkerInfo} with its commands, and a call
        made with keyword arguments, C{print(message=...)}, reaches it; its
        keepalive reaches the pbext server's avatar.
        """
        info = yield self.within(self.bot.callRemote("getWorkerInfo"), "getWorkerInfo")
        commands = info["worker_commands"]
        self.assertIn("uploadFile", commands)
        self.assertIn("downloadFile", commands)
        yield self.within(
            self.bot.callRemote("print", message="hello from pbext"), "print"
        )
        self.assertIn("message from master: hello from pbext", self.worker.log())
        yield self.within(self.realm.avatar.keepalive, "a keepalive")

    @defer.inlineCallbacks
    def test_downloadThenUpload(self):  # type: ignore[no-untyped-def]
        """
        C{downloadFile} writes on the worker what the server's reader serves
        in blocks; C{uploadFile} then sends it back to the server's writer
        block by block, with its timestamps.  The worker reports on both
        through the server's command object, started with keyword
        arguments.
        """
        builder = yield self.builder()
        data = bytes(range(256)) * 400  # 100 kB: several blocks each way
        reader = _Reader(data)
        download = _Command()
        yield self.within(
            builder.callRemote(
                "startCommand",
                command_ref=download,
                command_id="1",
                command="downloadFile",
                args={
                    "workdir": "wd",
                    "workerdest": "data.bin",
                    "reader": reader,
                    "maxsize": None,
                    "blocksize": 16384,
                    "mode": None,
                },
            ),
            "startCommand downloadFile",
        )
        failure = yield self.within(download.completed, "the download")
        self.assertIsNone(failure)
        self.assertEqual(download.status().get("rc"), 0)
        self.assertTrue(reader.closed)
        path = os.path.join(self.workerDir, "interopdir", "wd", "data.bin")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data)

        writer = _Writer()
        upload = _Command()
        yield self.within(
            builder.callRemote(
                "startCommand",
                command_ref=upload,
                command_id="2",
                command="uploadFile",
                args={
                    "workdir": "wd",
                    "workersrc": "data.bin",
                    "writer": writer,
                    "maxsize": None,
                    "blocksize": 8192,
                    "keepstamp": True,
                },
            ),
            "startCommand uploadFile",
        )
        failure = yield self.within(upload.completed, "the upload")
        self.assertIsNone(failure)
        self.assertEqual(upload.status().get("rc"), 0)
        self.assertEqual(b"".join(writer.chunks), data)
        self.assertGreater(len(writer.chunks), 1)
        self.assertTrue(writer.closed)
        self.assertEqual(len(writer.times), 2)

    @defer.inlineCallbacks
    def test_remoteErrors(self):  # type: ignore[no-untyped-def]
        """
        A command the worker does not know fails the server's call with the
        worker's C{UnknownCommand}; an error raised by the server's writer
        reaches the worker as a copied failure: the worker stops the upload
        and closes the writer.
        """
        builder = yield self.builder()
        [failure] = yield self.within(
            builder.callRemote(
                "startCommand", _Command(), "1", "noSuchCommand", {}
            ).addCallbacks(lambda result: self.fail(result), lambda f: [f]),
            "startCommand noSuchCommand",
        )
        self.assertTrue(failure.check("buildbot_worker.base.UnknownCommand"), failure)
        self.assertIn("unrecognized WorkerCommand", failure.getErrorMessage())

        with open(os.path.join(self.workerDir, "interopdir", "big.bin"), "wb") as f:
            f.write(b"x" * 50000)
        writer = _Writer(failAfter=1)
        upload = _Command()
        yield self.within(
            builder.callRemote(
                "startCommand",
                upload,
                "2",
                "uploadFile",
                {
                    "workdir": ".",
                    "workersrc": "big.bin",
                    "writer": writer,
                    "maxsize": None,
                    "blocksize": 4096,
                    "keepstamp": False,
                },
            ),
            "startCommand uploadFile",
        )
        # The worker closes the writer and logs the server's error.  (It
        # then cannot report the upload as failed: Twisted's CopyableFailure
        # cannot copy a failure that was itself copied from the peer, with
        # stock PB on both sides too.)
        yield self.until(lambda: writer.closed, "the worker to close the writer")
        yield self.until(
            lambda: (
                "Traceback from remote host -- builtins.OSError: the "
                "master's disk is full" in self.worker.log()
            ),
            "the worker to log the server's error",
        )
        self.assertEqual(len(writer.chunks), 1)
        self.flushLoggedErrors(OSError)


def _waitForExit(process: subprocess.Popen[bytes]) -> defer.Deferred[int | None]:
    """
    Fire with C{process}'s exit code once it ends, polling without blocking
    the reactor, or with L{None} after L{CALL_TIMEOUT} seconds.
    """
    d: defer.Deferred[int | None] = defer.Deferred()
    attempts = [int(CALL_TIMEOUT / 0.1)]

    def poll() -> None:
        code = process.poll()
        attempts[0] -= 1
        if code is not None or attempts[0] <= 0:
            loop.stop()
            d.callback(code)

    loop = task.LoopingCall(poll)
    loop.start(0.1)
    return d
