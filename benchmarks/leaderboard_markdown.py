"""Markdown tables of saved benchmark folders (``safeseek benchmark --out DIR``), one per ablation.

    python benchmarks/leaderboard_markdown.py DIR [DIR ...]

Rows of several folders are put together (e.g. SafeSeek's search points from one run, its ranking
from another); a cost the benchmark did not measure (saved scores) shows as "–"; each table's first line gives the ends every curve is scaled between. Printed as
copied into benchmarks/RESULTS.md and docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from safeseek_tl import runs


def _number(value: float, digits: int = 3, unit: str = "") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}{unit}"


def _row(kept: pd.Series, removed: pd.Series) -> str:
    held_out = f"{_number(kept.cpr_held_out)} / {_number(removed.cpr_held_out)}"
    stable = f"{_number(kept.jaccard, 2)} ({_number(kept.jaccard_seeds, 2)} / {_number(kept.jaccard_splits, 2)})"
    return (
        f"| {kept.method} | {kept.granularity} | {kept.points} | {_number(kept.cpr)} | {_number(kept.cmd)} | {_number(removed.cpr)} | "
        f"{_number(removed.cmd)} | {held_out} | {_number(kept.auroc)} | {stable} | {_number(kept.wall_time_s, 1, ' s')} | {_number(kept.passes, 0)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    board = pd.concat([pd.read_csv(folder / runs.LEADERBOARD_CSV) for folder in parser.parse_args().folders], ignore_index=True)
    for column in ("cpr_held_out", "jaccard", "jaccard_seeds", "jaccard_splits"):
        if column not in board:
            board[column] = math.nan
    for ablation, part in board.groupby("ablation", sort=False):
        ends = part.drop_duplicates("granularity").set_index("granularity")
        print(f"\n#### {ablation} ablation\n\n" + ", ".join(f"{g}: m(full) {r.m_full:.2f}, m(empty) {r.m_empty:.2f}" for g, r in ends.iterrows()) + "\n")
        print("| method | units | circuits from | CPR kept | CMD kept | CPR removed | CMD removed | CPR held-out (kept / removed) | AUROC | "
              "stability: Jaccard (seeds / halves) | scoring time | forward passes |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for _, rows in part.groupby(["method", "granularity", "points"], sort=False):
            by_direction = rows.set_index("direction")
            print(_row(by_direction.loc["kept"], by_direction.loc["removed"]))


if __name__ == "__main__":
    main()
