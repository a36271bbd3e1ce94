"""The causes page: its twins come from the remedy matrix's one list of causes, and its
table, numbers and figure from their runs."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients.chapters import causes as chapter
from exploding_gradients.study.plots import check_legible
from exploding_gradients.study.remedy_matrix import CAUSES, cause_config

P = chapter.CHAPTER.parameters({"profile": "quick"}, before={})


def test_the_measurement_at_initialization_takes_the_same_network():
    mlp = cause_config("weights_large", steps=10, depth=30, width=128, n_train=2048,
                       batch_size=64)
    assert chapter.init_config(CAUSES["weights_large"], mlp) == dict(
        depth=30, width=128, activation="relu", init="normal", sigma_w=2.0, batch_size=64)
    rnn = cause_config("long_rnn", steps=10)
    assert chapter.init_config(CAUSES["long_rnn"], rnn) == dict(
        cell="rnn", spectral_radius=3.0, hidden_size=32, seq_len=40)


def test_twin_change_says_what_the_healthy_twin_changes():
    assert chapter.twin_change(CAUSES["weights_large"]) == "init=he"
    assert chapter.twin_change(CAUSES["tanh_chaotic"]) == "sigma_w=1"
    assert chapter.twin_change(CAUSES["long_rnn"]) == "seq_len=5"


def test_amplification_is_input_end_over_loss_end():
    mlp = pd.DataFrame({"seed": [0, 0, 0, 1, 1, 1], "layer": [1, 2, 3] * 2,
                        "delta_norm": [100.0, 10, 1, 1000, 10, 1]})
    assert chapter.log10_amplification(mlp, {}) == pytest.approx(2.5)  # median of 2 and 3
    rnn = pd.DataFrame({"seed": [0] * 4, "lag": [0, 1, 2, 3],
                        "grad_norm": [1.0, 10, 1000, 0]})  # lag T: the initial state
    assert chapter.log10_amplification(rnn, {"seq_len": 3}) == pytest.approx(3)


def training(losses: dict) -> pd.DataFrame:
    """A training-like table: per seed, its losses (a NaN makes the run diverge there)."""
    rows = []
    for seed, values in losses.items():
        bad = [i for i, v in enumerate(values) if not np.isfinite(v)]
        rows += [{"seed": seed, "step": i, "layer": 0, "loss": v, "grad_norm": 1.0,
                  "diverged_step": bad[0] if bad else -1} for i, v in enumerate(values)]
    return pd.DataFrame(rows)


def twins() -> dict:
    at_init = pd.DataFrame({"seed": [0, 0], "layer": [1, 2], "delta_norm": [1e3, 1.0]})
    flat = at_init.assign(delta_norm=1.0)
    return {
        ("weights_large", "failing"): ({}, at_init, training({0: [1.0, math.nan],
                                                               1: [1.0, 0.5]})),
        ("weights_large", "healthy"): ({}, flat, training({0: [2.0, 1.0], 1: [2.0, 0.5]})),
        ("lr_large", "failing"): ({}, flat, training({0: [1.0, math.nan]})),
        ("lr_large", "healthy"): ({}, flat, training({0: [1.0, 0.9]})),
    }


def test_twin_table_numbers_and_display():
    table = chapter.twin_table(twins())
    assert list(table["cause"]) == ["weights_large"] * 2 + ["lr_large"] * 2
    assert list(table["chapter"]) == ["initialization"] * 2 + ["learning_rate"] * 2
    assert list(table["log10 amplification"]) == pytest.approx([3, 0, 0, 0])
    assert list(table["diverged"]) == ["1/2", "0/2", "1/1", "0/1"]
    # Over the runs that did not diverge; inf when none is left.
    assert list(table["final/initial loss"]) == pytest.approx([0.5, 0.375, math.inf, 0.9])
    assert chapter.numbers(table, P) == {
        "causes_n": 2, "causes_n_diverged": 2, "causes_n_visible": 1,
        "causes_visible": CAUSES["weights_large"].label,
        "causes_invisible": CAUSES["lr_large"].label,
        "causes_diverged": f"{CAUSES['weights_large'].label}; {CAUSES['lr_large'].label}"}
    html = chapter.display(table, P).to_html()
    assert '<a href="initialization.html">initialization</a>' in html
    assert "healthy (init=he)" in html and CAUSES["lr_large"].label in html
    assert "diverged" in html and "inf" not in html and "nan" not in html
    assert ">1000<" in html  # the amplification of 10^3, written for readers
    fig = chapter.fig_causes(table, P)
    check_legible(fig)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == [f"{chapter.tex(CAUSES['weights_large'].label)}\nvs init=he",
                     f"{CAUSES['lr_large'].label}\nvs lr=0.01"]
    assert "_" not in ticks[0].replace(r"$\sigma_w$", "")  # no literal σ_w underscore
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "log"]
    assert len(fig.legends) == 1  # one legend for both panels
    plt.close(fig)


def test_the_pages_loop_on_tiny_runs():
    runs = {}
    for name in ["weights_small", "long_rnn"]:
        cause = CAUSES[name]
        for variant, change in [("failing", {}), ("healthy", cause.healthy)]:
            config = {**cause_config(name, steps=2, depth=3, width=8, n_train=64,
                                     batch_size=16), **change}
            at_init = eg.run(chapter.AT_INIT[cause.experiment],
                             chapter.init_config(cause, config), seeds=1)
            runs[name, variant] = config, at_init, eg.run(cause.experiment, config, seeds=1)
    table = chapter.twin_table(runs).set_index(["cause", "variant"])
    # Xavier makes a ReLU network's gradient vanish towards the input; He keeps it.
    assert table.loc[("weights_small", "failing"), "log10 amplification"] < \
        table.loc[("weights_small", "healthy"), "log10 amplification"]
    # A long sequence at spectral radius 3 explodes far more than a short one.
    assert table.loc[("long_rnn", "failing"), "log10 amplification"] > \
        table.loc[("long_rnn", "healthy"), "log10 amplification"] + 1
