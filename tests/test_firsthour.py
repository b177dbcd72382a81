"""
What a newcomer runs in their first hour, run as they run it: C{python -m
pbext} and the real C{twistd} script in subprocesses, with the messages
they print asserted.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer, protocol, reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pbext import PBClientFactory, PBServerFactory, cli
from pbext._extras import TLS_MISSING
from pbext._peer import peerText
from pbext.client import connect
from pbext.demo import DemoRealm
from pbext.security import Limits, SecurityPolicy
from pbext.testing import connectedPair
from tests._process import _environment, startPBServer

#: Seconds a subprocess may run.
TIMEOUT = 30

#: A sitecustomize that makes pyOpenSSL unimportable, as it is without
#: the tls extra.
_BLOCK_OPENSSL = """\
import sys


class _BlockOpenSSL:
    def find_spec(self, name, path=None, target=None):
        if name == "OpenSSL" or name.startswith("OpenSSL."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _BlockOpenSSL())
"""


class _Collector(protocol.ProcessProtocol):
    """
    Collects a child process's output and exit status.
    """

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: defer.Deferred[tuple[bytes, bytes, int]] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.ended.callback((self.out, self.err, -1 if code is None else code))


def run(
    executable: str,
    *args: str,
    env: dict[str, str] | None = None,
    path: str | None = None,
) -> defer.Deferred[tuple[bytes, bytes, int]]:
    """
    Run C{executable ARGS} and fire with its stdout, stderr and exit
    status; kill it if it runs longer than L{TIMEOUT} (a server that
    should have refused to start, for instance), failing the test.
    """
    collector = _Collector()
    process = reactor.spawnProcess(
        collector,
        executable,
        [executable, *args],
        env=env or _environment(),
        path=path,
    )

    def kill() -> None:
        try:
            process.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    killer = reactor.callLater(TIMEOUT, kill)

    def ended(
        result: tuple[bytes, bytes, int],
    ) -> tuple[bytes, bytes, int]:
        if not killer.active():
            raise AssertionError(
                f"{executable} {' '.join(args)} still running after "
                f"{TIMEOUT} s:\n{result[0]!r}\n{result[1]!r}"
            )
        killer.cancel()
        return result

    return collector.ended.addCallback(ended)


def runCLI(*args: str, **kw: Any) -> defer.Deferred[tuple[bytes, bytes, int]]:
    """
    Run C{python -m pbext ARGS}.
    """
    return run(sys.executable, "-m", "pbext", *args, **kw)


def twistdScript() -> str:
    """
    The C{twistd} console script installed next to this Python, which (unlike
    C{python -c}) does not put the working directory on C{sys.path}.
    """
    return os.path.join(os.path.dirname(sys.executable), "twistd")


def runTwistd(*args: str, **kw: Any) -> defer.Deferred[tuple[bytes, bytes, int]]:
    """
    Run the real C{twistd -n --pidfile= ARGS}.
    """
    return run(twistdScript(), "-n", "--pidfile=", *args, **kw)


def withoutOpenSSL(test: TestCase) -> dict[str, str]:
    """
    An environment in which pyOpenSSL cannot be imported.
    """
    site = FilePath(test.mktemp())
    site.makedirs()
    site.child("sitecustomize.py").setContent(_BLOCK_OPENSSL.encode())
    env = _environment()
    env["PYTHONPATH"] = os.pathsep.join([site.path, env["PYTHONPATH"]])
    return env


def endpoint(port: int) -> str:
    return f"tcp:host=127.0.0.1:port={port}"


class CommandLineTests(TestCase):
    """
    C{python -m pbext} behaves like the command-line tools people know.
    """

    timeout = 120

    @defer.inlineCallbacks
    def test_optionsAfterEndpoint(self) -> Any:
        """
        C{python -m pbext ping ENDPOINT --count 3}, as documented, sends three
        pings: options may follow the arguments.
        """
        server = yield startPBServer(self)
        out, err, code = yield runCLI(
            "ping", endpoint(server.port), "--count", "3", "-i", "0"
        )
        self.assertEqual(code, cli.EXIT_OK, err)
        self.assertIn(b"3/3 answered", out)

    @defer.inlineCallbacks
    def test_negativeNumberIsAnArgument(self) -> Any:
        """
        An argument such as C{-5} is a number, not an option; options after
        it still count.
        """
        server = yield startPBServer(self)
        out, err, code = yield runCLI("call", endpoint(server.port), "echo", "-5", "-j")
        self.assertEqual((code, out), (cli.EXIT_OK, b"-5\n"), err)

    @defer.inlineCallbacks
    def test_usageErrorFirst(self) -> Any:
        """
        A usage error prints the error first, then one usage line, not the
        whole help, and exits with L{cli.EXIT_USAGE}.
        """
        out, err, code = yield runCLI("ping")
        self.assertEqual(code, cli.EXIT_USAGE)
        self.assertEqual(out, b"")
        lines = err.decode().splitlines()
        self.assertEqual(
            lines,
            [
                "python -m pbext ping: expected ENDPOINT, got 0 arguments (none)",
                "usage: python -m pbext ping [options] ENDPOINT  "
                "('python -m pbext ping --help' lists the options)",
            ],
        )
        out, err, code = yield runCLI("call", "tcp:host=h:port=1", "m", "--nope")
        self.assertEqual(code, cli.EXIT_USAGE)
        self.assertEqual(
            err.decode().splitlines()[0],
            "python -m pbext call: option --nope not recognized",
        )

    @defer.inlineCallbacks
    def test_pingJSON(self) -> Any:
        """
        C{ping --json} prints one JSON object for scripts.
        """
        server = yield startPBServer(self)
        out, err, code = yield runCLI(
            "ping", "--json", endpoint(server.port), "-c", "2", "-i", "0"
        )
        self.assertEqual(code, cli.EXIT_OK, err)
        result = json.loads(out)
        self.assertEqual((result["sent"], result["answered"]), (2, 2))
        self.assertEqual(len(result["rtt_ms"]), 2)
        self.assertLessEqual(result["min_ms"], result["max_ms"])

    @defer.inlineCallbacks
    def test_callRegistry(self) -> Any:
        """
        C{call --registry DOTTED.NAME} receives the typed copies that
        registry describes, as C{twistd pbserver --registry} sends them.
        """
        server = yield startPBServer(
            self,
            "--root",
            "tests._firsthour.JobRoot",
            "--registry",
            "tests._firsthour.registry",
        )
        out, err, code = yield runCLI(
            "call",
            endpoint(server.port),
            "job",
            "'build'",
            "--registry",
            "tests._firsthour.registry",
        )
        self.assertEqual(code, cli.EXIT_OK, err)
        self.assertEqual(out, b"Job(name='build', priority=3)\n")
        out, err, code = yield runCLI(
            "call", endpoint(server.port), "job", "'x'", "--registry", "no.such.thing"
        )
        self.assertEqual(code, cli.EXIT_USAGE)
        self.assertIn(b"--registry no.such.thing: cannot import it", err)

    @defer.inlineCallbacks
    def test_realmHint(self) -> Any:
        """
        Calling an avatar's method on a realm's root, without logging in,
        says to log in with C{--username}.
        """
        server = yield startPBServer(self, "--auth", "memory:alice:secret")
        out, err, code = yield runCLI("call", endpoint(server.port), "whoami")
        self.assertEqual(code, cli.EXIT_REMOTE, err)
        self.assertIn(b"No such method: remote_whoami", err)
        self.assertIn(
            b"this server serves a realm, whose root only logs users in; "
            b"log in with --username NAME (or --anonymous)",
            err,
        )

    @defer.inlineCallbacks
    def test_noHintForRoot(self) -> Any:
        """
        A missing method on a plain root gives no login hint.
        """
        server = yield startPBServer(self)
        out, err, code = yield runCLI("call", endpoint(server.port), "nothing")
        self.assertEqual(code, cli.EXIT_REMOTE, err)
        self.assertNotIn(b"--username", err)

    @defer.inlineCallbacks
    def test_tlsMissing(self) -> Any:
        """
        A C{tls:} endpoint without the tls extra names the extra to install.
        """
        out, err, code = yield runCLI(
            "ping", "tls:host=127.0.0.1:port=1", env=withoutOpenSSL(self)
        )
        self.assertEqual(code, cli.EXIT_USAGE, err)
        self.assertIn(TLS_MISSING.encode(), err)
        self.assertIn(b"TLS needs the tls extra: pip install 'pbext[tls]'", err)


class ConnectTests(TestCase):
    """
    L{pbext.client.connect} as a script calls it.
    """

    timeout = 120

    @defer.inlineCallbacks
    def test_wrongPasswordIsUnauthorizedLogin(self) -> Any:
        """
        A wrong password raises L{UnauthorizedLogin} with a message from an
        C{await}, which C{except UnauthorizedLogin} catches, not a bare
        L{pb.RemoteError} with an empty message.
        """
        server = yield startPBServer(self, "--auth", "memory:alice:secret")

        async def attempt() -> Exception | None:
            try:
                await connect(
                    reactor,
                    endpoint(server.port),
                    UsernamePassword(b"alice", b"wrong"),
                )
            except UnauthorizedLogin as e:
                return e
            return None

        refusal = yield defer.ensureDeferred(attempt())
        self.assertIsInstance(refusal, UnauthorizedLogin)
        self.assertEqual(
            str(refusal),
            "the server refused the login; check the username and password",
        )

    @defer.inlineCallbacks
    def test_tlsMissing(self) -> Any:
        """
        L{connect} to a C{tls:} endpoint without the tls extra raises
        L{ImportError} naming the extra, not Twisted's C{NameError}.
        """
        script = (
            "from twisted.internet import reactor\n"
            "from pbext.client import connect\n"
            "try:\n"
            "    connect(reactor, 'tls:host=127.0.0.1:port=1')\n"
            "except ImportError as e:\n"
            "    print(e)\n"
        )
        out, err, code = yield run(
            sys.executable, "-c", script, env=withoutOpenSSL(self)
        )
        self.assertEqual(code, 0, err)
        self.assertTrue(
            out.startswith(b"TLS needs the tls extra: pip install 'pbext[tls]'"), out
        )


class TwistdTests(TestCase):
    """
    The real C{twistd pbserver} script, run from an application's directory.
    """

    timeout = 120

    def appDirectory(self) -> FilePath[str]:
        """
        A directory holding C{app.py} with a realm, as the tutorial builds.
        """
        here = FilePath(self.mktemp())
        here.makedirs()
        here.child("app.py").setContent(b"from pbext.demo import DemoRealm as realm\n")
        return here

    @defer.inlineCallbacks
    def test_realmInWorkingDirectory(self) -> Any:
        """
        C{--realm app.realm} with C{app.py} in the working directory says
        that twistd does not put it on C{sys.path} and suggests
        C{PYTHONPATH=.}.
        """
        here = self.appDirectory()
        out, err, code = yield runTwistd(
            "pbserver", "--realm", "app.realm", "--auth", "memory:a:b", path=here.path
        )
        self.assertNotEqual(code, 0)
        self.assertIn(
            b"--realm app.realm: cannot import it: app.py is in the working "
            b"directory, but twistd does not put the working directory on "
            b"sys.path. Run it as PYTHONPATH=. twistd ...",
            out + err,
        )

    @defer.inlineCallbacks
    def test_usageErrorInSight(self) -> Any:
        """
        A usage error of C{twistd pbserver} follows twistd's synopsis and
        one line saying how to get the help, not the whole help, so it is
        not scrolled away.
        """
        out, err, code = yield runTwistd(
            "pbserver", "--limit", "nonsense", path=self.appDirectory().path
        )
        self.assertNotEqual(code, 0)
        lines = (out + err).decode().splitlines()
        self.assertEqual(
            lines[:2],
            [
                "Usage: twistd [options]",
                "'twistd pbserver --help' lists pbserver's options.",
            ],
        )
        self.assertEqual(len(lines), 3, lines)
        self.assertIn(": --limit nonsense: expected NAME=VALUE", lines[2])

    @defer.inlineCallbacks
    def test_authFileMissing(self) -> Any:
        """
        C{--auth file:missing-file} is a usage error naming the file, not a
        warning followed by a server that refuses everyone.
        """
        out, err, code = yield runTwistd(
            "pbserver", "--auth", "file:missing-file", path=self.appDirectory().path
        )
        self.assertNotEqual(code, 0)
        self.assertIn(
            b"--auth file:missing-file: no such file 'missing-file'. Create it "
            b"with one USERNAME:PASSWORD line per user, or give its path.",
            out + err,
        )
        self.assertNotIn(b"starting on", out + err)

    @defer.inlineCallbacks
    def test_tlsMissing(self) -> Any:
        """
        An C{ssl:} listener without the tls extra names the extra to
        install, not C{No module named 'OpenSSL'} alone.
        """
        out, err, code = yield runTwistd(
            "pbserver",
            "--listen",
            "ssl:0:privateKey=server.pem",
            env=withoutOpenSSL(self),
        )
        self.assertNotEqual(code, 0)
        self.assertIn(
            b"--listen ssl:0:privateKey=server.pem: TLS needs the tls extra: "
            b"pip install 'pbext[tls]'",
            out + err,
        )


class PeerFormatTests(SynchronousTestCase):
    """
    pbext's log events name a peer in one format.
    """

    def test_peerText(self) -> None:
        """
        L{peerText} writes C{HOST:PORT}, C{[HOST]:PORT} and C{unix:PATH}.
        """
        self.assertEqual(peerText(IPv4Address("TCP", "127.0.0.1", 5)), "127.0.0.1:5")
        self.assertEqual(peerText(IPv6Address("TCP", "::1", 5)), "[::1]:5")
        self.assertEqual(peerText(UNIXAddress(b"/run/pb.sock")), "unix:/run/pb.sock")

    def test_oneFormat(self) -> None:
        """
        The broker's events (a missing method), the login audit, the
        client's login and the server's refusals name peers as
        C{127.0.0.1:49152}.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = Clock()
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        server = PBServerFactory(
            Portal(DemoRealm(), [checker]),
            reactor=clock,
            policy=SecurityPolicy(limits=Limits(maxConnectionsPerAddress=1)),
        )
        conn = connectedPair(server, PBClientFactory(reactor=clock), clock=clock)
        self.addCleanup(conn.disconnect)
        avatar = conn.login(UsernamePassword(b"alice", b"secret"))
        conn.failureOf(avatar.callRemote("noSuchMethod"))
        self.assertIsNone(server.buildProtocol(IPv4Address("TCP", "127.0.0.1", 49153)))
        peers = {
            event["pbextEvent"]: event["peer"]
            for event in events
            if "peer" in event and "pbextEvent" in event
        }
        self.assertEqual(
            peers,
            {
                "loginMethodChosen": "127.0.0.1:8787",
                "login": "127.0.0.1:49152",
                "policyViolation": "127.0.0.1:49152",
                "connectionRefused": "127.0.0.1:49153",
            },
        )


class VersionTests(TestCase):
    """
    C{python -m pbext --version}.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_version(self) -> Any:
        """
        C{--version} prints pbext's version, not Twisted's alone, and exits 0.
        """
        from pbext import __version__

        out, err, code = yield runCLI("--version")
        self.assertEqual(code, 0, err)
        self.assertTrue(
            out.startswith(f"pbext {__version__.public()} (Twisted ".encode()), out
        )


class PermuteTests(SynchronousTestCase):
    """
    How C{python -m pbext} reads options placed anywhere on the line.
    """

    def parse(self, *args: str) -> Any:
        options = cli.Options()
        options.parseOptions(list(args))
        return options.subOptions

    def test_anywhere(self) -> None:
        """
        Options before, between and after the arguments all count, in long,
        short, clustered and C{=} forms, and abbreviated.
        """
        sub = self.parse(
            "ping", "-c2", "tcp:host=h:port=1", "--interval=0.5", "--user", "al", "-j"
        )
        self.assertEqual(
            (sub["count"], sub["interval"], sub["username"], sub["json"]),
            (2, 0.5, "al", True),
        )

    def test_afterDoubleDash(self) -> None:
        """
        After C{--}, words that look like options are arguments.
        """
        self.assertEqual(
            cli._permute(["e", "-j", "--", "--json", "-j"], "j", ["json"]),
            ["-j", "--", "e", "--json", "-j"],
        )

    def test_negativeNumbers(self) -> None:
        """
        C{-5} and C{-.5} are arguments, not options.
        """
        sub = self.parse("call", "tcp:host=h:port=1", "add", "-5", "-.5", "-t", "3")
        self.assertEqual((sub["args"], sub["timeout"]), ([-5, -0.5], 3.0))

    def test_errors(self) -> None:
        """
        An unknown or ambiguous option, or one missing its value, is a
        usage error naming it.
        """
        for args, message in [
            (("ping", "e", "--nope"), "option --nope not recognized"),
            (("ping", "e", "--count"), "option --count requires a value"),
            (("ping", "e", "-c"), "option -c requires a value"),
            (("ping", "e", "--in"), "option --in requires a value"),
        ]:
            error = self.assertRaises(usage.UsageError, self.parse, *args)
            self.assertEqual(str(error), message, args)
        error = self.assertRaises(
            usage.UsageError, cli._permute, ["--co"], "", ["count=", "colour"]
        )
        self.assertEqual(str(error), "option --co is ambiguous")
