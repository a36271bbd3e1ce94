"""The optimization chapter's module: its cases, and the numbers, tables and figures it
makes from tiny runs of the page's sweeps (or from small hand-made tables)."""

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients.chapters import optimization as chapter
from exploding_gradients.data import ADDING_BASELINE_MSE
from exploding_gradients.remedies import SCHEDULES
from exploding_gradients.study.plots import check_legible

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: The quick profile, shrunk further: every sweep of the page takes milliseconds.
TINY = dict(profile="quick", width=8, deep_depth=3, deep_steps=3, steps=6, rnn_steps=4,
            rnn_hidden=4, rnn_seq_len=5, decay_rates=[0.1, 0.5], warmup_lrs=[0.1, 0.8],
            warmup_lengths=[0, 3], optimizer_lrs=[0.1], stop_factors=[2.0], timing_steps=4)


@pytest.fixture
def P():
    return chapter.CHAPTER.parameters(TINY, before={})


def test_the_cases_follow_the_parameters(P):
    cases = chapter.cases(P)
    assert list(cases) == ["deep", "regression", "inputs", "rnn"]
    assert cases["deep"].config["depth"] == 3 and cases["deep"].config["sigma_w"] == 2.0
    assert cases["rnn"].experiment == "rnn_training"
    assert cases["rnn"].label == "RNN ρ = 3, T = 5"
    assert cases["regression"].config["log_every"] == chapter.every(6) == 1
    for name, config, _ in cases.values():
        eg.REGISTRY[name].resolve(config)  # raises on any invalid value
    refs = chapter.references(P)
    assert refs["rnn"] == ADDING_BASELINE_MSE
    assert refs["deep"] == pytest.approx(math.log(4), rel=1e-6)  # uniform over 4 classes


def test_network_keeps_what_the_experiment_takes_without_lr_and_steps(P):
    net = chapter.network(chapter.cases(P)["regression"].config, "sharpness")
    assert net == dict(depth=4, width=8, activation="relu", init="he", task="regression")
    eg.REGISTRY["sharpness"].resolve(net)


def test_setup_numbers_format_floats_plainly(P):
    numbers = chapter.setup_numbers(P)
    assert numbers["opt_width"] == 8 and numbers["opt_deep_sigma_w"] == "2"
    assert numbers["opt_safe_lr"] == "0.01"


def _penalties(P):
    penalties = {}
    for key in chapter.PENALIZED:
        name, cfg, _ = chapter.cases(P)[key]
        grid = [dict(penalty="none", penalty_strength=0.0, weight_decay=0.0)]
        grid += [dict(penalty=k, penalty_strength=r / cfg["lr"], weight_decay=0.0)
                 for k in chapter.penalty_kinds(key) for r in P.decay_rates]
        grid += [dict(penalty="none", penalty_strength=0.0, weight_decay=r / cfg["lr"])
                 for r in P.decay_rates]
        penalties[key] = eg.sweep(name, grid, seeds=1, **cfg)
    return penalties


def test_penalties_share_the_unpenalized_runs_and_tabulate_by_shrink_per_step(P):
    penalties = _penalties(P)
    outs = chapter.penalty_outcomes(penalties, P)
    reg = outs["regression"]
    assert sorted(set(reg.remedy)) == ["decoupled", "l1", "l2"]  # "none" is each one's 0
    assert sorted(reg.rate.round(9).unique()) == [0.0, 0.1, 0.5]
    assert (reg.groupby("remedy").size() == 3).all()
    assert set(outs["rnn"].remedy) == {"l2", "decoupled"}
    table = chapter.penalty_table(penalties, P)
    assert list(table.columns) == ["configuration", "remedy", "none", "ηλ = 0.1", "ηλ = 0.5"]
    assert len(table) == 3 + 3 + 2
    assert table.iloc[:, 2:].map(lambda c: c in ("0/1", "1/1")).all().all()
    numbers = chapter.penalty_numbers(penalties, P)
    assert numbers["opt_pen_rates"] == "0.1, 0.5" and numbers["opt_pen_taus"] == "10, 2"
    assert numbers["opt_pen_rate_max"] == "0.5"
    assert numbers["opt_pen_deep_ndiv_pen"].endswith(" of 6")
    rnn = chapter.adamw_numbers(penalties, P)
    assert {"opt_rnn_none_grad", "opt_rnn_wd_lag", "opt_rnn_first_grad"} <= set(rnn)
    assert len(chapter.adamw_table(penalties, P)) == 1 + 2 + 2
    fig = chapter.fig_penalty(penalties, P)
    check_legible(fig)
    # three panels and the legend in the fourth, stacked two by two
    assert len(fig.axes) == 4 and not fig.axes[3].axison and fig.axes[3].get_legend()
    assert "$\\sigma_w$" in fig.axes[0].get_title()  # no literal underscore
    fig = chapter.fig_adamw(penalties, P)
    check_legible(fig)
    assert len(fig.axes) == 2
    plt.close("all")


def test_scale_table_uses_the_decay_time_scale(P):
    table = chapter.scale_table(P)
    assert list(table["1/(ηλ) (steps)"]) == ["10", "2"]
    assert table.iloc[1, 2] == f"{math.log(2 / math.sqrt(2)) / -math.log(0.5):.3g}"


def test_warmup_and_schedules_from_tiny_runs(P):
    cases = chapter.cases(P)
    reg = cases["regression"].config
    sharp = eg.run("sharpness", chapter.network(reg, "sharpness"), seeds=1)
    warm = eg.sweep("training", [{"lr": lr, "warmup_steps": w} for lr in P.warmup_lrs
                                 for w in P.warmup_lengths], seeds=1, **reg)
    safe = eg.run("training", reg, lr=P.safe_lr, seeds=1)
    deep_warm = eg.sweep("training", [{"warmup_steps": w} for w in [0, 3]], seeds=1,
                         **cases["deep"].config)
    numbers = chapter.warmup_numbers(sharp, warm, safe, deep_warm, P)
    stab = 2 / sharp["lambda_max"].iloc[0]
    assert numbers["opt_warm_ratios"] == f"{0.1 / stab:.2g}, {0.8 / stab:.2g}"
    assert numbers["opt_warm_w0_sentence"].startswith("without warmup, ")
    assert numbers["opt_warm_wmax_len"] == 3 and numbers["opt_warm_long"] == 1000
    assert numbers["opt_warm_deep"].startswith("0 steps: ")
    table = chapter.warmup_table(sharp, warm, P)
    assert len(table) == 4 and list(table["peak lr"]) == ["0.1", "0.1", "0.8", "0.8"]
    assert len(chapter.fig_warmup(sharp, warm, safe, P).axes) == 2

    sched = eg.sweep("training", [{"schedule": s} for s in SCHEDULES], seeds=1,
                     **{**reg, "lr": P.schedule_lr, "warmup_steps": 3})
    table = chapter.schedule_table(sched, P)
    assert list(table["schedule after warmup"]) == list(SCHEDULES)
    numbers = chapter.schedule_numbers(sched, P)
    assert set(numbers) == {f"opt_sched_{s}_{t}" for s in SCHEDULES
                            for t in ("spikes", "loss", "ndiv")}
    fig = chapter.fig_schedule(sched, P)
    lines = fig.axes[1].get_lines()  # the learning rate each schedule used: warmup first
    assert len(lines) == 3 and lines[0].get_ydata()[0] == pytest.approx(P.schedule_lr / 3)
    plt.close("all")


def test_largest_safe_learning_rate_per_warmup():
    out = pd.DataFrame({"warmup_steps": [0, 0, 0, 5, 5, 5], "lr": [0.1, 0.2, 0.4] * 2,
                        "diverged": [False, True, True, False, False, True]})
    assert chapter.largest_safe(out, 0) == 0.1 and chapter.largest_safe(out, 5) == 0.2
    assert np.isnan(chapter.largest_safe(out.assign(diverged=True), 0))


def test_optimizers_from_tiny_runs(P):
    optimizers = {}
    for key, (name, cfg, _) in chapter.cases(P).items():
        grid = [{"optimizer": o, "lr": lr} for o in (chapter.SGD_OF[key], *chapter.ADAPTIVE)
                for lr in P.optimizer_lrs]
        optimizers[key] = eg.sweep(name, grid, seeds=1, **cfg)
    table = chapter.optimizer_table(optimizers, P)
    assert len(table) == 4 * 3
    assert list(table.optimizer[:3]) == ["SGD + momentum", "Adam", "RMSprop"]
    numbers = chapter.optimizer_numbers(optimizers, P)
    assert numbers["opt_deep_sgd_div"] == table.iloc[0]["diverged over the grid"]
    assert numbers["opt_opt_lrs"] == "0.1"
    # Adam's first step is lr * sign(g) per weight, RMSprop's ten times that
    ratio = float(numbers["opt_rms_over_adam"].split(" ")[0])
    assert ratio == pytest.approx(10, rel=0.05)
    fig = chapter.fig_optimizers(optimizers, P)
    check_legible(fig)
    assert len(fig.axes) == 4 and len(fig.legends) == 1
    fig = chapter.fig_first_step(optimizers, P)
    check_legible(fig)
    assert len(fig.axes) == 1
    plt.close("all")


def test_the_long_runs_of_the_deep_network_say_whether_adam_learns_with_more_steps(P):
    P = chapter.CHAPTER.parameters({**TINY, "budget_steps": 6}, before={})
    budget = eg.sweep("training", [{"optimizer": "adam", "lr": 0.01, "init": "normal"},
                                   {"optimizer": "momentum", "lr": 0.01, "init": "he"}],
                      seeds=1, **{**chapter.cases(P)["deep"].config, "steps": 6,
                                  "log_every": P.deep_steps})
    curves = chapter.budget_curves(budget)
    assert sorted(curves.step.unique()) == [0, 3, 6]
    numbers = chapter.budget_numbers(budget, P)
    assert numbers["opt_budget_lr"] == "0.01" and numbers["opt_budget_steps"] == 6
    adam = curves[(curves.optimizer == "adam")].set_index("step").test_loss
    assert numbers["opt_budget_short"] == chapter.readable.number(adam[3], 3)
    assert numbers["opt_budget_long"] == chapter.readable.number(adam[6], 3)
    learned = adam[6] <= 0.9 * chapter.references(P)["deep"]
    assert numbers["opt_budget_learned"].startswith("learns" if learned else "has not")
    fig = chapter.fig_budget(budget, P)
    check_legible(fig)
    assert len(fig.legends) == 1
    plt.close("all")


def test_ranges_are_written_for_readers():
    assert chapter.med_range([1e8, 2e8, 5e8]) == "2 × 10⁸ [10⁸, 5 × 10⁸]"
    assert chapter.med_range([]) == "–" and chapter.med_range([0.5]) == "0.5"
    assert chapter.med_range([1, 2, 3], "{:.0f}") == "2 [1, 3]"


def test_false_alarms_are_stopped_runs_whose_unstopped_twin_survived():
    out = pd.DataFrame({"lr": [0.1] * 4, "seed": [0, 1, 0, 1],
                        "stop_factor": [0.0, 0.0, 2.0, 2.0],
                        "diverged": [False, True, False, False],
                        "stopped": [False, False, True, True]})
    alarms = chapter.false_alarms(out, ["lr"])
    assert list(alarms.false_alarm) == [True, False]
    assert chapter.factor_label(0.0) == "off" and chapter.factor_label(2.0) == "k = 2"


def test_early_stopping_from_tiny_runs(P):
    cases = chapter.cases(P)
    reg = cases["regression"].config
    factors = [0.0, *P.stop_factors]
    stop_mlp = eg.sweep("training", [{"lr": lr, "stop_factor": f} for lr in P.stop_lrs
                                     for f in factors], seeds=1, **{**reg, "log_every": 1})
    rnn_sgd = {**cases["rnn"].config, "optimizer": "sgd"}
    stop_rnn = eg.sweep("rnn_training", [{"stop_factor": f} for f in factors], seeds=1,
                        **{**rnn_sgd, "lr": P.rnn_sgd_lr, "log_every": 1})
    safe = eg.run("training", reg, lr=P.safe_lr, seeds=1)
    safe_rnn = eg.run("rnn_training", rnn_sgd, lr=P.safe_lr, seeds=1)
    table = chapter.stopping_table(stop_mlp, stop_rnn, P)
    assert list(table.run) == ["MLP, lr 0.1"] * 2 + ["MLP, lr 0.2"] * 2 + ["RNN, lr 0.1"] * 2
    assert list(table.threshold) == ["off", "k = 2"] * 3
    assert (table.loc[table.threshold == "off", "false alarms"] == "–").all()
    numbers = chapter.stopping_numbers(stop_mlp, stop_rnn, safe, safe_rnn, P)
    assert numbers["opt_stop_lrs"] == "0.1 and 0.2" and numbers["opt_stop_factors"] == "2"
    assert numbers["opt_stop_mlp_n"].endswith(" of 2")
    fig = chapter.fig_stopping(stop_mlp, stop_rnn, safe, safe_rnn, P)
    check_legible(fig)
    assert len(fig.axes) == 2 and fig.axes[1].get_title() == "RNN, plain SGD"
    plt.close("all")


def test_timing_tables_give_each_variant_its_ratio_over_rounds(P):
    costs = pd.DataFrame({"variant": ["Adam", "Adam", "L1 penalty", "L1 penalty"],
                          "round": [0, 1, 0, 1], "step_seconds": [2e-3, 3e-3, 1e-3, 1e-3],
                          "ratio": [2.0, 3.0, 1.0, 1.0]})
    assert chapter.ratio_text(costs, "Adam") == "2.50 [2.00, 3.00]"
    assert chapter.ratio_text(costs, "none") == "1.00 [1.00, 1.00]"
    table = chapter.timing_table(costs)
    assert list(table.variant) == ["none", "Adam", "L1 penalty"]
    assert table.iloc[0, 1] == "0.001"  # no remedy's time per step: step_seconds / ratio


def test_the_summary_quotes_the_measured_ratios():
    variants = ["L1 penalty", "L2 penalty", "decoupled weight decay", "warmup + cosine",
                "Adam", "RMSprop", "early stopping (checked every step)", "none, timed again"]
    costs = pd.DataFrame({"variant": variants, "round": 0, "step_seconds": 1e-3,
                          "ratio": np.linspace(1, 2, len(variants))})
    table = chapter.summary_table(costs)
    assert len(table) == 5
    assert table.loc[0, "time per step vs none"] == "1.00 / 1.14"
    numbers = chapter.timing_numbers(costs, chapter.CHAPTER.parameters({"profile": "quick"},
                                                                        before={}))
    assert numbers["opt_time_noise"] == "2.00" and numbers["opt_timing_repeat"] == 1
