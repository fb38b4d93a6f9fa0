"""Parameter deltas: the changed slices of a model's weights, stored on their own.

A delta holds, for each changed parameter, the indices along one dimension (rows or columns,
whichever is fewer) and the new values of those slices. Applied to the base weights it gives the
changed model back exactly. Files are safetensors with a JSON header (no pickles), so a fine-tune
that touched 1% of the weights ships as about 1% of the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from safeseek_tl._io import read_safetensors, write_safetensors
from safeseek_tl.errors import InputError
from safeseek_tl.units import ShapeMismatchError

FORMAT = "safeseek_tl.delta/1"


@dataclass
class SliceDelta:
    """New values of ``parameter.index_select(dim, index)``; ``shape`` is the whole parameter's."""

    dim: int
    index: Int[Tensor, " n"]
    values: Tensor
    shape: tuple[int, ...] | None = None


@dataclass
class ParameterDelta:
    """Replacement slices for named parameters, with free-form metadata (base model, how it was made)."""

    slices: dict[str, SliceDelta]
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    @torch.no_grad()
    def between(cls, base: Mapping[str, Tensor], changed: Mapping[str, Tensor], **metadata: Any) -> ParameterDelta:
        """The slices where ``changed`` differs from ``base`` (same names and shapes)."""
        slices = {}
        for name, new in changed.items():
            old = base[name]
            if old.shape != new.shape:
                raise ShapeMismatchError(f"parameter {name}: base shape {tuple(old.shape)}, changed {tuple(new.shape)}")
            differs = old != new
            if not differs.any():
                continue
            # Keep the dimension with the fewest changed slices (rows for q_proj, columns for o_proj).
            candidates = []
            for dim in range(differs.ndim):
                others = [d for d in range(differs.ndim) if d != dim]
                hit = differs.any(dim=others) if others else differs
                candidates.append((int(hit.sum()), dim, hit.nonzero().flatten()))
            _, dim, index = min(candidates, key=lambda c: c[:2])
            slices[name] = SliceDelta(dim, index, new.index_select(dim, index).detach().cpu().clone(), tuple(new.shape))
        return cls(slices, dict(metadata))

    @property
    def n_values(self) -> int:
        """Number of stored weight values."""
        return sum(s.values.numel() for s in self.slices.values())

    @torch.no_grad()
    def apply_(self, module: torch.nn.Module) -> None:
        """Write the slices into ``module``'s parameters in place (all are checked before any is written)."""
        params = dict(module.named_parameters())
        missing = sorted(set(self.slices) - set(params))
        if missing:
            raise ShapeMismatchError(f"the delta changes parameters this model does not have: {', '.join(missing[:5])}")
        for name, piece in self.slices.items():
            param = params[name]
            expected = list(param.shape)
            expected[piece.dim] = len(piece.index)
            # Slices alone can fit a larger parameter; the recorded whole shape must match too.
            fits = piece.shape is None or tuple(param.shape) == piece.shape
            if not fits or list(piece.values.shape) != expected or (len(piece.index) and int(piece.index.max()) >= param.shape[piece.dim]):
                raise ShapeMismatchError(
                    f"the delta for {name} ({'parameter shape ' + str(piece.shape) + ', ' if piece.shape else ''}values of shape "
                    f"{tuple(piece.values.shape)}) does not fit the model's parameter of shape {tuple(param.shape)}: it was made for another model"
                )
        for name, piece in self.slices.items():
            param = params[name]
            param.index_copy_(piece.dim, piece.index.to(param.device), piece.values.to(param.device, param.dtype))

    def save(self, path: str | Path) -> None:
        """Write ``path`` (safetensors; the metadata and slice dimensions go in its JSON header)."""
        tensors: dict[str, Tensor] = {}
        dims, shapes = {}, {}
        for name, piece in self.slices.items():
            tensors[f"{name}:index"] = piece.index.to(torch.int64)
            tensors[f"{name}:values"] = piece.values
            dims[name] = piece.dim
            if piece.shape is not None:
                shapes[name] = list(piece.shape)
        header = {"format": FORMAT, "dims": json.dumps(dims), "shapes": json.dumps(shapes), "metadata": json.dumps(self.metadata)}
        write_safetensors(path, tensors, header)

    @classmethod
    def load(cls, path: str | Path) -> ParameterDelta:
        """Read a delta written by :meth:`save`."""
        tensors, header = read_safetensors(path, "parameter delta")
        if header.get("format") != FORMAT:
            raise InputError(f"{path} is not a safeseek_tl parameter delta (header format {header.get('format')!r})")
        dims, shapes = json.loads(header["dims"]), json.loads(header.get("shapes", "{}"))  # files before shapes were recorded have none
        slices = {
            name: SliceDelta(int(dim), tensors[f"{name}:index"], tensors[f"{name}:values"], tuple(shapes[name]) if name in shapes else None)
            for name, dim in dims.items()
        }
        return cls(slices, json.loads(header.get("metadata", "{}")))
