"""The benchmark's HTML leaderboard page: one offline file in the report's style (its helpers, its escaping).

Written by :meth:`~safeseek_tl.benchmark.Benchmark.save` as ``leaderboard.html``: the settings, one
leaderboard table per ablation, then the faithfulness curves. plotly's JavaScript is inlined once and
every piece of text from the run (method and model names, the data's path, settings) is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from safeseek_tl.report import Figures, html_page, html_table

COLUMNS: tuple[tuple[str, str], ...] = (
    ("method", "method"),
    ("granularity", "units"),
    ("direction", "direction"),
    ("points", "circuits from"),
    ("cpr", "CPR"),
    ("cmd", "CMD"),
    ("cpr_held_out", "CPR held-out"),
    ("cmd_held_out", "CMD held-out"),
    ("auroc", "AUROC"),
    ("jaccard", "stability (Jaccard)"),
    ("jaccard_seeds", "Jaccard, seeds"),
    ("jaccard_splits", "Jaccard, halves"),
    ("wall_time_s", "wall time (s)"),
    ("passes", "forward passes"),
    ("pass_rows", "prompt rows"),
)
"""The leaderboard's columns on the page (those present and not all empty), with their headings."""

NOTES = (
    "CPR: area under the faithfulness curve over log circuit size, divided by its width (higher is better); "
    "CMD: the same area of |1 - f| (lower is better). Kept: the circuit alone (everything else ablated); "
    "removed: the circuit ablated. Circuits from: 'ranking' = the top k% of the method's scores (SafeSeek: one search's), "
    "'search' = a search asked for exactly that size at each k. Stability: mean pairwise Jaccard of the "
    "circuits at the stability size over 3 seeds x 2 random halves of the records (a deterministic method's "
    "seeds change nothing). Wall time and passes: the method's own scoring (forward calls; backward passes "
    "not counted). See docs/benchmark.md."
)


def _shown(board: pd.DataFrame) -> list[tuple[str, str]]:
    return [(column, heading) for column, heading in COLUMNS if column in board.columns and board[column].notna().any()]


def leaderboard_tables(board: pd.DataFrame) -> str:
    """One escaped table per ablation, the columns of :data:`COLUMNS` that hold any value."""
    if board.empty:
        return '<p class="note">No method gave a curve.</p>'
    shown = _shown(board)
    parts = []
    for ablation, part in board.groupby("ablation", sort=False):
        parts.append(f"<h3>{html.escape(str(ablation))} ablation</h3>")
        parts.append(html_table([h for _, h in shown], part[[c for c, _ in shown]].itertuples(index=False)))
    return "".join(parts)


def leaderboard_page(board: pd.DataFrame, figures: Sequence[go.Figure], settings: Mapping[str, Any]) -> str:
    """The whole page: settings, leaderboard tables and the curves (``figures``, in order)."""
    figure = Figures()
    sections = [("Settings", html_table(["setting", "value"], settings.items())), ("Leaderboard", f'<p class="note">{NOTES}</p>' + leaderboard_tables(board))]
    if figures:
        sections.append(("Faithfulness curves", "".join(figure(f) for f in figures)))
    model = settings.get("model", "a model")
    return html_page(f"safeseek benchmark: {model}", f"{settings.get('scenario', '')} scenario, {len(board)} leaderboard rows", sections)
