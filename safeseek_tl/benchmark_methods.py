"""How the benchmark runs a method: its circuit ``C_k`` at each size, its wall time and the model passes it took.

Every registry method gives a score ranking; ``C_k`` is its top ``k``% (:func:`top_percent`).
SafeSeek can instead give, at each size, the circuit of a search asked for exactly that many units
(``points="search"``: ``SeekConfig``'s size targets, a Lagrange multiplier on the sparsity weight);
its ranking then (for AUROC) is the share of the searched sizes whose circuit holds each unit.

Passes are counted by a forward hook on the embedding hook point of every model the method uses
(the model, and the base model for activation contrasting): each forward call through a model runs
it once, whatever the batch, the prompt length, or the hooks the method adds and resets. A
generation of ``n`` tokens is ``n`` calls. Backward passes are not counted (see docs/benchmark.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from safeseek_tl.data import BenignRecord, Record
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import UNIT_KINDS, UnitChoice, UnitKind, unit_kinds
from safeseek_tl.methods import METHODS, attribute
from safeseek_tl.models import LoadedModel
from safeseek_tl.scenarios import Scenario
from safeseek_tl.units import Circuit, ModelShape, Scores

if TYPE_CHECKING:  # imported for the annotations only: the seek package pulls in the trainer
    from safeseek_tl.seek import SeekConfig

Points = Literal["ranking", "search", "saved"]
POINTS: tuple[Points, ...] = ("ranking", "search")
"""What ``--points`` chooses among for SafeSeek; ``"saved"`` marks scores computed before the benchmark
(:func:`saved_runs`: a model too slow to search inside the benchmark)."""


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


def unit_count(shape: ModelShape, kind: UnitKind) -> int:
    """How many ``kind`` units the model has."""
    layers, per_layer = shape.size(kind)
    return layers * per_layer


@dataclass
class Passes:
    """Forward calls through the watched models (``calls``) and the prompt rows they carried (``rows``)."""

    calls: int = 0
    rows: int = 0

    def __iadd__(self, other: Passes) -> Passes:
        self.calls += other.calls
        self.rows += other.rows
        return self


@contextmanager
def counting_passes(*models: LoadedModel | None) -> Iterator[Passes]:
    """Count every forward call of ``models`` (``None`` skipped, a model given twice counted once) while inside."""
    passes = Passes()

    def count(module: torch.nn.Module, inputs: Any, output: Tensor) -> None:
        passes.calls += 1
        passes.rows += output.shape[0]

    # a plain torch hook, not a TransformerLens one: methods that reset their hooks leave it in place
    watched = {id(m): m for m in models if m is not None}
    handles = [m.model.hook_embed.register_forward_hook(count) for m in watched.values()]
    try:
        yield passes
    finally:
        for handle in handles:
            handle.remove()


def seek_config(scenario: Scenario, units: UnitChoice, options: Mapping[str, Any], *, seed: int | None = None,
                targets: Mapping[UnitKind, int] | None = None) -> SeekConfig:
    """The benchmark's one construction of a :class:`~safeseek_tl.seek.SeekConfig`: the user's SafeSeek
    options (settings by dotted name, e.g. ``{"schedule.epochs": 5}``, or ``config=``) at granularity
    ``units``, with the seed and size targets when given (a kind without a target has none; a
    target is exact: the benchmark measures circuits of the sizes it asks for). A ``config=`` keeps
    its settings; a granularity it did not search takes the defaults' target at ``units``."""
    from safeseek_tl.seek import SeekConfig

    fields: dict[str, Any] = {}
    if seed is not None:
        fields["schedule.seed"] = seed
    if targets is not None:
        fields |= {f"target.{kind}": targets.get(kind) for kind in UNIT_KINDS} | {"target.exact": True}
    if "config" in options:
        if len(options) > 1:
            raise InputError(f"safeseek options: give either config=SeekConfig.of(...) or its settings ({', '.join(k for k in options if k != 'config')}), not both")
        given: SeekConfig = options["config"]
        # its settings keep their values at the new granularity, but a kind not searched has no
        # target, and a kind it did not search takes the defaults' target at the new granularity
        unsearched_targets = {f"target.{kind}" for kind in UNIT_KINDS if kind not in given.kinds}
        settings = {name: value for name, value in given.dotted().items() if "." in name and name not in unsearched_targets}
        settings |= {f"target.{kind}": None for kind in UNIT_KINDS if kind not in unit_kinds(units)}
        return SeekConfig.of(given.scenario, units, **{**settings, **fields})
    return SeekConfig.of(scenario.name, units, **{**options, **fields})


@dataclass(frozen=True)
class MethodSpec:
    """A method as the benchmark runs it: its name, options and (SafeSeek) where its points come from."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    points: Points = "ranking"

    def __post_init__(self) -> None:
        if self.points == "saved":  # any name: it labels a file, not a registry method
            return
        if self.name not in METHODS:
            raise InputError(f"unknown method {self.name!r}; choose one of {', '.join(METHODS)}")
        if self.points not in POINTS:
            raise InputError(f"points must be one of {POINTS}, got {self.points!r}")
        if self.points == "search" and self.name != "safeseek":
            raise InputError(f"points='search' is SafeSeek's (a search at each size); {self.name} gives a ranking")

    @property
    def seeded(self) -> bool:
        return METHODS[self.name].seeded


@dataclass(frozen=True)
class Setting:
    """What every run of a benchmark shares: the model, the scenario and the optional extras."""

    loaded: LoadedModel
    scenario: Scenario
    base_model: LoadedModel | None = None


@dataclass
class MethodRun:
    """One run of a method: scores per granularity, the searched circuits (``(granularity, k)``), cost
    (``passes`` ``None``: not counted, for scores computed before the benchmark)."""

    spec: MethodSpec
    scores: dict[UnitChoice, Scores]
    wall_time_s: float
    passes: Passes | None
    searched: dict[tuple[UnitChoice, float], Circuit] = field(default_factory=dict)

    def circuit(self, granularity: UnitChoice, k: float) -> Circuit:
        """``C_k`` of ``granularity``: the search's circuit at ``k``, else the ranking's top ``k``%."""
        found = self.searched.get((granularity, k))
        return found if found is not None else top_percent(self.scores[granularity], granularity, k)


def run_method(spec: MethodSpec, setting: Setting, records: Sequence[Record], benign: Sequence[BenignRecord] | None,
               granularities: Sequence[UnitChoice], grid: Sequence[float], seed: int | None = None) -> MethodRun:
    """Run ``spec`` on ``records`` (timed, passes counted) for the granularities it scores.

    ``seed``: passed to a seeded method (ignored by the deterministic ones). With
    ``points="search"``, one SafeSeek search per granularity and distinct size of ``grid`` below all units.
    """
    options = dict(spec.options)
    if seed is not None and spec.seeded and spec.name != "safeseek":
        options["seed"] = seed
    if spec.name == "safeseek":
        options = {"config": seek_config(setting.scenario, "both", options, seed=seed)} if spec.points == "ranking" else options
    if spec.points == "search":
        return _searches(spec, setting, records, benign, granularities, grid, seed)
    with counting_passes(setting.loaded, setting.base_model) as passes:
        found = attribute(spec.name, setting.loaded, records, setting.scenario, base_model=setting.base_model, benign=benign, units="both", **options)
    scored = {g: found.scores for g in granularities if all(found.scores.get(kind) is not None for kind in unit_kinds(g))}
    return MethodRun(spec, scored, found.wall_time_s, passes)


def saved_runs(saved: Mapping[str, Scores], methods: Sequence[str], shape: ModelShape, granularities: Sequence[UnitChoice]) -> list[MethodRun]:
    """Scores computed before the benchmark (e.g. a ``safeseek discover`` run's ``scores.safetensors``),
    each as the method of its name, on the granularities it covers; its cost is the metadata's
    ``wall_time_s`` when it has one, else unknown (NaN), and its passes are not counted."""
    runs = []
    for name, scores in saved.items():
        if name in methods:
            raise InputError(f"the saved scores {name!r} have the name of a method run here; name them otherwise (e.g. {name}-saved)")
        shape.check_compatible(scores.shape, f"the saved scores {name!r}")
        covered = {g: scores for g in granularities if all(scores.get(kind) is not None for kind in unit_kinds(g))}
        if not covered:
            raise InputError(f"the saved scores {name!r} cover {', '.join(scores.kinds)}, none of the granularities asked for ({', '.join(granularities)})")
        runs.append(MethodRun(MethodSpec(name, points="saved"), covered, float(scores.metadata.get("wall_time_s", math.nan)), None))
    return runs


def _searches(spec: MethodSpec, setting: Setting, records: Sequence[Record], benign: Sequence[BenignRecord] | None,
              granularities: Sequence[UnitChoice], grid: Sequence[float], seed: int | None) -> MethodRun:
    """SafeSeek's circuit at each size from a search with that size as its target; sizes that round to
    the same unit counts share one search, and all units need none."""
    from safeseek_tl.seek import discover

    shape = setting.loaded.shape
    spent = Passes()
    run = MethodRun(spec, {}, 0.0, spent)
    for granularity in granularities:
        found: dict[tuple[int, ...], Circuit] = {}
        for k in grid:
            targets = {kind: circuit_size(unit_count(shape, kind), k) for kind in unit_kinds(granularity)}
            key = tuple(targets.values())
            if key not in found and all(count == unit_count(shape, kind) for kind, count in targets.items()):
                found[key] = all_units(shape, granularity)
            elif key not in found:
                config = seek_config(setting.scenario, granularity, spec.options, seed=seed, targets=targets)
                start = time.perf_counter()
                with counting_passes(setting.loaded) as passes:
                    found[key] = discover(setting.loaded, records, config, benign=benign or (), check=False, progress=False).circuit
                run.wall_time_s += time.perf_counter() - start
                spent += passes
            run.searched[(granularity, k)] = found[key]
        run.scores[granularity] = membership_scores([run.searched[(granularity, k)] for k in grid], granularity)
    return run


def membership_scores(circuits: Sequence[Circuit], granularity: UnitChoice) -> Scores:
    """Each unit's share of ``circuits`` that hold it: a ranking from searches at several sizes
    (a unit of the smallest circuits, if they nest, ranks first)."""
    if not circuits:
        raise InputError("membership scores need at least one circuit")
    shape = circuits[0].shape
    kinds = unit_kinds(granularity)
    shares = {kind: torch.stack([c.get(kind).float() for c in circuits]).mean(0) for kind in kinds}
    return Scores(shape, shares.get("heads"), shares.get("neurons"), method="safeseek", metadata={"points": "search", "searches": len(circuits)})
