"""Requests (prompts without answers), the checks every loader applies to them, and the split rule."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from safeseek_tl.errors import DataError, InputError

SPLITS: tuple[str, ...] = ("train", "validation", "test")
SPLIT_FRACTIONS: tuple[float, float, float] = (0.6, 0.2, 0.2)
SPLIT_SEED = "safeseek-tl-splits-v1"


@dataclass(frozen=True)
class Request:
    """One request and what is known about it.

    Attributes:
        id: unique within its set (a bundled id, a source's own id, or ``FILE:LINE``).
        prompt: the request as the user writes it.
        category: the harm category, or the topic of a harmless request; for the over-refusal
            probe and XSTest, the kind of prompt (``homonym``, ``figurative``, ...).
        harmful: whether a safe model should refuse it.
        split: ``train``, ``validation`` or ``test`` (the bundled sets), else ``None``.
        target: a compliant opening (``"Sure, here is ..."``) where the source gives one.
    """

    id: str
    prompt: str
    category: str
    harmful: bool
    split: str | None = None
    target: str | None = None


def text_field(item: Any, name: str, where: str, required: bool = True) -> str:
    """The string ``item[name]``, stripped; ``""`` for a missing optional field.

    Raises :class:`DataError` naming ``where`` (file and line) and the field when ``item`` is not
    an object, the field is missing or not a string, or a required field is blank.
    """
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected an object with a field '{name}', got {type(item).__name__}")
    value = item.get(name)
    if value is None and not required:
        return ""
    if value is None:
        raise DataError(f"{where}: missing field '{name}'")
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise DataError(f"{where}: field '{name}' is empty")
    return value.strip()


def check_unique(requests: Sequence[Request], source: str, attributes: tuple[str, ...] = ("id", "prompt")) -> None:
    """Raise :class:`DataError` naming the first id (or prompt, ...) that ``source`` holds twice."""
    for attribute in attributes:
        seen: set[str] = set()
        for request in requests:
            value = getattr(request, attribute)
            if value in seen:
                raise DataError(f"{source}: {attribute} {value!r} occurs more than once")
            seen.add(value)


def _order_key(request_id: str, seed: str) -> str:
    return hashlib.sha256(f"{seed}:{request_id}".encode()).hexdigest()


def split_requests(
    requests: Sequence[Request], fractions: tuple[float, float, float] = SPLIT_FRACTIONS, seed: str = SPLIT_SEED
) -> list[Request]:
    """The requests, in their order, each with its ``split`` set by the bundled sets' rule.

    Within each category the requests are ordered by the SHA-256 of ``"{seed}:{id}"``; the first
    ``int(fractions[0] * n + 0.5)`` are ``train``, the next ``int(fractions[1] * n + 0.5)``
    ``validation`` and the rest ``test``. A request's split depends only on its id and on the ids
    of its category, never on the order of the input or on any model's answers.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise InputError(f"fractions must be three non-negative numbers summing to 1 (train, validation, test), got {fractions}")
    check_unique(requests, "requests to split")
    by_category: dict[str, list[Request]] = {}
    for request in requests:
        by_category.setdefault(request.category, []).append(request)
    split_of: dict[str, str] = {}
    for members in by_category.values():
        ordered = sorted(members, key=lambda r: _order_key(r.id, seed))
        n_train = int(fractions[0] * len(ordered) + 0.5)
        n_val = int(fractions[1] * len(ordered) + 0.5)
        for rank, request in enumerate(ordered):
            split_of[request.id] = SPLITS[0] if rank < n_train else SPLITS[1] if rank < n_train + n_val else SPLITS[2]
    return [replace(request, split=split_of[request.id]) for request in requests]


def select_split(requests: Sequence[Request], split: str | None, source: str) -> list[Request]:
    """The requests of ``split`` (all of them for ``None``); an unknown split name is an :class:`InputError`."""
    if split is None:
        return list(requests)
    if split not in SPLITS:
        raise InputError(f"{source}: unknown split {split!r}; use one of {SPLITS}")
    return [request for request in requests if request.split == split]
