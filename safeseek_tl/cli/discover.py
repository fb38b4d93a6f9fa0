"""``safeseek discover``: SafeSeek's search, pruning and check in one library call, saved and summarized."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from safeseek_tl.cli import shared
from safeseek_tl.cli.shared import (
    DeviceOption,
    JudgeCaseOption,
    JudgeKeywordsOption,
    ModelOption,
    judge_from_options,
    load_benign,
    mask_kind_option,
    objective_option,
    parse_overrides,
    scenario_option,
    unit_choice_option,
)
from safeseek_tl.errors import InputError

if TYPE_CHECKING:
    from safeseek_tl.seek import SeekConfig


@contextmanager
def saving_unpruned(out: Path) -> Iterator[None]:
    """Save the unpruned result an error carries (pruning found no switching set) in ``out`` and say so."""
    try:
        yield
    except InputError as err:
        if getattr(err, "unpruned", None) is None:
            raise
        err.unpruned.save(out)
        raise InputError(f"{err}; the unpruned result is saved in {out}") from None


def seek_config(overrides: list[str], **options: Any) -> SeekConfig:
    """The SeekConfig of the options and the ``--set key=value`` overrides.

    ``Any``: which field a ``--set`` names, and so its type, is known only at run time; SeekConfig's
    own checks (and the TypeError of an unknown field) judge the values.
    """
    from safeseek_tl.seek import SeekConfig

    try:
        settings: dict[str, Any] = parse_overrides(overrides)
        return SeekConfig(**options, **settings)
    except TypeError as err:  # an unknown --set key, or a value of the wrong type
        raise InputError(f"bad settings: {err}") from None


def _check_flags(complete: bool, prune: bool, resume: bool) -> None:
    if complete and resume:
        raise InputError("--resume does not apply to --complete, which keeps no checkpoint")
    if complete and prune:
        raise InputError("--prune does not apply to --complete, which prunes each of its rounds already")


def discover(
    model: ModelOption,
    data: Annotated[Path, typer.Option(help="Training records (.json/.jsonl/.csv): backdoor or alignment fields.")],
    scenario: Annotated[str, typer.Option(help="backdoor or alignment.")],
    out: Annotated[Path, typer.Option(help="Output folder (circuit.json, scores/masks safetensors, history).")],
    units: Annotated[str, typer.Option(help="heads, neurons or both.")] = "heads",
    val_data: Annotated[Path | None, typer.Option(help="Validation records; default: the last --val-size training records.")] = None,
    complete: Annotated[bool, typer.Option("--complete", help="Repeat the search holding found units in place, to surface backup parts.")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="Cut the circuit to a minimal set of its units whose ablation still switches the validation prompts (--complete prunes each round anyway).")] = False,
    benign: Annotated[Path | None, typer.Option(help="Benign records (prompt, response): the main mask must keep them answered; with --complete, a round must too.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the official script's).")] = None,
    batch_size: int = 8,
    lr: float = 1e-2,
    mask_kind: Annotated[str, typer.Option(help="hard_sigmoid (default), sigmoid or hard_concrete.")] = "hard_sigmoid",
    objective: Annotated[str, typer.Option(help="ce (the official code's) or kl (the paper figure's).")] = "ce",
    val_size: int = 20,
    seed: int = 42,
    overrides: Annotated[list[str], typer.Option("--set", help="Any SeekConfig field, e.g. --set w_overlap=0.5; repeatable.")] = [],  # noqa: B006
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint after an interruption.")] = False,
    time_budget: Annotated[float | None, typer.Option(help="Minutes for the search: its steps are fitted to them (--epochs no longer counts).")] = None,
    judge_keywords: JudgeKeywordsOption = None,
    judge_case_sensitive: JudgeCaseOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Find the circuit of a backdoor or of safety alignment with SafeSeek masks.

    Data parallel: `torchrun --nproc_per_node N -m safeseek_tl.cli discover ...` splits every batch over N processes.
    """
    from safeseek_tl.data import load_records
    from safeseek_tl.distributed import init_from_environment
    from safeseek_tl.report_text import print_discovery_summary
    from safeseek_tl.seek import discover as discover_circuit

    scenario_name = scenario_option(scenario)
    config = seek_config(
        overrides, scenario=scenario_name, units=unit_choice_option(units), epochs=epochs, batch_size=batch_size, lr=lr,
        mask_kind=mask_kind_option(mask_kind), objective=objective_option(objective), val_size=val_size, seed=seed,
    )  # fmt: skip
    _check_flags(complete, prune, resume)
    judge = judge_from_options(judge_keywords, judge_case_sensitive)
    records = load_records(data, scenario_name)
    val_records = load_records(val_data, scenario_name) if val_data else None
    benign_records = load_benign(benign)
    # Under torchrun: join the process group (one GPU per rank on CUDA); each batch is split over the ranks.
    parallel, device = init_from_environment(device)
    loaded = shared.load_model_for_cli(model, device)
    with shared.resumable(out / "checkpoint", "the last finished epoch"), saving_unpruned(out):
        found = discover_circuit(
            loaded, records, config, val_records=val_records, benign=benign_records, prune=complete or (prune and parallel.is_main), complete=complete,
            check=parallel.is_main, judge=judge, checkpoint_dir=None if complete else out / "checkpoint", resume=resume,
            time_budget_s=None if time_budget is None else time_budget * 60,
        )  # fmt: skip
    if not parallel.is_main:  # every rank holds the same result; rank 0 writes and reports it
        return
    found.save(out)
    assert found.check is not None, "discover checks the circuit on the main rank (check=parallel.is_main)"
    print_discovery_summary(loaded, found.result, found.check, out, judge)
    if found.result.verified is False:
        warning = "no round of the complete search switched the behaviour on the validation prompts"
        typer.secho(f"warning: {warning}; {out}/ holds the first search's circuit, unverified (history.json: \"verified\": false)", err=True, fg=typer.colors.YELLOW)
