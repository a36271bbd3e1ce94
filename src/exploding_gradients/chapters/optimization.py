"""optimization: the chapter's spec."""

from __future__ import annotations

from ..engine.params import Param
from . import Chapter
from ._shared import SEEDS, from_profile

CHAPTER = Chapter(
    "optimization",
    (
        SEEDS,
        from_profile("width", "int", "units per hidden layer of every MLP", low=2, high=8192),
        from_profile(
            "steps",
            "int",
            "optimizer steps of the shallow MLPs (regression, inputs)",
            low=1,
            high=10**6,
        ),
        from_profile(
            "deep_steps", "int", "optimizer steps of the deep sigma_w network", low=1, high=10**6
        ),
        from_profile("rnn_steps", "int", "optimizer steps of the RNN", low=1, high=10**6),
        Param("deep_depth", "int", 30, "hidden layers of the deep ReLU network", low=1, high=1000),
        Param(
            "deep_sigma_w", "float", 2.0, "its too-large weight scale sigma_w", low=0.0, high=100.0
        ),
        Param(
            "deep_lr",
            "float",
            0.01,
            "its learning rate (SGD with momentum 0.9)",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "regression_lr",
            "float",
            0.2,
            "too-large learning rate of the depth-4 regression MLP (plain SGD)",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "input_spread",
            "float",
            100.0,
            "largest/smallest feature scale of the unnormalized-inputs MLP",
            low=1.0,
            high=1e6,
        ),
        Param("input_lr", "float", 0.1, "its learning rate (plain SGD)", low=1e-8, high=100.0),
        Param("rnn_radius", "float", 3.0, "spectral radius of the tanh RNN", low=0.0, high=100.0),
        Param(
            "rnn_seq_len", "int", 40, "sequence length of the adding problem", low=2, high=100_000
        ),
        Param("rnn_hidden", "int", 32, "hidden units of the RNN", low=2, high=4096),
        Param("rnn_lr", "float", 0.01, "learning rate of the RNN (Adam)", low=1e-8, high=100.0),
        Param(
            "rnn_sgd_lr",
            "float",
            0.1,
            "plain-SGD learning rate of the RNN in the early-stopping runs",
            low=1e-8,
            high=100.0,
        ),
        from_profile(
            "decay_rates",
            "list[float]",
            "penalty strengths, as lr x strength (the shrink per step)",
            low=1e-8,
            high=1.0,
        ),
        from_profile(
            "warmup_lrs",
            "list[float]",
            "peak learning rates of the warmup sweep (plain SGD, regression MLP)",
            low=1e-8,
            high=100.0,
        ),
        from_profile("warmup_lengths", "list[int]", "warmup lengths in steps", low=0, high=10**6),
        Param(
            "schedule_lr",
            "float",
            0.8,
            "peak learning rate of the schedule comparison",
            low=1e-8,
            high=100.0,
        ),
        from_profile(
            "optimizer_lrs",
            "list[float]",
            "learning rates given to every optimizer",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "stop_lrs",
            "list[float]",
            [0.1, 0.2],
            "learning rates of the early-stopping runs (plain SGD, regression MLP)",
            low=1e-8,
            high=100.0,
        ),
        from_profile(
            "stop_factors",
            "list[float]",
            "early-stopping thresholds (x the first loss)",
            low=1.0,
            high=1e12,
        ),
        Param(
            "safe_lr",
            "float",
            0.01,
            "learning rate of the safe reference runs",
            low=1e-8,
            high=100.0,
        ),
        from_profile("timing_steps", "int", "steps of each timed run", low=1, high=10**6),
        from_profile(
            "timing_repeat",
            "int",
            "timed repetitions of each variant (the fastest is used)",
            low=1,
            high=100,
        ),
    ),
    {
        "quick": dict(
            seeds=1,
            width=32,
            steps=20,
            deep_steps=4,
            rnn_steps=8,
            decay_rates=[0.5],
            warmup_lrs=[0.8],
            warmup_lengths=[0, 5],
            optimizer_lrs=[0.1],
            stop_factors=[10.0],
            timing_steps=5,
            timing_repeat=1,
        ),
        "default": dict(
            seeds=3,
            width=64,
            steps=120,
            deep_steps=25,
            rnn_steps=40,
            decay_rates=[1e-2, 1e-1, 0.5],
            warmup_lrs=[0.1, 0.2, 0.4, 0.8],
            warmup_lengths=[0, 10, 50],
            optimizer_lrs=[1e-3, 1e-2, 1e-1],
            stop_factors=[2.0, 10.0, 100.0],
            timing_steps=40,
            timing_repeat=3,
        ),
        "full": dict(
            seeds=10,
            width=128,
            steps=1000,
            deep_steps=300,
            rnn_steps=300,
            decay_rates=[1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 0.3, 0.5],
            warmup_lrs=[0.05, 0.1, 0.2, 0.4, 0.8, 1.6],
            warmup_lengths=[0, 10, 50, 200],
            optimizer_lrs=[1e-4, 1e-3, 1e-2, 1e-1, 1.0],
            stop_factors=[1.5, 2.0, 10.0, 100.0, 1000.0],
            timing_steps=200,
            timing_repeat=5,
        ),
    },
)
