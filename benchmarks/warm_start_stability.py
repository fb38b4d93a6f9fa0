"""How stable is the alignment search's warm start over data halves, and how far did the searches move from it?

    python benchmarks/warm_start_stability.py --model qwen2.5-coder-0.5b-instruct \\
        --data runs/q/harmful_train.jsonl --benign runs/q/harmless_train.jsonl --stability runs/q/stab

The default alignment search starts its mask from attribution patching's ranking (seek.warm): the
size target's top units start in the circuit. This script cuts the training records into the halves
``safeseek stability`` uses (``--splits``, ``--split-seed``; all of ``--data`` trains, as when
stability is given ``--val-data``), computes that starting circuit on each half, and prints the
Jaccard overlap of the halves' starting circuits per granularity: the stability of the ranking the
search starts from, which comes from the data alone (attribution patching has no seed). With
``--stability`` (a ``safeseek stability --out`` folder run on the same records), it also prints
each run's overlap with the starting circuit of its half: how much the search moved away from it.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from real_model import machine  # benchmarks/ is the script's folder

from safeseek_tl import load_model
from safeseek_tl.data import load_records
from safeseek_tl.seek import SeekConfig
from safeseek_tl.seek.repeats import data_splits
from safeseek_tl.seek.warm import warm_logits
from safeseek_tl.units import Circuit


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--model", required=True)
    add("--data", required=True, help="the alignment training records stability was run on")
    add("--benign", required=True, help="the benign records stability was given (the warm start contrasts with them)")
    add("--units", default="both")
    add("--splits", type=int, default=2)
    add("--split-seed", type=int, default=0)
    add("--stability", help="a safeseek stability output folder (stability.json) to compare with")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    print(machine())
    loaded = load_model(args.model)
    config = SeekConfig.of("alignment", args.units)
    benign = load_records(args.benign, "benign")
    parts = data_splits(load_records(args.data, "alignment"), args.splits, args.split_seed)
    starts = []
    for part in parts:
        start = Circuit.empty(loaded.shape, role="warm start")
        for kind, logits in warm_logits(loaded, config, part, benign).items():
            start.get(kind)[:] = logits < 0  # the units that start switched off: the target's top-ranked
        starts.append(start)
    for kind in config.kinds:
        pairs = [round(a.jaccard(b, (kind,)), 3) for a, b in itertools.combinations(starts, 2)]
        print(f"{kind}: starting circuits of {[int(c.get(kind).sum()) for c in starts]} units; Jaccard over the halves {pairs}")
    if args.stability:
        for run in json.loads((Path(args.stability) / "stability.json").read_text())["runs"]:
            found = Circuit.from_units(loaded.shape, run.get("heads", []), run.get("neurons", []))
            overlaps = {kind: round(found.jaccard(starts[run["split"]], (kind,)), 3) for kind in config.kinds}
            print(f"seed {run['seed']}, half {run['split']}: Jaccard with its half's starting circuit {overlaps}")


if __name__ == "__main__":
    main()
