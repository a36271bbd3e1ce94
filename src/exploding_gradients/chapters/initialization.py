"""initialization: the chapter's spec."""

from __future__ import annotations

from ..engine.params import Param
from ..init import SCHEMES
from . import Chapter
from ._shared import BATCH, SEEDS, WIDTH, from_profile

CHAPTER = Chapter(
    "initialization",
    (
        SEEDS,
        from_profile(
            "depth", "int", "hidden layers in the signal-propagation measurements", low=2, high=1000
        ),
        WIDTH,
        from_profile(
            "sigma_w_grid", "list[float]", "sigma_w values of the sweep", low=0.01, high=10.0
        ),
        BATCH,
        Param("sigma_b", "float", 0.0, "bias standard deviation in the sweep", low=0.0, high=10.0),
        Param(
            "schemes",
            "list[str]",
            ["default", "xavier", "he", "orthogonal"],
            "named schemes to compare",
            choices=SCHEMES,
        ),
        from_profile(
            "train_seeds",
            "int",
            "seeds per initialization in the training experiment",
            low=1,
            high=1000,
        ),
        Param(
            "train_depth",
            "int",
            30,
            "hidden layers of the trained plain ReLU network",
            low=1,
            high=1000,
        ),
        Param("train_width", "int", 128, "width of the trained network", low=2, high=8192),
        from_profile("train_steps", "int", "optimizer steps", low=1, high=10**6),
        Param(
            "train_lr", "float", 0.01, "learning rate (SGD with momentum 0.9)", low=1e-8, high=100.0
        ),
        Param(
            "train_inits",
            "list[str]",
            ["default", "xavier", "he", "normal"],
            "schemes trained; 'normal' uses train_sigma_w",
            choices=SCHEMES,
        ),
        Param(
            "train_sigma_w",
            "float",
            2.0,
            "sigma_w of the 'normal' scheme in training",
            low=0.0,
            high=100.0,
        ),
    ),
    {
        "quick": dict(
            seeds=2,
            depth=10,
            width=64,
            sigma_w_grid=[0.5, 1.0, 1.5, 2.0, 3.0],
            train_seeds=1,
            train_steps=20,
        ),
        "default": dict(
            seeds=6,
            depth=30,
            width=256,
            sigma_w_grid=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0],
            train_seeds=3,
            train_steps=400,
        ),
        "full": dict(
            seeds=20,
            depth=50,
            width=1024,
            sigma_w_grid=[round(0.25 + 0.125 * i, 3) for i in range(23)],
            train_seeds=10,
            train_steps=2000,
        ),
    },
)
