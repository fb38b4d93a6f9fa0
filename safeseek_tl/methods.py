"""The method registry: SafeSeek and every heuristic baseline, run the same way, giving the same :class:`Scores`.

A :class:`Method` is a small value: a name, a runner ``(MethodInputs, **options) -> Attribution``
and what it can do (granularities) and needs (an unaligned base model, benign prompts). Adding a
method = one runner and one entry of :data:`METHODS`. Each runner reads its prompts through the
scenario (:mod:`safeseek_tl.scenarios`):

- ``"backdoor"``: behaviour = the triggered prompts (``backdoor_input``), contrast = the clean
  prompts (``input``) of the same records, so pairs line up;
- ``"alignment"``: behaviour = the harmful prompts (``AlignmentRecord.prompt``), contrast = benign
  prompts (``benign=[BenignRecord, ...]``), paired in order and cut to the shorter list.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from safeseek_tl.ablation import AblationMode, ReferenceActivations
from safeseek_tl.baselines import activation_contrast, activation_patching, attribution_patching, eap_ig, linear_probes, sahara, ships_scores
from safeseek_tl.baselines.direction_selection import refusal_direction_scores
from safeseek_tl.baselines.patching import oriented
from safeseek_tl.data import BenignRecord, Record
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import UNIT_KINDS, UnitChoice, UnitKind
from safeseek_tl.models import LoadedModel
from safeseek_tl.scenarios import Scenario, scenario_of
from safeseek_tl.units import Scores


@dataclass(frozen=True)
class MethodInputs:
    """What a runner gets: the model, the records, the scenario, and the optional extras."""

    loaded: LoadedModel
    records: Sequence[Record]
    scenario: Scenario
    base_model: LoadedModel | None = None
    benign: Sequence[BenignRecord] | None = None
    units: UnitChoice = "heads"

    def behaviour(self) -> list[str]:
        """The prompts that show the behaviour: triggered (backdoor) or harmful (alignment)."""
        return self.scenario.behaviour_prompts(self.records)

    def contrast(self, method: str) -> list[str]:
        """The contrast prompts: the records' clean prompts (backdoor) or the benign prompts (alignment)."""
        return self.scenario.contrast_prompts(self.records, self.benign, method)

    def pairs(self, method: str) -> tuple[list[str], list[str]]:
        """(behaviour, contrast) prompts paired in order, cut to the shorter list (with a warning)."""
        return self.scenario.paired_prompts(self.records, self.benign, method)


@dataclass
class Attribution:
    """A method's scores and what its search put in place of the units it removed.

    ``fill`` is ``None`` for zeros (the baselines, and SafeSeek's default); a SafeSeek search with
    ``ablation="mean"`` or ``"learned"`` gives its fill (:meth:`~safeseek_tl.seek.result.SeekResult.reference`:
    its unit means, or its learned constants), so that its circuit is measured as it was found
    rather than by zeroing it. ``wall_time_s``: how long the
    scoring took (set by :func:`attribute`).
    """

    scores: Scores
    fill: ReferenceActivations | None = None
    wall_time_s: float = float("nan")

    @property
    def ablation(self) -> AblationMode:
        """``"zero"`` or ``"mean"`` (constants: a search's means or learned fill): how this method's circuits are ablated."""
        return "zero" if self.fill is None else "mean"


Runner = Callable[..., Attribution]


@dataclass(frozen=True)
class Method:
    """A registered method: its runner and capabilities.

    ``granularities``: the unit kinds it scores. ``needs_base_model``: it compares the model with
    the same model without the behaviour (M1). ``needs_benign``: in the alignment scenario it
    contrasts harmful with benign prompts. ``takes_units``: it is told which granularities to
    score (the others score all of theirs). ``seeded``: its scores depend on a seed (the
    ``seed`` option; SafeSeek's ``SeekConfig.seed``); the others are deterministic.
    """

    name: str
    run: Runner = field(repr=False)
    granularities: tuple[UnitKind, ...]
    needs_base_model: bool = False
    needs_benign: bool = False
    takes_units: bool = False
    seeded: bool = False
    summary: str = ""


def _safeseek(inputs: MethodInputs, config: Any = None, progress: bool = False, **options: Any) -> Attribution:
    from safeseek_tl.seek import SeekConfig, discover

    if config is not None and options:
        raise InputError(f"safeseek: give either config=SeekConfig.of(...) or its settings ({', '.join(options)}), not both")
    config = config or SeekConfig.of(inputs.scenario.name, inputs.units, **options)
    found = discover(inputs.loaded, inputs.records, config, benign=inputs.benign or (), check=False, progress=progress)
    # circuits are measured with the search's own fill: its means over its training records, or its learned values
    return Attribution(found.scores, found.result.reference())


def _ships(inputs: MethodInputs, **options: Any) -> Attribution:
    return Attribution(ships_scores(inputs.loaded, inputs.behaviour(), **options))


def _sahara(inputs: MethodInputs, **options: Any) -> Attribution:
    return Attribution(sahara(inputs.loaded, inputs.behaviour(), **options))


def _contrast(inputs: MethodInputs, **options: Any) -> Attribution:
    prompts = inputs.behaviour()
    if inputs.base_model is None:
        raise InputError(
            "method 'contrast' needs base_model: the model without the behaviour (M1), e.g. organism:tiny-aligned "
            "for tiny-backdoor or organism:tiny-base for tiny-aligned"
        )
    return Attribution(activation_contrast(inputs.base_model, inputs.loaded, prompts, **options))


def _patching(method: Callable[..., Scores], name: str) -> Runner:
    def run(inputs: MethodInputs, **options: Any) -> Attribution:
        options.setdefault("units", inputs.units)
        return Attribution(oriented(method(inputs.loaded, *inputs.pairs(name), **options)))

    return run


def _probe(inputs: MethodInputs, **options: Any) -> Attribution:
    return Attribution(linear_probes(inputs.loaded, inputs.behaviour(), inputs.contrast("probe"), **options).to_scores(inputs.loaded.shape))


def _random(inputs: MethodInputs, seed: int = 0) -> Attribution:
    """A seeded random ranking of every unit: the floor any method must beat."""
    generator = torch.Generator().manual_seed(seed)
    shape = inputs.loaded.shape
    heads, neurons = (torch.rand(shape.size(kind), generator=generator) for kind in UNIT_KINDS)
    return Attribution(Scores(shape, heads, neurons, method="random", metadata={"seed": seed}))


def _refusal_direction(inputs: MethodInputs, **options: Any) -> Attribution:
    harmful, harmless = inputs.behaviour(), inputs.contrast("refusal-direction")
    return Attribution(refusal_direction_scores(inputs.loaded, harmful, harmless, **options))


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("safeseek", _safeseek, UNIT_KINDS, needs_benign=False, takes_units=True, seeded=True, summary="optimized binary masks (SafeSeek)"),
        Method("ships", _ships, ("heads",), summary="Ships: KL of refusal-token probabilities with a head attenuated"),
        Method("sahara", _sahara, ("heads",), summary="Sahara: greedy search for a head group by Ships score"),
        Method("contrast", _contrast, ("neurons",), needs_base_model=True, summary="activation contrasting against the unaligned model"),
        Method("act-patch", _patching(activation_patching, "act-patch"), UNIT_KINDS, needs_benign=True, takes_units=True, summary="activation patching"),
        Method("attr-patch", _patching(attribution_patching, "attr-patch"), UNIT_KINDS, needs_benign=True, takes_units=True, summary="attribution patching"),
        Method("eap-ig", _patching(eap_ig, "eap-ig"), UNIT_KINDS, needs_benign=True, takes_units=True, summary="EAP-IG (inputs), node level"),
        Method("probe", _probe, UNIT_KINDS, needs_benign=True, seeded=True, summary="linear probes per layer (a layer-level map)"),
        Method("refusal-direction", _refusal_direction, UNIT_KINDS, needs_benign=True, summary="each unit's write onto the refusal direction (Arditi et al.)"),
        Method("random", _random, UNIT_KINDS, seeded=True, summary="a seeded random ranking (the floor)"),
    )
}
"""Every method by name; run them through :func:`run_method` or :func:`attribute`."""


def attribute(
    name: str,
    loaded: LoadedModel,
    records: Sequence[Record],
    scenario: str | Scenario,
    *,
    base_model: LoadedModel | None = None,
    benign: Sequence[BenignRecord] | None = None,
    units: UnitChoice = "heads",
    **options: Any,
) -> Attribution:
    """Run method ``name`` (timed) and return its :class:`Attribution`; see :func:`run_method`."""
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    behaviour = scenario_of(scenario)
    inputs = MethodInputs(loaded, records, behaviour, base_model, benign, units)
    start = time.perf_counter()
    found = METHODS[name].run(inputs, **options)
    found.wall_time_s = time.perf_counter() - start
    found.scores.metadata["scenario"] = behaviour.name
    return found


def run_method(name: str, loaded: LoadedModel, records: Sequence[Record], scenario: str | Scenario, **options: Any) -> Scores:
    """Run method ``name`` (one of :data:`METHODS`) on ``records`` of a scenario ("backdoor" or "alignment").

    Takes :func:`attribute`'s keywords (``base_model``, ``benign``, ``units``); other ``options`` go
    to the method (e.g. ``operator="sc"`` for Ships; for SafeSeek ``config=SeekConfig.of(...)`` or
    its settings, ``schedule={"epochs": 5}``; ``kl_limit=0.2`` for the refusal direction); ``units`` tells the methods that take it which granularities to score; ``benign``
    gives the contrast prompts of the alignment scenario (patching, probes; other methods ignore
    it); ``base_model`` is M1 for ``"contrast"``. Patching scores are oriented so that higher
    moves the metric (default: refusal log-odds) toward its value on the behaviour prompts. The
    scenario is recorded in ``metadata``.
    """
    return attribute(name, loaded, records, scenario, **options).scores
