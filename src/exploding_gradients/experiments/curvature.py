"""The curvature of the loss and the learning rate: ``sharpness`` and ``lr_boundary``.

Both start from :func:`.feedforward.build_run`, so for the same configuration and seed
their network, data and minibatch sequence are those of the ``training`` experiment,
and both train with the one loop of :mod:`..train` (plain SGD).  The linear algebra (the
Hessian-vector product, power iteration) is in :mod:`..curvature`.
"""

from __future__ import annotations

import copy

import pandas as pd
import torch

from ..curvature import flat_params, sharpness
from ..engine.memory import ROW_BYTES
from ..engine.params import ConfigError, Param
from ..engine.registry import experiment
from ..train import train
from .feedforward import (
    DATA_PARAMS,
    MODEL_PARAMS,
    Run,
    activation_values,
    batch_norm_batch,
    build_run,
    check_architecture,
    data_values,
    evaluate,
    training_params,
    training_rows,
)

HESSIAN_PARAMS = (
    Param("hessian_samples", "int", 2048,
          "training samples (the first ones, at most n_train) whose loss's Hessian is measured",
          low=1, high=10**7),
    Param("power_iters", "int", 100, "maximum power-iteration steps", low=1, high=10**5),
    Param("tol", "float", 1e-4, "relative change of the Rayleigh quotient that stops it",
          low=1e-12, high=1.0),
)
SHARPNESS_PARAMS = MODEL_PARAMS + DATA_PARAMS + (
    Param("lr", "float", 0.01, "SGD learning rate (used only when steps > 0)", low=1e-12,
          high=1e6),
    Param("lr_ratio", "float", 0.0,
          "if > 0, train at lr = lr_ratio * 2 / lambda_max(init) instead of lr", low=0.0,
          high=1e4),
    Param("steps", "int", 0, "plain-SGD steps (0: measure at initialization only)", low=0,
          high=10**7),
    Param("batch_size", "int", 64, "SGD minibatch size", low=1, high=65536),
    Param("measure_every", "int", 10, "steps between sharpness measurements", low=1,
          high=10**7),
) + HESSIAN_PARAMS


def batch_norm_hessian(config: dict) -> None:
    """The Hessian is measured in training mode too: batch norm needs two samples."""
    if config.get("normalization") == "batch" and min(config["hessian_samples"],
                                                      config["n_train"]) < 2:
        name = "hessian_samples" if config["hessian_samples"] < 2 else "n_train"
        raise ConfigError(
            f"parameter {name!r}: got {config[name]}; allowed: >= 2 when "
            "normalization='batch' (the Hessian is measured on min(hessian_samples, "
            "n_train) samples, and batch norm needs two)")


# Memory (see engine.memory and feedforward's estimates): the Hessian-vector product
# keeps its differentiable gradient, flat vectors and power-iteration vectors (8
# parameter-sized copies) and the graph of the gradient, about HVP_FACTOR times the
# activations of a forward pass on the Hessian samples.
HVP_FACTOR = 3


def _hessian_memory(config: dict, n_params: int) -> dict[str, int]:
    n = min(config["hessian_samples"], config["n_train"])
    return {"parameters": 8 * n_params, "activations": HVP_FACTOR * activation_values(config, n)}


def _sharpness_memory(config: dict) -> tuple[int, dict[str, int]]:
    p = training_params(config)
    hess = _hessian_memory(config, p)
    train_acts = activation_values(config, config["batch_size"]) if config["steps"] else 0
    rows = config["steps"] // config["measure_every"] + 2
    return 4, {"parameters": 6 * p + hess["parameters"],
               "activations": hess["activations"] + train_acts,
               "data": data_values(config),
               "results": ROW_BYTES // 4 * rows}


def _lr_boundary_memory(config: dict) -> tuple[int, dict[str, int]]:
    p = training_params(config)
    hess = _hessian_memory(config, p)
    ratios = len(config["lr_ratios"])
    # the step rows of every ratio are kept; the per-layer rows of one run at a time
    rows = ratios * (config["steps"] + 1) + training_rows(config, config["steps"],
                                                          config["log_every"])
    return 4, {"parameters": 7 * p + hess["parameters"],  # + the deep copy being trained
               "activations": max(hess["activations"],
                                  activation_values(config, config["batch_size"])),
               "data": data_values(config),
               "results": ROW_BYTES // 4 * rows}


SHARPNESS_COLUMNS = ("step", "lambda_max", "stability_lr", "hessian_loss",
                     "hessian_grad_norm", "readout_share", "power_iters", "residual",
                     "converged", "step_lr", "diverged_step")


@experiment("sharpness", SHARPNESS_PARAMS, columns=SHARPNESS_COLUMNS,
            constraints=(check_architecture, batch_norm_batch, batch_norm_hessian),
            memory=_sharpness_memory)
def sharpness_experiment(config: dict, seed: int) -> pd.DataFrame:
    """Top Hessian eigenvalue lam_max of the training loss, at init and along plain SGD.

    The run is ``training``'s for the same configuration and seed, trained with
    ``optimizer="sgd"`` by the same loop; lam_max is measured on the first
    ``hessian_samples`` training samples at step 0 and every ``measure_every`` steps (and
    the last), before that step's minibatch is drawn.  The power iteration's first start
    vector comes from a copy of the seed's generator, so it does not shift the minibatch
    sequence; later measurements start from the previous eigenvector.  Rows: one per
    measurement, with ``step``, ``lambda_max``, ``stability_lr`` (= 2 / lambda_max),
    ``hessian_loss`` and ``hessian_grad_norm`` (loss and gradient norm on the Hessian
    samples), ``readout_share`` (fraction of the top eigenvector's squared norm in the
    linear readout's weights and bias), ``power_iters`` used, ``residual``,
    ``converged``, the learning rate trained with (``step_lr``), and ``diverged_step``:
    the step whose minibatch loss or gradient was not finite, -1 if none.
    """
    run = build_run(config, seed)
    params = flat_params(run.model)
    probe = torch.Generator().set_state(run.generator.get_state())
    n_hess = min(config["hessian_samples"], config["n_train"])
    readout = sum(p.numel() for p in flat_params(run.model.readout))  # the last parameters
    rows = []
    start = torch.randn(sum(p.numel() for p in params), generator=probe)

    def measure(step: int, model: torch.nn.Module) -> float:
        nonlocal start
        eig, loss, gnorm = sharpness(model, run.data, n_hess, start, config["power_iters"],
                                     config["tol"])
        start = eig.vector
        rows.append({"step": step, "lambda_max": eig.value,
                     "stability_lr": 2 / eig.value if eig.value > 0 else float("inf"),
                     "hessian_loss": loss, "hessian_grad_norm": gnorm,
                     "readout_share": (eig.vector[-readout:] ** 2).sum().item(),
                     "power_iters": eig.iterations, "residual": eig.residual,
                     "converged": eig.converged})
        return eig.value

    steps, every = config["steps"], config["measure_every"]
    lam0 = measure(0, run.model)
    lr = config["lr_ratio"] * 2 / lam0 if config["lr_ratio"] > 0 else config["lr"]
    diverged = -1
    if steps:
        def on_step(step: int, model: torch.nn.Module) -> None:
            if step > 0 and (step % every == 0 or step == steps):
                measure(step, model)

        log = train(run.model, run.batches(config["batch_size"]), run.data.loss,
                    optimizer="sgd", lr=lr, steps=steps, layers={}, on_step=on_step)
        diverged = -1 if log.diverged_step is None else log.diverged_step
    return pd.DataFrame(rows).astype({"step": "int64", "power_iters": "int64",
                                      "converged": "bool"}).assign(step_lr=lr,
                                                                   diverged_step=diverged)


LR_BOUNDARY_COLUMNS = ("lr_ratio", "lr", "lambda_max", "readout_share", "step", "loss",
                       "grad_norm", "test_loss", "diverged_step", "stopped_step", "cause")


@experiment("lr_boundary", MODEL_PARAMS + DATA_PARAMS + (
    Param("lr_ratios", "list[float]", [0.5, 1.0, 2.0],
          "learning rates as multiples of this seed's 2 / lambda_max at initialization",
          low=1e-6, high=1e4),
    Param("steps", "int", 200, "plain-SGD steps per learning rate", low=1, high=10**7),
    Param("batch_size", "int", 64, "SGD minibatch size", low=1, high=65536),
    Param("log_every", "int", 10, "steps between test-loss evaluations", low=1, high=10**7),
) + HESSIAN_PARAMS, columns=LR_BOUNDARY_COLUMNS,
    constraints=(check_architecture, batch_norm_batch, batch_norm_hessian),
    memory=_lr_boundary_memory)
def lr_boundary(config: dict, seed: int) -> pd.DataFrame:
    """Plain SGD at learning rates lr = ratio * 2 / lambda_max(init), per seed.

    For each seed: build ``training``'s run, measure lambda_max of the training loss at
    initialization (as ``sharpness``), then train a copy of the initial model with the
    one training loop and ``optimizer="sgd"`` at each ratio.  Every run draws its
    minibatches from a copy of the seed's generator as it is after the model is built,
    so each run is bit-identical to ``training`` with ``optimizer="sgd"``, that ``lr``
    and ``engine="loop"``.  Rows: one per step and ratio, with ``lr_ratio``, ``lr``,
    ``lambda_max``, ``readout_share`` (as in ``sharpness``), ``step``, ``loss`` (minibatch),
    ``grad_norm``, ``test_loss`` (at logged steps), and the run's ``diverged_step`` (-1
    if none), ``stopped_step`` (always -1) and ``cause``.
    """
    run = build_run(config, seed)
    state = run.generator.get_state()
    start = torch.randn(sum(p.numel() for p in flat_params(run.model)),
                        generator=torch.Generator().set_state(state))
    n_hess = min(config["hessian_samples"], config["n_train"])
    eig, _, _ = sharpness(run.model, run.data, n_hess, start, config["power_iters"],
                          config["tol"])
    readout = sum(p.numel() for p in flat_params(run.model.readout))
    share = (eig.vector[-readout:] ** 2).sum().item()
    tables = []
    for ratio in config["lr_ratios"]:
        lr = ratio * 2 / eig.value
        trial = Run(copy.deepcopy(run.model), run.data, torch.Generator().set_state(state))
        log = train(trial.model, trial.batches(config["batch_size"]), run.data.loss,
                    optimizer="sgd", lr=lr, steps=config["steps"],
                    log_every=config["log_every"], layers=trial.layers(),
                    evaluate=lambda m, batch: evaluate(m, run.data))
        steps = log.table(columns=("step", "loss", "grad_norm", "test_loss"))
        tables.append(steps.assign(lr_ratio=ratio, lr=lr, lambda_max=eig.value,
                                   readout_share=share))
    return pd.concat(tables, ignore_index=True)[list(LR_BOUNDARY_COLUMNS)]
