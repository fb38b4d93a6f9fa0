"""The refusal direction (Arditi et al.) end to end on organism:tiny-aligned.

    python benchmarks/refusal_direction_tiny.py [--kl-limit 0.2]

Candidates from the 200 harmful and 200 harmless training prompts, chosen on the 50 + 50
validation prompts, measured on the 100 + 100 test prompts: refusal (keyword judge, 32 greedy
tokens) and refusal score of the harmful prompts, benign answers and KL(full || intervened) at the
last prompt position on the harmless ones, for the full model, the direction ablated, the direction
added at its layer, and the top heads / neurons of the direction's unit ranking zero-ablated.
First with Arditi et al.'s KL limit of 0.1, then with ``--kl-limit``. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from contextlib import nullcontext
from datetime import date

import torch

from safeseek_tl import Circuit, InputError, ablated, load_model
from safeseek_tl.baselines.direction import direction_unit_scores
from safeseek_tl.baselines.direction_selection import find_refusal_direction
from safeseek_tl.evaluate import BehaviourData, intervention_kl, measure, own_refusal_token_ids, refusal_scores
from safeseek_tl.organisms import load_data

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def prompts(kind: str, split: str) -> list[str]:
    return [record.prompt for record in load_data(kind, split)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kl-limit", type=float, default=0.2)
    args = parser.parse_args()
    loaded = load_model("organism:tiny-aligned")
    train = prompts("alignment", "train"), prompts("benign", "train")
    val = prompts("alignment", "val"), prompts("benign", "val")
    test = BehaviourData(prompts("alignment", "test"), [], load_data("benign", "test"))
    own = own_refusal_token_ids(loaded, train[0])
    print(f"\n{date.today()}, {platform.machine()} CPU, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"post-instruction tokens: {loaded.chat.post_instruction_length()}; own refusal tokens: {loaded.tokenizer.convert_ids_to_tokens(own)}")
    found = None
    for kl_limit in (0.1, args.kl_limit):
        start = time.perf_counter()
        try:
            found = find_refusal_direction(loaded, *train, *val, kl_limit=kl_limit, refusal_ids=own, progress=False)
        except InputError as err:
            print(f"\nKL limit {kl_limit}: {err}")
            continue
        print(f"\n### KL limit {kl_limit}: chosen layer {found.layer}, position {found.position} ({time.perf_counter() - start:.1f} s)\n")
        print("| position | layer | ablated score | drop | KL | induced score | rejected |\n|---|---|---|---|---|---|---|")
        for row in found.table:
            cells = [f"{row[key]:.3f}" if row[key] is not None else "-" for key in ("ablated_score", "score_drop", "kl", "induced_score")]
            print(f"| {row['position']} | {row['layer']} | {' | '.join(cells)} | {row['rejected'] or ''} |")
    if found is None:
        return
    scores = direction_unit_scores(loaded, found.direction, *train)
    conditions = {"full model": nullcontext, "direction ablated": lambda: found.ablated(loaded.model), "direction added": lambda: found.added(loaded.model)}
    for k_heads, k_neurons in ((1, 0), (3, 0), (0, 15), (3, 15)):
        circuit = Circuit.top_k(scores, heads=k_heads, neurons=k_neurons)
        conditions[f"top {k_heads} heads + {k_neurons} neurons ablated"] = lambda circuit=circuit: ablated(loaded.model, circuit)
    harmless = [record.prompt for record in test.benign]
    print(f"\n### Test split (100 harmful, 100 harmless prompts), direction of layer {found.layer}, position {found.position}\n")
    print("| condition | harmful refused (judge) | refusal score harmful (own tokens) | harmless answered (judge) | refusal score harmless | KL on harmless |")
    print("|---|---|---|---|---|---|")
    for name, context in conditions.items():
        with context():
            out = measure(loaded, test)
            own_harmful = float(refusal_scores(loaded, test.harmful, refusal_ids=own).mean())
            own_harmless = float(refusal_scores(loaded, harmless, refusal_ids=own).mean())
        kl = float(intervention_kl(loaded, harmless, context).mean())
        print(f"| {name} | {out['refusal_harmful']:.2f} | {own_harmful:.2f} | {out['benign_answered']:.2f} | {own_harmless:.2f} | {kl:.3f} |")
    top = Circuit.top_k(scores, heads=3, neurons=5)
    print(f"\nTop heads of the direction's ranking: {top.head_list}; top neurons: {top.neuron_list}")


if __name__ == "__main__":
    main()
