"""
Tests for L{pbext.typecheck}.
"""

from __future__ import annotations

import collections.abc
import datetime
import doctest
import typing
from dataclasses import dataclass
from decimal import Decimal
from typing import (
    Annotated,
    Any,
    Callable,
    Dict,
    FrozenSet,
    List,
    Literal,
    NewType,
    Optional,
    Protocol,
    Set,
    Tuple,
    TypeVar,
    Union,
)

from twisted.internet.defer import Deferred
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase

import pbext.typecheck
from pbext.typecheck import (
    TypeCheckError,
    TypedCallError,
    TypedReturnError,
    _callChecker,
    _compile,
    checkArguments,
    checkReturn,
    checkValue,
    describeAnnotation,
)


@dataclass
class Point:
    x: int
    y: int


class Target(pb.Referenceable):
    pass


UserId = NewType("UserId", int)
Numeric = TypeVar("Numeric", bound=float)
Text = TypeVar("Text", str, bytes)


class Sized(Protocol):
    def size(self) -> int: ...


class Shapes:
    """
    Remote methods with and without annotations.
    """

    def remote_draw(self, points: list[Point], color: str = "black") -> int:
        return len(points)

    def remote_any(self, a, b):  # type: ignore[no-untyped-def]
        return a

    def remote_mixed(self, a: int, b, *rest: str, **options: float) -> None:  # type: ignore[no-untyped-def]
        pass

    def remote_positional(self, a: int, /, **options: str) -> None:
        pass

    def remote_later(self) -> Deferred[int]:
        return Deferred()

    async def remote_async(self) -> int:
        return 1

    def remote_broken(self, a: Undefined) -> None:  # type: ignore[name-defined] # noqa: F821
        pass


def _mismatch(value: object, annotation: object) -> str:
    """
    The message of the error C{checkValue} raises.
    """
    try:
        checkValue(value, annotation, "arg 'v'")
    except TypeCheckError as e:
        return str(e)
    raise AssertionError(f"{value!r} matched {annotation!r}")


class CheckValueTests(SynchronousTestCase):
    """
    L{checkValue} accepts values matching an annotation and names the
    position and types of a mismatch.
    """

    def assertAccepts(self, annotation: object, *values: object) -> None:
        for value in values:
            checkValue(value, annotation, "arg 'v'")

    def test_docstringExample(self) -> None:
        """
        The example in the module docstring runs.
        """
        results = doctest.testmod(pbext.typecheck, verbose=False)
        self.assertEqual(results.failed, 0)
        self.assertGreater(results.attempted, 0)

    def test_scalars(self) -> None:
        """
        Scalars are accepted by their own annotation and refused by another.
        """
        samples = {
            bool: True,
            int: 3,
            float: 2.5,
            str: "s",
            bytes: b"b",
            Decimal: Decimal("1.5"),
            datetime.datetime: datetime.datetime(2024, 1, 1, 1, 1),
            datetime.date: datetime.date(2024, 1, 1),
            datetime.time: datetime.time(1, 2),
            datetime.timedelta: datetime.timedelta(3),
        }
        for annotation, value in samples.items():
            self.assertAccepts(annotation, value)
            self.assertEqual(
                _mismatch(object(), annotation),
                f"arg 'v': expected {annotation.__name__}, got object",
            )

    def test_boolIsNotInt(self) -> None:
        """
        C{int} refuses booleans, and C{bool} refuses integers.
        """
        self.assertEqual(_mismatch(True, int), "arg 'v': expected int, got bool")
        self.assertEqual(_mismatch(1, bool), "arg 'v': expected bool, got int")

    def test_floatAcceptsInt(self) -> None:
        """
        C{float} accepts integers but not booleans.
        """
        self.assertAccepts(float, 1, 1.0)
        self.assertEqual(_mismatch(False, float), "arg 'v': expected float, got bool")

    def test_none(self) -> None:
        """
        C{None} and C{NoneType} accept only L{None}.
        """
        self.assertAccepts(None, None)
        self.assertAccepts(type(None), None)
        self.assertEqual(_mismatch(0, None), "arg 'v': expected None, got int")

    def test_anything(self) -> None:
        """
        C{Any} and C{object} accept everything.
        """
        self.assertAccepts(Any, None, 1, [object()])
        self.assertAccepts(object, None, 1, [object()])

    def test_list(self) -> None:
        """
        A list is checked element by element, under both spellings.
        """
        for annotation in (list[int], List[int]):
            self.assertAccepts(annotation, [], [1, 2])
            self.assertEqual(
                _mismatch([1, "2"], annotation), "arg 'v'[1]: expected int, got str"
            )
            self.assertEqual(
                _mismatch((1,), annotation), "arg 'v': expected list[int], got tuple"
            )
        self.assertAccepts(list, [1, "a"])
        self.assertAccepts(List, [1, "a"])

    def test_manyElements(self) -> None:
        """
        Long containers of a plain class (checked in bulk) name the first
        mismatch as an element-by-element check would: a C{bool} among
        C{int}s, a C{str} in a set, an element of a tuple subclass.
        """
        many = list(range(1000))
        self.assertAccepts(list[int], many)
        self.assertAccepts(tuple[float, ...], (1.5, *many))
        self.assertEqual(
            _mismatch([*many, True, "x"], list[int]),
            "arg 'v'[1000]: expected int, got bool",
        )
        self.assertEqual(
            _mismatch({*many, "x"}, set[int]),
            "arg 'v' element: expected int, got str",
        )
        Pair = collections.namedtuple("Pair", "a b")
        self.assertEqual(
            _mismatch(Pair(1, "b"), tuple[int, ...]),
            "arg 'v'[1]: expected int, got str",
        )
        self.assertEqual(
            _mismatch(many, list[str]), "arg 'v'[0]: expected str, got int"
        )

    def test_nestedPath(self) -> None:
        """
        Paths through nested containers accumulate.
        """
        self.assertEqual(
            _mismatch({"a": [(1, "x"), (2, 3)]}, dict[str, list[tuple[int, str]]]),
            "arg 'v'['a'][1][1]: expected str, got int",
        )

    def test_tuples(self) -> None:
        """
        C{tuple[T, ...]} checks every element; C{tuple[A, B]} checks its
        length and each position.
        """
        self.assertAccepts(tuple[int, ...], (), (1, 2, 3))
        self.assertEqual(
            _mismatch((1, "2"), tuple[int, ...]), "arg 'v'[1]: expected int, got str"
        )
        self.assertAccepts(tuple[int, str], (1, "a"))
        self.assertAccepts(Tuple[int, str], (1, "a"))
        self.assertEqual(
            _mismatch((1, 2), tuple[int, str]), "arg 'v'[1]: expected str, got int"
        )
        self.assertEqual(
            _mismatch((1,), tuple[int, str]),
            "arg 'v': expected tuple[int, str], got tuple of length 1",
        )
        self.assertAccepts(tuple[()], ())
        self.assertAccepts(Tuple, (1, "a"))
        self.assertEqual(
            _mismatch([1, "a"], tuple[int, str]),
            "arg 'v': expected tuple[int, str], got list",
        )

    def test_sets(self) -> None:
        """
        Sets and frozensets are checked element by element; neither is
        accepted for the other.
        """
        self.assertAccepts(set[int], {1, 2})
        self.assertAccepts(Set[int], {1, 2})
        self.assertAccepts(frozenset[int], frozenset({1}))
        self.assertAccepts(FrozenSet[int], frozenset({1}))
        self.assertEqual(
            _mismatch({"a"}, set[int]), "arg 'v' element: expected int, got str"
        )
        self.assertEqual(
            _mismatch(frozenset(), set[int]),
            "arg 'v': expected set[int], got frozenset",
        )

    def test_dicts(self) -> None:
        """
        Dictionaries are checked key by key and value by value.
        """
        for annotation in (dict[str, int], Dict[str, int]):
            self.assertAccepts(annotation, {}, {"a": 1})
            self.assertEqual(
                _mismatch({"a": "1"}, annotation),
                "arg 'v'['a']: expected int, got str",
            )
            self.assertEqual(
                _mismatch({1: 1}, annotation), "arg 'v' key 1: expected str, got int"
            )

    def test_abstractCollections(self) -> None:
        """
        The C{collections.abc} abstractions accept the concrete containers
        jelly builds.
        """
        self.assertAccepts(collections.abc.Sequence[int], [1], (1,))
        self.assertAccepts(typing.Sequence[int], [1], (1,))
        self.assertAccepts(collections.abc.Mapping[str, int], {"a": 1})
        self.assertAccepts(collections.abc.Set[int], {1}, frozenset({1}))
        self.assertAccepts(collections.abc.Iterable[int], [1], {1})
        self.assertEqual(
            _mismatch([1, "a"], typing.Sequence[int]),
            "arg 'v'[1]: expected int, got str",
        )

    def test_unions(self) -> None:
        """
        Optional and unions accept what any member accepts.
        """
        for annotation in (Optional[int], Union[int, None], int | None):
            self.assertAccepts(annotation, None, 1)
            self.assertEqual(
                _mismatch("1", annotation), "arg 'v': expected int | None, got str"
            )
        self.assertAccepts(int | str, 1, "1")

    def test_unionDeepPath(self) -> None:
        """
        When only one member of a union matches the container, the mismatch
        inside it is reported.
        """
        self.assertEqual(
            _mismatch([1, "2"], list[int] | None), "arg 'v'[1]: expected int, got str"
        )
        self.assertEqual(
            _mismatch([1, "2"], list[int] | list[bytes]),
            "arg 'v': expected list[int] | list[bytes], got list",
        )

    def test_literal(self) -> None:
        """
        C{Literal} accepts its values, of the same type only.
        """
        self.assertAccepts(Literal["a", 1], "a", 1)
        self.assertEqual(
            _mismatch("b", Literal["a", 1]),
            "arg 'v': expected Literal['a', 1], got 'b'",
        )
        self.assertEqual(
            _mismatch(True, Literal[1]), "arg 'v': expected Literal[1], got True"
        )
        self.assertIn("...", _mismatch("x" * 100, Literal["a"]))

    def test_classes(self) -> None:
        """
        Other classes, such as registered copyable types, are checked with
        C{isinstance}.
        """
        self.assertAccepts(Point, Point(1, 2))
        self.assertEqual(
            _mismatch([Point(1, 2), {"x": 1}], list[Point]),
            "arg 'v'[1]: expected Point, got dict",
        )

    def test_referenceable(self) -> None:
        """
        A L{pb.Referenceable} subclass accepts a L{pb.RemoteReference} (what
        a peer's referenceable arrives as) and its own instances (ours sent
        back); C{RemoteReference} accepts only remote references.
        """
        reference = pb.RemoteReference(None, None, 1, False)
        self.assertAccepts(Target, reference, Target())
        self.assertEqual(
            _mismatch(1, Target), "arg 'v': expected Target or RemoteReference, got int"
        )
        self.assertAccepts(pb.RemoteReference, reference)
        self.assertEqual(
            _mismatch(Target(), pb.RemoteReference),
            "arg 'v': expected RemoteReference, got Target",
        )

    def test_wrappers(self) -> None:
        """
        C{Annotated}, C{NewType} and C{TypeVar} are checked as what they
        wrap.
        """
        self.assertAccepts(Annotated[int, "meta"], 1)
        self.assertEqual(
            _mismatch("1", Annotated[int, "meta"]), "arg 'v': expected int, got str"
        )
        self.assertAccepts(UserId, 1)
        self.assertEqual(_mismatch("1", UserId), "arg 'v': expected int, got str")
        self.assertAccepts(Numeric, 1, 1.5)
        self.assertAccepts(Text, "a", b"a")
        self.assertEqual(_mismatch(1, Text), "arg 'v': expected str | bytes, got int")
        self.assertAccepts(TypeVar("Free"), object())

    def test_generic(self) -> None:
        """
        A generic class other than the containers is checked as its class.
        """
        self.assertAccepts(Deferred[int], Deferred())
        self.assertEqual(
            _mismatch(1, Deferred[int]), "arg 'v': expected Deferred[int], got int"
        )

    def test_uncheckable(self) -> None:
        """
        Annotations that cannot be checked raise L{TypeError}, not
        L{TypeCheckError}.
        """
        for annotation in ("int", Callable[[], None], type[int], Sized, 3):
            error = self.assertRaises(TypeError, checkValue, 1, annotation, "x")
            self.assertNotIsInstance(error, TypeCheckError)

    def test_uncheckableMessages(self) -> None:
        """
        The L{TypeError} for an annotation that cannot be checked names the
        annotation and the one way to write a checkable one.
        """
        error = self.assertRaises(TypeError, checkValue, 1, Callable[[], None], "x")
        self.assertEqual(
            str(error),
            "cannot check values against the annotation Callable[[], None]; "
            "annotate it with a class, a Union, Literal or container of "
            "those, or Any",
        )

        class Closer(typing.Protocol):
            def close(self) -> None: ...

        error = self.assertRaises(TypeError, checkValue, 1, Closer, "x")
        self.assertEqual(
            str(error),
            "cannot check values against CheckValueTests.test_uncheckableMessages."
            "<locals>.Closer: it is a Protocol that is not runtime-checkable; decorate "
            "it with @typing.runtime_checkable",
        )

    def test_errorAttributes(self) -> None:
        """
        L{TypeCheckError} is a L{TypeError} carrying the path, the expected
        and the received type.
        """
        error = self.assertRaises(
            TypeCheckError, checkValue, [1, "a"], list[int], "arg 'points'"
        )
        self.assertIsInstance(error, TypeError)
        self.assertEqual(
            (error.path, error.expected, error.got), ("arg 'points'[1]", "int", "str")
        )

    def test_describe(self) -> None:
        """
        Annotations are spelled in messages the way they are written.
        """
        self.assertEqual(describeAnnotation(Optional[List[int]]), "list[int] | None")
        self.assertEqual(describeAnnotation(tuple[int, ...]), "tuple[int, ...]")
        self.assertEqual(describeAnnotation(dict[str, Point]), "dict[str, Point]")
        self.assertEqual(describeAnnotation(Any), "Any")
        self.assertEqual(describeAnnotation(None), "None")

    def test_compiledOnce(self) -> None:
        """
        An annotation is compiled once and its checker reused.
        """
        self.assertIs(_compile(list[Point]), _compile(list[Point]))


class CheckArgumentsTests(SynchronousTestCase):
    """
    L{checkArguments} applies a function's parameter annotations to a call.
    """

    def setUp(self) -> None:
        self.shapes = Shapes()

    def test_accepts(self) -> None:
        """
        Matching arguments, positional or keyword, pass.
        """
        checkArguments(self.shapes.remote_draw, ([Point(1, 2)],), {})
        checkArguments(self.shapes.remote_draw, (), {"points": [], "color": "red"})

    def test_refusesPositional(self) -> None:
        """
        A mismatching positional argument raises L{TypedCallError} naming
        the method, the parameter and the position.
        """
        error = self.assertRaises(
            TypedCallError,
            checkArguments,
            self.shapes.remote_draw,
            ([Point(1, 2), Point(3, 4), Point(5, 6), {"x": 1}],),
            {},
        )
        self.assertEqual(
            str(error),
            "Shapes.remote_draw: arg 'points'[3]: expected Point, got dict",
        )
        self.assertEqual(error.function, "Shapes.remote_draw")
        self.assertEqual(error.path, "arg 'points'[3]")

    def test_refusesKeyword(self) -> None:
        """
        A mismatching keyword argument is refused.
        """
        error = self.assertRaises(
            TypedCallError,
            checkArguments,
            self.shapes.remote_draw,
            ([],),
            {"color": 1},
        )
        self.assertEqual(
            str(error), "Shapes.remote_draw: arg 'color': expected str, got int"
        )

    def test_isPBError(self) -> None:
        """
        L{TypedCallError} is a L{pb.Error} (the caller's mistake, reported
        without a server traceback) and a L{TypeError}.
        """
        error = TypedCallError("f", "arg 'a'", "int", "str")
        self.assertIsInstance(error, pb.Error)
        self.assertIsInstance(error, TypeError)

    def test_unannotated(self) -> None:
        """
        Unannotated methods and parameters accept anything.
        """
        checkArguments(self.shapes.remote_any, (object(), object()), {})
        checkArguments(self.shapes.remote_mixed, (1, object()), {})

    def test_unboundFunction(self) -> None:
        """
        Called on the plain function, the first parameter is C{self} and is
        passed like any unannotated argument.
        """
        checkArguments(Shapes.remote_draw, (self.shapes, []), {})
        self.assertRaises(
            TypedCallError, checkArguments, Shapes.remote_draw, (self.shapes, 1), {}
        )

    def test_varArguments(self) -> None:
        """
        Annotated C{*args} and C{**kwargs} check each extra argument.
        """
        checkArguments(self.shapes.remote_mixed, (1, None, "a", "b"), {"x": 1.0})
        error = self.assertRaises(
            TypedCallError,
            checkArguments,
            self.shapes.remote_mixed,
            (1, None, "a", 2),
            {},
        )
        self.assertEqual(error.path, "arg 'rest'[1]")
        error = self.assertRaises(
            TypedCallError,
            checkArguments,
            self.shapes.remote_mixed,
            (1, None),
            {"scale": "big"},
        )
        self.assertEqual(error.path, "arg 'scale'")

    def test_positionalOnly(self) -> None:
        """
        A keyword named like a positional-only parameter goes to
        C{**kwargs}, as in Python.
        """
        checkArguments(self.shapes.remote_positional, (1,), {"a": "x"})
        self.assertRaises(
            TypedCallError,
            checkArguments,
            self.shapes.remote_positional,
            (1,),
            {"a": 2},
        )

    def test_missingAndExtraLeftToPython(self) -> None:
        """
        Missing or extra arguments are not reported by the check; calling
        the method reports them.
        """
        checkArguments(self.shapes.remote_draw, (), {})
        checkArguments(self.shapes.remote_draw, ([], "red", "extra"), {"other": 1})
        checkArguments(self.shapes.remote_draw, ([],), {b"color": 1})  # type: ignore[dict-item]

    def test_unresolvable(self) -> None:
        """
        A parameter whose annotation cannot be resolved accepts anything;
        the other annotations of the method are still checked.
        """
        checkArguments(self.shapes.remote_broken, (1,), {})
        checkArguments(self.shapes.remote_broken, ("anything",), {})

    def test_callableObject(self) -> None:
        """
        A callable object without annotations passes.
        """

        class Call:
            def __call__(self, a: object) -> None:
                pass

        checkArguments(Call(), (1,), {})

    def test_compiledOnce(self) -> None:
        """
        The checks of a method are compiled once, although every attribute
        access makes a new bound method.
        """
        self.assertIs(
            _callChecker(self.shapes.remote_draw),
            _callChecker(Shapes().remote_draw),
        )


class CheckReturnTests(SynchronousTestCase):
    """
    L{checkReturn} applies a function's return annotation to its result.
    """

    def setUp(self) -> None:
        self.shapes = Shapes()

    def test_accepts(self) -> None:
        """
        A matching result passes; unannotated methods accept anything.
        """
        checkReturn(self.shapes.remote_draw, 3)
        checkReturn(self.shapes.remote_any, object())

    def test_refuses(self) -> None:
        """
        A mismatching result raises L{TypedReturnError}, which is not a
        L{pb.Error}: it is the method's fault, to be logged.
        """
        error = self.assertRaises(
            TypedReturnError, checkReturn, self.shapes.remote_draw, "3"
        )
        self.assertEqual(
            str(error), "Shapes.remote_draw: return value: expected int, got str"
        )
        self.assertNotIsInstance(error, pb.Error)
        self.assertIsInstance(error, TypeCheckError)

    def test_awaited(self) -> None:
        """
        C{Deferred[T]} and C{async def} results are checked as C{T}.
        """
        checkReturn(self.shapes.remote_later, 1)
        self.assertRaises(TypedReturnError, checkReturn, self.shapes.remote_later, "1")
        checkReturn(self.shapes.remote_async, 1)
        self.assertRaises(TypedReturnError, checkReturn, self.shapes.remote_async, "1")

    def test_none(self) -> None:
        """
        C{-> None} refuses a value.
        """
        checkReturn(self.shapes.remote_mixed, None)
        error = self.assertRaises(
            TypedReturnError, checkReturn, self.shapes.remote_mixed, 1
        )
        self.assertEqual(error.path, "return value")
