"""Sparse alignment circuits on tiny-aligned: the alignment objectives, size targets and a time budget.

    python benchmarks/sparse_alignment.py [--n-eval 40] [--only LABEL]

Each run searches heads and neurons on the first 100 training records (20 validation records; 100
benign training records in the objective) and is measured on the test split
(``evaluate.evaluate``, circuit ablated as the search masked it). Issue 20's target on this
organism: <= 5% of heads and <= 2% of neurons, harmful compliance >= 80%, benign cross-entropy
within 5%. The target rows form the curve of compliance against circuit size.
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
from safeseek_tl.seek import SafeSeek

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# (label, SeekConfig settings by dotted name, time budget in seconds or None). The objectives run their full
# schedule (50 epochs); the size targets run on a 90-second budget each (the 2-core CPU is shared).
BUDGET_S = 90.0
RUNS: tuple[tuple[str, dict[str, object], float | None], ...] = (
    ("official", {"loss.alignment_objective": "official"}, None),
    ("necessity", {"loss.alignment_objective": "necessity"}, None),
    ("refusal_score", {"loss.alignment_objective": "refusal_score"}, None),
    *(
        (f"{mode}, target 1 head + {n} neurons, {BUDGET_S:.0f} s budget", {"loss.alignment_objective": mode, "target.heads": 1, "target.neurons": n}, BUDGET_S)
        for mode, sizes in (("refusal_score", (8, 30, 120, 240)), ("necessity", (30, 120)))
        for n in sizes
    ),
    ("refusal_score, ablation=mean, target 1 head + 30 neurons, 90 s budget", {"loss.alignment_objective": "refusal_score", "target.heads": 1, "target.neurons": 30, "masks.fill": "mean"}, BUDGET_S),
    # logits started at 0.1 switch units off within a short budget (from 1.0 it takes about 100 steps)
    ("necessity, init 0.1", {"loss.alignment_objective": "necessity", "masks.init_heads": 0.1, "masks.init_neurons": 0.1}, None),
    *(
        (f"necessity, init 0.1, target 1 head + {n} neurons, 180 s budget", {"loss.alignment_objective": "necessity", "masks.init_heads": 0.1, "masks.init_neurons": 0.1, "target.heads": 1, "target.neurons": n}, 180.0)
        for n in (30, 60, 120)
    ),
    ("necessity, init 0.1, target 1 head + 30 neurons, long budget 480 s", {"loss.alignment_objective": "necessity", "masks.init_heads": 0.1, "masks.init_neurons": 0.1, "target.heads": 1, "target.neurons": 30}, 480.0),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-eval", type=int, default=40)
    parser.add_argument("--only", help="run only the rows whose label contains this text")
    args = parser.parse_args()
    loaded = load_model("organism:tiny-aligned")
    data = BehaviourData.from_records(load_data("alignment", "test")[: args.n_eval], load_data("benign", "test")[: args.n_eval])
    train, val = load_data("alignment", "train")[:100], load_data("alignment", "val")[:20]
    benign = load_data("benign", "train")[:100]
    print("| run | epochs run, best | heads | neurons | behaviour (ASR) full → ablated | refusal of harmful | benign answered | utility CE (nats/token) | - | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, overrides, budget in RUNS:
        if args.only and args.only not in label:
            continue
        config = config_as_recorded("alignment", "both", **overrides)
        start = time.perf_counter()
        result = SafeSeek(loaded, config).fit(train, val, progress=False, benign_records=benign, time_budget_s=budget)
        wall = time.perf_counter() - start
        last = result.history[-1]  # the mask's own size at the end, before a target's cut
        steps = f"{len(result.history)} epochs, best {result.best_epoch}, last mask off {last.get('off_heads')} + {last.get('off_neurons')}"
        report(f"{label} | {steps}", loaded, result, data, "asr_harmful", wall)


if __name__ == "__main__":
    main()
