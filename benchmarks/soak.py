"""Soak test: many short discover + evaluate cycles in one process must not grow memory.

Each cycle runs SafeSeek (``discover``, a short run with a checkpoint folder) and ``evaluate``
(full, ablated and circuit-only generations) on ``organism:tiny-backdoor``, then counts the hooks
left on the model beyond the bridge's own (every torch hook of the bridge and of the Hugging Face
model it wraps, less those TransformerLens wires on the first forward pass), the
tensors still alive after garbage collection, and the process's resident memory. A leak shows as
hooks above zero, a growing tensor count, or resident memory rising run after run.

    OMP_NUM_THREADS=1 python benchmarks/soak.py --runs 30
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from tqdm.auto import tqdm

from safeseek_tl.data import load_records
from safeseek_tl.evaluate import BehaviourData, evaluate
from safeseek_tl.hooks import count_hooks
from safeseek_tl.models import load_model
from safeseek_tl.organisms import data_file
from safeseek_tl.seek import SeekConfig, discover


def live_tensors() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def rss_mib() -> float:
    """Current resident set size (Linux /proc; the peak from getrusage elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--records", type=int, default=16, help="training + validation records per run")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--every", type=int, default=10, help="print a row every N runs")
    args = parser.parse_args()

    loaded = load_model("organism:tiny-backdoor")
    records = load_records(data_file("backdoor", "train"))[: args.records]
    behaviour = BehaviourData.from_records(records[:8], load_records(data_file("benign", "val"))[:8])
    config = SeekConfig.of("backdoor", "both", schedule={"epochs": args.epochs, "val_size": max(1, args.records // 4)})
    # The bridge wires 2 capture hooks per block of its own on the first forward pass: count from there.
    with torch.no_grad():
        loaded.model(torch.tensor([loaded.chat.prompt_ids("hello")]))
    baseline_hooks = count_hooks(loaded.model)

    rows: list[tuple[int, float, int, int, float]] = []
    max_hooks_left = 0
    start_rss, start_tensors = rss_mib(), live_tensors()
    started = time.perf_counter()
    for run in tqdm(range(1, args.runs + 1), desc="soak", file=sys.stderr):
        with tempfile.TemporaryDirectory() as folder:
            result = discover(loaded, records, config, checkpoint_dir=Path(folder), check=False, progress=False).result
            evaluate(loaded, result.circuit, behaviour, max_new_tokens=8)
        del result
        max_hooks_left = max(max_hooks_left, count_hooks(loaded.model) - baseline_hooks)
        if run % args.every == 0 or run == 1:
            rows.append((run, rss_mib(), live_tensors(), count_hooks(loaded.model) - baseline_hooks, (time.perf_counter() - started) / run))

    print(f"Soak: {args.runs} x (discover {args.epochs} epoch(s) on {args.records} records, units both + evaluate on 8 backdoor and 8 benign prompts)")
    print(f"organism:tiny-backdoor, {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), {date.today().isoformat()}")
    print(f"before the first run: RSS {start_rss:.1f} MiB, {start_tensors} live tensors, {baseline_hooks} hooks on the model (the bridge's own)\n")
    print("| run | RSS (MiB) | live tensors | hooks left | s / run |")
    print("|---|---|---|---|---|")
    for run, rss, tensors, hooks, per_run in rows:
        print(f"| {run} | {rss:.1f} | {tensors} | {hooks} | {per_run:.2f} |")
    first, last = rows[0], rows[-1]
    print(f"\nRSS change from run {first[0]} to run {last[0]}: {last[1] - first[1]:+.1f} MiB; "
          f"live tensors {last[2] - first[2]:+d}; most hooks left after any run: {max_hooks_left}")  # fmt: skip


if __name__ == "__main__":
    main()
