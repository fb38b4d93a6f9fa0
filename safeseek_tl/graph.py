"""Edges between the units of a circuit: how much each unit's input, and through it the metric,
depends on what an earlier unit writes into the residual stream.

Nodes are the circuit's heads and neurons, plus ``input`` (the token embeddings) and ``metric``.
The edge ``u -> v`` is estimated as edge attribution patching does (Syed et al., "Attribution
Patching Outperforms Automated Circuit Discovery"): ``sum over prompts and positions of
g_v . (write_u(actual) - write_u(counterfactual))``, averaged over prompts, where

- ``write_u`` is what u adds to the residual stream: a head's ``z_h @ W_O[h]``, a neuron's
  ``post_i * W_out[i]``, the input's token embedding;
- ``g_v`` is the gradient of the metric with respect to v's input residual, *through v only*: the
  full backward gives ``d metric / d act_v``, and one local backward through v's own layer (from
  ``act_v`` to the input of its LayerNorm, ``ln1.hook_in`` for heads, ``ln2.hook_in`` for neurons)
  turns it into the gradient with respect to the residual that v reads (for a head: through its
  query, key, value and attention pattern). So two heads of one layer get different edges.

The counterfactual is either paired prompts (``clean`` = actual, ``corrupted`` = counterfactual;
the gradient is taken on the corrupted run, as :func:`~safeseek_tl.baselines.patching.attribution_patching`
does, so a unit's edge into ``metric`` is its attribution patching score), or, without corrupted
prompts, each unit's mean over the prompts' tokens (mean ablation; gradient on the prompts' own
run). A positive edge means u's actual write, read by v, raises the metric.

Cost per batch: the states (a clean and a corrupted forward for pairs, one forward for means),
then one forward and backward of the base run, plus one local backward per unit through that
unit's layer only. :func:`~safeseek_tl.graph_paths.path_patching` computes the same
edges exactly, two forward passes per edge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from safeseek_tl.baselines.patching import Metric, pair_batches, refusal_metric
from safeseek_tl.data import batch_slices, tokenize_prompts, trim_padding
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import EMBED_HOOK, head_hook, neuron_hook, unit_input_hook
from safeseek_tl.models import LoadedModel
from safeseek_tl.units import Circuit

NodeKind = Literal["input", "head", "neuron", "metric"]
SCHEMA = "safeseek-graph/1"


@dataclass(frozen=True)
class Node:
    """One node of the graph. ``input`` has layer -1, ``metric`` layer n_layers; both have index -1."""

    kind: NodeKind
    layer: int
    index: int = -1

    @property
    def name(self) -> str:
        """``input``, ``metric``, ``L1H3`` (head 3 of layer 1) or ``L2N79`` (neuron 79 of layer 2)."""
        if self.kind in ("input", "metric"):
            return self.kind
        return f"L{self.layer}{'H' if self.kind == 'head' else 'N'}{self.index}"

    @property
    def stage(self) -> float:
        """Order in the residual stream: the input, then per layer its heads, then its neurons."""
        return self.layer + (0.5 if self.kind in ("neuron", "metric") else 0.0)

    def reads_before(self, other: Node) -> bool:
        """Whether ``other`` can write into what this node reads (an edge ``other -> self`` exists)."""
        # the metric reads the units only (the direct path from the embeddings is not a circuit edge)
        writes = other.kind not in ("metric", "input") if self.kind == "metric" else other.kind != "metric"
        return writes and self.kind != "input" and other.stage < self.stage

    def input_hook(self) -> str:
        """The hook point of the residual this unit reads, before its LayerNorm."""
        return unit_input_hook("heads" if self.kind == "head" else "neurons", self.layer)

    def act_hook(self) -> str:
        """The hook point that carries this unit's activation."""
        return head_hook(self.layer) if self.kind == "head" else neuron_hook(self.layer)


def circuit_nodes(circuit: Circuit) -> list[Node]:
    """``input``, the circuit's units in residual-stream order, then ``metric``."""
    units = [Node("head", layer, index) for layer, index in circuit.head_list]
    units += [Node("neuron", layer, index) for layer, index in circuit.neuron_list]
    units.sort(key=lambda node: (node.stage, node.index))
    return [Node("input", -1), *units, Node("metric", circuit.shape.n_layers)]


@dataclass
class CircuitGraph:
    """Nodes and edge weights. ``weights[i, j]`` is the edge ``nodes[i] -> nodes[j]`` (0 where no edge
    can exist: ``allowed`` is False). ``per_position[i, j, p]`` (when asked for) splits it over
    residual positions counted from the end (``p = -1`` is the last token). ``roles``: node name ->
    what the unit does on the prompts (plain text, not escaped). ``metadata``: model, method,
    metric, counterfactual, prompts, passes."""

    nodes: list[Node]
    weights: Float[Tensor, "source target"]
    per_position: Float[Tensor, "source target pos"] | None = None
    roles: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def allowed(self) -> Tensor:
        """[source, target] bool: which edges can exist (the source writes before the target reads)."""
        return torch.tensor([[target.reads_before(source) for target in self.nodes] for source in self.nodes])

    def score(self, node: Node) -> float:
        """A unit's edge into ``metric`` (its attribution patching score); NaN for input and metric."""
        if node.kind in ("input", "metric"):
            return float("nan")
        return float(self.weights[self.nodes.index(node), -1])

    def edges(self, threshold: float = 0.0) -> list[tuple[Node, Node, float]]:
        """Edges with ``|weight| >= threshold`` (and > 0), strongest first."""
        allowed = self.allowed
        found = [(self.nodes[i], self.nodes[j], float(self.weights[i, j]))
                 for i in range(len(self.nodes)) for j in range(len(self.nodes))
                 if allowed[i, j] and abs(float(self.weights[i, j])) >= threshold and float(self.weights[i, j]) != 0.0]
        return sorted(found, key=lambda edge: -abs(edge[2]))

    def to_dict(self) -> dict[str, Any]:
        """The JSON export (docs/graph.md describes the schema)."""
        nodes = [{"id": n.name, "kind": n.kind, "layer": n.layer, "index": n.index,
                  "score": None if n.kind in ("input", "metric") else self.score(n), "role": self.roles.get(n.name, "")}
                 for n in self.nodes]
        edges = []
        for source, target, weight in self.edges():
            edge: dict[str, Any] = {"source": source.name, "target": target.name, "weight": weight}
            if self.per_position is not None:
                i, j = self.nodes.index(source), self.nodes.index(target)
                edge["per_position"] = self.per_position[i, j].tolist()
            edges.append(edge)
        return {"schema": SCHEMA, "metadata": self.metadata, "nodes": nodes, "edges": edges}

    @classmethod
    def from_dict(cls, data: Any, source: str = "graph") -> CircuitGraph:
        """Read the JSON export back (``source`` names it in errors); per-position splits are not kept."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise InputError(f"{source}: not a circuit graph (expected an object with schema {SCHEMA!r})")
        try:
            nodes = [Node(n["kind"], int(n["layer"]), int(n["index"])) for n in data["nodes"]]
            roles = {n["id"]: n["role"] for n in data["nodes"] if n.get("role")}
            ids = [n["id"] for n in data["nodes"]]
            weights = torch.zeros(len(nodes), len(nodes), dtype=torch.float64)
            for k, edge in enumerate(data["edges"]):
                if edge["source"] not in ids or edge["target"] not in ids:
                    raise InputError(f"{source}: edges[{k}] joins {edge['source']!r} and {edge['target']!r}, not both nodes")
                weights[ids.index(edge["source"]), ids.index(edge["target"])] = float(edge["weight"])
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"{source}: malformed nodes or edges ({type(error).__name__}: {error})") from error
        if [n.kind for n in nodes[:1] + nodes[-1:]] != ["input", "metric"]:
            raise InputError(f"{source}: the nodes must start with the input and end with the metric")
        return cls(nodes, weights, None, roles, dict(data.get("metadata", {})))


# ---------------------------------------------------------------- writes
def unit_writes(
    model: Any, node: Node, difference: Float[Tensor, "batch pos ..."]
) -> Float[Tensor, "batch pos d_model"]:
    """What a difference in a node's activation writes into the residual stream.

    ``difference`` is the whole layer's activation difference (``hook_z`` [batch, pos, n_heads,
    d_head], ``hook_post`` [batch, pos, d_mlp]) or, for ``input``, the embedding difference."""
    if node.kind == "input":
        return difference
    block = model.blocks[node.layer]
    if node.kind == "head":
        return difference[:, :, node.index] @ block.attn.W_O[node.index].to(difference.dtype)
    return difference[:, :, node.index, None] * block.mlp.W_out[node.index].to(difference.dtype)


def unit_slice(act: Tensor, node: Node) -> Tensor:
    """The node's own part of its layer's activation ([batch, pos, d_head] or [batch, pos])."""
    return act[:, :, node.index]


def recorded_hooks(names: Sequence[str], store: dict[str, Tensor]) -> list[tuple[str, Callable[..., Tensor]]]:
    """Forward hooks that keep each named activation (detached) in ``store``."""

    def keep(name: str) -> Callable[..., Tensor]:
        def hook(act: Tensor, hook: Any) -> Tensor:
            store[name] = act.detach()
            return act

        return hook

    return [(name, keep(name)) for name in names]


# ---------------------------------------------------------------- counterfactuals
@dataclass
class Batch:
    """One batch of the base run (where gradients are taken) and the two states of every write."""

    ids: Int[Tensor, "b pos"]
    mask: Int[Tensor, "b pos"]
    actual: dict[str, Tensor]
    counterfactual: dict[str, Tensor]
    base_is_actual: bool


def prepared_batches(
    loaded: LoadedModel, circuit: Circuit, clean_prompts: Sequence[str], corrupted_prompts: Sequence[str] | None, batch_size: int
) -> list[Batch]:
    """Per batch, the base run's tokens and each needed hook's actual and counterfactual activations.

    Pairs: actual = the clean run, counterfactual = the corrupted run, which is the base. Mean: the
    prompts' run is both the base and the actual; the counterfactual is each hook's mean over the
    prompts' non-padding tokens (so every unit is mean-ablated, one position like another)."""
    nodes = circuit_nodes(circuit)
    names = sorted({EMBED_HOOK} | {n.act_hook() for n in nodes[1:-1]})
    model = loaded.model
    batches = []
    with torch.no_grad():
        if corrupted_prompts is not None:
            for clean_ids, clean_mask, ids, mask in pair_batches(loaded, clean_prompts, corrupted_prompts, batch_size):
                clean: dict[str, Tensor] = {}
                corrupted: dict[str, Tensor] = {}
                with model.hooks(fwd_hooks=recorded_hooks(names, clean)):
                    model(clean_ids, attention_mask=clean_mask, logits_to_keep=1)
                with model.hooks(fwd_hooks=recorded_hooks(names, corrupted)):
                    model(ids, attention_mask=mask, logits_to_keep=1)
                batches.append(Batch(ids, mask, clean, corrupted, base_is_actual=False))
            return batches
        if not clean_prompts:
            raise InputError("the circuit graph needs at least one prompt")
        tokens = tokenize_prompts(loaded.chat, list(clean_prompts))
        sums = {name: torch.zeros((), device=loaded.device) for name in names}
        n_tokens = 0
        for part in batch_slices(len(clean_prompts), batch_size):
            ids, mask = trim_padding(tokens.input_ids[part], tokens.attention_mask[part], right=False)
            ids, mask = ids.to(loaded.device), mask.to(loaded.device)
            acts: dict[str, Tensor] = {}
            with model.hooks(fwd_hooks=recorded_hooks(names, acts)):
                model(ids, attention_mask=mask, logits_to_keep=1)
            valid = mask.bool()
            sums = {name: sums[name] + acts[name][valid].sum(0) for name in names}
            n_tokens += int(valid.sum())
            batches.append(Batch(ids, mask, acts, {}, base_is_actual=True))
    means = {name: total / n_tokens for name, total in sums.items()}
    for batch in batches:
        batch.counterfactual = {name: means[name].expand_as(act) for name, act in batch.actual.items()}
    return batches


def write_difference(model: Any, batch: Batch, node: Node) -> Float[Tensor, "b pos d_model"]:
    """``write(actual) - write(counterfactual)`` of a source node in this batch."""
    name = EMBED_HOOK if node.kind == "input" else node.act_hook()
    return unit_writes(model, node, batch.actual[name] - batch.counterfactual[name])


# ---------------------------------------------------------------- edge attribution
def _gradients(
    loaded: LoadedModel, batch: Batch, targets: Sequence[Node], metric: Metric
) -> tuple[dict[Node, Tensor], dict[Node, Tensor], Tensor]:
    """One forward and backward on the base run: per target unit, d metric / d its activation
    (its own slice) and d metric / d the residual it reads through it alone; and the metric values."""
    model = loaded.model
    acts: dict[str, Tensor] = {}
    leaves: dict[str, Tensor] = {}

    def attach(name: str) -> Callable[..., Tensor]:
        # a zero leaf added to the activation: its gradient is d metric / d act, and the graph stays connected
        def hook(act: Tensor, hook: Any) -> Tensor:
            acts[name] = act
            leaves[name] = torch.zeros_like(act, requires_grad=True)
            return act + leaves[name]

        return hook

    names = sorted({n.act_hook() for n in targets} | {n.input_hook() for n in targets})
    with torch.enable_grad(), model.hooks(fwd_hooks=[(name, attach(name)) for name in names]):
        values = metric(model(batch.ids, attention_mask=batch.mask, logits_to_keep=1)[:, -1])
        act_names = sorted({n.act_hook() for n in targets})
        grads = dict(zip(act_names, torch.autograd.grad(values.sum(), [leaves[name] for name in act_names], retain_graph=True, allow_unused=True)))
        act_grads: dict[Node, Tensor] = {}
        input_grads: dict[Node, Tensor] = {}
        for node in targets:
            grad = grads[node.act_hook()]
            own = unit_slice(grad, node) if grad is not None else torch.zeros_like(unit_slice(acts[node.act_hook()], node))
            act_grads[node] = own
            # the local backward: through this unit's layer only, from its activation to its input residual
            (input_grads[node],) = torch.autograd.grad(unit_slice(acts[node.act_hook()], node), leaves[node.input_hook()],
                                                       grad_outputs=own, retain_graph=True)
    return act_grads, input_grads, values.detach()


def edge_attribution(
    loaded: LoadedModel,
    circuit: Circuit,
    clean_prompts: Sequence[str],
    corrupted_prompts: Sequence[str] | None = None,
    *,
    metric: Metric | None = None,
    metric_name: str = "refusal score",
    per_position: bool = False,
    batch_size: int = 8,
) -> CircuitGraph:
    """The circuit's graph: every edge between its units, from the input and into the metric.

    ``clean_prompts`` with ``corrupted_prompts``: pairs, positions aligned from the end as in
    patching. ``corrupted_prompts`` None: mean ablation over ``clean_prompts`` as the counterfactual.
    ``metric`` (default: the refusal score) maps last-position logits to one value per row.
    Roles are not filled in here: see :func:`~safeseek_tl.graph_view.unit_roles`.
    """
    if len(circuit) == 0:
        raise InputError("the circuit graph needs a circuit with at least one head or neuron")
    metric = refusal_metric(loaded) if metric is None else metric
    nodes = circuit_nodes(circuit)
    units = nodes[1:-1]
    batches = prepared_batches(loaded, circuit, clean_prompts, corrupted_prompts, batch_size)
    width = max(batch.ids.shape[1] for batch in batches)
    totals = torch.zeros(len(nodes), len(nodes), width, dtype=torch.float64)
    metric_node = len(nodes) - 1
    for batch in batches:
        act_grads, input_grads, _ = _gradients(loaded, batch, units, metric)
        pos = batch.ids.shape[1]
        for i, source in enumerate(nodes[:-1]):
            write = write_difference(loaded.model, batch, source)
            for j, target in enumerate(units, start=1):
                if target.reads_before(source):
                    totals[i, j, width - pos:] += (input_grads[target] * write).sum((0, 2)).double().cpu()
            if source.kind != "input":
                name = source.act_hook()
                change = unit_slice(batch.actual[name] - batch.counterfactual[name], source)
                effect = act_grads[source] * change
                totals[i, metric_node, width - pos:] += effect.sum((0, *range(2, effect.dim()))).double().cpu()
    totals /= len(clean_prompts)
    n_batches = len(batches)
    metadata = {
        "model": loaded.shape.model_name or loaded.name,
        "method": "edge attribution patching",
        "metric": metric_name,
        "counterfactual": "mean ablation over the prompts" if corrupted_prompts is None else "paired prompts",
        "prompts": list(clean_prompts),
        "corrupted_prompts": None if corrupted_prompts is None else list(corrupted_prompts),
        # the states: a clean and a corrupted forward (pairs) or one forward (means); then the base's forward and backward
        "passes": {"forward": (2 if corrupted_prompts is None else 3) * n_batches, "backward": n_batches, "local_backward": len(units) * n_batches},
        "positions": "residual positions counted from the end, left-padded prompts aligned at the last token",
    }
    return CircuitGraph(nodes, totals.sum(-1), totals if per_position else None, {}, metadata)
