# -*- test-case-name: tests.test_jelly -*-
"""
pbext's jellier and unjellier: Twisted's, with a closed type lookup,
linear reference resolution, checked copy state and fast paths.

Entry points (what pbext's broker calls)
========================================

  - L{jelly}C{(obj, taster, invoker, registries=())} (alias L{jellyFor})
    serializes one object, as L{twisted.spread.jelly.jelly} does, asking
    the connection's copyable registries first.  Pass the policy's
    L{outgoingTaster<pbext.security.SecurityPolicy.outgoingTaster>}.
  - L{unjelly}C{(sexp, taster, invoker, registries=(), policy=None)}
    (alias L{unjellyFor}) rebuilds one received expression.  Pass the
    policy's L{forConnection<pbext.security.SecurityPolicy.forConnection>}
    taster; C{policy} defaults to the policy behind that taster.  It
    raises L{twisted.spread.jelly.InsecureJelly} (or its subclass
    L{MalformedJelly}) for anything it refuses, and nothing else for bad
    input.
  - L{Jellier} and L{Unjellier} are the classes behind them, for callers
    that need their state (use L{Unjellier.unjellyFull}, not C{unjelly},
    as the outermost call: it checks the finished result and turns
    malformed-input errors into L{MalformedJelly}).

Type lookup
===========

For a received expression C{[tag, ...]} the L{Unjellier} uses, in order:
jelly's own basic expressions (C{list}, C{tuple}, C{dictionary},
C{reference}, ...); the connection's registries
(C{registry.isTypeKnown(tag)}, then C{registry.unjellyFor}); PB's own
copy tags (C{remote}, C{local}, C{cached}, C{lcache},
C{twisted.spread.pb.CopyableFailure}); Twisted's global copier registries
if the policy accepts them; classes given to the policy's
C{allowInstancesOf}.  Anything else is refused: unless the policy is
classic, nothing is imported because a peer named it.  After the basic
expressions and the registries, a classic policy keeps stock jelly's
lookup (Twisted's registry, the other C{_unjelly_*} methods, then
importing by name under the taster's module and class checks).

Basic expressions come first so no registry can change what C{reference}
or C{list} mean.

Classic copies
==============

An application's class (or function) found in Twisted's global registries
has the state of its expression checked (L{pbext.copystate}) on the
expression itself before any of its code runs, unless the policy's
C{checkCopyState} is off or the class opted out; the code then runs with
a view of the unjellier that turns malformed input into L{MalformedJelly},
and any other exception of it becomes a L{pbext.copystate.CopyHookError}
(all in L{pbext._classiclookup}).
PB's own classes and functions are trusted.  The C accelerator never
builds classic copies: their expressions always reach this unjellier.

Sending, an instance of a class that may not be sent raises
L{pbext.security.UnsendableError} unless the sender's policy has
C{sendUnpersistable} (stock jelly sends an C{unpersistable} placeholder).

This is a private module: its API may change with the broker's needs.

@since: pbext NEXT
"""

from __future__ import annotations

import datetime
import operator
import sys
from typing import Any, Callable, Iterable, Mapping, TypeVar

from twisted.persisted.crefutil import NotKnown
from twisted.python.reflect import qual
from twisted.spread import flavors
from twisted.spread import jelly as _twistedJelly
from twisted.spread.jelly import InsecureJelly

# The accelerator's plain paths also need the framing half of its
# configuration, which pbext.codec gives when it is imported (and codec
# imports this module in turn for the jelly half): import it here, so that
# a program importing only this module gets a configured accelerator.
from pbext import _twisted
from pbext import codec as _codecConfiguresTheAccelerator  # noqa: F401
from pbext._accelerator import speedups as _speedups
from pbext._classiccopies import (
    buildClassic,
    classicState,
)
from pbext._classiccopies import receiveSpec as _classicReceiveSpec
from pbext._classiccopies import sendSpec as _classicSendSpec
from pbext._classiclookup import (
    PB_UNJELLYABLES,
    ApplicationView,
    ClassicClass,
    classicRegistry,
    runApplication,
    unjellyClassic,
    unjellyNamed,
)
from pbext._expressions import MALFORMED_ERRORS as _MALFORMED_ERRORS
from pbext._expressions import (
    PREBUILT,
    MalformedJelly,
)
from pbext._expressions import checkArity as _checkArity
from pbext._expressions import checkRefID as _checkRefID
from pbext._twisted import (
    DictKeyAndValue,
    checkMutable,
    maybePostUnjelly,
)
from pbext.copyable import (
    _VERSION_KEY_BYTES,
    CHECK_ANY,
    CHECK_BOOL,
    CHECK_BYTES,
    CHECK_FLOAT,
    CHECK_INT,
    CHECK_STR,
    VERSION_KEY,
    CopyableRegistry,
)
from pbext.security import (
    _IMPORTING_TYPES,
    BoundPolicy,
    UnsendableError,
    _allowsBasicTypes,
    _allowsSentBuiltins,
)

__all__ = [
    "MalformedJelly",
    "Jellier",
    "Unjellier",
    "jelly",
    "unjelly",
    "jellyFor",
    "unjellyFor",
]


_MISSING = object()

_W = TypeVar("_W")


class _PendingReference(NotKnown):
    """
    A placeholder for a reference ID used (by C{dereference}) before its
    C{reference} expression has finished.

    If that expression's value is itself still unresolved (a tuple waiting
    for a forward reference), the placeholder forwards its dependants to
    it, instead of resolving them to a placeholder as crefutil does.

    @ivar forwardTo: The unresolved value the dependants now wait for.
    """

    forwardTo: NotKnown | None = None

    def __init__(self, refid: int) -> None:
        NotKnown.__init__(self)
        self.refid = refid

    def addDependant(self, mutableObject: Any, key: Any) -> None:
        if self.forwardTo is not None:
            self.forwardTo.addDependant(mutableObject, key)
        else:
            NotKnown.addDependant(self, mutableObject, key)

    def forward(self, target: NotKnown) -> None:
        self.forwardTo = target
        for mutableObject, key in self.dependants:
            target.addDependant(mutableObject, key)
        self.dependants = []


class _LinearContainer(NotKnown):
    """
    An immutable container (tuple, set, frozenset) waiting for some of its
    items, resolved in time linear in its size.

    Replaces L{twisted.persisted.crefutil._Container}, which removes each
    index from a list (quadratic in the size).  It keeps the set of indexes
    still unresolved, and builds the container when it empties.
    """

    def __init__(
        self,
        items: list[Any],
        containerType: Callable[[list[Any]], Any],
        pending: Iterable[int],
    ) -> None:
        """
        @param items: The items, some of them unresolved placeholders.
        @param containerType: Builds the container from the finished items.
        @param pending: The indexes of the placeholders in C{items}.
        """
        NotKnown.__init__(self)
        self.containerType = containerType
        self.items = items
        self.unresolved = set(pending)
        for index in self.unresolved:
            items[index].addDependant(self, index)

    def __setitem__(self, index: int, value: Any) -> None:
        self.items[index] = value
        if isinstance(value, NotKnown):
            value.addDependant(self, index)
            return
        self.unresolved.discard(index)
        if not self.unresolved and not self.resolved:
            self.resolveDependants(self.containerType(self.items))


class Unjellier(_twisted.Unjellier):
    """
    Twisted's unjellier with pbext's type lookup (see the module
    docstring), linear-time reference resolution, checked copy state, and
    L{MalformedJelly} for malformed input.

    @ivar registries: The connection's copyable registries, in order.
    @ivar policy: The security policy (or L{None}).
    @ivar classic: Whether stock jelly's lookup applies after the registries.
    @ivar acceptClassicRegistry: Whether Twisted's global copier registries
        are consulted.
    @ivar checkCopyState: Whether state for classic C{RemoteCopy} and
        C{Unjellyable} classes (and C{allowInstancesOf} classes) is checked.
    """

    def __init__(
        self,
        taster: Any,
        invoker: Any = None,
        registries: Iterable[Any] = (),
        policy: Any = None,
        persistentLoad: Any = None,
    ) -> None:
        """
        @param taster: The C{SecurityOptions}-compatible taster consulted
            for every type name (normally C{policy.forConnection(...)}).
        @param invoker: The broker, or L{None}.
        @param registries: The connection's L{ICopyableRegistry} providers;
            by default those C{taster} was bound to, if it is a
            L{BoundPolicy}.
        @param policy: The L{SecurityPolicy}; by default the one behind
            C{taster}, else non-classic behaviour with the classic registry
            accepted and copy state checked.
        @param persistentLoad: Stock jelly's persistent-load hook (classic
            policies only).
        """
        super().__init__(taster, persistentLoad, invoker)
        registries = tuple(registries)
        if not registries and isinstance(taster, BoundPolicy):
            registries = taster.registries
        self.registries = registries
        if policy is None:
            if isinstance(taster, BoundPolicy):
                policy = taster.policy
            elif hasattr(taster, "instanceClassFor"):
                policy = taster
        self.policy = policy
        self.classic = bool(getattr(policy, "classic", False))
        self.acceptClassicRegistry = bool(
            getattr(policy, "acceptClassicRegistry", True)
        )
        self.checkCopyState = bool(getattr(policy, "checkCopyState", True))
        self._trustBasic = _allowsBasicTypes(taster)
        # The registry that handles each tag met so far (None: no registry
        # does), asked once per expression rather than once per object: a
        # list of a thousand copies of one type checks the type once.
        self._registryOf: dict[bytes, Any] = {}
        # What is known of each classic class met so far, and the view of
        # this unjellier their code gets.
        self._classicClasses: dict[Any, ClassicClass] = {}
        self._view: ApplicationView | None = None
        # The values that wait for one still being built (a cycle through
        # something immutable), and how many more may (maxWaitingValues).
        self._waiting: list[Any] = []
        limits = getattr(policy, "limits", None)
        self._maxWaiting: int = getattr(limits, "maxWaitingValues", sys.maxsize)

    def _findRegistry(self, tag: bytes) -> Any:
        """
        The first registry that knows C{tag}, or L{None}; remembered for
        the rest of this expression.

        @raise InsecureJelly: If a registry knows it but the taster refuses
            it.
        """
        for registry in self.registries:
            if registry.isTypeKnown(tag):
                if not self.taster.isTypeAllowed(tag):
                    raise InsecureJelly(f"type {tag!r} not allowed")
                self._registryOf[tag] = registry
                return registry
        self._registryOf[tag] = None
        return None

    def unjellyFull(self, obj: Any) -> Any:
        """
        Unjelly a whole received expression and run the C{postUnjelly}
        hooks.

        @raise InsecureJelly: If the expression is refused.
        @raise MalformedJelly: If it is malformed.
        """
        try:
            result = self._finish(self.unjelly(obj))
        except InsecureJelly:
            self._breakCycles()
            raise
        except _MALFORMED_ERRORS as e:
            self._breakCycles()
            raise MalformedJelly(
                f"malformed jelly expression ({type(e).__name__}: {e})"
            ) from e
        for hook in self.postCallbacks:
            runApplication(type(getattr(hook, "__self__", hook)), hook)
        return result

    def _wait(self, value: _W) -> _W:
        """
        Count C{value}, a tuple, set or dictionary key that waits for a
        value still being built (see L{Limits.maxWaitingValues}).

        @raise InsecureJelly: Past the limit.
        """
        self._waiting.append(value)
        if len(self._waiting) > self._maxWaiting:
            raise InsecureJelly(
                f"more than {self._maxWaiting} tuples, sets or dictionary keys of "
                f"one message wait for a value that is still being built (a "
                f"cycle through them; maxWaitingValues)"
            )
        return value

    def _breakCycles(self) -> None:
        """
        Forget what the placeholders of a refused expression wait for:
        each waits for the other, and without these cycles reference
        counting frees them at once, not the garbage collector later.
        """
        for value in [*self._waiting, *self.references.values()]:
            if isinstance(value, NotKnown):
                value.dependants = []
                if isinstance(value, _LinearContainer):
                    value.items = []
        self._waiting = []

    def _finish(self, result: Any) -> Any:
        """
        Refuse a result that still waits for a reference never defined.
        """
        if isinstance(result, NotKnown):
            if not result.resolved:
                raise MalformedJelly("expression refers to an undefined reference")
            result = result.resolvedObject
        for value in self.references.values():
            if isinstance(value, NotKnown) and not value.resolved:
                raise MalformedJelly("expression refers to an undefined reference")
        return result

    def unjelly(self, obj: Any) -> Any:
        if type(obj) is not list:
            return obj
        if not obj:
            raise MalformedJelly("empty jelly expression")
        tag = obj[0]
        if type(tag) is not bytes:
            if tag is PREBUILT and len(obj) == 2:
                return obj[1]
            raise MalformedJelly(
                f"jelly expression tags are bytes, not {type(tag).__name__}"
            )
        thunk = _BASIC_THUNKS.get(tag)
        if thunk is not None:
            if not (self._trustBasic or self.taster.isTypeAllowed(tag)):
                raise InsecureJelly(f"type {tag!r} not allowed")
            return thunk(self, obj[1:])
        if not self.classic and tag in _IMPORTING_TYPES:
            raise InsecureJelly(
                f"{tag.decode()!r} expressions are refused: nothing is imported "
                f"because a peer named it"
            )
        registry = self._registryOf.get(tag, _UNSEEN)
        if registry is _UNSEEN:
            registry = self._findRegistry(tag)
        if registry is not None:
            return maybePostUnjelly(self, registry.unjellyFor(tag, self, obj))
        if self.classic:
            return unjellyClassic(self, tag, obj)
        if not self.taster.isTypeAllowed(tag):
            raise InsecureJelly(f"type {tag!r} not allowed")
        return unjellyNamed(self, tag, obj)

    def _plainState(self, expression: Any, default: Any) -> Any:
        """
        The value of a classic copy's state C{expression}, as L{unjelly}
        would make it, where the plain path (L{_unjellyPlain}) can make
        it: the taster allows the basic types and the state is plain and
        refers to nothing (so that no reference of the expression goes
        unrecorded); else C{default}.
        """
        if not self._trustBasic:
            return default
        if type(expression) is not list:
            return expression
        try:
            return _unjellyPlain(expression, None)
        except (_NotPlain, RecursionError):
            return default

    def _learnClassic(self, tag: bytes, regClass: Any) -> None:
        """
        Tell the broker's plain tables of the classic class C{regClass},
        first met under C{tag} (once per expression).
        """
        plainTypes = _brokerPlainTypes(self.invoker)
        if plainTypes is not None and self._trustBasic:
            plainTypes.learnReceive(tag, regClass)

    def _unjellyItems(self, rest: list[Any]) -> tuple[list[Any], list[int]]:
        """
        Unjelly the items of a sequence expression.

        @return: The items, and the indexes of those still unresolved (each
            already told to update the items list when it resolves).
        """
        items: list[Any] = []
        pending: list[int] = []
        append = items.append
        unjelly = self.unjelly
        for item in rest:
            if type(item) is list:
                item = unjelly(item)
                if isinstance(item, NotKnown):
                    item.addDependant(items, len(items))
                    pending.append(len(items))
            append(item)
        return items, pending

    def _unjellyImmutable(self, rest: list[Any], containerType: Callable) -> Any:
        items, pending = self._unjellyItems(rest)
        pending = [index for index in pending if isinstance(items[index], NotKnown)]
        if pending:
            return self._wait(_LinearContainer(items, containerType, pending))
        return containerType(items)

    def _unjelly_list(self, rest: list[Any]) -> list[Any]:
        return self._unjellyItems(rest)[0]

    def _unjelly_tuple(self, rest: list[Any]) -> Any:
        return self._unjellyImmutable(rest, tuple)

    def _unjelly_set(self, rest: list[Any]) -> Any:
        return self._unjellyImmutable(rest, set)

    def _unjelly_frozenset(self, rest: list[Any]) -> Any:
        return self._unjellyImmutable(rest, frozenset)

    def _unjelly_dictionary(self, rest: list[Any]) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        unjelly = self.unjelly
        for pair in rest:
            if type(pair) is not list or len(pair) != 2:
                raise MalformedJelly("dictionary items are [key, value] lists")
            key, value = pair
            if type(key) is list:
                key = unjelly(key)
            if type(value) is list:
                value = unjelly(value)
            if isinstance(key, NotKnown):
                # Insert once the key is known (crefutil would hash the
                # placeholder and fail).
                slot = self._wait(DictKeyAndValue(result))
                key.addDependant(slot, 0)
                if isinstance(value, NotKnown):
                    value.addDependant(slot, 1)
                else:
                    slot[1] = value
            else:
                # Insert now, so the order is the sender's; a placeholder
                # value is replaced in place when it resolves.
                result[key] = value
                if isinstance(value, NotKnown):
                    value.addDependant(result, key)
        return result

    def _unjelly_reference(self, rest: list[Any]) -> Any:
        _checkArity(rest, 2, "reference")
        refid, expression = rest
        _checkRefID(refid)
        value = self.unjelly(expression)
        previous = self.references.get(refid, _MISSING)
        if previous is _MISSING:
            self.references[refid] = value
        elif (
            isinstance(previous, _PendingReference)
            and previous.forwardTo is None
            and not previous.resolved
        ):
            if isinstance(value, NotKnown):
                previous.forward(value)
            else:
                previous.resolveDependants(value)
            self.references[refid] = value
        else:
            raise MalformedJelly(f"multiple references with the same ID {refid}")
        return value

    def _unjelly_dereference(self, rest: list[Any]) -> Any:
        _checkArity(rest, 1, "dereference")
        refid = rest[0]
        _checkRefID(refid)
        value = self.references.get(refid, _MISSING)
        if value is _MISSING:
            value = self.references[refid] = _PendingReference(refid)
        elif isinstance(value, NotKnown) and value.resolved:
            value = self.references[refid] = value.resolvedObject
        return value

    def _unjelly_None(self, rest: list[Any]) -> None:
        _checkArity(rest, 0, "None")
        return None

    def _unjelly_unicode(self, rest: list[Any]) -> str:
        _checkArity(rest, 1, "unicode")
        if type(rest[0]) is not bytes:
            raise MalformedJelly("unicode expressions hold bytes")
        try:
            return rest[0].decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedJelly(f"unicode expression is not UTF-8: {e}") from None

    def _unjelly_boolean(self, rest: list[Any]) -> bool:
        _checkArity(rest, 1, "boolean")
        if rest[0] == b"true":
            return True
        if rest[0] == b"false":
            return False
        raise MalformedJelly(
            f"boolean expressions hold b'true' or b'false', not {rest[0]!r}"
        )

    def _unjelly_decimal(self, rest: list[Any]) -> Any:
        _checkArity(rest, 2, "decimal")
        if type(rest[0]) is not int or type(rest[1]) is not int:
            raise MalformedJelly("decimal expressions hold two integers")
        return super()._unjelly_decimal(rest)

    def _unjellyTimeValue(self, rest: list[Any], tag: str, build: Callable) -> Any:
        _checkArity(rest, 1, tag)
        text = rest[0]
        if type(text) is not bytes or len(text) > 100:
            raise MalformedJelly(f"bad {tag} string {text!r}")
        try:
            return build(rest)
        except (ValueError, TypeError, OverflowError) as e:
            raise MalformedJelly(f"bad {tag} string {text!r}: {e}") from None

    def _unjelly_datetime(self, rest: list[Any]) -> datetime.datetime:
        return self._unjellyTimeValue(rest, "datetime", super()._unjelly_datetime)

    def _unjelly_date(self, rest: list[Any]) -> datetime.date:
        return self._unjellyTimeValue(rest, "date", super()._unjelly_date)

    def _unjelly_time(self, rest: list[Any]) -> datetime.time:
        return self._unjellyTimeValue(rest, "time", super()._unjelly_time)

    def _unjelly_timedelta(self, rest: list[Any]) -> datetime.timedelta:
        return self._unjellyTimeValue(rest, "timedelta", super()._unjelly_timedelta)

    def _unjelly_unpersistable(self, rest: list[Any]) -> _twistedJelly.Unpersistable:
        _checkArity(rest, 1, "unpersistable")
        return super()._unjelly_unpersistable(rest)


# The basic expressions, dispatched without building method names.
_BASIC_THUNKS: dict[bytes, Callable[[Unjellier, list[Any]], Any]] = {
    b"None": Unjellier._unjelly_None,
    b"unicode": Unjellier._unjelly_unicode,
    b"boolean": Unjellier._unjelly_boolean,
    b"decimal": Unjellier._unjelly_decimal,
    b"datetime": Unjellier._unjelly_datetime,
    b"date": Unjellier._unjelly_date,
    b"time": Unjellier._unjelly_time,
    b"timedelta": Unjellier._unjelly_timedelta,
    b"list": Unjellier._unjelly_list,
    b"tuple": Unjellier._unjelly_tuple,
    b"set": Unjellier._unjelly_set,
    b"frozenset": Unjellier._unjelly_frozenset,
    b"dictionary": Unjellier._unjelly_dictionary,
    b"reference": Unjellier._unjelly_reference,
    b"dereference": Unjellier._unjelly_dereference,
    b"unpersistable": Unjellier._unjelly_unpersistable,
}


def _jellyAtom(jellier: Jellier, obj: Any) -> Any:
    return obj


def _jellyStr(jellier: Jellier, obj: str) -> list[bytes]:
    return [b"unicode", obj.encode("UTF-8")]


def _jellyNone(jellier: Jellier, obj: None) -> list[bytes]:
    return [b"None"]


def _jellyBool(jellier: Jellier, obj: bool) -> list[bytes]:
    return [b"boolean", b"true" if obj else b"false"]


_ATOM_TYPES = frozenset({bytes, int, float})


def _iterableJellier(atom: bytes) -> Callable[[Jellier, Any], Any]:
    """
    A fast jellier for a builtin list, tuple, set or frozenset, producing
    what stock jelly produces (including back-references).  Strings and
    atoms among the items are handled inline: they are most of the items
    of typical data.
    """

    def jellyIterable(jellier: Jellier, obj: Any) -> Any:
        preRef = checkMutable(jellier, obj)
        if preRef:
            return preRef
        sxp = jellier.prepare(obj)
        sxp.append(atom)
        append = sxp.append
        jellyItem = jellier.jelly
        atoms = _ATOM_TYPES
        for item in obj:
            kind = type(item)
            if kind is str:
                append([b"unicode", item.encode("UTF-8")])
            elif kind in atoms:
                append(item)
            else:
                append(jellyItem(item))
        return jellier.preserve(obj, sxp)

    return jellyIterable


def _jellyDict(jellier: Jellier, obj: dict[Any, Any]) -> Any:
    preRef = checkMutable(jellier, obj)
    if preRef:
        return preRef
    sxp = jellier.prepare(obj)
    sxp.append(b"dictionary")
    append = sxp.append
    jellyItem = jellier.jelly
    atoms = _ATOM_TYPES
    for key, value in obj.items():
        # Keys first, as stock jelly does (it matters for references).
        kind = type(key)
        if kind is str:
            key = [b"unicode", key.encode("UTF-8")]
        elif kind not in atoms:
            key = jellyItem(key)
        kind = type(value)
        if kind is str:
            value = [b"unicode", value.encode("UTF-8")]
        elif kind not in atoms:
            value = jellyItem(value)
        append([key, value])
    return jellier.preserve(obj, sxp)


# Exact builtin types that stock jelly serializes without consulting
# anything but the taster (whose answer _allowsSentBuiltins knows).
_FAST_JELLIERS: dict[type, Callable[[Any, Any], Any]] = {
    bytes: _jellyAtom,
    int: _jellyAtom,
    float: _jellyAtom,
    str: _jellyStr,
    type(None): _jellyNone,
    bool: _jellyBool,
    list: _iterableJellier(b"list"),
    tuple: _iterableJellier(b"tuple"),
    set: _iterableJellier(b"set"),
    frozenset: _iterableJellier(b"frozenset"),
    dict: _jellyDict,
}


class _NotPlain(Exception):
    """
    An object or expression is not one the plain fast paths handle; the
    full L{Jellier} or L{Unjellier} must.
    """


# Containers the plain jellier handles, with their jelly tags.
_PLAIN_SEQUENCES: dict[type, bytes] = {
    list: b"list",
    tuple: b"tuple",
    set: b"set",
    frozenset: b"frozenset",
}


#: How deep containers and registered objects may nest in a value the
#: plain paths handle: deeper, they step aside for the full jellier.  A
#: fixed depth, the same in the C accelerator (C{PLAIN_MAX_NESTING}), so
#: that both answer the same whatever the stack holds when they are called.
_PLAIN_MAX_NESTING = 200


def _jellyPlain(
    obj: Any, seen: set[int], types: Mapping[type, Any] | None, depth: int = 0
) -> Any:
    """
    Jelly a tree of builtin values exactly as L{Jellier} does with a taster
    that allows sending builtins, without building a jellier.

    @param seen: The ids of the containers (and typed objects) already
        jellied; one met twice (shared or cyclic) would need jelly's
        references, so it is not plain.
    @param types: The send specs (L{pbext.copyable.SendSpec}) of the
        registered classes to write as their registry would, or L{None}.
    @param depth: How many containers and typed objects enclose C{obj}.

    @raise _NotPlain: If C{obj} holds anything but exact C{bytes}, C{int},
        C{float}, C{str}, C{bool}, L{None}, C{list}, C{tuple}, C{set},
        C{frozenset}, C{dict} and instances of the classes in C{types}, or
        a container twice, or they nest deeper than L{_PLAIN_MAX_NESTING}.
    @raise RuntimeError: If a container changes while it is jellied (a
        registered object's property may change one): Python's own
        iterators raise it for a dict or set, and this function for a
        list, or for a container that gave fewer or more items than it
        held (the C twin has written its length by then).
    """
    kind = type(obj)
    if kind is str:
        return [b"unicode", obj.encode("UTF-8")]
    if kind is bytes or kind is int or kind is float:
        return obj
    if obj is None:
        return [b"None"]
    if kind is bool:
        return [b"boolean", b"true" if obj else b"false"]
    if kind is dict:
        return _jellyPlainDict(obj, seen, types, depth)
    tag = _PLAIN_SEQUENCES.get(kind)
    if tag is None:
        spec = types.get(kind) if types else None
        if spec is None or id(obj) in seen or depth >= _PLAIN_MAX_NESTING:
            raise _NotPlain
        seen.add(id(obj))
        if len(spec) == 2:
            return _jellyClassic(obj, spec, seen, types, depth + 1)
        return _jellyTyped(obj, spec, seen, types, depth + 1)
    if id(obj) in seen or depth >= _PLAIN_MAX_NESTING:
        raise _NotPlain
    seen.add(id(obj))
    depth += 1
    size = len(obj)
    sexp: list[Any] = [tag]
    append = sexp.append
    for item in obj:
        kind = type(item)
        if kind is str:
            append([b"unicode", item.encode("UTF-8")])
        elif kind is bytes or kind is int or kind is float:
            append(item)
        else:
            append(_jellyPlain(item, seen, types, depth))
    if len(sexp) != size + 1 or len(obj) != size:
        raise RuntimeError(f"{tag.decode()} changed size during serialization")
    return sexp


def _jellyPlainDict(
    obj: dict[Any, Any], seen: set[int], types: Mapping[type, Any] | None, depth: int
) -> list[Any]:
    """
    Jelly a dictionary for L{_jellyPlain}: its keys and values in its
    order, each plain.

    @raise _NotPlain: As L{_jellyPlain} does.
    @raise RuntimeError: If it changes size while it is jellied.
    """
    if id(obj) in seen or depth >= _PLAIN_MAX_NESTING:
        raise _NotPlain
    seen.add(id(obj))
    depth += 1
    size = len(obj)
    sexp: list[Any] = [b"dictionary"]
    append = sexp.append
    for key, value in obj.items():
        kind = type(key)
        if kind is str:
            key = [b"unicode", key.encode("UTF-8")]
        elif kind is not bytes and kind is not int and kind is not float:
            key = _jellyPlain(key, seen, types, depth)
        kind = type(value)
        if kind is str:
            value = [b"unicode", value.encode("UTF-8")]
        elif kind is not bytes and kind is not int and kind is not float:
            value = _jellyPlain(value, seen, types, depth)
        append([key, value])
    if len(sexp) != size + 1:
        raise RuntimeError("dictionary changed size during serialization")
    return sexp


def _jellyTyped(
    obj: Any,
    spec: Any,
    seen: set[int],
    types: Mapping[type, Any] | None,
    depth: int,
) -> list[Any]:
    """
    Jelly an instance of a registered class as its registry's
    L{_TypedEntry<pbext.copyable._TypedEntry>} would.

    @param depth: How many containers and typed objects enclose its
        fields' values, C{obj} included.

    @raise _NotPlain: If reading a field fails (the registry then raises
        the error) or a field's value is not plain.
    """
    wireName, keys, version = spec
    state: list[Any] = [b"dictionary"]
    append = state.append
    for name, key in keys:
        try:
            value = getattr(obj, name)
        except Exception:
            raise _NotPlain from None
        if type(value) is str:
            value = [b"unicode", value.encode("UTF-8")]
        else:
            value = _jellyPlain(value, seen, types, depth)
        append([[b"unicode", key], value])
    if version > 1:
        append([[b"unicode", _VERSION_KEY_BYTES], version])
    return [wireName, state]


def _jellyClassic(
    obj: Any,
    spec: Any,
    seen: set[int],
    types: Mapping[type, Any] | None,
    depth: int,
) -> list[Any]:
    """
    Jelly a classic L{pb.Copyable} as C{Copyable.jellyFor} does, where its
    class keeps Twisted's methods (L{pbext._classiccopies.sendSpec}).

    @raise _NotPlain: If the class no longer passes the spec's checks, or
        its state is not plain.
    """
    state = classicState(obj, spec)
    if state is None:
        raise _NotPlain
    return [spec[0], _jellyPlain(state, seen, types, depth)]


def _jellyPlainPython(obj: Any, types: Mapping[type, Any] | None = None) -> Any:
    """
    Jelly C{obj} without a jellier if it is a tree of builtin values (no
    container appearing twice), exactly as L{Jellier} would with a taster
    that allows sending builtins; else return L{NOT_PLAIN}.

    The caller must have checked that its taster allows sending builtins
    (L{pbext.security._allowsSentBuiltins}).

    @param types: The send specs of the connection's registered classes
        the plain path may write too (L{PlainTypes.send}), or L{None}.

    @raise RuntimeError: If a list, dict or set changes while it is
        jellied (a registered class's property may change one).
    """
    kind = type(obj)
    if kind is bytes or kind is int or kind is float:
        return obj
    try:
        return _jellyPlain(obj, set(), types)
    except (_NotPlain, RecursionError):
        return NOT_PLAIN


class _OpenReference:
    """
    A C{dereference} met inside the C{reference} expression it names,
    while the plain path builds it (a cycle): where it may go (a list's
    item, a dictionary's value) the slot holds L{None} until the
    reference's value is made, and is then set to it.

    @ivar slots: The C{(container, key)} pairs waiting for the value.
    """

    __slots__ = ("slots",)

    def __init__(self) -> None:
        self.slots: list[tuple[Any, Any]] = []


class _PlainReferences:
    """
    The C{reference} IDs of one expression the plain path unjellies.

    It handles what stock jelly sends for shared and cyclic values: a
    C{dereference} of a finished reference anywhere, and of a reference
    still being built (a cycle) as a list's item or a dictionary's value,
    where the full L{Unjellier} would patch a placeholder the same way.
    Anything else (a forward reference, a cycle through a tuple, a set or
    a dictionary key, a reference inside a registered type's state) is
    left to the full unjellier.

    @ivar done: The value of each finished reference, by ID.
    @ivar open: The references being built, by ID.
    @ivar loose: How many L{_OpenReference}s were returned and not yet
        put in a slot.
    @ivar patched: The containers a cycle's slot was set in.
    """

    __slots__ = ("done", "open", "loose", "patched")

    def __init__(self) -> None:
        self.done: dict[int, Any] = {}
        self.open: dict[int, _OpenReference] = {}
        self.loose = 0
        self.patched: list[Any] = []

    def reference(self, sexp: list[Any], types: Mapping[bytes, Any] | None) -> Any:
        if len(sexp) != 3:
            raise _NotPlain
        refid = sexp[1]
        if type(refid) is not int or refid in self.done or refid in self.open:
            raise _NotPlain
        opened = self.open[refid] = _OpenReference()
        expression = sexp[2]
        if type(expression) is list:
            value = _unjellyPlain(expression, types, self)
            if type(value) is _OpenReference:
                raise _NotPlain
        else:
            value = expression
        del self.open[refid]
        for container, key in opened.slots:
            container[key] = value
            self.patched.append(container)
        self.done[refid] = value
        return value

    def dereference(self, sexp: list[Any]) -> Any:
        if len(sexp) == 2 and type(sexp[1]) is int:
            value = self.done.get(sexp[1], _MISSING)
            if value is not _MISSING:
                return value
            opened = self.open.get(sexp[1])
            if opened is not None:
                self.loose += 1
                return opened
        raise _NotPlain

    def place(self, container: Any, key: Any, opened: _OpenReference) -> None:
        """
        Put an L{_OpenReference} returned for an item or a value in its
        slot.
        """
        self.loose -= 1
        container[key] = None
        opened.slots.append((container, key))

    def breakCycles(self) -> None:
        """
        Empty the containers a cycle was closed in, for an expression the
        plain path gave up on: nobody else has seen them, and without
        their cycles reference counting frees them at once, rather than
        the garbage collector some time later.
        """
        for container in self.patched:
            container.clear()
        self.patched = []
        self.done.clear()


def _unjellyPlain(
    sexp: list[Any],
    types: Mapping[bytes, Any] | None,
    refs: _PlainReferences | None = None,
) -> Any:
    """
    Unjelly an expression made only of jelly's plain builtin expressions
    (C{unicode}, C{None}, C{boolean}, C{list}, C{tuple}, C{set},
    C{frozenset}, C{dictionary}), of the C{reference}s L{_PlainReferences}
    handles and of the registered types in C{types}, producing exactly
    what L{Unjellier} produces for it with a taster that allows the basic
    types.

    @param types: The receive specs (L{pbext.copyable.ReceiveSpec}) of the
        registered wire names to build as their registry would, or L{None}.
    @param refs: The expression's references, or L{None} where none may
        be (in a registered type's state).

    @raise _NotPlain: For anything else, malformed input and state a
        registry would refuse included (the full unjellier then decides,
        and reports it).
    """
    if not sexp:
        raise _NotPlain
    tag = sexp[0]
    if type(tag) is not bytes:
        raise _NotPlain
    if tag == b"unicode":
        if len(sexp) != 2 or type(sexp[1]) is not bytes:
            raise _NotPlain
        try:
            return sexp[1].decode("utf-8")
        except UnicodeDecodeError:
            raise _NotPlain from None
    if refs is None:
        loose = 0
    elif tag == b"dereference":
        # First: in a cycle, one node in two may be one.
        return refs.dereference(sexp)
    else:
        loose = refs.loose
    if tag == b"dictionary":
        return _unjellyPlainDict(sexp, types, refs)
    if tag == b"list" or tag == b"tuple" or tag == b"set" or tag == b"frozenset":
        return _unjellyPlainSequence(tag, sexp, types, refs, loose)
    if tag == b"None":
        if len(sexp) != 1:
            raise _NotPlain
        return None
    if tag == b"boolean" and len(sexp) == 2 and type(sexp[1]) is bytes:
        if sexp[1] == b"true":
            return True
        if sexp[1] == b"false":
            return False
    if refs is not None and tag == b"reference":
        return refs.reference(sexp, types)
    spec = types.get(tag) if types else None
    if spec is not None and len(sexp) == 2 and type(sexp[1]) is list:
        state = _unjellyPlain(sexp[1], types)
        if type(state) is dict:
            if len(spec) == 6:
                built = buildClassic(spec, state)
                if built is None:
                    raise _NotPlain
                return built
            return _buildTyped(spec, state)
    raise _NotPlain


def _unjellyPlainSequence(
    tag: bytes,
    sexp: list[Any],
    types: Mapping[bytes, Any] | None,
    refs: _PlainReferences | None,
    loose: int,
) -> Any:
    """
    Unjelly a C{list}, C{tuple}, C{set} or C{frozenset} expression for
    L{_unjellyPlain}; only a list's items may wait for a reference.

    @param loose: How many references were open before its items.
    @raise _NotPlain: As L{_unjellyPlain} does.
    """
    items = [
        _unjellyPlain(item, types, refs) if type(item) is list else item
        for item in sexp[1:]
    ]
    if refs is not None and refs.loose != loose:
        # A cycle: only a list's items may wait for its value.
        if tag != b"list":
            raise _NotPlain
        for index, item in enumerate(items):
            if type(item) is _OpenReference:
                refs.place(items, index, item)
    if tag == b"list":
        return items
    if tag == b"tuple":
        return tuple(items)
    try:
        return set(items) if tag == b"set" else frozenset(items)
    except TypeError:
        raise _NotPlain from None


def _unjellyPlainDict(
    sexp: list[Any], types: Mapping[bytes, Any] | None, refs: _PlainReferences | None
) -> dict[Any, Any]:
    """
    Unjelly a C{dictionary} expression for L{_unjellyPlain}, in the
    sender's order; a value that waits for a reference is placed when it
    is defined.

    @raise _NotPlain: As L{_unjellyPlain} does.
    """
    result: dict[Any, Any] = {}
    for pair in sexp[1:]:
        if type(pair) is not list or len(pair) != 2:
            raise _NotPlain
        key, value = pair
        if type(key) is list:
            key = _unjellyPlain(key, types, refs)
            if type(key) is _OpenReference:
                raise _NotPlain
        if type(value) is list:
            value = _unjellyPlain(value, types, refs)
        try:
            result[key] = value
        except TypeError:
            raise _NotPlain from None
        if type(value) is _OpenReference:
            refs.place(result, key, value)  # type: ignore[union-attr]  # refs is set whenever an _OpenReference can appear
    return result


def _buildTyped(spec: Any, state: dict[Any, Any]) -> Any:
    """
    Build a registered type from received state, as its registry's
    L{_Entry.unjelly<pbext.copyable._Entry.unjelly>} would where that
    accepts the state.

    @param state: The unjellied state dictionary (not changed).

    @raise _NotPlain: Where the registry would do more (upgrade an older
        version) or refuse: a field unknown, missing or of the wrong type,
        a key that is not a C{str}, or an error building the object.  The
        full unjellier then does the same again and reports the refusal.
    """
    build, byKeyword, fields, required, version, positional, direct = spec
    sent = state.get(VERSION_KEY, _MISSING)
    if sent is _MISSING:
        if version != 1:
            raise _NotPlain
    elif type(sent) is not int or sent != version:
        raise _NotPlain
    present = 0
    for name, value in state.items():
        if sent is not _MISSING and name == VERSION_KEY:
            continue
        field = fields.get(name) if type(name) is str else None
        if field is None:
            raise _NotPlain
        kind = field[0]
        if kind == CHECK_ANY:
            pass
        elif kind == CHECK_INT:
            if not isinstance(value, int) or isinstance(value, bool):
                raise _NotPlain
        elif kind == CHECK_STR:
            if not isinstance(value, str):
                raise _NotPlain
        elif kind == CHECK_FLOAT:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise _NotPlain
        elif kind == CHECK_BYTES:
            if not isinstance(value, bytes):
                raise _NotPlain
        elif kind == CHECK_BOOL:
            if value is not True and value is not False:
                raise _NotPlain
        else:
            try:
                mismatch = field[1](value)
            except Exception:
                raise _NotPlain from None
            if mismatch is not None:
                raise _NotPlain
        if field[2]:
            present += 1
    if present != required:
        raise _NotPlain
    if sent is not _MISSING:
        state = dict(state)
        del state[VERSION_KEY]
    return _constructTyped(build, byKeyword, positional, direct, state)


def _constructTyped(
    build: Any,
    byKeyword: bool,
    positional: tuple[str, ...] | None,
    direct: bool,
    state: dict[Any, Any],
) -> Any:
    """
    Make the object of checked C{state} for L{_buildTyped}: through
    C{build} given the state, its fields by keyword or (where they are all
    there) by position, or without its constructor (C{direct}).

    @raise _NotPlain: If building fails.
    """
    try:
        if not byKeyword:
            return build(state)
        if positional is not None and len(state) == len(positional):
            try:
                arguments = [state[name] for name in positional]
            except KeyError:
                pass
            else:
                if direct:
                    obj = object.__new__(build)
                    for name, argument in zip(positional, arguments):
                        object.__setattr__(obj, name, argument)
                    return obj
                return build(*arguments)
        return build(**state)
    except Exception:
        raise _NotPlain from None


def _unjellyPlainPython(sexp: Any, types: Mapping[bytes, Any] | None = None) -> Any:
    """
    Unjelly C{sexp} without an unjellier if it is made only of jelly's
    plain builtin expressions (and of registered types in C{types}),
    exactly as L{Unjellier.unjellyFull} would with a taster that allows the
    basic types; else return L{NOT_PLAIN}.

    The caller must have checked that its taster allows the basic types
    (L{pbext.security._allowsBasicTypes}).

    @param types: The receive specs of the connection's registered types
        the plain path may build too (L{PlainTypes.receive}), or L{None}.
    """
    if type(sexp) is not list:
        return sexp
    refs = _PlainReferences()
    try:
        result = _unjellyPlain(sexp, types, refs)
    except (_NotPlain, RecursionError):
        refs.breakCycles()
        return NOT_PLAIN
    if type(result) is _OpenReference:
        return NOT_PLAIN
    return result


_GENERATION = operator.attrgetter("_generation")

# What PlainTypes keeps of a policy for classic copies, shared by every
# connection: (accepts Twisted's registry, checks copy state).
_CLASSIC_POLICIES: dict[tuple[bool, bool], tuple[bool, bool]] = {
    (a, c): (a, c) for a in (False, True) for c in (False, True)
}


class PlainTypes:
    """
    The registered types of one connection that the plain fast paths
    handle themselves: what L{jellyPlain} and L{unjellyPlain} take as
    C{types}.

    A class is sent, and a wire name received, by the first of the
    connection's registries that has it, as the L{Jellier} and
    L{Unjellier} ask them in order; only those the first claimant handles
    the common way (L{pbext.copyable.PlainTables}) are in the tables, and
    no registry after one that is not a
    L{pbext.copyable.CopyableRegistry} counts, since it could claim
    anything.  Wire names the taster refuses are left out, so the full
    unjellier refuses them.  The tables follow changes to the registries:
    a registry that changes marks them L{stale}, and L{refresh} rebuilds
    them.

    Classic copy classes that keep Twisted's methods are added as the full
    jellier and unjellier meet them (L{learnSend}, L{learnReceive}; see
    L{pbext._classiccopies}), at most L{maxClassic} of each, unless a
    registry (or one that is not a L{pbext.copyable.CopyableRegistry})
    could claim them.

    @ivar send: Send specs by class, or L{None} if there are none.
    @ivar receive: Receive specs by wire name, or L{None} if none.
    @ivar stale: Whether a registry changed since the tables were built.
    @ivar decoderStale: Whether L{receive} changed since the broker last
        gave it to its decoder (which must not change while it decodes):
        the broker clears it when it does.
    """

    __slots__ = (
        "send",
        "receive",
        "stale",
        "decoderStale",
        "_registries",
        "_taster",
        "_generations",
        "_classicSend",
        "_classicReceive",
        "_classicPolicy",
        "__weakref__",
    )

    #: The most classic classes learnt, each way.
    maxClassic = 256

    send: dict[type, Any] | None
    receive: dict[bytes, Any] | None
    stale: bool

    def __init__(self, registries: Iterable[Any], taster: Any) -> None:
        usable = []
        closed = False
        for registry in registries:
            if not isinstance(registry, CopyableRegistry):
                closed = True
                break
            usable.append(registry)
        self._registries = tuple(usable)
        self._taster = taster
        self._generations: tuple[int, ...] = ()
        # Classic classes met (made on first use; None for one the plain
        # paths may not handle), and whether and how they may be: None
        # when a registry could claim anything, else (acceptClassicRegistry,
        # checkCopyState) as the Unjellier reads them from the policy.
        self._classicSend: dict[type, Any] | None = None
        self._classicReceive: dict[bytes, tuple[Any, Any]] | None = None
        self._classicPolicy: tuple[bool, bool] | None = None
        if not closed:
            policy = getattr(taster, "policy", None)
            self._classicPolicy = _CLASSIC_POLICIES[
                bool(getattr(policy, "classic", False))
                or bool(getattr(policy, "acceptClassicRegistry", True)),
                bool(getattr(policy, "checkCopyState", True)),
            ]
        self.send = self.receive = None
        self.stale = True
        self.decoderStale = False
        for registry in self._registries:
            registry._watchers.add(self)
        self.refresh()

    def refresh(self) -> bool:
        """
        Rebuild the tables if a registry changed since they were built.

        @return: Whether they were rebuilt.
        """
        self.stale = False
        registries = self._registries
        generations = tuple(map(_GENERATION, registries))
        if generations == self._generations:
            return False
        self._generations = generations
        send: dict[type, Any] = {}
        receive: dict[bytes, Any] = {}
        allowed = self._taster.isTypeAllowed
        for index, registry in enumerate(registries):
            tables = registry._plainTables()
            earlier = registries[:index]
            for cls, sendSpec in tables.send.items():
                if cls not in _FAST_JELLIERS and not any(
                    r._sends(cls) for r in earlier
                ):
                    send.setdefault(cls, sendSpec)
            for name, receiveSpec in tables.receive.items():
                if (
                    name not in _BASIC_THUNKS
                    and name not in _IMPORTING_TYPES
                    and not any(r._receives(name) for r in earlier)
                    and allowed(name)
                ):
                    receive.setdefault(name, receiveSpec)
        # Usually one registry gives them all: share its tables (which
        # never change) rather than keep a copy for each connection.
        for registry in registries:
            tables = registry._plainTables()
            if send and send == tables.send:
                send = tables.send
            if receive and receive == tables.receive:
                receive = tables.receive
        if self._classicSend:
            send = dict(send)
            for cls, spec in self._classicSend.items():
                if spec is not None and not any(r._sends(cls) for r in registries):
                    send.setdefault(cls, spec)
        if self._classicReceive:
            receive = dict(receive)
            for name, (_, spec) in self._classicReceive.items():
                if spec is not None and not any(r._receives(name) for r in registries):
                    receive.setdefault(name, spec)
        self.send = send or None
        if (receive or None) is not self.receive:
            self.decoderStale = True
        self.receive = receive or None
        return True

    def learnSend(self, cls: type) -> None:
        """
        The full jellier met an instance of C{cls}, which no registry
        sends: if it is a L{pb.Copyable} class that keeps Twisted's
        methods, let the plain paths send its instances from now on.
        """
        learnt = self._classicSend
        if learnt is None:
            if self._classicPolicy is None:
                return
            learnt = self._classicSend = {}
        if cls in learnt or len(learnt) >= self.maxClassic:
            return
        spec = learnt[cls] = _classicSendSpec(cls)
        if spec is not None:
            self._generations = (-1,)
            self.stale = True

    def learnReceive(self, tag: bytes, cls: Any) -> None:
        """
        The full unjellier built a copy with C{cls}, registered for C{tag}
        in Twisted's global registry, which no registry receives: if it is
        a L{pb.RemoteCopy} class that keeps Twisted's methods, let the
        plain paths build its copies from now on (checking their state as
        the unjellier does).
        """
        learnt = self._classicReceive
        policy = self._classicPolicy
        if policy is None:
            return
        if learnt is None:
            learnt = self._classicReceive = {}
        known = learnt.get(tag)
        if known is not None and known[0] is cls:
            return
        if known is None and len(learnt) >= self.maxClassic:
            return
        # A name registered again for another class is learnt again.
        spec = None
        if (
            policy[0]
            and type(tag) is bytes
            and tag not in _BASIC_THUNKS
            and tag not in _IMPORTING_TYPES
            and tag not in PB_UNJELLYABLES
            and self._taster.isTypeAllowed(tag)
        ):
            spec = _classicReceiveSpec(cls, tag, policy[1])
        learnt[tag] = (cls, spec)
        if spec is not None or known is not None:
            self._generations = (-1,)
            self.stale = True


# Marks a tag not looked up yet in Unjellier._registryOf.
_UNSEEN: Any = object()

#: What L{jellyPlain} and L{unjellyPlain} return when the full jellier or
#: unjellier is needed.
NOT_PLAIN: Any = object()

#: The pure-Python L{jellyPlain} and L{unjellyPlain}; where pbext's C
#: accelerator is built, the module's names are bound to its twins, which
#: give the same results (the tests run both).
jellyPlain = _jellyPlainPython
unjellyPlain = _unjellyPlainPython

if _speedups is not None:
    _speedups.configure(notPlain=NOT_PLAIN, prebuilt=PREBUILT, versionKey=VERSION_KEY)
    jellyPlain = _speedups.jellyPlain
    unjellyPlain = _speedups.unjellyPlain


class Jellier(_twisted.Jellier):
    """
    Twisted's jellier, asking the connection's registries first and
    serializing builtin values without building and tasting their type
    names.  Its output is exactly stock jelly's for everything stock jelly
    can send; an instance of a class it may not send raises
    L{UnsendableError} unless C{substitute} (stock jelly sends an
    C{unpersistable} placeholder instead).

    @ivar registries: The connection's copyable registries, in order.
    @ivar substitute: Whether to send what cannot be sent as stock jelly
        does.
    """

    def __init__(
        self,
        taster: Any,
        invoker: Any = None,
        registries: Iterable[Any] = (),
        persistentStore: Any = None,
        substitute: bool = True,
    ) -> None:
        """
        @param taster: The taster for what is sent (normally
            C{policy.outgoingTaster()}).
        @param invoker: The broker, or L{None}.
        @param registries: The connection's L{ICopyableRegistry} providers.
        @param persistentStore: Stock jelly's persistent-store hook.
        @param substitute: Send an instance of a class the taster does not
            allow as stock jelly's C{unpersistable} placeholder, instead of
            raising L{UnsendableError}.
        """
        super().__init__(taster, persistentStore, invoker)
        self.registries = tuple(registries)
        self.substitute = substitute
        self._fast = _FAST_JELLIERS if _allowsSentBuiltins(taster) else {}
        # The broker's plain tables, told of the classic copies met.
        self._plainTypes = _brokerPlainTypes(invoker) if self._fast else None

    def jelly(self, obj: Any) -> Any:
        fast = self._fast.get(type(obj))
        if fast is not None:
            return fast(self, obj)
        if self.registries:
            preRef = checkMutable(self, obj)
            if preRef:
                return preRef
            for registry in self.registries:
                sexp = registry.jellyFor(obj, self)
                if sexp is not None:
                    return sexp
        if self._plainTypes is not None and isinstance(obj, flavors.Copyable):
            self._plainTypes.learnSend(type(obj))
        return super().jelly(obj)

    def unpersistable(self, reason: Any, sxp: Any = None) -> Any:
        """
        Stock jelly calls this for an instance of a class its taster does
        not allow, to send a placeholder instead: raise L{UnsendableError}
        unless L{substitute}.  So that no placeholder is ever sent by
        default, any other caller (an application's own C{jellyFor}) gets
        the error too.

        @raise UnsendableError: Unless L{substitute}.
        """
        if self.substitute:
            return super().unpersistable(reason, sxp)
        text = reason.decode("utf-8", "replace") if type(reason) is bytes else reason
        className = _insecureClassName(text) if type(text) is str else None
        if className is not None:
            raise UnsendableError(_unsendableMessage(className), className)
        raise UnsendableError(
            f"cannot send a value jelly calls unpersistable ({str(text)[:200]}); "
            f"the policy option sendUnpersistable sends a placeholder instead",
            "",
        )


def _brokerPlainTypes(invoker: Any) -> PlainTypes | None:
    """
    The plain tables of a pbext broker, or L{None} for anything else.
    """
    serialization = getattr(invoker, "_pbextSerialization", None)
    plainTypes = getattr(serialization, "plainTypes", None)
    return plainTypes if isinstance(plainTypes, PlainTypes) else None


def _insecureClassName(reason: str) -> str | None:
    """
    The class named in stock jelly's reason for an C{unpersistable}
    placeholder of an instance it may not send, or L{None} for any other
    reason.
    """
    prefix, suffix = "instance of class ", " deemed insecure"
    if reason.startswith(prefix) and reason.endswith(suffix):
        return reason[len(prefix) : -len(suffix)]
    return None


def _unsendableMessage(className: str) -> str:
    """
    Why an instance of C{className} cannot be sent, and what to do.
    """
    receiving = any(
        isinstance(value, type) and qual(value) == className
        for value in classicRegistry().values()
    )
    why = (
        "its class is registered (pb.setUnjellyableForClass) only for receiving copies"
        if receiving
        else "its class is not a pb.Copyable, not registered for sending in a "
        "copyable registry, and not allowed by the policy"
    )
    return (
        f"cannot send an instance of {className}: {why}; send a pb.Copyable or "
        f"a registered type instead (classic PB would have sent the string "
        f"'<unpersistable>' in its place; the policy option sendUnpersistable "
        f"restores that)"
    )


def jelly(
    obj: object,
    taster: Any,
    invoker: Any = None,
    registries: Iterable[Any] = (),
    policy: Any = None,
) -> Any:
    """
    Serialize C{obj} to a jelly expression.

    @param taster: The outgoing taster (C{policy.outgoingTaster()}).
    @param invoker: The broker, or L{None}.
    @param registries: The connection's L{ICopyableRegistry} providers.
    @param policy: The sender's policy: unless its C{sendUnpersistable} is
        true, an instance of a class that may not be sent raises
        L{UnsendableError}.  Without one, such an instance is sent as stock
        jelly sends it, as an C{unpersistable} placeholder.

    @raise UnsendableError: See C{policy}.
    """
    if _allowsSentBuiltins(taster):
        sexp = jellyPlain(obj)
        if sexp is not NOT_PLAIN:
            return sexp
    substitute = policy is None or bool(getattr(policy, "sendUnpersistable", False))
    return Jellier(taster, invoker, registries, substitute=substitute).jelly(obj)


def unjelly(
    sexp: object,
    taster: Any,
    invoker: Any = None,
    registries: Iterable[Any] = (),
    policy: Any = None,
) -> Any:
    """
    Rebuild the object a received jelly expression describes.

    @param taster: The connection's taster (C{policy.forConnection(...)}).
    @param invoker: The broker, or L{None}.
    @param registries: The connection's L{ICopyableRegistry} providers; by
        default those C{taster} was bound to.
    @param policy: The policy; by default the one behind C{taster}.

    @raise InsecureJelly: If the expression is refused.
    @raise MalformedJelly: If it is malformed.
    """
    if _allowsBasicTypes(taster):
        result = unjellyPlain(sexp)
        if result is not NOT_PLAIN:
            return result
    return Unjellier(taster, invoker, registries, policy).unjellyFull(sexp)


jellyFor = jelly
unjellyFor = unjelly
