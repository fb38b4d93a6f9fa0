"""A warm start of the mask logits from attribution-patching ranks (``masks.init_from="attr-patch"``,
or ``"auto"``, the alignment default, when benign records are given: :func:`starts_warm`).

Attribution patching (registry method ``"attr-patch"``, three passes) ranks every unit by how much
it moves the refusal metric toward the behaviour. Each granularity's units, sorted by that score
(highest first, ties by index), get the logit

- ``-init`` for the first ``k`` (``k``: the granularity's size target, 0 without one): they start
  switched off, i.e. in the circuit;
- ``init * (r - k + 1) / (n - k)`` for the others, ``r`` their 0-based rank among ``n`` units: the
  next-ranked unit starts just above the threshold (0), the lowest-ranked at ``init`` (the
  constant start), so the units attribution patching ranks high need the fewest steps to switch off.

``init`` is ``init_heads``/``init_neurons`` (0.1 by the alignment default).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from safeseek_tl.baselines.patching import attribution_patching, oriented
from safeseek_tl.data import BenignRecord, Record
from safeseek_tl.hooks import UnitKind
from safeseek_tl.models import LoadedModel
from safeseek_tl.scenarios import scenario_of
from safeseek_tl.seek.config import SeekConfig
from safeseek_tl.seek.objective import SeekObjective


def rank_logits(scores: Float[Tensor, "layers n"], init: float, top: int) -> Float[Tensor, "layers n"]:
    """The starting logits of one granularity from its scores (the mapping of the module docstring)."""
    flat = scores.detach().flatten().double()
    n = flat.numel()
    order = torch.sort(-flat, stable=True).indices  # highest score first, ties by index
    rank = torch.empty(n, dtype=torch.float64)
    rank[order] = torch.arange(n, dtype=torch.float64)
    rest = init * (rank - top + 1) / max(n - top, 1)
    logits = torch.where(rank < top, torch.full_like(rank, -init), rest)
    return logits.float().reshape(scores.shape)


def starts_warm(config: SeekConfig, benign_records: Sequence[BenignRecord]) -> bool:
    """Whether the search's mask logits start from attribution patching: ``masks.init_from="attr-patch"``,
    or ``"auto"`` where the scenario can pair its prompts (the alignment scenario contrasts harmful
    prompts with ``benign_records``; without them it starts constant)."""
    if config.masks.init_from == "auto":
        return scenario_of(config.scenario).contrast_field is not None or bool(benign_records)
    return config.masks.init_from == "attr-patch"


def warm_logits(loaded: LoadedModel, config: SeekConfig, records: Sequence[Record], benign_records: Sequence[BenignRecord] = ()) -> dict[UnitKind, Tensor]:
    """Each searched granularity's starting logits from attribution patching on ``records`` (the
    alignment scenario contrasts them with ``benign_records``, which it then needs)."""
    # the first benign record pairs with the first harmful one, and so on; the rest are not needed
    clean, corrupted = scenario_of(config.scenario).paired_prompts(records, list(benign_records)[: len(records)] or None, "attr-patch")
    scores = oriented(attribution_patching(loaded, clean, corrupted, units=config.units, progress=False))  # as the registry's "attr-patch" scores
    init = {"heads": config.masks.init_heads, "neurons": config.masks.init_neurons}
    shape = loaded.shape
    out = {}
    for kind in config.kinds:
        top = config.target.count(kind, shape.size(kind)[0] * shape.size(kind)[1]) or 0
        out[kind] = rank_logits(scores.require(kind), init[kind], top)
    return out


def warm_start(objective: SeekObjective, logits: dict[UnitKind, Tensor]) -> None:
    """Put ``logits`` into the main mask of ``objective`` (before the optimizer's first step)."""
    with torch.no_grad():
        for kind, value in logits.items():
            objective.main.searched()[kind].copy_(value.to(objective.device))
