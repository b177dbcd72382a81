"""
Tests for L{pbext.factorystate}: pbext's state on a factory and the
building of brokers with it.
"""

from __future__ import annotations

from twisted.spread import jelly, pb
from twisted.trial.unittest import SynchronousTestCase

import pbext
from pbext import broker as pbbroker
from pbext.copyable import CopyableRegistry, FailureRegistry
from pbext.factorystate import (
    FactoryState,
    registriesFrom,
    resolvePolicy,
    withFailures,
)
from pbext.security import SecurityPolicy


class FactoryStateTests(SynchronousTestCase):
    """
    A factory keeps its pbext state in one L{FactoryState} and builds its
    brokers with it.
    """

    def test_stillImportableFromBroker(self) -> None:
        """
        The names that lived in L{pbext.broker} are the same objects there.
        """
        self.assertIs(pbbroker.FactoryState, FactoryState)
        self.assertIs(pbbroker.resolvePolicy, resolvePolicy)

    def test_registriesFrom(self) -> None:
        """
        L{registriesFrom} makes a tuple of none, one or many registries.
        """
        registry = CopyableRegistry()
        self.assertEqual(registriesFrom(None), ())
        self.assertEqual(registriesFrom(registry), (registry,))
        self.assertEqual(registriesFrom([registry]), (registry,))

    def test_withFailuresOnce(self) -> None:
        """
        L{withFailures} adds a failure registry last, once.
        """
        registries = withFailures(())
        self.assertIsInstance(registries[-1], FailureRegistry)
        self.assertIs(withFailures(registries), registries)

    def test_resolvePolicy(self) -> None:
        """
        An explicit policy wins; a classic C{SecurityOptions} extends the
        default preset.
        """
        policy = SecurityPolicy("mine")
        self.assertIs(resolvePolicy(policy, jelly.globalSecurity), policy)
        options = jelly.SecurityOptions()
        options.allowModules("some.module")
        resolved = resolvePolicy(None, options)
        self.assertTrue(resolved.isModuleAllowed("some.module"))

    def test_buildsBrokersWithState(self) -> None:
        """
        A factory's brokers get its policy, its registries (a failure
        registry last), its state and its memory budget.
        """
        factory = pbext.PBServerFactory(pb.Root())
        broker = factory.buildProtocol(None)
        assert isinstance(broker, pbbroker.Broker)
        self.assertIs(broker.pbextPolicy, factory.pbextPolicy)
        self.assertIsInstance(broker.pbextRegistries[-1], FailureRegistry)
        self.assertIs(broker._pbextFactoryState, factory._pbext)
        self.assertIs(broker._pbextFlow.budget, factory._pbext.budget)

    def test_brokersShareRegistries(self) -> None:
        """
        A factory's brokers share one tuple of registries (its own, the
        stream registry and the failure registry), made once: a
        connection does not pay for registries of its own.
        """
        registry = CopyableRegistry()
        factory = pbext.PBServerFactory(pb.Root(), registry=registry)
        first = factory.buildProtocol(None)
        second = factory.buildProtocol(None)
        assert isinstance(first, pbbroker.Broker)
        assert isinstance(second, pbbroker.Broker)
        self.assertIs(first.pbextRegistries, second.pbextRegistries)
        self.assertIs(first.pbextRegistries[0], registry)
        self.assertEqual(len(first.pbextRegistries), 3)
