""":func:`run` and :func:`sweep`: the one way to execute an experiment.

Both validate every configuration before any compute, refuse one that would not fit in
memory, take each (configuration, seed) from the cache or compute it on a backend, and
return one tidy table with a leading ``seed`` column.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from . import backends, cache
from .memory import check_memory
from .params import ConfigError, short_repr
from .registry import Experiment, get

MAX_SEEDS = 10_000


def run(name: str, config: dict | None = None, seeds: int = 1, use_cache: bool = True,
        backend: str | None = None, scheduler: str | None = None, workers: int | None = None,
        progress: bool | None = None, **overrides) -> pd.DataFrame:
    """Run experiment ``name`` for seeds ``0 .. seeds-1`` and return one tidy table.

    ``config`` and keyword ``overrides`` are merged (keywords win) and validated before
    anything is computed, and a configuration that would not fit in memory is refused
    (:func:`.memory.check_memory`).  Each seed's table is cached separately, so
    extending a sweep with more seeds reuses the ones already computed.

    The seeds run on ``backend`` (``serial``, ``local`` or ``dask``, with ``scheduler``
    and ``workers``; default: :func:`.backends.set_backend`'s); the table is the same
    whichever ran it.  ``progress``: a bar over the jobs (default: only when stderr is a
    terminal).  A configuration with ``engine="batched"`` that the experiment's batched
    engine supports trains its uncached seeds as one job.
    """
    exp = get(name)
    resolved = _checked(exp, config, overrides)
    return sweep(name, [{}], seeds, use_cache, backend, scheduler, workers, progress,
                 **resolved)


def sweep(name: str, grid: list[dict], seeds: int = 1, use_cache: bool = True,
          backend: str | None = None, scheduler: str | None = None, workers: int | None = None,
          progress: bool | None = None, **common) -> pd.DataFrame:
    """:func:`run` for each point of ``grid`` (dicts of overrides on top of ``common``).

    Every point is validated before the first one runs.  The grid's keys become columns
    of the returned table, so each row says which configuration produced it; a key
    that would overwrite one of the experiment's own result columns is refused.  All
    jobs go to ``backend`` at once, so a parallel backend runs the whole grid in
    parallel; each point with ``engine="batched"`` is one batched job.
    """
    exp = get(name)
    check_seeds(seeds)
    if not isinstance(grid, (list, tuple)) or not all(isinstance(p, dict) for p in grid):
        raise ConfigError(f"sweep {name!r}: the grid must be a list of dicts of parameters")
    clashes = sorted({key for point in grid for key in point} & set(exp.columns))
    if clashes:
        raise ConfigError(
            f"sweep {name!r}: grid key(s) {', '.join(map(repr, clashes))} would overwrite the "
            f"result column(s) of the same name; the table already has columns "
            f"{', '.join(exp.columns)}")
    configs = [_checked(exp, common, point) for point in grid]
    where = backends.check_backend(backend, scheduler, workers)
    if use_cache:
        cache.check_folder()
    code = exp.code_version
    jobs, spans = [], []  # spans: per point, its slice of the jobs
    for config in configs:
        start = len(jobs)
        if exp.runs_batched(config):  # one job: the uncached seeds as one ensemble
            jobs.append((True, name, config, list(range(seeds)), use_cache, code))
        else:
            jobs.extend((False, name, config, seed, use_cache, code) for seed in range(seeds))
        spans.append(slice(start, len(jobs)))
    results = backends.run_jobs(_any_job, jobs, where, progress)
    tables = []
    for point, span in zip(grid, spans, strict=True):
        per_seed = results[span]
        if jobs[span.start][0]:
            per_seed = per_seed[0]
        tables.append(_with_seeds(per_seed).assign(**point))
    return pd.concat(tables, ignore_index=True)


def _any_job(batched: bool, *args):
    """The unit of work a backend runs: :func:`_batched_job` or :func:`_job`."""
    return _batched_job(*args) if batched else _job(*args)


def _job(name: str, config: dict, seed: int, use_cache: bool, code: str) -> pd.DataFrame:
    """One seed of a resolved configuration, from the cache or computed and cached.

    On ``local`` and ``dask`` it runs in a worker process, so it takes only picklable
    arguments and looks the experiment up by name.
    """
    key = cache.entry_key(name, config, seed, code)
    table = cache.load(key) if use_cache else None
    if table is None:
        table = get(name).func(config, seed)
        if use_cache:
            cache.store(key, table, {"experiment": name, "config": config, "seed": seed,
                                     "code": code})
    return table


def _batched_job(name: str, config: dict, seeds: list[int], use_cache: bool,
                 code: str) -> list[pd.DataFrame]:
    """``seeds`` with the experiment's batched engine; cached per seed.

    A member's table does not depend on which other seeds share its ensemble, so
    computing only the seeds missing from the cache gives the same results.
    """
    keys = [cache.entry_key(name, config, seed, code) for seed in seeds]
    tables = [cache.load(key) if use_cache else None for key in keys]
    missing = [i for i, table in enumerate(tables) if table is None]
    if missing:
        computed = get(name).batched(config, [seeds[i] for i in missing])
        for i, table in zip(missing, computed, strict=True):
            tables[i] = table
            if use_cache:
                cache.store(keys[i], table, {"experiment": name, "config": config,
                                             "seed": seeds[i], "code": code})
    return tables


def _with_seeds(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The tables of seeds 0, 1, ... as one, with a leading ``seed`` column."""
    out = pd.concat([t.assign(seed=seed) for seed, t in enumerate(tables)], ignore_index=True)
    return out[["seed", *[c for c in out.columns if c != "seed"]]]


def _checked(exp: Experiment, config: dict | None, overrides: dict) -> dict:
    """The resolved configuration, refused if invalid or too large for this machine."""
    if config is not None and not isinstance(config, Mapping):
        raise ConfigError(f"experiment {exp.name!r}: config must be a dict of parameters, "
                          f"got {type(config).__name__}")
    resolved = exp.resolve({**(config or {}), **overrides})
    check_memory(exp, resolved)
    return resolved


def check_seeds(seeds) -> None:
    """Refuse a seed count that is not an int in 1 .. MAX_SEEDS (one message for all callers)."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"parameter 'seeds': got {short_repr(seeds)}; "
                          f"allowed: int >= 1 and <= {MAX_SEEDS}")
