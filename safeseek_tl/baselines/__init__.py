"""Heuristic baselines, on the same hooks and returning the same :class:`~safeseek_tl.units.Scores`.

- Safety Neurons (Chen et al.): :func:`activation_contrast`, :func:`dynamic_patching` and controls;
- Ships / Sahara (Zhou et al.): :func:`ships_scores`, :func:`generalized_ships`, :func:`sahara`;
- :func:`activation_patching`, :func:`attribution_patching`;
- :func:`linear_probes` (a layer-level map);
- the refusal direction (Arditi et al.): :func:`find_refusal_direction`, :func:`direction_ablated`,
  and the unit ranking of :func:`~safeseek_tl.baselines.direction.refusal_direction_scores`.

:func:`run_baseline` runs any of them by name (:data:`BASELINES`) on the library's records, with
one convention for which prompts carry the behaviour:

- ``"backdoor"``: behaviour = the triggered prompts (``backdoor_input``), contrast = the clean
  prompts (``input``) of the same records, so pairs line up;
- ``"alignment"``: behaviour = the harmful prompts (``AlignmentRecord.prompt``), contrast = benign
  prompts (``benign=[BenignRecord, ...]``), paired in order and cut to the shorter list.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from safeseek_tl.baselines.contrasting import activation_contrast, causal_effect, dynamic_patching, random_like, static_patching
from safeseek_tl.baselines.direction import RefusalDirection, direction_ablated, direction_added, find_refusal_direction, refusal_direction_scores
from safeseek_tl.baselines.patching import activation_patching, attribution_patching, refusal_metric, row_unit_hooks
from safeseek_tl.baselines.probing import ProbeResult, linear_probes
from safeseek_tl.baselines.ships import generalized_ships, head_ablation_hooks, sahara, ships_scores, ships_scores_naive
from safeseek_tl.data import AlignmentRecord, BackdoorRecord, BenignRecord, Record
from safeseek_tl.errors import InputError
from safeseek_tl.models import LoadedModel
from safeseek_tl.units import Scores

SCENARIOS = ("backdoor", "alignment")


@dataclass(frozen=True)
class BaselineInputs:
    """What a baseline runner gets: the model, the records and the scenario's prompt convention."""

    loaded: LoadedModel
    records: Sequence[Record]
    scenario: str
    base_model: LoadedModel | None = None
    benign: Sequence[BenignRecord] | None = None

    def behaviour(self) -> list[str]:
        """The prompts that show the behaviour: triggered (backdoor) or harmful (alignment)."""
        if self.scenario not in SCENARIOS:
            raise InputError(f"scenario must be one of {SCENARIOS}, got {self.scenario!r}")
        if not self.records:
            raise InputError("no records: the baselines need at least one record")
        wanted = BackdoorRecord if self.scenario == "backdoor" else AlignmentRecord
        if not all(isinstance(record, wanted) for record in self.records):
            raise InputError(f"the {self.scenario} scenario needs {wanted.__name__} records")
        return [record.backdoor_input if self.scenario == "backdoor" else record.prompt for record in self.records]

    def contrast(self, name: str) -> list[str]:
        """The contrast prompts: the records' clean prompts (backdoor) or the benign prompts (alignment)."""
        if self.scenario == "backdoor":
            return [record.input for record in self.records]
        if not self.benign:
            raise InputError(f"baseline {name!r} in the alignment scenario needs benign prompts: pass benign=[BenignRecord, ...]")
        if not all(isinstance(record, BenignRecord) for record in self.benign):
            raise InputError("benign must be a list of BenignRecord")
        return [record.prompt for record in self.benign]

    def pairs(self, name: str) -> tuple[list[str], list[str]]:
        """(behaviour, contrast) prompts paired in order, cut to the shorter list (with a warning)."""
        behaviour, contrast = self.behaviour(), self.contrast(name)
        n = min(len(behaviour), len(contrast))
        if n < max(len(behaviour), len(contrast)):
            warnings.warn(f"{name}: {len(behaviour)} behaviour and {len(contrast)} contrast prompts; using the first {n} pairs", stacklevel=4)
        return behaviour[:n], contrast[:n]


def _oriented(scores: Scores) -> Scores:
    """Flip patching scores so that higher always means "moves the metric toward the behaviour"."""
    sign = 1.0 if scores.metadata["metric_clean"] >= scores.metadata["metric_corrupted"] else -1.0
    return replace(
        scores,
        heads=None if scores.heads is None else sign * scores.heads,
        neurons=None if scores.neurons is None else sign * scores.neurons,
        metadata={**scores.metadata, "orientation": sign},
    )


def _contrast(inputs: BaselineInputs, **options: Any) -> Scores:
    prompts = inputs.behaviour()
    if inputs.base_model is None:
        raise InputError(
            "baseline 'contrast' needs base_model: the model without the behaviour (M1), e.g. organism:tiny-aligned "
            "for tiny-backdoor or organism:tiny-base for tiny-aligned"
        )
    return activation_contrast(inputs.base_model, inputs.loaded, prompts, **options)


def _patching(method: Callable[..., Scores], name: str) -> Callable[..., Scores]:
    def run(inputs: BaselineInputs, **options: Any) -> Scores:
        return _oriented(method(inputs.loaded, *inputs.pairs(name), **options))

    return run


def _probe(inputs: BaselineInputs, **options: Any) -> Scores:
    return linear_probes(inputs.loaded, inputs.behaviour(), inputs.contrast("probe"), **options).to_scores(inputs.loaded.shape)


BASELINES: dict[str, Callable[..., Scores]] = {
    "ships": lambda inputs, **options: ships_scores(inputs.loaded, inputs.behaviour(), **options),
    "sahara": lambda inputs, **options: sahara(inputs.loaded, inputs.behaviour(), **options),
    "contrast": _contrast,
    "act-patch": _patching(activation_patching, "act-patch"),
    "attr-patch": _patching(attribution_patching, "attr-patch"),
    "probe": _probe,
    "refusal-direction": lambda inputs, **options: refusal_direction_scores(inputs.loaded, inputs.behaviour(), inputs.contrast("refusal-direction"), **options),
}
"""Runners ``(BaselineInputs, **options) -> Scores`` by name; call them through :func:`run_baseline`."""


def run_baseline(
    name: str,
    loaded: LoadedModel,
    records: Sequence[Record],
    scenario: str,
    *,
    base_model: LoadedModel | None = None,
    benign: Sequence[BenignRecord] | None = None,
    **options: Any,
) -> Scores:
    """Run baseline ``name`` on ``records`` of ``scenario`` ("backdoor" or "alignment").

    ``options`` go to the method (e.g. ``operator="sc"`` for Ships, ``units="neurons"`` for
    patching); ``benign`` gives the contrast prompts of the alignment scenario (patching, probes,
    the refusal direction; other methods ignore it); ``base_model`` is M1 for ``"contrast"``. Patching scores are oriented so
    that higher moves the metric (default: refusal log-odds) toward its value on the behaviour
    prompts. The scenario is recorded in ``metadata``.
    """
    if name not in BASELINES:
        raise InputError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    scores = BASELINES[name](BaselineInputs(loaded, records, scenario, base_model, benign), **options)
    scores.metadata["scenario"] = scenario
    return scores


__all__ = [
    "BASELINES",
    "BaselineInputs",
    "ProbeResult",
    "RefusalDirection",
    "activation_contrast",
    "activation_patching",
    "attribution_patching",
    "causal_effect",
    "direction_ablated",
    "direction_added",
    "dynamic_patching",
    "find_refusal_direction",
    "generalized_ships",
    "head_ablation_hooks",
    "linear_probes",
    "random_like",
    "refusal_metric",
    "row_unit_hooks",
    "run_baseline",
    "sahara",
    "ships_scores",
    "ships_scores_naive",
    "static_patching",
]
