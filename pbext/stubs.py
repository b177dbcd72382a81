"""
Write typed client stubs: one C{typing.Protocol} per remote class of a
L{pbext.introspect.Description}.

Each remote method becomes a method of the protocol named as callers name
it, returning a C{Deferred} of its result (which C{await} unwraps)::

    class Calculator(typing.Protocol):
        def add(self, a: int, b: int) -> twisted.internet.defer.Deferred[int]:
            ...

Used with L{pbext.typed}C{(reference, Calculator)}, mypy reports a call to
a method the class lacks and an argument of the wrong type.

How annotations are written:

 - a class is named by its dotted name, its module imported under
   C{typing.TYPE_CHECKING} (so importing the stubs imports nothing of the
   server's; mypy needs the module, as any annotation would);
 - a class that cannot be named (defined in a function, or in
   C{__main__}), an annotation given as a string that does not resolve,
   or anything else the describer cannot spell is C{typing.Any};
 - a remote class described too is its protocol when it is a method's
   whole result (L{pbext.typedref.TypedReference} wraps the reference that
   arrives) or argument (a proxy or a plain reference may be passed), and
   C{twisted.spread.pb.RemoteReference} inside another type;
 - a method name that is a Python keyword cannot be a protocol method, and
   is listed in a comment.

The description may come from a server: nothing in it is written into the
stubs unless it is a Python name, a dotted name or a type expression made
of those (checked with L{ast}), and texts become string literals.

@since: pbext NEXT
"""

from __future__ import annotations

import ast
import keyword
import re

from pbext.introspect import ClassDescription, Description, MethodDescription

__all__ = ["renderStubs"]

_ANY = "typing.Any"
_REFERENCE = "twisted.spread.pb.RemoteReference"
_DEFERRED = "twisted.internet.defer.Deferred"

#: The names the stub module itself uses at its top level.
_RESERVED = frozenset({"typing", "twisted", "annotations"})

_SAFE_NODES = (
    ast.Expression,
    ast.Name,
    ast.Attribute,
    ast.Subscript,
    ast.Tuple,
    ast.List,
    ast.BinOp,
    ast.BitOr,
    ast.Load,
    ast.Constant,
)


def _isDotted(name: object) -> bool:
    return (
        isinstance(name, str)
        and bool(name)
        and all(p.isidentifier() and not keyword.iskeyword(p) for p in name.split("."))
    )


def _isName(name: object) -> bool:
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)


def _safeExpression(text: object) -> str:
    """
    C{text} if it is a type expression made only of names, attributes,
    subscripts, C{|}, lists and constants; else C{typing.Any}.
    """
    if not isinstance(text, str) or len(text) > 1000:
        return _ANY
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return _ANY
    for node in ast.walk(tree):
        if not isinstance(node, _SAFE_NODES):
            return _ANY
        if isinstance(node, ast.Constant) and not isinstance(
            node.value, (str, bytes, int, bool, type(None), type(Ellipsis))
        ):
            return _ANY
    return text


def _docLiteral(text: object, indent: str) -> list[str]:
    if not isinstance(text, str) or not text:
        return []
    return [f"{indent}{text!r}"]


class _Writer:
    """
    Turns one description into the stub module's text.
    """

    def __init__(self, description: Description) -> None:
        self.classes = [
            c
            for c in description["classes"]
            if isinstance(c, dict) and _isDotted(c.get("name"))
        ]
        self.protocolNames: dict[str, str] = {}
        used: set[str] = set(_RESERVED)
        for cls in self.classes:
            base = cls["name"].rsplit(".", 1)[-1]
            name, n = base, 2
            while name in used:
                name, n = f"{base}{n}", n + 1
            used.add(name)
            self.protocolNames[cls["name"]] = name
        self.modules: set[str] = set()
        for cls in self.classes:
            self.modules.update(m for m in cls.get("modules", []) if _isDotted(m))
        self.texts: list[str] = []

    def _inner(self, text: str) -> str:
        """
        C{text} with each described remote class replaced by
        C{RemoteReference}.
        """
        for name in self.protocolNames:
            text = re.sub(rf"(?<![\w.]){re.escape(name)}(?![\w.])", _REFERENCE, text)
        return text

    def annotation(self, text: object, argument: bool) -> str:
        safe = _safeExpression(text)
        protocol = self.protocolNames.get(safe)
        if protocol is not None:
            result = f"{protocol} | {_REFERENCE}" if argument else protocol
        else:
            result = self._inner(safe)
        self.texts.append(result)
        return result

    def parameters(self, method: MethodDescription) -> str:
        parts = ["self"]
        slash = star = False
        seen: set[str] = {"self"}
        for parameter in method["parameters"]:
            name = parameter.get("name") if isinstance(parameter, dict) else None
            if not _isName(name) or name in seen:
                return "self, *args: typing.Any, **kwargs: typing.Any"
            assert isinstance(name, str)
            seen.add(name)
            kind = parameter.get("kind")
            if (
                kind != "positional"
                and slash is False
                and any(p.get("kind") == "positional" for p in method["parameters"])
            ):
                parts.append("/")
                slash = True
            annotation = self.annotation(parameter.get("annotation"), True)
            if kind == "varargs":
                parts.append(f"*{name}: {annotation}")
                star = True
                continue
            if kind == "varkw":
                parts.append(f"**{name}: {annotation}")
                continue
            if kind == "keyword" and not star:
                parts.append("*")
                star = True
            default = " = ..." if "default" in parameter else ""
            parts.append(f"{name}: {annotation}{default}")
        if not slash and any(
            p.get("kind") == "positional" for p in method["parameters"]
        ):
            parts.append("/")
        return ", ".join(parts)

    def method(self, method: MethodDescription) -> list[str]:
        result = self.annotation(method.get("returns"), False)
        lines = [
            f"    def {method['name']}({self.parameters(method)}) -> "
            f"{_DEFERRED}[{result}]:",
        ]
        doc = _docLiteral(method.get("doc"), "        ")
        return lines + (doc or ["        ..."])

    def protocol(self, cls: ClassDescription) -> list[str]:
        name = self.protocolNames[cls["name"]]
        flavor = cls.get("flavor")
        about = f"{cls['name']}, {flavor}_ methods" if _isName(flavor) else cls["name"]
        lines = [f"class {name}(typing.Protocol):"]
        doc = cls.get("doc") or ""
        lines += _docLiteral(f"{doc} ({about})".strip(), "    ")
        skipped: list[str] = []
        for method in cls["methods"]:
            name = method.get("name") if isinstance(method, dict) else None
            if not isinstance(name, str) or not name.isidentifier():
                continue
            if keyword.iskeyword(name) or name.startswith("_"):
                skipped.append(name)
                continue
            lines.append("")
            lines += self.method(method)
        if skipped:
            lines.append("")
            lines.append(
                "    # Not callable as attributes (Python keywords): "
                + ", ".join(skipped)
                + "; use callRemote."
            )
        return lines

    def imports(self) -> list[str]:
        allText = "\n".join(self.texts)
        wanted = sorted(
            m
            for m in self.modules
            if m not in ("typing", "builtins")
            and re.search(rf"(?<![\w.]){re.escape(m)}\.", allText)
        )
        lines = ["import typing", "", "if typing.TYPE_CHECKING:"]
        lines += ["    import twisted.internet.defer", "    import twisted.spread.pb"]
        lines += [
            f"    import {m}"
            for m in wanted
            if m not in ("twisted.internet.defer", "twisted.spread.pb")
        ]
        return lines


def renderStubs(description: Description, source: str = "") -> str:
    """
    The text of a Python module holding a C{typing.Protocol} for each class
    of C{description}.

    @param source: where the description came from (an endpoint, a module),
        for the module's docstring.
    @since: pbext NEXT
    """
    writer = _Writer(description)
    body: list[str] = []
    for cls in writer.classes:
        body += ["", ""] + writer.protocol(cls)
    origin = f" of {source}" if source else ""
    origin = origin.replace("\\", "/").replace('"', "'")
    header = [
        '"""',
        f"Typed stubs for the remote objects{origin}.",
        "",
        "Written by `python -m pbext stubs`; use a protocol with pbext.typed:",
        "",
        f"    root = pbext.typed(reference, {_firstProtocol(writer)})",
        "    result = await root.method(...)",
        '"""',
        "",
        "from __future__ import annotations",
        "",
    ]
    names = sorted(writer.protocolNames.values())
    footer = ["", "", f"__all__ = {names!r}"]
    return "\n".join(header + writer.imports() + body + footer) + "\n"


def _firstProtocol(writer: _Writer) -> str:
    if not writer.classes:
        return "Protocol"
    return writer.protocolNames[writer.classes[0]["name"]]
