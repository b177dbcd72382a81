"""
The shape of every private Twisted name pbext relies on.

pbext subclasses and calls parts of Twisted that are not public API: jelly's
C{_Jellier} and C{_Unjellier}, pb's broker methods and login helpers, the
endpoint wrapper, crefutil's placeholders, banana's prefix limit and the TCP
transport's buffer attributes.  Twisted may change any of them in any
release.  These tests say, for each one, what pbext expects (that it exists,
how it is called, which attributes it sets), so that a Twisted release that
moves one fails here with a message naming it and the pbext code that uses
it, instead of misbehaving somewhere else.

C{tox -e twisted-oldest} runs them on the oldest Twisted setup.cfg allows,
the other environments on the newest release.
"""

from __future__ import annotations

import inspect
import socket
from typing import Any, Callable

from twisted.internet import abstract, defer, endpoints, protocol, tcp
from twisted.internet.testing import MemoryReactor
from twisted.persisted import crefutil
from twisted.spread import banana, jelly, pb
from twisted.trial import unittest

import twisted

_VERSION = f"Twisted {twisted.__version__}"


def _parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


class _ShapeMixin:
    """
    Assertions whose failure messages name the Twisted version, the private
    name and the pbext code that depends on it.
    """

    assertTrue: Callable[..., None]
    fail: Callable[..., Any]

    def lookUp(self, owner: Any, name: str, usedBy: str) -> Any:
        """
        C{getattr(owner, name)}, or a failure saying what moved.
        """
        try:
            return getattr(owner, name)
        except AttributeError:
            self.fail(
                f"{_VERSION} has no {_qual(owner)}.{name}, which {usedBy} "
                "relies on: pbext must be adapted to this Twisted release"
            )

    def assertSignature(
        self, owner: Any, name: str, expected: list[str], usedBy: str
    ) -> None:
        """
        C{owner.name} exists and takes exactly the parameters C{expected}.
        """
        found = _parameters(self.lookUp(owner, name, usedBy))
        if found != expected:
            self.fail(
                f"{_VERSION}: {_qual(owner)}.{name} now takes ({', '.join(found)}) "
                f"where {usedBy} expects ({', '.join(expected)})"
            )

    def assertAttributes(
        self, instance: object, names: list[str], what: str, usedBy: str
    ) -> None:
        """
        C{instance} has every attribute in C{names}.
        """
        missing = [name for name in names if not hasattr(instance, name)]
        if missing:
            self.fail(
                f"{_VERSION}: {what} no longer has {', '.join(missing)}, "
                f"which {usedBy} relies on"
            )


def _qual(owner: Any) -> str:
    if inspect.ismodule(owner):
        return owner.__name__
    return f"{owner.__module__}.{owner.__qualname__}"


class JellyInternalsTests(_ShapeMixin, unittest.SynchronousTestCase):
    """
    pbext's Jellier and Unjellier (pbext/_jelly.py) subclass jelly's private
    classes and call their helpers.
    """

    def test_unjellier(self) -> None:
        """
        C{jelly._Unjellier} is a class built with C{(taster, persistentLoad,
        invoker)} that sets C{taster}, C{invoker}, C{references} and
        C{postCallbacks}, and has the C{_genericUnjelly} and
        C{_maybePostUnjelly} hooks pbext overrides and calls.
        """
        usedBy = "pbext._jelly.Unjellier"
        cls = self.lookUp(jelly, "_Unjellier", usedBy)
        self.assertTrue(inspect.isclass(cls), f"{_VERSION}: jelly._Unjellier")
        self.assertSignature(
            cls, "__init__", ["self", "taster", "persistentLoad", "invoker"], usedBy
        )
        self.assertSignature(cls, "_genericUnjelly", ["self", "cls", "state"], usedBy)
        self.assertSignature(cls, "_maybePostUnjelly", ["self", "unjellied"], usedBy)
        self.assertSignature(cls, "unjelly", ["self", "obj"], usedBy)
        self.assertAttributes(
            cls(None, None, None),
            ["taster", "invoker", "references", "postCallbacks"],
            "a jelly._Unjellier",
            usedBy,
        )

    def test_unjellierDispatch(self) -> None:
        """
        C{jelly._Unjellier} finds the method for a type tag by the name
        C{_unjelly_<tag>}, and has one, taking the rest of the s-expression,
        for every tag pbext's Unjellier overrides; so Twisted still calls
        pbext's versions.
        """
        from pbext._jelly import Unjellier

        usedBy = "pbext._jelly.Unjellier"
        overridden = [
            name
            for name in vars(Unjellier)
            if name.startswith("_unjelly_") and callable(vars(Unjellier)[name])
        ]
        self.assertTrue(overridden)
        for name in overridden:
            method = self.lookUp(jelly._Unjellier, name, usedBy)
            if len(_parameters(method)) != 2:
                self.fail(
                    f"{_VERSION}: jelly._Unjellier.{name} no longer takes one "
                    f"argument (the rest of the s-expression), as {usedBy} expects"
                )
        source = inspect.getsource(jelly._Unjellier.unjelly)
        self.assertTrue(
            '"_unjelly_%s"' in source or "'_unjelly_%s'" in source,
            f"{_VERSION}: jelly._Unjellier.unjelly no longer dispatches on "
            "_unjelly_<tag> method names, which pbext._jelly.Unjellier overrides",
        )

    def test_jellier(self) -> None:
        """
        C{jelly._Jellier} is a class built with C{(taster, persistentStore,
        invoker)} that sets C{taster} and C{invoker}, with C{jelly(obj)} and
        C{_checkMutable(obj)}.
        """
        usedBy = "pbext._jelly.Jellier and pbext.copyable"
        cls = self.lookUp(jelly, "_Jellier", usedBy)
        self.assertTrue(inspect.isclass(cls), f"{_VERSION}: jelly._Jellier")
        self.assertSignature(
            cls, "__init__", ["self", "taster", "persistentStore", "invoker"], usedBy
        )
        self.assertSignature(cls, "jelly", ["self", "obj"], usedBy)
        self.assertSignature(cls, "_checkMutable", ["self", "obj"], usedBy)
        self.assertAttributes(
            cls(None, None, None), ["taster", "invoker"], "a jelly._Jellier", usedBy
        )

    def test_instanceHelpers(self) -> None:
        """
        C{jelly._createBlank(cls)} and C{jelly._newInstance(cls, state)}
        make instances without calling C{__init__}.
        """
        usedBy = "pbext._jelly"
        self.assertSignature(jelly, "_createBlank", ["cls"], usedBy)
        self.assertSignature(jelly, "_newInstance", ["cls", "state"], usedBy)

        class Thing:
            def __init__(self) -> None:
                raise AssertionError("__init__ must not run")

        self.assertIsInstance(jelly._createBlank(Thing), Thing)
        made = jelly._newInstance(Thing, {"x": 1})
        self.assertEqual(vars(made), {"x": 1})

    def test_jellyNamespace(self) -> None:
        """
        C{jelly.jelly.__globals__} is the jelly module's namespace, which
        pbext.security reads the type names jelly writes from.
        """
        self.assertIs(
            jelly.jelly.__globals__,
            vars(jelly),
            f"{_VERSION}: jelly.jelly is no longer defined in twisted.spread.jelly "
            "(pbext.security reads its namespace)",
        )

    def test_dictKeyAndValue(self) -> None:
        """
        C{crefutil._DictKeyAndValue(dict)} fills C{dict[key] = value} once
        its slots 0 (key) and 1 (value) are set, as pbext's dictionary
        unjellying expects; C{crefutil.NotKnown} is a class.
        """
        usedBy = "pbext._jelly.Unjellier._unjelly_dictionary"
        cls = self.lookUp(crefutil, "_DictKeyAndValue", usedBy)
        self.assertSignature(cls, "__init__", ["self", "dict"], usedBy)
        self.assertTrue(inspect.isclass(self.lookUp(crefutil, "NotKnown", usedBy)))
        target: dict[str, int] = {}
        slot = cls(target)
        slot[0] = "key"
        slot[1] = 7
        self.assertEqual(target, {"key": 7}, f"{_VERSION}: crefutil._DictKeyAndValue")


class BananaInternalsTests(_ShapeMixin, unittest.SynchronousTestCase):
    """
    pbext's Broker (pbext/broker.py) builds on banana's private names.
    """

    def test_prefixLimit(self) -> None:
        """
        C{banana._PREFIX_LIMIT} is the int 64, the prefix length pbext's
        broker restores after its handshake.
        """
        limit = self.lookUp(banana, "_PREFIX_LIMIT", "pbext.broker.Broker")
        self.assertEqual(limit, 64, f"{_VERSION}: banana._PREFIX_LIMIT changed")

    def test_selectDialect(self) -> None:
        """
        C{banana.Banana._selectDialect(dialect)}, which pbext's broker
        overrides to note the pbext dialect, is what the handshake calls.
        """
        usedBy = "pbext.broker.Broker._selectDialect"
        self.assertSignature(
            banana.Banana, "_selectDialect", ["self", "dialect"], usedBy
        )
        calls = inspect.getsource(banana.Banana).count("self._selectDialect(")
        self.assertTrue(
            calls >= 1,
            f"{_VERSION}: banana.Banana's handshake no longer calls "
            f"_selectDialect, which {usedBy} overrides",
        )
        self.assertAttributes(
            banana.Banana(),
            ["knownDialects", "isClient", "setPrefixLimit"],
            "a banana.Banana",
            usedBy,
        )


class BrokerInternalsTests(_ShapeMixin, unittest.SynchronousTestCase):
    """
    pbext's Broker overrides pb.Broker's private message methods, keeping
    their arguments.
    """

    def test_messageMethods(self) -> None:
        """
        C{pb.Broker}'s C{_sendMessage}, C{_recvMessage}, C{_sendAnswer} and
        C{_sendError} take the arguments pbext's overrides pass on.
        """
        usedBy = "pbext.broker.Broker and pbext.metrics"
        expected = {
            "_sendMessage": [
                "self",
                "prefix",
                "perspective",
                "objectID",
                "message",
                "args",
                "kw",
            ],
            "_recvMessage": [
                "self",
                "findObjMethod",
                "requestID",
                "objectID",
                "message",
                "answerRequired",
                "netArgs",
                "netKw",
            ],
            "_sendAnswer": ["self", "netResult", "requestID"],
            "_sendError": ["self", "fail", "requestID"],
        }
        for name, parameters in expected.items():
            self.assertSignature(pb.Broker, name, parameters, usedBy)

    def test_messageMethodsCalled(self) -> None:
        """
        Twisted's public broker entry points still go through those private
        methods, so pbext's overrides see every call and answer.
        """
        calls = {
            "proto_message": "_recvMessage",
            "proto_cachemessage": "_recvMessage",
            "_recvMessage": "_sendAnswer",
        }
        for caller, callee in calls.items():
            self.assertIn(
                callee,
                inspect.getsource(getattr(pb.Broker, caller)),
                f"{_VERSION}: pb.Broker.{caller} no longer calls {callee}, "
                "which pbext.broker.Broker overrides",
            )
        self.assertIn(
            "._sendMessage(",
            inspect.getsource(pb.RemoteReference.callRemote),
            f"{_VERSION}: pb.RemoteReference.callRemote no longer calls the "
            "broker's _sendMessage, which pbext.broker.Broker overrides",
        )

    def test_loginHelpers(self) -> None:
        """
        pb's C{_PortalWrapper(portal, broker)} and C{_PortalAuthChallenger(
        portal, broker, username, challenge)} exist with those arguments,
        and the avatar mixin's C{_cbLogin(result)}.
        """
        usedBy = "pbext.login"
        self.assertSignature(
            self.lookUp(pb, "_PortalWrapper", usedBy),
            "__init__",
            ["self", "portal", "broker"],
            usedBy,
        )
        self.assertSignature(
            self.lookUp(pb, "_PortalAuthChallenger", usedBy),
            "__init__",
            ["self", "portal", "broker", "username", "challenge"],
            usedBy,
        )
        self.assertSignature(
            self.lookUp(pb, "_JellyableAvatarMixin", usedBy),
            "_cbLogin",
            ["self", "result"],
            usedBy,
        )

    def test_clientFactoryHooks(self) -> None:
        """
        C{pb.PBClientFactory}'s private hooks pbext calls and keeps for
        subclasses (Buildbot overrides them): C{_cbSendUsername},
        C{_cbLoginAnonymous}, C{_failAll}, and the C{_root} and C{_broker}
        attributes.
        """
        usedBy = "pbext.client and pbext.login"
        factory = pb.PBClientFactory
        self.assertSignature(
            factory,
            "_cbSendUsername",
            ["self", "root", "username", "password", "client"],
            usedBy,
        )
        self.assertSignature(
            factory, "_cbLoginAnonymous", ["self", "root", "client"], usedBy
        )
        self.assertSignature(factory, "_failAll", ["self", "reason"], usedBy)
        instance = factory()
        self.assertAttributes(
            instance, ["_root", "_broker"], "a pb.PBClientFactory", usedBy
        )


class EndpointInternalsTests(_ShapeMixin, unittest.SynchronousTestCase):
    """
    pbext's broker looks through Twisted's endpoint wrapper to find itself.
    """

    def test_wrappingProtocol(self) -> None:
        """
        C{endpoints._WrappingProtocol(connectedDeferred, wrappedProtocol)}
        keeps the wrapped protocol as C{_wrappedProtocol} and hands it the
        received bytes unchanged.
        """
        usedBy = "pbext.broker (reading into the broker's buffers)"
        cls = self.lookUp(endpoints, "_WrappingProtocol", usedBy)
        self.assertSignature(
            cls, "__init__", ["self", "connectedDeferred", "wrappedProtocol"], usedBy
        )
        received: list[bytes] = []

        class Inner(protocol.Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)

        inner = Inner()
        wrapper = cls(defer.Deferred(), inner)
        self.assertIs(
            getattr(wrapper, "_wrappedProtocol", None),
            inner,
            f"{_VERSION}: endpoints._WrappingProtocol no longer keeps "
            f"_wrappedProtocol, which {usedBy} looks through",
        )
        wrapper.dataReceived(b"abc")
        self.assertEqual(received, [b"abc"])


class TransportInternalsTests(_ShapeMixin, unittest.SynchronousTestCase):
    """
    pbext._transport writes straight to an idle TCP socket and reads into
    the broker's buffers, which needs the TCP transport's buffer state.
    """

    def test_fileDescriptorBuffers(self) -> None:
        """
        A C{FileDescriptor} starts with an empty C{dataBuffer}, C{offset} 0,
        C{_tempDataLen} 0 and C{_writeDisconnected} false, and C{write}
        counts queued bytes in C{_tempDataLen}: pbext sends directly only
        when all of these say nothing is queued.
        """
        usedBy = "pbext._transport.DirectWrites"
        fd = abstract.FileDescriptor(reactor=MemoryReactor())
        self.assertAttributes(
            fd,
            ["dataBuffer", "offset", "_tempDataLen", "_writeDisconnected"],
            "an abstract.FileDescriptor",
            usedBy,
        )
        self.assertEqual(
            (fd.dataBuffer, fd.offset, fd._tempDataLen, fd._writeDisconnected),
            (b"", 0, 0, False),
            f"{_VERSION}: a new FileDescriptor's write buffer state changed",
        )
        fd.connected = True
        fd.startWriting = lambda: None  # type: ignore[method-assign]
        fd.write(b"12345")
        self.assertEqual(
            fd._tempDataLen,
            5,
            f"{_VERSION}: FileDescriptor.write no longer counts queued bytes "
            f"in _tempDataLen, which {usedBy} checks",
        )

    def test_tcpConnection(self) -> None:
        """
        C{tcp.Server} and C{tcp.Client} are C{tcp.Connection}s, which keep
        their socket as C{socket} and read in C{doRead} with a
        C{bufferSize}; every attribute pbext._transport lists as needed is
        there on a connection.
        """
        from pbext import _transport

        usedBy = "pbext._transport"
        for cls in (tcp.Server, tcp.Client):
            self.assertTrue(
                issubclass(cls, tcp.Connection),
                f"{_VERSION}: {_qual(cls)} is no longer a tcp.Connection",
            )
        self.assertSignature(tcp.Connection, "doRead", ["self"], usedBy)
        self.assertIsInstance(tcp.Connection.bufferSize, int)
        left, right = socket.socketpair()
        self.addCleanup(left.close)
        self.addCleanup(right.close)
        connection = tcp.Connection(left, protocol.Protocol(), reactor=MemoryReactor())
        connection.connected = True
        self.assertIs(connection.socket, left)
        self.assertAttributes(
            connection, list(_transport._NEEDED), "a tcp.Connection", usedBy
        )
