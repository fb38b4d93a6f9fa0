"""``safeseek stability``: the same SafeSeek search over seeds and data splits, and the overlap of its circuits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from safeseek_tl.cli import shared
from safeseek_tl.cli.discover import seek_config
from safeseek_tl.cli.shared import DeviceOption, ModelOption, load_benign, scenario_option, unit_choice_option


def stability(
    model: ModelOption,
    data: Annotated[Path, typer.Option(help="Training records (.json/.jsonl/.csv): backdoor or alignment fields.")],
    scenario: Annotated[str, typer.Option(help="backdoor or alignment.")],
    out: Annotated[Path, typer.Option(help="Output folder: stability.json (every run's circuit, the overlap) and the core as circuit.json.")],
    units: Annotated[str, typer.Option(help="heads, neurons or both.")] = "heads",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds: one search per seed and split.")] = "0,1,2",
    splits: Annotated[int, typer.Option(help="Disjoint random parts of the training records (2: two halves); each run trains on one.")] = 2,
    split_seed: Annotated[int, typer.Option(help="Seed of the shuffle that cuts the training records into parts.")] = 0,
    val_data: Annotated[Path | None, typer.Option(help="Validation records, shared by every run; default: the last --val-size training records.")] = None,
    benign: Annotated[Path | None, typer.Option(help="Benign records (prompt, response) in every run's objective.")] = None,
    prune: Annotated[bool, typer.Option("--prune", help="Prune each run's circuit to a minimal switching set before comparing.")] = False,
    epochs: Annotated[int | None, typer.Option(help="Epochs of each run (default: the official script's).")] = None,
    val_size: Annotated[
        int | None, typer.Option(help="Validation records taken from the end of the training records when --val-data is not given (default: the config's).")
    ] = None,
    time_budget: Annotated[float | None, typer.Option(help="Minutes for each run's search (--epochs no longer counts).")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run: the runs OUT/stability.json holds (saved after each run) are not searched again.")
    ] = False,
    overrides: Annotated[list[str], typer.Option("--set", help="Any SeekConfig setting by its dotted name, e.g. --set masks.fill=learned; repeatable.")] = [],  # noqa: B006
    device: DeviceOption = "cpu",
) -> None:
    """Repeat a SafeSeek search over seeds and data splits: the mean pairwise Jaccard overlap of its circuits and their core."""
    from safeseek_tl.data import load_records
    from safeseek_tl.seek import stability as run_stability

    scenario_name = scenario_option(scenario)
    config = seek_config(scenario_name, unit_choice_option(units), overrides, {"schedule.epochs": epochs, "schedule.val_size": val_size})
    seed_list = shared.int_list(seeds, "--seeds")
    records = load_records(data, scenario_name)
    val_records = load_records(val_data, scenario_name) if val_data else None
    loaded = shared.load_model_for_cli(model, device)
    found = run_stability(
        loaded, records, config, seed_list, splits, val_records=val_records, benign=load_benign(benign), split_seed=split_seed,
        prune=prune, time_budget_s=None if time_budget is None else time_budget * 60, progress=True, out_dir=out, resume=resume,
    )  # fmt: skip
    core = found.core
    for kind, value in found.jaccard.items():
        typer.echo(f"{kind}: mean pairwise Jaccard {value:.3f} over {len(found.circuits)} runs; core {len(core.get(kind).nonzero())} units")
    for run in found.runs:
        typer.echo(f"seed {run['seed']}, split {run['split']}: {run['n_heads']} heads, {run['n_neurons']} neurons ({run['wall_s']:.0f} s)")
    typer.echo(f"saved to {out}/ (stability.json, core circuit.json)")
