import math

import numpy as np
import pytest
import torch

from exploding_gradients import theory
from exploding_gradients.init import lsuv_
from exploding_gradients.models.mlp import MLP, build_mlp
from exploding_gradients.monitor import detect_spikes
from exploding_gradients.remedies import Remedies


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


def test_residual_moments_start_with_the_textbook_factor_then_grow_faster():
    m = theory.residual_relu_moments(1.0, 10)
    assert list(m["layer"]) == list(range(1, 11))
    assert m["q"].iloc[0] == 1.0 and m["mean"].iloc[0] == 0.0
    # No mean yet in the first block: exactly 1 + s^2.
    assert m["forward_factor"].iloc[0] == pytest.approx(2.0)
    # Then the branch's positive mean adds a cross term: every later factor is larger.
    assert (m["forward_factor"].iloc[1:] > 2.0).all()
    assert (np.diff(m["mean"]) > 0).all()
    np.testing.assert_allclose(m["preact_var"], 2 * m["q"])
    np.testing.assert_allclose(m["q"].iloc[1:].to_numpy() / m["q"].iloc[:-1].to_numpy(),
                               m["forward_factor"].iloc[:-1])


def test_residual_moments_asymptotic_factor_solves_the_fixed_point_equation():
    # For large depth q grows by g per block with g = 1 + s^2 + 2 s^2 / (pi (sqrt g - 1)).
    s = 1.0
    g = theory.residual_relu_moments(s, 400)["forward_factor"].iloc[-1]
    assert g == pytest.approx(1 + s**2 + 2 * s**2 / (math.pi * (math.sqrt(g) - 1)), rel=1e-6)


def test_residual_moments_without_branch_are_constant_and_bad_input_is_refused():
    m = theory.residual_relu_moments(0.0, 5, q0=3.0)
    np.testing.assert_allclose(m["q"], 3.0)
    np.testing.assert_allclose(m["forward_factor"], 1.0)
    with pytest.raises(ValueError):
        theory.residual_relu_moments(0.5, 0)


def test_residual_moments_match_a_wide_simulated_network():
    """The recursion, including the mean term, against a wide random residual stack."""
    gen = torch.Generator().manual_seed(0)
    config = dict(width=2048, depth=8, activation="relu", normalization="none",
                  residual=True, residual_scale=0.5, init="he", sigma_w=1.0, sigma_b=0.0)
    model = build_mlp(config, d_in=2048, d_out=1, generator=gen)
    x = torch.randn(64, 2048, generator=gen)
    seen = []
    hooks = [b.linear.register_forward_hook(lambda m, i, o: seen.append(i[0].pow(2).mean()))
             for b in model.blocks]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    predicted = theory.residual_relu_moments(0.5, 8)["q"].to_numpy()
    np.testing.assert_allclose(torch.stack(seen).numpy(), predicted, rtol=0.1)
    # The textbook law (1 + s^2)^l is clearly below the measurement at the last block.
    assert torch.stack(seen)[-1].item() > 1.2 * 1.25**7


def test_lsuv_prediction_relu_is_he_and_tanh_explodes_backwards():
    sw, chi = theory.lsuv_prediction("relu")
    assert sw == pytest.approx(math.sqrt(2), rel=1e-6)
    assert chi == pytest.approx(1.0, rel=1e-6)
    sw, chi = theory.lsuv_prediction("tanh")
    assert 1.5 < sw < 1.7 and 1.1 < chi < 1.25


def test_lsuv_prediction_matches_the_scale_lsuv_actually_sets():
    gen = torch.Generator().manual_seed(1)
    model = MLP(512, 512, 6, 1, activation="tanh")
    for lin in model.hidden_layers():
        torch.nn.init.orthogonal_(lin.weight, generator=gen)
        torch.nn.init.zeros_(lin.bias)
    lsuv_(model, torch.randn(512, 512, generator=gen))
    sw, _ = theory.lsuv_prediction("tanh")
    # Deep layers see unit-variance inputs, so their weight scale is the prediction.
    measured = model.hidden_layers()[-1].weight.std().item() * math.sqrt(512)
    assert measured == pytest.approx(sw, rel=0.05)


def test_decay_steps_matches_repeated_shrinking():
    lr, strength, factor = 0.1, 0.5, 3.0
    k = theory.decay_steps(lr, strength, factor)
    assert (1 - lr * strength) ** k == pytest.approx(1 / factor)
    assert k == pytest.approx(math.log(factor) / (lr * strength), rel=0.03)  # ~ 1/(lr*lambda)
    assert theory.decay_steps(0.1, 0.0, 2.0) == math.inf
    assert theory.decay_steps(0.5, 2.0, 2.0) == 0.0
    assert theory.decay_steps(1.0, 2.5, 2.0) == math.inf  # |1 - 2.5| > 1: L2 alone unstable


def test_decay_steps_agrees_with_the_training_loop():
    """Decoupled weight decay with a zero learning signal shrinks as predicted."""
    w = torch.nn.Parameter(torch.ones(3, 3))
    remedies = Remedies(weight_decay=0.5)
    steps = math.ceil(theory.decay_steps(0.1, 0.5, 2.0))
    for _ in range(steps):
        remedies.decay_([w], 0.1)
    assert w.detach().max().item() <= 0.5 < w.detach().max().item() / (1 - 0.05)


def test_spike_warning_lead_matches_a_simulated_geometric_climb():
    """Flag at the first norm above factor x the start, overflow at the first Inf."""
    growth, factor = 3.0, 10.0
    with np.errstate(over="ignore"):
        norms = np.float32(growth) ** np.arange(100, dtype=np.float32)
    overflow = int(np.argmax(~np.isfinite(norms)))
    series = np.concatenate([np.ones(20), norms])  # a flat history for the running median
    flag = detect_spikes(series, factor, window=20)[0] - 20
    lead = theory.spike_warning_lead(growth, factor)
    assert overflow - flag == pytest.approx(lead, abs=1.5)
    assert theory.FLOAT32_MAX == float(np.finfo(np.float32).max)
    with pytest.raises(ValueError):
        theory.spike_warning_lead(1.0, factor)


def test_depth_gain_and_the_residual_law():
    assert theory.depth_gain(2.0, 1) == 1.0 and theory.depth_gain(2.0, 5) == 4.0
    depths = np.array([2.0, 10.0, 50.0])
    assert np.allclose(theory.residual_gain(depths ** -0.5, depths),
                       (1 + 1 / depths) ** ((depths - 1) / 2))
    assert theory.residual_gain(1.0, 7) == theory.depth_gain(theory.residual_chi(1.0), 7) == 8.0
    # The first block's input has zero mean, so there the forward factor is 1 + s^2 too;
    # later blocks add the branch's mean and grow faster.
    for s in [0.25, 1.0]:
        factors = theory.residual_relu_moments(s, 3).forward_factor
        assert factors.iloc[0] == pytest.approx(theory.residual_chi(s))
        assert factors.iloc[-1] > theory.residual_chi(s)


def test_batch_norm_grows_the_relu_gradient_by_its_mean_field_factor():
    """A deep batch-normalized He ReLU network at initialization: the gradient grows by
    about sqrt(pi / (pi - 1)) per layer towards the input (Yang et al. 2019)."""
    import exploding_gradients as eg
    from exploding_gradients.study.growth import growth_per_layer

    table = eg.run("signal_propagation", dict(activation="relu", init="he",
                                              normalization="batch", depth=15, width=64,
                                              batch_size=128), seeds=1)
    measured = growth_per_layer(table, "delta_norm")["growth"].iloc[0]
    assert measured == pytest.approx(theory.BATCHNORM_RELU_CHI ** 0.5, rel=0.05)


def test_penalty_shrink_compounds_the_per_step_factor():
    # 100 steps of (1 - lr * lambda) = (1 - 1e-4): about 1% of a weight removed
    assert theory.penalty_shrink(0.1, 1e-3, 100) == pytest.approx(1 - (1 - 1e-4) ** 100,
                                                                  rel=1e-3)
    # momentum 0.9 passes the penalty's gradient on ten times over: ten times the rate
    assert theory.penalty_shrink(0.01, 1e-3, 50, momentum=0.9) == pytest.approx(
        1 - math.exp(-0.01 * 1e-3 * 50 * 10))
    assert theory.penalty_shrink(0.1, 0.0, 100) == 0.0


def test_batch_norm_relu_rate_is_yang_et_als_large_batch_limit():
    import exploding_gradients as eg
    from exploding_gradients.study import growth

    assert theory.BATCHNORM_RELU_CHI == pytest.approx(1.4669, abs=1e-4)
    # A finite network comes close from below (finite width and batch), whatever sigma_w.
    for init in ["he", "xavier"]:
        runs = eg.run("signal_propagation", dict(depth=12, width=128, batch_size=256, init=init,
                                                 activation="relu", normalization="batch"),
                      seeds=2)
        rate = growth.growth_per_layer(runs, "delta_norm")["growth"] ** 2
        assert (rate / theory.BATCHNORM_RELU_CHI - 1).abs().max() < 0.1


def test_gradient_entries_by_depth_is_input_gradient_by_depth_per_entry():
    depths = [1, 3, 7, 20]
    entries = theory.gradient_entries_by_depth("tanh", 1.5, 0.1, 20, 32, 4, 50, 1.3, 0.5)
    direct = theory.input_gradient_by_depth("tanh", 1.5, 0.1, depths, 32, 4, 1.3, 0.5)
    picked = entries.set_index("depth").loc[depths]
    assert picked["delta1_norm"].to_numpy() == pytest.approx(direct["delta1_norm"].to_numpy(),
                                                             rel=1e-12)
    assert picked["q_out"].to_numpy() == pytest.approx(direct["q_out"].to_numpy(), rel=1e-12)
    assert entries["delta_entry"].to_numpy() == pytest.approx(
        entries["delta1_norm"].to_numpy() / math.sqrt(32 * 50))
    assert entries["weight_entry"].to_numpy() == pytest.approx(
        entries["delta_entry"].to_numpy() * math.sqrt(32 * 1.3))
    # ReLU: the gradient doubles per layer at chi_1 = 2 once the output error dominates
    relu = theory.gradient_entries_by_depth("relu", 2.0, 0.0, 30, 64, 1, 64)
    assert relu["weight_entry"].iloc[29] / relu["weight_entry"].iloc[28] == pytest.approx(
        2.0, rel=1e-6)


def test_a_weight_gradient_entry_is_the_backpropagated_norm_over_the_width():
    """dL/dW^1 sums one product per sample: in a measured network its mean square is
    E||delta^1||^2 E[x^2] / N, the step from delta1_norm to weight_entry."""
    import exploding_gradients as eg

    width = 128
    layers = eg.run("signal_propagation", depth=4, width=width, batch_size=64,
                    activation="relu", init="normal", sigma_w=math.sqrt(2), seeds=8)
    first = layers[layers.layer == 1]
    weight_ms = np.mean((first.grad_norm.to_numpy() / width) ** 2)  # width x width entries
    delta_ms = np.mean(first.delta_norm.to_numpy() ** 2)
    assert weight_ms == pytest.approx(delta_ms / width, rel=0.15)  # inputs have E[x^2] = 1


# --------------------------------------------------------------------------- review fixes

def test_fitted_growth_is_the_measurements_estimator_applied_to_the_profile():
    from exploding_gradients.study import growth

    prof = theory.layer_profile("tanh", 1.0, 0.0, 20)
    slope = growth.log_slope(prof["layer"], prof["log_delta_sq"] / 2)
    assert theory.fitted_growth("tanh", 1.0, 0.0, 20) == pytest.approx(math.exp(-slope))
    # constant chi (ReLU): the fit and the uniform mean agree
    assert theory.fitted_growth("relu", 1.6, 0.0, 20) == pytest.approx(
        theory.predicted_growth("relu", 1.6, 0.0, 20), rel=1e-12)


def test_fitted_growth_matches_a_measured_tanh_network_where_the_uniform_mean_does_not():
    """tanh at sigma_w = 1, depth 20, width 256, 8 seeds: measured 0.9315 (sd 0.004 over
    seeds, so the mean is known to 0.15 %); fitted prediction 0.9328, uniform mean 0.9175."""
    import exploding_gradients as eg
    from exploding_gradients.study import growth

    df = eg.run("signal_propagation", depth=20, width=256, activation="tanh", sigma_w=1.0,
                seeds=8)
    measured = growth.growth_per_layer(df, "delta_norm")["growth"].mean()
    assert measured == pytest.approx(theory.fitted_growth("tanh", 1.0, 0.0, 20), rel=0.005)
    assert abs(measured / theory.predicted_growth("tanh", 1.0, 0.0, 20) - 1) > 0.01


def test_tanh_boundary_is_exact_and_a_jump_of_chi_1_is_refused():
    assert theory.zero_fixed_point_sigma_w("tanh") == 1.0
    assert math.isnan(theory.zero_fixed_point_sigma_w("relu"))
    assert math.isnan(theory.zero_fixed_point_sigma_w("gelu"))  # not odd
    assert theory.critical_sigma_w("tanh") == 1.0
    # with a bias the boundary moves off the zero fixed point and is found by bisection
    assert theory.chi1("tanh", theory.critical_sigma_w("tanh", 0.3), 0.3) == pytest.approx(
        1.0, abs=1e-3)
    with pytest.raises(ValueError, match="jumps from 0.58.* to 1.1"):
        theory.critical_sigma_w("gelu", low=1.45, high=1.6)


def test_a_bistable_length_map_depends_on_where_the_iteration_starts():
    # GELU, sigma_b = 0, sigma_w = 1.6: unstable fixed point q_u ~ 0.56
    assert theory.q_fixed_point("gelu", 1.6, 0.0, q0=0.1) < 1e-6
    assert theory.q_fixed_point("gelu", 1.6, 0.0, q0=1.0) == math.inf
    assert theory.chi1("gelu", 1.6, 0.0, q0=0.1) == pytest.approx(1.6**2 / 4, rel=1e-4)
    assert theory.chi1("gelu", 1.6, 0.0, q0=1.0) > 1.0


@pytest.mark.parametrize("sigma_w", [0.9, 1.2, 1.7])
def test_relu_gradient_scale_is_one_at_every_sigma_w(sigma_w):
    # exact: chi = sigma_w^2 / 2 and q^{l+1} / q^l = sigma_w^2 / 2 cancel layer by layer
    prof = theory.gradient_scale_profile("relu", sigma_w, 0.0, 10)
    assert prof["log_gsc"].to_numpy() == pytest.approx(0.0, abs=1e-9)


def test_tanh_gradient_scale_grows_by_sqrt_chi_1_once_q_is_at_its_fixed_point():
    prof = theory.gradient_scale_profile("tanh", 2.0, 0.0, 30)
    steps = -np.diff(prof["log_gsc"].to_numpy())[5:]  # q^l settled after a few layers
    assert steps == pytest.approx(math.log(theory.chi1("tanh", 2.0, 0.0)) / 2, rel=2e-3)


def test_relu_log_length_variance_matches_a_direct_simulation():
    """ln ||h^l||^2 of inputs through He-initialized ReLU layers of width 128: 200
    independent networks of 20 inputs each.  The per-layer variance is 5 / 128 = 0.039 to
    first order (the next order adds about 2 %; the sampling error of the mean over 4
    layers is about 1.5 %); the chi^2 part alone (2 / 128) or the ReLU part alone (3 / 128)
    would be 40 % or more away."""
    gen = torch.Generator().manual_seed(0)
    nets, inputs, width, layers = 200, 20, 128, 4
    h = torch.randn(nets, width, inputs, generator=gen, dtype=torch.float64)
    logs = [torch.log((h**2).sum(1))]
    for _ in range(layers):
        w = torch.randn(nets, width, width, generator=gen, dtype=torch.float64)
        h = (w * math.sqrt(2 / width)) @ torch.relu(h)
        logs.append(torch.log((h**2).sum(1)))
    steps = torch.diff(torch.stack(logs), dim=0).reshape(layers, -1)
    per_layer = steps.var(dim=1).mean().item()
    assert per_layer == pytest.approx(theory.relu_log_length_variance(width), rel=0.06)
def test_layer_norm_chi_is_the_lsuv_factor_and_matches_a_layer_normed_network():
    for activation in ["relu", "tanh", "gelu"]:
        assert theory.layer_norm_chi(activation) == pytest.approx(
            theory.lsuv_prediction(activation)[1], rel=1e-9)
    assert theory.layer_norm_chi("relu") == pytest.approx(1.0, abs=1e-9)
    assert theory.layer_norm_chi("tanh") == pytest.approx(1.178, abs=1e-3)
    import exploding_gradients as eg
    from exploding_gradients.study.growth import growth_per_layer

    # The weight scale cancels: a too-large and a too-small sigma_w give the same rate.
    for sigma_w in [0.5, 3.0]:
        table = eg.run("signal_propagation", dict(activation="tanh", init="normal",
                                                  sigma_w=sigma_w, normalization="layer",
                                                  depth=20, width=256), seeds=2)
        rate = growth_per_layer(table, "delta_norm")["growth"] ** 2
        assert rate.mean() == pytest.approx(theory.layer_norm_chi("tanh"), rel=0.02)


def test_rnn_critical_sigma_w_makes_the_mean_field_factor_one():
    assert theory.rnn_critical_sigma_w(0.0) == 1.0
    values = [theory.rnn_critical_sigma_w(s, tol=1e-4) for s in [0.1, 1.0, 2.0]]
    assert values == sorted(values)
    assert values[1] == pytest.approx(1.856, abs=2e-3)
    assert theory.mean_field_growth(values[2], 2.0) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError):
        theory.rnn_critical_sigma_w(-1.0)
def test_dropout_multiplies_the_per_layer_gradient_factor_by_one_over_keep():
    """Measured: the backward growth of ||dL/dh|| across He-initialized ReLU layers with
    dropout p in training mode, against sqrt(chi_1 / (1 - p)) with chi_1 = 1 (He)."""
    assert theory.dropout_chi_factor(0.0) == 1.0
    assert theory.dropout_chi_factor(0.5) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        theory.dropout_chi_factor(1.0)
    p, depth, width = 0.3, 12, 512
    gen = torch.Generator().manual_seed(0)
    model = MLP(16, width, depth, 4, dropout=p, generator=gen)
    for block in model.blocks:
        torch.nn.init.normal_(block.linear.weight, std=math.sqrt(2 / block.linear.in_features),
                              generator=gen)
        torch.nn.init.zeros_(block.linear.bias)
    model.train()
    x = torch.randn(256, 16, generator=gen)
    hidden = []
    h = x
    for block in model.blocks:
        h = block(h)
        h.retain_grad()
        hidden.append(h)
    model.readout(h).pow(2).sum().backward()
    norms = np.log([float(t.grad.norm()) for t in hidden])
    slope = -np.polyfit(np.arange(depth), norms, 1)[0]  # growth towards the input
    assert math.exp(slope) == pytest.approx(theory.dropout_chi_factor(p) ** 0.5, rel=0.05)


def test_xiong_scaling_matches_a_residual_stream_read_through_a_layer_norm():
    """Xiong et al.'s mechanism, measured: a pre-LN stream adds one unit-variance branch
    per block, the final layer norm divides the gradient by the stream's size, so the
    gradient reaching the last branch falls as 1/sqrt(depth) once depth >> 1."""
    gen = torch.Generator().manual_seed(0)
    d, head = 4096, torch.randn(4096, generator=gen)

    def last_branch_grad(depth):
        stream = torch.randn(depth, d, generator=gen).sum(0).requires_grad_(True)
        (torch.nn.functional.layer_norm(stream, (d,)) @ head).backward()
        return stream.grad.norm().item()  # dL/d(last branch output) = dL/d(stream)

    measured = last_branch_grad(400) / last_branch_grad(25)
    assert measured == pytest.approx(theory.xiong_depth_scaling("pre", 400, 25), rel=0.05)
    assert theory.xiong_depth_scaling("post", [4, 64], 4).tolist() == [1.0, 1.0]
    ratio = theory.xiong_depth_scaling("post", 64, 4) / theory.xiong_depth_scaling("pre", 64, 4)
    assert ratio == pytest.approx(4.0)
