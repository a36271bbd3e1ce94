"""Exploding Gradients: measured experiments on the exploding-gradient problem.

>>> import exploding_gradients as eg
>>> df = eg.run("signal_propagation", depth=30, activation="tanh", seeds=3)
"""

import importlib

from ._version import __version__
from .engine.backends import set_backend, use_backend
from .engine.params import ConfigError
from .engine.registry import REGISTRY
from .engine.runner import run, sweep
from .monitor import GradientMonitor

# Importing the experiment modules registers their experiments by name.
for _module in ("feedforward", "curvature", "recurrent"):
    importlib.import_module(f"{__name__}.experiments.{_module}")

__all__ = ["REGISTRY", "ConfigError", "GradientMonitor", "__version__", "run", "set_backend",
           "sweep", "use_backend"]
