"""architecture: the chapter's spec."""

from __future__ import annotations

from ..engine.params import Param
from ..init import SCHEMES
from . import Chapter
from ._shared import SEEDS, WIDTH, from_profile

CHAPTER = Chapter(
    "architecture",
    (
        SEEDS,
        from_profile(
            "depth",
            "int",
            "hidden layers of the deep networks (at init and in training)",
            low=2,
            high=1000,
        ),
        WIDTH,
        from_profile("train_seeds", "int", "seeds per configuration in training", low=1, high=1000),
        from_profile(
            "train_steps", "int", "optimizer steps per MLP training run", low=1, high=10**6
        ),
        Param(
            "train_lr", "float", 0.01, "learning rate (SGD with momentum 0.9)", low=1e-8, high=100.0
        ),
        Param(
            "large_sigma_w",
            "float",
            2.0,
            "sigma_w of the exploding plain ReLU network (init normal)",
            low=0.01,
            high=100.0,
        ),
        Param(
            "chaotic_sigma_w",
            "float",
            2.5,
            "sigma_w of the tanh network in its chaotic phase (init normal)",
            low=0.01,
            high=100.0,
        ),
        Param(
            "relu_inits",
            "list[str]",
            ["normal", "xavier", "he", "orthogonal", "lsuv"],
            "schemes measured at init on the ReLU network (normal uses large_sigma_w)",
            choices=SCHEMES,
        ),
        Param(
            "train_relu_inits",
            "list[str]",
            ["normal", "he", "orthogonal", "lsuv"],
            "schemes trained on the ReLU network",
            choices=SCHEMES,
        ),
        Param(
            "tanh_inits",
            "list[str]",
            ["normal", "xavier", "orthogonal", "lsuv"],
            "schemes measured at init on the tanh network (normal uses chaotic_sigma_w)",
            choices=SCHEMES,
        ),
        Param(
            "train_tanh_inits",
            "list[str]",
            ["normal", "xavier", "lsuv"],
            "schemes trained on the tanh network",
            choices=SCHEMES,
        ),
        Param(
            "input_spread",
            "float",
            100.0,
            "largest/smallest input feature scale of the unnormalized-input case",
            low=1.0,
            high=1e6,
        ),
        Param(
            "input_lr", "float", 0.1, "plain-SGD learning rate of that case", low=1e-8, high=100.0
        ),
        Param("input_depth", "int", 3, "hidden layers of that network", low=1, high=1000),
        Param(
            "residual_scales",
            "list[float]",
            [0.1, 0.25, 0.5, 0.75, 1.0],
            "residual branch scales s measured at init",
            low=0.0,
            high=100.0,
        ),
        from_profile(
            "residual_depths",
            "list[int]",
            "depths of the residual depth sweep at init",
            low=1,
            high=1000,
        ),
        Param(
            "rnn_seq_len", "int", 20, "sequence length of the adding problem", low=2, high=100_000
        ),
        Param("rnn_hidden", "int", 32, "hidden units of the recurrent cells", low=2, high=4096),
        Param(
            "rnn_radius",
            "float",
            1.0,
            "spectral radius of each recurrent block",
            low=0.0,
            high=100.0,
        ),
        Param("rnn_lr", "float", 0.01, "learning rate (Adam)", low=1e-8, high=100.0),
        Param(
            "clip_threshold",
            "float",
            1.0,
            "global-norm clipping threshold for the RNN",
            low=1e-12,
            high=1e12,
        ),
        from_profile(
            "rnn_steps", "int", "optimizer steps per recurrent training run", low=1, high=10**6
        ),
        from_profile("rnn_seeds", "int", "seeds per recurrent configuration", low=1, high=1000),
        from_profile(
            "timing_steps",
            "int",
            "optimizer steps of the longer timed run (the shorter has a quarter)",
            low=2,
            high=10**6,
        ),
        from_profile(
            "timing_repeat", "int", "timed repetitions (median reported)", low=1, high=100
        ),
    ),
    {
        "quick": dict(
            seeds=1,
            depth=6,
            width=16,
            train_seeds=1,
            train_steps=10,
            residual_depths=[3, 6],
            rnn_steps=10,
            rnn_seeds=1,
            timing_steps=2,
            timing_repeat=1,
        ),
        "default": dict(
            seeds=3,
            depth=30,
            width=64,
            train_seeds=3,
            train_steps=80,
            residual_depths=[5, 10, 20, 30, 50],
            rnn_steps=120,
            rnn_seeds=3,
            timing_steps=60,
            timing_repeat=3,
        ),
        "full": dict(
            seeds=20,
            depth=50,
            width=256,
            train_seeds=10,
            train_steps=1000,
            residual_depths=[5, 10, 20, 30, 50, 100, 200],
            rnn_steps=1000,
            rnn_seeds=10,
            timing_steps=100,
            timing_repeat=5,
        ),
    },
)
