# -*- test-case-name: tests.test_copystate -*-
"""
The state a peer may give a classic copy class, and what happens when the
application's own code fails while building a copy.

Classic PB rebuilds a received copy with the class registered for its type
name (C{pb.setUnjellyableForClass}): usually a L{pb.RemoteCopy} whose
C{setCopyableState} assigns the received dictionary to C{__dict__}, or
that does its own thing with it and calls C{super().setCopyableState}.
Either way, a peer that sends C{__class__}, C{__dict__}, a key named like a
method (C{getStateToCopy}) or a class-level flag (C{isAdmin}) changes what
the application's object is or does.

Under pbext's C{default} and C{strict} policies (C{checkCopyState}), the
state received for every such class is checked I{before} any of its code
(C{setCopyableState}, C{setStateFor}, C{unjellyFor}, a copy factory,
C{__setstate__}) sees it, whatever the class overrides:

  - it must be a dictionary (a L{pb.RemoteCopy} may also get empty state,
    such as L{None}), whose keys are identifiers, not C{__dunder__} names;
  - and no key may name an attribute of the class (a method, a property,
    a slot or a class-level value), unless the class declares the fields
    it accepts with L{stateFields}: then every key must be one of those.

A class that needs other state (a list, keys of its own making, its own
wire format) opts out with L{uncheckedState}.  The declarations are
inherited by subclasses, which may declare their own.

When the application's code itself fails while a copy is built (an
C{AttributeError} in its C{setCopyableState}, say), the error is a
L{CopyHookError}: the broker logs it, with its traceback, as a bug of the
application (at most once a minute per class and connection), and the
call that carried the copy fails with that error.  Only input that is
refused or malformed is blamed on the peer.  A hook refuses state on
purpose by raising L{twisted.spread.jelly.InsecureJelly} (then it is a
policy violation of the peer) or a L{pb.Error}.

@since: pbext NEXT
"""

from __future__ import annotations

import types
from typing import Callable, Final, Iterable, TypeVar

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.reflect import qual
from twisted.spread import pb

__all__ = [
    "UNCHECKED",
    "CopyHookError",
    "HookErrorLog",
    "hookError",
    "keyProblem",
    "ruleOf",
    "stateFields",
    "stateProblem",
    "uncheckedState",
]

_T = TypeVar("_T")

_log = Logger()

#: The attribute L{stateFields} and L{uncheckedState} set on what they
#: decorate.
_RULE_ATTRIBUTE = "_pbextStateRule"


class _Unchecked:
    """
    The rule of a class declared with L{uncheckedState}.
    """

    def __repr__(self) -> str:
        return "<unchecked state>"


#: The rule of a class whose state is not checked (L{uncheckedState}).
#: @since: pbext NEXT
UNCHECKED: Final = _Unchecked()


class CopyHookError(pb.Error):
    """
    Application code run while a received copy was built (the class's
    C{__new__}, C{unjellyFor}, C{setCopyableState}, C{setStateFor},
    C{__setstate__} or C{postUnjelly}, or a copy factory) raised an
    exception: a bug of the receiving application, not bad input from the
    peer.

    The receiving broker logs the original exception with its traceback
    (rate-limited); the peer gets this error, which names the class, the
    hook and the exception's type but not its text.

    @ivar className: The fully qualified name of the class (or factory).
    @ivar hook: The name of the function that raised, as far as it is
        known (the innermost frame of the traceback).
    @ivar errorType: The qualified name of the original exception's type.
    @ivar failure: The original exception as a L{Failure}, with its
        traceback (local only: never sent).

    @since: pbext NEXT
    """

    def __init__(
        self, className: str, hook: str, errorType: str, failure: Failure | None = None
    ) -> None:
        super().__init__(
            f"the receiving application failed to build a {className}: its "
            f"{hook} raised {errorType} (a bug of the receiving application, "
            f"logged there)"
        )
        self.className = className
        self.hook = hook
        self.errorType = errorType
        self.failure = failure

    def __reduce__(self) -> tuple[type[CopyHookError], tuple[str, str, str]]:
        return (type(self), (self.className, self.hook, self.errorType))


def hookError(
    owner: object, failure: Failure, hook: str | None = None
) -> CopyHookError:
    """
    The L{CopyHookError} for C{failure}, raised by application code while
    building a copy of C{owner}.

    @param owner: The class (or factory function) being used.
    @param failure: The application's exception, with its traceback.
    @param hook: The hook's name; by default the function of the innermost
        frame of the traceback.

    @since: pbext NEXT
    """
    if hook is None:
        hook = "code"
        tb = failure.getTracebackObject()
        while tb is not None:
            hook = tb.tb_frame.f_code.co_name
            tb = tb.tb_next
    try:
        name = qual(owner)  # type: ignore[arg-type]  # qual accepts any class; its stub says type
    except Exception:
        name = repr(owner)[:200]
    kind = failure.type
    exception = "Exception" if kind is None else qual(kind)
    return CopyHookError(name, hook, exception, failure)


def _checkFieldNames(names: Iterable[object]) -> frozenset[str]:
    """
    Check the names given to L{stateFields}.

    @raise TypeError: If one is not a C{str}.
    @raise ValueError: If one is not an identifier, or a dunder name.
    """
    checked = set()
    for name in names:
        if not isinstance(name, str):
            raise TypeError(
                f"field name {name!r} is a {type(name).__name__}; give each "
                f"field name as a str"
            )
        if not name.isidentifier():
            raise ValueError(
                f"field name {name!r} is not a Python identifier; give the "
                f"attribute name as it is spelt in the class"
            )
        if name.startswith("__"):
            raise ValueError(
                f"field name {name!r} is a special (dunder) name, which a peer "
                f"must never set; leave it out of the fields"
            )
        checked.add(name)
    return frozenset(checked)


def _classAttribute(cls: type, name: str) -> tuple[type, object] | None:
    """
    The class in C{cls}'s MRO that defines C{name}, and the value there,
    read from the classes' own dictionaries (no descriptor or metaclass
    code runs); or L{None}.
    """
    for klass in cls.__mro__:
        namespace = klass.__dict__
        if name in namespace:
            return klass, namespace[name]
    return None


def _kindOf(value: object) -> str:
    """
    What a class attribute is, in words: C{"method"}, C{"property"} or
    C{"class attribute"}.
    """
    if isinstance(
        value,
        (
            types.FunctionType,
            types.BuiltinFunctionType,
            types.WrapperDescriptorType,
            types.MethodDescriptorType,
            staticmethod,
            classmethod,
        ),
    ):
        return "method"
    if hasattr(type(value), "__get__"):
        # property, cached_property, a slot: a key in __dict__ would
        # change what it gives (or fail to be set).
        return "property"
    return "class attribute"


def stateFields(*names: str) -> Callable[[_T], _T]:
    """
    Declare the state fields a classic copy class (or a copy factory)
    accepts from a peer: received state must then be a dictionary whose
    keys are among C{names}; any of them may be absent.

    A declared field may have a class-level default (C{isAdmin = False}):
    declaring it is what lets a peer set it.  A field may never name a
    method or a property of the class (checked here, and again on receipt,
    for subclasses that add one)::

        from pbext.copystate import stateFields

        @stateFields("name", "email", "isAdmin")
        class RemoteContact(pb.RemoteCopy):
            isAdmin = False

    Subclasses inherit the declaration unless they declare their own.
    Only pbext's policies with C{checkCopyState} read it.

    @param names: The accepted keys: identifiers, not dunder names.

    @raise TypeError: If a name is not a C{str}.
    @raise ValueError: If a name is not an identifier, is a dunder name,
        or (when decorating a class) names one of its methods or
        properties.

    @since: pbext NEXT
    """
    fields = _checkFieldNames(names)

    def declare(target: _T) -> _T:
        if isinstance(target, type):
            for name in sorted(fields):
                found = _classAttribute(target, name)
                if found is not None and _kindOf(found[1]) != "class attribute":
                    raise ValueError(
                        f"{qual(target)}: field {name!r} would let a peer replace "
                        f"the {_kindOf(found[1])} {qual(found[0])}.{name}; leave "
                        f"it out of the fields, or rename the attribute"
                    )
        setattr(target, _RULE_ATTRIBUTE, fields)
        return target

    return declare


def uncheckedState(target: _T) -> _T:
    """
    Opt a classic copy class (or copy factory) out of pbext's state check:
    whatever state the peer sends reaches its code unchecked, as in
    classic PB.

    For classes that read state that is not a dictionary of attributes, or
    their own wire format in C{unjellyFor}; they must check it themselves::

        from pbext.copystate import uncheckedState

        @uncheckedState
        class RemoteVector(pb.RemoteCopy):
            def setCopyableState(self, state):
                x, y = state  # a tuple: checked here
                ...

    Subclasses inherit it unless they declare L{stateFields}.

    @since: pbext NEXT
    """
    setattr(target, _RULE_ATTRIBUTE, UNCHECKED)
    return target


def ruleOf(owner: object) -> _Unchecked | frozenset[str] | None:
    """
    The declared rule of a class or factory: L{UNCHECKED}, a frozenset of
    field names, or L{None} (the default rule).

    @since: pbext NEXT
    """
    if isinstance(owner, type):
        found = _classAttribute(owner, _RULE_ATTRIBUTE)
        rule = None if found is None else found[1]
    else:
        rule = getattr(owner, "__dict__", {}).get(_RULE_ATTRIBUTE)
    if rule is UNCHECKED or isinstance(rule, frozenset):
        return rule
    return None


def keyProblem(
    key: object, owner: type | None, rule: _Unchecked | frozenset[str] | None
) -> str | None:
    """
    Why C{key} may not be a key of the state received for C{owner} under
    C{rule} (see L{ruleOf}), or L{None} if it may.

    @param key: The key as received: C{str}, or UTF-8 C{bytes}.
    @param owner: The class the state is for, or L{None} (a factory
        function: no attribute to compare with).
    @param rule: Under L{UNCHECKED} every key may, as every state may
        under it for L{stateProblem}.

    @since: pbext NEXT
    """
    if isinstance(rule, _Unchecked):
        return None
    text = key
    if isinstance(key, bytes):
        try:
            text = key.decode("utf-8")
        except UnicodeDecodeError:
            return f"state key {key!r} is not UTF-8"
    if not isinstance(text, str):
        return f"state key {key!r} is a {type(key).__name__}, not a string"
    if not text.isidentifier():
        return f"state key {text!r} is not an identifier"
    if text.startswith("__"):
        return f"state key {text!r} names a special attribute"
    if rule is not None and text not in rule:
        return (
            f"state key {text!r} is not a declared field "
            f"(declared: {', '.join(sorted(rule)) or 'none'})"
        )
    if owner is not None:
        found = _classAttribute(owner, text)
        if found is not None and (
            rule is None or _kindOf(found[1]) != "class attribute"
        ):
            # A declared field may have a class-level default, but never
            # hide a method or property (a subclass may have added one).
            advice = (
                "a declared field may not name a method or property"
                if rule is not None
                else "a class that accepts it declares it with "
                "pbext.copystate.stateFields"
            )
            return (
                f"state key {text!r} would hide the {_kindOf(found[1])} "
                f"{qual(found[0])}.{text}; {advice}"
            )
    return None


def stateProblem(
    state: object,
    owner: type | None,
    rule: _Unchecked | frozenset[str] | None,
    needsDict: bool = False,
) -> str | None:
    """
    Why C{state}, an unjellied value, may not be given to C{owner}'s code
    under C{rule}, or L{None} if it may: it must be a dictionary whose keys
    pass L{keyProblem}, or (unless C{needsDict}) L{None} or an empty value.

    @since: pbext NEXT
    """
    if rule is UNCHECKED:
        return None
    if type(state) is not dict:
        if not needsDict and (
            state is None
            or (
                type(state) in (list, tuple, set, frozenset, bytes, str, int, float)
                and not state
            )
        ):
            return None
        return f"state is a {type(state).__name__}, not a dictionary"
    for key in state:
        problem = keyProblem(key, owner, rule)
        if problem is not None:
            return problem
    return None


class HookErrorLog:
    """
    Logs L{CopyHookError}s of one connection as application errors, with
    the application's traceback: at most one a minute for each class; the
    others are counted, and the count is given with the next one logged.

    Its memory is one entry per class that failed, so a peer cannot grow
    it beyond the classes the application registered.

    @since: pbext NEXT
    """

    #: Seconds between two tracebacks logged for one class.
    interval = 60.0

    def __init__(self, clock: Callable[[], float]) -> None:
        """
        @param clock: Gives the current time in seconds.
        """
        self._clock = clock
        self._lastLogged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def report(self, error: CopyHookError, peer: str) -> bool:
        """
        Log C{error} (received from C{peer}) unless one for its class was
        logged less than L{interval} seconds ago.

        @return: Whether it was logged.
        """
        now = self._clock()
        name = error.className
        last = self._lastLogged.get(name)
        if last is not None and now - last < self.interval:
            self._suppressed[name] = self._suppressed.get(name, 0) + 1
            return False
        self._lastLogged[name] = now
        suppressed = self._suppressed.pop(name, 0)
        failure = error.failure
        if failure is None:
            failure = Failure(error)
        _log.failure(
            "pbext: application error while building a {className} received "
            "from {peer}: its {hook} raised {errorType}",
            failure,
            className=name,
            hook=error.hook,
            errorType=error.errorType,
            peer=peer,
            suppressed=suppressed,
            pbextEvent="applicationError",
        )
        return True
