"""Exploding Gradients: measured experiments on the exploding-gradient problem.

>>> import exploding_gradients as eg
>>> df = eg.run("signal_propagation", depth=30, activation="tanh", seeds=3)
"""

import importlib
import sys

from ._version import __version__

try:  # loading torch takes seconds: Ctrl-C meanwhile ends with a message, not a traceback
    from .engine.backends import set_backend, use_backend
    from .engine.params import ConfigError
    from .engine.registry import REGISTRY
    from .engine.runner import run, sweep
    from .monitor import GradientMonitor

    # Importing the experiment modules registers their experiments by name.
    for _module in ("feedforward", "curvature", "recurrent"):
        importlib.import_module(f"{__name__}.experiments.{_module}")
except KeyboardInterrupt:
    print("interrupted while loading exploding_gradients; nothing was computed",
          file=sys.stderr)
    raise SystemExit(130) from None

__all__ = ["REGISTRY", "ConfigError", "GradientMonitor", "__version__", "run", "set_backend",
           "sweep", "use_backend"]
