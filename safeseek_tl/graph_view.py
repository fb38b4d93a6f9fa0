"""The picture of a :class:`~safeseek_tl.graph.CircuitGraph`: unit roles, a layered plotly figure,
and the files ``graph.json`` and ``graph.html`` (offline: plotly's JavaScript is inlined).

Layout: the input at the bottom, then per layer a row of heads and above it a row of neurons, the
metric on top. Edge width grows with |weight|, colour gives the sign (blue raises the metric,
vermillion lowers it); a slider hides edges weaker than a share of the strongest. The neurons of
a layer with more than ``collapse`` of them are drawn as one node whose edges are the sums of
its members' edges. Every piece of text from data (roles built from prompt tokens, the model
name, the metric) is HTML-escaped before it reaches plotly.
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from safeseek_tl._io import atomic_path, write_json
from safeseek_tl.data import BenignRecord, Record, batch_slices, tokenize_prompts, trim_padding
from safeseek_tl.errors import InputError
from safeseek_tl.graph import CircuitGraph, Node, edge_attribution, recorded_hooks
from safeseek_tl.hooks import pattern_hook
from safeseek_tl.models import LoadedModel
from safeseek_tl.plots import OKABE_ITO, TEMPLATE
from safeseek_tl.runs import GRAPH_HTML, GRAPH_JSON
from safeseek_tl.scenarios import Scenario, scenario_of
from safeseek_tl.units import Circuit

#: shares of the strongest |edge| offered by the slider
THRESHOLDS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
RAISES, LOWERS = OKABE_ITO[0], OKABE_ITO[1]


def _top(totals: dict[str, float], counts: dict[str, int], k: int) -> str:
    ranked = sorted(totals, key=lambda token: -totals[token] / counts[token])[:k]
    return ", ".join(f"{token!r} ({totals[token] / counts[token]:.2f})" for token in ranked)


@torch.no_grad()
def unit_roles(loaded: LoadedModel, graph: CircuitGraph, prompts: Sequence[str], top: int = 3, batch_size: int = 8) -> dict[str, str]:
    """Plain-text role of each unit on ``prompts`` (one forward pass per batch).

    A head: the tokens the last position attends to most (mean attention weight per token text).
    A neuron: the tokens on which it fires most (mean activation per token text) and the output
    tokens its write promotes directly (``W_out[i] @ W_U``, ignoring the final norm)."""
    model, tokenizer = loaded.model, loaded.tokenizer
    units = [n for n in graph.nodes if n.kind in ("head", "neuron")]
    names = sorted({pattern_hook(n.layer) if n.kind == "head" else n.act_hook() for n in units})
    tokens = tokenize_prompts(loaded.chat, list(prompts))
    totals: dict[str, dict[str, float]] = {n.name: defaultdict(float) for n in units}
    counts: dict[str, dict[str, int]] = {n.name: defaultdict(int) for n in units}
    for part in batch_slices(len(prompts), batch_size):
        ids, mask = trim_padding(tokens.input_ids[part], tokens.attention_mask[part], right=False)
        acts: dict[str, Tensor] = {}
        with model.hooks(fwd_hooks=recorded_hooks(names, acts)):
            model(ids.to(loaded.device), attention_mask=mask.to(loaded.device), logits_to_keep=1)
        for row in range(len(ids)):
            texts = [tokenizer.decode([int(t)]) for t in ids[row]]
            valid = [p for p in range(len(texts)) if mask[row, p]]
            for n in units:
                if n.kind == "head":
                    values = acts[pattern_hook(n.layer)][row, n.index, -1]
                else:
                    values = acts[n.act_hook()][row, :, n.index]
                for p in valid:
                    totals[n.name][texts[p]] += float(values[p])
                    counts[n.name][texts[p]] += 1
    roles = {}
    for n in units:
        role = _top(totals[n.name], counts[n.name], top)
        if n.kind == "head":
            roles[n.name] = f"attends most to: {role}"
            continue
        logits = model.blocks[n.layer].mlp.W_out[n.index] @ model.W_U
        promoted = ", ".join(repr(tokenizer.decode([int(t)])) for t in logits.topk(top).indices)
        roles[n.name] = f"fires most on: {role}; promotes: {promoted}"
    return roles


def _positions(labels: Sequence[str], nodes: Sequence[Node]) -> dict[str, tuple[float, float]]:
    """y by residual order (input 0, then per layer heads, neurons above them, the metric on top);
    x spread within a row, heads in the left half and neurons in the right, so edges zigzag
    instead of lying on top of each other."""
    rows: dict[float, list[str]] = defaultdict(list)
    for label, node in zip(labels, nodes):
        rows[node.stage].append(label)
    spots = {}
    for stage, members in rows.items():
        kind = nodes[list(labels).index(members[0])].kind
        low, high = {"head": (0.0, 0.5), "neuron": (0.5, 1.0)}.get(kind, (0.0, 1.0))
        for i, label in enumerate(members):
            spots[label] = (low + (high - low) * (i + 1) / (len(members) + 1), 2 * stage + 2)
    return spots


def _curve(start: tuple[float, float], end: tuple[float, float], points: int = 9) -> tuple[list[float], list[float]]:
    """A quadratic Bezier from ``start`` to ``end`` bulging right in proportion to its height, so
    that long edges pass beside the nodes between their ends."""
    (x0, y0), (x1, y1) = start, end
    cx, cy = (x0 + x1) / 2 + 0.03 * abs(y1 - y0), (y0 + y1) / 2
    ts = [k / (points - 1) for k in range(points)]
    xs = [(1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t**2 * x1 for t in ts]
    ys = [(1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t**2 * y1 for t in ts]
    return xs, ys


def _collapsed(graph: CircuitGraph, collapse: int) -> tuple[list[str], list[Node], Float[Tensor, "source target"]]:
    """Display labels, their nodes (a collapsed layer's neurons: one node of index -1), and the
    weights between them (a collapsed node's edges are the sums of its members')."""
    per_layer = Counter(node.layer for node in graph.nodes if node.kind == "neuron")
    label_of: dict[str, str] = {}
    display: dict[str, Node] = {}
    for node in graph.nodes:
        grouped = node.kind == "neuron" and per_layer[node.layer] > collapse
        label = f"L{node.layer} neurons ({per_layer[node.layer]})" if grouped else node.name
        label_of[node.name] = label
        display.setdefault(label, Node("neuron", node.layer) if grouped else node)
    labels = list(display)
    weights = torch.zeros(len(labels), len(labels), dtype=torch.float64)
    allowed = graph.allowed
    for i, source in enumerate(graph.nodes):
        for j, target in enumerate(graph.nodes):
            if allowed[i, j]:
                weights[labels.index(label_of[source.name]), labels.index(label_of[target.name])] += graph.weights[i, j]
    return labels, list(display.values()), weights


def graph_figure(graph: CircuitGraph, threshold: float = 0.0, collapse: int = 12) -> go.Figure:
    """The layered graph: nodes by layer, edges by |weight| and sign, a slider over edge strength.

    ``threshold``: edges weaker than this share of the strongest are not drawn at all.
    ``collapse``: layers with more neurons than this show them as one node."""
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"graph_figure: threshold is a share of the strongest edge, in [0, 1]; got {threshold}")
    labels, display, weights = _collapsed(graph, collapse)
    spot_of = _positions(labels, display)
    strongest = float(weights.abs().max()) or 1.0
    fig = go.Figure()
    shares = []
    for i, source in enumerate(labels):
        for j, target in enumerate(labels):
            weight = float(weights[i, j])
            if weight == 0.0 or abs(weight) < threshold * strongest:
                continue
            xs, ys = _curve(spot_of[source], spot_of[target])
            hover = f"{html.escape(source)} → {html.escape(target)}: {weight:.4g}"
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="text", text=[hover] * len(xs), showlegend=False,
                                     line={"width": 0.5 + 7.5 * abs(weight) / strongest, "color": RAISES if weight > 0 else LOWERS}))
            shares.append(abs(weight) / strongest)
    _add_nodes(fig, graph, display, labels, spot_of)
    n_edges = len(shares)
    steps = [{"method": "restyle", "label": f"{t:.0%}",
              "args": [{"visible": [share >= t for share in shares] + [True] * (len(fig.data) - n_edges)}]}
             for t in THRESHOLDS if t >= threshold]
    meta = graph.metadata
    title = (f"circuit graph: {html.escape(str(meta.get('model', '')))}, metric {html.escape(str(meta.get('metric', '')))}"
             f" ({html.escape(str(meta.get('counterfactual', '')))})")
    fig.update_layout(template=TEMPLATE, title=title, height=max(450, 110 * len({round(y) for _, y in spot_of.values()})),
                      sliders=[{"active": 0, "currentvalue": {"prefix": "hide edges below "}, "steps": steps, "pad": {"t": 30}}],
                      legend={"orientation": "h", "y": 1.06, "x": 0}, margin={"t": 70})
    fig.update_xaxes(visible=False, range=[0, 1.15])
    fig.update_yaxes(visible=False)
    return fig


def _add_nodes(fig: go.Figure, graph: CircuitGraph, display: list[Node], labels: list[str], spot_of: dict[str, tuple[float, float]]) -> None:
    """One marker trace per node kind; hover: the name, the edge into the metric, the role."""
    styles = {"input": ("square", "#555555"), "head": ("diamond", OKABE_ITO[2]), "neuron": ("circle", OKABE_ITO[4]), "metric": ("star", "#000000")}
    for kind, (symbol, colour) in styles.items():
        members = [(label, node) for label, node in zip(labels, display) if node.kind == kind]
        if not members:
            continue
        text = []
        for label, node in members:
            parts = [html.escape(label)]
            if node.index >= 0:
                parts += [f"edge into metric: {graph.score(node):.4g}", html.escape(graph.roles.get(node.name, ""))]
            text.append("<br>".join(p for p in parts if p))
        fig.add_trace(go.Scatter(x=[spot_of[label][0] for label, _ in members], y=[spot_of[label][1] for label, _ in members],
                                 mode="markers+text", name=kind, text=[html.escape(label) for label, _ in members],
                                 hovertext=text, hoverinfo="text", textposition="middle right",
                                 marker={"symbol": symbol, "size": 16, "color": colour, "line": {"width": 1, "color": "#222"}}))


def scenario_graph(
    loaded: LoadedModel,
    circuit: Circuit,
    records: Sequence[Record],
    scenario: str | Scenario,
    *,
    benign: Sequence[BenignRecord] | None = None,
    counterfactual: Literal["pairs", "mean"] = "pairs",
    max_prompts: int | None = None,
    per_position: bool = False,
    batch_size: int = 8,
) -> CircuitGraph:
    """The graph of ``circuit`` on a scenario's data, with roles: what ``safeseek graph`` computes.

    ``pairs``: the scenario's behaviour prompts (triggered, or harmful) against its contrast
    prompts (the same requests untriggered, or ``benign`` ones for alignment); ``mean``: the
    behaviour prompts with mean ablation. The metric is the refusal score; the roles are read on
    the behaviour prompts. ``max_prompts`` keeps the first prompts (or pairs)."""
    chosen = scenario_of(scenario)
    if counterfactual not in ("pairs", "mean"):
        raise InputError(f"counterfactual must be 'pairs' or 'mean', got {counterfactual!r}")
    if counterfactual == "pairs":
        behaviour, contrast = chosen.paired_prompts(records, benign, "graph")
        behaviour, contrast = behaviour[:max_prompts], contrast[:max_prompts]
    else:
        behaviour, contrast = chosen.behaviour_prompts(records)[:max_prompts], None
    graph = edge_attribution(loaded, circuit, behaviour, contrast, per_position=per_position, batch_size=batch_size)
    graph.roles = unit_roles(loaded, graph, behaviour, batch_size=batch_size)
    graph.metadata["scenario"] = chosen.name
    return graph


def sankey_figure(graph: CircuitGraph, position: int = -1, threshold: float = 0.0) -> go.Figure:
    """One token position's edges as a Sankey diagram (a graph computed with ``per_position=True``).

    ``position`` counts from the end (-1: the last token); link width is |weight|, colour its sign
    (as in :func:`graph_figure`); ``threshold``: links weaker than this share of the position's
    strongest are left out."""
    if graph.per_position is None:
        raise InputError("sankey_figure needs the graph's per-position edges: compute it with per_position=True")
    width = graph.per_position.shape[-1]
    if not -width <= position <= -1:
        raise InputError(f"position counts from the last token: it must be in [-{width}, -1], got {position}")
    weights, allowed = graph.per_position[..., position], graph.allowed
    links = [(i, j, float(weights[i, j])) for i in range(len(graph.nodes)) for j in range(len(graph.nodes)) if allowed[i, j] and float(weights[i, j]) != 0.0]
    strongest = max((abs(w) for _, _, w in links), default=0.0)
    links = [(i, j, w) for i, j, w in links if abs(w) >= threshold * strongest]
    sankey = go.Sankey(
        node={"label": [html.escape(node.name) for node in graph.nodes], "pad": 12},
        link={"source": [i for i, _, _ in links], "target": [j for _, j, _ in links], "value": [abs(w) for _, _, w in links],
              "color": [RAISES if w > 0 else LOWERS for _, _, w in links]},
    )  # fmt: skip
    fig = go.Figure(sankey)
    fig.update_layout(template=TEMPLATE, title=f"Circuit edges at token position {position} (blue raises the metric, orange lowers it)")
    return fig


def write_graph(graph: CircuitGraph, out_dir: str | Path, threshold: float = 0.0, collapse: int = 12) -> tuple[Path, Path]:
    """Write ``graph.json`` (docs/graph.md) and ``graph.html`` (self-contained, offline) into ``out_dir``."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / GRAPH_JSON, folder / GRAPH_HTML
    write_json(json_path, graph.to_dict())
    page = graph_figure(graph, threshold, collapse).to_html(full_html=True, include_plotlyjs=True,
                                                            config={"displaylogo": False, "responsive": True})
    with atomic_path(html_path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return json_path, html_path

