"""Exploding Gradients: measured experiments on the exploding-gradient problem.

>>> import exploding_gradients as eg
>>> df = eg.run("signal_propagation", depth=30, activation="tanh", seeds=3)
"""

__version__ = "0.1.0"

# Importing these modules registers their experiments (rnn_*, sharpness, lr_boundary).
from . import curvature, recurrence  # noqa: E402, F401
from .backends import set_backend, use_backend  # noqa: E402
from .config import ConfigError  # noqa: E402
from .experiments import REGISTRY, run, sweep  # noqa: E402
from .monitor import GradientMonitor  # noqa: E402

__all__ = ["REGISTRY", "ConfigError", "GradientMonitor", "__version__", "run", "set_backend",
           "sweep", "use_backend"]
