"""The convnets chapter's numbers, tables and figures, on synthetic tables and tiny runs."""

import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients import theory
from exploding_gradients.chapters import convnets as chapter
from exploding_gradients.chapters import depth
from exploding_gradients.study import growth
from exploding_gradients.study.plots import check_legible

matplotlib.use("Agg")

TINY = dict(seeds=2, depth=5, channels=4, image_size=4, train_seeds=2, train_depth=2,
            train_channels=2, train_image_size=4, train_steps=3, agc_steps=3,
            relu_sigma_w=[1.2, 1.6], tanh_sigma_w=[1.0, 2.0], agc_factors=[0.01, 0.1])


@pytest.fixture
def P():
    return chapter.CHAPTER.parameters({"profile": "quick", **TINY}, before={})


def predicted_layers(P, noise: float = 0.0) -> pd.DataFrame:
    """A ``signal_propagation``-like table whose delta_norm follows the predicted profile
    exactly (times a per-seed constant and optional log-normal noise)."""
    rng = np.random.default_rng(0)
    rows = []
    for act, sws in (("relu", P.relu_sigma_w), ("tanh", P.tanh_sigma_w)):
        for sw in sws:
            layers, rel = depth.predicted_profile(act, sw, P)
            for seed in range(P.seeds):
                scale = 3.0 + seed
                for layer, value in zip(layers, rel, strict=True):
                    rows.append({"activation": act, "sigma_w": sw, "seed": seed,
                                 "layer": layer,
                                 "delta_norm": scale * value * math.exp(noise * rng.normal()),
                                 "grad_norm": 1.0, "preact_var": 1.0})
    return pd.DataFrame(rows)


def test_predicted_factor_is_sqrt_chi1_for_relu_and_the_same_fit_for_tanh(P):
    assert chapter.predicted_factor("relu", 1.6, P) == pytest.approx(1.6 / 2**0.5, rel=1e-9)
    layers, rel = depth.predicted_profile("tanh", 1.0, P)
    slope = np.polyfit(layers, np.log(rel), 1)[0]
    assert chapter.predicted_factor("tanh", 1.0, P) == pytest.approx(math.exp(-slope))
    # near tanh's critical point q^l still relaxes, so the uniform mean of ln chi differs
    assert abs(chapter.predicted_factor("tanh", 1.0, P)
               - theory.predicted_growth("tanh", 1.0, 0.0, P.depth)) > 1e-3


def test_a_measurement_on_the_predicted_profile_has_no_error(P):
    """Like with like: the measured fit of an exact profile is the prediction, for tanh
    too, whatever the overall scale of each seed."""
    table = chapter.factor_table(predicted_layers(P), P)
    assert len(table) == 4 and table["rel_error"].abs().max() < 1e-9
    assert table.loc[table.activation == "relu", "chi1"].tolist() == pytest.approx(
        [1.2**2 / 2, 1.6**2 / 2])
    numbers = chapter.factor_numbers(predicted_layers(P), P)
    assert numbers["cnn_worst_error_pct"] == "0.0" and numbers["cnn_n_within"] == "4 of 4"
    assert numbers["cnn_fan_in"] == P.channels * P.kernel_size**2 == 36
    assert numbers["cnn_relu_top_sigma"] == "1.6" and numbers["cnn_tanh_top_sigma"] == "2"
    assert numbers["cnn_relu_top_pred"] == f"{1.6 / 2**0.5:.3f}"


def test_an_error_beyond_the_tolerance_is_counted(P):
    layers = predicted_layers(P)
    bad = (layers.activation == "relu") & (layers.sigma_w == 1.6)
    layers.loc[bad, "delta_norm"] *= 1.1 ** -(layers.loc[bad, "layer"] - 1)  # 10% more
    numbers = chapter.factor_numbers(layers, P)
    assert numbers["cnn_n_within"] == "3 of 4"
    assert numbers["cnn_worst_error_pct"] == "10.0" and numbers["cnn_relu_worst_pct"] == "10.0"
    shown = chapter.factor_display(layers, P).data
    assert list(shown["relative error"]) == ["+0.0 %", "+10.0 %", "+0.0 %", "+0.0 %"]


def test_convolutions_follow_the_mlp_law_with_fan_in_channels_times_kernel_area():
    """A real convnet (tanh, sigma_w 2: low seed-to-seed scatter) against the prediction;
    a fan-in of channels alone would predict a factor three times larger."""
    P = chapter.CHAPTER.parameters({"profile": "quick", "depth": 10, "channels": 16,
                                    "image_size": 6}, before={})
    layers = eg.run("signal_propagation", architecture="cnn", activation="tanh", sigma_w=2.0,
                    depth=10, channels=16, image_size=6, seeds=2)
    measured = growth.growth_per_layer(layers, "delta_norm")["growth"].mean()
    assert measured == pytest.approx(chapter.predicted_factor("tanh", 2.0, P), rel=0.02)


@pytest.mark.parametrize("config, label", [
    ({"init": "normal", "sigma_w": 2.5}, "σ_w = 2.5"),
    ({"init": "he", "sigma_w": math.nan, "normalization": math.nan}, "He"),
    ({"init": "normal", "sigma_w": 2.5, "normalization": "batch"}, "σ_w = 2.5 + batch norm"),
    ({"init": "he", "residual": True, "residual_scale": math.nan}, "He + residual, s = 1"),
    ({"init": "he", "residual": True, "residual_scale": 0.2}, "He + residual, s = 0.2"),
    ({"init": "he", "residual": False, "normalization": "none"}, "He"),
    ({"lr": 2.0, "clip": "agc", "clip_threshold": 0.04}, "lr 2 + AGC λ = 0.04"),
    ({"lr": 0.1, "clip": math.nan, "clip_threshold": math.nan}, "lr 0.1"),
])
def test_case_labels(config, label):
    assert chapter.case_label(config) == label


def training_table(cases: dict, steps: int = 4) -> pd.DataFrame:
    """A ``training``-like table from a sweep over ``init``: per init, seeds given as
    (first gradient norm, diverged step, final accuracy); the loss halves each step."""
    rows = []
    for init, seeds in cases.items():
        for seed, (grad, div, acc) in enumerate(seeds):
            for step in range(steps):
                bad = 0 <= div <= step
                rows.append({"init": init, "sigma_w": 2.5 if init == "normal" else np.nan,
                             "seed": seed, "step": step, "layer": 0,
                             "loss": np.nan if bad else 2.0 / 2**step,
                             "grad_norm": grad if step == 0 else (np.inf if bad else 1.0),
                             "test_accuracy": np.nan if bad else acc, "diverged_step": div,
                             "stopped_step": -1})
    return pd.DataFrame(rows)


def test_outcomes_keep_the_order_of_the_sweep_and_count_divergences():
    runs = training_table({"normal": [(1e3, 1, 0.0), (2e3, 2, 0.0)],
                           "he": [(10.0, -1, 0.6), (12.0, -1, 0.5)],
                           "xavier": [(0.5, -1, 0.4), (0.4, 3, 0.0)]})
    out = chapter.outcomes(runs)
    assert list(dict.fromkeys(out["case"])) == ["σ_w = 2.5", "He", "Xavier"]
    shown = chapter.outcome_display(runs).data.set_index("configuration")
    assert shown.loc["σ_w = 2.5", "diverged"] == "2/2"
    assert shown.loc["σ_w = 2.5", "at step"] == "1.5 [1, 2]"
    assert shown.loc["He", "final test accuracy"] == "0.55 [0.50, 0.60]"
    assert shown.loc["He", "initial gradient norm"] == "11"
    assert shown.loc["Xavier", "diverged"] == "1/2"


def test_the_majority_class_is_the_level_of_a_network_that_learned_nothing(P):
    assert 0.25 <= chapter.majority_accuracy(P) < 0.6


@pytest.fixture(scope="module")
def tiny_runs():
    """Tiny real sweeps shaped as the page's."""
    P = chapter.CHAPTER.parameters({"profile": "quick", **TINY}, before={})
    train = dict(architecture="cnn", depth=P.train_depth, channels=P.train_channels,
                 image_size=P.train_image_size, batch_size=16, log_every=2, n_train=64)
    inits = [{"init": "normal", "sigma_w": P.large_sigma_w}, {"init": "he"},
             {"init": "xavier"}]
    case = eg.sweep("training", inits, seeds=P.train_seeds, optimizer="momentum",
                    lr=P.train_lr, steps=P.train_steps, **train)
    variants = [{"init": "normal", "sigma_w": P.large_sigma_w, "normalization": "batch"},
                {"init": "he", "residual": True},
                {"init": "he", "residual": True, "residual_scale": P.nf_scale}]
    arch = eg.sweep("training", variants, seeds=P.train_seeds, optimizer="momentum",
                    lr=P.train_lr, steps=P.train_steps, **train)
    rates = [{"lr": P.agc_healthy_lr}, {"lr": P.agc_lr}]
    rates += [{"lr": P.agc_lr, "clip": "agc", "clip_threshold": f} for f in P.agc_factors]
    agc = eg.sweep("training", rates, seeds=P.train_seeds, optimizer="sgd", init="he",
                   residual=True, residual_scale=P.nf_scale, steps=P.agc_steps, **train)
    at_init = [{}, {"normalization": "batch"}, {"residual": True},
               {"residual": True, "residual_scale": P.nf_scale},
               {"residual": True, "normalization": "batch"}]
    blocks = eg.sweep("signal_propagation", at_init, seeds=P.seeds, architecture="cnn",
                      init="he", depth=P.depth, channels=P.channels, image_size=P.image_size,
                      batch_size=16)
    return P, case, arch, agc, blocks


def test_numbers_of_the_training_measurements(tiny_runs):
    P, case, arch, agc, _ = tiny_runs
    numbers = chapter.case_numbers(case, P)
    assert numbers["cnn_large_sigma"] == "2.5" and numbers["cnn_large_chi"] == "3.12"
    assert numbers["cnn_large_div"].endswith("/2") and numbers["cnn_he_div"].endswith("/2")
    assert numbers["cnn_xavier_chi"] == "0.5"
    numbers = chapter.variant_numbers(case, arch, P)
    assert {"cnn_bnlarge_div", "cnn_res1_grad_ratio", "cnn_nf_acc"} <= set(numbers)
    numbers = chapter.agc_numbers(agc, P)
    assert numbers["cnn_agc_lambdas"] == "0.01, 0.1" and numbers["cnn_agc_ratio"] == "20"
    assert numbers["cnn_agc_low_lambda"] == "0.01"
    assert numbers["cnn_agc_clipped_div"].endswith("of 4")
    assert len(chapter.outcome_display(agc).data) == 2 + len(P.agc_factors)


def test_block_table_puts_each_variant_beside_its_mean_field_value(tiny_runs):
    P, _, _, _, blocks = tiny_runs
    table = chapter.block_table(blocks, P).set_index("case")
    assert list(table.index) == ["He", "He + batch norm", "He + residual, s = 1",
                                 "He + residual, s = 0.2", "He + batch norm + residual, s = 1"]
    assert table.loc["He", "predicted"] == pytest.approx(1.0, abs=1e-6)
    assert table.loc["He + batch norm", "predicted"] == pytest.approx(math.pi / (math.pi - 1))
    assert table.loc["He + residual, s = 0.2", "predicted"] == pytest.approx(1.04)
    assert table.loc["He + residual, s = 1", "recursion"] > 2  # the branch's mean adds
    assert math.isnan(table.loc["He + batch norm + residual, s = 1", "predicted"])
    numbers = chapter.block_numbers(blocks, P)
    assert numbers["cnn_res1_naive"] == "2.000" and numbers["cnn_bn_pred"] == "1.467"
    shown = chapter.block_display(blocks, P).data
    assert shown["network (He)"].tolist()[:2] == ["plain", "batch norm"]


def test_figures_are_legible_and_have_their_panels(tiny_runs):
    P, case, arch, agc, _ = tiny_runs
    for fig, panels in ((chapter.fig_profiles(predicted_layers(P), P), 2),
                        (chapter.fig_training(case, arch, P), 2),
                        (chapter.fig_agc(agc, P), 1)):
        assert isinstance(fig, plt.Figure) and len(fig.axes) == panels
        check_legible(fig)
        plt.close(fig)
