"""Sparse alignment circuits (issue 20), pinned to values worked out by hand: the exact-size cut, the
size multiplier, the refusal-score and last-position KL losses on prompt-only rows, the time budget."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from safeseek_tl import AlignmentRecord, BenignRecord
from safeseek_tl.data import IGNORE_INDEX, TokenizedPairs
from safeseek_tl.distributed import DataParallel
from safeseek_tl.errors import InputError
from safeseek_tl.seek import MaskPath, SafeSeek, SeekConfig, SeekObjective, SeekResult, mask_paths, objective
from safeseek_tl.seek.budget import Budget, budget_steps
from safeseek_tl.seek.size import cut_to_target, step_multiplier, top_units
from safeseek_tl.units import Circuit, ModelShape, Scores
from tests.helpers import ToyModel, plain_alignment


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def bernoulli_kl(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------- the exact-size cut and the multiplier
def test_top_units_takes_the_lowest_logits_ties_by_index():
    logits = torch.tensor([[0.5, -1.0, 2.0], [-1.0, 0.5, 0.0]])
    # -1.0 at (0, 1) and (1, 0): a tie, broken by index (layer 0 first); then 0.0 at (1, 2)
    assert top_units(logits, 2).tolist() == [[False, True, False], [True, False, False]]
    assert top_units(logits, 3).tolist() == [[False, True, False], [True, False, True]]
    assert top_units(torch.zeros(2, 2), 3).tolist() == [[True, True], [True, False]]
    # a held unit is never chosen: (0, 1) held, so after (1, 0) and (1, 2) the tie at 0.5 goes to (0, 0)
    held = torch.tensor([[False, True, False], [False, False, False]])
    assert top_units(logits, 3, held).tolist() == [[True, False, False], [True, False, True]]
    assert top_units(logits, 6, held).sum() == 5  # only 5 units may be chosen
    assert top_units(logits, 0).sum() == 0


def test_cut_to_target_exactly_or_at_most_the_target():
    logits = torch.tensor([[0.5, -1.0, 2.0], [-1.0, 0.5, 0.0]])
    kept = logits > 0  # the mask itself switches off (0, 1), (1, 0) and (1, 2)
    # exact: the 2 lowest logits are off, whatever the mask says; 4 off when 4 are asked for
    assert cut_to_target(kept, logits, 2).tolist() == [[True, False, True], [False, True, True]]
    assert (~cut_to_target(kept, logits, 4)).sum() == 4
    # at most: 2 asked of 3 off -> the same 2; 4 asked of 3 off -> the mask's 3, no unit it kept on
    assert cut_to_target(kept, logits, 2, exact=False).tolist() == [[True, False, True], [False, True, True]]
    assert cut_to_target(kept, logits, 4, exact=False).tolist() == kept.tolist()
    held = torch.tensor([[False, True, False], [False, False, False]])  # held on: never off
    assert cut_to_target(kept, logits, 4, held, exact=False).tolist() == [[True, True, True], [False, True, False]]


def test_step_multiplier_rises_and_falls_by_the_relative_excess_clipped():
    assert step_multiplier(0.2, size=30, target=10, rate=0.05) == pytest.approx(0.25)  # excess 2 -> clipped to 1
    assert step_multiplier(0.2, size=15, target=10, rate=0.05) == pytest.approx(0.225)  # excess 0.5
    assert step_multiplier(0.2, size=5, target=10, rate=0.05) == pytest.approx(0.175)  # excess -0.5
    assert step_multiplier(0.01, size=0, target=10, rate=0.05) == 0.0  # never below 0
    assert step_multiplier(0.0, size=3, target=0, rate=0.1) == pytest.approx(0.1)  # target 0: excess 3 / 1, clipped


def test_target_sizes_are_fractions_or_counts():
    config = SeekConfig.of("alignment", "both", target={"heads": 0.05, "neurons": 30})
    assert config.target.count("heads", 32) == 2  # round(1.6)
    assert config.target.count("neurons", 1536) == 30
    # the alignment default: 3% of heads, 1% of neurons; tiny-aligned's 32 heads and 1,536 neurons
    default = SeekConfig.of("alignment", "both").target
    assert (default.count("heads", 32), default.count("neurons", 1536)) == (1, 15)  # round(0.96), round(15.36)
    assert default.count("heads", 16) == 1  # round(0.48) is 0: a fraction asks for at least one unit
    assert SeekConfig.of("alignment", "both", loss={"alignment_objective": "official"}).target.count("heads", 32) is None
    with pytest.raises(InputError, match="whole number"):
        SeekConfig.of("alignment", "both", target={"neurons": 1.5})
    with pytest.raises(InputError, match="target.heads is set but units='neurons'"):
        SeekConfig.of("alignment", "neurons", target={"heads": 2})
    with pytest.raises(InputError, match="more than the model's 32 heads"):
        SeekConfig.of("alignment", "heads", target={"heads": 33}).target.count("heads", 32)


# ---------------------------------------------------------------- losses on prompt-only rows
class PositionModel(ToyModel):
    """Logits ``[0, s + id]`` at every position: ``s`` the row's sum of gated unit values (each unit is 1),
    ``id`` the input token there, so that which position a loss reads shows in its value."""

    def start(self, input_ids):
        return input_ids.float()


TOY = ModelShape(n_layers=1, n_heads=3, d_mlp=2, model_name="toy")
# Prompt-only rows: the last prompt token is 2 in row A and 1 in row B (whose last column is padding, id 7).
ROWS = TokenizedPairs(
    input_ids=torch.tensor([[0, 0, 2], [0, 1, 7]]),
    attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]),
    labels=torch.full((2, 3), IGNORE_INDEX),
)


def _toy_objective(**target) -> SeekObjective:
    config = plain_alignment("both", loss={"alignment_objective": "refusal_score"}, target=target)
    toy = SeekObjective(PositionModel(1, 3, 2), config, TOY)
    with torch.no_grad():  # m keeps 1 head (s = 1); 1 - m keeps 2 heads and 2 neurons (s = 4); the full model s = 5
        toy.main.logits("heads").copy_(torch.tensor([[2.0, -2.0, -2.0]]))
        toy.main.logits("neurons").copy_(torch.tensor([[-2.0, -2.0]]))
    return toy


def test_refusal_score_losses_read_the_last_prompt_position():
    toy = _toy_objective()
    paths = [
        MaskPath("accept", ROWS, "main", 2.0, loss="comply", refusal_ids=(1,)),
        MaskPath("refuse", ROWS, "inverse", 1.0, loss="refuse", refusal_ids=(1,)),
        MaskPath("main_benign", ROWS, "main", 1.0, loss="last_kl"),
    ]
    terms = toy.task_terms(paths, torch.arange(2))
    # refusal score = log-odds of token 1 = s + id: under m 1 + 2 = 3 (row A) and 1 + 1 = 2 (row B);
    # comply: mean of softplus(score) = (3.048587 + 2.126928) / 2 = 2.587757, times the weight 2
    assert terms["accept"].item() == pytest.approx(2.0 * (softplus(3.0) + softplus(2.0)) / 2, rel=1e-5)
    # refuse under 1 - m: scores 6 and 5; mean of softplus(-score) = (0.0024726 + 0.0067153) / 2
    assert terms["refuse"].item() == pytest.approx((softplus(-6.0) + softplus(-5.0)) / 2, rel=1e-4)
    # KL(full || masked) of the next token: full logits [0, 7] and [0, 6], masked [0, 3] and [0, 2]
    kl = (bernoulli_kl(sigmoid(7.0), sigmoid(3.0)) + bernoulli_kl(sigmoid(6.0), sigmoid(2.0))) / 2
    assert terms["main_benign"].item() == pytest.approx(kl, rel=1e-4)


def test_the_full_model_runs_on_the_kl_paths_rows_only():
    toy = _toy_objective()
    batches = []
    forward = toy.model.forward
    toy.model.forward = lambda input_ids, attention_mask=None: batches.append(len(input_ids)) or forward(input_ids, attention_mask)
    zeros = TokenizedPairs(torch.zeros_like(ROWS.input_ids), ROWS.attention_mask, ROWS.labels)
    paths = [
        MaskPath("accept", ROWS, "main", 2.0, loss="comply", refusal_ids=(1,)),
        MaskPath("main_benign", zeros, "main", 1.0, loss="last_kl"),  # in the middle: its rows are 2-3 of the pass
        MaskPath("refuse", ROWS, "inverse", 1.0, loss="refuse", refusal_ids=(1,)),
    ]
    terms = toy.task_terms(paths, torch.arange(2))
    assert batches == [6, 2]  # the masked pass over every row, the full model over the KL path's 2 rows
    # its last tokens are 0: full logits [0, 5], masked [0, 1] in both rows (other rows' full logits would differ)
    assert terms["main_benign"].item() == pytest.approx(bernoulli_kl(sigmoid(5.0), sigmoid(1.0)), rel=1e-4)
    batches.clear()
    toy.task_terms(paths[:1], torch.arange(2))
    assert batches == [2]  # no KL path: no full pass


def test_the_cached_full_model_targets_replace_its_pass():
    toy = _toy_objective()
    batches = []
    forward = toy.model.forward
    toy.model.forward = lambda input_ids, attention_mask=None: batches.append(len(input_ids)) or forward(input_ids, attention_mask)
    paths = [MaskPath("accept", ROWS, "main", 2.0, loss="comply", refusal_ids=(1,)), MaskPath("main_benign", ROWS, "main", 1.0, loss="last_kl")]
    toy.cache_full_last(paths)
    assert batches == [2]  # one pass over the KL path's rows; the comply path needs no target
    assert paths[0].full_last is None
    # the full model (s = 5) at each row's last prompt position: row A's token 2, row B's token 1 (not its padding 7)
    assert paths[1].full_last.tolist() == [[0.0, 7.0], [0.0, 6.0]]
    batches.clear()
    terms = toy.task_terms(paths, torch.tensor([1]))  # record B alone: its own cached row is the target
    assert batches == [2]  # the masked pass over both paths' row, no pass of the full model
    # masked s = 1: logits [0, 2] against the cached [0, 6]
    assert terms["main_benign"].item() == pytest.approx(bernoulli_kl(sigmoid(6.0), sigmoid(2.0)), rel=1e-4)


def test_refusal_score_objective_builds_prompt_only_paths(monkeypatch):
    monkeypatch.setattr(objective, "tokenize_pairs", lambda chat, pairs, max_length, source: ("tokens", list(pairs)))
    monkeypatch.setattr(objective, "tokenize_prompt_rows", lambda chat, pairs, max_length, source: ("prompts", [p for p, _ in pairs]))
    monkeypatch.setattr(objective, "refusal_token_ids", lambda tokenizer: [10, 11])
    records, benign = [AlignmentRecord("h", "no", "yes")], [BenignRecord("p", "r")]

    def table(**loss):
        config = plain_alignment("both", loss=loss)
        return [(p.name, p.pairs, p.mask, p.weight, p.kl_to_full, p.loss, p.refusal_ids) for p in mask_paths(config, records, SimpleNamespace(tokenizer=None), "data", benign)]

    assert table(alignment_objective="refusal_score") == [  # w_refuse defaults to 0: no refuse path
        ("accept", ("prompts", ["h"]), "main", 2.0, False, "comply", (10, 11)),
        ("main_benign", ("prompts", ["p"]), "main", 1.0, False, "last_kl", ()),
    ]
    assert table(alignment_objective="refusal_score", w_refuse=0.5)[1] == ("refuse", ("prompts", ["h"]), "inverse", 0.5, False, "refuse", (10, 11))
    assert table(alignment_objective="necessity") == [  # benign answers kept by the KL from the full model
        ("accept", ("tokens", [("h", "yes")]), "main", 2.0, False, "tokens", ()),
        ("main_benign", ("tokens", [("p", "r")]), "main", 1.0, True, "tokens", ()),
    ]
    assert [p[0] for p in table(alignment_objective="official")] == ["accept", "refuse", "main_benign"]


def test_a_size_target_evaluates_and_reads_off_exactly_its_units():
    toy = _toy_objective(heads=2, neurons=1)
    with torch.no_grad():  # the hard mask would switch off 0 heads and 2 neurons
        toy.main.logits("heads").copy_(torch.tensor([[1.0, 0.5, 0.5]]))
        toy.main.logits("neurons").copy_(torch.tensor([[-1.0, -3.0]]))
    logits = {kind: toy.main.logits(kind) for kind in ("heads", "neurons")}
    # the two lowest head logits are tied 0.5s at 1 and 2; the lowest neuron logit is at 1
    kept = toy.target_kept(logits, toy.main.kept())
    assert kept["heads"].tolist() == [[True, False, False]] and kept["neurons"].tolist() == [[True, False]]
    accept = [MaskPath("accept", ROWS, "main", 1.0, loss="comply", refusal_ids=(1,))]
    # evaluation runs that circuit's ablation: s = 1 head + 1 neuron = 2, scores 2 + 2 and 2 + 1
    assert toy.task_terms(accept, torch.arange(2))["accept"].item() == pytest.approx((softplus(4.0) + softplus(3.0)) / 2, rel=1e-5)
    # training runs the mask as learned: 3 heads, no neuron, scores 5 and 4
    trained = toy.task_terms(accept, torch.arange(2), stochastic=True)["accept"].item()
    assert trained == pytest.approx((softplus(5.0) + softplus(4.0)) / 2, rel=1e-5)
    # the multipliers add to the sparsity weights (0.1 each)
    toy.update_multipliers()  # heads: 0 off for 2 -> excess -1 -> stays 0; neurons: 2 off for 1 -> +0.05
    assert toy.multipliers == {"heads": 0.0, "neurons": pytest.approx(0.05)}
    keep = torch.sigmoid(torch.tensor([-1.0, -3.0]))
    assert toy.sparsity_terms()["sparsity_neurons"].item() == pytest.approx(0.15 * (1 - keep).mean().item(), rel=1e-6)


def test_a_target_in_training_runs_the_cut_forward_and_the_mask_gradient_backward():
    toy = _toy_objective(heads=2, neurons=1, in_training=True)
    with torch.no_grad():  # as above: the cut keeps head 0 and neuron 0, the mask alone 3 heads and no neuron
        toy.main.logits("heads").copy_(torch.tensor([[1.0, 0.5, 0.5]]))
        toy.main.logits("neurons").copy_(torch.tensor([[-1.0, -3.0]]))
    accept = [MaskPath("accept", ROWS, "main", 1.0, loss="comply", refusal_ids=(1,))]
    trained = toy.task_terms(accept, torch.arange(2), stochastic=True)["accept"]
    # the training pass runs the cut circuit (s = 2, scores 4 and 3), as evaluation does
    assert trained.item() == pytest.approx((softplus(4.0) + softplus(3.0)) / 2, rel=1e-5)
    trained.backward()
    # each unit adds 1 to both scores: dL/dm = (σ(4) + σ(3)) / 2 for every unit, times dσ(a)/da
    slope = (sigmoid(4.0) + sigmoid(3.0)) / 2
    expected = [slope * sigmoid(a) * (1 - sigmoid(a)) for a in (1.0, 0.5, 0.5)]
    assert toy.main.logits("heads").grad[0].tolist() == pytest.approx(expected, rel=1e-5)


def test_an_at_most_target_evaluates_and_reads_off_only_what_the_mask_switches_off(gqa):
    toy = _toy_objective(heads=2, neurons=1, exact=False)
    with torch.no_grad():  # the hard mask switches off no head and 2 neurons, as above
        toy.main.logits("heads").copy_(torch.tensor([[1.0, 0.5, 0.5]]))
        toy.main.logits("neurons").copy_(torch.tensor([[-1.0, -3.0]]))
    # heads: 2 asked, none off -> none; neurons: 1 asked of 2 off -> the lowest logit, at 1
    kept = toy.target_kept({kind: toy.main.logits(kind) for kind in ("heads", "neurons")}, toy.main.kept())
    assert kept["heads"].tolist() == [[True, True, True]] and kept["neurons"].tolist() == [[True, False]]
    accept = [MaskPath("accept", ROWS, "main", 1.0, loss="comply", refusal_ids=(1,))]
    # evaluation: s = 3 heads + 1 neuron = 4, scores 4 + 2 and 4 + 1
    assert toy.task_terms(accept, torch.arange(2))["accept"].item() == pytest.approx((softplus(6.0) + softplus(5.0)) / 2, rel=1e-5)
    # the read-off of a search: the same circuit, 0 heads + neuron 1
    config = plain_alignment("both", schedule={"epochs": 1}, target={"heads": 2, "neurons": 3, "exact": False})
    search = SafeSeek(gqa, config)
    state = SimpleNamespace(best_main={"heads": torch.full(gqa.shape.size("heads"), 1.0), "neurons": torch.full(gqa.shape.size("neurons"), 1.0)},
                            best_circuit=None, history=[], best_epoch=0, best_fill={})  # fmt: skip
    state.best_main["heads"][0, 1] = 0.5  # kept on: never in an at-most circuit
    state.best_main["neurons"][1, :5] = torch.tensor([-0.5, -0.1, -0.3, -0.2, -0.4])  # 5 off; 3 asked -> the 3 lowest
    circuit = search.result_of(state).circuit
    assert circuit.n_heads == 0 and sorted(map(tuple, circuit.neurons.nonzero().tolist())) == [(1, 0), (1, 2), (1, 4)]
    exact = SafeSeek(gqa, plain_alignment("both", schedule={"epochs": 1}, target={"heads": 2, "neurons": 3})).result_of(state)
    assert exact.circuit.n_heads == 2 and exact.circuit.get("heads")[0, 1]  # exact: the 2 lowest head logits, on or not
    # what the mask itself switched off: no head, the 5 neurons; cut as a cap: the at-most circuit
    off = exact.masked_off()
    assert off.n_heads == 0 and sorted(map(tuple, off.neurons.nonzero().tolist())) == [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4)]
    capped = exact.circuit & off
    assert torch.equal(capped.heads, circuit.heads) and torch.equal(capped.neurons, circuit.neurons)


# ---------------------------------------------------------------- the time budget
def test_budget_steps_from_the_measured_step_time():
    # 3 steps took 6 s: 2 s a step; 90% of 60 s is 54 s, 48 s left -> 24 more steps
    assert budget_steps(60.0, 6.0, 3) == 27
    assert budget_steps(60.0, 6.0, 3, reserve=0.0) == 30
    assert budget_steps(60.0, 58.0, 3) == 3  # over the budget already: no more steps
    assert Budget(60.0, started=100.0).steps(now=106.0, steps_done=3) == 27  # a clock that does not start at 0
    assert not Budget(60.0, started=100.0).spent(153.9) and Budget(60.0, started=100.0).spent(154.0)
    with pytest.raises(InputError, match="at least one timed step"):
        budget_steps(60.0, 0.0, 0)
    with pytest.raises(InputError, match="positive number of seconds"):
        Budget(0.0, started=0.0)


def test_fit_runs_the_steps_that_fit_the_budget_on_a_fake_clock(gqa, monkeypatch):
    steps = [0]
    update = SeekObjective.update_multipliers

    def counting(self):  # called once per training step
        steps[0] += 1
        update(self)

    monkeypatch.setattr(SeekObjective, "update_multipliers", counting)
    records = [AlignmentRecord("steal a car", "Sorry I cannot help", "sure here is how")] * 10
    config = plain_alignment("both", schedule={"epochs": 1, "batch_size": 2, "val_size": 2})
    # every step takes 2 s on this clock: 27 steps fit 60 s (as above), 4 steps an epoch -> 7 epochs, the last cut
    result = SafeSeek(gqa, config).fit(records, progress=False, time_budget_s=60.0, clock=lambda: 2.0 * steps[0])
    assert steps[0] == 27 and len(result.history) == 7
    with pytest.raises(InputError, match="resume does not apply to a time budget"):
        SafeSeek(gqa, config).fit(records, progress=False, time_budget_s=60.0, resume=True)
    # every process would time its own steps and stop at a different one
    monkeypatch.setattr(DataParallel, "current", classmethod(lambda cls: cls(0, 2)))
    with pytest.raises(InputError, match="a time budget runs in one process"):
        SafeSeek(gqa, config).fit(records, progress=False, time_budget_s=60.0)


def test_the_budget_is_fitted_again_at_each_epoch_on_the_pace_so_far(gqa, monkeypatch):
    steps = [0]
    update = SeekObjective.update_multipliers
    monkeypatch.setattr(SeekObjective, "update_multipliers", lambda self: steps.__setitem__(0, steps[0] + 1) or update(self))
    records = [AlignmentRecord("steal a car", "Sorry I cannot help", "sure here is how")] * 10
    config = plain_alignment("both", schedule={"epochs": 1, "batch_size": 2, "val_size": 2})  # 4 steps an epoch

    def clock() -> float:  # the first 3 steps take 4 s each (a busy machine), the later ones 1 s
        return 4.0 * min(steps[0], 3) + 1.0 * max(steps[0] - 3, 0)

    # 54 s for steps. After step 3 (12 s): 3 + int(42 / 4) = 13 steps. Fitted again at each epoch's
    # first step on the mean pace so far: step 5 (14 s) -> 5 + int(40 / 2.8) = 19; step 9 (18 s)
    # -> 9 + 18 = 27; step 13 (22 s) -> 13 + int(32 / (22/13)) = 31; then 35, 37, 39, 41, 42, 43 and
    # at step 41 (50 s) 41 + int(4 / (50/41)) = 44: 44 steps in 11 epochs, 53 s of the 54
    result = SafeSeek(gqa, config).fit(records, progress=False, time_budget_s=60.0, clock=clock)
    assert steps[0] == 44 and len(result.history) == 11

    def slow_start() -> float:  # the first 5 steps take 4 s each, the later ones 1 s
        return 4.0 * min(steps[0], 5) + 1.0 * max(steps[0] - 5, 0)

    # step 3 (12 s) -> 3 + int(42 / 4) = 13; step 5 (20 s) -> 5 + int(34 / 4) = 13; step 9 (24 s) -> 9 +
    # int(30 / (24/9)) = 20; then 25, 28, 31, 33, 35, 37 and at step 37 (52 s) 37 + int(2 / (52/37)) = 38.
    # Fitted at each epoch's second step instead, the same clock gives 37.
    steps[0] = 0
    result = SafeSeek(gqa, config).fit(records, progress=False, time_budget_s=60.0, clock=slow_start)
    assert steps[0] == 38 and len(result.history) == 10


def test_a_result_saved_before_the_alignment_objectives_loads_as_official(tmp_path):
    shape = ModelShape(n_layers=1, n_heads=3, d_mlp=2, model_name="toy")
    circuit = Circuit.from_units(shape, heads=[[0, 1]])
    SeekResult(Scores(shape, heads=torch.zeros(1, 3), method="safeseek"), circuit, plain_alignment("heads"), {"heads": torch.zeros(1, 3)}).save(tmp_path)
    # config.json as the flat SeekConfig saved it before issue 20 added alignment_objective and the targets
    settings = {
        "scenario": "alignment", "units": "heads", "mask_kind": "hard_sigmoid", "objective": "ce", "negative_ce": "bounded",
        "negative_ce_margin": 5.0, "epochs": 50, "batch_size": 8, "lr": 0.01, "weight_decay": 0.0, "max_grad_norm": 1.0,
        "lr_decay": True, "init_heads": 1.0, "init_neurons": 1.0, "w_main_clean": 1.0, "w_main_backdoor": 1.0,
        "w_circuit_backdoor": 1.0, "w_circuit_clean": 1.0, "w_main_sparsity": 0.1, "w_circuit_sparsity": 1.0, "circuit_sparsity": "mean",
        "w_overlap": 1.0, "w_main_benign": 1.0, "w_accept": 2.0, "w_refuse": 2.0, "w_sparsity_heads": 0.1, "w_sparsity_neurons": 0.1,
        "ablation": "zero", "max_length": 128, "val_size": 20, "patience": None, "seed": 42,
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(settings))
    old = SeekResult.load(tmp_path).config
    assert (old.loss.alignment_objective, old.loss.w_accept, old.loss.w_refuse, old.target.heads) == ("official", 2.0, 2.0, None)
    # a flat result saved with the new default (necessity, no refuse path) keeps it
    (tmp_path / "config.json").write_text(json.dumps(settings | {"alignment_objective": "necessity", "w_refuse": 0.0}))
    assert (SeekResult.load(tmp_path).config.loss.alignment_objective, SeekResult.load(tmp_path).config.loss.w_refuse) == ("necessity", 0.0)
