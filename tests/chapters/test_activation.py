"""The activation page's numbers, tables and figures, on synthetic signal-propagation
tables with known factors and on tiny training runs."""

import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients import theory
from exploding_gradients.chapters import activation as chapter

P = chapter.CHAPTER.parameters(
    {"profile": "quick", "depth": 5, "activations": ["relu", "sigmoid"],
     "saturation_grid": [0.5, 2.0, 8.0]}, before={})


def layers(factor: float, dphi_sq: float, saturated: float, depth: int = 5, seeds: int = 2,
           **columns) -> pd.DataFrame:
    """A signal_propagation-like table whose ||delta|| grows by ``factor`` per layer
    towards the input, with constant E[phi'^2] and saturated fraction."""
    return pd.DataFrame([
        {"seed": s, "layer": layer, "delta_norm": factor ** (depth - layer),
         "dphi_sq": dphi_sq, "saturated": saturated, **columns}
        for s in range(seeds) for layer in range(1, depth + 1)])


def matched() -> pd.DataFrame:
    relu = theory.fitted_growth("relu", P.sigma_w, 0.0, P.depth)
    return pd.concat([layers(relu, 0.5, 0.5, activation="relu"),
                      layers(0.2, 0.05, 0.2, activation="sigmoid")], ignore_index=True)


def test_matched_table_and_numbers():
    table = chapter.matched_table(matched(), P).set_index("activation")
    assert table.loc["relu", "relative error"] == pytest.approx(0, abs=1e-9)
    assert table.loc["sigmoid", "measured factor"] == pytest.approx(0.2)
    assert table.loc["sigmoid", "measured chi (sigma_w^2 E[phi'^2])"] == pytest.approx(
        P.sigma_w ** 2 * 0.05)
    assert table.loc["sigmoid", "saturated fraction"] == pytest.approx(0.2)
    assert table.loc["relu", "chi_1"] == pytest.approx(P.sigma_w ** 2 / 2)
    numbers = chapter.matched_numbers(matched(), P)
    assert numbers["act_n_close"] == "1 of 2"
    error = 0.2 / theory.fitted_growth("sigmoid", P.sigma_w, 0.0, P.depth) - 1
    assert numbers["act_far"] == f"sigmoid ({100 * error:+.0f}%)"
    assert numbers["act_sigmoid_factor"] == "0.200" and numbers["act_relu_sd"] == "0.000"
    assert numbers["act_sigma_w"] == P.sigma_w and numbers["act_depth"] == 5
    fig = chapter.fig_matched(matched(), P)
    assert len(fig.axes) == 2 and fig.axes[0].get_yscale() == "log"
    assert len(fig.axes[1].get_lines()) == len(P.activations)
    assert fig.get_figwidth() <= 6.7
    plt.close(fig)
    html = chapter.matched_display(matched(), P).to_html()
    assert "0.200 ± 0.000" in html and "nan" not in html


def saturation() -> pd.DataFrame:
    """tanh's factor crosses 1 at sigma_w = 1 (0.5 at 0.5, 2 at 2); sigmoid's never."""
    parts = []
    for a, factors in [("tanh", [0.5, 2.0, 4.0]), ("sigmoid", [0.1, 0.3, 0.9])]:
        for i, (s, f) in enumerate(zip(P.saturation_grid, factors, strict=True)):
            parts.append(layers(f, 0.5 / (i + 1), 0.2 * (i + 1), activation=a, sigma_w=s))
    return pd.concat(parts, ignore_index=True)


def test_saturation_numbers_and_figure():
    numbers = chapter.saturation_numbers(saturation(), P)
    assert numbers["act_tanh_explode_from"] == "σ_w ≈ 1.00"
    assert numbers["act_tanh_explode_pred"].startswith("σ_w ≈ ")  # the theory on this grid
    assert numbers["act_sigmoid_explode_from"] == "never in this range"
    assert numbers["act_tanh_sat_max"] == "0.60" and numbers["act_tanh_growth_at_max_sat"] == \
        "4.00"
    assert numbers["act_tanh_corr"] == "−1.00"  # saturation up, E[phi'^2] down
    assert numbers["act_tanh_critical"] == "1.00"
    assert float(numbers["act_tanh_min_chi_above_one"]) > 1  # keeping q* > 0 explodes
    summary = chapter.saturation_summary(saturation())
    assert summary.loc[("sigmoid", 8.0), ("growth", "mean")] == pytest.approx(0.9)
    fig = chapter.fig_saturation(saturation(), P)
    assert len(fig.axes) == 3 and all(ax.get_xscale() == "log" for ax in fig.axes)
    assert fig.get_figwidth() <= 6.7
    plt.close(fig)


def test_critical_sigma_w_is_where_chi_1_is_one():
    assert chapter.critical_sigma_w("relu") == pytest.approx(math.sqrt(2), abs=1e-4)
    assert math.isnan(chapter.critical_sigma_w("gelu"))  # chi_1 jumps across 1
    sigmoid = chapter.critical_sigma_w("sigmoid")
    assert sigmoid > 10 and theory.chi1("sigmoid", sigmoid, 0.0) == pytest.approx(1, abs=1e-3)


def test_training_numbers_of_tiny_runs():
    params = chapter.CHAPTER.parameters(
        {"profile": "quick", "train_activations": ["relu"], "train_depth": 2,
         "train_width": 8, "train_steps": 4}, before={})
    grid = [{"activation": "relu", "sigma_w": s, "scale": scale}
            for s, scale in [(params.sigma_w, "shared"), (1.0, "critical")]]
    runs = pd.concat([
        eg.run("training", seeds=2, activation="relu", sigma_w=g["sigma_w"], init="normal",
               depth=2, width=8, steps=4, log_every=2).assign(**g) for g in grid],
        ignore_index=True)
    table = chapter.training_table(runs)
    assert list(table.columns[:4]) == ["activation", "scale", "sigma_w", "chi_1"]
    assert table["chi_1"].tolist() == pytest.approx([params.sigma_w ** 2 / 2, 0.5])
    numbers = chapter.training_numbers(runs, params)
    assert numbers["act_train_relu_div"] == "0/2"
    assert "nan" not in chapter.training_display(runs, params).to_html()
    last = runs[(runs.scale == "critical") & (runs.layer == 0) & (runs.step == 4)]
    assert numbers["act_train_relu_critical"] == f"{last['test_accuracy'].mean():.2f}"
    assert numbers["act_train_depth"] == 2 and numbers["act_train_steps"] == 4


def test_gelu_width_table_and_numbers():
    widths = pd.concat([layers(f, 0.5, 0.1, width=w, seeds=3) for w, f in [(64, 1.0), (256, 0.9)]],
                       ignore_index=True)
    table = chapter.gelu_table(widths, P)
    assert list(table.width) == [64, 256] and table["mean"].tolist() == pytest.approx([1, 0.9])
    assert table["predicted"].iloc[0] == pytest.approx(
        theory.fitted_growth("gelu", P.sigma_w, 0.0, P.depth))
    numbers = chapter.gelu_numbers(widths, P)
    assert numbers["act_gelu_narrow"] == 64 and numbers["act_gelu_wide_factor"] == "0.900"
    assert numbers["act_gelu_noise"] == f"{math.sqrt(5 / 64):.2f}"
    assert numbers["act_gelu_drift"].startswith("−")  # ln q is pulled down, weakly


def test_preserving_table_predicts_lsuv_from_unit_variance():
    kept = pd.concat([layers(1.085, 0.5, 0.1, activation="tanh", init="lsuv", preact_var=1.0),
                      layers(1.04, 0.5, 0.1, activation="selu", init="normal", sigma_w=1.0,
                             preact_var=1.0)], ignore_index=True)
    table = chapter.preserving_table(kept, P).set_index("activation")
    assert table.loc["tanh", "predicted"] == pytest.approx(
        math.sqrt(theory.lsuv_prediction("tanh")[1]))
    assert table.loc["selu", "predicted"] == pytest.approx(
        theory.fitted_growth("selu", 1.0, 0.0, P.depth))
    numbers = chapter.preserving_numbers(kept, P)
    assert numbers["act_keep_tanh"] == "1.085" and numbers["act_selu_chi1"] == "1.072"
    assert "nan" not in chapter.preserving_display(kept, P).to_html()
