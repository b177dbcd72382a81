"""
Tests that pbext's classes and functions stay small enough to read: no
class over L{CLASS_LIMIT} lines of code and no function over
L{FUNCTION_LIMIT}, docstrings not counted (docs/architecture.rst, and the
architecture issue's done-when).
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

_PBEXT = Path(__file__).resolve().parent.parent / "pbext"

#: The most lines of code a class may have.
CLASS_LIMIT = 400

#: The most lines of code a function or method may have.
FUNCTION_LIMIT = 60

#: Modules not measured at all.
ALLOWED_MODULES: frozenset[str] = frozenset()

#: Definitions allowed over their limit, as C{"module.py:Qualified.name"}.
#: Each is a hot loop inlined on purpose: one function call per token or
#: per value costs more than its length.
ALLOWED = frozenset(
    {
        # The pure-Python banana parser, one branch per token kind in one
        # loop (the spec of the C parser; splitting it per kind slows the
        # pure-Python mode by a call per token).
        "_pydecoder.py:PythonDecoder._parse",
        # The pure-Python banana encoder's loop over values, inlined for
        # the same reason.
        "_pyencoder.py:encodeParts",
    }
)


def codeLines(node: ast.AST) -> int:
    """
    How many lines of code C{node} spans, leaving out its docstring.
    """
    assert isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
    assert node.end_lineno is not None
    count = node.end_lineno - node.lineno + 1
    first = node.body[0] if node.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
        and first.end_lineno is not None
    ):
        count -= first.end_lineno - first.lineno + 1
    return count


def oversized(source: str, module: str) -> list[tuple[str, int, int]]:
    """
    The definitions in C{source} over their limit: for each, its name
    C{"module:Qualified.name"}, its length and its limit.
    """
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                limit = (
                    CLASS_LIMIT if isinstance(child, ast.ClassDef) else FUNCTION_LIMIT
                )
                length = codeLines(child)
                if length > limit:
                    found.append((f"{module}:{name}", length, limit))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


class SizeTests(SynchronousTestCase):
    """
    pbext's classes and functions are within their limits.
    """

    def test_withinLimits(self) -> None:
        """
        Every class and function of every pbext module, outside the
        allow-lists, is within its limit; the message names each one over
        it with its length.
        """
        problems = []
        for path in sorted(_PBEXT.glob("*.py")):
            if path.name in ALLOWED_MODULES:
                continue
            for name, length, limit in oversized(
                path.read_text(encoding="utf-8"), path.name
            ):
                if name not in ALLOWED:
                    problems.append(f"{name}: {length} lines (limit {limit})")
        self.assertEqual(
            problems,
            [],
            "split these by concern (tests/test_sizes.py):\n" + "\n".join(problems),
        )

    def test_allowListCurrent(self) -> None:
        """
        Each allowed definition still exists and is still over its limit,
        so an entry left behind after a split cannot hide a new one.
        """
        seen = set()
        for path in sorted(_PBEXT.glob("*.py")):
            for name, _, _ in oversized(path.read_text(encoding="utf-8"), path.name):
                seen.add(name)
        self.assertEqual(sorted(ALLOWED - seen), [])
        for module in ALLOWED_MODULES:
            self.assertTrue((_PBEXT / module).exists(), module)

    def test_measures(self) -> None:
        """
        The measure counts a definition's lines without its docstring,
        names methods and nested functions by their qualified name, and
        reports classes over the class limit and functions over the
        function limit.
        """
        body = "".join(f"    x{i} = {i}\n" for i in range(FUNCTION_LIMIT))
        source = (
            "class C:\n"
            '    """\n    Doc.\n    """\n'
            "    def short(self):\n"
            '        """\n        Doc.\n        """\n'
            + "".join(f"        x{i} = {i}\n" for i in range(FUNCTION_LIMIT - 1))
            + "    def long(self):\n"
            + "".join(f"        x{i} = {i}\n" for i in range(FUNCTION_LIMIT))
            + "def f():\n"
            + body
            + "def g():\n"
            + "    def inner():\n"
            + "".join(f"        x{i} = {i}\n" for i in range(FUNCTION_LIMIT))
        )
        self.assertEqual(
            oversized(source, "m.py"),
            [
                ("m.py:C.long", FUNCTION_LIMIT + 1, FUNCTION_LIMIT),
                ("m.py:f", FUNCTION_LIMIT + 1, FUNCTION_LIMIT),
                ("m.py:g", FUNCTION_LIMIT + 2, FUNCTION_LIMIT),
                ("m.py:g.inner", FUNCTION_LIMIT + 1, FUNCTION_LIMIT),
            ],
        )
        big = "class B:\n" + "".join(f"    x{i} = {i}\n" for i in range(CLASS_LIMIT))
        self.assertEqual(
            oversized(big, "m.py"), [("m.py:B", CLASS_LIMIT + 1, CLASS_LIMIT)]
        )
