"""evaluate.py's plumbing pinned with recording stand-ins for generation, scoring and ablation
(gaps found by mutation testing: ``make mutation MODULES=evaluate``): which prompts, judge, lengths,
batch sizes and ablation settings reach each step, and how the rates are formed."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import torch

from safeseek_tl import AlignmentRecord, BackdoorRecord, BenignRecord, Circuit, ModelShape, RefusalJudge
from safeseek_tl import evaluate as ev

LOADED = SimpleNamespace(model="the model", chat="the chat")
JUDGE = RefusalJudge(("no",), min_chars=0)


def test_from_records_sorts_prompts_by_kind():
    data = ev.BehaviourData.from_records(
        [AlignmentRecord("a?", "no", "yes"), BackdoorRecord("b?", "no", "cf b?", "yes"), BenignRecord("c?", "sure")],
        benign=[BenignRecord("d?", "fine")],
    )
    assert data.harmful == ["a?", "b?"] and data.triggered == ["cf b?"]
    assert [r.prompt for r in data.benign] == ["d?", "c?"]


def test_measure_rates_scores_and_the_settings_it_passes(monkeypatch):
    calls = {"generate": [], "scores": [], "utility": []}
    answers = {"h1": "no", "h2": "yes", "t1": "yes", "b1": "no", "b2": "yes", "b3": "yes", "b4": "yes"}
    score_of = {"h1": 1.0, "h2": 3.0, "t1": -2.0, "b1": 0.5, "b2": 1.5, "b3": 2.5, "b4": 3.5}

    def generate(model, chat, prompts, max_new_tokens, batch_size, progress):
        calls["generate"].append((model, chat, tuple(prompts), max_new_tokens, batch_size, progress))
        return [answers[p] for p in prompts]

    def refusal_scores(loaded, prompts, batch_size):
        calls["scores"].append(batch_size)
        return torch.tensor([score_of[p] for p in prompts])

    def utility_loss(loaded, records, batch_size):
        calls["utility"].append(batch_size)
        return 0.25

    monkeypatch.setattr(ev, "generate", generate)
    monkeypatch.setattr(ev, "refusal_scores", refusal_scores)
    monkeypatch.setattr(ev, "utility_loss", utility_loss)
    data = ev.BehaviourData(["h1", "h2"], ["t1"], [BenignRecord(p, "ok") for p in ("b1", "b2", "b3", "b4")])
    out = ev.measure(LOADED, data, JUDGE)
    assert out == {
        "refusal_harmful": 0.5, "asr_harmful": 0.5, "refusal_score_harmful": 2.0,
        "asr_triggered": 1.0, "refusal_score_triggered": -2.0,
        "benign_answered": 0.75, "refusal_score_benign": 2.0,
        "utility_loss": 0.25,
    }  # fmt: skip
    # the defaults: 32 new tokens, batches of 16, no progress bar
    assert {call[3:] for call in calls["generate"]} == {(32, 16, False)}
    assert [call[2] for call in calls["generate"]] == [("h1", "h2"), ("t1",), ("b1", "b2", "b3", "b4")]
    assert calls["generate"][0][:2] == ("the model", "the chat")
    assert calls["scores"] == [16, 16, 16] and calls["utility"] == [16]
    ev.measure(LOADED, ev.BehaviourData(["h1"], [], []), JUDGE, max_new_tokens=5, batch_size=3, progress=True)
    assert calls["generate"][-1][3:] == (5, 3, True) and calls["scores"][-1] == 3


def test_evaluate_ablates_with_its_settings_and_measures_with_its_judge(monkeypatch):
    installed, measured = [], []

    @contextmanager
    def ablated(model, circuit, mode, reference, keep_only=False):
        installed.append((model, mode, reference, keep_only))
        yield

    def measure(loaded, data, judge, max_new_tokens):
        measured.append((judge, max_new_tokens, len(installed)))
        return {"asr_harmful": float(len(installed))}

    monkeypatch.setattr(ev, "ablated", ablated)
    monkeypatch.setattr(ev, "measure", measure)
    circuit = Circuit.empty(ModelShape(1, 1, 1))
    reference = object()
    results = ev.evaluate(LOADED, circuit, ev.BehaviourData([], [], []), mode="mean", reference=reference, judge=JUDGE)
    assert results == {"full": {"asr_harmful": 0.0}, "ablated": {"asr_harmful": 1.0}, "circuit_only": {"asr_harmful": 2.0}}
    assert installed == [("the model", "mean", reference, False), ("the model", "mean", reference, True)]
    assert measured == [(JUDGE, 32, 0), (JUDGE, 32, 1), (JUDGE, 32, 2)]
    ev.evaluate(LOADED, circuit, ev.BehaviourData([], [], []), conditions=("full",), max_new_tokens=7)
    assert measured[-1][:2] == (None, 7)


def test_reference_activations_come_from_the_benign_prompts_or_else_the_harmful_ones(monkeypatch):
    seen = {}

    def tokenize_prompts(chat, prompts):
        seen["prompts"] = (chat, list(prompts))
        rows = torch.arange(len(prompts)).view(-1, 1)
        return SimpleNamespace(input_ids=rows, attention_mask=rows + 10)

    def collect(model, batches):
        seen["batches"] = (model, [(ids.flatten().tolist(), mask.flatten().tolist()) for ids, mask in batches])
        return "reference"

    monkeypatch.setattr(ev, "tokenize_prompts", tokenize_prompts)
    monkeypatch.setattr(ev.ReferenceActivations, "collect", collect)
    with_benign = ev.BehaviourData(["h1"], [], [BenignRecord("b1", "ok"), BenignRecord("b2", "ok"), BenignRecord("b3", "ok")])
    assert ev.reference_activations(LOADED, with_benign, batch_size=2) == "reference"
    assert seen["prompts"] == ("the chat", ["b1", "b2", "b3"])
    assert seen["batches"] == ("the model", [([0, 1], [10, 11]), ([2], [12])])  # batches of 2, in order
    ev.reference_activations(LOADED, ev.BehaviourData(["h1", "h2"], ["t1"], []))
    assert seen["prompts"] == ("the chat", ["h1", "h2"])  # no benign prompts: the harmful ones, not the triggered
    assert seen["batches"] == ("the model", [([0, 1], [10, 11])])  # batch size 16
