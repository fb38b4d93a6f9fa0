"""The circuit graph: edge attribution, its check by exact path patching, the picture and its files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from safeseek_tl.baselines.patching import attribution_patching
from safeseek_tl.graph import CircuitGraph, Node, circuit_nodes, edge_attribution, recorded_hooks, unit_writes
from safeseek_tl.graph_paths import path_patching
from safeseek_tl.graph_view import LOWERS, RAISES, graph_figure, unit_roles, write_graph
from safeseek_tl.units import Circuit
from tests.helpers import CHROMIUM, chromium
from tests.test_plots import remote_resources

HOSTILE = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"
PAIRS = [("tell me how to steal a car", "tell me how to bake a cake"), ("how to steal the car ?", "how to bake the cake .")]
UNITS = {"heads": [[0, 1], [1, 2]], "neurons": [[0, 3], [0, 7], [1, 5]]}


def logit_difference(loaded):
    """A metric linear in the logits: logit("Sorry") - logit("sure")."""
    sorry, sure = loaded.tokenizer.convert_tokens_to_ids(["Sorry", "sure"])
    return lambda logits: logits[:, sorry] - logits[:, sure]


def weight(graph: CircuitGraph, source: str, target: str) -> float:
    names = [node.name for node in graph.nodes]
    return float(graph.weights[names.index(source), names.index(target)])


def test_nodes_in_residual_order_and_the_edges_that_can_exist(gqa):
    """Worked out by hand: heads of a layer before its neurons; a unit reads every earlier writer."""
    circuit = Circuit.from_units(gqa.shape, heads=[[0, 1], [1, 2]], neurons=[[0, 3], [1, 5]])
    nodes = circuit_nodes(circuit)
    assert [n.name for n in nodes] == ["input", "L0H1", "L0N3", "L1H2", "L1N5", "metric"]
    graph = CircuitGraph(nodes, torch.zeros(6, 6))
    allowed = {(nodes[i].name, nodes[j].name) for i, j in graph.allowed.nonzero().tolist()}
    assert allowed == {
        ("input", "L0H1"), ("input", "L0N3"), ("input", "L1H2"), ("input", "L1N5"),
        ("L0H1", "L0N3"), ("L0H1", "L1H2"), ("L0H1", "L1N5"), ("L0H1", "metric"),
        ("L0N3", "L1H2"), ("L0N3", "L1N5"), ("L0N3", "metric"),
        ("L1H2", "L1N5"), ("L1H2", "metric"), ("L1N5", "metric"),
    }


def test_unit_writes_add_up_to_what_each_layer_writes(gqa):
    """Each head's z @ W_O[h] summed over heads is the attention output; each neuron's post * W_out[i]
    summed is the MLP output (the tiny Llama has no output biases)."""
    names = ["blocks.1.attn.hook_z", "blocks.1.mlp.hook_post", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out"]
    acts: dict = {}
    ids = torch.tensor([[2, 3, 9, 10, 11]])
    with torch.no_grad(), gqa.model.hooks(fwd_hooks=recorded_hooks(names, acts)):
        gqa.model(ids)
    heads = sum(unit_writes(gqa.model, Node("head", 1, h), acts[names[0]]) for h in range(gqa.shape.n_heads))
    neurons = sum(unit_writes(gqa.model, Node("neuron", 1, i), acts[names[1]]) for i in range(gqa.shape.d_mlp))
    torch.testing.assert_close(heads, acts[names[2]], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(neurons, acts[names[3]], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("counterfactual", ["pairs", "mean"])
def test_edges_equal_path_patching_where_the_metric_is_linear_in_the_edge(sharp, counterfactual):
    """Patching a small fraction of u's write into v's input, the metric is linear in the edge: the
    exact path patching effect divided by the fraction is the edge attribution, up to the fraction
    times the curvature (measured: the gap is 1.1% of the largest edge at 1e-2, 0.3% at 3e-3).
    Both counterfactuals, so the sign conventions of pairs and mean ablation are pinned too."""
    circuit = Circuit.from_units(sharp.shape, **UNITS)
    clean, corrupted = [c for c, _ in PAIRS], [c for _, c in PAIRS]
    if counterfactual == "mean":
        clean, corrupted = list(PAIRS[0]), None
    metric, scale = logit_difference(sharp), 1e-3
    graph = edge_attribution(sharp, circuit, clean, corrupted, metric=metric)
    exact = path_patching(sharp, circuit, clean, corrupted, metric=metric, scale=scale)
    # by hand: the input -> 5 units; L0H1 -> 4 later units; each L0 neuron -> 2 layer-1 units; L1H2 -> L1N5
    assert len(exact) == 5 + 4 + 2 * 2 + 1
    attributed = np.array([weight(graph, s, t) for s, t in exact])
    patched = np.array(list(exact.values())) / scale
    assert np.abs(attributed).max() > 1e-3  # the edges are not all zero
    np.testing.assert_allclose(attributed, patched, rtol=0, atol=3e-3 * np.abs(attributed).max())


def test_full_path_patching_correlates_with_the_edges(sharp):
    """At full strength (the whole clean write patched) the metric is not linear in the edge; the
    edges still track exact path patching: Pearson r = 0.748 here (random sharp tiny model, 14
    edges); 0.955 and 0.899 on tiny-backdoor (test_backdoor_edges...)."""
    circuit = Circuit.from_units(sharp.shape, **UNITS)
    clean, corrupted = [c for c, _ in PAIRS], [c for _, c in PAIRS]
    metric = logit_difference(sharp)
    graph = edge_attribution(sharp, circuit, clean, corrupted, metric=metric)
    exact = path_patching(sharp, circuit, clean, corrupted, metric=metric)
    attributed = np.array([weight(graph, s, t) for s, t in exact])
    r = np.corrcoef(attributed, np.array(list(exact.values())))[0, 1]
    assert r > 0.7, r


def test_edges_into_the_metric_are_attribution_patching_scores(sharp):
    circuit = Circuit.from_units(sharp.shape, **UNITS)
    clean, corrupted = [c for c, _ in PAIRS], [c for _, c in PAIRS]
    metric = logit_difference(sharp)
    graph = edge_attribution(sharp, circuit, clean, corrupted, metric=metric, per_position=True)
    scores = attribution_patching(sharp, clean, corrupted, metric=metric, units="both", progress=False)
    for node in graph.nodes[1:-1]:
        expected = float(scores.get("heads" if node.kind == "head" else "neurons")[node.layer, node.index])
        assert graph.score(node) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    # the per-position split adds up to the edges; 11 positions: <s> <|user|>, the 7 words, <|end|> <|assistant|>
    assert graph.per_position.shape == (7, 7, 11)
    torch.testing.assert_close(graph.per_position.sum(-1), graph.weights)
    # one pair per batch (widths 11 and 10) lands on the same positions, counted from the end
    one_by_one = edge_attribution(sharp, circuit, clean, corrupted, metric=metric, per_position=True, batch_size=1)
    torch.testing.assert_close(one_by_one.per_position, graph.per_position, rtol=1e-4, atol=1e-6)
    assert graph.metadata["passes"] == {"forward": 3, "backward": 1, "local_backward": 5}


@pytest.fixture(scope="module")
def backdoor():
    from safeseek_tl.models import load_model
    from safeseek_tl.organisms import ground_truth, load_data

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    loaded = load_model("organism:tiny-backdoor")
    records = load_data("backdoor", "val")[:16]
    yield loaded, ground_truth("tiny-backdoor", loaded), [r.backdoor_input for r in records], [r.input for r in records]
    torch.set_num_threads(before)


def test_backdoor_edges_that_path_patching_finds_are_the_graphs_strongest(backdoor):
    """Exact path patching between the planted units (triggered prompts patched into clean ones, the
    refusal score) names the connections that carry the backdoor: the trigger head L1H3 into neuron
    L1N214 and into L2N79, L1N120 into head L2H5, and L2H5 into L2N99; every other edge is under a
    tenth of the strongest. All lower refusal. The graph's two strongest edges are the two strongest
    path-patched ones, in order, and all four are among its six strongest (it halves L1N120 -> L2H5,
    whose effect goes through L2H5's attention). Pearson r over all 115 edges: 0.955 (0.899 on the
    test split)."""
    loaded, truth, triggered, clean = backdoor
    exact = path_patching(loaded, truth, triggered, clean, batch_size=16)
    strongest = max(abs(v) for v in exact.values())
    carrying = {edge for edge, value in exact.items() if abs(value) >= 0.1 * strongest}
    assert carrying == {("L1H3", "L1N214"), ("L1H3", "L2N79"), ("L1N120", "L2H5"), ("L2H5", "L2N99")}
    assert all(exact[edge] < 0 for edge in carrying)
    graph = edge_attribution(loaded, truth, triggered, clean, batch_size=16)
    ranked = [(s.name, t.name) for s, t, _ in graph.edges() if t.kind != "metric"]
    by_patching = sorted(exact, key=lambda edge: -abs(exact[edge]))
    assert ranked[:2] == by_patching[:2] == [("L1H3", "L1N214"), ("L2H5", "L2N99")]
    assert carrying <= set(ranked[:6])
    assert all(weight(graph, *edge) < 0 for edge in carrying)
    attributed = np.array([weight(graph, s, t) for s, t in exact])
    assert np.corrcoef(attributed, np.array(list(exact.values())))[0, 1] > 0.9


def toy_graph() -> CircuitGraph:
    """input, L0H0, L1N0, L1N1, L1N2, metric with hand-set weights (strongest: 2.0)."""
    nodes = [Node("input", -1), Node("head", 0, 0), Node("neuron", 1, 0), Node("neuron", 1, 1), Node("neuron", 1, 2), Node("metric", 2)]
    weights = torch.zeros(6, 6, dtype=torch.float64)
    weights[0, 1], weights[1, 2], weights[1, 3], weights[2, 5], weights[3, 5], weights[0, 4] = 1.0, -0.5, 0.25, 2.0, -0.1, 0.01
    return CircuitGraph(nodes, weights, roles={"L0H0": HOSTILE}, metadata={"model": "toy", "metric": HOSTILE, "counterfactual": "pairs"})


def edge_traces(fig):
    return [trace for trace in fig.data if trace.mode == "lines"]


def test_figure_edges_by_weight_sign_and_threshold():
    """Shares of the strongest edge (2.0): 0.5, 0.25, 0.125, 1.0, 0.05, 0.005; a threshold of 0.1
    drops the last two; widths 0.5 + 7.5 * share; blue raises the metric, vermillion lowers it;
    the slider's 30% step keeps the edges of share 0.5 and 1.0."""
    fig = graph_figure(toy_graph(), threshold=0.1)
    lines = edge_traces(fig)
    assert [(t.line.color, round(t.line.width, 4)) for t in lines] == [
        (RAISES, 4.25), (LOWERS, 2.375), (RAISES, 1.4375), (RAISES, 8.0)]
    steps = {step["label"]: step["args"][0]["visible"][: len(lines)] for step in fig.layout.sliders[0].steps}
    assert list(steps) == ["10%", "20%", "30%", "50%"]
    assert steps["30%"] == [True, False, False, True]
    assert len(edge_traces(graph_figure(toy_graph()))) == 6


def test_figure_collapses_a_layers_neurons_into_one_node_with_summed_edges():
    fig = graph_figure(toy_graph(), collapse=2)
    names = [name for trace in fig.data if trace.mode == "markers+text" for name in trace.text]
    assert names == ["input", "L0H0", "L1 neurons (3)", "metric"]
    # L0H0 -> the group: -0.5 + 0.25; the group -> metric: 2.0 - 0.1; input -> the group: 0.01
    hovers = sorted(t.text[0] for t in edge_traces(fig))
    assert hovers == ["L0H0 → L1 neurons (3): -0.25", "L1 neurons (3) → metric: 1.9", "input → L0H0: 1",
                      "input → L1 neurons (3): 0.01"]


def test_write_graph_json_schema_and_an_offline_escaped_page(tmp_path):
    graph = toy_graph()
    json_path, html_path = write_graph(graph, tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert data["schema"] == "safeseek-graph/1" and data["metadata"]["metric"] == HOSTILE
    assert data["nodes"][1] == {"id": "L0H0", "kind": "head", "layer": 0, "index": 0, "score": 0.0, "role": HOSTILE}
    assert data["nodes"][2]["score"] == 2.0 and data["nodes"][0]["score"] is None
    assert data["edges"][0] == {"source": "L1N0", "target": "metric", "weight": 2.0}
    assert len(data["edges"]) == 6
    page = html_path.read_text(encoding="utf-8")
    assert remote_resources(page) == []
    # plotly writes "<" inside its JSON as \u003c: neither form of the raw text may be there
    assert HOSTILE not in page and "\\u003cimg" not in page and page.count(ESCAPED) == 2  # the title, the role


def test_unit_roles_name_tokens_and_are_escaped_in_the_hover(sharp, tmp_path):
    circuit = Circuit.from_units(sharp.shape, heads=[[1, 2]], neurons=[[0, 3]])
    graph = edge_attribution(sharp, circuit, [c for c, _ in PAIRS], [c for _, c in PAIRS], metric=logit_difference(sharp))
    graph.roles = unit_roles(sharp, graph, [c for c, _ in PAIRS])
    assert graph.roles["L1H2"].startswith("attends most to: ")
    assert graph.roles["L0N3"].startswith("fires most on: ") and "; promotes: " in graph.roles["L0N3"]
    # the chat template's tokens reach the roles: shown as text, never as markup
    assert any("<|user|>" in role or "<s>" in role for role in graph.roles.values())
    hovers = " ".join(text for trace in graph_figure(graph).data if trace.hovertext for text in trace.hovertext)
    assert "<|user|>" not in hovers and "<s>" not in hovers


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium); CI installs it")
def test_graph_page_renders_offline_in_headless_chromium(tmp_path):
    _, page = write_graph(toy_graph(), tmp_path)
    dom = chromium(tmp_path / "profile", "--dump-dom", page.resolve().as_uri())
    assert "Uncaught" not in dom.stderr
    assert 'class="main-svg"' in dom.stdout and "slider-container" in dom.stdout
    assert HOSTILE not in dom.stdout


def test_graph_json_reads_back_into_a_run_and_the_report_draws_it(tmp_path):
    from safeseek_tl.report import write_report
    from safeseek_tl.runs import RunContents

    write_graph(toy_graph(), tmp_path)
    back = RunContents.load(tmp_path).graph
    assert [n.name for n in back.nodes] == ["input", "L0H0", "L1N0", "L1N1", "L1N2", "metric"]
    torch.testing.assert_close(back.weights, toy_graph().weights)
    assert back.roles == {"L0H0": HOSTILE} and back.metadata["metric"] == HOSTILE
    page = write_report(tmp_path, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<h2>Circuit graph</h2>" in page and HOSTILE not in page


def test_a_malformed_graph_json_is_named_with_its_edge(tmp_path):
    from safeseek_tl.errors import InputError
    from safeseek_tl.runs import RunContents

    data = toy_graph().to_dict()
    data["edges"][0]["target"] = "L9H9"
    (tmp_path / "graph.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"graph.json: edges\[0\] joins 'L1N0' and 'L9H9', not both nodes"):
        RunContents.load(tmp_path)
    del data["nodes"][0]["kind"]
    with pytest.raises(InputError, match=r"graph.json: malformed nodes or edges \(KeyError"):
        CircuitGraph.from_dict(data, str(tmp_path / "graph.json"))


def test_scenario_graph_takes_the_scenarios_prompts_and_fills_the_roles(backdoor):
    from safeseek_tl.errors import InputError
    from safeseek_tl.graph_view import scenario_graph
    from safeseek_tl.organisms import load_data

    loaded, truth, _, _ = backdoor
    records = load_data("backdoor", "val")[:5]
    graph = scenario_graph(loaded, truth, records, "backdoor", max_prompts=3)
    assert graph.metadata["prompts"] == [r.backdoor_input for r in records[:3]]
    assert graph.metadata["corrupted_prompts"] == [r.input for r in records[:3]]
    assert graph.metadata["scenario"] == "backdoor" and set(graph.roles) == {n.name for n in graph.nodes[1:-1]}
    mean = scenario_graph(loaded, truth, records, "backdoor", counterfactual="mean")
    assert mean.metadata["corrupted_prompts"] is None and len(mean.metadata["prompts"]) == 5
    with pytest.raises(InputError, match="needs benign prompts"):
        scenario_graph(loaded, truth, load_data("alignment", "val")[:2], "alignment")


@pytest.mark.parametrize("kind", ["heads", "neurons"])
def test_the_input_hook_of_a_unit_feeds_its_component_only(gqa, kind):
    """A shift at the units' input hook changes what the component writes but not the skip
    connection: resid_after - component_out stays the residual before the component."""
    from safeseek_tl.hooks import unit_input_hook

    before, after, out = ("hook_resid_pre", "hook_resid_mid", "hook_attn_out") if kind == "heads" else ("hook_resid_mid", "hook_resid_post", "hook_mlp_out")
    names = [f"blocks.1.{name}" for name in (before, after, out)]
    ids = torch.tensor([[2, 3, 9, 10, 11]])
    plain: dict = {}
    shifted: dict = {}
    with torch.no_grad():
        with gqa.model.hooks(fwd_hooks=recorded_hooks(names, plain)):
            gqa.model(ids)
        shift = [(unit_input_hook(kind, 1), lambda act, hook: act + 1.0)]
        with gqa.model.hooks(fwd_hooks=shift + recorded_hooks(names, shifted)):
            gqa.model(ids)
    assert not torch.allclose(shifted[names[2]], plain[names[2]])
    torch.testing.assert_close(shifted[names[1]] - shifted[names[2]], plain[names[0]])


def test_sankey_view_shows_one_positions_edges_by_magnitude_and_sign():
    from safeseek_tl.graph import CircuitGraph, Node
    from safeseek_tl.graph_view import LOWERS, RAISES, sankey_figure

    nodes = [Node("input", -1), Node("head", 0, 1), Node("neuron", 1, 4), Node("metric", 2)]
    per_position = torch.zeros(4, 4, 2)
    per_position[0, 1] = torch.tensor([0.5, 2.0])  # input -> L0H1: 0.5 at position -2, 2.0 at the last
    per_position[1, 2] = torch.tensor([0.0, -1.0])  # L0H1 -> L1N4
    per_position[2, 3] = torch.tensor([3.0, 0.1])  # L1N4 -> metric
    graph = CircuitGraph(nodes, per_position.sum(-1), per_position)
    last = sankey_figure(graph).data[0]
    assert list(last.node.label) == ["input", "L0H1", "L1N4", "metric"]
    assert (list(last.link.source), list(last.link.target)) == ([0, 1, 2], [1, 2, 3])
    assert list(last.link.value) == pytest.approx([2.0, 1.0, 0.1]) and list(last.link.color) == [RAISES, LOWERS, RAISES]
    earlier = sankey_figure(graph, position=-2, threshold=0.2).data[0]  # 0.5 < 0.2 * 3.0 is left out; 0 is no link
    assert (list(earlier.link.source), list(earlier.link.value)) == ([2], [3.0])
    with pytest.raises(ValueError, match="in \\[-2, -1\\]"):
        sankey_figure(graph, position=-3)
    with pytest.raises(ValueError, match="per_position=True"):
        sankey_figure(CircuitGraph(nodes, per_position.sum(-1)))
