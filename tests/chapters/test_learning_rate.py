"""The learning-rate chapter's reductions, numbers and figures, on a hand-made
``lr_boundary`` table and on tiny real runs."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients.chapters import learning_rate as chapter

NET = dict(task="regression", activation="relu", init="normal", width=8, batch_size=16,
           n_train=64, hessian_samples=64)


def params(**overrides):
    P = chapter.CHAPTER.parameters({"profile": "quick"}, before={})
    P.update(overrides)
    return P


def run_table(depth, sigma_w, seed, ratio, lam, test, diverged_step=-1):
    """The rows of one ``lr_boundary`` run: ``test`` the logged test losses (one per
    step, NaN where not logged)."""
    steps = len(test)
    return pd.DataFrame({
        "seed": seed, "lr_ratio": ratio, "lr": ratio * 2 / lam, "lambda_max": lam,
        "readout_share": 0.5, "step": range(steps), "loss": 1.0, "grad_norm": 1.0,
        "test_loss": test, "diverged_step": diverged_step, "stopped_step": -1,
        "depth": depth, "sigma_w": sigma_w})


@pytest.fixture
def runs():
    """Two networks; network (2, 1.4) diverges from r = 4 (seed 0) and r = 2 (seed 1),
    network (6, 1.0) lowers its loss only at r = 0.5 and never diverges."""
    tables = []
    for seed, lam in [(0, 10.0), (1, 20.0)]:
        for ratio in [0.5, 2.0, 4.0]:
            div = ratio >= (4.0 if seed == 0 else 2.0)
            tables.append(run_table(2, 1.4, seed, ratio, lam, [1.0, np.nan, 0.5],
                                    diverged_step=2 if div else -1))
            tables.append(run_table(6, 1.0, seed, ratio, lam / 10,
                                    [1.0, np.nan, 0.9 if ratio == 0.5 else 1.1]))
    return pd.concat(tables, ignore_index=True)


def test_outcomes_one_row_per_run_with_its_loss_ratio(runs):
    out = chapter.outcomes(runs)
    assert len(out) == 12
    assert list(out[["depth", "sigma_w", "seed", "lr_ratio"]].itertuples(index=False))[:3] == [
        (2, 1.4, 0, 0.5), (2, 1.4, 0, 2.0), (2, 1.4, 0, 4.0)]
    first = out.iloc[0]
    assert first.loss_ratio == pytest.approx(0.5) and first.lowered and not first.diverged
    assert first.lr == pytest.approx(0.5 * 2 / 10.0)
    diverged = out[out.diverged]
    assert (diverged.loss_ratio == np.inf).all() and not diverged.lowered.any()
    assert len(diverged) == 3


def test_per_seed_boundaries_in_ratio_and_absolute_units(runs):
    seedwise = chapter.per_seed(chapter.outcomes(runs)).set_index(["depth", "seed"])
    he0, he1 = seedwise.loc[(2, 0)], seedwise.loc[(2, 1)]
    assert (he0.r_div, he0.r_ok) == (4.0, 2.0) and (he1.r_div, he1.r_ok) == (2.0, 0.5)
    assert he0.lr_div == pytest.approx(4.0 * 2 / 10.0)
    assert he1.stability_lr == pytest.approx(2 / 20.0)
    small = seedwise.loc[(6, 0)]
    assert math.isnan(small.r_div) and small.r_ok == 0.5 and math.isnan(small.lr_div)


def test_ratio_text_marks_seeds_beyond_the_grid():
    P = params(lr_ratios=[0.5, 1.0, 16.0])
    assert chapter.ratio_text([np.nan, np.nan], P) == "none up to 16"
    assert chapter.ratio_text([2.0, np.nan, 4.0], P) == "4 [2, >16]"
    assert chapter.ratio_text([8.0], P) == "8 [8, 8]"


def test_boundary_numbers(runs):
    P = params(depths=[2, 6], sigma_ws=[1.4, 1.0], lr_ratios=[0.5, 2.0, 4.0])
    numbers = chapter.boundary_numbers(runs, P)
    assert numbers["lr_d0s0_label"] == "depth 2, σ_w = 1.4"
    assert numbers["lr_d0s0_lam"] == "15 [10, 20]"  # study.outcomes.med_range
    assert numbers["lr_d0s0_rdiv"] == "3 [2, 4]"
    assert numbers["lr_d0s0_lrdiv"] == "0.5 [0.2, 0.8]"
    assert numbers["lr_d1s1_rdiv"] == "none up to 4"
    assert numbers["lr_d1s1_rok"] == "0.5 [0.5, 0.5]"
    assert numbers["lr_d1s1_lrdiv"] == "–"
    assert numbers["lr_n_below"] == "0 of 4" and numbers["lr_below_where"] == "none"
    assert numbers["lr_lam_span"] == "10" and numbers["lr_lam_seed_spread"] == "2.0"
    assert numbers["lr_d0s1_lam"] == "–"  # a network the table does not hold
    assert numbers["lr_d0s0_readout"] == "50%"


def test_share_text_writes_the_readout_share_in_percent():
    assert chapter.share_text([0.641, 0.69, 0.66]) == "64–69%"
    assert chapter.share_text([0.5]) == "50%" and chapter.share_text([np.nan]) == "–"


def test_correlation_numbers_use_the_runs_that_diverged(runs):
    numbers = chapter.correlation_numbers(runs, params())
    assert numbers["lr_corr_n"] == 2
    assert numbers["lr_stab_span"] == "2" and numbers["lr_lrdiv_span"] == "4"
    assert numbers["lr_corr"] == "1.00"
    # both runs are one network's seeds: one cluster, no slope across networks
    assert numbers["lr_n_networks"] == 1 and numbers["lr_slope_net"] == "–"
    assert numbers["lr_corr_net"] == "–" and numbers["lr_slope_loo"] == "–"
    assert numbers["lr_slope"] == "2.00"  # seed 1: half the 2/lambda, a quarter the lr_div


def test_the_slope_over_networks_counts_each_network_once():
    rows = []
    for depth, lam, r_div in [(2, 1.0, 2.0), (4, 10.0, 4.0), (8, 100.0, 8.0)]:
        for seed in range(3):  # three seeds of a network: one point of the relation
            rows.append({"depth": depth, "sigma_w": 1.0, "seed": seed, "lambda_max": lam,
                         "stability_lr": 2 / lam, "r_div": r_div,
                         "lr_div": r_div * 2 / lam})
    seedwise = pd.DataFrame(rows)
    nets = seedwise.groupby(["depth", "sigma_w"]).median()
    # lr_div = r_div * 2/lam with r_div = 2 * (10 / lam) ** (log10 2): slope 1 - log10(2)
    slope = chapter._slope(nets)
    assert slope == pytest.approx(1 - math.log10(2))
    assert chapter._slope(seedwise) == pytest.approx(slope)  # same points, repeated


def test_summary_table_has_a_row_per_network(runs):
    P = params(depths=[2, 6], sigma_ws=[1.4, 1.0], lr_ratios=[0.5, 2.0, 4.0])
    table = chapter.summary_table(runs, P).data
    assert list(table["network"]) == ["depth 2, σ_w = 1.4", "depth 2, σ_w = 1",
                                      "depth 6, σ_w = 1.4", "depth 6, σ_w = 1"]
    assert table.iloc[0]["first diverging r"] == "3 [2, 4]"
    assert table.iloc[3]["first diverging lr"] == "–" and "nan" not in table.to_string()
    sharp = chapter.sharpness_table(runs, P).data
    assert sharp.iloc[0]["top eigenvector in the readout"] == "50%"
    assert sharp.iloc[0]["2/λmax (median)"] == "0.15"


def test_figures_of_the_sweep(runs):
    P = params(depths=[2, 6], sigma_ws=[1.4, 1.0], lr_ratios=[0.5, 2.0, 4.0])
    for fig, n_axes in [(chapter.fig_spikes(runs, P), 4), (chapter.fig_sweep(runs, P), 2),
                        (chapter.fig_boundary(runs, P), 1)]:
        assert isinstance(fig, plt.Figure) and len(fig.axes) == n_axes
        plt.close(fig)


def test_trajectory_numbers_and_figure_on_tiny_real_runs():
    P = params(depths=[2], sigma_ws=[1.4142], traj_ratios=[0.5, 2.0], steps=4,
               measure_every=2)
    traj = eg.sweep("sharpness", [{"lr_ratio": r} for r in P.traj_ratios], seeds=2,
                    depth=2, sigma_w=1.4142, steps=P.steps, measure_every=P.measure_every,
                    **NET)
    numbers = chapter.trajectory_numbers(traj, P)
    fit = traj.assign(fit=chapter.step_fit(traj))
    at_start = fit[(fit.step == 0)]
    # at step 0 eta * lambda_max / 2 is the ratio itself: the lr was set from it
    assert np.allclose(at_start["fit"], at_start["lr_ratio"])
    assert numbers["lr_traj1_r"] == "2" and numbers["lr_traj_step"] == 2
    last = fit[fit.step == 4]
    assert numbers["lr_traj_max_end"] == f"{last['fit'].max():.2f}"
    assert numbers["lr_traj0_fit_end"].count("[") == 1  # two seeds: median [min, max]
    fig = chapter.fig_sharpness(traj, P)
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "depth 2, $\\sigma_w$ = 1.4142"
    plt.close(fig)


def test_boundary_numbers_on_a_tiny_real_sweep():
    P = params(depths=[2], sigma_ws=[1.4142], lr_ratios=[0.5, 64.0], steps=6)
    runs = eg.sweep("lr_boundary", [{"depth": 2, "sigma_w": 1.4142}], seeds=1,
                    lr_ratios=P.lr_ratios, steps=P.steps, log_every=2, **NET)
    numbers = chapter.boundary_numbers(runs, P)
    assert numbers["lr_d0s0_rdiv"] == "64 [64, 64]"  # r = 64 diverges
    assert numbers["lr_n_below"] == "0 of 1"
    lam = runs["lambda_max"].iloc[0]
    assert numbers["lr_d0s0_lam"] == f"{lam:.3g}"
