"""Each computed chapter's parameters and its profiles (``quick``, ``default``, ``full``).

A notebook declares its parameters in a cell tagged ``parameters`` (profile-dependent
ones as ``None``) and calls :func:`notebook_parameters`, which fills the ``None`` values
from the profile, validates everything, and refuses parameter names the chapter does
not know - papermill itself only warns about those.

``quick`` is for tests (seconds), ``default`` is the published book (minutes on two
cores), ``full`` is for a bigger machine (more seeds, wider and deeper networks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from .activations import ACTIVATIONS
from .config import ConfigError, Param, resolve

PROFILES = ("quick", "default", "full")


@dataclass(frozen=True)
class Chapter:
    name: str
    params: tuple[Param, ...]
    profiles: dict[str, dict[str, Any]]


def _p(name: str, kind: str, help: str, **kw) -> Param:
    return Param(name, kind, None, help, optional=True, **kw)


_SEEDS = _p("seeds", "int", "independent seeds per configuration", low=1, high=1000)
_WIDTH = _p("width", "int", "units per hidden layer", low=2, high=8192)
_BATCH = Param("batch_size", "int", 64, "inputs per batch", low=2, high=65536)

CHAPTERS = {
    "depth": Chapter(
        "depth",
        (
            _SEEDS,
            _p("depth", "int", "hidden layers of the network whose layers we compare",
               low=2, high=1000),
            _WIDTH,
            _p("depths", "list[int]", "network depths for the depth sweep", low=1, high=1000),
            _BATCH,
            Param("relu_sigma_w", "list[float]", [1.2, 1.4142, 1.6],
                  "sigma_w values for ReLU (critical: sqrt 2)", low=0.01, high=10.0),
            Param("tanh_sigma_w", "list[float]", [0.8, 1.0, 1.5, 2.0],
                  "sigma_w values for tanh (critical: 1 when sigma_b = 0)", low=0.01, high=10.0),
            Param("sigma_b", "float", 0.0, "bias standard deviation", low=0.0, high=10.0),
        ),
        {
            "quick": dict(seeds=2, depth=12, width=64, depths=[2, 4, 8, 12]),
            "default": dict(seeds=6, depth=50, width=256,
                            depths=[1, 2, 5, 10, 20, 30, 50, 75, 100]),
            "full": dict(seeds=20, depth=100, width=1024,
                         depths=[1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200]),
        },
    ),
    "initialization": Chapter(
        "initialization",
        (
            _SEEDS,
            _p("depth", "int", "hidden layers in the signal-propagation measurements",
               low=2, high=1000),
            _WIDTH,
            _p("sigma_w_grid", "list[float]", "sigma_w values of the sweep", low=0.01, high=10.0),
            _BATCH,
            Param("sigma_b", "float", 0.0, "bias standard deviation in the sweep", low=0.0,
                  high=10.0),
            Param("schemes", "list[str]", ["default", "xavier", "he", "orthogonal"],
                  "named schemes to compare",
                  choices=("default", "normal", "xavier", "he", "orthogonal")),
            _p("train_seeds", "int", "seeds per initialization in the training experiment",
               low=1, high=1000),
            Param("train_depth", "int", 30, "hidden layers of the trained plain ReLU network",
                  low=1, high=1000),
            Param("train_width", "int", 128, "width of the trained network", low=2, high=8192),
            _p("train_steps", "int", "optimizer steps", low=1, high=10**6),
            Param("train_lr", "float", 0.01, "learning rate (SGD with momentum 0.9)",
                  low=1e-8, high=100.0),
            Param("train_inits", "list[str]", ["default", "xavier", "he", "normal"],
                  "schemes trained; 'normal' uses train_sigma_w",
                  choices=("default", "normal", "xavier", "he", "orthogonal")),
            Param("train_sigma_w", "float", 2.0, "sigma_w of the 'normal' scheme in training",
                  low=0.0, high=100.0),
        ),
        {
            "quick": dict(seeds=2, depth=10, width=64, sigma_w_grid=[0.5, 1.0, 1.5, 2.0, 3.0],
                          train_seeds=1, train_steps=20),
            "default": dict(seeds=6, depth=30, width=256,
                            sigma_w_grid=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5,
                                          2.75, 3.0],
                            train_seeds=3, train_steps=400),
            "full": dict(seeds=20, depth=50, width=1024,
                         sigma_w_grid=[round(0.25 + 0.125 * i, 3) for i in range(23)],
                         train_seeds=10, train_steps=2000),
        },
    ),
    "learning_rate": Chapter(
        "learning_rate",
        (
            _SEEDS,
            _WIDTH,
            _BATCH,
            _p("depths", "list[int]", "hidden layers of the compared networks", low=1,
               high=1000),
            Param("sigma_ws", "list[float]", [1.4142, 1.0],
                  "sigma_w of the compared initializations (sqrt 2 = He for ReLU)",
                  low=0.01, high=10.0),
            _p("lr_ratios", "list[float]",
               "learning rates, as multiples of each seed's 2 / lambda_max at init",
               low=1e-4, high=1e4),
            _p("steps", "int", "plain-SGD steps per run", low=1, high=10**6),
            Param("traj_ratios", "list[float]", [0.5, 2.0, 4.0],
                  "multiples of 2 / lambda_max(init) whose sharpness is tracked during training",
                  low=1e-4, high=1e4),
            _p("measure_every", "int", "steps between sharpness measurements", low=1,
               high=10**6),
        ),
        {
            "quick": dict(seeds=1, width=32, depths=[2, 6],
                          lr_ratios=[0.5, 1.0, 2.0, 4.0, 8.0, 16.0], steps=20, measure_every=10),
            "default": dict(seeds=3, width=128, depths=[4, 16],
                            lr_ratios=[0.5, 0.71, 1.0, 1.41, 2.0, 2.83, 4.0, 5.66, 8.0, 11.3,
                                       16.0],
                            steps=100, measure_every=10),
            "full": dict(seeds=10, width=256, depths=[4, 16],
                         lr_ratios=[round(2 ** (k / 4), 3) for k in range(-4, 21)],
                         steps=500, measure_every=10),
        },
    ),
    "recurrence": Chapter(
        "recurrence",
        (
            _SEEDS,
            _p("seq_len", "int", "time steps T of the gradient measurements", low=2,
               high=100_000),
            _p("hidden_size", "int", "hidden units of the measured cells", low=2, high=4096),
            Param("spectral_radii", "list[float]", [0.3, 0.45, 0.7, 1.0, 1.5, 2.0, 3.0],
                  "spectral radii of the vanilla RNN's recurrent matrix", low=0.0, high=100.0),
            Param("gated_radii", "list[float]", [0.5, 1.0, 3.0],
                  "spectral radii of each gate block of the LSTM and GRU", low=0.0,
                  high=100.0),
            Param("input_std", "float", 1.0, "standard deviation of each unit's input drive",
                  low=0.0, high=100.0),
            Param("cliff_w", "float", 8.0, "w of the one-unit model's slice across the cliff",
                  low=4.5, high=50.0),
            _p("train_seeds", "int", "seeds per training configuration", low=1, high=1000),
            _p("train_seq_lens", "list[int]", "sequence lengths of the adding problem",
               low=2, high=100_000),
            _p("train_steps", "int", "optimizer steps per training run", low=1, high=10**6),
            Param("train_hidden", "int", 32, "hidden units of the trained networks", low=2,
                  high=4096),
            Param("train_radius", "float", 1.0, "spectral radius of the trained RNNs",
                  low=0.0, high=100.0),
            Param("explode_radius", "float", 3.0,
                  "spectral radius of the RNN started in the exploding regime", low=0.0,
                  high=100.0),
            Param("train_lr", "float", 0.01, "learning rate", low=1e-8, high=100.0),
            Param("train_optimizer", "str", "adam", "optimizer",
                  choices=("sgd", "momentum", "adam", "rmsprop")),
            _p("gated_seeds", "int", "seeds per gated cell (LSTM, GRU) in training", low=1,
               high=1000),
        ),
        {
            "quick": dict(seeds=2, seq_len=30, hidden_size=32, train_seeds=1,
                          train_seq_lens=[5, 15], train_steps=40, gated_seeds=1),
            "default": dict(seeds=4, seq_len=100, hidden_size=64, train_seeds=3,
                            train_seq_lens=[5, 10, 20, 40], train_steps=300, gated_seeds=2),
            "full": dict(seeds=10, seq_len=300, hidden_size=256, train_seeds=10,
                         train_seq_lens=[5, 10, 20, 40, 80, 160], train_steps=2000,
                         gated_seeds=5),
        },
    ),
    "activation": Chapter(
        "activation",
        (
            _SEEDS,
            _p("depth", "int", "hidden layers in the signal-propagation measurements",
               low=2, high=1000),
            _WIDTH,
            _BATCH,
            Param("activations", "list[str]",
                  ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu"],
                  "activations compared", choices=tuple(ACTIVATIONS)),
            Param("sigma_w", "float", 1.4142, "shared weight scale of the matched comparison",
                  low=0.01, high=10.0),
            _p("saturation_grid", "list[float]", "sigma_w values of the saturation sweep",
               low=0.01, high=20.0),
            _p("train_seeds", "int", "seeds per configuration in training", low=1, high=1000),
            Param("train_activations", "list[str]", ["sigmoid", "tanh", "relu", "selu"],
                  "activations trained", choices=tuple(ACTIVATIONS)),
            Param("train_depth", "int", 20, "hidden layers of the trained network", low=1,
                  high=1000),
            Param("train_width", "int", 128, "width of the trained network", low=2, high=8192),
            _p("train_steps", "int", "optimizer steps", low=1, high=10**6),
            Param("train_lr", "float", 0.01, "learning rate (SGD with momentum 0.9)",
                  low=1e-8, high=100.0),
        ),
        {
            "quick": dict(seeds=2, depth=8, width=64, saturation_grid=[0.5, 2.0, 8.0],
                          train_seeds=1, train_steps=20),
            "default": dict(seeds=5, depth=30, width=256,
                            saturation_grid=[0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0],
                            train_seeds=2, train_steps=300),
            "full": dict(seeds=20, depth=50, width=1024,
                         saturation_grid=[0.25 * 1.25**i for i in range(18)],
                         train_seeds=10, train_steps=2000),
        },
    ),
    "normalization": Chapter(
        "normalization",
        (
            _SEEDS,
            _p("depth", "int", "hidden layers in the signal-propagation measurements",
               low=2, high=1000),
            _WIDTH,
            _p("batch_sizes", "list[int]", "batch sizes for batch norm's explosion rate",
               low=2, high=65536),
            _p("train_seeds", "int", "seeds per configuration in training", low=1, high=1000),
            Param("train_depth", "int", 30, "hidden layers of the trained ReLU network",
                  low=1, high=1000),
            Param("train_width", "int", 64, "width of the trained network", low=2, high=8192),
            _p("train_steps", "int", "optimizer steps", low=1, high=10**6),
            Param("train_lrs", "list[float]", [0.01, 0.1],
                  "learning rates (SGD with momentum 0.9)", low=1e-8, high=100.0),
            _p("input_spreads", "list[float]", "largest/smallest feature scale ratios",
               low=1.0, high=1e6),
            _p("input_lrs", "list[float]", "learning rates of the input-scale sweep (plain SGD)",
               low=1e-8, high=100.0),
        ),
        {
            "quick": dict(seeds=2, depth=8, width=64, batch_sizes=[16, 64], train_seeds=1,
                          train_steps=20, input_spreads=[1.0, 100.0], input_lrs=[0.01, 0.1]),
            "default": dict(seeds=4, depth=30, width=256, batch_sizes=[16, 64, 256],
                            train_seeds=2, train_steps=200, input_spreads=[1.0, 10.0, 100.0],
                            input_lrs=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]),
            "full": dict(seeds=10, depth=50, width=1024, batch_sizes=[16, 64, 256, 1024],
                         train_seeds=5, train_steps=1000,
                         input_spreads=[1.0, 3.0, 10.0, 30.0, 100.0, 1000.0],
                         input_lrs=[10 ** (k / 4) for k in range(-20, 1)]),
        },
    ),
    "causes": Chapter(
        "causes",
        (
            _SEEDS,
            _p("steps", "int", "optimizer steps per training run", low=1, high=10**6),
            Param("rnn_radius", "float", 3.0, "spectral radius of the recurrent networks",
                  low=0.0, high=100.0),
            Param("rnn_long", "int", 40, "long sequence length", low=2, high=100_000),
            Param("rnn_short", "int", 5, "short sequence length", low=2, high=100_000),
        ),
        {
            "quick": dict(seeds=1, steps=15),
            "default": dict(seeds=3, steps=200),
            "full": dict(seeds=10, steps=1000),
        },
    ),
}


def notebook_parameters(chapter: str, namespace: dict, before: set[str]) -> dict[str, Any]:
    """The chapter's validated parameters from a notebook's global namespace.

    ``before`` is the set of global names that existed before the parameters cell, so
    every name defined by the parameters cell or injected by papermill is a parameter;
    names the chapter does not declare are refused (a typo like ``-p dept 60`` must not
    silently run the default).
    """
    spec = CHAPTERS[chapter]
    given = {k: v for k, v in namespace.items() if k not in before and not k.startswith("_")}
    profile = given.pop("profile", "default")
    if profile not in PROFILES:
        raise ConfigError(
            f"parameter 'profile': got {profile!r}; allowed: one of {', '.join(PROFILES)}")
    resolved = resolve(spec.params, given, f"notebook {chapter!r}")
    for key, value in spec.profiles[profile].items():
        if resolved[key] is None:
            resolved[key] = value
    return {"profile": profile, **resolved}


def parameter_table(params: dict[str, Any]) -> pd.DataFrame:
    """The parameters actually used, for display at the top of a chapter."""
    return pd.DataFrame({"parameter": list(params), "value": [str(v) for v in params.values()]})
