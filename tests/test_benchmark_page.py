"""The HTML leaderboard page: offline, every piece of user text escaped, the leaderboard's columns shown."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from safeseek_tl.benchmark_page import leaderboard_page
from safeseek_tl.plots import faithfulness_plot
from tests.helpers import CHROMIUM, chromium
from tests.test_plots import remote_resources

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def _board(method: str) -> pd.DataFrame:
    row = {"granularity": "heads", "ablation": "counterfactual", "direction": "kept", "points": "search", "cpr": 0.51234, "cmd": 0.25,
           "cpr_held_out": float("nan"), "cmd_held_out": float("nan"), "auroc": 0.9, "jaccard": 0.4, "wall_time_s": 1.5, "passes": 12, "pass_rows": 96}
    return pd.DataFrame([{"method": method, **row}, {"method": "random", **row, "ablation": "zero"}])


def test_page_escapes_method_model_and_data_path():
    figure = faithfulness_plot(pd.DataFrame({"method": [HOSTILE, HOSTILE], "k": [10, 100], "value": [0.5, 1.0]}), title=HOSTILE)
    settings = {"model": f"model {HOSTILE}", "data": f"/data/{HOSTILE}.jsonl", "grid": [10, 100]}
    page = leaderboard_page(_board(HOSTILE), [figure], settings)
    assert HOSTILE not in page and "<script>alert" not in page
    assert f"<td>{ESCAPED}</td>" in page  # the method's cell
    assert f"<title>safeseek benchmark: model {ESCAPED}</title>" in page
    assert f"<td>/data/{ESCAPED}.jsonl</td>" in page
    assert "&amp;lt;script" not in page.split("<script", 1)[0]  # the tables escape once


def test_page_is_offline_with_one_table_per_ablation_and_the_columns_that_hold_values():
    figures = [faithfulness_plot(pd.DataFrame({"method": ["a", "a"], "k": [10, 100], "value": [0.5, 1.0]})) for _ in range(2)]
    page = leaderboard_page(_board("safeseek"), figures, {"model": "tiny"})
    assert remote_resources(page) == []
    assert page.count("* plotly.js v") == 1 and page.count('class="plotly-graph-div"') == 2
    markup = re.sub(r"<script\b[^>]*>.*?</script>", "", page, flags=re.S | re.I)
    assert 'src="http' not in markup and "<link" not in markup
    assert "<h3>counterfactual ablation</h3>" in page and "<h3>zero ablation</h3>" in page
    header = "<tr><th>method</th><th>units</th><th>direction</th><th>circuits from</th><th>CPR</th><th>CMD</th><th>AUROC</th><th>stability (Jaccard)</th><th>wall time (s)</th><th>forward passes</th><th>prompt rows</th></tr>"
    assert page.count(header) == 2  # the held-out columns hold nothing here, so they are left out
    assert '<td>safeseek</td><td>heads</td><td>kept</td><td>search</td><td class="num">0.5123</td>' in page


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium); CI installs it")
def test_page_renders_in_headless_chromium_with_a_hostile_method_name(tmp_path):
    figure = faithfulness_plot(pd.DataFrame({"method": [HOSTILE, HOSTILE], "k": [10, 100], "value": [0.5, 1.0]}))
    path = tmp_path / "leaderboard.html"
    path.write_text(leaderboard_page(_board(HOSTILE), [figure], {"model": HOSTILE}), encoding="utf-8")
    dom = chromium(tmp_path / "profile", "--dump-dom", path.resolve().as_uri())
    assert "Uncaught" not in dom.stderr and "alert" not in dom.stderr
    assert dom.stdout.count('class="plot-container plotly"') == 1 and 'class="main-svg"' in dom.stdout
    # the name is shown as text in the table, never run: the DOM holds it escaped, as the page does
    assert f"<td>{ESCAPED}</td>" in dom.stdout
