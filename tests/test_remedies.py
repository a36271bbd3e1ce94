"""Remedies: each one does what its paper says, and the defaults change nothing."""

import math

import pytest
import torch
from torch import nn

import exploding_gradients as eg
from exploding_gradients.init import lsuv_
from exploding_gradients.models.mlp import MLP
from exploding_gradients.remedies import (
    AdaGC,
    PercentileClip,
    Remedies,
    SkipRule,
    ZClip,
    adaptive_clip_grad_,
    unitwise_norm,
)


def _with_grads(seed=0):
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(5, 3)
    for p in layer.parameters():
        p.data = torch.randn(p.shape, generator=gen)
        p.grad = 10 * torch.randn(p.shape, generator=gen)
    return layer


def test_agc_clips_each_unit_to_clip_factor_times_its_weight_norm():
    layer = _with_grads()
    w, g = layer.weight.detach().clone(), layer.weight.grad.clone()
    gb = layer.bias.grad.clone()
    adaptive_clip_grad_(layer.parameters(), clip_factor=0.05)
    for unit in range(3):  # per output unit (row) of the matrix
        limit = 0.05 * max(w[unit].norm().item(), 1e-3)
        expected = g[unit] * min(1.0, limit / g[unit].norm().item())
        torch.testing.assert_close(layer.weight.grad[unit], expected)
    # a vector is one unit: the whole bias is clipped to 0.05 * ||b||
    assert layer.bias.grad.norm().item() == pytest.approx(0.05 * layer.bias.norm().item())
    assert torch.nn.functional.cosine_similarity(layer.bias.grad, gb, dim=0) > 0.9999


def test_agc_leaves_small_gradients_and_uses_eps_for_zero_weights():
    layer = _with_grads()
    layer.weight.grad.mul_(1e-6)
    small = layer.weight.grad.clone()
    adaptive_clip_grad_(layer.weight, clip_factor=0.05)
    assert torch.equal(layer.weight.grad, small)
    zero = nn.Parameter(torch.zeros(4, 2))
    zero.grad = torch.ones(4, 2)
    adaptive_clip_grad_([zero], clip_factor=0.1, eps=1e-3)
    assert unitwise_norm(zero.grad).flatten().tolist() == pytest.approx([1e-4] * 4)


def test_norm_clipping_keeps_the_direction_and_value_clipping_turns_it():
    layer = _with_grads()
    g = torch.cat([p.grad.flatten() for p in layer.parameters()])
    Remedies(clip="norm", clip_threshold=1.0).clip_(list(layer.parameters()), [])
    by_norm = torch.cat([p.grad.flatten() for p in layer.parameters()])
    assert by_norm.norm().item() == pytest.approx(1.0, rel=1e-4)
    assert torch.nn.functional.cosine_similarity(by_norm, g, dim=0) > 0.9999
    layer = _with_grads()
    Remedies(clip="value", clip_threshold=1.0).clip_(list(layer.parameters()), [])
    by_value = torch.cat([p.grad.flatten() for p in layer.parameters()])
    assert by_value.abs().max().item() <= 1.0
    assert torch.nn.functional.cosine_similarity(by_value, g, dim=0) < 0.99


def test_agc_in_the_loop_skips_the_final_layer():
    layer, final = _with_grads(0), _with_grads(1)
    before = final.weight.grad.clone()
    params = list(layer.parameters()) + list(final.parameters())
    Remedies(clip="agc", clip_threshold=0.01).clip_(params, list(final.parameters()))
    assert torch.equal(final.weight.grad, before)
    ratio = unitwise_norm(layer.weight.grad) / unitwise_norm(layer.weight.detach())
    assert ratio.flatten().tolist() == pytest.approx([0.01] * 3)  # every unit was clipped


def test_schedules():
    warm = Remedies(warmup_steps=4)
    assert [warm.lr_factor(s, 100) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    cos = Remedies(schedule="cosine")
    assert cos.lr_factor(0, 100) == 1.0
    assert cos.lr_factor(50, 100) == pytest.approx(0.5)
    assert cos.lr_factor(99, 100) < 0.001
    step = Remedies(schedule="step")
    assert [step.lr_factor(s, 100) for s in (0, 49, 50, 74, 75)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01])


def test_penalties_and_decoupled_decay():
    layer = _with_grads()
    w = layer.weight.detach().clone()
    assert Remedies(penalty="l1", penalty_strength=0.1).penalty_term(
        layer.parameters()).item() == pytest.approx(0.1 * w.abs().sum().item())
    assert Remedies(penalty="l2", penalty_strength=0.1).penalty_term(
        layer.parameters()).item() == pytest.approx(0.05 * w.pow(2).sum().item())
    assert Remedies().penalty_term(layer.parameters()) == 0.0
    bias = layer.bias.detach().clone()
    Remedies(weight_decay=0.5).decay_(list(layer.parameters()), lr=0.1)
    torch.testing.assert_close(layer.weight.detach(), w * 0.95)
    assert torch.equal(layer.bias.detach(), bias)  # biases are not decayed


TINY = dict(depth=3, width=16, n_train=128, steps=20, log_every=5, batch_size=16)


def test_a_clip_that_never_triggers_changes_nothing_bit_for_bit():
    plain = eg.run("training", TINY, use_cache=False)
    clipped = eg.run("training", TINY, clip="norm", clip_threshold=1e9, use_cache=False)
    assert plain.equals(clipped)


def test_clipping_bounds_the_update_of_an_exploding_run():
    config = dict(TINY, init="normal", sigma_w=2.0, depth=10, lr=0.1, optimizer="sgd")
    plain = eg.run("training", config, seeds=2, use_cache=False)
    assert (plain.groupby("seed").diverged_step.first() >= 0).all()
    clipped = eg.run("training", config, seeds=2, clip="norm", clip_threshold=1.0,
                     use_cache=False)
    assert (clipped.diverged_step == -1).all()
    assert clipped[clipped.layer == 0].grad_norm.max() > 1.0  # logged before clipping


def test_early_stopping_restores_the_best_weights_instead_of_diverging():
    config = dict(TINY, init="normal", sigma_w=2.0, depth=10, lr=0.1, optimizer="sgd")
    stopped = eg.run("training", config, stop_factor=10.0, use_cache=False)
    assert stopped.diverged_step.iloc[0] == -1
    assert stopped.stopped_step.iloc[0] >= 0
    assert stopped.cause.iloc[0].startswith("stopped_")
    last = stopped[stopped.layer == 0].iloc[-1]
    assert math.isfinite(last.loss) and math.isfinite(last.test_loss)


def test_lsuv_gives_every_hidden_layer_unit_output_variance():
    gen = torch.Generator().manual_seed(0)
    model = MLP(8, 32, 6, 2, activation="tanh")
    eg.init.initialize(model, "lsuv", "tanh", gen)
    x = torch.randn(256, 8, generator=gen) * 5
    variances = lsuv_(model, x)
    assert variances == pytest.approx([1.0] * 6, abs=0.02)
    out = eg.run("signal_propagation", depth=5, width=16, init="lsuv", use_cache=False)
    assert out.preact_var.to_list() == pytest.approx([1.0] * 5, abs=0.02)


def test_rnn_training_takes_the_same_remedies():
    config = dict(cell="rnn", spectral_radius=3.0, seq_len=10, hidden_size=8, steps=10,
                  log_every=5, lr=0.01)
    clipped = eg.run("rnn_training", config, clip="norm", clip_threshold=0.5,
                     warmup_steps=5, use_cache=False)
    assert clipped.step_lr.iloc[0] == pytest.approx(0.002)
    assert clipped.lag_ratio.notna().sum() == 3
    assert clipped.diverged_step.iloc[0] == -1


# --------------------------------------------------------------------------- any shape

@pytest.mark.parametrize("conv", [nn.Conv1d(3, 4, 3), nn.Conv2d(3, 4, 3), nn.Conv3d(3, 4, 3)],
                         ids=["conv1d", "conv2d", "conv3d"])
def test_agc_follows_the_unit_wise_rule_on_convolution_kernels(conv):
    """A unit of a convolution is an output channel: its kernel (in x k x ...)."""
    gen = torch.Generator().manual_seed(1)
    for p in conv.parameters():
        p.grad = 5 * torch.randn(p.shape, generator=gen)
    w, g = conv.weight.detach().clone(), conv.weight.grad.clone()
    assert adaptive_clip_grad_(conv.parameters(), clip_factor=0.01)
    for unit in range(4):
        limit = 0.01 * max(w[unit].norm().item(), 1e-3)
        norm = g[unit].norm().item()
        expected = g[unit] * (limit / norm) if norm > limit else g[unit]
        torch.testing.assert_close(conv.weight.grad[unit], expected)
    assert unitwise_norm(w).shape == (4,) + (1,) * (w.ndim - 1)


# --------------------------------------------------------------------------- spike remedies

def _grad_sequence(steps=40, seed=0):
    """A small model and a sequence of gradients with occasional spikes."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    grads = []
    for t in range(steps):
        scale = 20.0 if t % 13 == 12 else 1.0
        grads.append([scale * torch.randn(p.shape, generator=gen) for p in model.parameters()])
    return model, grads


def _total(params):
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item()


def test_percentile_clip_is_autoclip():
    """Against the ``autoclip`` package's global QuantileClip (Seetharaman et al. 2020)."""
    from autoclip.torch import QuantileClip

    model, grads = _grad_sequence()
    twin = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    ours, theirs = PercentileClip(90), QuantileClip(list(twin.parameters()), quantile=0.9,
                                                    history_length=10_000,
                                                    global_threshold=True)
    clipped_any = False
    for step_grads in grads:
        for p, q, g in zip(model.parameters(), twin.parameters(), step_grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        params = list(model.parameters())
        clipped_any |= ours(params, _total(params))
        theirs.step()
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)
    assert clipped_any


def test_zclip_follows_its_published_rule():
    """ZClip (Kumar et al. 2025): after a warmup of three norms (mean 2, variance 2/3), a
    norm of 10 has z = 8/0.8165 = 9.80 > 2.5: it is clipped to mean + 2.5^2 std / z."""
    rule = ZClip(z=2.5, alpha=0.5, warmup=3)
    p = nn.Parameter(torch.zeros(1))
    for norm in (1.0, 2.0, 3.0):
        p.grad = torch.tensor([norm])
        assert not rule([p], norm)
    assert rule.mean == 2.0 and rule.var == pytest.approx(2 / 3)
    p.grad = torch.tensor([10.0])
    assert rule([p], 10.0)
    std = (2 / 3) ** 0.5
    z = 8 / (std + 1e-6)
    target = 2 + 2.5 * std / (z / 2.5)
    assert p.grad.item() == pytest.approx(target * 10 / (10 + 1e-6), rel=1e-6)
    mean = 0.5 * 2 + 0.5 * target  # the EMA takes the clipped value
    assert rule.mean == pytest.approx(mean)
    assert rule.var == pytest.approx(0.5 * (2 / 3) + 0.5 * (target - mean) ** 2)
    p.grad = torch.tensor([2.0])  # an ordinary norm is left alone
    assert not rule([p], 2.0) and p.grad.item() == 2.0


def test_adagc_with_adam_is_pytorch_optimizers_adagc():
    """Against ``pytorch_optimizer.AdaGC`` (Wang et al. 2025), which is Adam with AdaGC's
    per-tensor clipping built in: with no weight decay the trajectories agree."""
    from pytorch_optimizer import AdaGC as Reference

    model, grads = _grad_sequence(steps=30)
    twin = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    twin.load_state_dict(model.state_dict())
    rule = AdaGC(lambda_rel=1.05, beta=0.98, warmup=5, lambda_abs=1.0)
    ours = torch.optim.Adam(model.parameters(), lr=1e-2, eps=1e-8)
    theirs = Reference(twin.parameters(), lr=1e-2, warmup_steps=5, weight_decay=0.0)
    clipped_any = False
    for step_grads in grads:
        for p, q, g in zip(model.parameters(), twin.parameters(), step_grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        params = list(model.parameters())
        clipped_any |= rule(params, _total(params))
        ours.step()
        theirs.step()
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
    assert clipped_any


def test_skip_rule_nonfinite_and_zscore_as_olmo_core():
    never = SkipRule("none")
    assert not never(math.nan, math.inf)
    finite_only = SkipRule("nonfinite")
    assert finite_only(1.0, math.inf) and finite_only(math.nan, 1.0)
    assert not finite_only(1e30, 1e30)
    rule = SkipRule("zscore", window=40, threshold=6.0)
    gen = torch.Generator().manual_seed(0)
    values = (1 + 0.1 * torch.randn(60, generator=gen)).tolist()
    judged = [rule(v, v) for v in values[:19]]
    assert not any(judged) and rule(100.0, 100.0) is not None  # not judged before 20 values
    rule = SkipRule("zscore", window=40, threshold=6.0)
    for v in values[:30]:
        rule(v, 1.0 + 0.01 * v)
    assert rule(1.0, 10.0)  # a gradient-norm outlier
    assert rule(-5.0, 1.0)  # both sides: a loss that falls off a cliff too
    assert not rule(1.05, 1.01)
    assert len(rule.losses) == 33 and len(SkipRule("zscore", window=5).losses) == 0
    with pytest.raises(ValueError, match="window >= 2"):
        SkipRule("zscore", window=1)


SPIKY = dict(depth=3, width=8, n_train=128, batch_size=16, steps=30, log_every=5)


def test_skipping_keeps_a_diverging_run_alive_and_says_so():
    bad = dict(SPIKY, sigma_w=3.0, lr=0.5, optimizer="sgd", task="regression")
    plain = eg.run("training", bad, seeds=2)
    assert (plain.groupby("seed").diverged_step.first() >= 0).all()
    skipped = eg.run("training", bad, seeds=2, skip="nonfinite")
    steps = skipped[skipped.layer == 0]
    assert (steps.diverged_step == -1).all() and steps.step.max() == SPIKY["steps"]
    assert steps.skipped.sum() > 0 and set(steps.skipped.unique()) <= {0.0, 1.0}
    # a skipped step changes nothing: its update ratio, where sampled, is zero
    sampled = steps[steps.update_ratio.notna() & (steps.skipped == 1)]
    assert (sampled.update_ratio == 0).all()


@pytest.mark.parametrize("clip, threshold", [("percentile", 90.0), ("zclip", 0.5),
                                             ("adagc", 1.05), ("norm", 0.5),
                                             ("value", 0.01), ("agc", 0.01)])
def test_every_clip_records_when_it_clipped(clip, threshold):
    runs = eg.run("training", SPIKY, clip=clip, clip_threshold=threshold, clip_warmup=5,
                  seeds=1)
    steps = runs[runs.layer == 0]
    assert set(steps.clipped.dropna().unique()) <= {0.0, 1.0}
    assert steps.clipped.sum() > 0, clip
    none = eg.run("training", SPIKY, seeds=1)
    assert (none[none.layer == 0].clipped.dropna() == 0).all()


@pytest.mark.parametrize("overrides, named", [
    (dict(clip="percentile", clip_threshold=150.0), "clip_threshold"),
    (dict(clip="percentile", clip_threshold=-5.0), "clip_threshold"),
    (dict(clip="zclip", clip_threshold=0.0), "clip_threshold"),
    (dict(skip="zscore", skip_window=0), "skip_window"),
    (dict(skip="sometimes"), "skip"),
    (dict(clip_ema=1.0), "clip_ema"),
])
def test_bad_spike_remedy_settings_are_refused_before_compute(overrides, named):
    with pytest.raises(eg.ConfigError, match=f"parameter '{named}'"):
        eg.REGISTRY["training"].resolve(overrides)
