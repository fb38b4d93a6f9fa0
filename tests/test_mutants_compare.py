"""compare.py pinned with stand-ins for measuring, ablating and the methods (gaps found by mutation
testing: ``make mutation MODULES=compare``): the metric keys, the held-out split, what reaches each
measurement, the utility change, the runners' arguments and the saved files."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from safeseek_tl import BackdoorRecord, BenignRecord, ModelShape, Scores
from safeseek_tl import compare as cmp
from safeseek_tl.evaluate import BehaviourData
from safeseek_tl.methods import Attribution
from safeseek_tl.scenarios import ALIGNMENT, BACKDOOR

SHAPE = ModelShape(1, 2, 3)
LOADED = SimpleNamespace(model="the model", shape=SHAPE)


def test_metric_keys_by_scenario():
    assert (BACKDOOR.rate, BACKDOOR.refusal_score) == ("asr_triggered", "refusal_score_triggered")
    assert (ALIGNMENT.rate, ALIGNMENT.refusal_score) == ("asr_harmful", "refusal_score_harmful")


def test_held_out_split_of_two_records_and_its_seed():
    assert cmp.held_out_split(["a", "b"], fraction=0.5) in ((["a"], ["b"]), (["b"], ["a"]))
    records = list(range(20))
    splits = {tuple(cmp.held_out_split(records, seed=seed)[1]) for seed in range(4)}
    assert len(splits) > 1  # the seed reaches the split
    assert cmp.held_out_split(records, seed=2) == cmp.held_out_split(records, seed=2)  # and fixes it
    kept, held = cmp.held_out_split(records)
    assert len(held) == 5 and sorted(kept + held) == records and kept == sorted(kept)


def test_compare_measures_with_its_length_and_reports_the_relative_utility_change(monkeypatch):
    measured, installed = [], []

    def measure(loaded, data, judge, max_new_tokens, other_judges=None):
        measured.append(max_new_tokens)
        ablating = bool(installed) and installed[-1] is not None
        return {"asr_harmful": 0.5 if ablating else 0.25, "refusal_score_harmful": 1.0, "utility_loss": 3.0 if ablating else 2.0}

    @contextmanager
    def ablated(model, circuit, mode, fill):
        installed.append(circuit)
        yield
        installed.append(None)

    monkeypatch.setattr(cmp, "measure", measure)
    monkeypatch.setattr(cmp, "ablated", ablated)
    scores = Scores(SHAPE, heads=torch.tensor([[0.5, 0.1]]), neurons=torch.tensor([[0.3, 0.2, 0.1]]))
    result = cmp.compare(LOADED, {"m": Attribution(scores, wall_time_s=1.5)}, [1], "alignment", BehaviourData(["x"], [], []))
    assert measured == [32, 32]
    row = result.table.iloc[0]
    # top 1 head (L0H0, scored 0.5): one unit, no neuron
    assert (row["method"], row["budget"], row["n_heads"], row["n_neurons"], row["n_units"], row["ablation"]) == ("m", 1, 1, 0, 1, "zero")
    assert row["wall_time_s"] == 1.5  # the scoring time the attribution carries
    assert row["behaviour_change"] == pytest.approx(0.25)
    assert row["utility_change"] == pytest.approx(0.5)  # (3 - 2) / 2
    assert result.baseline == {"asr_harmful": 0.25, "refusal_score_harmful": 1.0, "utility_loss": 2.0}


def test_score_methods_pass_their_arguments(monkeypatch):
    calls = []

    def attribute(name, loaded, records, scenario, *, base_model=None, benign=None, units="heads", **options):
        calls.append((name, scenario, base_model, benign, units, options))
        return "scores of " + name

    monkeypatch.setattr(cmp, "attribute", attribute)
    records = [BackdoorRecord("a", "no", "cf a", "yes")] * 4
    benign = (BenignRecord("b", "ok"),)
    scored = cmp.score_methods(LOADED, ["act-patch", "ships"], records, "backdoor", benign=benign, base_model="base")
    assert scored == {"act-patch": "scores of act-patch", "ships": "scores of ships"}
    assert calls == [
        ("act-patch", "backdoor", "base", [benign[0]], "heads", {}),
        ("ships", "backdoor", "base", [benign[0]], "heads", {}),
    ]
    cmp.score_methods(LOADED, ["attr-patch"], records, "backdoor", units="neurons")
    assert calls[-1][4] == "neurons"
    cmp.score_methods(LOADED, ["safeseek"], records, "backdoor", seek_config="the config", progress=True)
    assert calls[-1][5] == {"config": "the config", "progress": True}


def test_save_writes_every_file_into_a_new_folder(tmp_path):
    table = pd.DataFrame([{"method": "m", "budget": 1, "asr": 0.5}])
    overlap = {1: pd.DataFrame([[1.0]], index=["m"], columns=["m"]), 2: pd.DataFrame([[0.5]], index=["m"], columns=["m"])}
    out = tmp_path / "a" / "b"
    cmp.Comparison(table, overlap, {"asr": 0.25}).save(out)
    assert (out / "comparison.csv").read_text().splitlines() == ["method,budget,asr", "m,1,0.5"]
    assert json.loads((out / "comparison.json").read_text()) == {"baseline": {"asr": 0.25}, "rows": [{"method": "m", "budget": 1, "asr": 0.5}]}
    assert (out / "overlap.csv").read_text().splitlines() == [",m", "m,0.5"]  # the largest budget
    assert json.loads((out / "overlap.json").read_text()) == {"1": {"m": {"m": 1.0}}, "2": {"m": {"m": 0.5}}}
    assert not math.isnan(table["asr"][0])
