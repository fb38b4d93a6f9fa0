"""Every method on a real safety-tuned chat model: Qwen2.5-Coder-0.5B-Instruct on the bundled request sets.

    make fetch-qwen                        # once: the model (491 MB, checked)
    python benchmarks/real_model.py        # or: make bench-real (also runs notebooks/real_model)

Prints markdown tables: the full model's behaviour (refusal of the harmful test split by the
keyword judge and by the refusal score, over-refusal of the over-refusal test split, harmless
answered), then the behaviour change and next-token KL on harmless prompts at head budgets 1, 3,
10, 30 and neuron budgets 0.1%, 0.3%, 1% of Ships, attribution patching, the refusal direction's
unit ranking and the refusal direction itself (directional ablation at every layer), all measured
by :func:`safeseek_tl.compare.compare`. Sahara and exact activation patching (heads) run only when
``--methods`` names them: Sahara costs ``--sahara-steps`` x 336 full passes per prompt (about 4
minutes a step on one prompt here, measured), exact patching one patched pass per head and pair.

The defaults are a reduced configuration meant to fit about 30-40 minutes on 2 quiet CPU cores:
prompt counts (every ``--n-*`` option; always the first prompts of a split, in file order, never
chosen by the model's answers), the direction's candidate grid (positions -1..-5, every other
layer) and its selection (``--val`` prompts; the induced-refusal filter with ``--induce-min``). The output's first lines
say what ran; benchmarks/RESULTS.md records a run. Greedy answers of ``--max-new-tokens`` tokens
are judged twice: by the keyword judge (Ships' list, any case) and by Arditi et al.'s refusal
phrases (``RefusalJudge.arditi``), which do not count a compliant answer that mentions "illegal" or
"crime" as a refusal.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from datetime import datetime, timezone

import torch

import safeseek_tl
from safeseek_tl import InputError, load_model
from safeseek_tl.baselines.direction import RefusalDirection, direction_unit_scores, mean_differences
from safeseek_tl.baselines.direction_selection import CandidateEvaluation, choose_direction, evaluate_candidates
from safeseek_tl.compare import Intervention, compare
from safeseek_tl.compat import library_versions
from safeseek_tl.data import AlignmentRecord, BenignRecord
from safeseek_tl.datasets import load_bundled
from safeseek_tl.evaluate import BehaviourData, measure, refusal_scores
from safeseek_tl.generation import generate
from safeseek_tl.methods import Attribution, attribute
from safeseek_tl.metrics import RefusalJudge, refusal_token_ids

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODEL = "qwen2.5-coder-0.5b-instruct"
HEAD_BUDGETS = (1, 3, 10, 30)
NEURON_SHARES = (0.001, 0.003, 0.01)
HEADER = (
    "\n| method | size | harmful refused (Ships' list) | change | harmful refused (Arditi's phrases) | change | refusal score | change | KL on harmless | scoring time |"
    "\n|---|---|---|---|---|---|---|---|---|---|"
)
OTHER_JUDGES = {"arditi": RefusalJudge.arditi()}


def prompts(name: str, split: str, n: int) -> list[str]:
    return [request.prompt for request in load_bundled(name, split=split)[:n]]


def machine() -> str:
    """The first line of every real-model benchmark's output: when, on what, with which libraries, at
    which commit of the library imported (under PYTHONPATH it may be a snapshot outside this checkout)."""
    library = os.path.dirname(os.path.abspath(safeseek_tl.__file__))
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False, cwd=library).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], capture_output=True, text=True, check=False, cwd=library).stdout.strip()
    commit = f"{head}{' with uncommitted changes' if dirty else ''}" if head else f"none: {library} is not a git checkout"
    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
            f"load average {os.getloadavg()[0]:.1f}, {library_versions()}, commit {commit}")  # fmt: skip


def log(started: float, text: str) -> None:
    print(f"[{time.perf_counter() - started:7.0f} s] {text}", flush=True)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--model", default=MODEL, help="another model to run the same tables on (organism:tiny-aligned: a quick check of the script)")
    add("--n-full", type=int, default=60, help="harmful, harmless and over-refusal test prompts for the full model (60 = the whole harmful split)")
    add("--n-eval", type=int, default=12, help="harmful test prompts measured under each intervention")
    add("--n-kl", type=int, default=12, help="harmless test prompts for the KL")
    add("--n-train", type=int, default=16, help="harmful and harmless training prompts for each method")
    add("--val", type=int, default=4, help="harmful and harmless validation prompts choosing the direction")
    add("--layer-step", type=int, default=2, help="direction candidates at every n-th layer")
    add("--n-positions", type=int, default=5, help="direction candidates at the last n prompt positions")
    add("--induce-min", type=float, default=None, help="the induced-refusal filter: adding a kept candidate to harmless prompts must raise their mean refusal score above this (default: no filter)")
    add("--ships-prompts", type=int, default=2)
    add("--methods", default="refusal-direction,attr-patch,ships", help="comma-separated, of refusal-direction, attr-patch, ships, sahara, act-patch")
    add("--kl-limits", default="0.1,0.2", help="the KL limits the direction's choice tries, strict first (Arditi et al.: 0.1)")
    add("--candidates", help="a direction file saved by an earlier run (--save-direction): choose from its measured candidates again, no measuring")
    add("--save-direction", help="write the chosen refusal direction here (safetensors; benchmarks/real_model_circuit.py --direction reads it)")
    add("--no-direction-units", action="store_true", help="measure the direction itself but not its unit ranking")
    add("--skip-full-model", action="store_true", help="leave out the full model's table (a run of more methods only)")
    add("--sahara-steps", type=int, default=10, help="Sahara's group size (when --methods has sahara)")
    add("--act-patch-pairs", type=int, default=2, help="harmful/harmless pairs of exact activation patching, heads only (when --methods has act-patch)")
    add("--max-new-tokens", type=int, default=12)
    add("--batch-size", type=int, default=16)
    return parser.parse_args()


def full_model_table(loaded, args, judge: RefusalJudge) -> None:
    """The model's own behaviour on the test splits."""
    harmful, harmless, scary = prompts("harmful", "test", args.n_full), prompts("harmless", "test", args.n_full), prompts("overrefusal", "test", args.n_full)
    answer = lambda texts: generate(loaded.model, loaded.chat, texts, args.max_new_tokens, args.batch_size, progress=False)  # noqa: E731
    harmful_answers = answer(harmful)
    scores = refusal_scores(loaded, harmful, args.batch_size)
    print(f"\n### The full model (greedy, {args.max_new_tokens} new tokens)\n")
    arditi = OTHER_JUDGES["arditi"]
    print("| set (test split) | prompts | refused (Ships' list) | refused (Arditi's phrases) | refusal score > 0 | mean refusal score |\n|---|---|---|---|---|---|")
    print(f"| harmful | {len(harmful)} | {judge.refusal_rate(harmful_answers):.0%} | {arditi.refusal_rate(harmful_answers):.0%} | {float((scores > 0).float().mean()):.0%} | {float(scores.mean()):.2f} |")
    scary_answers, harmless_answers = answer(scary), answer(harmless)
    print(f"| over-refusal (safe, sounds harmful) | {len(scary)} | {judge.refusal_rate(scary_answers):.0%} (over-refusal rate) | {arditi.refusal_rate(scary_answers):.0%} | - | - |")
    refused, refused_arditi = judge.refusal_rate(harmless_answers), arditi.refusal_rate(harmless_answers)
    print(f"| harmless | {len(harmless)} | {refused:.0%} (answered: {1 - refused:.0%}) | {refused_arditi:.0%} (answered: {1 - refused_arditi:.0%}) | - | - |")
    print(f"\nFirst harmful answers: {[text[:60] for text in harmful_answers[:3]]}")


def find_direction(loaded, args, started: float):
    """Candidates on the training prompts (reduced grid), measured once on the validation prompts (or
    read from ``--candidates``), then the filters from strict to lenient: each of ``--kl-limits``,
    with ``--induce-min``'s filter and, when it is set, without it. The first that keeps a candidate chooses."""
    if args.candidates:
        earlier = RefusalDirection.load(args.candidates)
        candidates, evaluation = earlier.candidates, CandidateEvaluation.of(earlier)
        log(started, f"candidates and their validation numbers from {args.candidates} ({earlier.settings})")
    else:
        candidates = mean_differences(loaded, prompts("harmful", "train", args.n_train), prompts("harmless", "train", args.n_train), args.n_positions, args.batch_size)
        skipped = [layer for layer in range(candidates.shape[1]) if layer % args.layer_step]
        candidates[:, skipped] = 0.0  # zero candidates are rejected without being measured
        val = prompts("harmful", "validation", args.val), prompts("harmless", "validation", args.val)
        evaluation = evaluate_candidates(loaded, candidates, *val, induce=args.induce_min is not None, batch_size=args.batch_size, progress=False)
    measured = [row for row in evaluation.rows if row["kl"] is not None]
    log(started, f"{len(measured)} candidates measured on {evaluation.settings['n_harmful_val']} + {evaluation.settings['n_harmless_val']} validation prompts")
    print("\n| position | layer | ablated score (val) | KL (val) | induced score (val) |\n|---|---|---|---|---|")
    for row in sorted(measured, key=lambda row: row["ablated_score"])[:8]:
        induced = "-" if row["induced_score"] is None else f"{row['induced_score']:.2f}"
        print(f"| {row['position']} | {row['layer']} | {row['ablated_score']:.2f} | {row['kl']:.3f} | {induced} |")
    limits = [float(limit) for limit in args.kl_limits.split(",")]
    filters = [(kl_limit, induce) for kl_limit in limits for induce in dict.fromkeys((args.induce_min, None) if evaluation.settings["induce"] else (None,))]
    for kl_limit, induce_min in filters:
        try:
            found = choose_direction(candidates, evaluation, kl_limit=kl_limit, induce_min=induce_min)
        except InputError as err:
            log(started, f"KL limit {kl_limit}, induced-refusal filter {induce_min}: {err}")
            continue
        log(started, f"direction: layer {found.layer}, position {found.position} (KL limit {kl_limit}, induced-refusal filter {induce_min})")
        return found
    raise SystemExit("no refusal direction passed the filters")


def print_rows(table, baseline: dict[str, float]) -> None:
    for row in table.to_dict(orient="records"):
        after, after_arditi = 1.0 - row["asr_harmful"], 1.0 - row["asr_harmful_arditi"]
        print(
            f"| {row['method']} | {row['size']} | {after:.0%} | {after - (1.0 - baseline['asr_harmful']):+.0%} | "
            f"{after_arditi:.0%} | {after_arditi - (1.0 - baseline['asr_harmful_arditi']):+.0%} | "
            f"{row['refusal_score_harmful']:.2f} | {row['refusal_score_harmful'] - baseline['refusal_score_harmful']:+.2f} | {row['kl']:.3f} | {row['wall_time_s']:.0f} s |",
            flush=True,
        )


def main() -> None:
    args = arguments()
    started = time.perf_counter()
    print(f"{machine()}\nConfiguration: {vars(args)}")
    loaded = load_model(args.model)
    judge = RefusalJudge()
    log(started, f"loaded {args.model}; refusal tokens {loaded.tokenizer.convert_ids_to_tokens(refusal_token_ids(loaded.tokenizer))}; judges: {judge.describe()}; {OTHER_JUDGES['arditi'].describe()}")
    if not args.skip_full_model:
        full_model_table(loaded, args, judge)
        log(started, "full model measured")
    eval_data = BehaviourData(prompts("harmful", "test", args.n_eval), [], [])
    kl_prompts = prompts("harmless", "test", args.n_kl)
    baseline = measure(loaded, eval_data, judge, args.max_new_tokens, other_judges=OTHER_JUDGES)
    n_neurons = loaded.shape.n_layers * loaded.shape.d_mlp
    neuron_budgets = [max(1, round(share * n_neurons)) for share in NEURON_SHARES]
    print(f"\n### Interventions: the first {args.n_eval} harmful test prompts (refused), KL on the first {args.n_kl} harmless test prompts\n")
    print(f"Full model on these prompts: refused {1 - baseline['asr_harmful']:.0%} (Arditi's phrases: {1 - baseline['asr_harmful_arditi']:.0%}), mean refusal score {baseline['refusal_score_harmful']:.2f}. "
          f"Neuron budgets: {', '.join(f'{k} = {s:.1%}' for k, s in zip(neuron_budgets, NEURON_SHARES))} of {n_neurons:,} neurons.\n")  # fmt: skip
    measured = lambda methods, budgets, units, **extra: print_rows(  # noqa: E731
        compare(loaded, methods, budgets, "alignment", eval_data, units, judge=judge, max_new_tokens=args.max_new_tokens, kl_prompts=kl_prompts, baseline=baseline,
                **extra, other_judges=OTHER_JUDGES).table,  # fmt: skip
        baseline,
    )
    if "refusal-direction" not in args.methods:
        print(HEADER, flush=True)  # else printed after the direction's candidates
    for methods, units in scored_methods(loaded, args, started, measured):
        if units == "heads":
            # Sahara ranks only the heads it chose: budgets up to its steps
            budgets = [k for k in HEAD_BUDGETS if "sahara" not in methods or k <= args.sahara_steps]
        measured(methods, budgets if units == "heads" else neuron_budgets, units)
    print("| activation contrasting | - | not run: needs the unaligned base model, not available for this model | | | | | | | |")
    if "act-patch" not in args.methods:
        print("| act-patch (exact) | - | not run: one patched pass per unit and pair, too slow here (attribution patching approximates it) | | | | | | | |")
    if "sahara" not in args.methods:
        print("| sahara | - | not run: steps x 336 full passes per prompt; --methods ...,sahara runs it | | | | | | | |")
    log(started, "done")


def scored_methods(loaded, args, started: float, measured):
    """Score step, method by method (cheapest first, so that a cut run still has the direction): (methods, units) to measure.

    The direction itself is measured here as an intervention, right after it is found.
    """
    harmful_train, harmless_train = prompts("harmful", "train", args.n_train), prompts("harmless", "train", args.n_train)
    records = [AlignmentRecord(prompt, "", "") for prompt in harmful_train]  # the methods here read the prompts only
    benign = [BenignRecord(prompt, "") for prompt in harmless_train]
    methods = args.methods.split(",")
    if "refusal-direction" in methods:
        yield from direction_methods(loaded, args, started, measured, harmful_train, harmless_train)
    if "attr-patch" in methods:
        both = attribute("attr-patch", loaded, records, "alignment", benign=benign, units="both", progress=False)
        log(started, f"attr-patch: {both.wall_time_s:.0f} s")
        yield {"attr-patch": both}, "heads"
        yield {"attr-patch": both}, "neurons"
    if "ships" in methods:
        ships = attribute("ships", loaded, records[: args.ships_prompts], "alignment", progress=False)
        log(started, f"ships: {ships.wall_time_s:.0f} s")
        yield {"ships": ships}, "heads"
    if "sahara" in methods:
        sahara = attribute("sahara", loaded, records[: args.ships_prompts], "alignment", steps=args.sahara_steps, progress=False)
        log(started, f"sahara: {sahara.wall_time_s:.0f} s")
        yield {"sahara": sahara}, "heads"
    if "act-patch" in methods:
        patched = attribute("act-patch", loaded, records[: args.act_patch_pairs], "alignment", benign=benign, units="heads", progress=False)
        log(started, f"act-patch: {patched.wall_time_s:.0f} s")
        yield {"act-patch": patched}, "heads"


def direction_methods(loaded, args, started: float, measured, harmful_train: list[str], harmless_train: list[str]):
    """The direction (measured here, as an intervention, as soon as it is found), then its unit ranking."""
    start = time.perf_counter()
    found = find_direction(loaded, args, started)
    direction_time = time.perf_counter() - start
    if args.save_direction:
        found.save(args.save_direction)
    print(HEADER, flush=True)
    measured({}, [1], "heads", interventions={"refusal direction (ablated)": Intervention(lambda: found.ablated(loaded.model), "1 direction", direction_time)})
    if args.no_direction_units:
        return
    start = time.perf_counter()
    ranking = Attribution(direction_unit_scores(loaded, found.direction, harmful_train, harmless_train, batch_size=args.batch_size))
    ranking.wall_time_s = direction_time + time.perf_counter() - start
    log(started, f"refusal direction + unit ranking: {ranking.wall_time_s:.0f} s")
    yield {"refusal-direction units": ranking}, "heads"
    yield {"refusal-direction units": ranking}, "neurons"


if __name__ == "__main__":
    main()
