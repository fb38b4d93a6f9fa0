"""Ablation hooks pinned on hand-made activations (gaps found by mutation testing: ``make mutation
MODULES=ablation``): the defaults, the strength bounds, mean and resample replacement (values,
dtype, the seeded draw). No model runs: the hooks are called on tensors directly."""

from __future__ import annotations

import pytest
import torch

from safeseek_tl import Circuit, ModelShape
from safeseek_tl.ablation import ReferenceActivations, ablation_hooks
from safeseek_tl.errors import InputError

SHAPE = ModelShape(n_layers=1, n_heads=2, d_mlp=3)
CIRCUIT = Circuit.from_units(SHAPE, neurons=[[0, 1]])  # neuron 1 of layer 0
# pool token t holds 10 * t + unit for each of the 3 neurons; the means are 5, 6, 7
REFERENCE = ReferenceActivations(
    means={"heads": torch.zeros(1, 2, 4), "neurons": torch.tensor([[5.0, 6.0, 7.0]])},
    pools={"heads": torch.zeros(1, 4, 2, 4), "neurons": (10 * torch.arange(4.0)[:, None] + torch.arange(3.0)).unsqueeze(0)},
)


def _run(hooks, act):
    ((name, hook),) = hooks
    assert name == "blocks.0.mlp.hook_post"
    return hook(act, None)


def test_defaults_zero_the_circuit_fully_and_only_it():
    out = _run(ablation_hooks(CIRCUIT), torch.ones(1, 2, 3))
    assert out.tolist() == [[[1.0, 0.0, 1.0]] * 2]


def test_strength_from_zero_to_one():
    act = torch.full((1, 2, 3), 4.0)
    assert _run(ablation_hooks(CIRCUIT, strength=0.0), act).tolist() == act.tolist()
    assert _run(ablation_hooks(CIRCUIT, strength=0.25), act).tolist() == [[[4.0, 3.0, 4.0]] * 2]
    with pytest.raises(InputError, match=r"strength must be in \[0, 1\], got 1.5"):
        ablation_hooks(CIRCUIT, strength=1.5)


def test_mean_ablation_keeps_the_activations_dtype():
    out = _run(ablation_hooks(CIRCUIT, "mean", REFERENCE, strength=0.5), torch.ones(1, 2, 3, dtype=torch.float16))
    assert out.dtype == torch.float16
    assert out.tolist() == [[[1.0, 3.5, 1.0]] * 2]  # 1 + 0.5 * (6 - 1)


def test_resample_ablation_draws_the_seeded_pool_tokens():
    out = _run(ablation_hooks(CIRCUIT, "resample", REFERENCE), torch.zeros(1, 2, 3, dtype=torch.float16))
    assert out.dtype == torch.float16
    # the draw: one pool token per (row, position) from a generator seeded with 0 (the default seed)
    tokens = torch.randint(4, (1, 2), generator=torch.Generator().manual_seed(0))
    assert out[0, :, 1].tolist() == [10.0 * t + 1 for t in tokens[0].tolist()]
    assert out[0, :, 0].tolist() == [0.0, 0.0] and out[0, :, 2].tolist() == [0.0, 0.0]
    other = _run(ablation_hooks(CIRCUIT, "resample", REFERENCE, seed=5), torch.zeros(1, 2, 3))
    tokens = torch.randint(4, (1, 2), generator=torch.Generator().manual_seed(5))
    assert other[0, :, 1].tolist() == [10.0 * t + 1 for t in tokens[0].tolist()]
