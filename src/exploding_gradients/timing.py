"""Wall-clock measurements, kept apart from the cached, bit-reproducible results.

A time is a property of the machine, not of the configuration, so it is never cached:
every call measures afresh.  Report ratios (remedy vs none, batched vs looped) rather
than absolute seconds, which depend on the reader's laptop.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from .experiments import get


def seconds(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeat`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def experiment_seconds(name: str, config: dict | None = None, seed: int = 0, repeat: int = 3,
                       **overrides) -> float:
    """Median wall time of one uncached run of experiment ``name`` (validated first)."""
    exp = get(name)
    resolved = exp.resolve({**(config or {}), **overrides})
    return seconds(lambda: exp.func(resolved, seed), repeat=repeat)
