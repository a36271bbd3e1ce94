"""Costs: the one timer (:func:`interleaved`) and the measurements built on it.

A time is a property of the machine, not of the configuration, so it is never cached:
every call measures afresh.  Report ratios (remedy vs none, batched vs looped) rather
than absolute seconds, which depend on the reader's laptop.  Every cost table of the
book comes from :func:`time_ratios` (time per step of a variant of an experiment against
its base, as the slope between a short and a long run, so one-off setup is not counted)
or from the benchmarks below, all timed by :func:`interleaved`.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from ..engine.registry import get
from ..engine.runner import sweep
from ..ensemble import ENGINES, _keep_freed_memory, train_ensemble
from ..experiments.feedforward import TEST_SAMPLES, Run, build_run, make_data, training
from ..monitor import GradientMonitor, UpdateRatio
from ..remedies import Remedies
from ..train import train


def interleaved(variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 1,
                clock: str = "cpu") -> dict[str, list[float]]:
    """The one timer: seconds of each variant's call, per round.

    Each round calls every variant once, in an order rotated from round to round, so a
    change in the machine's speed hits them alike; ``warmup`` untimed calls of each come
    first.  Python's garbage collector is paused during each timed call, as :mod:`timeit`
    does: a full collection would land in one call at random.  ``clock`` is the policy
    of every cost in the book: ``cpu``, the CPU time of this process (on a shared
    machine, wall-clock time also counts the time other programs held the CPU), except
    ``wall`` for what uses several processes (a parallel sweep), which CPU time of this
    process would not see.
    """
    if clock not in ("cpu", "wall"):
        raise ValueError(f"clock must be 'cpu' or 'wall', got {clock!r}")
    now = time.process_time if clock == "cpu" else time.perf_counter
    names = list(variants)
    for name in names:
        for _ in range(warmup):
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            enabled = gc.isenabled()
            gc.collect()
            gc.disable()
            try:
                start = now()
                variants[name]()
                times[name].append(now() - start)
            finally:
                if enabled:
                    gc.enable()
    return times


def _training_variants(config: dict | None, steps: int, repeat: int, seed: int,
                       variants: dict[str, tuple[dict, Callable[[], object]]],
                       overrides: dict) -> dict:
    """CPU seconds per step of the ``training`` experiment's loop, per variant.

    The run of ``config`` is built once (:func:`.feedforward.build_run`); every timed run
    trains a fresh copy of the initial weights on the same minibatches for ``steps``
    steps, without test-set evaluation.  ``variants`` maps a name to (extra keyword
    arguments of :func:`..train.train`, a context-manager factory wrapped around the
    run), timed by :func:`interleaved`.  Many short rounds measure a ratio better than a
    few long ones.
    """
    cfg = get("training").resolve({**(config or {}), **overrides, "steps": steps})
    run = build_run(cfg, seed)
    state = run.generator.get_state()
    ended_early = False

    def once(extra: dict, context: Callable[[], object]) -> None:
        nonlocal ended_early
        trial = Run(copy.deepcopy(run.model), run.data, torch.Generator().set_state(state))
        with context():
            log = train(trial.model, trial.batches(cfg["batch_size"]), run.data.loss,
                        optimizer=cfg["optimizer"], lr=cfg["lr"], steps=steps,
                        remedies=Remedies.from_config(cfg), final=trial.final(),
                        **{"layers": trial.layers(), "log_every": cfg["log_every"], **extra})
        ended_early |= log.diverged_step is not None or log.stopped_step is not None

    times = interleaved({name: (lambda v=v: once(*v)) for name, v in variants.items()},
                        rounds=repeat)
    return {"times": {k: [t / steps for t in v] for k, v in times.items()},
            "ended_early": ended_early}


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
        return sampled_steps(steps, interval) / steps

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


def monitoring_parts(config: dict | None = None, passes: int = 20, rounds: int = 20,
                     seed: int = 0, **overrides) -> dict:
    """Where a sampled step's monitoring goes: each part's CPU time as a fraction of a bare
    step (forward, backward and an SGD step of the ``training`` experiment's network on
    one minibatch, ``passes`` times per round, :func:`interleaved`; medians over rounds).

    ``hooks``: the :class:`.monitor.GradientMonitor`'s forward and backward hooks during
    the pass, with registering and removing them; ``reading``: its ``layer_stats()``
    (every reduction and the conversion to floats); ``update_ratio``: the
    :class:`.monitor.UpdateRatio` around the step.  Their sum is close to
    :func:`benchmark_monitoring`'s ``sample_cost``.
    """
    cfg = get("training").resolve({**(config or {}), **overrides})
    run = build_run(cfg, seed)
    model, x, y = run.model, run.data.x_train[:cfg["batch_size"]], \
        run.data.y_train[:cfg["batch_size"]]
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=1e-9)  # tiny: the network stays as it is
    # one monitor that is never read (a pass then only overwrites the last one's tensors)
    # and one read after every pass
    hooked, reader = (GradientMonitor(model, run.layers(), enabled=False) for _ in range(2))
    ratio = UpdateRatio(params)

    def step(hooks: bool = False, read: bool = False, update: bool = False) -> None:
        watcher = reader if read else hooked
        for _ in range(passes):
            watcher.enabled = hooks
            opt.zero_grad()
            run.data.loss(model(x), y).backward()
            if read:
                watcher.layer_stats()
            watcher.enabled = False
            if update:
                ratio.before_step()
            opt.step()
            if update:
                ratio.total()

    times = interleaved({"bare": step, "hooks": lambda: step(hooks=True),
                         "reading": lambda: step(hooks=True, read=True),
                         "update_ratio": lambda: step(update=True)}, rounds=rounds)

    def part(a: str, b: str) -> float:
        return statistics.median((x - y) / z for x, y, z in
                                 zip(times[a], times[b], times["bare"], strict=True))

    return {"bare_step_seconds": statistics.median(times["bare"]) / passes,
            "hooks": part("hooks", "bare"), "reading": part("reading", "hooks"),
            "update_ratio": part("update_ratio", "bare")}


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


def time_ratios(name: str, base: dict, variants: dict[str, dict], steps: tuple[int, int],
                rounds: int = 3, seed: int = 0) -> pd.DataFrame:
    """CPU time per optimizer step of each variant of experiment ``name``, relative to
    ``base``, measured in interleaved rounds.

    A run also pays once for building its data and model (and, for LSUV, for fitting
    the initialization), which would dilute a ratio of whole runs towards 1.  So each
    configuration (``base`` updated with a variant's overrides) is run with
    ``steps = (n1, n2)`` optimizer steps: the time per step is the slope
    (t(n2) - t(n1)) / (n2 - n1), and the one-off cost the intercept t(n1) - n1 * slope.
    The runs are timed by :func:`interleaved` (CPU time, rotated rounds, after one
    untimed run each), so a change in the machine's speed affects a round's numerator
    and denominator alike; the spread over rounds shows how noisy the ratio is.  Rows:
    one per (variant, round) with ``step_seconds``, ``ratio`` (to the same round's base)
    and ``extra_setup_steps`` (the variant's one-off cost beyond the base's, in base
    steps).
    """
    n1, n2 = steps
    if not 0 < n1 < n2:
        raise ValueError(f"time_ratios needs steps = (n1, n2) with 0 < n1 < n2, got {steps}")
    exp = get(name)
    configs = {"base": {**base}, **{k: {**base, **v} for k, v in variants.items()}}
    resolved = {(k, n): exp.resolve({**c, "steps": n}) for k, c in configs.items()
                for n in (n1, n2)}
    calls = {key: (lambda c=c: exp.func(c, seed)) for key, c in resolved.items()}
    times = interleaved(calls, rounds=rounds)
    rows = []
    for r in range(rounds):
        fit = {}
        for k in configs:
            t1, t2 = times[(k, n1)][r], times[(k, n2)][r]
            slope = (t2 - t1) / (n2 - n1)
            fit[k] = (slope, t1 - n1 * slope)
        base_slope, base_setup = fit["base"]
        rows.extend({"variant": k, "round": r, "step_seconds": fit[k][0],
                     "ratio": fit[k][0] / base_slope,
                     "extra_setup_steps": (fit[k][1] - base_setup) / base_slope}
                    for k in variants)
    return pd.DataFrame(rows)


def benchmark_ensemble(depth: int = 20, width: int = 64, seeds: int = 16, steps: int = 100,
                       rounds: int = 3, engines: tuple[str, ...] = ENGINES,
                       **overrides) -> dict:
    """CPU seconds per seed-step of the per-seed loop, of each batched engine and of the
    bare ensemble (:func:`bare_ensemble`, the least a batched step can cost), and each as
    a share of the machine's matmul peak (:func:`matmul_peak`).

    Each variant is the whole computation (initialization, training, tables) of
    ``seeds`` seeds of the ``training`` experiment (``overrides`` on top of its
    defaults, so the engines log and evaluate as the book's runs do), timed by
    :func:`interleaved`, divided by ``seeds * steps``.  Returns ``<name>_s`` (medians over
    the rounds) with their ranges (``<name>_min_s``, ``<name>_max_s``) for ``loop``, each
    engine and ``bare``; the fastest ``engine``, ``batched_s`` (its time), ``ratio``
    (loop / batched, the median of the rounds' ratios, with ``ratio_min``/``ratio_max``),
    ``over_bare`` (batched / bare, likewise), ``peak_flops`` and ``<name>_share`` (the
    training step's matrix-product FLOPs, :func:`training_flops`, per second of each
    variant, over the peak: the test-set evaluations the engines also do are not
    counted), and ``threads``.

    The bare ensemble logs and evaluates nothing, while the book's runs evaluate the test
    set at every sampled step: ``evaluation_flops`` is that arithmetic as a fraction of
    the training's (:func:`evaluation_flops`), and ``unlogged_over_bare`` (with its
    range) times the first engine sampling only the first and last step against the bare
    ensemble (whose two evaluations are ``unlogged_evaluation_flops`` of the training's
    arithmetic): nearly the engine's own cost, without most of the work it does for the
    book.
    """
    config = get("training").resolve({"depth": depth, "width": width, "steps": steps,
                                      **overrides})
    seed_list = list(range(seeds))
    _keep_freed_memory()  # for the loop too, so both run with the same allocator settings
    data = make_data(config)

    unlogged = {**config, "log_every": steps}  # samples (and evaluates) the first and last

    def batched(engine: str, cfg: dict = config) -> None:
        train_ensemble(cfg, [build_run(cfg, s, data=data) for s in seed_list], engine)

    calls = {"loop": lambda: [training(config, s) for s in seed_list],
             **{e: (lambda e=e: batched(e)) for e in engines},
             "unlogged": lambda: batched(engines[0], unlogged),
             "bare": lambda: bare_ensemble(config, seeds, data)()}
    times = {k: [t / (seeds * steps) for t in v]
             for k, v in interleaved(calls, rounds=rounds).items()}
    peak = matmul_peak()
    result: dict = {"threads": torch.get_num_threads(), "peak_flops": peak}
    for k, v in times.items():
        result.update({f"{k}_s": statistics.median(v), f"{k}_min_s": min(v),
                       f"{k}_max_s": max(v),
                       f"{k}_share": training_flops(config) / statistics.median(v) / peak})
    fastest = min(engines, key=lambda e: result[f"{e}_s"])

    def ratios(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(times[a], times[b], strict=True)]

    speedup, over_bare = ratios("loop", fastest), ratios(fastest, "bare")
    unlogged_over_bare = ratios("unlogged", "bare")
    result.update(unlogged_over_bare=statistics.median(unlogged_over_bare),
                  unlogged_over_bare_min=min(unlogged_over_bare),
                  unlogged_over_bare_max=max(unlogged_over_bare),
                  evaluation_flops=evaluation_flops(config) / training_flops(config),
                  unlogged_evaluation_flops=evaluation_flops(unlogged) / training_flops(config))
    result.update(engine=fastest, batched_s=result[f"{fastest}_s"],
                  batched_share=result[f"{fastest}_share"],
                  ratio=statistics.median(speedup), ratio_min=min(speedup),
                  ratio_max=max(speedup), over_bare=statistics.median(over_bare),
                  over_bare_min=min(over_bare), over_bare_max=max(over_bare))
    return result


def sweep_speedup(jobs: int = 8, steps: int = 200, rounds: int = 1) -> dict:
    """Wall-clock speed-up of a sweep of ``jobs`` training runs on ``local`` workers (one
    per core) over the same sweep in this process; worker start-up is not counted."""
    grid = [{"lr": 0.001 * (i + 1)} for i in range(jobs)]
    common = dict(depth=8, width=64, steps=steps, use_cache=False)
    workers = os.cpu_count() or 1
    times = interleaved(
        {"serial": lambda: sweep("training", grid, backend="serial", **common),
         "local": lambda: sweep("training", grid, backend="local", workers=workers, **common)},
        rounds=rounds, clock="wall")
    ratios = [a / b for a, b in zip(times["serial"], times["local"], strict=True)]
    return {"jobs": jobs, "workers": workers, "serial_s": statistics.median(times["serial"]),
            "local_s": statistics.median(times["local"]), "ratio": statistics.median(ratios)}


def benchmark_record(path: Path) -> pd.DataFrame | None:
    """The ``make benchmark`` record at ``path`` (``benchmarks/latest.json``, written by
    ``benchmarks/run.py``; not versioned, since it describes one machine) as a table of
    ratios (:func:`record_rows`), or None if there is none."""
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    return pd.DataFrame(record_rows(rec), columns=["measurement", "value"]).assign(
        machine=rec["machine"], date=rec["date"], commit=rec["commit"],
        profile=rec["book"]["profile"])


def record_rows(rec: dict) -> list[tuple[str, float]]:
    """The measurements of a ``make benchmark`` record, as (label, value): what the script
    prints and the Scaling page shows (NaN for what an older record lacks)."""
    book, ens, mon = rec["book"], rec["batched_seeds"], rec["monitoring"]
    parts, wide = rec.get("monitoring_parts", {}), rec.get("monitoring_wide", {})
    return [
        ("batched / looped seeds (speed-up per seed-step)", ens["ratio"]),
        ("batched / bare ensemble (time per seed-step)", ens.get("over_bare", math.nan)),
        ("batched / bare, sampling only the first and last step",
         ens.get("unlogged_over_bare", math.nan)),
        ("test-set evaluation / training, arithmetic", ens.get("evaluation_flops", math.nan)),
        ("loop, share of the matmul peak", ens.get("loop_share", math.nan)),
        ("batched engine, share of the matmul peak", ens.get("batched_share", math.nan)),
        ("bare ensemble, share of the matmul peak", ens.get("bare_share", math.nan)),
        ("all cores / one process (sweep speed-up)", rec["parallel_sweep"]["ratio"]),
        ("monitoring on / off (time per step, width 64)", mon["ratio"]),
        ("monitoring: its per-step part, fraction of a step",
         mon.get("every_step_overhead", math.nan)),
        ("monitoring: one sampled step, fraction of a step", mon.get("sample_cost", math.nan)),
        ("monitoring: the hooks of a sampled step", parts.get("hooks", math.nan)),
        ("monitoring: the reductions of a sampled step", parts.get("reading", math.nan)),
        ("monitoring: the update ratio of a sampled step", parts.get("update_ratio", math.nan)),
        (f"monitoring: a long run's overhead at log_every {mon.get('log_every', 10)}",
         mon.get("long_run_overhead", math.nan)),
        ("monitoring: smallest log_every within 5%", mon.get("interval_for_budget", math.nan)),
        ("monitoring on / off (time per step, width 256)", wide.get("ratio", math.nan)),
        ("warm / cold book build", book["warm_s"] / book["cold_s"]),
        ("incremental / cold book build", book["incremental_s"] / book["cold_s"]),
        ("cold book build, seconds", book["cold_s"])]


# --------------------------------------------------------------------------- the limit

def matmul_peak(n: int = 1024, rounds: int = 5) -> float:
    """The machine's arithmetic peak as this process sees it: FLOP/s of an ``n`` x ``n``
    float32 matrix product (2 n^3 operations), the best of ``rounds``, CPU time."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = min(interleaved({"matmul": lambda: a @ b}, rounds=rounds, warmup=0)["matmul"])
    return 2 * n**3 / best


def _forward_flops(config: dict) -> float:
    """Floating-point operations of the matrix products of one sample's forward pass
    through ``training``'s MLP (2 per multiply-add)."""
    width, depth = config["width"], config["depth"]
    d_out = 1 if config.get("task") == "regression" else 4
    return 2 * (config["d_in"] * width + (depth - 1) * width**2 + width * d_out)


def training_flops(config: dict) -> float:
    """Floating-point operations of one seed-step of ``training``'s MLP: the forward pass
    over the minibatch and the backward pass (twice the forward: the gradients with
    respect to the inputs and to the weights)."""
    return 3 * _forward_flops(config) * config["batch_size"]


def evaluation_flops(config: dict) -> float:
    """Floating-point operations per seed-step of ``training``'s test-set evaluations
    (a forward pass over the test set at every sampled step), averaged over the run."""
    steps = config["steps"]
    return sampled_steps(steps, config["log_every"]) * TEST_SAMPLES * _forward_flops(config) / steps


def sampled_steps(steps: int, every: int) -> int:
    """How many of a run's steps 0 .. ``steps`` the training loop samples (logs per layer
    and evaluates): every ``every``-th, and the last."""
    return len(set(range(0, steps + 1, every)) | {steps})


def bare_ensemble(config: dict, seeds: int, data=None) -> Callable[[], None]:
    """The least a batched step can cost: ``seeds`` copies of ``training``'s MLP (ReLU,
    no normalization) as stacked weights, each step one ``baddbmm`` per layer forward,
    the summed mean losses backward, plain SGD; minibatches gathered from the training
    set (one draw for all members), nothing logged, no test set.  Returns a function that
    initializes the seeds' networks (as the engines do) and runs ``config["steps"]``
    steps.  ``data``: the config's dataset if already made."""
    data = make_data(config) if data is None else data
    x_train, y_train, n = data.x_train, data.y_train, data.x_train.shape[0]

    def run() -> None:
        named = [dict(build_run(config, s, data=data).model.named_parameters())
                 for s in range(seeds)]
        names = list(named[0])
        params = [torch.stack([m[k].detach() for m in named]).requires_grad_() for k in names]
        weights = [p for k, p in zip(names, params, strict=True) if k.endswith("weight")]
        biases = [p for k, p in zip(names, params, strict=True) if k.endswith("bias")]
        opt = torch.optim.SGD(params, lr=config["lr"], foreach=True)
        gen = torch.Generator().manual_seed(0)
        for _ in range(config["steps"]):
            idx = torch.randint(0, n, (seeds, config["batch_size"]), generator=gen)
            h = x_train[idx]
            for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
                # views taken afresh each step, as the engine does (ensemble._Ensemble._bind)
                h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
                if i < len(weights) - 1:
                    h = torch.relu(h)
            loss = data.loss(h, y_train[idx]) * seeds  # the sum of the members' mean losses
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run
