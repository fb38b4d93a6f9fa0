"""Compare attribution methods at matched sparsity: SafeSeek against every heuristic baseline.

Three steps: **score** (:func:`score_methods`: each method of the registry once, timed, on the same
records), **select** (:func:`select_circuits`: each method's top-k units of the chosen granularity
at every budget k) and **measure** (:func:`compare`: each circuit ablated, the behaviour measured
with the same judge and data). A circuit is ablated the way its method searched: a SafeSeek search
with mean fill (setting ``masks.fill="mean"``) with its own unit means, every other method with
zeros (the ``ablation`` column says which). Interventions that are not unit circuits (the refusal
direction ablated: :class:`Intervention`) get a row each beside them, measured the same way. The
result is a tidy DataFrame (a row per method and budget, then one per intervention) plus the
pairwise Jaccard overlap of the methods' circuits at each budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from safeseek_tl import runs
from safeseek_tl._io import atomic_path, write_json
from safeseek_tl.ablation import ablated
from safeseek_tl.data import BenignRecord, Record
from safeseek_tl.errors import InputError
from safeseek_tl.evaluate import BehaviourData, last_logits, measure
from safeseek_tl.hooks import UnitKind
from safeseek_tl.methods import Attribution, attribute
from safeseek_tl.metrics import RefusalJudge, last_position_kl
from safeseek_tl.models import LoadedModel
from safeseek_tl.scenarios import scenario_of
from safeseek_tl.units import Circuit, Scores

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


@dataclass(frozen=True)
class Intervention:
    """An intervention measured beside the unit circuits that is not one, e.g. the refusal direction ablated.

    ``context`` makes the context manager that runs the model intervened (``lambda:
    direction_ablated(loaded.model, direction)``); ``size`` is what the table shows for it
    (``"1 direction"``); ``wall_time_s``: how long finding it took.
    """

    context: Callable[[], AbstractContextManager[Any]]
    size: str
    wall_time_s: float = math.nan


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
        with atomic_path(out / runs.COMPARISON_CSV) as tmp:
            self.table.to_csv(tmp, index=False)
        write_json(out / runs.COMPARISON_JSON, {"baseline": self.baseline, "rows": self.table.to_dict(orient="records")})
        if self.overlap:
            largest = max(self.overlap)
            with atomic_path(out / runs.OVERLAP_CSV) as tmp:
                self.overlap[largest].to_csv(tmp)
            write_json(out / runs.OVERLAP_JSON, {str(k): v.to_dict() for k, v in self.overlap.items()})


def score_methods(
    loaded: LoadedModel,
    names: Sequence[str],
    records: Sequence[Record],
    scenario: str,
    benign: Sequence[BenignRecord] = (),
    base_model: LoadedModel | None = None,
    seek_config: Any = None,
    units: UnitKind = "heads",
    progress: bool = False,
) -> dict[str, Attribution]:
    """Score step: each method in ``names`` once on the same data (:func:`~safeseek_tl.methods.attribute`, timed).

    ``seek_config``: SafeSeek's settings (default: the scenario's, at granularity ``units``).
    """
    found = {}
    for name in names:
        options = {"config": seek_config, "progress": progress} if name == "safeseek" else {}
        found[name] = attribute(name, loaded, records, scenario, base_model=base_model, benign=list(benign), units=units, **options)
    return found


def select_circuits(scores: Scores, budgets: Sequence[int], units: UnitKind = "heads") -> dict[int, Circuit]:
    """Select step: the top-k units of granularity ``units`` for every budget k."""
    if not budgets or any(k < 1 for k in budgets):
        raise InputError(f"budgets must be positive unit counts, got {list(budgets)}")
    if scores.get(units) is None:
        raise InputError(f"method {scores.method!r} gives no {units} scores; compare it on another granularity")
    return {k: Circuit.top_k(scores, **{units: k}) for k in budgets}


def compare(
    loaded: LoadedModel,
    methods: Mapping[str, Attribution | Scores],
    budgets: Sequence[int],
    scenario: str,
    eval_data: BehaviourData,
    units: UnitKind = "heads",
    truth: Circuit | None = None,
    judge: RefusalJudge | None = None,
    max_new_tokens: int = 32,
    interventions: Mapping[str, Intervention] | None = None,
    kl_prompts: Sequence[str] = (),
    baseline: Mapping[str, float] | None = None,
    other_judges: Mapping[str, RefusalJudge] | None = None,
) -> Comparison:
    """Measure step: ablate each method's top-k units (:func:`select_circuits`) and measure the behaviour.

    ``methods``: each method's :class:`~safeseek_tl.methods.Attribution` (:func:`score_methods`) or
    plain Scores (ablated with zeros). ``ablation`` in the table says how each was ablated.
    ``behaviour_change`` is the change of the scenario's rate (``Scenario.rate``: triggered ASR for a
    backdoor, harmful ASR for alignment; in points of a fraction): negative when ablation removes a
    backdoor, positive when it makes an aligned model comply. Beside it, ``Scenario.refusal_score``
    is the mean logit refusal score of the same prompts, which shows a ``judge`` that misreads the
    model. ``benign_answered``: the share of benign prompts answered (not refused by the judge; NaN
    without benign prompts); ``utility_change``: the relative change of benign cross-entropy.
    ``interventions``: more rows, one per :class:`Intervention`, measured the same way (``ablation``
    "intervention", ``size`` its own). ``kl``: mean KL(full || intervened) of the next-token
    distribution at the last prompt position of ``kl_prompts`` (harmless ones; NaN without them).
    ``baseline``: the full model's :func:`~safeseek_tl.evaluate.measure` of ``eval_data``, when
    several calls share it (measured here when not given). ``other_judges`` judge the same answers
    again; their rates join each row as ``{column}_{name}`` (:func:`~safeseek_tl.evaluate.measure`).
    """
    interventions = dict(interventions or {})
    if not methods and not interventions:
        raise InputError("compare needs at least one method or intervention")
    behaviour = scenario_of(scenario)
    key, score_column = behaviour.rate, behaviour.refusal_score
    found = {name: m if isinstance(m, Attribution) else Attribution(m) for name, m in methods.items()}
    circuits = {name: select_circuits(attribution.scores, budgets, units) for name, attribution in found.items()}
    baseline = dict(baseline) if baseline is not None else measure(loaded, eval_data, judge, max_new_tokens, other_judges=other_judges)
    if key not in baseline:
        raise InputError(f"the evaluation data has no prompts to measure {key} for the {behaviour.name} scenario")
    full_logits = last_logits(loaded, kl_prompts) if kl_prompts else None

    def measured(context: AbstractContextManager[Any]) -> dict[str, float]:
        with context:
            after = measure(loaded, eval_data, judge, max_new_tokens, other_judges=other_judges)
            kl = math.nan if full_logits is None else float(last_position_kl(full_logits, last_logits(loaded, kl_prompts)).mean())
        utility_change = (after["utility_loss"] - baseline["utility_loss"]) / baseline["utility_loss"] if "utility_loss" in baseline else math.nan
        answered = after.get("benign_answered", math.nan)
        twins = {f"{column}_{name}": after.get(f"{column}_{name}", math.nan) for name in other_judges or {} for column in (key, "benign_answered")}
        return {"behaviour_change": after[key] - baseline[key], key: after[key], score_column: after[score_column], "benign_answered": answered, "kl": kl, "utility_change": utility_change, **twins}

    rows = []
    for name, attribution in found.items():
        for k, circuit in circuits[name].items():
            precision, recall = circuit.precision_recall(truth, kinds=(units,)) if truth is not None else (math.nan, math.nan)
            rows.append({
                "method": name, "budget": k, "size": f"{k} {units}", "n_heads": circuit.n_heads, "n_neurons": circuit.n_neurons,
                "n_units": len(circuit), "ablation": attribution.ablation, **measured(ablated(loaded.model, circuit, attribution.ablation, attribution.fill)),
                "wall_time_s": attribution.wall_time_s, "precision": precision, "recall": recall,
            })  # fmt: skip
    for name, intervention in interventions.items():
        rows.append({
            "method": name, "budget": math.nan, "size": intervention.size, "n_heads": math.nan, "n_neurons": math.nan, "n_units": math.nan,
            "ablation": "intervention", **measured(intervention.context()), "wall_time_s": intervention.wall_time_s, "precision": math.nan, "recall": math.nan,
        })  # fmt: skip
    return Comparison(pd.DataFrame(rows), _overlaps(circuits, budgets, units), baseline)


def _overlaps(circuits: Mapping[str, Mapping[int, Circuit]], budgets: Sequence[int], units: UnitKind) -> dict[int, pd.DataFrame]:
    """The pairwise Jaccard overlap of the methods' circuits at each budget."""
    names = list(circuits)
    return {
        k: pd.DataFrame([[circuits[a][k].jaccard(circuits[b][k], kinds=(units,)) for b in names] for a in names], index=names, columns=names)
        for k in budgets
    }
