"""The one unit intervention: every masking, ablation and patching writes fill + keep * (act - fill)."""

from __future__ import annotations

import pytest
import torch

from safeseek_tl import Circuit, ablated, masked
from safeseek_tl.ablation import ReferenceActivations
from safeseek_tl.baselines import head_ablation_hooks
from safeseek_tl.baselines.patching import row_unit_hooks
from safeseek_tl.hooks import head_hook, intervention_hook, neuron_hook

ACT = torch.tensor([[[1.0, -2.0, 4.0], [3.0, 5.0, -1.0]]])  # [batch 1, pos 2, units 3]


def test_keep_one_is_the_activation_keep_zero_the_fill_and_between_a_mix():
    # fill 10: unit 0 kept (act), unit 1 replaced (10), unit 2 at keep 0.25: 10 + 0.25 * (4 - 10) = 8.5
    # and 10 + 0.25 * (-1 - 10) = 7.25
    out = intervention_hook(torch.tensor([1.0, 0.0, 0.25]), torch.full((3,), 10.0))(ACT, None)
    assert out.tolist() == [[[1.0, 10.0, 8.5], [3.0, 10.0, 7.25]]]


def test_no_fill_means_zero_and_a_mean_fill_broadcasts_per_unit():
    assert intervention_hook(torch.tensor([0.0, 1.0, 0.5]))(ACT, None).tolist() == [[[0.0, -2.0, 2.0], [0.0, 5.0, -0.5]]]
    heads = torch.ones(1, 2, 2, 3)  # [batch, pos, heads, d_head]
    fill = torch.tensor([[7.0, 8.0, 9.0], [0.0, 0.0, 0.0]])  # [heads, d_head]
    out = intervention_hook(torch.tensor([0.0, 1.0]), fill)(heads, None)
    assert out[0, :, 0].tolist() == [[7.0, 8.0, 9.0]] * 2 and out[0, :, 1].tolist() == [[1.0] * 3] * 2


def test_per_row_keep_and_a_fill_computed_from_the_activation():
    act = torch.arange(12.0).view(2, 2, 3)  # rows 0 and 1
    keep = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])  # row 0 replaces unit 1, row 1 unit 0
    out = intervention_hook(keep, lambda a: -a)(act, None)
    assert out.tolist() == [[[0.0, -1.0, 2.0], [3.0, -4.0, 5.0]], [[-6.0, 7.0, 8.0], [-9.0, 10.0, 11.0]]]


def test_kept_units_are_bit_for_bit_and_gradients_reach_the_mask():
    act = torch.randn(2, 3, 4, dtype=torch.float64)
    fill = torch.randn(4, dtype=torch.float64)
    keep = torch.tensor([1.0, 0.0, 1.0, 0.0], requires_grad=True)
    out = intervention_hook(keep, fill)(act, None)
    assert torch.equal(out[..., 0], act[..., 0]) and torch.equal(out[..., 1], fill[1].expand(2, 3))
    out.sum().backward()
    # d out / d keep = act - fill, summed over batch and positions
    assert torch.allclose(keep.grad, (act - fill).sum((0, 1)).float())


def test_the_activations_dtype_is_kept():
    out = intervention_hook(torch.tensor([1.0, 0.0]), torch.full((1, 1, 2), 3.0))(torch.ones(1, 1, 2, dtype=torch.float16), None)
    assert out.dtype == torch.float16 and out.tolist() == [[[1.0, 3.0]]]


def test_every_intervention_goes_through_the_one_formula(gqa, monkeypatch):
    import safeseek_tl.hooks as hooks

    calls = []
    real = hooks.intervene
    monkeypatch.setattr(hooks, "intervene", lambda act, keep, fill: calls.append(act.shape) or real(act, keep, fill))
    tokens = torch.tensor([[2, 7, 8, 9]])
    shape = gqa.shape
    circuit = Circuit.from_units(shape, heads=[[0, 1]], neurons=[[1, 3]])
    reference = ReferenceActivations.collect(gqa.model, [(tokens, torch.ones_like(tokens))])
    uses = {
        "masked": lambda: masked(gqa.model, heads=torch.ones(shape.size("heads"))),
        "ablated zero": lambda: ablated(gqa.model, circuit),
        "ablated mean": lambda: ablated(gqa.model, circuit, mode="mean", reference=reference),
        "ablated resample": lambda: ablated(gqa.model, circuit, mode="resample", reference=reference),
        "ships heads": lambda: gqa.model.hooks(fwd_hooks=head_ablation_hooks(torch.ones(1, *shape.size("heads"), dtype=torch.bool), "sc")),
        "patching": lambda: gqa.model.hooks(fwd_hooks=row_unit_hooks(neuron_hook, torch.ones(1, *shape.size("neurons"), dtype=torch.bool), lambda act, layer: act * 0)),
    }
    for name, context in uses.items():
        calls.clear()
        with context():
            gqa.model(tokens)
        assert calls, f"{name} did not call hooks.intervene"
    assert head_hook(0) != neuron_hook(0)


@pytest.mark.parametrize("strength, expected", [(1.0, 0.0), (0.25, 3.0)])
def test_partial_ablation_moves_the_circuit_toward_the_fill_by_its_strength(gqa, strength, expected):
    # act 4, fill 0: strength 1 gives 0; strength 0.25 gives 4 - 0.25 * 4 = 3
    from safeseek_tl.ablation import ablation_hooks

    circuit = Circuit.from_units(gqa.shape, neurons=[[0, 2]])
    ((_, hook),) = ablation_hooks(circuit, strength=strength)
    act = torch.full((1, 1, gqa.shape.d_mlp), 4.0)
    out = hook(act, None)
    assert out[0, 0, 2].item() == expected and out[0, 0, 3].item() == 4.0
