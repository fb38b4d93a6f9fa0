"""Each baseline's top-k units on tiny-backdoor, scored against the planted units.

The numbers are recorded (``record_property``; benchmarks/RESULTS.md has the full table), not
tuned to pass: a heuristic that misses the planted units is reported as missing them.
"""

from __future__ import annotations

import pytest

from safeseek_tl import Circuit, load_model
from safeseek_tl.baselines import run_baseline
from safeseek_tl.organisms import ground_truth, load_data

N_PROMPTS = 16


@pytest.fixture(scope="module")
def backdoor():
    loaded = load_model("organism:tiny-backdoor")
    return loaded, ground_truth("tiny-backdoor", loaded), load_data("backdoor", "train")[:N_PROMPTS]


@pytest.mark.parametrize(
    ("method", "options"),
    [("ships", {}), ("sahara", {"steps": 2}), ("act-patch", {"units": "both"}), ("attr-patch", {"units": "both"}), ("probe", {})],
)
def test_top_k_against_the_planted_units(backdoor, method, options, record_property):
    loaded, truth, records = backdoor
    scores = run_baseline(method, loaded, records, "backdoor", **options)
    for kind in scores.kinds:
        k = int(truth.get(kind).sum())
        top = Circuit.top_k(scores, **{kind: k})
        assert int(top.get(kind).sum()) == k
        precision, recall = top.precision_recall(truth, kinds=(kind,))
        record_property(f"{method}_{kind}_precision_recall", (precision, recall))
        assert 0.0 <= precision <= 1.0 and precision == recall  # same size as the truth


def test_contrast_with_the_clean_pair_ranks_planted_neurons(backdoor, record_property):
    loaded, truth, records = backdoor
    clean = load_model("organism:tiny-aligned")
    scores = run_baseline("contrast", loaded, records, "backdoor", base_model=clean, max_new_tokens=16)
    top = Circuit.top_k(scores, neurons=truth.n_neurons)
    precision, _ = top.precision_recall(truth, kinds=("neurons",))
    record_property("contrast_neurons_precision", precision)
    # Only the planted slices differ between the two models, so the planted neurons must change.
    planted = scores.neurons[truth.neurons]
    assert planted.min() > 0
