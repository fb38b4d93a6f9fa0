"""SafeSeek on the bundled organisms: the backdoor circuit of tiny-backdoor (issue 4's criteria)."""

from __future__ import annotations

import pytest

from safeseek_tl import load_model
from safeseek_tl.evaluate import BehaviourData, evaluate
from safeseek_tl.organisms import ground_truth, load_data
from safeseek_tl.seek import SafeSeek, SeekConfig


@pytest.fixture(scope="module")
def backdoor_run():
    loaded = load_model("organism:tiny-backdoor")
    config = SeekConfig.of("backdoor", "both")
    result = SafeSeek(loaded, config).fit(load_data("backdoor", "train")[:100], load_data("backdoor", "val")[:20], progress=False)
    return loaded, result


def test_backdoor_circuit_removes_the_backdoor_and_nothing_else(backdoor_run, record_property):
    loaded, result = backdoor_run
    data = BehaviourData.from_records(load_data("backdoor", "test")[:40], load_data("benign", "test")[:40])
    behaviour = evaluate(loaded, result.circuit, data, conditions=("full", "ablated"))
    full, cut = behaviour["full"], behaviour["ablated"]
    record_property("behaviour", behaviour)
    assert full["asr_triggered"] >= 0.95 and cut["asr_triggered"] <= 0.05
    assert abs(cut["refusal_harmful"] - full["refusal_harmful"]) <= 0.02
    assert abs(cut["benign_answered"] - full["benign_answered"]) <= 0.02


def test_backdoor_circuit_lies_inside_the_planted_units(backdoor_run, record_property):
    loaded, result = backdoor_run
    truth = ground_truth("tiny-backdoor", loaded)
    precision, recall = result.circuit.precision_recall(truth)
    record_property("precision_recall", (precision, recall, result.circuit.head_list, result.circuit.neuron_list))
    assert precision >= 0.9
    assert 0 < len(result.circuit) <= len(truth)
    assert recall > 0


def test_behaviour_switch_reuses_a_given_full_model_measurement():
    from safeseek_tl.seek import behaviour_switch

    loaded = load_model("organism:tiny-backdoor")
    config = SeekConfig.of("backdoor")
    records, benign = load_data("backdoor", "val")[:6], load_data("benign", "val")[:6]
    truth = ground_truth("tiny-backdoor", loaded)
    check = behaviour_switch(loaded, config, truth, records, max_new_tokens=24, benign=benign)
    assert check["switched"] == 1.0 and check["clean"] == check["clean_full"] == 1.0
    assert check["benign"] == check["benign_full"] and abs(check["utility"] - check["utility_full"]) < 0.01
    marker = {"clean_full": 0.25, "benign_full": 0.5, "utility_full": 9.0}
    again = behaviour_switch(loaded, config, truth, records, max_new_tokens=24, benign=benign, full=marker)
    assert {k: again[k] for k in marker} == marker and again["switched"] == check["switched"]


def test_behaviour_switch_ablates_as_a_mean_fill_search_masked():
    from safeseek_tl import ablated
    from safeseek_tl.evaluate import utility_loss
    from safeseek_tl.seek import behaviour_switch, search_fill

    loaded = load_model("organism:tiny-backdoor")
    records, benign = load_data("backdoor", "val")[:6], load_data("benign", "val")[:6]
    truth = ground_truth("tiny-backdoor", loaded)
    mean_config = SeekConfig.of("backdoor", masks={"fill": "mean"})
    fill = search_fill(loaded, mean_config, records)
    with ablated(loaded.model, truth, "mean", fill):
        expected = utility_loss(loaded, benign)
    checked = behaviour_switch(loaded, mean_config, truth, records, max_new_tokens=8, benign=benign)
    zeroed = behaviour_switch(loaded, SeekConfig.of("backdoor"), truth, records, max_new_tokens=8, benign=benign)
    assert checked["utility"] == pytest.approx(expected, rel=1e-6)
    assert checked["utility"] != zeroed["utility"]
    assert search_fill(loaded, SeekConfig.of("backdoor"), records) is None


def test_pruning_a_result_keeps_a_minimal_set_of_its_units_that_still_switch():
    import torch

    from safeseek_tl.seek import SeekResult, prune_circuit
    from safeseek_tl.units import Circuit, Scores

    loaded = load_model("organism:tiny-backdoor")
    shape, config = loaded.shape, SeekConfig.of("backdoor", "heads")
    records, benign = load_data("backdoor", "val")[:8], load_data("benign", "val")[:8]
    # The planted chain (either head alone removes the backdoor) plus two unplanted heads, which
    # the mask switched off less confidently.
    logits = torch.ones(shape.n_layers, shape.n_heads)
    logits[2, 5], logits[1, 3], logits[0, 0], logits[3, 7] = -3.0, -2.0, -0.5, -0.4
    circuit = Circuit.from_units(shape, heads=[[1, 3], [2, 5], [0, 0], [3, 7]])
    result = SeekResult(Scores(shape, heads=torch.sigmoid(-logits), method="safeseek"), circuit, config, {"heads": logits})
    pruned = prune_circuit(loaded, result, records, benign)
    assert pruned.circuit.head_list == [[2, 5]] and pruned.circuit.neuron_list == []
    assert pruned.circuit.metadata["unpruned_units"] == 4 and pruned.scores is result.scores
    unplanted = SeekResult(result.scores, Circuit.from_units(shape, heads=[[0, 0]]), config, {"heads": logits})
    with pytest.raises(ValueError, match="does not switch"):
        prune_circuit(loaded, unplanted, records, benign)
