"""Performance: each method's cost as a ratio to the model's own passes, measured side by side.

One table of ratios, all from this run:

- a SafeSeek training step (``--scenario``: backdoor, four mask paths, or alignment's default
  refusal-score objective, two prompt-only paths whose KL reads cached targets, or
  ``--alignment-objective necessity``, whose KL needs an unmasked pass; heads and neurons; every path
  in ONE forward and backward, per-row masks) against one plain forward+backward of the frozen model without
  hooks over the same rows (the floor: the model must run forward and backward once over every
  row); the naive design (one forward+backward per mask path) beside it; peak memory of each;
- Ships over every head (prefix reuse, heads of a layer batched) against the naive loop (one full
  forward per head), with the largest score difference;
- attribution patching of every head and neuron against one forward pass over the same prompts;
- streaming: the peak memory of activation contrasting and linear probes on ``--prompts``, four
  and twelve times as many prompts (bounded memory: the peak stops growing with the data).

Timing: the alternatives run interleaved, ``--rounds`` times, after a warm-up; the median of each
is reported. On CPU the ratios use this process's CPU time (less disturbed than wall time by
other jobs on a shared machine; run single-threaded, ``OMP_NUM_THREADS=1``); on CUDA, wall time
after ``torch.cuda.synchronize()``. Peak memory: each configuration runs in a fresh subprocess,
warm-up first, then one measured run: the peak of the memory torch allocates during the run above
what was allocated before it (on CUDA ``torch.cuda.max_memory_allocated``; on CPU, which keeps no
such counter, the allocation and free records of ``torch.profiler`` with ``profile_memory=True``,
summed in time order). On CPU the peak resident set size above the resident size before the run
(Linux ``VmHWM`` reset through ``/proc/self/clear_refs``, after ``malloc_trim``) is printed too: it
adds the allocator's caching and fragmentation.

The default model is a mid-size random Llama built here (8 layers, d_model 512, 8 heads with 4
KV heads, d_mlp 1536, vocabulary 8192; the tiny organisms' tokenizer), big enough that the model's
arithmetic, not Python, dominates; ``--model`` takes any ``load_model`` spec, e.g.

    OMP_NUM_THREADS=1 python benchmarks/performance.py
    python benchmarks/performance.py --model organism:smollm2-backdoor --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from safeseek_tl.baselines.contrasting import activation_contrast
from safeseek_tl.baselines.patching import attribution_patching
from safeseek_tl.baselines.probing import linear_probes
from safeseek_tl.baselines.ships import ships_scores, ships_scores_naive
from safeseek_tl.data import TokenizedPairs, tokenize_prompts
from safeseek_tl.metrics import completion_cross_entropy
from safeseek_tl.models import LoadedModel, device_name, load_model
from safeseek_tl.organisms import load_data, organism_folder
from safeseek_tl.seek import SeekConfig, SeekObjective, mask_paths
from safeseek_tl.units import Scores

MID = "mid"
STEPS = ("plain", "safeseek", "naive")  # measured for time and memory; "forward" for time only
STREAMING = ("contrast", "probes")


def build_mid_model(folder: Path) -> None:
    """A random mid-size Llama with the tiny organisms' tokenizer (the spare vocabulary is unused)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer_source = organism_folder("tiny-backdoor")
    config = LlamaConfig(
        vocab_size=8192, hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=4, max_position_embeddings=256, bos_token_id=2, eos_token_id=5, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_source / name, folder / name)


def load(args: argparse.Namespace) -> LoadedModel:
    return load_model(args.model_path, device=args.device, dtype=getattr(torch, args.dtype))


# ---------------------------------------------------------------- the SafeSeek step and its references
@dataclass
class StepWorkload:
    """One training batch of a scenario (backdoor: 4 mask paths; alignment: the ``accept`` path and the
    benign KL path, whose targets the refusal-score default caches and necessity computes by an
    unmasked pass over its rows) and the three ways to run it."""

    loaded: LoadedModel
    objective: SeekObjective
    optimizer: torch.optim.Optimizer
    paths: list
    index: torch.Tensor
    rows: TokenizedPairs  # every path's rows of the batch, as the one-pass step stacks them
    max_grad_norm: float

    @classmethod
    def build(cls, loaded: LoadedModel, batch_size: int, scenario: str = "backdoor", alignment_objective: str = "refusal_score") -> StepWorkload:
        settings = {"loss.alignment_objective": alignment_objective} if scenario == "alignment" else {}
        config = SeekConfig.of(scenario, "both", schedule={"batch_size": batch_size}, **settings)
        benign = load_data("benign", "train")[:batch_size] if scenario == "alignment" else ()
        paths = mask_paths(config, load_data(scenario, "train")[:batch_size], loaded.chat, "benchmark data", benign=benign)
        index = torch.arange(batch_size)
        rows = TokenizedPairs.concat([path.pairs.select(index) for path in paths], pad_id=0)
        used = int(rows.attention_mask.sum(0).nonzero().max()) + 1
        rows = TokenizedPairs(rows.input_ids[:, :used], rows.attention_mask[:, :used], rows.labels[:, :used])
        objective = SeekObjective(loaded.model, config, loaded.shape)
        objective.cache_full_last(paths)  # as SafeSeek.fit does before its first step
        optimizer = torch.optim.AdamW(objective.parameters(), lr=config.schedule.lr, weight_decay=0.0)
        return cls(loaded, objective, optimizer, paths, index, rows, config.schedule.max_grad_norm)

    @property
    def n_tokens(self) -> int:
        return int(self.rows.attention_mask.sum())

    @torch.no_grad()
    def forward(self) -> None:
        """One forward of the frozen model over the same rows, no gradient (for the cost model)."""
        self.loaded.model(self.rows.input_ids.to(self.loaded.device), attention_mask=self.rows.attention_mask.to(self.loaded.device))

    def plain(self) -> None:
        """Forward and backward of the frozen model, no hooks: the gradient reaches every layer's
        activations (the input embeddings are the leaf), as the masks' gradient must."""
        device = self.loaded.device
        ids, mask = self.rows.input_ids.to(device), self.rows.attention_mask.to(device)
        embeds = self.loaded.model.original_model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = self.loaded.model(embeds, attention_mask=mask)
        completion_cross_entropy(logits, self.rows.labels.to(device)).backward()

    def _finish(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.objective.parameters(), self.max_grad_norm)
        self.optimizer.step()

    def safeseek(self) -> None:
        """SafeSeek's step (as in ``SafeSeek.fit``): every mask path a row block of one pass."""
        terms = self.objective.task_terms(self.paths, self.index, stochastic=True)
        terms |= self.objective.sparsity_terms()
        self.optimizer.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        self._finish()

    def naive(self) -> None:
        """The naive design: one forward and backward per mask path, gradients accumulated."""
        self.optimizer.zero_grad(set_to_none=True)
        for path in self.paths:
            self.objective.task_terms([path], self.index, stochastic=True)[path.name].backward()
        sum(self.objective.sparsity_terms().values()).backward()
        self._finish()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], None], device: torch.device) -> float:
    """Seconds of one call: CPU time of this process on CPU, wall time on an accelerator."""
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    _sync(device)
    start = clock()
    run()
    _sync(device)
    return clock() - start


def median_times(runs: dict[str, Callable[[], None]], device: torch.device, rounds: int, warm_up: bool = True) -> dict[str, float]:
    """Median seconds of each run, the runs interleaved round by round after one warm-up each."""
    for run in runs.values() if warm_up else ():
        run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            samples[name].append(timed(run, device))
    return {name: statistics.median(values) for name, values in samples.items()}


# ---------------------------------------------------------------- peak memory (fresh subprocess)
def _resident_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _streaming_run(loaded: LoadedModel, method: str, n_prompts: int) -> Callable[[], None]:
    """Activation contrasting (the model against itself, prompt tokens) or probes on ``n_prompts``."""
    harmful = [r.input for r in load_data("backdoor", "train")[:n_prompts]]
    benign = [r.prompt for r in load_data("benign", "train")[:n_prompts]]
    if method == "contrast":
        return lambda: activation_contrast(loaded, loaded, harmful, positions="prompt", batch_size=8, progress=False)
    return lambda: linear_probes(loaded, harmful[: n_prompts // 2], benign[: n_prompts - n_prompts // 2], batch_size=8, progress=False)


def _profiled_peak(run: Callable[[], None]) -> int:
    """Peak bytes torch allocates during ``run`` above the start (CPU: the profiler's records).

    Each op's own net allocation (frees of earlier tensors included), in the order the ops start.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def probe_peak(args: argparse.Namespace) -> None:
    """Subprocess entry: warm up, then print the peak memory of one run as JSON.

    ``--probe`` names a step (warmed up by one step) or ``contrast:N`` / ``probes:N`` (warmed up
    on 8 prompts, then measured on N).
    """
    torch.set_num_threads(1)
    loaded = load(args)
    method, _, count = args.probe.partition(":")
    if method in STEPS:
        run = getattr(StepWorkload.build(loaded, args.batch_size, args.scenario, args.alignment_objective), method)
        run()
    else:
        _streaming_run(loaded, method, 8)()
        run = _streaming_run(loaded, method, int(count))
    gc.collect()
    device = loaded.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        print(json.dumps({"allocated": torch.cuda.max_memory_allocated(device) - before}))
        return
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed memory back, so the baseline is what is live
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
    before = _resident_bytes("VmRSS")
    run()
    resident = _resident_bytes("VmHWM") - before
    print(json.dumps({"allocated": _profiled_peak(run), "resident": resident}))


def peak_memory(args: argparse.Namespace, probe: str) -> dict[str, int]:
    command = [sys.executable, __file__, "--probe", probe, "--model-path", str(args.model_path), "--device", args.device,
               "--dtype", args.dtype, "--batch-size", str(args.batch_size), "--scenario", args.scenario, "--alignment-objective", args.alignment_objective]  # fmt: skip
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the memory probe {probe!r} failed:\n{done.stderr[-3000:]}")
    output = done.stdout
    return json.loads(output.strip().splitlines()[-1])


# ---------------------------------------------------------------- Ships and attribution patching
def ships_comparison(loaded: LoadedModel, prompts: list[str], rounds: int) -> tuple[dict[str, float], float]:
    def batched() -> Scores:
        return ships_scores(loaded, prompts, batch_size=64, progress=False)

    def naive() -> Scores:
        return ships_scores_naive(loaded, prompts)

    difference = float((batched().heads - naive().heads).abs().max())  # these calls are the warm-up
    return median_times({"ships_naive": naive, "ships": batched}, loaded.device, rounds, warm_up=False), difference


def patching_comparison(loaded: LoadedModel, clean: list[str], corrupted: list[str], rounds: int) -> dict[str, float]:
    tokens = tokenize_prompts(loaded.chat, clean + corrupted)
    ids, mask = tokens.input_ids.to(loaded.device), tokens.attention_mask.to(loaded.device)
    n = len(clean)

    @torch.no_grad()
    def forward(rows: slice, **options: int) -> None:
        loaded.model(ids[rows], attention_mask=mask[rows], **options)

    def attribution() -> None:
        attribution_patching(loaded, clean, corrupted, units="both", batch_size=n, progress=False)

    runs = {
        "forward": lambda: forward(slice(None)),
        "forward_last": lambda: forward(slice(None), logits_to_keep=1),
        "forward_corrupted": lambda: forward(slice(n, None)),
        "attribution": attribution,
    }
    return median_times(runs, loaded.device, rounds)


# ---------------------------------------------------------------- main
def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=MID, help=f"a load_model spec, or {MID!r}: the mid-size random Llama built here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch-size", type=int, default=8, help="records per mask path in the SafeSeek step")
    parser.add_argument("--scenario", default="backdoor", choices=["backdoor", "alignment"], help="the SafeSeek step's scenario (alignment: its default objective, with benign records)")
    parser.add_argument("--alignment-objective", default="refusal_score", choices=["necessity", "refusal_score", "official"], help="the alignment step's objective (the default: the library's)")
    parser.add_argument("--prompts", type=int, default=8, help="prompts for Ships and pairs for attribution patching")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--sections", default="step,ships,patching,streaming", help="comma-separated: step, ships, patching, streaming")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe_peak(args)
        return

    sections = set(args.sections.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        args.model_path = args.model
        if args.model == MID:
            args.model_path = str(Path(tmp) / "mid-llama")
            build_mid_model(Path(args.model_path))
        loaded = load(args)
        device = loaded.device
        workload = StepWorkload.build(loaded, args.batch_size, args.scenario, args.alignment_objective)
        memory = not args.no_memory
        prompts = [r.input for r in load_data("backdoor", "test")[: args.prompts]]
        triggered = [r.backdoor_input for r in load_data("backdoor", "test")[: args.prompts]]
        steps = median_times({name: getattr(workload, name) for name in ("forward", *STEPS)}, device, args.rounds) if "step" in sections else {}
        peaks = {name: peak_memory(args, name) for name in STEPS} if memory and steps else {}
        ships, difference = ships_comparison(loaded, prompts, args.rounds) if "ships" in sections else ({}, 0.0)
        patching = patching_comparison(loaded, triggered, prompts, args.rounds) if "patching" in sections else {}
        sizes = tuple(factor * max(args.prompts, 4) for factor in (1, 4, 12))  # probes need 2 prompts per class
        streaming = {(m, n): peak_memory(args, f"{m}:{n}") for m in STREAMING for n in sizes} if memory and "streaming" in sections else {}

    shape = loaded.shape
    clock = "CPU time of this process" if device.type == "cpu" else "wall time (synchronized)"
    hardware = device_name(device)
    print(f"{date.today().isoformat()}, {device} ({hardware}), torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"median of {args.rounds} interleaved rounds, {clock}")  # fmt: skip
    print(f"model {args.model} ({args.dtype}): {shape.n_layers} layers, {shape.size('heads')[1]} heads, d_mlp {shape.size('neurons')[1]}, "
          f"d_model {loaded.model.cfg.d_model}, vocabulary {loaded.model.cfg.d_vocab}")  # fmt: skip
    print(f"SafeSeek step: {args.scenario}{'/' + args.alignment_objective if args.scenario == 'alignment' else ''} ({', '.join(p.name for p in workload.paths)}), heads and neurons, {args.batch_size} records x {len(workload.paths)} paths = "
          f"{len(workload.rows)} rows x {workload.rows.input_ids.shape[1]} positions ({workload.n_tokens} real tokens); "
          f"Ships / patching: {len(prompts)} prompts / pairs\n")  # fmt: skip
    print("| measurement | seconds | reference | ratio | target | peak memory | memory ratio | target |")
    print("|---|---|---|---|---|---|---|---|")

    def row(name: str, times: dict[str, float], key: str, reference: str, ref_key: str, target: str = "", peak_target: str = "") -> None:
        peak = _mib(peaks[key]["allocated"]) if key in peaks else ""
        peak_ratio = f"{peaks[key]['allocated'] / peaks[ref_key]['allocated']:.2f}x" if key in peaks else ""
        print(f"| {name} | {times[key]:.3f} | {reference} | {times[key] / times[ref_key]:.2f}x | {target} | {peak} | {peak_ratio} | {peak_target} |")

    if steps:
        row("plain forward (no gradient)", steps, "forward", "plain f+b", "plain")
        row("plain forward+backward (no hooks)", steps, "plain", "itself", "plain")
        row("SafeSeek step (one pass, all paths)", steps, "safeseek", "plain f+b", "plain", "<= 1.25x", "<= 1.2x")
        row("naive step (one pass per path)", steps, "naive", "plain f+b", "plain")
    if ships:
        row("Ships naive (one full forward per head)", ships, "ships_naive", "itself", "ships_naive")
        row(f"Ships batched + prefix reuse (max score difference {difference:.1e})", ships, "ships", "Ships naive", "ships_naive", "<= 0.6x")
    if patching:
        row("one forward, clean + corrupted prompts", patching, "forward", "itself", "forward")
        row("same, last position unembedded only", patching, "forward_last", "one forward", "forward")
        row("one forward, corrupted prompts only", patching, "forward_corrupted", "one forward", "forward")
        row("attribution patching, all heads and neurons", patching, "attribution", "one forward (clean + corrupted)", "forward", "<= 3x")
        row("attribution patching, all heads and neurons", patching, "attribution", "one forward (corrupted only)", "forward_corrupted")
    if peaks and device.type == "cpu":
        resident = {name: peaks[name]["resident"] for name in STEPS}
        print("\nPeak resident set size above the start (allocator caching and fragmentation included): "
              + ", ".join(f"{name} {_mib(value)} ({value / resident['plain']:.2f}x)" for name, value in resident.items()))  # fmt: skip
    if streaming:
        print("\n| streaming method | peak memory, " + " | peak memory, ".join(f"{n} prompts" for n in sizes) + " |")
        print("|---|" + "---|" * len(sizes))
        for method in STREAMING:
            print(f"| {method} | " + " | ".join(_mib(streaming[method, n]["allocated"]) for n in sizes) + " |")


if __name__ == "__main__":
    main()
