"""
How pbext's L{Unjellier<pbext._jelly.Unjellier>} builds an object whose
type name no copyable registry knows: PB's own copy tags, classes and
factories in Twisted's global registries, the policy's instance classes,
and stock jelly's lookup under a classic policy.

An application's class (or function) found in Twisted's registries has
the state of its expression checked (L{pbext.copystate}) on the expression
itself before any of its code runs, unless the policy's C{checkCopyState}
is off or the class opted out; the code then runs with a view of the
unjellier that turns malformed input into L{MalformedJelly}, and any other
exception of it becomes a L{pbext.copystate.CopyHookError}.

The functions take the unjellier, which keeps what is learnt per
expression (C{_classicClasses}, C{_view}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, NoReturn, cast

from twisted.persisted.crefutil import NotKnown
from twisted.python.failure import Failure
from twisted.python.reflect import qual
from twisted.spread import flavors, pb
from twisted.spread.jelly import InsecureJelly

from pbext import _twisted
from pbext._classiccopies import buildClassic, receiveSpec, unjelliesByState
from pbext._expressions import (
    MALFORMED_ERRORS,
    PREBUILT,
    MalformedJelly,
    checkArity,
    checkRefID,
)
from pbext._twisted import createBlank, maybePostUnjelly, newInstance
from pbext.copystate import UNCHECKED, hookError, keyProblem, ruleOf, stateProblem
from pbext.security import _JELLY_NAMESPACE

if TYPE_CHECKING:
    from pbext._jelly import Unjellier

_MISSING = object()


class StateChecking:
    """
    The unjellier as seen by Twisted's own C{unjellyFor} of a PB class
    whose state is assigned wholesale (L{pb.CopiedFailure}): every value
    that implementation unjellies directly is its state, and is checked
    (ordinary attribute names only) before it is returned.
    """

    def __init__(self, unjellier: Unjellier, cls: type) -> None:
        self._unjellier = unjellier
        self._cls = cls

    def unjelly(self, obj: Any) -> Any:
        state = self._unjellier.unjelly(obj)
        problem = stateProblem(state, None, None)
        if problem is not None:
            raise InsecureJelly(
                f"refused state for {qual(self._cls)}: {problem} (a peer may only "
                f"set ordinary attributes)"
            )
        return state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._unjellier, name)


class ApplicationView:
    """
    The unjellier as application code (a class's own C{unjellyFor}, say)
    sees it.  What that code unjellies through it is peer input: the
    errors malformed input makes pbext's or Twisted's code raise become
    L{MalformedJelly} here, so that they are not taken for errors of the
    application's own code around the call.
    """

    __slots__ = ("_unjellier",)

    def __init__(self, unjellier: Unjellier) -> None:
        self._unjellier = unjellier

    def unjelly(self, obj: Any) -> Any:
        try:
            return self._unjellier.unjelly(obj)
        except (InsecureJelly, pb.Error):
            raise
        except MALFORMED_ERRORS as e:
            raise MalformedJelly(
                f"malformed jelly expression ({type(e).__name__}: {e})"
            ) from e

    def __getattr__(self, name: str) -> Any:
        return getattr(self._unjellier, name)


class ClassicClass:
    """
    What the L{Unjellier} knows about a class (or function) registered
    with Twisted's global registries, worked out once per expression.

    @ivar owner: The class the state's keys are compared with (L{None}
        for a function).
    @ivar name: Its qualified name, for messages.
    @ivar rule: Its declared rule (L{pbext.copystate.ruleOf}).
    @ivar index: Where its state is in its expression: 2 for a
        L{pb.RemoteCache} (C{[name, cacheID, state]}), else 1.
    @ivar needsDict: Whether only a dictionary will do (else empty state,
        such as L{None}, is accepted too).
    @ivar goodKeys: The received keys (as bytes) already found acceptable.
    """

    __slots__ = (
        "owner",
        "name",
        "rule",
        "index",
        "needsDict",
        "goodKeys",
        "learnt",
        "plain",
        "byState",
    )

    def __init__(self, regClass: Any, invoker: Any) -> None:
        isClass = isinstance(regClass, type)
        self.owner: type | None = regClass if isClass else None
        try:
            self.name = qual(regClass)
        except Exception:
            self.name = repr(regClass)[:200]
        self.rule = ruleOf(regClass)
        self.index = 1
        # Only pb.RemoteCopy's own setCopyableState turns empty state (None,
        # an empty list ...) into {}, so only its classes may get it, unless
        # Twisted's code assigns the state to __dict__ as it is (no broker).
        self.needsDict = True
        if isClass and issubclass(regClass, flavors.RemoteCopy):
            if issubclass(regClass, flavors.RemoteCache):
                self.index = 2
            self.needsDict = (
                invoker is None
                and not hasattr(regClass, "__setstate__")
                and regClass.unjellyFor
                in (flavors.RemoteCopy.unjellyFor, flavors.RemoteCache.unjellyFor)
            )
        self.goodKeys: set[bytes] = set()
        # Whether the broker's plain tables were told of it.
        self.learnt = False
        # Its receive spec, for plainSpec (_MISSING until worked out).
        self.plain: Any = _MISSING
        # Whether Twisted's unjellyFor gives its setCopyableState the state.
        self.byState = unjelliesByState(regClass)


def classicRegistry() -> Mapping[bytes, Any]:
    """
    Twisted's global copier registry, looked up on each use (tests and
    applications may replace it).  Its keys are bytes, whatever its
    annotation says.
    """
    return cast("Mapping[bytes, Any]", _JELLY_NAMESPACE["unjellyableRegistry"])


def classicFactories() -> Mapping[bytes, Any]:
    """
    Twisted's global copier factory registry, looked up on each use.
    """
    return cast("Mapping[bytes, Any]", _JELLY_NAMESPACE["unjellyableFactoryRegistry"])


# PB's own copy tags, always understood.
PB_UNJELLYABLES: dict[bytes, Any] = {
    b"remote": pb.RemoteReference,
    b"local": flavors.unjellyLocal,
    b"cached": flavors.unjellyCached,
    b"lcache": flavors.unjellyLCache,
    b"twisted.spread.pb.CopyableFailure": pb.CopiedFailure,
}


# What an empty container expression gives, as state of a classic copy.
EMPTY_STATES: dict[bytes, Any] = {
    b"list": [],
    b"tuple": (),
    b"set": frozenset(),
    b"frozenset": frozenset(),
}


# PB's reference tags: [tag, id], meaningful only to a broker.
PB_REFERENCE_TAGS = frozenset({b"remote", b"local", b"cached", b"lcache"})


def unjellyNamed(unjellier: Unjellier, tag: bytes, obj: list[Any]) -> Any:
    """
    Build the local object for an allowed, non-basic type name from
    PB's own copy tags, Twisted's registries or the policy's classes.
    """
    regClass = PB_UNJELLYABLES.get(tag)
    if regClass is None and unjellier.acceptClassicRegistry:
        regClass = classicRegistry().get(tag)
    if regClass is not None:
        return maybePostUnjelly(unjellier, callUnjellyable(unjellier, regClass, obj))
    if unjellier.acceptClassicRegistry:
        factory = classicFactories().get(tag)
        if factory is not None:
            checkArity(obj[1:], 1, tag.decode("utf-8", "replace"))
            state = unjellier.unjelly(obj[1])
            if unjellier.checkCopyState:
                checkState(state, classicClass(unjellier, factory))
            return maybePostUnjelly(unjellier, runApplication(factory, factory, state))
    cls = instanceClass(unjellier, tag)
    if cls is not None:
        checkArity(obj[1:], 1, qual(cls))
        return genericUnjelly(unjellier, cls, obj[1])
    raise InsecureJelly(
        f"no local type is registered for {tag!r}: register it with a "
        f"copyable registry (nothing is imported because a peer named it)"
    )


def unjellyClassic(unjellier: Unjellier, tag: bytes, obj: list[Any]) -> Any:
    """
    Stock jelly's lookup, with copy state checked if the policy asks.
    """
    if not unjellier.taster.isTypeAllowed(tag):
        raise InsecureJelly(tag)
    regClass = classicRegistry().get(tag)
    if regClass is not None:
        return maybePostUnjelly(unjellier, callUnjellyable(unjellier, regClass, obj))
    return _twisted.Unjellier.unjelly(unjellier, obj)


def callUnjellyable(unjellier: Unjellier, regClass: Any, obj: list[Any]) -> Any:
    """
    Call a registered class's C{unjellyFor} (or a registered function),
    as stock jelly does.  PB's own are trusted (the state of a copied
    failure is checked as it is unjellied); an application's have
    their state checked first (L{callApplication}).
    """
    tag = obj[0]
    if PB_UNJELLYABLES.get(tag) is not regClass:
        return callApplication(unjellier, regClass, obj)
    if tag in PB_REFERENCE_TAGS:
        checkArity(obj[1:], 1, tag.decode())
        if type(obj[1]) not in (int, bytes, str):
            raise MalformedJelly(
                f"object IDs are integers or names, not {type(obj[1]).__name__}"
            )
        if unjellier.invoker is None:
            raise InsecureJelly(
                f"{tag.decode()!r} expressions need a broker to refer to"
            )
    instance = createBlank(regClass)
    method: Any = getattr(instance, "unjellyFor", regClass)
    target: Any = unjellier
    if unjellier.checkCopyState and regClass is pb.CopiedFailure:
        target = StateChecking(unjellier, regClass)
    return method(target, obj)


def classicClass(unjellier: Unjellier, regClass: Any) -> ClassicClass:
    """
    What is known about C{regClass}, worked out once per expression.
    """
    info = unjellier._classicClasses.get(regClass)
    if info is None:
        info = unjellier._classicClasses[regClass] = ClassicClass(
            regClass, unjellier.invoker
        )
    return info


def callApplication(unjellier: Unjellier, regClass: Any, obj: list[Any]) -> Any:
    """
    Build an object with an application's class (or function)
    registered with C{pb.setUnjellyableForClass}.

    Unless the policy or the class says otherwise, the expression must
    be a copy's (C{[name, state]}, or C{[name, cacheID, state]} for a
    L{pb.RemoteCache}) and its state must pass
    L{pbext.copystate.stateProblem}, checked on the expression itunjellier,
    before any of the class's code runs: its C{unjellyFor} then
    unjellies exactly what was checked.  An exception of that code is a
    L{pbext.copystate.CopyHookError}.

    @raise InsecureJelly: If the state is refused.
    """
    info = classicClass(unjellier, regClass)
    if not info.learnt:
        info.learnt = True
        unjellier._learnClassic(obj[0], regClass)
    if unjellier.checkCopyState and info.rule is not UNCHECKED:
        index = info.index
        if len(obj) != index + 1:
            shape = "[name, cacheID, state]" if index == 2 else "[name, state]"
            raise InsecureJelly(
                f"refused a {info.name}: a copy of it is {shape}, not "
                f"{len(obj)} elements (a class that reads a wire format of "
                f"its own must be declared with pbext.copystate.uncheckedState)"
            )
        if index == 2 and type(obj[1]) is not int:
            raise MalformedJelly("cache IDs are integers")
        checkStateExpression(unjellier, obj[index], info)
    view = unjellier._view
    if view is None:
        view = unjellier._view = ApplicationView(unjellier)
    # What stock jelly does with a registered class or function, with
    # _runApplication's handling of errors (inline: once per copy).
    try:
        spec = plainSpec(unjellier, info, regClass, obj[0])
        if spec is not None:
            return buildPlainly(view, spec, regClass, obj)
        instance = createBlank(regClass)
        if info.byState and unjellier.invoker is not None:
            # What RemoteCopy.unjellyFor does for a broker, its own
            # setCopyableState given the state.
            instance.setCopyableState(copyState(view, obj[1]))
            return instance
        method = getattr(instance, "unjellyFor", regClass)
        return method(view, obj)
    except (InsecureJelly, pb.Error):
        raise
    except Exception as e:
        raise hookError(regClass, Failure()) from e


def plainSpec(
    unjellier: Unjellier, info: ClassicClass, regClass: Any, tag: bytes
) -> tuple[Any, ...] | None:
    """
    The receive spec (L{pbext._classiccopies.receiveSpec}) of
    C{regClass}, registered for C{tag}, if it keeps Twisted's methods
    and this unjellier builds its copies for a broker (C{unjellyFor} then
    unjellies the state and hands it to C{setCopyableState}); worked out
    once per expression.
    """
    spec = info.plain
    if spec is _MISSING:
        spec = None
        if unjellier.invoker is not None and type(tag) is bytes:
            spec = receiveSpec(regClass, tag, unjellier.checkCopyState)
        info.plain = spec
    return spec


def copyState(view: ApplicationView, expression: Any) -> Any:
    """
    The value of a classic copy's state C{expression}, as C{unjellyFor}
    unjellies it through C{view}: by the plain path where it can (see
    L{Unjellier._plainState}), without a call per node.
    """
    state = view._unjellier._plainState(expression, _MISSING)
    if state is _MISSING:
        state = view.unjelly(expression)
    return state


def buildPlainly(
    view: ApplicationView, spec: tuple[Any, ...], regClass: Any, obj: list[Any]
) -> Any:
    """
    What Twisted's C{RemoteCopy.unjellyFor} builds for a broker from the
    copy expression C{obj} of a class keeping Twisted's methods: its
    state unjellied, then set by C{setCopyableState}.

    A state the plain paths accept outright is set as they set it
    (L{pbext._classiccopies.buildClassic}): CPython then keeps the
    attributes in the key table the class's instances share, which
    copies made by Twisted's code (an instance made, then given a
    C{__dict__}) would use up for every copy received after.  Any other
    state is set by Twisted's C{setCopyableState} itself.
    """
    state = copyState(view, obj[1])
    built = buildClassic(spec, state)
    if built is None:
        built = createBlank(regClass)
        built.setCopyableState(state)
    return built


def runApplication(owner: Any, function: Callable[..., Any], *args: Any) -> Any:
    """
    Run application code that builds an object of C{owner}.

    @raise pbext.copystate.CopyHookError: If it raises anything but an
        L{InsecureJelly} or a L{pb.Error} (refusals, and errors of
        nested copies, which pass unchanged).
    """
    try:
        return function(*args)
    except (InsecureJelly, pb.Error):
        raise
    except Exception as e:
        raise hookError(owner, Failure()) from e


def refuseState(info: ClassicClass, problem: str) -> NoReturn:
    raise InsecureJelly(f"refused state for {info.name}: {problem}")


def checkState(state: Any, info: ClassicClass) -> None:
    """
    Refuse unjellied C{state} for the class C{info} describes, unless
    it passes L{pbext.copystate.stateProblem}.
    """
    problem = stateProblem(state, info.owner, info.rule, info.needsDict)
    if problem is not None:
        refuseState(info, problem)


def checkStateExpression(
    unjellier: Unjellier, expression: Any, info: ClassicClass
) -> None:
    """
    Refuse the state expression of a copy for the class C{info}
    describes unless the state it gives passes
    L{pbext.copystate.stateProblem}: read from the expression itunjellier,
    unjellying nothing (only a reference to a finished value is looked
    up).

    @raise InsecureJelly: If it is refused.
    @raise MalformedJelly: If it is malformed.
    """
    for _ in range(8):
        if type(expression) is not list or not expression:
            break
        tag = expression[0]
        if tag is PREBUILT and len(expression) == 2:
            checkState(expression[1], info)
            return
        if tag != b"reference":
            break
        checkArity(expression[1:], 2, "reference")
        checkRefID(expression[1])
        expression = expression[2]
    if type(expression) is not list:
        checkState(expression, info)
        return
    if not expression:
        raise MalformedJelly("empty jelly expression")
    tag = expression[0]
    if tag == b"dictionary":
        checkStateKeys(expression, info)
        return
    if tag == b"dereference":
        checkArity(expression[1:], 1, "dereference")
        checkRefID(expression[1])
        value = unjellier.references.get(expression[1], _MISSING)
        if isinstance(value, NotKnown) and value.resolved:
            value = value.resolvedObject
        if value is _MISSING or isinstance(value, NotKnown):
            refuseState(info, "state refers to an object not yet complete")
        checkState(value, info)
        return
    if tag == b"None" and len(expression) == 1:
        checkState(None, info)
        return
    empty = EMPTY_STATES.get(tag) if type(tag) is bytes else None
    if empty is not None and len(expression) == 1:
        checkState(empty, info)
        return
    if type(tag) is bytes:
        kind = tag.decode("utf-8", "replace")[:40]
    else:
        kind = type(tag).__name__
    refuseState(info, f"state is a {kind!r} expression, not a dictionary")


def checkStateKeys(expression: list[Any], info: ClassicClass) -> None:
    """
    Check the keys of a state's C{dictionary} expression: each must be
    a bytes atom or a C{unicode} expression, and pass
    L{pbext.copystate.keyProblem}.
    """
    good = info.goodKeys
    for pair in expression[1:]:
        if type(pair) is not list or len(pair) != 2:
            raise MalformedJelly("dictionary items are [key, value] lists")
        key = pair[0]
        if type(key) is list:
            if len(key) == 2 and key[0] == b"unicode" and type(key[1]) is bytes:
                key = key[1]
            else:
                refuseState(info, "a state key is not a string")
        elif type(key) is not bytes:
            refuseState(
                info, f"state key {key!r} is a {type(key).__name__}, not a string"
            )
        if key in good:
            continue
        problem = keyProblem(key, info.owner, info.rule)
        if problem is not None:
            refuseState(info, problem)
        if len(good) < 1024:
            good.add(key)


def instanceClass(unjellier: Unjellier, tag: bytes) -> type | None:
    """
    The class the policy (or a stock taster's C{allowInstancesOf})
    allows instances of under the name C{tag}.
    """
    finder = getattr(unjellier.policy, "instanceClassFor", None)
    if finder is not None:
        return finder(tag)
    for klass in getattr(unjellier.taster, "allowedClasses", {}):
        if isinstance(klass, type) and qual(klass).encode("utf-8") == tag:
            return klass
    return None


def genericUnjelly(unjellier: Unjellier, cls: type, state: Any) -> Any:
    state = unjellier.unjelly(state)
    if unjellier.checkCopyState:
        checkState(state, classicClass(unjellier, cls))
    return maybePostUnjelly(unjellier, runApplication(cls, newInstance, cls, state))
