"""The shared plotting helpers."""

import matplotlib
import matplotlib.collections
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from exploding_gradients.study import plots

matplotlib.use("Agg")


@pytest.mark.parametrize("span, labelled", [(3.0, True), (50.0, True), (1e4, False)])
def test_log_axis_labels_plain_ticks_over_few_decades(span, labelled):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1.0, span])
    plots.log_axis(ax)
    fig.canvas.draw()
    assert ax.get_yscale() == "log"
    texts = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    plain = [t for t in texts if "$" not in t]
    assert bool(plain) == labelled and (not labelled or "2" in plain)
    plt.close(fig)


def test_loss_panel_fits_the_healthy_runs_and_marks_divergences():
    rows = []
    for case, seed, div in [("ok", 0, -1), ("ok", 1, -1), ("bad", 0, 2)]:
        for step in range(6):
            loss = np.inf if 0 <= div <= step else (1.0 + seed) / (step + 1)
            rows.append({"case": case, "seed": seed, "step": step, "layer": 0, "loss": loss,
                         "diverged_step": div})
            rows.append({"case": case, "seed": seed, "step": step, "layer": 1, "loss": 1e9,
                         "diverged_step": div})  # a per-layer sample: not a loss
    fig, ax = plt.subplots()
    plots.loss_panel(ax, pd.DataFrame(rows), "case", ["ok", "bad", "absent"],
                     {"ok": "healthy", "bad": "blows up"}, smooth=1, title="t")
    labels = ax.get_legend().get_texts()
    assert [t.get_text() for t in labels] == ["healthy", "blows up",
                                             "diverged (NaN/Inf) at this step"]
    bottom, top = ax.get_ylim()
    # The healthy seeds' losses span 1/6 .. 2: the range fits them, not the Inf.
    assert np.isclose(top, 1.5 * 2.0) and np.isclose(bottom, (1 / 6) / 1.3)
    crosses = [c for c in ax.collections if isinstance(c, matplotlib.collections.PathCollection)]
    assert [tuple(c.get_offsets()[0]) for c in crosses] == [(2.0, 0.97)]
    assert ax.get_yscale() == "log" and ax.get_title() == "t"




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



def test_per_step_draws_one_median_line_per_group_from_the_per_step_rows():
    rows = [{"g": g, "seed": s, "step": t, "layer": layer, "loss": (1 + s) * t + (g == "b")}
            for g in "ab" for s in range(3) for t in range(4) for layer in [0, 1]]
    runs = pd.DataFrame(rows)
    runs.loc[runs.layer == 1, "loss"] = 1e9  # per-layer samples must not be drawn
    fig, ax = plt.subplots()
    plots.per_step(ax, runs, "loss", "g", {"a": "first", "b": "second"})
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["first", "second"]
    assert list(lines[0].get_ydata()) == [0, 2, 4, 6]  # the median seed (s = 1)
    assert list(lines[1].get_ydata()) == [1, 3, 5, 7]
    assert ax.get_xlabel() == "step"
    plt.close(fig)


def test_legend_below_gathers_each_label_once_under_the_panels():
    fig, axes = plots.figure(1, 2)
    for ax in axes:
        ax.plot([1, 2], [1, 2], label="measured")
        ax.axhline(1.5, label="reference")
    axes[1].plot([1, 2], [2, 1], label="_hidden")
    plots.legend_below(fig, ncol=2)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["measured", "reference"]
    assert all(ax.get_position().y0 > 0.1 for ax in axes)  # room left for the legend
    plots.check_legible(fig)
def test_legend_below_stays_inside_the_figure_under_the_panels():
    plots.use_style()
    fig, axes = plots.figure(1, 2, height=3.0)
    for ax in axes:
        ax.plot([1, 2], [1, 2], label="a line")
        ax.plot([1, 2], [2, 1], label="another line")
        ax.plot([1, 2], [1, 1], label="a third line")
    plots.legend_below(fig, *axes[0].get_legend_handles_labels())
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer).transformed(fig.transFigure.inverted())
    assert legend.y0 >= -1e-6 and legend.x0 >= 0 and legend.x1 <= 1  # inside the figure
    for ax in axes:  # the panels and their tick labels sit above it
        box = ax.get_tightbbox(renderer).transformed(fig.transFigure.inverted())
        assert box.y0 >= legend.y1 - 1e-3
    assert fig.get_figwidth() == plots.COLUMN
    plt.close(fig)
