"""
Tests for L{pbext.copyable}.

Most tests drive a registry through a real jelly/unjelly cycle with small
L{jelly._Jellier} / L{jelly._Unjellier} subclasses that consult registries
the way pbext's broker does; a few connect two L{pb.Broker}s in memory.
"""

from __future__ import annotations

import dataclasses
import datetime
import doctest
import enum
import fractions
import gc
import uuid
from decimal import Decimal
from typing import Any, Callable, ClassVar, Literal, Optional

import attrs
from twisted.internet import defer
from twisted.python import failure
from twisted.spread import flavors, jelly, pb
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import pbext.copyable
from pbext.copyable import (
    VERSION_KEY,
    CopiedFailure,
    CopyableRegistry,
    CopyableStateError,
    RegistryError,
    RemoteCacheObserver,
    failureRegistry,
)
from pbext.interfaces import ICopyableRegistry


class _StrictSecurity(jelly.SecurityOptions):
    """
    Jelly security that, like pbext's policies, allows no dotted type name
    by itself: only registries can make one acceptable.
    """

    def __init__(self) -> None:
        super().__init__()
        self.allowBasicTypes()

    def isTypeAllowed(self, typeName: bytes | str) -> bool:
        if isinstance(typeName, str):
            typeName = typeName.encode("utf-8")
        return typeName in self.allowedTypes


class _RegistryJellier(jelly._Jellier):
    """
    A jellier that asks its registries first, as pbext's does.
    """

    def __init__(
        self,
        registries: tuple[CopyableRegistry, ...],
        taster: object = None,
        invoker: object = None,
    ) -> None:
        super().__init__(taster or jelly.DummySecurityOptions(), None, invoker)
        self.registries = registries

    def jelly(self, obj: object) -> object:
        for registry in self.registries:
            expression = registry.jellyFor(obj, self)
            if expression is not None:
                return expression
        return super().jelly(obj)


class _RegistryUnjellier(jelly._Unjellier):
    """
    An unjellier that hands registered type names to its registries, as
    pbext's does.
    """

    def __init__(
        self,
        registries: tuple[CopyableRegistry, ...],
        taster: object = None,
        invoker: object = None,
    ) -> None:
        super().__init__(taster or _StrictSecurity(), None, invoker)
        self.registries = registries

    def unjelly(self, obj: object) -> object:
        if type(obj) is list:
            for registry in self.registries:
                if registry.isTypeKnown(obj[0]):
                    return registry.unjellyFor(obj[0], self, obj)
        return super().unjelly(obj)


class _FakeBroker:
    """
    The few attributes of a broker that copyables use.
    """

    serializingPerspective = None
    unserializingPerspective = None


def _jelly(obj: object, *registries: CopyableRegistry, invoker: object = None) -> Any:
    return _RegistryJellier(registries, invoker=invoker).jelly(obj)


def _unjelly(
    expression: object, *registries: CopyableRegistry, invoker: object = None
) -> Any:
    return _RegistryUnjellier(registries, invoker=invoker).unjellyFull(expression)


def _roundTrip(
    obj: object,
    sender: CopyableRegistry,
    receiver: CopyableRegistry | None = None,
    invoker: object = None,
) -> Any:
    """
    Jelly with one registry and unjelly with another (or the same).
    """
    expression = _jelly(obj, sender, invoker=invoker)
    return _unjelly(expression, receiver or sender, invoker=invoker)


def _state(**fields: object) -> list[object]:
    """
    The jelly expression of a state dictionary with str keys.
    """
    return [b"dictionary"] + [
        [[b"unicode", name.encode("utf-8")], jelly.jelly(value)]
        for name, value in fields.items()
    ]


# Types used by the tests; module level, so that annotations resolve.


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclasses.dataclass
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Everything:
    flag: bool
    count: int
    ratio: float
    name: str
    raw: bytes
    price: Decimal
    stamp: datetime.datetime
    day: datetime.date
    clock: datetime.time
    span: datetime.timedelta
    numbers: list[int]
    row: tuple[int, ...]
    pair: tuple[int, str]
    tags: set[str]
    frozen: frozenset[int]
    scores: dict[str, float]
    maybe: Optional[int]
    either: int | str
    mode: Literal["read", "write"]
    anything: Any
    point: Point
    points: list[Point]
    nothing: None = None


def _everything() -> Everything:
    return Everything(
        flag=True,
        count=-3,
        ratio=2.5,
        name="caf\N{LATIN SMALL LETTER E WITH ACUTE}",
        raw=b"\x00\xff",
        price=Decimal("12.30"),
        stamp=datetime.datetime(2024, 2, 29, 12, 30, 15, 123),
        day=datetime.date(2024, 3, 1),
        clock=datetime.time(23, 59, 1, 5),
        span=datetime.timedelta(days=2, seconds=5, microseconds=7),
        numbers=[1, 2, 3],
        row=(4, 5, 6),
        pair=(7, "seven"),
        tags={"a", "b"},
        frozen=frozenset({8, 9}),
        scores={"x": 1.0, "y": 2},
        maybe=None,
        either="str",
        mode="write",
        anything=[{"nested": (1, 2)}],
        point=Point(1, 2),
        points=[Point(3, 4), Point(5, 6)],
    )


@dataclasses.dataclass
class Built:
    """
    A dataclass that counts its constructions and validates its state.
    """

    built: ClassVar[int] = 0
    amount: int
    label: str = "none"
    values: list[int] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        type(self).built += 1
        if self.amount < 0:
            raise ValueError("amount must not be negative")


class Plain:
    """
    A plain class with annotated fields; one has a class-level default.
    """

    initialized = False
    name: str
    size: int = 10

    def __init__(self, name: str, size: int) -> None:
        self.initialized = True
        self.name = name
        self.size = size


@attrs.define
class Record:
    title: str
    _secret: int = 0


@dataclasses.dataclass
class Node:
    value: int
    children: list[Node] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(init=False, frozen=True)
class NoInit:
    value: int


@dataclasses.dataclass
class Anything:
    payload: Any


@dataclasses.dataclass
class PersonV1:
    name: str


@dataclasses.dataclass
class PersonV3:
    first: str
    last: str
    age: int


class ClassicPoint(pb.Copyable):
    """
    A classic copyable, sent under its fully qualified class name.
    """

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y


class ClassicRemotePoint(pb.RemoteCopy):
    """
    A classic remote copy whose fields are declared, and which adjusts the
    (checked) state it receives.
    """

    x: int
    y: int

    def setCopyableState(self, state: dict[str, Any]) -> None:
        self.x = state["x"]
        self.y = state["y"]
        self.sum = self.x + self.y


class Secretive(pb.Copyable):
    """
    A classic copyable whose state depends on the perspective.
    """

    def __init__(self, public: str, secret: str) -> None:
        self.public = public
        self.secret = secret

    def getStateToCopyFor(self, perspective: object) -> dict[str, object]:
        if perspective == "admin":
            return {"public": self.public, "secret": self.secret}
        return {"public": self.public}


class RemoteSecretive(pb.RemoteCopy):
    public: str
    secret: str = "hidden"


class Counter(pb.Cacheable):
    """
    A cacheable value that keeps its observers in a list, as Twisted's
    howto does, and removes them in L{stoppedObserving}.
    """

    def __init__(self, value: int) -> None:
        self.value = value
        self.observers: list[Any] = []
        self.stopped: list[Any] = []

    def getStateToCacheAndObserveFor(
        self, perspective: object, observer: Any
    ) -> dict[str, object]:
        self.observers.append(observer)
        return {"value": self.value}

    def stoppedObserving(self, perspective: object, observer: Any) -> None:
        self.observers.remove(observer)
        self.stopped.append(observer)

    def setValue(self, value: int) -> None:
        self.value = value
        for observer in self.observers:
            observer.callRemote("setValue", value)


class RemoteCounter(pb.RemoteCache):
    value: int

    def observe_setValue(self, value: int) -> None:
        self.value = value


class CounterRoot(pb.Root):
    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def remote_getCounter(self) -> Counter:
        return self.counter


class PointRoot(pb.Root):
    def __init__(self) -> None:
        self.received: list[object] = []

    def remote_points(self, count: int) -> list[Point]:
        return [Point(i, -i) for i in range(count)]

    def remote_take(self, obj: object) -> int:
        self.received.append(obj)
        return len(self.received)

    def remote_fail(self) -> None:
        raise ValueError("bad value")


# In-memory PB.


class _RegistryBroker(pb.Broker):
    """
    A broker that serializes with its factory's registries: a stand-in for
    pbext's broker, enough to exercise the registry over banana.
    """

    def _registries(self) -> tuple[CopyableRegistry, ...]:
        return getattr(self.factory, "registries", ())

    def serialize(
        self,
        object: object,
        perspective: object = None,
        method: object = None,
        args: object = None,
        kw: object = None,
    ) -> Any:
        if isinstance(object, defer.Deferred):
            return object.addCallback(self.serialize, perspective)
        self.serializingPerspective = perspective
        try:
            return _RegistryJellier(self._registries(), self.security, self).jelly(
                object
            )
        finally:
            self.serializingPerspective = None

    def unserialize(self, sexp: object, perspective: object = None) -> Any:
        self.unserializingPerspective = perspective
        try:
            return _RegistryUnjellier(
                self._registries(), self.security, self
            ).unjellyFull(sexp)
        finally:
            self.unserializingPerspective = None


def _serverFactory(root: object, *registries: CopyableRegistry) -> pb.PBServerFactory:
    factory = pb.PBServerFactory(root)
    if registries:
        factory.protocol = _RegistryBroker
        factory.registries = registries
    return factory


def _clientFactory(*registries: CopyableRegistry) -> pb.PBClientFactory:
    factory = pb.PBClientFactory()
    if registries:
        factory.protocol = _RegistryBroker
        factory.registries = registries
    return factory


class _Connection:
    """
    A client and a server broker connected in memory.
    """

    def __init__(
        self,
        testCase: SynchronousTestCase,
        serverFactory: pb.PBServerFactory,
        clientFactory: pb.PBClientFactory,
    ) -> None:
        self.server = serverFactory.buildProtocol(None)
        self.client = clientFactory.buildProtocol(None)
        self.pump = iosim.connect(
            self.server,
            iosim.FakeTransport(self.server, True),
            self.client,
            iosim.FakeTransport(self.client, False),
        )
        self.testCase = testCase
        testCase.addCleanup(self.disconnect)
        self.root = testCase.successResultOf(clientFactory.getRootObject())

    def call(self, name: str, *args: object) -> defer.Deferred[Any]:
        d = self.root.callRemote(name, *args)
        self.pump.flush()
        return d

    def disconnect(self) -> None:
        if not self.client.disconnected:
            self.client.transport.loseConnection()
            self.pump.flush()


def _pointRegistry() -> CopyableRegistry:
    registry = CopyableRegistry()
    registry.register(Point, "test.Point")
    return registry


class CopyableRegistryInterfaceTests(SynchronousTestCase):
    """
    L{CopyableRegistry} is the pbext implementation of L{ICopyableRegistry}.
    """

    def test_interface(self) -> None:
        """
        A registry provides L{ICopyableRegistry}.
        """
        self.assertTrue(verifyObject(ICopyableRegistry, CopyableRegistry()))

    def test_docstringExample(self) -> None:
        """
        The usage example in the module docstring runs.
        """
        results = doctest.testmod(pbext.copyable, verbose=False)
        self.assertEqual(results.failed, 0)
        self.assertGreater(results.attempted, 0)

    def test_isTypeKnown(self) -> None:
        """
        C{isTypeKnown} is true exactly for registered wire names, given as
        bytes (as on the wire) or str.
        """
        registry = _pointRegistry()
        self.assertTrue(registry.isTypeKnown(b"test.Point"))
        self.assertTrue(registry.isTypeKnown("test.Point"))  # type: ignore[arg-type]
        self.assertFalse(registry.isTypeKnown(b"tests.test_copyable.Point"))
        self.assertEqual(registry.typeNames(), frozenset([b"test.Point"]))

    def test_jellyForUnknown(self) -> None:
        """
        C{jellyFor} returns L{None} for an object whose exact class is not
        registered, subclasses included, so classic jelly handles it.
        """

        class SubPoint(Point):
            pass

        registry = _pointRegistry()
        jellier = _RegistryJellier((registry,))
        self.assertIsNone(registry.jellyFor(1, jellier))
        self.assertIsNone(registry.jellyFor(SubPoint(1, 2), jellier))

    def test_unjellyForUnknown(self) -> None:
        """
        C{unjellyFor} of a name the registry does not know is refused.
        """
        registry = _pointRegistry()
        unjellier = _RegistryUnjellier((registry,))
        error = self.assertRaises(
            CopyableStateError,
            registry.unjellyFor,
            b"test.Other",
            unjellier,
            [b"test.Other", _state()],
        )
        self.assertEqual(error.typeName, "test.Other")


class RoundTripTests(SynchronousTestCase):
    """
    Registered types survive a jelly/unjelly cycle.
    """

    def setUp(self) -> None:
        self.registry = CopyableRegistry()
        self.registry.register(Point, "test.Point")
        self.registry.register(Everything, "test.Everything")

    def test_everyFieldType(self) -> None:
        """
        A dataclass with a field of every supported type comes back equal,
        with the types jelly gives.
        """
        original = _everything()
        copy = _roundTrip(original, self.registry)
        self.assertIsNot(copy, original)
        self.assertEqual(copy, original)
        self.assertIsInstance(copy.point, Point)

    def test_wireFormat(self) -> None:
        """
        A registered object travels as C{[wireName, dictionary-with-str-keys]},
        what a classic copyable sends.
        """
        self.assertEqual(
            _jelly(Point(1, 2), self.registry),
            [b"test.Point", _state(x=1, y=2)],
        )

    def test_stockPeerReads(self) -> None:
        """
        Stock jelly, with a classic L{pb.RemoteCopy} registered for the wire
        name, reads what a registry sends.
        """

        class RemotePoint(pb.RemoteCopy):
            pass

        jelly.setUnjellyableForClass("test.Point", RemotePoint)
        self.addCleanup(jelly.unjellyableRegistry.pop, b"test.Point")
        expression = _jelly([Point(1, 2)], self.registry, invoker=_FakeBroker())
        [copy] = jelly.unjelly(expression, invoker=_FakeBroker())
        self.assertIsInstance(copy, RemotePoint)
        self.assertEqual((copy.x, copy.y), (1, 2))

    def test_intForFloat(self) -> None:
        """
        A C{float} field accepts an C{int}.
        """
        original = _everything()
        original.ratio = 3  # type: ignore[assignment]
        self.assertEqual(_roundTrip(original, self.registry).ratio, 3)

    def test_sharedReference(self) -> None:
        """
        One object sent twice in a message arrives as one object.
        """
        point = Point(1, 2)
        copies = _roundTrip([point, point], self.registry)
        self.assertEqual(copies, [point, point])
        self.assertIs(copies[0], copies[1])

    def test_plainClass(self) -> None:
        """
        A plain class (not a L{pb.Copyable}, not a dataclass) is sent with
        its annotated fields and rebuilt without calling C{__init__}; a field
        with a class default may be absent.
        """
        self.registry.register(Plain, "test.Plain")
        copy = _roundTrip(Plain("a", 3), self.registry)
        self.assertIsInstance(copy, Plain)
        self.assertEqual((copy.name, copy.size), ("a", 3))
        self.assertFalse(copy.initialized)
        copy = _unjelly([b"test.Plain", _state(name="b")], self.registry)
        self.assertEqual((copy.name, copy.size), ("b", 10))

    def test_attrsClass(self) -> None:
        """
        An attrs class round-trips through its constructor, private
        attributes included.
        """
        self.registry.register(Record, "test.Record")
        copy = _roundTrip(Record("t", 5), self.registry)
        self.assertEqual(copy, Record("t", 5))

    def test_dataclassWithoutInit(self) -> None:
        """
        A frozen dataclass without a generated C{__init__} is built by
        setting its fields.
        """
        registry = CopyableRegistry()
        registry.register(NoInit, "test.NoInit")
        copy = _unjelly([b"test.NoInit", _state(value=3)], registry)
        self.assertIsInstance(copy, NoInit)
        self.assertEqual(copy.value, 3)

    def test_decorator(self) -> None:
        """
        C{register(name=...)} is a class decorator that returns the class.
        """
        registry = CopyableRegistry()

        @registry.register(name="test.Decorated")
        @dataclasses.dataclass
        class Decorated:
            value: int

        self.assertTrue(registry.isTypeKnown(b"test.Decorated"))
        self.assertEqual(_roundTrip(Decorated(1), registry), Decorated(1))

    def test_selfReference(self) -> None:
        """
        A class whose annotations name itself, registered before its module
        binds the name, is compiled on first use.
        """
        registry = CopyableRegistry()
        registry.register(Node, "test.Node")
        tree = Node(1, [Node(2), Node(3, [Node(4)])])
        self.assertEqual(_roundTrip(tree, registry), tree)

    def test_referenceable(self) -> None:
        """
        A field annotated with a L{pb.Referenceable} subclass accepts the
        L{pb.RemoteReference} it arrives as.
        """

        @dataclasses.dataclass
        class Holder:
            target: pb.Referenceable

        registry = CopyableRegistry()
        registry.register(Holder, "test.Holder")
        reference = pb.RemoteReference(None, _FakeBroker(), 1, False)
        entry = registry._byName[b"test.Holder"]
        self.assertEqual(entry.checkState({"target": reference}), {"target": reference})


class _RefusalMixin:
    registry: CopyableRegistry

    def refuse(self, name: bytes, state: object, *registries: CopyableRegistry) -> Any:
        return self.assertRaises(  # type: ignore[attr-defined]
            CopyableStateError,
            _unjelly,
            [name, state],
            *(registries or (self.registry,)),
        )


class RefusalTests(_RefusalMixin, SynchronousTestCase):
    """
    Received state that does not match the registered type is refused
    before anything is built.
    """

    def setUp(self) -> None:
        self.registry = CopyableRegistry()
        self.registry.register(Point, "test.Point")
        self.registry.register(Built, "test.Built")
        self.builtBefore = Built.built
        self.addCleanup(setattr, Built, "built", self.builtBefore)

    def test_unknownField(self) -> None:
        """
        A field the type does not declare is refused.
        """
        error = self.refuse(b"test.Point", _state(x=1, y=2, z=3))
        self.assertEqual(str(error), "test.Point: unknown field 'z'")
        self.assertEqual(error.field, "z")

    def test_dunderField(self) -> None:
        """
        A dunder name (which C{__dict__} assignment would turn into, say,
        the instance's class) is refused.
        """
        error = self.refuse(b"test.Point", _state(x=1, y=2, __class__="x"))
        self.assertIn("private field '__class__'", str(error))

    def test_privateField(self) -> None:
        """
        An undeclared private name is refused.
        """
        error = self.refuse(b"test.Point", _state(x=1, y=2, _cache={}))
        self.assertIn("private field '_cache'", str(error))

    def test_missingField(self) -> None:
        """
        A required field that is absent is refused, naming the field and its
        type.
        """
        error = self.refuse(b"test.Point", _state(x=1))
        self.assertEqual(str(error), "test.Point: missing field 'y'")
        self.assertEqual((error.field, error.expected), ("y", "int"))

    def test_wrongType(self) -> None:
        """
        A field of the wrong type is refused with the type name, the field,
        the expected and the received type.
        """
        error = self.refuse(b"test.Point", _state(x="1", y=2))
        self.assertEqual(str(error), "test.Point: field 'x': expected int, got str")
        self.assertEqual(
            (error.typeName, error.field, error.expected, error.got),
            ("test.Point", "x", "int", "str"),
        )

    def test_boolIsNotInt(self) -> None:
        """
        C{True} is not accepted for an C{int} field: jelly keeps booleans
        apart, so this is the peer sending the wrong thing.
        """
        error = self.refuse(b"test.Point", _state(x=True, y=2))
        self.assertEqual(error.got, "bool")

    def test_wrongElement(self) -> None:
        """
        The position of a wrong element inside a container is reported, and
        the dataclass is not constructed.
        """
        error = self.refuse(b"test.Built", _state(amount=1, values=[1, 2, "3"]))
        self.assertEqual(
            str(error), "test.Built: field 'values'[2]: expected int, got str"
        )
        self.assertEqual(Built.built, self.builtBefore)

    def test_constructorRefuses(self) -> None:
        """
        An exception from the type's own constructor (here
        C{__post_init__} validation) refuses the state.
        """
        error = self.refuse(b"test.Built", _state(amount=-1))
        self.assertIn("rejected its state", str(error))
        self.assertIn("amount must not be negative", str(error))

    def test_unregisteredName(self) -> None:
        """
        A dotted type name no registry knows is refused by the security
        policy, not imported.
        """
        self.assertRaises(
            jelly.InsecureJelly,
            _unjelly,
            [b"tests.test_copyable.Point", _state(x=1, y=2)],
            self.registry,
        )

    def test_notADictionary(self) -> None:
        """
        State that is not a dictionary is refused.
        """
        error = self.refuse(b"test.Point", [b"list", 1, 2])
        self.assertIn("state must be a dictionary, got list", str(error))

    def test_nonStringKey(self) -> None:
        """
        A state dictionary whose keys are not strings is refused.
        """
        error = self.refuse(b"test.Point", [b"dictionary", [1, 2]])
        self.assertIn("field names must be strings, got int", str(error))

    def test_bytesKeys(self) -> None:
        """
        Field names sent as bytes (as Python 2 peers do) are accepted.
        """
        point = _unjelly(
            [b"test.Point", [b"dictionary", [b"x", 1], [b"y", 2]]], self.registry
        )
        self.assertEqual(point, Point(1, 2))

    def test_nameSpelledTwoWays(self) -> None:
        """
        A field name sent both as bytes and as text is refused, in either
        order, in a literal state dictionary and in one the unjellier
        builds: which value would win depends on the order of the pairs,
        which the accelerated decoder does not keep for repeated names.
        """
        text = [[b"unicode", b"x"], 1]
        raw = [b"x", 2]
        y = [b"y", 3]
        for pairs in ([text, raw, y], [raw, text, y], [text, raw, text, y]):
            for state in (
                [b"dictionary", *pairs],
                [b"reference", 1, [b"dictionary", *pairs]],
            ):
                error = self.refuse(b"test.Point", state)
                self.assertEqual(
                    str(error), "test.Point: field 'x' given both as bytes and as text"
                )
        # The same spelling repeated keeps the last value, as a dict would.
        point = _unjelly(
            [b"test.Point", [b"dictionary", raw, [b"x", 5], y]], self.registry
        )
        self.assertEqual(point, Point(5, 3))

    def test_malformed(self) -> None:
        """
        An expression with extra elements is refused.
        """
        self.assertRaises(
            CopyableStateError,
            _unjelly,
            [b"test.Point", _state(x=1, y=2), 3],
            self.registry,
        )

    def test_circularReference(self) -> None:
        """
        A copyable whose state refers back to itself cannot be checked before
        it is built, and is refused.
        """
        registry = CopyableRegistry()
        registry.register(Anything, "test.Anything")
        loop = Anything(None)
        loop.payload = loop
        expression = _jelly(loop, registry)
        error = self.assertRaises(CopyableStateError, _unjelly, expression, registry)
        self.assertIn("circular reference", str(error))

    def test_nestedRefusal(self) -> None:
        """
        A nested registered object with bad state refuses the whole message.
        """
        registry = CopyableRegistry()
        registry.register(Node, "test.Node")
        inner = [b"test.Node", _state(value="one")]
        outer = [b"test.Node", _state(value=1)]
        outer[1].append([[b"unicode", b"children"], [b"list", inner]])  # type: ignore[attr-defined]
        error = self.assertRaises(CopyableStateError, _unjelly, outer, registry)
        self.assertEqual(str(error), "test.Node: field 'value': expected int, got str")


class EvolutionTests(_RefusalMixin, SynchronousTestCase):
    """
    Types change between releases: fields with defaults may be absent, and
    versions with upgraders bring older state up to date.
    """

    def setUp(self) -> None:
        self.old = CopyableRegistry()
        self.old.register(PersonV1, "test.Person")
        self.registry = CopyableRegistry()
        self.registry.register(PersonV3, "test.Person", version=3)
        self.registry.registerUpgrader("test.Person", 1, self.oneToTwo)
        self.registry.registerUpgrader("test.Person", 2, self.twoToThree)

    @staticmethod
    def oneToTwo(state: dict[str, Any]) -> dict[str, Any]:
        first, last = state.pop("name").split(" ", 1)
        return {"first": first, "last": last}

    @staticmethod
    def twoToThree(state: dict[str, Any]) -> dict[str, Any]:
        return dict(state, age=0)

    def test_defaultsFillMissingFields(self) -> None:
        """
        An older peer that does not send a field with a default gets the
        default.
        """
        registry = CopyableRegistry()
        registry.register(Built, "test.Built")
        self.addCleanup(setattr, Built, "built", Built.built)
        built = _unjelly([b"test.Built", _state(amount=1)], registry)
        self.assertEqual(built, Built(1, "none", []))

    def test_versionOneSendsNoKey(self) -> None:
        """
        Version 1 state carries no version key: it is what classic peers
        send.
        """
        expression = _jelly(PersonV1("a b"), self.old)
        self.assertEqual(expression, [b"test.Person", _state(name="a b")])

    def test_versionKey(self) -> None:
        """
        Later versions add the reserved C{"pbext.version"} key.
        """
        expression = _jelly(PersonV3("a", "b", 3), self.registry)
        self.assertEqual(
            expression,
            [b"test.Person", _state(first="a", last="b", age=3, **{VERSION_KEY: 3})],
        )
        self.assertEqual(_unjelly(expression, self.registry), PersonV3("a", "b", 3))

    def test_upgrade(self) -> None:
        """
        State from version 1 goes through each upgrader in turn, then is
        checked and built.
        """
        person = _roundTrip(PersonV1("Ada Lovelace"), self.old, self.registry)
        self.assertEqual(person, PersonV3("Ada", "Lovelace", 0))

    def test_upgradeFromMiddle(self) -> None:
        """
        State from version 2 skips the first upgrader.
        """
        state = _state(first="A", last="B", **{VERSION_KEY: 2})
        self.assertEqual(
            _unjelly([b"test.Person", state], self.registry), PersonV3("A", "B", 0)
        )

    def test_newerVersionRefused(self) -> None:
        """
        State of a version newer than the registered one is refused.
        """
        error = self.refuse(
            b"test.Person", _state(first="A", last="B", age=1, **{VERSION_KEY: 4})
        )
        self.assertIn(
            "peer sent version 4; this side knows versions up to 3", str(error)
        )

    def test_newerThanOneRefused(self) -> None:
        """
        A receiver at version 1 refuses versioned state.
        """
        error = self.refuse(
            b"test.Person", _state(name="x", **{VERSION_KEY: 2}), self.old
        )
        self.assertIn("peer sent version 2", str(error))

    def test_invalidVersion(self) -> None:
        """
        A version that is not a positive int is refused.
        """
        error = self.refuse(b"test.Person", _state(name="x", **{VERSION_KEY: "2"}))
        self.assertIn("invalid version '2'", str(error))

    def test_missingUpgrader(self) -> None:
        """
        State of a version with no upgrader is refused.
        """
        registry = CopyableRegistry()
        registry.register(PersonV3, "test.Person", version=3)
        registry.registerUpgrader("test.Person", 2, self.twoToThree)
        error = self.refuse(b"test.Person", _state(name="a b"), registry)
        self.assertIn("no upgrader from version 1", str(error))

    def test_upgraderFails(self) -> None:
        """
        An upgrader that raises refuses the state.
        """
        error = self.refuse(b"test.Person", _state(name="nospace"))
        self.assertIn("upgrader from version 1 failed", str(error))

    def test_upgradedStateChecked(self) -> None:
        """
        What the upgraders produce is checked like received state.
        """
        registry = CopyableRegistry()
        registry.register(PersonV3, "test.Person", version=2)
        registry.registerUpgrader("test.Person", 1, lambda s: dict(s, age="old"))
        error = self.refuse(b"test.Person", _state(first="a", last="b"), registry)
        self.assertEqual(str(error), "test.Person: field 'age': expected int, got str")

    def test_upgraderErrors(self) -> None:
        """
        Upgraders for unknown names, for versions not below the current one,
        or registered twice, are configuration errors.
        """
        self.assertRaises(
            RegistryError, self.registry.registerUpgrader, "test.Nope", 1, dict
        )
        self.assertRaises(
            RegistryError, self.registry.registerUpgrader, "test.Person", 3, dict
        )
        self.assertRaises(
            RegistryError, self.registry.registerUpgrader, "test.Person", 0, dict
        )
        self.assertRaises(
            RegistryError, self.registry.registerUpgrader, "test.Person", 1, dict
        )


class CopierTests(_RefusalMixin, SynchronousTestCase):
    """
    Classes one does not own are registered through copier functions.
    """

    def setUp(self) -> None:
        self.registry = CopyableRegistry()
        self.registry.registerCopier(
            uuid.UUID,
            "test.UUID",
            toState=lambda u: {"hex": u.hex},
            fromState=lambda state: uuid.UUID(hex=state["hex"]),
            fields={"hex": str},
        )
        self.registry.registerCopier(
            Color,
            "test.Color",
            toState=lambda c: {"value": c.value},
            fromState=lambda state: Color(state["value"]),
            fields={"value": str},
        )
        self.registry.registerCopier(
            fractions.Fraction,
            "test.Fraction",
            toState=lambda f: {"n": f.numerator, "d": f.denominator},
            fromState=lambda state: fractions.Fraction(state["n"], state["d"]),
            fields={"n": int, "d": int},
        )

    def test_roundTrips(self) -> None:
        """
        A UUID, an enum member and a fraction come back equal.
        """
        values = [uuid.uuid4(), Color.GREEN, fractions.Fraction(-3, 7)]
        self.assertEqual(_roundTrip(values, self.registry), values)

    def test_enumIdentity(self) -> None:
        """
        An enum member comes back as the very member.
        """
        self.assertIs(_roundTrip(Color.RED, self.registry), Color.RED)

    def test_fieldsChecked(self) -> None:
        """
        The copier's fields are checked before C{fromState} runs.
        """
        error = self.refuse(b"test.Fraction", _state(n=1, d="2"))
        self.assertEqual(str(error), "test.Fraction: field 'd': expected int, got str")
        error = self.refuse(b"test.Fraction", _state(n=1))
        self.assertIn("missing field 'd'", str(error))

    def test_fromStateRefuses(self) -> None:
        """
        An exception from C{fromState} refuses the state.
        """
        error = self.refuse(b"test.UUID", _state(hex="not hex"))
        self.assertIn("rejected its state", str(error))
        error = self.refuse(b"test.Color", _state(value="blue"))
        self.assertIn("rejected its state", str(error))
        error = self.refuse(b"test.Fraction", _state(n=1, d=0))
        self.assertIn("ZeroDivisionError", str(error))


class RegistrationErrorTests(SynchronousTestCase):
    """
    Inconsistent registrations are refused when they are made.
    """

    def test_duplicateName(self) -> None:
        """
        A wire name cannot be registered twice.
        """
        registry = _pointRegistry()
        error = self.assertRaises(RegistryError, registry.register, Plain, "test.Point")
        self.assertIn("already registered", str(error))
        self.assertRaises(RegistryError, registry.registerClassic, Plain, "test.Point")

    def test_duplicateClass(self) -> None:
        """
        A class cannot be sent under two names.
        """
        registry = _pointRegistry()
        self.assertRaises(RegistryError, registry.register, Point, "test.Point2")
        self.assertRaises(
            RegistryError,
            registry.registerCopier,
            Point,
            "test.Point3",
            toState=vars,
            fromState=lambda s: Point(**s),
            fields={"x": int, "y": int},
        )

    def test_classicDoesNotClaimClass(self) -> None:
        """
        L{CopyableRegistry.registerClassic} only receives, so the class may
        also be registered for sending.
        """
        registry = _pointRegistry()
        registry.registerClassic(Point, "myapp.models.Point")
        self.assertEqual(_jelly(Point(1, 2), registry)[0], b"test.Point")

    def test_reservedName(self) -> None:
        """
        Jelly's and PB's own type names cannot be registered.
        """
        registry = CopyableRegistry()
        for name in ["list", "dictionary", "unicode", "None", "remote", "cached"]:
            self.assertRaises(RegistryError, registry.register, Point, name)

    def test_badArguments(self) -> None:
        """
        A non-class, an empty name, a bad version, or a decorator without a
        name are refused.
        """
        registry = CopyableRegistry()
        self.assertRaises(RegistryError, registry.register, "test.Point")
        self.assertRaises(RegistryError, registry.register, Point(1, 2), "test.P")
        self.assertRaises(RegistryError, registry.register, Point, "")
        self.assertRaises(RegistryError, registry.register, Point, b"test.P")
        self.assertRaises(RegistryError, registry.register, Point, "test.P", version=0)
        self.assertRaises(RegistryError, registry.register)
        self.assertFalse(registry.typeNames())

    def test_registrationMessages(self) -> None:
        """
        A registration mistake names what was given and the one thing to
        do about it.
        """
        registry = CopyableRegistry()
        points = _pointRegistry()

        def message(f: Any, *args: Any, **kw: Any) -> str:
            return str(self.assertRaises(RegistryError, f, *args, **kw))

        self.assertEqual(
            message(registry.register, Point(1, 2), "test.P"),
            "register's first argument Point(x=1, y=2) is not a class; give "
            "the class itself, not an instance or its name",
        )
        self.assertEqual(
            message(registry.register, Point, ""),
            "wire name '': give a non-empty str, such as 'myapp.Job'",
        )
        self.assertEqual(
            message(registry.register, Point, "list"),
            "wire name 'list' is a jelly or PB type name; choose a name of "
            "your own, such as 'myapp.Job'",
        )
        self.assertEqual(
            message(registry.register, Point, "test.P", version=0),
            "version=0: give a whole number of 1 or more",
        )
        self.assertEqual(
            message(points.register, Point, "test.Point2"),
            "Point is already registered as 'test.Point'; register each class once",
        )
        self.assertEqual(
            message(points.register, Plain, "test.Point"),
            "wire name 'test.Point' is already registered; give each "
            "registration a wire name of its own",
        )
        self.assertEqual(
            message(
                registry.registerCopier,
                Point,
                "test.C",
                toState=1,
                fromState=2,
                fields={},
            ),
            "toState=1, fromState=2: give two functions, one making the "
            "state and one making the object",
        )
        self.assertEqual(
            message(points.registerUpgrader, "test.Nope", 1, dict),
            "no type registered as 'test.Nope'; register the type before its upgraders",
        )
        self.assertEqual(
            message(points.registerUpgrader, "test.Point", 1, dict),
            "'test.Point' is at version 1: cannot upgrade from version 1; "
            "register the type with version=2 or more first",
        )

    def test_enumNeedsCopier(self) -> None:
        """
        An enum cannot be registered as a field-based type (its members are
        not built from fields); the error points to
        L{CopyableRegistry.registerCopier}.
        """
        registry = CopyableRegistry()
        error = self.assertRaises(RegistryError, registry.register, Color, "test.C")
        self.assertIn("registerCopier", str(error))
        self.assertRaises(RegistryError, registry.registerClassic, Color, "test.C")
        self.assertRaises(RegistryError, registry.registerPair, Point, Color, "test.C")

    def test_copierArguments(self) -> None:
        """
        A copier needs callables and valid field names.
        """
        registry = CopyableRegistry()
        self.assertRaises(
            RegistryError,
            registry.registerCopier,
            uuid.UUID,
            "test.UUID",
            toState=None,
            fromState=uuid.UUID,
            fields={"hex": str},
        )
        for name in ["", VERSION_KEY, 1]:
            self.assertRaises(
                RegistryError,
                registry.registerCopier,
                uuid.UUID,
                "test.UUID",
                toState=vars,
                fromState=uuid.UUID,
                fields={name: str},
            )

    def test_uncheckableAnnotation(self) -> None:
        """
        A field whose annotation cannot be checked is refused at
        registration.
        """

        @dataclasses.dataclass
        class Callback:
            function: Callable[[], None]

        registry = CopyableRegistry()
        error = self.assertRaises(RegistryError, registry.register, Callback, "test.C")
        self.assertIn("field 'function'", str(error))
        self.assertFalse(registry.isTypeKnown(b"test.C"))

    def test_unresolvableAnnotation(self) -> None:
        """
        An annotation naming something that never gets defined is reported
        by L{CopyableRegistry.validate}.
        """

        @dataclasses.dataclass
        class Dangling:
            other: Undefined  # type: ignore[name-defined] # noqa: F821

        registry = CopyableRegistry()
        registry.register(Dangling, "test.Dangling")
        error = self.assertRaises(RegistryError, registry.validate)
        self.assertIn("Undefined", str(error))

    def test_cacheRegistrationErrors(self) -> None:
        """
        L{CopyableRegistry.registerCache} needs a Cacheable and a
        RemoteCache, which may not declare the names RemoteCache uses.
        """

        class BadCache(pb.RemoteCache):
            broker: int

        registry = CopyableRegistry()
        self.assertRaises(
            RegistryError, registry.registerCache, Point, RemoteCounter, "test.C"
        )
        self.assertRaises(
            RegistryError, registry.registerCache, Counter, Point, "test.C"
        )
        self.assertRaises(
            RegistryError, registry.registerCache, Counter, BadCache, "test.C"
        )


class IsolationTests(SynchronousTestCase):
    """
    Registries are independent objects; nothing is process-global.
    """

    def test_twoRegistries(self) -> None:
        """
        A name registered in one registry is unknown to another, which
        neither sends nor receives it.
        """
        first = _pointRegistry()
        second = CopyableRegistry()
        self.assertFalse(second.isTypeKnown(b"test.Point"))
        self.assertIsNone(second.jellyFor(Point(1, 2), _RegistryJellier((second,))))
        expression = _jelly(Point(1, 2), first)
        self.assertRaises(jelly.InsecureJelly, _unjelly, expression, second)

    def test_sameNameDifferentTypes(self) -> None:
        """
        Two registries may give one wire name to different types.
        """
        first = _pointRegistry()
        second = CopyableRegistry()
        second.registerClassic(PersonV1, "test.Point")
        self.assertEqual(_roundTrip(Point(1, 2), first), Point(1, 2))
        self.assertRaises(
            CopyableStateError, _unjelly, _jelly(Point(1, 2), first), second
        )

    def test_globalRegistryUntouched(self) -> None:
        """
        Registering adds nothing to jelly's global tables.
        """
        before = dict(jelly.unjellyableRegistry)
        allowed = dict(jelly.globalSecurity.allowedTypes)
        _pointRegistry().registerClassic(Plain, "myapp.Plain")
        self.assertEqual(jelly.unjellyableRegistry, before)
        self.assertEqual(jelly.globalSecurity.allowedTypes, allowed)


class ClassicTests(_RefusalMixin, SynchronousTestCase):
    """
    Classic peers' copyables are accepted under their classic names, and
    classic Copyable/RemoteCopy pairs can be registered.
    """

    classicName = b"tests.test_copyable.ClassicPoint"

    def setUp(self) -> None:
        self.registry = CopyableRegistry()

    def classicExpression(self, obj: object) -> Any:
        """
        What a stock broker sends for C{obj}.
        """
        return jelly.jelly(obj, jelly.globalSecurity, None, _FakeBroker())

    def test_classicToTyped(self) -> None:
        """
        A stock L{pb.Copyable} is received as a typed class registered under
        its fully qualified name.
        """
        self.registry.registerClassic(Point, self.classicName.decode("ascii"))
        expression = self.classicExpression(ClassicPoint(1, 2))
        self.assertEqual(expression[0], self.classicName)
        self.assertEqual(_unjelly(expression, self.registry), Point(1, 2))

    def test_classicExtraAttributeRefused(self) -> None:
        """
        An attribute of the classic object that the receiving type does not
        declare is refused, not assigned.
        """
        self.registry.registerClassic(Point, self.classicName.decode("ascii"))
        point = ClassicPoint(1, 2)
        point.extra = "x"  # type: ignore[attr-defined]
        error = self.assertRaises(
            CopyableStateError,
            _unjelly,
            self.classicExpression(point),
            self.registry,
        )
        self.assertIn("unknown field 'extra'", str(error))

    def test_classicToRemoteCopy(self) -> None:
        """
        A L{pb.RemoteCopy} with declared fields receives the checked state in
        its C{setCopyableState}.
        """
        self.registry.registerClassic(
            ClassicRemotePoint, self.classicName.decode("ascii")
        )
        copy = _unjelly(
            self.classicExpression(ClassicPoint(1, 2)),
            self.registry,
            invoker=_FakeBroker(),
        )
        self.assertIsInstance(copy, ClassicRemotePoint)
        self.assertEqual((copy.x, copy.y, copy.sum), (1, 2, 3))
        error = self.refuse(self.classicName, _state(x=1, y="2"))
        self.assertEqual(error.field, "y")

    def test_pair(self) -> None:
        """
        L{CopyableRegistry.registerPair} sends the local L{pb.Copyable}'s
        state for the serializing perspective and builds the remote class.
        """
        self.registry.registerPair(Secretive, RemoteSecretive, "test.Secretive")
        broker = _FakeBroker()
        copy = _roundTrip(Secretive("p", "s"), self.registry, invoker=broker)
        self.assertIsInstance(copy, RemoteSecretive)
        self.assertEqual((copy.public, copy.secret), ("p", "hidden"))
        self.assertNotIn("secret", vars(copy))
        broker.serializingPerspective = "admin"  # type: ignore[assignment]
        copy = _roundTrip(Secretive("p", "s"), self.registry, invoker=broker)
        self.assertEqual(copy.secret, "s")

    def test_pairPlainClasses(self) -> None:
        """
        A pair of plain classes sends the local class's declared fields.
        """
        self.registry.registerPair(PersonV1, Plain, "test.Pair")
        copy = _roundTrip(PersonV1("n"), self.registry)
        self.assertIsInstance(copy, Plain)
        self.assertEqual((copy.name, copy.size), ("n", 10))


class InMemoryPBTests(SynchronousTestCase):
    """
    Registries over a real PB connection (banana and brokers, in memory).
    """

    def test_replyOfCopyables(self) -> None:
        """
        A remote method's list of registered objects arrives as objects of
        the registered class.
        """
        registry = _pointRegistry()
        connection = _Connection(
            self,
            _serverFactory(PointRoot(), registry),
            _clientFactory(_pointRegistry()),
        )
        points = self.successResultOf(connection.call("points", 3))
        self.assertEqual(points, [Point(0, 0), Point(1, -1), Point(2, -2)])

    def test_stockClientReceives(self) -> None:
        """
        A stock client with a classic RemoteCopy for the wire name receives a
        pbext server's registered objects.
        """

        class RemotePoint(pb.RemoteCopy):
            pass

        jelly.setUnjellyableForClass("test.Point", RemotePoint)
        self.addCleanup(jelly.unjellyableRegistry.pop, b"test.Point")
        connection = _Connection(
            self, _serverFactory(PointRoot(), _pointRegistry()), _clientFactory()
        )
        [point] = self.successResultOf(connection.call("points", 1))
        self.assertIsInstance(point, RemotePoint)
        self.assertEqual((point.x, point.y), (0, 0))

    def test_stockClientSendsClassic(self) -> None:
        """
        A stock client sending a classic copyable reaches a pbext server
        that registered its classic name.
        """
        registry = CopyableRegistry()
        registry.registerClassic(Point, ClassicTests.classicName.decode("ascii"))
        root = PointRoot()
        connection = _Connection(self, _serverFactory(root, registry), _clientFactory())
        self.assertEqual(
            self.successResultOf(connection.call("take", ClassicPoint(1, 2))), 1
        )
        self.assertEqual(root.received, [Point(1, 2)])

    def test_copiedFailure(self) -> None:
        """
        With L{failureRegistry}, a remote error arrives as a pbext
        L{CopiedFailure}: C{check} and C{trap} of the right type work,
        C{trap} of another type passes the failure on as a
        L{pb.RemoteError}, and C{repr} works.
        """
        connection = _Connection(
            self,
            _serverFactory(PointRoot(), failureRegistry()),
            _clientFactory(failureRegistry()),
        )
        f = self.failureResultOf(connection.call("fail"))
        self.assertIsInstance(f, CopiedFailure)
        self.assertEqual(f.type, b"builtins.ValueError")
        self.assertEqual(f.value, "bad value")
        self.assertEqual(f.check(ValueError), ValueError)
        self.assertEqual(f.trap(ValueError), ValueError)
        error = self.assertRaises(pb.RemoteError, f.trap, KeyError)
        self.assertEqual(error.remoteType, b"builtins.ValueError")
        self.assertIs(error.failure, f)
        self.assertIn("builtins.ValueError: bad value", repr(f))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_trapInErrback(self) -> None:
        """
        An errback that traps another type passes a remote error down the
        chain instead of failing with C{AttributeError} (twisted#12530).
        """
        connection = _Connection(
            self,
            _serverFactory(PointRoot()),
            _clientFactory(failureRegistry()),
        )
        d = connection.call("fail")
        d.addErrback(lambda f: f.trap(KeyError))
        f = self.failureResultOf(d, pb.RemoteError)
        self.assertEqual(f.value.remoteType, b"builtins.ValueError")
        self.flushLoggedErrors(ValueError)


class FailureStateTests(SynchronousTestCase):
    """
    Failure state is read field by field, never assigned wholesale.
    """

    name = b"twisted.spread.pb.CopyableFailure"

    def test_onlyKnownFieldsKept(self) -> None:
        """
        Fields a failure does not need are ignored.
        """
        state = _state(
            type=b"x.Error",
            value="v",
            traceback="tb",
            parents=["x.Error", "builtins.Exception"],
            __class__="boom",
            frames=[],
            whatever=1,
        )
        f = _unjelly([self.name, state], failureRegistry())
        self.assertIsInstance(f, CopiedFailure)
        self.assertIs(type(f), CopiedFailure)
        self.assertNotIn("whatever", vars(f))
        self.assertEqual(f.parents, ["x.Error", "builtins.Exception"])
        self.assertEqual(f.check(Exception), Exception)

    def test_badFailureRefused(self) -> None:
        """
        A failure whose type or value is not text is refused.
        """
        self.assertRaises(
            CopyableStateError,
            _unjelly,
            [self.name, _state(type=1, value="v")],
            failureRegistry(),
        )
        self.assertRaises(
            CopyableStateError,
            _unjelly,
            [self.name, _state(type=b"t", value="v", parents=[1])],
            failureRegistry(),
        )

    def test_defaults(self) -> None:
        """
        A failure with only a type and a value gets a placeholder traceback
        and its type as its only parent; bytes are decoded.
        """
        f = _unjelly([self.name, _state(type="x.E", value=b"v")], failureRegistry())
        self.assertEqual(f.type, b"x.E")
        self.assertEqual(f.value, "v")
        self.assertEqual(f.parents, ["x.E"])
        self.assertIn("x.E: v", f.getTraceback())


class CacheableTests(SynchronousTestCase):
    """
    Typed cacheables keep Cacheable semantics.
    """

    def setUp(self) -> None:
        self.counter = Counter(1)
        self.serverRegistry = CopyableRegistry()
        self.serverRegistry.registerCache(Counter, RemoteCounter, "test.Counter")
        self.clientRegistry = CopyableRegistry()
        self.clientRegistry.registerCache(Counter, RemoteCounter, "test.Counter")
        self.serverFactory = _serverFactory(
            CounterRoot(self.counter), self.serverRegistry
        )

    def connect(self) -> _Connection:
        return _Connection(
            self, self.serverFactory, _clientFactory(self.clientRegistry)
        )

    def test_cacheAndObserve(self) -> None:
        """
        The remote cache is built from checked state and receives
        C{observe_} updates; sent again, it arrives as the same cache.
        """
        connection = self.connect()
        cache = self.successResultOf(connection.call("getCounter"))
        self.assertIsInstance(cache, RemoteCounter)
        self.assertEqual(cache.value, 1)
        self.assertIsInstance(self.counter.observers[0], RemoteCacheObserver)
        self.counter.setValue(5)
        connection.pump.flush()
        self.assertEqual(cache.value, 5)
        again = self.successResultOf(connection.call("getCounter"))
        self.assertEqual(again.value, 5)
        self.assertEqual(len(self.counter.observers), 1)

    def test_stoppedObservingTwoPeers(self) -> None:
        """
        With two peers observing, the one that disconnects is removed from
        the cacheable's list in C{stoppedObserving}, although Twisted's
        broker passes its own observer class, and although the list holds
        another broker's observer first (twisted#9671: comparing the brokers
        raised C{TypeError}).
        """
        first = self.connect()
        second = self.connect()
        self.successResultOf(first.call("getCounter"))
        self.successResultOf(second.call("getCounter"))
        self.assertEqual(len(self.counter.observers), 2)
        second.disconnect()
        self.assertEqual(len(self.counter.observers), 1)
        self.assertIs(self.counter.observers[0].broker, first.server)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_decache(self) -> None:
        """
        When the peer drops its last reference, the cacheable stops being
        observed.
        """
        connection = self.connect()
        d = connection.call("getCounter")
        cache = self.successResultOf(d)
        del d, cache
        gc.collect()
        connection.pump.flush()
        self.assertEqual(self.counter.observers, [])
        self.assertEqual(len(self.counter.stopped), 1)

    def test_stateChecked(self) -> None:
        """
        Cached state that does not match the remote cache's annotations is
        refused.
        """
        unjellier = _RegistryUnjellier((self.clientRegistry,), invoker=pb.Broker())
        error = self.assertRaises(
            CopyableStateError,
            self.clientRegistry.unjellyFor,
            b"test.Counter",
            unjellier,
            [b"test.Counter", 1, _state(value="one")],
        )
        self.assertEqual(error.field, "value")
        error = self.assertRaises(
            CopyableStateError,
            self.clientRegistry.unjellyFor,
            b"test.Counter",
            unjellier,
            [b"test.Counter", 1, _state(value=1, broker=None)],
        )
        self.assertIn("unknown field 'broker'", str(error))

    def test_outsideConnection(self) -> None:
        """
        Outside a connection a cacheable is left to classic jelly, and a
        cache expression is refused.
        """
        self.assertIsNone(
            self.serverRegistry.jellyFor(self.counter, _RegistryJellier(()))
        )
        self.assertRaises(
            CopyableStateError,
            _unjelly,
            [b"test.Counter", 1, _state(value=1)],
            self.clientRegistry,
        )


class RemoteCacheObserverTests(SynchronousTestCase):
    """
    L{RemoteCacheObserver} compares and hashes by broker, cacheable and
    perspective (twisted#9671).
    """

    def test_equality(self) -> None:
        """
        Observers of the same triple are equal and hash equal; others differ.
        """
        broker, other, cached = pb.Broker(), pb.Broker(), Counter(1)
        self.assertEqual(
            RemoteCacheObserver(broker, cached, None),
            RemoteCacheObserver(broker, cached, None),
        )
        self.assertEqual(
            hash(RemoteCacheObserver(broker, cached, "p")),
            hash(RemoteCacheObserver(broker, cached, "p")),
        )
        self.assertNotEqual(
            RemoteCacheObserver(broker, cached, None),
            RemoteCacheObserver(other, cached, None),
        )
        self.assertNotEqual(
            RemoteCacheObserver(broker, cached, None),
            RemoteCacheObserver(broker, Counter(1), None),
        )
        self.assertNotEqual(
            RemoteCacheObserver(broker, cached, "a"),
            RemoteCacheObserver(broker, cached, "b"),
        )
        self.assertNotEqual(RemoteCacheObserver(broker, cached, None), object())

    def test_classicObserverRemoves(self) -> None:
        """
        Twisted's own observer for the same triple removes a pbext observer
        from a set or a list holding observers of several brokers.
        """
        brokers = [pb.Broker() for _ in range(3)]
        cached = Counter(1)
        observers = [RemoteCacheObserver(b, cached, None) for b in brokers]
        classic = flavors.RemoteCacheObserver(brokers[2], cached, None)
        asSet = set(observers)
        asSet.remove(classic)
        self.assertEqual(asSet, set(observers[:2]))
        observers.remove(classic)
        self.assertEqual([o.broker for o in observers], brokers[:2])


class CopiedFailureTests(SynchronousTestCase):
    """
    L{CopiedFailure} is a L{pb.CopiedFailure} whose C{raiseException} works
    (twisted#12530).
    """

    def makeFailure(self) -> CopiedFailure:
        try:
            raise ValueError("v")
        except ValueError:
            state = pb.CopyableFailure().getStateToCopy()
        return _unjelly(
            jelly.jelly(
                _NamedState(b"twisted.spread.pb.CopyableFailure", state),
            ),
            failureRegistry(),
        )

    def test_raiseException(self) -> None:
        """
        C{raiseException} raises a L{pb.RemoteError} naming the remote type.
        """
        f = self.makeFailure()
        error = self.assertRaises(pb.RemoteError, f.raiseException)
        self.assertEqual(error.remoteType, b"builtins.ValueError")
        self.assertEqual(error.args, ("v",))

    def test_isFailure(self) -> None:
        """
        It is still a L{failure.Failure} and a L{pb.CopiedFailure}.
        """
        f = self.makeFailure()
        self.assertIsInstance(f, failure.Failure)
        self.assertIsInstance(f, pb.CopiedFailure)
        self.assertEqual(f.getErrorMessage(), "v")


class _NamedState(jelly.Jellyable):
    """
    Jellies as C{[name, state]}, like a classic copyable.
    """

    def __init__(self, name: bytes, state: dict[str, object]) -> None:
        self.name = name
        self.state = state

    def jellyFor(self, jellier: Any) -> list[object]:
        return [self.name, jellier.jelly(self.state)]
