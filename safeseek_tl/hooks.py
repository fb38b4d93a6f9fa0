"""Names of the TransformerLens hook points that define this library's units.

A head is ``(layer, head)``, its output the slice of ``blocks.{l}.attn.hook_z`` before W_O; a
neuron is ``(layer, index)``, its activation a slice of ``blocks.{l}.mlp.hook_post`` (act(gate) *
up for gated MLPs). These legacy names resolve on a TransformerLens 4 ``TransformerBridge``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from safeseek_tl.errors import InputError

UnitKind = Literal["heads", "neurons"]
UNIT_KINDS: tuple[UnitKind, ...] = ("heads", "neurons")
UnitChoice = Literal["heads", "neurons", "both"]
"""Which units a search or a ranking covers: one kind, or both."""
UNIT_CHOICES: tuple[UnitChoice, ...] = ("heads", "neurons", "both")


def unit_kinds(units: UnitChoice) -> tuple[UnitKind, ...]:
    """The unit kinds that ``units`` names."""
    if units not in UNIT_CHOICES:
        raise InputError(f"units must be one of {UNIT_CHOICES}, got {units!r}")
    return UNIT_KINDS if units == "both" else (units,)


def head_hook(layer: int) -> str:
    """Hook point of the per-head outputs of ``layer``: [batch, pos, n_heads, d_head]."""
    return get_act_name("z", layer)


def neuron_hook(layer: int) -> str:
    """Hook point of the MLP neuron activations of ``layer``: [batch, pos, d_mlp]."""
    return get_act_name("post", layer)


def query_hook(layer: int) -> str:
    """Hook point of the per-head queries of ``layer``: [batch, pos, n_heads, d_head]."""
    return get_act_name("q", layer)


def attn_out_hook(layer: int) -> str:
    """Hook point of what the attention of ``layer`` writes to the residual stream: [batch, pos, d_model]."""
    return f"blocks.{layer}.hook_attn_out"


def mlp_out_hook(layer: int) -> str:
    """Hook point of what the MLP of ``layer`` writes to the residual stream: [batch, pos, d_model]."""
    return f"blocks.{layer}.hook_mlp_out"


def pattern_hook(layer: int) -> str:
    """Hook point of the attention patterns of ``layer``: [batch, n_heads, query pos, key pos]."""
    return f"blocks.{layer}.attn.hook_pattern"


def unit_input_hook(kind: UnitKind, layer: int) -> str:
    """Hook point of the residual stream that the units of ``kind`` in ``layer`` read, before their
    LayerNorm: [batch, pos, d_model]. It feeds that component only (the skip connection bypasses
    it), so its gradient is the gradient through the component."""
    return f"blocks.{layer}.{'ln1' if kind == 'heads' else 'ln2'}.hook_in"


EMBED_HOOK = "hook_embed"
"""Hook point of the token embeddings: [batch, pos, d_model]."""


def unit_hook(kind: UnitKind, layer: int) -> str:
    """Hook point that carries the units of ``kind`` in ``layer``."""
    return head_hook(layer) if kind == "heads" else neuron_hook(layer)


HookList = list[tuple[str, Callable[..., Tensor]]]
"""Forward hooks as ``model.hooks(fwd_hooks=...)`` takes them: (hook point name, function)."""

Fill = Tensor | Callable[[Tensor], Tensor] | None
"""What a unit becomes where its keep value is 0: zero (``None``); a tensor broadcastable to the
activation (a per-unit constant such as a mean, ``[units(, d_head)]``, or a donor's activations);
or a function of the activation (a resample draw, Ships' scaled copy, a donor cache repeated)."""


def intervene(
    act: Float[Tensor, "batch pos units *d_head"], keep: Tensor, fill: Tensor
) -> Float[Tensor, "batch pos units *d_head"]:
    """THE unit intervention of the library: ``fill + keep * (act - fill)``.

    ``keep`` is broadcast to ``act`` (1 keeps the unit, 0 replaces it by ``fill``, values between
    mix them; gradients reach ``keep``). Computed by ``torch.lerp``, which is exact at both ends:
    a kept unit is bit for bit its activation, a replaced one bit for bit its fill.
    """
    return torch.lerp(fill, act, keep)


def intervention_hook(keep: Tensor, fill: Fill = None) -> Callable[..., Tensor]:
    """The hook every masking, ablation and patching of the library installs on one layer.

    ``keep`` is ``[units]`` (shared by every row) or ``[batch, units]`` (one value per batch row:
    several mask paths, or one ablated head per row, in one pass); ``act`` is ``[batch, pos, units]``
    (neurons) or ``[batch, pos, units, d_head]`` (heads, queries). See :data:`Fill` for ``fill``.
    """

    def hook(act: Tensor, hook: Any) -> Tensor:
        trailing = (1,) * (act.dim() - 3)
        # layers of a sharded model sit on several devices; masks stay float32 whatever the model dtype
        weight = keep.to(device=act.device, dtype=act.dtype)
        weight = weight.view(*weight.shape, *trailing) if weight.dim() == 1 else weight.view(weight.shape[0], 1, weight.shape[1], *trailing)
        if fill is None:
            base = torch.zeros((), device=act.device, dtype=act.dtype)
        else:
            base = (fill(act) if callable(fill) else fill).to(device=act.device, dtype=act.dtype)
        return intervene(act, weight, base)

    return hook


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def count_hooks(model: torch.nn.Module) -> int:
    """Torch hooks attached to ``model``'s modules and to those of the HF model it wraps, each module once.

    A leak check: every context manager of this library must leave this number as it found it.
    (A TransformerLens bridge wires a few capture hooks of its own on its first forward pass.)
    """
    roots = (model, getattr(model, "original_model", model))
    modules = {id(m): m for root in roots for m in root.modules()}
    return sum(len(getattr(m, name, {})) for m in modules.values() for name in _HOOK_DICTS)
