"""The batched engine: the loop's tables for every seed, without the loop."""

import numpy as np
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients import ensemble
from exploding_gradients.experiments import training

SMALL = dict(depth=4, width=16, steps=30, log_every=5, n_train=256)
KEYS = ["step", "layer", "diverged_step", "stopped_step", "cause"]


def _config(**overrides) -> dict:
    return eg.REGISTRY["training"].resolve({**SMALL, **overrides})


def assert_same_table(loop: pd.DataFrame, batched: pd.DataFrame, rtol: float = 1e-4) -> None:
    """Same rows, columns, dtypes and divergence; values equal up to float rounding."""
    assert list(batched.columns) == list(loop.columns)
    assert batched.dtypes.equals(loop.dtypes)
    pd.testing.assert_frame_equal(batched[KEYS], loop[KEYS])
    values = [c for c in loop.columns if c not in KEYS]
    np.testing.assert_allclose(batched[values].to_numpy(), loop[values].to_numpy(),
                               rtol=rtol, atol=1e-7)  # NaN where the loop has NaN


CASES = {
    "relu-sgd": {},
    "tanh-adam": dict(activation="tanh", optimizer="adam", lr=1e-3),
    "residual-layernorm-momentum": dict(residual=True, normalization="layer",
                                        optimizer="momentum", residual_scale=0.5),
    "rmsprop-clipnorm-cosine": dict(optimizer="rmsprop", lr=1e-3, clip="norm",
                                    clip_threshold=0.5, schedule="cosine", warmup_steps=5),
    "clipvalue-l2-decay": dict(clip="value", clip_threshold=0.01, penalty="l2",
                               penalty_strength=1e-3, weight_decay=0.1),
    "agc-l1-step": dict(clip="agc", clip_threshold=0.01, penalty="l1", penalty_strength=1e-4,
                        schedule="step"),
    "lsuv-regression": dict(init="lsuv", task="regression", sigma_b=0.1, activation="gelu"),
}


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_batched_tables_equal_the_loop(overrides):
    config = _config(**overrides)
    seeds = [0, 1, 2]
    for loop, batched in zip([training(config, s) for s in seeds],
                             ensemble.train_ensemble(config, seeds), strict=True):
        assert_same_table(loop, batched)


DIVERGING = dict(depth=6, sigma_w=3.0, lr=0.3, steps=50)


@pytest.mark.parametrize("engine", ensemble.ENGINES)
def test_diverging_members_are_recorded_as_the_loop_records_them(engine):
    """Members diverge at different steps and causes; the survivors are untouched."""
    config = _config(**DIVERGING)
    seeds = list(range(6))
    loops = [training(config, s) for s in seeds]
    causes = {t["cause"].iloc[0] for t in loops}
    assert {"nan_loss", "inf_grad", ""} <= causes  # the case tests what it should
    assert len({t["diverged_step"].iloc[0] for t in loops}) >= 3
    for loop, batched in zip(loops, ensemble.train_ensemble(config, seeds, engine),
                             strict=True):
        assert_same_table(loop, batched)


@pytest.mark.parametrize("overrides", [
    DIVERGING,
    dict(optimizer="adam", lr=1e-3, clip="norm", normalization="layer", residual=True),
], ids=["diverging", "adam-clip-layernorm"])
def test_a_members_results_do_not_depend_on_its_ensemble(overrides):
    """Bit for bit: seed 3 alone, among 0..3, among 3..7, or in chunks of two."""
    config = _config(**overrides)
    alone = ensemble.train_ensemble(config, [3])[0]
    pd.testing.assert_frame_equal(ensemble.train_ensemble(config, [0, 1, 2, 3])[3], alone,
                                  check_exact=True)
    pd.testing.assert_frame_equal(ensemble.train_ensemble(config, [3, 4, 5, 6, 7])[0], alone,
                                  check_exact=True)
    pd.testing.assert_frame_equal(
        ensemble.train_ensemble(config, [0, 3, 5], max_members=2)[1], alone, check_exact=True)


def test_vmap_engine_equals_the_loop():
    config = _config(normalization="layer")
    for loop, batched in zip([training(config, s) for s in (0, 1)],
                             ensemble.train_ensemble(config, [0, 1], engine="vmap"),
                             strict=True):
        assert_same_table(loop, batched)


@pytest.mark.parametrize("overrides", [dict(normalization="batch"), dict(stop_factor=3.0)],
                         ids=["batch-norm", "early-stopping"])
def test_unsupported_configs_fall_back_to_the_loop(overrides):
    config = _config(steps=5, **overrides)
    assert not ensemble.supports(config)
    with pytest.raises(ValueError, match="does not support"):
        ensemble.train_ensemble(config, [0])
    for loop, fallback in zip([training(config, s) for s in (0, 1)],
                              eg.REGISTRY["training"].batched(config, [0, 1]), strict=True):
        pd.testing.assert_frame_equal(fallback, loop, check_exact=True)


def test_training_registers_the_batched_hook_and_the_engine_parameter():
    exp = eg.REGISTRY["training"]
    assert exp.batched is not None
    assert eg.REGISTRY["signal_propagation"].batched is None
    assert exp.resolve({})["engine"] == "loop"
    assert exp.resolve({"engine": "batched"})["engine"] == "batched"
    with pytest.raises(eg.ConfigError, match="engine"):
        exp.resolve({"engine": "vmap"})
    config = _config(steps=5)
    assert ensemble.supports(config)
    for loop, batched in zip([training(config, s) for s in (0, 1)],
                             exp.batched(config, [0, 1]), strict=True):
        assert_same_table(loop, batched)


def test_benchmark_reports_both_engines_and_the_loop():
    result = ensemble.benchmark(depth=2, width=8, seeds=2, steps=3, repeat=1)
    assert {"loop_s", "batched_s", "ratio", "engine", "bmm_s", "vmap_s"} <= set(result)
    assert result["batched_s"] == min(result["bmm_s"], result["vmap_s"])
    assert result["ratio"] == pytest.approx(result["loop_s"] / result["batched_s"])


def test_members_that_differ_in_their_initialization_share_an_ensemble():
    configs = [_config(sigma_w=1.0), _config(sigma_w=2.0, sigma_b=0.1), _config(init="he"),
               _config(lr=0.03)]  # the last one has a batch of its own
    assert len({ensemble.batch_key(c) for c in configs}) == 2
    members = [(configs[0], 0), (configs[1], 0), (configs[2], 5), (configs[3], 1),
               (configs[1], 2)]
    for (config, seed), batched in zip(members, ensemble.train_members(members), strict=True):
        assert_same_table(training(config, seed), batched)
