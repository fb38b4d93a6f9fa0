"""The learned fill (``masks.fill="learned"``) and the warm start from attribution patching
(``masks.init_from="attr-patch"``), pinned to values worked out by hand."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from safeseek_tl import AlignmentRecord, BenignRecord
from safeseek_tl.data import IGNORE_INDEX, TokenizedPairs
from safeseek_tl.errors import InputError
from safeseek_tl.methods import Attribution
from safeseek_tl.seek import MaskPath, SafeSeek, SeekConfig, SeekObjective, SeekResult, search_fill, warm
from safeseek_tl.units import Circuit, ModelShape, Scores
from tests.helpers import ToyModel, plain_alignment

TOY = ModelShape(n_layers=1, n_heads=3, d_mlp=2, model_name="toy")
ROWS = TokenizedPairs(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long), torch.full((2, 3), IGNORE_INDEX))
COMPLY = [MaskPath("accept", ROWS, "main", 1.0, loss="comply", refusal_ids=(1,))]
ALIGN = [AlignmentRecord(f"steal a car {i}", "Sorry I cannot help", "sure here is how") for i in range(6)]
BENIGN = [BenignRecord("bake a cake", "sure here is how")] * 6


def _learned_toy() -> SeekObjective:
    config = plain_alignment('both', masks={"fill": 'learned'})
    # given fill: the starting values (the unit means in a search); the toy model's d_head is 1
    fill = {"heads": torch.tensor([[[9.0], [0.5], [-0.5]]]), "neurons": torch.tensor([[0.25, 0.75]])}
    toy = SeekObjective(ToyModel(1, 3, 2), config, TOY, fill=fill)
    with torch.no_grad():  # head 0 kept; heads 1, 2 and both neurons switched off
        toy.main.logits("heads").copy_(torch.tensor([[2.0, -2.0, -2.0]]))
        toy.main.logits("neurons").copy_(torch.tensor([[-2.0, -2.0]]))
    return toy


def test_a_learned_fill_replaces_the_masked_off_units_and_trains_only_there_on_paths_that_keep():
    toy = _learned_toy()
    # a path that switches the behaviour (accept: comply) and one that keeps it (main_benign, here asked to refuse)
    paths = [*COMPLY, MaskPath("main_benign", ROWS, "main", 1.0, loss="refuse", refusal_ids=(1,))]
    terms = toy.task_terms(paths, torch.arange(2))
    # refusal score s = kept head 1 + fills 0.5 - 0.5 + 0.25 + 0.75 = 2 on every row (head 0's fill 9 is not used)
    assert terms["accept"].item() == pytest.approx(math.log1p(math.exp(2.0)), rel=1e-6)
    assert terms["main_benign"].item() == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)
    (terms["accept"] + terms["main_benign"]).backward()
    heads, neurons = toy.fill["heads"].grad, toy.fill["neurons"].grad
    # only main_benign trains the fill: d softplus(-s) / d fill = -sigmoid(-2) for a masked-off unit (it enters s
    # once, at the position read); 0 for the kept head, whose hook gives fill + 1 * (act - fill)
    grad = -1 / (1 + math.exp(2.0))
    assert heads.flatten().tolist() == pytest.approx([0.0, grad, grad], rel=1e-6)
    assert neurons.flatten().tolist() == pytest.approx([grad, grad], rel=1e-6)
    assert toy.main.logits("heads").grad[0, 1] != 0  # the switching path still trains the mask
    # the optimizer trains the fill with the logits; a mean fill is fixed
    assert {id(p) for p in toy.parameters()} >= {id(toy.fill["heads"]), id(toy.fill["neurons"])}
    assert len(toy.parameters()) == 4
    mean = SeekObjective(ToyModel(1, 3, 2), plain_alignment('both', masks={"fill": 'mean'}), TOY, fill=dict(toy.fill))
    assert len(mean.parameters()) == 2 and mean.learned_fill() == {}
    with pytest.raises(InputError, match="starts each unit's fill at its mean"):
        SeekObjective(ToyModel(1, 3, 2), plain_alignment('both', masks={"fill": 'learned'}), TOY)


def test_a_learned_fill_starts_at_the_means_and_travels_with_the_result(gqa, tmp_path):
    config = plain_alignment('both', masks={"fill": 'learned'}, schedule={"epochs": 1, "batch_size": 2, "val_size": 2})
    # logits start at 1.0: no unit is ever switched off in one epoch, so the fill gets no gradient
    result = SafeSeek(gqa, config).fit(ALIGN, progress=False, benign_records=BENIGN)
    means = search_fill(gqa, plain_alignment('both', masks={"fill": 'mean'}, schedule={"batch_size": 2}), ALIGN[:4], BENIGN)
    shape = gqa.shape
    assert result.fill["heads"].shape == (shape.n_layers, shape.n_heads, gqa.model.cfg.d_head)
    for kind in ("heads", "neurons"):
        torch.testing.assert_close(result.fill[kind], means.means[kind], rtol=1e-5, atol=1e-6)
    result.fill = {"heads": result.fill["heads"] + 1.0, "neurons": result.fill["neurons"]}  # as if trained
    result.save(tmp_path)
    loaded = SeekResult.load(tmp_path)
    reference = loaded.reference()
    assert loaded.config.ablation_mode == "mean" and torch.equal(reference.means["heads"], result.fill["heads"])
    assert torch.equal(reference.means["neurons"], result.fill["neurons"])
    # compare() ablates a method's circuits with its Attribution's fill, as "mean" ablation
    assert Attribution(loaded.scores, reference).ablation == "mean"
    with pytest.raises(InputError, match="learned fill comes from its search"):
        search_fill(gqa, config, ALIGN)


def test_a_result_without_its_fill_says_so():
    shape = ModelShape(n_layers=1, n_heads=3, d_mlp=2, model_name="toy")
    result = SeekResult(Scores(shape, heads=torch.zeros(1, 3)), Circuit.empty(shape), plain_alignment(masks={"fill": 'learned'}), {})
    with pytest.raises(InputError, match="carries no fill"):
        result.reference()
    result.config = plain_alignment()
    assert result.reference() is None and result.config.ablation_mode == "zero"


def test_discover_prunes_and_checks_with_the_search_s_own_fill(monkeypatch):
    from types import SimpleNamespace

    from safeseek_tl import seek

    config = plain_alignment('heads', masks={"fill": 'learned'})
    shape = ModelShape(n_layers=1, n_heads=3, d_mlp=2, model_name="toy")
    found = SeekResult(Scores(shape, heads=torch.zeros(1, 3)), Circuit.from_units(shape, heads=[[0, 1]]), config, {}, fill={"heads": torch.ones(1, 3, 2)})
    monkeypatch.setattr(SafeSeek, "fit", lambda self, *args, **kwargs: found)
    fills = []
    monkeypatch.setattr(seek.discovery, "prune_circuit", lambda loaded, result, val, benign, fill, judge: fills.append(fill) or result)
    monkeypatch.setattr(seek.discovery, "behaviour_switch", lambda *args, fill, **kwargs: fills.append(fill) or {"switched": 1.0})
    seek.discover(SimpleNamespace(shape=shape), ALIGN, config, val_records=ALIGN[:1], prune=True)
    assert len(fills) == 2 and all(fill.means["heads"] is found.fill["heads"] for fill in fills)


# ---------------------------------------------------------------- the warm start
def test_rank_logits_map_attribution_ranks_to_starting_logits():
    scores = torch.tensor([[3.0, 1.0], [2.0, 0.0]])
    # ranks (highest first): 3 -> 0, 2 -> 1, 1 -> 2, 0 -> 3. Top 1 starts at -init; the rest at
    # init * (r - 1 + 1) / (4 - 1): r 1 -> 1/3, r 2 -> 2/3, r 3 -> 1
    assert warm.rank_logits(scores, 1.0, 1).flatten().tolist() == pytest.approx([-1.0, 2 / 3, 1 / 3, 1.0])
    # no target: nothing starts off; init * (r + 1) / 4 with init 2: r 0 -> 0.5, 1 -> 1.0, 2 -> 1.5, 3 -> 2.0
    assert warm.rank_logits(scores, 2.0, 0).flatten().tolist() == pytest.approx([0.5, 1.5, 1.0, 2.0])
    # ties by index: the first of two equal scores ranks higher
    assert warm.rank_logits(torch.tensor([[1.0, 1.0, 0.0]]), 1.0, 1).flatten().tolist() == pytest.approx([-1.0, 0.5, 1.0])


def test_init_from_attr_patch_starts_the_search_at_the_ranks(gqa, monkeypatch):
    shape = gqa.shape
    heads = torch.arange(shape.n_layers * shape.n_heads, dtype=torch.float32).reshape(shape.size("heads"))
    calls = []

    def attribution_patching(loaded, clean, corrupted, *, units, progress):
        calls.append((list(clean), list(corrupted), units))
        # metric higher on the harmful prompts: the scores keep their sign (oriented)
        return Scores(shape, heads=heads, method="attr-patch", metadata={"metric_clean": 1.0, "metric_corrupted": 0.0})

    monkeypatch.setattr("safeseek_tl.seek.warm.attribution_patching", attribution_patching)
    # lr 1e-12: the masks end where they started
    # "auto" (the alignment default) warm-starts when there are benign prompts to pair with
    config = plain_alignment('heads', masks={"init_from": 'auto'}, target={"heads": 2}, schedule={"epochs": 1, "batch_size": 2, "val_size": 2, "lr": 1e-12})
    with pytest.warns(UserWarning, match="without benign records: nothing keeps harmless answers as they were; the mask logits start constant"):
        constant = SafeSeek(gqa, config).fit(ALIGN, progress=False)
    assert calls == [] and bool((constant.main_logits["heads"] == 1.0).all())  # none: every logit at init_heads
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 6 benign records for 4 training records pair without a warning
        result = SafeSeek(gqa, config).fit(ALIGN, progress=False, benign_records=BENIGN)
    # the 4 training records' harmful prompts only, paired with the first 4 of the 6 benign prompts
    assert calls == [([r.prompt for r in ALIGN[:4]], [b.prompt for b in BENIGN[:4]], "heads")]
    n = heads.numel()
    # the two highest-scored heads (the last two) start off; the rest rise from 1 / (n - 2) to 1.0
    expected = torch.cat([torch.arange(n - 2, 0, -1) / (n - 2), torch.tensor([-1.0, -1.0])]).reshape(shape.size("heads"))
    torch.testing.assert_close(result.main_logits["heads"], expected)
    # asked for by name, the warm start is the same
    named = SafeSeek(gqa, plain_alignment('heads', masks={"init_from": 'attr-patch'}, target={"heads": 2}, schedule={"epochs": 1, "batch_size": 2, "val_size": 2, "lr": 1e-12}))
    torch.testing.assert_close(named.fit(ALIGN, progress=False, benign_records=BENIGN).main_logits["heads"], expected)
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("scenario", "init_from", "benign", "warm_start"),
    [
        ("alignment", "auto", BENIGN, True),  # the default: harmful prompts paired with benign ones
        ("alignment", "auto", [], False),  # nothing to pair the harmful prompts with: the constant start
        ("backdoor", "auto", [], True),  # triggered prompts pair with their clean ones
        ("alignment", "constant", BENIGN, False),
        ("backdoor", "attr-patch", [], True),
    ],
)
def test_init_from_auto_warm_starts_where_the_prompts_pair(scenario, init_from, benign, warm_start):
    config = SeekConfig.of(scenario, "heads", masks={"init_from": init_from})
    assert warm.starts_warm(config, benign) is warm_start


def test_the_missing_benign_warning_names_only_what_is_missing(gqa):
    config = plain_alignment("heads", schedule={"epochs": 1, "batch_size": 2, "val_size": 2, "lr": 1e-12})
    with pytest.warns(UserWarning, match=r"nothing keeps harmless answers as they were; give benign") as caught:
        SafeSeek(gqa, config).fit(ALIGN, progress=False)  # a constant start: no warm start to miss
    assert "attribution patching" not in str(caught[0].message)
    official = SeekConfig.of("alignment", "heads", loss={"alignment_objective": "official"}, schedule={"epochs": 1, "batch_size": 2, "val_size": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the official objective never had benign records
        SafeSeek(gqa, official).fit(ALIGN, progress=False)
