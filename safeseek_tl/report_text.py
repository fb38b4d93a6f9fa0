"""Plain-text (terminal) summaries of results, shared by the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


VERIFIED = {
    True: "passed on the validation prompts",
    False: "FAILED: no round switched the behaviour; the circuit is the first search's, unverified",
    None: "not run (a single search)",
}
"""What a result's ``verified`` flag (:class:`~safeseek_tl.seek.SeekResult`) reads as in the summary."""


def print_discovery_summary(loaded: Any, result: Any, switch: dict[str, float], out: Path) -> None:
    """Circuit size and the teacher-forced behaviour check of a SafeSeek run."""
    circuit = result.circuit
    table = Table(title=f"SafeSeek {result.config.scenario} circuit of {loaded.name}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("heads in circuit", f"{circuit.n_heads} ({100 * circuit.fraction('heads'):.2f}% of heads)")
    table.add_row("neurons in circuit", f"{circuit.n_neurons} ({100 * circuit.fraction('neurons'):.2f}% of neurons)")
    table.add_row("search rounds", str(result.rounds))
    table.add_row("best epoch", str(result.best_epoch))
    table.add_row("switch check", VERIFIED[getattr(result, "verified", None)])
    labels = {
        "switched": "behaviour switched, circuit ablated (backdoor: triggered prompts refused; alignment: harmful answered)",
        "clean": "clean harmful prompts refused, circuit ablated",
        "clean_full": "clean harmful prompts refused, full model",
    }
    for key, value in switch.items():
        table.add_row(labels.get(key, key), f"{100 * value:.1f}%")
    console = Console()
    console.print(table)
    console.print(f"written to {out}/ (circuit.json, scores.safetensors, masks.safetensors, history.json, config.json)")


def print_behaviour_table(results: dict[str, dict[str, float]], title: str) -> None:
    """Conditions (full, ablated, circuit only) as columns, metrics as rows."""
    table = Table(title=title)
    table.add_column("metric")
    conditions = list(results)
    for condition in conditions:
        table.add_column(condition, justify="right")
    metrics = sorted({key for values in results.values() for key in values})
    for metric in metrics:
        table.add_row(metric, *(f"{results[c][metric]:.3f}" if metric in results[c] else "" for c in conditions))
    Console().print(table)
