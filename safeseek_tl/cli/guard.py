"""``safeseek guard train`` and ``safeseek guard evaluate``: safeguards on a circuit's activations."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from safeseek_tl.cli import shared
from safeseek_tl.cli.shared import DeviceOption, JudgeCaseOption, JudgeKeywordsOption, JudgeOption, ModelOption, judge_from_options, load_benign

if TYPE_CHECKING:
    from torch import Tensor

    from safeseek_tl.metrics import RefusalJudge
    from safeseek_tl.models import LoadedModel

guard_app = typer.Typer(help="Safeguards: predict unsafe answers from a circuit's activations at the last prompt token.", no_args_is_help=True)

GuardDataOption = Annotated[Path, typer.Option("--data", help="Backdoor (clean and triggered prompts), alignment (harmful) or benign records.")]
GuardBenignOption = Annotated[Path | None, typer.Option("--benign", help="Benign records to add as safe prompts.")]
MaxNewTokensOption = Annotated[int, typer.Option(help="Tokens generated to judge each harmful prompt's answer.")]


def judged_records(loaded: LoadedModel, data: Path, benign: Path | None, judge: RefusalJudge, max_new_tokens: int) -> tuple[list[str], Tensor, float | None]:
    """The prompts of ``--data`` and ``--benign``, their unsafe labels and the harmful prompts' mean refusal score."""
    from safeseek_tl.data import load_records
    from safeseek_tl.safeguard import judged_prompts

    records = load_records(data) + load_benign(benign)
    return judged_prompts(loaded, records, judge=judge, max_new_tokens=max_new_tokens)


def print_guard_metrics(title: str, metrics: dict, harmful_score: float | None, judge: RefusalJudge) -> None:
    """A safeguard's metrics, the harmful prompts' refusal score and the judge, under ``title``."""
    from safeseek_tl.report_text import SCORE_NOTE

    score = "" if harmful_score is None else f" (harmful prompts' refusal score {harmful_score:+.2f})"
    typer.echo(title)
    typer.echo(
        f"  prompts {metrics['n']}, unsafe {100 * metrics['unsafe_rate']:.1f}%{score}: accuracy {metrics['accuracy']:.3f} "
        f"(majority class {metrics['majority_accuracy']:.3f}), AUROC {metrics['auroc']:.3f}"
    )
    typer.echo(f"  judge: {judge.describe()}\n  {SCORE_NOTE}")


@guard_app.command("train")
def guard_train(
    model: ModelOption,
    data: GuardDataOption,
    circuit: Annotated[Path, typer.Option(help="circuit.json: the units whose activations the safeguard reads.")],
    out: Annotated[Path, typer.Option(help="Output folder: circuit.json, safeguard.safetensors, safeguard.json.")],
    benign: GuardBenignOption = None,
    test_fraction: Annotated[float, typer.Option(help="Share of the prompts held out to measure the safeguard.")] = 0.25,
    c: Annotated[float, typer.Option("--c", help="Inverse L2 regularization strength of the logistic regression.")] = 1.0,
    max_new_tokens: MaxNewTokensOption = 32,
    seed: int = 0,
    judge_name: JudgeOption = "ships",
    judge_keywords: JudgeKeywordsOption = None,
    judge_case_sensitive: JudgeCaseOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Train a safeguard on the model's own (judged) answers; report held-out accuracy and AUROC."""
    from safeseek_tl.safeguard import Safeguard, circuit_features, split_indices
    from safeseek_tl.units import Circuit

    judge = judge_from_options(judge_name, judge_keywords, judge_case_sensitive)
    loaded = shared.load_model_for_cli(model, device)
    selected = Circuit.load(circuit, expected=loaded.shape)
    prompts, labels, harmful_score = judged_records(loaded, data, benign, judge, max_new_tokens)
    features = circuit_features(loaded, selected, prompts)
    train, held_out = split_indices(labels, test_fraction, seed)
    guard = Safeguard.fit(features[train], labels[train], selected, int(loaded.model.cfg.d_head), C=c, model=loaded.name, data=str(data), seed=seed, judge=judge.describe())
    metrics = guard.evaluate(features[held_out], labels[held_out])
    guard.metadata["held_out"] = metrics
    guard.save(out)
    print_guard_metrics(f"{loaded.name}: safeguard on {selected!r}, held-out {len(held_out)} of {len(prompts)} prompts", metrics, harmful_score, judge)
    typer.echo(f"written to {out}/")


@guard_app.command("evaluate")
def guard_evaluate(
    model: ModelOption,
    data: GuardDataOption,
    guard: Annotated[Path, typer.Option(help="A folder written by `safeseek guard train`.")],
    benign: GuardBenignOption = None,
    out: Annotated[Path | None, typer.Option(help="Write the metrics to this JSON file.")] = None,
    max_new_tokens: MaxNewTokensOption = 32,
    judge_name: JudgeOption = "ships",
    judge_keywords: JudgeKeywordsOption = None,
    judge_case_sensitive: JudgeCaseOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Measure a saved safeguard on other data (or another model of the same shape)."""
    from safeseek_tl._io import write_json
    from safeseek_tl.safeguard import Safeguard

    judge = judge_from_options(judge_name, judge_keywords, judge_case_sensitive)
    loaded = shared.load_model_for_cli(model, device)
    safeguard = Safeguard.load(guard, expected=loaded.shape)
    prompts, labels, harmful_score = judged_records(loaded, data, benign, judge, max_new_tokens)
    metrics = safeguard.evaluate(safeguard.features(loaded, prompts), labels)
    if out is not None:
        write_json(out, {"model": loaded.name, "guard": str(guard), "data": str(data), "benign": str(benign) if benign else None, "judge": judge.describe(), "refusal_score_harmful": harmful_score, **metrics})
    print_guard_metrics(f"{loaded.name}: safeguard {guard} on {data}", metrics, harmful_score, judge)
