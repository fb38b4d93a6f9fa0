"""plotly figures of scores, circuits, training runs and method comparisons.

Every function returns a ``plotly.graph_objects.Figure`` (restyle it, ``fig.show()`` it or
write it yourself); nothing is shown or written here. Colours are colour-blind safe: the Okabe-Ito
palette for categories, a perceptually uniform sequential scale for values.

Text that comes from data (method names, scores' method) is HTML-escaped before it reaches plotly,
because plotly renders a subset of HTML in labels and hover text and decodes ``&lt;``-style
entities back to the characters, so names display as written and cannot inject markup.

The circuitsvis views of a circuit on a prompt are in :mod:`safeseek_tl.circuitsvis_views`
(:func:`~safeseek_tl.circuitsvis_views.attention_view`, ...); this module re-exports them.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any, SupportsFloat

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from safeseek_tl.circuitsvis_views import attention_view, neuron_activation_view, save_circuitsvis
from safeseek_tl.errors import InputError
from safeseek_tl.units import Circuit, Scores

#: Okabe-Ito colours, ordered for contrast on white (yellow last: faint on white).
OKABE_ITO: tuple[str, ...] = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
#: Sequential colourscale for score heatmaps (perceptually uniform, colour-blind safe).
SEQUENTIAL = "Viridis"
#: Two-colour scale for 0/1 circuit maps: grey outside, blue inside (no gradient between).
BINARY = ((0.0, "#E8E8E8"), (0.5, "#E8E8E8"), (0.5, "#0072B2"), (1.0, "#0072B2"))
TEMPLATE = "plotly_white"


def _label(text: Any) -> str:
    """Data-derived text made safe for plotly's HTML-like labels (entities display as characters)."""
    return html.escape(str(text), quote=False)


def _number(value: SupportsFloat, is_circuit: bool = False) -> str:  # numpy scalars too
    return str(int(float(value))) if is_circuit else f"{value:.4g}"


def _described(scores: Scores) -> str:
    return f"these {scores.method} scores" if scores.method else "these scores"


def _colour(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


def _finish(fig: go.Figure, title: str | None, height: int) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=title, height=height, margin={"t": 70 if title else 30})
    return fig


# ---------------------------------------------------------------- units
def head_map(scores: Scores | Circuit, title: str | None = None) -> go.Figure:
    """Layer x head heatmap (layers down the y axis, heads across) of head scores, or 0/1 for a circuit."""
    if isinstance(scores, Circuit):
        values, is_circuit = scores.heads.float(), True
        default_title = f"circuit heads ({scores.n_heads} of {scores.heads.numel()})"
    else:
        if scores.heads is None:
            raise InputError(f"head_map: {_described(scores)} have no head scores (only neurons)")
        values, is_circuit = scores.heads, False
        default_title = f"head scores ({_label(scores.method)})" if scores.method else "head scores"
    n_layers, n_heads = values.shape
    z = values.numpy()
    text = [[f"L{layer}H{head}: {_number(z[layer, head], is_circuit)}" for head in range(n_heads)] for layer in range(n_layers)]
    heatmap = go.Heatmap(
        z=z,
        x=list(range(n_heads)),
        y=list(range(n_layers)),
        text=text,
        hovertemplate="%{text}<extra></extra>",
        colorscale=[list(stop) for stop in BINARY] if is_circuit else SEQUENTIAL,
        zmin=0.0 if is_circuit else None,
        zmax=1.0 if is_circuit else None,
        colorbar={"tickvals": [0.25, 0.75], "ticktext": ["out", "in circuit"]} if is_circuit else {"title": {"text": "score"}},
        xgap=1,
        ygap=1,
    )
    fig = go.Figure(heatmap)
    fig.update_xaxes(title_text="head", dtick=1 if n_heads <= 40 else None)
    fig.update_yaxes(title_text="layer", autorange="reversed", dtick=1 if n_layers <= 40 else None)
    return _finish(fig, title if title is not None else default_title, height=max(300, min(900, 120 + 22 * n_layers)))


def neuron_view(scores: Scores, top_k: int = 20) -> go.Figure:
    """Top ``top_k`` neurons of each layer (strip, top row) and each layer's score distribution (box, bottom row).

    The boxes are drawn from precomputed quartiles, with whiskers from the minimum to the maximum,
    so the figure stays small for models with thousands of neurons per layer; the strip above
    names the extreme units.
    """
    if scores.neurons is None:
        raise InputError(f"neuron_view: {_described(scores)} have no neuron scores (only heads)")
    if top_k < 1:
        raise InputError(f"neuron_view: top_k must be at least 1, got {top_k}")
    values = scores.neurons
    n_layers, d_mlp = values.shape
    k = min(top_k, d_mlp)
    top = torch.topk(values, k, dim=1)
    offsets = np.linspace(-0.3, 0.3, k) if k > 1 else np.zeros(1)
    xs, ys, text = [], [], []
    for layer in range(n_layers):
        for rank in range(k):
            index, value = int(top.indices[layer, rank]), float(top.values[layer, rank])
            xs.append(layer + float(offsets[rank]))
            ys.append(value)
            text.append(f"L{layer}N{index}: {value:.4g}")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=(f"top {k} neurons per layer", "score distribution per layer"))
    fig.add_trace(
        go.Scatter(x=xs, y=ys, mode="markers", text=text, hovertemplate="%{text}<extra></extra>", name=f"top {k}",
                   marker={"color": ys, "colorscale": SEQUENTIAL, "size": 7, "showscale": False}),
        row=1, col=1,
    )
    quartiles = torch.quantile(values, torch.tensor([0.25, 0.5, 0.75]), dim=1).numpy()
    fig.add_trace(
        go.Box(x=list(range(n_layers)), q1=quartiles[0], median=quartiles[1], q3=quartiles[2],
               lowerfence=values.amin(1).numpy(), upperfence=values.amax(1).numpy(), mean=values.mean(1).numpy(),
               name="all neurons", marker_color=OKABE_ITO[0], boxpoints=False),
        row=2, col=1,
    )
    fig.update_xaxes(title_text="layer", dtick=1 if n_layers <= 40 else None, row=2, col=1)
    fig.update_yaxes(title_text="score", row=1, col=1)
    fig.update_yaxes(title_text="score", row=2, col=1)
    method = f" ({_label(scores.method)})" if scores.method else ""
    return _finish(fig.update_layout(showlegend=False), f"neuron scores{method}", height=650)


def circuit_graph(circuit: Circuit, scores: Scores | None = None) -> go.Figure:
    """The circuit's units as nodes: one column per layer (left to right), heads above neurons.

    Heads are diamonds, neurons circles; with ``scores`` the nodes are coloured and sized by score
    and each column is ordered by score (highest on top). No edges are drawn: the methods score
    units, not connections, so edges would suggest information the results do not hold.
    """
    if len(circuit) == 0:
        raise InputError("circuit_graph: the circuit holds no heads and no neurons")
    if scores is not None:
        circuit.shape.check_compatible(scores.shape, "the scores passed to circuit_graph")
    n_layers = circuit.shape.n_layers
    values = {kind: (scores.get(kind) if scores is not None else None) for kind in ("heads", "neurons")}
    rows: dict[str, list[tuple[int, int, float | None]]] = {"heads": [], "neurons": []}
    for kind in ("heads", "neurons"):
        for layer, index in circuit.get(kind).nonzero().tolist():
            kind_scores = values[kind]
            score = float(kind_scores[layer, index]) if kind_scores is not None else None
            rows[kind].append((layer, index, score))
    # y positions: per layer, heads first then neurons, each sorted by score (highest first)
    next_slot = [0] * n_layers
    scored = [s for units in rows.values() for _, _, s in units if s is not None]
    low, high = (min(scored), max(scored)) if scored else (0.0, 0.0)
    spread = (high - low) or 1.0
    fig = go.Figure()
    for kind, symbol, letter, colour in (("heads", "diamond", "H", OKABE_ITO[0]), ("neurons", "circle", "N", OKABE_ITO[1])):
        units = sorted(rows[kind], key=lambda u: (u[0], -(u[2] if u[2] is not None else 0.0), u[1]))
        if not units:
            continue
        ys = []
        for layer, _, _ in units:
            ys.append(-next_slot[layer])
            next_slot[layer] += 1
        text = [f"L{layer}{letter}{index}" + ("" if score is None else f": score {score:.4g}") for layer, index, score in units]
        marker: dict[str, Any] = {"symbol": symbol, "size": 12, "color": colour, "line": {"width": 0.5, "color": "#333"}}
        if values[kind] is not None:
            unit_scores = [s for _, _, s in units if s is not None]  # every unit of a scored kind has one
            sizes = [8 + 12 * (s - low) / spread for s in unit_scores]
            marker |= {"color": unit_scores, "coloraxis": "coloraxis", "size": sizes}
        fig.add_trace(go.Scatter(x=[u[0] for u in units], y=ys, mode="markers", name=kind, text=text,
                                 hovertemplate="%{text}<extra></extra>", marker=marker))
    if scored:
        colorbar = {"title": {"text": "score"}}
        fig.update_layout(coloraxis={"colorscale": SEQUENTIAL, "cmin": low, "cmax": high, "colorbar": colorbar})
    fig.update_xaxes(title_text="layer", range=[-0.5, n_layers - 0.5], dtick=1 if n_layers <= 40 else None)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, title_text="units (heads above neurons)")
    tallest = max(next_slot)
    fig.update_layout(legend={"orientation": "h", "y": -0.15})
    title = f"circuit: {circuit.n_heads} heads, {circuit.n_neurons} neurons"
    return _finish(fig, title, height=max(350, min(1400, 150 + 16 * tallest)))


# ---------------------------------------------------------------- comparisons
def _check_columns(df: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{where}: the comparison table lacks column(s) {missing}; it has {list(df.columns)}")
    if df.empty:
        raise InputError(f"{where}: the comparison table has no rows")


def _method_lines(fig: go.Figure, df: pd.DataFrame, x: str, y: str, showlegend: bool = True, **trace_args: Any) -> int:
    """Add one line per method (points sorted by ``x``, NaN ``y`` dropped); return the number added."""
    added = 0
    sizes = {"n_heads", "n_neurons"} <= set(df.columns)
    for i, (method, group) in enumerate(df.groupby("method", sort=False)):
        group = group.dropna(subset=[y]).sort_values(x)
        if group.empty:
            continue
        name = _label(method)
        hover = [
            f"{name}<br>{x} {_number(row[x])}, {y} {_number(row[y])}"
            + (f"<br>{_number(row['n_heads'])} heads, {_number(row['n_neurons'])} neurons" if sizes else "")
            for _, row in group.iterrows()
        ]
        trace = go.Scatter(x=group[x], y=group[y], mode="lines+markers", name=name, legendgroup=name, showlegend=showlegend,
                           text=hover, hovertemplate="%{text}<extra></extra>", line={"color": _colour(i)}, marker={"color": _colour(i)})
        fig.add_trace(trace, **trace_args)
        added += 1
    return added


def comparison_curves(df: pd.DataFrame, y: str = "behaviour_change", x: str = "n_units") -> go.Figure:
    """Behaviour change (or another column ``y``) against circuit size, one line per method."""
    _check_columns(df, ["method", x, y], "comparison_curves")
    fig = go.Figure()
    if _method_lines(fig, df, x, y) == 0:
        raise InputError(f"comparison_curves: column {y!r} holds no values")
    fig.update_xaxes(title_text=x.replace("_", " "))
    fig.update_yaxes(title_text=y.replace("_", " "))
    return _finish(fig, f"{y.replace('_', ' ')} vs {x.replace('_', ' ')}", height=450)


def faithfulness_plot(df: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Faithfulness against circuit size (percent of units, log axis), one line per method.

    ``df``: rows of a benchmark table (``method``, ``k``, ``value``) for one granularity, ablation
    and direction (:func:`~safeseek_tl.benchmark.benchmark`).
    """
    _check_columns(df, ["method", "k", "value"], "faithfulness_plot")
    fig = go.Figure()
    if _method_lines(fig, df, "k", "value") == 0:
        raise InputError("faithfulness_plot: the table holds no faithfulness values")
    fig.update_xaxes(title_text="circuit size (% of units)", type="log")
    fig.update_yaxes(title_text="faithfulness")
    return _finish(fig, _label(title) if title else "faithfulness", height=450)


def precision_recall_plot(df: pd.DataFrame, x: str = "budget") -> go.Figure:
    """Precision (left) and recall (right) against the budget, one line per method with ground truth."""
    _check_columns(df, ["method", x], "precision_recall_plot")
    present = [c for c in ("precision", "recall") if c in df.columns and df[c].notna().any()]
    if not present:
        raise InputError("precision_recall_plot: no precision or recall values (was a ground-truth circuit given?)")
    fig = make_subplots(rows=1, cols=len(present), subplot_titles=present, shared_yaxes=True)
    for col, metric in enumerate(present, start=1):
        _method_lines(fig, df, x, metric, showlegend=col == 1, row=1, col=col)
        fig.update_xaxes(title_text=x.replace("_", " "), row=1, col=col)
    fig.update_yaxes(range=[-0.02, 1.02])
    return _finish(fig, "precision and recall against the ground-truth circuit", height=420)


def overlap_matrix(jaccard: pd.DataFrame | Mapping[str, Mapping[str, float]]) -> go.Figure:
    """Method x method heatmap of circuit overlap (Jaccard index, 0 to 1)."""
    table = jaccard if isinstance(jaccard, pd.DataFrame) else pd.DataFrame(jaccard)
    if table.empty:
        raise InputError("overlap_matrix: the overlap table is empty")
    if sorted(map(str, table.index)) != sorted(map(str, table.columns)) or not table.index.is_unique:
        raise InputError("overlap_matrix: the table must be square, with the same methods as rows and as columns")
    table = table.loc[list(table.columns)]
    names = [_label(m) for m in table.columns]
    z = table.to_numpy(dtype=float)
    text = [[f"{names[i]} vs {names[j]}: {z[i, j]:.3f}" for j in range(len(names))] for i in range(len(names))]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, zmin=0.0, zmax=1.0, colorscale=SEQUENTIAL, text=text,
                               hovertemplate="%{text}<extra></extra>", texttemplate="%{z:.2f}",
                               colorbar={"title": {"text": "Jaccard"}}))
    fig.update_yaxes(autorange="reversed")
    side = max(350, min(900, 150 + 45 * len(names)))
    return _finish(fig, "circuit overlap (Jaccard)", height=side)


# ---------------------------------------------------------------- training
def training_curves(history: Sequence[Mapping[str, Any]], best_epoch: int | None = None) -> go.Figure:
    """Loss terms per epoch (top; validation dashed, ``val_loss`` thick black) and circuit size (bottom).

    The loss axis is logarithmic when every term is positive and they span more than two decades
    (the weighted overlap term dwarfs the others). A history from several search rounds (epochs
    restarting) is drawn end to end; ``best_epoch`` adds a dotted line when the epochs increase.
    """
    if not history:
        raise InputError("training_curves: the history is empty (no epoch finished)")
    frame = pd.DataFrame(list(history))
    epochs = frame["epoch"] if "epoch" in frame else pd.Series(range(len(frame)))
    monotonic = epochs.is_monotonic_increasing and epochs.is_unique
    x = epochs.tolist() if monotonic else list(range(len(frame)))
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and c not in ("epoch", "round")]
    sizes = [c for c in numeric if c.startswith("off_")]
    losses = [c for c in numeric if c not in sizes]
    if not numeric:
        raise InputError("training_curves: the history holds no numeric loss terms or sizes")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, row_heights=[0.65, 0.35],
                        subplot_titles=("loss terms", "circuit size (units switched off)"))
    mode = "lines+markers" if len(x) < 30 else "lines"
    # a training term and its val_ twin share a colour (black is val_loss's); past the palette, the line style changes
    palette = [c for c in OKABE_ITO if c != "#000000"]
    train_terms = [c for c in losses if not c.startswith("val_")]
    styles = {term: (palette[i % len(palette)], i >= len(palette)) for i, term in enumerate(train_terms)}
    for column in losses:
        name = _label(column)
        colour, second_cycle = styles.get(column.removeprefix("val_"), ("#777777", False))
        if column == "val_loss":
            line = {"color": "#000000", "width": 4}
        elif column.startswith("val_"):
            line = {"color": colour, "width": 1.5, "dash": "dashdot" if second_cycle else "dash"}
        else:
            line = {"color": colour, "width": 1.5, "dash": "dot" if second_cycle else "solid"}
        fig.add_trace(go.Scatter(x=x, y=frame[column], mode=mode, name=name, line=line,
                                 hovertemplate=f"{name}: %{{y:.4g}}<extra>epoch %{{x}}</extra>"), row=1, col=1)
    for i, column in enumerate(sizes):
        name = _label(column)
        fig.add_trace(go.Scatter(x=x, y=frame[column], mode=mode, name=name,
                                 line={"color": _colour(i + 4), "width": 2, "shape": "hv"},
                                 hovertemplate=f"{name}: %{{y}}<extra>epoch %{{x}}</extra>"), row=2, col=1)
    if best_epoch is not None and monotonic and best_epoch >= 0:
        marker = {"x": best_epoch, "line": {"dash": "dot", "color": "#555555"}, "col": 1}
        fig.add_vline(**marker, row=1, annotation_text="best")
        fig.add_vline(**marker, row=2)
    values = frame[losses].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    log = values.size > 0 and values.min() > 0 and values.max() / values.min() > 100
    fig.update_xaxes(dtick=1 if len(x) <= 20 else None)
    fig.update_xaxes(title_text="epoch" if monotonic else "epoch (rounds end to end)", row=2, col=1)
    fig.update_yaxes(title_text="loss (log scale)" if log else "loss", type="log" if log else "linear", row=1, col=1)
    fig.update_yaxes(title_text="units", rangemode="tozero", row=2, col=1)
    return _finish(fig, "training", height=650)


# the circuitsvis views stay importable from here, where they were first defined
__all__ = [
    "OKABE_ITO",
    "SEQUENTIAL",
    "attention_view",
    "circuit_graph",
    "comparison_curves",
    "head_map",
    "neuron_activation_view",
    "neuron_view",
    "overlap_matrix",
    "precision_recall_plot",
    "save_circuitsvis",
    "training_curves",
]
