"""A circuit of the size asked for: the multiplier that steers the search to it, and the exact cut.

The sparsity weight of a granularity with a target (the settings ``target.heads`` /
``target.neurons``, :class:`~safeseek_tl.seek.config.SizeTarget`) gets a multiplier ``λ ≥ 0`` that rises while the circuit (the units the main
mask switches off) is larger than the target and falls while it is smaller (dual ascent on the
size constraint, as Edge Pruning steers its sparsity). The circuit read off is then exactly the
target's number of units with the lowest mask logits (the most surely off), or, with
``target.exact`` off, at most that many: the units the mask itself switches off, cut to the target
when there are more (:func:`cut_to_target`).
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor


def top_units(
    logits: Float[Tensor, "layers n"], k: int, held: Bool[Tensor, "layers n"] | None = None
) -> Bool[Tensor, "layers n"]:
    """The ``k`` units with the lowest logits, ties by index (layer by layer); ``held`` units are never chosen."""
    flat = logits.detach().flatten().float()
    if held is not None:
        flat = torch.where(held.flatten().to(flat.device), torch.full_like(flat, torch.inf), flat)
        k = min(k, int((~held).sum()))
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[torch.sort(flat, stable=True).indices[:k]] = True
    return chosen.reshape(logits.shape)


def cut_to_target(
    kept: Bool[Tensor, "layers n"], logits: Float[Tensor, "layers n"], k: int, held: Bool[Tensor, "layers n"] | None = None, exact: bool = True
) -> Bool[Tensor, "layers n"]:
    """Which units a circuit read off at a size target of ``k`` units keeps, from the mask's own
    read-off ``kept`` and its ``logits``: ``exact``, everything but the ``k`` lowest logits (Edge
    Pruning's cut); otherwise only the units the mask switches off are candidates, so a smaller
    circuit stays smaller and the mask is not made to take units it kept on."""
    off = top_units(logits, k, held)
    return ~off if exact else ~off | kept


def step_multiplier(multiplier: float, size: int, target: int, rate: float) -> float:
    """One ascent step of ``λ``: by ``rate`` times the size's excess over the target, relative to the
    target and clipped to [-1, 1] (so that it rises and falls at the same pace), never below 0."""
    excess = (size - target) / max(target, 1)
    return max(0.0, multiplier + rate * max(-1.0, min(1.0, excess)))
