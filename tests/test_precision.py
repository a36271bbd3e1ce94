"""Mixed precision and loss scaling in the one training loop."""

import math

import pytest

import exploding_gradients as eg

BASE = dict(depth=6, width=32, n_train=256, batch_size=32, steps=20, log_every=5,
            task="regression")


def steps(table):
    return table[table.layer == 0].reset_index(drop=True)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_trains_close_to_float32_on_a_healthy_network(precision):
    full = steps(eg.run("training", BASE))
    half = steps(eg.run("training", BASE, precision=precision))
    assert (half.diverged_step == -1).all() and half.loss_scale.isna().all()
    assert not half.loss.equals(full.loss)  # it really computed in half precision
    assert half.loss.iloc[-1] == pytest.approx(full.loss.iloc[-1], rel=0.05)


def test_the_logged_norms_are_unscaled_and_an_overflow_is_a_skipped_step():
    """GradScaler starts at 2^16: the first scaled gradient overflows float16, so the step
    is skipped and the scale halved; every logged norm is the unscaled one."""
    full = eg.run("training", BASE)
    scaled = eg.run("training", BASE, precision="fp16", loss_scaling="dynamic")
    rows = steps(scaled)
    assert rows.skipped.iloc[0] == 1 and math.isinf(rows.grad_norm.iloc[0])
    assert rows.loss_scale.iloc[0] == 65536 and rows.loss_scale.iloc[1] == 32768
    assert (rows.diverged_step == -1).all() and rows.skipped.iloc[1:].sum() == 0
    assert rows.grad_norm.iloc[1:].max() < 2 * steps(full).grad_norm.max()  # not x 2^15


def test_a_scale_that_does_not_overflow_changes_nothing_but_underflow():
    """Scaling by a power of two and unscaling are exact: with a scale that never
    overflows, the run is float16's without scaling, norms and monitor included."""
    plain = eg.run("training", BASE, precision="fp16")
    scaled = eg.run("training", BASE, precision="fp16", loss_scaling="dynamic",
                    loss_scale_init=256.0)
    assert steps(scaled).skipped.sum() == 0 and (steps(scaled).loss_scale == 256).all()
    for column in ["loss", "grad_norm"]:
        assert steps(scaled)[column].to_numpy() == pytest.approx(
            steps(plain)[column].to_numpy(), rel=1e-2)
    layers = [t[t.layer > 0] for t in (plain, scaled)]
    assert layers[1].delta_norm.to_numpy() == pytest.approx(layers[0].delta_norm.to_numpy(),
                                                            rel=1e-2)


def test_without_loss_scaling_small_float16_gradients_flush_to_zero():
    vanishing = dict(BASE, init="normal", sigma_w=0.5, depth=12, steps=1)
    first = {}
    for name, extra in [("fp32", {}), ("fp16", dict(precision="fp16")),
                        ("scaled", dict(precision="fp16", loss_scaling="dynamic",
                                        loss_scale_init=1024.0))]:
        table = eg.run("training", vanishing, **extra)
        first[name] = table[(table.layer == 1) & (table.step == 0)].grad_zero_fraction.iloc[0]
    assert first["fp16"] > first["fp32"] + 0.3  # underflow, beyond ReLU's own zeros
    assert first["scaled"] <= first["fp32"] + 0.05


def test_clipping_the_still_scaled_gradients_clips_far_too_hard():
    config = dict(BASE, precision="fp16", loss_scaling="dynamic", loss_scale_init=1024.0,
                  clip="norm", clip_threshold=1.0)
    right = steps(eg.run("training", config))
    wrong = steps(eg.run("training", config, clip_order="scaled"))
    # the threshold meets gradients 1024 times too large: every update is ~1000x smaller
    assert wrong.update_ratio.iloc[5] < right.update_ratio.iloc[5] / 100
    assert (wrong.clipped.iloc[1:-1] == 1).all()


@pytest.mark.parametrize("overrides, named", [
    (dict(precision="fp8"), "precision"),
    (dict(loss_scaling="dynamic"), "loss_scaling"),  # float32 needs none
    (dict(precision="fp16", clip_order="scaled"), "clip_order"),
    (dict(precision="bf16", loss_scaling="static"), "loss_scaling"),
    (dict(loss_scale_init=0.5), "loss_scale_init"),
])
def test_bad_precision_settings_are_refused_before_compute(overrides, named):
    with pytest.raises(eg.ConfigError, match=f"parameter '{named}'"):
        eg.REGISTRY["training"].resolve(overrides)


def test_mixed_precision_runs_in_the_per_seed_loop():
    config = eg.REGISTRY["training"].resolve(dict(BASE, precision="bf16", engine="batched"))
    assert not eg.REGISTRY["training"].runs_batched(config)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_limits_are_where_each_format_overflows_and_flushes(precision):
    import torch

    from exploding_gradients.precision import DTYPES, limits

    info, dtype = limits(precision), DTYPES[precision]
    assert torch.tensor(info["max"], dtype=dtype).item() == info["max"]
    assert torch.tensor(info["max"], dtype=dtype) * 2 == float("inf")
    tiny = torch.tensor(info["smallest_subnormal"], dtype=dtype)
    assert tiny.item() == info["smallest_subnormal"] > 0
    assert (tiny / 2).item() == 0.0  # half of it rounds (to even) to zero
    assert 1 + info["eps"] > 1 and torch.tensor(1 + info["eps"] / 2, dtype=dtype).item() == 1
    assert info["significant_bits"] == {"fp32": 24, "bf16": 8, "fp16": 11}[precision]
    with pytest.raises(eg.ConfigError, match="parameter 'precision'"):
        limits("fp8")
