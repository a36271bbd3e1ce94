"""The experiments, by name, and :func:`run`, the one way to execute them.

An experiment is a function ``(config, seed) -> DataFrame`` plus its declared
parameters.  :func:`run` validates the config before any compute, runs each seed (or
reads it from the cache), and returns one tidy table with a ``seed`` column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from . import cache
from .activations import ACTIVATIONS
from .config import ConfigError, Param, resolve
from .data import TASKS, gaussian_inputs, make_task
from .init import SCHEMES
from .models import NORMALIZATIONS, build_mlp
from .monitor import GradientMonitor, derivative_stats
from .train import OPTIMIZERS, train

MAX_SEEDS = 10_000


@dataclass(frozen=True)
class Experiment:
    name: str
    func: Callable[[dict, int], pd.DataFrame]
    params: tuple[Param, ...]
    description: str

    def resolve(self, overrides: dict | None = None) -> dict:
        return resolve(self.params, overrides or {}, f"experiment {self.name!r}")


REGISTRY: dict[str, Experiment] = {}


def experiment(name: str, params: tuple[Param, ...]):
    """Register ``func`` under ``name``; its docstring's first line describes it."""

    def register(func):
        doc = (func.__doc__ or "").strip().splitlines()
        REGISTRY[name] = Experiment(name, func, params, doc[0] if doc else "")
        return func

    return register


def get(name: str) -> Experiment:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown experiment {name!r}; known experiments: {', '.join(REGISTRY)}"
        ) from None


def run(name: str, config: dict | None = None, seeds: int = 1, use_cache: bool = True,
        **overrides) -> pd.DataFrame:
    """Run experiment ``name`` for seeds ``0 .. seeds-1`` and return one tidy table.

    ``config`` and keyword ``overrides`` are merged (keywords win) and validated before
    anything is computed.  Each seed's table is cached separately, so extending a sweep
    with more seeds reuses the ones already computed.
    """
    exp = get(name)
    resolved = exp.resolve({**(config or {}), **overrides})
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"parameter 'seeds': got {seeds!r}; allowed: int >= 1 and <= {MAX_SEEDS}")
    tables = []
    for seed in range(seeds):
        key = cache.entry_key(name, resolved, seed)
        table = cache.load(key) if use_cache else None
        if table is None:
            table = exp.func(resolved, seed)
            if use_cache:
                cache.store(key, table, {"experiment": name, "config": resolved, "seed": seed,
                                         "code": cache.code_version()})
        tables.append(table.assign(seed=seed))
    out = pd.concat(tables, ignore_index=True)
    return out[["seed", *[c for c in out.columns if c != "seed"]]]


def sweep(name: str, grid: list[dict], seeds: int = 1, use_cache: bool = True,
          **common) -> pd.DataFrame:
    """:func:`run` for each point of ``grid`` (dicts of overrides on top of ``common``).

    Every point is validated before the first one runs.  The grid's keys become columns
    of the returned table, so each row says which configuration produced it.
    """
    exp = get(name)
    for point in grid:
        exp.resolve({**common, **point})
    tables = [run(name, {**common, **point}, seeds=seeds, use_cache=use_cache).assign(**point)
              for point in grid]
    return pd.concat(tables, ignore_index=True)


# --------------------------------------------------------------------------- parameters

MODEL_PARAMS = (
    Param("depth", "int", 20, "number of hidden layers", low=1, high=1000),
    Param("width", "int", 128, "units per hidden layer", low=1, high=8192),
    Param("activation", "str", "relu", "nonlinearity after each hidden layer",
          choices=tuple(ACTIVATIONS)),
    Param("init", "str", "normal", "weight initialization scheme (see exploding_gradients.init)",
          choices=SCHEMES),
    Param("sigma_w", "float", 2**0.5, "weight scale for init='normal': Var W = sigma_w^2/fan_in",
          low=0.0, high=100.0),
    Param("sigma_b", "float", 0.0, "bias standard deviation for init='normal'", low=0.0,
          high=100.0),
    Param("normalization", "str", "none", "normalization after each Linear",
          choices=NORMALIZATIONS),
    Param("residual", "bool", False, "wrap each hidden layer in a skip connection"),
)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- experiments

@experiment("signal_propagation", MODEL_PARAMS + (
    Param("batch_size", "int", 64, "inputs in the batch", low=2, high=65536),
    Param("d_out", "int", 10, "outputs of the linear readout", low=1, high=8192),
))
def signal_propagation(config: dict, seed: int) -> pd.DataFrame:
    """Per-layer gradient norms and pre-activation variance of a freshly initialized MLP.

    Inputs x ~ N(0, I_width), targets y ~ N(0, I_d_out), loss 0.5 * mean squared error;
    one forward and backward pass in training mode (so batch norm uses batch statistics).
    Rows: one per hidden layer, ``layer`` counted from the input, with the weight
    gradient norm, the norm of dL/d(pre-activation), the pre-activation variance, and the
    activation's derivative statistics (``dphi_sq``, ``saturated``; see
    :func:`.monitor.derivative_stats`).
    """
    gen = _generator(seed)
    width = config["width"]
    model = build_mlp(config, d_in=width, d_out=config["d_out"], generator=gen)
    x = gaussian_inputs(config["batch_size"], width, gen)
    y = torch.randn(config["batch_size"], config["d_out"], generator=gen)
    layers = {f"blocks.{i}.linear": lin for i, lin in enumerate(model.hidden_linears())}
    act_stats = []
    hooks = [block.act.register_forward_hook(
        lambda mod, inputs, out: act_stats.append(derivative_stats(mod, inputs[0])))
        for block in model.blocks]
    with GradientMonitor(model, layers) as monitor:
        model.train()
        loss = 0.5 * torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        rows = monitor.layer_stats()
    for hook in hooks:
        hook.remove()
    return pd.DataFrame(rows).drop(columns="name").join(pd.DataFrame(act_stats))


@experiment("training", MODEL_PARAMS + (
    Param("task", "str", "classification", "synthetic teacher task", choices=TASKS),
    Param("d_in", "int", 16, "input dimension", low=1, high=8192),
    Param("input_scale_spread", "float", 1.0,
          "feature j is scaled by spread^(j/(d_in-1)); 1 = standardized inputs", low=1.0,
          high=1e6),
    Param("n_train", "int", 2048, "training samples", low=1, high=10**7),
    Param("optimizer", "str", "sgd", "optimizer (momentum = SGD with momentum 0.9)",
          choices=OPTIMIZERS),
    Param("lr", "float", 0.01, "learning rate", low=1e-12, high=1e6),
    Param("steps", "int", 200, "optimizer steps", low=1, high=10**7),
    Param("batch_size", "int", 64, "minibatch size", low=1, high=65536),
    Param("log_every", "int", 10, "steps between per-layer samples", low=1, high=10**7),
    Param("data_seed", "int", 0, "seed of the dataset (shared by all model seeds)", low=0,
          high=2**31 - 1),
))
def training(config: dict, seed: int) -> pd.DataFrame:
    """Train an MLP on a synthetic task; per-step loss, gradient norm and divergence.

    Rows with ``layer == 0`` describe the whole network at every step (loss, total
    gradient norm, update-to-weight ratio, and at sampled steps the test loss/accuracy);
    rows with ``layer >= 1`` hold hidden layer ``layer``'s statistics at sampled steps.
    ``diverged_step`` and ``cause`` (``nan_loss``, ``inf_loss``, ``nan_grad``, ``inf_grad``)
    are repeated on every row of a run that diverged; -1 and "" otherwise.
    """
    data = make_task(config["task"], config["n_train"], 1024, config["d_in"],
                     _generator(config["data_seed"]),
                     input_scale_spread=config["input_scale_spread"])
    gen = _generator(seed)
    model = build_mlp(config, d_in=config["d_in"], d_out=data.d_out, generator=gen)
    layers = {f"blocks.{i}.linear": lin for i, lin in enumerate(model.hidden_linears())}
    log = train(model, data, optimizer=config["optimizer"], lr=config["lr"],
                steps=config["steps"], batch_size=config["batch_size"], generator=gen,
                log_every=config["log_every"], layers=layers)
    columns = ["step", "layer", "loss", "grad_norm", "update_ratio", "test_loss",
               "test_accuracy", "delta_norm", "preact_var"]
    steps = pd.DataFrame(log.steps).assign(layer=0)
    per_layer = pd.DataFrame(log.layers).drop(columns=["name", "nonfinite"], errors="ignore")
    table = pd.concat([steps, per_layer], ignore_index=True).reindex(columns=columns)
    table = table.sort_values(["step", "layer"], kind="stable").reset_index(drop=True)
    table = table.astype({c: "float64" for c in columns[2:]})
    return table.assign(diverged_step=-1 if log.diverged_step is None else log.diverged_step,
                        cause=log.cause)
