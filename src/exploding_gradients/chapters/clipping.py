"""clipping: the chapter's spec."""

from __future__ import annotations

from ..engine.params import Param
from . import Chapter
from ._shared import SEEDS, from_profile

CHAPTER = Chapter(
    "clipping",
    (
        SEEDS,
        Param("width", "int", 64, "units per hidden layer of the MLPs", low=2, high=8192),
        from_profile("steps", "int", "optimizer steps of each MLP run", low=1, high=10**6),
        from_profile("rnn_steps", "int", "optimizer steps of each RNN run", low=1, high=10**6),
        Param("mlp_depth", "int", 4, "hidden layers of the regression MLP", low=1, high=1000),
        Param(
            "mlp_lr",
            "float",
            0.2,
            "too-large learning rate of the regression MLP (plain SGD)",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "healthy_lr",
            "float",
            0.01,
            "learning rate of its healthy twin (plain SGD)",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "rnn_seq_len", "int", 40, "sequence length of the adding problem", low=2, high=100_000
        ),
        Param("rnn_radius", "float", 3.0, "spectral radius of the tanh RNN", low=0.0, high=100.0),
        Param("rnn_hidden", "int", 32, "hidden units of the RNN", low=2, high=4096),
        Param("rnn_lr", "float", 0.1, "learning rate of the RNN (plain SGD)", low=1e-8, high=100.0),
        Param(
            "rnn_healthy_lr",
            "float",
            0.01,
            "plain-SGD learning rate of the RNN's unclipped window for Pascanu's heuristic",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "rnn_adam_lr",
            "float",
            0.01,
            "learning rate of the RNN trained with Adam",
            low=1e-8,
            high=100.0,
        ),
        from_profile(
            "norm_thresholds",
            "list[float]",
            "largest gradient norm c of norm clipping",
            low=1e-12,
            high=1e12,
        ),
        from_profile(
            "value_thresholds",
            "list[float]",
            "largest |g_i| of value clipping",
            low=1e-12,
            high=1e12,
        ),
        from_profile(
            "agc_factors",
            "list[float]",
            "clip factors lambda of adaptive gradient clipping",
            low=1e-12,
            high=1e12,
        ),
        from_profile(
            "direction_thresholds",
            "list[float]",
            "thresholds (and AGC factors) of the direction measurement",
            low=1e-12,
            high=1e12,
        ),
        Param(
            "direction_depth", "int", 30, "hidden layers of the sigma_w network", low=2, high=1000
        ),
        Param(
            "direction_sigma_w",
            "float",
            2.0,
            "sigma_w of the exploding ReLU network",
            low=0.0,
            high=100.0,
        ),
        Param(
            "direction_step",
            "int",
            2,
            "step of the large-learning-rate run whose gradient is clipped",
            low=0,
            high=10**6,
        ),
        from_profile(
            "pascanu_window",
            "int",
            "unclipped steps averaged for Pascanu's heuristic",
            low=1,
            high=10**6,
        ),
        Param(
            "adam_threshold",
            "float",
            1.0,
            "norm threshold of the RNN's Adam check",
            low=1e-12,
            high=1e12,
        ),
        from_profile(
            "timing_rounds", "int", "interleaved rounds of the per-step timing", low=1, high=1000
        ),
    ),
    {
        "quick": dict(
            seeds=1,
            steps=20,
            rnn_steps=10,
            pascanu_window=5,
            timing_rounds=1,
            norm_thresholds=[0.1, 10.0],
            value_thresholds=[0.01, 1.0],
            agc_factors=[0.01, 1.0],
            direction_thresholds=[1e-3, 1.0, 100.0],
        ),
        "default": dict(
            seeds=3,
            steps=100,
            rnn_steps=40,
            pascanu_window=20,
            timing_rounds=3,
            norm_thresholds=[0.1, 1.0, 10.0, 100.0, 1000.0],
            value_thresholds=[0.01, 0.1, 1.0, 10.0],
            agc_factors=[0.001, 0.01, 0.1, 1.0],
            direction_thresholds=[1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0],
        ),
        "full": dict(
            seeds=10,
            steps=1000,
            rnn_steps=1000,
            pascanu_window=50,
            timing_rounds=7,
            norm_thresholds=[0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0],
            value_thresholds=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0],
            agc_factors=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
            direction_thresholds=[10 ** (k / 2) for k in range(-8, 5)],
        ),
    },
)
