"""The architecture chapter's numbers, tables and figures, on synthetic tables and tiny runs."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients import theory
from exploding_gradients.chapters import architecture as chapter
from exploding_gradients.data import ADDING_BASELINE_MSE
from exploding_gradients.init import SCHEMES
from exploding_gradients.study.plots import check_legible

matplotlib.use("Agg")

TINY = dict(depth=3, width=8, train_steps=4, input_depth=2, residual_depths=[1, 2, 3],
            rnn_seq_len=5, rnn_hidden=4, rnn_steps=4)


@pytest.fixture
def P():
    return chapter.CHAPTER.parameters({"profile": "quick", **TINY}, before={})


def training_table(groups: dict, steps: int = 4) -> pd.DataFrame:
    """A ``training``-like table: per group value, seeds given as (first grad, diverged
    step, accuracy); loss halves each step."""
    rows = []
    for case, seeds in groups.items():
        for seed, (grad, div, acc) in enumerate(seeds):
            for step in range(steps):
                bad = 0 <= div <= step
                rows.append({"case": case, "seed": seed, "step": step, "layer": 0,
                             "loss": np.nan if bad else 2.0 / 2**step,
                             "grad_norm": grad if step == 0 else (np.inf if bad else 1.0),
                             "test_accuracy": np.nan if bad else acc, "diverged_step": div})
    return pd.DataFrame(rows)


def test_every_scheme_has_a_label_and_a_style():
    assert set(SCHEMES) <= set(chapter.LABELS) and set(SCHEMES) <= set(chapter.STYLE)
    assert chapter.NORMS == ["none", "batch", "layer"]


def test_theory_numbers_are_the_mean_field_predictions(P):
    numbers = chapter.theory_numbers(P)
    assert numbers["arch_relu_chi"] == "2.00"  # sigma_w^2 / 2 at sigma_w = 2
    assert numbers["arch_relu_total"] == f"{2.0 ** ((P.depth - 1) / 2):.2g}"
    sw, chi = theory.lsuv_prediction("tanh")
    assert numbers["arch_lsuv_tanh_sw"] == f"{sw:.3f}" and chi > 1
    assert numbers["arch_lsuv_tanh_total"] == f"{chi ** ((P.depth - 1) / 2):.3g}"
    # layer norm leaves the LSUV factor: 1 for ReLU, about 1.178 for tanh
    assert numbers["arch_ln_theory"] == "1.000" and numbers["arch_ln_tanh_chi"] == "1.178"
    setup = chapter.setup_numbers(P)
    assert setup["arch_depth"] == P.depth and setup["arch_lr"] == f"{P.train_lr:g}"


def test_outcome_table_counts_divergences_and_keeps_their_initial_gradient():
    runs = training_table({"a": [(1.0, -1, 0.5), (3.0, -1, 0.7), (2.0, 1, 0.0)],
                           "b": [(50.0, 0, 0.0)]})
    per_seed = chapter.outcomes(runs, ["case"])
    table = chapter.outcome_table(per_seed, ["case"], {"case": {"a": "A"}}).data
    a, b = table.iloc[0], table.iloc[1]
    assert list(table["case"]) == ["A", "b"]
    assert a["diverged"] == "1/3" and b["diverged"] == "1/1"
    # The initial gradient counts the diverged seed; the final values do not.
    assert a["initial ‖∇L‖: median [min, max]"] == "2 [1, 3]"
    assert a["final test accuracy"] == "0.60 [0.50, 0.70]"
    # Final loss: mean of the last TAIL of the steps (one here) over the first loss.
    assert a["final / initial loss"] == "0.12 [0.12, 0.12]"
    assert b["initial ‖∇L‖: median [min, max]"] == "50"
    assert b["final test accuracy"] == "–"


def test_cost_text_is_the_median_and_range_over_rounds():
    costs = pd.DataFrame({"variant": ["lsuv", "lsuv", "lsuv", "batch", "layer", "residual"],
                          "ratio": [1.0, 1.5, 1.2, 2.0, 3.0, 1.1],
                          "extra_setup_steps": [4.0, 6.0, np.nan, 0.0, 0.0, 0.0]})
    assert chapter.cost_text(costs, "lsuv") == "1.20 [1.00, 1.50]"
    numbers = chapter.mlp_cost_numbers(costs)
    assert numbers["arch_lsuv_cost_steps"] == "5 [4, 6]"
    assert numbers["arch_cost_batch"] == "2.00" and numbers["arch_res_cost"] == "1.10"


def test_residual_masks_name_each_case_of_a_sweep():
    table = pd.DataFrame({"depth": [4, 4, 4, 4, 1, 1],
                          "residual": [False, np.nan, np.nan, np.nan, np.nan, np.nan],
                          "residual_scale": [np.nan, 1.0, 0.5, 1.0, 1.0, 1.0],
                          "normalization": [np.nan, np.nan, np.nan, "batch", np.nan, np.nan]})
    masks = {k: list(np.flatnonzero(v)) for k, v in
             chapter.residual_masks(table, table["depth"]).items()}
    # At depth 1, s = 1 and s = 1/sqrt(L) are the same network: both cases take it.
    assert masks == {"plain": [0], "s1": [1, 4, 5], "sqrt": [2, 4, 5], "bn": [3]}


def test_residual_numbers_and_figure_from_tiny_sweeps(P):
    res = dict(width=P.width, activation="relu", init="he", residual=True)
    res_init = eg.sweep("signal_propagation", [{"residual_scale": s} for s in [0.5, 1.0]],
                        seeds=1, depth=P.depth, **res)
    by_depth = eg.sweep("signal_propagation", [
        {"depth": d, **case} for d in P.residual_depths
        for case in ({"residual": False}, {"residual_scale": 1.0}, {"residual_scale": d ** -0.5},
                     {"residual_scale": 1.0, "normalization": "batch"})], seeds=1, **res)
    amp = chapter.amplification(by_depth, P)
    assert len(amp) == 4 * len(P.residual_depths)  # one row per case, depth and seed
    P = chapter.Params("architecture", {**P, "residual_scales": [0.5, 1.0]})
    numbers = chapter.residual_numbers(res_init, by_depth, P)
    assert numbers["arch_res_dmax"] == 3
    assert numbers["arch_res_fwd_top_naive"] == "2.000"
    assert numbers["arch_res_amp_s1_naive"] == f"{2.0 ** ((numbers['arch_res_dok'] - 1) / 2):.3g}"
    fig = chapter.fig_residual_init(res_init, by_depth, P)
    check_legible(fig)
    assert len(fig.axes) == 2 and fig.axes[1].get_yscale() == "log"
    plt.close(fig)


def test_init_numbers_table_and_figure(P):
    grid = [{"activation": "relu", "init": s, "sigma_w": P.large_sigma_w} for s in P.relu_inits]
    grid += [{"activation": "tanh", "init": s, "sigma_w": P.chaotic_sigma_w}
             for s in P.tanh_inits]
    at_init = eg.sweep("signal_propagation", grid, seeds=1, depth=P.depth, width=P.width)
    table = chapter.init_table(at_init, P)
    assert len(table) == len(P.relu_inits) + len(P.tanh_inits)
    he = table[(table.activation == "relu") & (table.scheme == "He")].iloc[0]
    assert he["predicted factor per layer"] == pytest.approx(1.0, abs=1e-3)
    numbers = chapter.init_numbers(at_init, P)
    assert numbers["arch_init_relu_he"] == f"{he['measured (mean)']:.3f}"
    assert {f"arch_init_tanh_{s}_qlast" for s in P.tanh_inits} <= set(numbers)
    fig = chapter.fig_init(at_init, P)
    check_legible(fig)
    assert [ax.get_title() for ax in fig.axes] == [f"{a}, 3 layers of width 8"
                                                  for a in ["relu", "tanh"]]
    plt.close(fig)


def test_training_sections_from_tiny_runs(P):
    train = dict(optimizer="momentum", lr=P.train_lr, steps=P.train_steps, log_every=2)
    he = dict(activation="relu", init="he", depth=P.depth, width=P.width)
    res_runs = eg.sweep("training", [
        {"residual": False}, {"residual_scale": 1.0}, {"residual_scale": P.depth ** -0.5},
        {"residual_scale": 1.0, "normalization": "batch"}], seeds=1, **he, **train,
        residual=True)
    numbers = chapter.residual_train_numbers(res_runs, P)
    assert numbers["arch_rtrain_sqrt_div"] == "0/1" and len(numbers) == 12
    table = chapter.residual_outcomes(res_runs, P).data
    assert list(table["case"]) == list(chapter.training_cases(P).values())
    big = {**he, "init": "normal", "sigma_w": P.large_sigma_w}
    norms = [{"normalization": n} for n in chapter.NORMS]
    norm_init = eg.sweep("signal_propagation", norms, seeds=1, **big)
    norm_runs = eg.sweep("training", norms, seeds=1, **big, **train)
    he_runs = eg.run("training", {**he, **train}, seeds=1)
    table = chapter.norm_outcomes(norm_runs, he_runs, P).data
    assert table["normalization"].iloc[-1] == "He init, no normalization"
    P = chapter.Params("architecture", {**P, "train_relu_inits": ["normal", "he"],
                                        "train_tanh_inits": ["xavier"]})
    init_runs = eg.sweep("training", [
        {"activation": "relu", "init": "normal", "sigma_w": P.large_sigma_w},
        {"activation": "relu", "init": "he"}, {"activation": "tanh", "init": "xavier"}],
        seeds=1, depth=P.depth, width=P.width, **train)
    numbers = chapter.init_train_numbers(init_runs, P)
    assert set(numbers) == {f"arch_train_{a}_{s}_{k}" for a, s in
                            [("relu", "normal"), ("relu", "he"), ("tanh", "xavier")]
                            for k in ["acc", "div"]}
    for fig in [chapter.fig_residual_train(res_runs, P), chapter.fig_init_train(init_runs, P),
                chapter.fig_norm(norm_init, norm_runs, he_runs, P)]:
        check_legible(fig)
        assert fig.axes[-1].get_yscale() == "log" and fig.axes[-1].get_xlabel() == "step"
        plt.close(fig)


def test_rnn_outcomes_call_a_run_solved_below_a_tenth_of_the_trivial_error(P):
    rows = []
    for cell, clip, final in [("rnn", "none", 0.9), ("rnn", "norm", 0.5), ("lstm", "none", 0.05),
                              ("gru", "none", np.nan)]:
        for step in range(10):
            loss = ADDING_BASELINE_MSE * (final if step == 9 else 1.0)
            rows.append({"cell": cell, "clip": clip, "seed": 0, "step": step, "loss": loss,
                         "grad_norm": 2.0 if clip == "norm" and step % 2 else 0.5,
                         "lag_ratio": np.nan,
                         "diverged_step": 9 if np.isnan(final) else -1})
    runs = pd.DataFrame(rows)
    per_seed = chapter.rnn_outcomes(runs).set_index("case")
    assert list(per_seed["solved"]) == [False, False, True, False]
    assert per_seed.loc["lstm", "final_over_baseline"] == pytest.approx(0.05)
    numbers = chapter.rnn_numbers(runs, P)
    assert numbers["arch_rnn_lstm_solved"] == "1/1" and numbers["arch_rnn_gru_ratio"] == "nan"
    assert numbers["arch_rnn_clip_frac"] == "50"  # steps whose gradient norm exceeded 1
    fig = chapter.fig_rnn(runs, P)
    check_legible(fig)
    assert len(fig.axes) == 2 and fig.axes[1].get_xscale() == "log"
    plt.close(fig)
    assert list(chapter.rnn_table(runs, P).data["solved"]) == ["0/1", "0/1", "1/1", "0/1"]


def test_gated_cells_have_four_and_three_times_the_parameters(P):
    n = chapter.rnn_parameters(P)
    costs = pd.DataFrame({"variant": ["lstm", "gru"], "ratio": [3.0, 2.5]})
    numbers = chapter.rnn_cost_numbers(costs, P)
    assert numbers["arch_rnn_params_lstm"] == "4" and numbers["arch_rnn_params_gru"] == "3"
    assert numbers["arch_rnn_nparams_rnn"] == n["rnn"] and numbers["arch_rnn_cost_gru"] == "2.50"


def test_euler_identity_holds_to_rounding_error_in_every_block(P):
    """<dL/dx_l, x_l> = <dL/dy, y> for a bias-free residual ReLU network: the same value
    at every block, checked to 1e-6 (in float64 it holds to about 1e-15)."""
    euler = chapter.euler_identity(depth=6, width=16, scale=1.0, seeds=2, batch_size=8)
    assert len(euler) == 2 * 6 and euler.identity_error.max() < 1e-6
    # the Cauchy-Schwarz bound is a cosine: between 0 and 1
    assert ((euler.bound_share > 0) & (euler.bound_share <= 1)).all()
    P = chapter.Params("architecture", {**P, "depth": 6})
    numbers = chapter.euler_numbers(euler, P)
    assert "10⁻" in numbers["arch_euler_err"]  # e.g. "9 × 10⁻¹⁶"
    assert "<table" in numbers["arch_euler_table"].data
    assert list(chapter.euler_table(euler, P)["block"]) == [1, 3, 4, 6]


def test_euler_identity_fails_when_a_bias_breaks_the_homogeneity():
    """The identity is not a property of every network: with biases it does not hold."""
    import torch

    from exploding_gradients.data import gaussian_inputs
    from exploding_gradients.engine.registry import get
    from exploding_gradients.models.mlp import build_mlp

    config = get("signal_propagation").resolve(dict(depth=4, width=16, residual=True,
                                                       init="normal", sigma_b=0.5))
    gen = torch.Generator().manual_seed(0)
    model = build_mlp(config, d_in=16, d_out=config["d_out"], generator=gen).double()
    x = gaussian_inputs(8, 16, gen).double().requires_grad_(True)
    out = model(x)
    out.retain_grad()
    (0.5 * out.pow(2).mean()).backward()
    inner = (x.grad * x).sum(1)
    euler = (out.grad * (out - model.readout.bias)).detach().sum(1)
    assert (inner / euler - 1).abs().max() > 1e-3
