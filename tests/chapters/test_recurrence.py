"""The recurrence chapter's verdicts, outcome tables, numbers and figures, on hand-made
tables with known factors and on tiny real runs."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients import theory
from exploding_gradients.chapters import recurrence as chapter
from exploding_gradients.data import ADDING_BASELINE_MSE
from exploding_gradients.study.plots import check_legible
from exploding_gradients.train import OPTIMIZERS


def params(**overrides):
    P = chapter.CHAPTER.parameters({"profile": "quick"}, before={})
    P.update(overrides)
    return P


def lag_rows(cell, radius, sigma_max, factors, lags=10):
    """An ``rnn_gradients``-like table: per seed, ||dL/dh_{T-k}|| = factor**k exactly."""
    return pd.DataFrame([
        {"seed": seed, "lag": k, "grad_norm": f**k, "spectral_radius_measured": radius,
         "sigma_max": sigma_max, "sigma_w": radius, "cell": cell, "spectral_radius": radius}
        for seed, f in enumerate(factors) for k in range(lags + 1)])


@pytest.fixture
def grads():
    """Three radii: guaranteed vanishing (0.4), possible but vanishing (1.0, where the
    naive rule is right), and exploding (3.0); sigma_max is 2 rho."""
    return pd.concat([lag_rows("rnn", 0.4, 0.8, [0.3, 0.5]),
                      lag_rows("rnn", 1.0, 2.0, [0.6, 0.6]),
                      lag_rows("rnn", 3.0, 6.0, [1.2, 1.3])], ignore_index=True)


def test_pascanu_verdicts(grads):
    table = chapter.pascanu_verdicts(grads).set_index("spectral_radius")
    assert table.loc[0.4, "mean"] == pytest.approx(0.4)
    assert table.loc[3.0, "mean"] == pytest.approx(1.25)
    assert list(table["condition"]) == ["vanishing guaranteed", "exploding possible",
                                        "exploding possible"]
    assert list(table["measured"]) == ["vanishes", "vanishes", "explodes"]
    assert table["consistent"].all()
    # "rho > 1 explodes" calls rho = 1 vanishing, which it is
    assert table["naive correct"].all()


def test_pascanu_flags_an_exploding_guaranteed_case_and_ignores_gated_cells():
    df = pd.concat([lag_rows("rnn", 0.4, 0.8, [1.1, 1.1]),
                    lag_rows("lstm", 3.0, 6.0, [0.9, 0.9])], ignore_index=True)
    table = chapter.pascanu_verdicts(df).set_index("cell")
    assert not table.loc["rnn", "consistent"] and not table.loc["rnn", "naive correct"]
    assert table.loc["lstm", "condition"] == "n/a" and table.loc["lstm", "consistent"]


def test_lag_numbers(grads):
    P = params(spectral_radii=[0.4, 1.0, 3.0], seq_len=10, input_std=1.0)
    numbers = chapter.lag_numbers(grads, P)
    assert numbers["rec_smax_ratio"] == "2.00" and numbers["rec_rho_guarantee"] == "0.50"
    assert numbers["rec_n_guaranteed"] == 1 and numbers["rec_n_possible"] == 2
    assert numbers["rec_n_possible_vanish"] == 1 and numbers["rec_n_configs"] == 3
    assert numbers["rec_bound_held"] == "held"
    assert numbers["rec_bound_max"] == f"{0.5 / 0.8:.2f}"
    assert numbers["rec_n_naive_wrong"] == 0 and numbers["rec_naive_wrong_list"] == "none"
    assert numbers["rec_rho1"] == "1" and numbers["rec_rho1_growth"] == "0.600"
    assert numbers["rec_rho1_total"] == "0.00605"
    # log(mean factor) crosses 0 between rho = 1 (0.6) and rho = 3 (1.25)
    crit = 1.0 + 2.0 * -math.log(0.6) / (math.log(1.25) - math.log(0.6))
    assert numbers["rec_critical_rho"] == f"about {crit:.2f}"
    mf = theory.mean_field_growth(3.0, 1.0)
    assert float(numbers["rec_mf_worst"]) >= 100 * abs(1.25 / mf - 1) - 0.05
    assert numbers["rec_top_rho"] == "3" and numbers["rec_top_growth"] == "1.250"


def test_a_violated_bound_is_said():
    grads = lag_rows("rnn", 0.4, 0.5, [0.9, 0.9])  # factor 0.9 > gamma sigma_max = 0.5
    numbers = chapter.lag_numbers(grads, params(seq_len=10))
    assert numbers["rec_bound_held"] == "was VIOLATED" and numbers["rec_bound_max"] == "1.80"
    assert numbers["rec_critical_rho"] == "not reached"


def test_gated_numbers():
    def lstm(bias, radius, factor):
        return lag_rows("lstm", radius, 2 * radius, [factor, factor]).assign(forget_bias=bias)

    # a sweep leaves forget_bias out (NaN) for the GRU points
    gated = pd.concat([lstm(0.0, 0.5, 0.5), lstm(0.0, 1.0, 0.6), lstm(1.0, 1.0, 0.8),
                       lstm(3.0, 1.0, 1.02), lag_rows("gru", 1.0, 2.0, [0.9, 0.95]),
                       lag_rows("gru", 3.0, 6.0, [0.9, 0.95])], ignore_index=True)
    P = params(gated_radii=[0.5, 1.0, 3.0], forget_biases=[0.0, 1.0, 3.0])
    numbers = chapter.gated_numbers(gated, P)
    # the zero-bias cells only: the LSTM with bias 3 explodes, they do not
    assert numbers["rec_gated_low"] == "0.500" and numbers["rec_gated_high"] == "0.925"
    assert numbers["rec_gated_any_explode"] == "none of them"
    assert numbers["rec_fb_rho"] == "1" and numbers["rec_gru_r1"] == "0.925"
    assert numbers["rec_fb_factors"] == ("0.600 with bias 0, 0.800 with bias 1 and "
                                         "1.020 with bias 3")
    assert numbers["rec_fb_sigmoids"] == "0.50, 0.73 and 0.95"
    assert list(chapter.with_gate_case(gated)["case"].unique()) == [
        "LSTM, forget bias 0", "LSTM, forget bias 1", "LSTM, forget bias 3", "GRU"]
    fig = chapter.fig_gated(gated, P)
    check_legible(fig)
    assert fig.axes[1].get_title() == "$\\rho$ = 1"
    plt.close(fig)


def test_threshold_against_the_input_scale():
    P = params(input_stds=[0.3, 1.0])

    def rows(s, crit_sw):
        # a factor that crosses 1 exactly at sigma_w = crit_sw, linear in log
        return pd.concat([lag_rows("rnn", r, 2 * r, [np.exp(r - crit_sw)] * 2)
                          .assign(input_std=s) for r in (1.0, 2.0, 3.0)], ignore_index=True)

    scales = pd.concat([rows(0.3, 1.4), rows(1.0, 1.86)], ignore_index=True)
    t = chapter.threshold_table(scales, P).set_index("input std")
    assert t.loc[0.3, "measured critical σ_w"] == pytest.approx(1.4)
    assert t.loc[1.0, "measured critical ρ"] == pytest.approx(1.86)
    assert t.loc[1.0, "mean-field critical σ_w"] == pytest.approx(
        theory.rnn_critical_sigma_w(1.0))
    numbers = chapter.threshold_numbers(scales, P)
    assert numbers["rec_in_lo"] == "0.3" and numbers["rec_in_hi_sw"] == "1.86"
    assert numbers["rec_in_zero_crit"] == "1.00" and numbers["rec_in_stds"] == "0.3, 1"
    fig = chapter.fig_threshold(scales, P)
    check_legible(fig)
    assert len(fig.axes) == 2
    plt.close(fig)


def training_rows(seed, losses, grads, lag=(0.5, 0.1), diverged_step=-1, **point):
    n = len(losses)
    lags = [lag[0], *[np.nan] * (n - 2), lag[1]]
    return pd.DataFrame({"seed": seed, "step": range(n), "loss": losses, "grad_norm": grads,
                         "step_lr": 0.01, "lag_ratio": lags, "diverged_step": diverged_step,
                         "stopped_step": -1, "cause": "", **point})


@pytest.fixture
def runs():
    """Radius 1: T = 5 solved by both seeds, T = 15 by neither; radius 3 at T = 15: one
    seed diverges.  Twenty steps, so the final loss is the mean of the last two."""
    low = [1.0] * 18 + [0.01, 0.02]
    high = [0.2] * 20
    grads = [1.0] * 19 + [4.0]
    return pd.concat([
        training_rows(0, low, grads, spectral_radius=1.0, seq_len=5),
        training_rows(1, low, grads, spectral_radius=1.0, seq_len=5),
        training_rows(0, high, grads, lag=(0.01, 0.02), spectral_radius=1.0, seq_len=15),
        training_rows(1, high, grads, lag=(0.03, 0.04), spectral_radius=1.0, seq_len=15),
        training_rows(0, high, [1.0] * 19 + [np.inf], diverged_step=19, spectral_radius=3.0,
                      seq_len=15),
        training_rows(1, high, [10.0] * 19 + [100.0], lag=(5.0, 6.0), spectral_radius=3.0,
                      seq_len=15),
    ], ignore_index=True)


def test_training_outcomes_solved_rule(runs):
    out = chapter.training_outcomes(runs, ["spectral_radius", "seq_len"])
    assert len(out) == 6
    assert out["final_loss"].iloc[0] == pytest.approx(0.015)  # mean of the last tenth
    assert list(out["solved"]) == [True, True, False, False, False, False]
    assert 0.015 < chapter.SOLVED_FRACTION * ADDING_BASELINE_MSE < 0.2
    assert out["diverged"].iloc[4] and math.isnan(out["final_loss"].iloc[4])
    assert out["max_grad_norm"].iloc[4] == 1.0  # the largest finite one
    assert out["spike"].iloc[0] == pytest.approx(4.0)


def test_training_numbers_and_table(runs):
    P = params(train_radius=1.0, explode_radius=3.0, train_seq_lens=[5, 15])
    numbers = chapter.training_numbers(runs, P)
    assert numbers["rec_solved_T"] == "5" and numbers["rec_failed_T"] == "15"
    assert numbers["rec_mixed_T"] == "none"
    assert numbers["rec_ratio_shortT"] == "5" and numbers["rec_ratio_short"] == "0.5"
    assert numbers["rec_ratio_long"] == "0.02"
    assert numbers["rec_explode_solved"] == "0/2" and numbers["rec_explode_diverged"] == "1/2"
    assert numbers["rec_explode_maxgrad"] == "100" and numbers["rec_explode_spike"] == "10"
    assert numbers["rec_ok_maxgrad"] == "4" and numbers["rec_spike_low"] == "4.0"
    table = chapter.training_display(runs, P).data
    assert list(table["T"]) == [5, 15, 15] and list(table["solved"]) == ["2/2", "0/2", "0/2"]
    assert list(table["diverged"]) == ["0/2", "0/2", "1/2"]


def test_gated_training_puts_the_rnn_first(runs):
    P = params(train_radius=1.0, train_seq_lens=[5, 15], gated_seeds=1)
    gruns = pd.concat([
        training_rows(0, [0.5] * 18 + [0.001, 0.001], [1.0] * 20, lag=(0.001, 0.3),
                      cell="lstm"),
        training_rows(0, [0.5] * 18 + [0.001, 0.001], [1.0] * 20, lag=(0.1, 0.5),
                      cell="lstm", forget_bias=1.0),
        training_rows(0, [0.2] * 20, [1.0] * 20, lag=(0.002, 0.4), cell="gru")])
    numbers = chapter.gated_training_numbers(runs, gruns, P)
    assert numbers["rec_gated_T"] == 15 and numbers["rec_gated_seeds"] == 1
    assert numbers["rec_gated_lstm_solved"] == "1/1" and numbers["rec_gated_gru_solved"] == "0/1"
    assert numbers["rec_gated_lstm_fb_solved"] == "1/1" and numbers["rec_train_fb"] == "1"
    assert numbers["rec_gated_rnn_solved"] == "0/2"
    assert numbers["rec_gated_rnn_ratio0"] == "0.02" and numbers["rec_gated_lstm_ratio1"] == "0.3"
    table = chapter.gated_training_display(runs, gruns, P).data
    assert list(table["cell"]) == ["RNN", "LSTM, forget bias 0", "LSTM, forget bias 1", "GRU"]


def test_optimizer_names_cover_the_choices():
    assert set(chapter.OPTIMIZER_NAMES) == set(OPTIMIZERS)
    assert chapter.setup_numbers(params())["rec_train_opt"] == "Adam"


def test_cliff_numbers_and_figure():
    P = params(cliff_w=8.0)
    w, b = np.meshgrid(np.linspace(-2, 12, 15), np.linspace(-10, 4, 15))
    surface = (w, b, *theory.one_unit_model(w, b))
    cliffs = pd.DataFrame([{"steps": T, **theory.one_unit_cliff(8.0, T, grid=401)}
                           for T in (20, 30, 40)])
    numbers = chapter.cliff_numbers(surface, cliffs, P)
    assert numbers["rec_cliff_w"] == "8"
    assert numbers["rec_cliff_lambda"] == f"{cliffs.saddle_slope.iloc[-1]:.3f}"
    # the peak gradient grows by about the unstable fixed point's slope per step
    assert chapter.peak_growth(cliffs) == pytest.approx(cliffs.saddle_slope.iloc[-1], rel=0.1)
    fig = chapter.fig_cliff(surface, cliffs, P)
    check_legible(fig)
    assert len(fig.axes) == 4  # three panels and the colorbar
    plt.close(fig)


def test_training_figure(runs):
    P = params(train_radius=1.0, explode_radius=3.0, train_seq_lens=[5, 15])
    fig = chapter.fig_training(runs, P)
    check_legible(fig)
    assert len(fig.axes) == 2
    assert len(fig.axes[1].get_lines()) == 3  # seed 0 at the shortest, longest, exploding
    plt.close(fig)


def test_verdicts_and_figures_on_tiny_real_runs():
    P = params(spectral_radii=[0.5, 3.0], gated_radii=[0.5, 3.0], input_std=1.0)
    net = dict(seq_len=6, hidden_size=8, input_std=P.input_std)
    grads = eg.sweep("rnn_gradients", [{"cell": "rnn", "spectral_radius": r}
                                       for r in P.spectral_radii], seeds=2, **net)
    gated = eg.sweep("rnn_gradients", [{"cell": "lstm", "forget_bias": b, "spectral_radius": r}
                                       for b in P.forget_biases for r in P.gated_radii]
                     + [{"cell": "gru", "spectral_radius": r} for r in P.gated_radii],
                     seeds=1, **net)
    table = chapter.verdicts(grads, P)
    assert list(table["measured"]) == ["vanishes", "explodes"]
    assert table["mean-field"].iloc[0] == pytest.approx(theory.mean_field_growth(
        table.sigma_w.iloc[0], 1.0))
    assert list(chapter.verdict_table(grads, P).data.columns)[:2] == ["ρ", "σ_max"]
    fig = chapter.fig_lags(grads, P)
    assert len(fig.axes) == 1 and len(fig.axes[0].get_lines()) == 2
    plt.close(fig)
    fig = chapter.fig_gated(gated, P)
    check_legible(fig)
    assert len(fig.axes[0].get_lines()) >= len(P.forget_biases) + 1
    plt.close(fig)
    assert chapter.gated_numbers(gated, P)["rec_fb_list"] == "0, 1 and 3"
