"""Hessian-vector products, power iteration and the learning-rate experiments."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import exploding_gradients as eg
from exploding_gradients import curvature
from exploding_gradients.data import Dataset
from exploding_gradients.engine.params import ConfigError

SMALL = dict(task="regression", depth=2, width=16, n_train=256, hessian_samples=256)


def _regression_data(n: int, d: int, dtype=torch.float64) -> Dataset:
    gen = torch.Generator().manual_seed(7)
    # Anisotropic inputs: column scales 3, 2, 1, ... give a clear gap between the top two
    # eigenvalues of X^T X / n, so power iteration converges in a few dozen steps.
    scales = torch.linspace(3.0, 0.5, d, dtype=dtype)
    x = torch.randn(n, d, generator=gen, dtype=dtype) * scales
    y = torch.randn(n, 1, generator=gen, dtype=dtype)
    return Dataset(x, y, x, y, "regression", 1)


def test_hvp_and_power_iteration_on_linear_regression_known_answer():
    """For f(x) = w.x + b and loss 0.5 * mean (f - y)^2 the Hessian is A^T A / n, A = [X 1].

    In float64 the only errors are the power iteration's and rounding.  The Rayleigh
    quotient's relative error after k steps is at most (lambda_2/lambda_1)^(2k) times a
    constant; with tol = 1e-12 on its relative change and a gap lambda_2/lambda_1 ~ 0.5,
    it is below 1e-10, and rounding in sums of 512 float64 products is ~1e-13.  So
    rel = 1e-8 is loose for a correct implementation, while a wrong Hessian (e.g. a
    missing 1/n, or the gradient outer product g g^T instead of H) is off by far more.
    """
    data = _regression_data(512, 6)
    model = torch.nn.Linear(6, 1).double()
    a = torch.cat([data.x_train, torch.ones(512, 1, dtype=torch.float64)], dim=1)
    hessian = a.T @ a / 512  # parameter order: weight (6), then bias (1)
    loss = data.loss(model(data.x_train), data.y_train)
    matvec, _ = curvature.hessian_vector_product(loss, curvature.flat_params(model))
    v = torch.randn(7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(matvec(v), hessian @ v, rtol=1e-12, atol=1e-12)

    start = torch.randn(7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    eig, loss_value, _ = curvature.sharpness(model, data, 512, start, max_iters=500, tol=1e-12)
    exact = torch.linalg.eigvalsh(hessian)
    assert eig.converged
    assert eig.value == pytest.approx(exact[-1].item(), rel=1e-8)
    assert eig.value > 1.5 * exact[-2].item()  # the gap assumed above
    assert loss_value == pytest.approx(loss.item())


def test_sharpness_in_float32_matches_exact_eigenvalue():
    """The same known answer through the float32 path the experiments use.

    Tolerance 1e-4 relative: float32 sums of 2048 products carry relative rounding
    ~1e-6 per entry, and the default stopping rule (tol = 1e-4 on the change of the
    Rayleigh quotient, which converges like (lambda_2/lambda_1)^(2k)) leaves an error well
    below 1e-4 for this gap.
    """
    data64 = _regression_data(2048, 8)
    data = Dataset(*(t.float() for t in (data64.x_train, data64.y_train, data64.x_test,
                                         data64.y_test)), "regression", 1)
    model = torch.nn.Linear(8, 1)
    a = torch.cat([data64.x_train, torch.ones(2048, 1, dtype=torch.float64)], dim=1)
    exact = torch.linalg.eigvalsh(a.T @ a / 2048)[-1].item()
    start = torch.randn(9, generator=torch.Generator().manual_seed(0))
    eig, _, _ = curvature.sharpness(model, data, 2048, start, max_iters=200, tol=1e-7)
    assert eig.value == pytest.approx(exact, rel=1e-4)
    assert eig.residual < 1e-2


def test_top_eigenvalue_of_an_indefinite_matrix_is_the_most_positive():
    """Power iteration alone finds -5 (largest magnitude); the shifted rerun must find 3."""
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(3),
                                       dtype=torch.float64))
    matrix = q @ torch.diag(torch.tensor([-5.0, 3.0, 1.0, -0.5], dtype=torch.float64)) @ q.T
    start = torch.ones(4, dtype=torch.float64)
    plain = curvature.power_iteration(lambda v: matrix @ v, start, max_iters=1000, tol=1e-13)
    assert plain.value == pytest.approx(-5.0, rel=1e-6)
    top = curvature.top_eigenvalue(lambda v: matrix @ v, start, max_iters=1000, tol=1e-13)
    assert top.value == pytest.approx(3.0, rel=1e-6)


@pytest.mark.parametrize("factor, stable", [(0.95, True), (1.05, False)])
def test_gradient_descent_on_a_quadratic_is_stable_iff_lr_below_two_over_lambda(factor,
                                                                                stable):
    """The theory the chapter tests, on the case where it is exact (full-batch GD, MSE,
    linear model): lr = factor * 2 / lambda_max, with lambda_max from power iteration.
    Within 5 % of the boundary the top mode's factor |1 - lr lambda| is 0.95 or 1.05 per
    step, so 800 steps shrink or grow it by ~e^-40 or e^+39: unambiguous."""
    data = _regression_data(256, 5)
    model = torch.nn.Linear(5, 1).double()
    start = torch.ones(6, dtype=torch.float64)
    lam = curvature.sharpness(model, data, 256, start, max_iters=500, tol=1e-12)[0].value
    opt = torch.optim.SGD(model.parameters(), lr=factor * 2 / lam)
    for _ in range(800):
        opt.zero_grad()
        loss = data.loss(model(data.x_train), data.y_train)
        loss.backward()
        opt.step()
    final = data.loss(model(data.x_train), data.y_train).item()
    assert (final < 10.0) == stable, final


def test_same_seed_gives_bit_identical_results_and_seeds_differ():
    kwargs = dict(**SMALL, steps=15, lr_ratios=[0.5, 4.0], seeds=2, use_cache=False)
    a = eg.run("lr_boundary", **kwargs)
    b = eg.run("lr_boundary", **kwargs)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    lam = a.groupby("seed")["lambda_max"].first()
    assert lam[0] != lam[1]
    s1 = eg.run("sharpness", **SMALL, steps=10, lr_ratio=1.0, measure_every=5, seeds=1,
                use_cache=False)
    s2 = eg.run("sharpness", **SMALL, steps=10, lr_ratio=1.0, measure_every=5, seeds=1,
                use_cache=False)
    pd.testing.assert_frame_equal(s1, s2, check_exact=True)


def test_lr_boundary_runs_are_the_training_experiment():
    """Same model, data and minibatches as ``training`` with optimizer='sgd' at that lr,
    and the same lambda_max as ``sharpness``: the chapter's experiments describe one
    network, bit for bit (also with unnormalized inputs, which change the data)."""
    small = {**SMALL, "input_scale_spread": 4.0}
    runs = eg.run("lr_boundary", **small, steps=12, lr_ratios=[0.7, 30.0], log_every=4)
    sharp = eg.run("sharpness", **small)
    assert runs["lambda_max"].iloc[0] == sharp["lambda_max"].iloc[0]
    for ratio, sub in runs.groupby("lr_ratio"):
        lr = float(sub["lr"].iloc[0])
        assert lr == ratio * 2 / sub["lambda_max"].iloc[0]
        ref = eg.run("training", **{k: v for k, v in small.items() if k != "hessian_samples"},
                     optimizer="sgd", lr=lr, steps=12, log_every=4)
        ref = ref[ref.layer == 0]
        for column in ["loss", "grad_norm", "test_loss"]:
            np.testing.assert_array_equal(sub[column].to_numpy(), ref[column].to_numpy())
        assert sub["diverged_step"].iloc[0] == ref["diverged_step"].iloc[0]
    # 30 x 2/lambda_max diverges, 0.7 x does not: the table records both outcomes.
    assert set(runs.groupby("lr_ratio")["diverged_step"].first() >= 0) == {True, False}


def test_sharpness_trajectory_follows_the_sgd_run():
    df = eg.run("sharpness", **SMALL, steps=20, lr_ratio=0.5, measure_every=10)
    assert df["step"].tolist() == [0, 10, 20]
    assert df["step_lr"].iloc[0] == pytest.approx(0.5 * 2 / df["lambda_max"].iloc[0])
    assert (df["diverged_step"] == -1).all() and df["converged"].all()
    assert df["hessian_loss"].iloc[-1] < df["hessian_loss"].iloc[0]
    assert ((df["readout_share"] > 0) & (df["readout_share"] <= 1)).all()


@pytest.mark.parametrize("experiment, overrides, named", [
    ("sharpness", {"lr": -0.1}, "'lr'"),
    ("sharpness", {"lr": float("nan")}, "'lr'"),
    ("sharpness", {"lr": "fast"}, "'lr'"),
    ("sharpness", {"lr_ratio": -1.0}, "'lr_ratio'"),
    ("lr_boundary", {"lr_ratios": [0.5, -2.0]}, "'lr_ratios'"),
    ("lr_boundary", {"lr_ratios": [math.nan]}, "'lr_ratios'"),
    ("training", {"lr": -0.1}, "'lr'"),
])
def test_bad_learning_rate_is_refused_before_any_compute(isolated_cache, experiment,
                                                         overrides, named):
    with pytest.raises(ConfigError, match=named):
        eg.run(experiment, seeds=1, **overrides)
    with pytest.raises(ConfigError, match=named):
        eg.sweep(experiment, [{"depth": 2}, overrides], seeds=1)
    assert not isolated_cache.exists(), "nothing may run when any point is invalid"


@pytest.mark.parametrize("name", ["sharpness", "lr_boundary"])
@pytest.mark.parametrize("bad", [dict(task="images"), dict(task="sort"),
                                 dict(architecture="cnn", task="classification")])
def test_the_curvature_experiments_refuse_a_task_of_another_architecture(name, bad):
    with pytest.raises(eg.ConfigError, match="parameter 'task'.*allowed"):
        eg.REGISTRY[name].resolve(bad)
