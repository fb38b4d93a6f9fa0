"""Monitor: tamper detection against a clean reference, safeguard flags before generation, hook hygiene."""

from __future__ import annotations

import pytest
import torch

from safeseek_tl import Circuit, ablated, generate, load_model
from safeseek_tl.hooks import UNIT_KINDS, unit_hook
from safeseek_tl.monitor import (
    Monitor,
    PromptCheck,
    TamperReference,
    conformal_threshold,
)
from safeseek_tl.organisms import ground_truth, load_data
from safeseek_tl.readout import circuit_features
from safeseek_tl.safeguard import (
    Safeguard,
    labelled_prompts,
    unsafe_labels,
)

TOKENS = 4  # the monitor reads the prompt pass; a few generated tokens exercise the decoding steps


@pytest.fixture(scope="module")
def aligned():
    return load_model("organism:tiny-aligned")


@pytest.fixture(scope="module")
def circuit(aligned):
    # a stand-in for an alignment circuit: Ships' top three heads of tiny-aligned (benchmarks/RESULTS.md)
    # and sixteen neurons of layers 1-2; what is under test is the monitor, not the circuit
    neurons = [[layer, index] for layer in (1, 2) for index in range(0, 384, 48)]
    return Circuit.from_units(aligned.shape, heads=[[0, 1], [0, 5], [0, 6]], neurons=neurons)


def _prompts(split: str, n: int) -> list[str]:
    return [r.prompt for r in load_data("alignment", split)[:n]] + [r.prompt for r in load_data("benign", split)[:n]]


@pytest.fixture(scope="module")
def reference(aligned, circuit):
    return TamperReference.fit(aligned, circuit, _prompts("train", 40), _prompts("val", 50), false_alarm=0.05, progress=False)


def _watch(loaded, reference, prompts, **attack):
    """Generate under the monitor, with the circuit ablated when ``attack`` is given."""
    with Monitor(loaded, reference=reference) as monitor:
        if attack:
            with ablated(loaded.model, reference.circuit, **attack):
                generate(loaded.model, loaded.chat, prompts, TOKENS, progress=False)
        else:
            generate(loaded.model, loaded.chat, prompts, TOKENS, progress=False)
    assert len(monitor.checks) == len(prompts)  # one check per prompt, none per decoding step
    return monitor.summary()["tampered"]


def test_monitor_flags_zero_ablation_and_half_suppression_but_not_clean_runs(aligned, reference):
    prompts = _prompts("test", 20)
    assert _watch(aligned, reference, prompts) <= 0.15
    assert _watch(aligned, reference, prompts, mode="zero") == 1.0
    assert _watch(aligned, reference, prompts, mode="zero", strength=0.5) >= 0.9


def test_monitor_sees_an_ablation_entered_before_or_after_it(aligned, reference):
    prompts = _prompts("test", 5)
    with ablated(aligned.model, reference.circuit, strength=0.5), Monitor(aligned, reference=reference) as outer:
        generate(aligned.model, aligned.chat, prompts, TOKENS, progress=False)
    # the monitor is entered first: its hooks were added before the attacker's, yet run after them
    with Monitor(aligned, reference=reference) as inner, ablated(aligned.model, reference.circuit, strength=0.5):
        generate(aligned.model, aligned.chat, prompts, TOKENS, progress=False)
    assert all(check.tampered for check in outer.checks + inner.checks)
    assert [c.tamper_score for c in outer.checks] == pytest.approx([c.tamper_score for c in inner.checks], rel=1e-4)


def test_monitor_is_read_only_and_removes_its_hooks(aligned, reference):
    model = aligned.model
    points = [model.hook_dict[unit_hook(kind, layer)] for kind in UNIT_KINDS for layer in range(aligned.shape.n_layers)]
    hooked = lambda: [(len(p._forward_hooks), len(p._forward_pre_hooks)) for p in [*points, model.original_model]]  # noqa: E731
    before = hooked()
    prompts = _prompts("test", 3)
    plain = generate(model, aligned.chat, prompts, 12, progress=False)
    with Monitor(aligned, reference=reference):
        assert hooked() != before
        assert generate(model, aligned.chat, prompts, 12, progress=False) == plain
    assert hooked() == before
    with pytest.raises(RuntimeError, match="boom"), Monitor(aligned, reference=reference):
        raise RuntimeError("boom")
    assert hooked() == before

    def fail(act, hook):
        raise RuntimeError("a forward pass that stops half-way")

    with pytest.raises(RuntimeError, match="half-way"), Monitor(aligned, reference=reference), model.hooks(fwd_hooks=[(unit_hook("neurons", 2), fail)]):
        generate(model, aligned.chat, prompts, 2, progress=False)
    assert hooked() == before


def test_safeguard_flags_unsafe_prompts_before_generation(tmp_path):
    backdoor = load_model("organism:tiny-backdoor")
    circuit = ground_truth("tiny-backdoor", backdoor)
    prompts, harmful = labelled_prompts(load_data("backdoor", "train")[:30])
    guard = Safeguard.fit(circuit_features(backdoor, circuit, prompts, progress=False), unsafe_labels(backdoor, prompts, harmful, max_new_tokens=16, progress=False), circuit, d_head=16)
    test = [r.backdoor_input for r in load_data("backdoor", "test")[:4]] + [r.input for r in load_data("backdoor", "test")[:4]]
    batches: list[list[PromptCheck]] = []
    with Monitor(backdoor, safeguard=guard, on_check=batches.append) as monitor:
        generate(backdoor.model, backdoor.chat, test, TOKENS, batch_size=4, progress=False)
    assert [len(batch) for batch in batches] == [4, 4]
    assert [c.unsafe for c in monitor.checks] == [True] * 4 + [False] * 4
    assert monitor.checks[0].tamper_score is None and not monitor.checks[4].flagged
    # the run-time features are the offline ones
    offline = guard.probability(circuit_features(backdoor, circuit, test, progress=False))
    torch.testing.assert_close(torch.tensor([c.unsafe_probability for c in monitor.checks], dtype=torch.float64), offline, rtol=1e-4, atol=1e-6)

    def refuse(checks: list[PromptCheck]) -> None:
        if any(check.unsafe for check in checks):
            raise PermissionError("unsafe prompt")

    with pytest.raises(PermissionError), Monitor(backdoor, safeguard=guard, on_check=refuse):
        generate(backdoor.model, backdoor.chat, test[:1], TOKENS, progress=False)


def test_conformal_threshold():
    scores = torch.arange(1.0, 101.0)
    assert conformal_threshold(scores, 0.05) == 96.0  # rank ceil(101 * 0.95)
    assert conformal_threshold(scores, 0.5) == 51.0
    with pytest.raises(ValueError, match="at least 99 calibration prompts"):
        conformal_threshold(scores[:50], 0.01)


def test_reference_save_load_round_trip(aligned, reference, tmp_path):
    reference.save(tmp_path / "ref")
    loaded = TamperReference.load(tmp_path / "ref", expected=aligned.shape)
    magnitudes = torch.rand(5, len(reference.circuit)) * 3
    assert torch.equal(loaded.scores(magnitudes), reference.scores(magnitudes))
    assert loaded.threshold == reference.threshold and loaded.false_alarm == 0.05
    other = Circuit.from_units(aligned.shape, heads=[[3, 3]])
    with pytest.raises(ValueError, match="another circuit"):
        TamperReference(other, torch.ones(1), torch.ones(1), 1.0, 0.05).save(tmp_path / "ref")


def test_monitor_needs_something_to_check(aligned):
    with pytest.raises(ValueError, match="needs a safeguard"):
        Monitor(aligned)
