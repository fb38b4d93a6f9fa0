"""Fills, warm start and stability of SafeSeek's alignment circuits on tiny-aligned (issue 20).

    python benchmarks/sparse_fills.py grid [--neurons 30] [--n-eval 40] [--only LABEL]
    python benchmarks/sparse_fills.py curve --ablation learned --init-from attr-patch [--sizes 30,60,120,240]
    python benchmarks/sparse_fills.py stability [--seeds 0,1,2] [--splits 2] [--set key=value ...]

Every search: heads and neurons, the necessity objective's settings of sessions 8-13 (grid and curve:
``recorded_settings.py``; ``stability``: the library's defaults) and schedule (50 epochs), the
first 100 alignment training records with 100 benign training records in the objective, 20
validation records; measured on the test split (40 harmful, 40 benign prompts: ``evaluate``,
greedy, 32 new tokens, keyword judge; the circuit ablated as the search masked it, with its fill).

- ``grid``: zero, mean and learned fill, each from the constant start (logits 1.0) and from
  attribution-patching ranks, at a size target of 1 head + ``--neurons`` neurons (0: no target).
- ``curve``: one setting at several neuron targets (1 head each), beside attribution patching's own
  ranking cut to the same sizes (its top head and top neurons, zero- and mean-ablated).
- ``stability``: ``seek.stability`` with 3 seeds x 2 halves of the 100 training records; the mean
  pairwise Jaccard per granularity and the core.

Issue 20's target on this organism: <= 5% of heads and <= 2% of neurons (1 head, 30 neurons),
harmful compliance >= 80%, benign cross-entropy within 5%. Prints markdown rows
(benchmarks/safeseek_organisms.py's format, with the search's epochs and mask size before the cut).
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date

import torch
from recorded_settings import config_as_recorded  # benchmarks/ is the script's folder
from safeseek_organisms import report

from safeseek_tl import load_model
from safeseek_tl.ablation import ReferenceActivations
from safeseek_tl.cli.shared import parse_overrides
from safeseek_tl.evaluate import BehaviourData
from safeseek_tl.methods import attribute
from safeseek_tl.organisms import load_data
from safeseek_tl.seek import SafeSeek, SeekConfig, stability
from safeseek_tl.seek.objective import mask_paths
from safeseek_tl.seek.trainer import path_means
from safeseek_tl.units import Circuit

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HEADER = "| run | epochs run, best, mask before the cut | heads | neurons | behaviour (ASR) full → ablated | refusal of harmful | benign answered | utility CE (nats/token) | - | wall |"


def _search(loaded, data, train, val, benign, label: str, **settings) -> None:
    """One search; ``settings`` by dotted name (``masks.fill``, ``target.neurons``, ...)."""
    config = config_as_recorded("alignment", "both", **settings)
    start = time.perf_counter()
    result = SafeSeek(loaded, config).fit(train, val, progress=False, benign_records=benign)
    wall = time.perf_counter() - start
    last = result.history[-1]
    steps = f"{len(result.history)}, best {result.best_epoch}, {last.get('off_heads')} + {last.get('off_neurons')}"
    report(f"{label} | {steps}", loaded, result, data, "asr_harmful", wall)


def grid(loaded, data, train, val, benign, neurons: int, only: str | None, seed: int, extra: dict[str, object]) -> None:
    for init_from in ("constant", "attr-patch"):
        for ablation in ("zero", "mean", "learned"):
            target = {"target.heads": 1, "target.neurons": neurons} if neurons else {}  # --neurons 0: no size target
            label = f"{ablation} fill, {init_from} start, " + (f"target 1 head + {neurons} neurons" if neurons else "no target") + (f", seed {seed}" if seed != 42 else "")
            label += "".join(f", {key}={value}" for key, value in extra.items())
            if only is None or only in label:
                _search(loaded, data, train, val, benign, label, **{"masks.fill": ablation, "masks.init_from": init_from, "schedule.seed": seed, **target, **extra})


def curve(loaded, data, train, val, benign, ablation: str, init_from: str, sizes: list[int]) -> None:
    for n in sizes:
        _search(loaded, data, train, val, benign, f"{ablation} fill, {init_from} start, target 1 head + {n} neurons",
                **{"masks.fill": ablation, "masks.init_from": init_from, "target.heads": 1, "target.neurons": n})  # fmt: skip
    start = time.perf_counter()
    scores = attribute("attr-patch", loaded, train, "alignment", benign=benign, units="both", progress=False).scores
    wall = time.perf_counter() - start
    config = config_as_recorded("alignment", "both")
    means = path_means(loaded.model, mask_paths(config, train, loaded.chat, "training data", benign), config.schedule.batch_size)
    for n in sizes:
        circuit = Circuit.top_k(scores, heads=1, neurons=n)
        for mode, reference in (("zero", None), ("mean", ReferenceActivations(means.means, {}))):
            row = _Ranked(circuit, config_as_recorded("alignment", "both", **{"masks.fill": mode}), reference)
            report(f"attribution patching's top 1 head + {n} neurons, {mode}-ablated | -", loaded, row, data, "asr_harmful", wall)


class _Ranked:
    """A ranked circuit in the shape ``report`` reads (a result's circuit, config and fill)."""

    def __init__(self, circuit: Circuit, config: SeekConfig, reference: ReferenceActivations | None) -> None:
        self.circuit, self.config, self._reference = circuit, config, reference

    def reference(self) -> ReferenceActivations | None:
        return self._reference


def repeat(loaded, train, val, benign, seeds: list[int], splits: int, settings: dict[str, object]) -> None:
    config = SeekConfig.of("alignment", "both", **settings)
    start = time.perf_counter()
    found = stability(loaded, train, config, seeds, splits, val_records=val, benign=benign)
    wall = time.perf_counter() - start
    for run in found.runs:
        print(f"- seed {run['seed']}, half {run['split']} ({run['n_train']} records): {run['n_heads']} heads, {run['n_neurons']} neurons, {run['wall_s']:.0f} s")
    core = found.core
    print(f"- mean pairwise Jaccard: heads {found.jaccard['heads']:.3f}, neurons {found.jaccard['neurons']:.3f}; "
          f"core {core.n_heads} heads ({core.head_list}), {core.n_neurons} neurons; {len(found.runs)} runs in {wall:.0f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("grid", "curve", "stability"))
    parser.add_argument("--n-eval", type=int, default=40)
    parser.add_argument("--neurons", type=int, default=30, help="grid: the neuron target with 1 head (0: no size target)")
    parser.add_argument("--seed", type=int, default=42, help="grid: the searches' seed (SeekConfig's default 42)")
    parser.add_argument("--only", help="grid: run only the rows whose label contains this text")
    parser.add_argument("--ablation", default="learned")
    parser.add_argument("--init-from", default="constant")
    parser.add_argument("--sizes", default="30,60,120,240")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--splits", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="grid, stability: a SeekConfig setting by dotted name, key=value (numbers, true/false or text)")
    args = parser.parse_args()
    print(f"{date.today()}, {os.uname().machine}, {torch.get_num_threads()} threads, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at the start\n")
    loaded = load_model("organism:tiny-aligned")
    train, val, benign = load_data("alignment", "train")[:100], load_data("alignment", "val")[:20], load_data("benign", "train")[:100]
    settings = parse_overrides(args.set)
    if args.part == "stability":
        repeat(loaded, train, val, benign, [int(s) for s in args.seeds.split(",")], args.splits, settings)
        return
    data = BehaviourData.from_records(load_data("alignment", "test")[: args.n_eval], load_data("benign", "test")[: args.n_eval])
    print(HEADER + "\n" + "|---" * 10 + "|")
    if args.part == "grid":
        grid(loaded, data, train, val, benign, args.neurons, args.only, args.seed, settings)
    else:
        curve(loaded, data, train, val, benign, args.ablation, args.init_from, [int(s) for s in args.sizes.split(",")])


if __name__ == "__main__":
    main()
