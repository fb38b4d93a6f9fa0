"""evaluate() and compare() on the tiny organisms, where the right answer is known (small budgets)."""

from __future__ import annotations

import pytest
import torch

from safeseek_tl import load_model
from safeseek_tl.compare import compare, score_methods
from safeseek_tl.evaluate import BehaviourData, evaluate
from safeseek_tl.organisms import ground_truth, load_data
from safeseek_tl.units import Circuit, Scores

N = 12


@pytest.fixture(scope="module")
def backdoor():
    loaded = load_model("organism:tiny-backdoor")
    records = load_data("backdoor", "test")[:N]
    data = BehaviourData.from_records(records, load_data("benign", "test")[:N])
    return loaded, records, data, ground_truth("tiny-backdoor", loaded)


def test_evaluate_ablating_the_planted_units_removes_the_backdoor_only(backdoor):
    loaded, _, data, truth = backdoor
    results = evaluate(loaded, truth, data, max_new_tokens=24, conditions=("full", "ablated"))
    full, ablated = results["full"], results["ablated"]
    assert full["asr_triggered"] >= 0.9 and ablated["asr_triggered"] <= 0.1
    assert abs(full["refusal_harmful"] - ablated["refusal_harmful"]) <= 0.1
    assert abs(full["benign_answered"] - ablated["benign_answered"]) <= 0.1
    # zeroing units that were dormant before planting gives tiny-aligned back: benign utility is unchanged
    assert abs(ablated["utility_loss"] - full["utility_loss"]) < 0.01
    assert full["refusal_score_harmful"] > 0  # untriggered harmful prompts: refusal openings are likely


def test_compare_ships_finds_the_planted_heads_and_beats_a_random_ranking(backdoor):
    loaded, records, data, truth = backdoor
    shape = loaded.shape
    scored = score_methods(loaded, ["ships"], records, "backdoor")
    scored["random"] = _random_scores(shape)
    result = compare(loaded, scored, [2], "backdoor", data, truth=truth, max_new_tokens=24)
    rows = result.table.set_index("method")
    assert rows.loc["ships", "precision"] == 1.0 and rows.loc["ships", "recall"] == 1.0
    assert rows.loc["ships", "behaviour_change"] <= -0.8
    assert rows.loc["ships", "behaviour_change"] < rows.loc["random", "behaviour_change"]
    assert result.overlap[2].loc["ships", "ships"] == 1.0


def _random_scores(shape) -> Scores:
    generator = torch.Generator().manual_seed(0)
    return Scores(shape, heads=torch.rand(shape.n_layers, shape.n_heads, generator=generator), method="random")


def test_evaluate_circuit_only_of_the_full_model_changes_nothing(backdoor):
    loaded, _, data, _ = backdoor
    everything = Circuit.empty(loaded.shape).complement()
    results = evaluate(loaded, everything, data, max_new_tokens=8, conditions=("full", "circuit_only", "ablated"))
    assert results["circuit_only"] == pytest.approx(results["full"])
    # ...and circuit_only does ablate the rest: keeping only the empty circuit zeroes every head and
    # neuron, exactly what ablating every unit does, and a model left with its embeddings alone
    # predicts the benign answers worse than the full model (an evaluate that ignored circuit_only
    # would give the full model's numbers here).
    nothing = evaluate(loaded, Circuit.empty(loaded.shape), data, max_new_tokens=8, conditions=("circuit_only",))["circuit_only"]
    assert nothing == pytest.approx(results["ablated"])
    assert nothing["utility_loss"] > results["full"]["utility_loss"]
