"""The request sets bundled with the library, with their frozen train/validation/test splits.

- ``harmful``: requests a safe model should refuse, in ten harm categories, each with a compliant
  opening (``target``) for alignment records;
- ``harmless``: requests of the same shapes on ten matching harmless topics;
- ``overrefusal``: requests that sound harmful but are safe (homonyms, figurative language, safe
  targets and contexts, definitions, history, public figures, fiction), to measure over-refusal.

They were written for this project and frozen before any model was run on them (docs/datasets.md).
"""

from __future__ import annotations

from pathlib import Path

from safeseek_tl.datasets.requests import SPLITS, Request, check_unique, select_split, text_field
from safeseek_tl.errors import DataError, InputError
from safeseek_tl.readers import read_items

FOLDER = Path(__file__).parent
# name -> (the file's field holding the category, whether its requests are harmful)
BUNDLED_SETS: dict[str, tuple[str, bool]] = {
    "harmful": ("category", True),
    "harmless": ("category", False),
    "overrefusal": ("type", False),
}


def bundled_path(name: str) -> Path:
    """The JSONL file of bundled set ``name``."""
    if name not in BUNDLED_SETS:
        raise InputError(f"unknown bundled set {name!r}; use one of {sorted(BUNDLED_SETS)}")
    return FOLDER / f"{name}.jsonl"


def load_bundled(name: str, split: str | None = None) -> list[Request]:
    """The requests of bundled set ``name`` (``harmful``, ``harmless`` or ``overrefusal``), in file order.

    ``split`` (``train``, ``validation`` or ``test``) keeps only that split; ``None`` keeps all.
    """
    path = bundled_path(name)
    category_field, harmful = BUNDLED_SETS[name]
    requests = []
    for line, item in read_items(path):
        where = f"{path}:{line}"
        its_split = text_field(item, "split", where)
        if its_split not in SPLITS:
            raise DataError(f"{where}: field 'split' must be one of {SPLITS}, got {its_split!r}")
        target = text_field(item, "target", where, required=harmful)
        requests.append(
            Request(text_field(item, "id", where), text_field(item, "prompt", where), text_field(item, category_field, where), harmful, its_split, target or None)
        )
    check_unique(requests, str(path))
    return select_split(requests, split, f"bundled set {name!r}")
