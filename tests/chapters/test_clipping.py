"""The clipping chapter's numbers, tables and figures, on synthetic training tables and
tiny real gradients."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from exploding_gradients.chapters import clipping as chapter
from exploding_gradients.study.clip_directions import clip_directions

P = chapter.CHAPTER.parameters({"profile": "quick"}, {})
STEPS = 10


def fake_run(loss0: float, rate: float, seed: int, diverge_at: int = -1,
             grad: float = 1.0) -> pd.DataFrame:
    """Per-step rows of one run: the loss decays by ``rate`` per step; NaN from
    ``diverge_at`` on (the last row, like the loop's, has no ``step_lr``)."""
    last = STEPS if diverge_at < 0 else diverge_at
    steps = np.arange(last + 1)
    loss = loss0 * rate ** steps
    grads = np.full(len(steps), grad)
    if diverge_at >= 0:
        loss[-1], grads[-1] = np.nan, np.nan
    return pd.DataFrame({
        "seed": seed, "step": steps, "layer": 0, "loss": loss, "grad_norm": grads,
        "step_lr": [0.1] * last + [np.nan], "diverged_step": diverge_at, "stopped_step": -1})


def fake_sweep(results: dict) -> pd.DataFrame:
    """A sweep table: ``results`` maps (clip, threshold) to one (rate, diverge_at) per seed."""
    return pd.concat([
        fake_run(1.0, rate, seed, div, grad=thr).assign(clip=clip, clip_threshold=thr)
        for (clip, thr), per_seed in results.items()
        for seed, (rate, div) in enumerate(per_seed)], ignore_index=True)


@pytest.fixture
def runs():
    mlp = fake_sweep({("none", 1.0): [(1.0, 3), (1.0, 4)],
                      ("norm", 0.1): [(0.9, -1), (0.9, -1)],
                      ("norm", 10.0): [(0.5, -1), (0.6, -1)],
                      ("value", 0.01): [(0.5, -1), (0.5, 2)],
                      ("value", 1.0): [(0.7, -1), (0.7, -1)],
                      ("agc", 0.01): [(0.5, 2), (0.5, -1)],
                      ("agc", 1.0): [(0.8, -1), (0.8, -1)]})
    rnn = fake_sweep({k: [(0.99, -1), (0.98, -1)] for k in
                      [("none", 1.0), ("norm", 0.1), ("norm", 10.0), ("value", 0.01),
                       ("value", 1.0), ("agc", 0.01), ("agc", 1.0)]})
    healthy = pd.concat([fake_run(1.0, 0.8, s) for s in range(2)], ignore_index=True)
    return {"mlp": mlp, "rnn": rnn, "healthy": healthy}


def test_as_set():
    assert chapter.as_set([0.1, 1.0, 10.0]) == "{0.1, 1, 10}"
    assert chapter.as_set([]) == "none"


def test_outcome_table_counts_divergence_and_ignores_diverged_losses(runs):
    per_run = chapter.outcomes(runs)["mlp"]
    table = chapter.outcome_table(per_run).set_index(["clip", "clip_threshold"])
    assert table.loc[("none", 1.0), "diverged"] == "2/2"
    assert table.loc[("none", 1.0), "blew_up"] == "2/2"  # a divergence blew up too
    assert math.isnan(table.loc[("none", 1.0), "final_median"])
    assert table.loc[("value", 0.01), "diverged"] == "1/2"
    tail = max(1, round((STEPS + 1) * chapter.TAIL))  # mean over the last 10% of steps
    survivor = np.mean(0.5 ** np.arange(STEPS + 1)[-tail:])
    assert table.loc[("value", 0.01), "final_median"] == pytest.approx(survivor)


def test_good_thresholds_need_no_divergence_and_a_loss_at_most_the_reference(runs):
    table = chapter.outcome_table(chapter.outcomes(runs)["mlp"])
    reference = chapter.references(runs, P)["mlp"][0]
    assert reference == pytest.approx(0.8 ** STEPS)
    assert chapter.good_thresholds(table, reference, "norm") == [10.0]
    assert chapter.good_thresholds(table, reference, "value") == [1.0]  # 0.01 lost a seed
    assert chapter.good_thresholds(table, 0.01, "value") == []


def test_a_finite_loss_far_above_its_start_blew_up_and_is_not_good():
    grown = fake_sweep({("none", 1.0): [(1.0, 2)], ("norm", 1.0): [(0.9, -1)],
                        ("norm", 100.0): [(1.5, -1)]})  # 1.5^10: 58 times the first loss
    table = chapter.outcome_table(chapter.outcomes({"mlp": grown, "rnn": grown})["mlp"])
    t = table.set_index(["clip", "clip_threshold"])
    assert t.loc[("norm", 100.0), "diverged"] == "0/1" and t.loc[("norm", 100.0), "n_blew_up"]
    assert chapter.good_thresholds(table, 1e9, "norm") == [1.0]
    assert chapter.blew_up_at(table, "norm") == "c = 100 (1/1)"
    assert chapter.blew_up_at(table, "value", "λ") == "no λ"


def test_sweep_and_agc_numbers(runs):
    n = chapter.sweep_numbers(runs, P)
    assert n["clipping_mlp_none_div"] == "2/2" and n["clipping_rnn_none_div"] == "0/2"
    assert n["clipping_mlp_norm_good"] == "{10}" and n["clipping_mlp_value_ndiv"] == 1
    assert n["clipping_mlp_value_nblew"] == 1 and n["clipping_mlp_value_blew_at"] == \
        "c = 0.01 (1/2)"
    assert n["clipping_mlp_value_nruns"] == 4 and isinstance(n["clipping_mlp_norm_ndiv"], int)
    assert n["clipping_rnn_c_low"] == "0.1" and n["clipping_rnn_c_high"] == "10"
    assert n["clipping_norm_list"] == ", ".join(f"{t:g}" for t in P.norm_thresholds)
    assert n["clipping_mlp_first"] == "1"
    a = chapter.agc_numbers(runs, P)
    assert a["clipping_mlp_agc_ndiv"] == 1 and a["clipping_mlp_agc_blew_at"] == "λ = 0.01 (1/2)"
    assert a["clipping_rnn_agc_blew_at"] == "no λ"
    assert a["clipping_rnn_agc_good"] == "none"  # the RNN never beats 1/6 here


def test_slow_numbers_count_only_steps_that_updated(runs):
    n = chapter.slow_numbers(runs, P)
    assert n["clipping_small_c"] == f"{min(P.norm_thresholds):g}"
    assert n["clipping_best_c"] == "10"  # the lowest median among thresholds without NaN
    # the fake gradient norm equals the threshold: never above it, never clipped
    assert n["clipping_small_frac_clipped"] == "0"


def test_pascanu_c_bar_is_the_mean_finite_norm_of_the_window():
    safe = pd.concat([fake_run(1.0, 0.9, s, grad=g) for s, g in enumerate([2.0, 4.0])])
    assert chapter.pascanu_c_bar(safe, 5) == pytest.approx(3.0)
    failing = fake_run(1.0, 1.0, 0, diverge_at=3, grad=7.0)
    assert chapter.pascanu_c_bar(failing, 10) == pytest.approx(7.0)  # the NaN is skipped


def test_pascanu_numbers_and_table(runs):
    pascanu = {"safe": {"mlp": runs["healthy"], "rnn": runs["healthy"]},
               "at_c_bar": {"mlp": runs["healthy"], "rnn": runs["healthy"]}}
    n = chapter.pascanu_numbers(runs, pascanu, P)
    assert n["clipping_mlp_cbar"] == "1" and n["clipping_mlp_cbar_div"] == "0/2"
    assert n["clipping_mlp_cbar_own"] == "1"  # the unclipped failing runs' finite norms
    assert n["clipping_mlp_cbar_inrange"] == chapter.as_set(
        [c for c in P.norm_thresholds if 0.5 <= c <= 10])
    assert n["clipping_mlp_cbar_blew"] == "0/2"
    table = chapter.pascanu_table(runs, pascanu, P).data
    assert list(table.columns) == ["", "MLP", "RNN"]
    assert chapter.fig_pascanu(runs, pascanu, P).get_axes()[0].get_xscale() == "log"
    plt.close("all")


def test_sweep_figures_and_table(runs):
    for fig in [chapter.fig_sweep(runs, P), chapter.fig_agc(runs, P)]:
        axes = fig.get_axes()
        assert len(axes) == 4 and axes[2].get_xscale() == "log"
        assert axes[2].get_yscale() == "log"
    assert len(chapter.fig_slow(runs, P).get_axes()) == 1
    plt.close("all")
    mlp = chapter.sweep_table(runs, P, "mlp").data
    assert len(mlp) == 7 and list(mlp["threshold"][:2]) == ["–", "0.1"]
    assert mlp["final loss, median [min, max]"].iloc[0] == "diverged"
    assert "nan" not in mlp.to_string()


TINY_MLP = dict(depth=3, width=8, task="regression", n_train=128, batch_size=16,
                optimizer="sgd", lr=0.1, steps=4)
TINY_RNN = dict(cell="rnn", hidden_size=6, seq_len=5, optimizer="sgd", lr=0.1, steps=4)


def test_direction_numbers_and_figure_on_real_gradients():
    th = [1e-3, 1.0, 100.0]
    cases = {"mlp": ("training", TINY_MLP, 0), "mlp later": ("training", TINY_MLP, 1),
             "rnn": ("rnn_training", TINY_RNN, 0)}
    directions = pd.concat([
        clip_directions(name, config, 0, {"norm": th, "value": th, "agc": th},
                        after_steps=k).assign(case=case)
        for case, (name, config, k) in cases.items()], ignore_index=True)
    Q = chapter.CHAPTER.parameters({"profile": "quick", "direction_thresholds": th}, {})
    n = chapter.direction_numbers(directions, Q)
    err = n["clipping_norm_cos_err"]  # rounding error, written as a × 10⁻ᵏ
    assert ("10⁻" in err and int(err.split("10⁻")[1].translate(str.maketrans(
        "⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789"))) >= 12) or err == "0"
    assert n["clipping_norm_cos_n"] == 9
    assert n["clipping_dir_largest"] == "100"
    # at 1e-3 only the signs survive: the cosine of sign(g) with g is below 1
    assert all(float(n[f"clipping_value_cos_min_{i}"]) < 1 for i in range(3))
    assert len(chapter.fig_direction(directions, Q).get_axes()) == 2
    plt.close("all")


def test_layer_numbers_on_real_gradients():
    deep = dict(TINY_MLP, depth=4, init="normal", sigma_w=2.0)
    cases = {"explodes": deep, "vanishes": dict(deep, init="xavier")}
    chosen = {"norm": 1e-6, "value": 1e-6, "agc": 1e-3}
    rows = pd.concat([clip_directions("training", c, 0, {m: [t] for m, t in chosen.items()})
                      .assign(case=case) for case, c in cases.items()], ignore_index=True)
    n = chapter.layer_numbers(rows, P)
    # norm clipping multiplies every layer by one number: the spread is unchanged
    assert n["clipping_layers_norm_spread"] == n["clipping_layers_raw_spread"]
    assert n["clipping_xavier_changed"] == "shrinks some layers further"
    fig = chapter.fig_layers(rows, P)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["explodes", "vanishes"]
    assert "norm, c = 1e-06" in [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close("all")


def test_cost_numbers_and_table():
    ratios = pd.DataFrame({"variant": ["norm", "agc", "norm", "agc"], "round": [0, 0, 1, 1],
                           "step_seconds": [1e-3, 2e-3, 3e-3, 4e-3],
                           "ratio": [1.0, 1.5, 1.2, 2.5], "extra_setup_steps": 0.0})
    n = chapter.cost_numbers(ratios, P)
    assert n["clipping_cost_agc"] == "2.00× (range 1.50–2.50)"
    assert n["clipping_timing_steps"] == "20 and 100"
    table = chapter.cost_table(ratios, {"norm": 1.0, "agc": 0.01}).data
    assert list(table["setting"]) == ["1", "0.01"]
    assert list(table["ms per step"]) == pytest.approx([2.0, 3.0])
    assert table.iloc[1, -1] == "2.00 [1.50, 2.50]"


def test_autoclip_thresholds_are_percentiles_of_the_past_norms():
    c = chapter.autoclip_thresholds([10.0, 2.0, 4.0, 100.0], 50.0)
    assert math.isnan(c[0]) and list(c[1:]) == [10.0, 6.0, 4.0]


def test_percentile_numbers_and_table(runs):
    for key in ("mlp", "rnn"):
        grown = fake_sweep({("percentile", 10.0): [(0.9, -1), (1.0, -1)],
                            ("percentile", 90.0): [(1.6, -1), (1.0, 3)]})
        runs[key] = pd.concat([runs[key], grown], ignore_index=True)
    Q = chapter.CHAPTER.parameters({"profile": "quick", "percentiles": [10.0, 90.0]}, {})
    n = chapter.percentile_numbers(runs, Q)
    assert n["clipping_rnn_pct_nblew"] == 2 and n["clipping_rnn_pct_ndiv"] == 1
    assert n["clipping_rnn_pct_nruns"] == 4 and n["clipping_pct_high"] == "90"
    # fake gradient norms equal the percentile: every threshold is that constant
    assert n["clipping_rnn_pct_c_first"] == "10" and n["clipping_rnn_pct_c_last_low"] == "10"
    table = chapter.percentile_table(runs, Q).data
    assert list(table["configuration"]) == ["MLP"] * 2 + ["RNN"] * 2
    assert list(table["blew up"][:2]) == ["0/2", "2/2"]


def test_long_numbers_read_the_sweep_budget_from_the_long_run():
    Q = chapter.CHAPTER.parameters({"profile": "quick", "rnn_steps": 4}, {})
    long = pd.concat([fake_run(1.0, 0.8, 0, grad=5.0), fake_run(0.5, 0.9, 1, grad=5.0)],
                     ignore_index=True).drop(columns="layer")
    long.loc[long.step == 0, "grad_norm"] = 50.0
    n = chapter.long_numbers(long, Q)
    # the sweep's budget: steps 0-4, whose last 10% is step 4 alone
    assert n["clipping_long_at_short"] == chapter.median_range([0.8 ** 4, 0.5 * 0.9 ** 4])
    assert n["clipping_long_below"] == "1/2" and n["clipping_first_grad_ratio"] == "10 [10, 10]"
    assert n["clipping_long_grad_low"] == "5"
    fig = chapter.fig_long(long, Q)
    assert fig.get_axes()[0].get_yscale() == "log"
    plt.close("all")


def test_drift_numbers_name_the_layer_that_moved(runs):
    smallest = min(P.agc_factors)
    runs["mlp"] = pd.concat([runs["mlp"], fake_sweep({("agc", smallest): [(1.0, 2),
                                                                          (0.5, -1)]})])
    drift = pd.DataFrame({
        "config": "mlp", "seed": 0, "step": [0, 0, 1, 1, 2, 2],
        "param": ["blocks.0.linear.weight", "readout.weight"] * 3,
        "matrix": True, "final": [False, True] * 3, "init_norm": [10.0, 2.0] * 3,
        "distance": [0.0, 0.0, 0.01, 200.0, 0.02, np.inf]})
    n = chapter.drift_numbers(drift, runs, P)
    assert n["clipping_mlp_drift_n"] == "1/2"  # seed 1 learned; seed 0 diverged
    assert n["clipping_mlp_drift_readout"] == "100"  # step 1: the last finite one
    assert n["clipping_mlp_drift_hidden"] == "0.1%"
    assert n["clipping_rnn_drift_readout"] == "–"  # no RNN run blew up


def test_setting_numbers_quote_the_parameters_and_the_runs_batch_sizes(runs):
    n = chapter.setting_numbers(runs["healthy"], P)
    assert n["clipping_mlp_lr"] == P.mlp_lr and n["clipping_causes_lr_div"] == "0/2"
    assert n["clipping_mlp_batch"] == 64 and n["clipping_rnn_batch"] == 32  # the defaults
    assert n["clipping_blow_up"] == "10" and n["clipping_long_c"] == "1"
