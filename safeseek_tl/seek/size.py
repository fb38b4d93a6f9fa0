"""A circuit of the size asked for: the multiplier that steers the search to it, and the exact cut.

The sparsity weight of a granularity with a target (the settings ``target.heads`` /
``target.neurons``, :class:`~safeseek_tl.seek.config.SizeTarget`) gets a multiplier ``λ ≥ 0`` that rises while the circuit (the units the main
mask switches off) is larger than the target and falls while it is smaller (dual ascent on the
size constraint, as Edge Pruning steers its sparsity). The circuit read off is then exactly the
target's number of units with the lowest mask logits (the most surely off).
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


def step_multiplier(multiplier: float, size: int, target: int, rate: float) -> float:
    """One ascent step of ``λ``: by ``rate`` times the size's excess over the target, relative to the
    target and clipped to [-1, 1] (so that it rises and falls at the same pace), never below 0."""
    excess = (size - target) / max(target, 1)
    return max(0.0, multiplier + rate * max(-1.0, min(1.0, excess)))
