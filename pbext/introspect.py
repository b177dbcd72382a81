"""
Introspection: what remote methods an object offers, and their signatures.

A pbext server can tell a pbext client which methods the objects it holds
references to answer, with their parameters and results taken from the
annotations and the first line of each docstring.  C{python -m pbext
describe} prints that, and C{python -m pbext stubs} turns it into
C{typing.Protocol} classes (see L{pbext.stubs}) that mypy checks calls
against.

The four flavors of PB are described the way pbext's broker dispatches
them: C{remote_} methods of a L{pb.Referenceable} (a L{pb.Root} too),
C{perspective_} methods of a L{pb.Avatar}, C{view_} methods of a
L{pb.Viewable} reached through a L{pb.ViewPoint} (without the perspective
argument, which the broker supplies), and C{observe_} methods of a
L{pb.RemoteCache}.  Each method is named as a caller names it in
C{callRemote}.

What is described (the threat model, docs/howto/introspection.rst):

 - only an object the peer holds a reference to: the peer sends the
   reference back, and the broker resolves it as it resolves any
   reference argument, so nothing else can be named;
 - only methods the peer may call: never a name starting with an
   underscore, nor one the connection's security policy refuses;
 - classes named by the annotations of those methods, when they are
   remote flavors themselves (what a call would hand the peer anyway);
 - default values only when they are short literals; a class that cannot
   be imported by name (defined in a function or in C{__main__}) is
   spelled C{typing.Any};
 - bounded: at most L{MAX_CLASSES} classes, L{MAX_METHODS} methods each,
   L{MAX_DESCRIPTION} characters in all, and every text cut to a fixed
   length.

The server answers only a pbext peer (stock PB peers never see this), and
only when its factory allows it: C{PBServerFactory(...,
introspection=False)} or C{twistd pbserver --no-introspection} turn it
off; by default it is on unless the security policy is C{strict}.

@since: pbext NEXT
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import typing
import weakref
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterator,
    Literal,
    TypedDict,
)

from twisted.logger import Logger
from twisted.spread import flavors, pb

from pbext import _typenames

if TYPE_CHECKING:
    from pbext.broker import Broker

__all__ = [
    "DESCRIPTION_VERSION",
    "IntrospectionRefused",
    "IntrospectionUnavailable",
    "MAX_CLASSES",
    "MAX_DESCRIPTION",
    "MAX_METHODS",
    "ClassDescription",
    "Description",
    "MethodDescription",
    "ParameterDescription",
    "answerDescribe",
    "checkDescription",
    "classFlavor",
    "describeClass",
    "describeClasses",
    "describeModule",
    "describeObject",
    "describeRemote",
    "formatText",
    "introspectionEnabled",
    "signatureText",
]

#: The version of the description's shape; a reader refuses a newer one.
DESCRIPTION_VERSION = 1

#: At most this many classes in one description.
MAX_CLASSES = 32
#: At most this many methods of one class.
MAX_METHODS = 200
#: At most this many parameters of one method.
MAX_PARAMETERS = 32
#: Longest text (a docstring line, an annotation) described.
MAX_TEXT = _typenames.MAX_TEXT
#: At most this many characters (of JSON) of methods in one description:
#: past it, methods and classes are left out and it is marked truncated.
MAX_DESCRIPTION = 256 * 1024
#: Longest default value's repr described; a longer one is C{...}.
MAX_DEFAULT = 60

#: The method name prefix of each flavor.
PREFIXES: dict[str, str] = {
    "remote": "remote_",
    "perspective": "perspective_",
    "view": "view_",
    "observe": "observe_",
}

_log = Logger()

Flavor = Literal["remote", "perspective", "view", "observe"]


class ParameterDescription(TypedDict):
    """
    One parameter of a described method.
    """

    name: str
    #: C{"positional"} (positional only), C{"either"}, C{"keyword"}
    #: (keyword only), C{"varargs"} or C{"varkw"}.
    kind: str
    #: The annotation as a Python type expression with dotted names.
    annotation: str
    #: The default's repr, C{"..."} when it is not a short literal, or
    #: absent when there is none.
    default: typing.NotRequired[str]


class MethodDescription(TypedDict):
    """
    One remote method, named as callers name it.
    """

    name: str
    parameters: list[ParameterDescription]
    #: What the caller's Deferred fires with (a Deferred, awaitable or
    #: coroutine result unwrapped).
    returns: str
    doc: str


class ClassDescription(TypedDict):
    """
    One remote class.
    """

    #: The class's dotted name (C{module.QualName}).
    name: str
    flavor: str
    doc: str
    methods: list[MethodDescription]
    #: Modules the annotations' dotted names come from.
    modules: list[str]
    #: Whether there were more methods than L{MAX_METHODS}.
    truncated: bool


class Description(TypedDict):
    """
    What C{describe} answers: the classes, the described object's first.
    """

    version: int
    classes: list[ClassDescription]
    #: Whether classes were left out past L{MAX_CLASSES}.
    truncated: bool


class IntrospectionRefused(pb.Error):
    """
    The server does not describe its objects to this peer (introspection
    is off, or the object cannot be described).

    @since: pbext NEXT
    """


# -- flavors -------------------------------------------------------------------


def _isRemote(cls: type) -> bool:
    return classFlavor(cls) is not None


def classFlavor(cls: type) -> Flavor | None:
    """
    The flavor by which instances of C{cls} are called remotely, or
    L{None} if they are not remote objects.

    @since: pbext NEXT
    """
    if issubclass(cls, pb.RemoteCache):
        return "observe"
    if issubclass(cls, flavors.Viewable):
        return "view"
    if issubclass(cls, flavors.Referenceable):
        return "remote"
    if issubclass(cls, pb.Avatar) or pb.IPerspective.implementedBy(cls):
        return "perspective"
    return None


def _objectFlavor(target: object) -> tuple[object, Flavor] | None:
    """
    The object whose methods a call on C{target} runs, and their flavor,
    as L{pbext.broker.Broker} dispatches it; L{None} for an object that
    dispatches calls its own way.
    """
    if isinstance(target, pb.AsReferenceable):
        bound = target.__dict__.get("remoteMessageReceived")
        owner = getattr(bound, "__self__", None)
        if (
            isinstance(owner, pb.Avatar)
            and type(owner).perspectiveMessageReceived
            is pb.Avatar.perspectiveMessageReceived
        ):
            return owner, "perspective"
        return None
    kind = getattr(type(target), "remoteMessageReceived", None)
    if kind is flavors.Referenceable.remoteMessageReceived:
        return target, "remote"
    if kind is flavors.ViewPoint.remoteMessageReceived:
        return getattr(target, "object", None), "view"
    if kind is flavors.RemoteCache.remoteMessageReceived:
        return target, "observe"
    return None


# -- describing ----------------------------------------------------------------

_MARKUP = re.compile(r"\b[CLIBUM]\{([^{}]*)\}")


def _firstLine(thing: object) -> str:
    """
    The first sentence or line of C{thing}'s docstring (its first
    paragraph, joined, up to the first full stop), epytext markup removed.
    """
    doc = thing if isinstance(thing, str) else inspect.getdoc(thing)
    if not doc:
        return ""
    paragraph = " ".join(doc.strip().split("\n\n", 1)[0].split())
    sentence = re.split(r"(?<=[.!?])\s", paragraph, maxsplit=1)[0]
    return _typenames.clip(_MARKUP.sub(r"\1", sentence))


def _signature(function: Callable[..., object]) -> inspect.Signature | None:
    """
    C{function}'s signature with its annotations evaluated, or as written
    (strings) if some cannot be.
    """
    try:
        return inspect.signature(function, eval_str=True)
    except (NameError, SyntaxError, TypeError, AttributeError):
        pass
    except ValueError:
        return None
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):
        return None


def _default(value: object) -> str:
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, (str, bytes)) and len(value) <= MAX_DEFAULT - 3:
        return repr(value)
    return "..."


_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "either",
    inspect.Parameter.KEYWORD_ONLY: "keyword",
    inspect.Parameter.VAR_POSITIONAL: "varargs",
    inspect.Parameter.VAR_KEYWORD: "varkw",
}


@dataclass(frozen=True)
class _MethodInfo:
    """
    One method's description, made once per class (see L{_classInfo}).

    @ivar text: the L{MethodDescription} as JSON: its size is what it
        costs of L{MAX_DESCRIPTION}, and each description gets a fresh copy.
    @ivar modules: the modules its annotations name.
    @ivar named: the remote classes its annotations name.
    """

    name: str
    text: str
    modules: frozenset[str]
    named: tuple[type, ...]


def _describeMethod(
    name: str, function: Callable[..., object], skip: int
) -> _MethodInfo:
    """
    Describe the method C{function}, called remotely as C{name}, whose
    first C{skip} parameters the caller does not pass.
    """
    namer = _typenames.TypeNamer(_isRemote)
    signature = _signature(function)
    parameters: list[ParameterDescription] = []
    returns = _typenames.ANY
    if signature is not None:
        found = list(signature.parameters.values())[skip:]
        for parameter in found[:MAX_PARAMETERS]:
            annotation = parameter.annotation
            described: ParameterDescription = {
                "name": parameter.name,
                "kind": _KINDS[parameter.kind],
                "annotation": (
                    _typenames.ANY
                    if isinstance(annotation, str)
                    else namer.name(annotation)
                ),
            }
            if parameter.default is not inspect.Parameter.empty:
                described["default"] = _default(parameter.default)
            parameters.append(described)
        result = signature.return_annotation
        if not isinstance(result, str):
            returns = namer.name(_typenames.awaited(result))
    method: MethodDescription = {
        "name": name,
        "parameters": parameters,
        "returns": returns,
        "doc": _firstLine(function),
    }
    return _MethodInfo(
        name, json.dumps(method), frozenset(namer.modules), tuple(namer.classes)
    )


def _remoteMethods(
    cls: type, flavor: Flavor
) -> Iterator[tuple[str, Callable[..., object], int]]:
    """
    The methods of C{cls} a peer may call by the flavor's prefix, with the
    names the peer calls them by, in alphabetical order, and how many of
    their first parameters the caller does not pass (C{self}, and a
    C{view_} method's perspective, which the broker passes).
    """
    # The broker passes the caller's perspective first to view_ methods.
    extra = 1 if flavor == "view" else 0
    prefix = PREFIXES[flavor]
    for attribute in sorted(dir(cls)):
        if not attribute.startswith(prefix):
            continue
        name = attribute[len(prefix) :]
        if not name or name.startswith("_"):
            continue
        function = inspect.getattr_static(cls, attribute, None)
        skip = extra + 1
        if isinstance(function, staticmethod):
            function, skip = function.__func__, extra
        elif isinstance(function, classmethod):
            function = function.__func__
        if callable(function):
            yield name, function, skip


@dataclass(frozen=True)
class _ClassInfo:
    """
    What introspection needs of one class and flavor, found once: its
    name, docstring and public remote methods (before the policy's
    filter), at most L{_SCAN_LIMIT} of them.
    """

    name: str
    doc: str
    methods: tuple[_MethodInfo, ...]
    more: bool


#: At most this many methods of a class are looked at.
_SCAN_LIMIT = 4 * MAX_METHODS

#: Each class's L{_ClassInfo} by flavor: a memo (like pbext.typecheck's
#: compiled checks), so that a peer asking again and again costs little.
#: Weak: it never keeps a class alive.
_classInfos: weakref.WeakKeyDictionary[type, dict[str, _ClassInfo]] = (
    weakref.WeakKeyDictionary()
)


def _classInfo(cls: type, flavor: Flavor) -> _ClassInfo:
    byFlavor = _classInfos.setdefault(cls, {})
    info = byFlavor.get(flavor)
    if info is None:
        methods: list[_MethodInfo] = []
        more = False
        for name, function, skip in _remoteMethods(cls, flavor):
            if len(methods) >= _SCAN_LIMIT:
                more = True
                break
            methods.append(_describeMethod(name, function, skip))
        # The class's own docstring: one inherited from pb.Root and the
        # like says nothing about this class.
        own = cls.__dict__.get("__doc__")
        info = byFlavor[flavor] = _ClassInfo(
            f"{cls.__module__}.{cls.__qualname__}",
            _firstLine(own) if isinstance(own, str) else "",
            tuple(methods),
            more,
        )
    return info


class _Budget:
    """
    What a description has spent of L{MAX_DESCRIPTION}, and the remote
    classes its methods name, in order.
    """

    def __init__(self) -> None:
        self.left = MAX_DESCRIPTION
        self.named: list[type] = []


def describeClass(
    cls: type,
    flavor: Flavor,
    allowed: Callable[[str], bool] = lambda name: True,
    budget: _Budget | None = None,
) -> ClassDescription:
    """
    Describe the remote methods of C{cls} of the given flavor.

    @param allowed: whether a method name may be called (the security
        policy's C{isMethodAllowed}).
    @since: pbext NEXT
    """
    budget = budget if budget is not None else _Budget()
    info = _classInfo(cls, flavor)
    methods: list[MethodDescription] = []
    modules: set[str] = set()
    truncated = info.more
    for method in info.methods:
        if not allowed(method.name):
            continue
        budget.left -= len(method.text)
        if len(methods) >= MAX_METHODS or budget.left < 0:
            truncated = True
            break
        methods.append(json.loads(method.text))
        modules.update(method.modules)
        for named in method.named:
            if named not in budget.named:
                budget.named.append(named)
    return {
        "name": info.name,
        "flavor": flavor,
        "doc": info.doc,
        "methods": methods,
        "modules": sorted(modules),
        "truncated": truncated,
    }


def describeClasses(
    start: list[tuple[type, Flavor]],
    allowed: Callable[[str], bool] = lambda name: True,
) -> Description:
    """
    Describe the classes C{start} and the remote classes their methods'
    annotations name, up to L{MAX_CLASSES} classes and
    L{MAX_DESCRIPTION} characters.

    @since: pbext NEXT
    """
    budget = _Budget()
    queue = list(start)
    seen: set[type] = set()
    classes: list[ClassDescription] = []
    truncated = False
    while queue:
        cls, flavor = queue.pop(0)
        if cls in seen:
            continue
        if len(classes) >= MAX_CLASSES or budget.left < 0:
            truncated = True
            break
        seen.add(cls)
        known = len(budget.named)
        classes.append(describeClass(cls, flavor, allowed, budget))
        for found in budget.named[known:]:
            foundFlavor = classFlavor(found)
            if foundFlavor is not None and found not in seen:
                queue.append((found, foundFlavor))
    return {"version": DESCRIPTION_VERSION, "classes": classes, "truncated": truncated}


def describeObject(
    target: object, allowed: Callable[[str], bool] = lambda name: True
) -> Description:
    """
    Describe what a peer holding a reference to C{target} may call on it.

    @raise IntrospectionRefused: if C{target} is not a remote object pbext
        dispatches (it handles calls with its own C{remoteMessageReceived}).
    @since: pbext NEXT
    """
    found = _objectFlavor(target)
    if found is None or found[0] is None:
        raise IntrospectionRefused(
            f"{type(target).__name__} objects dispatch calls their own way; "
            "their methods cannot be listed"
        )
    obj, flavor = found
    return describeClasses([(type(obj), flavor)], allowed)


def describeModule(spec: str) -> Description:
    """
    Describe remote classes without a server: C{package.module:Class} for
    one class (and those its annotations name), or C{package.module} for
    every remote class the module defines.

    @raise ValueError: if the module or class cannot be found, or is not a
        remote flavor.
    @since: pbext NEXT
    """
    moduleName, _, className = spec.partition(":")
    try:
        module = importlib.import_module(moduleName)
    except ImportError as e:
        raise ValueError(
            f"{spec}: cannot import {moduleName} ({e}); run from the directory "
            f"that holds it, or set PYTHONPATH"
        ) from None
    if className:
        cls: object = module
        for part in className.split("."):
            cls = getattr(cls, part, None)
        if not isinstance(cls, type):
            raise ValueError(f"{spec}: {moduleName} has no class {className}")
        flavor = classFlavor(cls)
        if flavor is None:
            raise ValueError(
                f"{spec}: {className} is not a remote class (a pb.Referenceable, "
                f"pb.Root, pb.Avatar, pb.Viewable or pb.RemoteCache)"
            )
        return describeClasses([(cls, flavor)])
    start: list[tuple[type, Flavor]] = []
    for value in vars(module).values():
        if isinstance(value, type) and value.__module__ == module.__name__:
            flavor = classFlavor(value)
            if flavor is not None:
                start.append((value, flavor))
    if not start:
        raise ValueError(f"{spec}: the module defines no remote classes")
    return describeClasses(start)


# -- the server side -----------------------------------------------------------


def introspectionEnabled(broker: object) -> bool:
    """
    Whether C{broker} describes its objects to its peer: only a broker of a
    pbext factory whose C{introspection} option is true, or left to the
    policy and the policy is not C{strict}.

    @since: pbext NEXT
    """
    state = getattr(broker, "_pbextFactoryState", None)
    if state is None or getattr(broker, "isClient", True):
        # Only servers describe their objects.
        return False
    setting = state.options.get("introspection")
    if setting is None:
        return bool(state.policy.name != "strict")
    return bool(setting)


def answerDescribe(broker: Broker, target: object) -> Description:
    """
    Answer a pbext peer's C{describe} of C{target}, an object it holds a
    reference to (the broker resolved the reference it sent back).

    @raise IntrospectionRefused: if introspection is off for this
        connection, the peer is not pbext, or C{target} is not one of this
        side's objects.
    @since: pbext NEXT
    """
    from pbext.broker import PBEXT_DIALECT

    if not introspectionEnabled(broker):
        raise IntrospectionRefused(
            "this server does not describe its objects (introspection is off)"
        )
    if PBEXT_DIALECT not in broker._pbextPeerFeatures:
        raise IntrospectionRefused("introspection is for pbext peers only")
    if isinstance(target, pb.RemoteReference) or not isinstance(
        target, (flavors.Referenceable, flavors.ViewPoint, pb.AsReferenceable)
    ):
        raise IntrospectionRefused(
            "describe() takes a reference to one of the server's objects"
        )
    description = describeObject(target, broker._pbextPolicy.isMethodAllowed)
    _log.debug(
        "pbext: described {name} to {peer}",
        name=description["classes"][0]["name"],
        peer=broker._pbextPeerName(),
        pbextEvent="described",
    )
    return description


# -- the client side -----------------------------------------------------------


_REFUSED = b"pbext.introspect.IntrospectionRefused"


class IntrospectionUnavailable(Exception):
    """
    The peer is not pbext, so it cannot describe its objects.

    @since: pbext NEXT
    """


async def describeRemote(reference: pb.RemoteReference) -> Description:
    """
    Ask the peer that owns C{reference} to describe it.

    @raise IntrospectionUnavailable: if the peer is a stock PB peer.
    @raise IntrospectionRefused: if the peer refused, with its reason.
    @since: pbext NEXT
    """
    from pbext.broker import CONTROL_NAME, PBEXT_DIALECT

    broker = reference.broker
    if PBEXT_DIALECT not in getattr(broker, "_pbextPeerFeatures", ()):
        raise IntrospectionUnavailable(
            "the server is not pbext (a stock PB server cannot describe its "
            "objects); read its source, or generate stubs with --module"
        )
    control = broker.remoteForName(CONTROL_NAME)
    try:
        answer = await control.callRemote("describe", reference)
    except pb.RemoteError as e:
        if e.remoteType in (_REFUSED, _REFUSED.decode("ascii")):
            raise IntrospectionRefused(str(e)) from None
        raise
    return checkDescription(answer)


def checkDescription(answer: object) -> Description:
    """
    Check that C{answer} has the shape of a L{Description}, as read from
    a peer or a JSON file, and return it.

    @raise ValueError: if it does not.
    @since: pbext NEXT
    """
    if not isinstance(answer, dict) or answer.get("version") != DESCRIPTION_VERSION:
        raise ValueError("not a pbext description (or one of a newer pbext)")
    classes = answer.get("classes")
    if not isinstance(classes, list) or not classes:
        raise ValueError("a pbext description without classes")
    for cls in classes:
        if not isinstance(cls, dict) or not isinstance(cls.get("methods"), list):
            raise ValueError("a pbext description with a malformed class")
        for key in ("name", "flavor", "doc"):
            if not isinstance(cls.get(key), str):
                raise ValueError(f"a pbext description's class has no {key}")
        for method in cls["methods"]:
            if not isinstance(method, dict) or not isinstance(
                method.get("parameters"), list
            ):
                raise ValueError("a pbext description with a malformed method")
    return typing.cast(Description, answer)


# -- text ----------------------------------------------------------------------

_DOTTED = re.compile(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)")


def _short(annotation: str) -> str:
    return _DOTTED.sub(r"\1", annotation)


def _parameterText(parameter: dict[str, Any]) -> str:
    prefix = {"varargs": "*", "varkw": "**"}.get(parameter.get("kind", ""), "")
    text = f"{prefix}{parameter.get('name')}"
    annotation = parameter.get("annotation", _typenames.ANY)
    if annotation != _typenames.ANY:
        text += f": {_short(annotation)}"
    if "default" in parameter:
        text += f" = {parameter['default']}"
    return text


def signatureText(method: MethodDescription) -> str:
    """
    C{name(a: int, b: int = 1) -> int}, short names, for people.

    @since: pbext NEXT
    """
    parts: list[str] = []
    kinds = [p.get("kind") for p in method["parameters"]]
    for i, parameter in enumerate(method["parameters"]):
        kind = parameter.get("kind")
        if kind == "keyword" and "varargs" not in kinds[:i] and "*" not in parts:
            parts.append("*")
        parts.append(_parameterText(dict(parameter)))
        if kind == "positional" and (i + 1 == len(kinds) or kinds[i + 1] != kind):
            parts.append("/")
    return f"{method['name']}({', '.join(parts)}) -> {_short(method['returns'])}"


def formatText(description: Description) -> str:
    """
    A description as people read it: each class, then its methods with
    their signatures and first docstring lines.

    @since: pbext NEXT
    """
    lines: list[str] = []
    for cls in description["classes"]:
        if lines:
            lines.append("")
        lines.append(f"{cls['name']} ({cls['flavor']}_ methods)")
        if cls["doc"]:
            lines.append(f"  {cls['doc']}")
        if not cls["methods"]:
            lines.append("  (no remote methods)")
        for method in cls["methods"]:
            lines.append(f"  {signatureText(method)}")
            if method["doc"]:
                lines.append(f"      {method['doc']}")
        if cls.get("truncated"):
            lines.append(f"  ... more than {MAX_METHODS} methods; the rest left out")
    if description.get("truncated"):
        lines.append(f"... more than {MAX_CLASSES} classes; the rest left out")
    return "\n".join(lines)
