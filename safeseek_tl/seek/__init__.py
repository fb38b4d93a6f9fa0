"""SafeSeek: find safety circuits by optimizing differentiable binary masks (docs/choices.md).

- :mod:`~safeseek_tl.seek.config`: :class:`SeekConfig`, the settings, grouped by concern
  (:class:`Schedule`, :class:`Masks`, :class:`BackdoorLoss` / :class:`AlignmentLoss`, :class:`SizeTarget`),
  each value checked against its type (:mod:`~safeseek_tl.seek.setting_types`);
- :mod:`~safeseek_tl.seek.objective`: each scenario's mask paths and the loss, all paths in one pass;
- :mod:`~safeseek_tl.seek.trainer`: :class:`SafeSeek`, the training loop, and the search's fill;
- :mod:`~safeseek_tl.seek.size`: a circuit of the size asked for; :mod:`~safeseek_tl.seek.budget`: a time budget;
- :mod:`~safeseek_tl.seek.result`: :class:`SeekResult` and its files;
- :mod:`~safeseek_tl.seek.checking`: whether ablating a circuit switches the behaviour, and pruning;
- :mod:`~safeseek_tl.seek.discovery`: :func:`discover`, the one call (found + pruned + checked),
  and the complete search;
- :mod:`~safeseek_tl.seek.warm`: the mask logits' warm start from attribution patching;
- :mod:`~safeseek_tl.seek.repeats`: :func:`stability`, the same search over seeds and data splits.
"""

from safeseek_tl.errors import NonFiniteLossError
from safeseek_tl.seek.checking import SWITCH_TOKENS, behaviour_switch, full_behaviour, minimal_switching_set, prune_circuit
from safeseek_tl.seek.config import AlignmentLoss, BackdoorLoss, Masks, Schedule, SeekConfig, SizeTarget
from safeseek_tl.seek.discovery import Discovery, discover, discover_complete
from safeseek_tl.seek.objective import MaskPath, SeekObjective, mask_paths
from safeseek_tl.seek.repeats import Stability, stability
from safeseek_tl.seek.result import SeekResult
from safeseek_tl.seek.trainer import SafeSeek, TrainState, search_fill

__all__ = [
    "SWITCH_TOKENS",
    "AlignmentLoss",
    "BackdoorLoss",
    "Discovery",
    "MaskPath",
    "Masks",
    "NonFiniteLossError",
    "SafeSeek",
    "Schedule",
    "SeekConfig",
    "SeekObjective",
    "SeekResult",
    "SizeTarget",
    "Stability",
    "TrainState",
    "behaviour_switch",
    "discover",
    "discover_complete",
    "full_behaviour",
    "mask_paths",
    "minimal_switching_set",
    "prune_circuit",
    "search_fill",
    "stability",
]
