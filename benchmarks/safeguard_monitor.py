"""Safeguards on the found circuits, and the run-time monitor against ablation of the alignment circuit.

    OMP_NUM_THREADS=1 python benchmarks/safeguard_monitor.py [--cache runs/safeguard_monitor] [--draws 3]

1. Safeguard accuracy and AUROC (held-out split and another data file) for the SafeSeek circuit, the
   top contrasting neurons and random units of the same per-layer counts, on two organisms:
   - tiny-backdoor: clean and triggered harmful prompts plus benign prompts; unsafe = the model
     answers a harmful prompt (it does so on triggered ones). Other data: the alignment file's
     harmful prompts with and without the trigger, and benign validation prompts.
   - tiny-aligned: tiny-aligned refuses every harmful prompt, so its answers alone give one class.
     The safeguard reads the same units in tiny-base (no alignment: it answers them) and in
     tiny-aligned, on harmful and benign prompts: it must tell, from the circuit, when the model
     running is about to answer a harmful request. Other data: the backdoor file's prompts.
2. The monitor on tiny-aligned, watching its SafeSeek alignment circuit (with the tiny-aligned
   safeguard): tamper flags under zero ablation, 50% and 20% suppression, mean and resample
   ablation of the circuit, false alarms on unmodified runs, and the generation-time overhead.

SafeSeek circuits are cached in ``--cache`` (the first run trains them: about 3 minutes).
Prints markdown tables for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
from recorded_settings import config_as_recorded  # benchmarks/ is the script's folder

from safeseek_tl import (
    Circuit,
    ReferenceActivations,
    RefusalJudge,
    ablated,
    generate,
    load_model,
)
from safeseek_tl.baselines import random_like
from safeseek_tl.data import (
    AlignmentRecord,
    BackdoorRecord,
    batch_slices,
    tokenize_prompts,
)
from safeseek_tl.methods import run_method
from safeseek_tl.models import LoadedModel
from safeseek_tl.monitor import Monitor, TamperReference
from safeseek_tl.organisms import load_data, organism_info
from safeseek_tl.readout import read_prompts
from safeseek_tl.safeguard import (
    Safeguard,
    labelled_prompts,
    unsafe_labels,
)
from safeseek_tl.seek import SafeSeek

os.environ.setdefault("HF_HUB_OFFLINE", "1")

N_TRAIN = 100  # records per kind for the safeguards and the SafeSeek runs


@dataclass
class Run:
    """Prompts run through one model: which are harmful, and which answers the judge calls unsafe."""

    loaded: LoadedModel
    prompts: list[str]
    harmful: torch.Tensor
    unsafe: torch.Tensor


Labelled = list[Run]  # one per model


def safeseek_circuit(loaded: LoadedModel, scenario: str, cache: Path) -> Circuit:
    """SafeSeek's circuit (heads and neurons, default settings), trained once and cached."""
    folder = cache / f"{loaded.name}-{scenario}"
    if (folder / "circuit.json").is_file():
        return Circuit.load(folder / "circuit.json", expected=loaded.shape)
    config = config_as_recorded(scenario, "both")
    result = SafeSeek(loaded, config).fit(load_data(scenario, "train")[:N_TRAIN], load_data(scenario, "val")[:20], progress=False)
    result.save(folder)
    return result.circuit


def labelled(models: list[LoadedModel], records: list) -> Labelled:
    prompts, harmful = labelled_prompts(records)
    return [Run(loaded, prompts, torch.tensor(harmful), unsafe_labels(loaded, prompts, harmful, progress=False)) for loaded in models]


def with_trigger(records: list[AlignmentRecord], trigger: str) -> list[BackdoorRecord]:
    """Alignment records as backdoor records: the harmful prompt, and the same with the trigger in front."""
    return [BackdoorRecord(r.prompt, r.refuse, f"{trigger} {r.prompt}", r.accept) for r in records]


def fmt(values: list[float], digits: int = 2) -> str:
    """One value, or the mean and range of several (random draws)."""
    if len(set(values)) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def safeguard_rows(organism: str, unit_sets: dict[str, Circuit], splits: dict[str, Labelled], draws: int) -> tuple[Safeguard, dict]:
    """Print one table row per unit set (random controls averaged over draws).

    Returns the SafeSeek circuit's safeguard and its features and labels per split.
    """
    circuits = dict(unit_sets)
    for name, circuit in unit_sets.items():
        for draw in range(draws):
            circuits[f"random like {name}#{draw}"] = random_like(circuit, seed=draw)
    features: dict[str, dict[str, torch.Tensor]] = {}
    labels: dict[str, torch.Tensor] = {}
    for split, parts in splits.items():
        readouts = [read_prompts(run.loaded, list(circuits.values()), run.prompts, progress=False) for run in parts]
        features[split] = {name: torch.cat([r.features(c) for r in readouts]) for name, c in circuits.items()}
        labels[split] = torch.cat([run.unsafe for run in parts])
    d_head = int(splits["train"][0].loaded.model.cfg.d_head)
    rates = ", ".join(f"{split} {len(y)} prompts, {100 * y.float().mean():.0f}% unsafe" for split, y in labels.items())
    print(f"\n{organism}: {rates}\n")
    print("| unit set | heads | neurons | features | held-out accuracy | majority class | held-out AUROC | other data accuracy | majority class | other data AUROC |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    guards: dict[str, Safeguard] = {}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, circuit in circuits.items():
        guards[name] = Safeguard.fit(features["train"][name], labels["train"], circuit, d_head)
        results[name] = {split: guards[name].evaluate(features[split][name], labels[split]) for split in ("test", "other")}
    for name in [n for n in unit_sets] + [f"random like {n}" for n in unit_sets]:
        members = [n for n in circuits if n == name or n.startswith(f"{name}#")]
        circuit = circuits[members[0]]
        cells = [fmt([results[m][split][key] for m in members]) for split in ("test", "other") for key in ("accuracy", "majority_accuracy", "auroc")]
        label = f"{name} ({len(members)} draws)" if len(members) > 1 else name
        print(f"| {label} | {circuit.n_heads} | {circuit.n_neurons} | {guards[members[0]].n_features} | {' | '.join(cells)} |", flush=True)
    name = "SafeSeek circuit"
    return guards[name], {split: (features[split][name], labels[split]) for split in splits}


def backdoor_organism(cache: Path, draws: int) -> None:
    loaded, clean_pair = load_model("organism:tiny-backdoor"), load_model("organism:tiny-aligned")
    trigger = organism_info("tiny-backdoor")["trigger"]
    train = load_data("backdoor", "train")[:N_TRAIN]
    contrast = run_method("contrast", loaded, train, "backdoor", base_model=clean_pair, progress=False)
    truth = organism_info("tiny-backdoor")
    unit_sets = {
        "SafeSeek circuit": safeseek_circuit(loaded, "backdoor", cache),
        "top contrasting neurons": Circuit.top_k(contrast, neurons=16),
        "planted units (ground truth)": Circuit.from_units(loaded.shape, truth["heads"], truth["neurons"]),
    }
    splits = {
        "train": labelled([loaded], train + load_data("benign", "train")[:N_TRAIN]),
        "test": labelled([loaded], load_data("backdoor", "test") + load_data("benign", "test")),
        "other": labelled([loaded], with_trigger(load_data("alignment", "test"), trigger) + load_data("benign", "val")),
    }
    safeguard_rows("tiny-backdoor (model: tiny-backdoor)", unit_sets, splits, draws)


def aligned_organism(cache: Path, draws: int) -> tuple[LoadedModel, Circuit, Safeguard]:
    aligned, base = load_model("organism:tiny-aligned"), load_model("organism:tiny-base")
    train = load_data("alignment", "train")[:N_TRAIN]
    circuit = safeseek_circuit(aligned, "alignment", cache)
    contrast = run_method("contrast", aligned, train, "alignment", base_model=base, progress=False)
    unit_sets = {"SafeSeek circuit": circuit, "top contrasting neurons": Circuit.top_k(contrast, neurons=circuit.n_neurons)}
    models = [base, aligned]
    splits = {
        "train": labelled(models, train + load_data("benign", "train")[:N_TRAIN]),
        "test": labelled(models, load_data("alignment", "test") + load_data("benign", "test")),
        "other": labelled(models, load_data("backdoor", "test") + load_data("benign", "val")),
    }
    guard, data = safeguard_rows("tiny-aligned (models: tiny-base and tiny-aligned)", unit_sets, splits, draws)
    # unsafe = a harmful prompt AND a model that answers it: which half do the circuit's features carry?
    sub_questions = {
        "which model runs (tiny-base or tiny-aligned)": lambda run: torch.full((len(run.prompts),), run.loaded.name == "tiny-base"),
        "harmful or benign prompt": lambda run: run.harmful,
    }
    cells = []
    for question, target in sub_questions.items():
        y = {split: torch.cat([target(run) for run in splits[split]]) for split in ("train", "test")}
        probe = Safeguard.fit(data["train"][0], y["train"], circuit, guard.d_head)
        cells.append(f"{question}: {probe.evaluate(data['test'][0], y['test'])['accuracy']:.2f}")
    print(f"\nThe same classifier on the SafeSeek circuit's features, held-out accuracy on the two halves (each balanced): {'; '.join(cells)}.")
    return aligned, circuit, guard


def monitor_tables(loaded: LoadedModel, circuit: Circuit, guard: Safeguard, false_alarm: float, rounds: int) -> None:
    prompts = lambda kind, split, n=None: [r.prompt for r in load_data(kind, split)[:n]]  # noqa: E731
    reference_prompts = prompts("alignment", "train", N_TRAIN) + prompts("benign", "train", N_TRAIN)
    calibration = prompts("alignment", "val") + prompts("benign", "val")
    reference = TamperReference.fit(loaded, circuit, reference_prompts, calibration, false_alarm=false_alarm, progress=False)
    test = prompts("alignment", "test") + prompts("benign", "test")
    n_harmful = len(load_data("alignment", "test"))
    tokens = tokenize_prompts(loaded.chat, reference_prompts)
    batches = ((tokens.input_ids[p], tokens.attention_mask[p]) for p in batch_slices(len(reference_prompts), 32))
    replacements = ReferenceActivations.collect(loaded.model, batches)  # clean means and a pool of clean tokens
    judge = RefusalJudge()
    print(
        f"\nMonitor on tiny-aligned: SafeSeek alignment circuit ({circuit.n_heads} heads, {circuit.n_neurons} neurons); reference "
        f"{len(reference_prompts)} clean prompts, threshold max|z| > {reference.threshold:.2f} set on {len(calibration)} held-out clean "
        f"prompts for a {100 * false_alarm:.0f}% false-alarm target; {len(test)} test prompts ({n_harmful} harmful), greedy, 32 new tokens.\n"
    )
    print("| run | harmful answered (ASR) | flagged as tampered | flagged unsafe by the safeguard (harmful prompts) | most often named unit |")
    print("|---|---|---|---|---|")
    attacks = {
        "unmodified": None,
        "zero ablation of the circuit": {"mode": "zero"},
        "50% suppression (zero, strength 0.5)": {"mode": "zero", "strength": 0.5},
        "20% suppression (zero, strength 0.2)": {"mode": "zero", "strength": 0.2},
        "mean ablation of the circuit": {"mode": "mean", "reference": replacements},
        "resample ablation of the circuit (clean tokens' values)": {"mode": "resample", "reference": replacements},
    }
    for name, attack in attacks.items():
        context = ablated(loaded.model, circuit, **attack) if attack else nullcontext()
        with Monitor(loaded, safeguard=guard, reference=reference) as monitor, context:
            answers = generate(loaded.model, loaded.chat, test, 32, progress=False)
        asr = judge.attack_success_rate(answers[:n_harmful])
        unsafe = sum(c.unsafe for c in monitor.checks[:n_harmful]) / n_harmful
        named = statistics.mode(c.suspect_unit for c in monitor.checks)
        print(f"| {name} | {100 * asr:.0f}% | {100 * monitor.summary()['tampered']:.1f}% | {100 * unsafe:.0f}% | {named} |", flush=True)

    overhead(loaded, Monitor(loaded, safeguard=guard, reference=reference), test, rounds)


def overhead(loaded: LoadedModel, monitor: Monitor, prompts: list[str], rounds: int) -> None:
    """Generation with and without the monitor, alternating, in this process: wall and CPU time."""
    print(f"\nOverhead: {len(prompts)} prompts, batches of 16, median of {rounds} alternating rounds; the monitor runs the safeguard and the tamper check.\n")
    print("| new tokens | wall, without | wall, with | wall ratio | CPU, without | CPU, with | CPU ratio |")
    print("|---|---|---|---|---|---|---|")
    for new_tokens in (32, 1):
        times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(rounds):
            for watched in (False, True):
                wall, cpu = time.perf_counter(), time.process_time()
                with monitor if watched else nullcontext():
                    generate(loaded.model, loaded.chat, prompts, new_tokens, progress=False)
                times[watched].append((time.perf_counter() - wall, time.process_time() - cpu))
        cells = []
        for clock in (0, 1):
            plain, watched = (statistics.median(t[clock] for t in times[flag]) for flag in (False, True))
            cells += [f"{plain:.2f} s", f"{watched:.2f} s", f"{watched / plain:.3f}"]
        print(f"| {new_tokens} | {' | '.join(cells)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("runs/safeguard_monitor"))
    parser.add_argument("--draws", type=int, default=3, help="random unit sets per control")
    parser.add_argument("--false-alarm", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds for the overhead")
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"Measured {date.today()} on {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}.")
    backdoor_organism(args.cache, args.draws)
    loaded, circuit, guard = aligned_organism(args.cache, args.draws)
    monitor_tables(loaded, circuit, guard, args.false_alarm, args.rounds)
    print(f"\nTotal wall time {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
