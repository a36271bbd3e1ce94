"""Remedies: each one does what its paper says, and the defaults change nothing."""

import math

import pytest
import torch
from torch import nn

import exploding_gradients as eg
from exploding_gradients.init import lsuv_
from exploding_gradients.models.mlp import MLP
from exploding_gradients.remedies import Remedies, adaptive_clip_grad_, unitwise_norm


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
