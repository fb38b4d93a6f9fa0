"""How the benchmark runs a method: passes counted by hand, SafeSeek's searches at each size, the one SeekConfig helper.

Pass counts by hand, from each method's documented cost: EAP-IG runs, per batch of pairs, a clean,
a corrupted and one interpolated forward (``ig_steps`` x the batch rows); a SafeSeek search runs one
forward per training step (``ceil(train / batch_size)`` a epoch) and one per validation batch a epoch.
"""

from __future__ import annotations

import pytest
import torch

from safeseek_tl.benchmark_methods import MethodSpec, Setting, counting_passes, membership_scores, run_method, seek_config
from safeseek_tl.hooks import count_hooks
from safeseek_tl.models import load_model
from safeseek_tl.organisms import load_data
from safeseek_tl.scenarios import ALIGNMENT, BACKDOOR
from safeseek_tl.seek import SeekConfig
from safeseek_tl.units import Circuit, ModelShape


@pytest.fixture(scope="module")
def backdoor():
    torch.set_num_threads(1)
    return load_model("organism:tiny-backdoor"), load_data("backdoor", "train")[:8]


def test_counting_passes_counts_forward_calls_and_rows_once_per_model_and_removes_its_hook(backdoor):
    loaded, _ = backdoor
    ids = loaded.tokenizer(["how are you", "tell me"], return_tensors="pt", padding=True).input_ids
    hooks = count_hooks(loaded.model)
    with counting_passes(loaded, None, loaded) as passes, torch.no_grad():
        loaded.model(ids)
        with loaded.model.hooks(fwd_hooks=[]):  # a method's own hooks, reset on exit, leave the count running
            loaded.model(ids[:1])
        loaded.model(ids)
    assert (passes.calls, passes.rows) == (3, 2 + 1 + 2)
    assert count_hooks(loaded.model) == hooks
    with torch.no_grad():
        loaded.model(ids)
    assert passes.calls == 3  # nothing counted once out of the block


def test_eap_ig_passes_by_hand(backdoor):
    loaded, records = backdoor
    spec = MethodSpec("eap-ig", {"batch_size": 4, "ig_steps": 3, "progress": False})
    run = run_method(spec, Setting(loaded, BACKDOOR), records, None, ("heads", "neurons", "both"), (10, 100))
    # 8 pairs in 2 batches of 4: 3 forward calls each; rows 4 + 4 + 3 x 4 each
    assert (run.passes.calls, run.passes.rows) == (6, 40)
    assert run.wall_time_s > 0 and set(run.scores) == {"heads", "neurons", "both"} and not run.searched


def test_safeseek_points_from_a_search_at_each_size(backdoor):
    loaded, records = backdoor
    options = {"schedule.epochs": 2, "schedule.batch_size": 4, "schedule.val_size": 2}
    run = run_method(MethodSpec("safeseek", options, "search"), Setting(loaded, BACKDOOR), records, None, ("heads",), (1, 2, 50, 100))
    # 32 heads: 1% and 2% -> 1 (one search for both), 50% -> 16, 100% -> all 32 (no search)
    sizes = [run.circuit("heads", k).n_heads for k in (1, 2, 50, 100)]
    assert sizes == [1, 1, 16, 32] and set(run.searched) == {("heads", k) for k in (1, 2, 50, 100)}
    assert run.circuit("heads", 1) is run.circuit("heads", 2)
    # each unit's score is its share of the four circuits
    assert run.scores["heads"].heads.sum() == pytest.approx((1 + 1 + 16 + 32) / 4) and run.scores["heads"].neurons is None
    # two searches, each 2 epochs of ceil(6 / 4) = 2 training steps and ceil(2 / 4) = 1 validation batch
    assert run.passes.calls == 2 * 2 * (2 + 1)


def test_membership_scores_by_hand():
    shape = ModelShape(1, 4, 2)
    small, large = Circuit.from_units(shape, heads=[[0, 2]]), Circuit.from_units(shape, heads=[[0, 2], [0, 0]], neurons=[[0, 1]])
    scores = membership_scores([small, large], "heads")
    assert scores.heads.tolist() == [[0.5, 0.0, 1.0, 0.0]] and scores.neurons is None
    both = membership_scores([small, large], "both")
    assert both.neurons.tolist() == [[0.0, 0.5]]


def test_search_points_are_safeseek_s_and_the_seek_config_takes_seed_and_targets():
    with pytest.raises(ValueError, match="points='search' is SafeSeek's"):
        MethodSpec("eap-ig", points="search")
    with pytest.raises(ValueError, match="points must be one of"):
        MethodSpec("safeseek", points="sweep")  # type: ignore[arg-type]
    config = seek_config(BACKDOOR, "both", {"schedule.epochs": 3}, seed=7, targets={"heads": 3, "neurons": 40})
    assert (config.units, config.schedule.epochs, config.schedule.seed, config.target.count("heads", 32), config.target.count("neurons", 1536)) == ("both", 3, 7, 3, 40)
    again = seek_config(BACKDOOR, "heads", {"config": config}, targets={"heads": 5})
    assert (again.units, again.schedule.seed, again.schedule.epochs, again.target.count("heads", 32), again.target.neurons) == ("heads", 7, 3, 5, None)
    with pytest.raises(ValueError, match="either config=SeekConfig"):
        seek_config(BACKDOOR, "heads", {"config": config, "schedule.epochs": 2})
    # the alignment default caps its circuits (at most 3% of heads, 1% of neurons); the benchmark's
    # targets are exact sizes, and a config of both granularities loses its neuron cap at heads only
    exact = seek_config(ALIGNMENT, "neurons", {}, targets={"neurons": 40})
    assert (exact.target.heads, exact.target.neurons, exact.target.exact) == (None, 40, True)
    heads_only = seek_config(ALIGNMENT, "heads", {"config": SeekConfig.of("alignment", "both")})
    assert (heads_only.target.heads, heads_only.target.neurons, heads_only.target.exact) == (0.03, None, False)
    # and a config of heads only, searched at both, caps the neurons it did not search as the default does
    widened = seek_config(ALIGNMENT, "both", {"config": SeekConfig.of("alignment", "heads", target={"heads": 2})})
    assert (widened.target.heads, widened.target.neurons, widened.target.exact) == (2, 0.01, False)
