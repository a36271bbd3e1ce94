"""monitoring: the chapter's spec."""

from __future__ import annotations

from ..engine.params import Param
from . import Chapter
from ._shared import SEEDS, from_profile

CHAPTER = Chapter(
    "monitoring",
    (
        SEEDS,
        Param("depth", "int", 10, "hidden layers of the trained ReLU network", low=1, high=1000),
        Param("width", "int", 64, "width of the trained network", low=2, high=8192),
        from_profile(
            "steps", "int", "largest number of optimizer steps per training run", low=1, high=10**6
        ),
        Param(
            "warmup_steps", "int", 100, "steps of linear learning-rate warmup", low=0, high=10**6
        ),
        Param(
            "explode_lr",
            "float",
            0.6,
            "peak learning rate of the exploding runs (SGD with momentum 0.9)",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "healthy_lr",
            "float",
            0.01,
            "peak learning rate of their healthy twins",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "log_every",
            "int",
            10,
            "steps between per-layer samples and update ratios",
            low=1,
            high=10**6,
        ),
        Param(
            "spike_factor",
            "float",
            10.0,
            "the detector flags a gradient norm above this multiple of its running median",
            low=1.0,
            high=1e6,
        ),
        Param(
            "spike_window", "int", 20, "steps in the detector's running median", low=1, high=10**6
        ),
        Param(
            "factors",
            "list[float]",
            [3.0, 10.0, 100.0],
            "detector factors compared",
            low=1.0,
            high=1e6,
        ),
        from_profile(
            "demo_seeds", "int", "seeds of the plain-PyTorch example loop", low=1, high=1000
        ),
        from_profile(
            "demo_steps", "int", "largest number of steps of the example loop", low=1, high=10**6
        ),
        Param(
            "demo_depth", "int", 8, "hidden layers of the example's nn.Sequential", low=1, high=1000
        ),
        Param(
            "demo_lr",
            "float",
            1.0,
            "peak learning rate of the example loop (SGD with momentum 0.9)",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "timing_depth",
            "int",
            20,
            "hidden layers of the network whose step is timed",
            low=1,
            high=1000,
        ),
        Param("timing_width", "int", 64, "width of the timed network", low=2, high=8192),
        from_profile("timing_steps", "int", "steps of each timed run", low=1, high=10**6),
        from_profile(
            "timing_repeat",
            "int",
            "timed rounds of the monitoring cost (anomaly mode: half)",
            low=1,
            high=100,
        ),
        from_profile(
            "anomaly_steps",
            "int",
            "steps of each run timed under detect_anomaly",
            low=1,
            high=10**6,
        ),
    ),
    {
        "quick": dict(
            seeds=2,
            steps=50,
            demo_seeds=2,
            demo_steps=30,
            timing_steps=5,
            timing_repeat=2,
            anomaly_steps=2,
        ),
        "default": dict(
            seeds=5,
            steps=120,
            demo_seeds=5,
            demo_steps=60,
            timing_steps=40,
            timing_repeat=8,
            anomaly_steps=10,
        ),
        "full": dict(
            seeds=20,
            steps=300,
            demo_seeds=20,
            demo_steps=100,
            timing_steps=100,
            timing_repeat=20,
            anomaly_steps=30,
        ),
    },
)
