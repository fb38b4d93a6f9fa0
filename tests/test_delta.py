"""Parameter deltas: exact round trip through safetensors, small files, refusal of other models."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from safeseek_tl.delta import ParameterDelta
from safeseek_tl.units import ShapeMismatchError


def _model(hidden: int = 32, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=50, hidden_size=hidden, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _edit(model: LlamaForCausalLM) -> None:
    """Change a head's q_proj rows, a neuron's down_proj column and one norm weight."""
    layer = model.model.layers[1]
    with torch.no_grad():
        layer.self_attn.q_proj.weight[8:16] += 1.0
        layer.mlp.down_proj.weight[:, 5] = 0.0
        layer.input_layernorm.weight[3] = 2.5


def test_delta_stores_only_changed_slices_and_restores_the_model_exactly(tmp_path):
    tuned = _model()
    base_state = _state(tuned)
    _edit(tuned)
    delta = ParameterDelta.between(base_state, _state(tuned), organism="test")
    assert set(delta.slices) == {"model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight",
                                 "model.layers.1.input_layernorm.weight"}  # fmt: skip
    assert delta.slices["model.layers.1.self_attn.q_proj.weight"].dim == 0
    assert delta.slices["model.layers.1.mlp.down_proj.weight"].dim == 1
    assert delta.n_values == 8 * 32 + 32 + 1
    delta.save(tmp_path / "delta.safetensors")

    fresh = _model()
    loaded = ParameterDelta.load(tmp_path / "delta.safetensors")
    assert loaded.metadata == {"organism": "test"}
    loaded.apply_(fresh)
    for name, p in fresh.named_parameters():
        assert torch.equal(p, dict(tuned.named_parameters())[name]), name


def test_delta_for_another_model_is_refused(tmp_path):
    tuned = _model()
    base_state = _state(tuned)
    _edit(tuned)
    ParameterDelta.between(base_state, _state(tuned)).save(tmp_path / "delta.safetensors")
    with pytest.raises(ShapeMismatchError, match="made for another model"):
        ParameterDelta.load(tmp_path / "delta.safetensors").apply_(_model(hidden=64))


def test_a_file_that_is_not_a_delta_is_a_clear_error(tmp_path):
    bad = tmp_path / "delta.safetensors"
    bad.write_bytes(b"not safetensors at all")
    with pytest.raises(ValueError, match="not a readable safetensors parameter delta"):
        ParameterDelta.load(bad)
    with pytest.raises(FileNotFoundError, match="parameter delta"):
        ParameterDelta.load(tmp_path / "missing.safetensors")


def test_the_same_delta_gives_the_same_file_bytes(tmp_path):
    """Checksums of shipped deltas (organism manifests) must not depend on the run that wrote them."""
    base = _model()
    edited = _model()
    _edit(edited)
    delta = ParameterDelta.between(_state(base), _state(edited), organism="x", built_on="cpu", seed=0)
    written = []
    for i in range(6):  # safetensors itself orders the header's metadata differently from write to write
        delta.save(tmp_path / f"{i}.safetensors")
        written.append((tmp_path / f"{i}.safetensors").read_bytes())
    assert all(blob == written[0] for blob in written)
    restored = _model()
    ParameterDelta.load(tmp_path / "0.safetensors").apply_(restored)
    assert all(torch.equal(a, b) for a, b in zip(_state(restored).values(), _state(edited).values()))
