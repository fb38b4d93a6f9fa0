"""Faithfulness curves, CPR/CMD and AUROC on hand-worked inputs, and the benchmark on tiny-backdoor.

The stand-in metric of the hand-worked cases: m = (sum of the weights 1, 2, 3, 4 of the heads left
alone)^2, so m(full) = 100 and m(empty) = 0; its square makes "kept" and "removed" differ.
Scores 0.4, 0.9, 0.1, 0.9: the tie between heads 1 and 3 goes to head 1 (the lower index).
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from safeseek_tl.ablation import ablated
from safeseek_tl.benchmark import ModelMeasure, auroc, benchmark, faithfulness, faithfulness_curve, task_metric
from safeseek_tl.benchmark_methods import circuit_size, top_percent
from safeseek_tl.errors import InputError
from safeseek_tl.models import load_model
from safeseek_tl.organisms import ground_truth, load_data
from safeseek_tl.scenarios import BACKDOOR
from safeseek_tl.units import Circuit, ModelShape, Scores

SHAPE = ModelShape(1, 4, 2)
SCORES = Scores(SHAPE, heads=torch.tensor([[0.4, 0.9, 0.1, 0.9]]), neurons=torch.tensor([[0.5, 0.2]]))
WEIGHTS = torch.tensor([1.0, 2.0, 3.0, 4.0])


def _squared_kept_weight(ablate: Circuit) -> float:
    return float((WEIGHTS * ~ablate.heads[0]).sum()) ** 2


def test_circuit_sizes_round_down_with_at_least_one_unit():
    assert [circuit_size(80, k) for k in (0.1, 1, 10, 50, 100)] == [1, 1, 8, 40, 80]
    assert circuit_size(1000, 0.1) == 1 and circuit_size(1000, 0.2) == 2
    with pytest.raises(ValueError, match=r"percentages in \(0, 100\], got 0"):
        circuit_size(80, 0)


def test_top_percent_breaks_ties_by_unit_index_and_takes_k_percent_of_each_kind():
    assert top_percent(SCORES, "heads", 25).head_list == [[0, 1]]
    both = top_percent(SCORES, "both", 50)
    assert both.head_list == [[0, 1], [0, 3]] and both.neuron_list == [[0, 0]]


@pytest.mark.parametrize(
    ("direction", "values", "cpr", "cmd"),
    # kept: (2^2, 6^2, 10^2) / 100; removed: (100 - 8^2, 100 - 4^2, 100 - 0) / 100.
    # log sizes ln(1/4), ln(2/4), ln(4/4) are evenly spaced: CPR = mean of the two trapezoid heights
    [("kept", [0.04, 0.36, 1.0], (0.20 + 0.68) / 2, (0.80 + 0.32) / 2), ("removed", [0.36, 0.84, 1.0], (0.60 + 0.92) / 2, (0.40 + 0.08) / 2)],
)
def test_curve_cpr_and_cmd_by_hand(direction, values, cpr, cmd):
    curve = faithfulness_curve(_squared_kept_weight, SCORES, (25, 50, 100), "heads", direction)
    assert curve.sizes == [1, 2, 4] and curve.m_full == 100 and curve.m_empty == 0
    assert curve.values == pytest.approx(values)
    assert curve.cpr == pytest.approx(cpr) and curve.cmd == pytest.approx(cmd)


def test_a_metric_that_ablation_cannot_move_is_refused():
    with pytest.raises(ValueError, match="m\\(full\\) equals m\\(empty\\)"):
        faithfulness_curve(lambda ablate: 1.0, SCORES, (50, 100), "heads", "kept")


def test_auroc_counts_ties_as_half():
    truth = Circuit.from_units(SHAPE, heads=[[0, 0], [0, 1]])
    # positives 0.4, 0.9 against negatives 0.1, 0.9: 0.4>0.1, 0.9>0.1, 0.9=0.9 (half) -> 2.5 / 4
    assert auroc(SCORES, truth, "heads") == pytest.approx(0.625)
    assert math.isnan(auroc(SCORES, Circuit.empty(SHAPE), "heads"))


def _ranking(loaded) -> Scores:
    """Heads ranked by index (any ranking: the test is about the measure, not the method)."""
    return Scores(loaded.shape, heads=torch.arange(loaded.shape.n_layers * loaded.shape.n_heads, dtype=torch.float).view(loaded.shape.size("heads")))


@pytest.fixture(scope="module")
def backdoor():
    torch.set_num_threads(1)
    loaded = load_model("organism:tiny-backdoor")
    return loaded, load_data("backdoor", "train")[:8]


def test_measure_matches_the_library_ablation_and_the_task_metric(backdoor):
    loaded, records = backdoor
    prompts, donors = BACKDOOR.paired_prompts(records, None, "test")
    metric = task_metric(loaded, BACKDOOR, records)
    sure, sorry = loaded.tokenizer("Sure").input_ids[-1], loaded.tokenizer("Sorry").input_ids[-1]
    logits = torch.zeros(1, loaded.model.cfg.d_vocab)
    logits[0, sure], logits[0, sorry] = 3.0, 1.0
    assert float(task_metric(loaded, BACKDOOR, records[:1])(logits)[0]) == pytest.approx(2.0)  # record 0: "Sure" vs "Sorry"
    circuit = Circuit.from_units(loaded.shape, heads=[[1, 3], [2, 5]], neurons=[[1, 84]])
    zero = ModelMeasure(loaded, prompts, metric, "zero")
    with ablated(loaded.model, circuit):
        tokens = zero.batches[0]
        expected = float(metric(loaded.model(tokens[0], attention_mask=tokens[1])[:, -1]).mean())
    assert zero(circuit) == pytest.approx(expected, rel=1e-5)
    # every unit replaced by its own prompt's activations: nothing changes, so f is undefined
    with pytest.raises(ValueError, match="m\\(full\\) equals m\\(empty\\)"):
        faithfulness(loaded, _ranking(loaded), prompts, metric, donors=prompts, grid=(50, 100), ablation="counterfactual")


def test_benchmark_on_tiny_backdoor_with_its_ground_truth(backdoor, tmp_path, record_property):
    loaded, records = backdoor
    result = benchmark(
        loaded, records, "backdoor", ["eap-ig", "attr-patch", "random"], tmp_path, truth=ground_truth("tiny-backdoor", loaded), grid=(1, 10, 100)
    )
    table = pd.read_csv(tmp_path / "benchmark.csv")
    assert list(table.columns) == ["method", "granularity", "ablation", "direction", "prompts", "k", "quantity", "value"]
    # per method: 3 granularities x 3 ablations x 2 directions x (3 points + cpr + cmd), 3 AUROCs, wall time, passes, rows
    assert (table.groupby("method").size() == 3 * 3 * 2 * 5 + 3 + 3).all()
    assert set(table["prompts"].dropna()) == {"train"}
    assert len(list(tmp_path.glob("curves_*.json"))) == 3 * 3 * 2
    assert (tmp_path / "leaderboard.html").is_file() and json.loads((tmp_path / "benchmark.json").read_text())["grid"] == [1, 10, 100]
    # forward calls, by hand: 8 pairs in one batch; EAP-IG a clean, a corrupted and an interpolated pass (5 steps x 8 rows),
    # attribution patching a clean and a corrupted pass, the random ranking none
    cost = table[table["quantity"].isin(["passes", "pass_rows"])].pivot(index="method", columns="quantity", values="value")
    assert cost.to_dict("index") == {"eap-ig": {"passes": 3, "pass_rows": 8 + 8 + 5 * 8}, "attr-patch": {"passes": 2, "pass_rows": 16}, "random": {"passes": 0, "pass_rows": 0}}
    board = result.leaderboard.set_index(["method", "granularity", "ablation", "direction"])
    for row in result.leaderboard.itertuples():
        record_property(f"{row.method}/{row.granularity}/{row.ablation}/{row.direction}", f"cpr={row.cpr:.3f} cmd={row.cmd:.3f} auroc={row.auroc:.3f}")
    # the planted heads are found by EAP-IG, not by chance
    assert board.loc[("eap-ig", "heads", "counterfactual", "kept"), "auroc"] > 0.95
    assert board.loc[("random", "heads", "counterfactual", "kept"), "auroc"] < 0.8
    # at 100% every unit is kept (f = 1) or removed (g = 1)
    full = table[(table["quantity"] == "faithfulness") & (table["k"] == 100)]
    assert full["value"].to_numpy() == pytest.approx(1.0)
    removed = board.xs(("both", "counterfactual", "removed"), level=("granularity", "ablation", "direction"))
    assert removed.loc["eap-ig", "cpr"] > removed.loc["random", "cpr"] + 0.3


def test_benchmark_with_safeseek_searches_held_out_prompts_and_stability(backdoor, tmp_path):
    loaded, records = backdoor
    options = {"safeseek": {"schedule.epochs": 1, "schedule.val_size": 2}, "eap-ig": {"progress": False}}
    result = benchmark(
        loaded, records, "backdoor", ["eap-ig", "random", "safeseek"], tmp_path, grid=(10, 100), granularities=("heads",), ablations=("counterfactual",),
        method_options=options, points="search", held_out=load_data("backdoor", "val")[:8], stability_k=10,
    )  # fmt: skip
    board = result.leaderboard.set_index(["method", "direction"])
    assert board["points"].to_dict() == {(m, d): "search" if m == "safeseek" else "ranking" for m in ("eap-ig", "random", "safeseek") for d in ("kept", "removed")}
    assert board[["cpr_held_out", "cmd_held_out", "jaccard", "jaccard_seeds", "jaccard_splits"]].notna().all().all()
    # a deterministic method's seeds change nothing; a random ranking ignores the data, so its halves change nothing
    assert board.loc[("eap-ig", "kept"), "jaccard_seeds"] == 1.0 and board.loc[("random", "kept"), "jaccard_splits"] == 1.0
    assert board.loc[("random", "kept"), "jaccard_seeds"] < 1.0
    table = result.table
    held = table[(table["prompts"] == "held-out") & (table["quantity"] == "faithfulness")]
    assert len(held) == 3 * 2 * 2 and held.loc[held["k"] == 100, "value"].to_numpy() == pytest.approx(1.0)
    # measured on other prompts: the full model's metric differs from the training prompts', and so do the areas
    m_full = {curve.prompts: curve.m_full for _, curve in result.curves}
    assert set(m_full) == {"train", "held-out"} and m_full["train"] != pytest.approx(m_full["held-out"], abs=1e-3)
    assert board.loc[("eap-ig", "kept"), "cpr_held_out"] != pytest.approx(board.loc[("eap-ig", "kept"), "cpr"], abs=1e-4)
    assert sorted(table.loc[table["quantity"] == "jaccard", "k"]) == [10, 10, 10]
    assert {p.name for p in tmp_path.glob("curves_*_held_out.json")} == {"curves_heads_counterfactual_kept_held_out.json", "curves_heads_counterfactual_removed_held_out.json"}
    page = (tmp_path / "leaderboard.html").read_text(encoding="utf-8")
    assert "<th>CPR held-out</th>" in page and "<th>stability (Jaccard)</th>" in page and "held-out prompts" in page


def test_saved_scores_enter_the_leaderboard_beside_the_methods(backdoor, tmp_path):
    loaded, records = backdoor
    truth = ground_truth("tiny-backdoor", loaded)
    planted = Scores(loaded.shape, heads=truth.heads.float(), neurons=truth.neurons.float(), metadata={"wall_time_s": 12.5})
    planted.save(tmp_path / "planted.safetensors")
    heads_only = Scores(loaded.shape, heads=truth.heads.float())
    result = benchmark(
        loaded, records[:4], "backdoor", ["random"], truth=truth, grid=(1, 100), granularities=("heads", "both"), ablations=("zero",),
        directions=("removed",), saved_scores={"planted": Scores.load(tmp_path / "planted.safetensors"), "heads-only": heads_only},
    )
    board = result.leaderboard.set_index(["method", "granularity"])
    # the planted units ranked first: AUROC exactly 1 against them; no neuron scores, no "both" row
    assert board.loc[("planted", "heads"), "auroc"] == 1.0 and board.loc[("planted", "both"), "auroc"] == 1.0
    assert ("heads-only", "heads") in board.index and ("heads-only", "both") not in board.index
    assert board.loc[("planted", "heads"), "points"] == "saved" and board.loc[("planted", "heads"), "wall_time_s"] == 12.5
    assert math.isnan(board.loc[("planted", "heads"), "passes"]) and math.isnan(board.loc[("heads-only", "heads"), "wall_time_s"])
    assert board.loc[("random", "heads"), "passes"] == 0
    with pytest.raises(InputError, match="'random' have the name of a method"):
        benchmark(loaded, records[:4], "backdoor", ["random"], grid=(100,), saved_scores={"random": planted})
    with pytest.raises(InputError, match="the saved scores .other. was made for a model with"):
        benchmark(loaded, records[:4], "backdoor", [], grid=(100,), saved_scores={"other": Scores(SHAPE, heads=torch.zeros(1, 4))})
