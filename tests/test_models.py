"""Model loading, generation through hooks, and the CLI's basic commands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from safeseek_tl import Circuit, ModelNotAvailableError, ablated, generate, load_model

from .conftest import save_random_gqa_model


def test_local_folder_loads_frozen_in_eval_mode(gqa):
    assert not gqa.model.training
    assert all(not p.requires_grad for p in gqa.model.parameters())
    assert gqa.shape.n_heads == 4 and gqa.shape.d_mlp == 96
    assert gqa.model.cfg.n_key_value_heads == 2
    assert gqa.chat.prompt_text("hi").endswith("<|assistant|>")


def test_bridge_logits_equal_the_hugging_face_model(gqa, gqa_dir, tokens):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(gqa_dir, attn_implementation="eager")
    torch.testing.assert_close(gqa.model(tokens), hf(tokens).logits, rtol=1e-5, atol=1e-5)


def test_a_device_map_reaches_the_bridge_loader(gqa, gqa_dir, tokens, tmp_path):
    from safeseek_tl.baselines.ships import ships_scores
    from safeseek_tl.masks import masked

    # accelerate dispatches the weights as the bridge loads them; with no GPU in CI, layer 1 is
    # offloaded to disk (its weights come in at each forward), which takes the same hooks
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    placed = load_model(gqa_dir, device_map=device_map, offload_folder=str(tmp_path))
    assert placed.model.original_model.hf_device_map == device_map
    assert not placed.model.training and all(not p.requires_grad for p in placed.model.parameters())
    torch.testing.assert_close(placed.model(tokens), gqa.model(tokens), rtol=0, atol=1e-6)
    heads = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0]])
    with masked(placed.model, heads=heads), torch.no_grad():
        placed_masked = placed.model(tokens)
    with masked(gqa.model, heads=heads), torch.no_grad():
        torch.testing.assert_close(placed_masked, gqa.model(tokens), rtol=0, atol=1e-6)
    prompts = ["tell me how to steal a car", "bake a cake"]
    torch.testing.assert_close(ships_scores(placed, prompts, progress=False).heads, ships_scores(gqa, prompts, progress=False).heads)


def test_a_model_built_in_memory_refuses_a_device_map(gqa_dir):
    from safeseek_tl.compat import boot_bridge

    with pytest.raises(ValueError, match="built in memory"):
        boot_bridge(gqa_dir, "delta organism", "cpu", torch.float32, hf_model=object(), n_devices=2)


def test_the_model_is_on_the_requested_device_before_the_bridge_wraps_it(gqa_dir, monkeypatch):
    """The bridge leaves a preloaded model where it is: the loader must move it (CUDA runs once ran on the CPU)."""
    from transformer_lens.model_bridge import TransformerBridge

    class Booted(Exception):
        pass

    def spy(*args, hf_model, **kwargs):
        raise Booted({p.device.type for p in hf_model.parameters()})

    monkeypatch.setattr(TransformerBridge, "boot_transformers", spy)
    with pytest.raises(Booted) as booted:  # "meta": a device other than the CPU that every machine has
        load_model(gqa_dir, device="meta")
    assert booted.value.args[0] == {"meta"}


def test_uncached_hub_name_says_it_is_not_available_offline():
    with pytest.raises(ModelNotAvailableError, match="nothing is downloaded"):
        load_model("no-such-org/no-such-model-xyz")


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="without config.json"):
        load_model(tmp_path)


def test_tokenizer_without_chat_template_warns(tmp_path):
    save_random_gqa_model(tmp_path, chat_template=None)
    with pytest.warns(UserWarning, match="no chat template"):
        loaded = load_model(tmp_path)
    assert loaded.chat.prompt_text("x") == "user: x\nassistant:"


def test_generation_is_greedy_batched_and_sees_ablation_hooks(gqa):
    prompts = ["bake a cake", "steal a car", "tell me how to do it"]
    first = generate(gqa.model, gqa.chat, prompts, max_new_tokens=6, batch_size=2, progress=False)
    again = generate(gqa.model, gqa.chat, prompts, max_new_tokens=6, batch_size=3, progress=False)
    assert first == again and len(first) == 3
    every_head = Circuit.from_units(gqa.shape, heads=[[layer, h] for layer in range(2) for h in range(4)], neurons=[[layer, n] for layer in range(2) for n in range(96)])
    with ablated(gqa.model, every_head):
        ablated_answers = generate(gqa.model, gqa.chat, prompts, max_new_tokens=6, progress=False)
    assert ablated_answers != first


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "safeseek_tl.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_help_for_each_command():
    for command in ([], ["info"], ["generate"], ["models"]):
        result = _cli(*command, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage" in result.stdout


def test_cli_reports_bad_input_in_one_line(gqa_dir, tmp_path):
    result = _cli("info", "--model", str(tmp_path / "missing-model"))
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr
    bad = tmp_path / "c.json"
    bad.write_text('{"heads": [[9, 9]], "model": {"n_layers": 2, "n_heads": 4, "d_mlp": 96}}')
    result = _cli("generate", "--model", str(gqa_dir), "--prompt", "hi", "--circuit", str(bad))
    assert result.returncode == 2 and "outside a model" in result.stderr


def test_cli_info_prints_the_shape(gqa_dir):
    result = _cli("info", "--model", str(gqa_dir))
    assert result.returncode == 0, result.stderr
    assert "heads        4 per layer (8 in all), 2 key/value heads" in result.stdout


def test_cli_discover_and_attribute_on_an_organism(tmp_path):
    from safeseek_tl.organisms import data_file

    data = str(data_file("backdoor", "val"))
    out = tmp_path / "bd"
    benign = tmp_path / "benign.jsonl"  # 12 benign records: the check judges as many as the 10 validation records
    benign.write_text("".join(data_file("benign", "val").read_text().splitlines(keepends=True)[:12]))
    result = _cli(
        "discover", "--model", "organism:tiny-backdoor", "--data", data, "--scenario", "backdoor", "--out", str(out), "--epochs", "1", "--val-size", "10",
        "--benign", str(benign), "--set", "loss.w_overlap=0.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "heads in circuit" in result.stdout
    assert "10 validation records, 10 benign prompts" in " ".join(result.stdout.replace("│", " ").split())
    for name in ("circuit.json", "scores.safetensors", "masks.safetensors", "history.json", "config.json"):
        assert (out / name).is_file()
    assert json.loads((out / "config.json").read_text())["loss"]["w_overlap"] == 0.5
    result = _cli("attribute", "--method", "ships", "--model", "organism:tiny-backdoor", "--data", data, "--scenario", "backdoor", "--out", str(tmp_path / "ships"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ships" / "circuit.json").is_file() and "ships: Circuit(1 heads" in result.stdout
    result = _cli("discover", "--model", "organism:tiny-backdoor", "--data", data, "--scenario", "jailbreak", "--out", str(out))
    assert result.returncode == 2 and "scenario must be one of" in result.stderr
