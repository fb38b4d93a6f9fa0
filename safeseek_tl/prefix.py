"""Prefix reuse: run a model from layer ``l`` on a cached residual stream.

An intervention at layer ``l`` (ablating a head, patching a neuron) cannot change anything before
it, so the residual stream entering block ``l`` of a clean run can be reused: only blocks ``l``..
and the unembedding run again. Over all layers this halves the blocks run, roughly
``(n_layers + 1) / (2 n_layers)`` of one full forward per intervention.

TransformerLens's ``start_at_layer`` swaps the cached residual in at block ``l`` but still runs
blocks ``0..l-1`` and throws their output away; :func:`~safeseek_tl.compat.only_blocks_from` hides those blocks from the
Hugging Face decoder loop for the duration of the call, so they are not run at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from safeseek_tl.compat import only_blocks_from
from safeseek_tl.hooks import HookList

if TYPE_CHECKING:  # imported for the annotations only: loading it takes seconds
    from transformer_lens.model_bridge import TransformerBridge


def resid_pre_hook(layer: int) -> str:
    """Hook point of the residual stream entering block ``layer``: [batch, pos, d_model]."""
    return f"blocks.{layer}.hook_resid_pre"


def position_ids(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """The positions the bridge gives token inputs: counted from each row's first token where the
    row is left-padded, ``arange`` otherwise (it derives none for a residual input, so we pass them)."""
    derived = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    arange = torch.arange(attention_mask.shape[1], device=attention_mask.device).expand_as(derived)
    shifted = ((derived != arange) & attention_mask.bool()).any(-1, keepdim=True)
    return torch.where(shifted, derived, arange)


def last_logits_and_residuals(
    model: TransformerBridge, ids: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"]
) -> tuple[Float[Tensor, "batch d_vocab"], list[Float[Tensor, "batch pos d_model"]]]:
    """One clean forward: the last position's logits (float32) and the residual entering every block."""
    names = {resid_pre_hook(layer) for layer in range(len(model.blocks))}
    logits, cache = model.run_with_cache(ids, attention_mask=attention_mask, names_filter=lambda name: name in names, logits_to_keep=1)
    return logits[:, -1].float(), [cache[resid_pre_hook(layer)] for layer in range(len(model.blocks))]


def last_logits_from(
    model: TransformerBridge,
    layer: int,
    residual: Float[Tensor, "batch pos d_model"],
    attention_mask: Int[Tensor, "batch pos"],
    hooks: HookList,
) -> Float[Tensor, "batch d_vocab"]:
    """Last-position logits (float32) of the model run from block ``layer`` on ``residual``, with
    ``hooks`` (on block ``layer`` or later) applied; only the last position is unembedded."""
    with only_blocks_from(model, layer):
        logits = model.run_with_hooks(
            residual,
            fwd_hooks=list(hooks),  # a copy typed as TransformerLens declares it (list is invariant)
            start_at_layer=layer,
            attention_mask=attention_mask,
            position_ids=position_ids(attention_mask),
            logits_to_keep=1,
        )
    return logits[:, -1].float()
