"""
Tests for L{pbext.stubs} (the protocols written) and
L{pbext.typedref} (the typed proxy), including mypy run over code that
uses generated stubs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from typing import Any

from twisted.python.filepath import FilePath
from twisted.spread import pb
from twisted.trial.unittest import SkipTest, SynchronousTestCase

import pbext
from pbext import PBClientFactory, PBServerFactory, introspect, stubs
from pbext.testing import connectedPair
from pbext.typedref import TypedReference, referenceOf

#: Seconds mypy may take over the small files below.
MYPY_TIMEOUT = 240


class Calculator(pb.Root):
    """
    Sums, and a counter.
    """

    def remote_add(self, a: int, b: int) -> int:
        """
        Add two numbers.
        """
        return a + b

    def remote_counter(self) -> Counter:
        return Counter()

    def remote_take(self, counter: Counter) -> bool:
        return isinstance(counter, Counter)


class Counter(pb.Referenceable):
    def remote_increment(self, by: int = 1) -> int:
        return by


def _stubText() -> str:
    return stubs.renderStubs(
        introspect.describeModule("tests.test_stubs:Calculator"), "tests"
    )


class RenderTests(SynchronousTestCase):
    """
    What L{stubs.renderStubs} writes.
    """

    def test_protocols(self) -> None:
        """
        Each remote class becomes a protocol whose methods return a
        Deferred of the result; a described remote class is its protocol
        as a whole result, and its protocol or a reference as an argument.
        """
        text = _stubText()
        compile(text, "stubs.py", "exec")
        self.assertIn("class Calculator(typing.Protocol):", text)
        self.assertIn("class Counter(typing.Protocol):", text)
        self.assertIn(
            "    def add(self, a: int, b: int) -> "
            "twisted.internet.defer.Deferred[int]:\n"
            "        'Add two numbers.'\n",
            text,
        )
        self.assertIn(
            "def counter(self) -> twisted.internet.defer.Deferred[Counter]:", text
        )
        self.assertIn(
            "def take(self, counter: Counter | twisted.spread.pb.RemoteReference)",
            text,
        )
        self.assertIn("def increment(self, by: int = ...)", text)

    def test_importsNothingAtRunTime(self) -> None:
        """
        The stubs import the modules their annotations name only for type
        checkers, so importing them runs none of the server's code.
        """
        namespace: dict[str, Any] = {}
        exec(compile(_stubText(), "stubs.py", "exec"), namespace)
        self.assertTrue(namespace["Calculator"]._is_protocol)
        self.assertNotIn("tests", namespace)

    def test_hostileDescription(self) -> None:
        """
        Names that are not identifiers and annotations that are not type
        expressions made of names never reach the stub's code: they are
        dropped or become C{typing.Any}, and texts become literals.
        """
        description: Any = {
            "version": 1,
            "truncated": False,
            "classes": [
                {
                    "name": "evil.Root",
                    "flavor": "remote",
                    "doc": "'''\nimport os; os.system('x')\n",
                    "modules": ["os; import sys", "evil"],
                    "truncated": False,
                    "methods": [
                        {
                            "name": "run",
                            "doc": '"""',
                            "returns": "__import__('os').system('x')",
                            "parameters": [
                                {
                                    "name": "a",
                                    "kind": "either",
                                    "annotation": "(lambda: 1)()",
                                }
                            ],
                        },
                        {
                            "name": "x(): pass\nimport os\ndef y",
                            "doc": "",
                            "returns": "int",
                            "parameters": [],
                        },
                        {
                            "name": "class",
                            "doc": "",
                            "returns": "int",
                            "parameters": [],
                        },
                    ],
                },
                {"name": "os.system('x')", "flavor": "remote", "methods": []},
            ],
        }
        text = stubs.renderStubs(description)
        compile(text, "stubs.py", "exec")
        self.assertIn(
            "def run(self, a: typing.Any) -> "
            "twisted.internet.defer.Deferred[typing.Any]:",
            text,
        )
        self.assertNotIn("__import__", text)
        self.assertNotIn("lambda", text)
        self.assertNotIn("import sys", text)
        self.assertNotIn("import os", text.replace("'", "").split("class Root")[0])
        self.assertIn("# Not callable as attributes (Python keywords): class", text)
        self.assertEqual(text.count("(typing.Protocol):"), 1)


class TypedReferenceTests(SynchronousTestCase):
    """
    L{pbext.typed}C{(reference, Protocol)} calls remote methods as
    attributes.
    """

    def test_calls(self) -> None:
        """
        An attribute call is a C{callRemote}; a reference in the result is
        a typed reference too, and a typed reference passed as an argument
        is sent as its reference.
        """
        conn = connectedPair(PBServerFactory(Calculator()), PBClientFactory())
        self.addCleanup(conn.disconnect)
        root: Any = pbext.typed(conn.rootObject(), object)
        self.assertIsInstance(root, TypedReference)
        self.assertEqual(conn.resultOf(root.add(2, b=3)), 5)
        counter = conn.resultOf(root.counter())
        self.assertIsInstance(counter, TypedReference)
        self.assertEqual(conn.resultOf(counter.increment(by=4)), 4)
        self.assertIs(conn.resultOf(root.take(counter)), True)
        self.assertIsInstance(referenceOf(counter), pb.RemoteReference)

    def test_privateNames(self) -> None:
        """
        Names starting with an underscore are not remote methods.
        """
        conn = connectedPair(PBServerFactory(Calculator()), PBClientFactory())
        self.addCleanup(conn.disconnect)
        root: Any = pbext.typed(conn.rootObject(), object)
        self.assertRaises(AttributeError, getattr, root, "_hidden")

    def test_notAReference(self) -> None:
        """
        Only a remote reference can be typed this way.
        """
        self.assertRaises(TypeError, pbext.typed, object(), object)
        self.assertRaises(TypeError, referenceOf, object())

    def test_decoratorUnchanged(self) -> None:
        """
        With one argument, L{pbext.typed} still marks a method or class for
        checked calls, returning it.
        """

        def remote_f(self: object) -> None:
            pass

        self.assertIs(pbext.typed(remote_f), remote_f)
        self.assertTrue(remote_f._pbextTyped)  # type: ignore[attr-defined]


_GOOD = """
    import pbext
    from twisted.spread import pb
    from app_stubs import Calculator


    async def use(reference: pb.RemoteReference) -> int:
        calc = pbext.typed(reference, Calculator)
        total: int = await calc.add(1, 2)
        counter = await calc.counter()
        await calc.take(counter)
        return total + await counter.increment(by=2)
"""

_BAD = """
    import pbext
    from twisted.spread import pb
    from app_stubs import Calculator


    async def use(reference: pb.RemoteReference) -> None:
        calc = pbext.typed(reference, Calculator)
        await calc.ad(1, 2)
        await calc.add(1, "2")
"""


class MypyTests(SynchronousTestCase):
    """
    mypy checks calls made through generated stubs.
    """

    def mypy(self, code: str) -> tuple[int, str]:
        if shutil.which("mypy", path=os.path.dirname(sys.executable)) is None:
            raise SkipTest("mypy (in the dev extra) is not installed")
        directory = FilePath(self.mktemp())
        directory.makedirs()
        directory.child("app_stubs.py").setContent(_stubText().encode("utf-8"))
        directory.child("client.py").setContent(textwrap.dedent(code).encode("utf-8"))
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "mypy",
                "--strict",
                "--no-incremental",
                "--cache-dir",
                os.devnull,
                "--config-file",
                "",
                "client.py",
            ],
            cwd=directory.path,
            env={**os.environ, "MYPYPATH": root},
            capture_output=True,
            text=True,
            timeout=MYPY_TIMEOUT,
        )
        return result.returncode, result.stdout + result.stderr

    def test_wrongCallsReported(self) -> None:
        """
        A wrong method name and a wrong argument type are reported by mypy
        on the lines that make them; a correct file passes.
        """
        code, output = self.mypy(_GOOD)
        self.assertEqual(code, 0, output)
        code, output = self.mypy(_BAD)
        self.assertEqual(code, 1, output)
        self.assertIn('client.py:9: error: "Calculator" has no attribute "ad"', output)
        self.assertIn(
            'client.py:10: error: Argument 2 to "add" of "Calculator" has '
            'incompatible type "str"; expected "int"',
            output,
        )
        self.assertEqual(output.count(": error:"), 2, output)
