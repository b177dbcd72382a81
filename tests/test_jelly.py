"""
Tests for L{pbext._jelly}: the closed type lookup, checked copy state,
malformed input, linear reference resolution and the jellier's fast paths.
"""

from __future__ import annotations

import datetime
import decimal
import os
import sys
import textwrap
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.persisted import crefutil
from twisted.spread import banana, jelly, pb
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from pbext import _jelly
from pbext._accelerator import reason, speedups
from pbext._jelly import (
    Jellier,
    MalformedJelly,
    Unjellier,
    _LinearContainer,
    jellyFor,
    unjelly,
    unjellyFor,
)
from pbext.copystate import uncheckedState
from pbext.interfaces import ICopyableRegistry
from pbext.security import (
    SecurityPolicy,
    classicPolicy,
    defaultPolicy,
    strictPolicy,
)


class Node:
    """
    A plain class whose instances tests allow with C{allowInstancesOf}.
    """


class StatefulNode:
    """
    A class that takes its state through C{__setstate__}.
    """

    def __setstate__(self, state: Any) -> None:
        self.received = state


class LocalCopy(pb.RemoteCopy):
    """
    A classic copier with Twisted's default C{setCopyableState}.
    """


class CustomCopy(pb.RemoteCopy):
    """
    A classic copier that checks its own state.
    """

    def setCopyableState(self, state: Any) -> None:
        self.state = state


@uncheckedState
class UncheckedCustomCopy(CustomCopy):
    """
    A classic copier that checks its own state, and says so.
    """


@uncheckedState
class UncheckedStatefulNode(StatefulNode):
    """
    A class that takes (and checks) any state through C{__setstate__}.
    """


class PlainUnjellyable(jelly.Unjellyable):
    """
    A classic unjellyable with Twisted's default C{setStateFor}.
    """


class Point:
    """
    A value a fake registry sends and builds.
    """

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y


@implementer(ICopyableRegistry)
class PointRegistry:
    """
    A registry sending L{Point}s as C{[wireName, x, y]}, with jelly's
    reference bookkeeping so a shared point is sent once.
    """

    def __init__(self, wireName: bytes = b"test.Point") -> None:
        self.wireName = wireName
        self.offered: list[object] = []

    def isTypeKnown(self, typeName: bytes) -> bool:
        return typeName == self.wireName

    def jellyFor(self, obj: object, jellier: Any) -> Any:
        self.offered.append(obj)
        if type(obj) is not Point:
            return None
        sxp = jellier.prepare(obj)
        sxp.extend([self.wireName, obj.x, obj.y])
        return jellier.preserve(obj, sxp)

    def unjellyFor(self, typeName: bytes, unjellier: Any, jellyList: list) -> Point:
        if len(jellyList) != 3:
            raise jelly.InsecureJelly("bad point")
        return Point(jellyList[1], jellyList[2])


class FakeBroker:
    """
    The parts of a broker that PB's own copy tags use.
    """

    unserializingPerspective = None
    serializingPerspective = None

    def __init__(self) -> None:
        self.objects: dict[object, object] = {}
        self.decrefs: list[object] = []

    def localObjectForID(self, luid: object) -> object:
        return self.objects.get(luid)

    def sendDecRef(self, luid: object) -> None:
        self.decrefs.append(luid)

    def cachedLocallyAs(self, cid: object) -> object:
        raise KeyError(cid)

    def remotelyCachedForLUID(self, luid: object) -> object:
        raise KeyError(luid)

    def cacheLocally(self, cid: object, instance: object) -> None:
        pass


def bound(policy: SecurityPolicy | None = None, registries: Any = ()) -> Any:
    """
    The incoming taster of a connection with C{policy} (default preset).
    """
    return (policy or defaultPolicy()).forConnection(registries)


def withRegistered(testCase: SynchronousTestCase, **entries: Any) -> None:
    """
    Patch Twisted's global copier registry (for this test only) with
    C{entries}, named by their wire names with dots written as C{__}.
    """
    registry = dict(jelly.unjellyableRegistry)
    for name, value in entries.items():
        registry[name.replace("__", ".").encode()] = value
    testCase.patch(jelly, "unjellyableRegistry", registry)


def writeVictim(testCase: SynchronousTestCase, name: str) -> None:
    """
    Put a module C{name} on C{sys.path} that would record being imported.
    """
    directory = testCase.mktemp()
    os.makedirs(directory)
    with open(os.path.join(directory, name + ".py"), "w") as f:
        f.write(
            textwrap.dedent(
                """
                class Thing:
                    def f(self):
                        pass

                def thing():
                    pass
                """
            )
        )
    testCase.patch(sys, "path", [directory] + sys.path)
    testCase.addCleanup(sys.modules.pop, name, None)


class EntryPointTests(SynchronousTestCase):
    """
    Tests for the module-level entry points.
    """

    def test_aliases(self) -> None:
        """
        C{jellyFor} and C{unjellyFor} are the documented aliases.
        """
        self.assertIs(jellyFor, _jelly.jelly)
        self.assertIs(unjellyFor, _jelly.unjelly)

    def test_roundTrip(self) -> None:
        """
        Builtin values survive a round trip through pbext's jelly and
        unjelly under the default policy.
        """
        values = [
            1,
            -(2**70),
            1.5,
            b"bytes",
            "t\xe9xt",
            None,
            True,
            False,
            [1, [2, "three"]],
            (1, (2,)),
            {"a": 1, 2: [3]},
            {1, 2},
            frozenset({b"x"}),
            datetime.datetime(2024, 2, 29, 1, 2, 3, 4),
            datetime.date(1999, 12, 31),
            datetime.time(23, 59, 59, 999999),
            datetime.timedelta(days=-1, seconds=5, microseconds=6),
            decimal.Decimal("-12.345"),
        ]
        policy = defaultPolicy()
        for value in values:
            sexp = _jelly.jelly(value, policy.outgoingTaster())
            result = unjelly(sexp, bound(policy))
            self.assertEqual(result, value)
            self.assertEqual(type(result), type(value))

    def test_pbReferences(self) -> None:
        """
        PB's own reference tags reach the broker.
        """
        broker = FakeBroker()
        target = object()
        broker.objects[7] = target
        self.assertIs(unjelly([b"local", 7], bound(), broker), target)
        reference = unjelly([b"remote", 3], bound(strictPolicy()), broker)
        self.assertIsInstance(reference, pb.RemoteReference)
        self.assertEqual((reference.luid, reference.broker), (3, broker))

    def test_pbReferencesNeedBroker(self) -> None:
        """
        Without a broker, PB's reference tags are refused (not crashed on).
        """
        for tag in (b"remote", b"local", b"cached", b"lcache"):
            self.assertRaises(jelly.InsecureJelly, unjelly, [tag, 1], bound())


class UnjellyLookupTests(SynchronousTestCase):
    """
    Tests for the L{Unjellier}'s type lookup.
    """

    importing = [
        [b"module", b"pbextvictim"],
        [b"class", b"pbextvictim.Thing"],
        [b"function", b"pbextvictim.thing"],
        [b"instance", [b"class", b"pbextvictim.Thing"], [b"dictionary"]],
        [b"method", b"f", [b"None"], [b"class", b"pbextvictim.Thing"]],
        [b"persistent", b"anything"],
        [b"pbextvictim.Thing", [b"dictionary"]],
        [b"os.system", [b"unicode", b"true"]],
    ]

    def test_importingRefused(self) -> None:
        """
        The default and strict policies refuse every expression that makes
        stock jelly import by name, and import nothing.
        """
        writeVictim(self, "pbextvictim")
        for build in (defaultPolicy, strictPolicy):
            for sexp in self.importing:
                self.assertRaises(jelly.InsecureJelly, unjelly, sexp, bound(build()))
        self.assertNotIn("pbextvictim", sys.modules)

    def test_importingRefusedWithPermissiveTaster(self) -> None:
        """
        Even a taster that allows everything does not make a non-classic
        policy import by name.
        """
        writeVictim(self, "pbextvictim")
        for sexp in self.importing:
            self.assertRaises(
                jelly.InsecureJelly,
                unjelly,
                sexp,
                jelly.DummySecurityOptions(),
                None,
                (),
                defaultPolicy(),
            )
        self.assertNotIn("pbextvictim", sys.modules)

    def test_classicIsStock(self) -> None:
        """
        A classic policy keeps stock jelly's behaviour: with a permissive
        taster it imports what the peer names, and with its own taster it
        refuses modules nobody allowed, after the module check.
        """
        writeVictim(self, "pbextvictim")
        with self.assertRaises(jelly.InsecureJelly) as raised:
            unjelly([b"pbextvictim.Thing", [b"dictionary"]], bound(classicPolicy()))
        self.assertIn("Module pbextvictim not allowed", str(raised.exception))
        self.assertNotIn("pbextvictim", sys.modules)
        module = unjelly(
            [b"module", b"pbextvictim"],
            jelly.DummySecurityOptions(),
            None,
            (),
            classicPolicy(),
        )
        self.assertIs(module, sys.modules["pbextvictim"])

    def test_allowInstancesOf(self) -> None:
        """
        Instances of classes given to C{allowInstancesOf} are rebuilt from
        the class object, under the default and the classic policy.
        """
        for build in (defaultPolicy, classicPolicy):
            policy = build()
            policy.allowInstancesOf(Node)
            node = Node()
            node.value = [1]
            sexp = jelly.jelly(node, policy)
            result = unjelly(sexp, bound(policy))
            self.assertIsInstance(result, Node)
            self.assertEqual(result.value, [1])

    def test_allowInstancesOfStockTaster(self) -> None:
        """
        With a stock C{SecurityOptions} taster and no policy, classes it
        allows are found by name, without importing.
        """
        taster = jelly.SecurityOptions()
        taster.allowInstancesOf(Node)
        result = unjelly([b"tests.test_jelly.Node", [b"dictionary"]], taster)
        self.assertIsInstance(result, Node)

    def test_unregisteredAllowedName(self) -> None:
        """
        A name the policy allows but nothing can build is refused with an
        explanation, not imported.
        """
        policy = defaultPolicy()
        policy.allowTypes(b"tests.test_jelly.Node")
        policy.allowedClasses.clear()
        with self.assertRaises(jelly.InsecureJelly) as raised:
            unjelly([b"tests.test_jelly.Nodes", [b"dictionary"]], bound(policy))
        self.assertIn("not allowed", str(raised.exception))
        with self.assertRaises(jelly.InsecureJelly) as raised:
            unjelly([b"tests.test_jelly.Node", [b"dictionary"]], bound(policy))
        self.assertIn("no local type", str(raised.exception))

    def test_classicRegistry(self) -> None:
        """
        Copiers registered with C{setUnjellyableForClass} are used by the
        default policy and refused by the strict one.
        """
        withRegistered(self, test__Copy=LocalCopy)
        sexp = [b"test.Copy", [b"dictionary", [[b"unicode", b"a"], 1]]]
        result = unjelly(sexp, bound(), FakeBroker())
        self.assertIsInstance(result, LocalCopy)
        self.assertEqual(result.a, 1)
        self.assertRaises(jelly.InsecureJelly, unjelly, sexp, bound(strictPolicy()))

    def test_classicFactoryRegistry(self) -> None:
        """
        Factories registered with C{setUnjellyableFactoryForClass} are used
        by the default policy and refused by the strict one.
        """
        factories = dict(jelly.unjellyableFactoryRegistry)
        factories[b"test.Made"] = lambda state: ("made", state)
        self.patch(jelly, "unjellyableFactoryRegistry", factories)
        sexp = [b"test.Made", [b"dictionary", [b"a", 1]]]
        self.assertEqual(unjelly(sexp, bound()), ("made", {b"a": 1}))
        self.assertRaises(jelly.InsecureJelly, unjelly, sexp, bound(strictPolicy()))

    def test_pbFailureUnderStrict(self) -> None:
        """
        Failures (PB's own copy tag) are received even by the strict policy,
        which ignores Twisted's global registry.
        """
        broker = FakeBroker()
        failure = pb.CopyableFailure(ValueError("boom"))
        sexp = jelly.jelly(failure, jelly.globalSecurity, None, broker)
        result = unjelly(sexp, bound(strictPolicy()), broker)
        self.assertIsInstance(result, pb.CopiedFailure)
        self.assertEqual(result.value, "boom")
        self.assertEqual(result.type, b"builtins.ValueError")

    def test_registries(self) -> None:
        """
        The connection's registries build their types, and win over
        Twisted's global registry for a name both know.
        """
        withRegistered(self, test__Point=LocalCopy)
        registry = PointRegistry()
        result = unjelly([b"test.Point", 1, 2], bound(registries=[registry]))
        self.assertIsInstance(result, Point)
        self.assertEqual((result.x, result.y), (1, 2))

    def test_registriesIsolated(self) -> None:
        """
        A type only another connection's registry knows is refused.
        """
        one = bound(registries=[PointRegistry(b"one.Point")])
        two = bound(registries=[PointRegistry(b"two.Point")])
        self.assertIsInstance(unjelly([b"one.Point", 1, 2], one), Point)
        self.assertRaises(jelly.InsecureJelly, unjelly, [b"one.Point", 1, 2], two)

    def test_registryCannotRedefineBasics(self) -> None:
        """
        A registry claiming a basic expression's tag is not consulted for
        it.
        """
        registry = PointRegistry(b"list")
        self.assertEqual(unjelly([b"list", 1, 2], bound(registries=[registry])), [1, 2])


class CopyStateTests(SynchronousTestCase):
    """
    Tests for the state check of classic copiers.
    """

    badStates = [
        [b"dictionary", [[b"unicode", b"__class__"], 1]],
        [b"dictionary", [[b"unicode", b"__dict__"], [b"dictionary"]]],
        [b"dictionary", [b"__class__", 1]],
        [b"dictionary", [[b"unicode", b"__x"], 1]],
        [b"dictionary", [[b"unicode", b"not-an-identifier"], 1]],
        [b"dictionary", [5, 1]],
        [b"dictionary", [b"\xff", 1]],
        [b"list", 1, 2],
        [b"unicode", b"text"],
    ]

    def test_dunderStateRefused(self) -> None:
        """
        State with dunder, non-identifier or non-string keys, or that is not
        a dictionary, is refused for a copier with Twisted's default
        C{setCopyableState}, with or without a broker.
        """
        withRegistered(self, test__Copy=LocalCopy)
        for state in self.badStates:
            for broker in (None, FakeBroker()):
                with self.assertRaises(jelly.InsecureJelly) as raised:
                    unjelly([b"test.Copy", state], bound(), broker)
                self.assertIn("tests.test_jelly.LocalCopy", str(raised.exception))

    def test_goodState(self) -> None:
        """
        A dictionary of identifier keys (str or bytes) is accepted, as is
        empty state.
        """
        withRegistered(self, test__Copy=LocalCopy)
        sexp = [
            b"test.Copy",
            [b"dictionary", [[b"unicode", b"a"], 1], [b"b", [b"list"]], [b"_c", 3]],
        ]
        result = unjelly(sexp, bound(), FakeBroker())
        self.assertEqual((result.a, result.b, result._c), (1, [], 3))
        result = unjelly([b"test.Copy", [b"None"]], bound(), FakeBroker())
        self.assertIsInstance(result, LocalCopy)

    def test_classicUnchecked(self) -> None:
        """
        The classic policy does not check state, like stock PB.
        """
        withRegistered(self, test__Copy=LocalCopy)
        sexp = [b"test.Copy", [b"dictionary", [[b"unicode", b"__x"], 1]]]
        result = unjelly(sexp, bound(classicPolicy()), FakeBroker())
        self.assertEqual(result.__dict__, {"__x": 1})

    def test_checkedUnderClassicWhenAsked(self) -> None:
        """
        A classic policy with C{checkCopyState} checks state too.
        """
        withRegistered(self, test__Copy=LocalCopy)
        policy = SecurityPolicy(classic=True, checkCopyState=True)
        sexp = [b"test.Copy", [b"dictionary", [[b"unicode", b"__x"], 1]]]
        self.assertRaises(
            jelly.InsecureJelly, unjelly, sexp, bound(policy), FakeBroker()
        )

    def test_customSetterChecked(self) -> None:
        """
        A copier with its own C{setCopyableState} has its state checked
        too, before that method sees it; declared with
        L{pbext.copystate.uncheckedState}, it receives its state as sent
        and decides what to accept.
        """
        withRegistered(
            self, test__Custom=CustomCopy, test__Unchecked=UncheckedCustomCopy
        )
        for state in self.badStates:
            with self.assertRaises(jelly.InsecureJelly):
                unjelly([b"test.Custom", state], bound(), FakeBroker())
        sexp = [b"test.Unchecked", [b"list", 1]]
        self.assertEqual(unjelly(sexp, bound(), FakeBroker()).state, [1])

    def test_failureState(self) -> None:
        """
        State for PB's copied failures is checked too.
        """
        broker = FakeBroker()
        sexp = jelly.jelly(
            pb.CopyableFailure(ValueError("x")), jelly.globalSecurity, None, broker
        )
        self.assertIsInstance(unjelly(sexp, bound(), broker), pb.CopiedFailure)
        sexp[1].append([[b"unicode", b"__class__"], 1])
        self.assertRaises(jelly.InsecureJelly, unjelly, sexp, bound(), broker)

    def test_unjellyableState(self) -> None:
        """
        State for a plain L{jelly.Unjellyable} with the default
        C{setStateFor} is checked.
        """
        withRegistered(self, test__Plain=PlainUnjellyable)
        good = [b"test.Plain", [b"dictionary", [[b"unicode", b"a"], 1]]]
        self.assertEqual(unjelly(good, bound()).a, 1)
        bad = [b"test.Plain", [b"dictionary", [[b"unicode", b"__class__"], 1]]]
        self.assertRaises(jelly.InsecureJelly, unjelly, bad, bound())

    def test_allowedInstanceState(self) -> None:
        """
        State for C{allowInstancesOf} classes is checked, also when the
        class takes it through C{__setstate__}, unless the class is
        declared with L{pbext.copystate.uncheckedState}.
        """
        policy = defaultPolicy()
        policy.allowInstancesOf(Node, StatefulNode, UncheckedStatefulNode)
        bad = [
            b"tests.test_jelly.Node",
            [b"dictionary", [[b"unicode", b"__class__"], 1]],
        ]
        self.assertRaises(jelly.InsecureJelly, unjelly, bad, bound(policy))
        sexp = [b"tests.test_jelly.StatefulNode", [b"list", 1]]
        self.assertRaises(jelly.InsecureJelly, unjelly, sexp, bound(policy))
        good = [b"tests.test_jelly.StatefulNode", [b"dictionary", [b"a", 1]]]
        self.assertEqual(unjelly(good, bound(policy)).received, {b"a": 1})
        sexp = [b"tests.test_jelly.UncheckedStatefulNode", [b"list", 1]]
        self.assertEqual(unjelly(sexp, bound(policy)).received, [1])


# Random jelly-like input: tags from jelly's vocabulary or random bytes,
# numbers and bytes, nested in lists.
jellyTags = st.sampled_from(
    [
        b"None",
        b"unicode",
        b"boolean",
        b"decimal",
        b"datetime",
        b"date",
        b"time",
        b"timedelta",
        b"list",
        b"tuple",
        b"set",
        b"frozenset",
        b"dictionary",
        b"reference",
        b"dereference",
        b"unpersistable",
        b"module",
        b"class",
        b"function",
        b"method",
        b"instance",
        b"persistent",
        b"remote",
        b"local",
        b"cached",
        b"lcache",
        b"twisted.spread.pb.CopyableFailure",
        b"test.Copy",
        b"os.system",
        b"true",
        b"false",
    ]
) | st.binary(max_size=6)
jellyLeaves = (
    jellyTags | st.integers(min_value=-3, max_value=3) | st.integers() | st.floats()
)
jellyExpressions = st.recursive(
    jellyLeaves,
    lambda children: (
        st.lists(children, max_size=5)
        | st.builds(
            lambda tag, rest: [tag, *rest], jellyTags, st.lists(children, max_size=4)
        )
    ),
    max_leaves=40,
)


class MalformedTests(SynchronousTestCase):
    """
    Tests for L{MalformedJelly}.
    """

    malformed = [
        [],
        [5],
        ["list"],
        [b"None", 1],
        [b"unicode"],
        [b"unicode", 5],
        [b"unicode", b"\xff"],
        [b"boolean", b"maybe"],
        [b"boolean"],
        [b"decimal", b"1", 2],
        [b"decimal", 1],
        [b"datetime", b"2020 x 1 2 3 4 5"],
        [b"datetime", b"2020 13 1 0 0 0 0"],
        [b"datetime", 5],
        [b"date", b"1 2 3 4 5 6 7 8 9 10"],
        [b"time", b"99 0 0 0"],
        [b"timedelta", b"1 2"],
        [b"timedelta", b"9" * 200],
        [b"dictionary", 1],
        [b"dictionary", [1, 2, 3]],
        [b"dictionary", [[b"list"], 1]],
        [b"set", [b"list"]],
        [b"reference", 1],
        [b"reference", b"1", 2],
        [b"reference", [b"list"], 2],
        [b"list", [b"reference", 1, 1], [b"reference", 1, 2]],
        [b"dereference", 1],
        [b"dereference"],
        [b"dereference", 1.5],
        [b"list", [b"dereference", 9]],
        [b"reference", 1, [b"tuple", [b"dereference", 1]]],
        [b"unpersistable"],
        [b"remote", [b"list"]],
        [b"local", 1, 2],
    ]

    def test_malformed(self) -> None:
        """
        Each malformed expression raises L{MalformedJelly} (an
        L{jelly.InsecureJelly}), under every preset.
        """
        for build in (defaultPolicy, strictPolicy, classicPolicy):
            for sexp in self.malformed:
                with self.assertRaises(MalformedJelly, msg=repr(sexp)):
                    unjelly(sexp, bound(build()), FakeBroker())
        self.assertTrue(issubclass(MalformedJelly, jelly.InsecureJelly))

    def test_brokerErrors(self) -> None:
        """
        Errors the broker raises for unknown IDs become L{MalformedJelly}.
        """
        self.assertRaises(
            MalformedJelly, unjelly, [b"cached", 5], bound(), FakeBroker()
        )

    def test_deepNesting(self) -> None:
        """
        Nesting deeper than the stack allows is L{MalformedJelly}, while
        the default limit's depth unjellies.
        """

        def nested(depth: int) -> list:
            sexp: list = [b"list"]
            for _ in range(depth - 1):
                sexp = [b"list", sexp]
            return sexp

        self.assertRaises(MalformedJelly, unjelly, nested(5000), bound())
        result = unjelly(nested(defaultPolicy().limits.maxDepth), bound())
        self.assertIsInstance(result, list)

    @settings(
        max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(jellyExpressions)
    def test_randomExpressions(self, sexp: Any) -> None:
        """
        Random nested lists of tags, numbers and bytes either unjelly or
        raise an L{jelly.InsecureJelly} (of which L{MalformedJelly} is one),
        never another exception.
        """
        withRegistered(self, test__Copy=LocalCopy)
        for policy in (defaultPolicy(), strictPolicy()):
            for broker in (None, FakeBroker()):
                try:
                    unjelly(sexp, bound(policy), broker)
                except jelly.InsecureJelly:
                    pass


class ReferenceTests(SynchronousTestCase):
    """
    Tests for reference resolution.
    """

    def patchStockContainers(self) -> None:
        """
        Make crefutil's quadratic containers fail if anything uses them.
        """

        def explode(*args: object, **kwargs: object) -> None:
            raise AssertionError("crefutil's quadratic container used")

        self.patch(crefutil._Container, "__init__", explode)

    def test_largeTupleWithForwardReference(self) -> None:
        """
        A 150,000-item tuple holding a reference to its (unfinished)
        container unjellies correctly, without crefutil's quadratic
        container.
        """
        self.patchStockContainers()
        outer: list = []
        items = (outer,) + tuple(range(150_000))
        outer.append(items)
        sexp = jelly.jelly(outer)
        self.assertEqual(sexp[2][1][0], b"tuple")
        result = unjelly(sexp, bound())
        self.assertIsInstance(result[0], tuple)
        self.assertEqual(len(result[0]), 150_001)
        self.assertIs(result[0][0], result)
        self.assertEqual(result[0][1:], tuple(range(150_000)))

    def test_linearContainerCountsSlots(self) -> None:
        """
        The container resolves once every pending slot is known, however
        often a slot is set, and waits again for a slot set to another
        placeholder.
        """
        first, second, third = (crefutil.NotKnown() for _ in range(3))
        items = [first, 1, second]
        container = _LinearContainer(items, tuple, [0, 2])
        holder = [container]
        container.addDependant(holder, 0)
        container[0] = "a"
        container[0] = "a"
        self.assertFalse(container.resolved)
        container[2] = third
        self.assertFalse(container.resolved)
        third.resolveDependants("c")
        self.assertTrue(container.resolved)
        self.assertEqual(holder, [("a", 1, "c")])

    def test_setsWithForwardReferences(self) -> None:
        """
        Sets, frozensets and tuples holding a reference to an unfinished
        instance resolve to containers holding the finished instance.
        """
        policy = defaultPolicy()
        policy.allowInstancesOf(Node)
        node = Node()
        node.frozen = frozenset({node})
        node.mutable = {node, 1}
        node.pair = (node, 2)
        sexp = jelly.jelly(node, policy)
        result = unjelly(sexp, bound(policy))
        self.assertIsInstance(result, Node)
        self.assertEqual(result.frozen, frozenset({result}))
        self.assertEqual(result.mutable, {result, 1})
        self.assertIsInstance(result.mutable, set)
        self.assertEqual(result.pair, (result, 2))
        stock = jelly.unjelly(sexp, policy)
        self.assertEqual(
            (type(stock.frozen), type(stock.mutable), type(stock.pair)),
            (type(result.frozen), type(result.mutable), type(result.pair)),
        )

    def test_tupleReferencedInsideItself(self) -> None:
        """
        A pending tuple referenced from inside its own items resolves
        everywhere (crefutil leaves a placeholder behind).
        """
        outer: list = []
        inner: list = []
        pair = (outer, inner)
        inner.append(pair)
        outer.append(pair)
        result = unjelly(jelly.jelly(outer), bound())
        self.assertIsInstance(result[0], tuple)
        self.assertIs(result[0][0], result)
        self.assertIs(result[0][1][0], result[0])

    def test_dereferenceAfterResolution(self) -> None:
        """
        A reference to a tuple used after the tuple was resolved gives the
        tuple (crefutil fails an assertion).
        """
        inner: list = []
        pair = (inner,)
        inner.append(pair)
        sexp = jelly.jelly([inner, pair])
        self.assertRaises(AssertionError, jelly.unjelly, sexp)
        result = unjelly(sexp, bound())
        self.assertIs(result[1], result[0][0])
        self.assertIs(result[1][0], result[0])

    def test_dictionaryPlaceholderValue(self) -> None:
        """
        A dictionary value that is still a placeholder is replaced in place,
        keeping the sender's key order.
        """
        outer: list = []
        outer.append({"x": outer, "y": 1})
        result = unjelly(jelly.jelly(outer), bound())
        self.assertEqual(list(result[0]), ["x", "y"])
        self.assertIs(result[0]["x"], result)
        self.assertEqual(list(jelly.unjelly(jelly.jelly(outer))[0]), ["x", "y"])

    def test_dictionaryPlaceholderKey(self) -> None:
        """
        A dictionary key that is still a placeholder is inserted once known
        (crefutil fails hashing the placeholder).
        """
        policy = defaultPolicy()
        policy.allowInstancesOf(Node)
        node = Node()
        node.table = {node: 1}
        sexp = jelly.jelly(node, policy)
        self.assertRaises(AssertionError, jelly.unjelly, sexp, policy)
        result = unjelly(sexp, bound(policy))
        self.assertEqual(result.table, {result: 1})

    def test_sharedAndCyclic(self) -> None:
        """
        Shared and self-referencing mutable values keep their identity.
        """
        shared = [1]
        cyclic: list = []
        cyclic.append(cyclic)
        selfish: dict = {}
        selfish["me"] = selfish
        result = unjelly(jelly.jelly([shared, shared, cyclic, selfish]), bound())
        self.assertIs(result[0], result[1])
        self.assertIs(result[2][0], result[2])
        self.assertIs(result[3]["me"], result[3])


hashables = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.binary(max_size=10)
    | st.text(max_size=10),
    lambda children: (
        st.tuples(children, children) | st.frozensets(children, max_size=3)
    ),
    max_leaves=6,
)

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False)
    | st.binary(max_size=20)
    | st.text(max_size=20)
    | st.datetimes()
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | hashables,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(hashables, children, max_size=4)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
    ),
    max_leaves=30,
)


class CountingSecurityOptions(jelly.SecurityOptions):
    """
    A stock taster subclass (so no fast path applies) that counts calls.
    """

    calls = 0

    def isTypeAllowed(self, typeName: Any) -> bool:
        self.calls += 1
        return super().isTypeAllowed(typeName)


class JellyTests(SynchronousTestCase):
    """
    Tests for the L{Jellier}: stock output, registries, fast paths.
    """

    def assertSameAsStock(
        self, value: object, taster: Any, invoker: Any = None
    ) -> None:
        """
        pbext's jelly gives exactly stock jelly's expression, down to the
        types (so banana encodes the same bytes).
        """
        ours = _jelly.jelly(value, taster, invoker)
        stock = jelly.jelly(value, taster, None, invoker)
        self.assertEqual(repr(ours), repr(stock))
        self.assertEqual(ours, stock)
        self.assertEqual(banana.encode(ours), banana.encode(stock))

    @settings(max_examples=300, deadline=None)
    @given(values)
    def test_sameAsStock(self, value: object) -> None:
        """
        For builtin values, pbext's jelly produces stock jelly's
        expressions with every kind of taster (fast and slow paths).
        """
        policy = defaultPolicy()
        for taster in (
            jelly.globalSecurity,
            jelly.DummySecurityOptions(),
            policy,
            policy.outgoingTaster(),
            classicPolicy().outgoingTaster(),
            CountingSecurityOptions(),
        ):
            self.assertSameAsStock(value, taster)

    def test_sharedAndCyclicSameAsStock(self) -> None:
        """
        Shared and cyclic structures give stock's references.
        """
        shared = [1, "x"]
        cyclic: list = []
        cyclic.append(cyclic)
        selfish: dict = {}
        selfish["me"] = selfish
        pair: tuple = (shared,)
        key = (1, "k")
        value = [shared, shared, pair, pair, cyclic, selfish, {key: shared}, {key}, key]
        for taster in (jelly.globalSecurity, defaultPolicy().outgoingTaster()):
            self.assertSameAsStock(value, taster)

    def test_otherObjectsSameAsStock(self) -> None:
        """
        Values outside the fast paths (failures, instances, subclasses of
        builtins, unpersistable objects) are jellied as stock does.
        """
        broker = FakeBroker()
        policy = defaultPolicy()
        policy.allowInstancesOf(Node)
        node = Node()
        node.x = [1]

        class MyList(list):
            pass

        values = [
            pb.CopyableFailure(ValueError("x")),
            node,
            MyList([1]),
            object(),
            [node, node],
        ]
        for value in values:
            self.assertSameAsStock(value, policy.outgoingTaster(), broker)

    def test_fastPathSkipsTaster(self) -> None:
        """
        With a taster known to allow builtins, builtin values are sent
        without building their type names; with an unknown taster, each
        value is tasted as in stock.
        """
        names: list[object] = []

        def countingQual(klass: type) -> str:
            names.append(klass)
            return originalQual(klass)

        originalQual = jelly.qual
        self.patch(jelly, "qual", countingQual)
        value = [1, "two", None, True, (3.0,), {b"k": {4}}]
        _jelly.jelly(value, defaultPolicy().outgoingTaster())
        self.assertEqual(names, [])
        counting = CountingSecurityOptions()
        _jelly.jelly(value, counting)
        self.assertEqual(counting.calls, 11)

    def test_refusedTypeAsStock(self) -> None:
        """
        A taster that refuses a builtin type refuses it as stock does.
        """

        class NoStrings(jelly.SecurityOptions):
            def isTypeAllowed(self, typeName: Any) -> bool:
                return typeName != b"builtins.str"

        self.assertRaises(jelly.InsecureJelly, _jelly.jelly, ["x"], NoStrings())

    def test_registriesFirst(self) -> None:
        """
        Registries serialize their types, keeping shared identity, and are
        not asked about builtin values.
        """
        registry = PointRegistry()
        point = Point(1, 2)
        sexp = _jelly.jelly(
            [point, point, 5, "x"], defaultPolicy().outgoingTaster(), None, [registry]
        )
        self.assertEqual(registry.offered, [point])
        self.assertEqual(
            sexp,
            [
                b"list",
                [b"reference", 1, [b"test.Point", 1, 2]],
                [b"dereference", 1],
                5,
                [b"unicode", b"x"],
            ],
        )
        result = unjelly(sexp, bound(registries=[registry]))
        self.assertIsInstance(result[0], Point)
        self.assertIs(result[0], result[1])

    def test_registryDeclines(self) -> None:
        """
        An object no registry claims is jellied as stock does.
        """
        registry = PointRegistry()
        failure = pb.CopyableFailure(ValueError("x"))
        broker = FakeBroker()
        ours = Jellier(defaultPolicy().outgoingTaster(), broker, [registry]).jelly(
            failure
        )
        self.assertEqual(ours, jelly.jelly(failure, jelly.globalSecurity, None, broker))
        self.assertEqual(registry.offered, [failure])

    def test_unjellierPolicyFromTaster(self) -> None:
        """
        The unjellier takes its policy from a bound taster, or from a policy
        used directly as the taster.
        """
        policy = strictPolicy()
        self.assertIs(Unjellier(policy.forConnection(())).policy, policy)
        self.assertIs(Unjellier(policy).policy, policy)
        unjellier = Unjellier(jelly.SecurityOptions())
        self.assertIsNone(unjellier.policy)
        self.assertFalse(unjellier.classic)
        self.assertTrue(unjellier.checkCopyState)


# The twin tests run one hypothesis test from two classes, on purpose.
TWIN_HEALTH_CHECKS = [HealthCheck.too_slow, HealthCheck.differing_executors]


class PlainFastPathTestsMixin:
    """
    L{_jelly.jellyPlain} and L{_jelly.unjellyPlain}, the jellier-free paths
    pbext's broker takes for builtin values, give exactly what the full
    L{Jellier} and L{Unjellier} give, or step aside.

    The tests run twice: against the C accelerator and against the
    pure-Python functions, which must agree.
    """

    jellyPlain: Any
    unjellyPlain: Any

    @settings(max_examples=300, deadline=None, suppress_health_check=TWIN_HEALTH_CHECKS)
    @given(values)
    def test_jellyPlainSameAsJellier(self, value: object) -> None:
        """
        Where L{_jelly.jellyPlain} answers, its expression is the full
        jellier's, down to the types.
        """
        plain = self.jellyPlain(value)
        full = Jellier(defaultPolicy().outgoingTaster()).jelly(value)
        if plain is not _jelly.NOT_PLAIN:
            self.assertEqual(repr(plain), repr(full))

    def test_jellyPlainStepsAside(self) -> None:
        """
        Shared and cyclic containers (which need jelly's references) and
        values of other types are left to the full jellier.
        """
        shared = [1]
        cyclic: list = []
        cyclic.append(cyclic)
        for value in (
            [shared, shared],
            cyclic,
            (shared, {"a": shared}),
            datetime.date(2020, 1, 2),
            [Node()],
            True.__class__.__mro__,
        ):
            self.assertIs(self.jellyPlain(value), _jelly.NOT_PLAIN)

    def test_jellyPlainSimple(self) -> None:
        """
        Tuples, dictionaries, strings, booleans and L{None} jelly to stock
        jelly's expressions.
        """
        value = (1, "x", b"y", None, True, 2.5, {"k": [False, frozenset()]}, {3})
        self.assertEqual(
            repr(self.jellyPlain(value)),
            repr(jelly.jelly(value)),
        )

    @settings(max_examples=300, deadline=None, suppress_health_check=TWIN_HEALTH_CHECKS)
    @given(values)
    def test_unjellyPlainSameAsUnjellier(self, value: object) -> None:
        """
        For what jelly sends, L{_jelly.unjellyPlain} either steps aside or
        rebuilds exactly what L{Unjellier.unjellyFull} rebuilds.
        """
        sexp = jelly.jelly(value)
        plain = self.unjellyPlain(sexp)
        full = Unjellier(bound()).unjellyFull(sexp)
        if plain is not _jelly.NOT_PLAIN:
            self.assertEqual(repr(plain), repr(full))
            self.assertEqual(type(plain), type(full))

    @settings(max_examples=400, deadline=None, suppress_health_check=TWIN_HEALTH_CHECKS)
    @given(jellyExpressions)
    def test_unjellyPlainRandomExpressions(self, sexp: Any) -> None:
        """
        For random expressions, L{_jelly.unjellyPlain} steps aside or gives
        what the full unjellier gives; it never raises, so malformed input
        is always reported by the full unjellier.
        """
        plain = self.unjellyPlain(sexp)
        if plain is _jelly.NOT_PLAIN:
            return
        self.assertEqual(repr(plain), repr(Unjellier(bound()).unjellyFull(sexp)))

    def test_unjellyPlainReferences(self) -> None:
        """
        Shared values and cycles as stock jelly sends them (a
        C{dereference} of a finished reference anywhere, of one being built
        as a list's item or a dictionary's value) are unjellied by the
        plain path, to the same objects, shared and cyclic alike, as the
        full unjellier makes.
        """
        cycle = [b"reference", 1, [b"list", [b"dereference", 1], 1]]
        plain = self.unjellyPlain([b"tuple", cycle, [b"dereference", 1]])
        self.assertIsNot(plain, _jelly.NOT_PLAIN)
        self.assertIs(plain[0], plain[1])
        self.assertIs(plain[0][0], plain[0])
        self.assertEqual(plain[0][1], 1)
        inDict = [
            b"reference",
            2,
            [b"dictionary", [b"me", [b"dereference", 2]], [b"n", 3]],
        ]
        value = self.unjellyPlain(inDict)
        self.assertIs(value[b"me"], value)
        self.assertEqual(list(value), [b"me", b"n"])
        shared = [
            b"list",
            [b"reference", 3, [b"tuple", 1, [b"unicode", b"x"]]],
            [b"dereference", 3],
            [b"reference", 4, 7],
            [b"dereference", 4],
        ]
        value = self.unjellyPlain(shared)
        self.assertEqual(value, [(1, "x"), (1, "x"), 7, 7])
        self.assertIs(value[0], value[1])
        full = Unjellier(bound()).unjellyFull(shared)
        self.assertEqual(repr(value), repr(full))
        throughTuple = [b"reference", 5, [b"tuple", [b"list", [b"dereference", 5]]]]
        value = self.unjellyPlain(throughTuple)
        self.assertIs(value[0][0], value)

    def test_unjellyPlainStepsAside(self) -> None:
        """
        Forward references, cycles through an immutable container or a
        dictionary key, repeated or non-integer reference IDs, copies,
        malformed and non-UTF-8 expressions are left to the full unjellier.
        """
        for sexp in (
            [b"list", [b"dereference", 1]],
            [b"list", [b"dereference", 1], [b"reference", 1, [b"list"]]],
            [b"reference", 1, [b"tuple", [b"dereference", 1]]],
            [b"reference", 1, [b"set", [b"dereference", 1]]],
            [b"reference", 1, [b"dictionary", [[b"dereference", 1], 1]]],
            [b"reference", 1, [b"dereference", 1]],
            [b"reference", 1, [b"list", [b"reference", 1, [b"list"]]]],
            [b"list", [b"reference", 1, 1], [b"reference", 1, 2]],
            [b"reference", b"1", [b"list"]],
            [b"reference", True, [b"list"]],
            [b"reference", 1],
            [b"dereference", 1, 2],
            [b"remote", 1],
            [b"unicode", b"\xff"],
            [b"unicode"],
            [b"None", 1],
            [b"boolean", b"yes"],
            [b"dictionary", [[b"list"], 1]],
            [b"set", [b"list"]],
            [b"dictionary", [1]],
            [],
            [1, 2],
        ):
            self.assertIs(self.unjellyPlain(sexp), _jelly.NOT_PLAIN, sexp)


class PlainFastPathTests(PlainFastPathTestsMixin, SynchronousTestCase):
    if speedups is None:
        skip = f"the C accelerator is not available: {reason}"
    else:
        jellyPlain = staticmethod(speedups.jellyPlain)
        unjellyPlain = staticmethod(speedups.unjellyPlain)


class PythonPlainFastPathTests(PlainFastPathTestsMixin, SynchronousTestCase):
    jellyPlain = staticmethod(_jelly._jellyPlainPython)
    unjellyPlain = staticmethod(_jelly._unjellyPlainPython)


class WaitingValuesTests(SynchronousTestCase):
    """
    C{maxWaitingValues} bounds the tuples, sets and dictionary keys of one
    message that wait for a value still being built; what a refused
    expression built is freed by reference counting alone.
    """

    def cycle(self, count: int) -> list[Any]:
        """
        A list referred to by C{count} tuples inside it.
        """
        inner = [b"tuple", [b"dereference", 1], 1]
        return [b"reference", 1, [b"list", *([inner] * count)]]

    def unjellier(self, limit: int) -> Unjellier:
        from tests.test_hostile import policyWith

        return Unjellier(bound(policyWith(maxWaitingValues=limit)))

    def test_withinLimit(self) -> None:
        """
        As many waiting tuples as the limit allows are unjellied, each
        referring to the list.
        """
        result = self.unjellier(3).unjellyFull(self.cycle(3))
        self.assertEqual(len(result), 3)
        for item in result:
            self.assertIs(item[0], result)

    def test_refusedPastLimit(self) -> None:
        """
        One more is refused with L{InsecureJelly} naming the limit.
        """
        error = self.assertRaises(
            jelly.InsecureJelly, self.unjellier(3).unjellyFull, self.cycle(4)
        )
        self.assertIn("maxWaitingValues", str(error))
        keys = [b"dictionary", [[b"dereference", 1], 1]]
        waitingKeys = [b"reference", 1, [b"list", keys, keys]]
        unjellier = self.unjellier(1)
        self.assertRaises(jelly.InsecureJelly, unjellier.unjellyFull, waitingKeys)

    def test_defaults(self) -> None:
        """
        The default policy allows 4096, the strict one 1024; the classic
        one has no such limit, as stock jelly.
        """
        self.assertEqual(defaultPolicy().limits.maxWaitingValues, 4096)
        self.assertEqual(strictPolicy().limits.maxWaitingValues, 1024)
        result = Unjellier(bound(classicPolicy())).unjellyFull(self.cycle(5000))
        self.assertIs(result[4999][0], result)

    def test_refusedFreedAtOnce(self) -> None:
        """
        The placeholders and partial containers of a refused expression
        refer to each other; the unjellier breaks those cycles, so nothing
        is left for the garbage collector.  (The test asks the collector
        how much garbage it finds, to measure.)
        """
        import gc

        from tests.test_hostile import policyWith

        # Kept: a policy and its taster refer to each other.
        taster = bound(policyWith(maxWaitingValues=10))
        unjellier = Unjellier(taster)
        expression = self.cycle(100)
        refused = False
        gc.collect()
        try:
            unjellier.unjellyFull(expression)
        except jelly.InsecureJelly:
            refused = True
        del unjellier
        self.assertTrue(refused)
        self.assertEqual(gc.collect(), 0)

    def test_plainPathFreedAtOnce(self) -> None:
        """
        A cycle the plain path closed before it stepped aside is broken,
        in the C accelerator and its Python twin alike.
        """
        import gc

        sexp = [
            b"list",
            [b"reference", 1, [b"list", [b"dereference", 1], [b"dictionary"]]],
            [b"remote", 1],
        ]
        plains = [_jelly._unjellyPlainPython]
        if speedups is not None:
            plains.append(speedups.unjellyPlain)
        for plain in plains:
            gc.collect()
            self.assertIs(plain(sexp), _jelly.NOT_PLAIN)
            self.assertEqual(gc.collect(), 0, plain)
