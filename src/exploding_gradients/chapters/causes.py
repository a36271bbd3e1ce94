"""causes: the chapter's spec."""

from __future__ import annotations

from ..engine.params import Param
from . import Chapter
from ._shared import SEEDS, from_profile

CHAPTER = Chapter(
    "causes",
    (
        SEEDS,
        from_profile("steps", "int", "optimizer steps per training run", low=1, high=10**6),
        Param(
            "rnn_radius",
            "float",
            3.0,
            "spectral radius of the recurrent networks",
            low=0.0,
            high=100.0,
        ),
        Param("rnn_long", "int", 40, "long sequence length", low=2, high=100_000),
        Param("rnn_short", "int", 5, "short sequence length", low=2, high=100_000),
    ),
    {
        "quick": dict(seeds=1, steps=15),
        "default": dict(seeds=3, steps=200),
        "full": dict(seeds=10, steps=1000),
    },
)
