"""Cached generation through the bridge is right on every transformers release the package allows.

transformers 5.24 renamed the KV-cache keyword (``past_key_values`` -> ``cache``); TransformerLens
4.3's attention bridge read only the old name, so cached generation silently ignored the prompt
after the first token. These tests pin the fix and the self-check that guards the next break.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib.metadata import version

import pytest
import torch
from transformers import AutoModelForCausalLM

from safeseek_tl import compat
from safeseek_tl.compat import GENERATION_CHECK_FILE, GenerationMismatchError, check_cached_generation, greedy_generate, library_versions
from safeseek_tl.data import tokenize_prompts
from safeseek_tl.generation import generate
from safeseek_tl.models import load_model
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


def _count_self_checks(monkeypatch) -> list[bool]:
    """Each self-check generates once without the cache (nothing else in compat does): count those."""
    calls: list[bool] = []
    real = compat.greedy_generate

    def spy(*args, **kwargs):
        if kwargs.get("use_cache") is False:
            calls.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(compat, "greedy_generate", spy)
    return calls


def _converted_copy(gqa_dir, tmp_path, monkeypatch):
    """The tiny model as if converted by the library: a folder inside a fresh cache."""
    monkeypatch.setenv("SAFESEEK_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "gguf" / "tiny-0123"
    shutil.copytree(gqa_dir, folder)
    return folder


def test_a_passed_self_check_is_remembered_for_the_same_versions_only(gqa_dir, tmp_path, monkeypatch):
    folder = _converted_copy(gqa_dir, tmp_path, monkeypatch)
    checks = _count_self_checks(monkeypatch)
    loaded = load_model(folder)
    assert len(checks) == 1
    marker = json.loads((folder / GENERATION_CHECK_FILE).read_text())
    installed = {name: version(name) for name in ("transformers", "transformer-lens", "torch")}
    assert marker["libraries"] == installed and (marker["device"], marker["dtype"]) == ("cpu", "torch.float32")
    config = folder / "config.json"
    assert [config.name, config.stat().st_size, config.stat().st_mtime_ns] in marker["files"]

    loaded = load_model(folder)
    generate(loaded.model, loaded.chat, ["steal a car"], max_new_tokens=2, progress=False)
    assert len(checks) == 1, "the second load and its generation must not check again"

    monkeypatch.setattr(compat, "version", lambda name: "99.0" if name == "transformers" else version(name))
    load_model(folder)
    assert len(checks) == 2, "another transformers release checks again"
    assert json.loads((folder / GENERATION_CHECK_FILE).read_text())["libraries"]["transformers"] == "99.0"
    load_model(folder)
    assert len(checks) == 2
    monkeypatch.setattr(compat, "version", version)
    load_model(folder)
    assert len(checks) == 3, "going back to the installed release checks again too"


def test_other_weights_or_an_unreadable_marker_check_again_and_user_folders_are_not_written(gqa_dir, tmp_path, monkeypatch):
    folder = _converted_copy(gqa_dir, tmp_path, monkeypatch)
    checks = _count_self_checks(monkeypatch)
    load_model(folder)
    weights = next(folder.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1))
    load_model(folder)
    assert len(checks) == 2, "weights written again check again"
    (folder / GENERATION_CHECK_FILE).write_text("{not json")
    load_model(folder)
    assert len(checks) == 3 and json.loads((folder / GENERATION_CHECK_FILE).read_text())["device"] == "cpu"
    load_model(gqa_dir)
    load_model(gqa_dir)
    assert len(checks) == 5 and not (gqa_dir / GENERATION_CHECK_FILE).exists()
