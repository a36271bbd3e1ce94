"""The chapters' shared plots."""

import matplotlib.pyplot as plt
import pandas as pd

from exploding_gradients.study import plots


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
