"""
Tests that pbext's public signatures name real types (the architecture
issue's "types that help"): a public function or method whose annotations
mention C{Any} is either on the allow-list below, with the reason C{Any}
is the truth there, or a failure.  The list may only shrink: an entry that
no longer mentions C{Any} must leave it too.

Public means a module of pbext whose name does not start with an
underscore (and C{__init__}), a module-level function or a method of a
class whose names do not start with one (dunder methods count: they are
how the object is used), read with L{ast}, so nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

_PBEXT = Path(__file__).resolve().parent.parent / "pbext"

# Reasons shared by several entries.
_PASS_THROUGH = "keyword arguments passed on unchanged to another callable"
_ANY_DEFERRED = (
    "a Deferred of any result type: Deferred is invariant, so Deferred[object] "
    "would refuse a Deferred[int]; the coroutine type is "
    "twisted.internet.defer.ensureDeferred's own"
)
#: Every public signature still mentioning Any: its module and qualified
#: name, the annotations that do (parameter names, "*args", "**kwargs",
#: "return"), and why.
ALLOWED: dict[str, tuple[frozenset[str], str]] = {
    "certreactor.py:askForClientCertificates": (
        frozenset({"return"}),
        "a proxy standing for the given reactor with whatever interfaces it "
        "provides (every attribute but listenSSL is the reactor's), which "
        "no single type says",
    ),
    "client.py:PBClientFactory.__init__": (
        frozenset({"**pbextOptions"}),
        _PASS_THROUGH,
    ),
    "copyable.py:CopyableRegistry.registerCopier": (
        frozenset({"fromState"}),
        "each value of the state has been checked against its own field's "
        "type, which differs from field to field",
    ),
    "keepalive.py:KeepAlive.__init__": (
        frozenset({"sendPing"}),
        "sendPing returns " + _ANY_DEFERRED + "; the result is not used",
    ),
    "policylookup.py:loadPolicy": (
        frozenset({"return"}),
        "an ISecurityPolicy provider, but pbext.factorystate.policyFrom "
        "returns it as a SecurityPolicy; that module changes first",
    ),
    "server.py:PBServerFactory.__init__": (
        frozenset({"**pbextOptions"}),
        _PASS_THROUGH,
    ),
    "server.py:buildServerFactory": (frozenset({"**factoryOptions"}), _PASS_THROUGH),
    "streams.py:Stream.fromFile": (frozenset({"**options"}), _PASS_THROUGH),
    "streams.py:Stream.fromProducer": (frozenset({"**options"}), _PASS_THROUGH),
    "testing.py:PBConnection.resultOf": (frozenset({"deferred"}), _ANY_DEFERRED),
    "testing.py:PBConnection.failureOf": (frozenset({"deferred"}), _ANY_DEFERRED),
    "typecheck.py:typed": (
        frozenset({"target", "protocol", "return"}),
        "the implementation behind the two overloads, which are the "
        "signatures callers are checked against; it returns the proxy of "
        "the second as the protocol it follows",
    ),
    "typedref.py:TypedReference.__getattr__": (
        frozenset({"return"}),
        "the peer's answer, as pb.RemoteReference.callRemote gives it; the "
        "protocol given to pbext.typed types it for callers",
    ),
    "broker.py:Broker.ping": (
        frozenset({"return"}),
        "the peer's answer, which a stock peer chooses; Deferred is invariant, "
        "so Deferred[object] would refuse callers' Deferred[T]",
    ),
    "broker.py:Broker.registerPageProducer": (
        frozenset({"pager"}),
        "any object with Twisted's pager methods, as pb.Broker takes it",
    ),
    "broker.py:Broker.unserialize": (
        frozenset({"sexp", "perspective", "return"}),
        "whatever the peer sent, as pb.Broker.unserialize returns it",
    ),
    "factorystate.py:FactoryState.__init__": (
        frozenset({"brokerOptions", "options"}),
        "keyword options passed on to the broker and to login, each of its own type",
    ),
    "factorystate.py:BrokerFactoryMixin.pbextOptions": (
        frozenset({"return"}),
        "the login keyword options, each of its own type",
    ),
    "metrics.py:MeteredBroker.__init__": (
        frozenset({"*args", "**kwargs"}),
        "passed on to Broker.__init__ unchanged",
    ),
}


def _mentionsAny(annotation: ast.expr | None) -> bool:
    """
    Whether C{annotation} names C{Any} anywhere (C{Any}, C{typing.Any},
    C{Deferred[Any]}, or inside a string annotation).
    """
    if annotation is None:
        return False
    for node in ast.walk(annotation):
        if isinstance(node, ast.Name) and node.id == "Any":
            return True
        if isinstance(node, ast.Attribute) and node.attr == "Any":
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                inner = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                continue
            if _mentionsAny(inner):
                return True
    return False


def _anyParts(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """
    The parts of C{function}'s signature whose annotations mention C{Any}.
    """
    arguments = function.args
    parts = {
        argument.arg
        for argument in [
            *arguments.posonlyargs,
            *arguments.args,
            *arguments.kwonlyargs,
        ]
        if _mentionsAny(argument.annotation)
    }
    if arguments.vararg and _mentionsAny(arguments.vararg.annotation):
        parts.add("*" + arguments.vararg.arg)
    if arguments.kwarg and _mentionsAny(arguments.kwarg.annotation):
        parts.add("**" + arguments.kwarg.arg)
    if _mentionsAny(function.returns):
        parts.add("return")
    return parts


def _isPublic(name: str) -> bool:
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


def anyInSignatures(source: str) -> dict[str, frozenset[str]]:
    """
    The public functions and methods of the module C{source} whose
    annotations mention C{Any}, by qualified name, with the parts that do
    (the overloads and property accessors of one name are merged).
    """
    found: dict[str, set[str]] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _isPublic(node.name):
                    parts = _anyParts(node)
                    if parts:
                        found.setdefault(prefix + node.name, set()).update(parts)
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                visit(node.body, prefix + node.name + ".")

    visit(ast.parse(source).body, "")
    return {name: frozenset(parts) for name, parts in found.items()}


def publicSignaturesWithAny(directory: Path) -> dict[str, frozenset[str]]:
    """
    L{anyInSignatures} of every public module in C{directory}, keyed
    C{"module.py:Qualified.name"}.
    """
    found = {}
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_") and path.name != "__init__.py":
            continue
        for name, parts in anyInSignatures(path.read_text(encoding="utf-8")).items():
            found[f"{path.name}:{name}"] = parts
    return found


class PublicTypesTests(SynchronousTestCase):
    """
    pbext's public signatures mention C{Any} only where the allow-list says
    why.
    """

    def test_noNewAny(self) -> None:
        """
        Every public signature mentioning C{Any} is on L{ALLOWED}, with no
        more parts than the list names.
        """
        found = publicSignaturesWithAny(_PBEXT)
        unexplained = sorted(
            f"{name}: {sorted(parts - ALLOWED.get(name, (frozenset(), ''))[0])}"
            for name, parts in found.items()
            if not parts <= ALLOWED.get(name, (frozenset(), ""))[0]
        )
        self.assertEqual(
            unexplained,
            [],
            "give these the real type (object, a Twisted interface, a "
            "TypeVar, Callable[..., X], Deferred[T] ...), or, where Any is "
            "the truth, add them to ALLOWED in tests/test_publictypes.py "
            "with the reason",
        )

    def test_allowListShrinks(self) -> None:
        """
        Every entry of L{ALLOWED} still mentions C{Any} in each part it
        names, so the list keeps the count and can only go down.
        """
        found = publicSignaturesWithAny(_PBEXT)
        stale = sorted(
            f"{name}: {sorted(parts - found.get(name, frozenset()))}"
            for name, (parts, reason) in ALLOWED.items()
            if not parts <= found.get(name, frozenset())
        )
        self.assertEqual(
            stale,
            [],
            "these no longer mention Any: take them out of ALLOWED in "
            "tests/test_publictypes.py",
        )

    def test_reasons(self) -> None:
        """
        Each entry of L{ALLOWED} says why.
        """
        self.assertEqual(
            [name for name, (parts, reason) in ALLOWED.items() if not reason.strip()],
            [],
        )

    def test_exportsTyped(self) -> None:
        """
        Every name C{pbext} imports on first use is imported from the same
        module under C{TYPE_CHECKING}, so type checkers see its own type,
        never the C{object} its module C{__getattr__} is typed to return.
        """
        import pbext

        tree = ast.parse((_PBEXT / "__init__.py").read_text(encoding="utf-8"))
        typed = {
            alias.asname or alias.name: node.module
            for guard in tree.body
            if isinstance(guard, ast.If) and ast.unparse(guard.test) == "TYPE_CHECKING"
            for node in guard.body
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        self.assertEqual(typed, pbext._EXPORTS)

    def test_measure(self) -> None:
        """
        Module functions and methods of public classes count, dunder
        methods too, with the parts of the signature that mention C{Any}
        however it is spelt; private names and private classes do not.
        """
        source = (
            "from typing import Any\n"
            "import typing\n"
            "def f(a: Any, b: int, *c: Any, d: 'list[Any]', **e: Any) -> None: ...\n"
            "def g(a: object) -> typing.Any: ...\n"
            "def h(a: Deferred[Any]) -> int: ...\n"
            "def clean(a: object) -> 'Anything': ...\n"
            "def _private(a: Any) -> Any: ...\n"
            "class C:\n"
            "    def __init__(self, x: Any) -> None: ...\n"
            "    async def m(self) -> Any: ...\n"
            "    def _p(self, x: Any) -> None: ...\n"
            "    class Inner:\n"
            "        def n(self, y: Any) -> None: ...\n"
            "class _Hidden:\n"
            "    def m(self, x: Any) -> None: ...\n"
        )
        self.assertEqual(
            anyInSignatures(source),
            {
                "f": frozenset({"a", "*c", "d", "**e"}),
                "g": frozenset({"return"}),
                "h": frozenset({"a"}),
                "C.__init__": frozenset({"x"}),
                "C.m": frozenset({"return"}),
                "C.Inner.n": frozenset({"y"}),
            },
        )

    def test_privateModules(self) -> None:
        """
        Modules whose names start with an underscore are not public, but
        the package's C{__init__} is.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        for name in ("_private.py", "__init__.py", "public.py"):
            (directory / name).write_text(
                "from typing import Any\ndef f(a: Any) -> None: ...\n"
            )
        self.assertEqual(
            publicSignaturesWithAny(directory),
            {"__init__.py:f": frozenset({"a"}), "public.py:f": frozenset({"a"})},
        )
