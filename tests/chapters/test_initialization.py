"""The initialization page's numbers, tables and figures, on synthetic tables whose
per-layer factors are known exactly, and on a tiny training sweep."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients import theory
from exploding_gradients.chapters import initialization as chapter
from exploding_gradients.study import readable

P = chapter.CHAPTER.parameters({"profile": "quick", "depth": 6, "width": 16}, before={})


def layers(factor: float, depth: int = 6, seeds: int = 2, **columns) -> pd.DataFrame:
    """A signal_propagation-like table whose ||delta|| grows by ``factor`` per layer
    towards the input (the same for every seed)."""
    rows = [{"seed": s, "layer": layer, "delta_norm": factor ** (depth - layer),
             "preact_var": 1.0, **columns}
            for s in range(seeds) for layer in range(1, depth + 1)]
    return pd.DataFrame(rows)


def sweep(factors: dict) -> pd.DataFrame:
    """One synthetic table per (activation, sigma_w) -> factor."""
    return pd.concat([layers(f, activation=a, sigma_w=s) for (a, s), f in factors.items()],
                     ignore_index=True)


def test_sweep_summary_is_the_log_of_the_factor_on_the_squared_norm():
    summary = chapter.sweep_summary(sweep({("relu", 1.0): 0.5, ("relu", 2.0): 2.0}))
    assert summary["mean"].to_numpy() == pytest.approx([2 * math.log(0.5), 2 * math.log(2)])
    assert summary["std"].to_numpy() == pytest.approx([0, 0], abs=1e-12)
    assert list(summary["count"]) == [2, 2]


def test_the_measured_boundary_is_where_the_factor_crosses_one():
    # ln factor^2 is -ln 4 at 1.0 and +ln 4 at 2.0: the straight line crosses 0 at 1.5.
    # (One call: the fixed-point theory's tanh boundary takes seconds to find.)
    factors = {(a, s): f for a in chapter.ACTIVATIONS for s, f in [(1.0, 0.5), (2.0, 2.0)]}
    numbers = chapter.sweep_numbers(sweep(factors), P)
    assert numbers["init_boundary_relu_measured"] == "1.500"
    assert numbers["init_boundary_tanh_measured"] == "1.500"
    assert numbers["init_boundary_relu_theory"] == "1.414"
    assert abs(float(numbers["init_boundary_tanh_theory"]) - 1) < 5e-3
    # ReLU's factor does not depend on q, so the finite depth does not move its boundary;
    # tanh's does: at finite depth q^l > 0 and its boundary lies above 1.
    assert numbers["init_boundary_relu_finite"] == "1.414"
    assert float(numbers["init_boundary_tanh_finite"]) > 1.01
    assert numbers["init_boundary_tanh_theory"] == "1.000"  # exact, not the slow iteration
    # the prediction on the measured grid, interpolated like the measurement
    on_grid = [2 * math.log(theory.fitted_growth("tanh", s, 0.0, 6)) for s in (1.0, 2.0)]
    assert numbers["init_boundary_tanh_finite_grid"] == \
        f"{1.0 - on_grid[0] * (2.0 - 1.0) / (on_grid[1] - on_grid[0]):.3f}"
    assert numbers["init_depth"] == 6 and numbers["init_width"] == 16


def test_schemes_table_uses_each_schemes_effective_sigma_w():
    table = pd.concat([layers(1.0, activation="relu", init="he"),
                       layers(0.5, activation="relu", init="xavier")], ignore_index=True)
    out = chapter.schemes_table(table, P).set_index("scheme")
    assert out.loc["he", "sigma_w"] == pytest.approx(math.sqrt(2))
    assert out.loc["xavier", "sigma_w"] == pytest.approx(1.0)
    assert out.loc["he", "chi_1"] == pytest.approx(1.0, abs=1e-6)
    assert out.loc["xavier", "measured factor"] == pytest.approx(0.5)
    assert out.loc["xavier", "gradient change over 6 layers"] == pytest.approx(0.5 ** 5)
    assert out.loc["xavier", "predicted factor"] == pytest.approx(
        theory.fitted_growth("relu", 1.0, 0.0, 6))
    numbers = chapter.schemes_numbers(table, P)
    assert numbers["init_relu_xavier_factor"] == "0.500"
    assert numbers["init_relu_xavier_total"] == "0.031"
    assert numbers["init_tanh_he_factor"] == "nan"  # not measured: said so, not invented
    html = chapter.schemes_display(table, P).to_html()
    assert "0.500 ± 0.000" in html and "nan" not in html


def test_gradient_scale_of_a_pure_change_of_scale_is_flat():
    # backward grows by 2 per layer while the forward shrinks by 2: GSC factor 1
    sweep = layers(2.0, activation="relu", sigma_w=2.0)
    sweep["preact_var"] = 0.25 ** (6 - sweep["layer"])
    gsc = chapter.sweep_gsc(sweep)
    assert gsc["mean"].iloc[0] == pytest.approx(1.0)


def test_figures_have_their_panels():
    factors = {(a, s): f for a in chapter.ACTIVATIONS for s, f in [(1.0, 0.5), (2.0, 2.0)]}
    fig = chapter.fig_sweep(sweep(factors), P)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) >= 4
    plt.close(fig)
    schemes = pd.concat([layers(1.0, activation=a, init=s) for a in chapter.ACTIVATIONS
                         for s in P.schemes], ignore_index=True)
    fig = chapter.fig_schemes(schemes, P)
    assert [ax.get_title() for ax in fig.axes] == ["ReLU", "tanh"]
    assert len(fig.legends[0].get_texts()) == len(P.schemes)
    plt.close(fig)


def test_training_numbers_of_a_tiny_sweep():
    params = chapter.CHAPTER.parameters(
        {"profile": "quick", "train_depth": 3, "train_width": 8, "train_steps": 4,
         "train_inits": ["xavier", "he", "normal"], "train_sigma_w": 50.0}, before={})
    runs = eg.sweep("training", [{"init": s} for s in params.train_inits], seeds=1,
                    depth=params.train_depth, width=params.train_width, activation="relu",
                    sigma_w=params.train_sigma_w, optimizer="momentum", lr=params.train_lr,
                    steps=params.train_steps, log_every=2)
    numbers = chapter.training_numbers(runs, params)
    assert numbers["init_train_depth"] == 3 and numbers["init_train_sigma_w"] == 50.0
    assert numbers["init_train_chi"] == f"{50.0 ** 2 / 2:.2f}"
    assert numbers["init_train_he_div"] == "0/1"
    first = runs[(runs.init == "normal") & (runs.layer == 0)]["grad_norm"].iloc[0]
    assert numbers["init_train_normal_g0"] == readable.number(first, 3)
    # Xavier against He at step 0, layer by layer
    step0 = runs[(runs.step == 0) & (runs.layer >= 1)].groupby(["init", "layer"]).grad_norm
    ratio = step0.median()["xavier"] / step0.median()["he"]
    assert numbers["init_xavier_he_ratio"] == readable.number(ratio.median(), 2)
    fig = chapter.fig_training(runs, params)
    assert len(fig.axes) == 2 and [ax.get_yscale() for ax in fig.axes] == ["log", "log"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["step", "layer $l$"]
    assert fig.get_figwidth() <= 6.7
    plt.close(fig)
    shown = chapter.training_display(runs, params).data
    assert list(shown["init"]) == ["xavier", "he", "normal"]
    assert np.isfinite(shown["final training loss"].iloc[0])


def test_rescaling_of_xavier_against_he():
    params = chapter.CHAPTER.parameters({"profile": "quick", "train_depth": 4,
                                         "train_width": 8}, before={})
    scale = chapter.rescaling("xavier", "he", params)
    # matrices: 16 -> 8 (ratio sqrt(16/24)/sqrt 2), three 8 -> 8 (1/sqrt 2), 8 -> 4
    rho = np.array([math.sqrt(2 * 16 / 24) / math.sqrt(2)] + [1 / math.sqrt(2)] * 3
                   + [math.sqrt(2 * 8 / 12) / math.sqrt(2)])
    assert scale == pytest.approx(np.prod(rho) / rho[:-1])
    assert chapter.rescaling("he", "he", params) == pytest.approx(1.0)


def test_jacobian_table_numbers_and_figure():
    cases = [{"activation": "relu", "sigma_w": math.sqrt(2), "input_q": 1.0},
             {"activation": "tanh", "sigma_w": 1.05, "input_q": 0.05}]
    spectra = eg.sweep("jacobian_spectrum", [dict(c, weights=w) for c in cases
                                             for w in ["gaussian", "orthogonal"]],
                       seeds=2, depth=6, width=16)
    table = chapter.isometry_table(spectra, P).set_index(["activation", "weights"])
    assert table.loc[("relu", "gaussian"), "predicted mean s²"] == pytest.approx(1.0)
    assert table.loc[("relu", "gaussian"), "zero"] > 0.3  # dead units: rank deficient
    assert table.loc[("tanh", "orthogonal"), "within ×2 of 1"] > \
        table.loc[("tanh", "gaussian"), "within ×2 of 1"]
    numbers = chapter.isometry_numbers(spectra, P)
    assert numbers["init_jac_tanh_orthogonal_zero"] == "0%"
    assert "nan" not in chapter.isometry_display(spectra, P).to_html()
    fig = chapter.fig_isometry(spectra, P)
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "log"]
    plt.close(fig)
