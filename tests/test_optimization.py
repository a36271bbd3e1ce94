"""The analysis helpers of the optimization chapter (weight penalties, warmup, optimizers,
early stopping): run outcomes, spike counts, decay time scales, trivial-output loss."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import exploding_gradients as eg
from exploding_gradients import analysis
from exploding_gradients.experiments import get, make_data

TINY = dict(depth=2, width=8, steps=6, log_every=2, task="regression")


def test_run_outcomes_of_a_healthy_a_diverged_and_a_stopped_run():
    runs = eg.sweep("training", [{"lr": 0.01}, {"lr": 1e3}, {"lr": 1e3, "stop_factor": 2.0}],
                    seeds=2, **TINY)
    out = analysis.run_outcomes(runs, ["lr", "stop_factor"]).set_index(["lr", "stop_factor",
                                                                       "seed"])
    assert len(out) == 6
    healthy = out.xs(0.01, level="lr").iloc[0]
    assert not healthy["diverged"] and not healthy["stopped"]
    assert healthy["last_step"] == TINY["steps"]
    whole = runs[(runs.layer == 0) & (runs.lr == 0.01) & (runs.seed == 0)]
    assert healthy["final_loss"] == whole["loss"].iloc[-1]
    assert healthy["first_loss"] == whole["loss"].iloc[0]
    assert healthy["final_test_loss"] == whole["test_loss"].dropna().iloc[-1]
    assert healthy["first_update_ratio"] == whole["update_ratio"].iloc[0]
    blown = out[out.index.get_level_values("lr") == 1e3]
    diverged = blown[~blown["stopped"]]
    assert diverged["diverged"].all() and diverged["final_loss"].isna().all()
    assert diverged["final_test_loss"].isna().all() and (diverged["diverged_step"] >= 0).all()
    stopped = blown[blown["stopped"]]
    assert len(stopped) == 2 and not stopped["diverged"].any()
    assert np.isfinite(stopped["final_loss"]).all()  # the restored weights' loss
    assert (stopped["stopped_step"] <= diverged["diverged_step"].to_numpy()).all()


def test_run_outcomes_reads_rnn_tables_without_test_loss():
    runs = eg.run("rnn_training", cell="rnn", seq_len=5, hidden_size=4, steps=4, log_every=2,
                  seeds=2)
    out = analysis.run_outcomes(runs)
    assert list(out["seed"]) == [0, 1]
    assert out["first_test_loss"].isna().all() and out["first_update_ratio"].isna().all()
    assert (out["last_step"] == 4).all()


def test_outcome_summary_counts_and_ignores_diverged_values():
    outcomes = pd.DataFrame({
        "g": ["a", "a", "a", "b"], "seed": [0, 1, 2, 0],
        "diverged": [False, True, False, True], "diverged_step": [-1, 7, -1, 3],
        "stopped": [False, False, True, False], "final_loss": [1.0, np.nan, 3.0, np.nan]})
    s = analysis.outcome_summary(outcomes, ["g"], "final_loss").set_index("g")
    assert s.loc["a", "diverged"] == "1/3" and s.loc["a", "stopped"] == "1/3"
    assert s.loc["a", "median"] == 2.0 and s.loc["a", "min"] == 1.0 and s.loc["a", "max"] == 3.0
    assert s.loc["a", "median_diverged_step"] == 7
    assert s.loc["b", "n_diverged"] == 1 and math.isnan(s.loc["b", "median"])


def test_count_spikes():
    flat = np.ones(30)
    assert analysis.count_spikes(flat) == 0
    spiky = flat.copy()
    spiky[[12, 25]] = 5.0
    assert analysis.count_spikes(spiky, factor=3, window=10) == 2
    assert analysis.count_spikes(spiky, factor=3, window=10, start=20) == 1
    assert analysis.count_spikes(spiky, factor=6, window=10) == 0
    spiky[28] = np.inf
    assert analysis.count_spikes(spiky, factor=3, window=10, start=20) == 2


def test_decay_steps_matches_repeated_shrinking():
    lr, strength, factor = 0.1, 0.5, 3.0
    k = analysis.decay_steps(lr, strength, factor)
    assert (1 - lr * strength) ** k == pytest.approx(1 / factor)
    assert k == pytest.approx(math.log(factor) / (lr * strength), rel=0.03)  # ~ 1/(lr*lambda)
    assert analysis.decay_steps(0.1, 0.0, 2.0) == math.inf
    assert analysis.decay_steps(0.5, 2.0, 2.0) == 0.0
    assert analysis.decay_steps(1.0, 2.5, 2.0) == math.inf  # |1 - 2.5| > 1: L2 alone unstable


def test_decay_steps_agrees_with_the_training_loop():
    """Decoupled weight decay with a zero learning signal shrinks as predicted."""
    from exploding_gradients.remedies import Remedies

    w = torch.nn.Parameter(torch.ones(3, 3))
    remedies = Remedies(weight_decay=0.5)
    steps = math.ceil(analysis.decay_steps(0.1, 0.5, 2.0))
    for _ in range(steps):
        remedies.decay_([w], 0.1)
    assert w.detach().max().item() <= 0.5 < w.detach().max().item() / (1 - 0.05)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_constant_output_loss(task):
    config = {"task": task, "d_in": 8, "n_train": 64}
    loss = analysis.constant_output_loss(config)
    data = make_data(get("training").resolve(config))
    if task == "classification":
        assert loss == pytest.approx(math.log(data.d_out))
    else:
        assert loss == pytest.approx(0.5 * data.y_test.pow(2).mean().item())
