"""Plain-text (terminal) summaries of results, shared by the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from safeseek_tl.metrics import RefusalJudge
    from safeseek_tl.models import LoadedModel
    from safeseek_tl.seek import SeekResult


SCORE_NOTE = "refusal score: log-odds that the answer opens with a refusal token, a rate's prompts averaged (> 0: refusal likely; no keywords)"
"""What the refusal score printed beside each judged rate is: a judge whose keywords do not fit
the model shows as a rate that disagrees with it."""


VERIFIED = {
    True: "passed on the validation prompts",
    False: "FAILED: no round switched the behaviour; the circuit is the first search's, unverified",
    None: "not run (a single search)",
}
"""What a result's ``verified`` flag (:class:`~safeseek_tl.seek.SeekResult`) reads as in the summary."""


def print_discovery_summary(
    loaded: LoadedModel, result: SeekResult, switch: dict[str, float], out: Path, judge: RefusalJudge | None = None, judged: tuple[int, int] | None = None
) -> None:
    """Circuit size and the behaviour check of a SafeSeek run (:func:`~safeseek_tl.seek.behaviour_switch`).

    Each judged rate ``key`` is printed with ``switch["refusal_score_" + key]`` when present;
    ``judge`` (a :class:`~safeseek_tl.metrics.RefusalJudge`) is named under the table; ``judged``:
    how many validation records and benign prompts the rates are shares of.
    """
    circuit = result.circuit
    table = Table(title=f"SafeSeek {result.config.scenario} circuit of {loaded.name}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("refusal score", justify="right")
    table.add_row("heads in circuit", f"{circuit.n_heads} ({100 * circuit.fraction('heads'):.2f}% of heads)", "")
    table.add_row("neurons in circuit", f"{circuit.n_neurons} ({100 * circuit.fraction('neurons'):.2f}% of neurons)", "")
    target = result.config.target
    if result.rounds == 1 and (target.heads is not None or target.neurons is not None):  # the cut may add units the mask kept on
        off = result.masked_off()
        rule = "before the exact cut to the size target" if target.exact else "the circuit: at most the size target of them"
        table.add_row(f"switched off by the mask ({rule})", f"{off.n_heads} heads + {off.n_neurons} neurons", "")
    table.add_row("search rounds", str(result.rounds), "")
    table.add_row("best epoch", str(result.best_epoch), "")
    table.add_row("switch check", VERIFIED[getattr(result, "verified", None)])
    if judged is not None:
        table.add_row("prompts judged", f"{judged[0]} validation records, {judged[1]} benign prompts", "")
    labels = {
        "switched": "behaviour switched, circuit ablated (backdoor: triggered prompts refused; alignment: harmful answered)",
        "clean": "clean harmful prompts refused, circuit ablated",
        "clean_full": "clean harmful prompts refused, full model",
        "benign": "benign prompts answered, circuit ablated",
        "benign_full": "benign prompts answered, full model",
    }
    for key, value in switch.items():
        if key.startswith("refusal_score_"):
            continue  # printed beside its rate
        score = switch.get(f"refusal_score_{key}")
        shown = f"{100 * value:.1f}%" if key in labels else f"{value:.4f}"
        table.add_row(labels.get(key, key), shown, "" if score is None else f"{score:+.2f}")
    console = Console()
    console.print(table)
    if judge is not None:
        console.print(f"judge: {judge.describe()}")
    console.print(SCORE_NOTE)
    console.print(f"written to {out}/ (circuit.json, scores.safetensors, masks.safetensors, history.json, config.json)")


def print_behaviour_table(results: dict[str, dict[str, float]], title: str, judge: RefusalJudge | None = None) -> None:
    """Conditions (full, ablated, circuit only) as columns, metrics as rows in the order measured.

    :func:`~safeseek_tl.evaluate.measure` puts each ``refusal_score_*`` right after its judged rate,
    so the two are read together; ``judge`` is named under the table.
    """
    table = Table(title=title)
    table.add_column("metric")
    conditions = list(results)
    for condition in conditions:
        table.add_column(condition, justify="right")
    metrics = list(dict.fromkeys(key for values in results.values() for key in values))
    for metric in metrics:
        table.add_row(metric, *(f"{results[c][metric]:.3f}" if metric in results[c] else "" for c in conditions))
    console = Console()
    console.print(table)
    if judge is not None:
        console.print(f"judge: {judge.describe()}")
    console.print(SCORE_NOTE)
