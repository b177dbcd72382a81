"""
Tests that pbext's modules import each other as docs/architecture.rst says
(its "Import arrows" table), so the arrows stay pointed the right way and
the page stays true.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

_ROOT = Path(__file__).resolve().parent.parent
_PBEXT = _ROOT / "pbext"
_ARCHITECTURE = _ROOT / "docs" / "architecture.rst"

#: One line of the table: a module, an arrow, the modules it imports.
_ARROW = re.compile(r"^    ([A-Za-z_][A-Za-z0-9_]*)\s+->(.*)$")


def documentedArrows(text: str) -> dict[str, set[str]]:
    """
    The table of the "Import arrows" section of C{text}: each module (by
    its name inside pbext, C{pbext} for the package) and what it may
    import.
    """
    section = text.split("\nImport arrows\n", 1)[1].split("\n---", 1)[0]
    arrows: dict[str, set[str]] = {}
    for line in section.splitlines():
        match = _ARROW.match(line)
        if match:
            names = {n.strip() for n in match.group(2).split(",") if n.strip()}
            arrows[match.group(1)] = names
    return arrows


def _typeCheckingNodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for inner in ast.walk(node))
    return skipped


def _module(dotted: str, directory: Path) -> str | None:
    """
    The pbext module C{dotted} names (C{"pbext"} for the package), or
    L{None} if it is not pbext's.
    """
    if dotted == "pbext":
        return "pbext"
    if not dotted.startswith("pbext."):
        return None
    name = dotted.split(".")[1]
    return name if (directory / f"{name}.py").exists() else "pbext"


def actualArrows(directory: Path) -> dict[str, set[str]]:
    """
    What each module of the pbext package in C{directory} imports of the
    package, at the top or inside functions, but not under
    C{TYPE_CHECKING}.
    """
    arrows: dict[str, set[str]] = {}
    for path in sorted(directory.glob("*.py")):
        name = "pbext" if path.stem == "__init__" else path.stem
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _typeCheckingNodes(tree)
        imported: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [_module(alias.name, directory) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "pbext":
                    targets = [
                        _module(f"pbext.{alias.name}", directory)
                        if (directory / f"{alias.name}.py").exists()
                        else "pbext"
                        for alias in node.names
                    ]
                else:
                    targets = [_module(node.module, directory)]
            imported.update(t for t in targets if t is not None and t != name)
        arrows[name] = imported
    return arrows


def differences(
    documented: dict[str, set[str]], actual: dict[str, set[str]]
) -> list[str]:
    """
    How the table and the code differ, one line a module, each saying the
    line the table should have.
    """
    problems = []
    for name in sorted(set(documented) | set(actual)):
        if name not in actual:
            problems.append(f"{name}: in the table, but pbext has no such module")
            continue
        expected = ", ".join(sorted(actual[name], key=str.lower))
        line = f"{name:<16} -> {expected}".rstrip()
        if name not in documented:
            problems.append(f"{name}: not in the table; add: {line}")
        elif documented[name] != actual[name]:
            problems.append(f"{name}: the table says otherwise; make it: {line}")
    return problems


class ImportArrowTests(SynchronousTestCase):
    """
    The "Import arrows" table of docs/architecture.rst is the code's.
    """

    def test_tableMatchesCode(self) -> None:
        """
        Every pbext module imports exactly the modules its line of the
        table lists, and every module has a line.
        """
        documented = documentedArrows(_ARCHITECTURE.read_text(encoding="utf-8"))
        problems = differences(documented, actualArrows(_PBEXT))
        self.assertEqual(
            problems,
            [],
            "docs/architecture.rst's import arrows and pbext's imports differ:\n"
            + "\n".join(problems),
        )

    def test_rightWay(self) -> None:
        """
        The arrows the architecture forbids are absent: the server imports
        neither the demo nor the command line, and the accelerator's loader
        imports nothing of pbext (not even the package, whose namespace
        loads the broker on first use).
        """
        actual = actualArrows(_PBEXT)
        self.assertNotIn("demo", actual["server"])
        self.assertNotIn("tap", actual["server"])
        self.assertEqual(actual["_accelerator"], set())

    def test_findsArrows(self) -> None:
        """
        The scan counts imports at the top and inside functions, names
        the package for its own public names, and skips imports made only
        for type checking.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "__init__.py").write_text("")
        (directory / "low.py").write_text("")
        (directory / "high.py").write_text(
            "from typing import TYPE_CHECKING\n"
            "from pbext.low import thing\n"
            "if TYPE_CHECKING:\n"
            "    from pbext import other\n"
            "def f():\n"
            "    from pbext import __version__\n"
        )
        (directory / "other.py").write_text("import pbext.high\n")
        self.assertEqual(
            actualArrows(directory),
            {
                "pbext": set(),
                "high": {"low", "pbext"},
                "low": set(),
                "other": {"high"},
            },
        )
        self.assertEqual(
            differences({"high": {"low"}, "gone": set()}, actualArrows(directory)),
            [
                "gone: in the table, but pbext has no such module",
                "high: the table says otherwise; make it: "
                "high             -> low, pbext",
                "low: not in the table; add: low              ->",
                "other: not in the table; add: other            -> high",
                "pbext: not in the table; add: pbext            ->",
            ],
        )
