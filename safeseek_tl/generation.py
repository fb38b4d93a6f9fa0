"""Batched greedy generation through the bridge, so that any active hooks (masks, ablations) apply."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from safeseek_tl.chat import ChatFormatter
from safeseek_tl.compat import check_cached_generation, greedy_generate
from safeseek_tl.data import batch_slices, tokenize_prompts

if TYPE_CHECKING:  # imported for the annotations only: loading it takes seconds
    from transformer_lens.model_bridge import TransformerBridge


@torch.no_grad()
def generate(
    model: TransformerBridge,
    chat: ChatFormatter,
    prompts: Sequence[str],
    max_new_tokens: int = 32,
    batch_size: int = 16,
    progress: bool = True,
) -> list[str]:
    """Greedy completions of ``prompts`` (chat-templated, left-padded), decoded without special tokens.

    Runs Hugging Face ``generate`` on the bridge's wrapped model with a KV cache; the bridge's hook
    points sit inside that model, so hooks installed with ``model.hooks``, :func:`~safeseek_tl.masks.masked`
    or :func:`~safeseek_tl.ablation.ablated` act on every generated token. A per-row mask must have
    as many rows as ``batch_size`` (the last batch may be smaller: pass ``batch_size=len(prompts)``).
    ``model`` may also be a plain Hugging Face causal LM (used by the organism builds).

    A model not loaded by this library is first checked by
    :func:`~safeseek_tl.compat.check_cached_generation` (cached generation must equal uncached
    generation; :class:`~safeseek_tl.compat.GenerationMismatchError` names the installed versions).
    """
    tokenizer = chat.tokenizer
    tokens = tokenize_prompts(chat, prompts)
    device = next(model.parameters()).device
    check_cached_generation(model, tokenizer)
    outputs: list[str] = []
    for part in tqdm(batch_slices(len(prompts), batch_size), desc="generating", disable=not progress, leave=False):
        input_ids = tokens.input_ids[part].to(device)
        attention_mask = tokens.attention_mask[part].to(device)
        generated = greedy_generate(model, input_ids, attention_mask, tokenizer, max_new_tokens)
        new_tokens = generated[:, input_ids.shape[1] :]
        outputs.extend(text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return outputs
