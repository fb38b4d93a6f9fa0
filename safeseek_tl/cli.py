"""The ``safeseek`` command: a thin layer over the Python API.

Exit codes: 0 success; 2 bad input (a file, a model name, an option); 130 interrupted (Ctrl-C);
1 anything unexpected (a bug: please report it with the traceback ``SAFESEEK_DEBUG=1`` prints).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="safeseek",
    help="Find, ablate and compare safety circuits (heads and MLP neurons) of language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ModelOption = Annotated[str, typer.Option("--model", "-m", help="organism:<name>, a local HF folder, a .gguf file or a cached hub name.")]
DeviceOption = Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")]

EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130


def _load(model: str, device: str):
    from safeseek_tl.models import load_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return load_model(model, device=device)


@app.command()
def models() -> None:
    """List the bundled model organisms and their scenarios."""
    from safeseek_tl.organisms import organism_info, organism_names

    for name in organism_names():
        info = organism_info(name)
        typer.echo(f"organism:{name:<16} {info.get('scenario', ''):<10} {info.get('description', '')}")


@app.command()
def info(model: ModelOption, device: DeviceOption = "cpu") -> None:
    """Print a model's shape, its unit counts and the hook points the library uses."""
    from safeseek_tl.hooks import head_hook, neuron_hook

    loaded = _load(model, device)
    cfg = loaded.model.cfg
    shape = loaded.shape
    typer.echo(f"model        {loaded.name} ({loaded.source})")
    typer.echo(f"layers       {shape.n_layers}")
    typer.echo(f"heads        {shape.n_heads} per layer ({shape.n_layers * shape.n_heads} in all), {cfg.n_key_value_heads or shape.n_heads} key/value heads, d_head {cfg.d_head}")
    typer.echo(f"neurons      {shape.d_mlp} per layer ({shape.n_layers * shape.d_mlp} in all)")
    typer.echo(f"hooks        {head_hook(0)} ... (heads), {neuron_hook(0)} ... (neurons)")
    typer.echo(f"chat prompt  {loaded.chat.prompt_text('PROMPT')!r}")


@app.command()
def generate(
    model: ModelOption,
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="A prompt; repeat for several.")],
    circuit: Annotated[Optional[Path], typer.Option(help="A circuit.json to ablate while generating.")] = None,
    keep_only: Annotated[bool, typer.Option(help="Ablate everything except the circuit instead.")] = False,
    max_new_tokens: int = 32,
    device: DeviceOption = "cpu",
) -> None:
    """Greedy answers to prompts, optionally with a circuit ablated."""
    from contextlib import nullcontext

    from safeseek_tl.ablation import ablated
    from safeseek_tl.generation import generate as run_generate
    from safeseek_tl.metrics import RefusalJudge
    from safeseek_tl.units import Circuit

    loaded = _load(model, device)
    context = nullcontext()
    if circuit is not None:
        context = ablated(loaded.model, Circuit.load(circuit, expected=loaded.shape), keep_only=keep_only)
    with context:
        answers = run_generate(loaded.model, loaded.chat, prompt, max_new_tokens=max_new_tokens, progress=False)
    judge = RefusalJudge()
    for text, answer in zip(prompt, answers):
        typer.echo(f"> {text}\n{answer}\n[{'refusal' if judge.is_refusal(answer) else 'answer'}]\n")


def _parse_overrides(pairs: list[str]) -> dict[str, object]:
    """``key=value`` strings to SeekConfig overrides (numbers parsed, ``none`` -> None)."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        lowered = raw.strip().lower()
        if lowered in ("none", "null"):
            out[key] = None
        elif lowered in ("true", "false"):
            out[key] = lowered == "true"
        else:
            try:
                out[key] = int(raw) if raw.strip().lstrip("-").isdigit() else float(raw)
            except ValueError:
                out[key] = raw
    return out


def _terminate_as_interrupt() -> None:
    """Make SIGTERM behave like Ctrl-C so that long runs stop at a checkpoint they can resume from."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@app.command()
def discover(
    model: ModelOption,
    data: Annotated[Path, typer.Option(help="Training records (.json/.jsonl/.csv): backdoor or alignment fields.")],
    scenario: Annotated[str, typer.Option(help="backdoor or alignment.")],
    out: Annotated[Path, typer.Option(help="Output folder (circuit.json, scores/masks safetensors, history).")],
    units: Annotated[str, typer.Option(help="heads, neurons or both.")] = "heads",
    val_data: Annotated[Optional[Path], typer.Option(help="Validation records; default: the last --val-size training records.")] = None,
    complete: Annotated[bool, typer.Option("--complete", help="Repeat the search holding found units in place, to surface backup parts.")] = False,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs (default: the official script's).")] = None,
    batch_size: int = 8,
    lr: float = 1e-2,
    mask_kind: Annotated[str, typer.Option(help="hard_sigmoid (default), sigmoid or hard_concrete.")] = "hard_sigmoid",
    objective: Annotated[str, typer.Option(help="ce (the official code's) or kl (the paper figure's).")] = "ce",
    val_size: int = 20,
    seed: int = 42,
    overrides: Annotated[list[str], typer.Option("--set", help="Any SeekConfig field, e.g. --set w_overlap=0.5; repeatable.")] = [],  # noqa: B006
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint after an interruption.")] = False,
    device: DeviceOption = "cpu",
) -> None:
    """Find the circuit of a backdoor or of safety alignment with SafeSeek masks."""
    from safeseek_tl.data import load_records
    from safeseek_tl.report_text import print_discovery_summary
    from safeseek_tl.seek import SafeSeek, SeekConfig, behaviour_switch, discover_complete

    config = SeekConfig(
        scenario=scenario, units=units, epochs=epochs, batch_size=batch_size, lr=lr, mask_kind=mask_kind,
        objective=objective, val_size=val_size, seed=seed, **_parse_overrides(overrides),
    )  # fmt: skip
    records = load_records(data, scenario)
    val_records = load_records(val_data, scenario) if val_data else None
    loaded = _load(model, device)
    _terminate_as_interrupt()
    try:
        if complete:
            result = discover_complete(loaded, records, config, val_records)
        else:
            result = SafeSeek(loaded, config).fit(records, val_records, checkpoint_dir=out / "checkpoint", resume=resume)
    except KeyboardInterrupt:
        typer.secho(f"interrupted: the last finished epoch is saved in {out / 'checkpoint'}; rerun with --resume", err=True)
        raise
    result.save(out)
    check_records = val_records or records[-config.val_size :]
    print_discovery_summary(loaded, result, behaviour_switch(loaded, config, result.circuit, check_records), out)


def main() -> None:
    """Entry point: run the app and turn known input errors into one clear line and exit code 2."""
    from safeseek_tl.data import DataError
    from safeseek_tl.models import ModelNotAvailableError
    from safeseek_tl.units import ShapeMismatchError

    try:
        app(standalone_mode=False)
    except (DataError, ShapeMismatchError, ModelNotAvailableError, FileNotFoundError, ValueError) as err:
        if os.environ.get("SAFESEEK_DEBUG"):
            raise
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True, fg=typer.colors.YELLOW)
        sys.exit(EXIT_INTERRUPTED)
    except typer.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except Exception as err:
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(EXIT_BAD_INPUT)
        raise


if __name__ == "__main__":
    main()
