"""normalization: the chapter's spec."""

from __future__ import annotations

from ..engine.params import Param
from . import Chapter
from ._shared import SEEDS, WIDTH, from_profile

CHAPTER = Chapter(
    "normalization",
    (
        SEEDS,
        from_profile(
            "depth", "int", "hidden layers in the signal-propagation measurements", low=2, high=1000
        ),
        WIDTH,
        from_profile(
            "batch_sizes",
            "list[int]",
            "batch sizes for batch norm's explosion rate",
            low=2,
            high=65536,
        ),
        from_profile("train_seeds", "int", "seeds per configuration in training", low=1, high=1000),
        Param(
            "train_depth", "int", 30, "hidden layers of the trained ReLU network", low=1, high=1000
        ),
        Param("train_width", "int", 64, "width of the trained network", low=2, high=8192),
        from_profile("train_steps", "int", "optimizer steps", low=1, high=10**6),
        Param(
            "train_lrs",
            "list[float]",
            [0.01, 0.1],
            "learning rates (SGD with momentum 0.9)",
            low=1e-8,
            high=100.0,
        ),
        from_profile(
            "input_spreads",
            "list[float]",
            "largest/smallest feature scale ratios",
            low=1.0,
            high=1e6,
        ),
        from_profile(
            "input_lrs",
            "list[float]",
            "learning rates of the input-scale sweep (plain SGD)",
            low=1e-8,
            high=100.0,
        ),
    ),
    {
        "quick": dict(
            seeds=2,
            depth=8,
            width=64,
            batch_sizes=[16, 64],
            train_seeds=1,
            train_steps=20,
            input_spreads=[1.0, 100.0],
            input_lrs=[0.01, 0.1],
        ),
        "default": dict(
            seeds=4,
            depth=30,
            width=256,
            batch_sizes=[16, 64, 256],
            train_seeds=2,
            train_steps=200,
            input_spreads=[1.0, 10.0, 100.0],
            input_lrs=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
        ),
        "full": dict(
            seeds=10,
            depth=50,
            width=1024,
            batch_sizes=[16, 64, 256, 1024],
            train_seeds=5,
            train_steps=1000,
            input_spreads=[1.0, 3.0, 10.0, 30.0, 100.0, 1000.0],
            input_lrs=[10 ** (k / 4) for k in range(-20, 1)],
        ),
    },
)
