"""Each method's top-k units on tiny-backdoor against the planted ground truth, and Ships/Sahara
head ablations on tiny-aligned (the Ships paper's single-head and 3-head table, in form).

    python benchmarks/baselines_vs_truth.py [--n-train 100] [--n-eval 40]

Every method reads the same first ``--n-train`` training records (SafeSeek also selects its best
epoch on 20 validation records); the tables' ``data`` column says what each one reads from them.
Prints markdown tables (copied into benchmarks/RESULTS.md) with wall times.
"""

from __future__ import annotations

import argparse
import os
import platform
from datetime import date

import torch

from safeseek_tl import Circuit, ablated, load_model
from safeseek_tl.evaluate import BehaviourData, measure
from safeseek_tl.methods import attribute, run_method
from safeseek_tl.organisms import ground_truth, load_data

os.environ.setdefault("HF_HUB_OFFLINE", "1")



def backdoor_table(n: int) -> None:
    loaded = load_model("organism:tiny-backdoor")
    clean = load_model("organism:tiny-aligned")
    truth = ground_truth("tiny-backdoor", loaded)
    records = load_data("backdoor", "train")[:n]
    k = {"heads": truth.n_heads, "neurons": truth.n_neurons}
    pairs = f"{n} triggered + {n} clean prompts"
    runs = {  # name: (what the method reads from the records, its options) -- every method through the registry
        "safeseek": (f"{n} records (clean and triggered prompts, their target answers); the last 20 validate (schedule.val_size)", {}),
        "ships": (f"{n} triggered prompts", {}),
        "sahara": (f"{n} triggered prompts", {"steps": truth.n_heads}),
        "contrast": (f"{n} triggered prompts, through tiny-aligned and tiny-backdoor", {"base_model": clean}),
        "act-patch": (pairs, {}),
        "attr-patch": (pairs, {}),
        "probe": (pairs, {}),
    }
    print(f"\n### tiny-backdoor: top-k against the planted units (k = {k['heads']} heads, {k['neurons']} neurons; the first {n} training records)\n")
    print("| method | data | heads precision | heads recall | neurons precision | neurons recall | wall time |")
    print("|---|---|---|---|---|---|---|")
    for name, (data, options) in runs.items():
        found = attribute(name, loaded, records, "backdoor", units="both", **options)
        scores, wall = found.scores, found.wall_time_s
        cells = []
        for kind in ("heads", "neurons"):
            if scores.get(kind) is None:
                cells += ["-", "-"]
                continue
            top = Circuit.top_k(scores, **{kind: k[kind]})
            precision, recall = top.precision_recall(truth, kinds=(kind,))
            cells += [f"{precision:.2f}", f"{recall:.2f}"]
        print(f"| {name} | {data} | " + " | ".join(cells) + f" | {wall:.1f} s |", flush=True)


def ships_table(n: int, n_eval: int) -> None:
    loaded = load_model("organism:tiny-aligned")
    records = load_data("alignment", "train")[:n]
    data = BehaviourData.from_records(load_data("alignment", "test")[:n_eval], load_data("benign", "test")[:n_eval])
    before = measure(loaded, data)
    print(f"\n### tiny-aligned: harmful compliance (ASR) after ablating the top Ships / Sahara heads (scored on the harmful prompts of the first {n} training records; {n_eval} test prompts per kind)\n")
    print(f"Full model: ASR {100 * before['asr_harmful']:.0f}%, benign answered {100 * before['benign_answered']:.0f}%.\n")
    print("| method | heads | heads ablated | ASR after | change | benign answered |")
    print("|---|---|---|---|---|---|")
    ships = run_method("ships", loaded, records, "alignment")
    sahara = run_method("sahara", loaded, records, "alignment", steps=3)
    for name, scores in (("ships", ships), ("sahara", sahara)):
        for count in (1, 3):
            circuit = Circuit.top_k(scores, heads=count)
            with ablated(loaded.model, circuit):
                after = measure(loaded, data)
            print(f"| {name} | {count} | {circuit.head_list} | {100 * after['asr_harmful']:.0f}% | {100 * (after['asr_harmful'] - before['asr_harmful']):+.0f} pts | {100 * after['benign_answered']:.0f}% |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=100, help="training records every method reads")
    parser.add_argument("--n-eval", type=int, default=40, help="test prompts per kind for the tiny-aligned ablations")
    args = parser.parse_args()
    print(f"Measured {date.today()} on {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}.")
    backdoor_table(args.n_train)
    ships_table(args.n_train, args.n_eval)


if __name__ == "__main__":
    main()
