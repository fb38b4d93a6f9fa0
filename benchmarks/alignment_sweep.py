"""SafeSeek's alignment scenario on tiny-aligned across loss weights: how small can the circuit get?

    python benchmarks/alignment_sweep.py [--n-eval 40]

Issue 4's target: removing the circuit (<= 5% of heads, <= 2% of neurons) raises harmful
compliance from <= 5% to >= 80% with benign utility within 5%. The official objective also asks
the circuit alone to refuse (``w_refuse``), which keeps enough of the model running; with
``w_refuse=0`` only necessity counts, and the sparsity weights trade size against the switch.
The last row prunes one such circuit (``discover_complete`` with one round): benign validation
answers enter the objective, and a minimal set of its units (no unit can be left out) that still
makes the model answer >= 80% of the validation prompts is kept.
Prints markdown rows in the format of benchmarks/safeseek_organisms.py.
"""

from __future__ import annotations

import argparse
import os
import time

from recorded_settings import config_as_recorded  # benchmarks/ is the script's folder
from safeseek_organisms import report  # benchmarks/ is the script's folder

from safeseek_tl import load_model
from safeseek_tl.evaluate import BehaviourData
from safeseek_tl.organisms import load_data
from safeseek_tl.seek import SafeSeek, discover_complete, search_fill

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GRID: tuple[dict[str, object], ...] = tuple(
    {"masks.fill": ablation, "loss.w_refuse": 0.0, "loss.w_sparsity_heads": w, "loss.w_sparsity_neurons": w}
    for ablation in ("mean", "zero")
    for w in (0.1, 0.5, 2.0)
)


PRUNED = {"masks.fill": "zero", "loss.w_refuse": 0.0, "loss.w_sparsity_heads": 0.1, "loss.w_sparsity_neurons": 0.1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-eval", type=int, default=40)
    parser.add_argument("--pruned-only", action="store_true", help="only the last (pruned) row")
    args = parser.parse_args()
    loaded = load_model("organism:tiny-aligned")
    data = BehaviourData.from_records(load_data("alignment", "test")[: args.n_eval], load_data("benign", "test")[: args.n_eval])
    train, val = load_data("alignment", "train")[:100], load_data("alignment", "val")[:20]
    print("| run | heads | neurons | behaviour (ASR) full → ablated | refusal of clean harmful | benign answered | utility CE (nats/token) | vs ground truth | wall |")
    print("|---|---|---|---|---|---|---|---|---|")
    for overrides in () if args.pruned_only else GRID:
        start = time.perf_counter()
        config = config_as_recorded("alignment", "both", **overrides)
        result = SafeSeek(loaded, config).fit(train, val, progress=False)
        wall = time.perf_counter() - start
        label = ", ".join(f"{k}={v}" for k, v in overrides.items())
        report(f"tiny-aligned, {label}", loaded, result, data, "asr_harmful", wall, fill=search_fill(loaded, config, train))
    start = time.perf_counter()
    config = config_as_recorded("alignment", "both", **PRUNED)
    result = discover_complete(loaded, train, config, val, max_rounds=1, benign_records=load_data("benign", "val")[:20], progress=False)
    label = ", ".join(f"{k}={v}" for k, v in PRUNED.items())
    report(f"tiny-aligned, {label}, benign in objective, pruned", loaded, result, data, "asr_harmful", time.perf_counter() - start)


if __name__ == "__main__":
    main()
