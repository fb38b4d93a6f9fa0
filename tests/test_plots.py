"""Figures on small synthetic scores and circuits; circuitsvis views on the tiny GQA model."""

from __future__ import annotations

import math
from html.parser import HTMLParser

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from safeseek_tl import circuitsvis_views, plots
from safeseek_tl.units import Circuit, ModelShape, Scores

SHAPE = ModelShape(n_layers=2, n_heads=3, d_mlp=4, model_name="toy")


class RemoteResources(HTMLParser):
    """Collects src/href attributes that point off the page (script bodies are not parsed as markup)."""

    def __init__(self) -> None:
        super().__init__()
        self.remote: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and value.strip().lower().startswith(("http:", "https:", "//")):
                self.remote.append(f"<{tag} {name}={value}>")


def remote_resources(page: str) -> list[str]:
    parser = RemoteResources()
    parser.feed(page)
    return parser.remote


@pytest.fixture
def scores() -> Scores:
    return Scores(SHAPE, heads=torch.arange(6.0).view(2, 3) / 6, neurons=torch.arange(8.0).view(2, 4) / 8, method="toy")


@pytest.fixture
def circuit() -> Circuit:
    return Circuit.from_units(SHAPE, heads=[[0, 1], [1, 2]], neurons=[[1, 3]])


@pytest.fixture
def comparison() -> pd.DataFrame:
    rows = []
    for method, truth in (("safeseek", True), ("ships", False)):
        for budget in (1, 2, 3):
            rows.append({
                "method": method, "budget": budget, "n_heads": budget, "n_neurons": 2 * budget, "n_units": 3 * budget,
                "behaviour_change": 0.1 * budget, "utility_change": -0.01 * budget, "wall_time_s": 1.0,
                "precision": 1 / budget if truth else math.nan, "recall": budget / 3 if truth else math.nan,
            })
    return pd.DataFrame(rows)


def hover(trace: go.BaseTraceType) -> str:
    return str(trace.text)


def test_head_map_of_scores(scores):
    fig = plots.head_map(scores, title="heads")
    assert isinstance(fig, go.Figure) and len(fig.data) == 1
    (heatmap,) = fig.data
    assert heatmap.z.shape == (2, 3)
    assert list(heatmap.y) == [0, 1] and list(heatmap.x) == [0, 1, 2]
    assert heatmap.text[1][2] == "L1H2: 0.8333"
    assert fig.layout.title.text == "heads"


def test_head_map_of_circuit_is_zero_one(circuit):
    fig = plots.head_map(circuit)
    z = fig.data[0].z
    assert z.tolist() == [[0, 1, 0], [0, 0, 1]]
    assert fig.data[0].text[0][1] == "L0H1: 1" and fig.data[0].text[0][0] == "L0H0: 0"


def test_head_map_without_heads_raises():
    neurons_only = Scores(SHAPE, neurons=torch.rand(2, 4), method="probe")
    with pytest.raises(ValueError, match="no head scores"):
        plots.head_map(neurons_only)


def test_neuron_view_top_k_and_distribution(scores):
    fig = plots.neuron_view(scores, top_k=2)
    strip, box = fig.data
    assert strip.type == "scatter" and box.type == "box"
    assert len(strip.y) == 2 * 2  # top 2 of each of the 2 layers
    assert "L1N3: 0.875" in hover(strip) and "L0N3: 0.375" in hover(strip)
    assert list(box.median) == pytest.approx([0.1875, 0.6875])
    assert len(plots.neuron_view(scores, top_k=100).data[0].y) == 2 * 4  # capped at d_mlp


def test_neuron_view_bad_input(scores):
    with pytest.raises(ValueError, match="no neuron scores"):
        plots.neuron_view(Scores(SHAPE, heads=torch.rand(2, 3)))
    with pytest.raises(ValueError, match="top_k"):
        plots.neuron_view(scores, top_k=0)


def test_circuit_graph(circuit, scores):
    fig = plots.circuit_graph(circuit, scores)
    heads, neurons = fig.data
    assert heads.name == "heads" and heads.marker.symbol == "diamond" and list(heads.x) == [0, 1]
    assert neurons.name == "neurons" and neurons.marker.symbol == "circle" and list(neurons.x) == [1]
    assert "L0H1: score 0.1667" in hover(heads) and "L1N3: score 0.875" in hover(neurons)
    assert fig.layout.coloraxis.cmax == pytest.approx(0.875)
    plain = plots.circuit_graph(Circuit.from_units(SHAPE, heads=[[1, 0]]))
    assert len(plain.data) == 1 and list(plain.data[0].text) == ["L1H0"]


def test_circuit_graph_bad_input(scores):
    with pytest.raises(ValueError, match="no heads and no neurons"):
        plots.circuit_graph(Circuit.empty(SHAPE))
    other = Scores(ModelShape(3, 3, 4), heads=torch.rand(3, 3))
    with pytest.raises(ValueError, match="n_layers"):
        plots.circuit_graph(Circuit.from_units(SHAPE, heads=[[0, 0]]), other)


def test_comparison_curves(comparison):
    fig = plots.comparison_curves(comparison)
    assert [t.name for t in fig.data] == ["safeseek", "ships"]
    assert list(fig.data[0].x) == [3, 6, 9] and list(fig.data[0].y) == pytest.approx([0.1, 0.2, 0.3])
    utility = plots.comparison_curves(comparison, y="utility_change")
    assert list(utility.data[1].y) == pytest.approx([-0.01, -0.02, -0.03])


def test_comparison_escapes_method_names(comparison):
    comparison["method"] = comparison["method"].replace("ships", "<b>ships</b>")
    fig = plots.comparison_curves(comparison)
    assert fig.data[1].name == "&lt;b&gt;ships&lt;/b&gt;"


def test_comparison_bad_input(comparison):
    with pytest.raises(ValueError, match="lacks column"):
        plots.comparison_curves(comparison.drop(columns="n_units"))
    with pytest.raises(ValueError, match="no rows"):
        plots.comparison_curves(comparison.iloc[0:0])


def test_precision_recall_plot_skips_methods_without_truth(comparison):
    fig = plots.precision_recall_plot(comparison)
    assert len(fig.data) == 2  # precision and recall of safeseek; ships has no ground truth
    assert [t.name for t in fig.data] == ["safeseek", "safeseek"]
    assert [t.showlegend for t in fig.data] == [True, False]
    assert list(fig.data[1].y) == pytest.approx([1 / 3, 2 / 3, 1.0])
    with pytest.raises(ValueError, match="ground-truth"):
        plots.precision_recall_plot(comparison.assign(precision=math.nan, recall=math.nan))


def test_overlap_matrix_from_frame_and_dict():
    table = pd.DataFrame([[1.0, 0.25], [0.25, 1.0]], index=["a", "b"], columns=["a", "b"])
    fig = plots.overlap_matrix(table)
    assert fig.data[0].z.shape == (2, 2) and "a vs b: 0.250" in hover(fig.data[0])
    from_dict = plots.overlap_matrix({"a": {"a": 1.0, "b": 0.25}, "b": {"a": 0.25, "b": 1.0}})
    assert from_dict.data[0].z.tolist() == fig.data[0].z.tolist()
    with pytest.raises(ValueError, match="square"):
        plots.overlap_matrix(table.iloc[:1])
    with pytest.raises(ValueError, match="empty"):
        plots.overlap_matrix({})


def test_training_curves():
    history = [
        {"epoch": e, "main_clean": 1 / (e + 1), "overlap": 0.5, "val_main_clean": 1.2 / (e + 1), "val_loss": 2 / (e + 1),
         "off_heads": e, "off_neurons": 3 * e}
        for e in range(4)
    ]
    fig = plots.training_curves(history, best_epoch=2)
    names = [t.name for t in fig.data]
    assert names == ["main_clean", "overlap", "val_main_clean", "val_loss", "off_heads", "off_neurons"]
    val_loss = fig.data[names.index("val_loss")]
    assert val_loss.line.width > fig.data[0].line.width
    assert fig.data[names.index("val_main_clean")].line.color == fig.data[0].line.color  # paired colours
    assert list(fig.data[names.index("off_neurons")].y) == [0, 3, 6, 9]
    assert fig.data[names.index("off_heads")].yaxis == "y2"  # sizes in the second panel
    with pytest.raises(ValueError, match="empty"):
        plots.training_curves([])


def test_training_curves_with_restarting_rounds():
    history = [{"epoch": e, "round": r, "val_loss": 1.0, "off_heads": r} for r in range(2) for e in range(2)]
    fig = plots.training_curves(history)
    assert list(fig.data[0].x) == [0, 1, 2, 3]


PROMPT = "tell me how to bake a cake"


def test_attention_view(gqa, tmp_path):
    circuit = Circuit.from_units(gqa.shape, heads=[[0, 1], [1, 3]])
    view = circuitsvis_views.attention_view(gqa, PROMPT, circuit)
    page = view.local_src
    assert remote_resources(page) == []
    for token in ("<s>", "bake", "cake", "L0H1", "L1H3"):  # the attention view shows tokens as text
        assert f'"{token}"' in page
    saved = circuitsvis_views.save_circuitsvis(view, tmp_path / "attention.html")
    text = saved.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and page in text


def test_neuron_activation_view(gqa):
    circuit = Circuit.from_units(gqa.shape, neurons=[[0, 5], [1, 7]])
    page = circuitsvis_views.neuron_activation_view(gqa, PROMPT, circuit).local_src
    assert remote_resources(page) == []
    for token in ("&lt;s&gt;", "bake", "cake", "L0N5", "L1N7"):  # circuitsvis inserts these tokens as HTML
        assert f'"{token}"' in page


def test_views_reject_circuits_without_their_units(gqa):
    with pytest.raises(ValueError, match="no heads"):
        circuitsvis_views.attention_view(gqa, PROMPT, Circuit.from_units(gqa.shape, neurons=[[0, 0]]))
    with pytest.raises(ValueError, match="no neurons"):
        circuitsvis_views.neuron_activation_view(gqa, PROMPT, Circuit.from_units(gqa.shape, heads=[[0, 0]]))
    with pytest.raises(ValueError, match="n_layers"):
        circuitsvis_views.attention_view(gqa, PROMPT, Circuit.from_units(SHAPE, heads=[[0, 0]]))


def test_tokens_cannot_close_the_inline_script(gqa, monkeypatch):
    circuit = Circuit.from_units(gqa.shape, heads=[[0, 1]])
    plain = circuitsvis_views.attention_view(gqa, PROMPT, circuit).local_src
    # tokens that would end ("</script>") or corrupt ("<!--") the script circuitsvis writes its data into
    how, bake, cake = gqa.tokenizer.convert_tokens_to_ids(["how", "bake", "cake"])
    odd, decode = {how: "a<b", bake: "</script>", cake: "x<!--y"}, gqa.tokenizer.decode
    monkeypatch.setattr(gqa.tokenizer, "decode", lambda ids: odd.get(ids[0]) or decode(ids))
    page = circuitsvis_views.attention_view(gqa, PROMPT, circuit).local_src
    assert page.count("</script") == plain.count("</script") and page.count("<!--") == plain.count("<!--")
    # a zero-width space (JSON-escaped in the data) after the '<' is all that changes; '<' before a letter stays
    for shown in ('"a<b"', '"<\\u200b/script>"', '"x<\\u200b!--y"'):
        assert shown in page, shown


def test_the_circuitsvis_views_stay_importable_from_plots():
    # they were defined in safeseek_tl.plots before it was split; notebooks and docs use plots.*
    for name in ("attention_view", "neuron_activation_view", "save_circuitsvis"):
        assert getattr(plots, name) is getattr(circuitsvis_views, name), name
