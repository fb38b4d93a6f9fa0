"""Faithfulness curves, MIB style: every method's top-k% units kept alone or removed, across a grid of k.

Definitions (the circuit-localization track of MIB, 2025, at node level):

- the *units* of a granularity: all heads (``"heads"``), all neurons (``"neurons"``), or both
  (``"both"``); only that granularity's units are ever ablated;
- ``C_k``: the top ``k``% of each granularity's units by score (higher first), at least one unit,
  ties broken by unit index (layer-major); for ``"both"``, k% of the heads and k% of the neurons;
- *kept*: ``f(k) = (m(only C_k) - m(empty)) / (m(full) - m(empty))``, where "only C_k" ablates
  every other unit and "empty" ablates all units;
- *removed*: ``g(k) = (m(full) - m(full without C_k)) / (m(full) - m(empty))``;
- ``m``: the task metric, averaged over the behaviour prompts (:func:`task_metric`);
- ablation: ``"zero"``, ``"mean"`` (each unit's mean over the contrast prompts' tokens) or
  ``"counterfactual"`` (each prompt's paired contrast prompt's activations, positions aligned
  from the end as in patching).

CPR (area under the curve, higher is better) and CMD (area between the curve and 1, ``|1 - f|``,
lower is better) integrate over MIB's x-axis, the natural log of the circuit's size, by the
trapezoid rule between consecutive grid points. Unlike MIB's code, the area is divided by the
width of the x range, so a curve at 1 everywhere has CPR 1 and CMD 0 whatever the grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from safeseek_tl import runs
from safeseek_tl._io import atomic_path, write_json
from safeseek_tl.ablation import ReferenceActivations
from safeseek_tl.baselines.patching import pair_batches, refusal_metric
from safeseek_tl.benchmark_methods import MethodRun, MethodSpec, Points, Setting, all_units, run_method, saved_runs, top_percent
from safeseek_tl.benchmark_stability import stability
from safeseek_tl.data import BackdoorRecord, BenignRecord, Record
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import UNIT_KINDS, Fill, HookList, UnitChoice, intervention_hook, unit_hook, unit_kinds
from safeseek_tl.models import LoadedModel
from safeseek_tl.plots import faithfulness_plot
from safeseek_tl.scenarios import Scenario, scenario_of
from safeseek_tl.units import Circuit, Scores

MIB_GRID: tuple[float, ...] = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
"""The circuit sizes of MIB's curves, in percent of the units."""
Ablation = Literal["zero", "mean", "counterfactual"]
ABLATIONS: tuple[Ablation, ...] = ("zero", "mean", "counterfactual")
Direction = Literal["kept", "removed"]
DIRECTIONS: tuple[Direction, ...] = ("kept", "removed")
TaskMetric = Callable[[Float[Tensor, "n d_vocab"]], Float[Tensor, " n"]]
"""The task metric of every prompt's last-position logits, in prompt order (all prompts at once)."""
Measure = Callable[[Circuit], float]
"""``m`` with the given units ablated (an empty circuit: the full model)."""


@dataclass
class Curve:
    """One faithfulness curve: ``values[i]`` at ``grid[i]``% (``sizes[i]`` units in the circuit)."""

    granularity: UnitChoice
    direction: Direction
    grid: tuple[float, ...]
    sizes: list[int]
    values: list[float]
    m_full: float
    m_empty: float
    ablation: str = ""
    n_units: int = 0
    prompts: str = "train"

    def _area(self, heights: Sequence[float]) -> float:
        xs = [math.log(size / self.n_units) for size in self.sizes]
        if xs[-1] == xs[0]:
            return math.nan  # a single size: no area
        total = sum((xs[i + 1] - xs[i]) * (heights[i] + heights[i + 1]) / 2 for i in range(len(xs) - 1))
        return total / (xs[-1] - xs[0])

    @property
    def cpr(self) -> float:
        """Area under the curve over log size, divided by the log-size range (higher is better)."""
        return self._area(self.values)

    @property
    def cmd(self) -> float:
        """Area between the curve and 1 (``|1 - f|``) over log size, divided by the range (lower is better)."""
        return self._area([abs(1 - v) for v in self.values])


def circuits_curve(measure: Measure, circuits: Sequence[Circuit], grid: Sequence[float], granularity: UnitChoice, direction: Direction) -> Curve:
    """The curve of the circuits ``C_k`` given for each ``k`` of ``grid`` (see the module docs)."""
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if not grid or list(grid) != sorted(grid) or len(circuits) != len(grid):
        raise InputError(f"the grid must be percentages in increasing order, one circuit each, got {list(grid)} and {len(circuits)} circuits")
    universe = all_units(circuits[0].shape, granularity)
    m_full, m_empty = measure(Circuit.empty(universe.shape)), measure(universe)
    if m_full == m_empty:
        raise InputError(f"m(full) equals m(empty) ({m_full}) for {granularity}: ablating every unit does not move the metric, so f is undefined")
    values = []
    for circuit in circuits:
        if direction == "kept":
            values.append((measure(universe - circuit) - m_empty) / (m_full - m_empty))
        else:
            values.append((m_full - measure(circuit)) / (m_full - m_empty))
    return Curve(granularity, direction, tuple(grid), [len(c) for c in circuits], values, m_full, m_empty, n_units=len(universe))


def faithfulness_curve(measure: Measure, scores: Scores, grid: Sequence[float], granularity: UnitChoice, direction: Direction) -> Curve:
    """The curve of ``scores``' top-``k``% circuits given ``measure`` (``m`` with a set of units ablated)."""
    return circuits_curve(measure, [top_percent(scores, granularity, k) for k in grid], grid, granularity, direction)


def auroc(scores: Scores, truth: Circuit, granularity: UnitChoice) -> float:
    """P(a ground-truth unit outscores a unit outside it), ties counting half (Mann-Whitney).

    For ``"both"``, heads and neurons are pooled. NaN when either class is empty.
    """
    kinds = unit_kinds(granularity)
    values = torch.cat([scores.require(kind).flatten().double() for kind in kinds])
    labels = torch.cat([truth.get(kind).flatten() for kind in kinds])
    positives, negatives = values[labels], values[~labels]
    if len(positives) == 0 or len(negatives) == 0:
        return math.nan
    greater = (positives[:, None] > negatives[None, :]).double().sum()
    ties = (positives[:, None] == negatives[None, :]).double().sum()
    return float((greater + ties / 2) / (len(positives) * len(negatives)))


@dataclass
class ModelMeasure:
    """``m`` on a model: the task metric of ``prompts`` with a set of units ablated (memoized).

    ``donors``: the contrast prompt paired with each prompt (needed by mean and counterfactual
    ablation). Each batch's donor activations are computed once, on first use.
    """

    loaded: LoadedModel
    prompts: Sequence[str]
    metric: TaskMetric
    ablation: Ablation = "zero"
    donors: Sequence[str] | None = None
    batch_size: int = 16
    _memo: dict[tuple[bytes, bytes], float] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.ablation not in ABLATIONS:
            raise InputError(f"ablation must be one of {ABLATIONS}, got {self.ablation!r}")
        if self.ablation != "zero" and not self.donors:
            raise InputError(f"{self.ablation} ablation needs donors: the contrast prompt of each prompt")
        self.batches = pair_batches(self.loaded, self.prompts, self.donors or self.prompts, self.batch_size)
        self._donor_caches: list[dict[str, Tensor]] = []
        self._means: ReferenceActivations | None = None
        if self.ablation == "mean":
            self._means = ReferenceActivations.collect(self.loaded.model, [(d, dm) for _, _, d, dm in self.batches], pool_size=0)

    def _donor_cache(self, i: int) -> dict[str, Tensor]:
        while len(self._donor_caches) <= i:
            _, _, ids, mask = self.batches[len(self._donor_caches)]
            with torch.no_grad():
                _, cache = self.loaded.model.run_with_cache(ids, attention_mask=mask, names_filter=lambda name: name.endswith(("hook_z", "hook_post")))
            self._donor_caches.append(dict(cache))
        return self._donor_caches[i]

    def _hooks(self, ablate: Circuit, batch: int) -> HookList:
        hooks: HookList = []
        for kind in UNIT_KINDS:
            for layer in range(ablate.shape.n_layers):
                selection = ablate.get(kind)[layer]
                if not selection.any():
                    continue
                fill: Fill = None
                if self.ablation == "mean":
                    assert self._means is not None, "collected when the measure was built for mean ablation"
                    fill = self._means.means[kind][layer]
                elif self.ablation == "counterfactual":
                    fill = self._donor_cache(batch)[unit_hook(kind, layer)]
                hooks.append((unit_hook(kind, layer), intervention_hook(1.0 - selection.float(), fill)))
        return hooks

    def __call__(self, ablate: Circuit) -> float:
        key = (ablate.heads.numpy().tobytes(), ablate.neurons.numpy().tobytes())
        if key not in self._memo:
            logits = []
            for i, (ids, mask, _, _) in enumerate(self.batches):
                with torch.no_grad(), self.loaded.model.hooks(fwd_hooks=self._hooks(ablate, i)):
                    logits.append(self.loaded.model(ids, attention_mask=mask, logits_to_keep=1)[:, -1].float())
            self._memo[key] = float(self.metric(torch.cat(logits)).double().mean())
        return self._memo[key]


def faithfulness(
    loaded: LoadedModel,
    scores: Scores,
    prompts: Sequence[str],
    metric: TaskMetric,
    *,
    donors: Sequence[str] | None = None,
    grid: Sequence[float] = MIB_GRID,
    granularity: UnitChoice = "heads",
    ablation: Ablation = "zero",
    direction: Direction = "kept",
    batch_size: int = 16,
) -> Curve:
    """The faithfulness curve of ``scores`` on ``prompts`` (see the module docs for the definitions)."""
    measure = ModelMeasure(loaded, prompts, metric, ablation, donors, batch_size)
    curve = faithfulness_curve(measure, scores, grid, granularity, direction)
    curve.ablation = ablation
    return curve


def first_token_ids(loaded: LoadedModel, answers: Sequence[str]) -> list[int]:
    """The first token of each answer as the model would start it (the text alone, no special tokens)."""
    ids = [loaded.tokenizer(answer, add_special_tokens=False).input_ids for answer in answers]
    if any(not row for row in ids):
        raise InputError("an answer tokenizes to nothing; every answer needs a first token")
    return [row[0] for row in ids]


def task_metric(loaded: LoadedModel, behaviour: Scenario, records: Sequence[Record]) -> TaskMetric:
    """The scenario's metric: the refusal score (alignment) or, per record, the logit of the
    backdoor answer's first token minus that of the clean answer's (backdoor)."""
    if behaviour.name == "alignment":
        return refusal_metric(loaded)
    behaviour.check(records, "benchmark data")
    backdoor = cast(Sequence[BackdoorRecord], records)  # the check above: backdoor records only
    target = torch.tensor(first_token_ids(loaded, [r.backdoor_output for r in backdoor]))
    clean = torch.tensor(first_token_ids(loaded, [r.output for r in backdoor]))

    def logit_difference(logits: Tensor) -> Tensor:
        rows = torch.arange(len(logits))
        return logits[rows, target.to(logits.device)] - logits[rows, clean.to(logits.device)]

    return logit_difference


TABLE_COLUMNS = ("method", "granularity", "ablation", "direction", "prompts", "k", "quantity", "value")
"""The columns of ``benchmark.csv`` (see :class:`Benchmark`)."""


@dataclass
class Benchmark:
    """A benchmark's tidy table, its leaderboard, its curves and its settings.

    ``table`` (:data:`TABLE_COLUMNS`): one row per quantity: ``quantity`` is ``"faithfulness"`` (at
    ``k``), ``"cpr"`` and ``"cmd"`` (per method, granularity, ablation, direction and prompt set,
    ``prompts`` being ``"train"`` or ``"held-out"``), ``"auroc"`` and the stability's
    ``"jaccard"``, ``"jaccard_seeds"``, ``"jaccard_splits"`` (per method and granularity, the last
    three at ``k``), ``"wall_time_s"``, ``"passes"`` and ``"pass_rows"`` (per method); other
    columns are empty where they do not apply. ``leaderboard``: one row per method, granularity,
    ablation and direction: ``points`` (``"ranking"`` or ``"search"``), ``cpr``, ``cmd``,
    ``cpr_held_out``, ``cmd_held_out``, ``auroc``, the stability, ``wall_time_s``, ``passes``,
    ``pass_rows``, and the curve's ``m_full`` and ``m_empty`` (the two ends its values are scaled
    between). ``settings``: what was run (model, scenario, grid, ...), shown on the HTML page.
    """

    table: pd.DataFrame
    leaderboard: pd.DataFrame
    curves: list[tuple[str, Curve]]
    settings: dict[str, Any] = field(default_factory=dict)

    def figures(self) -> list[tuple[str, go.Figure]]:
        """One faithfulness plot per granularity, ablation, direction and prompt set, with its file stem."""
        curves = self.table[self.table["quantity"] == "faithfulness"]
        figures = []
        for (granularity, ablation, direction, prompts), part in curves.groupby(["granularity", "ablation", "direction", "prompts"], sort=False):
            held_out = prompts == "held-out"
            title = f"{direction}: {granularity}, {ablation} ablation" + (", held-out prompts" if held_out else "")
            figures.append((f"curves_{granularity}_{ablation}_{direction}" + ("_held_out" if held_out else ""), faithfulness_plot(part, title=title)))
        return figures

    def save(self, out_dir: str | Path) -> None:
        """``benchmark.csv``, ``leaderboard.csv``, ``benchmark.json`` (the settings), one plotly figure
        (JSON) per curve set (:meth:`figures`) and ``leaderboard.html`` (offline, escaped)."""
        from safeseek_tl.benchmark_page import leaderboard_page

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in ((runs.BENCHMARK_CSV, self.table), (runs.LEADERBOARD_CSV, self.leaderboard)):
            with atomic_path(out / name) as tmp:
                frame.to_csv(tmp, index=False)
        write_json(out / runs.BENCHMARK_JSON, self.settings)
        figures = self.figures()
        for stem, figure in figures:
            with atomic_path(out / f"{stem}.json") as tmp:
                tmp.write_text(figure.to_json())
        with atomic_path(out / runs.LEADERBOARD_HTML) as tmp:
            tmp.write_text(leaderboard_page(self.leaderboard, [f for _, f in figures], self.settings), encoding="utf-8")


@dataclass
class _Collector:
    """The rows of a benchmark's table and leaderboard, and its curves, as they are measured."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    board: list[dict[str, Any]] = field(default_factory=list)
    curves: list[tuple[str, Curve]] = field(default_factory=list)

    def add_method(self, run: MethodRun, measures: Mapping[tuple[str, Ablation], ModelMeasure], grid: Sequence[float],
                   directions: Sequence[Direction], truth: Circuit | None, stable: Mapping[UnitChoice, Mapping[str, float]], stability_k: float | None) -> None:
        name = run.spec.name
        passes = run.passes
        cost = {"wall_time_s": run.wall_time_s, "passes": passes.calls if passes else math.nan, "pass_rows": passes.rows if passes else math.nan}
        self.rows += [{"method": name, "quantity": q, "value": v} for q, v in cost.items()]
        for granularity, scores in run.scores.items():
            area = auroc(scores, truth, granularity) if truth is not None else math.nan
            self.rows.append({"method": name, "granularity": granularity, "quantity": "auroc", "value": area})
            jaccards = dict(stable.get(granularity, {}))
            self.rows += [{"method": name, "granularity": granularity, "k": stability_k, "quantity": q, "value": v} for q, v in jaccards.items()]
            circuits = [run.circuit(granularity, k) for k in grid]
            for direction in directions:
                found = {key: self.add_curve(name, circuits, grid, granularity, direction, key, measure) for key, measure in measures.items()}
                for ablation in dict.fromkeys(a for _, a in measures):
                    train, held_out = found[("train", ablation)], found.get(("held-out", ablation))
                    self.board.append({
                        "method": name, "granularity": granularity, "ablation": ablation, "direction": direction, "points": run.spec.points,
                        "cpr": train.cpr, "cmd": train.cmd, "cpr_held_out": held_out.cpr if held_out else math.nan,
                        "cmd_held_out": held_out.cmd if held_out else math.nan, "auroc": area, **jaccards, **cost,
                        "m_full": train.m_full, "m_empty": train.m_empty,
                    })  # fmt: skip

    def add_curve(self, name: str, circuits: Sequence[Circuit], grid: Sequence[float], granularity: UnitChoice, direction: Direction,
                  key: tuple[str, Ablation], measure: ModelMeasure) -> Curve:
        curve = circuits_curve(measure, circuits, grid, granularity, direction)
        curve.prompts, curve.ablation = key
        self.curves.append((name, curve))
        where = {"method": name, "granularity": granularity, "ablation": curve.ablation, "direction": direction, "prompts": curve.prompts}
        self.rows += [{**where, "k": k, "quantity": "faithfulness", "value": v} for k, v in zip(grid, curve.values)]
        self.rows += [{**where, "quantity": q, "value": getattr(curve, q)} for q in ("cpr", "cmd")]
        return curve


def benchmark(
    loaded: LoadedModel,
    records: Sequence[Record],
    scenario: str | Scenario,
    methods: Sequence[str],
    out_dir: str | Path | None = None,
    *,
    benign: Sequence[BenignRecord] | None = None,
    base_model: LoadedModel | None = None,
    truth: Circuit | None = None,
    grid: Sequence[float] = MIB_GRID,
    granularities: Sequence[UnitChoice] = ("heads", "neurons", "both"),
    ablations: Sequence[Ablation] = ABLATIONS,
    directions: Sequence[Direction] = DIRECTIONS,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    points: Points = "ranking",
    held_out: Sequence[Record] | None = None,
    held_out_benign: Sequence[BenignRecord] | None = None,
    stability_k: float | None = None,
    batch_size: int = 16,
    settings: Mapping[str, Any] | None = None,
    saved_scores: Mapping[str, Scores] | None = None,
) -> Benchmark:
    """Every method in ``methods`` (registry names, :func:`~safeseek_tl.methods.attribute`, ``units="both"``)
    run once on ``records`` (timed, passes counted), then its faithfulness curves on the behaviour
    prompts (the contrast prompts are the donors) for every granularity it scores.

    ``truth``: a ground-truth circuit, for AUROC. ``method_options``: per method, its options (e.g.
    ``{"eap-ig": {"ig_steps": 10}}``; SafeSeek's: ``SeekConfig`` settings). ``points``: SafeSeek's
    circuits from its score ranking or from a search at each size (:mod:`~safeseek_tl.benchmark_methods`).
    ``held_out``: records whose prompts the circuits are also measured on (alignment: ``held_out_benign``
    the donors). ``stability_k``: circuits at this size over 3 seeds and 2 halves of ``records``
    (:func:`~safeseek_tl.benchmark_stability.stability`). Alignment needs ``benign`` (the donors).
    ``settings``: shown on the HTML page. ``saved_scores``: scores computed before, by name
    (:func:`~safeseek_tl.benchmark_methods.saved_runs`). Written to ``out_dir`` when given.
    """
    behaviour = scenario_of(scenario)
    saved = saved_runs(saved_scores or {}, methods, loaded.shape, granularities)
    sets = {"train": (records, benign)} | ({"held-out": (held_out, held_out_benign)} if held_out is not None else {})
    measures: dict[tuple[str, Ablation], ModelMeasure] = {}
    for prompt_set, (these, donors_of) in sets.items():
        prompts, donors = behaviour.paired_prompts(these, donors_of, f"benchmark ({prompt_set} prompts)")
        metric = task_metric(loaded, behaviour, these[: len(prompts)])
        measures |= {(prompt_set, ablation): ModelMeasure(loaded, prompts, metric, ablation, donors, batch_size) for ablation in ablations}
    setting = Setting(loaded, behaviour, base_model)
    collected = _Collector()
    for name in methods:
        spec = MethodSpec(name, (method_options or {}).get(name, {}), points if name == "safeseek" else "ranking")
        run = run_method(spec, setting, records, benign, granularities, grid)
        stable = stability(spec, setting, records, benign, granularities, stability_k) if stability_k is not None else {}
        collected.add_method(run, measures, grid, directions, truth, stable, stability_k)
    for run in saved:
        collected.add_method(run, measures, grid, directions, truth, {}, stability_k)
    described = {"model": loaded.name, "scenario": behaviour.name, "methods": list(methods), "saved_scores": [run.spec.name for run in saved], "records": len(records), "benign_records": len(benign) if benign is not None else None,
                 "held_out_records": len(held_out) if held_out is not None else None, "grid": list(grid), "safeseek_points": points,
                 "stability_k": stability_k, "ground_truth": truth is not None, **(settings or {})}  # fmt: skip
    result = Benchmark(pd.DataFrame(collected.rows, columns=list(TABLE_COLUMNS)), pd.DataFrame(collected.board), collected.curves, described)
    if out_dir is not None:
        result.save(out_dir)
    return result
