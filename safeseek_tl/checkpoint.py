"""Checkpoints of resumable training runs: SafeSeek's masks and circuit tuning save theirs one way.

A checkpoint is one safetensors file, written atomically (an interrupt while saving leaves the
previous checkpoint whole) and read without unpickling. Besides the run's own tensors and header
entries it holds what every run needs to continue bit for bit: the optimizer's state (tensors
``opt.{i}.{name}`` for its parameter ``i``, the parameter groups as JSON) and the state of the
run's random generator (tensor ``rng``). The header also records the run's settings and the
model's shape: :func:`read_checkpoint` refuses a checkpoint made with other settings or for a model
of another shape, which would not continue the same run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from safeseek_tl._io import read_safetensors, write_safetensors
from safeseek_tl.errors import InputError
from safeseek_tl.units import ModelShape

CHECKPOINT_FILE = "checkpoint.safetensors"
"""The file name of a run's checkpoint in its checkpoint folder."""

Slices = Mapping[int, tuple[int, Int[Tensor, " k"]]]
"""Optimizer parameter index -> ``(dim, index)``: the rows (dim 0) or columns (dim 1) whose state a
checkpoint keeps. The state of the other entries must be zero; it is restored as zero."""


def _optimizer_parameters(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """The optimizer's parameters in the order its state dict numbers them."""
    return [param for group in optimizer.param_groups for param in group["params"]]


def write_checkpoint(
    path: str | Path,
    tensors: Mapping[str, Tensor],
    header: Mapping[str, str],
    *,
    settings: Mapping[str, Any],
    shape: ModelShape,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    slices: Slices | None = None,
) -> None:
    """Save a run's own ``tensors`` and ``header`` entries with its optimizer, generator, settings and shape.

    ``settings`` must be JSON-ready; resuming needs the same. ``slices`` saves only part of the
    state of parameters that train in part (their frozen entries' Adam moments are zero).
    """
    state = optimizer.state_dict()
    params = _optimizer_parameters(optimizer)
    saved = dict(tensors)
    for i, slot in state["state"].items():
        for name, value in slot.items():
            value = value.detach()
            if slices is not None and i in slices and value.shape == params[i].shape:
                dim, index = slices[i]
                value = value.index_select(dim, index.to(value.device))
            saved[f"opt.{i}.{name}"] = value.cpu()
    saved["rng"] = generator.get_state()
    meta = dict(header) | {
        "param_groups": json.dumps(state["param_groups"]),
        "config": json.dumps(dict(settings)),
        "model": json.dumps(shape.to_dict()),
    }
    write_safetensors(path, saved, meta)


Upgrade = Callable[[dict[str, Any]], Mapping[str, Any]]
"""The saved settings in the form a run has them now (from a checkpoint of an earlier version)."""


def _check_fits(path: Path, header: Mapping[str, str], settings: Mapping[str, Any], shape: ModelShape, upgrade: Upgrade | None) -> None:
    """Refuse a checkpoint of another model or other settings (it would not give the same run)."""
    if "config" not in header or "model" not in header:
        raise InputError(f"{path}: not a checkpoint of this version (no 'config' and 'model' in its header)")
    shape.check_compatible(ModelShape.from_dict(json.loads(header["model"]), str(path)), f"checkpoint {path}")
    saved = json.loads(header["config"])
    if upgrade is not None:
        saved = json.loads(json.dumps(dict(upgrade(saved))))
    wanted = json.loads(json.dumps(dict(settings)))  # tuples as JSON lists
    changed = [f"{key}: {saved.get(key)!r} -> {wanted.get(key)!r}" for key in sorted(set(saved) | set(wanted)) if saved.get(key) != wanted.get(key)]
    if changed:
        raise InputError(f"{path}: the checkpoint was made with other settings ({'; '.join(changed)}); resume with the same settings, or start again without --resume")


def read_checkpoint(
    path: str | Path,
    *,
    settings: Mapping[str, Any],
    shape: ModelShape,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    slices: Slices | None = None,
    upgrade: Upgrade | None = None,
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Check that ``path`` belongs to this run, restore the optimizer and generator; return the run's own tensors and header.

    Raises ``ValueError`` naming the file and every setting that differs, or
    :class:`~safeseek_tl.errors.ShapeMismatchError` for a model of another shape; ``slices`` must be
    those the checkpoint was written with. ``upgrade`` turns the saved settings into the form
    ``settings`` has, for checkpoints of earlier versions.
    """
    path = Path(path)
    tensors, header = read_safetensors(path, "checkpoint")
    _check_fits(path, header, settings, shape, upgrade)
    params = _optimizer_parameters(optimizer)
    state: dict[str, Any] = {"state": {}, "param_groups": json.loads(header["param_groups"])}
    own: dict[str, Tensor] = {}
    for key, value in tensors.items():
        if not key.startswith("opt."):
            own[key] = value
            continue
        _, index, name = key.split(".", 2)
        i = int(index)
        if slices is not None and i in slices and value.dim() == params[i].dim():
            dim, kept = slices[i]
            value = torch.zeros(params[i].shape, dtype=value.dtype).index_copy_(dim, kept, value)
        state["state"].setdefault(i, {})[name] = value
    optimizer.load_state_dict(state)
    generator.set_state(own.pop("rng"))
    return own, header
