"""The gradient monitor and the spike remedies as a PyTorch Lightning callback.

Needs the optional extra: ``pip install exploding-gradients[lightning]``.

>>> from exploding_gradients.callbacks import SpikeMonitor
>>> trainer = lightning.Trainer(callbacks=[SpikeMonitor(log_every=50)],
...                             gradient_clip_val=1.0)

Every optimizer step it logs, with the module's ``log`` (so to whatever logger the trainer
has), under ``monitor/``: the total gradient norm *before* clipping (``grad_norm``),
whether the step is a spike (:class:`..monitor.SpikeDetector`: above ``spike_factor``
times the running median, or not finite), whether it was clipped (by the trainer's own
``gradient_clip_val``, or by this callback's ``clip`` rule) and whether it was skipped,
with the running fractions of clipped and skipped steps.  Every ``log_every`` steps it
also records the per-layer statistics of a :class:`..monitor.GradientMonitor` and each
layer's update-to-weight ratio and optimizer moments (:meth:`SpikeMonitor.table`), and,
when the logger writes TensorBoard (its ``experiment`` has ``add_histogram`` /
``add_image``), one histogram per layer and kind and one layer x step image of the
gradient norm, not a scalar per layer and statistic.

The callback can also *act*, with the package's rules (:mod:`..remedies`), the ones
Lightning does not have: ``clip`` = ``percentile`` (AutoClip), ``zclip`` or ``adagc``
(set no ``gradient_clip_val`` then), and ``skip`` = ``nonfinite`` or ``zscore``
(OLMo-core's rule), which skips the update by dropping every gradient before the
optimizer step (PyTorch's optimizers leave a parameter without a gradient untouched,
moments included).
"""

from __future__ import annotations

import math

import lightning.pytorch as pl

from .monitor import (
    GradientMonitor,
    LayerHistory,
    SpikeDetector,
    log_heatmap,
    log_histograms,
    optimizer_moments,
)
from .remedies import Remedies
from .train import total_norm


class SpikeMonitor(pl.Callback):
    """Log what the gradient monitor measures and what the spike remedies do.

    ``layers``: the modules to watch per layer (default: every Linear, convolution and
    recurrent layer); ``detail``: also their distributions (quantiles, dead and saturated
    units) and histograms.  ``clip`` / ``clip_threshold`` and ``skip`` /
    ``skip_window`` / ``skip_threshold`` mean what they mean for the ``training``
    experiment.
    """

    def __init__(self, log_every: int = 50, spike_factor: float = 10.0, spike_window: int = 20,
                 layers: dict | None = None, detail: bool = False, clip: str = "none",
                 clip_threshold: float = 1.0, skip: str = "none", skip_window: int = 128,
                 skip_threshold: float = 6.0):
        if clip in ("norm", "value", "agc"):
            raise ValueError(f"clip={clip!r}: use the Trainer's gradient_clip_val (norm, value) "
                             "or the package's training loop (agc)")
        self.log_every, self.layers, self.detail = log_every, layers, detail
        self.remedies = Remedies(clip=clip, clip_threshold=clip_threshold, skip=skip,
                                 skip_window=skip_window, skip_threshold=skip_threshold)
        self.detector = SpikeDetector(spike_factor, spike_window)
        self.clipper, self.skipper = self.remedies.clipper(), self.remedies.skipper()
        self.history = LayerHistory()
        self.rows: list[dict] = []
        self.steps = self.clipped = self.skipped = 0
        self.monitor: GradientMonitor | None = None
        self._loss = math.nan
        self._pending: list[dict] | None = None  # this step's layer rows, until the update

    # ------------------------------------------------------------------ lifecycle
    def on_fit_start(self, trainer, pl_module) -> None:
        self.monitor = GradientMonitor(pl_module, self.layers, enabled=False, detail=self.detail)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.monitor is not None:
            self.monitor.remove()

    def _sampled(self, trainer) -> bool:
        return trainer.global_step % self.log_every == 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.monitor.enabled = self._sampled(trainer)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._loss = float(loss.detach())

    # ------------------------------------------------------------------ the step
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        params = [p for p in pl_module.parameters() if p.grad is not None]
        norm = total_norm([p.grad for p in params]).item() if params else 0.0
        spike = self.detector.update(norm)
        skip = self.skipper(self._loss, norm)
        clipped = False
        if skip:
            for p in params:
                p.grad = None  # the optimizer leaves these parameters (and moments) alone
        elif self.remedies.clip != "none":
            clipped = self.clipper(params, [], norm)
        elif trainer.gradient_clip_val:  # what the trainer's own clipping is about to do
            limit = float(trainer.gradient_clip_val)
            if trainer.gradient_clip_algorithm == "value":
                clipped = any(bool((p.grad.abs() > limit).any()) for p in params)
            else:
                clipped = norm > limit
        self.steps += 1
        self.clipped += bool(clipped)
        self.skipped += bool(skip)
        pl_module.log_dict({
            "monitor/grad_norm": norm, "monitor/spike": float(spike),
            "monitor/clipped": float(clipped), "monitor/skipped": float(skip),
            "monitor/clip_fraction": self.clipped / self.steps,
            "monitor/skip_fraction": self.skipped / self.steps,
        }, on_step=True, on_epoch=False)
        if self.monitor.enabled:
            step = trainer.global_step
            self._pending = [{"step": step, "skipped": bool(skip), **r}
                             for r in self.monitor.layer_stats()]
            self.monitor.enabled = False
            self.monitor.before_step()
            self.history.add(step, self._pending)
            writer = getattr(trainer.logger, "experiment", None) if trainer.logger else None
            if self.detail and hasattr(writer, "add_histogram"):
                log_histograms(writer, self.monitor, step)
            if hasattr(writer, "add_image"):
                log_heatmap(writer, "monitor/grad_norm_by_layer", self.history, "grad_norm",
                            step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._pending is None:
            return
        ratios = self.monitor.update_ratios()
        moments = optimizer_moments(trainer.optimizers[0], self.monitor.modules)
        for row in self._pending:
            row["update_ratio"] = 0.0 if row["skipped"] else ratios.get(row["name"], math.nan)
            row.update(moments[row["name"]])
        self.rows.extend(self._pending)
        self._pending = None

    # ------------------------------------------------------------------ results
    def table(self):
        """The per-layer rows recorded so far (every ``log_every`` steps) as a DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "clipped": self.clipped, "skipped": self.skipped}

    def load_state_dict(self, state_dict: dict) -> None:
        self.steps, self.clipped = state_dict["steps"], state_dict["clipped"]
        self.skipped = state_dict["skipped"]
