"""One battery of checks run on every registered experiment (as scikit-learn's
``check_estimator`` runs on every estimator), and the checks that every experiment
training the feed-forward network starts from ``training``'s network."""

import pandas as pd
import pytest
import torch

import exploding_gradients as eg
from exploding_gradients.engine import memory
from exploding_gradients.experiments.feedforward import (
    APPLIES_TO,
    DATA_PARAMS,
    MODEL_PARAMS,
    build_run,
)
from exploding_gradients.init import SCHEMES

TINY = dict(depth=2, width=6, steps=3, seq_len=4, hidden_size=5, batch_size=4, n_train=16,
            d_in=3, hessian_samples=8, power_iters=3, log_every=1, measure_every=1,
            input_size=3, lr_ratios=[0.5, 1.0])


ARCHITECTURES = {"cnn": dict(architecture="cnn", channels=3, image_size=4),
                 "transformer": dict(architecture="transformer", width=8, heads=2,
                                     init="xavier")}


def tiny(name: str, **overrides) -> dict:
    known = {p.name for p in eg.REGISTRY[name].params}
    arch = overrides.get("architecture", "mlp")
    if "architecture" in known:  # the feed-forward networks: only what the family reads
        known -= {k for k, archs in APPLIES_TO.items() if arch not in archs}
    return eg.REGISTRY[name].resolve(
        {k: v for k, v in {**TINY, **overrides}.items() if k in known})


BATTERY = [(name, "mlp") for name in sorted(eg.REGISTRY)] + [
    (name, arch) for name in sorted(eg.REGISTRY) for arch in ARCHITECTURES
    if "architecture" in {p.name for p in eg.REGISTRY[name].params}]


@pytest.mark.parametrize("name, architecture", BATTERY)
def test_experiment_battery(name, architecture):
    exp = eg.REGISTRY[name]
    assert exp.description and exp.resolve() == exp.resolve(exp.resolve())  # defaults
    config = tiny(name, **ARCHITECTURES.get(architecture, {}))
    assert memory.estimate_bytes(exp, config) > memory.RUNTIME  # an estimate exists
    first = eg.run(name, config, seeds=2, use_cache=False)
    again = eg.run(name, config, seeds=2, use_cache=False)
    pd.testing.assert_frame_equal(first, again, check_exact=True)  # same seed, same bits
    cached = eg.run(name, config, seeds=2)
    pd.testing.assert_frame_equal(cached, first, check_exact=True)
    pd.testing.assert_frame_equal(eg.run(name, config, seeds=2), first, check_exact=True)
    assert list(first.columns) == ["seed", *exp.columns]  # the declared result columns
    assert not first[first.seed == 0].reset_index(drop=True).equals(
        first[first.seed == 1].reset_index(drop=True)[first.columns])  # seeds differ


TRAINS_THE_MLP = [name for name, exp in eg.REGISTRY.items()
                  if {p.name for p in MODEL_PARAMS + DATA_PARAMS} <= {p.name for p in exp.params}]


def test_the_feedforward_experiments_are_found():
    assert set(TRAINS_THE_MLP) == {"training", "sharpness", "lr_boundary"}


@pytest.mark.parametrize("init", SCHEMES)
def test_every_experiment_starts_from_trainings_network(init):
    """``lr_boundary`` trains with plain SGD from ``training``'s initial network on its
    minibatches, so at the same learning rate its losses are the per-seed loop's bit for bit;
    ``sharpness`` measures the loss of that same initial network.  (Both once skipped
    LSUV and measured a different network.)"""
    common = dict(depth=3, width=8, activation="tanh", init=init, sigma_w=1.3, n_train=64,
                  batch_size=8, hessian_samples=32)
    boundary = eg.run("lr_boundary", tiny("lr_boundary", **common, lr_ratios=[1.0], steps=4),
                      use_cache=False)
    lr = float(boundary["lr"].iloc[0])
    trained = eg.run("training", tiny("training", **common, optimizer="sgd", lr=lr, steps=4,
                                             engine="loop"),
                     use_cache=False)
    steps = trained[trained.layer == 0].reset_index(drop=True)
    assert boundary["loss"].tolist() == steps["loss"].tolist()

    run = build_run(tiny("training", **common), 0)
    with torch.no_grad():
        run.model.train()
        x, y = run.data.x_train[:32], run.data.y_train[:32]
        expected = run.data.loss(run.model(x), y).item()
    sharp = eg.run("sharpness", tiny("sharpness", **common, steps=0), use_cache=False)
    assert sharp["hessian_loss"].iloc[0] == expected


def test_sharpness_trains_exactly_as_training_does():
    """The sharpness run is the one training loop with plain SGD: measuring the Hessian
    between steps does not change the trajectory (its final sharpness row measures the
    weights ``training`` ends with)."""
    common = dict(depth=2, width=8, n_train=64, batch_size=8, hessian_samples=16, lr=0.05,
                  steps=6)
    sharp = eg.run("sharpness", tiny("sharpness", **common, measure_every=2), use_cache=False)
    assert list(sharp["step"]) == [0, 2, 4, 6] and (sharp["diverged_step"] == -1).all()
    run = build_run(tiny("training", **common), 0)
    torch.manual_seed(0)
    opt = torch.optim.SGD(run.model.parameters(), lr=0.05)
    batches = run.batches(8)
    for _ in range(6):
        x, y = batches()
        opt.zero_grad()
        run.data.loss(run.model(x), y).backward()
        opt.step()
    with torch.no_grad():
        final = run.data.loss(run.model(run.data.x_train[:16]), run.data.y_train[:16]).item()
    assert sharp["hessian_loss"].iloc[-1] == pytest.approx(final, rel=1e-6)


def test_sweep_refuses_a_grid_key_that_would_overwrite_a_result_column():
    with pytest.raises(eg.ConfigError, match="grid key.*'step_lr'.*would overwrite"):
        eg.sweep("training", [{"step_lr": 0.1}], depth=2, width=4)
    with pytest.raises(eg.ConfigError, match="'layer'"):
        eg.sweep("signal_propagation", [{"layer": 1}], depth=2, width=4)


def test_a_swept_learning_rate_keeps_the_logged_per_step_rate():
    """With warmup the step's learning rate climbs to the swept one: a sweep over ``lr``
    adds an ``lr`` column and keeps ``step_lr`` as the run logged it."""
    config = tiny("training", warmup_steps=3, steps=5)
    swept = eg.sweep("training", [{"lr": 0.1}], **config)
    steps = swept[swept.layer == 0]
    assert (steps["lr"] == 0.1).all()
    assert steps["step_lr"].tolist()[:4] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.1])
