"""Heuristic baselines, on the same hooks and returning the same :class:`~safeseek_tl.units.Scores`.

- Safety Neurons (Chen et al.): :func:`activation_contrast`, :func:`dynamic_patching` and controls;
- Ships / Sahara (Zhou et al.): :func:`ships_scores`, :func:`generalized_ships`, :func:`sahara`;
- :func:`activation_patching`, :func:`attribution_patching`, :func:`eap_ig`;
- :func:`linear_probes` (a layer-level map);
- the refusal direction (Arditi et al.): :func:`find_refusal_direction`, :func:`direction_ablated`,
  and the unit ranking of :func:`~safeseek_tl.baselines.direction_selection.refusal_direction_scores`.

Run any of them by name, like SafeSeek, through the method registry (:mod:`safeseek_tl.methods`).
"""

from __future__ import annotations

from safeseek_tl.baselines.contrasting import activation_contrast, causal_effect, dynamic_patching, random_like, static_patching
from safeseek_tl.baselines.direction import RefusalDirection, direction_ablated, direction_added
from safeseek_tl.baselines.direction_selection import find_refusal_direction, refusal_direction_scores
from safeseek_tl.baselines.patching import activation_patching, attribution_patching, eap_ig, refusal_metric, row_unit_hooks
from safeseek_tl.baselines.probing import ProbeResult, linear_probes
from safeseek_tl.baselines.ships import generalized_ships, head_ablation_hooks, sahara, ships_scores, ships_scores_naive

__all__ = [
    "ProbeResult",
    "RefusalDirection",
    "activation_contrast",
    "activation_patching",
    "attribution_patching",
    "causal_effect",
    "direction_ablated",
    "direction_added",
    "dynamic_patching",
    "eap_ig",
    "find_refusal_direction",
    "generalized_ships",
    "head_ablation_hooks",
    "linear_probes",
    "random_like",
    "refusal_direction_scores",
    "refusal_metric",
    "row_unit_hooks",
    "sahara",
    "ships_scores",
    "ships_scores_naive",
    "static_patching",
]
