"""The recurrence experiments: tables, reproducibility, validation and one theory bound."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import exploding_gradients as eg
from exploding_gradients import theory
from exploding_gradients.data import ADDING_BASELINE_MSE, adding_batch
from exploding_gradients.experiments import recurrent
from exploding_gradients.models import rnn
from exploding_gradients.study import growth, outcomes

SMALL = dict(seq_len=12, hidden_size=16, batch_size=4)


def test_rnn_gradients_table_has_one_row_per_lag():
    df = eg.run("rnn_gradients", cell="rnn", seeds=2, **SMALL)
    assert list(df.columns[:2]) == ["seed", "lag"]
    assert len(df) == 2 * 13  # lags 0 .. seq_len (seq_len is the initial state h_0)
    assert sorted(df.lag.unique()) == list(range(13))
    assert {"grad_norm", "state_rms", "spectral_radius_measured", "sigma_max",
            "sigma_w"} <= set(df.columns)
    assert (df.grad_norm > 0).all() and np.isfinite(df.grad_norm).all()


@pytest.mark.parametrize("cell", rnn.CELLS)
def test_spectral_radius_is_applied_to_every_gate_block(cell):
    module = rnn.build_cell(cell, 3, 10, 0.7, torch.Generator().manual_seed(0))
    blocks = rnn.recurrent_blocks(module)
    assert len(blocks) == rnn.GATES[cell]
    for block in blocks:
        radius = torch.linalg.eigvals(block).abs().max().item()
        assert radius == pytest.approx(0.7, rel=1e-5)
    df = eg.run("rnn_gradients", cell=cell, spectral_radius=0.7, **SMALL)
    assert df.spectral_radius_measured.iloc[0] == pytest.approx(0.7, rel=1e-9)
    # sigma_max of a Gaussian matrix is about twice its spectral radius, never below it
    assert df.sigma_max.iloc[0] > 0.7


def test_forget_bias_sets_only_the_lstm_forget_gate_and_draws_nothing():
    plain = rnn.build_cell("lstm", 3, 10, 1.0, torch.Generator().manual_seed(0))
    biased = rnn.build_cell("lstm", 3, 10, 1.0, torch.Generator().manual_seed(0),
                            forget_bias=2.0)
    for name, p in plain.named_parameters():
        if name != "bias_ih":
            assert torch.equal(p, getattr(biased, name)), name
    # PyTorch's gate order is input, forget, cell, output: only the second block moves.
    assert torch.all(biased.bias_ih[10:20] == 2.0)
    assert torch.all(biased.bias_ih[:10] == 0) and torch.all(biased.bias_ih[20:] == 0)
    with pytest.raises(ValueError, match="forget_bias"):
        rnn.build_cell("gru", 3, 10, 1.0, torch.Generator().manual_seed(0), forget_bias=1.0)
    # A larger forget bias keeps more of the gradient per step.
    df = eg.sweep("rnn_gradients", [{"forget_bias": b} for b in [0.0, 3.0]], cell="lstm",
                  **SMALL)
    factor = growth.growth_per_lag(df, ["forget_bias"]).groupby("forget_bias").growth.mean()
    assert factor[3.0] > factor[0.0]


def test_same_seed_gives_bit_identical_results():
    kw = dict(use_cache=False, seeds=2)
    for cell in rnn.CELLS:
        a = eg.run("rnn_gradients", cell=cell, **SMALL, **kw)
        b = eg.run("rnn_gradients", cell=cell, **SMALL, **kw)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    t = dict(seq_len=6, hidden_size=8, steps=8, batch_size=4, log_every=4, **kw)
    pd.testing.assert_frame_equal(eg.run("rnn_training", **t), eg.run("rnn_training", **t),
                                  check_exact=True)
    g = eg.run("rnn_gradients", **SMALL, **kw)
    assert not np.array_equal(g[g.seed == 0].grad_norm, g[g.seed == 1].grad_norm)


@pytest.mark.parametrize("name, overrides, named", [
    ("rnn_gradients", {"seq_len": 0}, "seq_len"),
    ("rnn_gradients", {"cell": "transformer"}, "cell"),
    ("rnn_gradients", {"spectral_radius": -1.0}, "spectral_radius"),
    ("rnn_training", {"seq_len": 1}, "seq_len"),  # the adding problem needs two halves
    ("rnn_training", {"cell": "lstmx"}, "cell"),
    ("rnn_training", {"optimizer": "lbfgs"}, "optimizer"),
    ("rnn_training", {"cell": "gru", "forget_bias": 1.0}, "forget_bias"),
    ("rnn_gradients", {"forget_bias": 1.0}, "forget_bias"),
])
def test_bad_input_fails_by_name_before_compute(name, overrides, named, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("computed before validating")

    monkeypatch.setattr(recurrent, "build_cell", boom)
    with pytest.raises(eg.ConfigError, match=named):
        eg.run(name, **overrides)


def test_gradient_vanishes_no_slower_than_sigma_max_per_step():
    """||dL/dh_{T-k}|| <= sigma_max^k ||dL/dh_T|| for a tanh RNN (an exact bound).

    h_t = tanh(a_t), a_t = W h_{t-1} + U x_t + b, so for every sequence in the batch
    dL/dh_{t-1} = W^T (tanh'(a_t) * dL/dh_t) and, as |tanh'| <= 1 and ||W^T|| = sigma_max,
    ||dL/dh_{t-1}|| <= sigma_max ||dL/dh_t||; the batch's Frobenius norm obeys the same
    inequality row by row.  Applying it k times gives the bound.  With spectral radius 0.3
    sigma_max is about 0.6 < 1 (Pascanu et al.'s sufficient condition for vanishing).  The
    computation is in float64, so the only slack needed is rounding (relative 1e-9).  The
    test can fail: gradients read at the wrong lags (e.g. in reversed order) grow with k,
    and a sigma_max computed wrongly (e.g. as the spectral radius 0.3, which is below the
    measured decay factor at small lags) breaks the bound.
    """
    df = eg.run("rnn_gradients", cell="rnn", spectral_radius=0.3, seq_len=40, hidden_size=32,
                input_std=0.1, seeds=3)
    for _, g in df.groupby("seed"):
        smax = g.sigma_max.iloc[0]
        assert smax < 1
        ref = g.grad_norm.iloc[0]
        bound = ref * smax ** g.lag.to_numpy(dtype=float)
        assert (g.grad_norm.to_numpy() <= bound * (1 + 1e-9)).all()
        # With small inputs tanh is nearly linear and the decay rate approaches the
        # spectral radius, which lies well below sigma_max: the bound is not vacuous.
        factor = growth.growth_per_lag(g, min_lag=10)["growth"].iloc[0]
        assert 0.2 < factor < smax
        assert factor == pytest.approx(0.3, rel=0.15)


def test_one_unit_model_matches_closed_form_and_finite_differences():
    # w = 0: x_t = b for every t >= 1, so the loss is (b - 0.7)^2 and dL/db = 2 (b - 0.7).
    loss, dw, db = theory.one_unit_model(0.0, np.array([-1.0, 0.7, 2.0]))
    np.testing.assert_allclose(loss, [2.89, 0.0, 1.69], atol=1e-12)
    np.testing.assert_allclose(db, [-3.4, 0.0, 2.6], atol=1e-12)
    # elsewhere the exact gradient equals central differences
    for w, b in [(3.0, -1.0), (8.0, -3.0), (6.0, -3.5)]:
        _, dw, db = theory.one_unit_model(w, b)
        eps = 1e-6
        loss = theory.one_unit_model
        fd_w = (loss(w + eps, b)[0] - loss(w - eps, b)[0]) / 2 / eps
        fd_b = (loss(w, b + eps)[0] - loss(w, b - eps)[0]) / 2 / eps
        assert float(dw) == pytest.approx(float(fd_w), rel=1e-5)
        assert float(db) == pytest.approx(float(fd_b), rel=1e-5)


def test_one_unit_cliff_gradient_grows_with_the_saddle_slope():
    """On the basin boundary the gradient grows by lambda = w sigma'(x_u) per step."""
    short, long = theory.one_unit_cliff(8.0, 20), theory.one_unit_cliff(8.0, 40)
    assert long["loss_left"] - long["loss_right"] > 10  # a jump, not a slope
    per_step = (long["peak_grad"] / short["peak_grad"]) ** (1 / 20)
    assert per_step == pytest.approx(long["saddle_slope"], rel=0.03)
    assert long["saddle_slope"] > 1
    assert math.isnan(theory.one_unit_cliff(3.0, 20)["saddle_slope"])  # w < 4: no saddle


def test_adding_problem_is_deterministic_and_correct():
    x, y = adding_batch(16, 10, torch.Generator().manual_seed(3))
    x2, y2 = adding_batch(16, 10, torch.Generator().manual_seed(3))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    marks = x[:, :, 1]
    assert torch.equal(marks.sum(dim=0), torch.full((16,), 2.0))
    assert torch.equal(marks[:5].sum(dim=0), torch.ones(16))  # one in each half
    torch.testing.assert_close((x[:, :, 0] * marks).sum(dim=0), y[:, 0])


def test_diverging_rnn_training_is_a_result_not_a_crash():
    df = eg.run("rnn_training", cell="rnn", seq_len=20, hidden_size=16, spectral_radius=3.0,
                optimizer="sgd", lr=1e5, steps=30, batch_size=8, seeds=2)
    assert (df["diverged_step"] >= 0).all()
    assert set(df["cause"]) <= {"nan_loss", "inf_loss", "nan_grad", "inf_grad"}
    assert df.groupby("seed").step.max().max() < 30
    summary = outcomes.run_outcomes(df, tail=0.1)
    assert summary.diverged.all() and summary.final_loss.isna().all()


def test_short_adding_problem_is_learned():
    df = eg.run("rnn_training", cell="rnn", seq_len=4, hidden_size=16, steps=150, lr=0.01,
                batch_size=32, log_every=50)
    assert (df.diverged_step == -1).all()
    assert df.loss.tail(15).mean() < 0.3 * ADDING_BASELINE_MSE
    assert df.lag_ratio.notna().sum() == 4  # steps 0, 50, 100, 150
