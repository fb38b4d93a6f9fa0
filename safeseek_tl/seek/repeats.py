"""How stable is a found circuit? The same search over seeds and data splits, and the overlap of its circuits.

:func:`stability` runs :func:`~safeseek_tl.seek.discover` once per (seed, split): the training
records (the validation records set aside first, the same for every run) are shuffled once
(``split_seed``) and cut into ``splits`` disjoint parts of equal size, and each run trains on one
part with one seed. Per granularity it reports the mean pairwise Jaccard overlap of the runs'
circuits (:meth:`~safeseek_tl.units.Circuit.jaccard`, 1.0 for two empty circuits) and the "core":
the units found by every run.
"""

from __future__ import annotations

import functools
import itertools
import json
import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from safeseek_tl import runs
from safeseek_tl._io import read_json, write_json
from safeseek_tl.data import BenignRecord, Record, split_records
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import UnitKind
from safeseek_tl.models import LoadedModel
from safeseek_tl.seek.config import SeekConfig
from safeseek_tl.seek.discovery import discover
from safeseek_tl.units import Circuit, ModelShape, mean_jaccard


def core_circuit(circuits: Sequence[Circuit]) -> Circuit:
    """The units every one of ``circuits`` contains."""
    if not circuits:
        raise InputError("the core of no circuits is undefined: give at least one")
    core = functools.reduce(operator.and_, circuits)
    return Circuit(core.shape, core.heads.clone(), core.neurons.clone(), {"method": "safeseek", "role": "stability core", "runs": len(circuits)})


def data_splits(records: Sequence[Record], splits: int, seed: int = 0) -> list[list[Record]]:
    """``records`` shuffled with ``seed`` and cut into ``splits`` disjoint parts of equal size (a
    remainder of fewer than ``splits`` records is left out); one part, in order, when ``splits`` is 1."""
    if splits < 1 or len(records) < splits:
        raise InputError(f"{len(records)} training records cannot be split into {splits} parts")
    if splits == 1:
        return [list(records)]
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed)).tolist()
    size = len(records) // splits
    return [[records[i] for i in order[part * size : (part + 1) * size]] for part in range(splits)]


@dataclass
class Stability:
    """The circuits of repeated searches (``runs[i]``: its ``seed``, ``split`` and circuit size) and their overlap."""

    circuits: list[Circuit]
    runs: list[dict[str, Any]]
    kinds: tuple[UnitKind, ...]
    plan: dict[str, Any] = field(default_factory=dict)
    """What the runs were asked for (the search's settings, the splits), saved so that an
    interrupted stability run resumes only the same plan."""

    @property
    def jaccard(self) -> dict[UnitKind, float]:
        """Per granularity searched: the mean pairwise Jaccard overlap of the runs' circuits."""
        pairs = list(itertools.combinations(self.circuits, 2))
        return {kind: mean_jaccard(pairs, (kind,)) for kind in self.kinds}

    @property
    def core(self) -> Circuit:
        """The units found by every run."""
        return core_circuit(self.circuits)

    def to_dict(self) -> dict[str, Any]:
        """``jaccard`` per granularity (``None`` before a second run), the ``core``'s units, each run
        with its circuit's units, and the ``plan``."""
        core = self.core
        return {
            "jaccard": self.jaccard if len(self.circuits) > 1 else None,
            "core": {"heads": core.head_list, "neurons": core.neuron_list},
            "runs": [run | {"heads": c.head_list, "neurons": c.neuron_list} for run, c in zip(self.runs, self.circuits)],
            "plan": self.plan,
        }

    def save(self, out_dir: str | Path) -> None:
        """``stability.json`` (:meth:`to_dict`) and the core as ``circuit.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / runs.STABILITY, self.to_dict())
        self.core.save(out / runs.CIRCUIT)


def stability(
    loaded: LoadedModel,
    records: Sequence[Record],
    config: SeekConfig,
    seeds: Sequence[int] = (0, 1, 2),
    splits: int = 2,
    *,
    val_records: Sequence[Record] | None = None,
    benign: Sequence[BenignRecord] = (),
    split_seed: int = 0,
    prune: bool = False,
    time_budget_s: float | None = None,
    progress: bool = False,
    out_dir: str | Path | None = None,
    resume: bool = False,
) -> Stability:
    """Repeat the search of ``config`` for every seed in ``seeds`` on each of ``splits`` parts of the
    training records (module docstring); the circuits and their overlap.

    ``val_records`` (default: the last ``config.schedule.val_size`` of ``records``) validate every run.
    ``prune``, ``benign`` and ``time_budget_s`` (per run) as in :func:`~safeseek_tl.seek.discover`;
    no run checks its behaviour. ``runs[i]`` records each run's seed, split, wall time and size.
    ``out_dir``: saved there (:meth:`~safeseek_tl.seek.repeats.Stability.save`) after every run, so that an interruption loses
    at most the run under way; ``resume``: the runs already saved there for the same plan are not
    searched again.
    """
    if len(seeds) * splits < 2:
        raise InputError(f"stability needs at least two runs, got {len(seeds)} seeds x {splits} splits")
    train, val = (list(records), list(val_records)) if val_records is not None else split_records(records, config.schedule.val_size, "training data")
    plan = {
        "config": config.to_dict(),
        "splits": splits,
        "split_seed": split_seed,
        "n_train": len(train),
        "n_val": len(val),
        "prune": prune,
        "time_budget_s": time_budget_s,
    }
    saved = saved_runs(Path(out_dir), loaded.shape, plan) if resume and out_dir is not None else {}
    found = Stability([], [], config.kinds, plan)
    for split, part in enumerate(data_splits(train, splits, split_seed)):
        for seed in seeds:
            searched = (seed, split) not in saved
            run, circuit = _search(loaded, part, replace(config, schedule=replace(config.schedule, seed=seed)), split, val, benign, prune, time_budget_s, progress) if searched else saved[seed, split]
            found.runs.append(run)
            found.circuits.append(circuit)
            if searched and out_dir is not None:
                found.save(out_dir)
    return found


def _search(
    loaded: LoadedModel, part: list[Record], config: SeekConfig, split: int, val: list[Record], benign: Sequence[BenignRecord], prune: bool, time_budget_s: float | None, progress: bool
) -> tuple[dict[str, Any], Circuit]:
    """One run of :func:`stability`: its description (seed, split, size, wall time) and its circuit."""
    start = time.perf_counter()
    circuit = discover(loaded, part, config, val_records=val, benign=benign, prune=prune, check=False, progress=progress, time_budget_s=time_budget_s).circuit
    run = {"seed": config.schedule.seed, "split": split, "n_train": len(part), "wall_s": time.perf_counter() - start, "n_heads": circuit.n_heads, "n_neurons": circuit.n_neurons}
    return run, circuit


def saved_runs(out_dir: Path, shape: ModelShape, plan: dict[str, Any]) -> dict[tuple[int, int], tuple[dict[str, Any], Circuit]]:
    """The runs of ``out_dir``'s stability.json by (seed, split), with their circuits: none when there
    is no file; an InputError naming the file when it was saved for another plan (the settings or
    the data sizes differ; the model is not recorded: a unit outside ``shape`` is refused)."""
    path = out_dir / runs.STABILITY
    if not path.exists():
        return {}
    saved, expected = read_json(path), json.loads(json.dumps(plan))  # as saved: tuples became lists
    differing = sorted(name for name in expected.keys() | saved.get("plan", {}).keys() if saved.get("plan", {}).get(name) != expected.get(name))
    if differing:
        raise InputError(
            f"{path}: saved for another plan (different: {', '.join(differing)}); resume it with the same settings and data, or write to another --out"
        )
    out = {}
    for run in saved["runs"]:
        circuit = Circuit.from_units(shape, run.pop("heads"), run.pop("neurons"))
        out[run["seed"], run["split"]] = (run, circuit)
    return out
