"""
C{twistd pbserver}: serve a Perspective Broker root or twisted.cred realm.

The twistd plugin in C{twisted/plugins/pbext_plugin.py} names this module;
twistd imports it only when C{pbserver} runs.  L{Options} parses the command
line and L{makeService} turns it into a service with one listening port per
C{--listen}.

@since: pbext NEXT
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Callable, Sequence

from twisted.application import service
from twisted.cred import credentials, strcred
from twisted.cred.checkers import (
    ICredentialsChecker,
    InMemoryUsernamePasswordDatabaseDontUse,
)
from twisted.cred.portal import IRealm
from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.python import reflect, usage
from twisted.spread import pb

from pbext import (
    certreactor,
    clientcerts,
    demo,
    policyfile,
    policylookup,
    security,
    throttle,
)
from pbext.server import PBServerService, buildServerFactory

#: Credential interfaces PB's challenge/response login can hand a checker.
_PB_LOGIN_INTERFACES = (
    credentials.IUsernameHashedPassword,
    pb.IUsernameMD5Password,
    credentials.IAnonymous,
)

#: Credential interfaces some login of pbext's can hand a checker: the
#: challenges above, plaintext passwords (pbext clients over TLS, or with
#: --allow-plaintext-login) and verified TLS client certificates.
_LOGIN_INTERFACES = (
    *_PB_LOGIN_INTERFACES,
    credentials.IUsernamePassword,
    clientcerts.IClientCertificate,
)

#: LoginThrottle settings --login-throttle accepts.
_THROTTLE_SETTINGS = {
    "freeFailures": int,
    "initialDelay": float,
    "maxDelay": float,
    "refuseAfter": int,
    "refuseFor": float,
    "addressFreeFailures": int,
    "addressRefuseAfter": int,
    "maxAttemptsPerSecond": float,
    "maxUsernameDelay": float,
    "trustFor": float,
    "forgetAfter": float,
    "maxRecords": int,
    "maxTrusted": int,
}

DEFAULT_LISTEN = "tcp:8787"

_log = Logger()


def _normalizeMemoryChecker(checker: object) -> object:
    """
    Make the C{memory:} checker's users match what PB sends.

    L{twisted.cred.strcred}'s C{memory:} plugin stores the usernames and
    passwords it parsed from the command line as C{str}, but the checker
    looks users up by the C{bytes} username PB's login carries, so with stock
    parts every login is refused.  Re-key its database as UTF-8 bytes.
    """
    if isinstance(checker, InMemoryUsernamePasswordDatabaseDontUse):
        checker.users = {
            (k.encode("utf-8") if isinstance(k, str) else k): (
                v.encode("utf-8") if isinstance(v, str) else v
            )
            for k, v in checker.users.items()
        }
    return checker


def _inWorkingDirectory(dottedName: str) -> str | None:
    """
    The file or package in the working directory that C{dottedName}'s
    top-level module would be, if there is one and the working directory is
    not on L{sys.path} (twistd does not put it there).
    """
    here = os.path.abspath(os.getcwd())
    if any(os.path.abspath(p or os.curdir) == here for p in sys.path):
        return None
    top = dottedName.partition(".")[0]
    for candidate in (top + ".py", os.path.join(top, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _loadObject(kind: str, dottedName: str) -> object:
    """
    Import C{dottedName}, turning any failure into a L{usage.UsageError}.
    """
    try:
        return reflect.namedAny(dottedName)
    except Exception as e:
        found = _inWorkingDirectory(dottedName)
        if found is not None:
            raise usage.UsageError(
                f"--{kind} {dottedName}: cannot import it: {found} is in the "
                f"working directory, but twistd does not put the working "
                f"directory on sys.path. Run it as PYTHONPATH=. twistd ..."
            )
        raise usage.UsageError(
            f"--{kind} {dottedName}: cannot import it "
            f"({type(e).__name__}: {e}). Give the full dotted name of an "
            f"importable object, such as mypackage.module.name, and set "
            f"PYTHONPATH if its package is not installed."
        )


def _resolve(
    kind: str,
    dottedName: str,
    accept: Callable[[object], object | None],
    wanted: str,
) -> object:
    """
    Load C{dottedName} and return what C{accept} makes of it, calling it
    with no arguments first if it is a class or other callable that
    C{accept} does not take as it is.
    """
    obj = _loadObject(kind, dottedName)
    result = accept(obj)
    if result is None and callable(obj):
        try:
            made = obj()
        except Exception as e:
            raise usage.UsageError(
                f"--{kind} {dottedName}: calling it with no arguments failed "
                f"({type(e).__name__}: {e}); it must be {wanted}, or a "
                f"zero-argument callable returning one."
            )
        result = accept(made)
        obj = made
    if result is None:
        raise usage.UsageError(
            f"--{kind} {dottedName}: {obj!r} is not {wanted}; name one, or a "
            f"zero-argument callable returning one."
        )
    return result


def _acceptRoot(obj: object) -> object | None:
    if isinstance(obj, type):
        return None
    root = pb.IPBRoot(obj, None)
    return None if root is None else obj


def _acceptRealm(obj: object) -> object | None:
    if isinstance(obj, type):
        return None
    return obj if IRealm.providedBy(obj) else None


def _positiveSeconds(value: str) -> float:
    seconds = float(value)
    if not seconds > 0:
        raise ValueError(f"{value!r} is not a positive number of seconds")
    return seconds


# The ignore below: usage.Options reads coerceDoc off the function.
_positiveSeconds.coerceDoc = "A positive number of seconds."  # type: ignore[attr-defined]


class Options(usage.Options, strcred.AuthOptionMixin):
    """
    Command-line options for C{twistd pbserver}.
    """

    synopsis = "[pbserver options]"

    longdesc = (
        "Serve a Perspective Broker (PB) root object, or a twisted.cred realm "
        "behind a login, on one or more endpoints. With neither --root nor "
        "--realm, a demo root answering echo(x), ping() and version() is "
        "served; with --auth and no --realm, a demo realm whose avatars answer "
        "echo(x) and whoami(). Classic twisted.spread.pb clients can connect "
        "and log in as they always have; pbext clients negotiate stronger "
        "logins (a password over TLS, a nonce challenge, a TLS client "
        "certificate), and failed logins slow down."
    )

    optParameters: list[list[Any]] = [
        [
            "root",
            None,
            None,
            "Dotted name of the root object to serve: a pb.Root or other "
            "pb.IPBRoot provider, or a zero-argument callable returning one.",
        ],
        [
            "realm",
            None,
            None,
            "Dotted name of a twisted.cred IRealm (or a zero-argument callable "
            "returning one) whose avatars logged-in clients get. Needs --auth.",
        ],
    ]

    optParameters += [
        [
            "keepalive",
            None,
            None,
            "Ping each client after this many idle seconds and drop it if it "
            "does not answer within --keepalive-timeout (off by default). "
            "Works with stock clients too",
            _positiveSeconds,
        ],
        [
            "keepalive-timeout",
            None,
            30.0,
            "Seconds a keepalive ping may wait for its answer",
            _positiveSeconds,
        ],
        [
            "call-timeout",
            None,
            None,
            "Seconds a call the server makes to a client (a callback) may wait "
            "for its answer (no limit by default)",
            _positiveSeconds,
        ],
    ]

    optFlags = [
        [
            "unsafe-tracebacks",
            None,
            "Send full tracebacks of server errors to clients (for debugging "
            "only: tracebacks reveal server internals).",
        ],
        [
            "allow-plaintext-login",
            None,
            "Accept passwords in plaintext from pbext clients on listeners "
            "without TLS (unix sockets, loopback or a trusted network); over "
            "ssl: listeners they are always accepted. Lets checkers of "
            "plaintext passwords (--auth unix) serve logins there.",
        ],
        [
            "no-classic-login",
            None,
            "Refuse classic PB's MD5 challenge login: stock PB clients cannot "
            "log in; pbext clients use a stronger login.",
        ],
        [
            "typed-calls",
            None,
            "Check the arguments of every annotated remote method against its "
            "annotations, refusing calls that do not match (by default only "
            "methods marked with pbext.typed are checked).",
        ],
        [
            "introspection",
            None,
            "Let pbext clients ask which remote methods the objects they hold "
            "offer (python -m pbext describe / stubs). The default unless "
            "the policy is strict.",
        ],
        [
            "no-introspection",
            None,
            "Never describe remote methods to clients (the default with the "
            "strict policy).",
        ],
    ]

    compData = usage.Completions(
        optActions={
            "listen": usage.CompleteList(["tcp:8787", "ssl:8787", "unix:"]),
        }
    )

    supportedInterfaces = _LOGIN_INTERFACES

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["registries"] = []
        self["limits"] = {}
        self["policyObject"] = None
        self["authDescriptions"] = []

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse the command line; after a usage error, L{getUsage} is one
        line, so that the error twistd prints after it stays in sight.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError:
            self._usageFailed = True
            raise

    def getUsage(self, width: int | None = None) -> str:
        """
        The whole help, or after a usage error one line saying how to get
        it (twistd prints the usage, then the error).
        """
        if getattr(self, "_usageFailed", False):
            # twistd prints its own synopsis line before this one.
            return "'twistd pbserver --help' lists pbserver's options."
        return super().getUsage(width)

    def opt_policy(self, spec: str) -> None:
        """The security policy: a preset (default, strict, classic), an installed policy plugin's name, the dotted name of a policy object, or a policy file (see --help-policies)."""  # noqa: E501
        try:
            self["policyObject"] = policylookup.loadPolicy(spec)
        except security.PolicyError as e:
            raise usage.UsageError(f"--policy {spec}: {e}")

    def opt_help_policies(self) -> None:
        """List the security policies --policy can name, and exit."""
        out = self.authOutput
        out.write("Usage: --policy NAME | DOTTED.NAME | FILE\n\n")
        described = policylookup.describePolicies()
        width = max(len(name) for name, _ in described)
        for name, description in described:
            out.write(f"  {name:<{width}}  {description}\n")
        out.write("\nA FILE is an INI policy file: see the security policy how-to.\n")
        raise SystemExit(0)

    def opt_registry(self, spec: str) -> None:
        """A typed copyable registry whose types clients may send (repeatable): the dotted name of a CopyableRegistry (or of a zero-argument callable returning one), or an installed registry plugin's name."""  # noqa: E501
        self["registries"].append(_loadRegistry(spec))

    def opt_limit(self, setting: str) -> None:
        """Change one limit of the policy, as NAME=VALUE (repeatable), e.g. maxOutstandingCalls=200 or idleTimeout=600; the names are pbext.security.Limits' fields."""  # noqa: E501
        name, sep, value = setting.partition("=")
        name = name.strip()
        if not sep or name not in policyfile.LIMIT_NAMES:
            raise usage.UsageError(
                f"--limit {setting}: expected NAME=VALUE with NAME one of "
                + ", ".join(policyfile.LIMIT_NAMES)
            )
        try:
            self["limits"][name] = policyfile.parseLimit(name, value)
        except security.PolicyError as e:
            raise usage.UsageError(f"--limit {setting}: {e}")

    def opt_metrics(self, description: str) -> None:
        """Serve Prometheus metrics (connections, logins, calls, bytes, policy violations) at /metrics over HTTP on this strports endpoint, e.g. tcp:9187:interface=127.0.0.1. Needs pip install pbext[metrics]."""  # noqa: E501
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            from pbext._extras import METRICS_MISSING

            raise usage.UsageError(f"--metrics {description}: {METRICS_MISSING}")
        _checkServerEndpoint("metrics", description, "tcp:9187:interface=127.0.0.1")
        self["metrics"] = description

    def opt_listen(self, description: str) -> None:
        """Listen on this strports endpoint (repeatable; default tcp:8787), e.g. tcp:8787:interface=127.0.0.1 or ssl:8788:privateKey=key.pem."""  # noqa: E501
        _checkServerEndpoint("listen", description, "tcp:8787 or unix:/run/pb.sock")
        self["listen"].append(description)

    def opt_auth(self, description: str) -> None:
        """Check logins with this twisted.cred checker (repeatable; see --help-auth), e.g. memory:alice:secret or file:/etc/pb-passwords."""  # noqa: E501
        kind, _, argument = description.partition(":")
        if kind == "file" and not os.path.isfile(argument):
            # strcred's file: checker only warns, then refuses everyone.
            raise usage.UsageError(
                f"--auth {description}: no such file {argument!r}. Create it "
                f"with one USERNAME:PASSWORD line per user, or give its path."
            )
        try:
            checker = strcred.makeChecker(description)
        except strcred.InvalidAuthType as e:
            raise usage.UsageError(
                f"--auth {description}: unknown checker type {e.args[0]!r}; "
                f"--help-auth lists the installed ones."
            )
        except Exception as e:
            raise usage.UsageError(f"--auth {description}: {e}")
        if not any(i in checker.credentialInterfaces for i in _LOGIN_INTERFACES):
            names = ", ".join(i.__name__ for i in checker.credentialInterfaces)
            raise usage.UsageError(
                f"--auth {description}: this checker only verifies {names}, "
                f"which no PB login sends. PB logins send a password (pbext "
                f"clients over TLS), a challenge response or nothing "
                f"(anonymous): use a password checker such as memory:, "
                f"file: or unix, or anonymous."
            )
        self.addChecker(_normalizeMemoryChecker(checker))
        self["authDescriptions"].append((description, checker))

    def opt_login_throttle(self, spec: str) -> None:
        """Slow down failed logins per client address, per (address, username) and per username, never locking a username out: 'off', or comma-separated settings. Defaults: freeFailures=3, initialDelay=1, maxDelay=30, refuseAfter=20 (one username from one address: 3 failures, then 1 s doubling to 30 s between attempts, refused from that address after 20); addressFreeFailures=10, addressRefuseAfter=100 (one address, any usernames); refuseFor=900; maxAttemptsPerSecond=5 (per address and per username once they failed); maxUsernameDelay=1 (the longest an attacking address waits for a username's turn before it is refused); trustFor=2592000 (an address that logged in as a user skips that user's queue for 30 days). refuseAfter=0 or addressRefuseAfter=0 never refuses."""  # noqa: E501
        try:
            self["loginThrottleSettings"] = _parseThrottle(spec)
        except ValueError as e:
            raise usage.UsageError(f"--login-throttle {spec}: {e}")
        self["login-throttle"] = spec

    def opt_tls_client_ca(self, path: str) -> None:
        """PEM file of certificate authorities: ssl: listeners ask clients for a certificate and verify it against these, and a pbext client with a verified certificate can log in as its subject commonName."""  # noqa: E501
        try:
            self["clientAuthorities"] = certreactor.loadAuthorities(path)
        except ImportError as e:
            from pbext._extras import TLS_MISSING

            raise usage.UsageError(f"--tls-client-ca {path}: {TLS_MISSING} ({e})")
        except ValueError as e:
            if not str(e).startswith(f"{path}: "):
                raise usage.UsageError(
                    f"--tls-client-ca {path}: cannot load certificates from it "
                    f"({type(e).__name__}: {e}); give a PEM file of CA "
                    f"certificates."
                )
            # loadAuthorities names the file and the fix itself.
            raise usage.UsageError(f"--tls-client-ca {e}")
        except Exception as e:
            raise usage.UsageError(
                f"--tls-client-ca {path}: cannot load certificates from it "
                f"({type(e).__name__}: {e}); give a PEM file of CA certificates."
            )
        self["tls-client-ca"] = path

    def _checkLogins(self) -> None:
        """
        Refuse checkers no login can serve with these options, and note
        which clients can log in with each of the others.
        """
        tls = any(_isTLS(d) for d in self["listen"])
        plaintext = tls or bool(self["allow-plaintext-login"])
        classic = not self["no-classic-login"]
        notes = []
        for description, checker in self["authDescriptions"]:
            interfaces = set(checker.credentialInterfaces)
            challenge = bool(
                interfaces
                & {credentials.IUsernameHashedPassword, pb.IUsernameMD5Password}
            )
            anonymous = credentials.IAnonymous in interfaces
            password = credentials.IUsernamePassword in interfaces
            if password and not (challenge or anonymous):
                if not plaintext:
                    raise usage.UsageError(
                        f"--auth {description}: this checker verifies plaintext "
                        f"passwords only, which pbext clients send only over "
                        f"TLS and stock PB clients never send. Add a TLS "
                        f"listener (--listen ssl:8788:privateKey=server.key:"
                        f"certKey=server.pem) or, on a unix socket or trusted "
                        f"network, --allow-plaintext-login."
                    )
                if self["allow-plaintext-login"]:
                    who = (
                        "pbext clients can log in, over TLS or, with "
                        "--allow-plaintext-login, over other listeners if the "
                        "client sets allowPlaintextLogin=True too"
                    )
                else:
                    who = "pbext clients connecting over TLS (ssl: listen) can log in"
                notes.append(
                    f"--auth {description}: only {who}; stock PB clients "
                    f"cannot (their MD5 challenge login needs a checker that "
                    f"holds the passwords)."
                )
            elif (challenge or password) and not classic:
                notes.append(
                    f"--auth {description}: only pbext clients can log in; "
                    f"stock PB clients cannot (--no-classic-login)."
                )
        self["authNotes"] = notes

    def postOptions(self) -> None:
        if self["introspection"] and self["no-introspection"]:
            raise usage.UsageError(
                "give --introspection or --no-introspection, not both"
            )
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        policy = self["policyObject"] or security.defaultPolicy()
        if self["limits"]:
            try:
                policy.limits = dataclasses.replace(policy.limits, **self["limits"])
            except (TypeError, ValueError) as e:
                raise usage.UsageError(f"--limit: {e}")
        self["policyObject"] = policy
        if self.get("clientAuthorities"):
            if not any(_isTLS(d) for d in self["listen"]):
                raise usage.UsageError(
                    "--tls-client-ca needs a TLS listener to ask for client "
                    "certificates: add --listen ssl:8788:privateKey=server.key"
                    ":certKey=server.pem."
                )
            if self["root"]:
                raise usage.UsageError(
                    "--tls-client-ca logs clients in to a realm; use --realm "
                    "(or neither, for the demo realm) instead of --root."
                )
            self.addChecker(clientcerts.ClientCertificateChecker())
        self._checkLogins()
        checkers = self.get("credCheckers", [])
        if self["root"] and self["realm"]:
            raise usage.UsageError(
                "--root and --realm cannot be used together: a root is served "
                "as it is, a realm is served behind a login."
            )
        if self["root"] and checkers:
            raise usage.UsageError(
                "--auth needs a realm to hand avatars out, not a --root; use "
                "--realm, or leave both out to serve the demo realm."
            )
        if self["realm"] and not checkers:
            raise usage.UsageError(
                "--realm needs at least one --auth checker to log users in "
                "(for example --auth memory:alice:secret)."
            )
        if self["root"]:
            self["rootObject"] = _resolve(
                "root", self["root"], _acceptRoot, "a pb.IPBRoot provider"
            )
        else:
            self["rootObject"] = None
        if self["realm"]:
            self["realmObject"] = _resolve(
                "realm", self["realm"], _acceptRealm, "a twisted.cred IRealm"
            )
        else:
            self["realmObject"] = None


def _checkServerEndpoint(option: str, description: str, example: str) -> None:
    """
    Refuse a server endpoint description strports cannot parse, naming the
    option, the reason and an example.
    """
    from pbext._extras import checkTLSEndpoint

    try:
        checkTLSEndpoint(description)
    except ImportError as e:
        raise usage.UsageError(f"--{option} {description}: {e}")
    try:
        # The ignore below: parsing only: no reactor needed.
        endpoints.serverFromString(None, description)  # type: ignore[arg-type]
    except Exception as e:
        raise usage.UsageError(
            f"--{option} {description}: not a valid endpoint description "
            f"({e}). Use strports syntax such as {example}."
        )


def _loadRegistry(spec: str) -> object:
    """
    Find the copyable registry C{--registry} names: an installed
    L{IRegistryPlugin}, or a dotted name of a registry or of a zero-argument
    callable returning one.
    """
    from twisted.plugin import getPlugins

    from pbext.interfaces import ICopyableRegistry, IRegistryPlugin

    for plugin in getPlugins(IRegistryPlugin):
        if getattr(plugin, "name", None) == spec:
            registry: Any = plugin.load()
            break
    else:
        registry = _resolve(
            "registry",
            spec,
            lambda obj: obj if ICopyableRegistry.providedBy(obj) else None,
            "a copyable registry (pbext.copyable.CopyableRegistry)",
        )
    if not ICopyableRegistry.providedBy(registry):
        raise usage.UsageError(
            f"--registry {spec}: {registry!r} is not a copyable registry; "
            f"name a pbext.copyable.CopyableRegistry, or a zero-argument "
            f"callable returning one"
        )
    validate = getattr(registry, "validate", None)
    if validate is not None:
        try:
            validate()
        except Exception as e:
            raise usage.UsageError(f"--registry {spec}: {e}")
    return registry


def _isTLS(description: str) -> bool:
    """
    Whether a server endpoint description listens with TLS (C{ssl:}, also
    behind C{haproxy:}).
    """
    kind, _, rest = description.partition(":")
    if kind == "haproxy":
        return _isTLS(rest)
    return kind == "ssl"


def _parseThrottle(spec: str) -> dict[str, Any] | None:
    """
    Parse C{--login-throttle}: C{None} for C{off}, else L{throttle.LoginThrottle}
    keyword arguments.

    @raise ValueError: if C{spec} names an unknown setting or bad value.
    """
    if spec.strip().lower() == "off":
        return None
    settings: dict[str, Any] = {}
    for item in spec.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in _THROTTLE_SETTINGS:
            raise ValueError(
                f"unknown setting {item.strip()!r}; give 'off' or settings "
                f"such as freeFailures=3,initialDelay=1,maxDelay=30,"
                f"refuseAfter=20,refuseFor=900"
            )
        convert = _THROTTLE_SETTINGS[name]
        try:
            settings[name] = convert(value)
        except ValueError:
            unit = "a whole number" if convert is int else "a number"
            raise ValueError(
                f"{name}={value.strip()}: not {unit}; give {name}=NUMBER"
            ) from None
    for name in ("refuseAfter", "addressRefuseAfter"):
        if settings.get(name) == 0:
            settings[name] = None
    # Check the combination now rather than when the server starts.
    from twisted.internet.task import Clock

    throttle.LoginThrottle(Clock(), **settings)
    return settings


def _introspection(config: dict[str, Any]) -> bool | None:
    """
    The factory's C{introspection} option: L{None} leaves it to the policy.
    """
    if config.get("introspection"):
        return True
    if config.get("no-introspection"):
        return False
    return None


def _servedObjects(config: dict[str, Any], login: bool) -> tuple[Any, Any]:
    """
    The root and the realm to serve: those given with C{--root} and
    C{--realm}, or the demo's (L{pbext.demo}) when none is given.
    """
    root = config.get("rootObject")
    realm = config.get("realmObject")
    if login and realm is None:
        realm = demo.DemoRealm()
    elif not login and root is None:
        root = demo.DemoRoot()
    return root, realm


def makeService(config: Options) -> service.MultiService:
    """
    Build the service C{twistd pbserver} runs from parsed L{Options}.
    """
    from twisted.internet import reactor

    checkers: list[ICredentialsChecker] = list(config.get("credCheckers", []))
    loginOptions: dict[str, Any] = {
        "classicLogin": not config.get("no-classic-login"),
        "allowPlaintextLogin": bool(config.get("allow-plaintext-login")),
    }
    if "loginThrottleSettings" in config:
        settings = config["loginThrottleSettings"]
        loginOptions["loginThrottle"] = (
            None if settings is None else throttle.LoginThrottle(reactor, **settings)
        )
    root, realm = _servedObjects(config, bool(checkers))
    factory = buildServerFactory(
        root=root,
        realm=realm,
        checkers=checkers,
        unsafeTracebacks=bool(config.get("unsafe-tracebacks")),
        policy=config.get("policyObject"),
        registry=list(config.get("registries", [])) or None,
        keepaliveInterval=config.get("keepalive"),
        keepaliveTimeout=config.get("keepalive-timeout"),
        callTimeout=config.get("call-timeout"),
        typedCalls=bool(config.get("typed-calls")),
        introspection=_introspection(config),
        **(loginOptions if checkers else {}),
    )
    for note in config.get("authNotes", []):
        _log.info("pbext: {note}", note=note, pbextEvent="authNote")
    listenReactor: Any = reactor
    if config.get("clientAuthorities"):
        listenReactor = certreactor.askForClientCertificates(
            reactor, config["clientAuthorities"]
        )
    pbService = PBServerService(factory, config["listen"], reactor=listenReactor)
    if config.get("metrics"):
        from twisted.application import strports

        from pbext import metrics

        counts = metrics.MemoryMetrics()
        metrics.instrument(factory, counts).setServiceParent(pbService)
        strports.service(
            config["metrics"], metrics.metricsSite(counts), reactor=reactor
        ).setServiceParent(pbService)
    return pbService
