"""Activation and attribution patching pinned (gaps found by mutation testing: ``make mutation
MODULES=baselines.patching``): scores are means over pairs, the run's metadata, the default and
single granularities. The metric means in the metadata are checked against the model run on each
prompt alone."""

from __future__ import annotations

import pytest
import torch

from safeseek_tl.baselines import activation_patching, attribution_patching
from safeseek_tl.baselines.patching import refusal_metric
from safeseek_tl.data import tokenize_prompts
from tests.helpers import CLEAN, CORRUPTED

CLEAN2, CORRUPTED2 = CLEAN[:2], CORRUPTED[:2]




def _metric_alone(loaded, prompt: str) -> float:
    """The refusal metric of one prompt run alone (no padding, no patching)."""
    tokens = tokenize_prompts(loaded.chat, [prompt])
    with torch.no_grad():
        logits = loaded.model(tokens.input_ids, attention_mask=tokens.attention_mask)
    return float(refusal_metric(loaded)(logits[:, -1])[0])


@pytest.mark.parametrize(("method", "name"), [(activation_patching, "act-patch"), (attribution_patching, "attr-patch")])
def test_scores_are_the_mean_over_pairs_and_the_run_is_recorded(sharp, method, name):
    together = method(sharp, CLEAN2, CORRUPTED2, units="both", batch_size=64, progress=False)
    singles = [method(sharp, [clean], [corrupted], units="both", batch_size=64, progress=False) for clean, corrupted in zip(CLEAN2, CORRUPTED2)]
    for kind in ("heads", "neurons"):
        assert together.get(kind).abs().max() > 0
        torch.testing.assert_close(together.get(kind), (singles[0].get(kind) + singles[1].get(kind)) / 2, rtol=1e-3, atol=1e-5)
    assert together.method == name
    metadata = dict(together.metadata)
    clean, corrupted = metadata.pop("metric_clean"), metadata.pop("metric_corrupted")
    assert metadata == {"n_pairs": 2, "position_alignment": "left-padded, aligned from the end", "units": "both"}
    assert clean == pytest.approx(sum(_metric_alone(sharp, p) for p in CLEAN2) / 2, rel=1e-4, abs=1e-5)
    assert corrupted == pytest.approx(sum(_metric_alone(sharp, p) for p in CORRUPTED2) / 2, rel=1e-4, abs=1e-5)
    assert clean != pytest.approx(corrupted)  # the two means are told apart


@pytest.mark.parametrize("method", [activation_patching, attribution_patching])
def test_heads_by_default_and_one_granularity_only(sharp, method):
    heads = method(sharp, CLEAN2, CORRUPTED2, progress=False)
    assert heads.neurons is None and heads.heads.shape == (2, 4) and heads.metadata["units"] == "heads"
    neurons = method(sharp, CLEAN2, CORRUPTED2, units="neurons", progress=False)
    assert neurons.heads is None and neurons.neurons.shape == (2, 96)


def test_attribution_sums_the_metric_over_every_batch(sharp):
    # one pair per batch: the corrupted and clean means still cover both pairs
    scores = attribution_patching(sharp, CLEAN2, CORRUPTED2, batch_size=1, progress=False)
    assert scores.metadata["metric_clean"] == pytest.approx(sum(_metric_alone(sharp, p) for p in CLEAN2) / 2, rel=1e-4, abs=1e-5)
    assert scores.metadata["metric_corrupted"] == pytest.approx(sum(_metric_alone(sharp, p) for p in CORRUPTED2) / 2, rel=1e-4, abs=1e-5)
