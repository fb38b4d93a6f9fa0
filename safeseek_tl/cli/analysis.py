"""Commands that analyse circuits and methods: ``graph`` (edges between a circuit's units) and ``benchmark`` (faithfulness)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from safeseek_tl import runs
from safeseek_tl.cli import shared
from safeseek_tl.cli.shared import DeviceOption, ModelOption, choice_option, load_benign, parse_overrides, scenario_option, unit_choice_option
from safeseek_tl.errors import InputError

if TYPE_CHECKING:  # the annotation only: units pulls in torch
    from safeseek_tl.units import Scores


def graph(
    model: ModelOption,
    circuit: Annotated[Path, typer.Option(help="circuit.json whose units the graph connects.")],
    data: Annotated[Path, typer.Option(help="Backdoor or alignment records (behaviour prompts, and the contrast prompts of a backdoor).")],
    scenario: Annotated[str, typer.Option(help="backdoor or alignment.")],
    out: Annotated[Path, typer.Option(help="Output folder: graph.json and graph.html.")],
    benign: Annotated[Path | None, typer.Option(help="Benign records: the contrast prompts of the alignment scenario.")] = None,
    counterfactual: Annotated[str, typer.Option(help="pairs (behaviour vs contrast prompts) or mean (mean ablation on the behaviour prompts).")] = "pairs",
    max_prompts: Annotated[int | None, typer.Option(help="Use only the first prompts (or pairs).")] = None,
    per_position: Annotated[bool, typer.Option("--per-position", help="Keep one edge value per token position.")] = False,
    threshold: Annotated[float, typer.Option(help="Hide edges weaker than this in graph.html.")] = 0.0,
    collapse: Annotated[int, typer.Option(help="Draw a layer's neurons as one node when it has more than this many.")] = 12,
    device: DeviceOption = "cpu",
) -> None:
    """The circuit as a graph: each edge is how much a unit's write moves a later unit's input, and through it the metric."""
    from safeseek_tl.data import load_records
    from safeseek_tl.graph_view import scenario_graph, write_graph
    from safeseek_tl.units import Circuit

    scenario_name = scenario_option(scenario)
    records = load_records(data, scenario_name)
    loaded = shared.load_model_for_cli(model, device)
    found = Circuit.load(circuit, loaded.shape)
    contrast: Literal["pairs", "mean"] = choice_option(counterfactual, "--counterfactual", ("pairs", "mean"))
    drawn = scenario_graph(loaded, found, records, scenario_name, benign=load_benign(benign) or None, counterfactual=contrast,
                           max_prompts=max_prompts, per_position=per_position)
    json_path, html_path = write_graph(drawn, out, threshold, collapse)
    for source, target, weight in drawn.edges()[:5]:
        typer.echo(f"{source.name} -> {target.name}: {weight:+.4f}")
    typer.echo(f"written to {json_path} and {html_path}")


def _method_options(pairs: list[str]) -> dict[str, dict[str, object]]:
    """``--set METHOD.key=value`` strings to per-method options (values parsed as :func:`parse_overrides` does)."""
    options: dict[str, dict[str, object]] = {}
    for pair in pairs:
        method, dot, setting = pair.partition(".")
        if not dot or "=" not in setting:
            raise InputError(f"--set expects METHOD.key=value (e.g. safeseek.schedule.epochs=5), got {pair!r}")
        options.setdefault(method, {}).update(parse_overrides([setting]))
    return options


def _saved_scores(given: list[str]) -> dict[str, Scores]:
    """``--scores NAME=FILE`` values, read (a name given twice is an error)."""
    from safeseek_tl.units import Scores

    out: dict[str, Scores] = {}
    for item in given:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise InputError(f"--scores takes NAME=FILE, got {item!r}")
        if name.strip() in out:
            raise InputError(f"--scores: the name {name.strip()!r} is given twice")
        out[name.strip()] = Scores.load(path.strip())
    return out


def benchmark(
    model: ModelOption,
    data: Annotated[Path, typer.Option(help="Backdoor or alignment records: every method scores them; the faithfulness curves are measured on their behaviour prompts.")],
    scenario: Annotated[str, typer.Option(help="backdoor or alignment.")],
    out: Annotated[Path, typer.Option(help="Output folder: benchmark.csv, leaderboard.csv, leaderboard.html, the curves.")],
    methods: Annotated[str, typer.Option(help="Comma-separated registry names (safeseek attribute --help lists them), e.g. eap-ig,attr-patch,ships,random.")] = "eap-ig,attr-patch,random",
    benign: Annotated[Path | None, typer.Option(help="Benign records: the donors (contrast prompts) of the alignment scenario.")] = None,
    base_model: Annotated[str | None, typer.Option(help="contrast: the model without the behaviour.")] = None,
    ground_truth: Annotated[Path | None, typer.Option(help="A circuit.json of the known circuit, for AUROC (default: an organism's planted units).")] = None,
    grid: Annotated[str, typer.Option(help="Comma-separated circuit sizes in percent of each granularity's units (MIB's grid by default).")] = "0.1,0.2,0.5,1,2,5,10,20,50,100",
    granularities: Annotated[str, typer.Option(help="Comma-separated: heads, neurons, both.")] = "heads,neurons,both",
    ablations: Annotated[str, typer.Option(help="Comma-separated: zero, mean, counterfactual.")] = "zero,mean,counterfactual",
    points: Annotated[str, typer.Option(help="SafeSeek's circuits: ranking (the top k% of one search's scores) or search (a search asked for each size).")] = "ranking",
    held_out: Annotated[Path | None, typer.Option(help="Held-out records: the circuits' curves on their prompts too (generalization).")] = None,
    held_out_benign: Annotated[Path | None, typer.Option(help="Benign records: the donors of the held-out alignment prompts.")] = None,
    stability_k: Annotated[float | None, typer.Option(help="Stability at this size (percent): each method over 3 seeds x 2 halves of the records (Jaccard); costs up to 6 more runs a method.")] = None,
    max_records: Annotated[int | None, typer.Option(help="Use only the first records of --data, --benign, --held-out and --held-out-benign.")] = None,
    overrides: Annotated[list[str], typer.Option("--set", help="A method option as METHOD.key=value, e.g. --set safeseek.schedule.epochs=5 --set eap-ig.ig_steps=10; repeatable.")] = [],  # noqa: B006
    saved: Annotated[list[str], typer.Option("--scores", help="Scores computed before, as NAME=FILE (e.g. a discover run's scores.safetensors): measured beside the methods; repeatable.")] = [],  # noqa: B006
    device: DeviceOption = "cpu",
) -> None:
    """Faithfulness curves (circuit kept, circuit removed), CPR, CMD, cost and, with a known circuit, AUROC of every method."""
    from safeseek_tl.benchmark import ABLATIONS
    from safeseek_tl.benchmark import benchmark as run_benchmark
    from safeseek_tl.benchmark_methods import POINTS
    from safeseek_tl.data import load_records
    from safeseek_tl.models import organism_ground_truth
    from safeseek_tl.units import Circuit

    try:
        sizes = [float(k) for k in grid.split(",")]
    except ValueError:
        raise InputError(f"--grid must be comma-separated numbers, got {grid!r}") from None
    kinds = [choice_option(a.strip(), "--ablations", ABLATIONS) for a in ablations.split(",")]
    units = [unit_choice_option(g.strip(), "--granularities") for g in granularities.split(",")]
    scenario_name = scenario_option(scenario)
    records = load_records(data, scenario_name)[:max_records]
    held = load_records(held_out, scenario_name)[:max_records] if held_out is not None else None
    loaded = shared.load_model_for_cli(model, device)
    base = shared.load_model_for_cli(base_model, device) if base_model else None
    truth = Circuit.load(ground_truth, loaded.shape) if ground_truth is not None else organism_ground_truth(model, loaded)
    settings = {"data": str(data), "held_out_data": str(held_out) if held_out else None, "ground_truth_file": str(ground_truth) if ground_truth else None}
    result = run_benchmark(
        loaded, records, scenario_name, [m.strip() for m in methods.split(",") if m.strip()], out, benign=load_benign(benign)[:max_records] or None,
        base_model=base, truth=truth, grid=sizes, granularities=units, ablations=kinds, method_options=_method_options(overrides),
        points=choice_option(points, "--points", POINTS), held_out=held, held_out_benign=load_benign(held_out_benign)[:max_records] or None,
        stability_k=stability_k, settings=settings, saved_scores=_saved_scores(saved),
    )  # fmt: skip
    typer.echo(result.leaderboard.to_string(index=False))
    typer.echo(f"written to {out}/ (the page: {out / runs.LEADERBOARD_HTML})")
