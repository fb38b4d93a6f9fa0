"""The alignment settings that the recorded results of the older scripts ran with.

Session 14 made the alignment default ask for sparse circuits (docs/choices.md, "Sparse alignment
circuits by default"). The scripts whose tables in benchmarks/RESULTS.md were measured before that
start their alignment searches from the settings of sessions 8 to 13 instead (the necessity
objective, logits from 1.0 for every unit, the benign path weighed 1, no size target), so a rerun
measures what their tables say; their own settings still change any of these. The tests whose
hand-worked values assume those settings build them from here too (``tests.helpers.plain_alignment``).
"""

from __future__ import annotations

from typing import Any

from safeseek_tl.seek import SeekConfig

NECESSITY_DEFAULTS: dict[str, Any] = {
    "loss.alignment_objective": "necessity", "masks.init_heads": 1.0, "masks.init_neurons": 1.0, "masks.init_from": "constant",
    "loss.w_main_benign": 1.0, "target.heads": None, "target.neurons": None, "target.exact": True, "target.in_training": False,
}  # fmt: skip


def config_as_recorded(scenario: str, units: str = "both", **settings: Any) -> SeekConfig:
    """``SeekConfig.of(scenario, units, **settings)`` (dotted names), an alignment search starting from
    :data:`NECESSITY_DEFAULTS`."""
    base = NECESSITY_DEFAULTS if scenario == "alignment" else {}
    return SeekConfig.of(scenario, units, **(base | settings))  # type: ignore[arg-type]
