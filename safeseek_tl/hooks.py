"""Names of the TransformerLens hook points that define this library's units.

A head is ``(layer, head)``, its output the slice of ``blocks.{l}.attn.hook_z`` before W_O; a
neuron is ``(layer, index)``, its activation a slice of ``blocks.{l}.mlp.hook_post`` (act(gate) *
up for gated MLPs). These legacy names resolve on a TransformerLens 4 ``TransformerBridge``.
"""

from __future__ import annotations

from typing import Any, Literal

UnitKind = Literal["heads", "neurons"]
UNIT_KINDS: tuple[UnitKind, ...] = ("heads", "neurons")


def head_hook(layer: int) -> str:
    """Hook point of the per-head outputs of ``layer``: [batch, pos, n_heads, d_head]."""
    return f"blocks.{layer}.attn.hook_z"


def neuron_hook(layer: int) -> str:
    """Hook point of the MLP neuron activations of ``layer``: [batch, pos, d_mlp]."""
    return f"blocks.{layer}.mlp.hook_post"


def query_hook(layer: int) -> str:
    """Hook point of the per-head queries of ``layer``: [batch, pos, n_heads, d_head]."""
    return f"blocks.{layer}.attn.hook_q"


def unit_hook(kind: UnitKind, layer: int) -> str:
    """Hook point that carries the units of ``kind`` in ``layer``."""
    return head_hook(layer) if kind == "heads" else neuron_hook(layer)


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def count_hooks(model: Any) -> int:
    """Torch hooks attached to ``model``'s modules and to those of the HF model it wraps, each module once.

    A leak check: every context manager of this library must leave this number as it found it.
    (A TransformerLens bridge wires a few capture hooks of its own on its first forward pass.)
    """
    roots = (model, getattr(model, "original_model", model))
    modules = {id(m): m for root in roots for m in root.modules()}
    return sum(len(getattr(m, name, {})) for m in modules.values() for name in _HOOK_DICTS)
