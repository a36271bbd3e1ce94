"""matrix: the chapter's spec."""

from __future__ import annotations

from ..engine.params import Param
from . import Chapter
from ._shared import SEEDS, WIDTH, from_profile

CHAPTER = Chapter(
    "matrix",
    (
        SEEDS,
        from_profile("steps", "int", "optimizer steps of every run", low=1, high=10**6),
        from_profile("depth", "int", "hidden layers of the deep MLP rows", low=1, high=1000),
        WIDTH,
        Param("n_train", "int", 512, "training samples of the MLP tasks", low=2, high=10**7),
        Param("batch_size", "int", 64, "minibatch size of the MLPs", low=2, high=65536),
        Param(
            "clip_norm",
            "float",
            1.0,
            "norm clipping: largest global gradient norm",
            low=1e-12,
            high=1e12,
        ),
        Param("clip_value", "float", 0.1, "value clipping: largest |g_i|", low=1e-12, high=1e12),
        Param("agc_lambda", "float", 0.01, "adaptive clipping factor lambda", low=1e-12, high=1e12),
        Param(
            "warmup_fraction",
            "float",
            0.1,
            "linear warmup over this fraction of steps",
            low=0.0,
            high=1.0,
        ),
        Param("l2", "float", 1e-3, "L2 penalty strength lambda", low=0.0, high=1e6),
        Param(
            "stop_factor",
            "float",
            10.0,
            "early stopping: loss above this x the first loss",
            low=1.0,
            high=1e12,
        ),
        Param("adam_lr", "float", 1e-3, "learning rate of the Adam column", low=1e-8, high=100.0),
        Param(
            "stall_threshold",
            "float",
            0.9,
            "stalled: final loss above this x the best constant prediction's",
            low=0.0,
            high=10.0,
        ),
        from_profile(
            "timing_steps", "int", "steps of each timed run (cost table)", low=1, high=10**6
        ),
        from_profile(
            "timing_repeat", "int", "timed rounds (the median ratio is used)", low=1, high=100
        ),
    ),
    {
        "quick": dict(seeds=1, steps=4, depth=4, width=16, timing_steps=2, timing_repeat=1),
        "default": dict(seeds=3, steps=50, depth=16, width=64, timing_steps=10, timing_repeat=3),
        "full": dict(seeds=10, steps=1000, depth=30, width=128, timing_steps=100, timing_repeat=5),
    },
)
