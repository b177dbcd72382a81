# -*- test-case-name: tests.test_classiccopies -*-
"""
Classic copy classes on the plain fast paths.

A class copied the classic way (a L{pb.Copyable} sent, a L{pb.RemoteCopy}
registered with C{pb.setUnjellyableForClass} received) that keeps Twisted's
own methods is written and built by the plain paths (L{pbext._jelly.jellyPlain},
L{pbext._jelly.unjellyPlain} and the C decoder) as a typed registry entry is:
the same expression stock jelly makes or reads, without a jellier, an
unjellier, or a Python call per object.

The specs made here go into a connection's L{pbext._jelly.PlainTypes}
once the full jellier or unjellier has handled a copy of the class (so a
connection that never sees one costs nothing):

  - send: C{(wireName, checks)}: the instance's C{__dict__} is written as
    the state, as C{Copyable.jellyFor} writes C{getStateToCopy()};
  - receive: C{(cls, namespace, tag, checks, mode, fields)}: the state
    dictionary, if every key passes the copy-state check of
    L{pbext.copystate}, gives an instance made without C{__init__} its
    attributes, as C{RemoteCopy.setCopyableState} does (see
    L{newCopy}).

C{checks} are C{(name, value)} pairs: for each, what the class's MRO gives
for C{name} (L{None} for nothing).  They are read again for every object
(a cached type lookup in C), so that a method overridden, a class
re-registered, or a rule declared after the spec was made sends the object
back to the full paths; so is any state the check does not accept
outright, where the full unjellier then refuses (or accepts) it with its
reasons.  The key check itself is made for every object against the class
as it is then, never cached: a class attribute added at run time shadows
the key from then on.

Nothing here runs application code: building such a copy runs none of the
class's own code, which is why the C decoder may build them while it
parses, before the broker has accepted the message.

This is a private module.

@since: pbext NEXT
"""

from __future__ import annotations

import sys
import types
from typing import Any, Mapping

from twisted.python.reflect import qual
from twisted.spread import flavors

from pbext.copystate import _RULE_ATTRIBUTE, UNCHECKED, ruleOf
from pbext.security import _JELLY_NAMESPACE

__all__ = [
    "MODE_DEFAULT",
    "MODE_FIELDS",
    "MODE_UNCHECKED",
    "buildClassic",
    "classicState",
    "newCopy",
    "receiveSpec",
    "sendSpec",
    "unjelliesByState",
]

#: Receive modes: no state check (C{uncheckedState}, or a policy without
#: C{checkCopyState}); the default rule; declared fields (C{stateFields}).
MODE_UNCHECKED = 0
MODE_DEFAULT = 1
MODE_FIELDS = 2

_MISSING: Any = object()

#: Whether copies' keys are interned (see L{newCopy}): not on CPython
#: 3.12, whose interned strs live as long as the process.
_INTERN_KEYS = sys.version_info[:2] != (3, 12)

_OBJECT = object.__dict__

#: What a sent class must inherit unchanged: Twisted's own methods, and
#: plain attribute access.
_SEND_DEFAULTS: tuple[tuple[str, object], ...] = tuple(
    (name, flavors.Copyable.__dict__[name])
    for name in (
        "getStateToCopy",
        "getStateToCopyFor",
        "getTypeToCopy",
        "getTypeToCopyFor",
        "jellyFor",
    )
) + (
    ("__getattribute__", _OBJECT["__getattribute__"]),
    ("__class__", _OBJECT["__class__"]),
)

#: What a received class must inherit unchanged.
_RECEIVE_DEFAULTS: tuple[tuple[str, object], ...] = (
    ("unjellyFor", flavors.RemoteCopy.__dict__["unjellyFor"]),
    ("setCopyableState", flavors.RemoteCopy.__dict__["setCopyableState"]),
    ("postUnjelly", None),
    ("__new__", _OBJECT["__new__"]),
    ("__setattr__", _OBJECT["__setattr__"]),
)


def _lookup(cls: type, name: str) -> Any:
    """
    What C{cls}'s MRO gives for C{name}, read from the classes' own
    dictionaries (no descriptor or metaclass code runs), or L{None} if
    none defines it (as the C twin reads it: a check that expects nothing
    also accepts L{None}).
    """
    for klass in cls.__mro__:
        value = klass.__dict__.get(name, _MISSING)
        if value is not _MISSING:
            return value
    return None


def _checks(cls: type, defaults: tuple[tuple[str, object], ...]) -> Any:
    """
    The checks of C{cls} (see the module docstring), or L{None} if it does
    not inherit C{defaults}, or its instances have no ordinary C{__dict__}.
    """
    for name, expected in defaults:
        if _lookup(cls, name) is not expected:
            return None
    descriptor = _lookup(cls, "__dict__")
    if type(descriptor) is not types.GetSetDescriptorType:
        return None
    return (*defaults, ("__dict__", descriptor))


def _stillHolds(cls: type, checks: Any) -> bool:
    """
    Whether C{cls} still gives what C{checks} recorded.
    """
    for name, expected in checks:
        if _lookup(cls, name) is not expected:
            return False
    return True


#: What a received class whose C{unjellyFor} is Twisted's must inherit
#: unchanged, whatever its C{setCopyableState}.
_UNJELLY_DEFAULTS: tuple[tuple[str, object], ...] = (
    ("unjellyFor", flavors.RemoteCopy.__dict__["unjellyFor"]),
    ("__new__", _OBJECT["__new__"]),
    ("__getattribute__", _OBJECT["__getattribute__"]),
)


def unjelliesByState(cls: Any) -> bool:
    """
    Whether a blank instance of C{cls} (a L{pb.RemoteCopy} subclass, not
    a L{pb.RemoteCache}) unjellies its copy with Twisted's
    C{RemoteCopy.unjellyFor}, which for a broker hands the unjellied state
    to C{setCopyableState}: its own or Twisted's.
    """
    return (
        isinstance(cls, type)
        and issubclass(cls, flavors.RemoteCopy)
        and not issubclass(cls, flavors.RemoteCache)
        and _stillHolds(cls, _UNJELLY_DEFAULTS)
    )


def sendSpec(cls: type) -> tuple[bytes, Any] | None:
    """
    The send spec of a L{pb.Copyable} class that keeps Twisted's methods,
    or L{None} if it has none.
    """
    if not (isinstance(cls, type) and issubclass(cls, flavors.Copyable)):
        return None
    checks = _checks(cls, _SEND_DEFAULTS)
    if checks is None:
        return None
    try:
        wireName = qual(cls).encode("utf-8")
    except Exception:
        return None
    return (wireName, checks)


def receiveSpec(cls: Any, tag: bytes, checkState: bool) -> tuple[Any, ...] | None:
    """
    The receive spec of a L{pb.RemoteCopy} class registered for C{tag}
    that keeps Twisted's methods (not a L{pb.RemoteCache}), or L{None}.

    @param checkState: Whether the policy checks copy state.
    """
    if not (
        isinstance(cls, type)
        and issubclass(cls, flavors.RemoteCopy)
        and not issubclass(cls, flavors.RemoteCache)
    ):
        return None
    checks = _checks(cls, _RECEIVE_DEFAULTS)
    if checks is None:
        return None
    # The declared rule, read again with the other checks.
    checks = (*checks, (_RULE_ATTRIBUTE, _lookup(cls, _RULE_ATTRIBUTE)))
    rule = ruleOf(cls)
    fields = None
    if not checkState or rule is UNCHECKED:
        mode = MODE_UNCHECKED
    elif rule is None:
        mode = MODE_DEFAULT
    else:
        mode, fields = MODE_FIELDS, rule
    return (cls, _JELLY_NAMESPACE, tag, checks, mode, fields)


def classicState(obj: Any, spec: tuple[bytes, Any]) -> dict[str, Any] | None:
    """
    The state C{Copyable.jellyFor} would send for C{obj} (its
    C{__dict__}), or L{None} if its class no longer passes the spec's
    checks.
    """
    if not _stillHolds(type(obj), spec[1]):
        return None
    try:
        state = object.__getattribute__(obj, "__dict__")
    except Exception:
        return None
    return state if type(state) is dict else None


def _acceptsKeys(cls: type, state: dict[Any, Any], mode: int, fields: Any) -> bool:
    """
    Whether every key of C{state} passes the copy-state check outright
    (else the full unjellier decides).
    """
    if mode == MODE_UNCHECKED:
        # Bytes keys (a Python 2 peer's) are decoded by setCopyableState.
        return all(type(key) is str for key in state)
    for key in state:
        if type(key) is not str or not key.isidentifier() or key.startswith("__"):
            return False
        if mode == MODE_FIELDS and key not in fields:
            return False
        for klass in cls.__mro__:
            if key in klass.__dict__:
                return False
    return True


def buildClassic(spec: tuple[Any, ...], state: object) -> Any:
    """
    Build the copy C{RemoteCopy.unjellyFor} would build from C{state}, or
    return L{None} if the full unjellier must: the state is not a
    dictionary of accepted keys, or the class is no longer the one
    registered for its tag, or no longer passes the spec's checks.

    @param state: The unjellied state (a dictionary: it becomes the
        copy's C{__dict__}, as C{setCopyableState} makes a new one from
        it; it is fresh and nothing else holds it).
    """
    cls: type
    cls, namespace, tag, checks, mode, fields = spec
    if type(state) is not dict:
        return None
    registry: Mapping[bytes, Any] = namespace.get("unjellyableRegistry")
    if type(registry) is not dict or registry.get(tag) is not cls or cls is None:
        return None
    if not _stillHolds(cls, checks) or not _acceptsKeys(cls, state, mode, fields):
        return None
    try:
        return newCopy(cls, state, mode)
    except Exception:
        return None


def newCopy(cls: type, state: dict[str, Any], mode: int) -> Any:
    """
    A new instance of C{cls} (made without C{__init__}) with the state
    C{setCopyableState} gives it.

    Where the keys were checked (C{mode} is not L{MODE_UNCHECKED}), none
    names anything of the class, so they are set one by one as
    C{object.__setattr__} sets them: CPython then keeps them as it keeps
    any instance's attributes, in the key table the class's instances
    share (an instance made and then given a C{__dict__} uses up that
    table's room, and every copy made after would carry a dictionary of
    its own).  They are interned, as C{setattr} interns a name, and as
    the C decoder interns the short keys it reads: the table keeps the
    first copy's keys, and a key that is the very object the table holds
    is found by identity, not compared by text, for every copy after
    (but on CPython 3.12, whose interned strs live as long as the
    process: there a peer's keys are not made to outlive its copies).
    Unchecked keys may name anything (C{__class__} ...): the
    state becomes the C{__dict__}, as C{setCopyableState} makes it.
    """
    instance: Any = object.__new__(cls)
    if mode == MODE_UNCHECKED:
        instance.__dict__ = state
    else:
        setAttribute = object.__setattr__
        for key, value in state.items():
            setAttribute(instance, sys.intern(key) if _INTERN_KEYS else key, value)
    return instance
