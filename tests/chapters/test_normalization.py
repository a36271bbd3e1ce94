"""The normalization page's numbers, tables and figures, on synthetic signal-propagation
tables with known rates and on tiny training sweeps."""

import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients import theory
from exploding_gradients.chapters import normalization as chapter
from exploding_gradients.models.mlp import NORMALIZATIONS

P = chapter.CHAPTER.parameters(
    {"profile": "quick", "depth": 5, "batch_sizes": [16, 64, 256], "train_lrs": [0.01, 0.1],
     "input_spreads": [1.0, 100.0], "input_lrs": [0.01, 100.0], "train_steps": 4}, before={})
RATES = {"none": 1.0, "batch": 1.6, "layer": 0.9}  # lambda at every batch size but 256


def layers(lam: float, depth: int = 5, seeds: int = 2, **columns) -> pd.DataFrame:
    """Per-layer rows whose squared gradient norm grows by ``lam`` per layer."""
    return pd.DataFrame([{"seed": s, "layer": layer, "delta_norm": lam ** ((depth - layer) / 2),
                          **columns} for s in range(seeds) for layer in range(1, depth + 1)])


def sweep() -> pd.DataFrame:
    return pd.concat([layers(1.5 if (n, b) == ("batch", 256) else lam, normalization=n,
                             batch_size=b) for n, lam in RATES.items() for b in P.batch_sizes],
                     ignore_index=True)


def test_the_rate_is_the_factor_on_the_squared_norm():
    rates = chapter.init_rates(sweep()).set_index(["normalization", "batch_size"])
    assert rates.loc[("batch", 16), "mean"] == pytest.approx(1.6)
    assert rates.loc[("batch", 256), "mean"] == pytest.approx(1.5)
    assert rates.loc[("layer", 64), "count"] == 2


def test_init_numbers_compare_batch_norm_with_the_large_batch_theory():
    numbers = chapter.init_numbers(sweep(), P)
    assert numbers["norm_mid_batch"] == 64 and numbers["norm_largest_batch"] == 256
    assert numbers["norm_target"] == f"{math.pi / (math.pi - 1):.3f}" == "1.467"
    assert numbers["norm_bn_mid"] == numbers["norm_batch_mid"] == "1.600"
    assert numbers["norm_none_mid"] == "1.000" and numbers["norm_layer_mid"] == "0.900"
    assert numbers["norm_bn_largest"] == "1.500"
    assert numbers["norm_bn_largest_err"] == f"{100 * (1.5 / theory.BATCHNORM_RELU_CHI - 1):+.1f}"
    assert numbers["norm_bn_total"] == f"{1.6 ** 2:.3g}"  # sqrt(1.6) over 4 layers
    fig = chapter.fig_init(sweep(), P)
    assert len(fig.axes) == 2 and fig.axes[1].get_xscale() == "log"
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["16", "64", "256"]
    plt.close(fig)
    shown = chapter.init_display(sweep(), P).data
    assert "factor on ||delta||^2 (mean)" in shown.columns and len(shown) == 9


def test_scale_numbers_are_the_extremes_over_the_weight_scales():
    table = pd.concat([layers(lam, sigma_w=s) for s, lam in [(0.5, 1.38), (3.0, 1.42)]],
                      ignore_index=True)
    assert chapter.scale_numbers(table, P) == {"norm_scale_min": "1.380",
                                               "norm_scale_max": "1.420"}


def test_training_numbers_and_figure_of_a_tiny_sweep():
    runs = eg.sweep("training", [{"normalization": n, "lr": lr} for n in NORMALIZATIONS
                                 for lr in P.train_lrs],
                    seeds=1, depth=3, width=8, init="he", activation="relu",
                    optimizer="momentum", steps=4, log_every=2)
    numbers = chapter.training_numbers(runs, P)
    assert numbers["norm_train_lr0"] == "0.01" and numbers["norm_train_steps"] == 4
    first = runs[(runs.normalization == "batch") & (runs.lr == 0.01) & (runs.layer == 0)]
    assert numbers["norm_train_batch_g0"] == f"{first['grad_norm'].iloc[0]:.3g}"
    table = chapter.training_table(runs)
    assert list(table.columns[:2]) == ["normalization", "lr"] and len(table) == 6
    fig = chapter.fig_training(runs, P)
    assert fig.axes[0].get_title() == "learning rate 0.01"
    assert [line.get_label() for line in fig.axes[1].get_lines()] == list(NORMALIZATIONS)
    assert len(fig.axes[1].get_lines()[0].get_xdata()) == 3  # one point per hidden layer
    plt.close(fig)


def test_inputs_numbers_of_a_tiny_sweep():
    inputs = eg.sweep("training", [{"input_scale_spread": s, "lr": lr}
                                   for s in P.input_spreads for lr in P.input_lrs],
                      seeds=1, depth=3, width=8, init="he", activation="relu",
                      optimizer="sgd", steps=4, log_every=2, task="regression")
    numbers = chapter.inputs_numbers(inputs, P)
    assert numbers["norm_in_smax"] == "100"
    assert numbers["norm_in_lr_smin"] == "0.01"  # lr 100 diverges
    assert numbers["norm_in_lr_smax"] == "nan"  # spread 100 diverges at both rates
    assert float(numbers["norm_in_g1_ratio"]) > 10  # the first layer sees the scaled inputs
    fig = chapter.fig_inputs(inputs, P)
    assert [line.get_label() for line in fig.axes[1].get_lines()] == [
        "layer 1 (sees the inputs)", "layer 3"]
    plt.close(fig)
    assert "ok" not in chapter.inputs_display(inputs, P).data.columns
