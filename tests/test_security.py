"""
Tests for L{pbext.security}: limits, the closed type allowlist, presets,
policy loading and the policy plugins.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

from twisted.plugin import IPlugin
from twisted.spread import jelly, pb
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pbext import policyfile, security
from pbext.interfaces import ICopyableRegistry, IPolicyPlugin, ISecurityPolicy
from pbext.policylookup import describePolicies
from pbext.security import (
    UNLIMITED,
    BoundPolicy,
    Limits,
    PolicyError,
    SecurityPolicy,
    classicPolicy,
    defaultPolicy,
    loadPolicy,
    presets,
    strictPolicy,
)


@implementer(ICopyableRegistry)
class FakeRegistry:
    """
    A registry that knows a fixed set of type names and builds nothing.
    """

    def __init__(self, *names: bytes) -> None:
        self.names = set(names)
        self.asked: list[bytes] = []

    def isTypeKnown(self, typeName: bytes) -> bool:
        self.asked.append(typeName)
        return typeName in self.names

    def jellyFor(self, obj: object, jellier: object) -> None:
        return None

    def unjellyFor(self, typeName: bytes, unjellier: object, jellyList: list) -> object:
        return (typeName, jellyList)


@implementer(IPlugin, IPolicyPlugin)
class FakePolicyPlugin:
    """
    A policy plugin building a named policy (or whatever it is told to).
    """

    def __init__(self, name: str, description: str = "", build=None) -> None:
        self.name = name
        self.description = description
        self.build = build or (lambda: SecurityPolicy(name=name))
        self.loads = 0

    def load(self):
        self.loads += 1
        return self.build()


# Objects for loadPolicy's dotted-name form.
policyObject = SecurityPolicy(name="from-object")


def makePolicy() -> SecurityPolicy:
    """
    A zero-argument callable returning a policy.
    """
    return SecurityPolicy(name="from-callable")


def makeNothing() -> object:
    """
    A zero-argument callable returning something that is not a policy.
    """
    return object()


notAPolicy = 42


def makeBroken() -> object:
    """
    A zero-argument callable that fails.
    """
    raise RuntimeError("broken factory")


class LimitsTests(SynchronousTestCase):
    """
    Tests for L{Limits}.
    """

    def test_defaults(self) -> None:
        """
        The defaults match banana's own limits and leave room for ordinary
        traffic: 1000 calls in flight, 200 clients from one address.
        """
        limits = Limits()
        self.assertEqual(limits.maxPrefixBytes, 64)
        self.assertEqual(limits.maxStringBytes, 640 * 1024)
        self.assertGreaterEqual(limits.maxListLength, 150_000)
        self.assertGreaterEqual(limits.maxOutstandingCalls, 1000)
        self.assertGreaterEqual(limits.maxConnectionsPerAddress, 200)
        self.assertEqual(limits.maxReferences, pb.MAX_BROKER_REFS)
        self.assertIsNone(limits.idleTimeout)
        self.assertIsNotNone(limits.handshakeTimeout)
        self.assertIsNotNone(limits.messageTimeout)

    def test_frozen(self) -> None:
        """
        Limits cannot be changed in place; a policy's limits are a value.
        """
        limits = Limits()
        self.assertRaises(
            dataclasses.FrozenInstanceError, setattr, limits, "maxDepth", 5
        )

    def test_zeroOrNegative(self) -> None:
        """
        Zero or negative values raise L{ValueError} naming the field, for
        counts and timeouts alike, at construction and in C{replace}.
        """
        for field in dataclasses.fields(Limits):
            for bad in (0, -1):
                with self.assertRaises(ValueError) as raised:
                    Limits(**{field.name: bad})
                self.assertIn(field.name, str(raised.exception))
        with self.assertRaises(ValueError):
            dataclasses.replace(Limits(), maxStringBytes=0)

    def test_wrongTypes(self) -> None:
        """
        Counts must be integers (not bools, floats or strings), timeouts
        numbers or None; non-finite timeouts are refused.
        """
        for bad in (True, 1.5, "10", None):
            self.assertRaises(TypeError, Limits, maxDepth=bad)
        for bad in (True, "10"):
            self.assertRaises(TypeError, Limits, idleTimeout=bad)
        self.assertRaises(ValueError, Limits, idleTimeout=float("inf"))
        self.assertRaises(ValueError, Limits, idleTimeout=float("nan"))
        self.assertEqual(Limits(idleTimeout=5).idleTimeout, 5)
        self.assertIsNone(Limits(handshakeTimeout=None).handshakeTimeout)

    def test_framingLimits(self) -> None:
        """
        L{Limits.framingLimits} gives exactly the codec's keyword arguments.
        """
        limits = Limits(maxDepth=7)
        self.assertEqual(
            limits.framingLimits(),
            {
                "maxPrefixBytes": 64,
                "maxStringBytes": limits.maxStringBytes,
                "maxListLength": limits.maxListLength,
                "maxDepth": 7,
                "maxMessageTokens": limits.maxMessageTokens,
                "maxMessageBytes": limits.maxMessageBytes,
            },
        )

    def test_framingLimitsAcceptedByDecoder(self) -> None:
        """
        The codec's decoder accepts the framing limits of every preset.
        """
        from pbext.codec import makeDecoder

        for limits in (Limits(), Limits.strict(), Limits.classic()):
            makeDecoder(**limits.framingLimits())

    def test_classic(self) -> None:
        """
        L{Limits.classic} keeps only stock PB's limits: no timeouts, and
        L{UNLIMITED} where stock has no bound.
        """
        limits = Limits.classic()
        self.assertEqual(limits.maxStringBytes, 640 * 1024)
        self.assertEqual(limits.maxReferences, 1024)
        self.assertEqual(limits.maxOutstandingCalls, UNLIMITED)
        self.assertEqual(limits.maxDepth, UNLIMITED)
        self.assertIsNone(limits.handshakeTimeout)
        self.assertIsNone(limits.messageTimeout)
        self.assertIsNone(limits.idleTimeout)

    def test_strict(self) -> None:
        """
        L{Limits.strict} is no looser than the defaults anywhere, and turns
        the idle timeout on.
        """
        default, strict = Limits(), Limits.strict()
        for field in dataclasses.fields(Limits):
            if field.name == "idleTimeout":
                continue
            self.assertLessEqual(
                getattr(strict, field.name), getattr(default, field.name), field.name
            )
        self.assertIsNotNone(strict.idleTimeout)


class SecurityPolicyTests(SynchronousTestCase):
    """
    Tests for L{SecurityPolicy}'s type allowlist and method check.
    """

    def test_interface(self) -> None:
        """
        Every preset provides L{ISecurityPolicy} and is a drop-in
        L{jelly.SecurityOptions}.
        """
        for build in presets.values():
            policy = build()
            self.assertTrue(verifyObject(ISecurityPolicy, policy))
            self.assertIsInstance(policy, jelly.SecurityOptions)
            self.assertIsInstance(policy.limits, Limits)

    def test_dottedNamesClosed(self) -> None:
        """
        A dotted type name nobody registered is refused by the default and
        strict policies, and allowed by the classic one (stock behaviour,
        twisted#6355).
        """
        for name in (b"os.system", "os.system", b"builtins.eval", b"a.b"):
            self.assertFalse(defaultPolicy().isTypeAllowed(name))
            self.assertFalse(strictPolicy().isTypeAllowed(name))
            self.assertTrue(classicPolicy().isTypeAllowed(name))
            self.assertTrue(jelly.globalSecurity.isTypeAllowed(name))

    def test_pbTypesAlwaysAllowed(self) -> None:
        """
        PB's own copy tags and jelly's basic types are allowed by every
        preset, even with Twisted's global registry ignored.
        """
        names = [
            b"remote",
            b"local",
            b"cached",
            b"lcache",
            b"twisted.spread.pb.CopyableFailure",
            b"unicode",
            b"boolean",
            b"None",
            b"dictionary",
            b"list",
            b"tuple",
            b"set",
            b"frozenset",
            b"reference",
            b"dereference",
            b"decimal",
            b"datetime",
            b"date",
            b"time",
            b"timedelta",
            b"unpersistable",
        ]
        for build in presets.values():
            policy = build()
            for name in names:
                self.assertTrue(policy.isTypeAllowed(name), (policy, name))

    def test_importingTypesRefused(self) -> None:
        """
        The expressions that make jelly import by name are refused by the
        default and strict policies, even after C{allowBasicTypes},
        C{allowInstancesOf} or an explicit C{allowTypes}.
        """
        for build in (defaultPolicy, strictPolicy):
            policy = build()
            policy.allowBasicTypes()
            policy.allowInstancesOf(FakeRegistry)
            policy.allowTypes("module", b"class", "persistent")
            for name in (
                b"module",
                b"class",
                b"classobj",
                b"function",
                b"method",
                b"instance",
                b"persistent",
            ):
                self.assertFalse(policy.isTypeAllowed(name), name)

    def test_classicLikeGlobalSecurity(self) -> None:
        """
        The classic policy answers like stock C{globalSecurity} for names of
        every kind, and its C{allowInstancesOf} enables what stock enables.
        """
        policy = classicPolicy()
        # Stock globalSecurity as Twisted ships it; the process's own may have
        # been extended by other test modules (test_pbfailure does).
        stock = jelly.SecurityOptions()
        stock.allowBasicTypes()
        stock.allowTypes(*jelly.unjellyableRegistry)
        for name in (
            b"module",
            b"persistent",
            b"list",
            b"remote",
            b"foo",
            b"a.b",
            b"twisted.spread.pb.CopyableFailure",
        ):
            self.assertEqual(
                bool(policy.isTypeAllowed(name)),
                bool(stock.isTypeAllowed(name)),
                name,
            )
        policy.allowInstancesOf(FakeRegistry)
        self.assertTrue(policy.isTypeAllowed(b"module"))
        self.assertTrue(policy.isModuleAllowed(FakeRegistry.__module__))
        self.assertTrue(policy.isClassAllowed(FakeRegistry))

    def test_allowTypes(self) -> None:
        """
        Names given to C{allowTypes} (as bytes, str or a class) are allowed;
        classes given to C{allowInstancesOf} are allowed and findable by
        name without importing.
        """
        policy = defaultPolicy()
        policy.allowTypes(b"my.Thing", "my.Other", FakeRegistry)
        self.assertTrue(policy.isTypeAllowed(b"my.Thing"))
        self.assertTrue(policy.isTypeAllowed("my.Other"))
        self.assertTrue(policy.isTypeAllowed(b"tests.test_security.FakeRegistry"))
        policy = defaultPolicy()
        policy.allowInstancesOf(FakePolicyPlugin)
        name = b"tests.test_security.FakePolicyPlugin"
        self.assertTrue(policy.isTypeAllowed(name))
        self.assertTrue(policy.isClassAllowed(FakePolicyPlugin))
        self.assertIs(policy.instanceClassFor(name), FakePolicyPlugin)
        self.assertIsNone(policy.instanceClassFor(b"os.system"))

    def test_instanceClassFromAllowedClasses(self) -> None:
        """
        Classes copied into C{allowedClasses} from a stock
        C{SecurityOptions} are found by name too.
        """
        policy = defaultPolicy()
        policy.allowedClasses[FakeRegistry] = 1
        self.assertIs(
            policy.instanceClassFor(b"tests.test_security.FakeRegistry"), FakeRegistry
        )

    def test_copyFromSecurityOptions(self) -> None:
        """
        The allowed types of a stock C{SecurityOptions} (which include
        C{persistent}, C{instance}, C{module}...) can be copied into a
        default policy without failing and without enabling imports.
        """
        options = jelly.SecurityOptions()
        options.allowBasicTypes()
        options.allowInstancesOf(FakeRegistry)
        policy = defaultPolicy()
        policy.allowTypes(*options.allowedTypes)
        self.assertFalse(policy.isTypeAllowed(b"module"))
        self.assertFalse(policy.isTypeAllowed(b"persistent"))
        self.assertTrue(policy.isTypeAllowed(b"tests.test_security.FakeRegistry"))

    def test_classicRegistry(self) -> None:
        """
        Names registered in Twisted's global copier registries are allowed
        by the default and classic policies and refused by the strict one.
        """
        registry = dict(jelly.unjellyableRegistry)
        registry[b"test.Registered"] = pb.RemoteCopy
        factories = dict(jelly.unjellyableFactoryRegistry)
        factories[b"test.Factory"] = lambda state: state
        self.patch(jelly, "unjellyableRegistry", registry)
        self.patch(jelly, "unjellyableFactoryRegistry", factories)
        self.patch(jelly, "unjellyableFactoryRegistry", factories)
        for name in (b"test.Registered", b"test.Factory"):
            self.assertTrue(defaultPolicy().isTypeAllowed(name))
            self.assertTrue(classicPolicy().isTypeAllowed(name))
            self.assertFalse(strictPolicy().isTypeAllowed(name))
        self.assertFalse(
            SecurityPolicy(acceptClassicRegistry=False).isTypeAllowed(
                b"test.Registered"
            )
        )
        registry[b"plainname"] = pb.RemoteCopy
        self.assertTrue(classicPolicy().isTypeAllowed(b"plainname"))

    def test_forConnection(self) -> None:
        """
        A bound policy allows what its registries know, and nothing leaks
        between two connections with different registries or into the
        policy itself.
        """
        policy = defaultPolicy()
        one = policy.forConnection([FakeRegistry(b"app.One")])
        two = policy.forConnection([FakeRegistry(b"app.Two")])
        self.assertIsInstance(one, BoundPolicy)
        self.assertTrue(one.isTypeAllowed(b"app.One"))
        self.assertTrue(one.isTypeAllowed("app.One"))
        self.assertFalse(one.isTypeAllowed(b"app.Two"))
        self.assertTrue(two.isTypeAllowed(b"app.Two"))
        self.assertFalse(two.isTypeAllowed(b"app.One"))
        self.assertFalse(policy.isTypeAllowed(b"app.One"))
        self.assertTrue(one.isTypeAllowed(b"remote"))
        self.assertFalse(one.isTypeAllowed(b"os.system"))
        self.assertIs(one.policy, policy)
        self.assertIs(one.limits, policy.limits)

    def test_forConnectionAsksRegistriesWithBytes(self) -> None:
        """
        Registries are asked with the type name as bytes, only for names
        the policy does not already allow.
        """
        registry = FakeRegistry()
        bound = defaultPolicy().forConnection([registry])
        bound.isTypeAllowed("app.Thing")
        bound.isTypeAllowed(b"list")
        self.assertEqual(registry.asked, [b"app.Thing"])

    def test_forConnectionNeedsRegistries(self) -> None:
        """
        Binding to something that is not an L{ICopyableRegistry} fails
        early.
        """
        error = self.assertRaises(TypeError, defaultPolicy().forConnection, [object()])
        self.assertTrue(
            str(error).endswith(
                " does not provide pbext.interfaces.ICopyableRegistry; give a "
                "pbext.copyable.CopyableRegistry"
            ),
            str(error),
        )

    def test_boundDelegates(self) -> None:
        """
        A bound policy answers module and class questions like its policy.
        """
        policy = defaultPolicy()
        policy.allowInstancesOf(FakeRegistry)
        bound = policy.forConnection(())
        self.assertTrue(bound.isClassAllowed(FakeRegistry))
        self.assertFalse(bound.isClassAllowed(FakePolicyPlugin))
        self.assertTrue(bound.isModuleAllowed(FakeRegistry.__module__))
        self.assertFalse(bound.isModuleAllowed("os"))

    def test_outgoingTaster(self) -> None:
        """
        The outgoing taster has stock C{globalSecurity} semantics: the type
        names jelly checks when sending builtins and instances pass, and
        instances are sent only for allowed classes.
        """
        policy = strictPolicy()
        taster = policy.outgoingTaster()
        for name in (b"builtins.str", b"builtins.int", b"myapp.Thing", b"list"):
            self.assertTrue(taster.isTypeAllowed(name))
        self.assertFalse(taster.isClassAllowed(FakeRegistry))
        policy.allowInstancesOf(FakeRegistry)
        self.assertTrue(taster.isClassAllowed(FakeRegistry))

    def test_outgoingHonoursGlobalSecurity(self) -> None:
        """
        Classes local code allowed on Twisted's C{globalSecurity} may be
        sent, as with a stock broker; receiving them is not affected.
        """
        options = jelly.SecurityOptions()
        options.allowInstancesOf(FakePolicyPlugin)
        self.patch(jelly, "globalSecurity", options)
        policy = strictPolicy()
        self.assertTrue(policy.outgoingTaster().isClassAllowed(FakePolicyPlugin))
        self.assertFalse(policy.outgoingTaster().isClassAllowed(FakeRegistry))
        self.assertFalse(policy.isClassAllowed(FakePolicyPlugin))
        self.assertFalse(policy.isTypeAllowed(b"tests.test_security.FakePolicyPlugin"))

    def test_sentBuiltinNamesAllowed(self) -> None:
        """
        The names stock jelly gives its taster when sending builtin values
        pass a default policy, so it also works as a stock broker's only
        taster.
        """
        policy = defaultPolicy()
        for value in ("s", b"b", 1, 1.0, True, None, [], (), {}, set(), frozenset()):
            self.assertTrue(policy.isTypeAllowed(jelly.qual(type(value))))
        self.assertEqual(jelly.jelly(["x", 1], policy), jelly.jelly(["x", 1]))

    def test_isMethodAllowed(self) -> None:
        """
        Public identifier names are callable; private names only with
        C{allowPrivateMethods}; non-identifiers and over-long names never
        (except under the classic policy, which allows any name).
        """
        policy = defaultPolicy()
        self.assertTrue(policy.isMethodAllowed("echo"))
        self.assertTrue(policy.isMethodAllowed(b"echo"))
        self.assertFalse(policy.isMethodAllowed("_secret"))
        self.assertFalse(policy.isMethodAllowed("__init__"))
        self.assertFalse(policy.isMethodAllowed("a-b"))
        self.assertFalse(policy.isMethodAllowed(""))
        self.assertFalse(policy.isMethodAllowed(b"\xff"))
        self.assertFalse(policy.isMethodAllowed(5))
        long = "a" * (policy.limits.maxMethodNameLength + 1)
        self.assertFalse(policy.isMethodAllowed(long))
        self.assertTrue(policy.isMethodAllowed(long[:-1]))
        private = SecurityPolicy(allowPrivateMethods=True)
        self.assertTrue(private.isMethodAllowed("_secret"))
        self.assertFalse(private.isMethodAllowed("a b"))
        classic = classicPolicy()
        self.assertTrue(classic.isMethodAllowed("_secret"))
        self.assertTrue(classic.isMethodAllowed("a-b"))

    def test_constructorDefaults(self) -> None:
        """
        Unspecified options follow C{classic}: stock behaviour for a
        classic policy, pbext's for any other.
        """
        plain = SecurityPolicy()
        self.assertEqual(
            (
                plain.allowPrivateMethods,
                plain.acceptClassicRegistry,
                plain.checkCopyState,
                plain.classic,
            ),
            (False, True, True, False),
        )
        self.assertEqual(plain.limits, Limits())
        classic = SecurityPolicy(classic=True)
        self.assertEqual(
            (
                classic.allowPrivateMethods,
                classic.acceptClassicRegistry,
                classic.checkCopyState,
                classic.classic,
            ),
            (True, True, False, True),
        )
        self.assertEqual(classic.limits, Limits.classic())
        error = self.assertRaises(TypeError, SecurityPolicy, limits={"maxDepth": 3})
        self.assertEqual(
            str(error),
            "limits={'maxDepth': 3}: give a pbext.security.Limits, such as "
            "Limits(maxDepth=100)",
        )


class PresetTests(SynchronousTestCase):
    """
    Tests for the preset functions and the L{presets} mapping.
    """

    def test_presetNames(self) -> None:
        """
        The presets are classic, default and strict, each building a policy
        of that name.
        """
        self.assertEqual(sorted(presets), ["classic", "default", "strict"])
        for name, build in presets.items():
            self.assertEqual(build().name, name)

    def test_fresh(self) -> None:
        """
        Every call builds a new policy: allowing a type on one is not seen
        by another.
        """
        for build in presets.values():
            one, two = build(), build()
            self.assertIsNot(one, two)
            one.allowTypes(b"app.Thing")
            self.assertFalse(
                two.isTypeAllowed(b"app.Thing") and not two.classic,
            )
            self.assertNotIn(b"app.Thing", two.allowedTypes)

    def test_immutableMapping(self) -> None:
        """
        The presets mapping cannot be changed.
        """

        def change() -> None:
            presets["evil"] = classicPolicy  # type: ignore[index]

        self.assertRaises(TypeError, change)

    def test_settings(self) -> None:
        """
        The presets differ as documented: classic is classic, strict ignores
        Twisted's global registry and has the strict limits.
        """
        self.assertTrue(classicPolicy().classic)
        self.assertFalse(defaultPolicy().classic)
        self.assertTrue(defaultPolicy().acceptClassicRegistry)
        self.assertFalse(strictPolicy().acceptClassicRegistry)
        self.assertEqual(strictPolicy().limits, Limits.strict())
        self.assertEqual(defaultPolicy().limits, Limits())


class LoadPolicyTests(SynchronousTestCase):
    """
    Tests for L{loadPolicy} and L{describePolicies}.
    """

    def writePolicy(self, text: str, name: str = "policy.ini") -> str:
        """
        Write a policy file in a fresh directory and return its path.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(textwrap.dedent(text))
        return path

    def assertPolicyError(self, spec: str, *fragments: str) -> PolicyError:
        """
        Loading C{spec} raises L{PolicyError} mentioning every fragment.
        """
        with self.assertRaises(PolicyError) as raised:
            loadPolicy(spec, plugins=[])
        for fragment in fragments:
            self.assertIn(fragment, str(raised.exception))
        return raised.exception

    def test_preset(self) -> None:
        """
        Preset names build fresh presets without plugin discovery.
        """

        class Exploding:
            def __iter__(self):
                raise AssertionError("plugins consulted")

        for name in presets:
            policy = loadPolicy(name, plugins=Exploding())
            self.assertEqual(policy.name, name)
            self.assertIsNot(policy, loadPolicy(name, plugins=Exploding()))

    def test_presetWithInstalledPlugins(self) -> None:
        """
        Without an explicit plugin list, presets still load (the default
        plugin discovery is not needed for them).
        """
        self.assertEqual(loadPolicy("strict").name, "strict")

    def test_plugin(self) -> None:
        """
        A plugin name loads that plugin's policy, fresh on every call.
        """
        plugin = FakePolicyPlugin("paranoid", "Very careful.")
        policy = loadPolicy("paranoid", plugins=[FakePolicyPlugin("other"), plugin])
        self.assertEqual(policy.name, "paranoid")
        loadPolicy("paranoid", plugins=[plugin])
        self.assertEqual(plugin.loads, 2)

    def test_pluginNotAPolicy(self) -> None:
        """
        A plugin whose C{load} returns something that is not a policy, or
        fails, gives a L{PolicyError} naming it.
        """
        plugin = FakePolicyPlugin("bad", build=lambda: object())
        with self.assertRaises(PolicyError) as raised:
            loadPolicy("bad", plugins=[plugin])
        self.assertIn("bad", str(raised.exception))
        self.assertIn("ISecurityPolicy", str(raised.exception))
        plugin = FakePolicyPlugin("broken", build=makeBroken)
        with self.assertRaises(PolicyError) as raised:
            loadPolicy("broken", plugins=[plugin])
        self.assertIn("broken factory", str(raised.exception))

    def test_presetBeatsPlugin(self) -> None:
        """
        A plugin cannot replace a preset by taking its name.
        """
        plugin = FakePolicyPlugin("default", build=classicPolicy)
        self.assertFalse(loadPolicy("default", plugins=[plugin]).classic)
        self.assertEqual(plugin.loads, 0)

    def test_installedPlugins(self) -> None:
        """
        pbext's own dropin registers the three presets as policy plugins
        that real plugin discovery finds.
        """
        from twisted.plugin import getPlugins

        found = {plugin.name: plugin for plugin in getPlugins(IPolicyPlugin)}
        for name in presets:
            self.assertIn(name, found)
            self.assertEqual(found[name].load().name, name)

    def test_dottedObject(self) -> None:
        """
        A dotted name of a policy object returns that object.
        """
        self.assertIs(
            loadPolicy("tests.test_security.policyObject", plugins=[]), policyObject
        )

    def test_dottedCallable(self) -> None:
        """
        A dotted name of a zero-argument callable (a function or a policy
        class) returns what it builds.
        """
        policy = loadPolicy("tests.test_security.makePolicy", plugins=[])
        self.assertEqual(policy.name, "from-callable")
        policy = loadPolicy("pbext.security.SecurityPolicy", plugins=[])
        self.assertIsInstance(policy, SecurityPolicy)
        policy = loadPolicy("pbext.security.strictPolicy", plugins=[])
        self.assertEqual(policy.name, "strict")

    def test_dottedBad(self) -> None:
        """
        Dotted names of something that is not a policy, of a callable
        returning something else or failing, or of nothing, raise
        L{PolicyError} saying so.
        """
        self.assertPolicyError("tests.test_security.notAPolicy", "neither")
        error = self.assertPolicyError(
            "tests.test_security.makeNothing", "ISecurityPolicy"
        )
        self.assertTrue(
            str(error).startswith("tests.test_security.makeNothing() gave "),
            str(error),
        )
        self.assertTrue(
            str(error).endswith(
                ", which does not provide pbext.interfaces.ISecurityPolicy; "
                "make it give a pbext.security.SecurityPolicy"
            ),
            str(error),
        )
        self.assertPolicyError("tests.test_security.makeBroken", "broken factory")
        self.assertPolicyError(
            "tests.test_security.missing", "unknown security policy", "importable"
        )
        self.assertPolicyError("no_such_module_xyz.policy", "unknown security policy")

    def test_unknown(self) -> None:
        """
        A name that is nothing at all lists what was tried, including the
        presets, so an operator can act on it.
        """
        error = self.assertPolicyError(
            "nonesuch", "nonesuch", "classic", "default", "strict", "file"
        )
        self.assertIsInstance(error, ValueError)

    def test_file(self) -> None:
        """
        A policy file starts from its base preset and changes the options,
        limits and allowed types it names.
        """
        path = self.writePolicy(
            """
            # A policy for tests.
            [policy]
            base = strict
            name = billing
            allowPrivateMethods = yes
            acceptClassicRegistry = true   ; inline comment
            checkCopyState = off

            [limits]
            maxStringBytes = 1024
            idleTimeout = none
            handshakeTimeout = 2.5

            [types]
            allow = app.Invoice,
                    app.LineItem
            """
        )
        policy = loadPolicy(path, plugins=[])
        self.assertEqual(policy.name, "billing")
        self.assertTrue(policy.allowPrivateMethods)
        self.assertTrue(policy.acceptClassicRegistry)
        self.assertFalse(policy.checkCopyState)
        self.assertEqual(policy.limits.maxStringBytes, 1024)
        self.assertIsNone(policy.limits.idleTimeout)
        self.assertEqual(policy.limits.handshakeTimeout, 2.5)
        self.assertEqual(policy.limits.maxDepth, Limits.strict().maxDepth)
        self.assertTrue(policy.isTypeAllowed(b"app.Invoice"))
        self.assertTrue(policy.isTypeAllowed(b"app.LineItem"))
        self.assertFalse(policy.isTypeAllowed(b"app.Other"))

    def test_documentedExample(self) -> None:
        """
        The example policy file in L{pbext.policyfile}'s docstring loads as
        described.
        """
        doc = policyfile.__doc__ or ""
        start = doc.index("    # Start from")
        example = textwrap.dedent(doc[start : doc.index("Every section", start)])
        policy = loadPolicy(self.writePolicy(example), plugins=[])
        self.assertEqual(policy.name, "billing")
        self.assertEqual(policy.limits.maxStringBytes, 1048576)
        self.assertEqual(policy.limits.idleTimeout, 600)
        self.assertTrue(policy.isTypeAllowed(b"myapp.billing.LineItem"))

    def test_fileDefaults(self) -> None:
        """
        An empty policy file is the default preset named after the file.
        """
        policy = loadPolicy(self.writePolicy("", name="site.ini"), plugins=[])
        self.assertEqual(policy.name, "site")
        self.assertEqual(policy.limits, Limits())
        self.assertFalse(policy.classic)

    def test_fileClassicBase(self) -> None:
        """
        A classic base gives a classic policy, which may allow importing
        types.
        """
        path = self.writePolicy("[policy]\nbase = classic\n[types]\nallow = module\n")
        policy = loadPolicy(path, plugins=[])
        self.assertTrue(policy.classic)
        self.assertTrue(policy.isTypeAllowed(b"module"))

    def test_fileErrors(self) -> None:
        """
        Every kind of mistake in a policy file raises L{PolicyError} naming
        the file and the section or key (and suggesting a close key).
        """
        cases = [
            ("[polcy]\n", ["unknown section", "'polcy'", "policy"]),
            ("[DEFAULT]\nbase = default\n", ["unknown section", "DEFAULT"]),
            ("[policy]\nbse = strict\n", ["[policy]", "'bse'", "did you mean 'base'"]),
            (
                "[limits]\nmaxStringByte = 5\n",
                ["[limits]", "maxStringByte", "did you mean 'maxStringBytes'"],
            ),
            (
                "[limits]\nmaxstringbytes = 5\n",
                ["maxstringbytes", "did you mean 'maxStringBytes'"],
            ),
            ("[types]\ndeny = a.b\n", ["[types]", "'deny'"]),
            ("[policy]\nbase = lax\n", ["base", "'lax'", "classic, default, strict"]),
            ("[policy]\ncheckCopyState = maybe\n", ["checkCopyState", "'maybe'"]),
            ("[limits]\nmaxDepth = ten\n", ["maxDepth", "'ten'", "whole number"]),
            ("[limits]\nmaxDepth = 1.5\n", ["maxDepth", "whole number"]),
            ("[limits]\nidleTimeout = soon\n", ["idleTimeout", "'soon'", "seconds"]),
            ("[limits]\nmaxDepth = 0\n", ["[limits]", "maxDepth", "at least 1"]),
            ("[limits]\nmessageTimeout = -1\n", ["messageTimeout", "positive"]),
            ("[types]\nallow = module\n", ["allow", "'module'", "classic"]),
            ("base = default\n", ["section header"]),
            ("[limits]\nmaxDepth = 1\nmaxDepth = 2\n", ["maxDepth", "line 3"]),
            ("[policy]\n[policy]\n", ["policy", "already exists"]),
        ]
        for text, fragments in cases:
            path = self.writePolicy(text)
            with self.assertRaises(PolicyError, msg=text) as raised:
                loadPolicy(path, plugins=[])
            message = str(raised.exception)
            self.assertIn(path, message, text)
            for fragment in fragments:
                self.assertIn(fragment, message, text)

    def test_fileImportingTypeMessage(self) -> None:
        """
        A non-classic policy file allowing a type that makes jelly import
        names the key and the value, and says how to allow it.
        """
        path = self.writePolicy("[types]\nallow = module\n")
        with self.assertRaises(PolicyError) as raised:
            loadPolicy(path, plugins=[])
        self.assertEqual(
            str(raised.exception),
            f"policy file {path}, [types] allow: 'module' makes jelly import "
            f"what a peer names, which only a classic policy allows; remove "
            f"it, or set base = classic in [policy]",
        )

    def test_fileNotUTF8(self) -> None:
        """
        A policy file that is not UTF-8 text raises L{PolicyError}.
        """
        path = self.writePolicy("")
        with open(path, "wb") as f:
            f.write(b"[policy]\nname = \xff\n")
        self.assertPolicyError(path, path, "UTF-8")

    def test_fileUnreadable(self) -> None:
        """
        A path that is a directory is not a policy file.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        self.assertPolicyError(directory, "unknown security policy")

    def test_describePolicies(self) -> None:
        """
        The description lists the presets, then installed plugins sorted by
        name, without plugins hiding behind preset names.
        """
        described = describePolicies(
            plugins=[
                FakePolicyPlugin("zeta", "Last."),
                FakePolicyPlugin("alpha", "First."),
                FakePolicyPlugin("default", "Impostor."),
            ]
        )
        names = [name for name, _ in described]
        self.assertEqual(names, ["classic", "default", "strict", "alpha", "zeta"])
        descriptions = dict(described)
        self.assertEqual(descriptions["alpha"], "First.")
        self.assertNotEqual(descriptions["default"], "Impostor.")
        for _name, description in described:
            self.assertIsInstance(description, str)
            self.assertTrue(description)

    def test_describeInstalled(self) -> None:
        """
        Without an explicit plugin list, installed plugins are described,
        and pbext's own preset plugins do not appear twice.
        """
        names = [name for name, _ in describePolicies()]
        self.assertEqual(names[:3], ["classic", "default", "strict"])
        self.assertEqual(len(names), len(set(names)))


class DropinTests(SynchronousTestCase):
    """
    Tests for the C{twisted/plugins/pbext_policies.py} dropin.
    """

    def test_providers(self) -> None:
        """
        The dropin offers the three presets as L{IPlugin} and
        L{IPolicyPlugin} providers that build fresh policies.
        """
        from twisted.plugins import pbext_policies

        for name in presets:
            plugin = getattr(pbext_policies, name)
            self.assertTrue(verifyObject(IPolicyPlugin, plugin))
            self.assertTrue(IPlugin.providedBy(plugin))
            self.assertEqual(plugin.name, name)
            self.assertEqual(
                dict(describePolicies(plugins=()))[name], plugin.description
            )
            self.assertIsNot(plugin.load(), plugin.load())
            self.assertEqual(plugin.load().name, name)

    def test_cheapImport(self) -> None:
        """
        Importing the dropin builds no policy and imports neither the
        reactor nor the security module's dependencies of its own.
        """
        code = (
            "import sys, twisted.plugins.pbext_policies as d; "
            "print('twisted.internet.reactor' in sys.modules, d.default.factoryName)"
        )
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        output = subprocess.run(
            [sys.executable, "-c", code],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.split()
        self.assertEqual(output, ["False", "pbext.security.defaultPolicy"])

    def test_noPackageInit(self) -> None:
        """
        There is no C{__init__.py} under C{twisted/} (it would replace
        Twisted's own package when installed).
        """
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.assertFalse(os.path.exists(os.path.join(root, "twisted", "__init__.py")))
        self.assertFalse(
            os.path.exists(os.path.join(root, "twisted", "plugins", "__init__.py"))
        )


class ModuleTests(SynchronousTestCase):
    """
    Tests for the module's public surface.
    """

    def test_all(self) -> None:
        """
        Every name in C{__all__} exists.
        """
        for name in security.__all__:
            self.assertTrue(hasattr(security, name), name)
