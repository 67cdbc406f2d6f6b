"""Does a value fit a declared type? One small checker for every place that takes typed fields
from outside: IR ops read from ``ir.json`` (``serialize.load``) and pass options given as
objects in the Python API (``passes.registry.option_problems``).

The types are those the dataclass fields declare (``typing.get_type_hints``): ``bool``,
``int``, ``float``, ``str``, ``numpy.ndarray``, ``tuple[int, int]``, ``tuple[int, ...]``,
``Literal[...]``, unions with ``None``, and classes (``Neuron``, ...). ``bool`` is not an
``int`` here (``stride=True`` is a mistake, not 1) and an ``int`` is a ``float``. A type the
checker does not know accepts everything (a user's pass may declare anything).
"""

from __future__ import annotations

import numbers
import types
import typing
from typing import Any

import numpy as np


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(hint)
    return None


def conforms(value: Any, hint: Any) -> bool:
    """``value`` is of the declared type ``hint``."""
    if hint is Any:
        return True
    if (args := _union_args(hint)) is not None:
        return any(conforms(value, a) for a in args)
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))
    if origin is tuple:
        return _tuple_conforms(value, typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if origin is not None:
        return isinstance(value, origin) if isinstance(origin, type) else True
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _tuple_conforms(value: Any, args: tuple[Any, ...]) -> bool:
    if not isinstance(value, tuple):
        return False
    if len(args) == 2 and args[1] is Ellipsis:
        return all(conforms(v, args[0]) for v in value)
    if not args:
        return True
    return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args))


def expected(hint: Any) -> str:
    """``hint`` in words: "an int", "one of max, p99", "a tuple of 2 ints", "a bool or None"."""
    if (args := _union_args(hint)) is not None:
        return " or ".join(expected(a) for a in args)
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {_plural(args[0])}"
        return f"a tuple of {len(args)} {_plural(args[0]) if args else 'values'}"
    if hint is type(None):
        return "None"
    if hint is np.ndarray:
        return "an array"
    name = getattr(hint, "__name__", str(hint))
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _plural(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint)) + "s"


def field_hints(cls: type) -> dict[str, Any]:
    """The resolved type of each field of dataclass ``cls`` ({} where they cannot be
    resolved: nothing is then checked)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - a user's class with unresolvable annotations
        return {}
