"""A self-contained HTML report of a saved run, readable offline in any browser.

``write_report`` renders what a run holds (a :class:`~safeseek_tl.runs.RunContents`, or a run
folder read into one: SafeSeek's ``circuit.json``, ``scores.safetensors``, ``history.json``,
``config.json``; a baseline's scores and circuit alone; a comparison's ``comparison.csv`` and
``overlap.csv``; a circuit graph's ``graph.json``; optional ``behaviour.json`` and ``examples.json``) and writes ONE HTML file: plotly's JavaScript is inlined once, nothing is fetched from the network, and
every piece of text that comes from the run (prompts, generations, settings, method names, the
title) is HTML-escaped.

The circuitsvis views need the model, so they are not part of the report: make them with
:func:`~safeseek_tl.circuitsvis_views.attention_view` /
:func:`~safeseek_tl.circuitsvis_views.neuron_activation_view` and save them with
:func:`~safeseek_tl.circuitsvis_views.save_circuitsvis`.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from safeseek_tl import plots, runs
from safeseek_tl._io import atomic_path
from safeseek_tl.errors import InputError
from safeseek_tl.graph_view import graph_figure
from safeseek_tl.runs import RunContents
from safeseek_tl.units import Circuit, Scores

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #d0d0d0; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top;
         white-space: pre-wrap; overflow-wrap: anywhere; max-width: 36rem; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.figure { margin: 1rem 0 2rem; } .note { color: #555; font-style: italic; }
"""


def _cell(value: Any) -> tuple[str, bool]:
    """Escaped text of a table cell and whether it is a number."""
    if hasattr(value, "item"):  # numpy / pandas scalars
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", False
    if isinstance(value, bool):
        return str(value), False
    if isinstance(value, float):
        return f"{value:.4g}", True
    if isinstance(value, int):
        return str(value), True
    if isinstance(value, (dict, list, tuple)):
        return html.escape(json.dumps(value, default=str)), False
    return html.escape(str(value)), False


def html_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table; every header and cell is escaped (floats to 4 significant digits, NaN and None empty)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = [_cell(v) for v in row]
        body.append("<tr>" + "".join(f'<td class="num">{t}</td>' if num else f"<td>{t}</td>" for t, num in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _examples_table(examples: Any, source: str) -> str:
    if not isinstance(examples, list) or not all(isinstance(e, Mapping) for e in examples):
        raise InputError(f"{source}: examples must be a list of objects with 'prompt', 'full' and 'ablated'")
    rows = ([str(e.get(key, "")) for key in ("prompt", "full", "ablated")] for e in examples)
    return html_table(["prompt", "full model", "circuit ablated"], rows)


class Figures:
    """Embeds figures in one page, in order; only the first carries plotly.js (inlined: the page stays offline)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fig: go.Figure) -> str:
        config = {"displaylogo": False, "responsive": True}
        div = fig.to_html(full_html=False, include_plotlyjs=self.count == 0, config=config)
        self.count += 1
        return f'<div class="figure">{div}</div>'


def _summary(scores: Scores | None, circuit: Circuit | None, history: Mapping[str, Any] | None) -> str:
    if circuit is not None:
        shape = circuit.shape
    elif scores is not None:
        shape = scores.shape
    else:
        raise InputError("a run's summary needs its scores or its circuit")
    method = scores.method if scores is not None else ""
    if not method and circuit is not None:
        method = str(circuit.metadata.get("method", ""))
    rows: list[tuple[str, Any]] = [
        ("method", method or "unknown"),
        ("model", shape.model_name or "unknown"),
        ("layers / heads per layer / neurons per layer", f"{shape.n_layers} / {shape.n_heads} / {shape.d_mlp}"),
    ]
    if circuit is not None:
        rows += [
            ("heads in circuit", f"{circuit.n_heads} ({100 * circuit.fraction('heads'):.2f}% of heads)"),
            ("neurons in circuit", f"{circuit.n_neurons} ({100 * circuit.fraction('neurons'):.2f}% of neurons)"),
        ]
    if history is not None:
        rows += [("best epoch", history.get("best_epoch")), ("search rounds", history.get("rounds"))]
        if history.get("verified") is not None:  # SeekResult.verified: did ablating the circuit switch the behaviour?
            rows.append(("behaviour switch verified", "yes" if history["verified"] else "NO: no search round switched it"))
    return html_table(["quantity", "value"], rows)


def _behaviour_table(behaviour: Any, source: str) -> str:
    if not isinstance(behaviour, Mapping) or not all(isinstance(v, Mapping) for v in behaviour.values()):
        raise InputError(f"{source}: behaviour must be an object {{condition: {{metric: value}}}}")
    metrics = list(dict.fromkeys(m for values in behaviour.values() for m in values))
    rows = ([condition, *(values.get(m) for m in metrics)] for condition, values in behaviour.items())
    return html_table(["condition", *metrics], rows)


def setting_rows(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """A saved config's settings one per row, a group's by dotted name (``schedule.epochs``), as ``--set`` takes them."""
    for key, value in config.items():
        if isinstance(value, Mapping):
            yield from setting_rows(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def write_report(
    run: RunContents | str | Path,
    out_file: str | Path,
    *,
    title: str | None = None,
    examples: Sequence[Mapping[str, str]] | None = None,
) -> Path:
    """Write a self-contained offline HTML report of ``run``; return its path.

    ``run``: the objects to show (:class:`~safeseek_tl.runs.RunContents`), or a run folder, read
    with :meth:`RunContents.load <safeseek_tl.runs.RunContents.load>`. ``examples`` (a list of
    ``{"prompt", "full", "ablated"}``) overrides the run's own.
    """
    contents = run if isinstance(run, RunContents) else RunContents.load(run)
    contents.check()
    examples_source = "examples"
    if examples is None and contents.examples is not None:
        examples, examples_source = contents.examples, contents.origins.get(runs.EXAMPLES, "examples")
    scores, circuit, history = contents.scores, contents.circuit, contents.history

    figure = Figures()
    sections: list[tuple[str, str]] = []
    if scores is not None or circuit is not None:
        sections.append(("Summary", _summary(scores, circuit, history)))
    if contents.behaviour is not None:
        sections.append(("Behaviour", _behaviour_table(contents.behaviour, contents.origins.get(runs.BEHAVIOUR, "behaviour"))))
    units = _unit_figures(scores, circuit, figure)
    if units:
        sections.append(("Units", units))
    if history is not None and history.get("history"):
        sections.append(("Training", figure(plots.training_curves(history["history"], best_epoch=history.get("best_epoch")))))
    if contents.comparison is not None:
        sections.append(("Method comparison", _comparison(contents.comparison, figure)))
    if contents.overlap is not None:
        sections.append(("Circuit overlap", figure(plots.overlap_matrix(contents.overlap))))
    if contents.graph is not None:
        sections.append(("Circuit graph", figure(graph_figure(contents.graph))))
    if examples is not None:
        sections.append(("Example generations", _examples_table(examples, examples_source)))
    if contents.config is not None:
        config = contents.config
        rows = list(setting_rows(config)) if isinstance(config, Mapping) else [("config", config)]
        sections.append(("Settings", html_table(["setting", "value"], rows)))

    heading = title if title is not None else f"safeseek report: {Path(contents.source).resolve().name}"
    with atomic_path(out_file) as tmp:
        tmp.write_text(html_page(heading, f"Run: {contents.source}", sections), encoding="utf-8")
    return Path(out_file)


def _unit_figures(scores: Scores | None, circuit: Circuit | None, figure: Figures) -> str:
    """The score maps and the circuit's map and graph ("" when there are none)."""
    parts: list[str] = []
    if scores is not None and scores.heads is not None:
        parts.append(figure(plots.head_map(scores)))
    if circuit is not None and circuit.n_heads > 0:
        parts.append(figure(plots.head_map(circuit)))
    if scores is not None and scores.neurons is not None:
        parts.append(figure(plots.neuron_view(scores)))
    if circuit is not None and len(circuit) > 0:
        parts.append(figure(plots.circuit_graph(circuit, scores)))
    elif circuit is not None:
        parts.append('<p class="note">The circuit is empty: no unit was selected.</p>')
    return "".join(parts)


def _comparison(table: pd.DataFrame, figure: Figures) -> str:
    """The comparison table, its behaviour and utility curves, and precision and recall when it has them."""
    parts = [html_table(list(table.columns), table.itertuples(index=False))]
    if not table.empty:
        parts += [figure(plots.comparison_curves(table, y=column)) for column in ("behaviour_change", "utility_change")
                  if column in table.columns and table[column].notna().any()]
        if any(c in table.columns and table[c].notna().any() for c in ("precision", "recall")):
            parts.append(figure(plots.precision_recall_plot(table)))
    return "".join(parts)


def html_page(heading: str, note: str, sections: Sequence[tuple[str, str]]) -> str:
    """A whole offline page: the heading, a note under it (what it shows), then each (name, HTML) section; the heading,
    the note and the section names are escaped here, the sections' HTML is the caller's."""
    body = "".join(f"<section><h2>{html.escape(name)}</h2>{content}</section>" for name, content in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(heading)}</title><style>{STYLE}</style></head>\n"
        f"<body><h1>{html.escape(heading)}</h1>"
        f'<p class="note">{html.escape(note)}</p>{body}</body></html>\n'
    )
