"""Parameters several chapters share, declared once."""

from __future__ import annotations

from ..engine.params import Param


def from_profile(name: str, kind: str, help: str, **kw) -> Param:
    """A parameter whose default (None) is taken from the chapter's profile."""
    return Param(name, kind, None, help, optional=True, **kw)


SEEDS = from_profile("seeds", "int", "independent seeds per configuration", low=1, high=1000)
WIDTH = from_profile("width", "int", "units per hidden layer", low=2, high=8192)
BATCH = Param("batch_size", "int", 64, "inputs per batch", low=2, high=65536)

#: The weight scales whose per-layer gradient factor is measured against mean-field theory
#: (the depth and convnets chapters), around each activation's critical value.
SIGMA_SWEEP = (
    Param("relu_sigma_w", "list[float]", [1.2, 1.4142, 1.6],
          "sigma_w values for ReLU (critical: sqrt 2)", low=0.01, high=10.0),
    Param("tanh_sigma_w", "list[float]", [0.8, 1.0, 1.5, 2.0],
          "sigma_w values for tanh (critical: 1 when sigma_b is 0)", low=0.01, high=10.0),
    Param("sigma_b", "float", 0.0, "bias standard deviation", low=0.0, high=10.0),
)
