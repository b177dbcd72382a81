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

pbext names them all in one module, L{pbext._twisted}: the tests at the
end check every entry of it, and that no other pbext module uses a private
Twisted name directly.

C{tox -e twisted-oldest} runs them on the oldest Twisted setup.cfg allows,
the other environments on the newest release.
"""

from __future__ import annotations

import ast
import inspect
import re
import socket
from pathlib import Path
from typing import Any, Callable

from twisted.internet import abstract, defer, endpoints, protocol, tcp
from twisted.internet.testing import MemoryReactor
from twisted.persisted import crefutil
from twisted.spread import banana, flavors, jelly, pb
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
        usedBy = "pbext.loginserver (through pbext._twisted)"
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
        usedBy = "pbext.client and pbext.loginclient (through pbext._twisted)"
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


# --- pbext._twisted: every entry, and nothing outside it ---------------------

_PBEXT = Path(__file__).resolve().parent.parent / "pbext"

#: Twisted's modules whose private names pbext could reach for: those the
#: classes pbext subclasses or holds come from.
_TWISTED_SOURCES = (
    "twisted.spread.pb",
    "twisted.spread.jelly",
    "twisted.spread.banana",
    "twisted.spread.flavors",
    "twisted.persisted.crefutil",
    "twisted.internet.abstract",
    "twisted.internet.tcp",
    "twisted.internet.endpoints",
    "twisted.protocols.tls",
)


#: A private name, not a dunder nor a lone underscore.
_PRIVATE = re.compile(r"_[A-Za-z][A-Za-z0-9_]*\Z")


def _twistedModule() -> Any:
    """
    C{pbext._twisted}, imported when a test runs: if Twisted lost a name it
    imports, the tests above say which.
    """
    from pbext import _twisted

    return _twisted


def _memberDefined(cls: type, name: str) -> bool:
    """
    Whether C{cls} (a Twisted class) has C{name} as a class attribute or
    sets it on its instances (C{self.name = ...} in its source or a base's).
    """
    if hasattr(cls, name):
        return True
    for klass in inspect.getmro(cls):
        if not klass.__module__.startswith("twisted."):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if f"self.{name} =" in source or f"self.{name}: " in source:
            return True
    return False


class TwistedModuleEntryTests(_ShapeMixin, unittest.SynchronousTestCase):
    """
    Every entry of L{pbext._twisted} has the shape pbext expects of it.
    """

    def test_classesAndFunctions(self) -> None:
        """
        Each private class, function and namespace L{pbext._twisted} gives is
        the Twisted object of that name (whose shape the tests above check).
        """
        tw = _twistedModule()
        expected = {
            "Jellier": (jelly, "_Jellier"),
            "Unjellier": (jelly, "_Unjellier"),
            "createBlank": (jelly, "_createBlank"),
            "newInstance": (jelly, "_newInstance"),
            "DictKeyAndValue": (crefutil, "_DictKeyAndValue"),
            "PortalWrapper": (pb, "_PortalWrapper"),
            "PortalAuthChallenger": (pb, "_PortalAuthChallenger"),
            "WrappingProtocol": (endpoints, "_WrappingProtocol"),
        }
        for entry, (owner, name) in expected.items():
            found = self.lookUp(owner, name, f"pbext._twisted.{entry}")
            self.assertIs(
                getattr(tw, entry),
                found,
                f"pbext._twisted.{entry} is not {_qual(owner)}.{name}",
            )
        self.assertIs(tw.JELLY_NAMESPACE, vars(jelly))

    def test_prefixLimit(self) -> None:
        """
        L{pbext._twisted.prefixLimit} reads banana's prefix limit when asked,
        so it follows C{banana.setPrefixLimit}.
        """
        tw = _twistedModule()
        self.assertEqual(tw.prefixLimit(), 64)
        self.addCleanup(banana.setPrefixLimit, tw.prefixLimit())
        banana.setPrefixLimit(32)
        self.assertEqual(
            tw.prefixLimit(),
            32,
            f"{_VERSION}: banana.setPrefixLimit no longer sets "
            "banana._PREFIX_LIMIT, which pbext._twisted.prefixLimit reads",
        )

    def test_jellierAccessors(self) -> None:
        """
        L{pbext._twisted.checkMutable} and C{mutableChecker} find a back
        reference to an object a jellier jellied already, and
        C{maybePostUnjelly} returns the object it is given.
        """
        tw = _twistedModule()
        jellier = jelly._Jellier(jelly.DummySecurityOptions(), None, None)
        shared = [1]
        self.assertIsNone(tw.checkMutable(jellier, shared))
        jellier.jelly([shared, shared])
        self.assertTrue(tw.checkMutable(jellier, shared))
        checker = tw.mutableChecker(jellier)
        self.assertIsNotNone(checker)
        self.assertTrue(checker(shared))
        self.assertIsNone(tw.mutableChecker(object()))
        unjellier = jelly._Unjellier(jelly.DummySecurityOptions(), None, None)
        thing = object()
        self.assertIs(tw.maybePostUnjelly(unjellier, thing), thing)

    def test_borgify(self) -> None:
        """
        L{pbext._twisted.borgify} makes a copy of a remote cache sharing its
        state.
        """
        tw = _twistedModule()
        cache = flavors.RemoteCache()
        cache.__dict__["x"] = 1
        copy = tw.borgify(cache)
        self.assertIsNot(copy, cache)
        self.assertEqual(copy.__dict__, {"x": 1})

    def test_loginAccessors(self) -> None:
        """
        L{pbext._twisted}'s login accessors call the private PB methods of
        the same purpose, with the arguments pbext gives.
        """
        tw = _twistedModule()
        calls: list[tuple[object, ...]] = []

        class Factory(pb.PBClientFactory):
            def _cbSendUsername(self, *args: object) -> None:
                calls.append(("sendUsername", *args))

            def _cbLoginAnonymous(self, *args: object) -> None:
                calls.append(("loginAnonymous", *args))

            def _failAll(self, reason: object) -> None:
                calls.append(("failAll", reason))

        class Wrapper(pb._PortalWrapper):
            def _cbLogin(self, result: object) -> None:
                calls.append(("cbLogin", result))

        factory = Factory()
        tw.sendUsername(factory, "root", b"alice", b"secret", "mind")
        tw.loginAnonymous(factory, "root", "mind")
        tw.failAll(factory, "reason")
        tw.cbLogin(Wrapper(None, None), ("i", "avatar", "logout"))
        self.assertEqual(
            calls,
            [
                ("sendUsername", "root", b"alice", b"secret", "mind"),
                ("loginAnonymous", "root", "mind"),
                ("failAll", "reason"),
                ("cbLogin", ("i", "avatar", "logout")),
            ],
        )

    def test_wrappedProtocol(self) -> None:
        """
        L{pbext._twisted.wrappedProtocol} finds the protocol inside Twisted's
        endpoint wrapper, and gives L{None} for anything else.
        """
        tw = _twistedModule()
        inner = protocol.Protocol()
        wrapper = endpoints._WrappingProtocol(defer.Deferred(), inner)
        self.assertIs(tw.wrappedProtocol(wrapper), inner)
        self.assertIsNone(tw.wrappedProtocol(inner))

    def test_writeBuffer(self) -> None:
        """
        L{pbext._twisted}'s write-buffer accessors read and clear what a
        file-descriptor transport holds: empty at first, then the bytes
        written, then nothing once discarded.
        """
        tw = _twistedModule()
        fd = abstract.FileDescriptor(reactor=MemoryReactor())
        fd.connected = True
        fd.startWriting = lambda: None  # type: ignore[method-assign]
        self.assertTrue(tw.writeBufferEmpty(fd))
        self.assertEqual(tw.bufferedBytes(fd), 0)
        fd.write(b"12345")
        self.assertFalse(tw.writeBufferEmpty(fd))
        self.assertEqual(tw.bufferedBytes(fd), 5)
        tw.discardWriteBuffer(fd)
        self.assertTrue(tw.writeBufferEmpty(fd))
        self.assertEqual(tw.bufferedBytes(fd), 0)
        self.assertEqual(
            (fd.dataBuffer, fd.offset, fd._tempDataBuffer, fd._tempDataLen),
            (b"", 0, [], 0),
        )
        fd._writeDisconnected = True
        self.assertFalse(tw.writeBufferEmpty(fd))
        connection = tcp.Connection(
            socket.socket(), protocol.Protocol(), reactor=MemoryReactor()
        )
        self.addCleanup(connection.socket.close)
        self.assertAttributes(
            connection,
            list(tw.TCP_ATTRIBUTES),
            "a tcp.Connection",
            "pbext._twisted.TCP_ATTRIBUTES",
        )

    def test_tlsHeld(self) -> None:
        """
        L{pbext._twisted.tlsHeldBytes} counts, and C{discardTLSHeld} drops,
        what a TLS protocol holds back in C{_appSendBuffer}.
        """
        tw = _twistedModule()
        try:
            from twisted.protocols.tls import TLSMemoryBIOProtocol
        except ImportError:
            raise unittest.SkipTest("pyOpenSSL is not installed")
        usedBy = "pbext._twisted.tlsHeldBytes"
        self.assertTrue(
            _memberDefined(TLSMemoryBIOProtocol, "_appSendBuffer"),
            f"{_VERSION}: TLSMemoryBIOProtocol no longer keeps _appSendBuffer, "
            f"which {usedBy} reads",
        )

        class Held:
            _appSendBuffer = [b"abc", b"de"]

        held = Held()
        self.assertEqual(tw.tlsHeldBytes(held), 5)
        tw.discardTLSHeld(held)
        self.assertEqual(tw.tlsHeldBytes(held), 0)
        self.assertEqual(tw.tlsHeldBytes(object()), 0)

    def test_members(self) -> None:
        """
        Every private member L{pbext._twisted.MEMBERS} lists is still
        defined by its Twisted class or module.
        """
        from twisted.python.reflect import namedAny

        for owner, names in _twistedModule().MEMBERS.items():
            try:
                found = namedAny(owner)
            except (AttributeError, ImportError):
                self.fail(f"{_VERSION} has no {owner}, which pbext._twisted uses")
            for name in names:
                defined = (
                    hasattr(found, name)
                    if inspect.ismodule(found)
                    else _memberDefined(found, name)
                )
                self.assertTrue(
                    defined,
                    f"{_VERSION}: {owner} no longer has {name}, which "
                    "pbext._twisted relies on",
                )

    def test_overridden(self) -> None:
        """
        Every private method L{pbext._twisted.OVERRIDDEN} lists exists on
        its Twisted class, and each pbext override takes as many positional
        parameters (Twisted calls them positionally).
        """
        from twisted.python.reflect import namedAny

        overriders = _pbextClasses()
        for owner, names in _twistedModule().OVERRIDDEN.items():
            cls = namedAny(owner)
            for name in names:
                method = self.lookUp(cls, name, "pbext's override of it")
                if not inspect.isfunction(method):
                    continue
                expected = _positional(method)
                for klass in overriders:
                    if issubclass(klass, cls) and name in vars(klass):
                        found = _positional(vars(klass)[name])
                        self.assertEqual(
                            len(found),
                            len(expected),
                            f"{_VERSION}: {owner}.{name} takes "
                            f"({', '.join(expected)}) but "
                            f"{klass.__module__}.{klass.__qualname__}.{name} "
                            f"takes ({', '.join(found)})",
                        )

    def test_everyEntryChecked(self) -> None:
        """
        Every name L{pbext._twisted} defines is one of those the tests of
        this class check: a new entry comes with a shape test.
        """
        checked = {
            "Jellier",
            "Unjellier",
            "createBlank",
            "newInstance",
            "JELLY_NAMESPACE",
            "DictKeyAndValue",
            "PortalWrapper",
            "PortalAuthChallenger",
            "WrappingProtocol",
            "prefixLimit",
            "checkMutable",
            "mutableChecker",
            "maybePostUnjelly",
            "borgify",
            "cbLogin",
            "sendUsername",
            "loginAnonymous",
            "failAll",
            "wrappedProtocol",
            "TCP_ATTRIBUTES",
            "writeBufferEmpty",
            "bufferedBytes",
            "discardWriteBuffer",
            "tlsHeldBytes",
            "discardTLSHeld",
            "MEMBERS",
            "OVERRIDDEN",
        }
        tw = _twistedModule()
        entries = {
            name
            for name, value in vars(tw).items()
            if not name.startswith("_")
            and not inspect.ismodule(value)
            and getattr(value, "__module__", tw.__name__) in (tw.__name__, None)
            or name in checked
        }
        entries -= {"annotations", "Any", "Callable", "Mapping"}
        self.assertEqual(
            sorted(entries - checked),
            [],
            "pbext._twisted has entries no test here checks; add a shape test",
        )
        self.assertEqual(sorted(checked - entries), [])


def _positional(function: Callable[..., Any]) -> list[str]:
    """
    The names of C{function}'s positional parameters.
    """
    kinds = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )
    return [
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind in kinds
    ]


def _pbextModules() -> list[str]:
    return sorted(
        "pbext." + path.stem
        for path in _PBEXT.glob("*.py")
        if path.stem not in ("__init__", "__main__")
    )


def _pbextClasses() -> list[type]:
    """
    Every class defined in a pbext module.
    """
    import importlib

    classes = []
    for name in _pbextModules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if inspect.isclass(value) and value.__module__ == name:
                classes.append(value)
    return classes


def _privateTwistedNames() -> dict[str, str]:
    """
    The private names Twisted's modules of L{_TWISTED_SOURCES} define
    (functions, classes, methods, attributes), each with a module defining
    it.
    """
    import importlib

    names: dict[str, str] = {}
    for moduleName in _TWISTED_SOURCES:
        try:
            module = importlib.import_module(moduleName)
        except ImportError:  # pragma: no cover (pyOpenSSL is not installed)
            continue
        tree = ast.parse(inspect.getsource(module))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                name = node.name
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                name = node.attr
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                name = node.id
            else:
                continue
            if name.startswith("_") and not name.startswith("__"):
                names.setdefault(name, moduleName)
    return names


def _ownNames(tree: ast.AST) -> set[str]:
    """
    The names a pbext module defines for itself: its functions, classes,
    module and class attributes, and attributes set on C{self}.
    """
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    own.add(target.id)
                elif (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id in ("self", "cls")
                ):
                    own.add(target.attr)
    return own


def directUses(directory: Path) -> list[str]:
    """
    Where the pbext modules in C{directory}, other than C{_twisted.py},
    touch a private Twisted name directly: import one from a Twisted
    module, read one off a Twisted module, or use a private method or
    attribute that only Twisted's classes define (those L{pbext._twisted}
    lists under C{MEMBERS} included) and that is not one of the methods
    pbext overrides (C{OVERRIDDEN}).

    @return: C{"file:line: name"} for each.
    """
    tw = _twistedModule()
    twistedNames = _privateTwistedNames()
    members = {name for names in tw.MEMBERS.values() for name in names}
    overridden = {name for names in tw.OVERRIDDEN.values() for name in names}
    trees = {
        path: ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob("*.py"))
        if path.name != "_twisted.py"
    }
    own: set[str] = set()
    for tree in trees.values():
        own |= _ownNames(tree)
    found = []
    for path, tree in trees.items():
        twistedModules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("twisted."):
                        twistedModules.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "twisted"
            ):
                for alias in node.names:
                    if alias.name.startswith("_"):
                        found.append(f"{path.name}:{node.lineno}: {alias.name}")
                    else:
                        twistedModules.add(alias.asname or alias.name)
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Attribute):
                name = node.attr
                base = node.value
                if (
                    isinstance(base, ast.Name)
                    and base.id in twistedModules
                    and name.startswith("_")
                    and not name.startswith("__")
                ):
                    found.append(f"{path.name}:{node.lineno}: {base.id}.{name}")
                    continue
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value
            if not name or not _PRIVATE.match(name) or name in overridden:
                continue
            if name in members or (name in twistedNames and name not in own):
                found.append(f"{path.name}:{node.lineno}: {name}")
    return sorted(found, key=lambda where: where.split(": ")[0].split(":"))


class OneHomeTests(unittest.SynchronousTestCase):
    """
    No pbext module but L{pbext._twisted} touches a private Twisted name.
    """

    def test_noDirectUse(self) -> None:
        """
        pbext's modules reach Twisted's private names only through
        L{pbext._twisted}.
        """
        self.assertEqual(
            directUses(_PBEXT),
            [],
            "these pbext modules use private Twisted names directly; name "
            "them in pbext/_twisted.py and use them from there",
        )

    def test_scanFindsDirectUse(self) -> None:
        """
        The scan finds each kind of direct use: a private name imported from
        a Twisted module, read off one, or a private member only Twisted
        defines.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "bad.py").write_text(
            "from twisted.spread import jelly, pb\n"
            "from twisted.spread.jelly import _newInstance\n"
            "Base = jelly._Jellier\n"
            "def f(t, factory):\n"
            "    factory._cbSendUsername(1, 2, 3, 4)\n"
            "    return t._tempDataLen\n",
            encoding="utf-8",
        )
        (directory / "good.py").write_text(
            "class B:\n"
            "    def _sendMessage(self, *a):\n"
            "        return super()._sendMessage(*a)\n"
            "    def _own(self):\n"
            "        self._clock = None\n"
            "        return self._clock\n",
            encoding="utf-8",
        )
        self.assertEqual(
            directUses(directory),
            [
                "bad.py:2: _newInstance",
                "bad.py:3: jelly._Jellier",
                "bad.py:5: _cbSendUsername",
                "bad.py:6: _tempDataLen",
            ],
        )

    def test_overridesListed(self) -> None:
        """
        Every private method or attribute a pbext class defines over one a
        Twisted base class defines is listed in
        L{pbext._twisted.OVERRIDDEN}, so the list is complete.
        """
        listed = {
            name for names in _twistedModule().OVERRIDDEN.values() for name in names
        }
        unlisted = []
        for cls in _pbextClasses():
            twistedBases = [
                base
                for base in inspect.getmro(cls)
                if base.__module__.startswith("twisted.")
            ]
            for name in vars(cls):
                if not name.startswith("_") or name.startswith("__"):
                    continue
                if name in listed:
                    continue
                if any(name in vars(base) for base in twistedBases):
                    unlisted.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
        self.assertEqual(
            unlisted,
            [],
            "these pbext classes override private Twisted names that "
            "pbext/_twisted.py does not list in OVERRIDDEN",
        )
