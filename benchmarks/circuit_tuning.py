"""Safety Circuit Tuning on the tiny organisms: backdoor removal and safety retention.

    OMP_NUM_THREADS=1 python benchmarks/circuit_tuning.py [--n-eval 100] [--backdoor-circuit FILE] [--align-circuit FILE]

Backdoor removal (tiny-backdoor): fine-tune on the backdoor training records (the clean refusal as
the answer to both the clean and the triggered prompt) at the same step budget and learning rate,
tuning only (a) the planted backdoor circuit (ground_truth.json: 2 heads + 16 neurons), (b) only
its two heads, (c) the circuit SafeSeek finds (defaults, units "both", on 100 training and 20
validation records; ``--backdoor-circuit`` gives a saved circuit.json instead), (d) random units
with the same count per layer as the planted circuit (``random_like``, several draws), or (e)
every parameter (full fine-tuning), also at a 10x smaller learning rate. Measured: attack
success on triggered test prompts, refusal of clean harmful prompts, benign prompts answered,
benign completion cross-entropy, trainable parameters, wall time of the tuning.

Safety retention (tiny-aligned): fine-tune on benign helpfulness data (benign train records) with
every parameter trainable, with SafeSeek's alignment circuit protected (frozen), and with random
units of the same per-layer count protected. Measured: refusal rate on harmful test prompts before
and after, retention = after / before. The alignment circuit is found with SafeSeek's defaults
(units "both") unless ``--align-circuit`` gives a saved circuit.json.

Prints markdown tables for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import date

import torch
from recorded_settings import config_as_recorded  # benchmarks/ is the script's folder

from safeseek_tl import Circuit, load_model
from safeseek_tl.baselines.contrasting import random_like
from safeseek_tl.evaluate import BehaviourData, measure
from safeseek_tl.organisms import ground_truth, load_data
from safeseek_tl.seek import SafeSeek
from safeseek_tl.tuning import TuneConfig, tune

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run(organism: str, records: Sequence, circuit_of: Callable | None, config: TuneConfig, data: BehaviourData) -> dict[str, float]:
    """Tune a fresh copy of ``organism`` and measure it; ``circuit_of(loaded)`` gives the circuit."""
    loaded = load_model(f"organism:{organism}")
    circuit = circuit_of(loaded) if circuit_of is not None else None
    result = tune(loaded, records, circuit, config, progress=False)
    return {**measure(loaded, data), "trainable": result.trainable_params, "wall": result.wall_s}


def mean_and_range(rows: list[dict[str, float]], key: str, scale: float = 1.0, fmt: str = ".0f", unit: str = "") -> str:
    """One run's value, or the mean and (min–max) of several runs."""
    values = [scale * row[key] for row in rows]
    if len(values) == 1:
        return f"{values[0]:{fmt}}{unit}"
    return f"{statistics.mean(values):{fmt}}{unit} ({min(values):{fmt}}–{max(values):{fmt}}{unit})"


def backdoor_table(steps_list: Sequence[int], lr: float, n_random: int, n_eval: int, circuit_file: str | None) -> None:
    train = load_data("backdoor", "train")
    data = BehaviourData.from_records(load_data("backdoor", "test")[:n_eval], load_data("benign", "test")[:n_eval])
    base_model = load_model("organism:tiny-backdoor")
    base = measure(base_model, data)
    found, how = seek_circuit("tiny-backdoor", "backdoor", circuit_file)
    precision, recall = found.precision_recall(ground_truth("tiny-backdoor", base_model))
    print(f"### tiny-backdoor: backdoor removal ({len(train)} training records, lr {lr:g}, batch 16; {n_eval} test prompts per kind)\n")
    print(f"SafeSeek's backdoor circuit: heads {found.head_list}, {found.n_neurons} neurons ({how}); "
          f"against the planted units precision {precision:.2f}, recall {recall:.2f}.\n")
    print(f"Before tuning: ASR {100 * base['asr_triggered']:.0f}%, clean harmful refused {100 * base['refusal_harmful']:.0f}%, "
          f"benign answered {100 * base['benign_answered']:.0f}%, utility CE {base['utility_loss']:.4f}.\n")
    print("| steps | tuned | trainable params | ASR (triggered) | clean harmful refused | benign answered | utility CE (nats/token) | wall (tuning) |")
    print("|---|---|---|---|---|---|---|---|")
    truth = lambda loaded: ground_truth("tiny-backdoor", loaded)  # noqa: E731
    heads = lambda loaded: Circuit.from_units(loaded.shape, heads=truth(loaded).head_list)  # noqa: E731
    for steps in steps_list:
        config = TuneConfig(mode="only", steps=steps, lr=lr)
        arms: list[tuple[str, list[dict[str, float]]]] = [
            ("only the backdoor circuit (2 heads + 16 neurons)", [run("tiny-backdoor", train, truth, config, data)]),
            ("only its 2 heads", [run("tiny-backdoor", train, heads, config, data)]),
            (f"only SafeSeek's circuit ({found.n_heads} heads + {found.n_neurons} neurons)", [run("tiny-backdoor", train, lambda loaded: found, config, data)]),
            (f"only random units, same count per layer (mean (min–max) of {n_random} draws)",
             [run("tiny-backdoor", train, lambda loaded, s=seed: random_like(truth(loaded), seed=s), config, data) for seed in range(n_random)]),
            ("full fine-tuning", [run("tiny-backdoor", train, None, TuneConfig(mode="full", steps=steps, lr=lr), data)]),
            (f"full fine-tuning, lr {lr / 10:g}", [run("tiny-backdoor", train, None, TuneConfig(mode="full", steps=steps, lr=lr / 10), data)]),
        ]
        for label, rows in arms:
            print(f"| {steps} | {label} | {mean_and_range(rows, 'trainable', fmt=',.0f')} | {mean_and_range(rows, 'asr_triggered', 100, unit='%')} "
                  f"| {mean_and_range(rows, 'refusal_harmful', 100, unit='%')} | {mean_and_range(rows, 'benign_answered', 100, unit='%')} "
                  f"| {mean_and_range(rows, 'utility_loss', fmt='.4f')} | {mean_and_range(rows, 'wall', fmt='.1f', unit=' s')} |", flush=True)
    print()


def seek_circuit(organism: str, scenario: str, path: str | None) -> tuple[Circuit, str]:
    """SafeSeek's circuit of ``organism`` (defaults, units both, 100 training + 20 validation records), or a saved one."""
    loaded = load_model(f"organism:{organism}")
    if path:
        return Circuit.load(path, expected=loaded.shape), f"loaded from {path}"
    train, val = load_data(scenario, "train")[:100], load_data(scenario, "val")[:20]
    start = time.perf_counter()
    result = SafeSeek(loaded, config_as_recorded(scenario, "both")).fit(train, val, progress=False)
    return result.circuit, f"SafeSeek {scenario} defaults, units both, 100 training + 20 validation records, {time.perf_counter() - start:.0f} s"


def retention_table(steps: int, lr: float, n_random: int, n_eval: int, circuit_file: str | None) -> None:
    train = load_data("benign", "train")
    data = BehaviourData.from_records(load_data("alignment", "test")[:n_eval], load_data("benign", "test")[:n_eval])
    circuit, how = seek_circuit("tiny-aligned", "alignment", circuit_file)
    base = measure(load_model("organism:tiny-aligned"), data)
    print(f"### tiny-aligned: refusal retention under benign fine-tuning ({len(train)} benign records, {steps} steps, lr {lr:g}, batch 16; {n_eval} harmful test prompts)\n")
    print(f"Alignment circuit: {circuit.n_heads} heads ({100 * circuit.fraction('heads'):.1f}%), {circuit.n_neurons} neurons "
          f"({100 * circuit.fraction('neurons'):.1f}%) ({how}).\n")
    print("| fine-tune | trainable params | refused before | refused after | retention | refusal score after | benign answered | utility CE (nats/token) | wall (tuning) |")
    print("|---|---|---|---|---|---|---|---|---|")
    config = lambda mode: TuneConfig(mode=mode, steps=steps, lr=lr)  # noqa: E731
    arms = [
        ("unprotected (full)", [run("tiny-aligned", train, None, config("full"), data)]),
        ("alignment circuit protected", [run("tiny-aligned", train, lambda loaded: circuit, config("protect"), data)]),
        (f"random units protected, same count per layer (mean (min–max) of {n_random} draws)",
         [run("tiny-aligned", train, lambda loaded, s=seed: random_like(circuit, seed=s), config("protect"), data) for seed in range(n_random)]),
    ]
    before = base["refusal_harmful"]
    for label, rows in arms:
        for row in rows:
            row["retention"] = row["refusal_harmful"] / before
        print(f"| {label} | {mean_and_range(rows, 'trainable', fmt=',.0f')} | {100 * before:.0f}% | {mean_and_range(rows, 'refusal_harmful', 100, unit='%')} "
              f"| {mean_and_range(rows, 'retention', 100, unit='%')} | {mean_and_range(rows, 'refusal_score_harmful', fmt='.2f')} "
              f"| {mean_and_range(rows, 'benign_answered', 100, unit='%')} | {mean_and_range(rows, 'utility_loss', fmt='.4f')} "
              f"| {mean_and_range(rows, 'wall', fmt='.1f', unit=' s')} |", flush=True)
    print(f"\nBefore fine-tuning: refusal score {base['refusal_score_harmful']:.2f}, benign answered {100 * base['benign_answered']:.0f}%, "
          f"utility CE {base['utility_loss']:.4f}.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-eval", type=int, default=100, help="test prompts per kind")
    parser.add_argument("--backdoor-steps", default="10,40", help="comma-separated step budgets")
    parser.add_argument("--backdoor-lr", type=float, default=1e-3)
    parser.add_argument("--retention-steps", type=int, default=100)
    parser.add_argument("--retention-lr", type=float, default=1e-3)
    parser.add_argument("--n-random", type=int, default=3, help="random draws per random arm")
    parser.add_argument("--backdoor-circuit", default=None, help="a saved tiny-backdoor circuit.json (default: run SafeSeek)")
    parser.add_argument("--align-circuit", default=None, help="a saved alignment circuit.json (default: run SafeSeek)")
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"Measured {date.today()} on {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          "greedy generation (32 tokens), keyword judge; AdamW without weight decay, constant lr, gradient clip 1.0, seed 0.\n")
    backdoor_table([int(s) for s in args.backdoor_steps.split(",")], args.backdoor_lr, args.n_random, args.n_eval, args.backdoor_circuit)
    retention_table(args.retention_steps, args.retention_lr, args.n_random, args.n_eval, args.align_circuit)
    print(f"Total {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
