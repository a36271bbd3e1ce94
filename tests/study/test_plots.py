"""The shared plots: the per-seed outcome panel and its legend."""

import matplotlib
import numpy as np
import pandas as pd

from exploding_gradients.study import plots

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _outcomes():
    return pd.DataFrame({"x": ["none", "none", "0.1", "0.1"] * 2,
                         "kind": ["a"] * 4 + ["b"] * 4,
                         "final": [1.0, 2.0, 0.5, np.nan, 1.5, 1.2, np.nan, 0.3],
                         "diverged": [False, False, False, True, False, False, True, False]})


def test_outcome_panel_draws_seeds_medians_and_diverged_crosses():
    fig, ax = plt.subplots()
    plots.outcome_panel(ax, _outcomes(), "x", "kind", {"a": "A", "b": "B"}, reference=3.0,
                        order=["b", "a"])
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "0.1"]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["A"].get_ydata()) == [1.5, 0.5]  # median of the finite seeds
    assert lines["A"].get_color() == plots.style(1)["color"]  # its place in ``order``
    # per series: the finite seeds, then one cross per diverged seed
    assert len(ax.collections) == 4
    low, high = ax.get_ylim()
    assert low < 0.3 and high > 3.0  # the seeds and the reference level are in range
    plt.close(fig)


def test_outcome_legend_has_the_series_the_diverged_marker_and_the_reference():
    fig, ax = plt.subplots()
    plots.outcome_panel(ax, _outcomes(), "x", "kind", {"a": "A", "b": "B"}, reference=3.0)
    extra = matplotlib.lines.Line2D([], [], linestyle=":", label="safe run")
    plots.outcome_legend(fig, {"a": "A", "b": "B"}, ["a", "b"], "learned nothing",
                         extra=[extra])
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["A", "B", "diverged (NaN/Inf), one per seed", "learned nothing",
                     "safe run"]
    plt.close(fig)
