"""What the commands share: the common options, the judge and model loading, ``--set``
parsing and resumable steps."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from safeseek_tl.errors import InputError

if TYPE_CHECKING:
    from safeseek_tl.ablation import AblationMode
    from safeseek_tl.data import BenignRecord
    from safeseek_tl.hooks import UnitChoice, UnitKind
    from safeseek_tl.masks import MaskKind
    from safeseek_tl.metrics import RefusalJudge
    from safeseek_tl.models import LoadedModel
    from safeseek_tl.parameters import TuneMode
    from safeseek_tl.scenarios import ScenarioName
    from safeseek_tl.seek.config import Objective

Choice = TypeVar("Choice", bound=str)

ModelOption = Annotated[str, typer.Option("--model", "-m", help="organism:<name>, a fetched model (safeseek models), a local HF folder, a .gguf file or a cached hub name.")]
DeviceOption = Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")]

JudgeOption = Annotated[
    str,
    typer.Option(
        "--judge",
        help="The refusal judge: ships (Ships' keywords; answers under 32 characters count as refusals) or arditi "
        "(Arditi et al.'s twelve refusal phrases, no length rule: fits models that comply with disclaimers).",
    ),
]
JudgeKeywordsOption = Annotated[
    Path | None,
    typer.Option("--judge-keywords", help="Refusal keywords for the judge, one per line (UTF-8); default: Ships' list.", metavar="FILE"),
]
JudgeCaseOption = Annotated[
    bool,
    typer.Option("--judge-case-sensitive", help="Match the judge's keywords case-sensitively (with the default list: Ships' exact rule)."),
]


def judge_from_options(name: str, keywords: Path | None, case_sensitive: bool) -> RefusalJudge:
    """The keyword judge the options ask for: ``--judge``'s list and length rule, the list replaced
    by ``--judge-keywords``' file when given, in any case unless asked."""
    from safeseek_tl.metrics import RefusalJudge

    presets = {"ships": RefusalJudge(), "arditi": RefusalJudge.arditi()}
    preset = presets[choice_option(name, "--judge", list(presets))]
    if keywords is not None:
        return RefusalJudge.from_file(keywords, case_sensitive=case_sensitive, min_chars=preset.min_chars)
    return dataclasses.replace(preset, case_sensitive=case_sensitive)


def load_model_for_cli(model: str, device: str) -> LoadedModel:
    """``load_model(model, device=device)`` after checking ``--device``, offline unless HF_HUB_OFFLINE says otherwise.

    Every command loads its models through this function (as ``shared.load_model_for_cli``), so
    that tests can hand the commands a model built in memory.
    """
    import torch

    from safeseek_tl.models import load_model

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise InputError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA GPU is available to torch here; use --device cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return load_model(model, device=device)


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """``key=value`` strings to settings (numbers parsed, ``none`` -> None); SeekConfig's keys are dotted names (``schedule.epochs``)."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--set expects key=value, got {pair!r}")
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


@contextmanager
def resumable(checkpoint_dir: Path, saved: str) -> Iterator[None]:
    """Run a step that checkpoints into ``checkpoint_dir`` so that Ctrl-C and SIGTERM stop it resumably.

    SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does (the last checkpoint stays whole), and an
    interrupt says where the checkpoint is; ``saved`` names what it holds. The previous SIGTERM
    handler is restored afterwards.
    """
    import signal

    from safeseek_tl.checkpoint import CHECKPOINT_FILE

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except KeyboardInterrupt:
        if (checkpoint_dir / CHECKPOINT_FILE).is_file():
            typer.secho(f"interrupted: {saved} is saved in {checkpoint_dir}; rerun with --resume", err=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def load_benign(path: Path | None) -> list[BenignRecord]:
    """The benign records of ``--benign``, or none."""
    from safeseek_tl.data import load_records

    return load_records(path, "benign") if path else []


def choice_option(value: str, option: str, allowed: Sequence[Choice]) -> Choice:
    """``value`` of ``option`` as the one of ``allowed`` it equals (typed as the library's literal), or an InputError naming them."""
    for choice in allowed:
        if value == choice:
            return choice
    raise InputError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")


def scenario_option(value: str, option: str = "--scenario") -> ScenarioName:
    """A scenario name of ``safeseek_tl.scenarios.SCENARIOS``."""
    from safeseek_tl.scenarios import SCENARIOS

    return choice_option(value, option, [known.name for known in SCENARIOS.values()])


def unit_choice_option(value: str, option: str = "--units") -> UnitChoice:
    """heads, neurons or both (``hooks.UNIT_CHOICES``)."""
    from safeseek_tl.hooks import UNIT_CHOICES

    return choice_option(value, option, UNIT_CHOICES)


def unit_kind_option(value: str, option: str = "--units") -> UnitKind:
    """heads or neurons (``hooks.UNIT_KINDS``)."""
    from safeseek_tl.hooks import UNIT_KINDS

    return choice_option(value, option, UNIT_KINDS)


def mask_kind_option(value: str, option: str = "--mask-kind") -> MaskKind:
    """A mask kind of ``masks.MASK_KINDS``."""
    from safeseek_tl.masks import MASK_KINDS

    return choice_option(value, option, MASK_KINDS)


def objective_option(value: str, option: str = "--objective") -> Objective:
    """ce or kl (``seek.config.OBJECTIVES``): the search reads any other value as ce, so it is refused here."""
    from safeseek_tl.seek.config import OBJECTIVES

    return choice_option(value, option, OBJECTIVES)


def ablation_mode_option(value: str, option: str = "--mode") -> AblationMode:
    """zero, mean or resample (``ablation.ABLATION_MODES``)."""
    from safeseek_tl.ablation import ABLATION_MODES

    return choice_option(value, option, ABLATION_MODES)


def tune_mode_option(value: str, option: str = "--mode") -> TuneMode:
    """only, protect or full (``parameters.TUNE_MODES``)."""
    from safeseek_tl.parameters import TUNE_MODES

    return choice_option(value, option, TUNE_MODES)


def int_list(text: str, option: str) -> list[int]:
    """A comma-separated list of whole numbers given to ``option`` (``"1,2,4"``)."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise InputError(f"{option} must be comma-separated integers, got {text!r}") from None
