"""Mutation testing of the core modules with mutmut (``make mutation``).

Each module is mutated on its own, against only the fast tests that exercise it (``MODULES``
below), in a work folder ``.mutation/<module>/`` that holds a snapshot of ``safeseek_tl/`` and
``tests/`` and a ``pyproject.toml`` with the module's ``[tool.mutmut]`` section. mutmut writes its
mutated copy under that folder's ``mutants/``; nothing in the checkout is changed, so an
interrupted run leaves the sources as they were. A second run resumes: mutants whose function
did not change keep their result.

Left out of mutation: docstrings and type annotations (mutmut never mutates them), and lines that
only build messages or report progress (``DO_NOT_MUTATE`` below: exceptions raised with their
message, warnings, progress bars). Mutants shown to be equivalent to the original are listed in
``EQUIVALENT`` with the reason; each entry names the mutated line it expects, so that an entry
whose mutant number now points at another change (the function was edited) is reported as stale
and counted like any other mutant instead of being excluded.

    python scripts/mutation.py                      # every module, in MODULES order
    python scripts/mutation.py units metrics         # some modules
    python scripts/mutation.py --sample 200 seek     # a seeded sample of a module's mutants
    python scripts/mutation.py --report              # scores of the last runs, without running
    python scripts/mutation.py --survivors units     # the diff of each surviving mutant

The score of a module is (killed + timed out) / (mutants run - equivalent); mutants that no
mapped test reaches ("no tests") count as survivors.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
PACKAGE = "safeseek_tl"


@dataclass(frozen=True)
class Module:
    name: str
    path: str
    tests: tuple[str, ...]
    sample: int | None = None  # mutants run: a seeded sample of this many, or all


# Module -> the fast tests that exercise it (slow and gpu tests stay out through the pytest
# addopts copied with pyproject.toml). tests/test_mutants_<name>.py joins its module's list when
# it exists. Smallest and most stable modules first.
MODULES = [
    Module("units", "safeseek_tl/units.py", ("tests/test_units.py",)),
    Module("metrics", "safeseek_tl/metrics.py", ("tests/test_metrics.py", "tests/test_judge.py", "tests/test_pinned_components.py")),
    Module("evaluate", "safeseek_tl/evaluate.py", ("tests/test_compare.py", "tests/test_evaluate_organisms.py", "tests/test_judge.py")),
    Module("tuning", "safeseek_tl/tuning.py", ("tests/test_tuning.py", "tests/test_tune_resume.py"), sample=200),
    Module("baselines.patching", "safeseek_tl/baselines/patching.py", ("tests/test_baselines.py",), sample=150),
    Module("baselines.probing", "safeseek_tl/baselines/probing.py", ("tests/test_baselines.py",)),
    Module("baselines.ships", "safeseek_tl/baselines/ships.py", ("tests/test_baselines.py",), sample=150),
    Module("baselines.contrasting", "safeseek_tl/baselines/contrasting.py", ("tests/test_baselines.py", "tests/test_pinned_components.py")),
    Module("masks", "safeseek_tl/masks.py", ("tests/test_masks.py", "tests/test_pinned_components.py")),
    Module("ablation", "safeseek_tl/ablation.py", ("tests/test_masks.py", "tests/test_pinned_components.py")),
    Module("compare", "safeseek_tl/compare.py", ("tests/test_compare.py", "tests/test_evaluate_organisms.py", "tests/test_pinned_components.py"), sample=150),
    Module("seek", "safeseek_tl/seek.py", ("tests/test_seek_mechanics.py", "tests/test_pinned_objective.py"), sample=300),
]

# Lines whose expressions only build a message or report progress: their mutants change what a
# person reads, not what the code computes (tests pin the kind of error, not its wording).
DO_NOT_MUTATE = [
    r"^\s*raise\s",  # the exception raised and its message; the condition is on the line before
    r"\bwarnings\.warn\(",
    r"\btqdm\(",  # progress bar: description and whether it is shown
    r"\.set_postfix\(",
    r"\blog(ger)?\.(debug|info|warning|error|exception)\(",
]

# Equivalent mutants: mutant name -> (the mutated line, stripped, as mutmut shows it; why the
# change cannot be observed).
EQUIVALENT: dict[str, tuple[str, str]] = {}

STATUS = {  # mutmut's exit codes (mutmut.stats.status_by_exit_code)
    0: "survived", 1: "killed", 3: "killed", 5: "no tests", 33: "no tests", 34: "skipped",
    36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
    -9: "killed by signal", -11: "segfault", 2: "interrupted", 37: "type check", None: "not checked",
}


def module_tests(module: Module) -> list[str]:
    """The module's test files that exist (with tests/test_mutants_<name>.py when there is one)."""
    tests = [*module.tests, f"tests/test_mutants_{module.name.rpartition('.')[2]}.py"]
    return [t for t in tests if (ROOT / t.partition("::")[0]).exists()]


def _sync(source: Path, target: Path) -> None:
    """Make target a copy of source (no __pycache__), copying only files whose content differs,
    with a fresh modification time so that mutmut regenerates the mutants of a changed file."""
    target.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in source.iterdir() if p.name not in ("__pycache__", ".pytest_cache")}
    for old in target.iterdir():
        if old.name not in names:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    for name in names:
        src, dst = source / name, target / name
        if src.is_dir():
            _sync(src, dst)
        elif not dst.exists() or not filecmp.cmp(src, dst, shallow=False):
            shutil.copyfile(src, dst)


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def prepare(module: Module) -> Path:
    folder = WORK / module.name
    _sync(ROOT / PACKAGE, folder / PACKAGE)
    _sync(ROOT / "tests", folder / "tests")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = "\n".join([
        "",
        "[tool.mutmut]",
        f'source_paths = ["{PACKAGE}"]',
        f"only_mutate = {toml_list([module.path])}",
        f"pytest_add_cli_args_test_selection = {toml_list(module_tests(module))}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]',
        f"do_not_mutate_patterns = {toml_list(DO_NOT_MUTATE)}",
        # torch is not fork-safe once used: workers fork from a server that only collected the tests
        'process_isolation = "forkserver"',
        "use_git_change_detection = false",
        "",
    ])
    text = pyproject + section
    target = folder / "pyproject.toml"
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")
    return folder


def environment() -> dict[str, str]:
    env = dict(os.environ)
    # one thread per worker: the workers already use every core
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", PYTHONDONTWRITEBYTECODE="1")
    return env


def mutmut() -> str:
    return str(Path(sys.executable).parent / "mutmut")


def meta(folder: Path, module: Module) -> dict[str, int | None]:
    path = folder / "mutants" / (module.path + ".meta")
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))["exit_code_by_key"]


GENERATE = """
import os
from mutmut.__main__ import copy_also_copy_files, copy_src_dir, create_mutants, setup_source_paths
from mutmut.mutation.trampoline import set_mutant_under_test
os.makedirs("mutants", exist_ok=True)
set_mutant_under_test("mutant_generation")
copy_src_dir(); copy_also_copy_files(); setup_source_paths(); create_mutants(1)
"""


def chosen(folder: Path, module: Module, sample: int | None, seed: int) -> list[str]:
    """The module's mutants to run: all, or a sample drawn with the seed from all of them."""
    subprocess.run([sys.executable, "-c", GENERATE], cwd=folder, env=environment(), check=True,
                   stdout=subprocess.DEVNULL)
    names = sorted(meta(folder, module))
    if sample is not None and sample < len(names):
        names = sorted(random.Random(f"{seed}:{module.name}").sample(names, sample))
    return names


def diffs(folder: Path, names: list[str]) -> dict[str, str]:
    """mutmut's diff of each mutant (read from the work folder, nothing is run)."""
    if not names:
        return {}
    code = (
        "import json, sys\n"
        "from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant\n"
        "out = {}\n"
        "for n in json.loads(sys.stdin.read()):\n"
        "    out[n] = get_diff_for_mutant(n, path=find_mutant(n).path)\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=folder, env=environment(), input=json.dumps(names),
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def changed_line(diff: str) -> str:
    """The first added line of a unified diff, stripped (what EQUIVALENT entries name)."""
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            return line[1:].strip()
    return ""


def score(folder: Path, module: Module, names: list[str]) -> dict:
    codes = meta(folder, module)
    counts: dict[str, int] = {}
    for name in names:
        status = STATUS.get(codes.get(name), "suspicious")
        counts[status] = counts.get(status, 0) + 1
    not_killed = [n for n in names if STATUS.get(codes.get(n)) not in ("killed", "timeout", "killed by signal")]
    found = diffs(folder, [n for n in not_killed if n in EQUIVALENT])
    equivalent, stale = [], []
    for name, diff in found.items():
        (equivalent if changed_line(diff) == EQUIVALENT[name][0] else stale).append(name)
    killed = sum(counts.get(s, 0) for s in ("killed", "timeout", "killed by signal"))
    considered = len(names) - len(equivalent)
    return {
        "module": module.name,
        "mutants": len(names),
        "killed": killed,
        "equivalent": len(equivalent),
        "survived": considered - killed,
        "score": round(100 * killed / considered, 1) if considered else None,
        "counts": counts,
        "survivors": sorted(set(not_killed) - set(equivalent)),
        "stale_equivalents": stale,
    }


def run_module(module: Module, sample: int | None, seed: int, jobs: int, log) -> dict:
    folder = prepare(module)
    names = chosen(folder, module, sample if sample is not None else module.sample, seed)
    everything = len(meta(folder, module))
    codes = meta(folder, module)
    todo = [n for n in names if codes.get(n) is None]
    start = time.monotonic()
    if todo:
        # unnamed, mutmut runs every mutant without a result; named (a sample), it reruns each
        # one, so only those without a result are named
        args = todo if len(names) < everything else []
        log.write(f"\n=== {module.name}: {len(todo)} of {len(names)} mutants to run ===\n")
        log.flush()
        subprocess.run([mutmut(), "run", "--max-children", str(jobs), *args], cwd=folder, env=environment(),
                       stdout=log, stderr=subprocess.STDOUT, check=False)
    result = score(folder, module, names)
    result.update(total_generated=everything, seconds=round(time.monotonic() - start, 1), tests=module_tests(module))
    (folder / "score.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def last_results(modules: list[Module]) -> list[dict]:
    out = []
    for module in modules:
        path = WORK / module.name / "score.json"
        if path.exists():
            out.append(json.loads(path.read_text(encoding="utf-8")))
    return out


def print_table(results: list[dict]) -> None:
    print(f"{'module':24} {'mutants':>8} {'killed':>7} {'equiv.':>7} {'survived':>9} {'score':>7}")
    for r in results:
        print(f"{r['module']:24} {r['mutants']:>8} {r['killed']:>7} {r['equivalent']:>7} {r['survived']:>9} {r['score']!s:>6}%")
    mutants = sum(r["mutants"] for r in results)
    killed = sum(r["killed"] for r in results)
    equivalent = sum(r["equivalent"] for r in results)
    considered = mutants - equivalent
    overall = round(100 * killed / considered, 1) if considered else None
    print(f"{'overall':24} {mutants:>8} {killed:>7} {equivalent:>7} {considered - killed:>9} {overall!s:>6}%")
    stale = [n for r in results for n in r.get("stale_equivalents", [])]
    if stale:
        print("stale EQUIVALENT entries (their mutant changed; counted as survivors):", *stale, sep="\n  ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="module names from MODULES (default: all)")
    parser.add_argument("--sample", type=int, help="run a seeded sample of this many mutants per module")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results of these modules")
    parser.add_argument("--report", action="store_true", help="print the scores of the last runs and stop")
    parser.add_argument("--survivors", action="store_true", help="print the diff of each surviving mutant and stop")
    parser.add_argument("--log", type=Path, default=WORK / "mutmut.log", help="mutmut's output (appended)")
    args = parser.parse_args(argv)

    by_name = {m.name: m for m in MODULES}
    unknown = [n for n in args.modules if n not in by_name]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {list(by_name)}")
    modules = [by_name[n] for n in args.modules] if args.modules else MODULES

    if args.report:
        print_table(last_results(modules))
        return 0
    if args.survivors:
        for r in last_results(modules):
            folder = WORK / r["module"]
            for name, diff in diffs(folder, r["survivors"]).items():
                status = STATUS.get(meta(folder, by_name[r["module"]]).get(name), "suspicious")
                print(f"# {name}: {status}\n{diff}")
        return 0

    WORK.mkdir(exist_ok=True)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    print(f"mutmut output: {args.log}")
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    results = []
    with open(args.log, "a", encoding="utf-8") as log:
        for module in modules:
            if args.fresh:
                shutil.rmtree(WORK / module.name, ignore_errors=True)
            result = run_module(module, args.sample, args.seed, args.jobs, log)
            results.append(result)
            print(f"{module.name}: {result['killed']}/{result['mutants'] - result['equivalent']} killed "
                  f"({result['score']}%), {result['seconds']} s", flush=True)
    print()
    print_table(results)
    print(f"\n{platform.machine()}, {os.cpu_count()} cores, started {started:%Y-%m-%d %H:%M} UTC, "
          f"wall time {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
