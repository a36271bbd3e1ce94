"""Remedies applied inside the training loop, one place for each.

* **Gradient clipping** - by global norm and by value with PyTorch's own
  ``clip_grad_norm_`` / ``clip_grad_value_``; adaptive gradient clipping
  (:func:`adaptive_clip_grad_`, Brock et al. 2021); and clipping whose threshold follows
  the run's own history: a percentile of past norms (:class:`PercentileClip`, AutoClip,
  Seetharaman et al. 2020), ZClip's z-score against running statistics (:class:`ZClip`,
  Kumar et al. 2025) and AdaGC's per-tensor thresholds (:class:`AdaGC`, Wang et al. 2025).
* **Skipping a step** - when the gradient is not finite, or when the loss or gradient
  norm is an outlier of a rolling window (:class:`SkipRule`, as OLMo-core does).
* **Weight penalties** - an L1 or L2 term added to the loss, and *decoupled* weight decay
  (Loshchilov & Hutter 2019), which shrinks the weights outside the gradient.
* **Learning-rate schedules** - linear warmup, then constant, cosine or step decay.
* **Early stopping** - stop when the training loss blows up and restore the best weights.

:class:`Remedies` holds one run's choices; :data:`REMEDY_PARAMS` declares them for every
training experiment, so the same names mean the same thing in every chapter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields

import torch

from .engine.params import ConfigError, Param

CLIPPING = ("none", "norm", "value", "agc", "percentile", "zclip", "adagc")
SKIPPING = ("none", "nonfinite", "zscore")
PENALTIES = ("none", "l1", "l2")
SCHEDULES = ("constant", "cosine", "step")


def unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """Norm per output unit: over all dims but the first for matrices and conv kernels,
    over the whole tensor for vectors and scalars (biases, gains) - the NFNets convention."""
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)


@torch.no_grad()
def adaptive_clip_grad_(parameters, clip_factor: float = 0.01, eps: float = 1e-3) -> bool:
    """Adaptive gradient clipping (Brock, De, Smith & Simonyan 2021, "NFNets"), in place.

    Each unit's gradient G is rescaled to ``clip_factor * max(||W||, eps) / ||G||`` times
    itself when its norm exceeds ``clip_factor * max(||W||, eps)``: the limit follows the
    size of the weights it updates, so no single threshold has to fit every layer.  Brock
    et al. leave the final (classifier) layer unclipped; the training loop does the same
    by not passing it here.  Works on weights of any shape (vectors, matrices, convolution
    kernels of any dimension).  Returns whether any unit was clipped.
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    over = []
    for p in parameters:
        if p.grad is None:
            continue
        max_norm = unitwise_norm(p.detach()).clamp_min(eps) * clip_factor
        grad_norm = unitwise_norm(p.grad)
        clipped = p.grad * (max_norm / grad_norm.clamp_min(1e-6))
        mask = grad_norm > max_norm
        p.grad.copy_(torch.where(mask, clipped, p.grad))
        over.append(mask.any())
    return bool(torch.stack(over).any()) if over else False


@torch.no_grad()
def clip_grad_norm_(params: list[torch.Tensor], max_norm: float, total_norm: float) -> bool:
    """Scale the gradients so that their total norm ``total_norm`` is at most ``max_norm``
    (as ``torch.nn.utils.clip_grad_norm_`` does, whose norm the caller already has);
    returns whether they were scaled."""
    if not total_norm > max_norm:
        return False
    torch._foreach_mul_([p.grad for p in params if p.grad is not None],
                        max_norm / (total_norm + 1e-6))
    return True


class PercentileClip:
    """AutoClip (Seetharaman, Wichern, Pardo & Le Roux 2020): clip the global norm at the
    ``percentile``-th percentile of every gradient norm seen so far (before clipping),
    linearly interpolated as ``torch.quantile`` (and the ``autoclip`` package) do.  The
    Deep Learning Tuning Playbook suggests the 90th.  The first step is not clipped."""

    def __init__(self, percentile: float):
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        self.q = percentile / 100
        self.history: list[float] = []

    def __call__(self, params: list[torch.Tensor], total_norm: float) -> bool:
        clipped = False
        if self.history:
            threshold = torch.quantile(torch.tensor(self.history), self.q).item()
            clipped = clip_grad_norm_(params, threshold, total_norm)
        self.history.append(total_norm)
        return clipped


class ZClip:
    """ZClip (Kumar, Owen, Chowdhury & Güra 2025): an exponential moving average (EMA) of
    the gradient norm's mean and variance; a norm whose z-score exceeds ``z`` is clipped
    to ``mean + z^2 std / z_t`` (their adaptive scaling: the further out, the harder), and
    the EMA then takes the clipped value.  The first ``warmup`` norms only initialize the
    statistics.  ``alpha`` is the EMA's weight of the past (their default 0.97)."""

    def __init__(self, z: float, alpha: float = 0.97, warmup: int = 25, eps: float = 1e-6):
        if not z > 0 or not 0 < alpha < 1 or warmup < 1:
            raise ValueError(f"ZClip needs z > 0, 0 < alpha < 1 and warmup >= 1; got {z}, "
                             f"{alpha}, {warmup}")
        self.z, self.alpha, self.warmup, self.eps = z, alpha, warmup, eps
        self.buffer: list[float] = []
        self.mean: float | None = None
        self.var = 0.0

    def __call__(self, params: list[torch.Tensor], total_norm: float) -> bool:
        if self.mean is None:  # warmup: collect, then start the statistics
            self.buffer.append(total_norm)
            if len(self.buffer) >= self.warmup:
                self.mean = sum(self.buffer) / len(self.buffer)
                self.var = sum((x - self.mean) ** 2 for x in self.buffer) / len(self.buffer)
            return False
        std = self.var ** 0.5
        z_t = (total_norm - self.mean) / (std + self.eps)
        value, clipped = total_norm, False
        if z_t > self.z:
            value = self.mean + self.z * std / (z_t / self.z)
            clipped = clip_grad_norm_(params, value, total_norm)
        self.mean = self.alpha * self.mean + (1 - self.alpha) * value
        self.var = self.alpha * self.var + (1 - self.alpha) * (value - self.mean) ** 2
        return clipped


class AdaGC:
    """AdaGC (Wang et al. 2025): a threshold per parameter tensor, ``lambda_rel`` times
    an EMA (weight ``beta`` of the past, their 0.98) of that tensor's own clipped norms.
    During the first ``warmup`` steps (their 100) the global norm is clipped at
    ``lambda_abs`` and each tensor's EMA starts from the smallest clipped norm seen."""

    def __init__(self, lambda_rel: float, beta: float = 0.98, warmup: int = 100,
                 lambda_abs: float = 1.0, eps: float = 1e-8):
        if not lambda_rel > 0 or not 0 < beta < 1 or not lambda_abs > 0 or warmup < 1:
            raise ValueError("AdaGC needs lambda_rel > 0, 0 < beta < 1, lambda_abs > 0 and "
                             f"warmup >= 1; got {lambda_rel}, {beta}, {lambda_abs}, {warmup}")
        self.lambda_rel, self.beta, self.warmup = lambda_rel, beta, warmup
        self.lambda_abs, self.eps = lambda_abs, eps
        self.step = 0
        self.gamma: list[float] | None = None

    @torch.no_grad()
    def __call__(self, params: list[torch.Tensor], total_norm: float) -> bool:
        self.step += 1
        grads = [p.grad for p in params]
        norms = [n.item() for n in torch._foreach_norm(grads)]
        if self.step < self.warmup:
            h = min(self.lambda_abs / (total_norm + self.eps), 1.0)
            factors = [h] * len(grads)
        else:
            factors = [min(self.lambda_rel * g / n, 1.0) if n > 0 else 1.0
                       for g, n in zip(self.gamma, norms, strict=True)]
        clipped = [f * n for f, n in zip(factors, norms, strict=True)]
        if self.gamma is None:
            self.gamma = clipped
        elif self.step < self.warmup:
            self.gamma = [min(g, c) for g, c in zip(self.gamma, clipped, strict=True)]
        else:
            self.gamma = [self.beta * g + (1 - self.beta) * c
                          for g, c in zip(self.gamma, clipped, strict=True)]
        scaled = [(g, f) for g, f in zip(grads, factors, strict=True) if f < 1.0]
        for g, f in scaled:
            g.mul_(f)
        return bool(scaled)


class SkipRule:
    """Skip the optimizer step on a bad gradient (PaLM skipped batches around spikes;
    OLMo-core and DeepSpeed offer it).  ``nonfinite``: when the loss or the gradient is
    NaN/Inf.  ``zscore``: also when the loss or the gradient norm lies more than
    ``threshold`` standard deviations from the mean of the last ``window`` steps (both
    sides, as OLMo-core's ``SkipStepOptimizer``), judged once at least
    ``max(20, window // 2)`` steps are in the window.  Every value joins the window,
    skipped or not."""

    def __init__(self, kind: str, window: int = 128, threshold: float = 6.0):
        if kind not in SKIPPING or window < 2 or not threshold > 0:
            raise ValueError(f"SkipRule needs kind in {SKIPPING}, window >= 2 and threshold "
                             f"> 0; got {kind!r}, {window}, {threshold}")
        self.kind, self.window, self.threshold = kind, window, threshold
        self.losses: list[float] = []
        self.norms: list[float] = []

    def __call__(self, loss: float, norm: float) -> bool:
        """Whether to skip the step whose loss and gradient norm these are."""
        if self.kind == "none":
            return False
        if not (math.isfinite(loss) and math.isfinite(norm)):
            skip = True
        elif self.kind == "zscore" and len(self.losses) >= max(20, self.window // 2):
            skip = _outlier(self.losses, loss, self.threshold) or \
                _outlier(self.norms, norm, self.threshold)
        else:
            skip = False
        for history, value in ((self.losses, loss), (self.norms, norm)):
            history.append(value)
            del history[:-self.window]
        return skip


def _outlier(history: list[float], value: float, threshold: float) -> bool:
    std, mean = torch.std_mean(torch.tensor(history, dtype=torch.float64))
    return not bool((value - mean).abs() / std <= threshold)


REMEDY_PARAMS = (
    Param("clip", "str", "none",
          "gradient clipping: by global norm, by value, or adaptive (agc, unit-wise)",
          choices=CLIPPING),
    Param("clip_threshold", "float", 1.0,
          "largest global norm (norm), largest |g| (value), the clip factor lambda (agc), the "
          "percentile of past norms (percentile, in (0, 100]), the z-score (zclip) or "
          "lambda_rel (adagc)", low=1e-12, high=1e12),
    Param("clip_ema", "float", None,
          "weight of the past in the running statistics of zclip (default 0.97) and adagc "
          "(default 0.98)", low=1e-6, high=0.999999, optional=True),
    Param("clip_warmup", "int", None,
          "steps that only gather statistics: zclip (default 25) and adagc (default 100, "
          "clipping the global norm at clip_abs meanwhile)", low=1, high=10**7, optional=True),
    Param("clip_abs", "float", 1.0, "adagc's global-norm threshold during its warmup",
          low=1e-12, high=1e12),
    Param("skip", "str", "none",
          "skip the update when the gradient is not finite (nonfinite), or also when the loss "
          "or gradient norm is a z-score outlier of a rolling window (zscore)",
          choices=SKIPPING),
    Param("skip_window", "int", 128, "steps in the rolling window of skip='zscore'", low=2,
          high=10**7),
    Param("skip_threshold", "float", 6.0,
          "standard deviations from the window's mean beyond which skip='zscore' skips",
          low=1e-6, high=1e6),
    Param("penalty", "str", "none", "weight penalty added to the loss", choices=PENALTIES),
    Param("penalty_strength", "float", 0.0,
          "coefficient of the penalty: lambda*sum|w| (l1) or lambda/2*sum w^2 (l2)",
          low=0.0, high=1e6),
    Param("weight_decay", "float", 0.0,
          "decoupled weight decay: w <- w - lr*weight_decay*w each step", low=0.0, high=1e6),
    Param("schedule", "str", "constant", "learning-rate schedule after warmup",
          choices=SCHEDULES),
    Param("warmup_steps", "int", 0, "steps of linear learning-rate warmup from lr/warmup",
          low=0, high=10**7),
    Param("stop_factor", "float", 0.0,
          "early stopping: stop when the loss exceeds stop_factor x the first loss (or turns "
          "NaN/Inf) and restore the best weights; 0 = off", low=0.0, high=1e12),
)


def check_remedies(config: dict) -> None:
    """A percentile is at most 100."""
    if config.get("clip") == "percentile" and not config["clip_threshold"] <= 100:
        raise ConfigError(
            f"parameter 'clip_threshold': got {config['clip_threshold']:g} with "
            "clip='percentile'; allowed: a percentile in (0, 100]")


@dataclass(frozen=True)
class Remedies:
    """One run's remedies; the defaults change nothing."""

    clip: str = "none"
    clip_threshold: float = 1.0
    clip_ema: float | None = None
    clip_warmup: int | None = None
    clip_abs: float = 1.0
    skip: str = "none"
    skip_window: int = 128
    skip_threshold: float = 6.0
    penalty: str = "none"
    penalty_strength: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    stop_factor: float = 0.0

    @classmethod
    def from_config(cls, config: dict) -> Remedies:
        return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config})

    def penalty_term(self, params: Iterable[torch.Tensor]) -> torch.Tensor | float:
        """The weight penalty to add to the loss (0 when there is none)."""
        if self.penalty == "none" or self.penalty_strength == 0:
            return 0.0
        weights = [p for p in params if p.ndim > 1]  # weights, not biases or gains
        if self.penalty == "l1":
            return self.penalty_strength * sum(w.abs().sum() for w in weights)
        return 0.5 * self.penalty_strength * sum(w.pow(2).sum() for w in weights)

    def clip_(self, params: list[torch.Tensor], final: list[torch.Tensor]) -> bool:
        """Clip the gradients of ``params`` in place with one of the rules that need no
        history; ``final`` holds the output layer's parameters, which adaptive clipping
        leaves alone.  Returns whether a gradient changed.  (The rules with a history are
        :meth:`clipper` 's.)"""
        if self.clip == "norm":
            norm = torch.nn.utils.clip_grad_norm_(params, self.clip_threshold)
            return bool(norm > self.clip_threshold)
        if self.clip == "value":
            grads = [p.grad for p in params if p.grad is not None]
            changed = max(g.abs().max() for g in grads) > self.clip_threshold
            torch.nn.utils.clip_grad_value_(params, self.clip_threshold)
            return bool(changed)
        if self.clip == "agc":
            final_ids = {id(p) for p in final}
            return adaptive_clip_grad_([p for p in params if id(p) not in final_ids],
                                       clip_factor=self.clip_threshold)
        return False

    def clipper(self):
        """The clipping of one run: ``clip(params, final, total_norm) -> bool``, keeping
        the statistics of the rules that follow the run's history."""
        if self.clip == "percentile":
            rule = PercentileClip(self.clip_threshold)
        elif self.clip == "zclip":
            rule = ZClip(self.clip_threshold, self.clip_ema or 0.97, self.clip_warmup or 25)
        elif self.clip == "adagc":
            rule = AdaGC(self.clip_threshold, self.clip_ema or 0.98, self.clip_warmup or 100,
                         self.clip_abs)
        else:
            return lambda params, final, total_norm: self.clip_(params, final)
        return lambda params, final, total_norm: rule(params, total_norm)

    def skipper(self) -> SkipRule:
        """The skipping rule of one run (``skip='none'`` never skips)."""
        return SkipRule(self.skip, self.skip_window, self.skip_threshold)

    def lr_factor(self, step: int, steps: int) -> float:
        """Multiplier of the base learning rate at ``step`` (0-based) of ``steps``."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, steps - self.warmup_steps)
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))  # step: x0.1 at 50 %, 75 %

    @torch.no_grad()
    def decay_(self, params: list[torch.Tensor], lr: float) -> None:
        """Decoupled weight decay of the weight matrices, applied before the update."""
        if self.weight_decay:
            torch._foreach_mul_([p for p in params if p.ndim > 1], 1 - lr * self.weight_decay)
