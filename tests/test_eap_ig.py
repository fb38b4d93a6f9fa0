"""EAP-IG (inputs, node level) against exact activation patching.

Where the metric is linear in a unit, the gradient at that unit is the same at every point of the
path, so EAP-IG must give exactly ``metric(patched) - metric(corrupted)``. The tiny GQA model (4
query heads sharing 2 key/value heads) is made linear in its last layer's units by two hooks that
the test installs: the final norm passes its input through unchanged, and (for heads) the last
MLP's output is held at zero, so a last-layer head reaches the logits only through W_O and W_U.
"""

from __future__ import annotations

import pytest
import torch

from safeseek_tl.baselines import activation_patching, eap_ig
from safeseek_tl.methods import METHODS, run_method
from safeseek_tl.models import load_model
from safeseek_tl.organisms import load_data
from tests.helpers import CLEAN, CORRUPTED


def _logit_gap(logits):
    return logits[:, 7] - logits[:, 8]  # "Sorry" minus "As": any fixed pair of tokens


def _linear_head(model, freeze_last_mlp: bool):
    """Hooks: the final norm becomes the identity (and optionally the last MLP writes zero)."""
    seen = {}

    def capture(act, hook):
        seen["resid"] = act
        return act

    hooks = [("ln_final.hook_in", capture), ("ln_final.hook_normalized", lambda act, hook: seen["resid"])]
    if freeze_last_mlp:
        hooks.append((f"blocks.{model.cfg.n_layers - 1}.hook_mlp_out", lambda act, hook: torch.zeros_like(act)))
    return model.hooks(fwd_hooks=hooks)


@pytest.mark.parametrize(("kind", "freeze_last_mlp"), [("neurons", False), ("heads", True)])
@pytest.mark.parametrize("ig_steps", [1, 5])
def test_equals_activation_patching_where_the_metric_is_linear_in_the_unit(sharp, kind, freeze_last_mlp, ig_steps):
    with _linear_head(sharp.model, freeze_last_mlp):
        integrated = eap_ig(sharp, CLEAN, CORRUPTED, metric=_logit_gap, units=kind, ig_steps=ig_steps, progress=False)
        exact = activation_patching(sharp, CLEAN, CORRUPTED, metric=_logit_gap, units=kind, progress=False)
    last = integrated.get(kind)[-1]
    assert exact.get(kind)[-1].abs().max() > 1e-3  # the units move the metric: the check has teeth
    torch.testing.assert_close(last, exact.get(kind)[-1], rtol=1e-4, atol=1e-6)
    # earlier layers reach the metric through attention and MLPs: only an estimate there
    assert not torch.allclose(integrated.get(kind)[0], exact.get(kind)[0], rtol=1e-3, atol=1e-5)
    assert integrated.metadata["ig_steps"] == ig_steps and integrated.method == "eap-ig"


def test_ig_steps_must_be_positive(sharp):
    with pytest.raises(ValueError, match="ig_steps must be a positive integer, got 0"):
        eap_ig(sharp, CLEAN, CORRUPTED, ig_steps=0, progress=False)


def test_registered_like_the_other_patching_methods(sharp):
    method = METHODS["eap-ig"]
    assert method.needs_benign and method.takes_units and method.granularities == ("heads", "neurons")
    records = load_data("backdoor", "train", "tiny-aligned")[:2]
    scores = run_method("eap-ig", sharp, records, "backdoor", units="neurons", ig_steps=2, progress=False)
    assert scores.heads is None and scores.metadata["orientation"] in (1.0, -1.0) and scores.metadata["ig_steps"] == 2


def test_correlates_with_activation_patching_on_tiny_backdoor(record_property):
    torch.set_num_threads(1)
    loaded = load_model("organism:tiny-backdoor")
    records = load_data("backdoor", "train")[:4]
    clean, corrupted = [r.backdoor_input for r in records], [r.input for r in records]
    integrated = eap_ig(loaded, clean, corrupted, units="both", progress=False)
    exact = activation_patching(loaded, clean, corrupted, units="both", batch_size=512, progress=False)
    for kind, floor in (("heads", 0.9), ("neurons", 0.6)):
        r = float(torch.corrcoef(torch.stack([integrated.get(kind).flatten(), exact.get(kind).flatten()]))[0, 1])
        record_property(f"pearson_{kind}", round(r, 4))
        print(f"EAP-IG vs activation patching on tiny-backdoor, 4 pairs, {kind}: Pearson r = {r:.4f}")
        assert r > floor
