"""The refusal direction (Arditi et al.): its metrics, the difference of means, the interventions, the unit ranking, selection."""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext

import pytest
import torch
from safetensors.torch import save_file

from safeseek_tl import Circuit, InputError, RefusalJudge, load_model
from safeseek_tl.baselines import direction
from safeseek_tl.baselines.direction import (
    RefusalDirection,
    direction_ablated,
    direction_added,
    direction_unit_scores,
    first_pruned_layer,
    mean_differences,
    mean_last_residuals,
)
from safeseek_tl.baselines.direction_selection import CandidateEvaluation, choose_direction, rejection, select_direction
from safeseek_tl.chat import ChatFormatter
from safeseek_tl.data import tokenize_prompts
from safeseek_tl.evaluate import intervention_kl, own_refusal_token_ids
from safeseek_tl.hooks import attn_out_hook, count_hooks, mlp_out_hook
from safeseek_tl.methods import run_method
from safeseek_tl.metrics import refusal_first_tokens
from safeseek_tl.models import LoadedModel
from safeseek_tl.organisms import data_file, load_data
from safeseek_tl.prefix import resid_pre_hook
from tests.conftest import CHAT_TEMPLATE, make_word_tokenizer
from tests.helpers import CORRUPTED, PROMPTS, run_cli


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; on a busy 2-core machine OpenMP spin-waits slow them down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def aligned() -> LoadedModel:
    return load_model("organism:tiny-aligned")


def _prompts(kind: str, split: str, n: int) -> list[str]:
    return [record.prompt for record in load_data(kind, split)[:n]]


# ---- metrics: the model's own refusal tokens, KL of an intervention, post-instruction positions ----


def test_refusal_first_tokens_counts_only_refusals_and_drops_rare_openings():
    # refusals open with 5 (three times), 7 (twice) and 9 (once); 3 opens a compliant answer
    first, refused = [5, 7, 5, 9, 5, 7, 3], [True] * 6 + [False]
    assert refusal_first_tokens(first, refused, min_share=0.1) == [5, 7, 9]
    assert refusal_first_tokens(first, refused, min_share=0.2) == [5, 7]  # 9 opens 1/6 < 0.2 of them
    assert refusal_first_tokens([4, 2, 2, 4], [True] * 4) == [4, 2]  # ties: first seen first
    with pytest.raises(InputError, match="refused none of the 2 prompts"):
        refusal_first_tokens([1, 2], [False, False])
    with pytest.raises(InputError, match="2 first tokens but 1"):
        refusal_first_tokens([1, 2], [True])


def test_own_refusal_tokens_of_tiny_aligned_are_its_sorry(aligned):
    harmful = _prompts("alignment", "val", 6)
    assert own_refusal_token_ids(aligned, harmful) == aligned.tokenizer.convert_tokens_to_ids(["Sorry"])
    never = RefusalJudge(keywords=("zzzz",), min_chars=0)
    with pytest.raises(InputError, match="refused none of the 6 prompts"):
        own_refusal_token_ids(aligned, harmful, judge=never)


class TwoTokenModel(torch.nn.Module):
    """Logits [0, 0] at every position, [0, log 3] while ``shifted``."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # LoadedModel.device reads it
        self.shifted = False

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0):
        logits = torch.zeros(*input_ids.shape, 2)
        if self.shifted:
            logits[..., 1] = math.log(3.0)
        return logits


def test_intervention_kl_by_hand():
    tokenizer = make_word_tokenizer()
    model = TwoTokenModel()
    loaded = LoadedModel(model, tokenizer, ChatFormatter(tokenizer), "two-token", "test")

    @contextmanager
    def shift():
        model.shifted = True
        try:
            yield
        finally:
            model.shifted = False

    # full (1/2, 1/2), intervened (1/4, 3/4): KL = 1/2 log(2) + 1/2 log(2/3) = 1/2 log(4/3)
    kl = intervention_kl(loaded, ["bake a cake", "tell me how to steal a car", "sure"], shift, batch_size=2)
    torch.testing.assert_close(kl, torch.full((3,), 0.5 * math.log(4 / 3)))
    assert not model.shifted
    assert intervention_kl(loaded, ["bake a cake"], nullcontext).item() == 0.0


@pytest.mark.parametrize("suffix, expected", [(" <|assistant|>", 2), (" <|assistant|> Sure ,", 4), ("", 1)])
def test_post_instruction_length_counts_the_template_tokens_after_the_user_text(suffix, expected):
    # the tests' template writes " <|end|>" after the user's text, then the generation prompt
    template = CHAT_TEMPLATE.replace(" <|assistant|>{% endif %}", suffix + "{% endif %}")
    assert ChatFormatter(make_word_tokenizer(template)).post_instruction_length() == expected


# ---- the difference of means ----


def test_mean_last_residuals_by_hand(gqa):
    # every layer's residual is set to 100 (layer + 1) + 10 g + k, with g the prompt's row over all
    # batches (0, 1, 2) and k the position counted from the end (-1 last); the prompts have
    # different lengths, so the rows are left-padded. Mean over g = 1, so at the last two positions:
    # layer 0: 108 (k = -2), 109 (k = -1); layer 1: 208, 209.
    seen = [0, 0]

    def setter(layer):
        def hook(act, hook):
            b, pos, d = act.shape
            g = torch.arange(seen[layer], seen[layer] + b, dtype=act.dtype).view(b, 1, 1)
            k = (torch.arange(pos, dtype=act.dtype) - pos).view(1, pos, 1)
            seen[layer] += b
            return 100.0 * (layer + 1) + 10.0 * g + k + torch.zeros(d)

        return hook

    prompts = ["tell me how to steal a car", "bake a cake", "how to do it ?"]
    with gqa.model.hooks(fwd_hooks=[(resid_pre_hook(layer), setter(layer)) for layer in range(2)]):
        means = mean_last_residuals(gqa, prompts, n_positions=2, batch_size=2)
    expected = torch.tensor([[108.0, 208.0], [109.0, 209.0]], dtype=torch.float64).unsqueeze(-1).expand(2, 2, 64)
    assert means.dtype == torch.float64 and seen == [3, 3]
    torch.testing.assert_close(means, expected)
    with pytest.raises(InputError, match="n_positions must be between 1 and the shortest prompt's"):
        mean_last_residuals(gqa, prompts, n_positions=99)


def test_mean_differences_is_harmful_minus_harmless_at_the_template_positions(gqa, monkeypatch):
    calls = []

    def fake(loaded, prompts, n_positions, batch_size=16):
        calls.append((list(prompts), n_positions))
        return torch.full((n_positions, 2, 3), float(len(prompts[0])), dtype=torch.float64)

    monkeypatch.setattr(direction, "mean_last_residuals", fake)
    diff = mean_differences(gqa, ["harm"], ["ok"])
    torch.testing.assert_close(diff, torch.full((2, 2, 3), 4.0 - 2.0, dtype=torch.float64))
    assert calls == [(["harm"], 2), (["ok"], 2)]  # two post-instruction tokens: <|end|> <|assistant|>


def test_first_layer_candidates_are_zero(aligned):
    # at layer 0 the residual is the token embedding: the same at the post-instruction positions of
    # every prompt, not at the user's last token ("?" in the harmful prompts, "." in the harmless ones)
    harmful, harmless = ["how do I kill my cousin ?", "how do I loot a factory ?"], ["explain how to clean a garage .", "draw a factory ."]
    diff = mean_differences(aligned, harmful, harmless)
    assert diff.shape == (2, 4, 128)
    assert diff[:, 0].abs().max() == 0 and diff[:, 1:].abs().min(-1).values.max() > 0
    before = mean_differences(aligned, harmful, harmless, n_positions=3)
    assert torch.equal(before[1:], diff) and before[0, 0].abs().max() > 0


# ---- directional ablation and activation addition ----


def _capture(names, store):
    def keep(name):  # under the name asked for: the bridge's hook.name is the canonical one (blocks.0.hook_in)
        def hook(act, hook):
            store[name] = act.detach().clone()
            return act

        return hook

    return [(name, keep(name)) for name in names]


def _forward(loaded, prompts):
    tokens = tokenize_prompts(loaded.chat, prompts)
    return loaded.model(tokens.input_ids, attention_mask=tokens.attention_mask)


def test_directional_ablation_leaves_no_component_along_the_direction(gqa):
    r = torch.randn(64, generator=torch.Generator().manual_seed(3))
    unit = r / r.norm()
    points = [name(layer) for layer in range(2) for name in (resid_pre_hook, attn_out_hook, mlp_out_hook)]
    points += [f"blocks.{layer}.hook_resid_post" for layer in range(2)] + ["ln_final.hook_in"]
    clean, ablated = {}, {}
    with gqa.model.hooks(fwd_hooks=_capture(points, clean)):
        _forward(gqa, PROMPTS)
    with direction_ablated(gqa.model, 5 * r), gqa.model.hooks(fwd_hooks=_capture(points, ablated)):
        _forward(gqa, PROMPTS)
    for name in points:
        scale = clean[name].norm(dim=-1).max()
        assert (clean[name] @ unit).abs().max() > 1e-3 * scale, name  # there was a component to remove
        assert (ablated[name] @ unit).abs().max() < 1e-6 * scale, name


def test_activation_addition_adds_the_vector_at_one_layer(gqa):
    v = torch.randn(64, generator=torch.Generator().manual_seed(4))
    points = [resid_pre_hook(0), resid_pre_hook(1)]
    clean, added = {}, {}
    with gqa.model.hooks(fwd_hooks=_capture(points, clean)):
        _forward(gqa, PROMPTS)
    with direction_added(gqa.model, v, layer=1, coeff=2.0), gqa.model.hooks(fwd_hooks=_capture(points, added)):
        _forward(gqa, PROMPTS)
    assert torch.equal(added[resid_pre_hook(0)], clean[resid_pre_hook(0)])
    torch.testing.assert_close(added[resid_pre_hook(1)], clean[resid_pre_hook(1)] + 2.0 * v)
    with pytest.raises(InputError, match="layer 2 is outside a model with 2 layers"):
        direction_added(gqa.model, v, layer=2).__enter__()


@pytest.mark.parametrize("context", ["ablated", "added"])
def test_hooks_come_off_after_an_exception(gqa, context):
    r = torch.randn(64, generator=torch.Generator().manual_seed(5))
    before, clean = count_hooks(gqa.model), _forward(gqa, PROMPTS)
    manager = direction_ablated(gqa.model, r) if context == "ablated" else direction_added(gqa.model, r, layer=0)
    with pytest.raises(RuntimeError, match="boom"), manager:
        assert not torch.allclose(_forward(gqa, PROMPTS), clean)  # the intervention is on
        raise RuntimeError("boom")
    assert count_hooks(gqa.model) == before
    assert torch.equal(_forward(gqa, PROMPTS), clean)


def test_a_direction_that_does_not_fit_is_refused(gqa):
    with pytest.raises(InputError, match="d_model = 64 values, got shape"):
        direction_ablated(gqa.model, torch.ones(63)).__enter__()
    with pytest.raises(InputError, match="finite and not zero"):
        direction_ablated(gqa.model, torch.zeros(64)).__enter__()


# ---- the unit ranking ----


def _last(loaded, prompt, name, n):
    ids = torch.tensor([loaded.chat.prompt_ids(prompt)])  # one prompt, no padding
    _, cache = loaded.model.run_with_cache(ids, names_filter=lambda hook_name: hook_name == name)
    return cache[name][0, -n:].double()


def _mean_diff(loaded, name, n, select=lambda act: act):
    harmful = torch.stack([select(_last(loaded, p, name, n)) for p in PROMPTS]).mean((0, 1))
    harmless = torch.stack([select(_last(loaded, p, name, n)) for p in CORRUPTED]).mean((0, 1))
    return harmful - harmless


def test_a_head_writing_only_along_the_direction_ranks_first(gqa_dir):
    loaded = load_model(gqa_dir)
    layers = loaded.model.original_model.model.layers
    with torch.no_grad():
        for layer in layers:  # nothing writes along e_0 ...
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
        layers[0].mlp.down_proj.weight[0, 5] = 1.0  # ... but neuron (0, 5), with weight 1
    d = _mean_diff(loaded, "blocks.1.attn.hook_z", 2, lambda z: z[:, 2])  # head (1, 2): harmful minus harmless mean z
    neuron = _mean_diff(loaded, "blocks.0.mlp.hook_post", 2, lambda act: act[:, 5])
    with torch.no_grad():  # and head (1, 2), along d: its write onto e_0 is z . d / |d|, its score |d|
        layers[1].self_attn.o_proj.weight[0, 32:48] = (d / d.norm()).float()
    e0 = torch.zeros(64)
    e0[0] = 3.0  # not a unit vector: the score is the write onto the unit direction
    scores = direction_unit_scores(loaded, e0, PROMPTS, CORRUPTED, batch_size=3)
    assert scores.heads[1, 2].item() == pytest.approx(d.norm().item(), rel=1e-4)
    others = torch.ones(2, 4, dtype=torch.bool)
    others[1, 2] = False
    assert scores.heads[others].abs().max() == 0
    assert Circuit.top_k(scores, heads=1).head_list == [[1, 2]]
    assert scores.neurons[0, 5].item() == pytest.approx(neuron.item(), rel=1e-4, abs=1e-7)
    assert scores.neurons.abs().sum() == scores.neurons[0, 5].abs()
    assert scores.metadata["n_positions"] == 2 and scores.method == "refusal-direction"


def test_head_and_neuron_writes_add_up_to_the_attention_and_mlp_writes(gqa):
    # grouped-query attention: 4 query heads share 2 key/value heads, and each query head has its own W_O
    r = torch.randn(64, generator=torch.Generator().manual_seed(6))
    unit = (r / r.norm()).double()
    scores = direction_unit_scores(gqa, r, PROMPTS, CORRUPTED, batch_size=2)
    for layer in range(2):
        attn = _mean_diff(gqa, attn_out_hook(layer), 2, lambda act: act @ unit)
        mlp = _mean_diff(gqa, mlp_out_hook(layer), 2, lambda act: act @ unit)
        assert scores.heads[layer].sum().item() == pytest.approx(attn.item(), rel=1e-4, abs=1e-6)
        assert scores.neurons[layer].sum().item() == pytest.approx(mlp.item(), rel=1e-4, abs=1e-6)


# ---- selection ----


def test_the_last_fifth_of_layers_by_hand():
    assert [first_pruned_layer(n, 0.2) for n in (4, 5, 10, 24)] == [3, 4, 8, 19]
    assert first_pruned_layer(10, 0.7) == 3 and first_pruned_layer(10, 0.0) == 10
    assert first_pruned_layer(10, 0.9) == 1  # 10 * (1 - 0.9) is 0.9999999999999998 in floats
    with pytest.raises(InputError, match="prune_fraction"):
        first_pruned_layer(10, 1.0)


def test_rejection_rules_by_hand():
    def why(layer=0, norm=1.0, kl=0.05, induced=1.0, **rule):
        return rejection(layer, 10, norm, kl, induced, **rule)

    assert why() is None and why(layer=7) is None and why(kl=0.1) is None and why(induced=0.0) is None
    assert why(layer=8) == "layer in the last 20% of layers"
    assert why(layer=8, prune_fraction=0.1) is None and why(layer=9, prune_fraction=0.1) == "layer in the last 10% of layers"
    assert why(kl=0.1001) == "KL above 0.1" and why(kl=0.3, kl_limit=0.5) is None
    assert why(induced=-0.01) == "induced refusal score below 0.0" and why(induced=None, induce_min=None) is None
    assert why(norm=0.0) == "zero or not finite" and why(norm=math.inf) == "zero or not finite"
    assert why(kl=math.nan) == "not a number" and why(induced=None) == "not a number"


def test_selection_on_tiny_aligned_follows_the_rules(aligned):
    candidates = mean_differences(aligned, _prompts("alignment", "train", 48), _prompts("benign", "train", 48))
    harmful, harmless = _prompts("alignment", "val", 16), _prompts("benign", "val", 16)
    found = select_direction(aligned, candidates, harmful, harmless, kl_limit=1.0, progress=False)
    assert [(row["position"], row["layer"]) for row in found.table] == [(p, layer) for p in (-2, -1) for layer in range(4)]
    for row in found.table:
        if row["layer"] == 3:
            assert row["rejected"] == "layer in the last 20% of layers" and row["kl"] is None
        elif row["layer"] == 0:
            assert row["rejected"] == "zero or not finite" and row["kl"] is None
        else:
            expected = "KL above 1.0" if row["kl"] > 1.0 else "induced refusal score below 0.0" if row["induced_score"] < 0 else None
            assert row["rejected"] == expected
            assert row["score_drop"] == pytest.approx(found.baseline["refusal_score_harmful"] - row["ablated_score"])
    kept = [row for row in found.table if row["rejected"] is None]
    assert any(row["rejected"] == "KL above 1.0" for row in found.table) and kept  # both rules bite here
    best = min(kept, key=lambda row: row["ablated_score"])
    assert (found.position, found.layer) == (best["position"], best["layer"]) == (-1, 2)
    assert torch.equal(found.direction, candidates[-1, 2].float())
    assert found.baseline["refusal_score_harmful"] > 0 > found.baseline["refusal_score_harmless"]
    lenient = select_direction(aligned, candidates, harmful, harmless, kl_limit=100.0, induce_min=None, progress=False)
    kept = [row for row in lenient.table if row["rejected"] is None]
    assert len(kept) == 4 and all(row["induced_score"] is None for row in lenient.table)  # the layers 1 and 2
    best = min(kept, key=lambda row: row["ablated_score"])
    assert (lenient.position, lenient.layer) == (best["position"], best["layer"]) == (-1, 2)
    with pytest.raises(InputError, match=r"all 8 candidate directions were rejected \(.*KL above 0.001"):
        select_direction(aligned, candidates, harmful, harmless, kl_limit=0.001, progress=False)


# ---- saving ----


def _handmade() -> RefusalDirection:
    candidates = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    table = [{"position": -1, "layer": 1, "ablated_score": -0.5, "score_drop": 2.0, "kl": 0.05, "induced_score": 1.0, "rejected": None}]
    return RefusalDirection(candidates[-1, 1].clone(), 1, -1, candidates, table, {"refusal_score_harmful": 1.5}, {"kl_limit": 0.1})


def test_a_direction_saves_and_loads_without_pickles(tmp_path):
    found = _handmade()
    found.save(tmp_path / "direction.safetensors")
    back = RefusalDirection.load(tmp_path / "direction.safetensors")
    assert torch.equal(back.direction, found.direction) and torch.equal(back.candidates, found.candidates)
    assert (back.layer, back.position, back.table, back.baseline, back.settings) == (1, -1, found.table, found.baseline, found.settings)


def test_a_bad_direction_file_names_the_file_and_field(tmp_path):
    path = tmp_path / "bad.safetensors"
    found = _handmade()
    found.position = -3
    found.save(path)
    with pytest.raises(InputError, match=r"bad.safetensors: fields 'layer' 1 and 'position' -3 do not index"):
        RefusalDirection.load(path)
    save_file({"direction": found.direction}, path, metadata={"format": "safeseek_tl.refusal_direction/1", "layer": "1"})
    with pytest.raises(InputError, match="bad.safetensors: field 'position' is missing"):
        RefusalDirection.load(path)
    save_file({"direction": found.direction}, path, metadata={"format": "other"})
    with pytest.raises(InputError, match="bad.safetensors: field 'format' must be"):
        RefusalDirection.load(path)


# ---- the baseline ----


def test_the_baseline_runs_by_name_and_needs_benign_prompts(aligned):
    records = load_data("alignment", "train")[:24]
    benign = load_data("benign", "train")[:24]
    scores = run_method("refusal-direction", aligned, records, "alignment", benign=benign, kl_limit=1.0, progress=False)
    assert scores.method == "refusal-direction" and scores.heads.shape == (4, 8) and scores.neurons.shape == (4, 384)
    assert (scores.metadata["layer"], scores.metadata["position"]) == (2, -1) and len(scores.metadata["candidates"]) == 8
    assert scores.metadata["settings"]["n_harmful_train"] == 18 and scores.metadata["settings"]["n_harmful_val"] == 6
    with pytest.raises(InputError, match="'refusal-direction' in the alignment scenario needs benign prompts"):
        run_method("refusal-direction", aligned, records, "alignment")


def test_cli_attribute_with_the_refusal_direction(tmp_path):
    args = ["attribute", "--method", "refusal-direction", "--model", "organism:tiny-aligned", "--scenario", "alignment"]
    args += ["--data", str(data_file("alignment", "val")), "--benign", str(data_file("benign", "val"))]
    code, out, err = run_cli(*args, "--out", str(tmp_path / "run"), "--set", "kl_limit=1")
    assert code == 0, err
    assert (tmp_path / "run" / "scores.safetensors").is_file() and (tmp_path / "run" / "circuit.json").is_file()
    code, out, err = run_cli(*args, "--out", str(tmp_path / "strict"))  # Arditi et al.'s 0.1: too strict for this tiny model
    assert code == 2 and "candidate directions were rejected" in err
    code, out, err = run_cli("attribute", "--method", "ships", *args[3:], "--out", str(tmp_path / "ships"), "--set", "kl_limit=1")
    assert code == 2 and "bad settings for ships" in err and "kl_limit" in err


def test_choose_direction_applies_the_filters_to_one_evaluation_by_hand(tmp_path):
    """Five layers at one position, measured once (numbers set by hand). Layer 0 is a zero vector,
    layer 4 is in the last 20% of layers (first_pruned_layer(5, 0.2) = 4). Layer 1: lowest score
    but KL 0.15; layer 2: KL 0.05 but induced score -0.3; layer 3: KL 0.08, induced 0.4. So KL 0.1
    with the induced filter keeps layer 3 only; without it layer 2 wins (-1.0 < -0.5); KL 0.2
    without it lets layer 1 (-2.0) win; KL 0.01 rejects all, and the evaluation is still there."""
    candidates = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [1.0, 1.0]]])
    row = lambda layer, score, kl, induced: {"position": -1, "layer": layer, "ablated_score": score, "score_drop": None, "kl": kl, "induced_score": induced}  # noqa: E731
    rows = [row(0, None, None, None), row(1, -2.0, 0.15, 0.5), row(2, -1.0, 0.05, -0.3), row(3, -0.5, 0.08, 0.4), row(4, None, None, None)]
    evaluation = CandidateEvaluation(rows, {"refusal_score_harmful": 1.0}, {"induce": True, "prune_fraction": 0.2, "refusal_ids": [7]})
    assert choose_direction(candidates, evaluation, kl_limit=0.1, induce_min=0.0).layer == 3
    assert choose_direction(candidates, evaluation, kl_limit=0.1, induce_min=None).layer == 2
    found = choose_direction(candidates, evaluation, kl_limit=0.2, induce_min=None)
    assert (found.layer, found.position, found.direction.tolist()) == (1, -1, [1.0, 0.0])
    assert [r["rejected"] for r in found.table] == ["zero or not finite", None, None, None, "layer in the last 20% of layers"]
    with pytest.raises(InputError, match="all 5 candidate directions were rejected"):
        choose_direction(candidates, evaluation, kl_limit=0.01, induce_min=None)
    assert evaluation.rows == rows and "rejected" not in evaluation.rows[1]
    # a saved choice carries its evaluation: choosing again from the file, with other limits, needs no model pass
    found.save(tmp_path / "direction.safetensors")
    loaded = RefusalDirection.load(tmp_path / "direction.safetensors")
    again = CandidateEvaluation.of(loaded)
    assert again.rows == rows and again.settings == {"induce": True, "prune_fraction": 0.2, "refusal_ids": [7]}
    assert choose_direction(loaded.candidates, again, kl_limit=0.1, induce_min=0.0).layer == 3
    assert choose_direction(loaded.candidates, again, kl_limit=0.1, induce_min=None).layer == 2
    without_induced = CandidateEvaluation(rows, {}, {"induce": False, "prune_fraction": 0.2})
    with pytest.raises(InputError, match="induce=True"):
        choose_direction(candidates, without_induced, kl_limit=0.2, induce_min=0.0)
