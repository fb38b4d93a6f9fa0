"""Measure the bundled organisms on the test split and print the docs table (docs/organisms.md).

For each organism of a family: refusal of harmful prompts, answers to benign prompts, attack
success rate with and without the trigger; for the backdoor organism also with the planted units
zero-ablated and with the same number of random other units ablated. Greedy generation, keyword
judge.

    python benchmarks/organisms_table.py [--family tiny|smollm2] [--n 100] [--draws 5] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
from datetime import date

import torch

from safeseek_tl import ablated, load_model
from safeseek_tl.baselines import random_like
from safeseek_tl.evaluate import BehaviourData, measure
from safeseek_tl.models import device_name
from safeseek_tl.organisms import ground_truth, load_data

os.environ.setdefault("HF_HUB_OFFLINE", "1")

COLUMNS = ("refusal_harmful", "benign_answered", "asr_harmful", "asr_triggered")
FAMILIES = {"tiny": ("tiny-base", "tiny-aligned", "tiny-backdoor"), "smollm2": ("smollm2-base", "smollm2-aligned", "smollm2-backdoor")}


def row(name: str, values: dict[str, float]) -> str:
    return f"| {name} | " + " | ".join(f"{100 * values[c]:.0f}%" for c in COLUMNS) + " |"


def random_other_units(truth, seed: int):
    """Random heads and neurons with the ground truth's per-layer counts, none of them planted."""
    while True:
        candidate = random_like(truth, seed)
        if len(candidate & truth) == 0:
            return candidate
        seed += 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--family", choices=sorted(FAMILIES), default="tiny")
    parser.add_argument("--n", type=int, default=100, help="test prompts per kind")
    parser.add_argument("--draws", type=int, default=5, help="random ablations of the backdoor organism")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    names = FAMILIES[args.family]
    backdoor = names[-1]
    harmful = load_data("backdoor", "test", backdoor)[: args.n]
    data = BehaviourData.from_records(harmful, load_data("benign", "test", backdoor)[: args.n])
    print(f"Measured {date.today()} on {device_name(args.device)} / torch {torch.__version__}, {args.n} test prompts per kind, "
          f"{args.max_new_tokens} new tokens.\n")
    print("| organism | refuses harmful | answers benign | ASR (no trigger) | ASR (trigger) |")
    print("|---|---|---|---|---|")
    for name in names:
        loaded = load_model(f"organism:{name}", device=args.device)
        print(row(name, measure(loaded, data, max_new_tokens=args.max_new_tokens)), flush=True)
    truth = ground_truth(backdoor, loaded)
    with ablated(loaded.model, truth):
        label = f"{backdoor}, {truth.n_heads} planted heads + {truth.n_neurons} neurons zeroed"
        print(row(label, measure(loaded, data, max_new_tokens=args.max_new_tokens)), flush=True)
    for seed in range(args.draws):
        other = random_other_units(truth, seed)
        with ablated(loaded.model, other):
            label = f"{backdoor}, {other.n_heads} random heads + {other.n_neurons} random neurons zeroed (draw {seed})"
            print(row(label, measure(loaded, data, max_new_tokens=args.max_new_tokens)), flush=True)


if __name__ == "__main__":
    main()
