"""Ships and Sahara pinned (gaps found by mutation testing: ``make mutation MODULES=baselines.ships``):
the recorded run, the circuit check, Sahara's step bound and its batching."""

from __future__ import annotations

import pytest

from safeseek_tl import Circuit, ModelShape, ShapeMismatchError
from safeseek_tl.baselines import generalized_ships, sahara, ships_scores
from tests.helpers import PROMPTS


def test_ships_records_its_run(sharp):
    scores = ships_scores(sharp, PROMPTS[:3], operator="sc", epsilon=1e-3, progress=False)
    assert scores.method == "ships"
    assert scores.metadata == {
        "operator": "sc",
        "epsilon": 1e-3,
        "n_prompts": 3,
        "score": "mean over prompts of KL(p_full || p_ablated) at the last position",
    }


def test_generalized_ships_refuses_a_circuit_of_another_model(sharp):
    with pytest.raises(ShapeMismatchError, match="^the circuit was made for a model"):
        generalized_ships(sharp, PROMPTS, Circuit.empty(ModelShape(2, 5, 96)))


def test_sahara_records_its_run_and_may_rank_every_head(sharp):
    # 2 layers x 4 heads: 8 steps rank all of them; batch_size = len(prompts) gives one candidate
    # per pass, so every candidate of every step is reached one pass at a time
    prompts = PROMPTS[:2]
    scores = sahara(sharp, prompts, steps=8, batch_size=2, progress=False)
    assert sorted(scores.heads.flatten().tolist()) == [float(s) for s in range(1, 9)]
    group = scores.metadata["group"]
    assert sorted(map(tuple, group)) == [(layer, head) for layer in range(2) for head in range(4)]
    # the first head is the one whose ablation alone turns the hidden states furthest: every
    # candidate was measured, one pass each
    single = [generalized_ships(sharp, prompts, Circuit.from_units(sharp.shape, heads=[[layer, head]])) for layer in range(2) for head in range(4)]
    assert group[0] == list(divmod(max(range(8), key=single.__getitem__), 4))
    # each step's angle is generalized Ships of the group so far
    for step in (0, 1):
        angle = generalized_ships(sharp, prompts, Circuit.from_units(sharp.shape, heads=group[: step + 1]))
        assert scores.metadata["angles"][step] == pytest.approx(angle, abs=1e-3)
    assert scores.method == "sahara"
    metadata = {k: v for k, v in scores.metadata.items() if k not in ("group", "angles")}
    assert metadata == {
        "operator": "ua",
        "epsilon": 1e-5,
        "n_prompts": 2,
        "reference": "unablated model",
        "score": "steps - rank for the greedily chosen heads, 0 for the rest",
    }
    with pytest.raises(ValueError, match=r"between 1 and the number of heads \(8\), got 9"):
        sahara(sharp, prompts, steps=9, progress=False)
