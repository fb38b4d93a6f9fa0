"""Units, scores and circuits: the currency every method and every downstream tool shares.

Every attribution method, optimized or heuristic, returns :class:`Scores` (higher means more
important to the behaviour). A :class:`Circuit` is a boolean selection of heads and neurons made
from scores (top-k, top-fraction, threshold) or by hand. Both save without pickles: scores as
safetensors with JSON metadata, circuits as JSON with ``heads: [[layer, head], ...]`` and
``neurons: [[layer, index], ...]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from jaxtyping import Float, Shaped
from torch import Tensor

from safeseek_tl._io import read_json, read_safetensors, write_json, write_safetensors
from safeseek_tl.errors import InputError, ShapeMismatchError
from safeseek_tl.hooks import UNIT_KINDS, UnitKind


@dataclass(frozen=True)
class ModelShape:
    """The unit counts of a model, enough to check that a saved result belongs to it."""

    n_layers: int
    n_heads: int
    d_mlp: int
    model_name: str = ""

    @classmethod
    def of(cls, model: Any, model_name: str | None = None) -> ModelShape:
        """Read the shape of a TransformerLens model (bridge or anything with a ``cfg``)."""
        cfg = model.cfg
        name = model_name if model_name is not None else str(getattr(cfg, "model_name", "") or "")
        return cls(int(cfg.n_layers), int(cfg.n_heads), int(cfg.d_mlp), name)

    def size(self, kind: UnitKind) -> tuple[int, int]:
        """``(n_layers, units per layer)`` for ``kind``."""
        return (self.n_layers, self.n_heads if kind == "heads" else self.d_mlp)

    def to_dict(self) -> dict[str, Any]:
        return {"n_layers": self.n_layers, "n_heads": self.n_heads, "d_mlp": self.d_mlp, "model_name": self.model_name}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "shape") -> ModelShape:
        try:
            return cls(int(data["n_layers"]), int(data["n_heads"]), int(data["d_mlp"]), str(data.get("model_name", "")))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{source}: field 'model' needs integer n_layers, n_heads and d_mlp ({err})") from None

    def check_compatible(self, other: ModelShape, what: str) -> None:
        """Raise :class:`ShapeMismatchError` if ``other`` (a loaded result) does not fit this model."""
        mine = (self.n_layers, self.n_heads, self.d_mlp)
        theirs = (other.n_layers, other.n_heads, other.d_mlp)
        if mine != theirs:
            raise ShapeMismatchError(
                f"{what} was made for a model with n_layers, n_heads, d_mlp = {theirs}"
                f"{f' ({other.model_name})' if other.model_name else ''}, but this model has {mine}"
                f"{f' ({self.model_name})' if self.model_name else ''}"
            )


class HasShape(Protocol):
    """Anything that knows its model's shape: a :class:`~safeseek_tl.models.LoadedModel`, for one."""

    @property
    def shape(self) -> ModelShape: ...


def _check_tensor_shape(tensor: Tensor | None, expected: tuple[int, int], what: str) -> None:
    if tensor is not None and tuple(tensor.shape) != expected:
        raise ShapeMismatchError(f"{what} has shape {tuple(tensor.shape)}, expected {expected}")


@dataclass
class Scores:
    """Per-unit importance scores; higher means more important to the behaviour.

    ``heads`` is [n_layers, n_heads], ``neurons`` is [n_layers, d_mlp]; either may be ``None``
    when the method does not score that granularity.
    """

    shape: ModelShape
    heads: Float[Tensor, "n_layers n_heads"] | None = None
    neurons: Float[Tensor, "n_layers d_mlp"] | None = None
    method: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.heads is None and self.neurons is None:
            raise InputError("Scores needs head scores, neuron scores or both")
        _check_tensor_shape(self.heads, self.shape.size("heads"), "head scores")
        _check_tensor_shape(self.neurons, self.shape.size("neurons"), "neuron scores")
        self.heads = None if self.heads is None else self.heads.detach().float().cpu()
        self.neurons = None if self.neurons is None else self.neurons.detach().float().cpu()

    def get(self, kind: UnitKind) -> Tensor | None:
        return self.heads if kind == "heads" else self.neurons

    def require(self, kind: UnitKind) -> Tensor:
        """The scores of ``kind``; :class:`~safeseek_tl.errors.InputError` when these scores do not cover it."""
        values = self.get(kind)
        if values is None:
            raise InputError(f"the {self.method or 'given'} scores have no {kind} scores")
        return values

    @property
    def kinds(self) -> tuple[UnitKind, ...]:
        """The granularities these scores cover."""
        return tuple(kind for kind in UNIT_KINDS if self.get(kind) is not None)

    def save(self, path: str | Path) -> None:
        """Save as safetensors (tensors) with the shape, method and metadata as JSON header text."""
        tensors: dict[str, Tensor] = {kind: values.contiguous() for kind in UNIT_KINDS if (values := self.get(kind)) is not None}
        header = {
            "model": json.dumps(self.shape.to_dict()),
            "method": self.method,
            "metadata": json.dumps(self.metadata, default=str),
        }
        write_safetensors(path, tensors, header)

    @classmethod
    def load(cls, path: str | Path, expected: ModelShape | None = None) -> Scores:
        """Load scores saved by :meth:`save`; with ``expected``, refuse scores of another model."""
        tensors, header = read_safetensors(path, "scores file")
        if "model" not in header:
            raise InputError(f"{path}: missing field 'model' in the safetensors metadata")
        shape = ModelShape.from_dict(json.loads(header["model"]), source=str(path))
        if expected is not None:
            expected.check_compatible(shape, f"scores file {path}")
        return cls(
            shape=shape,
            heads=tensors.get("heads"),
            neurons=tensors.get("neurons"),
            method=header.get("method", ""),
            metadata=json.loads(header.get("metadata", "{}")),
        )



def default_budget(scores: Scores, heads: int | None = None, neurons: int | None = None) -> dict[str, int]:
    """Units to keep of each granularity ``scores`` cover: ``heads``/``neurons`` when given, else 3% of
    the heads and 1% of the neurons (at least one of each), the top-k ``safeseek attribute`` saves."""
    shape = scores.shape
    defaults = {"heads": max(1, round(0.03 * shape.n_layers * shape.n_heads)), "neurons": max(1, round(0.01 * shape.n_layers * shape.d_mlp))}
    chosen = {"heads": heads, "neurons": neurons}
    return {kind: given if (given := chosen[kind]) is not None else defaults[kind] for kind in scores.kinds}

def _top_k_mask(values: Tensor, k: int) -> Tensor:
    """Boolean mask of the ``k`` largest entries (ties broken by position, so it is deterministic)."""
    flat = values.flatten()
    if not 0 <= k <= flat.numel():
        raise InputError(f"cannot select {k} units out of {flat.numel()}")
    order = torch.argsort(-flat, stable=True)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[order[:k]] = True
    return mask.view_as(values)


def _unit_list(mask: Tensor) -> list[list[int]]:
    return [[int(layer), int(index)] for layer, index in mask.nonzero().tolist()]


@dataclass
class Circuit:
    """A selection of heads and neurons, with the model shape it belongs to and free metadata."""

    shape: ModelShape
    # Any dtype when built (nonzero = selected), bool on the CPU once built. The sizes are checked
    # against ``shape`` by __post_init__ (a ShapeMismatchError), not by jaxtyping ("_" names).
    heads: Shaped[Tensor, "_n_layers _n_heads"]
    neurons: Shaped[Tensor, "_n_layers _d_mlp"]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_tensor_shape(self.heads, self.shape.size("heads"), "circuit heads")
        _check_tensor_shape(self.neurons, self.shape.size("neurons"), "circuit neurons")
        self.heads = self.heads.detach().to(device="cpu", dtype=torch.bool)
        self.neurons = self.neurons.detach().to(device="cpu", dtype=torch.bool)

    # ---- construction ----
    @classmethod
    def empty(cls, shape: ModelShape, **metadata: Any) -> Circuit:
        return cls(shape, torch.zeros(shape.size("heads"), dtype=torch.bool), torch.zeros(shape.size("neurons"), dtype=torch.bool), dict(metadata))

    @classmethod
    def from_units(
        cls,
        shape: ModelShape,
        heads: Iterable[Iterable[int]] = (),
        neurons: Iterable[Iterable[int]] = (),
        **metadata: Any,
    ) -> Circuit:
        """Build a circuit from ``[(layer, head), ...]`` and ``[(layer, index), ...]`` lists."""
        circuit = cls.empty(shape, **metadata)
        listed: tuple[tuple[UnitKind, Iterable[Iterable[int]]], ...] = (("heads", heads), ("neurons", neurons))
        for kind, units in listed:
            selection = circuit.get(kind)
            n_layers, per_layer = shape.size(kind)
            for unit in units:
                unit = list(unit)
                if len(unit) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in unit):
                    raise InputError(f"{kind}: each unit must be [layer, index] with two integers, got {unit!r}")
                layer, index = unit
                if not (0 <= layer < n_layers and 0 <= index < per_layer):
                    raise ShapeMismatchError(
                        f"{kind}: unit [{layer}, {index}] is outside a model with {n_layers} layers x {per_layer} {kind}"
                    )
                selection[layer, index] = True
        return circuit

    @classmethod
    def top_k(cls, scores: Scores, heads: int | None = None, neurons: int | None = None) -> Circuit:
        """The ``heads`` highest-scoring heads and ``neurons`` highest-scoring neurons (global ranking)."""
        return cls._select(scores, {"heads": heads, "neurons": neurons}, lambda values, k: _top_k_mask(values, k), "top_k")

    @classmethod
    def top_fraction(cls, scores: Scores, heads: float | None = None, neurons: float | None = None) -> Circuit:
        """The highest-scoring fraction (0-1) of all heads and of all neurons, rounded to whole units."""
        for name, value in (("heads", heads), ("neurons", neurons)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise InputError(f"top_fraction: {name} must be a fraction in [0, 1], got {value}")
        return cls._select(
            scores,
            {"heads": heads, "neurons": neurons},
            lambda values, frac: _top_k_mask(values, round(frac * values.numel())),
            "top_fraction",
        )

    @classmethod
    def above(cls, scores: Scores, threshold: float) -> Circuit:
        """Every unit whose score is strictly above ``threshold``."""
        return cls._select(scores, {kind: threshold for kind in scores.kinds}, lambda values, t: values > t, "threshold")

    @classmethod
    def _select(cls, scores: Scores, amounts: Mapping[UnitKind, Any], rule: Any, how: str) -> Circuit:
        requested = {kind: amount for kind, amount in amounts.items() if amount is not None}
        if not requested:
            raise InputError(f"{how}: say how many heads and/or neurons to select")
        circuit = cls.empty(scores.shape, method=scores.method, selection={how: dict(requested)})
        for kind, amount in requested.items():
            values = scores.get(kind)
            if values is None:
                raise InputError(f"{how}: these {scores.method or ''} scores have no {kind}")
            circuit.get(kind)[:] = rule(values, amount)
        return circuit

    # ---- views ----
    def get(self, kind: UnitKind) -> Tensor:
        return self.heads if kind == "heads" else self.neurons

    @property
    def n_heads(self) -> int:
        return int(self.heads.sum())

    @property
    def n_neurons(self) -> int:
        return int(self.neurons.sum())

    @property
    def head_list(self) -> list[list[int]]:
        return _unit_list(self.heads)

    @property
    def neuron_list(self) -> list[list[int]]:
        return _unit_list(self.neurons)

    def fraction(self, kind: UnitKind) -> float:
        """Share of all units of ``kind`` that the circuit holds."""
        selection = self.get(kind)
        return float(selection.sum()) / selection.numel()

    def __len__(self) -> int:
        return self.n_heads + self.n_neurons

    def __repr__(self) -> str:
        return (
            f"Circuit({self.n_heads} heads ({100 * self.fraction('heads'):.2f}%), "
            f"{self.n_neurons} neurons ({100 * self.fraction('neurons'):.2f}%), model={self.shape.model_name or '?'})"
        )

    # ---- set algebra ----
    def _combine(self, other: Circuit, op: Any) -> Circuit:
        self.shape.check_compatible(other.shape, "the other circuit")
        return Circuit(self.shape, op(self.heads, other.heads), op(self.neurons, other.neurons))

    def __or__(self, other: Circuit) -> Circuit:
        return self._combine(other, torch.logical_or)

    def __and__(self, other: Circuit) -> Circuit:
        return self._combine(other, torch.logical_and)

    def __sub__(self, other: Circuit) -> Circuit:
        return self._combine(other, lambda a, b: a & ~b)

    def complement(self) -> Circuit:
        return Circuit(self.shape, ~self.heads, ~self.neurons)

    def jaccard(self, other: Circuit, kinds: Iterable[UnitKind] = UNIT_KINDS) -> float:
        """|A ∩ B| / |A ∪ B| over the given granularities (1.0 when both are empty)."""
        both = self & other
        either = self | other
        inter = sum(int(both.get(kind).sum()) for kind in kinds)
        union = sum(int(either.get(kind).sum()) for kind in kinds)
        return 1.0 if union == 0 else inter / union

    def precision_recall(self, truth: Circuit, kinds: Iterable[UnitKind] = UNIT_KINDS) -> tuple[float, float]:
        """Precision and recall of this circuit against a ground-truth circuit (1.0 for empty sets)."""
        hits = sum(int((self & truth).get(kind).sum()) for kind in kinds)
        found = sum(int(self.get(kind).sum()) for kind in kinds)
        wanted = sum(int(truth.get(kind).sum()) for kind in kinds)
        return (hits / found if found else 1.0, hits / wanted if wanted else 1.0)

    # ---- persistence ----
    def to_dict(self) -> dict[str, Any]:
        return {
            "heads": self.head_list,
            "neurons": self.neuron_list,
            "model": self.shape.to_dict(),
            "n_heads": self.n_heads,
            "n_neurons": self.n_neurons,
            "metadata": self.metadata,
        }

    def save(self, path: str | Path) -> None:
        """Write the circuit as JSON (atomically)."""
        write_json(path, json.loads(json.dumps(self.to_dict(), default=str)))

    @classmethod
    def from_dict(cls, data: Any, source: str = "circuit", expected: ModelShape | None = None) -> Circuit:
        if not isinstance(data, dict):
            raise InputError(f"{source}: a circuit file must hold a JSON object")
        for key in ("heads", "neurons"):
            if not isinstance(data.get(key, []), list):
                raise InputError(f"{source}: field '{key}' must be a list of [layer, index] pairs")
        if "model" in data:
            shape = ModelShape.from_dict(data["model"], source=source)
            if expected is not None:
                expected.check_compatible(shape, f"circuit {source}")
        elif expected is not None:
            shape = expected
        else:
            raise InputError(f"{source}: missing field 'model' (n_layers, n_heads, d_mlp); pass the model to load it")
        try:
            return cls.from_units(shape, data.get("heads", []), data.get("neurons", []), **data.get("metadata", {}))
        except ValueError as err:
            raise type(err)(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: str | Path, expected: ModelShape | None = None) -> Circuit:
        """Load a circuit JSON; with ``expected``, refuse a circuit made for another model shape."""
        return cls.from_dict(read_json(path), source=str(path), expected=expected)


def mean_jaccard(pairs: Sequence[tuple[Circuit, Circuit]], kinds: Iterable[UnitKind] = UNIT_KINDS) -> float:
    """The mean :meth:`~safeseek_tl.units.Circuit.jaccard` of the pairs over ``kinds``' units (at least one pair)."""
    if not pairs:
        raise InputError("the mean Jaccard index needs at least one pair of circuits")
    kinds = tuple(kinds)
    return sum(a.jaccard(b, kinds) for a, b in pairs) / len(pairs)
