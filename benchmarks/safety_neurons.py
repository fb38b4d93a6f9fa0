"""Safety neurons' causal effect (Chen et al.; docs/choices.md), in form, on an organism pair.

M1 is the model before alignment, M2 after. Neurons are ranked by inference-time activation
contrasting (M2 against M1 on harmful prompts); the top ``--fraction`` of them are dynamically
patched from M2 into M1 while M1 generates. The metric F is the refusal rate on held-out harmful
prompts (the keyword judge; the paper uses a cost model's score), and the causal effect is
C = (F(M1 patched) - F(M1)) / (F(M2) - F(M1)). Controls: the same number of random neurons per
layer, and static patching of the top neurons with M2's mean activation.

    python benchmarks/safety_neurons.py [--pair tiny|smollm2] [--fractions 0.05,0.2] [--n-prompts 32]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date

import torch

from safeseek_tl import Circuit, RefusalJudge, generate, load_model
from safeseek_tl.baselines import causal_effect, dynamic_patching, random_like, static_patching
from safeseek_tl.methods import run_method
from safeseek_tl.organisms import load_data

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PAIRS = {"tiny": ("tiny-base", "tiny-aligned"), "smollm2": ("smollm2-base", "smollm2-aligned")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", choices=sorted(PAIRS), default="tiny")
    parser.add_argument("--fractions", default="0.05,0.2,0.5", help="comma-separated shares of all neurons")
    parser.add_argument("--n-prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()
    m1_name, m2_name = PAIRS[args.pair]
    m1, m2 = load_model(f"organism:{m1_name}"), load_model(f"organism:{m2_name}")
    records = load_data("alignment", "train", m2_name)[: args.n_prompts]
    prompts = [r.prompt for r in load_data("alignment", "test", m2_name)[: args.n_prompts]]
    judge = RefusalJudge()
    options = {"max_new_tokens": args.max_new_tokens, "progress": False}

    start = time.perf_counter()
    scores = run_method("contrast", m2, records, "alignment", base_model=m1)
    score_time = time.perf_counter() - start
    f_m1 = judge.refusal_rate(generate(m1.model, m1.chat, prompts, args.max_new_tokens, progress=False))
    f_m2 = judge.refusal_rate(generate(m2.model, m2.chat, prompts, args.max_new_tokens, progress=False))
    print(f"Measured {date.today()} on {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}.")
    print(f"\n### {m1_name} (M1) -> {m2_name} (M2): top contrasting neurons patched into M1; "
          f"{len(prompts)} held-out harmful prompts\n")
    print(f"Refusal rate F: M1 {f_m1:.0%}, M2 {f_m2:.0%}. Contrast scoring {score_time:.1f} s.\n")
    print("| patched into M1 | share of neurons | neurons | F (refusal) | causal effect C | wall time |")
    print("|---|---|---|---|---|---|")
    for fraction in (float(f) for f in args.fractions.split(",")):
        top = Circuit.top_fraction(scores, neurons=fraction)
        variants = {
            "top neurons, dynamic (M2's values)": lambda: dynamic_patching(m1, m2, prompts, top, **options),
            "random neurons (same per layer), dynamic": lambda: dynamic_patching(m1, m2, prompts, random_like(top, seed=0), **options),
            "top neurons, static (M2's mean)": lambda: static_patching(m1, prompts, top, mode="mean", donor=m2, **options),
        }
        for label, run in variants.items():
            start = time.perf_counter()
            f = judge.refusal_rate(run())
            print(f"| {label} | {fraction:.0%} | {top.n_neurons} | {f:.0%} | {causal_effect(f, f_m1, f_m2):.2f} "
                  f"| {time.perf_counter() - start:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
