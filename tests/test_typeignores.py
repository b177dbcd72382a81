"""
Tests that every C{type: ignore} in pbext says why (the architecture
issue's "types that help"): a comment after it on the same line, or a
comment line just above it.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

_PBEXT = Path(__file__).resolve().parent.parent / "pbext"

_IGNORE = re.compile(r"#\s*type:\s*ignore(\[[^\]]*\])?")


def unexplained(source: str) -> list[int]:
    """
    The lines of C{source} whose C{type: ignore} comment gives no reason.
    """
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string
    lines = source.splitlines()
    found = []
    for number, comment in sorted(comments.items()):
        match = _IGNORE.match(comment)
        if match is None:
            continue
        rest = comment[match.end() :].strip().lstrip("#").strip()
        above = lines[number - 2].strip() if number > 1 else ""
        if not rest and not (above.startswith("#") and "type: ignore" not in above):
            found.append(number)
    return found


class TypeIgnoreTests(SynchronousTestCase):
    """
    pbext's C{type: ignore} comments carry their reasons.
    """

    def test_everyIgnoreExplained(self) -> None:
        """
        No C{type: ignore} in pbext is without a reason; the message names
        each one by file and line.
        """
        problems = [
            f"pbext/{path.name}:{line}"
            for path in sorted(_PBEXT.glob("*.py"))
            for line in unexplained(path.read_text(encoding="utf-8"))
        ]
        self.assertEqual(problems, [], "say why after each of these")

    def test_measure(self) -> None:
        """
        A reason after the ignore or in the comment line above counts; a
        bare ignore does not.
        """
        source = (
            "a = 1  # type: ignore[misc]  # because\n"
            "# The ignore below: because.\n"
            "b = 2  # type: ignore[misc]\n"
            "c = 3  # type: ignore[misc]\n"
            "d = 4  # type: ignore\n"
        )
        self.assertEqual(unexplained(source), [4, 5])
