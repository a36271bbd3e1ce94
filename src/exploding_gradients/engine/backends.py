"""Where the jobs of :func:`.runner.run` and :func:`.runner.sweep` execute.

A job is one (experiment, configuration, seed or seeds); it reads and writes the shared results
cache itself, so each backend only has to call it somewhere:

- ``serial``: one after the other in this process (the default);
- ``local``: on ``workers`` local processes (default: one per CPU core);
- ``dask``: on the dask.distributed cluster at ``scheduler``, or on a local cluster of
  ``workers`` processes started on first use when no address is given.

Jobs on ``local`` and ``dask`` workers use one torch thread each: the thread count is part
of every cache key (it changes the order of torch's parallel sums, hence the last bits),
so a worker's result equals, bit for bit and cache entry for cache entry, a serial run
with one thread (``OMP_NUM_THREADS=1``, as ``make`` sets).  Pools and clients are started
once per process and reused, since starting them costs seconds.  Workers are fresh
interpreters (spawned), which import the caller's main module: a script using ``local``
or a local dask cluster needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import functools
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from . import cache
from .params import ConfigError, Param, short_repr

BACKENDS = ("serial", "local", "dask")
WORKER_THREADS = 1
#: Seconds to wait for a dask scheduler to answer before giving up with a clear error.
CONNECT_SECONDS = 15

# "tcp://10.0.0.5:8786", "tls://host:8786", "inproc://..." or a bare "host:8786"
_ADDRESS = re.compile(r"[a-z][a-z0-9+.-]*://\S+|[^\s:/]+:[0-9]+", re.ASCII)


@dataclass(frozen=True)
class Backend:
    """A validated backend choice (make one with :func:`check_backend`)."""

    name: str = "serial"
    scheduler: str | None = None
    workers: int | None = None  # None: one per CPU core


_default = Backend()


def check_backend(backend: Any = None, scheduler: Any = None, workers: Any = None) -> Backend:
    """The validated :class:`Backend`; ``backend=None`` means the process-wide default.

    With ``backend=None``, a ``scheduler`` or ``workers`` given overrides the default's.
    Raises :class:`ConfigError` naming the parameter and what it allows.
    """
    if backend is None:
        scheduler = _default.scheduler if scheduler is None else scheduler
        workers = _default.workers if workers is None else workers
        backend = _default.name
    name = Param("backend", "str", None, choices=BACKENDS).validate(backend)
    if scheduler is not None and (name != "dask" or not isinstance(scheduler, str)
                                  or not _ADDRESS.fullmatch(scheduler.strip())):
        raise ConfigError(
            f"parameter 'scheduler': got {short_repr(scheduler)}; allowed: None, or with "
            "backend 'dask' a scheduler address such as 'tcp://127.0.0.1:8786'")
    if workers is not None and (name == "serial" or scheduler is not None):
        raise ConfigError(
            f"parameter 'workers': got {short_repr(workers)}; allowed: None with backend "
            f"{name!r}" + (" and a scheduler address (the cluster has its workers)"
                           if scheduler is not None else ""))
    cpus = os.cpu_count() or 1  # one thread per worker: more workers than cores only contend
    workers = Param("workers", "int", None, optional=True, low=1, high=cpus).validate(workers)
    return Backend(name, scheduler.strip() if scheduler else None, workers)


def set_backend(backend: Any = "serial", scheduler: Any = None, workers: Any = None) -> Backend:
    """Make this the default backend of every later ``run``/``sweep``; returns it.

    Chapters do this with their ``backend``/``scheduler`` parameters.
    """
    global _default
    _default = check_backend(backend, scheduler, workers)
    return _default


@contextlib.contextmanager
def use_backend(backend: Any = "serial", scheduler: Any = None,
                workers: Any = None) -> Iterator[Backend]:
    """:func:`set_backend` for the duration of a ``with`` block."""
    global _default
    previous = _default
    try:
        yield set_backend(backend, scheduler, workers)
    finally:
        _default = previous


def run_jobs(func: Callable, jobs: list[tuple], where: Backend,
             progress: bool | None = None) -> list:
    """``[func(*args) for args in jobs]``, computed on ``where``, in the order of ``jobs``.

    ``func`` must be importable by name (workers unpickle it).  The first failing job
    cancels those not yet started and its error is raised here.  ``progress``: show a
    bar over the jobs; ``None`` shows it only when stderr is a terminal (never in an
    executed notebook, whose stderr is not).
    """
    show = sys.stderr.isatty() if progress is None else bool(progress)
    with tqdm(total=len(jobs), unit="job", disable=not show, file=sys.stderr) as bar:
        if where.name == "serial":
            results = []
            for args in jobs:
                results.append(func(*args))
                bar.update()
            return results
        submit, as_completed = _executor(where)
        folder = str(cache.cache_dir().absolute())  # workers need not share our environment
        futures = []
        try:
            futures = [submit(_in_worker, func, args, folder) for args in jobs]
            for future in as_completed(futures):
                future.result()  # raise the first failure now, not after all jobs ran
                bar.update()
        except BaseException as err:
            for future in futures:
                future.cancel()
            if isinstance(err, BrokenProcessPool):  # a worker died: start afresh next time
                _pools.clear()
            raise
        return [future.result() for future in futures]


def _in_worker(func: Callable, args: tuple, folder: str) -> Any:
    """One job in a worker process: the caller's cache folder, one torch thread."""
    os.environ[cache.ENV_VAR] = folder
    torch.set_num_threads(WORKER_THREADS)
    return func(*args)


_pools: dict[int, concurrent.futures.ProcessPoolExecutor] = {}
_clients: dict[tuple[str | None, int | None], Any] = {}


def _executor(where: Backend) -> tuple[Callable, Callable]:
    """``(submit, as_completed)`` of the pool or cluster for ``where``, started once."""
    if where.name == "local":
        workers = where.workers or os.cpu_count() or 1
        if workers not in _pools:
            # spawn: a fresh interpreter, not a fork of one whose torch threads are running.
            # Workers ignore Ctrl-C (and a Jupyter kernel's interrupt at shutdown): the
            # parent handles it, cancelling the jobs not started.
            _pools[workers] = concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(os.getpid(),))
        return _pools[workers].submit, concurrent.futures.as_completed
    import distributed  # imported on first use: it takes about a second

    key = (where.scheduler, where.workers)
    if key not in _clients:
        if where.scheduler is None:
            cluster = distributed.LocalCluster(
                n_workers=where.workers or os.cpu_count() or 1, threads_per_worker=1,
                processes=True, dashboard_address=None)
            _clients[key] = distributed.Client(cluster, set_as_default=False)
        else:
            _clients[key] = _connect(distributed, where.scheduler)
    client = _clients[key]

    def submit(*args):
        return client.submit(*args, pure=False)  # each call runs: no reuse by argument hash

    return submit, functools.partial(distributed.as_completed, loop=client.loop)


def _connect(distributed, address: str):
    """A client of the dask scheduler at ``address``, or a :class:`ConfigError` saying why
    not within :data:`CONNECT_SECONDS`: nothing listening, a server that accepts the
    connection and never answers, or one that is not a dask scheduler."""
    outcome: dict = {}

    def connect() -> None:
        try:
            outcome["client"] = distributed.Client(address, timeout=f"{CONNECT_SECONDS}s",
                                                   set_as_default=False)
        except BaseException as err:  # noqa: BLE001 - reported below, in the caller
            outcome["error"] = err

    thread = threading.Thread(target=connect, name="dask-connect", daemon=True)
    thread.start()
    thread.join(CONNECT_SECONDS + 5)
    allowed = "allowed: the address of a running dask scheduler, or None for a local cluster"
    if thread.is_alive():
        raise ConfigError(f"parameter 'scheduler': no dask scheduler answered at {address!r} "
                          f"within {CONNECT_SECONDS} s; {allowed}")
    if "error" in outcome:
        err = outcome["error"]
        reason = ("it did not answer as a dask scheduler" if isinstance(err, MemoryError)
                  else f"{type(err).__name__}: {err}")
        raise ConfigError(f"parameter 'scheduler': cannot use {address!r} ({reason}); "
                          f"{allowed}")
    return outcome["client"]


def _init_worker(parent: int) -> None:
    """Set up a ``local`` worker: Ctrl-C is the parent's to handle (it cancels the jobs
    not started), and the worker exits when its parent is gone, even killed with
    SIGKILL, instead of living on as an orphan holding its memory."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@atexit.register
def shutdown() -> None:
    """Stop the worker pools and close the dask clients (and clusters) this process started."""
    for pool in _pools.values():
        pool.shutdown(cancel_futures=True)
    _pools.clear()
    for client in _clients.values():
        cluster = client.cluster  # the LocalCluster we started, or None for an address
        client.close()
        if cluster is not None:
            cluster.close()
    _clients.clear()

