"""``safeseek demo`` and ``safeseek report``: the whole job on the tiny organisms, and a run's HTML page."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from safeseek_tl.cli.shared import JudgeCaseOption, JudgeKeywordsOption, JudgeOption, judge_from_options


def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/demo"),
    judge_name: JudgeOption = "ships",
    judge_keywords: JudgeKeywordsOption = None,
    judge_case_sensitive: JudgeCaseOption = False,
) -> None:
    """The main job on the bundled tiny organisms: discover, evaluate, compare, report."""
    from safeseek_tl.demo import run_demo

    judge = judge_from_options(judge_name, judge_keywords, judge_case_sensitive)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    index = run_demo(out, log=typer.echo, judge=judge)
    typer.echo(f"report: {index.resolve()}")


def report(
    run: Annotated[Path, typer.Option(help="A folder written by discover, attribute or compare.")],
    out: Annotated[Path, typer.Option(help="The HTML file to write.")],
    title: Annotated[str | None, typer.Option(help="Page title.")] = None,
) -> None:
    """Write a self-contained, offline HTML report of a saved run."""
    from safeseek_tl.report import write_report

    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} does not exist")
    typer.echo(f"report: {write_report(run, out, title=title)}")
