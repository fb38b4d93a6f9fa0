"""SafeSeek on the organisms: circuit sizes, behaviour before/after ablation, ground truth.

    python benchmarks/safeseek_organisms.py [--family tiny|smollm2] [--n-eval 40] [--device cuda] [--official]

tiny (default settings unless stated): the backdoor circuit of tiny-backdoor (heads + neurons),
the complete search on it, and the alignment circuit of tiny-aligned (heads + neurons).
smollm2: SafeSeek on smollm2-backdoor / smollm2-aligned: by default what a 2-core CPU affords
(SMOLLM2_CPU_RUNS: the backdoor and the alignment on heads, 2 epochs); with --official, the
backdoor and alignment runs with the official settings on heads and neurons (SMOLLM2_OFFICIAL_RUNS,
for a GPU).
Prints markdown rows for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date
from pathlib import Path

import torch
from recorded_settings import config_as_recorded  # benchmarks/ is the script's folder

from safeseek_tl import load_model
from safeseek_tl.evaluate import BehaviourData, evaluate
from safeseek_tl.models import device_name
from safeseek_tl.organisms import ground_truth, load_data
from safeseek_tl.seek import SafeSeek, SeekConfig, discover_complete, prune_circuit, search_fill

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def report(name: str, loaded, result, data: BehaviourData, key: str, wall: float, truth=None, fill=None) -> None:
    """One table row, the circuit ablated as the search masked it. ``fill``: the search's fill (default: the result's own)."""
    reference = fill if fill is not None else result.reference()
    behaviour = evaluate(loaded, result.circuit, data, mode=result.config.ablation_mode, reference=reference, conditions=("full", "ablated"))
    full, cut = behaviour["full"], behaviour["ablated"]
    c = result.circuit
    pr = "-"
    if truth is not None and len(truth):
        precision, recall = c.precision_recall(truth)
        heads_recall = c.precision_recall(truth, kinds=("heads",))[1]
        neurons_recall = c.precision_recall(truth, kinds=("neurons",))[1]
        pr = f"P {precision:.2f} / R {recall:.2f} (heads R {heads_recall:.2f}, neurons R {neurons_recall:.2f})"
    utility = 100 * (cut["utility_loss"] - full["utility_loss"]) / full["utility_loss"]
    print(
        f"| {name} | {c.n_heads} ({100 * c.fraction('heads'):.1f}%) | {c.n_neurons} ({100 * c.fraction('neurons'):.2f}%) "
        f"| {100 * full[key]:.0f}% → {100 * cut[key]:.0f}% | {100 * full['refusal_harmful']:.0f}% → {100 * cut['refusal_harmful']:.0f}% "
        f"| {100 * full['benign_answered']:.0f}% → {100 * cut['benign_answered']:.0f}% "
        f"| {full['utility_loss']:.4f} → {cut['utility_loss']:.4f} ({utility:+.0f}%) | {pr} | {wall:.0f} s |",
        flush=True,
    )


# (scenario, units, SeekConfig settings by dotted name) on every training record, 20 validation records, rows cut to 96
# tokens; each run is reported as found and pruned on the validation prompts. Official:
# SeekConfig's defaults (the official epochs, lr and batch size), for a GPU. CPU: what a 2-core
# machine affords, heads only for 2 epochs (40 steps) at the official lr:
# the backdoor (its head logits start at 0.1, so about 10 Adam steps at lr 1e-2 can switch a head
# off), and the alignment with its head logits also started at 0.1 (its default, 1.0, would need
# about 100 steps). With 20 benign answers in the backdoor's objective (session 3, the old build)
# 40 steps did no better; pass benign records to fit() to try it.
SMOLLM2_OFFICIAL_RUNS: tuple[tuple[str, str, dict[str, object]], ...] = (("backdoor", "both", {}), ("alignment", "both", {}))
SMOLLM2_CPU_RUNS: tuple[tuple[str, str, dict[str, object]], ...] = (
    ("backdoor", "heads", {"schedule.epochs": 2}),
    ("alignment", "heads", {"schedule.epochs": 2, "masks.init_heads": 0.1}),
)
SMOLLM2_ORGANISM = {"backdoor": ("smollm2-backdoor", "asr_triggered"), "alignment": ("smollm2-aligned", "asr_harmful")}


def smollm2(n_eval: int, device: str, official: bool, out: Path | None, skip: int = 0) -> None:
    benign = load_data("benign", "test", "smollm2-aligned")[:n_eval]
    for scenario, units, overrides in (SMOLLM2_OFFICIAL_RUNS if official else SMOLLM2_CPU_RUNS)[skip:]:
        name, key = SMOLLM2_ORGANISM[scenario]
        loaded = load_model(f"organism:{name}", device=device)
        truth = ground_truth(name, loaded)
        data = BehaviourData.from_records(load_data(scenario, "test", name)[:n_eval], benign)
        train, val = load_data(scenario, "train", name), load_data(scenario, "val", name)[:20]
        config = config_as_recorded(scenario, units, **{"schedule.max_length": 96, **overrides})
        start = time.perf_counter()
        result = SafeSeek(loaded, config).fit(train, val, progress=not official)
        wall = time.perf_counter() - start
        extra = "".join(f", {option.partition('.')[2]} {value}" for option, value in overrides.items() if option != "schedule.epochs")
        label = f"{name}, {scenario}, {config.units}, {config.schedule.epochs} epochs{extra}"
        if out is not None:
            result.save(out / label.replace(", ", "_").replace(" ", "-"))
        report(label, loaded, result, data, key, wall, truth)
        report_pruned(label, loaded, result, val, data, key, wall, truth)


def report_pruned(label: str, loaded, result, val: list, data: BehaviourData, key: str, wall: float, truth) -> None:
    """The row of ``result`` pruned on the validation prompts (``prune_circuit``); wall includes the search's."""
    start = time.perf_counter()
    try:
        pruned = prune_circuit(loaded, result, val)
    except ValueError as err:
        print(f"| {label}, pruned | {err} |", flush=True)
        return
    report(f"{label}, pruned", loaded, pruned, data, key, wall + time.perf_counter() - start, truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--family", choices=("tiny", "smollm2"), default="tiny")
    parser.add_argument("--n-eval", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--official", action="store_true", help="smollm2: every record and the official settings")
    parser.add_argument("--skip", type=int, default=0, help="smollm2: start from this run of the list (resume a long benchmark)")
    parser.add_argument("--out", type=Path, help="smollm2: save each run's result (circuit, masks, history) in OUT/<organism>")
    args = parser.parse_args()
    print(f"Measured {date.today()} on {device_name(args.device)}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{args.n_eval} test prompts per kind, greedy, keyword judge.\n")
    print("| run | heads | neurons | behaviour (ASR) full → ablated | refusal of clean harmful | benign answered | utility CE (nats/token) | vs ground truth | wall |")
    print("|---|---|---|---|---|---|---|---|---|")
    if args.family == "smollm2":
        smollm2(args.n_eval, args.device, args.official, args.out, args.skip)
        return
    benign = load_data("benign", "test")[: args.n_eval]

    loaded = load_model("organism:tiny-backdoor", device=args.device)
    truth = ground_truth("tiny-backdoor", loaded)
    data = BehaviourData.from_records(load_data("backdoor", "test")[: args.n_eval], benign)
    train, val = load_data("backdoor", "train")[:100], load_data("backdoor", "val")[:20]
    config = SeekConfig.of("backdoor", "both")
    start = time.perf_counter()
    result = SafeSeek(loaded, config).fit(train, val, progress=False)
    report("tiny-backdoor, backdoor, both", loaded, result, data, "asr_triggered", time.perf_counter() - start, truth)
    start = time.perf_counter()
    complete = discover_complete(loaded, train, config, val, benign_records=load_data("benign", "val")[:20], progress=False)
    report(f"tiny-backdoor, complete ({complete.rounds} rounds)", loaded, complete, data, "asr_triggered", time.perf_counter() - start, truth)

    loaded = load_model("organism:tiny-aligned", device=args.device)
    data = BehaviourData.from_records(load_data("alignment", "test")[: args.n_eval], benign)
    train, val = load_data("alignment", "train")[:100], load_data("alignment", "val")[:20]
    for label, overrides in (("defaults", {}), ("ablation=mean, w_refuse=0.2", {"masks.fill": "mean", "loss.w_refuse": 0.2})):
        start = time.perf_counter()
        config = config_as_recorded("alignment", "both", **overrides)
        result = SafeSeek(loaded, config).fit(train, val, progress=False)
        wall = time.perf_counter() - start
        report(f"tiny-aligned, alignment, both, {label}", loaded, result, data, "asr_harmful", wall, fill=search_fill(loaded, config, train))


if __name__ == "__main__":
    main()
