# -*- test-case-name: tests.test_typecheck -*-
"""
Run-time checks of values against type annotations, for remote calls and
typed copyables.

A peer can send any jelly value as any argument.  Classic PB hands it to the
remote method as it is, so a method declared C{remote_move(self, dx: int)}
may receive a string, a list, or a copy of some object, and fail later
somewhere far from the cause.  This module turns annotations into checks:

    >>> from pbext.typecheck import checkValue
    >>> checkValue([1, 2, "3"], list[int], "arg 'points'")
    Traceback (most recent call last):
    ...
    pbext.typecheck.TypeCheckError: arg 'points'[2]: expected int, got str

L{checkArguments} and L{checkReturn} apply the annotations of a function to
one call.  The pbext broker calls them around a C{remote_}, C{view_},
C{perspective_} or C{observe_} method only when the program asked for it:
the method or its class is marked with L{typed}, or the factory was built
with C{typedCalls=True}.  The annotations of existing programs were
written for readers and type checkers, not as a contract for what arrives
over the wire, so a method nobody marked is called exactly as classic PB
calls it.  Unannotated methods and parameters are never checked.

An annotation this module cannot check (C{Callable}, a non-runtime
C{Protocol}) or cannot resolve (a name imported only under
C{TYPE_CHECKING}) is skipped: that parameter accepts anything, and one
warning event (C{pbextEvent} C{"annotationSkipped"}) is logged for the
method, the first time it is checked.  It is never an error on the call.

Checks run on every call, so each annotation is compiled once into a small
checker function, and the checkers of each function are compiled once too;
checking a value is then a few function calls, with no inspection of the
annotation.  The memo tables that hold them are caches of pure functions of
the annotations: nothing in them changes what a check decides.

Rules, chosen to match what jelly can deliver:

  - C{bool} accepts only C{True} and C{False}; C{int} accepts integers but
    I{not} booleans (jelly keeps the two apart, so a boolean where an
    integer is declared means the peer sent the wrong thing); C{float}
    accepts C{int} as well, as Python's typing rules do.
  - C{str}, C{bytes}, L{decimal.Decimal}, L{datetime.datetime},
    L{datetime.date}, L{datetime.time}, L{datetime.timedelta} and every
    other class are checked with C{isinstance}, so a registered copyable
    type is accepted when the received object is an instance of it.
  - C{list[T]}, C{tuple[T, ...]}, fixed C{tuple[A, B]}, C{set[T]},
    C{frozenset[T]}, C{dict[K, V]} (and their C{typing} spellings and the
    C{collections.abc} C{Sequence}, C{Mapping} and C{Set} abstractions) check
    the container and every element.
  - C{Optional[T]}, C{Union[...]} and C{X | Y} accept a value that any member
    accepts; C{Literal[...]} accepts one of its values, of the same type
    (C{Literal[1]} refuses C{True}).
  - A L{twisted.spread.pb.Referenceable} subclass accepts an instance of
    that class I{or} a L{twisted.spread.pb.RemoteReference}: a referenceable
    sent by the peer arrives as a remote reference, and one of our own
    referenceables sent back to us arrives as itself.
  - C{Any} and C{object} accept everything; C{Annotated[T, ...]},
    C{NewType} and C{Final[T]} are checked as C{T}; a C{TypeVar} is checked
    against its bound or constraints.

@since: pbext NEXT
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
import weakref
from itertools import repeat
from typing import (
    Any,
    Callable,
    Iterable,
    Literal,
    Optional,
    Union,
    get_args,
    get_origin,
)

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.spread import flavors, pb

__all__ = [
    "TypeCheckError",
    "TypedCallError",
    "TypedReturnError",
    "checkArguments",
    "checkReturn",
    "checkValue",
    "describeAnnotation",
    "isTyped",
    "typed",
]

_log = Logger()

_T = typing.TypeVar("_T")


_Mismatch = tuple[str, str, str]
"""
What a checker reports when a value does not match: the path below the
checked value (C{""} for the value itself, C{"[3]"} for its fourth element),
the expected type as text, and what was found instead.
"""

_Checker = Callable[[object], Optional[_Mismatch]]


class TypeCheckError(TypeError):
    """
    A value does not match its annotation.

    @ivar path: where the mismatch is, for example C{"arg 'points'[3]"}.
    @ivar expected: the expected type, as text.
    @ivar got: what was found instead, as text.

    @since: pbext NEXT
    """

    def __init__(self, path: str, expected: str, got: str) -> None:
        super().__init__(f"{path}: expected {expected}, got {got}")
        self.path = path
        self.expected = expected
        self.got = got


class TypedCallError(TypeCheckError, pb.Error):
    """
    A peer called a remote method with arguments that do not match the
    method's annotations.

    It is a L{twisted.spread.pb.Error}: the broker reports it to the caller
    as the caller's mistake, without logging a server-side traceback.

    @ivar function: the qualified name of the called method.

    @since: pbext NEXT
    """

    def __init__(self, function: str, path: str, expected: str, got: str) -> None:
        TypeCheckError.__init__(self, path, expected, got)
        self.args = (f"{function}: {self.args[0]}",)
        self.function = function


class TypedReturnError(TypeCheckError):
    """
    A remote method returned a value that does not match its return
    annotation.

    Unlike L{TypedCallError} this is a fault of the local method, so it is
    an ordinary exception: the broker logs it and the caller receives a
    failure.

    @ivar function: the qualified name of the method.

    @since: pbext NEXT
    """

    def __init__(self, function: str, path: str, expected: str, got: str) -> None:
        TypeCheckError.__init__(self, path, expected, got)
        self.args = (f"{function}: {self.args[0]}",)
        self.function = function


def checkValue(value: object, annotation: object, path: str) -> None:
    """
    Check C{value} against C{annotation}.

    @param value: the value to check.
    @param annotation: a type annotation (already evaluated, not a string).
    @param path: how to name the value in the error, for example
        C{"arg 'points'"}; the position of a mismatching element is appended.

    @raise TypeCheckError: if C{value} does not match.
    @raise TypeError: if C{annotation} is something this module cannot check
        (a string, a C{Callable}, a non-runtime C{Protocol}, ...).
    """
    mismatch = _compile(annotation)(value)
    if mismatch is not None:
        raise TypeCheckError(path + mismatch[0], mismatch[1], mismatch[2])


def describeAnnotation(annotation: object) -> str:
    """
    Spell an annotation the way error messages do: C{int}, C{list[Point]},
    C{int | None}.

    @param annotation: a type annotation.
    @return: the text.
    """
    if annotation is None or annotation is type(None):
        return "None"
    if annotation is Any:
        return "Any"
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Union or origin is types.UnionType:
        return " | ".join(describeAnnotation(a) for a in args)
    if origin is Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is typing.Annotated:
        return describeAnnotation(args[0])
    if origin is not None:
        name = getattr(origin, "__name__", repr(origin))
        if not args:
            return name
        parts = ["..." if a is Ellipsis else describeAnnotation(a) for a in args]
        return f"{name}[{', '.join(parts)}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return repr(annotation)


def _typeName(value: object) -> str:
    """
    Name the type of a received value for an error message.
    """
    if value is None:
        return "None"
    return type(value).__name__


# Compilation.  Every checker takes one value and returns None or a
# _Mismatch; _accept is recognised by identity so that containers of Any do
# not iterate at all.


def _accept(value: object) -> None:
    return None


_compiled: dict[object, _Checker] = {}


def _compile(annotation: object) -> _Checker:
    """
    Return the checker for an annotation, compiling it on first use.

    @raise TypeError: if the annotation cannot be checked.
    """
    try:
        return _compiled[annotation]
    except KeyError:
        pass
    except TypeError:
        # An unhashable annotation (e.g. Literal of a list): not memoised.
        return _build(annotation)
    checker = _build(annotation)
    _compiled[annotation] = checker
    return checker


#: The classes each checker made by L{_exactTypeChecker} accepts and
#: refuses, so that a container of them can check its elements in bulk.
_exactTypes: weakref.WeakKeyDictionary[
    _Checker, tuple[tuple[type, ...], tuple[type, ...]]
] = weakref.WeakKeyDictionary()


def _exactTypeChecker(
    accepted: tuple[type, ...], refused: tuple[type, ...], expected: str
) -> _Checker:
    """
    A checker for a plain class: C{isinstance(value, accepted)} and not an
    instance of C{refused} (used to keep C{bool} out of C{int}).
    """
    check = _makeExactTypeChecker(accepted, refused, expected)
    _exactTypes[check] = (accepted, refused)
    return check


def _makeExactTypeChecker(
    accepted: tuple[type, ...], refused: tuple[type, ...], expected: str
) -> _Checker:
    if refused:

        def check(value: object) -> _Mismatch | None:
            if isinstance(value, accepted) and not isinstance(value, refused):
                return None
            return ("", expected, _typeName(value))

    else:

        def check(value: object) -> _Mismatch | None:
            if isinstance(value, accepted):
                return None
            return ("", expected, _typeName(value))

    return check


def _checkNone(value: object) -> _Mismatch | None:
    if value is None:
        return None
    return ("", "None", _typeName(value))


def _checkBool(value: object) -> _Mismatch | None:
    if value is True or value is False:
        return None
    return ("", "bool", _typeName(value))


_special: dict[object, _Checker] = {
    bool: _checkBool,
    int: _exactTypeChecker((int,), (bool,), "int"),
    float: _exactTypeChecker((int, float), (bool,), "float"),
}


def _classChecker(cls: type) -> _Checker:
    """
    A checker for a class annotation.
    """
    if cls in _special:
        return _special[cls]
    if getattr(cls, "_is_protocol", False) and not getattr(
        cls, "_is_runtime_protocol", False
    ):
        raise TypeError(
            f"cannot check values against {cls.__qualname__}: it is a "
            f"Protocol that is not runtime-checkable; decorate it with "
            f"@typing.runtime_checkable"
        )
    if cls is pb.RemoteReference:
        return _exactTypeChecker((pb.RemoteReference,), (), "RemoteReference")
    if issubclass(cls, flavors.Referenceable):
        return _exactTypeChecker(
            (cls, pb.RemoteReference), (), f"{cls.__name__} or RemoteReference"
        )
    return _exactTypeChecker((cls,), (), cls.__name__)


def _unionChecker(members: tuple[object, ...], expected: str) -> _Checker:
    """
    A checker for C{Union[...]}: the first member that accepts wins.  When
    the value fails, the deepest mismatch is reported if exactly one member
    got past the container level (e.g. C{list[int] | None} with C{[1, "a"]}
    reports C{[1]: expected int}), else the union as a whole.
    """
    checkers = tuple(_compile(m) for m in members)
    if _accept in checkers:
        return _accept

    def check(value: object) -> _Mismatch | None:
        deep = []
        for checker in checkers:
            mismatch = checker(value)
            if mismatch is None:
                return None
            if mismatch[0]:
                deep.append(mismatch)
        if len(deep) == 1:
            return deep[0]
        return ("", expected, _typeName(value))

    return check


def _literalChecker(values: tuple[object, ...], expected: str) -> _Checker:
    """
    A checker for C{Literal[...]}: equal value I{and} same type.
    """
    allowed = tuple((type(v), v) for v in values)

    def check(value: object) -> _Mismatch | None:
        kind = type(value)
        for allowedType, allowedValue in allowed:
            if kind is allowedType and value == allowedValue:
                return None
        got = repr(value)
        if len(got) > 40:
            got = got[:37] + "..."
        return ("", expected, got)

    return check


def _iterableChecker(
    container: type | tuple[type, ...], item: object, expected: str, indexed: bool
) -> _Checker:
    """
    A checker for a homogeneous container: list, set, variable tuple, ...

    @param indexed: whether elements are named by index (C{"[3]"}) in
        paths; set elements have no index and are named C{" element"}.
    """
    itemChecker = _compile(item)
    if itemChecker is _accept:
        return _exactTypeChecker(
            container if isinstance(container, tuple) else (container,),
            (),
            expected,
        )

    def check(value: object) -> _Mismatch | None:
        if not isinstance(value, container):
            return ("", expected, _typeName(value))
        for index, element in enumerate(typing.cast(Iterable[object], value)):
            mismatch = itemChecker(element)
            if mismatch is not None:
                where = f"[{index}]" if indexed else " element"
                return (where + mismatch[0], mismatch[1], mismatch[2])
        return None

    exact = _exactTypes.get(itemChecker)
    if exact is None:
        return check
    accepted, refused = exact
    checkEach = check

    def checkInBulk(value: object) -> _Mismatch | None:
        # Elements of a class checked with isinstance (int, str, a
        # copyable...), in a builtin container: every isinstance runs
        # in C, and only a container that fails is walked element by
        # element to name the first mismatch.
        if type(value) in _BULK_CONTAINERS and isinstance(value, container):
            elements = typing.cast(Iterable[object], value)
            if all(map(isinstance, elements, repeat(accepted))) and not (
                refused and any(map(isinstance, elements, repeat(refused)))
            ):
                return None
        return checkEach(value)

    return checkInBulk


#: The containers whose elements L{_iterableChecker} may check in bulk: a
#: builtin container can be iterated twice, with no code of its own run.
_BULK_CONTAINERS = frozenset({list, tuple, set, frozenset})


def _fixedTupleChecker(items: tuple[object, ...], expected: str) -> _Checker:
    """
    A checker for C{tuple[A, B, C]}: exact length, each position checked.
    """
    checkers = tuple(_compile(i) for i in items)
    length = len(checkers)

    def check(value: object) -> _Mismatch | None:
        if not isinstance(value, tuple):
            return ("", expected, _typeName(value))
        if len(value) != length:
            return ("", expected, f"tuple of length {len(value)}")
        for index in range(length):
            mismatch = checkers[index](value[index])
            if mismatch is not None:
                return (f"[{index}]" + mismatch[0], mismatch[1], mismatch[2])
        return None

    return check


def _mappingChecker(
    container: type, key: object, item: object, expected: str
) -> _Checker:
    """
    A checker for C{dict[K, V]} and C{Mapping[K, V]}.
    """
    keyChecker = _compile(key)
    itemChecker = _compile(item)
    if keyChecker is _accept and itemChecker is _accept:
        return _exactTypeChecker((container,), (), expected)

    def check(value: object) -> _Mismatch | None:
        if not isinstance(value, container):
            return ("", expected, _typeName(value))
        # The ignore below: isinstance of a mapping type checked above.
        for k, v in value.items():  # type: ignore[attr-defined]
            mismatch = keyChecker(k)
            if mismatch is not None:
                return (f" key {k!r}" + mismatch[0], mismatch[1], mismatch[2])
            mismatch = itemChecker(v)
            if mismatch is not None:
                return (f"[{k!r}]" + mismatch[0], mismatch[1], mismatch[2])
        return None

    return check


#: The one fix named when an annotation cannot be checked.
_CHECKABLE = "annotate it with a class, a Union, Literal or container of those, or Any"

_sequences: dict[object, type | tuple[type, ...]] = {
    list: list,
    collections.abc.Sequence: collections.abc.Sequence,
    collections.abc.MutableSequence: collections.abc.MutableSequence,
    collections.abc.Collection: collections.abc.Collection,
    collections.abc.Iterable: (list, tuple, set, frozenset, dict),
}
_sets: dict[object, type] = {
    set: set,
    frozenset: frozenset,
    collections.abc.Set: collections.abc.Set,
    collections.abc.MutableSet: collections.abc.MutableSet,
}
_mappings: dict[object, type] = {
    dict: dict,
    collections.abc.Mapping: collections.abc.Mapping,
    collections.abc.MutableMapping: collections.abc.MutableMapping,
}


def _build(annotation: object) -> _Checker:
    """
    Compile one annotation into a checker.

    @raise TypeError: if the annotation cannot be checked.
    """
    if annotation is Any or annotation is object:
        return _accept
    if annotation is None or annotation is type(None):
        return _checkNone
    if isinstance(annotation, typing.TypeVar):
        if annotation.__bound__ is not None:
            return _compile(annotation.__bound__)
        if annotation.__constraints__:
            return _compile(Union[annotation.__constraints__])  # noqa: UP007
        return _accept
    if isinstance(annotation, typing.NewType):
        return _compile(annotation.__supertype__)
    expected = describeAnnotation(annotation)
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is None:
        if isinstance(annotation, type):
            return _classChecker(annotation)
        raise TypeError(
            f"cannot check values against the annotation {annotation!r}; " + _CHECKABLE
        )
    if origin in (typing.Annotated, typing.Final, typing.ClassVar):
        return _compile(args[0])
    if origin is Union or origin is types.UnionType:
        return _unionChecker(args, expected)
    if origin is Literal:
        return _literalChecker(args, expected)
    if annotation is typing.Tuple:  # noqa: UP006
        return _exactTypeChecker((tuple,), (), "tuple")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _iterableChecker(tuple, args[0], expected, True)
        return _fixedTupleChecker(args, expected)
    if origin in _sequences:
        return _iterableChecker(
            _sequences[origin], args[0] if args else Any, expected, True
        )
    if origin in _sets:
        return _iterableChecker(
            _sets[origin], args[0] if args else Any, expected, False
        )
    if origin in _mappings:
        key, item = args if args else (Any, Any)
        return _mappingChecker(_mappings[origin], key, item, expected)
    if origin is type or origin is collections.abc.Callable:
        raise TypeError(
            f"cannot check values against the annotation {expected}; " + _CHECKABLE
        )
    if isinstance(origin, type):
        # Some other generic class (Deferred[int], a user's Box[T]): the
        # parameters cannot be checked, the class can.
        return _exactTypeChecker((origin,), (), expected)
    raise TypeError(
        f"cannot check values against the annotation {annotation!r}; " + _CHECKABLE
    )


# Functions.


class _CallChecker:
    """
    The compiled checks for one function: one checker per annotated
    parameter, and one for the return value.

    @ivar positional: for each parameter that can be passed by position,
        C{(name, checker or None)}.
    @ivar byName: the checkers of the annotated parameters that can be
        passed by keyword.
    @ivar varPositional: C{(name, checker)} for an annotated C{*args}.
    @ivar varKeyword: the checker for an annotated C{**kwargs}.
    @ivar returns: C{(expected, checker)} for the return annotation.
    """

    def __init__(self, function: Callable[..., object], skipFirst: bool) -> None:
        self.name = getattr(function, "__qualname__", repr(function))
        #: The parameters (and C{"return"}) left unchecked, with why.
        self.skipped: dict[str, str] = {}
        hints = self._resolve(function)
        try:
            parameters = list(inspect.signature(function).parameters.values())
        except (TypeError, ValueError):
            parameters = []
        if skipFirst and parameters:
            parameters = parameters[1:]
        positionalKinds = (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )
        self.positional: list[tuple[str, _Checker | None]] = []
        self.byName: dict[str, _Checker] = {}
        self.varPositional: tuple[str, _Checker] | None = None
        self.varKeyword: _Checker | None = None
        for parameter in parameters:
            name = parameter.name
            checker = self._compileHint(hints, name)
            if checker is _accept:
                checker = None
            if parameter.kind in positionalKinds:
                self.positional.append((name, checker))
            if checker is None:
                continue
            if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                self.varPositional = (name, checker)
            elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
                self.varKeyword = checker
            elif parameter.kind is not inspect.Parameter.POSITIONAL_ONLY:
                self.byName[name] = checker
        self.checksArguments = bool(
            self.byName or self.varPositional or self.varKeyword
        ) or any(checker is not None for _, checker in self.positional)
        self.returns: tuple[str, _Checker] | None = None
        if "return" in hints:
            annotation = _awaitedAnnotation(hints["return"])
            returnChecker = self._compileHint({"return": annotation}, "return")
            if returnChecker is not None and returnChecker is not _accept:
                self.returns = (describeAnnotation(annotation), returnChecker)
        if self.skipped:
            _log.warn(
                "pbext: {function}: annotations that cannot be checked are "
                "skipped: {reasons}",
                function=self.name,
                reasons="; ".join(f"{k}: {v}" for k, v in self.skipped.items()),
                skipped=sorted(self.skipped),
                pbextEvent="annotationSkipped",
            )

    def _resolve(self, function: Callable[..., object]) -> dict[str, object]:
        """
        The evaluated annotations of C{function}; one that cannot be
        evaluated (a name imported only under C{TYPE_CHECKING}, say) is
        left out and noted in L{skipped}.
        """
        try:
            return typing.get_type_hints(function)
        except TypeError:
            # Not a function, method, class or module (a callable object):
            # nothing to check.
            return {}
        except Exception:
            pass
        # Some annotation does not resolve: resolve them one at a time.
        try:
            raw = dict(inspect.get_annotations(function))
        except Exception:
            raw = {}
        namespace = getattr(inspect.unwrap(function), "__globals__", {})
        hints: dict[str, object] = {}
        for name, annotation in raw.items():
            probe = types.FunctionType(_probe.__code__, namespace)
            probe.__annotations__ = {name: annotation}
            try:
                hints[name] = typing.get_type_hints(probe)[name]
            except Exception as e:
                self.skipped[name] = f"cannot resolve {annotation!r} ({e})"
        return hints

    def _compileHint(self, hints: dict[str, object], name: str) -> _Checker | None:
        """
        The checker of C{hints[name]}, or L{None} if there is no hint or it
        cannot be checked (noted in L{skipped}).
        """
        if name not in hints:
            return None
        try:
            return _compile(hints[name])
        except TypeError as e:
            self.skipped[name] = str(e)
            return None

    def checkArguments(
        self, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> None:
        """
        @see: L{checkArguments}
        """
        positional = self.positional
        count = len(positional)
        for index, value in enumerate(args):
            if index < count:
                name, checker = positional[index]
                if checker is None:
                    continue
                path = f"arg {name!r}"
            elif self.varPositional is not None:
                name, checker = self.varPositional
                path = f"arg {name!r}[{index - count}]"
            else:
                break
            mismatch = checker(value)
            if mismatch is not None:
                raise TypedCallError(self.name, path + mismatch[0], *mismatch[1:])
        for key, value in kwargs.items():
            keyChecker = self.byName.get(key) if isinstance(key, str) else None
            if keyChecker is None:
                keyChecker = self.varKeyword
                if keyChecker is None:
                    continue
            mismatch = keyChecker(value)
            if mismatch is not None:
                raise TypedCallError(
                    self.name, f"arg {key!r}" + mismatch[0], *mismatch[1:]
                )


def _probe() -> None:
    """
    The code of the functions L{_CallChecker._resolve} resolves one
    annotation with.
    """


def _awaitedAnnotation(annotation: object) -> object:
    """
    The annotation of the final result of a method that returns
    C{Deferred[T]}, C{Awaitable[T]} or C{Coroutine[Any, Any, T]}: C{T}.
    """
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in (Deferred, collections.abc.Awaitable) and len(args) == 1:
        return args[0]
    if origin is collections.abc.Coroutine and len(args) == 3:
        return args[2]
    if annotation is Deferred:
        return Any
    return annotation


_functions: weakref.WeakKeyDictionary[object, dict[bool, _CallChecker]] = (
    weakref.WeakKeyDictionary()
)


def _callChecker(function: Callable[..., object]) -> _CallChecker:
    """
    Return the compiled checks of a function or bound method, compiling
    them on first use (per underlying function, not per bound method object,
    since a new bound method is made on every attribute access).
    """
    target = function
    bound = False
    underlying = getattr(function, "__func__", None)
    if underlying is not None and getattr(function, "__self__", None) is not None:
        target = underlying
        bound = True
    try:
        perFunction = _functions.get(target)
    except TypeError:
        # Not weakly referenceable: compile every time.
        return _CallChecker(target, bound)
    if perFunction is None:
        perFunction = {}
        _functions[target] = perFunction
    checker = perFunction.get(bound)
    if checker is None:
        checker = perFunction[bound] = _CallChecker(target, bound)
    return checker


def checkArguments(
    function: Callable[..., object],
    args: tuple[object, ...],
    kwargs: dict[str, object],
) -> None:
    """
    Check the arguments of one call against the annotations of C{function}.

    Only annotated parameters are checked; unannotated ones (and methods
    without annotations) accept anything, as in classic PB.  The C{self} of
    a bound method is not part of C{args} and is not checked.  Missing or
    extra arguments are not reported here: calling the function reports
    them, as Python does.

    @param function: the function or bound method about to be called.
    @param args: the positional arguments it will be called with.
    @param kwargs: the keyword arguments it will be called with.

    @raise TypedCallError: if an argument does not match its annotation; the
        message names the function, the parameter and the position of the
        mismatching element, e.g. C{"Root.remote_draw: arg 'points'[3]:
        expected Point, got dict"}.  A parameter whose annotation cannot be
        resolved or checked accepts anything (one warning event is logged
        for the function).
    """
    checker = _callChecker(function)
    if checker.checksArguments:
        checker.checkArguments(args, kwargs)


def checkReturn(function: Callable[..., object], value: object) -> None:
    """
    Check the final result of C{function} against its return annotation.

    Call it with the result the caller will receive: for a method returning
    a L{Deferred} or declared C{async def}, the value the Deferred fires
    with.  A return annotation of C{Deferred[T]}, C{Awaitable[T]} or
    C{Coroutine[Any, Any, T]} is checked as C{T}.

    @param function: the function or bound method that was called.
    @param value: its result.

    @raise TypedReturnError: if the result does not match.
    """
    returns = _callChecker(function).returns
    if returns is None:
        return
    mismatch = returns[1](value)
    if mismatch is not None:
        raise TypedReturnError(
            _callChecker(function).name,
            "return value" + mismatch[0],
            mismatch[1],
            mismatch[2],
        )


_P = typing.TypeVar("_P")


@typing.overload
def typed(target: _T) -> _T: ...


@typing.overload
def typed(target: pb.RemoteReference, protocol: Callable[..., _P]) -> _P: ...


# The implementation of the overloads above, which are the signatures mypy
# checks callers against; only Any lets it return the proxy of the second
# as the protocol it follows.
def typed(target: Any, protocol: Any = None) -> Any:
    """
    Ask for the arguments of remote calls to be checked against their
    annotations, for one method or for every remote method of a class (and
    of its subclasses)::

        class Shapes(pb.Root):
            @pbext.typed
            def remote_move(self, shape: Shape, dx: int, dy: int) -> Shape:
                ...

        @pbext.typed
        class Board(pb.Referenceable):
            def remote_place(self, piece: Piece) -> None:
                ...

    A call whose arguments do not match is answered with a
    L{TypedCallError}, without running the method; a result that does not
    match its return annotation is a L{TypedReturnError}, logged on this
    side.  Without this mark (or the factory option C{typedCalls=True})
    annotations are not checked, as in classic PB.

    The mark is an attribute, C{_pbextTyped}, set on the function or class
    given, which is returned.

    On the calling side, C{typed(reference, Protocol)} (two arguments)
    checks calls before they are made, with mypy: it returns a
    L{pbext.typedref.TypedReference} typed as C{Protocol}, whose attributes
    call the remote methods (C{await root.add(1, 2)} runs
    C{reference.callRemote("add", 1, 2)}).  C{python -m pbext stubs}
    writes such protocols; see docs/howto/introspection.rst.  Both forms
    ask for calls checked against annotations, on either side of the wire.
    (A protocol is taken as C{Callable[..., P]}, not C{type[P]}: mypy
    refuses a protocol class where C{type[P]} is expected.)

    @param target: a function (a C{remote_}, C{perspective_}, C{view_} or
        C{observe_} method) or a class; or, with C{protocol}, a
        L{pb.RemoteReference}.
    @param protocol: the C{typing.Protocol} the reference's remote methods
        follow, or nothing.
    @return: C{target}, or with C{protocol} a typed proxy of the reference.
    @since: pbext NEXT
    """
    if protocol is not None:
        from pbext.typedref import TypedReference

        return TypedReference(target)
    # The ignore below: a marker on the user's function.
    target._pbextTyped = True  # type: ignore[attr-defined]
    return target


def isTyped(method: Callable[..., object]) -> bool:
    """
    Whether C{method} (usually a bound method about to be called remotely)
    was marked with L{typed}, itself or through the class of the object it
    is bound to.

    @since: pbext NEXT
    """
    if getattr(method, "_pbextTyped", False):
        return True
    owner = getattr(method, "__self__", None)
    return owner is not None and bool(getattr(type(owner), "_pbextTyped", False))
