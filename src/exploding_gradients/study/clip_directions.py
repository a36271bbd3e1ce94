"""How clipping changes one real gradient: the direction measurements of the clipping chapter.

:func:`clip_directions` rebuilds a ``training`` or ``rnn_training`` run exactly, trains it
unclipped to a given step and applies each clipping method of :mod:`..remedies` to a copy
of that step's gradient; :func:`direction_summary` sums the per-tensor rows into the
cosine between the raw and the clipped gradient of the whole network.  :func:`weight_drift`
retrains a run *with* its remedies and records how far each parameter tensor moved from
its initial value at every step, so a page can say which layer a diverging run blew up.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import torch

from ..engine.registry import get
from ..experiments.feedforward import build_run
from ..experiments.recurrent import build_recurrent_run
from ..remedies import Remedies
from ..train import train


def _rebuilt(name: str, config: dict, seed: int):
    """(resolved config, model, minibatch stream, loss) of experiment ``name``'s run, built
    exactly as ``training`` / ``rnn_training`` build it."""
    config = get(name).resolve(config)
    if name == "training":
        run = build_run(config, seed)
        return config, run.model, run.batches(config["batch_size"]), run.data.loss
    if name == "rnn_training":
        run = build_recurrent_run(config, seed)
        return config, run.model, run.batches(), torch.nn.functional.mse_loss
    raise ValueError(f"clip_directions needs 'training' or 'rnn_training', got {name!r}")


def _unclipped_model(name: str, config: dict, seed: int, after_steps: int):
    """The model of experiment ``name`` trained unclipped for ``after_steps`` steps, with
    the raw gradient of step ``after_steps`` in ``.grad``; also its final-layer parameters.

    Built exactly as ``training`` / ``rnn_training`` build it (same seeds, same data
    stream, same remedies except clipping), so the gradient is the one the unclipped run
    logs as ``grad_norm`` at that step.
    """
    config, model, batches, loss_fn = _rebuilt(name, config, seed)
    remedies = dataclasses.replace(Remedies.from_config(config), clip="none")
    log = train(model, batches, loss_fn, optimizer=config["optimizer"], lr=config["lr"],
                steps=after_steps, remedies=remedies, layers={})
    if log.diverged_step is not None:  # no finite gradient at that step: say so with NaN
        for p in model.parameters():
            p.grad = torch.full_like(p, float("nan"))
    return model, tuple(model.readout.parameters())


def clip_directions(name: str, config: dict, seed: int, methods: dict[str, list[float]],
                    after_steps: int = 0) -> pd.DataFrame:
    """How each clipping method changes one real gradient, per parameter tensor.

    The gradient is the raw (unclipped) one of experiment ``name`` (``training`` or
    ``rnn_training``) with ``config`` and ``seed`` at step ``after_steps`` of unclipped
    training (NaN if that run diverged by then).  For every ``method`` (``norm``,
    ``value``, ``agc``) and threshold in ``methods``, the training loop's own clipping
    (:meth:`.remedies.Remedies.clip_`: PyTorch's ``clip_grad_norm_`` /
    ``clip_grad_value_``, and AGC with the final layer unclipped) is applied to a copy.
    Rows: one per (method, threshold, parameter) with
    ``param`` (its name), ``layer`` (hidden layer number, input side 1, for an MLP's
    ``blocks.i`` parameters; NaN otherwise), ``matrix`` (a weight matrix, not a vector),
    ``final``, ``weight_norm``, ``raw_norm``, ``clipped_norm``, ``dot`` (raw . clipped)
    and ``changed`` / ``numel`` (entries altered by clipping / all entries), all in
    float64.  Sum them with :func:`direction_summary` for the cosine of the whole
    gradient.
    """
    model, final = _unclipped_model(name, config, seed, after_steps)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    raw = [p.grad.detach().clone() for p in params]
    raw64 = [g.double() for g in raw]
    final_ids = {id(p) for p in final}
    layers = [re.match(r"blocks\.(\d+)\.", n) for n, _ in named]
    fixed = pd.DataFrame({
        "param": [n for n, _ in named],
        "layer": [int(m.group(1)) + 1 if m else float("nan") for m in layers],
        "matrix": [p.ndim > 1 for p in params],
        "final": [id(p) in final_ids for p in params],
        "weight_norm": torch.stack([p.detach().double().norm() for p in params]).numpy(),
        "raw_norm": torch.stack([g.norm() for g in raw64]).numpy(),
        "numel": [g.numel() for g in raw]})
    rows = []
    for method, thresholds in methods.items():
        for threshold in thresholds:
            for p, g in zip(params, raw, strict=True):
                p.grad = g.clone()
            Remedies(clip=method, clip_threshold=float(threshold)).clip_(params, list(final))
            clipped = [p.grad.double() for p in params]
            stats = torch.stack([
                torch.stack([c.norm() for c in clipped]),
                torch.stack([(g * c).sum() for g, c in zip(raw64, clipped, strict=True)]),
                torch.stack([(p.grad != g).sum().double()
                             for p, g in zip(params, raw, strict=True)])]).numpy()
            rows.append(fixed.assign(method=method, threshold=float(threshold),
                                     clipped_norm=stats[0], dot=stats[1],
                                     changed=stats[2].astype(int)))
    columns = ["method", "threshold", "param", "layer", "matrix", "final", "weight_norm",
               "raw_norm", "clipped_norm", "dot", "changed", "numel"]
    return pd.concat(rows, ignore_index=True)[columns].assign(seed=seed)


def direction_summary(df: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Per (``by``, method, threshold, seed) of :func:`clip_directions` rows: the cosine
    between the raw and the clipped gradient of the whole network, the norm ratio
    ||clipped|| / ||raw||, and the fraction of gradient entries clipping changed."""
    keys = [*(by or []), "method", "threshold", "seed"]
    g = df.assign(raw_sq=df["raw_norm"] ** 2, clipped_sq=df["clipped_norm"] ** 2)
    sums = g.groupby(keys, sort=False)[["dot", "raw_sq", "clipped_sq", "changed",
                                        "numel"]].sum(min_count=1).reset_index()
    raw, clipped = np.sqrt(sums["raw_sq"]), np.sqrt(sums["clipped_sq"])
    sums["cosine"] = sums["dot"] / (raw * clipped)
    sums["norm_ratio"] = clipped / raw
    sums["fraction_changed"] = sums["changed"] / sums["numel"]
    return sums[[*keys, "cosine", "norm_ratio", "fraction_changed"]]


def weight_drift(name: str, config: dict, seed: int) -> pd.DataFrame:
    """How far each parameter tensor of a run moved from its initial value, step by step.

    Experiment ``name`` (``training`` or ``rnn_training``) with ``config`` and ``seed`` is
    rebuilt exactly and trained with its own remedies (clipping included) by the one
    training loop, so its losses are the experiment's (the per-layer monitor and the test
    evaluations, which change nothing, are left out).  Rows: one per (step, parameter)
    with ``step`` (the weights as step ``step`` finds them, before its update), ``param``,
    ``layer`` (hidden layer number of an MLP's ``blocks.i`` parameters, else NaN),
    ``matrix``, ``final`` (the output layer, which AGC leaves unclipped), ``init_norm``
    (||W_0||), ``distance`` (||W_t - W_0||, in float64; inf or NaN once the weights are
    no longer finite), the step's ``loss`` and the run's ``diverged_step`` (-1 if none).
    """
    config, model, batches, loss_fn = _rebuilt(name, config, seed)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    start = [p.detach().double().clone() for _, p in named]
    distances: list[list[float]] = []

    def record(step: int, m: torch.nn.Module) -> None:
        distances.append([(p.detach().double() - p0).norm().item()
                          for (_, p), p0 in zip(named, start, strict=True)])

    final_ids = {id(p) for p in model.readout.parameters()}
    log = train(model, batches, loss_fn, optimizer=config["optimizer"], lr=config["lr"],
                steps=config["steps"], remedies=Remedies.from_config(config),
                log_every=config["log_every"], layers={}, final=tuple(model.readout.parameters()),
                on_step=record)
    layers = [re.match(r"blocks\.(\d+)\.", n) for n, _ in named]
    fixed = pd.DataFrame({
        "param": [n for n, _ in named],
        "layer": [int(m.group(1)) + 1 if m else float("nan") for m in layers],
        "matrix": [p.ndim > 1 for _, p in named],
        "final": [id(p) in final_ids for _, p in named],
        "init_norm": [p0.norm().item() for p0 in start]})
    losses = [row["loss"] for row in log.steps]
    return pd.concat([fixed.assign(step=step, distance=d, loss=losses[step])
                      for step, d in enumerate(distances)], ignore_index=True).assign(
        diverged_step=-1 if log.diverged_step is None else log.diverged_step, seed=seed)
