"""Remedies applied inside the training loop, one place for each.

* **Gradient clipping** - by global norm and by value with PyTorch's own
  ``clip_grad_norm_`` / ``clip_grad_value_``; adaptive gradient clipping
  (:func:`adaptive_clip_grad_`, Brock et al. 2021).
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

from .engine.params import Param

CLIPPING = ("none", "norm", "value", "agc")
PENALTIES = ("none", "l1", "l2")
SCHEDULES = ("constant", "cosine", "step")


def unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """Norm per output unit: over all dims but the first for matrices and conv kernels,
    over the whole tensor for vectors and scalars (biases, gains) - the NFNets convention."""
    if x.ndim <= 1:
        return x.norm()
    return x.norm(dim=tuple(range(1, x.ndim)), keepdim=True)


@torch.no_grad()
def adaptive_clip_grad_(parameters, clip_factor: float = 0.01, eps: float = 1e-3) -> None:
    """Adaptive gradient clipping (Brock, De, Smith & Simonyan 2021, "NFNets"), in place.

    Each unit's gradient G is rescaled to ``clip_factor * max(||W||, eps) / ||G||`` times
    itself when its norm exceeds ``clip_factor * max(||W||, eps)``: the limit follows the
    size of the weights it updates, so no single threshold has to fit every layer.  Brock
    et al. leave the final (classifier) layer unclipped; the training loop does the same
    by not passing it here.
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    for p in parameters:
        if p.grad is None:
            continue
        max_norm = unitwise_norm(p.detach()).clamp_min(eps) * clip_factor
        grad_norm = unitwise_norm(p.grad)
        clipped = p.grad * (max_norm / grad_norm.clamp_min(1e-6))
        p.grad.copy_(torch.where(grad_norm > max_norm, clipped, p.grad))


REMEDY_PARAMS = (
    Param("clip", "str", "none",
          "gradient clipping: by global norm, by value, or adaptive (agc, unit-wise)",
          choices=CLIPPING),
    Param("clip_threshold", "float", 1.0,
          "largest global norm (norm), largest |g| (value), or the clip factor lambda (agc)",
          low=1e-12, high=1e12),
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


@dataclass(frozen=True)
class Remedies:
    """One run's remedies; the defaults change nothing."""

    clip: str = "none"
    clip_threshold: float = 1.0
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

    def clip_(self, params: list[torch.Tensor], final: list[torch.Tensor]) -> None:
        """Clip the gradients of ``params`` in place; ``final`` holds the output layer's
        parameters, which adaptive clipping leaves alone."""
        if self.clip == "norm":
            torch.nn.utils.clip_grad_norm_(params, self.clip_threshold)
        elif self.clip == "value":
            torch.nn.utils.clip_grad_value_(params, self.clip_threshold)
        elif self.clip == "agc":
            final_ids = {id(p) for p in final}
            adaptive_clip_grad_([p for p in params if id(p) not in final_ids],
                                clip_factor=self.clip_threshold)

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
