"""Scores and Circuit: selection, set algebra, persistence, shape checks."""

from __future__ import annotations

import json

import pytest
import torch

from safeseek_tl import Circuit, ModelShape, Scores, ShapeMismatchError

SHAPE = ModelShape(n_layers=2, n_heads=3, d_mlp=4, model_name="toy")


def _scores() -> Scores:
    heads = torch.tensor([[0.1, 0.9, 0.3], [0.8, 0.2, 0.05]])
    neurons = torch.arange(8, dtype=torch.float32).view(2, 4)
    return Scores(SHAPE, heads=heads, neurons=neurons, method="toy", metadata={"seed": 1})


def test_scores_round_trip(tmp_path):
    scores = _scores()
    scores.save(tmp_path / "s.safetensors")
    loaded = Scores.load(tmp_path / "s.safetensors", expected=SHAPE)
    torch.testing.assert_close(loaded.heads, scores.heads)
    torch.testing.assert_close(loaded.neurons, scores.neurons)
    assert (loaded.method, loaded.metadata, loaded.shape) == ("toy", {"seed": 1}, SHAPE)


def test_scores_of_another_model_are_refused(tmp_path):
    _scores().save(tmp_path / "s.safetensors")
    with pytest.raises(ShapeMismatchError, match=r"\(2, 3, 4\)"):
        Scores.load(tmp_path / "s.safetensors", expected=ModelShape(2, 3, 5))
    with pytest.raises(ShapeMismatchError, match="head scores"):
        Scores(SHAPE, heads=torch.zeros(3, 3))


def test_scores_load_rejects_a_non_safetensors_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors"):
        Scores.load(bad)


def test_selection_rules():
    scores = _scores()
    top = Circuit.top_k(scores, heads=2, neurons=3)
    assert top.head_list == [[0, 1], [1, 0]]
    assert top.neuron_list == [[1, 1], [1, 2], [1, 3]]
    frac = Circuit.top_fraction(scores, heads=0.5)
    assert frac.n_heads == 3 and frac.n_neurons == 0
    above = Circuit.above(scores, 0.5)
    assert above.head_list == [[0, 1], [1, 0]] and above.n_neurons == 7
    with pytest.raises(ValueError, match="cannot select"):
        Circuit.top_k(scores, heads=7)
    with pytest.raises(ValueError, match="no neurons"):
        Circuit.top_k(Scores(SHAPE, heads=scores.heads), neurons=1)


def test_top_k_breaks_ties_by_position():
    scores = Scores(SHAPE, heads=torch.ones(2, 3))
    assert Circuit.top_k(scores, heads=2).head_list == [[0, 0], [0, 1]]


def test_set_algebra_and_metrics():
    a = Circuit.from_units(SHAPE, heads=[[0, 0], [0, 1]], neurons=[[1, 1]])
    b = Circuit.from_units(SHAPE, heads=[[0, 1], [1, 2]])
    assert (a | b).head_list == [[0, 0], [0, 1], [1, 2]]
    assert (a & b).head_list == [[0, 1]]
    assert (a - b).head_list == [[0, 0]] and (a - b).n_neurons == 1
    assert a.complement().n_heads == 4
    assert a.jaccard(b) == pytest.approx(1 / 4)
    assert a.jaccard(b, kinds=("heads",)) == pytest.approx(1 / 3)
    precision, recall = b.precision_recall(a)
    assert (precision, recall) == (pytest.approx(0.5), pytest.approx(1 / 3))
    assert a.fraction("heads") == pytest.approx(2 / 6)


def test_circuit_round_trip_and_file_format(tmp_path):
    circuit = Circuit.from_units(SHAPE, heads=[[1, 2]], neurons=[[0, 3]], method="toy")
    circuit.save(tmp_path / "c.json")
    raw = json.loads((tmp_path / "c.json").read_text())
    assert raw["heads"] == [[1, 2]] and raw["neurons"] == [[0, 3]] and raw["model"]["d_mlp"] == 4
    loaded = Circuit.load(tmp_path / "c.json", expected=SHAPE)
    assert loaded.jaccard(circuit) == 1.0 and loaded.metadata["method"] == "toy"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"heads": [[5, 0]], "model": SHAPE.to_dict()}, "outside a model"),
        ({"heads": [[0]], "model": SHAPE.to_dict()}, "two integers"),
        ({"heads": "x", "model": SHAPE.to_dict()}, "field 'heads'"),
        ({"heads": [[0, 0]]}, "missing field 'model'"),
        ({"heads": [], "model": {"n_layers": 2}}, "field 'model'"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_circuit_files_are_refused_with_the_file_and_field(tmp_path, payload, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=message) as info:
        Circuit.load(path)
    assert "bad.json" in str(info.value)


def test_circuit_for_another_model_is_refused(tmp_path):
    Circuit.from_units(SHAPE, heads=[[0, 0]]).save(tmp_path / "c.json")
    with pytest.raises(ShapeMismatchError, match="circuit"):
        Circuit.load(tmp_path / "c.json", expected=ModelShape(4, 3, 4, "bigger"))


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{\n  "heads": [[0, 0],\n}')
    with pytest.raises(ValueError, match=r"c.json:3"):
        Circuit.load(path)


def test_default_budget_is_3_percent_of_heads_and_1_percent_of_neurons_unless_chosen():
    from safeseek_tl.units import default_budget

    # 4 x 8 = 32 heads: 3% = 0.96 -> 1; 4 x 384 = 1536 neurons: 1% = 15.36 -> 15
    tiny = ModelShape(n_layers=4, n_heads=8, d_mlp=384)
    both = Scores(tiny, heads=torch.zeros(4, 8), neurons=torch.zeros(4, 384))
    assert default_budget(both) == {"heads": 1, "neurons": 15}
    assert default_budget(both, heads=5) == {"heads": 5, "neurons": 15}
    assert default_budget(both, neurons=0) == {"heads": 1, "neurons": 0}
    # 30 x 9 = 270 heads: 8.1 -> 8; only the granularities the scores have
    assert default_budget(Scores(ModelShape(30, 9, 1536), heads=torch.zeros(30, 9))) == {"heads": 8}
    # 2 x 3 heads and 2 x 4 neurons round to 0: at least one of each
    assert default_budget(_scores()) == {"heads": 1, "neurons": 1}
