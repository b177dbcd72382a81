"""
Tests for L{pbext.cli}, C{python -m pbext}, against real C{twistd pbserver}
processes.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

from twisted.internet import defer, reactor, utils
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pbext import cli
from tests._process import _environment, startPBServer

#: Seconds a C{python -m pbext} subprocess may run.
CLI_TIMEOUT = 60


def runCLI(*args: str) -> defer.Deferred[tuple[bytes, bytes, int]]:
    """
    Run C{python -m pbext ARGS} in a subprocess, with a timeout, and fire
    with its stdout, stderr and exit status.
    """
    d = utils.getProcessOutputAndValue(
        sys.executable,
        ["-m", "pbext", *args],
        env=_environment(),
        reactor=reactor,
    )
    return d.addTimeout(CLI_TIMEOUT, reactor)


def endpoint(port: int) -> str:
    return f"tcp:host=127.0.0.1:port={port}"


class OptionsTests(SynchronousTestCase):
    """
    Parsing of C{python -m pbext}'s command line.
    """

    def parse(self, *args: str) -> cli.Options:
        options = cli.Options()
        options.parseOptions(list(args))
        return options

    def test_literals(self) -> None:
        """
        Arguments are Python literals; bare words are strings, and
        C{NAME=VALUE} arguments are keywords.
        """
        sub = self.parse(
            "call", "tcp:host=h:port=1", "m", "1", "'a b'", "[1, b'x']", "word", "k=2"
        ).subOptions
        self.assertEqual(sub["method"], "m")
        self.assertEqual(sub["args"], [1, "a b", [1, b"x"], "word"])
        self.assertEqual(sub["kwargs"], {"k": 2})

    def test_json(self) -> None:
        """
        With C{--json}, arguments are JSON.
        """
        sub = self.parse(
            "call", "--json", "tcp:host=h:port=1", "m", '{"a": [1, null]}'
        ).subOptions
        self.assertEqual(sub["args"], [{"a": [1, None]}])

    def test_badUsage(self) -> None:
        """
        A bad endpoint, an argument that is not a literal, or conflicting
        credentials make L{cli.run} exit with L{cli.EXIT_USAGE} and a
        message on stderr.
        """
        for argv in [
            [],
            ["call", "nonsense:xyz", "m"],
            ["call", "tcp:host=h:port=1", "m", "(1,"],
            ["call", "--anonymous", "--username", "a", "tcp:host=h:port=1", "m"],
            ["ping", "--count", "0", "tcp:host=h:port=1"],
        ]:
            err = io.StringIO()
            d = defer.ensureDeferred(cli.run(reactor, argv, io.StringIO(), err))
            self.assertEqual(self.successResultOf(d), cli.EXIT_USAGE, argv)
            self.assertIn("python -m pbext", err.getvalue())

    def test_pingAndCredentialMessages(self) -> None:
        """
        A bad C{--count}, C{--interval} or a C{--password} without a
        username names the option as given and what to give instead,
        before the one usage line.
        """
        for argv, message in [
            (
                ["ping", "--count", "0", "tcp:host=h:port=1"],
                "--count 0: give 1 or more pings",
            ),
            (
                ["ping", "--interval", "-2.5", "tcp:host=h:port=1"],
                "--interval -2.5: give 0 seconds or more",
            ),
            (
                ["ping", "--password", "x", "tcp:host=h:port=1"],
                "--password is for a username: add --username NAME",
            ),
        ]:
            err = io.StringIO()
            d = defer.ensureDeferred(cli.run(reactor, argv, io.StringIO(), err))
            self.assertEqual(self.successResultOf(d), cli.EXIT_USAGE, argv)
            self.assertEqual(
                err.getvalue().splitlines()[0],
                f"python -m pbext ping: {message}",
                argv,
            )


class CallTests(TestCase):
    """
    C{python -m pbext call} against a real C{twistd pbserver}.
    """

    @defer.inlineCallbacks
    def test_success(self) -> Any:
        """
        A successful call prints the result's repr and exits 0.
        """
        server = yield startPBServer(self)
        out, err, code = yield runCLI(
            "call", endpoint(server.port), "echo", "{'a': [1, 2.5, b'x']}"
        )
        self.assertEqual((code, out), (0, b"{'a': [1, 2.5, b'x']}\n"), err)

    @defer.inlineCallbacks
    def test_json(self) -> Any:
        """
        With C{--json}, the arguments are JSON and the result is printed as
        JSON.
        """
        server = yield startPBServer(self)
        out, err, code = yield runCLI(
            "call", "--json", endpoint(server.port), "echo", '{"a": [1, "b"]}'
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out), {"a": [1, "b"]})

    @defer.inlineCallbacks
    def test_remoteError(self) -> Any:
        """
        A remote error is printed on stderr with its type, and the exit
        status is L{cli.EXIT_REMOTE}.
        """
        server = yield startPBServer(self)
        out, err, code = yield runCLI("call", endpoint(server.port), "noSuchThing")
        self.assertEqual(code, cli.EXIT_REMOTE, err)
        self.assertEqual(out, b"")
        self.assertIn(b"noSuchThing() failed", err)
        self.assertIn(b"NoSuchMethod", err)

    @defer.inlineCallbacks
    def test_connectionRefused(self) -> Any:
        """
        A refused connection exits with L{cli.EXIT_CONNECT}, saying so.
        """
        server = yield startPBServer(self)
        port = server.port
        server.signal("TERM")
        yield server.ended
        out, err, code = yield runCLI("call", endpoint(port), "echo", "1")
        self.assertEqual(code, cli.EXIT_CONNECT, err)
        self.assertIn(b"ConnectionRefusedError", err)

    @defer.inlineCallbacks
    def test_login(self) -> Any:
        """
        With good credentials the call goes to the avatar; with bad ones the
        exit status is L{cli.EXIT_LOGIN}.
        """
        server = yield startPBServer(self, "--auth", "memory:alice:secret")
        out, err, code = yield runCLI(
            "call",
            "--username",
            "alice",
            "--password",
            "secret",
            endpoint(server.port),
            "whoami",
        )
        self.assertEqual((code, out), (0, b"'alice'\n"), err)
        out, err, code = yield runCLI(
            "call",
            "--username",
            "alice",
            "--password",
            "wrong",
            endpoint(server.port),
            "whoami",
        )
        self.assertEqual(code, cli.EXIT_LOGIN, err)
        self.assertIn(b"login refused", err)
        self.assertIn(b"UnauthorizedLogin", err)


class PingTests(TestCase):
    """
    C{python -m pbext ping}.
    """

    @defer.inlineCallbacks
    def test_ping(self) -> Any:
        """
        Each ping's round trip is printed, then a summary.
        """
        server = yield startPBServer(self)
        out, err, code = yield runCLI(
            "ping", "--count", "2", "--interval", "0", endpoint(server.port)
        )
        self.assertEqual(code, 0, err)
        lines = out.decode().splitlines()
        self.assertTrue(lines[0].startswith("ping 1: "), lines)
        self.assertTrue(lines[1].startswith("ping 2: "), lines)
        self.assertTrue(lines[2].startswith("2/2 answered"), lines)


class DescribeTests(TestCase):
    """
    C{python -m pbext describe} and C{stubs} against a real C{twistd
    pbserver}: the demo root, and the demo realm after a login.
    """

    @defer.inlineCallbacks
    def test_demoRoot(self) -> Any:
        """
        C{describe} lists the demo root's methods; with C{--json} the same
        as JSON; C{stubs} writes a module with a protocol for it.
        """
        server = yield startPBServer(self)
        out, err, code = yield runCLI("describe", endpoint(server.port))
        self.assertEqual(code, 0, err)
        self.assertIn(b"pbext.demo.DemoRoot (remote_ methods)\n", out)
        self.assertIn(b"  ping() -> str\n", out)
        out, err, code = yield runCLI("describe", "--json", endpoint(server.port))
        self.assertEqual(code, 0, err)
        methods = json.loads(out)["classes"][0]["methods"]
        self.assertEqual([m["name"] for m in methods], ["echo", "ping", "version"])
        path = self.mktemp()
        out, err, code = yield runCLI("stubs", endpoint(server.port), "-o", path)
        self.assertEqual(code, 0, err)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        compile(text, path, "exec")
        self.assertIn("class DemoRoot(typing.Protocol):", text)
        self.assertIn("def ping(self) -> twisted.internet.defer.Deferred[str]:", text)

    @defer.inlineCallbacks
    def test_realm(self) -> Any:
        """
        Against a realm, C{describe} without a login describes the login
        root and says to log in; after a login it describes the avatar,
        and C{stubs} writes its protocol.
        """
        server = yield startPBServer(self, "--auth", "memory:alice:secret")
        out, err, code = yield runCLI("describe", endpoint(server.port))
        self.assertEqual(code, 0, err)
        self.assertIn(b"log in with --username NAME", err)
        login = ["--username", "alice", "--password", "secret"]
        out, err, code = yield runCLI("describe", *login, endpoint(server.port))
        self.assertEqual(code, 0, err)
        self.assertIn(b"pbext.demo.DemoAvatar (perspective_ methods)\n", out)
        self.assertIn(b"  whoami() -> str\n", out)
        out, err, code = yield runCLI("stubs", *login, endpoint(server.port))
        self.assertEqual(code, 0, err)
        self.assertIn(b"class DemoAvatar(typing.Protocol):", out)

    @defer.inlineCallbacks
    def test_ownRealm(self) -> Any:
        """
        Against a server's own C{--realm}, C{describe} after a login lists
        the avatar's methods and the remote class one returns, and
        C{stubs} types that result as its protocol.
        """
        server = yield startPBServer(
            self,
            "--realm",
            "tests.test_introspect.shopRealm",
            "--auth",
            "memory:alice:secret",
        )
        login = ["--username", "alice", "--password", "secret"]
        out, err, code = yield runCLI("describe", *login, endpoint(server.port))
        self.assertEqual(code, 0, err)
        self.assertIn(b"tests.test_introspect.Clerk (perspective_ methods)\n", out)
        self.assertIn(b"  sell(item: str, count: int = 1) -> Counter\n", out)
        self.assertIn(b"tests.test_introspect.Counter (remote_ methods)\n", out)
        out, err, code = yield runCLI("stubs", *login, endpoint(server.port))
        self.assertEqual(code, 0, err)
        self.assertIn(
            b"def sell(self, item: str, count: int = ...) -> "
            b"twisted.internet.defer.Deferred[Counter]:",
            out,
        )

    @defer.inlineCallbacks
    def test_refused(self) -> Any:
        """
        A server started with C{--no-introspection} (or the strict policy)
        refuses, and C{describe} says so with exit status 1.
        """
        for options in [["--no-introspection"], ["--policy", "strict"]]:
            server = yield startPBServer(self, *options)
            out, err, code = yield runCLI("describe", endpoint(server.port))
            self.assertEqual((code, out), (cli.EXIT_REMOTE, b""), err)
            self.assertIn(b"introspection is off", err)
            self.assertIn(b"--module PACKAGE.MODULE:CLASS", err)

    @defer.inlineCallbacks
    def test_module(self) -> Any:
        """
        With C{--module}, no server is needed.
        """
        out, err, code = yield runCLI("describe", "--module", "pbext.demo:DemoRoot")
        self.assertEqual(code, 0, err)
        self.assertIn(b"  version() -> str\n", out)
        out, err, code = yield runCLI("stubs", "--module", "no.such.module")
        self.assertEqual(code, cli.EXIT_USAGE)
        self.assertIn(b"cannot import no.such.module", err)


class IntrospectionOptionsTests(SynchronousTestCase):
    """
    Parsing of C{describe} and C{stubs}.
    """

    def parse(self, *args: str) -> Any:
        options = cli.Options()
        options.parseOptions(list(args))
        return options.subOptions

    def test_endpointOrModule(self) -> None:
        """
        Either an ENDPOINT or C{--module}, not both, and no login with
        C{--module}; C{stubs} writes to stdout unless C{-o} says where.
        """
        sub = self.parse("describe", "tcp:host=h:port=1", "--json")
        self.assertEqual((sub["endpoint"], sub["json"]), ("tcp:host=h:port=1", 1))
        sub = self.parse("stubs", "--module", "app.server:Root")
        self.assertEqual((sub["module"], sub["output"]), ("app.server:Root", "-"))
        sub = self.parse("stubs", "tcp:host=h:port=1", "-o", "app_stubs.py")
        self.assertEqual(sub["output"], "app_stubs.py")
        for args, text in [
            (["describe"], "give the server's ENDPOINT, or --module"),
            (["describe", "a", "b"], "got 2 arguments"),
            (["stubs", "--module", "m", "tcp:host=h:port=1"], "not both"),
            (["describe", "--module", "m", "--username", "a"], "log in only"),
        ]:
            error = self.assertRaises(usage.UsageError, self.parse, *args)
            self.assertIn(text, str(error))
