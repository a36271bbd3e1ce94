"""learning_rate: the chapter's spec."""

from __future__ import annotations

from ..engine.params import Param
from . import Chapter
from ._shared import BATCH, SEEDS, WIDTH, from_profile

CHAPTER = Chapter(
    "learning_rate",
    (
        SEEDS,
        WIDTH,
        BATCH,
        from_profile(
            "depths", "list[int]", "hidden layers of the compared networks", low=1, high=1000
        ),
        Param(
            "sigma_ws",
            "list[float]",
            [1.4142, 1.0],
            "sigma_w of the compared initializations (sqrt 2 is He for ReLU)",
            low=0.01,
            high=10.0,
        ),
        from_profile(
            "lr_ratios",
            "list[float]",
            "learning rates, as multiples of each seed's 2 / lambda_max at init",
            low=1e-4,
            high=1e4,
        ),
        from_profile("steps", "int", "plain-SGD steps per run", low=1, high=10**6),
        Param(
            "traj_ratios",
            "list[float]",
            [0.5, 2.0, 4.0],
            "multiples of 2 / lambda_max(init) whose sharpness is tracked during training",
            low=1e-4,
            high=1e4,
        ),
        from_profile(
            "measure_every", "int", "steps between sharpness measurements", low=1, high=10**6
        ),
    ),
    {
        "quick": dict(
            seeds=1,
            width=32,
            depths=[2, 6],
            lr_ratios=[0.5, 1.0, 2.0, 4.0, 8.0, 16.0],
            steps=20,
            measure_every=10,
        ),
        "default": dict(
            seeds=3,
            width=128,
            depths=[4, 16],
            lr_ratios=[0.5, 0.71, 1.0, 1.41, 2.0, 2.83, 4.0, 5.66, 8.0, 11.3, 16.0],
            steps=100,
            measure_every=10,
        ),
        "full": dict(
            seeds=10,
            width=256,
            depths=[4, 16],
            lr_ratios=[round(2 ** (k / 4), 3) for k in range(-4, 21)],
            steps=500,
            measure_every=10,
        ),
    },
)
