"""``safeseek tune``: fine-tune only a circuit, or everything but it, resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from safeseek_tl.cli import shared
from safeseek_tl.cli.shared import DeviceOption, ModelOption, tune_mode_option


def tune(
    model: ModelOption,
    data: Annotated[list[Path], typer.Option(help="Training records (.json/.jsonl/.csv): backdoor, alignment or benign; repeat to mix files.")],
    out: Annotated[Path, typer.Option(help="Output folder: delta.safetensors and tune.json.")],
    circuit: Annotated[Path | None, typer.Option(help="circuit.json: the units to tune (only) or to freeze (protect).")] = None,
    mode: Annotated[str, typer.Option(help="only (tune just the circuit), protect (tune all but the circuit) or full.")] = "only",
    steps: int = 100,
    lr: float = 1e-3,
    batch_size: int = 16,
    seed: int = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Save a checkpoint in OUT/checkpoint every this many steps.")] = 10,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint after an interruption.")] = False,
    device: DeviceOption = "cpu",
) -> None:
    """Fine-tune only a circuit, or everything except it; save the tuned slices as a delta."""
    from safeseek_tl.data import load_records
    from safeseek_tl.tuning import TuneConfig
    from safeseek_tl.tuning import tune as run_tune
    from safeseek_tl.units import Circuit

    config = TuneConfig(mode=tune_mode_option(mode), steps=steps, lr=lr, batch_size=batch_size, seed=seed)
    records = [record for path in data for record in load_records(path)]
    loaded = shared.load_model_for_cli(model, device)
    selected = Circuit.load(circuit, expected=loaded.shape) if circuit is not None else None
    with shared.resumable(out / "checkpoint", f"the run as of its last multiple of {checkpoint_every} steps"):
        result = run_tune(loaded, records, selected, config, checkpoint_dir=out / "checkpoint", resume=resume, checkpoint_every=checkpoint_every)
    result.save(out)
    typer.echo(
        f"{loaded.name}: {mode} tuning{f' of {selected!r}' if selected is not None and mode != 'full' else ''}, {steps} steps on {len(records)} records\n"
        f"  trainable parameters {result.trainable_params:,} of {result.total_params:,} ({100 * result.trainable_params / result.total_params:.2f}%)\n"
        f"  loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}, {result.wall_s:.1f} s\n"
        f"written to {out}/ (delta.safetensors, tune.json); apply with safeseek_tl.tuning.apply_delta(loaded, path)"
    )
