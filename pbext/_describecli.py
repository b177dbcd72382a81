"""
C{python -m pbext describe} and C{python -m pbext stubs}: the commands of
L{pbext.cli} built on L{pbext.introspect} and L{pbext.stubs}.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.python.failure import Failure

from pbext import cli, introspect, stubs
from pbext.loginserver import _PortalWrapper

#: What a realm server's root is described as before a login.
_LOGIN_CLASS = f"{_PortalWrapper.__module__}.{_PortalWrapper.__qualname__}"


def _refusal(failure: Failure) -> str | None:
    """
    The server's reason, if C{failure} is its refusal to describe.
    """
    if failure.check(
        introspect.IntrospectionUnavailable, introspect.IntrospectionRefused
    ):
        return str(failure.value)
    return None


async def _fromServer(
    reactor: Any, options: cli._IntrospectionOptions, output: cli._Output
) -> introspect.Description | int:
    """
    Connect, log in if asked, and describe the root or avatar; or the exit
    status, having said why not.
    """
    endpoint = options["endpoint"]
    try:
        reference = await cli._connect(reactor, options)
    except Exception:
        return cli._connectExit(Failure(), output, endpoint)
    try:
        return await introspect.describeRemote(reference)
    except Exception:
        failure = Failure()
    finally:
        cli._disconnect(reference)
    refusal = _refusal(failure)
    if refusal is not None:
        output.note(f"pbext: {endpoint} did not describe its objects: {refusal}")
        output.note(
            "pbext: ask its operator to allow introspection, or generate "
            "stubs from its code with --module PACKAGE.MODULE:CLASS"
        )
        return cli.EXIT_REMOTE
    if failure.check(ValueError):
        output.note(f"pbext: {endpoint} answered something else: {failure.value}")
        return cli.EXIT_REMOTE
    output.note(f"pbext: describe failed: {cli._describeFailure(failure)}")
    return cli.EXIT_CONNECT


def _realmNote(description: introspect.Description, output: cli._Output) -> None:
    first = description["classes"][0]
    if first["name"] == _LOGIN_CLASS and any(
        m["name"] == "login" for m in first["methods"]
    ):
        output.note(
            "pbext: this server serves a realm, whose root only logs users "
            "in; log in with --username NAME (or --anonymous) to describe "
            "the avatar"
        )


def _write(path: str, text: str, output: cli._Output) -> int:
    if path == "-":
        output.out.write(text)
        output.out.flush()
        return cli.EXIT_OK
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)
    except OSError as e:
        output.note(f"pbext: cannot write {path}: {e.strerror}")
        return cli.EXIT_USAGE
    output.note(f"pbext: wrote {path}")
    return cli.EXIT_OK


async def run(
    reactor: Any, options: cli._IntrospectionOptions, output: cli._Output
) -> int:
    """
    Run C{describe} or C{stubs} with parsed C{options}.
    """
    source = options["module"]
    if source is not None:
        try:
            description = introspect.describeModule(source)
        except ValueError as e:
            output.note(f"pbext: --module {e}")
            return cli.EXIT_USAGE
    else:
        source = options["endpoint"]
        found = await _fromServer(reactor, options, output)
        if isinstance(found, int):
            return found
        description = found
        if options.credentials() is None:
            _realmNote(description, output)
    if isinstance(options, cli.StubsOptions):
        return _write(options["output"], stubs.renderStubs(description, source), output)
    if options["json"]:
        output.result(json.dumps(description, indent=2))
    else:
        output.result(introspect.formatText(description))
    return cli.EXIT_OK
