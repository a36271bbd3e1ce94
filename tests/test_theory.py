import math

import pytest

from exploding_gradients import theory


@pytest.mark.parametrize("sigma_w", [0.5, 1.0, math.sqrt(2), 2.0])
def test_relu_chi1_is_half_sigma_w_squared(sigma_w):
    # E[relu'(z)^2] = P(z > 0) = 1/2 for any variance: an exact result.
    assert theory.chi(("relu"), sigma_w, q=3.7) == pytest.approx(sigma_w**2 / 2, rel=1e-9)


def test_relu_length_map_is_exact():
    # E[relu(sqrt(q) z)^2] = q / 2.
    assert theory.length_map("relu", 1.3, 0.2, 2.0) == pytest.approx(1.3**2 + 0.04, rel=1e-9)


def test_critical_points():
    assert theory.critical_sigma_w("relu") == pytest.approx(math.sqrt(2), abs=1e-5)
    # tanh with sigma_b = 0: chi_1 = sigma_w^2 at q* = 0, so the boundary is sigma_w = 1.
    assert theory.critical_sigma_w("tanh") == pytest.approx(1.0, abs=5e-3)
    assert theory.chi1("tanh", 0.8, 0.0) == pytest.approx(0.64, abs=1e-6)


def test_fixed_point_satisfies_the_length_map():
    q = theory.q_fixed_point("tanh", 2.0, 0.3)
    assert theory.length_map("tanh", 2.0, 0.3, q) == pytest.approx(q, rel=1e-9)


def test_relu_without_a_fixed_point_is_reported_unbounded():
    assert theory.q_fixed_point("relu", math.sqrt(2), 0.0, q0=1.0) == pytest.approx(1.0)
    assert theory.q_fixed_point("relu", 1.8, 0.0) == math.inf


def test_layer_profile_accumulates_chi_backwards():
    prof = theory.layer_profile("relu", 1.6, 0.0, depth=5)
    assert prof["log_delta_sq"].iloc[-1] == 0.0
    assert prof["log_delta_sq"].iloc[0] == pytest.approx(4 * math.log(1.6**2 / 2))


def test_depth_scale():
    assert theory.depth_scale(1.0) == math.inf
    assert theory.depth_scale(math.exp(-0.1)) == pytest.approx(10.0)


def test_saturating_activation_at_large_variance():
    # tanh'(h)^2 = sech^4(h) integrates to 4/3 over the real line, so for large q
    # E[sech^4(sqrt(q) z)] -> (4/3) / sqrt(2 pi q). A coarse quadrature misses this spike.
    q = 400.0
    expected = 4 / 3 / math.sqrt(2 * math.pi * q)
    assert theory.chi("tanh", 1.0, q) == pytest.approx(expected, rel=1e-3)
