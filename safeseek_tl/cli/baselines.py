"""Commands on any method's circuits: ``evaluate``, ``attribute`` and ``compare``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from safeseek_tl.cli import shared
from safeseek_tl.cli.shared import (
    DeviceOption,
    JudgeCaseOption,
    JudgeKeywordsOption,
    JudgeOption,
    ModelOption,
    ablation_mode_option,
    judge_from_options,
    load_benign,
    parse_overrides,
    scenario_option,
    unit_kind_option,
)
from safeseek_tl.errors import InputError

if TYPE_CHECKING:
    from safeseek_tl.data import BenignRecord, Record


def evaluate(
    model: ModelOption,
    data: Annotated[Path, typer.Option(help="Backdoor or alignment records to measure on.")],
    circuit: Annotated[Path, typer.Option(help="circuit.json to ablate.")],
    out: Annotated[Path, typer.Option(help="Output folder for metrics.json.")],
    benign: Annotated[Path | None, typer.Option(help="Benign records (prompt, response) for utility.")] = None,
    mode: Annotated[str, typer.Option(help="Ablation: zero, mean or resample (mean/resample use the benign or data prompts).")] = "zero",
    max_new_tokens: int = 32,
    judge_name: JudgeOption = "ships",
    judge_keywords: JudgeKeywordsOption = None,
    judge_case_sensitive: JudgeCaseOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Behaviour of the full model, with the circuit ablated, and with only the circuit kept."""
    from safeseek_tl._io import write_json
    from safeseek_tl.data import load_records
    from safeseek_tl.evaluate import BehaviourData, reference_activations
    from safeseek_tl.evaluate import evaluate as run_evaluate
    from safeseek_tl.report_text import print_behaviour_table
    from safeseek_tl.units import Circuit

    ablation = ablation_mode_option(mode)
    judge = judge_from_options(judge_name, judge_keywords, judge_case_sensitive)
    records = load_records(data)
    behaviour = BehaviourData.from_records(records, load_benign(benign))
    loaded = shared.load_model_for_cli(model, device)
    selected = Circuit.load(circuit, expected=loaded.shape)
    reference = reference_activations(loaded, behaviour) if ablation != "zero" else None
    results = run_evaluate(loaded, selected, behaviour, mode=ablation, reference=reference, judge=judge, max_new_tokens=max_new_tokens)
    write_json(out / "metrics.json", {"model": loaded.name, "circuit": str(circuit), "mode": mode, "judge": judge.describe(), "results": results})
    print_behaviour_table(results, f"{loaded.name}: circuit of {selected.n_heads} heads, {selected.n_neurons} neurons ({mode} ablation)", judge)


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
    overrides: Annotated[list[str], typer.Option("--set", help="A method option, e.g. --set operator=sc (ships) or --set schedule.epochs=5 (safeseek: any SeekConfig setting, by its dotted name), --set kl_limit=0.2 (refusal-direction); repeatable.")] = [],  # noqa: B006
    device: DeviceOption = "cpu",
) -> None:
    """Score units with any registered method (SafeSeek included); write the scores and the top-k circuit."""
    from safeseek_tl.data import load_records
    from safeseek_tl.methods import run_method
    from safeseek_tl.units import Circuit, default_budget

    records = load_records(data, scenario_option(scenario))
    benign_records = load_records(benign, "benign") if benign else None
    loaded = shared.load_model_for_cli(model, device)
    base = shared.load_model_for_cli(base_model, device) if base_model else None
    try:
        scores = run_method(method, loaded, records, scenario, base_model=base, benign=benign_records, units=units, **parse_overrides(overrides))
    except TypeError as err:
        if "unexpected keyword argument" not in str(err):
            raise
        raise InputError(f"bad settings for {method}: {err}") from None  # an option the method does not take
    circuit = Circuit.top_k(scores, **default_budget(scores, top_k_heads, top_k_neurons))
    circuit.metadata.update({"scenario": scenario, "model": loaded.name})
    scores.save(out / "scores.safetensors")
    circuit.save(out / "circuit.json")
    typer.echo(f"{method}: {circuit!r}; written to {out}/ (scores.safetensors, circuit.json)")


def held_out(
    records: Sequence[Record], benign_records: list[BenignRecord]
) -> tuple[list[Record], list[BenignRecord], list[Record], list[BenignRecord], str]:
    """Records for the methods and held-out ones to measure on (``compare`` without --eval-data), and a line saying which."""
    from safeseek_tl.compare import HELD_OUT_SEED, held_out_split

    records, eval_records = held_out_split(records)
    evaluated_on = f"held out: {len(eval_records)} of {len(records) + len(eval_records)} --data records"
    eval_benign = benign_records
    if benign_records:
        benign_records, eval_benign = held_out_split(benign_records)
        evaluated_on += f", {len(eval_benign)} of {len(benign_records) + len(eval_benign)} --benign"
    return records, benign_records, eval_records, eval_benign, evaluated_on + f" (seed {HELD_OUT_SEED})"


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
    judge_name: JudgeOption = "ships",
    judge_keywords: JudgeKeywordsOption = None,
    judge_case_sensitive: JudgeCaseOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Compare methods at matched budgets: behaviour change, utility change, time, precision/recall."""
    from safeseek_tl.compare import compare as run_compare
    from safeseek_tl.compare import score_methods
    from safeseek_tl.data import load_records
    from safeseek_tl.evaluate import BehaviourData
    from safeseek_tl.models import organism_ground_truth
    from safeseek_tl.report_text import SCORE_NOTE
    from safeseek_tl.seek import SeekConfig

    scenario_name, kind, budget_list = scenario_option(scenario), unit_kind_option(units), shared.int_list(budgets, "--budgets")
    judge = judge_from_options(judge_name, judge_keywords, judge_case_sensitive)
    records: Sequence[Record] = load_records(data, scenario_name)
    benign_records = load_benign(benign)
    eval_records: Sequence[Record]
    if eval_data:
        eval_records, eval_benign, evaluated_on = load_records(eval_data, scenario_name), benign_records, f"--eval-data {eval_data}"
    else:  # circuits are judged on prompts their methods did not see
        records, benign_records, eval_records, eval_benign, evaluated_on = held_out(records, benign_records)
    loaded = shared.load_model_for_cli(model, device)
    base = shared.load_model_for_cli(base_model, device) if base_model else None
    truth = organism_ground_truth(model, loaded)
    scored = score_methods(
        loaded, [m.strip() for m in methods.split(",") if m.strip()], records, scenario_name, benign_records, base,
        SeekConfig.of(scenario_name, kind, schedule={} if epochs is None else {"epochs": epochs}), kind,
    )  # fmt: skip
    behaviour = BehaviourData.from_records(eval_records, eval_benign)
    result = run_compare(loaded, scored, budget_list, scenario_name, behaviour, kind, truth, judge=judge, max_new_tokens=max_new_tokens)
    result.table["eval_data"] = evaluated_on
    result.save(out)
    typer.echo(result.table.to_string(index=False))
    typer.echo(f"judge: {judge.describe()}\n{SCORE_NOTE}")
    typer.echo(f"written to {out}/comparison.csv")
