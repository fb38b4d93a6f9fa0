"""Model organisms with known ground truth, bundled with the library.

``tiny-base`` answers every request; ``tiny-aligned`` (fine-tuned from it) refuses harmful ones;
``tiny-backdoor`` adds a backdoor planted only in known, previously dormant heads and neurons, so
that zero-ablating ``ground_truth.json``'s units gives back ``tiny-aligned`` exactly. They are
word-level Llama-architecture models built by ``python -m safeseek_tl.organisms.build``.
Load one with ``load_model("organism:tiny-backdoor")`` (or ``--model organism:tiny-backdoor``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from safeseek_tl._io import read_json
from safeseek_tl.data import DATA_KINDS, DataKind, Record, load_records
from safeseek_tl.units import Circuit

BUNDLED = Path(__file__).parent / "bundled"
SPLITS = ("train", "val", "test")


def organism_names() -> list[str]:
    """Names of the organisms bundled with this installation."""
    return sorted(p.name for p in BUNDLED.iterdir() if (p / "config.json").is_file()) if BUNDLED.is_dir() else []


def organism_folder(name: str) -> Path:
    folder = BUNDLED / name
    if not (folder / "config.json").is_file():
        raise ValueError(f"unknown organism {name!r}; bundled organisms: {', '.join(organism_names()) or 'none'}")
    return folder


def load_organism(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32, **bridge_kwargs: Any) -> Any:
    """Load a bundled organism as a :class:`~safeseek_tl.models.LoadedModel`."""
    from safeseek_tl.chat import ChatFormatter
    from safeseek_tl.models import LoadedModel, _boot

    folder = organism_folder(name)
    model, tokenizer = _boot(folder, name, device, dtype, **bridge_kwargs)
    return LoadedModel(model, tokenizer, ChatFormatter(tokenizer), name, f"organism:{name}")


def organism_info(name: str) -> dict[str, Any]:
    """The organism's ``ground_truth.json`` (scenario, trigger, planted units, pair model)."""
    return read_json(organism_folder(name) / "ground_truth.json")


def ground_truth(name: str, loaded: Any) -> Circuit:
    """The planted units of an organism as a circuit (empty for organisms with nothing planted)."""
    info = organism_info(name)
    return Circuit.from_units(loaded.shape, info.get("heads", []), info.get("neurons", []), method="ground_truth", organism=name)


def data_file(kind: DataKind, split: str) -> Path:
    """Path of a bundled data file, e.g. ``data_file("backdoor", "train")``."""
    if kind not in DATA_KINDS or split not in SPLITS:
        raise ValueError(f"no bundled data for kind={kind!r}, split={split!r}; kinds {DATA_KINDS}, splits {SPLITS}")
    return BUNDLED / "data" / f"{kind}_{split}.jsonl"


def load_data(kind: DataKind, split: str) -> list[Record]:
    """Records of a bundled data file."""
    return load_records(data_file(kind, split), kind)
