"""The normalization page's numbers, tables and figures, on synthetic signal-propagation
tables with known rates and on tiny training and lr_boundary sweeps."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients import theory
from exploding_gradients.chapters import normalization as chapter
from exploding_gradients.models.mlp import NORMALIZATIONS
from exploding_gradients.study.ledger import parse_number
from exploding_gradients.study.plots import check_legible

P = chapter.CHAPTER.parameters(
    {"profile": "quick", "depth": 5, "batch_sizes": [16, 64, 256], "train_lrs": [0.01, 0.1],
     "input_spreads": [1.0, 100.0], "train_steps": 4, "bn_widths": [32, 64]}, before={})
RATES = {"none": 1.0, "batch": 1.6, "layer": 0.9}  # lambda at every batch size but 256


def layers(lam: float, depth: int = 5, seeds: int = 2, **columns) -> pd.DataFrame:
    """Per-layer rows whose squared gradient norm grows by ``lam`` per layer."""
    return pd.DataFrame([{"seed": s, "layer": layer, "delta_norm": lam ** ((depth - layer) / 2),
                          **columns} for s in range(seeds) for layer in range(1, depth + 1)])


def sweep() -> pd.DataFrame:
    """Batch norm at every batch size, the others at the middle one, as the page runs."""
    bn = [layers(1.5 if b == 256 else RATES["batch"], normalization="batch", batch_size=b)
          for b in P.batch_sizes]
    rest = [layers(RATES[n], normalization=n, batch_size=chapter.mid_batch(P))
            for n in chapter.others(P)]
    return pd.concat(bn + rest, ignore_index=True)


def test_the_rate_is_the_factor_on_the_squared_norm():
    rates = chapter.init_rates(sweep()).set_index(["normalization", "batch_size"])
    assert rates.loc[("batch", 16), "mean"] == pytest.approx(1.6)
    assert rates.loc[("batch", 256), "mean"] == pytest.approx(1.5)
    assert rates.loc[("layer", 64), "count"] == 2
    assert chapter.others(P) == ["none", "layer"]


def test_init_numbers_compare_batch_norm_with_the_large_batch_theory():
    numbers = chapter.init_numbers(sweep(), P)
    assert numbers["norm_mid_batch"] == 64 and numbers["norm_largest_batch"] == 256
    assert numbers["norm_target"] == f"{math.pi / (math.pi - 1):.3f}" == "1.467"
    assert numbers["norm_bn_mid"] == numbers["norm_batch_mid"] == "1.600"
    assert numbers["norm_none_mid"] == "1.000" and numbers["norm_layer_mid"] == "0.900"
    assert numbers["norm_bn_largest"] == "1.500" and numbers["norm_bn_smallest"] == "1.600"
    assert numbers["norm_bn_largest_err"] == f"{100 * (1.5 / theory.BATCHNORM_RELU_CHI - 1):+.1f}"
    assert numbers["norm_bn_total"] == "2.56"  # sqrt(1.6) over 4 layers
    fig = chapter.fig_init(sweep(), P)
    check_legible(fig)
    assert len(fig.axes) == 2 and fig.axes[1].get_xscale() == "log"
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["16", "64", "256"]
    plt.close(fig)
    shown = chapter.init_display(sweep(), P).data
    assert "factor on ‖δ‖² per layer (mean)" in shown.columns and len(shown) == 5
    assert set(shown["normalization"]) == set(chapter.LABELS.values())


def test_width_numbers_separate_layer_one_and_the_two_halves():
    # Layers 2..5 grow by 1.44 per layer; layer 1 has half of layer 2's squared gradient.
    def profile(width):
        t = layers(1.44, width=width)
        t.loc[t.layer == 1, "delta_norm"] = t.loc[t.layer == 2, "delta_norm"].to_numpy() / 2**0.5
        return t

    widths = pd.concat([profile(32), profile(64)], ignore_index=True)
    assert chapter.spans(P) == {"whole": (1, 5), "from2": (2, 5), "input": (2, 3),
                                "output": (4, 5)}
    numbers = chapter.width_numbers(widths, P)
    assert numbers["norm_w_layer1"] == "0.50"
    assert numbers["norm_w_from2"] == numbers["norm_w_in"] == numbers["norm_w_out"] == "1.440"
    assert float(numbers["norm_w_rate_hi"]) < 1.44  # layer 1 pulls the whole fit down
    shown = chapter.width_display(widths, P).data
    assert list(shown.columns) == ["width", "layers 1–5", "sd", "layers 2–5", "layers 2–3",
                                   "layers 4–5"]


def test_layer_norm_numbers_against_the_closed_form():
    ln = pd.concat([layers(theory.layer_norm_chi(a), activation=a) for a in P.ln_activations],
                   ignore_index=True)
    numbers = chapter.ln_numbers(ln, P)
    assert numbers["norm_ln_worst"] == "0.0"
    assert numbers["norm_ln_tanh_chi"] == numbers["norm_ln_tanh"] == "1.178"
    assert numbers["norm_ln_relu"] == "1.000" and numbers["norm_ln_tanh_norm"] == "1.085"
    fig = chapter.fig_layer_norm(ln, P)
    check_legible(fig)
    dashed = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == len(P.ln_activations)
    plt.close(fig)


def test_scale_numbers_are_the_extremes_over_the_weight_scales():
    table = pd.concat([layers(lam, sigma_w=s) for s, lam in [(0.5, 1.38), (3.0, 1.42)]],
                      ignore_index=True)
    numbers = chapter.scale_numbers(table, P)
    assert numbers["norm_scale_min"] == "1.380" and numbers["norm_scale_max"] == "1.420"
    assert numbers["norm_scale_list"] == "0.5, 1.4142, 3"


def test_training_numbers_and_figure_of_a_tiny_sweep():
    runs = eg.sweep("training", [{"normalization": n, "lr": lr} for n in NORMALIZATIONS
                                 for lr in P.train_lrs],
                    seeds=1, depth=3, width=8, init="he", activation="relu",
                    optimizer="momentum", steps=4, log_every=2, engine="batched")
    numbers = chapter.training_numbers(runs, P)
    assert numbers["norm_train_lr0"] == "0.01" and numbers["norm_train_steps"] == 4
    assert {"norm_train_none_acc", "norm_train_none_acc_lr1"} <= set(numbers)
    first = runs[(runs.normalization == "batch") & (runs.lr == 0.01) & (runs.layer == 0)]
    assert float(numbers["norm_train_batch_g0"]) == pytest.approx(first["grad_norm"].iloc[0],
                                                                  rel=1e-2)
    table = chapter.training_table(runs)
    assert list(table.columns[:2]) == ["normalization", "lr"] and len(table) == 6
    fig = chapter.fig_training(runs, P)
    check_legible(fig)
    assert fig.axes[0].get_title() == "learning rate 0.01"
    assert [line.get_label() for line in fig.axes[1].get_lines()] == list(
        chapter.LABELS.values())
    assert len(fig.axes[1].get_lines()[0].get_xdata()) == 3  # one point per hidden layer
    plt.close(fig)


def boundary(task: str, spread: float, seed: int, lam: float, diverge_from: float):
    """Two steps of an lr_boundary table: runs at ratio >= diverge_from diverge."""
    return pd.DataFrame([{"task": task, "input_scale_spread": spread, "seed": seed,
                          "lr_ratio": r, "lr": 2 * r / lam, "lambda_max": lam,
                          "readout_share": 0.5, "step": step, "loss": 1.0, "grad_norm": 1.0,
                          "test_loss": 1.0, "diverged_step": 1 if r >= diverge_from else -1,
                          "stopped_step": -1, "cause": ""}
                         for r in P.input_ratios for step in (0, 1)])


def test_the_stable_rate_is_the_largest_ratio_no_seed_diverged_at():
    inputs = pd.concat([
        boundary("regression", 1.0, 0, 10.0, 8.0), boundary("regression", 1.0, 1, 10.0, 16.0),
        boundary("regression", 100.0, 0, 1e4, 8.0), boundary("regression", 100.0, 1, 1e4, 8.0),
        boundary("classification", 1.0, 0, 5.0, 32.0),
        boundary("classification", 100.0, 0, 500.0, 1.0)], ignore_index=True)
    t = chapter.boundary_table(inputs).set_index(["task", "input_scale_spread"])
    assert t.loc[("regression", 1.0), "r_ok"] == 4.0  # the smaller of the two seeds'
    assert t.loc[("regression", 1.0), "lr_ok"] == pytest.approx(4 * 2 / 10)
    assert np.isnan(t.loc[("classification", 100.0), "r_ok"])  # diverged at the smallest
    first = pd.DataFrame([{"input_scale_spread": s, "seed": 0, "step": 0, "layer": layer,
                           "grad_norm": s * layer} for s in P.input_spreads
                          for layer in (1, 2, 3)])
    numbers = chapter.inputs_numbers(inputs, first, P)
    assert numbers["norm_in_regression_lam"] == "1000"
    assert numbers["norm_in_regression_lr_fall"] == "1000"
    assert numbers["norm_in_g1_ratio"] == numbers["norm_in_g3_ratio"] == "100"
    assert numbers["norm_in_s2"] == "10⁴"
    assert numbers["norm_in_classification_r_smax"] == "–"
    scales = np.array([100 ** (j / 15) for j in range(16)])
    assert chapter.mean_square_scale(100.0) == pytest.approx((scales ** 2).mean(), rel=1e-5)
    fig = chapter.fig_inputs(inputs, first, P)
    check_legible(fig)
    assert fig.axes[0].get_xscale() == fig.axes[0].get_yscale() == "log"
    plt.close(fig)
    shown = chapter.inputs_display(inputs, P).data
    assert "largest stable multiple of 2/λ_max" in shown.columns and len(shown) == 4


def test_a_tiny_lr_boundary_sweep_gives_the_page_its_numbers():
    net = dict(depth=2, width=8, init="he", activation="relu")
    inputs = eg.sweep("lr_boundary", [{"task": t, "input_scale_spread": s}
                                      for t in P.input_tasks for s in P.input_spreads],
                      seeds=1, lr_ratios=[1.0, 64.0], steps=3, log_every=1, n_train=64,
                      hessian_samples=64, power_iters=20, **net)
    first = eg.sweep("training", [{"input_scale_spread": s} for s in P.input_spreads],
                     seeds=1, optimizer="sgd", steps=1, log_every=1, n_train=64, **net)
    numbers = chapter.inputs_numbers(inputs, first, P)
    assert float(numbers["norm_in_g1_ratio"]) > 10  # the first layer sees the scaled inputs
    lam = chapter.boundary_table(inputs).set_index(["task", "input_scale_spread"]).lambda_max
    assert lam[("regression", 100.0)] > 10 * lam[("regression", 1.0)]  # a sharper loss
    assert 1000 <= parse_number(numbers["norm_in_regression_lam"]) < 10_000
