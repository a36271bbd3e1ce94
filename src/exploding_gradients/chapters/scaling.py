"""scaling: the chapter's spec."""

from __future__ import annotations

from . import Chapter
from ._shared import from_profile

CHAPTER = Chapter(
    "scaling",
    (
        from_profile(
            "repeat", "int", "timed repetitions per point (the median is reported)", low=1, high=100
        ),
        from_profile(
            "steps",
            "int",
            "training steps per timed run (the slope from a quarter of them)",
            low=4,
            high=10**6,
        ),
        from_profile(
            "depths", "list[int]", "hidden layers of the depth sweep (width 64)", low=1, high=1000
        ),
        from_profile(
            "widths", "list[int]", "units per layer of the width sweep (depth 10)", low=1, high=8192
        ),
        from_profile(
            "seq_lens", "list[int]", "sequence lengths of the recurrent sweep", low=2, high=100_000
        ),
        from_profile(
            "ensemble_seeds",
            "int",
            "seeds trained at once in the batched-vs-loop timing",
            low=1,
            high=1000,
        ),
        from_profile(
            "sweep_jobs", "int", "jobs of the serial-vs-local sweep timing", low=1, high=10_000
        ),
    ),
    {
        "quick": dict(
            repeat=1,
            steps=5,
            depths=[2, 4],
            widths=[16, 32],
            seq_lens=[5, 10],
            ensemble_seeds=2,
            sweep_jobs=2,
        ),
        "default": dict(
            repeat=3,
            steps=20,
            depths=[5, 10, 20, 40, 80],
            widths=[16, 32, 64, 128, 256, 512],
            seq_lens=[10, 20, 40, 80, 160],
            ensemble_seeds=16,
            sweep_jobs=8,
        ),
        "full": dict(
            repeat=5,
            steps=50,
            depths=[5, 10, 20, 40, 80, 160],
            widths=[16, 32, 64, 128, 256, 512, 1024, 2048],
            seq_lens=[10, 20, 40, 80, 160, 320, 640],
            ensemble_seeds=64,
            sweep_jobs=32,
        ),
    },
)
