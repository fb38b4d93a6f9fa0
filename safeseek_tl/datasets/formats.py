"""Loaders for the standard safety data files users bring (none of them is bundled).

Each reads the source's own column names from a CSV file (or a JSON/JSONL file with the same
fields) and returns :class:`~safeseek_tl.datasets.requests.Request` records, except
:func:`load_alpaca`, which returns benign (prompt, response) records. A bad row raises
:class:`~safeseek_tl.errors.DataError` naming the file, the line and the field.

- AdvBench (Zou et al. 2023), ``harmful_behaviors.csv``: ``goal``, ``target``.
- HarmBench (Mazeika et al. 2024), behaviours CSV: ``Behavior``, ``FunctionalCategory``,
  ``SemanticCategory``, ``ContextString``, ``BehaviorID``. A contextual behaviour's prompt is its
  context, a ``---`` line and the behaviour, as HarmBench's own code writes it.
- JailbreakBench (Chao et al. 2024), behaviours CSV: ``Goal``, ``Target``, ``Behavior``,
  ``Category`` (and ``Index``).
- XSTest (Röttger et al. 2024), ``xstest_prompts.csv``: ``prompt``, ``type``, ``label``
  (``safe`` or ``unsafe``), ``id``.
- Alpaca (Taori et al. 2023), a JSON list of ``instruction``, ``input``, ``output``: the
  instruction and a non-empty input joined by a blank line are the prompt.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safeseek_tl.data import BenignRecord, load_records
from safeseek_tl.datasets.requests import Request, check_unique, text_field
from safeseek_tl.errors import DataError
from safeseek_tl.readers import read_items

UNCATEGORIZED = "uncategorized"
XSTEST_LABELS = {"safe": False, "unsafe": True}


def _rows(path: str | Path) -> Iterator[tuple[str, Any]]:
    """``(where, item)`` per record, ``where`` being ``FILE:LINE``."""
    path = Path(path)
    for line, item in read_items(path):
        yield f"{path}:{line}", item


def _checked(requests: list[Request], path: str | Path) -> list[Request]:
    if not requests:
        raise DataError(f"{path}: the file holds no requests")
    check_unique(requests, str(path), ("id",))  # a user's file is taken as it is: a repeated prompt stays
    return requests


def load_advbench(path: str | Path) -> list[Request]:
    """AdvBench's harmful behaviours: ``goal`` is the prompt, ``target`` its compliant opening."""
    requests = [
        Request(where, text_field(item, "goal", where), UNCATEGORIZED, True, target=text_field(item, "target", where, required=False) or None)
        for where, item in _rows(path)
    ]
    return _checked(requests, path)


def load_harmbench(path: str | Path) -> list[Request]:
    """HarmBench's behaviours, with their ``SemanticCategory`` (else ``FunctionalCategory``) as category."""
    requests = []
    for where, item in _rows(path):
        behavior = text_field(item, "Behavior", where)
        context = text_field(item, "ContextString", where, required=False)
        category = text_field(item, "SemanticCategory", where, required=False) or text_field(item, "FunctionalCategory", where, required=False)
        prompt = f"{context}\n\n---\n\n{behavior}" if context else behavior
        requests.append(Request(text_field(item, "BehaviorID", where, required=False) or where, prompt, category or UNCATEGORIZED, True))
    return _checked(requests, path)


def load_jailbreakbench(path: str | Path, harmful: bool = True) -> list[Request]:
    """JailbreakBench's behaviours: ``Goal`` is the prompt, ``Target`` its compliant opening.

    ``harmful=False`` reads its benign behaviours file, which has the same columns.
    """
    requests = []
    for where, item in _rows(path):
        text_field(item, "Behavior", where)  # the column that tells a JailbreakBench file from another CSV
        index = text_field(item, "Index", where, required=False)
        requests.append(
            Request(
                f"jbb-{index}" if index else where,
                text_field(item, "Goal", where),
                text_field(item, "Category", where),
                harmful,
                target=text_field(item, "Target", where, required=False) or None,
            )
        )
    return _checked(requests, path)


def load_xstest(path: str | Path) -> list[Request]:
    """XSTest's prompts: ``type`` is the category, ``label`` ``unsafe`` makes a request harmful."""
    requests = []
    for where, item in _rows(path):
        label = text_field(item, "label", where).lower()
        if label not in XSTEST_LABELS:
            raise DataError(f"{where}: field 'label' must be 'safe' or 'unsafe', got {label!r}")
        request_id = text_field(item, "id", where, required=False)
        requests.append(Request(f"xstest-{request_id}" if request_id else where, text_field(item, "prompt", where), text_field(item, "type", where), XSTEST_LABELS[label]))
    return _checked(requests, path)


def load_alpaca(path: str | Path) -> list[BenignRecord]:
    """Alpaca's instructions as benign records: prompt = instruction (+ blank line + input), response = output."""
    for where, item in _rows(path):
        for name in ("instruction", "output"):
            text_field(item, name, where)
    return load_records(path, "benign")
