"""Compare attribution methods at matched sparsity: SafeSeek against every heuristic baseline.

For each method the scores are computed once (timed); for each budget k every method gives up its
top-k units of the chosen granularity, which are ablated and the behaviour measured with the same
judge and data. A circuit is ablated the way its method searched: a SafeSeek search with mean
fill (``SeekConfig(ablation="mean")``) with its own unit means, every other method with zeros
(the ``ablation`` column says which). The result is a tidy DataFrame (a row per method and
budget) plus the pairwise Jaccard overlap of the methods' circuits at each budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from safeseek_tl._io import atomic_path, write_json
from safeseek_tl.ablation import ReferenceActivations, ablated
from safeseek_tl.data import BenignRecord, Record
from safeseek_tl.errors import InputError
from safeseek_tl.evaluate import BehaviourData, measure
from safeseek_tl.hooks import UnitKind
from safeseek_tl.metrics import RefusalJudge
from safeseek_tl.units import Circuit, Scores

SAFESEEK = "safeseek"


HELD_OUT_FRACTION, HELD_OUT_SEED = 0.25, 0


def held_out_split(records: Sequence[Any], fraction: float = HELD_OUT_FRACTION, seed: int = HELD_OUT_SEED) -> tuple[list[Any], list[Any]]:
    """(for the methods, held out to measure on): a seeded random ``fraction`` held out, order kept.

    What CLI ``compare`` measures on when it is given no evaluation data, so that no circuit is
    judged on the prompts its method was fitted to.
    """
    import torch

    from safeseek_tl.safeguard import split_indices

    if len(records) < 2:
        raise InputError(f"{len(records)} record(s) cannot be split into data for the methods and held-out data to measure on")
    # one label for every record: split_indices then splits without stratifying
    kept, held = split_indices(torch.zeros(len(records), dtype=torch.bool), fraction, seed)
    return [records[i] for i in kept], [records[i] for i in held]


def behaviour_key(scenario: str) -> str:
    """The metric whose change a comparison reports: triggered ASR (backdoor) or harmful ASR."""
    return "asr_triggered" if scenario == "backdoor" else "asr_harmful"


def score_key(scenario: str) -> str:
    """The logit refusal score of the prompts :func:`behaviour_key` judges, reported beside it."""
    return "refusal_score_triggered" if scenario == "backdoor" else "refusal_score_harmful"


@dataclass
class Comparison:
    """A comparison's table and the Jaccard overlap matrices (one per budget)."""

    table: pd.DataFrame
    overlap: dict[int, pd.DataFrame]
    baseline: dict[str, float]

    def save(self, out_dir: str | Path) -> None:
        """``comparison.csv``, ``comparison.json``, ``overlap.csv`` (largest budget) and ``overlap.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "comparison.csv") as tmp:
            self.table.to_csv(tmp, index=False)
        write_json(out / "comparison.json", {"baseline": self.baseline, "rows": self.table.to_dict(orient="records")})
        if self.overlap:
            largest = max(self.overlap)
            with atomic_path(out / "overlap.csv") as tmp:
                self.overlap[largest].to_csv(tmp)
            write_json(out / "overlap.json", {str(k): v.to_dict() for k, v in self.overlap.items()})


@dataclass
class Attribution:
    """A method's scores and what its search put in place of the units it removed.

    ``fill`` is ``None`` for zeros (the baselines, and SafeSeek's default); a SafeSeek search with
    ``ablation="mean"`` gives its unit means (:func:`~safeseek_tl.seek.search_fill`), so that its
    circuit is measured as it was found rather than by zeroing it.
    """

    scores: Scores
    fill: ReferenceActivations | None = None

    @property
    def ablation(self) -> str:
        """``"zero"`` or ``"mean"``: how :func:`compare` ablates this method's circuits."""
        return "zero" if self.fill is None else "mean"


ScoreFn = Callable[[], Scores | Attribution]


def compare(
    loaded: Any,
    methods: dict[str, ScoreFn],
    budgets: Sequence[int],
    scenario: str,
    eval_data: BehaviourData,
    units: UnitKind = "heads",
    truth: Circuit | None = None,
    judge: RefusalJudge | None = None,
    max_new_tokens: int = 32,
) -> Comparison:
    """Run each method (a zero-argument function returning Scores), ablate its top-k units, measure.

    A method may return an :class:`Attribution` instead, to have its circuits ablated with the mean
    fill it searched with; plain Scores are ablated with zeros. ``ablation`` in the table says which.
    ``behaviour_change`` is the change of ``behaviour_key(scenario)`` (in points of a fraction):
    negative when ablation removes a backdoor, positive when it makes an aligned model comply.
    Beside it, ``score_key(scenario)`` is the mean logit refusal score of the same prompts, which
    shows a ``judge`` that misreads the model. ``utility_change`` is the relative change of the
    benign completion cross-entropy.
    """
    if not methods:
        raise InputError("compare needs at least one method")
    if not budgets or any(k < 1 for k in budgets):
        raise InputError(f"budgets must be positive unit counts, got {list(budgets)}")
    key, score_column = behaviour_key(scenario), score_key(scenario)
    baseline = measure(loaded, eval_data, judge, max_new_tokens)
    if key not in baseline:
        raise InputError(f"the evaluation data has no prompts to measure {key} for the {scenario} scenario")
    rows, circuits = [], {}
    for name, run in methods.items():
        start = time.perf_counter()
        found = run()
        wall = time.perf_counter() - start
        found = found if isinstance(found, Attribution) else Attribution(found)
        scores = found.scores
        if scores.get(units) is None:
            raise InputError(f"method {name!r} gives no {units} scores; compare it on another granularity")
        for k in budgets:
            circuit = Circuit.top_k(scores, **{units: k})
            circuits[(name, k)] = circuit
            with ablated(loaded.model, circuit, found.ablation, found.fill):
                after = measure(loaded, eval_data, judge, max_new_tokens)
            precision, recall = circuit.precision_recall(truth, kinds=(units,)) if truth is not None else (math.nan, math.nan)
            utility_change = (
                (after["utility_loss"] - baseline["utility_loss"]) / baseline["utility_loss"] if "utility_loss" in baseline else math.nan
            )
            rows.append({
                "method": name, "budget": k, "n_heads": circuit.n_heads, "n_neurons": circuit.n_neurons,
                "n_units": len(circuit), "ablation": found.ablation, "behaviour_change": after[key] - baseline[key], key: after[key],
                score_column: after[score_column],
                "utility_change": utility_change, "wall_time_s": wall, "precision": precision, "recall": recall,
            })  # fmt: skip
    names = list(methods)
    overlap = {
        k: pd.DataFrame([[circuits[(a, k)].jaccard(circuits[(b, k)], kinds=(units,)) for b in names] for a in names], index=names, columns=names)
        for k in budgets
    }
    return Comparison(pd.DataFrame(rows), overlap, baseline)


def method_runners(
    loaded: Any,
    names: Sequence[str],
    records: Sequence[Record],
    scenario: str,
    benign: Sequence[BenignRecord] = (),
    base_model: Any = None,
    seek_config: Any = None,
    units: UnitKind = "heads",
    progress: bool = False,
) -> dict[str, ScoreFn]:
    """Zero-argument score functions for ``names`` (``safeseek`` and the baseline registry's names).

    SafeSeek's gives an :class:`Attribution` carrying its search's fill (the means of the records
    it trained on, without the validation records ``fit`` splits off), so a mean-fill search is
    measured with its means.
    """
    from safeseek_tl.baselines import BASELINES, run_baseline
    from safeseek_tl.data import split_records
    from safeseek_tl.seek import SafeSeek, SeekConfig, search_fill

    def run_safeseek(config: Any) -> Attribution:
        scores = SafeSeek(loaded, config).fit(records, progress=progress).scores
        train, _ = split_records(records, config.val_size, "training data")  # as fit() splits them
        return Attribution(scores, search_fill(loaded, config, train))

    runners: dict[str, ScoreFn] = {}
    for name in names:
        if name == SAFESEEK:
            config = seek_config or SeekConfig(scenario=scenario)
            runners[name] = lambda config=config: run_safeseek(config)
        elif name in BASELINES:
            options = {"units": units} if name in ("act-patch", "attr-patch") else {}
            runners[name] = lambda name=name, options=options: run_baseline(
                name, loaded, records, scenario, base_model=base_model, benign=list(benign), **options
            )
        else:
            raise InputError(f"unknown method {name!r}; use {SAFESEEK} or one of {sorted(BASELINES)}")
    return runners
