"""
C{python -m pbext}: a command-line PB client for operators.

::

    python -m pbext call tcp:host=127.0.0.1:port=8787 echo "'hello'"
    python -m pbext call --username alice --password secret \\
        tls:host=pb.example.com:port=8788 whoami
    python -m pbext ping tcp:host=127.0.0.1:port=8787 --count 3
    python -m pbext describe tcp:host=127.0.0.1:port=8787
    python -m pbext stubs tcp:host=127.0.0.1:port=8787 -o app_stubs.py

C{call} connects to a strports client description, gets the root object
(or logs in, with C{--username} or C{--anonymous}), calls one method with
arguments given as Python literals (or JSON, with C{--json}) and prints its
result.  C{ping} measures round trips with pbext's keepalive ping, which
every PB server answers.  C{describe} lists the remote methods of the root
or avatar, and C{stubs} writes them as C{typing.Protocol} classes (see
L{pbext.introspect}).

The exit status says what went wrong: see L{EXIT_OK} and the others.

@since: pbext NEXT
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
from typing import Any, Sequence, TextIO

from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.internet import defer, endpoints, error, task
from twisted.internet.interfaces import IReactorTime
from twisted.python import usage
from twisted.python.failure import Failure

__all__ = [
    "EXIT_CONNECT",
    "EXIT_LOGIN",
    "EXIT_OK",
    "EXIT_REMOTE",
    "EXIT_USAGE",
    "Options",
    "main",
    "run",
]

#: The call succeeded (every ping was answered).
EXIT_OK = 0
#: The remote method raised, or a ping went unanswered.
EXIT_REMOTE = 1
#: The command line was wrong.
EXIT_USAGE = 2
#: The connection could not be made, or was lost, or timed out.
EXIT_CONNECT = 3
#: The server refused the login.
EXIT_LOGIN = 4

#: Seconds a call may run before progress is reported on stderr.
PROGRESS_AFTER = 1.0

_LOGIN_ERRORS = (
    "twisted.cred.error.UnauthorizedLogin",
    "twisted.cred.error.LoginFailed",
    "twisted.cred.error.LoginDenied",
    "pbext.login.LoginThrottled",
)


_NUMBER = re.compile(r"-\.?[0-9]")


def _longOption(name: str, longOpt: Sequence[str]) -> tuple[str, bool]:
    """
    The full name of the long option C{name} (or of the option it
    abbreviates), and whether it takes a value.

    @raise usage.UsageError: if no option, or more than one, has that name.
    """
    # usage.Options lists an option once per class that declares it, which
    # getopt would call ambiguous: the caller passes the full name on.
    exact = {o for o in longOpt if o.rstrip("=") == name}
    matches = sorted(exact or {o for o in longOpt if o.startswith(name)})
    if not matches:
        raise usage.UsageError(f"option --{name} not recognized")
    if len(matches) > 1:
        raise usage.UsageError(f"option --{name} is ambiguous")
    return matches[0].rstrip("="), matches[0].endswith("=")


def _permute(argv: Sequence[str], shortOpt: str, longOpt: Sequence[str]) -> list[str]:
    """
    Move the options in C{argv} before its other arguments, as GNU tools
    do, so that C{ping ENDPOINT --count 3} means C{ping --count 3 ENDPOINT}.

    A word that looks like a negative number (C{-5}, C{-.5}) is an
    argument, not an option, and everything after C{--} is an argument.

    @raise usage.UsageError: for an unknown or ambiguous long option, or an
        option missing its value.
    """
    options: list[str] = []
    arguments: list[str] = []
    words = list(argv)
    while words:
        word = words.pop(0)
        if word == "--":
            arguments.extend(words)
            break
        if word.startswith("--"):
            name, hasValue, value = word[2:].partition("=")
            fullName, takesValue = _longOption(name, longOpt)
            options.append(f"--{fullName}{hasValue}{value}")
            if takesValue and not hasValue:
                if not words:
                    raise usage.UsageError(f"option --{name} requires a value")
                options.append(words.pop(0))
        elif word.startswith("-") and len(word) > 1 and not _NUMBER.match(word):
            options.append(word)
            for i, letter in enumerate(word[1:], 1):
                if letter + ":" in shortOpt:
                    if i == len(word) - 1:
                        if not words:
                            raise usage.UsageError(f"option -{letter} requires a value")
                        options.append(words.pop(0))
                    break
        else:
            arguments.append(word)
    return [*options, "--", *arguments]


class _ConnectionOptions(usage.Options):
    """
    What C{call} and C{ping} share: the endpoint and the credentials.

    Options may come anywhere on the line, before or after the arguments.
    """

    #: The sub-command's name, for messages.
    command = ""

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse C{options}, accepting options after the arguments too.
        """
        if options is None:
            options = sys.argv[1:]
        super().parseOptions(_permute(options, self.shortOpt, self.longOpt))

    def _wrongArguments(self, arguments: Sequence[str]) -> usage.UsageError:
        given = " ".join(arguments) if arguments else "none"
        return usage.UsageError(
            f"expected {getattr(self, 'synopsis', '').replace('[options] ', '')}, "
            f"got {len(arguments)} argument{'s' if len(arguments) != 1 else ''} "
            f"({given})"
        )

    optFlags = [
        ["anonymous", None, "Log in anonymously instead of getting the root."],
    ]

    optParameters: list[list[Any]] = [
        [
            "username",
            "u",
            None,
            "Log in as this user and talk to the avatar instead of the root.",
        ],
        [
            "password",
            "p",
            None,
            "The password for --username (default: the PBEXT_PASSWORD "
            "environment variable, which other users cannot see).",
        ],
        [
            "timeout",
            "t",
            30.0,
            "Seconds allowed for connecting and logging in.",
            float,
        ],
    ]

    def credentials(self) -> Any:
        """
        The credentials the options ask for, or L{None} for the root.
        """
        if self["anonymous"]:
            return Anonymous()
        if self["username"] is None:
            return None
        password = self["password"]
        if password is None:
            password = os.environ.get("PBEXT_PASSWORD", "")
        return UsernamePassword(
            self["username"].encode("utf-8"), password.encode("utf-8")
        )

    def _checkCredentials(self) -> None:
        if self["anonymous"] and self["username"] is not None:
            raise usage.UsageError("give --username or --anonymous, not both")
        if self["password"] is not None and self["username"] is None:
            raise usage.UsageError("--password is for a username: add --username NAME")

    def _checkEndpoint(self, description: str) -> None:
        from pbext._extras import checkTLSEndpoint

        try:
            checkTLSEndpoint(description)
        except ImportError as e:
            raise usage.UsageError(f"{description}: {e}")
        try:
            # The ignore below: parsing only: no reactor needed.
            endpoints.clientFromString(None, description)  # type: ignore[arg-type]
        except Exception as e:
            raise usage.UsageError(
                f"{description}: not a client endpoint description ({e}); "
                f"use strports syntax such as tcp:host=127.0.0.1:port=8787 or "
                f"tls:host=example.com:port=8788"
            )
        self["endpoint"] = description


class CallOptions(_ConnectionOptions):
    """
    Options of C{python -m pbext call}.
    """

    command = "call"

    synopsis = "[options] ENDPOINT METHOD [ARG ...]"

    longdesc = (
        "Call METHOD on the server's root object (or, after a login, on the "
        "avatar) and print the result. Each ARG is a Python literal such as "
        "42, 'text', b'bytes' or [1, {'a': 2}] (with --json, a JSON value); "
        "a bare word that is not a literal is passed as a string. Keyword "
        "arguments are written NAME=VALUE. A call that takes longer than a "
        "second reports its progress on stderr. Options may come before or "
        "after the arguments; '--' ends them. Exit status: 0 success, 1 "
        "the remote method raised, 2 bad usage, 3 connection failed, 4 login "
        "refused."
    )

    optFlags = [
        *_ConnectionOptions.optFlags,
        ["json", "j", "Read arguments as JSON and print the result as JSON."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["registries"] = []

    def opt_registry(self, spec: str) -> None:
        """A typed copyable registry whose types the result may hold (repeatable): the dotted name of a CopyableRegistry (or of a zero-argument callable returning one), or an installed registry plugin's name, as for twistd pbserver."""  # noqa: E501
        from pbext.tap import _loadRegistry

        self["registries"].append(_loadRegistry(spec))

    # The ignore below: usage.Options.parseArgs takes no arguments.
    def parseArgs(self, *arguments: str) -> None:  # type: ignore[override]
        if len(arguments) < 2:
            raise self._wrongArguments(arguments)
        endpoint, method, *args = arguments
        self._checkEndpoint(endpoint)
        self["method"] = method
        positional: list[Any] = []
        keywords: dict[str, Any] = {}
        for arg in args:
            name, sep, value = arg.partition("=")
            if sep and name.isidentifier() and not keywords.get(name):
                keywords[name] = self._literal(value)
            else:
                if keywords:
                    raise usage.UsageError(
                        f"{arg}: positional arguments come before NAME=VALUE ones"
                    )
                positional.append(self._literal(arg))
        self["args"] = positional
        self["kwargs"] = keywords

    def _literal(self, text: str) -> Any:
        if self["json"]:
            try:
                return json.loads(text)
            except ValueError as e:
                raise usage.UsageError(f"{text!r} is not JSON: {e}")
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            if text.isidentifier():
                return text
            raise usage.UsageError(
                f"{text!r} is not a Python literal; quote strings, as in "
                f"\"'hello world'\""
            )

    def postOptions(self) -> None:
        self._checkCredentials()


class PingOptions(_ConnectionOptions):
    """
    Options of C{python -m pbext ping}.
    """

    command = "ping"

    synopsis = "[options] ENDPOINT"

    longdesc = (
        "Connect (and log in, if asked) and measure round trips to the "
        "server with pbext's ping, which stock PB servers answer too. With "
        "--json, print one JSON object with the round trips instead. Options "
        "may come before or after ENDPOINT. Exit status: 0 every ping "
        "answered, 1 a ping went unanswered, 2 bad usage, 3 connection "
        "failed, 4 login refused."
    )

    optFlags = [
        *_ConnectionOptions.optFlags,
        ["json", "j", "Print the round trips as one JSON object, for scripts."],
    ]

    optParameters = [
        *_ConnectionOptions.optParameters,
        ["count", "c", 4, "How many pings to send.", int],
        ["interval", "i", 1.0, "Seconds between pings.", float],
    ]

    # The ignore below: usage.Options.parseArgs takes no arguments.
    def parseArgs(self, *arguments: str) -> None:  # type: ignore[override]
        if len(arguments) != 1:
            raise self._wrongArguments(arguments)
        self._checkEndpoint(arguments[0])

    def postOptions(self) -> None:
        self._checkCredentials()
        if self["count"] < 1:
            raise usage.UsageError(f"--count {self['count']}: give 1 or more pings")
        if self["interval"] < 0:
            raise usage.UsageError(
                f"--interval {self['interval']:g}: give 0 seconds or more"
            )


class _IntrospectionOptions(_ConnectionOptions):
    """
    What C{describe} and C{stubs} share: an endpoint, or C{--module}.
    """

    synopsis = "[options] ENDPOINT | --module PACKAGE.MODULE[:CLASS]"

    optParameters = [
        *_ConnectionOptions.optParameters,
        [
            "module",
            "m",
            None,
            "Describe classes from their code, without a server: "
            "PACKAGE.MODULE:CLASS (that class, and the remote classes its "
            "annotations name) or PACKAGE.MODULE (every remote class it "
            "defines).",
        ],
    ]

    def parseArgs(self, *arguments: str) -> None:  # type: ignore[override]  # twistd's Options.parseArgs takes no arguments; subcommands add theirs
        if self["module"] is not None:
            if arguments:
                raise usage.UsageError(
                    "give an ENDPOINT or --module, not both: --module reads "
                    "the classes from their code"
                )
            return
        if not arguments:
            raise usage.UsageError(
                "give the server's ENDPOINT, or --module PACKAGE.MODULE:CLASS "
                "to read the classes from their code"
            )
        if len(arguments) != 1:
            raise self._wrongArguments(arguments)
        self._checkEndpoint(arguments[0])

    def postOptions(self) -> None:
        self._checkCredentials()
        if self["module"] is not None and (
            self["username"] is not None or self["anonymous"]
        ):
            raise usage.UsageError(
                "--module reads classes from their code; log in only with an ENDPOINT"
            )


class DescribeOptions(_IntrospectionOptions):
    """
    Options of C{python -m pbext describe}.

    @since: pbext NEXT
    """

    command = "describe"

    longdesc = (
        "List the remote methods of the server's root object (or, after a "
        "login, of the avatar) with their signatures and the first sentence "
        "of their docstrings, and the remote classes their annotations name. "
        "Only pbext servers that allow introspection answer (the strict "
        "policy and --no-introspection turn it off). Exit status: 0 "
        "described, 1 the server refused, 2 bad usage, 3 connection failed, "
        "4 login refused."
    )

    optFlags = [
        *_ConnectionOptions.optFlags,
        ["json", "j", "Print the description as JSON, for scripts."],
    ]


class StubsOptions(_IntrospectionOptions):
    """
    Options of C{python -m pbext stubs}.

    @since: pbext NEXT
    """

    command = "stubs"

    longdesc = (
        "Write a Python module with a typing.Protocol for each remote class "
        "the server describes (or --module names), for mypy to check calls "
        "made through pbext.typed(reference, Protocol). Exit status as for "
        "describe."
    )

    optParameters = [
        *_IntrospectionOptions.optParameters,
        ["output", "o", "-", "The file to write ('-', the default: stdout)."],
    ]


class Options(usage.Options):
    """
    Options of C{python -m pbext}.
    """

    synopsis = "Usage: python -m pbext"

    longdesc = (
        "A Perspective Broker client for operators. ENDPOINT is a Twisted "
        "client endpoint description: tcp:host=HOST:port=PORT, "
        "tls:host=HOST:port=PORT[:trustRoots=DIR][:certificate=PEM:"
        "privateKey=PEM] or unix:path=PATH. Run 'python -m pbext COMMAND "
        "--help' for a command's options."
    )

    subCommands = [
        ["call", None, CallOptions, "Call a remote method and print the result."],
        ["ping", None, PingOptions, "Measure round trips to a server."],
        [
            "describe",
            None,
            DescribeOptions,
            "List the remote methods a server offers.",
        ],
        [
            "stubs",
            None,
            StubsOptions,
            "Write typing.Protocol stubs of a server's remote classes.",
        ],
    ]

    def opt_version(self) -> None:
        """Print pbext's version and exit."""
        # usage.Options' own --version prints Twisted's.
        import twisted
        from pbext import __version__

        print(f"pbext {__version__.public()} (Twisted {twisted.__version__})")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("give a command: call, ping, describe or stubs")


class _Output:
    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err

    def result(self, value: str) -> None:
        self.out.write(value + "\n")
        self.out.flush()

    def note(self, value: str) -> None:
        self.err.write(value + "\n")
        self.err.flush()


def _jsonDefault(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def _failureType(failure: Failure) -> str:
    """
    The dotted name of a failure's exception, copied or local.
    """
    remoteType = getattr(failure.value, "remoteType", None)
    kind = failure.type if remoteType is None else remoteType
    if isinstance(kind, bytes):
        return kind.decode("utf-8", "replace")
    if isinstance(kind, str):
        return kind
    if kind is None:
        return "Exception"
    return f"{kind.__module__}.{kind.__qualname__}"


def _describeFailure(failure: Failure) -> str:
    message = failure.getErrorMessage()
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    if not message:
        return _failureType(failure)
    return f"{_failureType(failure)}: {message}"


def _connectExit(failure: Failure, output: _Output, endpoint: str) -> int:
    """
    Report why connecting or logging in failed, and choose the exit status.
    """
    if _failureType(failure) in _LOGIN_ERRORS:
        output.note(f"pbext: login refused by {endpoint}: {_describeFailure(failure)}")
        return EXIT_LOGIN
    output.note(f"pbext: cannot connect to {endpoint}: {_describeFailure(failure)}")
    return EXIT_CONNECT


async def _connect(reactor: Any, options: _ConnectionOptions) -> Any:
    from pbext.client import PBClientFactory, connect

    registries = options.get("registries") or None
    return await connect(
        reactor,
        options["endpoint"],
        options.credentials(),
        factory=PBClientFactory(reactor=reactor, registry=registries),
        timeout=options["timeout"],
    )


async def _realmHint(reactor: Any, reference: Any, options: CallOptions) -> str:
    """
    A hint to log in, if a call on the root failed because the server
    serves a realm (its root answers pbext's C{loginMethods}); else C{""}.
    """
    if options.credentials() is not None:
        return ""
    try:
        await reference.callRemote("loginMethods").addTimeout(
            options["timeout"], reactor
        )
    except Exception:
        return ""
    return (
        "pbext: this server serves a realm, whose root only logs users in; "
        "log in with --username NAME (or --anonymous) to call the avatar"
    )


def _disconnect(reference: Any) -> None:
    transport = getattr(reference.broker, "transport", None)
    if transport is not None:
        transport.loseConnection()


async def _call(reactor: Any, options: CallOptions, output: _Output) -> int:
    try:
        reference = await _connect(reactor, options)
    except Exception:
        return _connectExit(Failure(), output, options["endpoint"])
    method = options["method"]
    started = reactor.seconds()

    def progress() -> None:
        output.note(
            f"pbext: still waiting for {method}() after "
            f"{reactor.seconds() - started:.0f} s"
        )

    reporter = task.LoopingCall(progress)
    reporter.clock = reactor
    later = reactor.callLater(PROGRESS_AFTER, reporter.start, PROGRESS_AFTER)
    try:
        result = await reference.callRemote(
            method, *options["args"], **options["kwargs"]
        )
    except Exception:
        failure = Failure()
        if failure.check(error.ConnectionLost, error.ConnectionDone, "ConnectionLost"):
            output.note(f"pbext: connection lost during {method}()")
            return EXIT_CONNECT
        output.note(f"pbext: {method}() failed: {_describeFailure(failure)}")
        if _failureType(failure) == "twisted.spread.flavors.NoSuchMethod":
            hint = await _realmHint(reactor, reference, options)
            if hint:
                output.note(hint)
        return EXIT_REMOTE
    finally:
        if later.active():
            later.cancel()
        if reporter.running:
            reporter.stop()
        _disconnect(reference)
    if options["json"]:
        output.result(json.dumps(result, default=_jsonDefault))
    else:
        output.result(repr(result))
    return EXIT_OK


async def _ping(reactor: Any, options: PingOptions, output: _Output) -> int:
    try:
        reference = await _connect(reactor, options)
    except Exception:
        return _connectExit(Failure(), output, options["endpoint"])
    broker = reference.broker
    times: list[float] = []
    status = EXIT_OK
    try:
        for n in range(1, options["count"] + 1):
            if n > 1 and options["interval"]:
                await task.deferLater(reactor, options["interval"])
            started = reactor.seconds()
            try:
                await broker.ping().addTimeout(options["timeout"], reactor)
            except Exception:
                output.note(f"ping {n}: {_describeFailure(Failure())}")
                status = EXIT_REMOTE
                if broker.disconnected:
                    return EXIT_CONNECT
                continue
            rtt = (reactor.seconds() - started) * 1000
            times.append(rtt)
            if not options["json"]:
                output.result(f"ping {n}: {rtt:.2f} ms")
    finally:
        _disconnect(reference)
    if options["json"]:
        summary: dict[str, Any] = {
            "endpoint": options["endpoint"],
            "sent": options["count"],
            "answered": len(times),
            "rtt_ms": [round(t, 3) for t in times],
        }
        if times:
            summary["min_ms"] = round(min(times), 3)
            summary["avg_ms"] = round(sum(times) / len(times), 3)
            summary["max_ms"] = round(max(times), 3)
        output.result(json.dumps(summary))
    elif times:
        output.result(
            f"{len(times)}/{options['count']} answered; "
            f"min/avg/max {min(times):.2f}/{sum(times) / len(times):.2f}/"
            f"{max(times):.2f} ms"
        )
    return status


def _usageError(options: Options, error: usage.UsageError) -> str:
    """
    The error first, then one line of usage: not the whole C{--help}.
    """
    command = "python -m pbext"
    sub = getattr(options, "subOptions", None) if options.subCommand else None
    if sub is not None:
        command = f"{command} {options.subCommand}"
        synopsis = f"{command} {sub.synopsis}"
    else:
        synopsis = f"{command} call|ping|describe|stubs ..."
    message = str(error)
    if message and message[0].isupper() and not message[:2].isupper():
        message = message[0].lower() + message[1:]
    return (
        f"{command}: {message.rstrip('.')}\n"
        f"usage: {synopsis}  ('{command} --help' lists the options)"
    )


async def run(
    reactor: IReactorTime,
    argv: Sequence[str],
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """
    Run C{python -m pbext} with the arguments C{argv} (without the program
    name) and return its exit status.

    @param reactor: the reactor to connect and keep time with.
    @param stdout: where results go; L{sys.stdout} by default.
    @param stderr: where errors and progress go; L{sys.stderr} by default.
    """
    output = _Output(stdout or sys.stdout, stderr or sys.stderr)
    options = Options()
    try:
        options.parseOptions(list(argv))
    except usage.UsageError as e:
        output.note(_usageError(options, e))
        return EXIT_USAGE
    sub = options.subOptions
    if options.subCommand == "call":
        return await _call(reactor, sub, output)
    if options.subCommand in ("describe", "stubs"):
        from pbext import _describecli

        return await _describecli.run(reactor, sub, output)
    return await _ping(reactor, sub, output)


def main(argv: Sequence[str] | None = None) -> None:
    """
    The entry point of C{python -m pbext}: run it on the global reactor and
    exit with its status.
    """
    args = list(sys.argv[1:] if argv is None else argv)

    def start(reactor: Any) -> defer.Deferred[None]:
        async def go() -> None:
            status = await run(reactor, args)
            if status:
                raise SystemExit(status)

        return defer.ensureDeferred(go())

    task.react(start)
