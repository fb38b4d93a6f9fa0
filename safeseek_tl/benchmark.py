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
import torch
from jaxtyping import Float
from torch import Tensor

from safeseek_tl import runs
from safeseek_tl._io import atomic_path
from safeseek_tl.ablation import ReferenceActivations
from safeseek_tl.baselines.patching import pair_batches, refusal_metric
from safeseek_tl.data import BackdoorRecord, BenignRecord, Record
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import UNIT_KINDS, Fill, HookList, UnitChoice, intervention_hook, unit_hook, unit_kinds
from safeseek_tl.methods import attribute
from safeseek_tl.models import LoadedModel
from safeseek_tl.plots import faithfulness_plot
from safeseek_tl.scenarios import Scenario, scenario_of
from safeseek_tl.units import Circuit, ModelShape, Scores

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


def circuit_size(n_units: int, k: float) -> int:
    """Units in ``C_k``: ``k``% of ``n_units``, rounded down, at least one."""
    if not 0 < k <= 100:
        raise InputError(f"grid values are percentages in (0, 100], got {k}")
    return max(1, math.floor(k * n_units / 100 + 1e-9))  # the epsilon absorbs 0.1 * 80 = 7.999...


def top_percent(scores: Scores, granularity: UnitChoice, k: float) -> Circuit:
    """``C_k``: the top ``k``% of each of ``granularity``'s unit kinds (ties by unit index)."""
    counts = {}
    for kind in unit_kinds(granularity):
        values = scores.get(kind)
        if values is None:
            raise InputError(f"{scores.method or 'these'} scores have no {kind}; benchmark them on another granularity")
        counts[kind] = circuit_size(values.numel(), k)
    return Circuit.top_k(scores, **counts)


def all_units(shape: ModelShape, granularity: UnitChoice) -> Circuit:
    """Every unit of ``granularity`` (the set "empty" ablates)."""
    circuit = Circuit.empty(shape)
    for kind in unit_kinds(granularity):
        circuit.get(kind)[:] = True
    return circuit


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


def faithfulness_curve(measure: Measure, scores: Scores, grid: Sequence[float], granularity: UnitChoice, direction: Direction) -> Curve:
    """The curve of ``scores`` given ``measure`` (``m`` with a set of units ablated); see the module docs."""
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if not grid or list(grid) != sorted(grid):
        raise InputError(f"the grid must be percentages in increasing order, got {list(grid)}")
    universe = all_units(scores.shape, granularity)
    m_full, m_empty = measure(Circuit.empty(scores.shape)), measure(universe)
    if m_full == m_empty:
        raise InputError(f"m(full) equals m(empty) ({m_full}) for {granularity}: ablating every unit does not move the metric, so f is undefined")
    sizes, values = [], []
    for k in grid:
        circuit = top_percent(scores, granularity, k)
        sizes.append(len(circuit))
        if direction == "kept":
            values.append((measure(universe - circuit) - m_empty) / (m_full - m_empty))
        else:
            values.append((m_full - measure(circuit)) / (m_full - m_empty))
    return Curve(granularity, direction, tuple(grid), sizes, values, m_full, m_empty, n_units=len(universe))


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


@dataclass
class Benchmark:
    """A benchmark's tidy table, its leaderboard and its curves.

    ``table``: one row per quantity: ``quantity`` is ``"faithfulness"`` (at ``k``), ``"cpr"`` and
    ``"cmd"`` (per method, granularity, ablation, direction), ``"auroc"`` (per method and
    granularity) or ``"wall_time_s"`` (per method); other columns are empty where they do not apply.
    ``leaderboard``: one row per method, granularity, ablation and direction (with the curve's
    ``m_full`` and ``m_empty``, the two ends its values are scaled between).
    """

    table: pd.DataFrame
    leaderboard: pd.DataFrame
    curves: list[tuple[str, Curve]]

    def save(self, out_dir: str | Path) -> None:
        """``benchmark.csv``, ``leaderboard.csv`` and one plotly figure (JSON) per granularity, ablation and direction."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in ((runs.BENCHMARK_CSV, self.table), (runs.LEADERBOARD_CSV, self.leaderboard)):
            with atomic_path(out / name) as tmp:
                frame.to_csv(tmp, index=False)
        curves = self.table[self.table["quantity"] == "faithfulness"]
        for (granularity, ablation, direction), part in curves.groupby(["granularity", "ablation", "direction"]):
            figure = faithfulness_plot(part, title=f"{direction}: {granularity}, {ablation} ablation")
            with atomic_path(out / f"curves_{granularity}_{ablation}_{direction}.json") as tmp:
                tmp.write_text(figure.to_json())


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
    batch_size: int = 16,
) -> Benchmark:
    """Every method in ``methods`` (registry names, :func:`~safeseek_tl.methods.attribute`, with
    ``units="both"``) scored once on ``records``, then its faithfulness curves on the behaviour
    prompts (the contrast prompts are the donors) for every granularity it scores.

    ``truth``: a ground-truth circuit, for AUROC. ``method_options``: per method, its options
    (e.g. ``{"eap-ig": {"ig_steps": 10}}``). SafeSeek enters through its score ranking. The alignment
    scenario needs ``benign`` prompts (the donors). Written to ``out_dir`` when given (:meth:`~safeseek_tl.benchmark.Benchmark.save`).
    """
    behaviour = scenario_of(scenario)
    prompts, donors = behaviour.paired_prompts(records, benign, "benchmark")
    metric = task_metric(loaded, behaviour, records[: len(prompts)])
    measures = {ablation: ModelMeasure(loaded, prompts, metric, ablation, donors, batch_size) for ablation in ablations}
    rows: list[dict[str, Any]] = []
    board: list[dict[str, Any]] = []
    curves: list[tuple[str, Curve]] = []
    for name in methods:
        options = dict((method_options or {}).get(name, {}))
        found = attribute(name, loaded, records, behaviour, base_model=base_model, benign=benign, units="both", **options)
        rows.append({"method": name, "quantity": "wall_time_s", "value": found.wall_time_s})
        for granularity in granularities:
            if any(found.scores.get(kind) is None for kind in unit_kinds(granularity)):
                continue  # e.g. a head-only method has no neuron curve
            area = auroc(found.scores, truth, granularity) if truth is not None else math.nan
            rows.append({"method": name, "granularity": granularity, "quantity": "auroc", "value": area})
            for ablation in ablations:
                for direction in directions:
                    curve = faithfulness_curve(measures[ablation], found.scores, grid, granularity, direction)
                    curve.ablation = ablation
                    curves.append((name, curve))
                    where = {"method": name, "granularity": granularity, "ablation": ablation, "direction": direction}
                    rows += [{**where, "k": k, "quantity": "faithfulness", "value": v} for k, v in zip(grid, curve.values)]
                    rows += [{**where, "quantity": q, "value": getattr(curve, q)} for q in ("cpr", "cmd")]
                    board.append({**where, "cpr": curve.cpr, "cmd": curve.cmd, "auroc": area, "wall_time_s": found.wall_time_s, "m_full": curve.m_full, "m_empty": curve.m_empty})
    columns = ["method", "granularity", "ablation", "direction", "k", "quantity", "value"]
    result = Benchmark(pd.DataFrame(rows, columns=columns), pd.DataFrame(board), curves)
    if out_dir is not None:
        result.save(out_dir)
    return result
