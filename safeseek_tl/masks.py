"""Differentiable unit masks and the hooks that apply them.

A mask multiplies each head's output (``hook_z``, before W_O) and each neuron's activation
(``hook_post``) by a value in [0, 1]. Masks may be shared by the whole batch (``[n_layers, units]``)
or differ per batch row (``[batch, n_layers, units]``), so that several mask paths (the "main"
and "circuit" paths of SafeSeek, say) run in one forward and backward pass.

Mask logits are always float32, whatever the model dtype: the official SafeSeek code keeps them in
bfloat16, where an lr of 1e-2 barely moves a logit near 1.0 (docs/choices.md, "Mask logits in
float32").
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from safeseek_tl.errors import InputError
from safeseek_tl.hooks import UNIT_KINDS, HookList, UnitKind, head_hook, intervention_hook, neuron_hook
from safeseek_tl.units import ModelShape

if TYPE_CHECKING:  # imported for the annotations only: loading it takes seconds
    from transformer_lens.model_bridge import TransformerBridge

MaskKind = Literal["sigmoid", "hard_sigmoid", "hard_concrete"]
MASK_KINDS: tuple[MaskKind, ...] = ("sigmoid", "hard_sigmoid", "hard_concrete")

# Hard-concrete stretch interval and temperature (Louizos et al. 2018, the usual values).
_HC_GAMMA, _HC_ZETA, _HC_BETA = -0.1, 1.1, 2.0 / 3.0

def mask_hooks(
    heads: Float[Tensor, "*rows n_layers n_heads"] | None = None,
    neurons: Float[Tensor, "*rows n_layers d_mlp"] | None = None,
    fill: Mapping[str, Tensor] | None = None,
) -> HookList:
    """Forward hooks that gate every head output / neuron activation by its mask value.

    Each mask is ``[n_layers, units]`` (shared by all rows) or ``[batch, n_layers, units]``
    (one mask per batch row). A masked-off unit becomes 0, or ``fill[kind][layer]`` when given
    (e.g. the unit's mean activation, for mean ablation inside the optimization): the hook
    computes ``fill + m * (act - fill)``. Gradients flow back into the mask tensors.
    """
    hooks: HookList = []
    for kind, values, name_of in (("heads", heads, head_hook), ("neurons", neurons, neuron_hook)):
        if values is None:
            continue
        if values.dim() not in (2, 3):
            raise InputError(f"a mask must be [n_layers, units] or [batch, n_layers, units], got shape {tuple(values.shape)}")
        layer_fill = fill.get(kind) if fill is not None else None
        for layer in range(values.shape[-2]):
            hooks.append((name_of(layer), intervention_hook(values[..., layer, :], None if layer_fill is None else layer_fill[layer])))
    return hooks


@contextmanager
def masked(
    model: TransformerBridge,
    heads: Float[Tensor, "*rows n_layers n_heads"] | None = None,
    neurons: Float[Tensor, "*rows n_layers d_mlp"] | None = None,
    fill: Mapping[str, Tensor] | None = None,
) -> Iterator[Any]:
    """Run ``model`` with unit masks applied; the hooks are removed on exit, also on errors.

    >>> with masked(model, heads=head_mask):  # doctest: +SKIP
    ...     logits = model(tokens)
    """
    with model.hooks(fwd_hooks=mask_hooks(heads, neurons, fill)):
        yield model


class MaskLogits(nn.Module):
    """Learnable float32 mask logits for the heads and/or neurons of one model.

    ``kind`` picks how logits become mask values:

    - ``"sigmoid"``: the soft value sigmoid(a / T);
    - ``"hard_sigmoid"`` (SafeSeek's): a straight-through estimator, exactly 0 or 1 forward,
      the gradient of sigmoid(a / T) backward;
    - ``"hard_concrete"``: Louizos et al.'s stretched, clipped concrete gate, stochastic in
      training and deterministic at evaluation.

    A unit is "kept" when its deterministic mask value is above 0.5, i.e. when a > 0 for
    the sigmoid kinds (the official read-off rule).
    """

    def __init__(
        self,
        shape: ModelShape,
        kinds: tuple[UnitKind, ...] = UNIT_KINDS,
        init: float | Mapping[str, float] = 1.0,
        kind: MaskKind = "hard_sigmoid",
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if kind not in MASK_KINDS:
            raise InputError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
        if not kinds or any(k not in UNIT_KINDS for k in kinds):
            raise InputError(f"kinds must be a non-empty subset of {UNIT_KINDS}, got {kinds!r}")
        if temperature <= 0:
            raise InputError(f"temperature must be positive, got {temperature}")
        self.shape, self.kinds, self.kind, self.temperature = shape, tuple(kinds), kind, temperature
        for unit_kind in UNIT_KINDS:
            value = init if isinstance(init, (int, float)) else init.get(unit_kind, 1.0)
            param = nn.Parameter(torch.full(shape.size(unit_kind), float(value), dtype=torch.float32)) if unit_kind in self.kinds else None
            self.register_parameter(unit_kind, param)

    def logits(self, unit_kind: UnitKind) -> Tensor | None:
        return getattr(self, unit_kind)

    def searched(self) -> dict[UnitKind, Tensor]:
        """The logits of each kind this mask searches (``logits`` of the others is None)."""
        return {unit_kind: getattr(self, unit_kind) for unit_kind in self.kinds}

    def keep_probability(self) -> dict[UnitKind, Tensor]:
        """The soft "unit is on" probability of each unit, used by sparsity terms and as scores."""
        out = {}
        for unit_kind, a in self.searched().items():
            if self.kind == "hard_concrete":
                out[unit_kind] = torch.sigmoid(a - _HC_BETA * math.log(-_HC_GAMMA / _HC_ZETA))
            else:
                out[unit_kind] = torch.sigmoid(a / self.temperature)
        return out

    def values(self, stochastic: bool = False, generator: torch.Generator | None = None) -> dict[UnitKind, Tensor]:
        """Mask values for a forward pass (hard-concrete samples noise when ``stochastic``)."""
        out = {}
        for unit_kind, a in self.searched().items():
            if self.kind == "sigmoid":
                out[unit_kind] = torch.sigmoid(a / self.temperature)
            elif self.kind == "hard_sigmoid":
                soft = torch.sigmoid(a / self.temperature)
                out[unit_kind] = (soft > 0.5).to(soft.dtype) - soft.detach() + soft
            else:
                if stochastic:
                    # Drawn on the generator's own device (SafeSeek's is a CPU one; a CUDA tensor cannot take
                    # it), so the same seed gives the same noise on every device.
                    noise_device = generator.device if generator is not None else a.device
                    u = torch.rand(a.shape, generator=generator, device=noise_device).to(a.device).clamp(1e-6, 1 - 1e-6)
                    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + a) / _HC_BETA)
                else:
                    s = torch.sigmoid(a)
                out[unit_kind] = (s * (_HC_ZETA - _HC_GAMMA) + _HC_GAMMA).clamp(0.0, 1.0)
        return out

    def kept(self) -> dict[UnitKind, Tensor]:
        """Deterministic read-off: which units the mask keeps (value > 0.5)."""
        with torch.no_grad():
            return {unit_kind: value > 0.5 for unit_kind, value in self.values(stochastic=False).items()}
