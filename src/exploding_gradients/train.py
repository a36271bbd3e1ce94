"""One training loop that records divergence instead of crashing.

A run whose loss or gradient turns NaN/Inf stops at that step and says so
(``diverged_step``, ``cause``): a diverged run is a result, not an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .data import Dataset
from .monitor import GradientMonitor

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")


@dataclass
class TrainLog:
    """What a run measured: per-step scalars, per-layer samples, and how it ended."""

    steps: list[dict] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)
    diverged_step: int | None = None
    cause: str = ""


def divergence_cause(value: float, what: str) -> str:
    """The ``cause`` recorded for a non-finite ``what`` ("loss" or "grad"): nan_loss, ..."""
    return f"{'nan' if math.isnan(value) else 'inf'}_{what}"


def train(model: nn.Module, data: Dataset, *, optimizer: str, lr: float, steps: int,
          batch_size: int, generator: torch.Generator, log_every: int = 10,
          layers: dict[str, nn.Module] | None = None) -> TrainLog:
    """Train ``model`` with minibatch ``optimizer`` for ``steps`` steps.

    Every step logs loss, total gradient norm and update-to-weight ratio; every
    ``log_every`` steps (and the first and last) also the per-layer statistics of the
    :class:`GradientMonitor` and the test loss/accuracy.
    """
    opt = make_optimizer(optimizer, model.parameters(), lr)
    params = [p for p in model.parameters() if p.requires_grad]
    monitor = GradientMonitor(model, layers)
    log = TrainLog()
    n = data.x_train.shape[0]
    try:
        for step in range(steps + 1):
            sampled = step % log_every == 0 or step == steps
            monitor.enabled = sampled
            model.train()
            idx = torch.randint(0, n, (batch_size,), generator=generator)
            loss = data.loss(model(data.x_train[idx]), data.y_train[idx])
            row = {"step": step, "loss": loss.item()}
            if not math.isfinite(row["loss"]):
                log.steps.append(row)
                log.diverged_step, log.cause = step, divergence_cause(row["loss"], "loss")
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params]).item()
            row["grad_norm"] = grad_norm
            if sampled:
                for stats in monitor.layer_stats():
                    log.layers.append({"step": step, **stats})
                monitor.enabled = False  # the test pass must not overwrite training stats
                row.update(_evaluate(model, data))
            if not math.isfinite(grad_norm):
                log.steps.append(row)
                log.diverged_step, log.cause = step, divergence_cause(grad_norm, "grad")
                break
            if step == steps:  # the last row measures the trained model; no update after it
                log.steps.append(row)
                break
            before = [p.detach().clone() for p in params]
            opt.step()
            with torch.no_grad():
                moved = torch._foreach_sub([p.detach() for p in params], before)
                update = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(moved)))
                weight = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(before)))
            row["update_ratio"] = (update / weight).item()
            log.steps.append(row)
    finally:
        monitor.remove()
    return log


@torch.no_grad()
def _evaluate(model: nn.Module, data: Dataset) -> dict:
    model.eval()
    out = model(data.x_test)
    loss = data.loss(out, data.y_test).item()
    model.train()
    return {"test_loss": loss, "test_accuracy": data.accuracy(out, data.y_test)}
