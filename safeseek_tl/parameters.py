"""The Hugging Face parameters behind the bridge: which entries a circuit's units own, and deltas of entries.

A tuning run (:mod:`safeseek_tl.tuning`) trains the entries :func:`parameter_masks` selects and
saves them with :func:`delta_of`; :func:`apply_delta` writes them into another copy of the model.
Parameters go by their Hugging Face names (:func:`hf_parameters`), so a delta also applies to a
plain Hugging Face model. The tuning modes (``TUNE_MODES``) say which entries may change:
``"only"`` the circuit's, ``"protect"`` all but the circuit's, ``"full"`` all.

**A unit's parameters**, in the Hugging Face weights the bridge runs on (``nn.Linear`` weights are
``[out, in]``):

- head ``(l, h)``: rows ``h*d_head:(h+1)*d_head`` of ``q_proj`` (and of its bias, if any), the same
  columns of ``o_proj``, and the rows of ``k_proj``/``v_proj`` of its key/value head (see below);
- neuron ``(l, i)``: row ``i`` of ``gate_proj`` and ``up_proj`` (and of their biases), column ``i``
  of ``down_proj``.

Output biases (``o_proj``, ``down_proj``) are shared by every unit of a layer and belong to none.
Embeddings, norms and the unembedding belong to no unit either: ``"only"`` freezes them,
``"protect"`` trains them.

**Grouped-query attention.** One key/value head serves ``n_heads / n_kv_heads`` query heads (query
head ``h`` reads key/value head ``h // group``, as Hugging Face's ``repeat_kv`` lays them out). A
shared weight is given to the circuit only as far as both modes keep their promise:

- ``"only"`` tunes a key/value head's rows only when *every* query head of its group is in the
  circuit, so tuning never changes a weight that a head outside the circuit reads;
- ``"protect"`` freezes a key/value head's rows when *any* query head of its group is in the
  circuit, so no weight that a protected head reads ever changes.

A key/value head of a partly selected group is therefore frozen in both modes.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from safeseek_tl.delta import ParameterDelta, SliceDelta
from safeseek_tl.errors import InputError
from safeseek_tl.models import LoadedModel
from safeseek_tl.units import Circuit, ModelShape

TuneMode = Literal["only", "protect", "full"]
TUNE_MODES: tuple[TuneMode, ...] = ("only", "protect", "full")

# The bridge wraps every Hugging Face module and adds this segment to the parameter names.
_WRAPPER_SEGMENT = "._original_component"
# Projection -> (submodule, axis of a unit's slice): 0 = output rows, 1 = input columns.
_PROJECTIONS: dict[str, tuple[str, int]] = {
    "q_proj": ("self_attn", 0),
    "k_proj": ("self_attn", 0),
    "v_proj": ("self_attn", 0),
    "o_proj": ("self_attn", 1),
    "gate_proj": ("mlp", 0),
    "up_proj": ("mlp", 0),
    "down_proj": ("mlp", 1),
}
_OPTIONAL_PROJECTIONS = ("gate_proj",)  # MLPs without a gate have only up_proj and down_proj


def hf_parameters(loaded: LoadedModel) -> dict[str, torch.nn.Parameter]:
    """The Hugging Face model's parameters under their usual names (``model.layers.0.self_attn.q_proj.weight``).

    These are the tensors the bridge runs on; the names are those of the model's ``state_dict``.
    """
    model = loaded.model.original_model
    return {name.replace(_WRAPPER_SEGMENT, ""): param for name, param in model.named_parameters()}


def _attention_geometry(loaded: LoadedModel) -> tuple[int, int]:
    """``(d_head, group)``: the head width and how many query heads share one key/value head."""
    cfg = loaded.model.cfg
    n_kv = int(cfg.n_key_value_heads or cfg.n_heads)
    if cfg.n_heads % n_kv:
        raise ValueError(f"{cfg.n_heads} query heads cannot be split into groups over {n_kv} key/value heads")
    return int(cfg.d_head), int(cfg.n_heads) // n_kv


def _circuit_entries(loaded: LoadedModel, circuit: Circuit, shared_kv: Literal["all", "any"]) -> dict[str, Bool[Tensor, " ..."]]:
    """Boolean masks of the parameter entries that belong to ``circuit``'s units.

    ``shared_kv`` says when a key/value head shared by a group of query heads counts as the
    circuit's: when ``"all"`` the query heads of its group are in the circuit, or ``"any"``.
    """
    params = hf_parameters(loaded)
    d_head, group = _attention_geometry(loaded)
    owned: dict[str, Tensor] = {}

    def mark(layer: int, proj: str, index: slice | int) -> None:
        module, axis = _PROJECTIONS[proj]
        prefix = f"model.layers.{layer}.{module}.{proj}"
        if f"{prefix}.weight" not in params:
            if proj in _OPTIONAL_PROJECTIONS:
                return
            raise InputError(
                f"safety circuit tuning needs Llama-style weights (model.layers.{{l}}.self_attn.q_proj/k_proj/v_proj/o_proj, "
                f"model.layers.{{l}}.mlp.up_proj/down_proj); this model has no {prefix}.weight"
            )
        names = [f"{prefix}.weight"] + ([f"{prefix}.bias"] if axis == 0 and f"{prefix}.bias" in params else [])
        for name in names:
            mask = owned.setdefault(name, torch.zeros(params[name].shape, dtype=torch.bool))
            if axis == 0:
                mask[index] = True
            else:
                mask[:, index] = True

    for layer, head in circuit.head_list:
        rows = slice(head * d_head, (head + 1) * d_head)
        mark(layer, "q_proj", rows)
        mark(layer, "o_proj", rows)
    for layer, selected in enumerate(circuit.heads):
        for kv_head, members in enumerate(selected.view(-1, group)):
            if members.all() if shared_kv == "all" else members.any():
                rows = slice(kv_head * d_head, (kv_head + 1) * d_head)
                mark(layer, "k_proj", rows)
                mark(layer, "v_proj", rows)
    for layer, index in circuit.neuron_list:
        for proj in ("gate_proj", "up_proj", "down_proj"):
            mark(layer, proj, index)
    return owned


def parameter_masks(loaded: LoadedModel, circuit: Circuit | None, mode: TuneMode = "only") -> dict[str, Bool[Tensor, " ..."]]:
    """Which entries of each Hugging Face parameter may change when tuning in ``mode``.

    Keys are :func:`hf_parameters` names; a parameter that is not a key is frozen entirely.
    ``"only"``: the entries of the circuit's units; ``"protect"``: every entry except those;
    ``"full"``: everything (``circuit`` may be ``None``). See the module docstring for which
    entries a unit owns and for the grouped-query attention rule.
    """
    if mode not in TUNE_MODES:
        raise InputError(f"mode must be one of {TUNE_MODES}, got {mode!r}")
    params = hf_parameters(loaded)
    if mode == "full":
        return {name: torch.ones(param.shape, dtype=torch.bool) for name, param in params.items()}
    if circuit is None:
        raise InputError(f"mode {mode!r} needs a circuit (the units to tune or to protect)")
    loaded.shape.check_compatible(circuit.shape, "the circuit")
    if mode == "only":
        return _circuit_entries(loaded, circuit, shared_kv="all")
    frozen = _circuit_entries(loaded, circuit, shared_kv="any")
    return {name: ~frozen[name] if name in frozen else torch.ones(param.shape, dtype=torch.bool) for name, param in params.items()}


# ---------------------------------------------------------------- deltas
def mask_slice(mask: Bool[Tensor, " ..."]) -> tuple[int, Int[Tensor, " k"]]:
    """``(dim, index)`` such that ``mask`` selects exactly the rows (dim 0) or columns (dim 1) ``index``.

    Every mask :func:`parameter_masks` gives is of this form; a tuning run's deltas and checkpoints
    store only these slices.
    """
    rows = mask.flatten(1).any(1) if mask.dim() > 1 else mask
    if torch.equal(mask, rows.view(-1, *[1] * (mask.dim() - 1)).expand_as(mask)):
        return 0, rows.nonzero().flatten()
    columns = mask.any(0)
    if mask.dim() == 2 and torch.equal(mask, columns.expand_as(mask)):
        return 1, columns.nonzero().flatten()
    raise ValueError("a tuning mask must select whole rows or whole columns of a parameter")


def delta_of(loaded: LoadedModel, masks: Mapping[str, Bool[Tensor, " ..."]], **metadata: Any) -> ParameterDelta:
    """The current values of the entries ``masks`` select, as a ``safeseek_tl.delta.ParameterDelta``.

    Parameters carry their Hugging Face names (:func:`hf_parameters`), so the delta also applies
    to a plain Hugging Face model (``delta.apply_(hf_model)``); the model's shape goes in the
    metadata (``"model"``) for :func:`apply_delta` to check.
    """
    params = hf_parameters(loaded)
    slices = {}
    for name, mask in masks.items():
        dim, index = mask_slice(mask)
        values = params[name].detach().index_select(dim, index.to(params[name].device))
        slices[name] = SliceDelta(dim, index, values.cpu().clone(), tuple(params[name].shape))
    return ParameterDelta(slices, {"model": loaded.shape.to_dict(), **metadata})


def apply_delta(loaded: LoadedModel, delta: ParameterDelta | str | Path) -> ParameterDelta:
    """Write a delta (or a delta file saved by :meth:`~safeseek_tl.tuning.TuneResult.save`) into ``loaded``'s weights, in place.

    The bridge sees the new weights at once. Raises :class:`~safeseek_tl.errors.ShapeMismatchError`
    when the delta was made for a model of another shape (checked before anything is written) or
    names a parameter this model lacks or has in another shape.
    """
    if not isinstance(delta, ParameterDelta):
        delta = ParameterDelta.load(delta)
    if "model" in delta.metadata:
        made_for = ModelShape.from_dict(delta.metadata["model"], source="the parameter delta")
        loaded.shape.check_compatible(made_for, "the parameter delta")
        if made_for.model_name and loaded.name and made_for.model_name != loaded.name:
            warnings.warn(f"the delta was tuned on {made_for.model_name!r} and is applied to {loaded.name!r}", stacklevel=2)
    # The bridge's wrappers add a segment to the parameter names: address the wrapped names.
    model = loaded.model.original_model
    wrapped = {name.replace(_WRAPPER_SEGMENT, ""): name for name, _ in model.named_parameters()}
    ParameterDelta({wrapped.get(name, name): part for name, part in delta.slices.items()}, delta.metadata).apply_(model)
    return delta
