"""Mask logits and gates pinned on tiny hand-made inputs (gaps found by mutation testing: ``make
mutation MODULES=masks``). Expected values are worked out by hand, or from the hard-concrete
definition (Louizos et al. 2018) on the noise the seeded generator draws."""

from __future__ import annotations

import math

import pytest
import torch

from safeseek_tl.errors import InputError
from safeseek_tl.masks import MaskLogits, mask_hooks
from safeseek_tl.units import ModelShape

SHAPE = ModelShape(n_layers=1, n_heads=2, d_mlp=3)
SIG1 = 1 / (1 + math.exp(-1))  # sigmoid(1) = 0.7310...


def test_init_defaults_and_per_kind_values():
    default = MaskLogits(SHAPE)
    assert default.heads.tolist() == [[1.0, 1.0]] and default.neurons.tolist() == [[1.0, 1.0, 1.0]]
    assert default.heads.dtype == torch.float32
    per_kind = MaskLogits(SHAPE, init={"heads": 3.0})  # neurons keep the default 1.0
    assert per_kind.heads.tolist() == [[3.0, 3.0]] and per_kind.neurons.tolist() == [[1.0, 1.0, 1.0]]
    heads_only = MaskLogits(SHAPE, kinds=("heads",))
    assert heads_only.neurons is None and heads_only.logits("neurons") is None
    assert list(heads_only.values()) == ["heads"]


@pytest.mark.parametrize(("arguments", "message"), [
    ({"temperature": 0.0}, "temperature must be positive, got 0.0"),
    ({"kinds": ("heads", "layers")}, "kinds must be a non-empty subset"),
    ({"kinds": ()}, "kinds must be a non-empty subset"),
])
def test_bad_settings_are_refused(arguments, message):
    with pytest.raises(InputError, match=message):
        MaskLogits(SHAPE, **arguments)


def test_sigmoid_values_and_keep_probability_divide_by_the_temperature():
    mask = MaskLogits(SHAPE, init=2.0, kind="sigmoid", temperature=2.0)  # sigmoid(2 / 2)
    assert mask.values()["heads"][0].tolist() == pytest.approx([SIG1, SIG1])
    assert mask.keep_probability()["neurons"][0].tolist() == pytest.approx([SIG1] * 3)


def test_hard_sigmoid_is_off_at_zero_and_its_gradient_is_that_of_sigmoid_a_over_t():
    mask = MaskLogits(SHAPE, kinds=("heads",), init=0.0, kind="hard_sigmoid", temperature=2.0)
    value = mask.values()["heads"]
    assert value.tolist() == [[0.0, 0.0]]  # sigmoid(0) = 0.5 is not above 0.5
    assert not mask.kept()["heads"].any()
    value.sum().backward()
    # d sigmoid(a / 2) / da at a = 0: 0.25 / 2
    assert mask.heads.grad[0].tolist() == pytest.approx([0.125, 0.125])


def test_hard_concrete_is_deterministic_unless_asked_and_follows_its_definition():
    mask = MaskLogits(SHAPE, kinds=("neurons",), init=0.0, kind="hard_concrete")
    # deterministic: sigmoid(0) stretched to (-0.1, 1.1): 0.5 * 1.2 - 0.1
    assert mask.values()["neurons"][0].tolist() == pytest.approx([0.5, 0.5, 0.5])
    noisy = mask.values(stochastic=True)["neurons"]  # no generator: drawn on the logits' device
    assert noisy.shape == (1, 3)
    with torch.no_grad():
        mask.neurons.copy_(torch.tensor([[-1.0, 0.5, 2.0]]))
    drawn = mask.values(stochastic=True, generator=torch.Generator().manual_seed(0))["neurons"][0].tolist()
    u = torch.rand((1, 3), generator=torch.Generator().manual_seed(0))[0].tolist()
    for value, noise, a in zip(drawn, u, [-1.0, 0.5, 2.0]):
        s = 1 / (1 + math.exp(-(math.log(noise) - math.log(1 - noise) + a) / (2 / 3)))
        assert value == pytest.approx(min(1.0, max(0.0, s * 1.2 - 0.1)), abs=1e-6)


def test_kept_reads_the_deterministic_hard_concrete_value():
    # logit 0: the deterministic value is 0.5, not above 0.5, for every one of 64 neurons; noisy
    # samples would put about half of them above
    mask = MaskLogits(ModelShape(n_layers=1, n_heads=1, d_mlp=64), kinds=("neurons",), init=0.0, kind="hard_concrete")
    assert not mask.kept()["neurons"].any()


def test_a_gate_with_a_fill_computes_in_the_activations_dtype():
    # fill + m * (act - fill) with m = 0.5: (1 + 3) / 2 = 2 for act 3 and fill 1
    ((_, hook),) = mask_hooks(neurons=torch.full((1, 3), 0.5), fill={"neurons": torch.ones(1, 3)})
    out = hook(torch.full((1, 2, 3), 3.0, dtype=torch.float16), None)
    assert out.dtype == torch.float16 and out.tolist() == [[[2.0] * 3] * 2]
