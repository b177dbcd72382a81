"""
Tests for the registered copyable types on pbext's plain fast paths:
L{pbext._jelly.PlainTypes}, L{pbext._jelly.jellyPlain} and
L{pbext._jelly.unjellyPlain} with C{types}, their C twins, and the fused
encoder and decoder of the C accelerator.

Each fast path must give exactly what the registry's own jelly and
unjelly methods give (through the full L{pbext._jelly.Jellier} and
L{pbext._jelly.Unjellier}), or step aside so that they run; a refusal is
always reported by the full path.
"""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc
from typing import Any, List, Optional

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.spread import banana, jelly
from twisted.trial.unittest import SynchronousTestCase

from pbext import _jelly, codec
from pbext._accelerator import reason, speedups
from pbext.copyable import CopyableRegistry, CopyableStateError
from pbext.security import defaultPolicy, strictPolicy

OUTGOING = banana.Banana.outgoingVocabulary
INCOMING = banana.Banana.incomingVocabulary

TWIN = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.differing_executors,
        HealthCheck.data_too_large,
    ],
)


@dataclasses.dataclass
class Point:
    x: int
    y: float
    name: str
    tags: List[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Flat:
    """
    Only scalar fields: the decoder reads its copies straight from the
    bytes when they are all at hand.
    """

    x: int
    ratio: float
    name: str
    data: bytes
    flag: bool


@dataclasses.dataclass(frozen=True)
class Frozen:
    data: bytes
    flag: bool
    anything: Any = None


@dataclasses.dataclass
class Positive:
    value: int

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError("negative")


@dataclasses.dataclass
class Versioned:
    count: int
    label: str


@attrs.define
class AttrsPair:
    left: Optional[int]
    right: str = "r"


class PlainClass:
    size: int
    note: str = "none"


def makeRegistry() -> CopyableRegistry:
    registry = CopyableRegistry()
    registry.register(Point, "t.Point")
    registry.register(Frozen, "t.Frozen")
    registry.register(Flat, "t.Flat")
    registry.register(Positive, "t.Positive")
    registry.register(Versioned, "t.Versioned", version=2)
    registry.registerUpgrader("t.Versioned", 1, lambda s: {**s, "label": "old"})
    registry.register(AttrsPair, "t.AttrsPair")
    registry.register(PlainClass, "t.Plain")
    return registry


REGISTRY = makeRegistry()
POLICY = defaultPolicy()
TASTER = POLICY.forConnection((REGISTRY,))
TYPES = _jelly.PlainTypes((REGISTRY,), TASTER)


def plainClass(size: int, note: str) -> PlainClass:
    obj = PlainClass()
    obj.size = size
    obj.note = note
    return obj


texts = st.text(max_size=6)
#: Objects of the types the decoder builds while it parses.
directLeaves = st.one_of(
    st.builds(
        Point,
        st.integers(),
        st.one_of(st.floats(allow_nan=False), st.integers()),
        texts,
        st.lists(st.integers(), max_size=3),
    ),
    st.builds(Frozen, st.binary(max_size=5), st.booleans(), st.integers() | texts),
    st.builds(
        Flat,
        st.integers(),
        st.one_of(st.floats(allow_nan=False), st.integers()),
        texts,
        st.binary(max_size=5),
        st.booleans(),
    ),
)

typedLeaves = st.one_of(
    directLeaves,
    st.builds(Positive, st.integers(min_value=0)),
    st.builds(Versioned, st.integers(), texts),
    st.builds(AttrsPair, st.none() | st.integers(), texts),
    st.builds(plainClass, st.integers(), texts),
)

#: Values whose registered objects the decoder builds itself (see
#: FusedTests.test_ownCodeNotRunWhileParsing).
directValues = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), texts, directLeaves),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(texts, children, max_size=3),
    ),
    max_leaves=12,
)

typedValues = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), texts, typedLeaves),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(texts, children, max_size=3),
    ),
    max_leaves=12,
)

# State expressions for a registered name, right or wrong.
fieldValues = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.binary(max_size=4),
    st.sampled_from(
        [
            [b"unicode", b"t"],
            [b"unicode", b"\xff"],
            [b"boolean", b"true"],
            [b"None"],
            [b"list", 1, 2],
            [b"list", [b"unicode", b"a"]],
        ]
    ),
)
fieldNames = st.sampled_from(
    [
        b"x",
        b"y",
        b"ratio",
        b"name",
        b"tags",
        b"data",
        b"flag",
        b"anything",
        b"value",
        b"count",
        b"label",
        b"left",
        b"right",
        b"size",
        b"note",
        b"pbext.version",
        b"_private",
        b"other",
    ]
)
stateExpressions = st.builds(
    lambda tag, pairs, unicodeKeys: [
        tag,
        [b"dictionary"]
        + [[[b"unicode", k] if unicodeKeys else k, v] for k, v in pairs],
    ],
    st.sampled_from(
        [
            b"t.Point",
            b"t.Frozen",
            b"t.Flat",
            b"t.Flat",
            b"t.Positive",
            b"t.Versioned",
            b"t.AttrsPair",
            b"t.Plain",
        ]
    ),
    st.lists(st.tuples(fieldNames, fieldValues | st.integers(1, 2)), max_size=5),
    st.booleans(),
)


def fullJelly(value: object) -> Any:
    return _jelly.Jellier(POLICY.outgoingTaster(), None, (REGISTRY,)).jelly(value)


def fullUnjelly(sexp: object) -> tuple[str, Any]:
    """
    The outcome of the full unjellier: C{("ok", value)} or C{("refused",
    exception type)}.
    """
    try:
        return "ok", _jelly.Unjellier(TASTER, None, (REGISTRY,)).unjellyFull(sexp)
    except jelly.InsecureJelly as e:
        return "refused", type(e)


def same(a: object, b: object) -> bool:
    """
    Equal, of the same types, as far as C{repr} tells; plain classes are
    compared by their attributes.
    """
    if isinstance(a, PlainClass) or isinstance(b, PlainClass):
        return type(a) is type(b) and vars(a) == vars(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b))
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and repr(a) == repr(b)


class PlainTypesTestsMixin:
    """
    C{jellyPlain} and C{unjellyPlain} with a connection's registered types;
    run against the C accelerator and against the pure-Python twins.
    """

    jellyPlain: Any
    unjellyPlain: Any

    @TWIN
    @given(typedValues)
    def test_jellySameAsRegistry(self, value: object) -> None:
        """
        Values holding registered objects (none twice) are jellied as the
        full jellier, asking the registry, jellies them.
        """
        plain = self.jellyPlain(value, TYPES.send)
        self.assertIsNot(plain, _jelly.NOT_PLAIN)
        self.assertEqual(repr(plain), repr(fullJelly(value)))

    def test_jellyStepsAside(self) -> None:
        """
        An object met twice, an object of a subclass, and a field that
        cannot be read are left to the full jellier.
        """

        class SubPoint(Point):
            pass

        point = Point(1, 2.0, "a")
        broken = Point(1, 2.0, "a")
        del broken.name
        for value in ([point, point], [SubPoint(1, 2.0, "a")], broken, [broken]):
            self.assertIs(self.jellyPlain(value, TYPES.send), _jelly.NOT_PLAIN)
        self.assertIs(self.jellyPlain(point), _jelly.NOT_PLAIN)

    def test_versionSent(self) -> None:
        """
        A type registered with a version above 1 sends its version key.
        """
        value = Versioned(3, "x")
        plain = self.jellyPlain(value, TYPES.send)
        self.assertEqual(plain[1][-1], [[b"unicode", b"pbext.version"], 2])
        self.assertEqual(repr(plain), repr(fullJelly(value)))

    @TWIN
    @given(typedValues)
    def test_unjellySameAsRegistry(self, value: object) -> None:
        """
        What the registry sends, the plain path builds as the registry
        does.
        """
        sexp = fullJelly(value)
        plain = self.unjellyPlain(sexp, TYPES.receive)
        self.assertIsNot(plain, _jelly.NOT_PLAIN)
        kind, full = fullUnjelly(sexp)
        self.assertEqual(kind, "ok")
        self.assertTrue(same(plain, full), (plain, full))

    @TWIN
    @given(stateExpressions)
    def test_unjellyRandomState(self, sexp: Any) -> None:
        """
        For random state, the plain path builds what the registry builds or
        steps aside; where the registry refuses, it always steps aside.
        """
        plain = self.unjellyPlain([b"list", sexp], TYPES.receive)
        kind, full = fullUnjelly([b"list", sexp])
        if plain is _jelly.NOT_PLAIN:
            return
        self.assertEqual(kind, "ok", (sexp, plain))
        self.assertTrue(same(plain, full), (plain, full))

    def test_unjellyStepsAside(self) -> None:
        """
        Older versions (upgraded by the registry), bytes keys (decoded by
        the registry), refusals of every kind and constructor errors are
        left to the full unjellier.
        """
        u = b"unicode"
        cases = [
            # An older version: the registry upgrades it.
            [b"t.Versioned", [b"dictionary", [[u, b"count"], 1]]],
            # A classic peer's bytes keys.
            [b"t.Positive", [b"dictionary", [b"value", 1]]],
            # Refusals.
            [b"t.Positive", [b"dictionary", [[u, b"value"], -1]]],
            [b"t.Positive", [b"dictionary", [[u, b"value"], [u, b"1"]]]],
            [b"t.Positive", [b"dictionary", [[u, b"value"], [b"boolean", b"true"]]]],
            [b"t.Positive", [b"dictionary"]],
            [b"t.Positive", [b"dictionary", [[u, b"value"], 1], [[u, b"_x"], 1]]],
            [b"t.Positive", [b"dictionary", [[u, b"value"], 1]], 3],
            [b"t.Positive", [b"list"]],
            [b"t.Positive", [b"dictionary", [[u, b"value"], 1], [[u, b"other"], 1]]],
            [
                b"t.Versioned",
                [
                    b"dictionary",
                    [[u, b"count"], 1],
                    [[u, b"label"], [u, b"a"]],
                    [[u, b"pbext.version"], 3],
                ],
            ],
            [b"t.Unknown", [b"dictionary"]],
        ]
        for sexp in cases:
            self.assertIs(
                self.unjellyPlain(sexp, TYPES.receive), _jelly.NOT_PLAIN, sexp
            )
        self.assertEqual(
            fullUnjelly(cases[0]),
            ("ok", Versioned(1, "old")),
            "upgraded by the full path",
        )
        self.assertEqual(fullUnjelly(cases[1]), ("ok", Positive(1)))
        self.assertEqual(fullUnjelly(cases[2]), ("refused", CopyableStateError))

    def test_withoutTypes(self) -> None:
        """
        Without C{types}, registered names are not plain.
        """
        sexp = [b"t.Positive", [b"dictionary", [[b"unicode", b"value"], 1]]]
        self.assertIs(self.unjellyPlain(sexp), _jelly.NOT_PLAIN)
        self.assertEqual(self.unjellyPlain(sexp, TYPES.receive), Positive(1))


class PlainTypesTests(PlainTypesTestsMixin, SynchronousTestCase):
    if speedups is None:
        skip = f"the C accelerator is not available: {reason}"
    else:
        jellyPlain = staticmethod(speedups.jellyPlain)
        unjellyPlain = staticmethod(speedups.unjellyPlain)


class PythonPlainTypesTests(PlainTypesTestsMixin, SynchronousTestCase):
    jellyPlain = staticmethod(_jelly._jellyPlainPython)
    unjellyPlain = staticmethod(_jelly._unjellyPlainPython)


class TablesTests(SynchronousTestCase):
    """
    L{_jelly.PlainTypes} builds its tables as the jellier and unjellier ask
    a connection's registries.
    """

    def test_firstRegistryWins(self) -> None:
        """
        A class or name claimed by an earlier registry in a way the fast
        paths do not handle is left out, even if a later one registers it
        the common way.
        """
        first = CopyableRegistry()
        first.registerCopier(
            Positive,
            "t.Positive",
            lambda p: {"value": p.value},
            lambda s: Positive(**s),
            fields={"value": int},
        )
        second = makeRegistry()
        types = _jelly.PlainTypes(
            (first, second), POLICY.forConnection((first, second))
        )
        assert types.send is not None and types.receive is not None
        self.assertNotIn(Positive, types.send)
        self.assertNotIn(b"t.Positive", types.receive)
        self.assertIn(Point, types.send)
        self.assertIn(b"t.Point", types.receive)

    def test_foreignRegistry(self) -> None:
        """
        No registry after one that is not a L{CopyableRegistry} counts: it
        could claim anything.
        """

        class Foreign:
            def isTypeKnown(self, name: bytes) -> bool:
                return True

        types = _jelly.PlainTypes((Foreign(), REGISTRY), TASTER)
        self.assertIsNone(types.send)
        self.assertIsNone(types.receive)

    def test_tasterRefuses(self) -> None:
        """
        A name the taster refuses is not built by the fast path.
        """

        class Refusing:
            def isTypeAllowed(self, name: bytes) -> bool:
                return name != b"t.Point"

        types = _jelly.PlainTypes((REGISTRY,), Refusing())
        assert types.receive is not None
        self.assertNotIn(b"t.Point", types.receive)
        self.assertIn(b"t.Frozen", types.receive)

    def test_refresh(self) -> None:
        """
        The tables follow registrations made after they were built.
        """
        registry = CopyableRegistry()
        types = _jelly.PlainTypes((registry,), POLICY.forConnection((registry,)))
        self.assertIsNone(types.send)
        self.assertFalse(types.refresh())
        registry.register(Point, "t.Point")
        self.assertTrue(types.refresh())
        assert types.send is not None
        self.assertIn(Point, types.send)
        self.assertFalse(types.refresh())

    def test_postUnjellyLeftOut(self) -> None:
        """
        A class with a C{postUnjelly} hook (which the full unjellier runs
        after the whole expression) is not built by the fast path.
        """

        @dataclasses.dataclass
        class Hooked:
            x: int

            def postUnjelly(self) -> None:
                pass

        registry = CopyableRegistry()
        registry.register(Hooked, "t.Hooked")
        types = _jelly.PlainTypes((registry,), POLICY.forConnection((registry,)))
        self.assertIsNone(types.receive)
        assert types.send is not None
        self.assertIn(Hooked, types.send)

    def test_directConstruction(self) -> None:
        """
        Only dataclasses whose generated C{__init__} does nothing but set
        their fields are built without running it; the objects are the
        same either way.
        """

        @dataclasses.dataclass
        class OwnInit:
            x: int

            def __init__(self, x: int) -> None:
                self.x = x * 2

        @dataclasses.dataclass
        class OwnSetattr:
            x: int

            def __setattr__(self, name: str, value: object) -> None:
                object.__setattr__(self, name, value * 2)  # type: ignore[operator]

        @dataclasses.dataclass(slots=True)  # type: ignore[call-overload]
        class Slotted:
            x: int

        class Doubling:
            def __set_name__(self, owner: type, name: str) -> None:
                self.name = "_" + name

            def __get__(self, obj: object, owner: type) -> object:
                return getattr(obj, self.name, 0) if obj is not None else 0

            def __set__(self, obj: object, value: int) -> None:
                setattr(obj, self.name, value * 2)

        @dataclasses.dataclass
        class Described:
            x: int = Doubling()  # type: ignore[assignment]

        @dataclasses.dataclass
        class Derived:
            x: int
            doubled: List[int] = dataclasses.field(init=False, default_factory=list)

        registry = CopyableRegistry()
        for cls in (
            Point,
            Frozen,
            Positive,
            AttrsPair,
            OwnInit,
            OwnSetattr,
            Slotted,
            Derived,
            Described,
        ):
            registry.register(cls, "t." + cls.__name__)
        receive = _jelly.PlainTypes(
            (registry,), POLICY.forConnection((registry,))
        ).receive
        assert receive is not None
        direct = {name: spec[6] for name, spec in receive.items()}
        self.assertEqual(
            direct,
            {
                b"t.Point": True,
                b"t.Frozen": True,
                b"t.Positive": False,
                b"t.AttrsPair": False,
                b"t.OwnInit": False,
                b"t.OwnSetattr": False,
                b"t.Slotted": True,
                b"t.Derived": False,
                b"t.Described": False,
            },
        )
        for unjellyPlain in (
            speedups and speedups.unjellyPlain,
            _jelly._unjellyPlainPython,
        ):
            if unjellyPlain is None:
                continue
            for cls, value in (
                (OwnInit, 3),
                (OwnSetattr, 3),
                (Slotted, 3),
                (Derived, 3),
                (Described, 3),
            ):
                sexp = [
                    b"t." + cls.__name__.encode(),
                    [b"dictionary", [[b"unicode", b"x"], value]],
                ]
                built = unjellyPlain(sexp, receive)
                full = _jelly.Unjellier(
                    POLICY.forConnection((registry,)), None, (registry,)
                ).unjellyFull(sexp)
                self.assertEqual((type(built), built.x), (type(full), full.x))
                self.assertEqual(
                    getattr(built, "__dict__", None), getattr(full, "__dict__", None)
                )

    def test_strictPolicy(self) -> None:
        """
        Tables are built the same under the strict preset.
        """
        taster = strictPolicy().forConnection((REGISTRY,))
        types = _jelly.PlainTypes((REGISTRY,), taster)
        assert types.receive is not None
        self.assertIn(b"t.Point", types.receive)


class PrebuiltTests(SynchronousTestCase):
    """
    C{[PREBUILT, obj]}, how the decoder hands built objects to the full
    unjellier.
    """

    def test_unjelliedAsItself(self) -> None:
        """
        The full unjellier turns it into the object itself, wherever it is.
        """
        point = Point(1, 2.0, "a")
        sexp = [
            b"list",
            [_jelly.PREBUILT, point],
            [b"dictionary", [[b"unicode", b"k"], [_jelly.PREBUILT, point]]],
        ]
        result = _jelly.Unjellier(TASTER, None, (REGISTRY,)).unjellyFull(sexp)
        self.assertIs(result[0], point)
        self.assertIs(result[1]["k"], point)

    def test_notFromTheWire(self) -> None:
        """
        Decoded tags are bytes: no peer can send it, and a tag that is not
        bytes is refused as before.
        """
        self.assertRaises(
            jelly.InsecureJelly,
            _jelly.Unjellier(TASTER).unjellyFull,
            [object(), 1],
        )


class FusedTests(SynchronousTestCase):
    """
    The accelerator's fused encoder and decoder with registered types:
    exactly the bytes, and the objects, of the two-step paths.
    """

    if speedups is None:
        skip = f"the C accelerator is not available: {reason}"

    @TWIN
    @given(typedValues)
    def test_encodeJellied(self, value: object) -> None:
        """
        C{Jellied(value, send)} is encoded as the registry's jelly of it
        is, and L{speedups.isPlain} says so.
        """
        self.assertTrue(speedups.isPlain(value, TYPES.send))
        message = [b"answer", 1, speedups.Jellied(value, TYPES.send)]
        expected = codec._encodePython([b"answer", 1, fullJelly(value)], OUTGOING)
        self.assertEqual(speedups.encode(message, OUTGOING), expected)

    @TWIN
    @given(typedValues)
    def test_encodeIfPlain(self, value: object) -> None:
        """
        L{speedups.encodeIfPlain} encodes a value with registered types
        ahead of its message, and the message carrying the L{Encoded}
        encodes to the bytes of the registry's jelly of it.
        """
        encoded = speedups.encodeIfPlain(value, TYPES.send, OUTGOING, None)
        self.assertIsInstance(encoded, speedups.Encoded)
        self.assertEqual(
            b"".join(encoded.pieces),
            speedups.encode(speedups.Jellied(value, TYPES.send), OUTGOING),
        )
        self.assertEqual(encoded.size, sum(map(len, encoded.pieces)))
        expected = codec._encodePython([b"answer", 1, fullJelly(value)], OUTGOING)
        message = [b"answer", 1, encoded]
        self.assertEqual(speedups.encode(message, OUTGOING), expected)
        self.assertEqual(b"".join(speedups.encodePieces(message, OUTGOING)), expected)

    def test_encodeIfPlainRefuses(self) -> None:
        """
        L{speedups.encodeIfPlain} answers L{None} for what is not plain: an
        object of a class without a send spec, one met twice, one whose
        field cannot be read.
        """
        point = Point(1, 2.5, "p")
        broken = Point(1, 2.5, "p")
        del broken.name
        for value in ([point, object()], [point, point], {"p": broken}, Point):
            self.assertIsNone(
                speedups.encodeIfPlain(value, TYPES.send, OUTGOING, None), value
            )

    def decodeBoth(self, message: list, cuts: List[int], built: bool = False) -> None:
        """
        Decode C{message} cut at C{cuts} in plain-jelly mode with the types,
        and check each element against the full unjellier's outcome.

        @param built: Whether every element must arrive built.
        """
        data = codec._encodePython(message, OUTGOING)
        points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
        decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=True)
        decoder.setPlainJelly(True)
        decoder.setPlainTypes(TYPES.receive)
        received: list = []
        for a, b in zip(points, points[1:]):
            decoder.feedTo(data[a:b], received.append)
        (got,) = received
        self.assertEqual(len(got), len(message))
        for element, original in zip(got[2:], message[2:]):
            kind, full = fullUnjelly(original)
            if type(element) is speedups.Jellied:
                self.assertEqual(kind, "ok", original)
                self.assertTrue(same(element.value, full), (element.value, full))
                continue
            if type(original) is list:
                self.assertFalse(built, f"{original!r} did not arrive built")
            gotKind, gotValue = fullUnjelly(element)
            self.assertEqual(gotKind, kind, (element, original))
            if kind == "ok":
                self.assertTrue(same(gotValue, full), (gotValue, full))
            else:
                self.assertEqual(gotValue, full)

    @TWIN
    @given(
        typedValues,
        st.lists(st.integers(min_value=0, max_value=300), max_size=4),
    )
    def test_decodeValues(self, value: object, cuts: List[int]) -> None:
        """
        Values holding registered objects arrive as the full unjellier
        builds them, at any chunking.
        """
        self.decodeBoth([b"answer", 1, fullJelly(value)], cuts)

    @TWIN
    @given(
        directValues,
        st.lists(st.integers(min_value=0, max_value=300), max_size=4),
    )
    def test_decodeDirectValues(self, value: object, cuts: List[int]) -> None:
        """
        Values holding objects of types built without running their own
        code arrive built, at any chunking.
        """
        self.decodeBoth([b"answer", 1, fullJelly(value)], cuts, built=True)

    @TWIN
    @given(
        st.lists(stateExpressions, max_size=3),
        st.lists(st.integers(min_value=0, max_value=300), max_size=4),
    )
    def test_decodeRandomState(self, states: list, cuts: List[int]) -> None:
        """
        Random state, right or wrong, inside lists and dictionaries: what
        the decoder builds is what the full unjellier builds, and what it
        cannot build is refused or built by the full unjellier as before.
        """
        point = fullJelly(Point(1, 2.0, "p"))
        self.decodeBoth(
            [
                b"message",
                1,
                [b"list", point, *states],
                [b"dictionary", [[b"unicode", b"k"], [b"list", *states, point]]],
            ],
            cuts,
        )

    def test_builtThenNotPlain(self) -> None:
        """
        An object built before the decoder finds that the rest of its
        value is not plain (a reference) reaches the full unjellier as it
        was built, as C{[PREBUILT, object]}, not built again.
        """
        point = [
            b"t.Point",
            [
                b"dictionary",
                [[b"unicode", b"x"], 1],
                [[b"unicode", b"y"], 2.5],
                [[b"unicode", b"name"], [b"unicode", b"p"]],
                [[b"unicode", b"tags"], [b"list"]],
            ],
        ]
        sexp = [
            b"list",
            point,
            [b"dictionary", [[b"unicode", b"c"], point]],
            [b"reference", 1, [b"list"]],
            [b"dereference", 1],
        ]
        decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=True)
        decoder.setPlainJelly(True)
        decoder.setPlainTypes(TYPES.receive)
        (message,) = decoder.feed(codec.encode([b"answer", 1, sexp], OUTGOING))
        expression = message[2]
        self.assertIsNot(type(expression), speedups.Jellied)
        first = expression[1]
        second = expression[2][1][1]
        self.assertIs(first[0], _jelly.PREBUILT)
        self.assertIs(second[0], _jelly.PREBUILT)
        result = _jelly.Unjellier(TASTER, None, (REGISTRY,)).unjellyFull(expression)
        self.assertIs(result[0], first[1])
        self.assertIs(result[1]["c"], second[1])
        self.assertEqual(result[0], Point(1, 2.5, "p"))
        self.assertIs(result[2], result[3])

    def test_ownCodeNotRunWhileParsing(self) -> None:
        """
        The decoder builds only types it can build without running code of
        their own (their C{__post_init__}, validators, constructors): it
        parses before the broker decides whether the message is refused.
        Those are left as expressions, which the broker's unjellying then
        builds.
        """
        built: list = []

        @dataclasses.dataclass
        class Counted:
            n: int

            def __post_init__(self) -> None:
                built.append(self)

        registry = CopyableRegistry()
        registry.register(Counted, "t.Counted")
        registry.register(Point, "t.Point")
        taster = POLICY.forConnection((registry,))
        types = _jelly.PlainTypes((registry,), taster)
        counted = [b"t.Counted", [b"dictionary", [[b"unicode", b"n"], 7]]]
        # A Point without its defaulted field needs its constructor too.
        short = [
            b"t.Point",
            [
                b"dictionary",
                [[b"unicode", b"x"], 1],
                [[b"unicode", b"y"], 2.5],
                [[b"unicode", b"name"], [b"unicode", b"p"]],
            ],
        ]
        decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=True)
        decoder.setPlainJelly(True)
        decoder.setPlainTypes(types.receive)
        data = codec.encode([b"answer", 1, [b"list", counted, short]], OUTGOING)
        (message,) = decoder.feed(data)
        self.assertEqual(built, [])
        self.assertIsNot(type(message[2]), speedups.Jellied)
        expected = [Counted(7), Point(1, 2.5, "p")]
        for unjelly in (
            lambda sexp: speedups.unjellyPlain(sexp, types.receive),
            _jelly.Unjellier(taster, None, (registry,)).unjellyFull,
        ):
            del built[:]
            self.assertEqual(unjelly(message[2]), expected)
            self.assertEqual(len(built), 1)

    #: The state of a L{Flat}, as (key, jellied value) pairs.
    flatFields = [
        (b"x", 1),
        (b"ratio", 2.5),
        (b"name", [b"unicode", b"n\xc3\xa9"]),
        (b"data", b"answer"),
        (b"flag", [b"boolean", b"false"]),
    ]

    def flatState(self, pairs: list) -> list:
        return [b"t.Flat", [b"dictionary", *([[b"unicode", k], v] for k, v in pairs)]]

    def test_quickShapes(self) -> None:
        """
        Copies of a type with only scalar fields, all at hand, are built
        whatever the order of their fields; a field sent twice, a missing
        or unknown one, or a value the field refuses, leave the copy to the
        general parser and the full unjellier, with the same outcome as
        when the bytes arrive one at a time.
        """
        fields = self.flatFields
        shapes = [
            fields,
            list(reversed(fields)),
            [*fields, (b"x", 2)],
            fields[:-1],
            [*fields, (b"other", 1)],
            [(b"x", [b"unicode", b"1"]), *fields[1:]],
            [*fields[:2], (b"name", [b"unicode", b"\xff"]), *fields[3:]],
            [(b"x", 1), (b"ratio", 3), *fields[2:]],
        ]
        message = [b"answer", 1, [b"list", *map(self.flatState, shapes)]]
        self.decodeBoth(message, [])
        self.decodeBoth(message, list(range(300)))
        decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=True)
        decoder.setPlainJelly(True)
        decoder.setPlainTypes(TYPES.receive)
        (got,) = decoder.feed(
            codec._encodePython([b"answer", 1, self.flatState(fields)], OUTGOING)
        )
        self.assertEqual(got[2].value, Flat(1, 2.5, "n\xe9", b"answer", False))

    def test_quickRepeats(self) -> None:
        """
        Copies after the first are compared with its bytes: each copy that
        differs from the one before (in field order, keys, values, kinds)
        is read as if it came first, and a copy like the first after it is
        read quickly again.
        """
        fields = self.flatFields
        odd = [
            list(reversed(fields)),
            [(b"y", 1), *fields[1:]],
            [(b"x", 1), (b"ratio", 2.5), (b"name", [b"unicode", b"\xff"]), *fields[3:]],
            [(b"x", 1), (b"ratio", [b"unicode", b"2.5"]), *fields[2:]],
            [*fields[:4], (b"flag", [b"boolean", b"maybe"])],
            [(b"x", -(2**70)), *fields[1:]],
            [
                (b"x", 1),
                (b"ratio", 7),
                (b"name", [b"unicode", b"n" * 300]),
                *fields[3:],
            ],
            fields[:-1],
        ]
        good = self.flatState(fields)
        copies = [good, good]
        for shape in odd:
            copies += [self.flatState(shape), good, good]
        message = [b"answer", 1, [b"list", *copies]]
        self.decodeBoth(message, [])
        self.decodeBoth(message, [37, 91, 400, 401, 1000])

    def test_copiesLeaveNothing(self) -> None:
        """
        Once a message of copies read straight from the bytes is delivered,
        the decoder keeps nothing for them: a connection holds no more
        memory between messages than before the first.
        """
        flats = [Flat(i, 0.5, f"n{i}", b"d", True) for i in range(5000)]
        data = codec.encode([b"answer", 1, fullJelly(flats)], OUTGOING)
        decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=True)
        decoder.setPlainJelly(True)
        decoder.setPlainTypes(TYPES.receive)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            (message,) = decoder.feed(data)
            self.assertEqual(message[2].value, flats)
            del message
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        self.assertLess(after - before, 8000)

    def test_quickLimits(self) -> None:
        """
        A copy read straight from the bytes counts towards the message's
        limits as the general parser counts it.
        """
        data = codec._encodePython(
            [b"answer", 1, fullJelly(Flat(1, 2.0, "n", b"d", True))], OUTGOING
        )
        flat = Flat(1, 2.0, "n", b"d", True)

        def outcome(limits: dict, whole: bool) -> object:
            decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=True, **limits)
            decoder.setPlainJelly(True)
            decoder.setPlainTypes(TYPES.receive)
            try:
                if whole:
                    (got,) = decoder.feed(data)
                else:
                    # One byte at a time: never all at hand.
                    (got,) = [
                        m
                        for i in range(len(data))
                        for m in decoder.feed(data[i : i + 1])
                    ]
            except codec.FramingError as e:
                return e.limit
            return got[2].value

        for name in ("maxMessageTokens", "maxDepth"):
            # The smallest limit the general parser accepts the message at.
            least = next(n for n in range(1, 100) if outcome({name: n}, False) == flat)
            self.assertEqual(outcome({name: least - 1}, False), name)
            self.assertEqual(outcome({name: least - 1}, True), name)
            self.assertEqual(outcome({name: least}, True), flat)

    def test_typesChange(self) -> None:
        """
        C{setPlainTypes} takes effect for the bytes fed after it, and
        L{None} turns building off.
        """
        sexp = fullJelly(Frozen(b"d", True, 3))
        data = codec.encode([b"answer", 1, sexp], OUTGOING)
        decoder = codec.makeDecoder(vocabulary=INCOMING, accelerated=True)
        decoder.setPlainJelly(True)
        (message,) = decoder.feed(data)
        self.assertEqual(message[2], sexp)
        decoder.setPlainTypes(TYPES.receive)
        (message,) = decoder.feed(data)
        self.assertEqual(message[2].value, Frozen(b"d", True, 3))
        decoder.setPlainTypes(None)
        (message,) = decoder.feed(data)
        self.assertEqual(message[2], sexp)
        self.assertRaises(
            ValueError, codec.makeDecoder(accelerated=False).setPlainTypes, None
        )
