"""The MIB-style faithfulness leaderboard on tiny-backdoor, against its planted ground truth.

    OMP_NUM_THREADS=1 python benchmarks/faithfulness_tiny.py [--n 32] [--out DIR]

Every registry method scores the first ``--n`` training records once (``units="both"``); each
curve is measured on the same records' triggered prompts (the clean prompts are the donors of
mean and counterfactual ablation), the task metric being the logit of the backdoor answer's first
token minus that of the clean answer's. SafeSeek enters by its score ranking (one search), not by
a search per size. Prints one markdown table per ablation (copied into benchmarks/RESULTS.md and
docs/benchmark.md) and writes the benchmark folder to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
from datetime import date

import torch

from safeseek_tl.benchmark import benchmark
from safeseek_tl.models import load_model
from safeseek_tl.organisms import ground_truth, load_data

os.environ.setdefault("HF_HUB_OFFLINE", "1")

METHODS = ("safeseek", "ships", "sahara", "contrast", "act-patch", "attr-patch", "eap-ig", "probe", "refusal-direction", "random")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--out", default="benchmark-tiny-backdoor")
    args = parser.parse_args()
    loaded = load_model("organism:tiny-backdoor")
    records = load_data("backdoor", "train")[: args.n]
    options = {"sahara": {"steps": 2}}
    result = benchmark(
        loaded, records, "backdoor", METHODS, args.out, base_model=load_model("organism:tiny-aligned"),
        truth=ground_truth("tiny-backdoor", loaded), method_options=options,
    )
    print(f"\n{date.today()}, {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); {args.n} records\n")
    board = result.leaderboard
    for ablation, part in board.groupby("ablation", sort=False):
        ends = part.drop_duplicates("granularity").set_index("granularity")
        spans = ", ".join(f"{g}: m(full) {row.m_full:.2f}, m(empty) {row.m_empty:.2f}" for g, row in ends.iterrows())
        print(f"\n#### {ablation} ablation\n\n{spans}\n")
        print("| method | units | CPR kept | CMD kept | CPR removed | CMD removed | AUROC | scoring time |")
        print("|---|---|---|---|---|---|---|---|")
        for (method, granularity), rows in part.groupby(["method", "granularity"], sort=False):
            kept, removed = rows.set_index("direction").loc["kept"], rows.set_index("direction").loc["removed"]
            print(f"| {method} | {granularity} | {kept.cpr:.3f} | {kept.cmd:.3f} | {removed.cpr:.3f} | {removed.cmd:.3f} | {kept.auroc:.3f} | {kept.wall_time_s:.1f} s |")


if __name__ == "__main__":
    main()
