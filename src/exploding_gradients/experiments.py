"""The experiments, by name, and :func:`run`, the one way to execute them.

An experiment is a function ``(config, seed) -> DataFrame`` plus its declared
parameters.  :func:`run` validates the config before any compute, runs each seed (or
reads it from the cache), and returns one tidy table with a ``seed`` column.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd
import torch

from . import backends, cache
from .activations import ACTIVATIONS
from .backends import set_backend, use_backend  # noqa: F401  (public here too)
from .config import ConfigError, Param, resolve, short_repr
from .data import TASKS, Dataset, gaussian_inputs, make_task
from .init import LSUV_BATCH, SCHEMES, lsuv_
from .models import NORMALIZATIONS, build_mlp
from .monitor import GradientMonitor, derivative_stats
from .remedies import REMEDY_PARAMS, Remedies
from .resources import check_memory
from .train import OPTIMIZERS, minibatches, train

MAX_SEEDS = 10_000


@dataclass(frozen=True)
class Experiment:
    name: str
    func: Callable[[dict, int], pd.DataFrame]
    params: tuple[Param, ...]
    description: str
    #: Optional ``(config, seeds) -> [table of each seed]`` computing several seeds at
    #: once, with the same tables as ``func`` up to floating-point rounding.
    batched: Callable[[dict, list[int]], list[pd.DataFrame]] | None = None

    def resolve(self, overrides: dict | None = None) -> dict:
        """Defaults updated with ``overrides``, each value and their combination checked."""
        config = resolve(self.params, {} if overrides is None else overrides,
                         f"experiment {self.name!r}")
        for check in CONSTRAINTS.get(self.name, ()):
            check(config)
        return config


REGISTRY: dict[str, Experiment] = {}


def _batch_norm_batch(config: dict) -> None:
    """Batch norm in training mode needs at least two samples per minibatch."""
    if config.get("normalization") == "batch" and config.get("steps", 1) > 0 \
            and config["batch_size"] < 2:
        raise ConfigError(
            f"parameter 'batch_size': got {config['batch_size']}; allowed: >= 2 when "
            "normalization='batch' (batch norm needs two samples per minibatch)")


def _batch_norm_hessian(config: dict) -> None:
    """The Hessian is measured in training mode too: batch norm needs two samples."""
    if config.get("normalization") == "batch" and min(config["hessian_samples"],
                                                      config["n_train"]) < 2:
        name = "hessian_samples" if config["hessian_samples"] < 2 else "n_train"
        raise ConfigError(
            f"parameter {name!r}: got {config[name]}; allowed: >= 2 when "
            "normalization='batch' (the Hessian is measured on min(hessian_samples, "
            "n_train) samples, and batch norm needs two)")


def _device_available(config: dict) -> None:
    """A ``device`` of ``cuda`` is refused up front on a machine without CUDA."""
    backends.resolve_device(config.get("device", "cpu"))


#: Checks of combinations of parameters, by experiment name, run by
#: :meth:`Experiment.resolve` after each value has been validated on its own.
CONSTRAINTS: dict[str, tuple[Callable[[dict], None], ...]] = {
    "training": (_batch_norm_batch, _device_available),
    "sharpness": (_batch_norm_batch, _batch_norm_hessian),
    "lr_boundary": (_batch_norm_batch, _batch_norm_hessian),
}


def experiment(name: str, params: tuple[Param, ...], batched=None):
    """Register ``func`` under ``name``; its docstring's first line describes it.

    ``batched``: the optional :attr:`Experiment.batched` of several seeds at once.
    """

    def register(func):
        doc = (func.__doc__ or "").strip().splitlines()
        REGISTRY[name] = Experiment(name, func, params, doc[0] if doc else "", batched)
        return func

    return register


def get(name: str) -> Experiment:
    if isinstance(name, str) and name in REGISTRY:
        return REGISTRY[name]
    raise ConfigError(
        f"unknown experiment {short_repr(name)}; known experiments: {', '.join(REGISTRY)}")


def run(name: str, config: dict | None = None, seeds: int = 1, use_cache: bool = True,
        backend: str | None = None, scheduler: str | None = None, workers: int | None = None,
        progress: bool | None = None, **overrides) -> pd.DataFrame:
    """Run experiment ``name`` for seeds ``0 .. seeds-1`` and return one tidy table.

    ``config`` and keyword ``overrides`` are merged (keywords win) and validated before
    anything is computed, and a configuration that would not fit in memory is refused
    (:func:`.resources.check_memory`).  Each seed's table is cached separately, so
    extending a sweep with more seeds reuses the ones already computed.

    The seeds run on ``backend`` (``serial``, ``local`` or ``dask``, with ``scheduler``
    and ``workers``; default: :func:`set_backend`'s), see :mod:`.backends`; the table is
    the same whichever ran it.  ``progress``: a bar over the seeds (default: only when
    stderr is a terminal).
    """
    exp = get(name)
    resolved = _checked(exp, config, overrides)
    check_seeds(seeds)
    where = backends.check_backend(backend, scheduler, workers)
    if exp.batched is not None and resolved.get("engine") == "batched":
        # One job: the seeds not in the cache are trained together as one ensemble.
        jobs = [(name, resolved, seeds, use_cache)]
        return _with_seeds(backends.run_jobs(_batched_job, jobs, where, progress)[0])
    jobs = [(name, resolved, seed, use_cache) for seed in range(seeds)]
    return _with_seeds(backends.run_jobs(_job, jobs, where, progress))


def _job(name: str, config: dict, seed: int, use_cache: bool) -> pd.DataFrame:
    """One seed of a resolved configuration, from the cache or computed and cached.

    The unit of work of every backend: on ``local`` and ``dask`` it runs in a worker
    process, so it takes only picklable arguments and looks the experiment up by name.
    """
    key = cache.entry_key(name, config, seed)
    table = cache.load(key) if use_cache else None
    if table is None:
        table = get(name).func(config, seed)
        if use_cache:
            cache.store(key, table, {"experiment": name, "config": config, "seed": seed,
                                     "code": cache.experiment_code_version(name)})
    return table


def _batched_job(name: str, config: dict, seeds: int, use_cache: bool) -> list[pd.DataFrame]:
    """Seeds ``0 .. seeds-1`` with the experiment's batched engine; cached per seed.

    A member's table does not depend on which other seeds share its ensemble (see
    :mod:`.ensemble`), so computing only the missing seeds gives the same results.
    """
    keys = [cache.entry_key(name, config, seed) for seed in range(seeds)]
    tables = [cache.load(key) if use_cache else None for key in keys]
    missing = [seed for seed, table in enumerate(tables) if table is None]
    if missing:
        for seed, table in zip(missing, get(name).batched(config, missing), strict=True):
            tables[seed] = table
            if use_cache:
                cache.store(keys[seed], table, {"experiment": name, "config": config,
                                                "seed": seed,
                                                "code": cache.experiment_code_version(name)})
    return tables


def _with_seeds(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The tables of seeds 0, 1, ... as one, with a leading ``seed`` column."""
    out = pd.concat([t.assign(seed=seed) for seed, t in enumerate(tables)], ignore_index=True)
    return out[["seed", *[c for c in out.columns if c != "seed"]]]


def _checked(exp: Experiment, config: dict | None, overrides: dict) -> dict:
    """The resolved configuration, refused if invalid or too large for this machine."""
    if config is not None and not isinstance(config, Mapping):
        raise ConfigError(f"experiment {exp.name!r}: config must be a dict of parameters, "
                          f"got {type(config).__name__}")
    resolved = exp.resolve({**(config or {}), **overrides})
    check_memory(exp.name, resolved)
    return resolved


def check_seeds(seeds) -> None:
    """Refuse a seed count that is not an int in 1 .. MAX_SEEDS (one message for all callers)."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"parameter 'seeds': got {short_repr(seeds)}; "
                          f"allowed: int >= 1 and <= {MAX_SEEDS}")


def sweep(name: str, grid: list[dict], seeds: int = 1, use_cache: bool = True,
          backend: str | None = None, scheduler: str | None = None, workers: int | None = None,
          progress: bool | None = None, **common) -> pd.DataFrame:
    """:func:`run` for each point of ``grid`` (dicts of overrides on top of ``common``).

    Every point is validated before the first one runs.  The grid's keys become columns
    of the returned table, so each row says which configuration produced it.  All
    (point, seed) jobs go to ``backend`` at once, so a parallel backend runs the whole
    grid in parallel.
    """
    exp = get(name)
    check_seeds(seeds)
    if not isinstance(grid, (list, tuple)) or not all(isinstance(p, dict) for p in grid):
        raise ConfigError(f"sweep {name!r}: the grid must be a list of dicts of parameters")
    configs = [_checked(exp, common, point) for point in grid]
    where = backends.check_backend(backend, scheduler, workers)
    jobs = [(name, config, seed, use_cache) for config in configs for seed in range(seeds)]
    tables = backends.run_jobs(_job, jobs, where, progress)
    return pd.concat([_with_seeds(tables[i * seeds:(i + 1) * seeds]).assign(**point)
                      for i, point in enumerate(grid)], ignore_index=True)


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
    Param("residual_scale", "float", 1.0,
          "multiplier of each residual branch, x + scale * block(x) (SkipInit-style when "
          "small)", low=0.0, high=100.0),
)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# The synthetic task of every training-like experiment: the same overrides describe the
# same data wherever they are used.
DATA_PARAMS = (
    Param("task", "str", "classification", "synthetic teacher task", choices=TASKS),
    Param("d_in", "int", 16, "input dimension", low=1, high=8192),
    Param("input_scale_spread", "float", 1.0,
          "feature j is scaled by spread^(j/(d_in-1)); 1 = standardized inputs", low=1.0,
          high=1e6),
    Param("n_train", "int", 2048, "training samples", low=1, high=10**7),
    Param("data_seed", "int", 0, "seed of the dataset (shared by all model seeds)", low=0,
          high=2**31 - 1),
)


def make_data(config: dict) -> Dataset:
    """The dataset a config with :data:`DATA_PARAMS` describes (1024 test samples)."""
    return make_task(config["task"], config["n_train"], 1024, config["d_in"],
                     _generator(config["data_seed"]),
                     input_scale_spread=config["input_scale_spread"])


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
    if config["init"] == "lsuv":
        lsuv_(model, x)
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


def _training_batched(config: dict, seeds: list[int]) -> list[pd.DataFrame]:
    """Several seeds of ``training`` as one ensemble (see :mod:`.ensemble`)."""
    from .ensemble import batched_training  # imports this module

    return batched_training(config, seeds)


@experiment("training", MODEL_PARAMS + DATA_PARAMS + (
    Param("optimizer", "str", "sgd", "optimizer (momentum = SGD with momentum 0.9)",
          choices=OPTIMIZERS),
    Param("lr", "float", 0.01, "learning rate", low=1e-12, high=1e6),
    Param("steps", "int", 200, "optimizer steps", low=1, high=10**7),
    Param("batch_size", "int", 64, "minibatch size", low=1, high=65536),
    Param("log_every", "int", 10, "steps between per-layer samples", low=1, high=10**7),
    Param("engine", "str", "loop",
          "how several seeds are computed: one after another (loop) or as one batched "
          "ensemble (batched: same results up to float rounding; configurations it does not "
          "support run the loop)", choices=("loop", "batched")),
    Param("device", "str", "cpu", "where to train: cpu, cuda, or auto (cuda if available); "
          "minibatches are drawn on the CPU either way", choices=backends.DEVICES),
) + REMEDY_PARAMS, batched=_training_batched)
def training(config: dict, seed: int) -> pd.DataFrame:
    """Train an MLP on a synthetic task; per-step loss, gradient norm and divergence.

    Rows with ``layer == 0`` describe the whole network at every step (loss, total
    gradient norm before clipping, learning rate, and at sampled steps the
    update-to-weight ratio and test loss/accuracy); rows with ``layer >= 1`` hold hidden
    layer ``layer``'s statistics at sampled steps.  ``diverged_step`` and ``cause``
    (``nan_loss``, ``inf_loss``, ``nan_grad``, ``inf_grad``) are repeated on every row of a
    run that diverged; -1 and "" otherwise.  ``stopped_step`` is the step where early
    stopping ended the run (``cause`` ``stopped_...``; the last row then measures the
    restored weights), -1 otherwise.
    """
    device = backends.resolve_device(config["device"])
    data = make_data(config)
    gen = _generator(seed)
    model = build_mlp(config, d_in=config["d_in"], d_out=data.d_out, generator=gen)
    # Built on the CPU, then moved: the same seed gives the same initial weights anywhere.
    model, data = model.to(device), data.to(device)
    if config["init"] == "lsuv":
        lsuv_(model, data.x_train[:LSUV_BATCH])
    layers = {f"blocks.{i}.linear": lin for i, lin in enumerate(model.hidden_linears())}
    log = train(model, minibatches(data.x_train, data.y_train, config["batch_size"], gen),
                data.loss, optimizer=config["optimizer"], lr=config["lr"],
                steps=config["steps"], remedies=Remedies.from_config(config),
                log_every=config["log_every"], layers=layers,
                final=tuple(model.readout.parameters()),
                evaluate=lambda m, batch: evaluate(m, data))
    return log.table()


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: Dataset) -> dict:
    """Test loss and accuracy (NaN for regression), in evaluation mode."""
    model.eval()
    out = model(data.x_test)
    loss = data.loss(out, data.y_test).item()
    model.train()
    return {"test_loss": loss, "test_accuracy": data.accuracy(out, data.y_test)}
