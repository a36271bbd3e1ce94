import math

import numpy as np
import pandas as pd
import pytest
import torch

import exploding_gradients as eg
from exploding_gradients import theory
from exploding_gradients.init import effective_sigmas, initialize
from exploding_gradients.models.mlp import MLP
from exploding_gradients.study import growth


@pytest.mark.parametrize("activation, sigma_w", [("relu", 1.2), ("relu", 1.6), ("tanh", 2.0)])
def test_measured_growth_matches_mean_field_theory(activation, sigma_w):
    """Per-layer growth of ||dL/dh^l|| against exp(mean ln chi^l / 2).

    Tolerance 3 %: at width 256 the finite-width bias of the fitted log-slope is about
    1 % (fluctuations of order 1/N per layer, Hanin 2018) and the spread of the mean over
    8 seeds is about 0.3 %.  A wrong theory is caught: using chi instead of sqrt(chi)
    would be off by 13-28 % for these settings, and the critical value by 41 %.
    """
    df = eg.run("signal_propagation", depth=20, width=256, activation=activation,
                sigma_w=sigma_w, seeds=8)
    measured = growth.growth_per_layer(df, "delta_norm")["growth"].mean()
    predicted = theory.predicted_growth(activation, sigma_w, 0.0, depth=20)
    assert measured == pytest.approx(predicted, rel=0.03)


def test_input_gradient_by_depth_matches_measurement():
    """Absolute prediction (no fitted constant) of ||dL/dh^1|| for an exploding ReLU net.

    Tolerance 25 %: the median over seeds of a norm that fluctuates log-normally
    (variance of ln ||delta||^2 ~ 5 depth/width) sits below sqrt(E||delta||^2); the
    prediction grows by 1e4 over these depths, so a wrong exponent is far outside it.
    """
    depths = [1, 10, 30]
    df = eg.sweep("signal_propagation", [{"depth": d} for d in depths], seeds=6, width=256,
                  sigma_w=1.6)
    measured = df[df.layer == 1].groupby("depth")["delta_norm"].median().to_numpy()
    predicted = theory.input_gradient_by_depth("relu", 1.6, 0.0, depths, 64, 10)
    np.testing.assert_allclose(measured, predicted["delta1_norm"], rtol=0.25)


def test_same_seed_gives_bit_identical_results():
    kwargs = dict(depth=6, width=32, activation="tanh", seeds=2, use_cache=False)
    a = eg.run("signal_propagation", **kwargs)
    b = eg.run("signal_propagation", **kwargs)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    t1 = eg.run("training", depth=3, width=16, steps=15, seeds=1, use_cache=False)
    t2 = eg.run("training", depth=3, width=16, steps=15, seeds=1, use_cache=False)
    pd.testing.assert_frame_equal(t1, t2, check_exact=True)


def test_different_seeds_differ():
    df = eg.run("signal_propagation", depth=4, width=16, seeds=2)
    a, b = (df[df.seed == s]["delta_norm"].to_numpy() for s in (0, 1))
    assert not np.array_equal(a, b)


def test_signal_propagation_table_shape():
    df = eg.run("signal_propagation", depth=7, width=16, seeds=3)
    assert list(df.columns[:2]) == ["seed", "layer"]
    assert len(df) == 21 and sorted(df.layer.unique()) == list(range(1, 8))
    assert {"grad_norm", "delta_norm", "preact_var"} <= set(df.columns)


@pytest.mark.parametrize("normalization", ["batch", "layer"])
def test_normalization_and_residual_run(normalization):
    df = eg.run("signal_propagation", depth=5, width=16, normalization=normalization,
                residual=True)
    assert np.isfinite(df["delta_norm"]).all()


def test_diverging_training_is_a_result_not_a_crash():
    df = eg.run("training", depth=10, width=32, sigma_w=3.0, lr=1.0, steps=50, seeds=2)
    assert (df["diverged_step"] >= 0).all()
    assert set(df["cause"]) <= {"nan_loss", "inf_loss", "nan_grad", "inf_grad"}
    whole = df[df.layer == 0]
    assert whole.groupby("seed").step.max().max() < 50


def test_training_learns_with_he_init():
    df = eg.run("training", depth=4, width=64, init="he", optimizer="adam", lr=1e-3,
                steps=150, log_every=50)
    whole = df[df.layer == 0]
    assert (df["diverged_step"] == -1).all()
    assert whole.loss.iloc[-1] < 0.5 * whole.loss.iloc[0]
    assert whole.test_accuracy.dropna().iloc[-1] > 0.6


@pytest.mark.parametrize("scheme", ["default", "normal", "xavier", "he", "orthogonal"])
def test_init_schemes_have_their_stated_variance(scheme):
    torch.manual_seed(0)
    model = MLP(512, 512, 2, 1, activation="relu")
    initialize(model, scheme, "relu", torch.Generator().manual_seed(0), sigma_w=1.7,
               sigma_b=0.3)
    w = model.blocks[1].linear.weight
    sw, sb = effective_sigmas(scheme, "relu", 512, 512, 1.7, 0.3)
    # 262k entries: the sample variance is within 1 % of the true one with overwhelming
    # probability (relative sd sqrt(2/n) ~ 0.3 %).
    assert (w.var().item() * 512) == pytest.approx(sw**2, rel=0.01)
    b = model.blocks[1].linear.bias
    assert b.var().item() == pytest.approx(sb**2, rel=0.2, abs=1e-4)


def test_he_is_critical_for_relu_and_xavier_for_tanh():
    assert theory.chi1("relu", *effective_sigmas("he", "relu", 64, 64)) == pytest.approx(1.0)
    assert theory.chi1("tanh", *effective_sigmas("xavier", "tanh", 64, 64)) == pytest.approx(
        1.0, abs=1e-2)
    assert math.isclose(effective_sigmas("default", "relu", 64, 64)[0] ** 2, 1 / 3)


def test_batch_norm_explodes_at_the_rate_of_yang_et_al():
    """Per-layer factor on ||delta||^2 of a batch-normalized ReLU net vs pi/(pi-1).

    pi/(pi-1) = 1.467 is the large-batch, infinite-width limit; at batch 256 and width
    256 we measured it within 2 %.  Tolerance 5 % covers those finite-size corrections;
    the unnormalized network (factor 1) and any theory without batch-norm explosion are
    more than 30 % away.
    """
    df = eg.run("signal_propagation", depth=20, width=256, init="he", normalization="batch",
                batch_size=256, seeds=3)
    rate = (growth.growth_per_layer(df, "delta_norm")["growth"] ** 2).mean()
    assert rate == pytest.approx(math.pi / (math.pi - 1), rel=0.05)


def test_unnormalized_inputs_inflate_every_layers_gradient():
    """A bias-free ReLU net is positively homogeneous: inputs 100x larger (in their largest
    features) make every activation, the output error and so every layer's gradient
    larger; measured about 70x.  10x is far from the no-effect value 1."""
    from exploding_gradients.data import feature_scales

    assert feature_scales(5, 100.0).tolist() == pytest.approx([1, 100**0.25, 10, 100**0.75, 100])
    runs = eg.sweep("training", [{"input_scale_spread": s} for s in (1.0, 100.0)], depth=3,
                    width=32, steps=1, seeds=2)
    step0 = runs[runs.step == 0].groupby(["input_scale_spread", "layer"]).grad_norm.median()
    for layer in (1, 2, 3):
        assert step0[(100.0, layer)] > 10 * step0[(1.0, layer)]


# --------------------------------------------------------------- other architectures

CNN = dict(architecture="cnn", depth=3, channels=8, image_size=6)
TRANSFORMER = dict(architecture="transformer", depth=2, width=16, heads=2, seq_len=5,
                   init="xavier")


@pytest.mark.parametrize("bad, name", [
    (dict(channels=32), "channels"),                       # a cnn parameter on an mlp
    (dict(architecture="cnn", heads=2), "heads"),
    (dict(architecture="transformer", residual=True), "residual"),
    (dict(architecture="cnn", task="classification"), "task"),
    (dict(architecture="cnn", kernel_size=4), "kernel_size"),
    (dict(architecture="cnn", normalization="layer"), "normalization"),
    (dict(architecture="transformer", width=30, heads=4), "heads"),
    (dict(architecture="transformer", normalization="batch"), "normalization"),
    (dict(architecture="transformer", init="lsuv"), "init"),
    (dict(architecture="rnn"), "architecture"),
])
def test_architecture_settings_are_checked_before_any_compute(bad, name):
    with pytest.raises(eg.ConfigError, match=f"'{name}'"):
        eg.run("training", bad, use_cache=False)


@pytest.mark.parametrize("config", [CNN, TRANSFORMER], ids=["cnn", "transformer"])
def test_signal_propagation_gives_one_row_per_convolution_or_block(config):
    a = eg.run("signal_propagation", config, seeds=2, use_cache=False)
    b = eg.run("signal_propagation", config, seeds=2, use_cache=False)
    assert a.equals(b)
    assert list(a.layer) == list(range(1, config["depth"] + 1)) * 2
    cols = ["grad_norm", "delta_norm", "preact_var", "dphi_sq"]
    assert np.isfinite(a[cols].to_numpy()).all() and (a[cols] > 0).all().all()
    assert a.attn_logit_max.notna().all() == (config is TRANSFORMER)


def test_a_transformer_block_row_holds_the_gradient_of_all_its_parameters():
    from exploding_gradients.engine.registry import REGISTRY
    from exploding_gradients.experiments.feedforward import generator, probe

    config = REGISTRY["signal_propagation"].resolve(TRANSFORMER)
    model, x, y = probe(config, generator(0))
    (0.5 * torch.nn.functional.mse_loss(model(x), y)).backward()
    table = eg.run("signal_propagation", TRANSFORMER, use_cache=False)
    for row, block in zip(table.itertuples(), model.blocks, strict=True):
        norm = torch.cat([p.grad.flatten() for p in block.parameters()]).norm().item()
        assert row.grad_norm == pytest.approx(norm, rel=1e-5)


@pytest.mark.parametrize("config, extra", [
    (CNN, dict(lr=0.05, optimizer="momentum")),
    (CNN, dict(lr=0.05, optimizer="momentum", clip="agc", clip_threshold=0.05,
               normalization="batch", residual=True)),
    (TRANSFORMER, dict(lr=3e-3, optimizer="adam")),
    (TRANSFORMER, dict(lr=3e-3, optimizer="adam", norm_position="post", qk_norm=True,
                       warmup_steps=10, precision="bf16")),
], ids=["cnn", "cnn-bn-residual-agc", "transformer", "post-ln-qk-warmup-bf16"])
def test_convnets_and_transformers_train_reproducibly(config, extra):
    settings = dict(config, steps=40, n_train=256, batch_size=32, log_every=20, **extra)
    a = eg.run("training", settings, use_cache=False)
    b = eg.run("training", settings, use_cache=False)
    assert a.equals(b)
    steps = a[a.layer == 0]
    assert steps.loss.iloc[-5:].mean() < steps.loss.iloc[:5].mean()  # it learns
    layers = a[a.layer > 0]
    assert sorted(layers.layer.unique()) == list(range(1, config["depth"] + 1))
    assert layers.grad_norm.notna().all() and layers.delta_norm.notna().all()
    assert layers.attn_logit_max.notna().all() == (config is TRANSFORMER)


def test_the_batched_engine_leaves_other_architectures_to_the_loop():
    from exploding_gradients.ensemble import unsupported_reason

    assert "multilayer perceptrons" in unsupported_reason(CNN)
    batched = eg.run("training", dict(CNN, steps=5, n_train=64, engine="batched"), seeds=2,
                     use_cache=False)
    loop = eg.run("training", dict(CNN, steps=5, n_train=64), seeds=2, use_cache=False)
    assert batched.equals(loop)


# --------------------------------------------------------------------------- outlier batches

OUTLIERS = dict(depth=3, width=16, n_train=256, batch_size=16, steps=40, log_every=10)


def test_outlier_schedule_starts_episodes_of_burst_steps():
    from exploding_gradients.data import outlier_generator, outlier_steps

    hit = outlier_steps(2000, 0.01, 3, outlier_generator(0))
    starts = hit & ~torch.cat([torch.tensor([False]), hit[:-1]])
    assert 5 <= int(starts.sum()) <= 40  # ~20 episodes of 3 (some may merge)
    runs = torch.diff(torch.nonzero(torch.diff(hit.int(), prepend=torch.tensor([0])))
                      .flatten())[::2]
    assert (runs >= 3).all()  # every episode lasts at least a burst
    assert not outlier_steps(100, 0.0, 5, outlier_generator(0)).any()
    assert torch.equal(hit, outlier_steps(2000, 0.01, 3, outlier_generator(0)))
    with pytest.raises(ValueError, match="burst"):
        outlier_steps(10, 0.5, 0, outlier_generator(0))


def test_outlier_batches_corrupt_only_the_scheduled_batches():
    from exploding_gradients.data import OutlierBatches

    gen = torch.Generator().manual_seed(1)
    x, y = torch.ones(4, 3), torch.tensor([0, 1, 2, 3])
    schedule = torch.tensor([False, True, False])
    batches = OutlierBatches(lambda: (x, y), schedule, "inputs", 7.0, gen)
    assert torch.equal(batches()[0], x) and torch.equal(batches()[0], 7 * x)
    assert torch.equal(batches()[0], x) and torch.equal(batches()[0], x)  # past the end
    labels = OutlierBatches(lambda: (x, y), torch.tensor([True] * 50), "labels", 1.0, gen, 4)
    drawn = torch.stack([labels()[1] for _ in range(50)])
    assert drawn.min() >= 0 and drawn.max() <= 3 and not (drawn == y).all()
    targets = OutlierBatches(lambda: (x, y.float()[:, None]), torch.tensor([True]), "labels",
                             5.0, gen)
    assert targets()[1].shape == (4, 1)
    with pytest.raises(ValueError, match="outlier kind"):
        OutlierBatches(lambda: (x, y), schedule, "pixels", 1.0, gen)


def test_outliers_change_only_their_batches_and_are_recorded():
    """Outliers of scale 1 are no outliers: the run is the clean run bit for bit, so the
    minibatch sequence is the clean twin's; at scale 30 the outlier steps' gradients
    are the large ones."""
    clean = eg.run("training", OUTLIERS, seeds=1)
    assert "outlier" not in clean
    same = eg.run("training", OUTLIERS, seeds=1, outlier_prob=0.1, outlier_scale=1.0)
    pd.testing.assert_frame_equal(same.drop(columns="outlier"), clean)
    spiky = eg.run("training", OUTLIERS, seeds=1, outlier_prob=0.1, outlier_scale=30.0)
    steps = spiky[spiky.layer == 0]
    assert set(steps.outlier.unique()) == {0.0, 1.0}
    assert spiky[spiky.layer > 0].outlier.isna().all()
    first = int(steps[steps.outlier == 1].step.iloc[0])
    before = clean[(clean.layer == 0) & (clean.step == first)].grad_norm.iloc[0]
    assert steps[steps.step == first].grad_norm.iloc[0] > 5 * before
    pd.testing.assert_frame_equal(  # identical up to the first outlier
        steps[steps.step < first].drop(columns="outlier").reset_index(drop=True),
        clean[(clean.layer == 0) & (clean.step < first)].reset_index(drop=True))
    config = eg.REGISTRY["training"].resolve(dict(OUTLIERS, outlier_prob=0.1,
                                                  engine="batched"))
    assert not eg.REGISTRY["training"].runs_batched(config)


def test_jacobian_spectrum_of_orthogonal_linear_layers_is_flat():
    # a product of orthogonal matrices times sigma_w^(L-1): every singular value the same
    df = eg.run("jacobian_spectrum", depth=5, width=16, activation="linear",
                weights="orthogonal", sigma_w=1.3, inputs=2)
    assert list(df.columns[:4]) == ["seed", "input", "index", "singular_value"]
    assert len(df) == 2 * 16
    assert df["singular_value"].to_numpy() == pytest.approx(1.3**4, rel=1e-5)  # float32 W


def test_jacobian_spectrum_is_the_spectrum_of_the_backward_jacobian():
    """The singular values of dh^L/dh^1 of the very network signal_propagation builds,
    computed here with autograd through the model's own blocks."""
    from exploding_gradients.data import gaussian_inputs
    from exploding_gradients.experiments.feedforward import generator
    from exploding_gradients.models.mlp import build_mlp

    config = {"width": 12, "depth": 4, "activation": "tanh", "normalization": "none",
              "residual": False, "init": "normal", "sigma_w": 1.5, "sigma_b": 0.2}
    df = eg.run("jacobian_spectrum", depth=4, width=12, activation="tanh", sigma_w=1.5,
                sigma_b=0.2, input_q=0.5, seeds=1)
    gen = generator(0)
    model = build_mlp(config, d_in=12, d_out=1, generator=gen).double()
    x = gaussian_inputs(1, 12, gen).double()[0] * 0.5**0.5
    h1 = model.blocks[0].linear(x)

    def rest(h):
        out = h
        for block in model.blocks[1:]:
            out = block.linear(block.act(out))
        return out

    jac = torch.autograd.functional.jacobian(rest, h1)
    expected = torch.linalg.svdvals(jac).detach().numpy()
    assert df["singular_value"].to_numpy() == pytest.approx(expected, rel=1e-6)
