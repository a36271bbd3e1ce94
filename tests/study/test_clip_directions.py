"""The clipping chapter's helpers: directions of clipped gradients, run summaries, and
Pascanu et al.'s average-gradient-norm statistic."""

import math

import numpy as np
import pytest

import exploding_gradients as eg
from exploding_gradients.study import clip_directions as clipping

MLP = dict(depth=3, width=16, init="normal", sigma_w=2.0, task="regression", optimizer="sgd",
           lr=0.05, steps=5, log_every=1)
RNN = dict(cell="rnn", seq_len=8, hidden_size=8, spectral_radius=3.0, optimizer="sgd",
           lr=0.01, steps=3)


def test_the_gradient_is_the_one_the_unclipped_run_logs_at_that_step():
    for name, config in [("training", MLP), ("rnn_training", RNN)]:
        run = eg.run(name, config, seeds=1)
        whole = run[run["layer"] == 0] if "layer" in run else run
        for step in [0, 2]:
            rows = clipping.clip_directions(name, config, seed=0, methods={"norm": [1e9]},
                                            after_steps=step)
            norm = math.sqrt((rows["raw_norm"] ** 2).sum())
            logged = whole.loc[whole["step"] == step, "grad_norm"].iloc[0]
            assert norm == pytest.approx(logged, rel=1e-5)


def test_norm_clipping_keeps_the_direction_and_every_layer_ratio():
    rows = clipping.clip_directions("training", MLP, seed=0, methods={"norm": [0.01, 1e9]})
    summary = clipping.direction_summary(rows)
    assert np.allclose(summary["cosine"], 1.0, atol=1e-9)
    clipped = summary[summary["threshold"] == 0.01]
    total = math.sqrt((rows[rows["threshold"] == 0.01]["raw_norm"] ** 2).sum())
    assert clipped["norm_ratio"].iloc[0] == pytest.approx(0.01 / total, rel=1e-4)
    factors = rows[rows["threshold"] == 0.01].eval("clipped_norm / raw_norm")
    assert np.allclose(factors, factors.iloc[0], rtol=1e-5)  # one factor for every layer
    untouched = summary[summary["threshold"] == 1e9]
    assert untouched["fraction_changed"].iloc[0] == 0 and untouched["norm_ratio"].iloc[0] == 1


def test_value_clipping_turns_the_gradient_more_the_smaller_the_threshold():
    rows = clipping.clip_directions("training", MLP, seed=0,
                                    methods={"value": [1e-4, 1e-2, 1e9]})
    summary = clipping.direction_summary(rows).set_index("threshold")
    assert summary.loc[1e9, "cosine"] == pytest.approx(1.0)
    assert summary.loc[1e-4, "cosine"] < summary.loc[1e-2, "cosine"] < 1.0
    assert summary.loc[1e-4, "fraction_changed"] > summary.loc[1e-2, "fraction_changed"]
    assert rows["layer"].dropna().astype(int).tolist() == [1, 1, 2, 2, 3, 3] * 3


def test_agc_caps_each_hidden_unit_and_leaves_the_final_layer_alone():
    lam = 1e-3
    rows = clipping.clip_directions("rnn_training", RNN, seed=0, methods={"agc": [lam]})
    final = rows[rows["final"]]
    assert len(final) == 2 and np.allclose(final["clipped_norm"], final["raw_norm"])
    hidden = rows[~rows["final"]]
    # each unit is capped at lam * max(||W_unit||, 1e-3), so the tensor at
    # lam * sqrt(||W||^2 + units * 1e-6) <= lam * sqrt(||W||^2 + numel * 1e-6)
    bound = lam * np.sqrt(hidden["weight_norm"] ** 2 + hidden["numel"] * 1e-6)
    assert (hidden["clipped_norm"] <= bound * (1 + 1e-5)).all()
    assert (hidden["clipped_norm"] < hidden["raw_norm"]).any()


def test_a_diverged_gradient_gives_nan_not_an_error():
    config = {**MLP, "lr": 50.0, "steps": 30}
    run = eg.run("training", config, seeds=1)
    step = int(run["diverged_step"].iloc[0])
    assert step >= 0
    rows = clipping.clip_directions("training", config, seed=0, methods={"value": [1.0]},
                                    after_steps=step)
    assert clipping.direction_summary(rows)["cosine"].isna().all()


def test_clip_directions_refuses_other_experiments():
    with pytest.raises(ValueError, match="training"):
        clipping.clip_directions("signal_propagation", {}, 0, {"norm": [1.0]})


def test_weight_drift_replays_the_clipped_run_and_measures_each_tensor():
    for name, config in [("training", {**MLP, "clip": "agc", "clip_threshold": 1e-3}),
                         ("rnn_training", {**RNN, "clip": "norm", "clip_threshold": 0.1})]:
        run = eg.run(name, config, seeds=1)
        whole = run[run["layer"] == 0] if "layer" in run else run
        drift = clipping.weight_drift(name, config, seed=0)
        losses = drift.groupby("step").loss.first()
        assert np.array_equal(losses.to_numpy(), whole["loss"].to_numpy())  # the same run
        start = drift[drift.step == 0]
        assert (start.distance == 0).all() and (drift.step.max() == config["steps"])
        assert start.final.sum() == 2 and start.matrix.sum() >= 2  # readout weight and bias
    # AGC with a tiny factor: hidden matrices move by at most lr * lambda * their norm per step
    moved = clipping.weight_drift("training", {**MLP, "clip": "agc",
                                                       "clip_threshold": 1e-3}, seed=0)
    hidden = moved[moved.matrix & ~moved.final & (moved.step == MLP["steps"])]
    assert (hidden.distance <= MLP["steps"] * MLP["lr"] * 1e-3 * hidden.init_norm * 1.01).all()


def test_weight_drift_of_a_diverging_run_ends_where_it_diverged():
    config = {**MLP, "lr": 50.0, "steps": 30}
    drift = clipping.weight_drift("training", config, seed=0)
    step = int(drift["diverged_step"].iloc[0])
    assert step >= 0 and drift.step.max() == step
    with pytest.raises(ValueError, match="training"):
        clipping.weight_drift("signal_propagation", {}, 0)
