"""activation: the chapter's spec."""

from __future__ import annotations

from ..activations import ACTIVATIONS
from ..engine.params import Param
from . import Chapter
from ._shared import BATCH, SEEDS, WIDTH, from_profile

CHAPTER = Chapter(
    "activation",
    (
        SEEDS,
        from_profile(
            "depth", "int", "hidden layers in the signal-propagation measurements", low=2, high=1000
        ),
        WIDTH,
        BATCH,
        Param(
            "activations",
            "list[str]",
            ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu"],
            "activations compared",
            choices=tuple(ACTIVATIONS),
        ),
        Param(
            "sigma_w",
            "float",
            1.4142,
            "shared weight scale of the matched comparison",
            low=0.01,
            high=10.0,
        ),
        from_profile(
            "saturation_grid",
            "list[float]",
            "sigma_w values of the saturation sweep",
            low=0.01,
            high=20.0,
        ),
        from_profile("train_seeds", "int", "seeds per configuration in training", low=1, high=1000),
        Param(
            "train_activations",
            "list[str]",
            ["sigmoid", "tanh", "relu", "selu"],
            "activations trained",
            choices=tuple(ACTIVATIONS),
        ),
        Param("train_depth", "int", 20, "hidden layers of the trained network", low=1, high=1000),
        Param("train_width", "int", 128, "width of the trained network", low=2, high=8192),
        from_profile("train_steps", "int", "optimizer steps", low=1, high=10**6),
        Param(
            "train_lr", "float", 0.01, "learning rate (SGD with momentum 0.9)", low=1e-8, high=100.0
        ),
    ),
    {
        "quick": dict(
            seeds=2,
            depth=8,
            width=64,
            saturation_grid=[0.5, 2.0, 8.0],
            train_seeds=1,
            train_steps=20,
        ),
        "default": dict(
            seeds=5,
            depth=30,
            width=256,
            saturation_grid=[0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0],
            train_seeds=2,
            train_steps=300,
        ),
        "full": dict(
            seeds=20,
            depth=50,
            width=1024,
            saturation_grid=[0.25 * 1.25**i for i in range(18)],
            train_seeds=10,
            train_steps=2000,
        ),
    },
)
