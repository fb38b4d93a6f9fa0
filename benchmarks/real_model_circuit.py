"""A found alignment circuit of Qwen2.5-Coder-0.5B-Instruct against the baselines at the same unit counts.

    make fetch-qwen                                   # once: the model (491 MB, checked)
    safeseek data export harmful --split train --model qwen2.5-coder-0.5b-instruct --out runs/q/harmful_train.jsonl
    safeseek discover --model qwen2.5-coder-0.5b-instruct --data runs/q/harmful_train.jsonl \\
        --benign runs/q/harmless_train.jsonl --scenario alignment --units both --time-budget 45 --out runs/q/seek
    python benchmarks/real_model_circuit.py --run runs/q/seek

Reads the circuit of a ``safeseek discover`` run folder (H heads, N neurons) and measures, on the
held-out test splits: the full model; the circuit ablated; the top H heads and N neurons of each
baseline's ranking ablated the same way (attribution patching, the refusal direction's unit
ranking; Ships ranks heads only: its row is its top H heads); the refusal direction itself
(directional ablation at every layer). Each row: harmful test prompts refused (greedy answers,
judged by the keyword judge and by Arditi et al.'s refusal phrases) and their mean refusal score,
harmless test prompts answered (both judges), next-token KL on harmless test prompts. Every
baseline reads the same first ``--n-train`` harmful and harmless training prompts; the direction
is the one benchmarks/real_model.py chose and saved (``--direction``), so it is not searched again.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
from real_model import log, machine, prompts  # benchmarks/ is the script's folder

from safeseek_tl import load_model
from safeseek_tl.ablation import ablated
from safeseek_tl.baselines.direction import RefusalDirection, direction_ablated, direction_unit_scores
from safeseek_tl.compare import Intervention, compare
from safeseek_tl.data import AlignmentRecord, BenignRecord
from safeseek_tl.datasets import benign_records
from safeseek_tl.evaluate import BehaviourData, measure, reference_activations
from safeseek_tl.methods import attribute
from safeseek_tl.metrics import RefusalJudge
from safeseek_tl.seek import SeekResult
from safeseek_tl.units import Circuit, Scores

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODEL = "qwen2.5-coder-0.5b-instruct"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--run", required=True, help="a safeseek discover output folder")
    add("--model", default=MODEL)
    add("--n-eval", type=int, default=60, help="harmful and harmless test prompts measured (60 = the whole splits)")
    add("--n-kl", type=int, default=30, help="harmless test prompts for the KL")
    add("--n-train", type=int, default=32, help="harmful and harmless training prompts each baseline reads")
    add("--ships-prompts", type=int, default=2)
    add("--direction", help="a refusal direction file (benchmarks/real_model.py --save-direction); without it, no direction rows")
    add("--max-new-tokens", type=int, default=32)
    add("--batch-size", type=int, default=16)
    add("--save-scores", help="a folder for each baseline's scores (NAME.safetensors, its scoring time in the metadata): `safeseek benchmark --scores` reads them")
    add("--at-most", action="store_true", help="read the run's size target as a cap: only the units its mask switched off (target.exact=false)")
    add("--baseline-scores", help="a --save-scores folder of an earlier run: its rankings are read, not scored again (the same --n-train prompts)")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    started = time.perf_counter()
    print(f"{machine()}\nConfiguration: {vars(args)}")
    loaded = load_model(args.model)
    result = SeekResult.load(args.run, loaded.shape)
    found, fill = (result.circuit & result.masked_off() if args.at_most else result.circuit), result.config.masks.fill
    n_heads, n_neurons = found.n_heads, found.n_neurons
    shape = loaded.shape
    log(started, f"circuit of {args.run}: {n_heads} heads ({n_heads / (shape.n_layers * shape.n_heads):.2%}), {n_neurons} neurons ({n_neurons / (shape.n_layers * shape.d_mlp):.2%}), {fill} ablation")

    judge, others = RefusalJudge(), {"arditi": RefusalJudge.arditi()}
    harmless_train = prompts("harmless", "train", args.n_train)
    reference = reference_activations(loaded, BehaviourData([], [], [BenignRecord(p, "") for p in harmless_train])) if fill == "mean" else None
    eval_data = BehaviourData(prompts("harmful", "test", args.n_eval), [], benign_records(loaded, prompts("harmless", "test", args.n_eval), max_new_tokens=args.max_new_tokens))
    baseline = measure(loaded, eval_data, judge, args.max_new_tokens, other_judges=others)
    log(started, "full model measured")

    direction = RefusalDirection.load(args.direction).direction if args.direction else None
    circuits: dict[str, tuple[Circuit, float]] = {"SafeSeek (this run)": (found, float("nan"))}
    rankings = saved_rankings(args.baseline_scores, shape) if args.baseline_scores else baseline_rankings(loaded, args, harmless_train, direction)
    for name, scores, seconds in rankings:
        log(started, f"{name}: {seconds:.0f} s")
        if args.save_scores and not args.baseline_scores:
            scores.metadata["wall_time_s"] = seconds
            os.makedirs(args.save_scores, exist_ok=True)
            scores.save(os.path.join(args.save_scores, f"{name.split(' ')[0]}.safetensors"))
        circuits[name] = (Circuit.top_k(scores, heads=n_heads, neurons=n_neurons if scores.neurons is not None else None), seconds)
    interventions = {
        name: Intervention(lambda circuit=circuit: ablated(loaded.model, circuit, fill, reference), f"{circuit.n_heads} heads + {circuit.n_neurons} neurons", seconds)
        for name, (circuit, seconds) in circuits.items()
    }
    if direction is not None:
        interventions["refusal direction (ablated)"] = Intervention(lambda: direction_ablated(loaded.model, direction), "1 direction")
    table = compare(loaded, {}, [1], "alignment", eval_data, judge=judge, max_new_tokens=args.max_new_tokens, interventions=interventions,
                    kl_prompts=prompts("harmless", "test", args.n_kl), baseline=baseline, other_judges=others).table  # fmt: skip
    print(f"\nJudges: {judge.describe()} (first figure); {others['arditi'].describe()} (second figure)")
    print(f"Full model: harmful refused {baseline['refusal_harmful']:.0%} / {baseline['refusal_harmful_arditi']:.0%} (refusal score {baseline['refusal_score_harmful']:.2f}), "
          f"harmless answered {baseline['benign_answered']:.0%} / {baseline['benign_answered_arditi']:.0%}\n")  # fmt: skip
    print("| method | size | harmful refused (Ships' list / Arditi's phrases) | refusal score | harmless answered (Ships' list / Arditi's phrases) | KL on harmless | scoring time |")
    print("|---|---|---|---|---|---|---|")
    for row in table.to_dict(orient="records"):
        refused = f"{1 - row['asr_harmful']:.0%} / {1 - row['asr_harmful_arditi']:.0%}"
        answered = f"{row['benign_answered']:.0%} / {row['benign_answered_arditi']:.0%}"
        seconds = row["wall_time_s"]  # none for SafeSeek (its search's budget) and the direction (found before)
        scoring = "—" if math.isnan(seconds) else f"{seconds:.0f} s"
        print(f"| {row['method']} | {row['size']} | {refused} | {row['refusal_score_harmful']:.2f} | {answered} | {row['kl']:.3f} | {scoring} |")
    log(started, "done")


BASELINE_NAMES = {
    "attr-patch": "attr-patch",
    "ships": "ships (heads only)",
    "refusal-direction": "refusal-direction units (ranking only; finding the direction not timed here)",
}
"""Each baseline's file name in a --save-scores folder, and its row's name."""


def baseline_rankings(loaded, args, harmless_train: list[str], direction: torch.Tensor | None):
    """(name, Scores, seconds) of each unit-level baseline on the same training prompts."""
    harmful_train = prompts("harmful", "train", args.n_train)
    records = [AlignmentRecord(prompt, "", "") for prompt in harmful_train]  # these methods read the prompts only
    patched = attribute("attr-patch", loaded, records, "alignment", benign=[BenignRecord(p, "") for p in harmless_train], units="both", progress=False)
    yield BASELINE_NAMES["attr-patch"], patched.scores, patched.wall_time_s
    ships = attribute("ships", loaded, records[: args.ships_prompts], "alignment", progress=False)
    yield BASELINE_NAMES["ships"], ships.scores, ships.wall_time_s
    if direction is not None:
        start = time.perf_counter()
        ranking: Scores = direction_unit_scores(loaded, direction, harmful_train, harmless_train, batch_size=args.batch_size)
        yield BASELINE_NAMES["refusal-direction"], ranking, time.perf_counter() - start


def saved_rankings(folder: str, shape):
    """(name, Scores, seconds) of each baseline ranking saved by an earlier run (``--save-scores``)."""
    for stem, name in BASELINE_NAMES.items():
        path = os.path.join(folder, f"{stem}.safetensors")
        if os.path.exists(path):
            scores = Scores.load(path, shape)
            yield name, scores, float(scores.metadata.get("wall_time_s", float("nan")))


if __name__ == "__main__":
    main()
