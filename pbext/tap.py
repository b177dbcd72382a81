"""
C{twistd pbserver}: serve a Perspective Broker root or twisted.cred realm.

The twistd plugin in C{twisted/plugins/pbext_plugin.py} names this module;
twistd imports it only when C{pbserver} runs.  L{Options} parses the command
line and L{makeService} turns it into a service with one listening port per
C{--listen}.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application import service
from twisted.cred import credentials, strcred
from twisted.cred.checkers import (
    ICredentialsChecker,
    InMemoryUsernamePasswordDatabaseDontUse,
)
from twisted.cred.portal import IRealm
from twisted.internet import endpoints
from twisted.python import reflect, usage
from twisted.spread import pb

from pbext.server import PBServerService, buildServerFactory

#: Credential interfaces PB's challenge/response login can hand a checker.
_PB_LOGIN_INTERFACES = (
    credentials.IUsernameHashedPassword,
    pb.IUsernameMD5Password,
    credentials.IAnonymous,
)

DEFAULT_LISTEN = "tcp:8787"


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


def _loadObject(kind: str, dottedName: str) -> object:
    """
    Import C{dottedName}, turning any failure into a L{usage.UsageError}.
    """
    try:
        return reflect.namedAny(dottedName)
    except Exception as e:
        raise usage.UsageError(
            f"--{kind} {dottedName}: cannot import it "
            f"({type(e).__name__}: {e}). Give the full dotted name of an "
            f"object, such as mypackage.module.name, importable by twistd."
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
            f"--{kind} {dottedName}: {obj!r} is not {wanted} (nor a "
            f"zero-argument callable returning one)."
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
        "and log in as they always have."
    )

    optParameters = [
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

    optFlags = [
        [
            "unsafe-tracebacks",
            None,
            "Send full tracebacks of server errors to clients (for debugging "
            "only: tracebacks reveal server internals).",
        ],
    ]

    compData = usage.Completions(
        optActions={
            "listen": usage.CompleteList(["tcp:8787", "ssl:8787", "unix:"]),
        }
    )

    supportedInterfaces = _PB_LOGIN_INTERFACES

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """Listen on this strports endpoint (repeatable; default tcp:8787), e.g. tcp:8787:interface=127.0.0.1 or ssl:8788:privateKey=key.pem."""  # noqa: E501
        try:
            endpoints.serverFromString(None, description)  # type: ignore[arg-type]
        except Exception as e:
            raise usage.UsageError(
                f"--listen {description}: not a valid endpoint description "
                f"({e}). Use strports syntax such as tcp:8787 or "
                f"unix:/var/run/pb.sock."
            )
        self["listen"].append(description)

    def opt_auth(self, description: str) -> None:
        """Check logins with this twisted.cred checker (repeatable; see --help-auth), e.g. memory:alice:secret or file:/etc/pb-passwords."""  # noqa: E501
        try:
            checker = strcred.makeChecker(description)
        except strcred.InvalidAuthType as e:
            raise usage.UsageError(
                f"--auth {description}: unknown checker type {e.args[0]!r}; "
                f"--help-auth lists the installed ones."
            )
        except Exception as e:
            raise usage.UsageError(f"--auth {description}: {e}")
        if not any(i in checker.credentialInterfaces for i in _PB_LOGIN_INTERFACES):
            names = ", ".join(i.__name__ for i in checker.credentialInterfaces)
            raise usage.UsageError(
                f"--auth {description}: this checker only verifies {names}. "
                f"PB's login sends a challenge response (a hash of the "
                f"password), never the password itself, so it needs a "
                f"checker that holds the passwords, such as memory: or file: "
                f"without hashing, or anonymous."
            )
        self.addChecker(_normalizeMemoryChecker(checker))

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
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


def makeService(config: dict[str, Any]) -> service.MultiService:
    """
    Build the service C{twistd pbserver} runs from parsed L{Options}.
    """
    checkers: list[ICredentialsChecker] = list(config.get("credCheckers", []))
    factory = buildServerFactory(
        root=config.get("rootObject"),
        realm=config.get("realmObject"),
        checkers=checkers,
        unsafeTracebacks=bool(config.get("unsafe-tracebacks")),
    )
    return PBServerService(factory, config["listen"])
