"""MIB export: binary circuits at the submission sizes and importance scores, read back unchanged."""

from __future__ import annotations

import json

import pytest
import torch

from safeseek_tl.mib import SUBMISSION_GRID, export_circuits, export_scores, load_graph, submission_circuit
from safeseek_tl.units import ModelShape, Scores

SHAPE = ModelShape(2, 4, 6)  # 8 heads, 12 neurons
SCORES = Scores(SHAPE, heads=torch.tensor([[0.5, 0.1, 0.9, 0.3], [0.8, 0.2, 0.7, 0.4]]), neurons=torch.arange(12.0).view(2, 6) / 10)


def test_submission_sizes_are_upper_bounds():
    # 50% of 8 heads = 4, of 12 neurons = 6; 10%: 0 heads (0.8 rounds down), 1 neuron; 0%: nothing
    assert submission_circuit(SCORES, "both", 50).head_list == [[0, 0], [0, 2], [1, 0], [1, 2]]
    assert submission_circuit(SCORES, "both", 50).n_neurons == 6
    ten = submission_circuit(SCORES, "both", 10)
    assert ten.n_heads == 0 and ten.neuron_list == [[1, 5]]
    assert len(submission_circuit(SCORES, "both", 0)) == 0


@pytest.mark.parametrize("granularity", ["heads", "neurons", "both"])
def test_binary_circuits_round_trip(tmp_path, granularity):
    paths = export_circuits(SCORES, tmp_path, d_model=32, granularity=granularity)
    assert sorted(paths) == sorted(SUBMISSION_GRID) and len(list(tmp_path.iterdir())) == 10
    for k, path in paths.items():
        circuit, scores = load_graph(path, SHAPE)
        expected = submission_circuit(SCORES, granularity, k)
        assert torch.equal(circuit.heads, expected.heads) and torch.equal(circuit.neurons, expected.neurons), k
        assert scores is None
    graph = json.loads(paths[50].read_text())
    assert graph["cfg"] == {"n_layers": 2, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 32, "d_mlp": 6}
    assert graph["nodes"]["a0.h2"]["in_graph"] is (granularity != "neurons") and graph["edges"] == {}
    # MIB's view of an MLP node: in the graph when any of its neurons is (the top 6 of 12 are all in
    # layer 1), and always when the neurons are not among the units ablated
    assert (graph["nodes"]["m0"]["in_graph"], graph["nodes"]["m1"]["in_graph"]) == ((True, True) if granularity == "heads" else (False, True))


def test_importance_scores_round_trip(tmp_path):
    path = export_scores(SCORES, tmp_path, d_model=32)
    circuit, scores = load_graph(path, SHAPE)
    assert torch.equal(scores.heads, SCORES.heads) and torch.equal(scores.neurons, SCORES.neurons)
    assert len(circuit) == 8 + 12
    node = json.loads(path.read_text())["nodes"]["m1"]
    assert node["score"] == pytest.approx(sum(range(6, 12)) / 10)  # MIB's MLP node: the sum of its neurons


def test_a_file_for_another_model_is_refused(tmp_path):
    path = export_scores(SCORES, tmp_path, d_model=32)
    with pytest.raises(ValueError, match="field 'cfg' is for n_layers=2, n_heads=4; the model has 3, 4"):
        load_graph(path, ModelShape(3, 4, 6))
    path.write_text(json.dumps({"cfg": {"n_layers": 2, "n_heads": 4}, "nodes": {}}))
    with pytest.raises(ValueError, match="node 'a0.h0' is missing"):
        load_graph(path, SHAPE)
