"""Exact path patching of a circuit's edges: the check of :func:`~safeseek_tl.graph.edge_attribution`.

The path ``u -> v`` is patched by changing only what v reads of u: on the base run, a first
forward adds ``scale`` times u's write difference (actual minus counterfactual) to the residual
that v's layer reads and keeps v's activation; a second forward on the base run replaces v's
activation (v alone, every other unit of its layer unchanged) by the kept one, through the
library's one unit intervention. Everything else, including u's other paths, stays at the base.

The effect is ``metric(path patched) - metric(base)``, signed like the edge: on paired prompts the
base is the corrupted run and u's clean write is added; with mean ablation the base is the
prompts' own run and u's write is moved to its mean, so the effect is negated. Edge attribution
is the derivative of this effect in ``scale`` at 0, so with a small ``scale``, ``effect / scale``
equals the attribution; at ``scale=1`` it is the full, exact path patching effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from safeseek_tl.baselines.patching import Metric, refusal_metric
from safeseek_tl.errors import InputError
from safeseek_tl.graph import Batch, Node, circuit_nodes, prepared_batches, write_difference
from safeseek_tl.hooks import intervention_hook
from safeseek_tl.models import LoadedModel
from safeseek_tl.units import Circuit


def _path_patched(loaded: LoadedModel, batch: Batch, source: Node, target: Node, scale: float, metric: Metric) -> Tensor:
    """The metric per row of the base run with the path ``source -> target`` patched."""
    model = loaded.model
    shift = scale * write_difference(model, batch, source) * (-1.0 if batch.base_is_actual else 1.0)
    kept: dict[str, Tensor] = {}

    def add(act: Tensor, hook: Any) -> Tensor:
        return act + shift.to(act.dtype)

    def keep(act: Tensor, hook: Any) -> Tensor:
        kept["act"] = act.detach()
        return act

    with model.hooks(fwd_hooks=[(target.input_hook(), add), (target.act_hook(), keep)]):
        model(batch.ids, attention_mask=batch.mask, logits_to_keep=1)
    only_target = torch.ones(kept["act"].shape[2])
    only_target[target.index] = 0.0
    with model.hooks(fwd_hooks=[(target.act_hook(), intervention_hook(only_target, kept["act"]))]):
        return metric(model(batch.ids, attention_mask=batch.mask, logits_to_keep=1)[:, -1])


@torch.no_grad()
def path_patching(
    loaded: LoadedModel,
    circuit: Circuit,
    clean_prompts: Sequence[str],
    corrupted_prompts: Sequence[str] | None = None,
    *,
    edges: Sequence[tuple[Node, Node]] | None = None,
    metric: Metric | None = None,
    scale: float = 1.0,
    batch_size: int = 8,
) -> dict[tuple[str, str], float]:
    """Exact path patching effect of each edge (default: every edge into a unit of ``circuit``, the
    input's included), averaged over prompts, keyed by (source name, target name).

    Prompts and counterfactual as in :func:`~safeseek_tl.graph.edge_attribution`. Costs two
    forward passes per edge and batch, plus the two (pairs) or one (mean) that prepare the batches.
    """
    if len(circuit) == 0:
        raise InputError("path patching needs a circuit with at least one head or neuron")
    metric = refusal_metric(loaded) if metric is None else metric
    nodes = circuit_nodes(circuit)
    if edges is None:
        edges = [(source, target) for target in nodes[1:-1] for source in nodes[:-1] if target.reads_before(source)]
    for source, target in edges:
        if source not in nodes or target not in nodes[1:-1] or not target.reads_before(source):
            raise InputError(f"path patching: {source.name} -> {target.name} is not an edge into a unit of the circuit")
    totals = dict.fromkeys(((s.name, t.name) for s, t in edges), 0.0)
    for batch in prepared_batches(loaded, circuit, clean_prompts, corrupted_prompts, batch_size):
        base = metric(loaded.model(batch.ids, attention_mask=batch.mask, logits_to_keep=1)[:, -1])
        sign = -1.0 if batch.base_is_actual else 1.0
        for source, target in edges:
            patched = _path_patched(loaded, batch, source, target, scale, metric)
            totals[(source.name, target.name)] += sign * float((patched - base).double().sum())
    return {key: value / len(clean_prompts) for key, value in totals.items()}
