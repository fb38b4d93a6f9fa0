"""Fixed ablation of a :class:`~safeseek_tl.units.Circuit`: zero, mean or resample, full or partial.

``ablated(model, circuit)`` removes the circuit (necessity); ``ablated(model, circuit,
keep_only=True)`` removes everything else (sufficiency). ``strength`` in [0, 1] interpolates
between the unit's own activation (0) and the replacement (1), the partial suppression that
surgical attacks on safety units use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from safeseek_tl.errors import InputError
from safeseek_tl.hooks import UNIT_KINDS, Fill, HookList, UnitKind, intervention_hook, unit_hook
from safeseek_tl.units import Circuit, ModelShape

if TYPE_CHECKING:  # imported for the annotations only: loading it takes seconds
    from transformer_lens.model_bridge import TransformerBridge

AblationMode = Literal["zero", "mean", "resample"]
ABLATION_MODES: tuple[AblationMode, ...] = ("zero", "mean", "resample")


@dataclass
class ReferenceActivations:
    """Per-unit reference activations from a dataset, for mean and resample ablation.

    ``means[kind]`` is [n_layers, units(, d_head)] averaged over every non-padding token;
    ``pools[kind]`` is [n_layers, pool_tokens, units(, d_head)], a seeded random sample of
    whole-token activations, from which resample ablation draws a replacement per position.
    """

    means: dict[UnitKind, Tensor]
    pools: dict[UnitKind, Tensor]

    @classmethod
    @torch.no_grad()
    def collect(
        cls,
        model: TransformerBridge,
        batches: Iterable[tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]],
        pool_size: int = 256,
        seed: int = 0,
    ) -> ReferenceActivations:
        """Stream ``(input_ids, attention_mask)`` batches through ``model``; memory stays bounded."""
        n_layers = int(model.cfg.n_layers)
        sums: dict[tuple[str, int], Tensor] = {}
        pools: dict[str, list[list[Tensor]]] = {kind: [[] for _ in range(n_layers)] for kind in UNIT_KINDS}
        generator = torch.Generator().manual_seed(seed)
        n_tokens, n_pooled = 0, 0
        for input_ids, attention_mask in batches:
            valid = attention_mask.bool()
            captured: dict[tuple[str, int], Tensor] = {}

            def record(kind: str, layer: int) -> Callable[..., Tensor]:
                def hook(act: Tensor, hook: Any) -> Tensor:
                    captured[(kind, layer)] = act[valid.to(act.device)].float().cpu()
                    return act

                return hook

            fwd = [(unit_hook(kind, layer), record(kind, layer)) for kind in UNIT_KINDS for layer in range(n_layers)]
            with model.hooks(fwd_hooks=fwd):
                model(input_ids.to(model.cfg.device), attention_mask=attention_mask.to(model.cfg.device))
            batch_tokens = int(valid.sum())
            take = torch.randperm(batch_tokens, generator=generator)[: max(0, pool_size - n_pooled)]
            for (kind, layer), acts in captured.items():
                total = acts.sum(0)
                sums[kind, layer] = sums[kind, layer] + total if (kind, layer) in sums else total
                pools[kind][layer].append(acts[take])
            n_tokens += batch_tokens
            n_pooled += len(take)
        if n_tokens == 0:
            raise InputError("reference activations need at least one non-padding token")
        return cls(
            means={kind: torch.stack([sums[kind, layer] for layer in range(n_layers)]) / n_tokens for kind in UNIT_KINDS},
            pools={kind: torch.stack([torch.cat(chunks) for chunks in pools[kind]]) for kind in UNIT_KINDS},
        )


def _resample_fill(pool: Tensor, generator: torch.Generator) -> Callable[[Tensor], Tensor]:
    """A fill drawing, for every (row, position), one whole token's activations from ``pool``."""
    return lambda act: pool[torch.randint(pool.shape[0], act.shape[:2], generator=generator)]


def ablation_hooks(
    circuit: Circuit,
    mode: AblationMode = "zero",
    reference: ReferenceActivations | None = None,
    keep_only: bool = False,
    strength: float = 1.0,
    seed: int = 0,
) -> HookList:
    """The forward hooks that :func:`ablated` installs (exposed for composing with other hooks)."""
    if mode not in ABLATION_MODES:
        raise InputError(f"ablation mode must be one of {ABLATION_MODES}, got {mode!r}")
    if mode != "zero" and reference is None:
        raise InputError(f"{mode} ablation needs reference activations (ReferenceActivations.collect)")
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"ablation strength must be in [0, 1], got {strength}")
    target = circuit.complement() if keep_only else circuit
    generator = torch.Generator().manual_seed(seed)
    hooks = []
    for kind in UNIT_KINDS:
        selection = target.get(kind)
        for layer in range(circuit.shape.n_layers):
            if not selection[layer].any():
                continue
            fill: Fill = None  # zero ablation; the other modes have a reference (checked above)
            if mode == "mean" and reference is not None:
                fill = reference.means[kind][layer]
            elif mode == "resample" and reference is not None:
                fill = _resample_fill(reference.pools[kind][layer], generator)
            keep = 1.0 - strength * selection[layer].float()  # 1 - strength on the circuit, 1 elsewhere
            hooks.append((unit_hook(kind, layer), intervention_hook(keep, fill)))
    return hooks


@contextmanager
def ablated(
    model: TransformerBridge,
    circuit: Circuit,
    mode: AblationMode = "zero",
    reference: ReferenceActivations | None = None,
    keep_only: bool = False,
    strength: float = 1.0,
    seed: int = 0,
) -> Iterator[Any]:
    """Run ``model`` with ``circuit`` ablated (or, with ``keep_only``, everything but it).

    The hooks are removed when the block exits, also on errors.

    >>> with ablated(model, circuit, mode="mean", reference=ref):  # doctest: +SKIP
    ...     logits = model(tokens)
    """
    ModelShape.of(model).check_compatible(circuit.shape, "the circuit")
    with model.hooks(fwd_hooks=ablation_hooks(circuit, mode, reference, keep_only, strength, seed)):
        yield model
