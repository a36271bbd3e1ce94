"""The batched engine: the loop's tables for every seed, without the loop."""

import numpy as np
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients import ensemble
from exploding_gradients.experiments import feedforward
from exploding_gradients.experiments.feedforward import build_run, training

SMALL = dict(depth=4, width=16, steps=30, log_every=5, n_train=256)
KEYS = ["step", "layer", "diverged_step", "stopped_step", "cause"]


def _config(**overrides) -> dict:
    return eg.REGISTRY["training"].resolve({**SMALL, **overrides})


def batched(config: dict, seeds: list[int], engine: str = "bmm") -> list[pd.DataFrame]:
    """The tables of ``seeds`` trained as one ensemble."""
    runs = [build_run(config, seed) for seed in seeds]
    return [log.table() for log in ensemble.train_ensemble(config, runs, engine)]


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
    for loop, together in zip([training(config, s) for s in seeds],
                             batched(config, seeds), strict=True):
        assert_same_table(loop, together)


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
    for loop, together in zip(loops, batched(config, seeds, engine),
                             strict=True):
        assert_same_table(loop, together)


@pytest.mark.parametrize("overrides", [
    DIVERGING,
    dict(optimizer="adam", lr=1e-3, clip="norm", normalization="layer", residual=True),
], ids=["diverging", "adam-clip-layernorm"])
def test_a_members_results_do_not_depend_on_its_ensemble(overrides):
    """Bit for bit: seed 3 alone, among 0..3, among 3..7, or in chunks of two."""
    config = _config(**overrides)
    alone = batched(config, [3])[0]
    pd.testing.assert_frame_equal(batched(config, [0, 1, 2, 3])[3], alone, check_exact=True)
    pd.testing.assert_frame_equal(batched(config, [3, 4, 5, 6, 7])[0], alone, check_exact=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(feedforward, "members_per_batch", lambda config: 2)
        chunked = eg.REGISTRY["training"].batched(config, [0, 3, 5])
    pd.testing.assert_frame_equal(chunked[1], alone, check_exact=True)


def test_vmap_engine_equals_the_loop():
    config = _config(normalization="layer")
    for loop, together in zip([training(config, s) for s in (0, 1)],
                             batched(config, [0, 1], engine="vmap"),
                             strict=True):
        assert_same_table(loop, together)


@pytest.mark.parametrize("overrides", [dict(normalization="batch"), dict(stop_factor=3.0)],
                         ids=["batch-norm", "early-stopping"])
def test_unsupported_configs_run_the_loop(overrides):
    config = _config(steps=5, **overrides)
    assert ensemble.unsupported_reason(config)
    assert not eg.REGISTRY["training"].runs_batched({**config, "engine": "batched"})
    with pytest.raises(ValueError, match="does not support"):
        batched(config, [0])
    loop = eg.run("training", config, seeds=2, use_cache=False)
    fallback = eg.run("training", config, seeds=2, use_cache=False, engine="batched")
    pd.testing.assert_frame_equal(fallback, loop, check_exact=True)


def test_training_registers_the_batched_hook_and_the_engine_parameter():
    exp = eg.REGISTRY["training"]
    assert exp.batched is not None
    assert eg.REGISTRY["signal_propagation"].batched is None
    assert exp.resolve({})["engine"] == "batched"
    assert exp.resolve({"engine": "batched"})["engine"] == "batched"
    with pytest.raises(eg.ConfigError, match="engine"):
        exp.resolve({"engine": "vmap"})
    config = _config(steps=5)
    assert not ensemble.unsupported_reason(config)
    for loop, together in zip([training(config, s) for s in (0, 1)],
                              exp.batched(config, [0, 1]), strict=True):
        assert_same_table(loop, together)


def test_run_and_sweep_honour_the_batched_engine(spy_experiment):
    """Both go through the batched engine, per point of a sweep, cached per seed."""
    config = dict(SMALL, steps=5)
    grid = [{"sigma_w": 1.0}, {"sigma_w": 2.0}]
    swept = eg.sweep("training", grid, seeds=2, engine="batched", **config)
    loop = eg.sweep("training", grid, seeds=2, use_cache=False, engine="loop", **config)
    assert not swept.equals(loop)  # baddbmm, not addmm: the last bits differ
    assert_same_table(loop.drop(columns=["sigma_w"]), swept.drop(columns=["sigma_w"]))
    calls = spy_experiment("training")  # everything is in the cache now
    ran = eg.run("training", config, seeds=2, sigma_w=2.0, engine="batched")
    pd.testing.assert_frame_equal(ran, swept[swept.sigma_w == 2.0].drop(
        columns="sigma_w").reset_index(drop=True), check_exact=True)
    assert calls == []
