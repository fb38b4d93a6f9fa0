"""Golden results of the tiny organisms, to show that a refactor leaves behaviour unchanged.

    python scripts/golden.py record DIR      # SafeSeek, every baseline and a comparison, into DIR
    python scripts/golden.py check OLD NEW   # scores equal to 1e-6, identical circuits and tables

What is recorded: short SafeSeek searches (3 epochs, heads and neurons, 40 training records) on
tiny-backdoor (backdoor, zero and mean fill) and tiny-aligned (alignment), their circuits and
scores; the Scores of each baseline on tiny-backdoor (24 training records) and on tiny-aligned
(24 harmful + 24 benign); and the comparison table of SafeSeek, Ships and attribution patching at
head budgets 1 and 2 on 16 held-out tiny-backdoor prompts. Kept as plain JSON and safetensors, so
that OLD and NEW need not share an API.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from safetensors.torch import load_file, save_file

N_BASELINE = 24
BASELINE_RUNS = {
    "backdoor": ["ships", "sahara", "contrast", "act-patch", "attr-patch", "probe"],
    "alignment": ["ships", "sahara", "contrast", "act-patch", "attr-patch", "probe"],
}
TOLERANCE = 1e-6


def record(out: Path) -> None:
    from safeseek_tl import load_model
    from safeseek_tl.compare import compare, score_methods
    from safeseek_tl.evaluate import BehaviourData
    from safeseek_tl.methods import run_method
    from safeseek_tl.organisms import ground_truth, load_data
    from safeseek_tl.seek import SeekConfig, discover

    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    summary: dict[str, object] = {}
    models = {"backdoor": load_model("organism:tiny-backdoor"), "alignment": load_model("organism:tiny-aligned")}
    base = load_model("organism:tiny-base")
    benign = load_data("benign", "train")[:N_BASELINE]
    searches = {"backdoor-zero": ("backdoor", "zero"), "backdoor-mean": ("backdoor", "mean"), "alignment-zero": ("alignment", "zero")}
    for label, (scenario, fill) in searches.items():
        config = SeekConfig.of(scenario, "both", schedule={"epochs": 3}, masks={"fill": fill})
        result = discover(models[scenario], load_data(scenario, "train")[:40], config, val_records=load_data(scenario, "val")[:10], check=False, progress=False).result
        summary[f"safeseek/{label}/circuit"] = {"heads": result.circuit.head_list, "neurons": result.circuit.neuron_list}
        for kind in result.scores.kinds:
            tensors[f"safeseek/{label}/{kind}"] = result.scores.get(kind).float().contiguous()
    for scenario, names in BASELINE_RUNS.items():
        records = load_data(scenario, "train")[:N_BASELINE]
        for name in names:
            options = {"base_model": base if scenario == "alignment" else models["alignment"]} if name == "contrast" else {}
            scores = run_method(name, models[scenario], records, scenario, benign=benign, **options)
            for kind in scores.kinds:
                tensors[f"{name}/{scenario}/{kind}"] = scores.get(kind).float().contiguous()
    loaded = models["backdoor"]
    scored = score_methods(loaded, ["safeseek", "ships", "attr-patch"], load_data("backdoor", "train")[:N_BASELINE], "backdoor", seek_config=SeekConfig.of("backdoor", "both", schedule={"epochs": 3}))
    data = BehaviourData.from_records(load_data("backdoor", "test")[:16], load_data("benign", "test")[:16])
    table = compare(loaded, scored, [1, 2], "backdoor", data, "heads", ground_truth("tiny-backdoor", loaded)).table
    summary["compare/table"] = table.drop(columns=["wall_time_s"], errors="ignore").round(6).to_dict(orient="list")
    save_file(tensors, str(out / "scores.safetensors"))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"recorded {len(tensors)} score tensors and {len(summary)} circuits/tables in {out}")


def check(old: Path, new: Path) -> int:
    problems = []
    old_scores, new_scores = load_file(str(old / "scores.safetensors")), load_file(str(new / "scores.safetensors"))
    if old_scores.keys() != new_scores.keys():
        problems.append(f"score tensors differ: only old {sorted(old_scores.keys() - new_scores.keys())}, only new {sorted(new_scores.keys() - old_scores.keys())}")
    for key in sorted(old_scores.keys() & new_scores.keys()):
        gap = (old_scores[key] - new_scores[key]).abs().max().item()
        status = "ok" if gap <= TOLERANCE else "DIFFERS"
        print(f"{key:40s} max |old - new| = {gap:.2e} {status}")
        if gap > TOLERANCE:
            problems.append(key)
    old_summary = json.loads((old / "summary.json").read_text())
    new_summary = json.loads((new / "summary.json").read_text())
    for key in sorted(old_summary.keys() | new_summary.keys()):
        same = old_summary.get(key) == new_summary.get(key)
        print(f"{key:40s} {'identical' if same else 'DIFFERS'}")
        if not same:
            problems.append(key)
    print("unchanged" if not problems else f"changed: {problems}")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "record":
        record(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        sys.exit(check(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
