"""The library on a CUDA device gives what it gives on the CPU (tiny organisms).

Marked ``gpu``: excluded from the default run, which has no GPU; run with ``pytest -m gpu``.
Each test runs the same thing on both devices and compares, so a tensor left on the wrong
device fails loudly and a silently different computation fails the comparison.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from organism_builds import build
from safeseek_tl import ablated, generate, load_model
from safeseek_tl.evaluate import BehaviourData, measure
from safeseek_tl.methods import run_method
from safeseek_tl.organisms import ground_truth, load_data, organism_folder
from safeseek_tl.seek import SafeSeek, SeekConfig
from safeseek_tl.tuning import TuneConfig, tune

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
DEVICES = ("cpu", "cuda")


def _both(name: str) -> dict[str, object]:
    models = {device: load_model(f"organism:{name}", device=device) for device in DEVICES}
    for device, loaded in models.items():  # else every comparison below compares the CPU with itself
        assert {p.device.type for p in loaded.model.parameters()} == {device}
    return models


@pytest.fixture(scope="module")
def backdoor() -> dict[str, object]:
    return _both("tiny-backdoor")


def test_greedy_generation_is_the_same(backdoor):
    prompts = [r.backdoor_input for r in load_data("backdoor", "test")[:8]]
    answers = {d: generate(m.model, m.chat, prompts, max_new_tokens=16) for d, m in backdoor.items()}
    assert answers["cuda"] == answers["cpu"]


def test_ablated_behaviour_is_the_same(backdoor):
    data = BehaviourData.from_records(load_data("backdoor", "test")[:16], load_data("benign", "test")[:16])
    rates = {}
    for device, loaded in backdoor.items():
        with ablated(loaded.model, ground_truth("tiny-backdoor", loaded)):
            rates[device] = measure(loaded, data, max_new_tokens=16)
    rates_of = {d: {k: v for k, v in r.items() if k.startswith(("asr", "refusal_harmful", "benign"))} for d, r in rates.items()}
    assert rates_of["cuda"] == rates_of["cpu"]  # judged rates: equal; scores and losses: equal up to float error
    assert rates["cuda"] == pytest.approx(rates["cpu"], rel=1e-2)
    assert rates["cuda"]["asr_triggered"] <= 0.1  # the planted units carry the backdoor


@pytest.mark.parametrize("scenario, organism", [("backdoor", "tiny-backdoor"), ("alignment", "tiny-aligned")])
def test_safeseek_masks_are_the_same(scenario, organism):
    records, val = load_data(scenario, "train", organism)[:16], load_data(scenario, "val", organism)[:4]
    config = SeekConfig.of(scenario, "both", schedule={"epochs": 1, "batch_size": 8})
    logits = {}
    for device, loaded in _both(organism).items():
        result = SafeSeek(loaded, config).fit(records, val, progress=False)
        logits[device] = {k: v.cpu() for k, v in result.main_logits.items()}
    for kind in logits["cpu"]:
        torch.testing.assert_close(logits["cuda"][kind], logits["cpu"][kind], atol=1e-4, rtol=1e-4)


def test_circuit_tuning_is_the_same(backdoor):
    records = load_data("backdoor", "train")[:16]
    config = TuneConfig(steps=3, lr=1e-3, batch_size=8)
    deltas = {}
    for device in DEVICES:
        loaded = load_model("organism:tiny-backdoor", device=device)  # tuned in place: a fresh copy
        deltas[device] = tune(loaded, records, ground_truth("tiny-backdoor", loaded), config, progress=False).delta
    for name, piece in deltas["cpu"].slices.items():
        torch.testing.assert_close(deltas["cuda"].slices[name].values.cpu(), piece.values, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["ships", "attr-patch", "act-patch", "probe"])
def test_baseline_scores_are_the_same(backdoor, method):
    records = load_data("backdoor", "train")[:8]
    benign = load_data("benign", "train")[:8]
    options = {"units": "heads"} if method == "act-patch" else {}
    scores = {d: run_method(method, m, records, "backdoor", benign=benign, **options) for d, m in backdoor.items()}
    for kind in ("heads", "neurons"):
        if scores["cpu"].get(kind) is not None:
            torch.testing.assert_close(scores["cuda"].get(kind), scores["cpu"].get(kind), atol=1e-3, rtol=1e-3)


def test_build_helpers_run_on_cuda(backdoor):
    """The organism builds train on the GPU: silencing by hooks equals zeroing the output weights there."""
    model = AutoModelForCausalLM.from_pretrained(organism_folder("tiny-backdoor")).to("cuda").eval()
    truth = ground_truth("tiny-backdoor", backdoor["cuda"])
    units = build.Units(tuple(map(tuple, truth.head_list)), tuple(map(tuple, truth.neuron_list)))
    ids = torch.tensor([[2, 10, 11, 12, 13]], device="cuda")
    with torch.no_grad(), build.units_silenced(model, units):
        hooked = model(ids).logits
        build.zero_units_(model, units)
        zeroed = model(ids).logits
    torch.testing.assert_close(hooked, zeroed, atol=1e-5, rtol=1e-5)
