# -*- test-case-name: tests.test_security -*-
"""
Policy files: a L{pbext.security.SecurityPolicy} written as INI text.

A policy file is read with L{configparser} (no interpolation, keys are
case-sensitive)::

    # Start from a preset and change what differs.
    [policy]
    base = default              ; default, strict or classic (default: default)
    name = billing              ; used in logs (default: the file's stem)
    allowPrivateMethods = no
    acceptClassicRegistry = yes
    checkCopyState = yes
    sendUnpersistable = no

    [limits]                    ; any field of Limits
    maxStringBytes = 1048576    ; whole numbers for sizes and counts
    idleTimeout = 600           ; seconds, or "none" to turn a timeout off

    [types]
    allow = myapp.billing.Invoice
            myapp.billing.LineItem

Every section is optional; every other section or key is an error, as is a
value that does not parse.  Errors raise L{PolicyError} naming the file, the
section and the key.

L{pbext.policylookup.loadPolicy} reads a policy file when given its path, as
C{twistd pbserver --policy FILE} does; the same limit syntax serves
C{--limit NAME=VALUE} (L{parseLimit}).

@since: pbext NEXT
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import os
from typing import Any, Iterable, Mapping

from twisted.logger import Logger

from pbext.security import (
    _IMPORTING_TYPES,
    _TIMEOUT_FIELDS,
    Limits,
    PolicyError,
    SecurityPolicy,
    presets,
)

__all__ = ["LIMIT_NAMES", "loadPolicyFile", "parseLimit"]

_log = Logger()

_LIMIT_FIELDS = tuple(field.name for field in dataclasses.fields(Limits))

#: The policy's own flags a C{[policy]} section may set.
_FLAGS = (
    "allowPrivateMethods",
    "acceptClassicRegistry",
    "checkCopyState",
    "sendUnpersistable",
)

_FILE_KEYS: Mapping[str, tuple[str, ...]] = {
    "policy": ("base", "name", *_FLAGS),
    "limits": _LIMIT_FIELDS,
    "types": ("allow",),
}

#: The names of L{Limits}' fields, for command lines and policy files.
LIMIT_NAMES: tuple[str, ...] = _LIMIT_FIELDS


def _unknown(word: str, known: Iterable[str], what: str) -> str:
    """
    A message for an unknown section or key, with a suggestion when one
    known name is close.
    """
    known = list(known)
    close = difflib.get_close_matches(word, known, n=1) or difflib.get_close_matches(
        word.lower(), [k.lower() for k in known], n=1
    )
    hint = ""
    if close:
        match = next(k for k in known if k.lower() == close[0].lower())
        hint = f" (did you mean {match!r}?)"
    return f"unknown {what} {word!r}{hint}; known: {', '.join(known)}"


def loadPolicyFile(path: str) -> SecurityPolicy:
    """
    Build a policy from a policy file (format in the module docstring).

    @raise PolicyError: For any mistake, naming the file and the key.
    @since: pbext NEXT
    """
    policyFile = _PolicyFile(path, _read(path))
    policy, base = policyFile.policy()
    policyFile.applyLimits(policy)
    policyFile.applyTypes(policy)
    _log.debug(
        "Loaded security policy {name!r} (base {base}) from {path}",
        name=policy.name,
        base=base,
        path=path,
    )
    return policy


def _read(path: str) -> configparser.ConfigParser:
    """
    Parse the file at C{path} as INI text and check its section and key
    names.
    """
    parser = configparser.ConfigParser(
        interpolation=None,
        default_section="\0",  # make [DEFAULT] an ordinary (unknown) section
        inline_comment_prefixes=(";", "#"),
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep option names' case: the documented way to change optionxform
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=path)
    except OSError as e:
        raise PolicyError(f"cannot read policy file {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise PolicyError(f"policy file {path} is not UTF-8 text: {e}") from e
    except configparser.Error as e:
        message = " ".join(e.message.split())
        raise PolicyError(f"policy file {path}: {message}") from e
    for section in parser.sections():
        if section not in _FILE_KEYS:
            raise PolicyError(
                f"policy file {path}: " + _unknown(section, _FILE_KEYS, "section")
            )
        for key in parser[section]:
            if key not in _FILE_KEYS[section]:
                raise PolicyError(
                    f"policy file {path}, [{section}]: "
                    + _unknown(key, _FILE_KEYS[section], "key")
                )
    return parser


class _PolicyFile:
    """
    The parsed sections of one policy file, applied to a policy.
    """

    def __init__(self, path: str, parser: configparser.ConfigParser) -> None:
        self.path = path
        self.parser = parser

    def where(self, section: str, key: str) -> str:
        return f"policy file {self.path}, [{section}] {key}"

    def boolean(self, section: str, key: str) -> bool:
        try:
            return self.parser.getboolean(section, key)
        except ValueError:
            raise PolicyError(
                f"{self.where(section, key)}: {self.parser[section][key]!r} is "
                f"not yes/no, true/false, on/off or 1/0"
            ) from None

    def policy(self) -> tuple[SecurityPolicy, str]:
        """
        The policy the C{[policy]} section describes, and its base preset.
        """
        parser = self.parser
        settings: Mapping[str, str] = (
            parser["policy"] if parser.has_section("policy") else {}
        )
        base = settings.get("base", "default")
        if base not in presets:
            raise PolicyError(
                f"{self.where('policy', 'base')}: unknown preset {base!r}; use "
                "one of " + ", ".join(presets)
            )
        policy = presets[base]()
        stem = os.path.splitext(os.path.basename(self.path))[0]
        policy.name = settings.get("name", stem)
        for flag in _FLAGS:
            if flag in settings:
                setattr(policy, flag, self.boolean("policy", flag))
        return policy, base

    def applyLimits(self, policy: SecurityPolicy) -> None:
        """
        Set the limits of the C{[limits]} section on C{policy}.
        """
        if not self.parser.has_section("limits"):
            return
        changes: dict[str, Any] = {}
        for key, text in self.parser["limits"].items():
            changes[key] = _parseLimit(key, text, self.where("limits", key))
        try:
            policy.limits = dataclasses.replace(policy.limits, **changes)
        except (TypeError, ValueError) as e:
            raise PolicyError(f"policy file {self.path}, [limits]: {e}") from e

    def applyTypes(self, policy: SecurityPolicy) -> None:
        """
        Allow the types of the C{[types]} section's C{allow} on C{policy}.
        """
        parser = self.parser
        if not (parser.has_section("types") and "allow" in parser["types"]):
            return
        for typeName in parser["types"]["allow"].replace(",", " ").split():
            if not policy.classic and typeName.encode("utf-8") in _IMPORTING_TYPES:
                raise PolicyError(
                    f"{self.where('types', 'allow')}: {typeName!r} makes jelly "
                    f"import what a peer names, which only a classic policy "
                    f"allows; remove it, or set base = classic in [policy]"
                )
            policy.allowTypes(typeName)


def _parseLimit(key: str, text: str, where: str) -> int | float | None:
    """
    Parse one C{[limits]} value: a whole number, or for timeouts a number
    of seconds or C{none}/C{off}.
    """
    text = text.strip()
    if key in _TIMEOUT_FIELDS:
        if text.lower() in ("none", "off"):
            return None
        try:
            return float(text)
        except ValueError:
            raise PolicyError(
                f"{where}: {text!r} is not a number of seconds (or 'none')"
            ) from None
    try:
        return int(text, 10)
    except ValueError:
        raise PolicyError(f"{where}: {text!r} is not a whole number") from None


def parseLimit(name: str, text: str) -> int | float | None:
    """
    Parse the text of one limit, as a policy file or C{twistd pbserver
    --limit NAME=VALUE} gives it: a whole number, or for timeouts a number
    of seconds or C{none}/C{off}.

    @raise PolicyError: if C{text} is not a valid value for C{name}.
    @since: pbext NEXT
    """
    return _parseLimit(name, text, f"limit {name}")
