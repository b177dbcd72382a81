# -*- test-case-name: tests.test_copyable -*-
"""
Typed copy-by-value registries.

Classic PB keeps one process-wide table from fully qualified class names to
the classes that rebuild them (L{twisted.spread.jelly.setUnjellyableForClass}).
Renaming a module breaks every peer, every server in the process accepts every
registered type, a class that does not inherit from L{pb.Copyable} cannot be
sent, and L{pb.RemoteCopy.setCopyableState} assigns whatever dictionary the
peer sent to C{__dict__}.

A L{CopyableRegistry} is an ordinary object owned by the factories that use
it.  Each type is sent and received under an explicit, stable wire name; the
same class (a plain class, a dataclass or an attrs class) is both the sent
and the rebuilt type; and the received state is checked field by field
against the class's annotations I{before} any object is built::

    >>> import uuid
    >>> from dataclasses import dataclass
    >>> from pbext.copyable import CopyableRegistry
    >>> registry = CopyableRegistry()
    >>> @registry.register(name="example.Point")
    ... @dataclass
    ... class Point:
    ...     x: int
    ...     y: int
    ...     label: str = ""      # may be absent: older peers did not send it
    >>> _ = registry.registerCopier(
    ...     uuid.UUID, "example.UUID",
    ...     toState=lambda u: {"hex": u.hex},
    ...     fromState=lambda state: uuid.UUID(hex=state["hex"]),
    ...     fields={"hex": str},
    ... )
    >>> registry.isTypeKnown(b"example.Point")
    True
    >>> CopyableRegistry().isTypeKnown(b"example.Point")
    False

Give the registry to pbext's server and client factories; their brokers
consult it for every object they send and every type name they receive.

The wire stays classic jelly: a registered object travels as
C{[b"example.Point", [b"dictionary", [key, value], ...]]}, exactly what a
classic L{pb.Copyable} with that type name sends, so a stock peer that calls
C{setUnjellyableForClass("example.Point", RemotePoint)} reads it, and
L{CopyableRegistry.registerClassic} accepts what a stock peer's copyables
send.

Versions: a type registered with C{version=2} or more adds one entry to its
state dictionary, C{"pbext.version": N}.  The key is not a Python identifier,
so it can never collide with a field, and a stock peer that assigns the
state to C{__dict__} gets an attribute nobody can reach by accident.  Version
1 sends no key, and state without the key is version 1: what classic peers
and older pbext peers send.  Received state of an older version goes through
the upgraders registered with L{CopyableRegistry.registerUpgrader} before it
is checked.

@since: pbext NEXT
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import types
import typing
import weakref
from typing import Any, Callable, Iterable, Mapping, NoReturn, TypeVar, overload

import attrs
from twisted.persisted.crefutil import NotKnown
from twisted.python import reflect
from twisted.spread import flavors, jelly, pb
from zope.interface import implementer

from pbext import _twisted
from pbext._registrychecks import (
    RegistryError,
    checkCacheClasses,
    checkClass,
    checkIsClass,
    checkNotEnum,
    checkUpgrade,
    checkVersion,
    checkWireName,
)
from pbext.interfaces import ICopyableRegistry
from pbext.typecheck import _accept, _Checker, _compile, describeAnnotation

__all__ = [
    "VERSION_KEY",
    "CopiedFailure",
    "CopyableRegistry",
    "CopyableStateError",
    "FailureRegistry",
    "RegistryError",
    "RemoteCacheObserver",
    "failureRegistry",
]

_T = TypeVar("_T")

VERSION_KEY = "pbext.version"
"""
The state key that carries the version of a type registered with a version
greater than 1.
"""

_VERSION_KEY_BYTES = VERSION_KEY.encode("ascii")
_UNICODE = b"unicode"
_DICTIONARY = b"dictionary"


class CopyableStateError(jelly.InsecureJelly):
    """
    A peer sent state that does not match the registered type: an unknown,
    private, missing or mistyped field, a version this side cannot upgrade,
    or state the type's own constructor rejected.

    It is an L{InsecureJelly<twisted.spread.jelly.InsecureJelly>}: the
    expression is refused and nothing is built.

    @ivar typeName: the wire name of the type (C{str}).
    @ivar field: the field concerned, or L{None}.
    @ivar expected: the expected type of the field as text, or L{None}.
    @ivar got: what was received instead, as text, or L{None}.

    @since: pbext NEXT
    """

    def __init__(
        self,
        typeName: str,
        reason: str,
        field: str | None = None,
        expected: str | None = None,
        got: str | None = None,
    ) -> None:
        super().__init__(f"{typeName}: {reason}")
        self.typeName = typeName
        self.field = field
        self.expected = expected
        self.got = got


class CopiedFailure(pb.CopiedFailure):
    """
    A failure received from a peer, whose L{trap} and L{raiseException}
    work.

    Twisted's L{pb.CopiedFailure} keeps the remote exception's name (bytes)
    in C{type} and its text in C{value}, but inherits
    L{Failure.raiseException<twisted.python.failure.Failure.raiseException>},
    which raises C{value}: so C{trap(SomeError)} on a failure of another
    type fails with C{AttributeError} instead of passing the failure on
    (twisted#12530), and C{repr} fails too.  This class raises a
    L{pb.RemoteError} instead, as C{throwExceptionIntoGenerator} already
    does.

    Its state is read by L{CopyableRegistry.registerFailures}: only the
    fields a failure needs are kept (C{type}, C{value}, C{traceback},
    C{parents}), checked, never assigned wholesale.

    @since: pbext NEXT
    """

    traceback: str

    def raiseException(self) -> NoReturn:
        """
        Raise a L{pb.RemoteError} for the remote exception.

        @raise pb.RemoteError: always, with C{remoteType} the remote
            exception's qualified name, as L{throwExceptionIntoGenerator}
            does; its C{failure} attribute is this failure.
        """
        error = pb.RemoteError(self.type, self.value, self.traceback)
        # The ignore below: the failure rides on the error, as Twisted's.
        error.failure = self  # type: ignore[attr-defined]
        raise error

    def __repr__(self) -> str:
        remoteType = self.type
        if isinstance(remoteType, bytes):
            remoteType = remoteType.decode("utf-8", "replace")
        return f"<{reflect.qual(self.__class__)} {remoteType}: {self.value}>"


class RemoteCacheObserver(flavors.RemoteCacheObserver):
    """
    A reference to a peer's L{pb.RemoteCache}, passed to
    L{pb.Cacheable.getStateToCacheAndObserveFor}, that compares and hashes
    correctly.

    Twisted's observer compares a tuple with the other observer, and with
    two peers compares the brokers with C{<}, which raises C{TypeError}
    (twisted#9671): a cacheable that keeps its observers in a set cannot
    remove one in C{stoppedObserving}.  Observers for the same broker,
    cacheable and perspective are equal here, also to Twisted's own
    observer for the same triple (so the one Twisted's C{Broker.proto_decache}
    passes to C{stoppedObserving} removes the one this module gave to
    C{getStateToCacheAndObserveFor}), and their hash is Twisted's formula
    for that reason.

    @since: pbext NEXT
    """

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, flavors.RemoteCacheObserver):
            return NotImplemented
        return (
            self.broker is other.broker
            and self.cached is other.cached
            and self.perspective == other.perspective
        )

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        if equal is NotImplemented:
            return NotImplemented
        return not equal

    def __hash__(self) -> int:
        # Same value as flavors.RemoteCacheObserver.__hash__, so that the
        # two kinds of observer land in the same set bucket.
        return (
            (hash(self.broker) % 2**10)
            + (hash(self.perspective) % 2**10)
            + (hash(self.cached) % 2**10)
        )


@dataclasses.dataclass(frozen=True)
class _Field:
    """
    One declared field of a registered type.

    @ivar name: the key in the state dictionary, and the attribute name.
    @ivar initName: the constructor parameter name (differs from C{name}
        for private attrs attributes).
    @ivar checker: the compiled check of the annotation.
    @ivar expected: the annotation as text.
    @ivar required: whether a peer must send it (no default).
    """

    name: str
    initName: str
    checker: _Checker
    expected: str
    required: bool


def _isClassVar(annotation: object) -> bool:
    return annotation is typing.ClassVar or typing.get_origin(annotation) is (
        typing.ClassVar
    )


def _makeField(
    owner: str, name: str, annotation: object, required: bool, initName: str = ""
) -> _Field:
    """
    Compile one field, turning an uncheckable annotation into a
    L{RegistryError}.
    """
    try:
        checker = _compile(annotation)
    except TypeError as e:
        raise RegistryError(f"{owner}: field {name!r}: {e}") from e
    return _Field(
        name, initName or name, checker, describeAnnotation(annotation), required
    )


def _classFields(cls: type) -> dict[str, _Field]:
    """
    The declared fields of a class: its dataclass or attrs fields that the
    constructor takes, or else its annotations (not C{ClassVar}); a plain
    class's field is optional when the class has an attribute of that name
    (a default).

    @raise NameError: if an annotation names something not defined yet.
    """
    owner = cls.__qualname__
    hints = typing.get_type_hints(cls)
    fields: dict[str, _Field] = {}
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            required = (
                f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            )
            fields[f.name] = _makeField(
                owner, f.name, hints.get(f.name, f.type), required
            )
    elif attrs.has(cls):
        for a in attrs.fields(cls):
            if not a.init:
                continue
            annotation = hints.get(a.name, a.type)
            if annotation is None:
                raise RegistryError(
                    f"{owner}: attribute {a.name!r} has no type; annotate it, "
                    f"for example {a.name}: int"
                )
            fields[a.name] = _makeField(
                owner, a.name, annotation, a.default is attrs.NOTHING, a.alias
            )
    else:
        for name, annotation in hints.items():
            if _isClassVar(annotation):
                continue
            fields[name] = _makeField(owner, name, annotation, not hasattr(cls, name))
    return fields


def _cacheFields(cls: type) -> dict[str, _Field]:
    """
    The declared fields of a L{pb.RemoteCache} subclass, which may not use
    the names the cache machinery uses.
    """
    fields = _classFields(cls)
    for reserved in ("broker", "luid"):
        if reserved in fields:
            raise RegistryError(
                f"{cls.__qualname__} cannot declare a field named {reserved!r}: "
                f"pb.RemoteCache uses it; rename the field"
            )
    return fields


def _mappingFields(owner: str, declared: Mapping[str, object]) -> dict[str, _Field]:
    """
    The fields of a copier: every one is required.
    """
    fields = {}
    for name, annotation in declared.items():
        if not isinstance(name, str) or not name or name == VERSION_KEY:
            raise RegistryError(
                f"{owner}: field name {name!r} is not a Python identifier; "
                f"give the attribute name as it is spelt in the class"
            )
        fields[name] = _makeField(owner, name, annotation, True)
    return fields


def _jellyKey(key: object, jellier: Any) -> object:
    if type(key) is str:
        return [_UNICODE, key.encode("utf-8")]
    return jellier.jelly(key)


def _jellyValue(value: object, jellier: Any) -> object:
    """
    Jelly one field value; the common immutable types are spelled here, as
    jelly itself spells them, without the per-value class-name lookup.
    """
    kind = type(value)
    if kind is int or kind is float or kind is bytes:
        return value
    if kind is str:
        # The ignore below: kind is str narrows type(), not value.
        return [_UNICODE, value.encode("utf-8")]  # type: ignore[attr-defined]
    return jellier.jelly(value)


def _keyName(key: object) -> object:
    if type(key) is bytes:
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            return key
    return key


class _Entry:
    """
    One registered wire name: how to read and check the state received
    under it, how to build the local object, and (if the registration
    sends) how to serialize a local object under it.

    @ivar wireName: the type name on the wire.
    @ivar typeName: the same as text, for messages.
    @ivar version: the current version of the type.
    @ivar upgraders: the upgrader from each older version to the next.
    @ivar builtClass: the class that received state builds, where the
        registration names one (L{None} for copiers, caches and failures).
    """

    builtClass: type | None = None

    def __init__(
        self,
        wireName: bytes,
        version: int,
        fields: Callable[[], dict[str, _Field]],
        build: Callable[[dict[str, object]], object],
    ) -> None:
        self.wireName = wireName
        self.typeName = wireName.decode("utf-8")
        self.version = version
        self.upgraders: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self._resolveFields = fields
        self._fields: dict[str, _Field] | None = None
        self._build = build
        self.resolve(deferNames=True)

    def resolve(self, deferNames: bool = False) -> None:
        """
        Compile the declared fields now.

        @param deferNames: if true, an annotation naming something not yet
            defined (a class declared later in its module) leaves the
            compilation for first use instead of failing.

        @raise RegistryError: if the fields cannot be compiled.
        """
        if self._fields is not None:
            return
        try:
            fields = self._resolveFields()
        except NameError as e:
            if deferNames:
                return
            raise RegistryError(
                f"{self.typeName}: cannot resolve the field annotations: {e}; "
                f"define or import that name in the class's module"
            ) from e
        self._fields = fields
        self._required = frozenset(f.name for f in fields.values() if f.required)
        self._unchecked = tuple(f.name for f in fields.values() if f.checker is _accept)

    @property
    def fields(self) -> dict[str, _Field]:
        if self._fields is None:
            self.resolve()
        return self._fields  # type: ignore[return-value]  # resolve() set it, or raised

    def refuse(self, reason: str, **details: str | None) -> NoReturn:
        raise CopyableStateError(self.typeName, reason, **details)

    # Sending.

    def jelly(self, obj: object, jellier: Any) -> list[object] | None:
        """
        Serialize C{obj}, or return L{None} to leave it to classic jelly.
        """
        raise NotImplementedError()

    def stateExpression(
        self, items: Iterable[tuple[object, object]], jellier: Any
    ) -> list[object]:
        """
        The jelly expression of a state dictionary given as pairs, with the
        version key when the version is above 1.
        """
        expression: list[object] = [_DICTIONARY]
        append = expression.append
        for key, value in items:
            append([_jellyKey(key, jellier), _jellyValue(value, jellier)])
        if self.version > 1:
            append([[_UNICODE, _VERSION_KEY_BYTES], self.version])
        return expression

    # Receiving.

    def unjelly(self, unjellier: Any, jellyList: list[object]) -> object:
        """
        Build the local object for C{[wireName, state]}.
        """
        if len(jellyList) != 2:
            self.refuse(f"malformed expression of length {len(jellyList)}")
        return self.build(self.readState(jellyList[1], unjellier))

    def build(self, state: dict[str, object]) -> object:
        """
        Build the local object from checked state, turning an exception of
        the type's own constructor into a refusal.
        """
        try:
            return self._build(state)
        except CopyableStateError:
            raise
        except Exception as e:
            self.refuse(f"rejected its state: {e!r}")

    def readState(self, expression: object, unjellier: Any) -> dict[str, object]:
        """
        Unjelly, upgrade and check a received state expression.

        The common case, a literal C{dictionary} expression, is read here
        directly; anything else goes through the unjellier and must come out
        a C{dict}.

        @return: the checked state: C{str} keys, the declared fields only.
        @raise CopyableStateError: if the state does not match the type.
        """
        state: dict[object, object]
        # The names spelled as bytes: a name sent both as bytes and as
        # text is refused, since which of its values wins would depend on
        # the order of the pairs, which a decoder need not keep.
        spelledAsBytes: set[str] = set()
        if type(expression) is list and expression and expression[0] == _DICTIONARY:
            state = {}
            unjelly = unjellier.unjelly
            for pair in expression[1:]:
                if type(pair) is not list or len(pair) != 2:
                    self.refuse("malformed state dictionary")
                key, value = pair
                kind = type(key)
                asBytes = kind is bytes
                if kind is list and len(key) == 2 and key[0] == _UNICODE:
                    key = key[1]
                    kind = type(key)
                    if kind is not bytes:
                        self.refuse("malformed state dictionary")
                elif kind is not bytes:
                    key = unjelly(key)
                    kind = type(key)
                    asBytes = kind is bytes
                if kind is bytes:
                    try:
                        key = key.decode("utf-8")
                    except UnicodeDecodeError:
                        self.refuse(f"field name {key!r} is not UTF-8")
                elif kind is not str:
                    self.refuse(f"field names must be strings, got {kind.__name__}")
                self._spelling(state, spelledAsBytes, key, asBytes)
                if type(value) is list:
                    value = unjelly(value)
                state[key] = value
        else:
            received = unjellier.unjelly(expression)
            if type(received) is not dict:
                self.refuse(
                    f"state must be a dictionary, got {type(received).__name__}"
                )
            state = {}
            for key, value in received.items():
                asBytes = type(key) is bytes
                key = _keyName(key)
                if type(key) is not str:
                    self.refuse(
                        f"field names must be strings, got {type(key).__name__}"
                    )
                self._spelling(state, spelledAsBytes, key, asBytes)
                state[key] = value
        # The ignore below: keys checked to be str just above.
        return self.checkState(state)  # type: ignore[arg-type]

    def _spelling(
        self,
        state: dict[object, object],
        spelledAsBytes: set[str],
        name: str,
        asBytes: bool,
    ) -> None:
        """
        Note how field C{name} was spelled; refuse a name given both as
        bytes and as text.
        """
        if name in state and (name in spelledAsBytes) != asBytes:
            self.refuse(f"field {name!r} given both as bytes and as text", field=name)
        if asBytes:
            spelledAsBytes.add(name)

    def checkState(self, state: dict[str, object]) -> dict[str, object]:
        """
        Upgrade and check a state dictionary with C{str} keys.
        """
        fields = self.fields
        version = state.pop(VERSION_KEY, 1)
        if version != self.version:
            state = self.upgrade(state, version)
        for name, value in state.items():
            field = fields.get(name)
            if field is None:
                if name.startswith("_"):
                    self.refuse(
                        f"refusing undeclared private field {name!r}", field=name
                    )
                self.refuse(f"unknown field {name!r}", field=name)
            mismatch = field.checker(value)
            if mismatch is not None:
                got = mismatch[2]
                if isinstance(value, NotKnown):
                    got = "a circular reference"
                self.refuse(
                    f"field {name!r}{mismatch[0]}: expected {mismatch[1]}, got {got}",
                    field=name,
                    expected=mismatch[1],
                    got=got,
                )
        for name in self._unchecked:
            if isinstance(state.get(name), NotKnown):
                self.refuse(f"field {name!r}: circular reference", field=name)
        if len(state) < len(fields):
            missing = self._required.difference(state)
            if missing:
                name = sorted(missing)[0]
                self.refuse(
                    f"missing field {name!r}",
                    field=name,
                    expected=fields[name].expected,
                )
        return state

    def upgrade(self, state: dict[str, Any], version: object) -> dict[str, Any]:
        """
        Bring state of an older version up to the current one.

        The upgraders receive the state as the peer sent it (unchecked, apart
        from its keys being strings); their result is checked afterwards.
        """
        if type(version) is not int or version < 1:
            self.refuse(f"invalid version {version!r}")
        if version > self.version:
            self.refuse(
                f"peer sent version {version}; this side knows versions up to "
                f"{self.version}"
            )
        for name in state:
            if name.startswith("__"):
                self.refuse(f"refusing undeclared private field {name!r}", field=name)
        while version < self.version:
            upgrader = self.upgraders.get(version)
            if upgrader is None:
                self.refuse(f"no upgrader from version {version}")
            try:
                state = upgrader(state)
            except Exception as e:
                self.refuse(f"upgrader from version {version} failed: {e!r}")
            if type(state) is not dict:
                self.refuse(f"upgrader from version {version} did not return a dict")
            for name in state:
                if type(name) is not str:
                    self.refuse(
                        f"upgrader from version {version} returned a non-str key"
                    )
            version += 1
        return state


class _TypedEntry(_Entry):
    """
    A class sent with the values of its declared fields.
    """

    def jelly(self, obj: object, jellier: Any) -> list[object]:
        sxp = jellier.prepare(obj)
        sxp.append(self.wireName)
        expression: list[object] = [_DICTIONARY]
        append = expression.append
        for name, key in self.sendKeys():
            append([[_UNICODE, key], _jellyValue(getattr(obj, name), jellier)])
        if self.version > 1:
            append([[_UNICODE, _VERSION_KEY_BYTES], self.version])
        sxp.append(expression)
        return jellier.preserve(obj, sxp)

    _sendKeys: tuple[tuple[str, bytes], ...] | None = None

    def sendKeys(self) -> tuple[tuple[str, bytes], ...]:
        keys = self._sendKeys
        if keys is None:
            keys = self._sendKeys = tuple(
                (name, name.encode("utf-8")) for name in self.fields
            )
        return keys


class _StateEntry(_Entry):
    """
    A type sent with a state dictionary computed by a function of the
    object and the jellier (a classic Copyable's C{getStateToCopyFor}, or a
    copier's C{toState}).
    """

    def __init__(
        self,
        wireName: bytes,
        version: int,
        fields: Callable[[], dict[str, _Field]],
        build: Callable[[dict[str, object]], object],
        stateOf: Callable[[Any, Any], Mapping[Any, object]],
    ) -> None:
        super().__init__(wireName, version, fields, build)
        self._stateOf = stateOf

    def jelly(self, obj: object, jellier: Any) -> list[object]:
        sxp = jellier.prepare(obj)
        state = self._stateOf(obj, jellier)
        sxp.append(self.wireName)
        sxp.append(self.stateExpression(state.items(), jellier))
        return jellier.preserve(obj, sxp)


class _ReceiveOnlyEntry(_Entry):
    def jelly(self, obj: object, jellier: Any) -> None:
        return None


class _CacheEntry(_Entry):
    """
    A L{pb.Cacheable} / L{pb.RemoteCache} pair, with Cacheable semantics:
    sent once per broker with a cache id, then by reference; updates arrive
    as C{observe_} calls on the remote cache.
    """

    def __init__(
        self,
        wireName: bytes,
        version: int,
        remoteCacheClass: type[pb.RemoteCache],
    ) -> None:
        super().__init__(
            wireName,
            version,
            lambda: _cacheFields(remoteCacheClass),
            lambda state: state,
        )
        self._remoteCacheClass = remoteCacheClass

    def jelly(self, obj: object, jellier: Any) -> list[object] | None:
        broker = jellier.invoker
        if broker is None:
            # Outside a connection there is nothing to cache against.
            return None
        luid = broker.cachedRemotelyAs(obj, 1)
        if luid is not None:
            return [flavors.cached_atom, luid]
        luid = broker.cacheRemotely(obj)
        perspective = broker.serializingPerspective
        observer = RemoteCacheObserver(broker, obj, perspective)
        # The ignore below: a pb.Cacheable, checked by the registry.
        state = obj.getStateToCacheAndObserveFor(  # type: ignore[attr-defined]
            perspective, observer
        )
        sxp = jellier.prepare(obj)
        sxp.extend([self.wireName, luid, self.stateExpression(state.items(), jellier)])
        return jellier.preserve(obj, sxp)

    def unjelly(self, unjellier: Any, jellyList: list[object]) -> object:
        broker = unjellier.invoker
        if broker is None:
            self.refuse("a cached object can only be received on a connection")
        if len(jellyList) != 3 or type(jellyList[1]) is not int:
            self.refuse("malformed cache expression")
        luid = jellyList[1]
        state = self.readState(jellyList[2], unjellier)
        cls = self._remoteCacheClass
        # As flavors.RemoteCache.unjellyFor: one root object held by the
        # broker, and a Borg copy (shared __dict__) per application
        # reference, whose finalization sends the decache.
        root: Any = cls.__new__(cls)
        root.broker = broker
        root.luid = luid
        copy = _twisted.borgify(root)
        # The ignore below: mypy refuses an explicit __init__ call on an
        # instance; here it runs the cache copy's constructor after borgify.
        copy.__init__()  # type: ignore[misc]
        broker.cacheLocally(luid, root)
        try:
            _applyState(copy, state)
        except Exception as e:
            # The copies are dropped: their finalization tells the peer, so
            # both sides forget the cache id, as for any dropped cache.
            self.refuse(f"rejected its state: {e!r}")
        if root.__dict__ is not copy.__dict__:
            root.__dict__ = copy.__dict__
        root.broker = broker
        root.luid = luid
        return copy


class _FailureEntry(_ReceiveOnlyEntry):
    """
    The classic C{twisted.spread.pb.CopyableFailure}, received as a
    L{CopiedFailure}.  Failure state varies between Twisted versions, so
    fields other than the four a failure needs are ignored (never assigned).
    """

    _expected = {
        "type": (bytes, str),
        "value": (str, bytes),
        "traceback": (str, bytes),
    }

    def __init__(self, wireName: bytes) -> None:
        super().__init__(wireName, 1, dict, lambda state: state)

    def readState(self, expression: object, unjellier: Any) -> dict[str, object]:
        received = unjellier.unjelly(expression)
        if type(received) is not dict:
            self.refuse(f"state must be a dictionary, got {type(received).__name__}")
        # The ignore below: type(received) is dict checked just above.
        return {_keyName(k): v for k, v in received.items()}  # type: ignore[misc]

    def build(self, state: dict[str, object]) -> CopiedFailure:
        kept: dict[str, object] = {}
        for name, kinds in self._expected.items():
            value = state.get(name)
            if value is None and name == "traceback":
                value = "Traceback unavailable\n"
            if not isinstance(value, kinds):
                self.refuse(
                    f"field {name!r}: expected str or bytes, got "
                    f"{type(value).__name__}",
                    field=name,
                )
            kept[name] = value
        remoteType = kept["type"]
        if isinstance(remoteType, str):
            remoteType = remoteType.encode("utf-8")
        parents = state.get("parents")
        if parents is None:
            parents = [remoteType]
        if type(parents) is not list or not all(
            isinstance(p, (str, bytes)) for p in parents
        ):
            self.refuse("field 'parents': expected list[str]", field="parents")
        failure = CopiedFailure.__new__(CopiedFailure)
        # Like Twisted's CopiedFailure, a copied failure names its remote
        # type and carries its message as text, not as local objects.
        # The ignore below: the remote type is known by name only.
        failure.type = remoteType  # type: ignore[assignment]
        # The ignore below: the message as text, as CopiedFailure keeps it.
        failure.value = _text(kept["value"])  # type: ignore[assignment]
        failure.traceback = _text(kept["traceback"])
        failure.parents = [_text(p) for p in parents]
        failure.tb = None
        failure.frames = []
        failure.captureVars = False
        count = state.get("count")
        failure.count = count if type(count) is int else 0
        return failure


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    # The ignore below: not bytes: already text from a well-formed peer.
    return value  # type: ignore[return-value]


def _applyState(obj: Any, state: dict[str, object]) -> None:
    """
    Give checked state to a blank L{pb.RemoteCopy}: through its own
    C{setCopyableState} if its class overrides it, else by setting the
    declared fields.
    """
    if type(obj).setCopyableState is not flavors.RemoteCopy.setCopyableState:
        obj.setCopyableState(state)
        return
    for name, value in state.items():
        setattr(obj, name, value)


def _keywordConstructor(cls: type) -> type | None:
    """
    C{cls} if checked state builds it as C{cls(**state)}: a dataclass with
    its generated C{__init__}, or an attrs class whose parameters are
    named as its attributes; else L{None}.
    """
    if dataclasses.is_dataclass(cls):
        # The ignore below: is_dataclass checked just above.
        if cls.__dataclass_params__.init:  # type: ignore[attr-defined]
            return cls
        return None
    if attrs.has(cls) and all(a.alias == a.name for a in attrs.fields(cls)):
        return cls
    return None


def _builderFor(cls: type) -> Callable[[dict[str, object]], object]:
    """
    How to build an instance of C{cls} from checked state: the constructor
    for dataclasses and attrs classes (so defaults, C{__post_init__} and
    validators apply), else a blank instance given the declared fields
    (C{setCopyableState} for a L{pb.RemoteCopy} that overrides it).
    """
    if _keywordConstructor(cls) is not None:
        return lambda state: cls(**state)
    if dataclasses.is_dataclass(cls):

        def buildDataclass(state: dict[str, object]) -> object:
            # No generated __init__: set the fields as a frozen dataclass's
            # own __init__ would.
            obj = cls.__new__(cls)
            for name, value in state.items():
                object.__setattr__(obj, name, value)
            return obj

        return buildDataclass
    if attrs.has(cls):
        aliases = {a.name: a.alias for a in attrs.fields(cls) if a.alias != a.name}

        def buildAttrs(state: dict[str, object]) -> object:
            return cls(**{aliases.get(k, k): v for k, v in state.items()})

        return buildAttrs
    if issubclass(cls, flavors.RemoteCopy):

        def buildRemoteCopy(state: dict[str, object]) -> object:
            obj = cls.__new__(cls)
            _applyState(obj, state)
            return obj

        return buildRemoteCopy

    def buildPlain(state: dict[str, object]) -> object:
        obj = cls.__new__(cls)
        for name, value in state.items():
            setattr(obj, name, value)
        return obj

    return buildPlain


# The plain fast paths (pbext._jelly.jellyPlain and unjellyPlain, and their
# C twins in pbext._speedups) handle the commonest registrations
# themselves, from these tables; anything they do not handle, and every
# refusal, is left to the registry's own jelly and unjelly methods above.

#: How a field's value is checked on the plain fast paths: the checkers
#: of C{Any}, C{int}, C{str}, C{float}, C{bytes} and C{bool} are done
#: inline (by the C accelerator too); any other checker is called.
CHECK_ANY, CHECK_INT, CHECK_STR, CHECK_FLOAT, CHECK_BYTES, CHECK_BOOL, CHECK_CALL = (
    range(7)
)


def _checkKind(checker: _Checker) -> int:
    if checker is _accept:
        return CHECK_ANY
    for kind, annotation in (
        (CHECK_INT, int),
        (CHECK_STR, str),
        (CHECK_FLOAT, float),
        (CHECK_BYTES, bytes),
        (CHECK_BOOL, bool),
    ):
        if checker is _compile(annotation):
            return kind
    return CHECK_CALL


#: C{(wireName, ((attribute, key), ...), version)}: a registered class is
#: sent as C{[wireName, [b"dictionary", [[b"unicode", key], value], ...]]},
#: with C{[[b"unicode", b"pbext.version"], version]} last if the version
#: is above 1, as L{_TypedEntry.jelly} sends it.
SendSpec = typing.Tuple[bytes, typing.Tuple[typing.Tuple[str, bytes], ...], int]

#: C{(build, byKeyword, fields, required, version, positional, direct)}:
#: checked state builds the object as C{build(**state)} if C{byKeyword},
#: else C{build(state)}; C{fields} maps each declared field to
#: C{(checkKind, checker, required)}, and C{required} counts the required
#: ones.  Where C{positional} names every parameter of C{build} in order, a
#: state with exactly those keys is passed positionally instead (the same
#: call, made faster); and if C{direct}, C{build} is a dataclass whose
#: generated C{__init__} does nothing but set those fields, which is done
#: without running it: C{object.__new__(build)}, then
#: C{object.__setattr__} of each field in order.
ReceiveSpec = typing.Tuple[
    Callable[..., object],
    bool,
    typing.Dict[str, typing.Tuple[int, _Checker, bool]],
    int,
    int,
    typing.Optional[typing.Tuple[str, ...]],
    bool,
]


@dataclasses.dataclass(frozen=True)
class PlainTables:
    """
    What one registry lets the plain fast paths do.  Never changed once
    made: connections share them.

    @ivar send: the specs of the sent classes they may write.
    @ivar receive: the specs of the wire names they may build.
    """

    send: dict[type, SendSpec]
    receive: dict[bytes, ReceiveSpec]


# The tables of every registry the fast paths can do nothing for (such as
# the failure registry each connection has).
_NO_PLAIN_TABLES = PlainTables({}, {})


def _sendSpec(entry: _Entry) -> SendSpec | None:
    """
    The send spec of a registration sent with its declared fields, or
    L{None} for the others (copiers, classic copyables, caches).
    """
    if not isinstance(entry, _TypedEntry) or type(entry).jelly is not (
        _TypedEntry.jelly
    ):
        return None
    try:
        keys = entry.sendKeys()
    except (RegistryError, NameError):
        return None
    return (entry.wireName, keys, entry.version)


def _receiveSpec(entry: _Entry) -> ReceiveSpec | None:
    """
    The receive spec of a registration whose state is read, checked and
    built the common way into a known class, or L{None}.
    """
    kind = type(entry)
    if (
        kind.unjelly is not _Entry.unjelly
        or kind.readState is not _Entry.readState
        or kind.checkState is not _Entry.checkState
        or kind.build is not _Entry.build
    ):
        return None
    cls = entry.builtClass
    # Classic unjelly runs an object's postUnjelly hook after the whole
    # expression: the fast paths never do.
    if cls is None or hasattr(cls, "postUnjelly"):
        return None
    try:
        fields = entry.fields
    except RegistryError:
        return None
    if "postUnjelly" in fields:
        return None
    table = {
        name: (_checkKind(f.checker), f.checker, f.required)
        for name, f in fields.items()
    }
    required = sum(1 for f in fields.values() if f.required)
    constructor = _keywordConstructor(cls)
    if constructor is not None:
        positional = _positionalParameters(cls)
        direct = positional is not None and _setsFieldsOnly(cls, positional)
        return (constructor, True, table, required, entry.version, positional, direct)
    return (entry._build, False, table, required, entry.version, None, False)


def _generated(function: object, owner: type, name: str) -> bool:
    """
    Whether C{function} is the method C{name} that L{dataclasses} wrote
    for C{owner} (compiled from text, named for the class).
    """
    code = getattr(function, "__code__", None)
    return (
        code is not None
        and code.co_filename == "<string>"
        and getattr(function, "__qualname__", None) == f"{owner.__qualname__}.{name}"
    )


def _setsFieldsOnly(cls: type, parameters: tuple[str, ...]) -> bool:
    """
    Whether building C{cls(*values)} does nothing but make a blank
    instance and set each of C{parameters} with C{object.__setattr__}: a
    dataclass with its generated C{__init__}, whose parameters are exactly
    its fields (every one of them), with no C{__post_init__}, no
    C{__new__}, metaclass or C{__setattr__} of its own (a frozen
    dataclass's generated one is bypassed by its C{__init__} too), no
    field that is a data descriptor, and nothing abstract.
    """
    if not dataclasses.is_dataclass(cls) or type(cls) is not type:
        return False
    if not _generated(cls.__dict__.get("__init__"), cls, "__init__"):
        return False
    if hasattr(cls, "__post_init__") or inspect.isabstract(cls):
        return False
    if cls.__new__ is not object.__new__:
        return False
    setter = cls.__setattr__
    if setter is not object.__setattr__ and not (
        # The ignore below: is_dataclass checked above.
        cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        and _generated(cls.__dict__.get("__setattr__"), cls, "__setattr__")
    ):
        return False
    # Every field: the generated __init__ also sets those it takes no
    # parameter for (init=False), which a direct build would not.
    fields = dataclasses.fields(cls)
    for f in fields:
        # A field that is a data descriptor (other than a slot) runs code
        # of its own when set.
        attribute = inspect.getattr_static(cls, f.name, None)
        if hasattr(type(attribute), "__set__") and not isinstance(
            attribute, types.MemberDescriptorType
        ):
            return False
    return all(f.init for f in fields) and tuple(f.name for f in fields) == (parameters)


def _positionalParameters(cls: type) -> tuple[str, ...] | None:
    """
    The parameters of C{cls}'s constructor, in order, if every one of them
    may be passed by position or by keyword (so that a call with all of
    them positionally is the call with all of them by keyword); else
    L{None}.
    """
    try:
        parameters = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters):
        return None
    return tuple(sys.intern(p.name) for p in parameters)


@implementer(ICopyableRegistry)
class CopyableRegistry:
    """
    A scoped registry of copy-by-value types.

    Owned by factories, never global: two factories in one process with
    different registries accept different types.  Each registration names
    the type on the wire explicitly; the same wire name or the same sent
    class cannot be registered twice (L{RegistryError}).  A class is sent
    under its wire name only when its exact class is registered, not a
    subclass.

    @since: pbext NEXT
    """

    def __init__(self) -> None:
        self._byName: dict[bytes, _Entry] = {}
        self._byClass: dict[type, _Entry] = {}
        # Counts changes, so that the plain fast paths' tables built from
        # this registry (see _plainTables) are rebuilt when it changes.
        self._generation = 0
        self._plain: tuple[int, PlainTables] | None = None
        # The tables built from this one (pbext._jelly.PlainTypes), told
        # when it changes.
        self._watchers: weakref.WeakSet[Any] = weakref.WeakSet()

    def __repr__(self) -> str:
        names = ", ".join(sorted(e.typeName for e in self._byName.values()))
        return f"<CopyableRegistry {names}>"

    # ICopyableRegistry

    def isTypeKnown(self, typeName: bytes) -> bool:
        """
        @see: L{ICopyableRegistry.isTypeKnown}
        """
        if type(typeName) is str:
            typeName = typeName.encode("utf-8")
        return typeName in self._byName

    def jellyFor(self, obj: object, jellier: object) -> list[object] | None:
        """
        @see: L{ICopyableRegistry.jellyFor}

        An object already serialized in the same message is sent as a back
        reference, as jelly does for its own copyables.
        """
        entry = self._byClass.get(type(obj))
        if entry is None:
            return None
        checkMutable = _twisted.mutableChecker(jellier)
        if checkMutable is not None:
            reference = checkMutable(obj)
            if reference:
                return reference
        return entry.jelly(obj, jellier)

    def unjellyFor(
        self, typeName: bytes, unjellier: object, jellyList: list[object]
    ) -> object:
        """
        @see: L{ICopyableRegistry.unjellyFor}

        @raise CopyableStateError: if the type name is not registered here
            or the state does not match the registered type.
        """
        if type(typeName) is str:
            typeName = typeName.encode("utf-8")
        entry = self._byName.get(typeName)
        if entry is None:
            raise CopyableStateError(
                typeName.decode("utf-8", "replace"), "type not registered"
            )
        return entry.unjelly(unjellier, jellyList)

    # Introspection

    def typeNames(self) -> frozenset[bytes]:
        """
        @return: the wire names this registry can receive.
        """
        return frozenset(self._byName)

    def validate(self) -> None:
        """
        Compile every registration now.

        Registrations whose annotations name a class not defined yet at
        registration time (a class that refers to itself, or to one
        declared later in its module) are compiled on first use; factories
        call this when they start so that a mistake is reported then.

        @raise RegistryError: if some registration's annotations cannot be
            resolved or checked.
        """
        for entry in self._byName.values():
            entry.resolve()

    # Registration

    def _wireName(self, name: object) -> bytes:
        return checkWireName(name, self._byName)

    def _checkClass(self, cls: object, role: str, allowEnum: bool = False) -> type:
        return checkClass(cls, role, self._byClass, allowEnum)

    def _add(self, entry: _Entry, sent: type | None) -> None:
        self._byName[entry.wireName] = entry
        if sent is not None:
            self._byClass[sent] = entry
        self._changed()

    def _changed(self) -> None:
        """
        Note a change, for the plain fast paths' tables.
        """
        self._generation += 1
        for watcher in list(self._watchers):
            watcher.stale = True

    def _plainTables(self) -> PlainTables:
        """
        The registrations the plain fast paths of L{pbext._jelly} (and the
        C accelerator) may handle themselves, kept until the registry
        changes.
        """
        cached = self._plain
        if cached is not None and cached[0] == self._generation:
            return cached[1]
        send: dict[type, SendSpec] = {}
        for cls, entry in self._byClass.items():
            sendSpec = _sendSpec(entry)
            if sendSpec is not None:
                send[cls] = sendSpec
        receive: dict[bytes, ReceiveSpec] = {}
        for name, entry in self._byName.items():
            receiveSpec = _receiveSpec(entry)
            if receiveSpec is not None:
                receive[name] = receiveSpec
        tables = PlainTables(send, receive) if send or receive else _NO_PLAIN_TABLES
        self._plain = (self._generation, tables)
        return tables

    def _sends(self, cls: type) -> bool:
        """
        Whether this registry sends instances of C{cls}, fast or not.
        """
        return cls in self._byClass

    def _receives(self, name: bytes) -> bool:
        """
        Whether this registry receives the wire name C{name}, fast or not.
        """
        return name in self._byName

    @overload
    def register(self, cls: type[_T], name: str, *, version: int = 1) -> type[_T]: ...

    @overload
    def register(
        self, *, name: str, version: int = 1
    ) -> Callable[[type[_T]], type[_T]]: ...

    def register(
        self, cls: type[_T] | None = None, name: str | None = None, *, version: int = 1
    ) -> type[_T] | Callable[[type[_T]], type[_T]]:
        """
        Register a class to be sent and received under a wire name.

        The class is both the sent and the rebuilt type, and need not
        inherit from L{pb.Copyable}: a plain class, a dataclass or an attrs
        class.  Its fields are its dataclass or attrs fields taken by the
        constructor, or else its annotations (C{ClassVar}s excluded).  It is
        sent with the values of those fields; on receipt the state is
        checked against their annotations, then a dataclass or attrs class
        is built through its constructor (defaults fill fields an older peer
        did not send) and a plain class as a blank instance (C{__init__} is
        not called) given each received field with C{setattr}.

        Use it as a call, C{registry.register(Point, "app.Point")}, or as a
        class decorator, C{@registry.register(name="app.Point")}.

        @param cls: the class.
        @param name: the wire name (sent encoded as UTF-8).
        @param version: the current version of the type's state; see
            L{registerUpgrader}.

        @return: C{cls}, or a decorator that registers and returns its class.

        @raise RegistryError: if the name or the class is already
            registered, the name is reserved, or an annotation cannot be
            checked.
        """
        if cls is None:
            if name is None:
                raise RegistryError(
                    "register needs a wire name: register(cls, name) or "
                    "@register(name=...)"
                )

            def decorate(decorated: type[_T]) -> type[_T]:
                self.register(decorated, name, version=version)
                return decorated

            return decorate
        cls = self._checkClass(cls, "register's first argument")
        wireName = self._wireName(name)
        entry = _TypedEntry(
            wireName,
            checkVersion(version),
            lambda: _classFields(cls),
            _builderFor(cls),
        )
        entry.builtClass = cls
        self._add(entry, cls)
        return cls

    def registerPair(
        self,
        localClass: type,
        remoteClass: type,
        name: str,
        *,
        version: int = 1,
    ) -> None:
        """
        Register a classic pair: instances of C{localClass} are sent, and
        received state builds a C{remoteClass}.

        C{localClass}'s state is what its C{getStateToCopyFor(perspective)}
        returns if it is a L{pb.Copyable}, else its declared fields.  The
        received state is checked against C{remoteClass}'s declared fields;
        a L{pb.RemoteCopy} that overrides C{setCopyableState} receives the
        checked state there, other classes are built as by L{register}.

        @raise RegistryError: as for L{register}.
        """
        localClass = self._checkClass(localClass, "localClass")
        checkNotEnum(checkIsClass(remoteClass, "remoteClass"))
        wireName = self._wireName(name)
        version = checkVersion(version)
        fields = lambda: _classFields(remoteClass)  # noqa: E731
        build = _builderFor(remoteClass)
        entry: _Entry
        if hasattr(localClass, "getStateToCopyFor"):
            entry = _StateEntry(wireName, version, fields, build, _copyableState)
        else:
            entry = _PairEntry(wireName, version, fields, build, localClass)
        entry.builtClass = remoteClass
        self._add(entry, localClass)

    def registerCopier(
        self,
        cls: type[_T],
        name: str,
        toState: Callable[[_T], Mapping[str, object]],
        # Any: each value has been checked against its own field's type.
        fromState: Callable[[dict[str, Any]], _T],
        *,
        fields: Mapping[str, object],
        version: int = 1,
    ) -> type[_T]:
        """
        Register a class you do not own (L{uuid.UUID}, an L{enum.Enum},
        L{fractions.Fraction}, ...) through two functions.

        @param cls: the class; its instances (exactly this class) are sent.
        @param name: the wire name.
        @param toState: turns an instance into a state dictionary with
            C{str} keys.
        @param fromState: builds an instance from a received state
            dictionary, after it was checked against C{fields}; an exception
            it raises refuses the state.
        @param fields: every field of the state, with its annotation; all
            are required, and no others are accepted.
        @param version: see L{register}.

        @return: C{cls}.
        @raise RegistryError: as for L{register}.
        """
        cls = self._checkClass(cls, "cls", allowEnum=True)
        if not (callable(toState) and callable(fromState)):
            raise RegistryError(
                f"toState={toState!r}, fromState={fromState!r}: give two "
                f"functions, one making the state and one making the object"
            )
        wireName = self._wireName(name)
        declared = dict(fields)
        entry = _StateEntry(
            wireName,
            checkVersion(version),
            lambda: _mappingFields(cls.__qualname__, declared),
            fromState,
            lambda obj, jellier: toState(obj),
        )
        self._add(entry, cls)
        return cls

    def registerClassic(self, cls: type, name: str, *, version: int = 1) -> None:
        """
        Accept what a classic peer's L{pb.Copyable} sends under its classic
        type name (its fully qualified class name, e.g.
        C{"myapp.models.Point"}), building C{cls} from the checked state.

        This registration only receives: C{cls} may also be registered for
        sending (under another name, with L{register}).  C{cls} is a typed
        class (as for L{register}) or a L{pb.RemoteCopy} subclass whose
        fields are declared with annotations.

        @raise RegistryError: as for L{register}.
        """
        checkNotEnum(checkIsClass(cls, "cls"))
        entry = _ReceiveOnlyEntry(
            self._wireName(name),
            checkVersion(version),
            lambda: _classFields(cls),
            _builderFor(cls),
        )
        entry.builtClass = cls
        self._add(entry, None)

    def registerCache(
        self,
        cacheableClass: type[pb.Cacheable],
        remoteCacheClass: type[pb.RemoteCache],
        name: str,
        *,
        version: int = 1,
    ) -> None:
        """
        Register a L{pb.Cacheable} and the L{pb.RemoteCache} that mirrors it
        on the peer.

        Cacheable semantics are kept: a cacheable is sent once per
        connection with a cache id and then by reference, its
        C{getStateToCacheAndObserveFor} receives a L{RemoteCacheObserver}
        whose C{callRemote} reaches the remote cache's C{observe_} methods,
        and C{stoppedObserving} is called when the peer drops it.  The
        received state is checked against C{remoteCacheClass}'s
        annotations; it is given to C{setCopyableState} if the class
        overrides it, else the declared fields are set.

        @raise RegistryError: as for L{register}, or if the classes are not
            a Cacheable and a RemoteCache.
        """
        cacheableClass = self._checkClass(cacheableClass, "cacheableClass")
        checkCacheClasses(cacheableClass, remoteCacheClass)
        entry = _CacheEntry(
            self._wireName(name), checkVersion(version), remoteCacheClass
        )
        self._add(entry, cacheableClass)

    def registerFailures(self) -> None:
        """
        Receive classic failures (C{twisted.spread.pb.CopyableFailure}, what
        every PB peer sends for an error) as L{CopiedFailure}, whose C{trap}
        and C{raiseException} work and whose state is checked rather than
        assigned.

        @raise RegistryError: if that name is already registered here.
        """
        wireName = self._wireName(reflect.qual(pb.CopyableFailure))
        self._add(_FailureEntry(wireName), None)

    def registerUpgrader(
        self,
        name: str,
        fromVersion: int,
        function: Callable[[dict[str, object]], dict[str, object]],
    ) -> None:
        """
        Register how to bring state of version C{fromVersion} of the type
        registered as C{name} to version C{fromVersion + 1}.

        Received state of an older version passes through each upgrader in
        turn, then is checked against the current fields.  An upgrader
        receives the state as the peer sent it (C{str} keys, values not yet
        checked), returns the new state dictionary, and may raise to refuse
        it.

        @raise RegistryError: if C{name} is not registered, C{fromVersion}
            is not below its current version, or an upgrader for it exists.
        """
        entry = self._byName.get(name.encode("utf-8") if isinstance(name, str) else b"")
        if entry is None:
            raise RegistryError(
                f"no type registered as {name!r}; register the type before "
                f"its upgraders"
            )
        checkUpgrade(name, fromVersion, entry.version, entry.upgraders)
        entry.upgraders[fromVersion] = function
        self._changed()


class _PairEntry(_TypedEntry):
    """
    A pair whose sent class is not a L{pb.Copyable}: sent with the declared
    fields of the local class, checked against those of the remote class.
    """

    def __init__(
        self,
        wireName: bytes,
        version: int,
        fields: Callable[[], dict[str, _Field]],
        build: Callable[[dict[str, object]], object],
        localClass: type,
    ) -> None:
        super().__init__(wireName, version, fields, build)
        self._localClass = localClass

    def sendKeys(self) -> tuple[tuple[str, bytes], ...]:
        keys = self._sendKeys
        if keys is None:
            keys = self._sendKeys = tuple(
                (name, name.encode("utf-8")) for name in _classFields(self._localClass)
            )
        return keys


def _copyableState(obj: Any, jellier: Any) -> Mapping[Any, object]:
    """
    A classic L{pb.Copyable}'s state for the perspective being served.
    """
    invoker = jellier.invoker
    perspective = invoker.serializingPerspective if invoker is not None else None
    return obj.getStateToCopyFor(perspective)


class FailureRegistry(CopyableRegistry):
    """
    A registry that knows only classic failures, made by
    L{failureRegistry}.

    @since: pbext NEXT
    """


def failureRegistry() -> CopyableRegistry:
    """
    A new registry that knows only classic failures: see
    L{CopyableRegistry.registerFailures}.

    pbext brokers consult one after the application's registries, so that a
    failure from any peer arrives as a working L{CopiedFailure}; a factory
    shares one between its connections.

    @since: pbext NEXT
    """
    registry = FailureRegistry()
    registry.registerFailures()
    return registry
