"""Refusal against the cost on harmless prompts, for neuron circuits of several sizes from each ranking of the real model.

    python benchmarks/real_model_tradeoff.py --run runs/q/seek --scores runs/q/scores \\
        --direction runs/q/direction.safetensors --sizes 100,200,400,798

No generation, so a whole curve costs minutes, not hours: for each ranking (a SafeSeek run's main-mask
logits, lowest first; each ``NAME.safetensors`` of a ``real_model_circuit.py --save-scores`` folder)
and each size, the top neurons are zero-ablated and two numbers are read at the last prompt
position: the mean refusal score of the harmful test prompts (and the share of them still above 0,
"refusal likely") and the next-token KL(full || ablated) on the harmless test prompts. The refusal
direction's own ablation (``--direction``) is the reference point. The refusal score is a proxy for
the judged refusal rate (real_model_circuit.py judges generations); on this model the direction's
score of -3.05 went with 10% of the harmful test prompts refused by the keyword judge.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from real_model import MODEL, log, machine, prompts  # benchmarks/ is the script's folder

from safeseek_tl import load_model
from safeseek_tl.ablation import ablated
from safeseek_tl.baselines.direction import RefusalDirection, direction_ablated
from safeseek_tl.evaluate import last_logits, refusal_scores
from safeseek_tl.metrics import last_position_kl
from safeseek_tl.models import LoadedModel
from safeseek_tl.seek import SeekResult
from safeseek_tl.units import Circuit, Scores


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--run", help="a safeseek discover folder whose neuron logits rank the neurons (lowest logit first)")
    add("--scores", help="a folder of baseline rankings (real_model_circuit.py --save-scores)")
    add("--direction", help="a refusal direction file (benchmarks/real_model.py --save-direction)")
    add("--sizes", default="100,200,400,800", help="neuron counts, comma-separated")
    add("--n-eval", type=int, default=60, help="harmful and harmless test prompts (60 = the whole splits)")
    add("--model", default=MODEL)
    return parser.parse_args()


def rankings(run: str | None, scores: str | None, loaded: LoadedModel) -> dict[str, Scores]:
    """Each neuron ranking by name: the run's (``-logit``: the most surely off first) and each saved baseline's."""
    out = {}
    if run:
        logits = SeekResult.load(run, loaded.shape).main_logits
        out[f"SafeSeek ({Path(run).name})"] = Scores(loaded.shape, neurons=-logits["neurons"], method="safeseek")
    for path in sorted(Path(scores).glob("*.safetensors")) if scores else []:
        ranking = Scores.load(path, loaded.shape)
        if ranking.neurons is not None:
            out[path.stem] = ranking
    return out


def main() -> None:
    args = arguments()
    started = time.perf_counter()
    print(f"{machine()}\nConfiguration: {vars(args)}")
    loaded = load_model(args.model)
    harmful, harmless = prompts("harmful", "test", args.n_eval), prompts("harmless", "test", args.n_eval)
    full_harmless = last_logits(loaded, harmless)

    def row(name: str, size: str, intervention: Callable[[], AbstractContextManager[Any]]) -> None:
        with intervention():
            score = refusal_scores(loaded, harmful)
            kl = float(last_position_kl(full_harmless, last_logits(loaded, harmless)).mean())
        print(f"| {name} | {size} | {score.mean():.2f} | {(score > 0).float().mean():.0%} | {kl:.3f} |", flush=True)

    full = refusal_scores(loaded, harmful)
    print(f"\n| ranking | neurons ablated | refusal score (harmful) | score > 0 | KL on harmless |\n|---|---|---|---|---|\n"
          f"| the full model | 0 | {full.mean():.2f} | {(full > 0).float().mean():.0%} | 0 |")  # fmt: skip
    if args.direction:
        direction = RefusalDirection.load(args.direction).direction
        row("refusal direction, ablated", "1 direction", lambda: direction_ablated(loaded.model, direction))
    ranked = rankings(args.run, args.scores, loaded)
    for size in (int(part) for part in args.sizes.split(",")):
        for name, scores in ranked.items():
            circuit = Circuit.top_k(scores, neurons=size)
            row(name, str(size), lambda circuit=circuit: ablated(loaded.model, circuit))
    log(started, "done")


if __name__ == "__main__":
    main()
