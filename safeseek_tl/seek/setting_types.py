"""Whether a setting's value fits its field's type hint, and how to name that type in an error
(:class:`~safeseek_tl.seek.config.SeekConfig`'s groups check every value they are given)."""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin


def accepts(hint: Any, value: Any) -> bool:
    """Whether ``value`` fits the type ``hint`` (an int fits a float; a bool is no number)."""
    origin = get_origin(hint)
    if origin is Literal:
        return any(type(value) is type(choice) and value == choice for choice in get_args(hint))
    if origin in (Union, types.UnionType):
        return any(accepts(arg, value) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if hint in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if hint is float else hint)


def describe(hint: Any) -> str:
    """How a setting of type ``hint`` is described in an error message (``one of 'zero', 'mean'``, ``a number or none``)."""
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(arg) for arg in get_args(hint))
    names = {type(None): "none", float: "a number", int: "a whole number", bool: "true or false", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))
