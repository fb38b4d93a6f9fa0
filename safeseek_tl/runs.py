"""The run folder: the name of every file a command writes, and what a report reads back.

A run folder holds what one command produced (``safeseek discover --out DIR``, ``compare``,
``tune``, ``guard train``, ``monitor``). Each artifact saves and loads itself
(``SeekResult.save``, ``Comparison.save``, ...) under these names; :class:`RunContents` reads
whatever of a folder a report shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from safeseek_tl._io import read_json
from safeseek_tl.errors import InputError
from safeseek_tl.graph import CircuitGraph
from safeseek_tl.units import Circuit, Scores

CIRCUIT = "circuit.json"
SCORES = "scores.safetensors"
MASKS = "masks.safetensors"
HISTORY = "history.json"
CONFIG = "config.json"
BEHAVIOUR = "behaviour.json"
STABILITY = "stability.json"
CHECKPOINT = "checkpoint.safetensors"
COMPARISON_CSV = "comparison.csv"
COMPARISON_JSON = "comparison.json"
OVERLAP_CSV = "overlap.csv"
OVERLAP_JSON = "overlap.json"
EXAMPLES = "examples.json"
DELTA = "delta.safetensors"
TUNE = "tune.json"
METRICS = "metrics.json"
SAFEGUARD_TENSORS = "safeguard.safetensors"
SAFEGUARD_JSON = "safeguard.json"
TAMPER_TENSORS = "tamper.safetensors"
TAMPER_JSON = "tamper.json"
REPORT = "report.html"
BENCHMARK_CSV = "benchmark.csv"
LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_HTML = "leaderboard.html"
BENCHMARK_JSON = "benchmark.json"
GRAPH_JSON = "graph.json"
GRAPH_HTML = "graph.html"


@dataclass
class RunContents:
    """What a run folder holds, as objects: whatever of it a command wrote (``None`` when absent).

    ``write_report`` renders one; :meth:`load` reads one from a folder (checked: shapes agree,
    the history has the expected form). ``source`` names where it came from, for the page.
    """

    source: str = "in memory"
    scores: Scores | None = None
    circuit: Circuit | None = None
    history: Mapping[str, Any] | None = None
    config: Any = None
    behaviour: Any = None
    examples: Any = None
    comparison: pd.DataFrame | None = None
    overlap: pd.DataFrame | None = None
    graph: CircuitGraph | None = None
    origins: dict[str, str] = field(default_factory=dict)  # file each part was read from, for error messages

    @classmethod
    def load(cls, folder: str | Path) -> RunContents:
        """Read every report file present in ``folder``; at least scores, a circuit or a comparison."""
        run = Path(folder)
        if not run.is_dir():
            raise FileNotFoundError(f"run folder {run} does not exist")
        present = {name: run / name for name in (SCORES, CIRCUIT, HISTORY, CONFIG, BEHAVIOUR, EXAMPLES, COMPARISON_CSV, OVERLAP_CSV, GRAPH_JSON) if (run / name).is_file()}
        if not {SCORES, CIRCUIT, COMPARISON_CSV, GRAPH_JSON} & present.keys():
            raise InputError(f"{run}: no {SCORES}, {CIRCUIT}, {COMPARISON_CSV} or {GRAPH_JSON}: not a saved run folder")
        contents = cls(
            source=str(run),
            scores=Scores.load(present[SCORES]) if SCORES in present else None,
            circuit=Circuit.load(present[CIRCUIT]) if CIRCUIT in present else None,
            history=read_json(present[HISTORY]) if HISTORY in present else None,
            config=read_json(present[CONFIG]) if CONFIG in present else None,
            behaviour=read_json(present[BEHAVIOUR]) if BEHAVIOUR in present else None,
            examples=read_json(present[EXAMPLES]) if EXAMPLES in present else None,
            comparison=pd.read_csv(present[COMPARISON_CSV]) if COMPARISON_CSV in present else None,
            overlap=pd.read_csv(present[OVERLAP_CSV], index_col=0) if OVERLAP_CSV in present else None,
            graph=CircuitGraph.from_dict(read_json(present[GRAPH_JSON]), str(present[GRAPH_JSON])) if GRAPH_JSON in present else None,
            origins={name: str(path) for name, path in present.items()},
        )
        contents.check()
        return contents

    def check(self) -> None:
        """Raise when the parts do not fit together: scores and circuit of different models, a malformed history."""
        if self.scores is not None and self.circuit is not None:
            self.scores.shape.check_compatible(self.circuit.shape, self.origins.get(CIRCUIT, "the circuit"))
        history = self.history
        if history is not None and not (isinstance(history, Mapping) and isinstance(history.get("history", []), list)):
            raise InputError(f"{self.origins.get(HISTORY, 'history')}: expected an object with a 'history' list of epochs")
