"""Scores, Circuit and ModelShape pinned on tiny hand-made inputs (gaps found by mutation testing:
``make mutation MODULES=units``). Every expected value below is worked out by hand."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from safeseek_tl import Circuit, ModelShape, Scores, ShapeMismatchError
from safeseek_tl._io import write_safetensors
from safeseek_tl.errors import InputError

SHAPE = ModelShape(n_layers=2, n_heads=3, d_mlp=4, model_name="toy")


def _scores() -> Scores:
    # heads, flattened: 0.1 0.9 0.3 | 0.8 0.2 0.05 -> order 1, 3, 2, 4, 0, 5
    heads = torch.tensor([[0.1, 0.9, 0.3], [0.8, 0.2, 0.05]])
    neurons = torch.arange(8, dtype=torch.float32).view(2, 4)  # 0..7, highest last
    return Scores(SHAPE, heads=heads, neurons=neurons, method="toy")


# ---- ModelShape ----

def test_shape_of_reads_the_config_and_the_name():
    model = SimpleNamespace(cfg=SimpleNamespace(n_layers=2.0, n_heads=3, d_mlp="4", model_name="tiny"))
    assert ModelShape.of(model) == ModelShape(2, 3, 4, "tiny")
    assert ModelShape.of(model, model_name="other") == ModelShape(2, 3, 4, "other")
    assert ModelShape.of(model, model_name="") == ModelShape(2, 3, 4, "")
    nameless = SimpleNamespace(cfg=SimpleNamespace(n_layers=1, n_heads=2, d_mlp=5))
    assert ModelShape.of(nameless) == ModelShape(1, 2, 5, "")
    unnamed = SimpleNamespace(cfg=SimpleNamespace(n_layers=1, n_heads=2, d_mlp=5, model_name=None))
    assert ModelShape.of(unnamed).model_name == ""


def test_shape_from_dict_defaults_and_names_its_source():
    assert ModelShape.from_dict({"n_layers": 1, "n_heads": 2, "d_mlp": 3}) == ModelShape(1, 2, 3, "")
    with pytest.raises(InputError, match=r"^shape: field 'model' needs integer"):
        ModelShape.from_dict({"n_layers": 1})


# ---- Scores ----

def test_scores_of_one_granularity():
    only_neurons = Scores(SHAPE, neurons=torch.ones(2, 4))
    assert only_neurons.heads is None and only_neurons.kinds == ("neurons",)
    only_heads = Scores(SHAPE, heads=torch.ones(2, 3))
    assert only_heads.neurons is None and only_heads.kinds == ("heads",)


def test_scores_shape_errors_name_the_granularity():
    with pytest.raises(ShapeMismatchError, match=r"^head scores has shape \(2, 4\), expected \(2, 3\)$"):
        Scores(SHAPE, heads=torch.zeros(2, 4))
    with pytest.raises(ShapeMismatchError, match=r"^neuron scores has shape \(2, 3\), expected \(2, 4\)$"):
        Scores(SHAPE, heads=torch.zeros(2, 3), neurons=torch.zeros(2, 3))


def test_scores_metadata_that_is_not_json_is_saved_as_text(tmp_path):
    scores = Scores(SHAPE, heads=torch.zeros(2, 3), metadata={"file": Path("a") / "b"})
    scores.save(tmp_path / "s.safetensors")
    assert Scores.load(tmp_path / "s.safetensors").metadata == {"file": str(Path("a") / "b")}


def test_scores_file_without_method_or_metadata(tmp_path):
    path = tmp_path / "bare.safetensors"
    write_safetensors(path, {"heads": torch.ones(2, 3)}, {"model": '{"n_layers": 2, "n_heads": 3, "d_mlp": 4}'})
    loaded = Scores.load(path)
    assert (loaded.method, loaded.metadata, loaded.shape) == ("", {}, ModelShape(2, 3, 4))


def test_scores_load_errors_name_the_file(tmp_path):
    path = tmp_path / "s.safetensors"
    write_safetensors(path, {"heads": torch.ones(2, 3)}, {"model": '{"n_layers": 2}'})
    with pytest.raises(InputError, match=r"^" + str(path).replace("\\", "\\\\") + r": field 'model' needs"):
        Scores.load(path)
    _scores().save(path)
    with pytest.raises(ShapeMismatchError, match=r"^scores file .*s\.safetensors was made for a model"):
        Scores.load(path, expected=ModelShape(2, 3, 5))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    with pytest.raises(InputError, match=r"not a readable safetensors scores file"):
        Scores.load(bad)


# ---- selection ----

def test_top_k_of_none_and_of_all():
    scores = _scores()
    assert len(Circuit.top_k(scores, heads=0)) == 0
    everything = Circuit.top_k(scores, heads=6, neurons=8)
    assert (everything.n_heads, everything.n_neurons) == (6, 8)
    with pytest.raises(InputError, match="cannot select 7 units out of 6"):
        Circuit.top_k(scores, heads=7)


def test_top_k_breaks_ties_by_position():
    # 100 neurons in one layer: every third one scores 1, the rest 0. The 10 selected are the
    # 10 first ones of the 34 tied at 1: positions 0, 3, ..., 27.
    shape = ModelShape(n_layers=1, n_heads=1, d_mlp=100)
    neurons = torch.zeros(1, 100)
    neurons[0, ::3] = 1.0
    top = Circuit.top_k(Scores(shape, neurons=neurons), neurons=10)
    assert top.neuron_list == [[0, i] for i in range(0, 30, 3)]
    # and among units tied at 0, the first ones come first too
    top = Circuit.top_k(Scores(shape, neurons=neurons), neurons=36)  # the 34 ones, then zeros 1 and 2
    assert [i for _, i in top.neuron_list] == sorted([*range(0, 100, 3), 1, 2])


def test_selection_records_method_and_rule():
    scores = _scores()
    assert Circuit.top_k(scores, heads=2).metadata == {"method": "toy", "selection": {"top_k": {"heads": 2}}}
    assert Circuit.top_fraction(scores, neurons=0.5).metadata == {
        "method": "toy",
        "selection": {"top_fraction": {"neurons": 0.5}},
    }
    assert Circuit.above(scores, 0.5).metadata == {
        "method": "toy",
        "selection": {"threshold": {"heads": 0.5, "neurons": 0.5}},
    }


def test_above_is_strictly_above():
    scores = _scores()
    circuit = Circuit.above(scores, 0.8)  # 0.8 itself is not above 0.8; neurons 1..7 are
    assert circuit.head_list == [[0, 1]]
    assert circuit.n_neurons == 7


def test_top_fraction_bounds():
    scores = _scores()
    assert len(Circuit.top_fraction(scores, heads=0.0)) == 0
    assert Circuit.top_fraction(scores, heads=1.0).n_heads == 6
    with pytest.raises(InputError, match=r"^top_fraction: heads must be a fraction in \[0, 1\], got 1.5$"):
        Circuit.top_fraction(scores, heads=1.5)
    with pytest.raises(InputError, match=r"^top_fraction: neurons must be a fraction in \[0, 1\], got -0.1$"):
        Circuit.top_fraction(scores, neurons=-0.1)


# ---- Circuit ----

def test_circuit_converts_its_tensors_to_bool_and_checks_their_shapes():
    circuit = Circuit(SHAPE, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]), torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0]]))
    assert circuit.heads.dtype == torch.bool and circuit.neurons.dtype == torch.bool
    assert circuit.head_list == [[0, 0], [1, 2]] and circuit.neuron_list == [[0, 1]]
    with pytest.raises(ShapeMismatchError, match=r"^circuit heads has shape \(3, 3\), expected \(2, 3\)$"):
        Circuit(SHAPE, torch.zeros(3, 3, dtype=torch.bool), torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ShapeMismatchError, match=r"^circuit neurons has shape \(2, 5\), expected \(2, 4\)$"):
        Circuit(SHAPE, torch.zeros(2, 3, dtype=torch.bool), torch.zeros(2, 5, dtype=torch.bool))


def test_from_units_bounds_and_types():
    with pytest.raises(ShapeMismatchError, match="outside a model with 2 layers x 3 heads"):
        Circuit.from_units(SHAPE, heads=[[0, 3]])  # head 3 of 3 (a neuron index, 3 < 4, would fit)
    with pytest.raises(ShapeMismatchError, match=r"^heads: unit \[2, 0\] is outside"):
        Circuit.from_units(SHAPE, heads=[[2, 0]])
    with pytest.raises(ShapeMismatchError, match=r"^neurons: unit \[0, 4\] is outside a model with 2 layers x 4 neurons"):
        Circuit.from_units(SHAPE, neurons=[[0, 4]])
    with pytest.raises(InputError, match=r"^heads: each unit must be \[layer, index\]"):
        Circuit.from_units(SHAPE, heads=[[0, 1.0]])
    with pytest.raises(InputError, match=r"^neurons: each unit must be"):
        Circuit.from_units(SHAPE, neurons=[[0, True]])
    corner = Circuit.from_units(SHAPE, heads=[[1, 2]], neurons=[[1, 3]])
    assert (corner.head_list, corner.neuron_list) == ([[1, 2]], [[1, 3]])


def test_len_complement_and_set_algebra():
    a = Circuit.from_units(SHAPE, heads=[[0, 0], [1, 1]], neurons=[[0, 1]])
    assert len(a) == 3
    rest = a.complement()
    assert (rest.n_heads, rest.n_neurons) == (4, 7)
    assert [0, 1] not in rest.neuron_list and [1, 1] not in rest.head_list
    with pytest.raises(ShapeMismatchError, match="^the other circuit was made for"):
        a | Circuit.empty(ModelShape(2, 3, 5))


def test_jaccard_and_precision_recall_of_empty_sets():
    empty = Circuit.empty(SHAPE)
    some = Circuit.from_units(SHAPE, heads=[[0, 0]], neurons=[[0, 1]])
    assert empty.jaccard(Circuit.empty(SHAPE)) == 1.0
    assert some.jaccard(empty) == 0.0
    assert empty.precision_recall(some) == (1.0, 0.0)
    assert some.precision_recall(empty) == (0.0, 1.0)
    assert empty.precision_recall(Circuit.empty(SHAPE)) == (1.0, 1.0)


def test_repr_counts_and_percentages():
    circuit = Circuit.from_units(SHAPE, heads=[[0, 0]], neurons=[[0, 0], [1, 1]])
    assert repr(circuit) == "Circuit(1 heads (16.67%), 2 neurons (25.00%), model=toy)"
    assert repr(Circuit.empty(ModelShape(1, 2, 4))) == "Circuit(0 heads (0.00%), 0 neurons (0.00%), model=?)"


def test_to_dict_counts_and_save_with_any_metadata(tmp_path):
    circuit = Circuit.from_units(SHAPE, heads=[[0, 2]], neurons=[[1, 0], [1, 3]], source=Path("x"))
    data = circuit.to_dict()
    assert (data["n_heads"], data["n_neurons"]) == (1, 2)
    circuit.save(tmp_path / "c.json")
    assert Circuit.load(tmp_path / "c.json").metadata == {"source": "x"}


def test_from_dict_missing_lists_and_the_shape_it_is_given():
    only_neurons = Circuit.from_dict({"model": SHAPE.to_dict(), "neurons": [[0, 1]]})
    assert (only_neurons.head_list, only_neurons.neuron_list) == ([], [[0, 1]])
    only_heads = Circuit.from_dict({"model": SHAPE.to_dict(), "heads": [[1, 0]]})
    assert (only_heads.head_list, only_heads.neuron_list) == ([[1, 0]], [])
    shapeless = Circuit.from_dict({"heads": [[0, 1]]}, expected=SHAPE)
    assert shapeless.shape == SHAPE and shapeless.head_list == [[0, 1]]
    with pytest.raises(InputError, match=r"^circuit: a circuit file must hold a JSON object$"):
        Circuit.from_dict([])
    with pytest.raises(InputError, match=r"^circuit: field 'neurons' must be a list"):
        Circuit.from_dict({"model": SHAPE.to_dict(), "neurons": "ab"})
