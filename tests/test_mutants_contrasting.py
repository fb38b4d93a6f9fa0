"""Safety-Neurons baselines pinned (gaps found by mutation testing: ``make mutation
MODULES=baselines.contrasting``): the checks' messages, the donor overwrite's dtype, the padding
id, static patching's defaults and mean mode, random_like's record."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from safeseek_tl import Circuit, ModelShape, ShapeMismatchError
from safeseek_tl.ablation import ReferenceActivations, ablated
from safeseek_tl.baselines import activation_contrast, random_like, static_patching
from safeseek_tl.compat import pad_token_id
from safeseek_tl.generation import generate
from tests.helpers import PROMPTS


def test_the_checks_name_what_does_not_fit(sharp):
    other = SimpleNamespace(shape=ModelShape(3, 4, 96, "other"), name="other")
    with pytest.raises(ShapeMismatchError, match=r"^model 'other' was made for a model with n_layers, n_heads, d_mlp = \(3, 4, 96\)"):
        activation_contrast(sharp, other, PROMPTS, progress=False)
    with pytest.raises(ShapeMismatchError, match="^the neuron set was made for a model"):
        static_patching(sharp, PROMPTS, Circuit.empty(ModelShape(2, 4, 97)), mode="zero", progress=False)


def test_padding_id_is_the_pad_token_or_else_eos():
    assert pad_token_id(SimpleNamespace(pad_token_id=3, eos_token_id=5)) == 3
    assert pad_token_id(SimpleNamespace(pad_token_id=0, eos_token_id=5)) == 0
    assert pad_token_id(SimpleNamespace(pad_token_id=None, eos_token_id=5)) == 5


def test_random_like_records_its_seed():
    circuit = Circuit.from_units(ModelShape(2, 4, 8), heads=[[0, 1]], neurons=[[1, 2], [1, 3]])
    assert random_like(circuit).metadata == {"method": "random_like", "seed": 0}
    assert random_like(circuit, seed=4).metadata == {"method": "random_like", "seed": 4}


def test_static_patching_defaults_to_mean_and_32_tokens(sharp):
    # means far from any activation, so that mean patching changes what the model writes
    neurons = Circuit.from_units(sharp.shape, neurons=[[0, 1], [1, 2], [1, 5]])
    reference = ReferenceActivations(
        means={"heads": torch.zeros(2, 4, 16), "neurons": torch.full((2, 96), 50.0)},
        pools={"heads": torch.zeros(2, 0, 4, 16), "neurons": torch.zeros(2, 0, 96)},
    )
    with ablated(sharp.model, neurons, mode="mean", reference=reference):
        expected = generate(sharp.model, sharp.chat, PROMPTS, max_new_tokens=32, progress=False)
    zero = static_patching(sharp, PROMPTS, neurons, mode="zero", progress=False)
    assert expected != zero  # the check below tells mean from zero
    assert static_patching(sharp, PROMPTS, neurons, reference=reference, progress=False) == expected
