"""The depth page's numbers, tables, figures and explorer, on synthetic signal-propagation
tables whose per-layer factors are known exactly, and on a tiny real sweep."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients import theory
from exploding_gradients.chapters import depth as chapter

P = chapter.CHAPTER.parameters(
    {"profile": "quick", "depth": 6, "relu_sigma_w": [1.2, 1.4142], "tanh_sigma_w": [0.8, 2.0],
     "explorer_sigma_w": [1.2, 1.4142]}, before={})


def layers(activation: str, sigma_w: float, backward: float, forward: float = 1.0,
           weights: float = 1.0, seeds: int = 2, depth: int = 6) -> pd.DataFrame:
    """A signal_propagation-like table: per layer towards the input, ||delta|| grows by
    ``backward``, sqrt(preact_var) by ``forward`` and the weight gradient by ``weights``."""
    return pd.DataFrame([
        {"activation": activation, "sigma_w": sigma_w, "seed": s, "layer": layer,
         "delta_norm": backward ** (depth - layer), "preact_var": forward ** (2 * (depth - layer)),
         "grad_norm": weights ** (depth - layer)}
        for s in range(seeds) for layer in range(1, depth + 1)])


def predicted_table() -> pd.DataFrame:
    """Every (activation, sigma_w) of P, measured exactly at its fitted prediction; ReLU's
    forward signal shrinks as fast as its gradient grows (a pure change of scale)."""
    parts = []
    for act, sws in [("relu", P.relu_sigma_w), ("tanh", P.tanh_sigma_w)]:
        for sw in sws:
            factor = theory.fitted_growth(act, sw, P.sigma_b, P.depth)
            parts.append(layers(act, sw, factor, 1 / factor if act == "relu" else 1.0))
    return pd.concat(parts, ignore_index=True)


def test_the_prediction_is_reduced_by_the_measurements_own_fit():
    table = chapter.growth_table(predicted_table(), P).set_index(["activation", "sigma_w"])
    assert table["rel_error"].abs().max() == pytest.approx(0, abs=1e-9)
    # ReLU's chi is constant: both estimators agree; tanh's relaxes: they differ.
    relu = table.loc[("relu", 1.2)]
    assert relu["uniform"] == pytest.approx(relu["predicted"], rel=1e-9)
    tanh = table.loc[("tanh", 0.8)]
    assert abs(tanh["uniform"] / tanh["predicted"] - 1) > 1e-3


def test_layer_numbers():
    numbers = chapter.layer_numbers(predicted_table(), P)
    assert numbers["depth_worst_error_pct"] == "0.0"
    assert float(numbers["depth_uniform_worst_error_pct"]) > 0.1
    assert numbers["depth_relu_top_sigma"] == "1.4142"
    assert numbers["depth_relu_critical_growth"] == "1.000"
    # the pure change of scale: backward times forward is flat
    assert numbers["depth_relu_gsc_low"] == numbers["depth_relu_gsc_high"] == "1.000"
    tanh = theory.fitted_growth("tanh", 2.0, 0.0, P.depth)
    assert numbers["depth_tanh_top_gsc"] == f"{tanh:.3f}"
    assert numbers["depth_relu_output_scale"] == "1"  # (1.4142 / sqrt 2)^7


def test_gsc_prediction_of_relu_is_one_at_every_sigma_w():
    table = chapter.gsc_table(chapter.with_relative(predicted_table()), P)
    relu = table[table.activation == "relu"]
    assert relu["predicted"].to_numpy() == pytest.approx(1.0, abs=1e-9)
    assert relu["mean"].to_numpy() == pytest.approx(1.0, abs=1e-9)


def test_growth_display_is_readable():
    html = chapter.growth_display(predicted_table(), P).to_html()
    assert "nan" not in html and "e+" not in html and "σ_w" in html


def test_figures_have_their_panels():
    table = predicted_table()
    fig = chapter.fig_profiles(table, P)
    assert [ax.get_title() for ax in fig.axes] == ["ReLU", "tanh"]
    assert fig.get_figwidth() <= 6.7
    plt.close(fig)
    fig = chapter.fig_weight_vs_delta(table, P)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 5  # 4 series + GSC prediction
    plt.close(fig)


def test_spread_variance_is_over_networks_against_layers_crossed_per_width():
    rows = []
    for width in (16, 32):
        for seed in range(3):
            for layer in range(1, 5):
                # ln(delta^l / delta^L) = (seed - 1) * (4 - layer) / width: variance over
                # seeds (1, 0, -1 times) is ((4 - layer) / width)^2
                rows.append({"width": width, "seed": seed, "layer": layer,
                             "delta_norm": math.exp((seed - 1) * (4 - layer) / width)})
    table = chapter.spread_table(pd.DataFrame(rows))
    assert sorted(table.crossed.unique()) == [1, 2, 3]
    row = table[(table.width == 16) & (table.crossed == 3)].iloc[0]
    assert row["beta"] == pytest.approx(3 / 16)
    assert row["var"] == pytest.approx((3 / 16) ** 2)
    slopes = chapter.spread_slopes(table)
    assert list(slopes.index) == [16, 32]
    # var = beta^2: the slope through the origin is sum(beta^3) / sum(beta^2)
    beta = np.array([1, 2, 3]) / 32
    assert slopes[32] == pytest.approx((beta**3).sum() / (beta**2).sum())


def test_a_tiny_real_sweep_gives_every_number_and_figure():
    spread = eg.sweep("signal_propagation", [{"width": n} for n in P.spread_widths], seeds=3,
                      depth=5, activation="relu", batch_size=8, init="he")
    q = chapter.CHAPTER.parameters({"profile": "quick", "spread_seeds": 3, "spread_depth": 5},
                                   before={})
    numbers = chapter.spread_numbers(spread, q)
    assert numbers["depth_spread_widths"] == "16 and 32"
    assert len(numbers["depth_spread_slopes"].split(" and ")) == 2
    plt.close(chapter.fig_spread(spread, q))


def test_explorer_data_and_html():
    grid = [{"activation": a, "sigma_w": s} for a in P.explorer_activations
            for s in P.explorer_sigma_w]
    explored = eg.sweep("signal_propagation", grid, seeds=2, depth=P.depth, width=16,
                        batch_size=8, init="normal")
    data = chapter.explorer_data(explored, P)
    assert len(data) == 4 * P.depth
    last = data[data.layer == P.depth]
    assert last[["median", "min", "max", "predicted"]].to_numpy() == pytest.approx(1.0)
    relu = data[(data.activation == "relu") & (data.sigma_w == 1.2)].sort_values("layer")
    assert relu["predicted"].iloc[0] == pytest.approx(math.sqrt(0.72) ** (P.depth - 1))
    html = chapter.explorer_html(explored, P)
    assert 'src="../../_static/plotly.min.js"' in html and 'id="depth-explorer"' in html
    assert "cdn.plot.ly" not in html
