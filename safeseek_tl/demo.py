"""The demo (``safeseek demo``): the library's main job on the bundled tiny organisms.

1. SafeSeek finds the planted backdoor circuit of ``tiny-backdoor`` (heads and neurons) and the
   alignment circuit of ``tiny-aligned``; each is evaluated (full, ablated, circuit only) on the
   held-out test split, with example generations.
2. The heuristic baselines are compared with SafeSeek on ``tiny-backdoor`` at matched head budgets,
   scored against the planted ground truth.
3. One offline HTML report per run, and an index page linking them.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from safeseek_tl import runs
from safeseek_tl._io import atomic_path, write_json
from safeseek_tl.ablation import ablated
from safeseek_tl.compare import compare, score_methods
from safeseek_tl.evaluate import BehaviourData, evaluate
from safeseek_tl.generation import generate
from safeseek_tl.methods import Attribution
from safeseek_tl.metrics import RefusalJudge
from safeseek_tl.models import LoadedModel, load_model
from safeseek_tl.organisms import ground_truth, load_data
from safeseek_tl.report import write_report
from safeseek_tl.scenarios import ScenarioName
from safeseek_tl.seek import SeekConfig, SeekResult, discover

N_TRAIN, N_EVAL, N_EXAMPLES = 100, 40, 4


def _examples(loaded: LoadedModel, result: SeekResult, prompts: list[str]) -> list[dict[str, str]]:
    full = generate(loaded.model, loaded.chat, prompts, progress=False)
    with ablated(loaded.model, result.circuit):
        cut = generate(loaded.model, loaded.chat, prompts, progress=False)
    return [{"prompt": p, "full": f, "ablated": a} for p, f, a in zip(prompts, full, cut)]


def _discover_run(out: Path, organism: str, scenario: ScenarioName, log: Any, judge: RefusalJudge) -> tuple[LoadedModel, SeekResult, float]:
    loaded = load_model(f"organism:{organism}")
    train, val, test = (load_data(scenario, split) for split in ("train", "val", "test"))
    benign = load_data("benign", "test")[:N_EVAL]
    # the alignment search pairs harmful prompts with benign ones (its warm start) and keeps their answers
    benign_train = load_data("benign", "train")[:N_TRAIN] if scenario == "alignment" else []
    start = time.perf_counter()
    result = discover(loaded, train[:N_TRAIN], SeekConfig.of(scenario, "both"), val_records=val[:20], benign=benign_train, check=False).result
    wall = time.perf_counter() - start
    log(f"{organism}: SafeSeek {scenario} circuit {result.circuit!r} in {wall:.0f} s")
    result.save(out)
    behaviour = evaluate(loaded, result.circuit, BehaviourData.from_records(test[:N_EVAL], benign), judge=judge)
    write_json(out / runs.BEHAVIOUR, behaviour)
    data = BehaviourData.from_records(test[:N_EXAMPLES])
    write_json(out / runs.EXAMPLES, _examples(loaded, result, data.triggered or data.harmful))
    write_report(out, out / runs.REPORT, title=f"SafeSeek {scenario} circuit of {organism}")
    return loaded, result, wall


def run_demo(
    out_dir: str | Path = "runs/demo", budgets: tuple[int, ...] = (1, 2, 4), log: Any = print, judge: RefusalJudge | None = None
) -> Path:
    """Run the whole demo and return the path of the index page.

    ``judge`` judges the generations (default :class:`~safeseek_tl.metrics.RefusalJudge`); every
    judged rate is reported with the logit refusal score of the same prompts.
    """
    judge = judge or RefusalJudge()
    out = Path(out_dir)
    log(f"judge: {judge.describe()}")
    backdoor_model, backdoor, seek_wall = _discover_run(out / "backdoor", "tiny-backdoor", "backdoor", log, judge)
    _discover_run(out / "alignment", "tiny-aligned", "alignment", log, judge)

    train = load_data("backdoor", "train")[:N_TRAIN]
    scored = score_methods(backdoor_model, ["ships", "attr-patch", "act-patch", "sahara"], train, "backdoor")
    scored = {"safeseek": Attribution(backdoor.scores, wall_time_s=seek_wall), **scored}  # trained in step 1
    data = BehaviourData.from_records(load_data("backdoor", "test")[:N_EVAL], load_data("benign", "test")[:N_EVAL])
    comparison = compare(backdoor_model, scored, budgets, "backdoor", data, "heads", ground_truth("tiny-backdoor", backdoor_model), judge=judge)
    comparison.save(out / "compare")
    write_report(out / "compare", out / "compare" / runs.REPORT, title="Methods compared on tiny-backdoor (heads)")
    log(comparison.table.to_string(index=False))

    links = {"backdoor/report.html": "Backdoor circuit of tiny-backdoor", "alignment/report.html": "Alignment circuit of tiny-aligned", "compare/report.html": "SafeSeek vs heuristic baselines"}
    items = "".join(f'<li><a href="{html.escape(href)}">{html.escape(text)}</a></li>' for href, text in links.items())
    index = out / "index.html"
    with atomic_path(index) as tmp:
        tmp.write_text(f"<!doctype html><meta charset='utf-8'><title>safeseek demo</title><h1>safeseek demo</h1><ul>{items}</ul>\n", encoding="utf-8")
    return index
