"""The harmful test answers each refusal judge counts as refusals, with a SafeSeek circuit ablated, and why.

    python benchmarks/judged_answers.py --run runs/q/seek --n-eval 60

Reads a ``safeseek discover`` folder's circuit, zero-ablates it on the real model (a run searched with
another fill is refused: its reference activations are real_model_circuit.py's), answers
the first ``--n-eval`` harmful test prompts (greedy, 32 new tokens, as real_model_circuit.py) and prints
every answer that Ships' keyword judge or Arditi et al.'s phrases call a refusal, with Ships' reasons
(:meth:`~safeseek_tl.metrics.RefusalJudge.reasons`): a judge's refusal rate is only as good as its fit
to the model's answers, and words such as "illegal" or "However" also flag answers that comply.
"""

from __future__ import annotations

import argparse

from real_model import MODEL, machine, prompts  # benchmarks/ is the script's folder

from safeseek_tl import load_model
from safeseek_tl.ablation import ablated
from safeseek_tl.generation import generate
from safeseek_tl.metrics import RefusalJudge
from safeseek_tl.seek import SeekResult


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--run", required=True, action="append", help="a safeseek discover folder (repeat for several)")
    add("--n-eval", type=int, default=60, help="harmful test prompts (60 = the whole split)")
    add("--model", default=MODEL)
    return parser.parse_args()


def main() -> None:
    args = arguments()
    print(machine())
    loaded = load_model(args.model)
    harmful = prompts("harmful", "test", args.n_eval)
    ships, arditi = RefusalJudge(), RefusalJudge.arditi()
    print(f"Judges: {ships.describe()}; {arditi.describe()}")
    for run in args.run:
        result = SeekResult.load(run, loaded.shape)
        if result.config.masks.fill != "zero":
            raise SystemExit(f"{run}: fill {result.config.masks.fill!r}; this script ablates zero-fill circuits only")
        circuit = result.circuit
        with ablated(loaded.model, circuit):
            answers = generate(loaded.model, loaded.chat, harmful, max_new_tokens=32, progress=False)
        print(f"\n{run}: {circuit.n_heads} heads + {circuit.n_neurons} neurons ablated; refused {ships.refusal_rate(answers):.0%} "
              f"(Ships' keywords) / {arditi.refusal_rate(answers):.0%} (Arditi et al.'s phrases) of {len(answers)}")  # fmt: skip
        print("| prompt | Ships' reasons | Arditi | answer |\n|---|---|---|---|")
        for index, answer in enumerate(answers):
            reasons = ships.reasons(answer)
            if reasons or arditi.is_refusal(answer):
                text = answer.replace("\n", " ").replace("|", "/")
                print(f"| {index} | {', '.join(reasons) or '-'} | {'refusal' if arditi.is_refusal(answer) else '-'} | {text} |")


if __name__ == "__main__":
    main()
