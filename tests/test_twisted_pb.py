"""
Twisted's own PB test suites, run with pbext's factories and broker in place
of the stock ones.

pbext promises that an existing PB program keeps working when it switches to
L{pbext.PBServerFactory} / L{pbext.PBClientFactory}.  The best statement of
what existing programs rely on is Twisted's own test suite for PB, so this
module loads C{twisted.spread.test.test_pb} and C{test_pbfailure} from the
installed Twisted, with the name C{pb} in them bound to a view of
L{twisted.spread.pb} whose C{PBServerFactory}, C{PBClientFactory} and
C{Broker} are pbext's, and runs every test case they hold.

Tests that pin a classic behaviour pbext changes on purpose are listed in
L{_EXPECTED_DIFFERENCES} with the reason, and skipped.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

from twisted.spread import pb as _stockPB
from twisted.trial import unittest

import pbext
from pbext.broker import Broker

#: Tests whose classic behaviour pbext deliberately changes: name -> reason.
_EXPECTED_DIFFERENCES: dict[str, str] = {
    "test_pbfailure.PBFailureTests.test_noSuchMethodFailure": (
        "pbext answers a missing method with the same copied NoSuchMethod "
        "but logs a rate-limited event instead of a traceback; "
        "tests.test_broker pins that"
    ),
    "test_pb.NewStyleTests.test_alloc": (
        "its NewStyleCopy2 receives the state key 'value', which hides the "
        "class attribute value = 1: pbext's default policy refuses such keys "
        "unless the class declares them with pbext.copystate.stateFields; "
        "tests.test_copystate pins both"
    ),
    "test_pb.NewCredTests.test_badUsernamePasswordLogin": (
        "pbext audits refused logins as events instead of logging an "
        "UnauthorizedLogin traceback; tests.test_login pins the refusal"
    ),
    "test_pb.NewCredTests.test_anonymousLoginNotPermitted": (
        "pbext audits refused logins as events instead of logging a "
        "traceback; tests.test_login pins the refusal"
    ),
}


def _skipped(method: Any, reason: str) -> Any:
    """
    Wrap a test method so that trial skips it, saying why.
    """

    def test(self: Any) -> None:
        method(self)

    test.skip = reason  # type: ignore[attr-defined]
    test.__doc__ = method.__doc__
    return test


def _pbView() -> types.ModuleType:
    """
    A module that is L{twisted.spread.pb} but for pbext's factories and
    broker.
    """
    view = types.ModuleType("pbext_view_of_twisted_spread_pb")
    view.__dict__.update(vars(_stockPB))
    view.PBServerFactory = pbext.PBServerFactory  # type: ignore[attr-defined]
    view.PBClientFactory = pbext.PBClientFactory  # type: ignore[attr-defined]
    view.Broker = Broker  # type: ignore[attr-defined]
    return view


def _loadWithPbext(moduleName: str) -> types.ModuleType | None:
    """
    Load Twisted's test module C{moduleName} afresh, with its C{pb} bound to
    L{_pbView}.

    The copy takes the original's name, in C{sys.modules} and on its
    package, because the tests compare fully qualified class names (and
    resolve them) on the wire.  Only this test process sees the copy.

    @return: the module, or L{None} if this Twisted does not ship its tests.
    """
    spec = importlib.util.find_spec(moduleName)
    if spec is None or spec.origin is None or spec.loader is None:
        return None
    with open(spec.origin, encoding="utf-8") as f:
        source = f.read()
    alias = moduleName
    module = types.ModuleType(alias)
    module.__file__ = spec.origin
    sys.modules[alias] = module
    packageName, _, shortName = moduleName.rpartition(".")
    setattr(importlib.import_module(packageName), shortName, module)
    code = compile(source, spec.origin, "exec")
    exec(code, module.__dict__)
    # The test code reads the module-level name "pb" when it runs, so
    # rebinding it here makes every factory and broker it builds pbext's.
    # Classes it defined at import by subclassing pb.PBServerFactory are
    # rebased the same way below.
    view = _pbView()
    module.pb = view  # type: ignore[attr-defined]
    for value in list(vars(module).values()):
        if isinstance(value, type) and value.__module__ == alias:
            for stock, ours in (
                (_stockPB.PBServerFactory, pbext.PBServerFactory),
                (_stockPB.PBClientFactory, pbext.PBClientFactory),
                (_stockPB.Broker, Broker),
            ):
                if stock in value.__bases__:
                    value.__bases__ = tuple(
                        ours if b is stock else b for b in value.__bases__
                    )
    return module


def _exportTestCases(namespace: dict[str, object]) -> None:
    for moduleName in (
        "twisted.spread.test.test_pb",
        "twisted.spread.test.test_pbfailure",
    ):
        module = _loadWithPbext(moduleName)
        if module is None:
            continue
        short = moduleName.rsplit(".", 1)[-1]
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, unittest.SynchronousTestCase)
                and value.__module__ == moduleName
            ):
                attributes: dict[str, object] = {"__module__": __name__}
                for testName in dir(value):
                    for klass in value.__mro__:
                        key = f"{short}.{klass.__name__}.{testName}"
                        if key in _EXPECTED_DIFFERENCES:
                            attributes[testName] = _skipped(
                                getattr(value, testName), _EXPECTED_DIFFERENCES[key]
                            )
                            break
                exported = type(f"Stock_{short}_{name}", (value,), attributes)
                namespace[exported.__name__] = exported


_exportTestCases(globals())
