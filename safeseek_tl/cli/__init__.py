"""The ``safeseek`` command: a thin layer over the Python API.

Each command parses its options, calls the library, saves and prints; the commands live in this
package's modules by concern (``models``: models, fetch, info, generate, data export; ``discover``;
``stability``; ``baselines``: evaluate, attribute, compare; ``analysis``: benchmark, graph; ``tune``;
``guard``; ``report``: demo, report) and
``shared`` holds what they share; this module puts them on one app.

Exit codes: 0 success; 2 bad input (a file, a model name, an option); 3 the optimization diverged
(a loss term, the gradient or a mask became NaN or infinite); 130 interrupted (Ctrl-C or SIGTERM);
1 anything unexpected (a bug: please report it with the traceback ``SAFESEEK_DEBUG=1`` prints).
Every error is one line on stderr; ``SAFESEEK_DEBUG=1`` re-raises it with its traceback.
"""

from __future__ import annotations

import os
import sys

import typer

from safeseek_tl.cli import analysis, baselines, discover, models, report, stability, tune
from safeseek_tl.cli.guard import guard_app
from safeseek_tl.cli.models import data_app
from safeseek_tl.errors import InputError, NonFiniteLossError

__all__ = ["app", "main"]

app = typer.Typer(
    name="safeseek",
    help="Find, ablate and compare safety circuits (heads and MLP neurons) of language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# in the order `safeseek --help` lists them
COMMANDS = (
    models.models, models.fetch, models.info, models.generate, discover.discover, stability.stability,
    baselines.evaluate, baselines.attribute, baselines.compare, analysis.benchmark, analysis.graph, tune.tune, report.demo, report.report,
)  # fmt: skip
for command in COMMANDS:
    app.command()(command)
app.add_typer(guard_app, name="guard")
app.add_typer(data_app, name="data")

EXIT_BUG, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 130


def main() -> None:
    """Entry point: run the app and turn every error into one clear line and its exit code.

    Only :class:`~safeseek_tl.errors.InputError` (and a missing file) counts as bad input: a plain
    ``ValueError`` comes from a bug, like any other unexpected exception.
    """
    try:
        # Outside standalone mode typer turns Ctrl-C (and --help's exit) into a returned exit code.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            if code == EXIT_INTERRUPTED:
                typer.secho("interrupted", err=True, fg=typer.colors.YELLOW)
            sys.exit(code)
    except (InputError, FileNotFoundError) as err:
        if os.environ.get("SAFESEEK_DEBUG"):
            raise
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        sys.exit(EXIT_BAD_INPUT)
    except NonFiniteLossError as err:
        if os.environ.get("SAFESEEK_DEBUG"):
            raise
        typer.secho(f"error: the optimization diverged: {err}; try a smaller --lr", err=True, fg=typer.colors.RED)
        sys.exit(EXIT_DIVERGED)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True, fg=typer.colors.YELLOW)
        sys.exit(EXIT_INTERRUPTED)
    except typer.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except Exception as err:
        # a usage error (unknown option, bad value); typer >= 0.20 vendors click as typer._click
        show = getattr(err, "show", None)
        if callable(show) and any(cls.__name__ == "ClickException" for cls in type(err).__mro__):
            show()
            sys.exit(EXIT_BAD_INPUT)
        if os.environ.get("SAFESEEK_DEBUG"):
            raise
        typer.secho(
            f"error: unexpected {type(err).__name__}: {err}\n(a bug: rerun with SAFESEEK_DEBUG=1 to see the traceback, and please report it)",
            err=True,
            fg=typer.colors.RED,
        )
        sys.exit(EXIT_BUG)
