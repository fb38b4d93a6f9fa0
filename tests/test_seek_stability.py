"""Stability of a found circuit over seeds and data splits: the overlap and core worked out by hand,
the runs it makes, and a short run on tiny-aligned through the command line."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from safeseek_tl import AlignmentRecord
from safeseek_tl.errors import InputError
from safeseek_tl.seek import SeekConfig, Stability, repeats, stability
from safeseek_tl.units import Circuit, ModelShape
from tests.helpers import run_cli

SHAPE = ModelShape(n_layers=1, n_heads=4, d_mlp=3, model_name="toy")
A = Circuit.from_units(SHAPE, heads=[[0, 0], [0, 1]], neurons=[[0, 0]])
B = Circuit.from_units(SHAPE, heads=[[0, 1], [0, 2]], neurons=[[0, 0]])
C = Circuit.from_units(SHAPE, heads=[[0, 1]])


def test_mean_pairwise_jaccard_and_core_by_hand():
    # heads: A-B 1/3 ({1} of {0, 1, 2}), A-C 1/2, B-C 1/2 -> 4/9; neurons: A-B 1, A-C 0, B-C 0 -> 1/3
    assert Stability([C, C], [{}, {}], ("neurons",)).jaccard == {"neurons": 1.0}  # two empty circuits agree
    core = repeats.core_circuit([A, B, C])
    assert (core.head_list, core.neuron_list) == ([[0, 1]], [])
    assert repeats.core_circuit([A, B]).neuron_list == [[0, 0]]
    assert repeats.core_circuit([A]).head_list == [[0, 0], [0, 1]] and A.metadata == {}  # a copy, its input untouched
    found = Stability([A, B, C], [{"seed": s, "split": 0} for s in range(3)], ("heads", "neurons"))
    assert found.jaccard == {"heads": pytest.approx(4 / 9), "neurons": pytest.approx(1 / 3)}
    assert found.to_dict()["core"] == {"heads": [[0, 1]], "neurons": []}
    assert found.to_dict()["runs"][2] == {"seed": 2, "split": 0, "heads": [[0, 1]], "neurons": []}
    with pytest.raises(InputError, match="at least one pair"):
        _ = Stability([A], [{}], ("heads",)).jaccard


def test_data_splits_are_disjoint_seeded_parts_of_equal_size():
    records = list(range(7))
    halves = repeats.data_splits(records, 2, seed=0)
    assert [len(h) for h in halves] == [3, 3] and not set(halves[0]) & set(halves[1])  # one record left out
    assert repeats.data_splits(records, 2, seed=0) == halves and repeats.data_splits(records, 2, seed=1) != halves
    assert repeats.data_splits(records, 1) == [records]
    with pytest.raises(InputError, match="cannot be split into 8 parts"):
        repeats.data_splits(records, 8)


def test_stability_runs_every_seed_on_every_split_with_the_same_validation(monkeypatch):
    runs = []
    plan = iter([A, B, C, A])

    def discover(loaded, part, config, *, val_records, benign, prune, check, progress, time_budget_s):
        runs.append((tuple(r.prompt for r in part), config.schedule.seed, tuple(r.prompt for r in val_records), prune, check, time_budget_s))
        return SimpleNamespace(circuit=next(plan))

    monkeypatch.setattr(repeats, "discover", discover)
    records = [AlignmentRecord(f"p{i}", "no", "yes") for i in range(6)]
    config = SeekConfig.of('alignment', 'both', schedule={"val_size": 2, "seed": 42})
    found = stability(SimpleNamespace(), records, config, seeds=(3, 4), splits=2, prune=True, time_budget_s=5.0)
    halves = repeats.data_splits(records[:4], 2)
    parts = [tuple(r.prompt for r in half) for half in halves]
    assert [(part, seed) for part, seed, *_ in runs] == [(parts[0], 3), (parts[0], 4), (parts[1], 3), (parts[1], 4)]
    assert {run[2:] for run in runs} == {(("p4", "p5"), True, False, 5.0)}  # the last val_size records validate every run
    assert [(r["seed"], r["split"], r["n_heads"], r["n_neurons"]) for r in found.runs] == [(3, 0, 2, 1), (4, 0, 2, 1), (3, 1, 1, 0), (4, 1, 2, 1)]
    # heads: A-B 1/3, A-C 1/2, A-A 1, B-C 1/2, B-A 1/3, C-A 1/2 -> 19/6 / 6
    assert found.jaccard["heads"] == pytest.approx(19 / 36)
    assert config.schedule.seed == 42  # each run got a copy with its seed
    with pytest.raises(InputError, match="at least two runs"):
        stability(SimpleNamespace(), records, config, seeds=(1,), splits=1)


def test_stability_saves_after_every_run_and_resumes_only_the_runs_not_saved(monkeypatch, tmp_path):
    searched = []

    def discover(loaded, part, config, **_):
        searched.append((config.schedule.seed, part[0].prompt))
        if len(searched) == 3:
            raise KeyboardInterrupt  # the third run is interrupted
        return SimpleNamespace(circuit=[A, B, C, A][len(searched) - 1])

    monkeypatch.setattr(repeats, "discover", discover)
    records = [AlignmentRecord(f"p{i}", "no", "yes") for i in range(6)]
    config = SeekConfig.of("alignment", "both", schedule={"val_size": 2})
    loaded = SimpleNamespace(shape=SHAPE)
    with pytest.raises(KeyboardInterrupt):
        stability(loaded, records, config, seeds=(3, 4), splits=2, out_dir=tmp_path)
    saved = json.loads((tmp_path / "stability.json").read_text())
    assert [(r["seed"], r["split"], r["heads"]) for r in saved["runs"]] == [(3, 0, [[0, 0], [0, 1]]), (4, 0, [[0, 1], [0, 2]])]
    assert saved["jaccard"] == {"heads": pytest.approx(1 / 3), "neurons": 1.0}  # A-B: heads {1} of {0, 1, 2}; neurons {0} of {0}
    assert Circuit.load(tmp_path / "circuit.json").head_list == [[0, 1]]  # the core so far

    searched.clear()
    found = stability(loaded, records, config, seeds=(3, 4), splits=2, out_dir=tmp_path, resume=True)
    assert [seed for seed, _ in searched] == [3, 4]  # the two runs of the second half only
    assert [(r["seed"], r["split"]) for r in found.runs] == [(3, 0), (4, 0), (3, 1), (4, 1)]
    assert [c.head_list for c in found.circuits] == [A.head_list, B.head_list, A.head_list, B.head_list]  # saved A, B; searched A, B
    assert json.loads((tmp_path / "stability.json").read_text())["runs"][3]["heads"] == [[0, 1], [0, 2]]

    with pytest.raises(InputError, match=r"stability.json: saved for another plan \(different: config, split_seed\)"):
        stability(loaded, records, SeekConfig.of("alignment", "heads", schedule={"val_size": 2}), seeds=(3, 4), splits=2, split_seed=1, out_dir=tmp_path, resume=True)


def test_stability_command_on_tiny_aligned(tmp_path):
    """Four short searches (2 seeds x 2 halves of 20 records, 2 epochs, logits started near 0 so units switch)."""
    from safeseek_tl.organisms import data_file

    data = tmp_path / "align.jsonl"
    data.write_text("".join(data_file("alignment", "train").read_text().splitlines(keepends=True)[:24]))
    out = tmp_path / "stability"
    common = ("--model", "organism:tiny-aligned", "--data", str(data), "--scenario", "alignment", "--out", str(out))
    code, stdout, err = run_cli(
        "stability", *common, "--units", "both", "--seeds", "0,1", "--splits", "2", "--val-size", "4", "--epochs", "2",
        "--set", "schedule.batch_size=4", "--set", "masks.init_heads=0.02", "--set", "masks.init_neurons=0.02",
    )  # fmt: skip
    assert code == 0, err
    saved = json.loads((out / "stability.json").read_text())
    assert [(r["seed"], r["split"], r["n_train"]) for r in saved["runs"]] == [(0, 0, 10), (1, 0, 10), (0, 1, 10), (1, 1, 10)]
    core = Circuit.load(out / "circuit.json")
    circuits = [Circuit.from_units(core.shape, r["heads"], r["neurons"]) for r in saved["runs"]]
    assert all(len(c) for c in circuits)  # every search switched units off
    assert all(len(core - c) == 0 for c in circuits) and (core.head_list, core.neuron_list) == (saved["core"]["heads"], saved["core"]["neurons"])
    jaccard = Stability(circuits, saved["runs"], ("heads", "neurons")).jaccard
    for kind in ("heads", "neurons"):
        assert saved["jaccard"][kind] == pytest.approx(jaccard[kind])
        assert f"{kind}: mean pairwise Jaccard {saved['jaccard'][kind]:.3f} over 4 runs" in stdout
    code, _, err = run_cli("stability", *common, "--seeds", "0,x")
    assert code == 2 and "--seeds must be comma-separated integers" in err
