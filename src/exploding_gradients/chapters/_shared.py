"""Parameters several chapters share, declared once."""

from __future__ import annotations

from ..engine.params import Param


def from_profile(name: str, kind: str, help: str, **kw) -> Param:
    """A parameter whose default (None) is taken from the chapter's profile."""
    return Param(name, kind, None, help, optional=True, **kw)


SEEDS = from_profile("seeds", "int", "independent seeds per configuration", low=1, high=1000)
WIDTH = from_profile("width", "int", "units per hidden layer", low=2, high=8192)
BATCH = Param("batch_size", "int", 64, "inputs per batch", low=2, high=65536)
