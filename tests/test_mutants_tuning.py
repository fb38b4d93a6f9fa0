"""Safety Circuit Tuning pinned on tiny inputs (gaps found by mutation testing: ``make mutation
MODULES=tuning``): applying a delta (names, shape checks, the model-name warning), the run summary,
settings bounds, batch order, bias entries, padding in a batch, checkpoints and wall time. A small
linear layer stands in for the model where no model is needed."""

from __future__ import annotations

import json
import time
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from safeseek_tl import BenignRecord, Circuit, ModelShape, ShapeMismatchError, load_model, tuning
from safeseek_tl.data import IGNORE_INDEX
from safeseek_tl.delta import ParameterDelta, SliceDelta
from safeseek_tl.errors import DataError, InputError
from safeseek_tl.parameters import apply_delta, parameter_masks
from safeseek_tl.tuning import TuneConfig, TuneResult, tune

SHAPE = ModelShape(1, 1, 1, "tiny")


def _loaded(name: str = "tiny") -> SimpleNamespace:
    """A stand-in for a loaded model: the bridge's wrapper adds '._original_component' to the names."""
    model = nn.Module()
    model.layer = nn.Module()
    model.layer._original_component = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        model.layer._original_component.weight.zero_()
    return SimpleNamespace(shape=SHAPE, name=name, model=SimpleNamespace(original_model=model))


def _delta(made_for: dict) -> ParameterDelta:
    # row 1 of the [3, 2] weight becomes [5, 6]
    return ParameterDelta({"layer.weight": SliceDelta(0, torch.tensor([1]), torch.tensor([[5.0, 6.0]]), (3, 2))}, {"model": made_for})


def _weight(loaded) -> torch.Tensor:
    return loaded.model.original_model.layer._original_component.weight


def test_apply_delta_writes_the_slice_under_the_wrapped_name():
    loaded = _loaded()
    apply_delta(loaded, _delta(SHAPE.to_dict()))
    assert _weight(loaded).tolist() == [[0.0, 0.0], [5.0, 6.0], [0.0, 0.0]]


@pytest.mark.parametrize(("made_for", "applied_to"), [("tiny", "tiny"), ("", "tiny"), ("tiny", "")])
def test_apply_delta_is_silent_unless_both_names_are_known_and_differ(made_for, applied_to):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_delta(_loaded(applied_to), _delta(ModelShape(1, 1, 1, made_for).to_dict()))


def test_apply_delta_warns_when_tuned_on_another_model():
    with pytest.warns(UserWarning, match="tuned on 'other' and is applied to 'tiny'"):
        apply_delta(_loaded("tiny"), _delta(ModelShape(1, 1, 1, "other").to_dict()))


def test_apply_delta_refuses_another_shape_and_a_bad_model_field():
    loaded = _loaded()
    with pytest.raises(ShapeMismatchError, match=r"^the parameter delta was made for a model with n_layers, n_heads, d_mlp = \(2, 1, 1\)"):
        apply_delta(loaded, _delta(ModelShape(2, 1, 1).to_dict()))
    with pytest.raises(InputError, match=r"^the parameter delta: field 'model' needs integer"):
        apply_delta(loaded, _delta({"n_layers": 1}))
    assert not _weight(loaded).any()  # nothing written


def test_summary_and_save(tmp_path):
    config = TuneConfig(steps=3)
    circuit = {"heads": [[0, 0]], "neurons": []}
    delta = ParameterDelta({"layer.weight": SliceDelta(0, torch.tensor([0]), torch.ones(1, 2), (3, 2))}, {"model": SHAPE.to_dict(), "circuit": circuit})
    result = TuneResult(config, delta, trainable_params=5, total_params=20, losses=[3.0, 2.0, 1.0], wall_s=1.5)
    expected = {
        "model": {"n_layers": 1, "n_heads": 1, "d_mlp": 1, "model_name": "tiny"},
        "config": {"mode": "only", "steps": 3, "lr": 1e-3, "batch_size": 16, "max_length": 128, "max_grad_norm": 1.0, "seed": 0},
        "circuit": circuit,
        "trainable_params": 5,
        "total_params": 20,
        "trainable_fraction": 0.25,
        "wall_s": 1.5,
        "loss_first": 3.0,
        "loss_last": 1.0,
        "losses": [3.0, 2.0, 1.0],
    }
    assert result.summary() == expected
    result.save(tmp_path)
    assert json.loads((tmp_path / "tune.json").read_text()) == expected
    saved = ParameterDelta.load(tmp_path / "delta.safetensors")
    assert saved.slices["layer.weight"].values.tolist() == [[1.0, 1.0]] and saved.metadata["circuit"] == circuit


# ---------------------------------------------------------------- settings, masks, batches


def test_config_bounds():
    TuneConfig(steps=1, batch_size=1, max_length=1, lr=1e-9, max_grad_norm=1e-9)  # the smallest allowed
    for bad, message in (({"max_grad_norm": 0.0}, "got 0.001 and 0.0"), ({"lr": 0.0}, "got 0.0 and 1.0"), ({"steps": 0}, "steps must be at least 1, got 0")):
        with pytest.raises(InputError, match=message):
            TuneConfig(**bad)


def test_tune_gives_each_pair_once_per_pass(gqa_dir, monkeypatch):
    # four pairs told apart by their completion, batches of two: each two steps are one pass
    records = [BenignRecord("tell me", word) for word in ("sure", "here", "cake", "car")]
    original, seen = tuning.completion_cross_entropy, []

    def loss(logits, labels):
        seen.extend(tuple(row[row != IGNORE_INDEX].tolist()) for row in labels)
        return original(logits, labels)

    monkeypatch.setattr(tuning, "completion_cross_entropy", loss)
    tune(load_model(gqa_dir), records, config=TuneConfig(mode="full", steps=4, batch_size=2), progress=False)
    assert len(seen) == 8 and len(set(seen[:4])) == 4 and set(seen[4:]) == set(seen[:4])


def _biased_llama() -> SimpleNamespace:
    """A loaded-model stand-in with biases on every projection: 2 layers, 4 query heads over 2
    key/value heads (d_head 16), d_mlp 96."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=16, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, attention_bias=True, mlp_bias=True)
    cfg = SimpleNamespace(n_heads=4, n_key_value_heads=2, d_head=16)
    return SimpleNamespace(model=SimpleNamespace(original_model=LlamaForCausalLM(config), cfg=cfg), shape=ModelShape(2, 4, 96))


def test_a_unit_owns_the_bias_entries_of_its_rows_and_the_default_mode_is_only():
    loaded = _biased_llama()
    circuit = Circuit.from_units(loaded.shape, heads=[[0, 1]], neurons=[[1, 5]])
    masks = parameter_masks(loaded, circuit)  # mode "only"
    q_bias = masks["model.layers.0.self_attn.q_proj.bias"]
    assert q_bias.shape == (64,) and q_bias[16:32].all() and int(q_bias.sum()) == 16
    for proj in ("gate_proj", "up_proj"):
        bias = masks[f"model.layers.1.mlp.{proj}.bias"]
        assert bias.shape == (96,) and bias[5] and int(bias.sum()) == 1
    # output biases are shared by every unit of the layer: no unit owns them
    assert "model.layers.0.self_attn.o_proj.bias" not in masks and "model.layers.1.mlp.down_proj.bias" not in masks
    assert not any("k_proj" in name or "v_proj" in name for name in masks)  # head 1 alone of group {0, 1}


# ---------------------------------------------------------------- a run (the conftest model)

RECORDS = [
    BenignRecord("tell me how to bake a cake", "sure , here is how to bake a cake ."),
    BenignRecord("how to do it ?", "here it is ."),
]


def test_the_first_loss_is_the_completion_loss_of_each_pair_run_alone(gqa_dir):
    # A batch of two pairs of different lengths is padded; the padding must change nothing: the
    # first step's loss (before any update) is the token-weighted mean of each pair's completion
    # cross-entropy with the pair run alone, unpadded.
    from safeseek_tl.data import IGNORE_INDEX, tokenize_pairs
    from safeseek_tl.metrics import completion_cross_entropy

    loaded = load_model(gqa_dir)
    total, count = 0.0, 0
    with torch.no_grad():
        for record in RECORDS:
            alone = tokenize_pairs(loaded.chat, [(record.prompt, record.response)], 128)
            assert alone.attention_mask.all()
            total += float(completion_cross_entropy(loaded.model(alone.input_ids), alone.labels, reduction="sum"))
            count += int((alone.labels[:, 1:] != IGNORE_INDEX).sum())
    result = tune(loaded, RECORDS, None, TuneConfig(mode="full", steps=1, batch_size=2), progress=False)
    assert result.losses[0] == pytest.approx(total / count, rel=1e-5)


def test_a_checkpoint_every_step_the_delta_metadata_and_the_wall_time(gqa_dir, tmp_path):
    loaded = load_model(gqa_dir)
    circuit = Circuit.from_units(loaded.shape, heads=[[0, 1]], neurons=[[1, 5]])
    config = TuneConfig(steps=2, lr=1e-2, batch_size=2)
    start = time.perf_counter()
    result = tune(loaded, RECORDS, circuit, config, checkpoint_dir=tmp_path, checkpoint_every=1, progress=False)
    elapsed = time.perf_counter() - start
    assert 0.0 < result.wall_s <= elapsed
    assert result.delta.metadata["circuit"] == {"heads": [[0, 1]], "neurons": [[1, 5]]}
    assert result.delta.metadata["mode"] == "only"
    # the checkpoint records the model's name: resuming under another name is refused, naming it
    renamed = load_model(gqa_dir)
    renamed.name = "renamed"
    with pytest.raises(InputError, match=r"other settings \(model: '.+' -> 'renamed'\)"):
        tune(renamed, RECORDS, Circuit.from_units(renamed.shape, heads=[[0, 1]], neurons=[[1, 5]]), config, checkpoint_dir=tmp_path,
             resume=True, progress=False)


def test_a_prompt_too_long_for_the_tuning_data_is_named(gqa_dir):
    loaded = load_model(gqa_dir)
    with pytest.raises(DataError, match=r"^tuning data: record 1: the prompt is"):
        tune(loaded, RECORDS[:1], None, TuneConfig(mode="full", steps=1, max_length=4), progress=False)
