"""One training loop, for every experiment, that records divergence instead of crashing.

A run whose loss or gradient turns NaN/Inf stops at that step and says so
(``diverged_step``, ``cause``): a diverged run is a result, not an error.  The remedies
of :mod:`.remedies` (clipping, penalties, weight decay, schedules, early stopping) are
applied here, in the order a reader would write them in their own loop.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from .engine.params import ConfigError, Param
from .monitor import DETAIL_STATS, GradientMonitor, UpdateRatio, optimizer_moments
from .precision import Precision
from .remedies import Remedies

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
DEVICES = ("auto", "cpu", "cuda")
NO_REMEDIES = Remedies()
FP32 = Precision()


def resolve_device(name: object = "cpu") -> torch.device:
    """The torch device for a ``device`` option: ``auto`` (CUDA if available), cpu, cuda."""
    name = Param("device", "str", "cpu", choices=DEVICES).validate(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    elif name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "parameter 'device': got 'cuda', but torch.cuda.is_available() is False (torch "
            f"{torch.__version__} without CUDA, or no GPU visible); allowed: 'auto', 'cpu'")
    return torch.device(name)


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """The optimizer ``name`` at learning rate ``lr``, in PyTorch's multi-tensor
    (``foreach``) form: one call per step for all tensors rather than one per tensor, the
    same results bit for bit (tested)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, foreach=True)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, foreach=True)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, foreach=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, foreach=True)
    raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")


@dataclass
class TrainLog:
    """What a run measured: per-step scalars, per-layer samples, and how it ended.

    ``cause`` is ``nan_loss``/``inf_loss``/``nan_grad``/``inf_grad`` for a diverged run;
    ``stopped_step`` is set when early stopping ended the run (``cause`` then says why, as
    ``stopped_spike`` or ``stopped_nan_loss`` etc.) and the last row measures the restored
    best weights.
    """

    steps: list[dict] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)
    diverged_step: int | None = None
    stopped_step: int | None = None
    cause: str = ""

    COLUMNS = ("step", "layer", "loss", "grad_norm", "step_lr", "update_ratio", "clipped",
               "skipped", "loss_scale", "test_loss", "test_accuracy", "delta_norm",
               "preact_var", "grad_zero_fraction", "attn_logit_max")
    #: How the run ended, repeated on every row.
    OUTCOME = ("diverged_step", "stopped_step", "cause")
    #: The per-layer columns a detailed monitor adds (``train(..., detail=True)``): the
    #: distributions of :data:`..monitor.DETAIL_STATS` and the optimizer's moments (each
    #: layer's own ``update_ratio`` then fills that column on its rows).
    DETAIL = (*DETAIL_STATS, "moment1", "moment2")

    def table(self, columns: tuple[str, ...] = COLUMNS) -> pd.DataFrame:
        """One row per logged step (``layer`` 0) and, if ``columns`` has ``layer``, per
        sampled layer (``layer`` >= 1), in ``columns`` (NaN where not measured; every one
        but ``step`` and ``layer`` as float64), sorted by step and layer, followed by
        :attr:`OUTCOME`: ``diverged_step``/``stopped_step`` (-1 if None) and ``cause``."""
        tables = [pd.DataFrame(self.steps).assign(layer=0)]
        if "layer" in columns:
            tables.append(pd.DataFrame(self.layers).drop(columns=["name", "nonfinite"],
                                                         errors="ignore"))
        table = pd.concat(tables, ignore_index=True).reindex(columns=list(columns))
        table = table.sort_values([c for c in ("step", "layer") if c in columns],
                                  kind="stable").reset_index(drop=True)
        table = table.astype({c: "float64" for c in columns if c not in ("step", "layer")})
        return table.assign(
            diverged_step=-1 if self.diverged_step is None else self.diverged_step,
            stopped_step=-1 if self.stopped_step is None else self.stopped_step,
            cause=self.cause)


def divergence_cause(value: float, what: str) -> str:
    """The ``cause`` recorded for a non-finite ``what`` ("loss" or "grad"): nan_loss, ..."""
    return f"{'nan' if math.isnan(value) else 'inf'}_{what}"


Batch = tuple[torch.Tensor, torch.Tensor]


def train(model: nn.Module, next_batch: Callable[[], Batch],
          loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, optimizer: str,
          lr: float, steps: int, remedies: Remedies = NO_REMEDIES, log_every: int = 10,
          layers: dict[str, nn.Module] | None = None, final: tuple[torch.Tensor, ...] = (),
          evaluate: Callable[[nn.Module, Batch], dict] | None = None,
          monitor: bool = True, precision: Precision = FP32,
          on_step: Callable[[int, nn.Module], None] | None = None,
          detail: bool = False) -> TrainLog:
    """Train ``model`` for ``steps`` steps on minibatches from ``next_batch()``.

    Every step logs the loss (without the weight penalty), the total gradient norm
    before clipping (of the unscaled gradients), the learning rate, whether the gradient
    was clipped and whether the step was skipped, and the loss scale; every
    ``log_every`` steps (and the first and last) also the update-to-weight ratio, the
    per-layer statistics of a :class:`GradientMonitor` on ``layers`` (none when
    ``layers == {}``) and whatever ``evaluate(model, batch)`` returns (test metrics,
    say), computed after the backward pass and before the update.  ``final`` holds the
    output layer's parameters, which adaptive clipping leaves alone.

    A non-finite loss or gradient ends the run as diverged, unless something handles it:
    a loss scaler (``precision``) skips a step whose gradients overflowed and lowers
    its scale; ``remedies.skip`` skips such a step, or also an outlier one.  A skipped
    step updates nothing.

    ``monitor=False`` turns all of the monitoring off - total gradient norm (logged as
    NaN), update ratio, per-layer statistics - to time the bare loop against it (see
    :func:`.study.timing.benchmark_monitoring`).  A non-finite gradient is then caught one
    step later, by the loss.  The monitor's hooks are registered only during sampled steps.

    ``on_step(step, model)``, if given, is called at the start of every step, before
    its minibatch is drawn (a measurement of the model as the step finds it, such as
    the loss's curvature; it must not draw from the minibatch generator).

    ``detail=True`` records more per layer at the sampled steps (:attr:`TrainLog.DETAIL`):
    the monitor's distributions (``GradientMonitor(detail=True)``), each layer's own
    update-to-weight ratio (in ``update_ratio``; 0 for a skipped step) and the size of
    the optimizer's moments after the step (:func:`..monitor.optimizer_moments`).
    """
    opt = make_optimizer(optimizer, model.parameters(), lr)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = FlatGrads(params)
    watcher = GradientMonitor(model, layers, enabled=False, detail=detail) \
        if monitor and layers != {} else None
    detail = detail and watcher is not None
    ratio = UpdateRatio(params) if monitor else None
    clip, skip = remedies.clipper(), remedies.skipper()
    device = params[0].device if params else torch.device("cpu")
    scaler = precision.scaler(device)
    clip_scaled = scaler is not None and precision.clip_order == "scaled"
    log = TrainLog()
    best: tuple[float, dict] | None = None  # (score, weights) for early stopping
    first_loss = None
    model.train()  # here and after evaluate(), not every step: that costs ~10% of a step
    try:
        for step in range(steps + 1):
            sampled = step % log_every == 0 or step == steps
            if on_step:
                on_step(step, model)
            if watcher:
                watcher.enabled = sampled  # hooks only on the steps that are recorded
            batch = next_batch()
            with precision.autocast(device):
                loss = loss_fn(model(batch[0]), batch[1])
            scale = scaler.get_scale() if scaler else 1.0
            row = {"step": step, "loss": loss.item(), "grad_norm": math.nan,
                   "loss_scale": scale if scaler else math.nan, "clipped": 0.0,
                   "skipped": 0.0}
            first_loss = row["loss"] if first_loss is None else first_loss
            stop = _stop_reason(remedies, row["loss"], first_loss, "loss")
            if stop and not (remedies.skip != "none" and not math.isfinite(row["loss"])):
                log.steps.append(row)
                _end(log, step, stop, best, model, evaluate, batch, loss_fn)
                break
            grads.zero_()
            total = loss + remedies.penalty_term(params)
            (scaler.scale(total) if scaler else total).backward()
            if scaler and not clip_scaled:
                scaler.unscale_(opt)  # before anything reads or clips the gradients
            if monitor:
                row["grad_norm"] = grads.norm() / (scale if clip_scaled else 1.0)
            layer_rows = []
            if sampled:
                if watcher:
                    layer_rows = [{"step": step, **s}
                                  for s in _unscaled(watcher.layer_stats(), scale, clip_scaled)]
                    log.layers.extend(layer_rows)
                    watcher.enabled = False  # evaluation must not overwrite training stats
                if evaluate:
                    row.update(evaluate(model, batch))
                    if not model.training:  # evaluate() may leave it in eval mode
                        model.train()
                if remedies.stop_factor:
                    score = row.get("test_loss", row["loss"])
                    if math.isfinite(score) and (best is None or score < best[0]):
                        best = (score, copy.deepcopy(model.state_dict()))
            finite = math.isfinite(row["grad_norm"]) if monitor else True
            handled = scaler is not None or remedies.skip != "none"
            stop = "" if finite or handled else divergence_cause(row["grad_norm"], "grad")
            if stop or step == steps:  # the last row measures the model; no update after it
                log.steps.append(row)
                if stop:
                    _end(log, step, stop, best, model, evaluate, batch, loss_fn)
                break
            step_lr = lr * remedies.lr_factor(step, steps)
            for group in opt.param_groups:
                group["lr"] = step_lr
            row["step_lr"] = step_lr
            if skip(row["loss"], row["grad_norm"] if monitor else 0.0) or \
                    (scaler is not None and not finite):
                row["skipped"] = 1.0
                if scaler:  # nothing is updated; an overflow halves the scale
                    if clip_scaled:
                        scaler.unscale_(opt)  # records the inf check that update() reads
                    scaler.update()
                if sampled and ratio is not None:
                    row["update_ratio"] = 0.0
                if sampled and detail:
                    _detail_after_step(layer_rows, None, opt, watcher)
                log.steps.append(row)
                continue
            norm = row["grad_norm"] * (scale if clip_scaled else 1.0)
            row["clipped"] = float(clip(params, list(final), norm))
            if sampled and ratio is not None:
                ratio.before_step()
            if sampled and detail:
                watcher.before_step()
            remedies.decay_(params, step_lr)
            if scaler:
                scaler.step(opt)
                scaler.update()
                if scaler.get_scale() < scale:  # the unscaled gradients were not finite
                    row["skipped"] = 1.0
            else:
                opt.step()
            if sampled and ratio is not None:
                row["update_ratio"] = ratio.total()
            if sampled and detail:
                _detail_after_step(layer_rows, watcher.update_ratios(), opt, watcher)
            log.steps.append(row)
    finally:
        if watcher:
            watcher.remove()
    return log


def _detail_after_step(rows: list[dict], ratios: dict[str, float] | None,
                       opt: torch.optim.Optimizer, watcher: GradientMonitor) -> None:
    """Add each layer's update ratio (``ratios``; None: the step was skipped, 0) and the
    optimizer's moments after the step to the step's per-layer ``rows``."""
    moments = optimizer_moments(opt, watcher.modules)
    for row in rows:
        row["update_ratio"] = 0.0 if ratios is None else ratios.get(row["name"], math.nan)
        row.update(moments[row["name"]])


def _unscaled(rows: list[dict], scale: float, grads_scaled: bool) -> list[dict]:
    """The monitor's rows with the loss scale divided out: the backpropagated
    ``delta_norm`` always carries it, the weight gradients only if not yet unscaled."""
    if scale == 1.0:
        return rows
    for row in rows:
        row["delta_norm"] /= scale
        if grads_scaled:
            row["grad_norm"] /= scale
            for key in ("grad_q50", "grad_q99"):
                if key in row:
                    row[key] /= scale
    return rows


def _stop_reason(remedies: Remedies, value: float, first: float | None, what: str) -> str:
    """Why the run ends here: a divergence cause, a spike (early stopping), or ''."""
    if not math.isfinite(value):
        return divergence_cause(value, what)
    if remedies.stop_factor and first is not None and value > remedies.stop_factor * first:
        return "spike"
    return ""


def _end(log: TrainLog, step: int, reason: str, best, model, evaluate, batch, loss_fn) -> None:
    """Record how the run ended; with early stopping, restore and measure the best weights."""
    if reason != "spike" and best is None:  # no early stopping: the run diverged
        log.diverged_step, log.cause = step, reason
        return
    log.stopped_step, log.cause = step, f"stopped_{reason}"
    if best is None:  # stopped before any weights worth keeping were measured
        return
    model.load_state_dict(best[1])
    with torch.no_grad():
        row = {"step": step, "loss": loss_fn(model(batch[0]), batch[1]).item(),
               "grad_norm": math.nan}
    if evaluate:
        row.update(evaluate(model, batch))
    log.steps.append(row)


class FlatGrads:
    """Every parameter's ``.grad`` as a view into one flat tensor, so that the total
    gradient norm is a single reduction, not one per tensor (5x less time for the 42
    tensors of a 20-layer MLP, where a per-tensor norm costs more than summing it).

    Autograd adds each new gradient into an existing ``.grad`` in place, so after
    :meth:`zero_` and a backward pass the flat tensor holds this step's gradients, equal
    bit for bit to the ones ``zero_grad(set_to_none=True)`` would have produced (0 + g =
    g).  Unlike that, a parameter the loss does not reach gets a zero gradient, not None.
    Parameters of mixed dtypes or devices keep separate gradients (same results, slower).

    ``members`` > 0: the parameters are an ensemble's stacks ``(members, ...)``; the flat
    tensor is ``(members, n)``, one contiguous row per member, so :meth:`member_norms` is
    one reduction along rows, whose result for a member does not depend on the others.
    """

    def __init__(self, params: list[torch.Tensor], members: int = 0):
        self.params = params
        self.flat = None
        if params and len({(p.dtype, p.device) for p in params}) == 1:
            first = params[0]
            rows = members or 1
            sizes = [p.numel() // rows for p in params]
            self.flat = torch.zeros(rows, sum(sizes), dtype=first.dtype, device=first.device)
            for p, g in zip(params, self.flat.split(sizes, dim=1), strict=True):
                p.grad = g.view_as(p) if members else g.reshape(-1).view_as(p)
            if not members:
                self.flat = self.flat.view(-1)

    @torch.no_grad()
    def zero_(self) -> None:
        if self.flat is None:
            for p in self.params:
                p.grad = None
        else:
            self.flat.zero_()

    @torch.no_grad()
    def norm(self) -> float:
        """The L2 norm of all gradients together, as ``get_total_norm`` up to rounding."""
        if self.flat is None:
            return total_norm([p.grad for p in self.params]).item()
        return torch.linalg.vector_norm(self.flat).item()

    @torch.no_grad()
    def member_norms(self) -> torch.Tensor:
        """``(members,)``: each member's total gradient norm (``members`` > 0 only)."""
        return torch.linalg.vector_norm(self.flat, dim=1)


@torch.no_grad()
def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """``torch.nn.utils.get_total_norm(grads)``, bit for bit, with less Python around it.

    When every gradient shares one device and dtype, get_total_norm is exactly one
    ``_foreach_norm`` and the norm of the stacked results; call those directly.
    """
    if grads and all(g is not None for g in grads) \
            and len({(g.device, g.dtype) for g in grads}) == 1:
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    return torch.nn.utils.get_total_norm(grads)


def minibatches(x: torch.Tensor, y: torch.Tensor, batch_size: int,
                generator: torch.Generator) -> Callable[[], Batch]:
    """Uniformly sampled minibatches (with replacement across steps) of ``(x, y)``."""
    def next_batch() -> Batch:
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=generator)
        return x[idx], y[idx]

    return next_batch
