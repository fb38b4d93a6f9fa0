"""Node-level circuits and scores in the file format of MIB's circuit-localization track.

MIB reads a graph as JSON: ``cfg`` (``n_layers``, ``n_heads``, ``parallel_attn_mlp``,
``d_model``), ``nodes`` (``"input"``, ``"a{layer}.h{head}"``, ``"m{layer}"``, ``"logits"``, each
with ``in_graph`` and optionally ``score``) and ``edges`` (here empty: these are node-level
results). A submission folder (``{task}_{model}``) holds either one file of importance scores or
one binary circuit per size of :data:`SUBMISSION_GRID`, each with no more than that percentage of
the units.

MIB's neuron level is the ``d_model`` outputs of a node, not the hidden MLP neurons this library
scores, so a layer's MLP neurons go in two extra fields of its ``m{layer}`` node that MIB's loader
ignores: ``safeseek_neurons`` (which are in the circuit) and ``safeseek_neurons_scores``. For MIB
itself, ``m{layer}`` is in the graph when any of its neurons is (always, for a head-only circuit,
whose neurons are never ablated) and its score is the sum of its neurons' scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from safeseek_tl._io import read_json, write_json
from safeseek_tl.errors import InputError
from safeseek_tl.hooks import UnitChoice, unit_kinds
from safeseek_tl.units import Circuit, ModelShape, Scores

SUBMISSION_GRID: tuple[float, ...] = (0, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50)
"""The circuit sizes of a MIB submission of binary circuits, in percent (each an upper bound)."""
SCORES_FILE = "importances.json"


def _graph(circuit: Circuit, scores: Scores | None, d_model: int, parallel_attn_mlp: bool, neurons_ablated: bool) -> dict[str, Any]:
    shape = circuit.shape
    nodes: dict[str, Any] = {"input": {"in_graph": True}}
    for layer in range(shape.n_layers):
        for head in range(shape.n_heads):
            node: dict[str, Any] = {"in_graph": bool(circuit.heads[layer, head])}
            if scores is not None and scores.heads is not None:
                node["score"] = float(scores.heads[layer, head])
            nodes[f"a{layer}.h{head}"] = node
        chosen = circuit.neurons[layer]
        mlp: dict[str, Any] = {"in_graph": bool(chosen.any()) or not neurons_ablated, "safeseek_neurons": chosen.tolist()}
        if scores is not None and scores.neurons is not None:
            mlp["score"] = float(scores.neurons[layer].sum())
            mlp["safeseek_neurons_scores"] = scores.neurons[layer].tolist()
        nodes[f"m{layer}"] = mlp
    nodes["logits"] = {"in_graph": True}
    cfg = {"n_layers": shape.n_layers, "n_heads": shape.n_heads, "parallel_attn_mlp": parallel_attn_mlp, "d_model": d_model, "d_mlp": shape.d_mlp}
    return {"cfg": cfg, "nodes": nodes, "edges": {}}


def export_scores(scores: Scores, folder: str | Path, d_model: int, parallel_attn_mlp: bool = False) -> Path:
    """Write ``folder/importances.json``: every node in the graph, with its score."""
    everything = Circuit(scores.shape, torch.ones(scores.shape.size("heads"), dtype=torch.bool), torch.ones(scores.shape.size("neurons"), dtype=torch.bool))
    path = Path(folder) / SCORES_FILE
    write_json(path, _graph(everything, scores, d_model, parallel_attn_mlp, neurons_ablated=True))
    return path


def submission_circuit(scores: Scores, granularity: UnitChoice, k: float) -> Circuit:
    """The top units of each of ``granularity``'s kinds, no more than ``k``% of them (rounded down, may be empty)."""
    counts = {kind: math.floor(k * math.prod(scores.shape.size(kind)) / 100 + 1e-9) for kind in unit_kinds(granularity)}
    return Circuit.top_k(scores, **counts)


def export_circuits(
    scores: Scores,
    folder: str | Path,
    d_model: int,
    granularity: UnitChoice = "heads",
    grid: Sequence[float] = SUBMISSION_GRID,
    parallel_attn_mlp: bool = False,
) -> dict[float, Path]:
    """Write one binary circuit per size of ``grid`` as ``folder/circuit_{k}.json``; return the paths by k."""
    paths = {}
    for k in grid:
        circuit = submission_circuit(scores, granularity, k)
        path = Path(folder) / f"circuit_{k:g}.json"
        write_json(path, _graph(circuit, None, d_model, parallel_attn_mlp, neurons_ablated="neurons" in unit_kinds(granularity)))
        paths[k] = path
    return paths


def _node(nodes: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    node = nodes.get(name)
    if not isinstance(node, Mapping) or not isinstance(node.get("in_graph"), bool):
        raise InputError(f"{source}: node {name!r} is missing or has no boolean 'in_graph'")
    return node


def load_graph(path: str | Path, shape: ModelShape) -> tuple[Circuit, Scores | None]:
    """Read a MIB node-level file back: its circuit and, where it has scores, its :class:`Scores`.

    A ``m{layer}`` node without ``safeseek_neurons`` (a file from another tool) puts all or none of
    the layer's neurons in the circuit, as its ``in_graph`` says.
    """
    data, source = read_json(path), str(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("cfg"), Mapping) or not isinstance(data.get("nodes"), Mapping):
        raise InputError(f"{source}: a MIB graph file needs the objects 'cfg' and 'nodes'")
    cfg = data["cfg"]
    if (cfg.get("n_layers"), cfg.get("n_heads")) != (shape.n_layers, shape.n_heads):
        raise InputError(f"{source}: field 'cfg' is for n_layers={cfg.get('n_layers')}, n_heads={cfg.get('n_heads')}; the model has {shape.n_layers}, {shape.n_heads}")
    nodes = data["nodes"]
    circuit = Circuit.empty(shape)
    head_scores, neuron_scores = torch.full(shape.size("heads"), math.nan), torch.full(shape.size("neurons"), math.nan)
    for layer in range(shape.n_layers):
        for head in range(shape.n_heads):
            node = _node(nodes, f"a{layer}.h{head}", source)
            circuit.heads[layer, head] = node["in_graph"]
            head_scores[layer, head] = float(node.get("score", math.nan))
        mlp = _node(nodes, f"m{layer}", source)
        chosen = mlp.get("safeseek_neurons", [mlp["in_graph"]] * shape.d_mlp)
        if len(chosen) != shape.d_mlp:
            raise InputError(f"{source}: node 'm{layer}' field 'safeseek_neurons' has {len(chosen)} entries, the model has d_mlp={shape.d_mlp}")
        circuit.neurons[layer] = torch.tensor(chosen, dtype=torch.bool)
        neuron_scores[layer] = torch.tensor(mlp.get("safeseek_neurons_scores", [math.nan] * shape.d_mlp), dtype=torch.float)
    has_heads, has_neurons = not head_scores.isnan().all(), not neuron_scores.isnan().all()
    scores = None
    if has_heads or has_neurons:
        scores = Scores(shape, head_scores if has_heads else None, neuron_scores if has_neurons else None, method="mib-import", metadata={"source": source})
    return circuit, scores
