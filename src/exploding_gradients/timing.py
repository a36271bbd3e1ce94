"""Wall-clock measurements, kept apart from the cached, bit-reproducible results.

A time is a property of the machine, not of the configuration, so it is never cached:
every call measures afresh.  Report ratios (remedy vs none, batched vs looped) rather
than absolute seconds, which depend on the reader's laptop.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import math
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from .experiments import get, make_data
from .init import LSUV_BATCH, lsuv_
from .models import build_mlp
from .remedies import Remedies
from .train import minibatches, train


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


def _training_variants(config: dict | None, steps: int, repeat: int, seed: int,
                       variants: dict[str, tuple[dict, Callable[[], object]]],
                       overrides: dict) -> dict:
    """CPU seconds per step of the ``training`` experiment's loop, per variant.

    The model and data of ``config`` are built once, as the experiment builds them; every
    timed run trains a fresh copy of the initial weights on the same minibatches for
    ``steps`` steps, without test-set evaluation.  ``variants`` maps a name to
    (extra keyword arguments of :func:`.train.train`, a context-manager factory wrapped
    around the run).  The variants run in turn, in an order rotated each repetition, so
    a change in the machine's speed hits them alike; one untimed warm-up run each.  Many
    short rounds measure a ratio better than a few long ones.  Python's garbage collector
    is paused during each timed run, as :mod:`timeit` does: a full collection of a large
    process takes as long as a whole short run and would land in one of them at random.
    Time is the process's CPU time: on a shared machine, wall-clock time also counts
    the time other programs held the CPU.
    """
    cfg = get("training").resolve({**(config or {}), **overrides, "steps": steps})
    data = make_data(cfg)
    gen = torch.Generator().manual_seed(seed)
    model = build_mlp(cfg, d_in=cfg["d_in"], d_out=data.d_out, generator=gen)
    if cfg["init"] == "lsuv":
        lsuv_(model, data.x_train[:LSUV_BATCH])
    state = gen.get_state()

    def once(extra: dict, context: Callable[[], object]) -> tuple[float, bool]:
        run_model = copy.deepcopy(model)
        layers = {f"blocks.{i}.linear": lin for i, lin in enumerate(run_model.hidden_linears())}
        batches = minibatches(data.x_train, data.y_train, cfg["batch_size"],
                              torch.Generator().set_state(state))
        enabled = gc.isenabled()
        gc.disable()  # as timeit does: a full collection would land in one run at random
        try:
            start = time.process_time()
            with context():
                log = train(run_model, batches, data.loss, optimizer=cfg["optimizer"],
                            lr=cfg["lr"], steps=steps, remedies=Remedies.from_config(cfg),
                            final=tuple(run_model.readout.parameters()),
                            **{"layers": layers, "log_every": cfg["log_every"], **extra})
            elapsed = time.process_time() - start
        finally:
            if enabled:
                gc.enable()
        return elapsed, log.diverged_step is not None or log.stopped_step is not None

    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    ended_early = False
    for name in names:
        once(*variants[name])
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            elapsed, early = once(*variants[name])
            times[name].append(elapsed / steps)
            ended_early |= early
    return {"times": times, "ended_early": ended_early}


def _ratio_summary(times: dict[str, list[float]], on: str, off: str) -> dict:
    """Medians per step, and the on/off ratio as the median of the rounds' ratios: each
    round's two runs ran back to back, so their ratio is little disturbed by the load
    other programs put on a shared machine, and the median discards the rounds that were.
    """
    pairs = [a / b for a, b in zip(times[on], times[off], strict=True)]
    return {f"{on}_step_seconds": statistics.median(times[on]),
            f"{off}_step_seconds": statistics.median(times[off]),
            "ratio": statistics.median(pairs), "ratio_min": min(pairs),
            "ratio_max": max(pairs), "ratios": pairs}


def benchmark_monitoring(config: dict | None = None, steps: int = 50, repeat: int = 20,
                         seed: int = 0, budget: float = 0.05, **overrides) -> dict:
    """How much the training loop's monitoring adds to a step: on/off CPU time ratio.

    ``config`` (and ``overrides``) describe a ``training`` experiment, validated as by
    :func:`.experiments.run`.  *On* is the loop as the experiment runs it: the total
    gradient norm every step, and every ``log_every`` steps (a *sampled* step) the
    update-to-weight ratio and the :class:`.monitor.GradientMonitor` statistics of every
    hidden Linear.  *Off* is ``train(..., monitor=False)``, which computes none of them.
    A third variant samples every step.  None evaluates on the test set.

    Returns the median CPU seconds per step of *on* and *off* (``on_step_seconds``,
    ``off_step_seconds``), the on/off ratio of each of the ``repeat`` rounds (``ratios``,
    with ``ratio_min``/``ratio_max``) and their median ``ratio``, and ``ended_early`` (a
    run diverged or stopped, so the variants compare different work; pick a healthy
    configuration).  The overhead splits into a part paid every step and one paid per
    sampled step; the three variants give both, as fractions of a bare step
    (``every_step_overhead``, ``sample_cost``, medians over the rounds), hence the
    overhead of a long run at this ``log_every`` (``long_run_overhead``; a short run
    samples relatively more often: steps 0, log_every, ... and the last) and the
    smallest ``log_every`` that keeps it within ``budget`` (``interval_for_budget``, inf
    if the every-step part alone exceeds it).
    """
    result = _training_variants(config, steps, repeat, seed,
                                {"on": ({}, contextlib.nullcontext),
                                 "every": ({"log_every": 1}, contextlib.nullcontext),
                                 "off": ({"monitor": False}, contextlib.nullcontext)},
                                overrides)
    times = result["times"]
    log_every = get("training").resolve({**(config or {}), **overrides})["log_every"]

    def sampled(interval: int) -> float:  # fraction of the steps that are sampled
        return len(set(range(0, steps + 1, interval)) | {steps}) / steps

    per_step, per_sample = [], []
    for on, every, off in zip(times["on"], times["every"], times["off"], strict=True):
        sample = (every - on) / (sampled(1) - sampled(log_every)) if log_every > 1 else 0.0
        per_sample.append(sample / off)
        per_step.append((on - off - sample * sampled(log_every)) / off)
    step_cost, sample_cost = statistics.median(per_step), statistics.median(per_sample)
    room = budget - max(step_cost, 0.0)
    return {**_ratio_summary(times, "on", "off"), "steps": steps, "repeat": repeat,
            "log_every": log_every, "every_step_overhead": step_cost,
            "sample_cost": sample_cost, "budget": budget,
            "long_run_overhead": step_cost + sample_cost / log_every,
            "interval_for_budget": math.ceil(sample_cost / room) if room > 0 else math.inf,
            "ended_early": result["ended_early"]}


@contextlib.contextmanager
def _quiet_anomaly_mode():
    """``torch.autograd.detect_anomaly()`` without its "enabled" warning on every entry."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Anomaly Detection has been enabled")
        with torch.autograd.detect_anomaly():
            yield


def benchmark_anomaly_detection(config: dict | None = None, steps: int = 20, repeat: int = 3,
                                seed: int = 0, **overrides) -> dict:
    """Cost of ``torch.autograd.detect_anomaly()`` around the same loop: on/off ratio.

    As :func:`benchmark_monitoring`, with both variants unmonitored
    (``monitor=False``) and *on* run inside ``torch.autograd.detect_anomaly()``, which
    records a traceback for every operation of the forward pass and checks every output
    of the backward pass for NaN.  Same keys as :func:`benchmark_monitoring`, with
    ``anomaly_step_seconds`` and ``plain_step_seconds``.
    """
    result = _training_variants(config, steps, repeat, seed,
                                {"anomaly": ({"monitor": False}, _quiet_anomaly_mode),
                                 "plain": ({"monitor": False}, contextlib.nullcontext)},
                                overrides)
    return {**_ratio_summary(result["times"], "anomaly", "plain"), "steps": steps,
            "repeat": repeat, "ended_early": result["ended_early"]}


def _cpu_seconds(fn) -> float:
    """CPU time of this process spent in ``fn()`` (garbage collected first)."""
    gc.collect()
    start = time.process_time()
    fn()
    return time.process_time() - start


def time_ratios(name: str, base: dict, variants: dict[str, dict], steps: tuple[int, int],
                rounds: int = 3, seed: int = 0) -> pd.DataFrame:
    """CPU time per optimizer step of each variant of experiment ``name``, relative to
    ``base``, measured in interleaved rounds.

    A run also pays once for building its data and model (and, for LSUV, for fitting
    the initialization), which would dilute a ratio of whole runs towards 1.  So each
    configuration (``base`` updated with a variant's overrides) is run with
    ``steps = (n1, n2)`` optimizer steps: the time per step is the slope
    (t(n2) - t(n1)) / (n2 - n1), and the one-off cost the intercept t(n1) - n1 * slope.
    Each round runs the base and every variant in an order rotated from round to round,
    so a change in the machine's speed affects a round's numerator and denominator
    alike; the spread over rounds shows how noisy the ratio is.  The clock is the
    process's CPU time, as in the benchmarks above: on a shared machine wall-clock
    time also counts the time other programs held the CPU.  The base is run once untimed
    first.  Rows: one per (variant, round) with ``step_seconds``, ``ratio`` (to the same
    round's base) and ``extra_setup_steps`` (the variant's one-off cost beyond the
    base's, in base steps).  Times are never cached.
    """
    n1, n2 = steps
    if not 0 < n1 < n2:
        raise ValueError(f"time_ratios needs steps = (n1, n2) with 0 < n1 < n2, got {steps}")
    exp = get(name)
    configs = {"base": {**base}, **{k: {**base, **v} for k, v in variants.items()}}
    resolved = {k: (exp.resolve({**c, "steps": n1}), exp.resolve({**c, "steps": n2}))
                for k, c in configs.items()}
    names = list(configs)
    exp.func(resolved["base"][0], seed)  # warm-up
    rows = []
    for r in range(rounds):
        fit = {}
        for k in names[r % len(names):] + names[:r % len(names)]:
            t1, t2 = (_cpu_seconds(lambda c=c: exp.func(c, seed)) for c in resolved[k])
            slope = (t2 - t1) / (n2 - n1)
            fit[k] = (slope, t1 - n1 * slope)
        (base_slope, base_setup) = fit["base"]
        rows.extend({"variant": k, "round": r, "step_seconds": fit[k][0],
                     "ratio": fit[k][0] / base_slope,
                     "extra_setup_steps": (fit[k][1] - base_setup) / base_slope}
                    for k in variants)
    return pd.DataFrame(rows)


def benchmark_record(path: Path | None = None) -> pd.DataFrame | None:
    """The last ``make benchmark`` record of this machine as a table of ratios, or None.

    ``benchmarks/latest.json`` beside the package's source tree (written by
    ``benchmarks/run.py``; not versioned, since it describes one machine).
    """
    path = path or Path(__file__).resolve().parents[2] / "benchmarks" / "latest.json"
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    book = rec["book"]
    rows = [("batched / looped seeds (speed-up per seed-step)", rec["batched_seeds"]["ratio"]),
            ("all cores / one process (sweep speed-up)", rec["parallel_sweep"]["ratio"]),
            ("monitoring on / off (time per step)", rec["monitoring"]["ratio"]),
            ("smallest log_every keeping monitoring within 5%",
             rec["monitoring"].get("interval_for_budget", math.nan)),
            ("monitoring on / off, width 256", rec.get("monitoring_wide", {}).get("ratio",
                                                                                math.nan)),
            ("warm / cold book build", book["warm_s"] / book["cold_s"]),
            ("incremental / cold book build", book["incremental_s"] / book["cold_s"]),
            ("cold book build, seconds", book["cold_s"])]
    return pd.DataFrame(rows, columns=["measurement", "value"]).assign(
        machine=rec["machine"], date=rec["date"], commit=rec["commit"],
        profile=book["profile"])
