"""The refusal direction (Arditi et al. 2024) as a baseline: one residual-stream direction, and the units that write it.

:func:`mean_differences` gives the candidates (harmful minus harmless mean of
``blocks.{l}.hook_resid_pre`` per post-instruction position and layer);
:mod:`~safeseek_tl.baselines.direction_selection` picks one on validation prompts;
:func:`direction_ablated` projects it out of ``hook_resid_pre``, ``hook_attn_out`` and
``hook_mlp_out`` of every layer at every position, as the official code does, and
:func:`direction_added` adds it to ``hook_resid_pre`` of one layer; :func:`direction_unit_scores`
ranks heads and neurons by their write onto it, so that it competes at matched unit budgets.
docs/direction.md has the details and the differences from the official code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from safeseek_tl._io import read_safetensors, write_safetensors
from safeseek_tl.data import batch_slices, tokenize_prompts
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import HookList, attn_out_hook, head_hook, mlp_out_hook, neuron_hook
from safeseek_tl.models import LoadedModel
from safeseek_tl.prefix import resid_pre_hook
from safeseek_tl.units import Scores

if TYPE_CHECKING:  # imported for the annotations only: loading it takes seconds
    from transformer_lens.model_bridge import TransformerBridge

FORMAT = "safeseek_tl.refusal_direction/1"


def _unit_vector(model: TransformerBridge, direction: Tensor) -> Float[Tensor, " d_model"]:
    """``direction`` scaled to norm 1 (float32), after checking that it fits ``model``'s residual stream."""
    d_model = int(model.cfg.d_model)
    if direction.dim() != 1 or direction.numel() != d_model:
        raise InputError(f"a direction must be a vector of d_model = {d_model} values, got shape {tuple(direction.shape)}")
    norm = direction.double().norm()
    if not torch.isfinite(norm) or norm == 0:
        raise InputError("a direction must be finite and not zero")
    return (direction.double() / norm).float()


def ablation_hooks(direction: Float[Tensor, " d_model"], n_layers: int) -> HookList:
    """Hooks that project ``direction`` out of the block inputs and attention and MLP outputs of every layer."""
    unit = direction.double() / direction.double().norm()

    def project(act: Tensor, hook: Any) -> Tensor:
        r = unit.to(device=act.device, dtype=act.dtype)
        return act - (act @ r).unsqueeze(-1) * r

    return [(name(layer), project) for layer in range(n_layers) for name in (resid_pre_hook, attn_out_hook, mlp_out_hook)]


def addition_hooks(vector: Float[Tensor, " d_model"], layer: int, coeff: float = 1.0) -> HookList:
    """The hook that adds ``coeff * vector`` to the input of block ``layer``, at every position."""

    def add(act: Tensor, hook: Any) -> Tensor:
        return act + coeff * vector.to(device=act.device, dtype=act.dtype)

    return [(resid_pre_hook(layer), add)]


@contextmanager
def direction_ablated(model: TransformerBridge, direction: Float[Tensor, " d_model"]) -> Iterator[Any]:
    """Run ``model`` with ``direction`` projected out of the residual stream at every layer and position.

    The hooks are removed when the block exits, also on errors.
    """
    _unit_vector(model, direction)
    with model.hooks(fwd_hooks=ablation_hooks(direction, int(model.cfg.n_layers))):
        yield model


@contextmanager
def direction_added(model: TransformerBridge, vector: Float[Tensor, " d_model"], layer: int, coeff: float = 1.0) -> Iterator[Any]:
    """Run ``model`` with ``coeff * vector`` added to the input of block ``layer`` at every position.

    The hook is removed when the block exits, also on errors.
    """
    _unit_vector(model, vector)
    if not 0 <= layer < int(model.cfg.n_layers):
        raise InputError(f"layer {layer} is outside a model with {model.cfg.n_layers} layers")
    with model.hooks(fwd_hooks=addition_hooks(vector, layer, coeff)):
        yield model


def _batches(loaded: LoadedModel, prompts: Sequence[str], n_positions: int, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Left-padded prompt batches, after checking that every prompt has ``n_positions`` tokens."""
    tokens = tokenize_prompts(loaded.chat, prompts)
    shortest = int(tokens.attention_mask.sum(1).min())
    if not 1 <= n_positions <= shortest:
        raise InputError(f"n_positions must be between 1 and the shortest prompt's {shortest} tokens, got {n_positions}")
    for part in batch_slices(len(prompts), batch_size):
        yield tokens.input_ids[part].to(loaded.device), tokens.attention_mask[part].to(loaded.device)


@torch.no_grad()
def mean_last_residuals(
    loaded: LoadedModel, prompts: Sequence[str], n_positions: int, batch_size: int = 16
) -> Float[Tensor, "n_positions n_layers d_model"]:
    """Mean over ``prompts`` of ``hook_resid_pre`` of every layer at the last ``n_positions`` positions (float64)."""
    model = loaded.model
    n_layers = int(model.cfg.n_layers)
    total = torch.zeros(n_positions, n_layers, int(model.cfg.d_model), dtype=torch.float64)

    def capture(layer: int) -> Any:
        def hook(act: Tensor, hook: Any) -> Tensor:
            total[:, layer] += act[:, -n_positions:].double().sum(0).cpu()
            return act

        return hook

    with model.hooks(fwd_hooks=[(resid_pre_hook(layer), capture(layer)) for layer in range(n_layers)]):
        for ids, mask in _batches(loaded, prompts, n_positions, batch_size):
            model(ids, attention_mask=mask, logits_to_keep=1)
    return total / len(prompts)


def mean_differences(
    loaded: LoadedModel, harmful: Sequence[str], harmless: Sequence[str], n_positions: int | None = None, batch_size: int = 16
) -> Float[Tensor, "n_positions n_layers d_model"]:
    """The candidate directions: harmful minus harmless mean residual, per post-instruction position and layer.

    ``n_positions`` defaults to the chat template's post-instruction tokens; index ``i`` of the
    first axis is position ``i - n_positions`` (the last prompt token is ``-1``).
    """
    n = loaded.chat.post_instruction_length() if n_positions is None else n_positions
    return mean_last_residuals(loaded, harmful, n, batch_size) - mean_last_residuals(loaded, harmless, n, batch_size)


def first_pruned_layer(n_layers: int, prune_fraction: float) -> int:
    """The first layer of the last ``prune_fraction`` of layers: ``floor(n_layers * (1 - prune_fraction))``."""
    if not 0.0 <= prune_fraction < 1.0:
        raise InputError(f"prune_fraction must be in [0, 1), got {prune_fraction}")
    return math.floor(n_layers * (1.0 - prune_fraction) + 1e-9)  # 1e-9: 10 * (1 - 0.9) is 0.9999999999999998


@dataclass
class RefusalDirection:
    """A chosen refusal direction, the candidates it was chosen from and how each one fared.

    ``direction`` is the unnormalized difference of means ``candidates[position, layer]``
    (``position`` counts from the end: ``-1`` is the last prompt token). Each row of ``table`` is
    one candidate: ``position``, ``layer``, ``ablated_score`` (mean refusal score of the harmful
    validation prompts under directional ablation), ``score_drop`` (the full model's mean minus
    that), ``kl`` (mean KL(full || ablated) on the harmless ones), ``induced_score`` (mean refusal
    score of the harmless ones with the candidate added at its layer) and ``rejected`` (why, or
    ``None``); candidates of pruned layers are not evaluated (``None`` values).
    """

    direction: Float[Tensor, " d_model"]
    layer: int
    position: int
    candidates: Float[Tensor, "n_positions n_layers d_model"]
    table: list[dict[str, Any]]
    baseline: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def ablated(self, model: TransformerBridge) -> Any:
        """:func:`direction_ablated` with this direction."""
        return direction_ablated(model, self.direction)

    def added(self, model: TransformerBridge, coeff: float = 1.0) -> Any:
        """:func:`direction_added` with this direction at its own layer."""
        return direction_added(model, self.direction, self.layer, coeff)

    def summary(self) -> dict[str, Any]:
        """Everything but the tensors, JSON-ready (a baseline's ``Scores.metadata``)."""
        return {"layer": self.layer, "position": self.position, "baseline": self.baseline, "settings": self.settings, "candidates": self.table}

    def save(self, path: str | Path) -> None:
        """One safetensors file: the direction and the candidates, with the rest as JSON in its header."""
        header = {"format": FORMAT, **{key: json.dumps(value) for key, value in self.summary().items()}}
        write_safetensors(path, {"direction": self.direction.float().cpu(), "candidates": self.candidates.float().cpu()}, header)

    @classmethod
    def load(cls, path: str | Path) -> RefusalDirection:
        """Load a direction saved by :meth:`save` (never a pickle); errors name the file and field."""
        tensors, header = read_safetensors(path, "refusal direction file")
        if header.get("format") != FORMAT:
            raise InputError(f"{path}: field 'format' must be {FORMAT!r}, got {header.get('format')!r}")
        fields: dict[str, Any] = {}
        for key in ("layer", "position", "baseline", "settings", "candidates"):
            try:
                fields[key] = json.loads(header[key])
            except (KeyError, json.JSONDecodeError) as err:
                raise InputError(f"{path}: field {key!r} is missing or not JSON ({err})") from None
        direction, candidates = tensors.get("direction"), tensors.get("candidates")
        if direction is None or candidates is None or direction.dim() != 1 or candidates.dim() != 3:
            raise InputError(f"{path}: needs tensors 'direction' [d_model] and 'candidates' [n_positions, n_layers, d_model]")
        layer, position = fields["layer"], fields["position"]
        if not (isinstance(layer, int) and isinstance(position, int) and -candidates.shape[0] <= position < 0 and 0 <= layer < candidates.shape[1]):
            raise InputError(f"{path}: fields 'layer' {layer!r} and 'position' {position!r} do not index candidates of shape {tuple(candidates.shape)}")
        return cls(direction, layer, position, candidates, fields["candidates"], fields["baseline"], fields["settings"])


@torch.no_grad()
def _mean_writes(loaded: LoadedModel, prompts: Sequence[str], unit: Tensor, n_positions: int, batch_size: int) -> tuple[Tensor, Tensor]:
    """Mean over prompts and the last ``n_positions`` positions of each head's and neuron's write onto ``unit``."""
    model, shape = loaded.model, loaded.shape
    heads, neurons = torch.zeros(shape.size("heads"), dtype=torch.float64), torch.zeros(shape.size("neurons"), dtype=torch.float64)

    def capture(layer: int, kind: str) -> Any:
        # a head writes z @ W_O[head] (W_O is per query head, also under grouped-query attention), a neuron act * W_out[neuron]
        out = model.blocks[layer].attn.W_O if kind == "heads" else model.blocks[layer].mlp.W_out
        weight = out.detach().double() @ unit.to(device=out.device, dtype=torch.float64)

        def hook(act: Tensor, hook: Any) -> Tensor:
            last = act[:, -n_positions:].double()
            w = weight.to(device=act.device, dtype=torch.float64)
            target = heads if kind == "heads" else neurons
            target[layer] += ((last * w).sum(-1) if kind == "heads" else last * w).sum((0, 1)).cpu()
            return act

        return hook

    hooks = [(name(layer), capture(layer, kind)) for layer in range(shape.n_layers) for name, kind in ((head_hook, "heads"), (neuron_hook, "neurons"))]
    with model.hooks(fwd_hooks=hooks):
        for ids, mask in _batches(loaded, prompts, n_positions, batch_size):
            model(ids, attention_mask=mask, logits_to_keep=1)
    count = len(prompts) * n_positions
    return heads / count, neurons / count


def direction_unit_scores(
    loaded: LoadedModel, direction: Float[Tensor, " d_model"], harmful: Sequence[str], harmless: Sequence[str], n_positions: int | None = None, batch_size: int = 16
) -> Scores:
    """Each head's and neuron's mean write onto the unit ``direction``, harmful minus harmless prompts.

    A head writes ``hook_z[head] @ W_O[head]``, a neuron ``hook_post[neuron] * W_out[neuron]``; the
    dot product with the unit direction is averaged over the prompts and the post-instruction
    positions (``n_positions``, default: the chat template's). Higher: the unit pushes the
    residual stream toward refusal more on harmful prompts than on harmless ones.
    """
    unit = _unit_vector(loaded.model, direction)
    n = loaded.chat.post_instruction_length() if n_positions is None else n_positions
    harmful_heads, harmful_neurons = _mean_writes(loaded, harmful, unit, n, batch_size)
    harmless_heads, harmless_neurons = _mean_writes(loaded, harmless, unit, n, batch_size)
    return Scores(
        shape=loaded.shape,
        heads=harmful_heads - harmless_heads,
        neurons=harmful_neurons - harmless_neurons,
        method="refusal-direction",
        metadata={"n_positions": n, "n_harmful": len(harmful), "n_harmless": len(harmless), "score": "mean write onto the unit refusal direction, harmful minus harmless"},
    )


