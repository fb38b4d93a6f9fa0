"""The type checker the test run applies to every function of ``safeseek_tl``: jaxtyping shapes only.

``tests/conftest.py`` installs jaxtyping's import hook, which wraps each function (and each
dataclass's ``__init__``) of the package in ``jaxtyped(typechecker=shapes_only)``. A call then has
its ``Float/Int/Bool[Tensor, "..."]`` annotations checked by beartype, also inside ``Optional``,
unions and containers, with each dimension name bound to one size across the call's parameters
and return value. Every other annotation is left unchecked: many tests pass stand-ins (a
``SimpleNamespace``) for a ``LoadedModel`` or a tokenizer, which a full check would reject.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, get_args

from beartype import beartype
from jaxtyping import AbstractArray

F = TypeVar("F", bound=Callable[..., Any])


def names_a_shape(hint: Any) -> bool:
    """Whether ``hint`` is, or holds, a jaxtyping array annotation."""
    if isinstance(hint, type) and issubclass(hint, AbstractArray):
        return True
    return any(names_a_shape(arg) for arg in get_args(hint))


def shapes_only(fn: F) -> F:
    """beartype on ``fn``'s shape annotations (the others become ``Any``); ``fn`` itself when it has none."""
    hints = {name: hint if names_a_shape(hint) else Any for name, hint in fn.__annotations__.items()}
    if all(hint is Any for hint in hints.values()):
        return fn
    fn.__annotations__ = hints
    return beartype(fn)
