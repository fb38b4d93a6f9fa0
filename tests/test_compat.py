"""Cached generation through the bridge is right on every transformers release the package allows.

transformers 5.24 renamed the KV-cache keyword (``past_key_values`` -> ``cache``); TransformerLens
4.3's attention bridge read only the old name, so cached generation silently ignored the prompt
after the first token. These tests pin the fix and the self-check that guards the next break.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from safeseek_tl.compat import GenerationMismatchError, check_cached_generation, greedy_generate, library_versions
from safeseek_tl.data import tokenize_prompts
from safeseek_tl.generation import generate
from safeseek_tl.readout import CircuitReader
from safeseek_tl.units import Circuit

PROMPTS = ["tell me how to bake a cake ?", "steal a car", "how to do it , sure ?"]


def _left_padded(gqa):
    tokens = tokenize_prompts(gqa.chat, PROMPTS)
    assert (tokens.attention_mask[:, 0] == 0).any(), "the batch must hold a left-padded row"
    return tokens.input_ids, tokens.attention_mask


def test_bridge_generation_with_cache_equals_without_and_equals_plain_transformers(gqa, gqa_dir):
    ids, mask = _left_padded(gqa)
    cached = greedy_generate(gqa.model, ids, mask, gqa.tokenizer, max_new_tokens=10, use_cache=True)
    uncached = greedy_generate(gqa.model, ids, mask, gqa.tokenizer, max_new_tokens=10, use_cache=False)
    plain = greedy_generate(AutoModelForCausalLM.from_pretrained(gqa_dir).eval(), ids, mask, gqa.tokenizer, max_new_tokens=10)
    assert cached.shape == (len(PROMPTS), ids.shape[1] + 10)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, plain)


def test_circuit_reader_gives_one_readout_per_generated_batch(gqa):
    circuit = Circuit.from_units(gqa.shape, heads=[(0, 1)], neurons=[(1, 3)])
    readouts = []
    with CircuitReader(gqa, [circuit], on_readout=readouts.append):
        generate(gqa.model, gqa.chat, PROMPTS, max_new_tokens=5, batch_size=2, progress=False)
    # two batches (2 + 1 prompts); the 4 decoding steps of each are not new prompts
    assert [len(readout) for readout in readouts] == [2, 1]


def test_the_self_check_stops_on_a_broken_cache_naming_the_versions(gqa_dir):
    from safeseek_tl.models import load_model

    loaded = load_model(gqa_dir)
    hf_model = loaded.model.original_model
    # break the cache as transformers 5.24 did with TransformerLens 4.3: every attention layer
    # forgets what it was given, so each decoding step attends to itself alone
    for module in loaded.model.modules():
        if "_update_kv_cache" in vars(module):
            module._update_kv_cache = lambda k, v, **kwargs: (k, v)
    hf_model._safeseek_cached_generation_checked = False
    with pytest.raises(GenerationMismatchError) as error:
        check_cached_generation(loaded.model, loaded.tokenizer)
    assert library_versions() in str(error.value)
    assert "transformers" in library_versions() and "transformer-lens" in library_versions()
