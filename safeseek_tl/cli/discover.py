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
    JudgeOption,
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
    from safeseek_tl.hooks import UnitChoice
    from safeseek_tl.scenarios import ScenarioName
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


def seek_config(scenario: ScenarioName, units: UnitChoice, overrides: list[str], options: dict[str, Any]) -> SeekConfig:
    """The SeekConfig of ``scenario`` and ``units`` with the options given (dotted names; ``None``:
    not given) and the ``--set group.field=value`` overrides; SeekConfig's own checks judge the values.
    """
    from safeseek_tl.seek import SeekConfig

    settings: dict[str, Any] = {name: value for name, value in options.items() if value is not None}
    for name, value in parse_overrides(overrides).items():
        if name in ("scenario", "units"):
            raise InputError(f"--set {name}: give --{name} instead")
        if name in settings:
            raise InputError(f"--set {name} repeats an option of the command that sets it; give one of the two")
        settings[name] = value
    return SeekConfig.of(scenario, units, **settings)


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
    benign: Annotated[Path | None, typer.Option(help="Benign records (prompt, response): the main mask must keep them answered (the alignment default also ranks the units from them for its warm start; without them it warns); the check (with --complete, each round's) judges the first as many as the validation records.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the official script's, 20 backdoor, 50 alignment).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default 8).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default 1e-2).")] = None,
    mask_kind: Annotated[str | None, typer.Option(help="hard_sigmoid (default), sigmoid or hard_concrete.")] = None,
    objective: Annotated[str | None, typer.Option(help="ce (the official code's, default) or kl (the paper figure's).")] = None,
    val_size: Annotated[int | None, typer.Option(help="The last N training records validate when --val-data is not given (default 20).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 42).")] = None,
    overrides: Annotated[list[str], typer.Option("--set", help="Any SeekConfig setting by its dotted name, e.g. --set loss.w_overlap=0.5 (docs/choices.md); repeatable.")] = [],  # noqa: B006
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint after an interruption.")] = False,
    time_budget: Annotated[float | None, typer.Option(help="Minutes for the search: its steps are fitted to them (--epochs no longer counts).")] = None,
    judge_name: JudgeOption = "ships",
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
    kind, goal = None if mask_kind is None else mask_kind_option(mask_kind), None if objective is None else objective_option(objective)
    options = {"schedule.epochs": epochs, "schedule.batch_size": batch_size, "schedule.lr": lr, "schedule.val_size": val_size, "schedule.seed": seed, "masks.kind": kind, "loss.objective": goal}
    config = seek_config(scenario_name, unit_choice_option(units), overrides, options)
    _check_flags(complete, prune, resume)
    judge = judge_from_options(judge_name, judge_keywords, judge_case_sensitive)
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
    print_discovery_summary(loaded, found.result, found.check, out, judge, (len(found.val_records), found.n_benign_checked))
    if found.result.verified is False:
        warning = "no round of the complete search switched the behaviour on the validation prompts"
        typer.secho(f"warning: {warning}; {out}/ holds the first search's circuit, unverified (history.json: \"verified\": false)", err=True, fg=typer.colors.YELLOW)
