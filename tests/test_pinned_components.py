"""Building blocks pinned to values worked out by hand (issue 17: the tests must catch wrong ones).

Hard-concrete mask values, resample ablation, the KL of ``last_position_kl`` (Ships' score),
activation contrasting's token positions, ``compare`` measuring under the ablation it installs, and
the report's escaping of list and dict values.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from safeseek_tl.ablation import ReferenceActivations, ablated
from safeseek_tl.baselines import contrasting
from safeseek_tl.compare import compare
from safeseek_tl.data import tokenize_prompts
from safeseek_tl.evaluate import BehaviourData
from safeseek_tl.hooks import head_hook, neuron_hook
from safeseek_tl.masks import MaskLogits
from safeseek_tl.metrics import last_position_kl
from safeseek_tl.report import write_report
from safeseek_tl.units import Circuit, ModelShape, Scores


# ---------------------------------------------------------------- hard-concrete masks
def test_hard_concrete_values_are_clipped_to_zero_and_one():
    mask = MaskLogits(ModelShape(1, 3, 2), ("heads",), kind="hard_concrete")
    with torch.no_grad():
        mask.logits("heads").copy_(torch.tensor([[10.0, -10.0, 0.0]]))
    # deterministic: sigmoid(a) stretched to (-0.1, 1.1), then clipped:
    #   a = 10:  0.99995 * 1.2 - 0.1 = 1.09995 -> 1;  a = -10: 0.0000454 * 1.2 - 0.1 = -0.09995 -> 0;  a = 0: 0.5
    values = mask.values(stochastic=False)["heads"]
    assert values[0, 0].item() == 1.0 and values[0, 1].item() == 0.0
    assert values[0, 2].item() == pytest.approx(0.5, abs=1e-6)
    assert mask.kept()["heads"].tolist() == [[True, False, False]]  # kept: value > 0.5
    # P(gate > 0) = sigmoid(a - beta * log(-gamma / zeta)) = sigmoid(0 + (2/3) ln 11) = sigmoid(1.59860) = 0.83180
    assert mask.keep_probability()["heads"][0, 2].item() == pytest.approx(1 / (1 + math.exp(-(2 / 3) * math.log(11))), rel=1e-6)


def test_hard_concrete_samples_stay_in_zero_one_and_reach_both_ends():
    mask = MaskLogits(ModelShape(1, 1000, 2), ("heads",), kind="hard_concrete")
    with torch.no_grad():
        mask.logits("heads").copy_(torch.cat([torch.full((1, 500), 10.0), torch.full((1, 500), -10.0)], dim=1))
    values = mask.values(stochastic=True, generator=torch.Generator().manual_seed(0))["heads"]
    assert values.min().item() >= 0.0 and values.max().item() <= 1.0
    # a sample is s = sigmoid((logit(u) + a) / (2/3)), value 1.2 s - 0.1. For a = 10 it reaches 1 (is clipped)
    # when s > 11/12, i.e. logit(u) > (2/3) ln 11 - 10 = -8.40: probability 1 - sigmoid(-8.40) = 0.9998; for
    # a = -10 it is clipped to 0 when s < 1/12, with the same probability.
    assert (values[0, :500] == 1.0).float().mean().item() > 0.99
    assert (values[0, 500:] == 0.0).float().mean().item() > 0.99


# ---------------------------------------------------------------- resample ablation
def _capture(model, points, tokens):
    seen = {}

    def grab(name):
        def hook(act, hook):
            seen[name] = act.detach().clone()
            return act

        return hook

    with model.hooks(fwd_hooks=[(point, grab(point)) for point in points]):
        model(tokens)
    return seen


def test_resample_ablation_draws_whole_tokens_from_the_pool(gqa, tokens):
    shape, d_head = gqa.shape, int(gqa.model.cfg.d_head)
    # A pool of 2 hand-made "tokens": token 0 gives every head 10 and every neuron 100, token 1 gives 20 and 200.
    # The means (-5) are what mean ablation would put there; zero ablation would put 0.
    pool_heads = torch.stack([torch.full((shape.n_heads, d_head), 10.0), torch.full((shape.n_heads, d_head), 20.0)])
    pool_neurons = torch.stack([torch.full((shape.d_mlp,), 100.0), torch.full((shape.d_mlp,), 200.0)])
    reference = ReferenceActivations(
        means={"heads": torch.full((shape.n_layers, shape.n_heads, d_head), -5.0), "neurons": torch.full((shape.n_layers, shape.d_mlp), -5.0)},
        pools={"heads": pool_heads.expand(shape.n_layers, -1, -1, -1).clone(), "neurons": pool_neurons.expand(shape.n_layers, -1, -1).clone()},
    )
    circuit = Circuit.from_units(shape, heads=[[0, 2]], neurons=[[1, 4], [1, 7]])
    points = [head_hook(0), neuron_hook(1)]
    clean = _capture(gqa.model, points, tokens)
    with ablated(gqa.model, circuit, "resample", reference):
        seen = _capture(gqa.model, points, tokens)
    z, post = seen[head_hook(0)], seen[neuron_hook(1)]
    # every position of head L0H2 holds a pool token's value: all 16 numbers 10, or all 20
    head = z[:, :, 2]
    assert ((head == 10.0).all(-1) | (head == 20.0).all(-1)).all()
    # the two neurons of layer 1 take the same drawn token at each position: (100, 100) or (200, 200)
    pair = post[..., [4, 7]]
    assert ((pair == 100.0).all(-1) | (pair == 200.0).all(-1)).all()
    # other units are untouched (L0H1 is upstream of nothing that changed)
    assert torch.equal(z[:, :, 1], clean[head_hook(0)][:, :, 1])
    # half strength: halfway between the unit's own value and the replacement
    single = replace(reference, pools={k: v[:, :1] for k, v in reference.pools.items()})  # pool of token 0 only
    with ablated(gqa.model, circuit, "resample", single, strength=0.5):
        half = _capture(gqa.model, [head_hook(0)], tokens)[head_hook(0)]
    torch.testing.assert_close(half[:, :, 2], (clean[head_hook(0)][:, :, 2] + 10.0) / 2)


# ---------------------------------------------------------------- KL (Ships' score)
def test_last_position_kl_is_kl_of_base_from_other():
    base = torch.log(torch.tensor([[0.5, 0.5]]))  # p
    other = torch.log(torch.tensor([[0.75, 0.25]]))  # q
    # KL(p || q) = 0.5 ln(0.5 / 0.75) + 0.5 ln(0.5 / 0.25) = 0.5 ln(4/3) = 0.143841
    # (the other direction, KL(q || p) = 0.75 ln 1.5 + 0.25 ln 0.5 = 0.130812)
    kl = last_position_kl(base, other)
    assert kl.shape == (1,) and kl.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-5)
    # logits, not probabilities: shifting one row by a constant changes nothing
    assert last_position_kl(base + 3.0, other - 1.0).item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-5)


# ---------------------------------------------------------------- activation contrasting positions
class _PositionModel(torch.nn.Module):
    """Stands in for a model in activation contrasting: layer 0's first neuron reads ``scale * position``, the second 0."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.cfg = SimpleNamespace(n_layers=1, n_heads=1, d_mlp=2, model_name="toy")
        self.scale = scale

    def run_with_cache(self, ids, attention_mask=None, names_filter=None):
        positions = torch.arange(ids.shape[1], dtype=torch.float32).expand(ids.shape[0], -1)
        return None, {neuron_hook(0): torch.stack([self.scale * positions, torch.zeros_like(positions)], dim=-1)}


@pytest.mark.parametrize("positions", ["completion", "prediction", "prompt", "prompt_last"])
def test_contrasting_scores_the_chosen_positions(gqa, monkeypatch, positions):
    m1 = replace(gqa, model=_PositionModel(0.0), name="m1")
    m2 = replace(gqa, model=_PositionModel(1.0), name="m2")  # a_M1 - a_M2 = -position for neuron 0
    prompt_len = {}

    def greedy(model, ids, mask, tokenizer, max_new_tokens):
        # the prompt (P tokens, positions 0..P-1) then 2 generated tokens and EOS: the completion is P, P+1
        prompt_len["P"] = ids.shape[1]
        return torch.cat([ids, torch.tensor([[9, 10, tokenizer.eos_token_id]])], dim=1)

    # the position models cannot generate: the generation is given, the completion read from it as always
    monkeypatch.setattr(contrasting, "check_cached_generation", lambda model, tokenizer: None)
    monkeypatch.setattr(contrasting, "greedy_generate", greedy)
    scores = contrasting.activation_contrast(m1, m2, ["tell me how to bake a cake"], positions=positions, progress=False)
    p = tokenize_prompts(gqa.chat, ["tell me how to bake a cake"]).input_ids.shape[1]  # one prompt: no padding
    assert prompt_len.get("P", p) == p
    # score = sqrt(mean over the chosen positions of position^2)
    chosen = {
        "completion": [p, p + 1],  # the positions OF the generated tokens
        "prediction": [p - 1, p],  # the positions that predict them: the last prompt token and all but the last
        "prompt": list(range(p)),
        "prompt_last": [p - 1],
    }[positions]
    expected = math.sqrt(sum(t * t for t in chosen) / len(chosen))
    assert scores.neurons[0, 0].item() == pytest.approx(expected, rel=1e-6)
    assert scores.neurons[0, 1].item() == 0.0
    assert scores.metadata["n_tokens"] == len(chosen)


# ---------------------------------------------------------------- compare ablates what it measures
class _Measured(dict):
    """A stand-in measurement: the metrics it sets, and 0.0 for any other one that compare reads."""

    def __missing__(self, key):
        return 0.0


def test_compare_measures_each_budget_with_its_top_k_heads_ablated(gqa, monkeypatch):
    shape = gqa.shape  # 2 layers x 4 heads
    heads = torch.tensor([[0.7, 0.1, 0.2, 0.3], [0.4, 0.6, 0.0, 0.9]])  # top 1: L1H3; top 3: + L0H0, L1H1
    tokens = torch.tensor([[2, 7, 8, 9, 10]])

    def zeroed_heads(loaded, data, *args, **kwargs):
        # a stand-in for measure(): the share of heads whose output is zero everywhere, as the model runs now
        seen = _capture(loaded.model, [head_hook(layer) for layer in range(shape.n_layers)], tokens)
        zero = [(seen[head_hook(layer)][:, :, h] == 0).all().item() for layer in range(shape.n_layers) for h in range(shape.n_heads)]
        return _Measured(asr_triggered=sum(zero) / len(zero))

    monkeypatch.setattr("safeseek_tl.compare.measure", zeroed_heads)
    data = BehaviourData(harmful=[], triggered=["a"], benign=[])
    table = compare(gqa, {"hand": Scores(shape, heads=heads, method="hand")}, [1, 3], "backdoor", data).table
    # nothing is zero in the full model; 1 of 8 heads ablated, then 3 of 8
    assert list(table["budget"]) == [1, 3]
    assert list(table["asr_triggered"]) == [1 / 8, 3 / 8]
    assert list(table["behaviour_change"]) == [1 / 8, 3 / 8]


# ---------------------------------------------------------------- report escaping
def test_report_escapes_list_and_dict_values(gqa, tmp_path):
    run = tmp_path / "run"
    Circuit.from_units(gqa.shape, heads=[[0, 1]]).save(run / "circuit.json")
    hostile = "</td><script>alert(1)</script>"
    (run / "config.json").write_text(json.dumps({"stop": [hostile], "weights": {"<b>": "a&b"}, "name": hostile}))
    (run / "behaviour.json").write_text(json.dumps({"full": {"kept": ["<i>x</i>"]}}))
    page = write_report(run, tmp_path / "report.html").read_text(encoding="utf-8")
    # each value is JSON-dumped, then HTML-escaped:
    #   ["</td><script>alert(1)</script>"] -> [&quot;&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;&quot;]
    assert "<td>[&quot;&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;&quot;]</td>" in page
    #   {"<b>": "a&b"} is a group: one row, named weights.<b>, both cells escaped
    assert "<td>weights.&lt;b&gt;</td><td>a&amp;b</td>" in page
    assert "<td>[&quot;&lt;i&gt;x&lt;/i&gt;&quot;]</td>" in page
    assert "<td>&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;</td>" in page  # the plain string, too
    assert "alert(1)</script>" not in page and "<i>x</i>" not in page and "<b>" not in page
