"""recurrence: the chapter's spec."""

from __future__ import annotations

from ..engine.params import Param
from ..train import OPTIMIZERS
from . import Chapter
from ._shared import SEEDS, from_profile

CHAPTER = Chapter(
    "recurrence",
    (
        SEEDS,
        from_profile(
            "seq_len", "int", "time steps T of the gradient measurements", low=2, high=100_000
        ),
        from_profile("hidden_size", "int", "hidden units of the measured cells", low=2, high=4096),
        Param(
            "spectral_radii",
            "list[float]",
            [0.3, 0.45, 0.7, 1.0, 1.5, 2.0, 3.0],
            "spectral radii of the vanilla RNN's recurrent matrix",
            low=0.0,
            high=100.0,
        ),
        Param(
            "gated_radii",
            "list[float]",
            [0.5, 1.0, 3.0],
            "spectral radii of each gate block of the LSTM and GRU",
            low=0.0,
            high=100.0,
        ),
        Param(
            "input_std",
            "float",
            1.0,
            "standard deviation of each unit's input drive",
            low=0.0,
            high=100.0,
        ),
        Param(
            "cliff_w",
            "float",
            8.0,
            "w of the one-unit model's slice across the cliff",
            low=4.5,
            high=50.0,
        ),
        from_profile("train_seeds", "int", "seeds per training configuration", low=1, high=1000),
        from_profile(
            "train_seq_lens",
            "list[int]",
            "sequence lengths of the adding problem",
            low=2,
            high=100_000,
        ),
        from_profile("train_steps", "int", "optimizer steps per training run", low=1, high=10**6),
        Param("train_hidden", "int", 32, "hidden units of the trained networks", low=2, high=4096),
        Param(
            "train_radius", "float", 1.0, "spectral radius of the trained RNNs", low=0.0, high=100.0
        ),
        Param(
            "explode_radius",
            "float",
            3.0,
            "spectral radius of the RNN started in the exploding regime",
            low=0.0,
            high=100.0,
        ),
        Param("train_lr", "float", 0.01, "learning rate", low=1e-8, high=100.0),
        Param("train_optimizer", "str", "adam", "optimizer", choices=OPTIMIZERS),
        from_profile(
            "gated_seeds", "int", "seeds per gated cell (LSTM, GRU) in training", low=1, high=1000
        ),
    ),
    {
        "quick": dict(
            seeds=2,
            seq_len=30,
            hidden_size=32,
            train_seeds=1,
            train_seq_lens=[5, 15],
            train_steps=40,
            gated_seeds=1,
        ),
        "default": dict(
            seeds=4,
            seq_len=100,
            hidden_size=64,
            train_seeds=3,
            train_seq_lens=[5, 10, 20, 40],
            train_steps=300,
            gated_seeds=2,
        ),
        "full": dict(
            seeds=10,
            seq_len=300,
            hidden_size=256,
            train_seeds=10,
            train_seq_lens=[5, 10, 20, 40, 80, 160],
            train_steps=2000,
            gated_seeds=5,
        ),
    },
)
