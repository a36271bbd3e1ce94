"""The interactive explorer: which traces each control shows, and the HTML it writes."""

import importlib.util
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

pytest.importorskip("plotly")

from exploding_gradients.study import explorer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def data() -> pd.DataFrame:
    rows = []
    for act, factor in [("relu", 1.0), ("tanh", 2.0)]:
        for sw in (0.5, 1.0, 2.0):
            for layer in range(1, 5):
                m = (factor * sw) ** (4 - layer)
                rows.append({"activation": act, "sigma_w": sw, "layer": layer, "median": m,
                             "min": m / 2, "max": 2 * m, "predicted": m})
    return pd.DataFrame(rows)


def visible_medians(fig, visible) -> list:
    """The medians (third trace of each state) that ``visible`` shows."""
    per = explorer.TRACES_PER_STATE
    return [list(fig.data[i].y) for i in range(2, len(fig.data), per) if visible[i]]


def test_one_state_is_visible_and_the_slider_moves_through_its_activation():
    fig = explorer.profile_explorer(data(), "activation", "sigma_w",
                                    notes={("relu", 1.0): "measured 1.00"},
                                    labels={"relu": "ReLU"})
    assert len(fig.data) == 2 * 3 * explorer.TRACES_PER_STATE
    shown = [t.visible for t in fig.data]
    assert sum(shown) == explorer.TRACES_PER_STATE  # one state: ReLU at the middle sigma_w
    assert visible_medians(fig, shown) == [[1.0, 1.0, 1.0, 1.0]]
    assert "ReLU" in fig.layout.title.text and "measured 1.00" in fig.layout.title.text
    slider = fig.layout.sliders[0]
    assert [s.label for s in slider.steps] == ["0.5", "1", "2"] and slider.active == 1
    states = [visible_medians(fig, s.args[0]["visible"]) for s in slider.steps]
    assert states[0] != states[2] and all(len(s) == 1 for s in states)
    assert fig.layout.yaxis.type == "log"


def test_the_dropdown_switches_activation_and_its_slider():
    fig = explorer.profile_explorer(data(), "activation", "sigma_w")
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["relu", "tanh"]
    tanh = buttons[1].args
    assert visible_medians(fig, tanh[0]["visible"]) == [[8.0, 4.0, 2.0, 1.0]]  # 2 * 1.0
    steps = tanh[1]["sliders"][0]["steps"]
    assert visible_medians(fig, steps[2]["args"][0]["visible"]) == [[64.0, 16.0, 4.0, 1.0]]


def test_html_loads_plotly_from_the_site_and_holds_the_data():
    fig = explorer.profile_explorer(data(), "activation", "sigma_w")
    html = explorer.to_html(fig, div_id="probe")
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', html)
    assert scripts == [explorer.PAGE_SRC] and not any("://" in s for s in scripts)
    assert 'id="probe"' in html and "Plotly.newPlot" in html
    spec = json.loads(re.search(r'Plotly\.newPlot\(\s*"probe",\s*(\[.*?\]),\s*\{', html,
                                re.S).group(1))
    assert len(spec) == len(fig.data)


def test_plotly_js_is_shipped_and_copied_into_the_site(tmp_path):
    assert explorer.plotly_js().stat().st_size > 1_000_000
    path = ROOT / "book" / "_ext" / "book_extras.py"
    spec = importlib.util.spec_from_file_location("book_extras", path)
    extras = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extras)
    app = SimpleNamespace(outdir=str(tmp_path), builder=SimpleNamespace(format="html"))
    extras._copy_plotly(app, None)
    copied = tmp_path / "_static" / explorer.PLOTLY_JS
    assert copied.read_bytes() == explorer.plotly_js().read_bytes()
    extras._copy_plotly(SimpleNamespace(outdir=str(tmp_path / "x"),
                                        builder=SimpleNamespace(format="latex")), None)
    assert not (tmp_path / "x").exists()
