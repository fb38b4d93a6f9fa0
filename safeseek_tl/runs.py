"""The run folder: the name of every file a command writes, in one place.

A run folder holds what one command produced (``safeseek discover --out DIR``, ``compare``,
``tune``, ``guard train``, ``monitor``); ``safeseek report DIR`` reads whatever of it is there.
Each artifact saves and loads itself (``SeekResult.save``, ``Comparison.save``, ...) under these
names.
"""

from __future__ import annotations

CIRCUIT = "circuit.json"
SCORES = "scores.safetensors"
MASKS = "masks.safetensors"
HISTORY = "history.json"
CONFIG = "config.json"
BEHAVIOUR = "behaviour.json"
CHECKPOINT = "checkpoint.safetensors"
COMPARISON_CSV = "comparison.csv"
COMPARISON_JSON = "comparison.json"
OVERLAP_CSV = "overlap.csv"
OVERLAP_JSON = "overlap.json"
EXAMPLES = "examples.json"
GROUND_TRUTH = "ground_truth.json"
DELTA = "delta.safetensors"
TUNE = "tune.json"
METRICS = "metrics.json"
SAFEGUARD_TENSORS = "safeguard.safetensors"
SAFEGUARD_JSON = "safeguard.json"
TAMPER_TENSORS = "tamper.safetensors"
TAMPER_JSON = "tamper.json"
REPORT = "report.html"
