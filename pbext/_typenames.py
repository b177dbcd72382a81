"""
Annotations spelt as Python type expressions with dotted names, for
L{pbext.introspect}'s descriptions and the stubs written from them.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from typing import Any, Callable, Literal, Union, get_args, get_origin

from twisted.internet.defer import Deferred

#: Longest text (an annotation, a docstring line) described.
MAX_TEXT = 240

_BUILTIN_NAMES = frozenset(
    {"int", "float", "complex", "str", "bytes", "bytearray", "bool", "object"}
    | {"list", "tuple", "dict", "set", "frozenset", "type", "memoryview"}
)

ANY = "typing.Any"


def clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class TypeNamer:
    """
    Spell annotations as Python type expressions with dotted names, noting
    the modules they name and the remote classes they mention.

    @ivar modules: the modules of the classes named so far.
    @ivar classes: the classes named so far for which C{isRemote} is true,
        in order.
    """

    def __init__(self, isRemote: Callable[[type], bool]) -> None:
        self.isRemote = isRemote
        self.modules: set[str] = set()
        self.classes: list[type] = []

    def name(self, annotation: object) -> str:
        """
        The type expression for C{annotation} (C{typing.Any} for whatever
        cannot be named).
        """
        text = self._name(annotation, 0)
        return text if len(text) <= MAX_TEXT else ANY

    def _className(self, cls: type) -> str:
        module = cls.__module__
        qualname = cls.__qualname__
        if module == "builtins":
            return qualname if qualname in _BUILTIN_NAMES else ANY
        if module == "__main__" or "<" in qualname:
            return ANY
        if cls not in self.classes and self.isRemote(cls):
            self.classes.append(cls)
        self.modules.add(module)
        return f"{module}.{qualname}"

    def _name(self, annotation: object, depth: int) -> str:
        if depth > 8:
            return ANY
        if annotation is None or annotation is type(None):
            return "None"
        if annotation is Any or annotation is inspect.Parameter.empty:
            return ANY
        origin = get_origin(annotation)
        args = get_args(annotation)
        if origin is typing.Annotated:
            return self._name(args[0], depth + 1)
        if origin is Union or origin is types.UnionType:
            return " | ".join(self._name(a, depth + 1) for a in args)
        if origin is Literal:
            if all(isinstance(a, (int, str, bytes, bool)) for a in args):
                self.modules.add("typing")
                return "typing.Literal[" + ", ".join(repr(a) for a in args) + "]"
            return ANY
        if origin is collections.abc.Callable and len(args) == 2:
            params, result = args
            inner = (
                "..."
                if params is Ellipsis
                else "[" + ", ".join(self._name(a, depth + 1) for a in params) + "]"
            )
            self.modules.add("collections.abc")
            return f"collections.abc.Callable[{inner}, {self._name(result, depth + 1)}]"
        if origin is not None:
            if not isinstance(origin, type):
                return ANY
            base = self._className(origin)
            if base == ANY or not args:
                return base
            parts = ["..." if a is Ellipsis else self._name(a, depth + 1) for a in args]
            return f"{base}[{', '.join(parts)}]"
        if isinstance(annotation, type):
            return self._className(annotation)
        return ANY


def awaited(annotation: object) -> object:
    """
    What a caller receives for a method annotated to return C{annotation}.
    """
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in (Deferred, collections.abc.Awaitable) and len(args) == 1:
        return args[0]
    if origin is collections.abc.Coroutine and len(args) == 3:
        return args[2]
    if annotation is Deferred:
        return Any
    return annotation
