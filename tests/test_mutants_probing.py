"""Linear probes pinned (gaps found by mutation testing: ``make mutation MODULES=baselines.probing``):
argument bounds, the documented split and probe settings, the result's fields and its scores."""

from __future__ import annotations

import pytest
import sklearn.linear_model
import sklearn.model_selection
import torch

from safeseek_tl.baselines import linear_probes
from safeseek_tl.baselines.probing import ProbeResult
from safeseek_tl.errors import InputError
from safeseek_tl.units import ModelShape

POSITIVE = ["tell me how to steal a car", "how to steal the car ?", "tell me how to steal", "steal a car"]
NEGATIVE = ["bake a cake", "how to bake a cake", "tell me a cake", "sure here is how"]




@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5])
def test_test_fraction_must_be_strictly_between_0_and_1(sharp, fraction):
    with pytest.raises(InputError, match=rf"test_fraction must be in \(0, 1\), got {fraction}"):
        linear_probes(sharp, POSITIVE, NEGATIVE, test_fraction=fraction, progress=False)


def test_two_prompts_of_each_kind_are_enough(sharp):
    result = linear_probes(sharp, POSITIVE[:2], NEGATIVE[:2], test_fraction=0.5, progress=False)
    assert (result.n_train, result.n_test) == (2, 2)


def test_the_split_and_the_probes_use_the_documented_settings(sharp, monkeypatch):
    splits, probes = [], []
    real_split, real_probe = sklearn.model_selection.train_test_split, sklearn.linear_model.LogisticRegression

    def split(*args, **kwargs):
        splits.append(kwargs)
        return real_split(*args, **kwargs)

    def probe(**kwargs):
        probes.append(kwargs)
        return real_probe(**kwargs)

    monkeypatch.setattr(sklearn.model_selection, "train_test_split", split)
    monkeypatch.setattr(sklearn.linear_model, "LogisticRegression", probe)
    result = linear_probes(sharp, POSITIVE, NEGATIVE, progress=False)
    (used,) = splits
    assert used["test_size"] == 0.3 and used["random_state"] == 0
    assert used["stratify"].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert probes == [{"max_iter": 1000}] * 2  # one probe per layer
    # 8 prompts, 30% held out: sklearn rounds the test set up to 3 (stratified), 5 train
    assert (result.n_train, result.n_test, result.site) == (5, 3, "resid_post")
    assert result.train_accuracy.shape == (2,) and ((result.train_accuracy >= 0) & (result.train_accuracy <= 1)).all()
    linear_probes(sharp, POSITIVE, NEGATIVE, seed=3, C=0.5, progress=False)
    assert splits[-1]["random_state"] == 3 and probes[-1] == {"max_iter": 1000, "C": 0.5}


def test_to_scores_gives_every_unit_its_layers_accuracy():
    result = ProbeResult(torch.tensor([0.5, 1.0]), torch.tensor([1.0, 1.0]), n_train=6, n_test=4, site="resid_mid")
    scores = result.to_scores(ModelShape(2, 3, 4))
    assert scores.heads.tolist() == [[0.5] * 3, [1.0] * 3]
    assert scores.neurons.tolist() == [[0.5] * 4, [1.0] * 4]
    assert scores.method == "probe"
    assert scores.metadata == {
        "granularity": "layer: each unit gets its layer's held-out probe accuracy",
        "site": "resid_mid",
        "n_train": 6,
        "n_test": 4,
        "accuracy": [0.5, 1.0],
    }
