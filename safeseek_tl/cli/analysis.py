"""Commands that analyse circuits and methods: ``graph`` (edges between a circuit's units) and ``benchmark`` (faithfulness)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from safeseek_tl.cli import shared
from safeseek_tl.cli.shared import DeviceOption, ModelOption, choice_option, load_benign, scenario_option
from safeseek_tl.errors import InputError


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


def benchmark(
    model: ModelOption,
    data: Annotated[Path, typer.Option(help="Backdoor or alignment records: every method scores them; the faithfulness curves are measured on their behaviour prompts.")],
    scenario: Annotated[str, typer.Option(help="backdoor or alignment.")],
    out: Annotated[Path, typer.Option(help="Output folder: benchmark.csv, leaderboard.csv, the curves.")],
    methods: Annotated[str, typer.Option(help="Comma-separated registry names (safeseek attribute --help lists them), e.g. eap-ig,attr-patch,ships,random.")] = "eap-ig,attr-patch,random",
    benign: Annotated[Path | None, typer.Option(help="Benign records: the donors (contrast prompts) of the alignment scenario.")] = None,
    base_model: Annotated[str | None, typer.Option(help="contrast: the model without the behaviour.")] = None,
    grid: Annotated[str, typer.Option(help="Comma-separated circuit sizes in percent of each granularity's units (MIB's grid by default).")] = "0.1,0.2,0.5,1,2,5,10,20,50,100",
    ablations: Annotated[str, typer.Option(help="Comma-separated: zero, mean, counterfactual.")] = "zero,mean,counterfactual",
    device: DeviceOption = "cpu",
) -> None:
    """Faithfulness curves (circuit kept, circuit removed), CPR, CMD and, for an organism with planted units, AUROC of every method."""
    from safeseek_tl.benchmark import ABLATIONS
    from safeseek_tl.benchmark import benchmark as run_benchmark
    from safeseek_tl.data import load_records
    from safeseek_tl.models import organism_ground_truth

    try:
        sizes = [float(k) for k in grid.split(",")]
    except ValueError:
        raise InputError(f"--grid must be comma-separated numbers, got {grid!r}") from None
    kinds = [choice_option(a.strip(), "--ablations", ABLATIONS) for a in ablations.split(",")]
    scenario_name = scenario_option(scenario)
    records = load_records(data, scenario_name)
    loaded = shared.load_model_for_cli(model, device)
    base = shared.load_model_for_cli(base_model, device) if base_model else None
    result = run_benchmark(
        loaded, records, scenario_name, [m.strip() for m in methods.split(",") if m.strip()], out, benign=load_benign(benign) or None,
        base_model=base, truth=organism_ground_truth(model, loaded), grid=sizes, ablations=kinds,
    )  # fmt: skip
    typer.echo(result.leaderboard.to_string(index=False))
    typer.echo(f"written to {out}/")
