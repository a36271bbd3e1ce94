"""Experiments by name: a function ``(config, seed) -> DataFrame`` and what it declares.

An experiment module registers each of its functions with :func:`experiment`, declaring
beside it everything the run machinery needs to know about it: its parameters, the
checks of their combinations, its result columns, a memory estimate and, optionally, a
batched engine that computes several seeds at once.  Nothing here knows what a network
is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from . import deps
from .params import ConfigError, Param, resolve, short_repr

#: ``config -> (bytes per value, {term: number of values})``: see :mod:`.memory`.
MemoryEstimate = Callable[[dict], tuple[int, dict[str, int]]]


@dataclass(frozen=True)
class Experiment:
    name: str
    func: Callable[[dict, int], pd.DataFrame]
    params: tuple[Param, ...]
    description: str
    #: The columns of every table ``func`` returns (``sweep`` refuses a grid key that
    #: would overwrite one of them).
    columns: tuple[str, ...] = ()
    #: Checks of combinations of parameters, run after each value was validated alone.
    constraints: tuple[Callable[[dict], None], ...] = ()
    memory: MemoryEstimate | None = None
    #: Optional ``(config, seeds) -> [table of each seed]``: several seeds at once, with
    #: the tables of ``func`` up to floating-point rounding ...
    batched: Callable[[dict, list[int]], list[pd.DataFrame]] | None = None
    #: ... for the configurations where this returns '' (else it says why not).
    batched_unsupported: Callable[[dict], str] | None = None

    def resolve(self, overrides: dict | None = None) -> dict:
        """Defaults updated with ``overrides``, each value and their combination checked."""
        config = resolve(self.params, {} if overrides is None else overrides,
                         f"experiment {self.name!r}")
        for check in self.constraints:
            check(config)
        return config

    def runs_batched(self, config: dict) -> bool:
        """Whether ``config`` (resolved) asks for, and gets, the batched engine."""
        return (self.batched is not None and config.get("engine") == "batched"
                and not (self.batched_unsupported and self.batched_unsupported(config)))

    @property
    def code_version(self) -> str:
        """Version of the code this experiment runs (see :func:`.deps.function_version`)."""
        return deps.function_version(self.func)


REGISTRY: dict[str, Experiment] = {}


def experiment(name: str, params: tuple[Param, ...], *, columns: tuple[str, ...] = (),
               constraints: tuple[Callable[[dict], None], ...] = (),
               memory: MemoryEstimate | None = None, batched=None, batched_unsupported=None):
    """Register the decorated function under ``name``; its docstring's first line
    describes it.  The keywords are the :class:`Experiment` fields of the same names."""

    def register(func):
        doc = (func.__doc__ or "").strip().splitlines()
        REGISTRY[name] = Experiment(name, func, params, doc[0] if doc else "", tuple(columns),
                                    tuple(constraints), memory, batched, batched_unsupported)
        return func

    return register


def get(name: str) -> Experiment:
    if isinstance(name, str) and name in REGISTRY:
        return REGISTRY[name]
    raise ConfigError(
        f"unknown experiment {short_repr(name)}; known experiments: {', '.join(REGISTRY)}")
