"""Mixed precision: float16 or bfloat16 compute with float32 weights, and loss scaling.

``precision="bf16"`` or ``"fp16"`` runs the forward pass under
``torch.autocast(device, dtype)``: matrix products and the activations between them are
computed in half precision while the parameters (and their gradients and optimizer
state) stay float32, as PyTorch recommends.  float16 holds finite values up to 65504 and
subnormals down to about 6e-8; bfloat16 has float32's range with 8 bits of mantissa.

``loss_scaling="dynamic"`` uses PyTorch's own ``torch.amp.GradScaler``
(Micikevicius et al. 2018): the loss is multiplied by a scale before the backward pass,
so that small gradients do not flush to zero in float16; a step whose gradients
overflow (Inf/NaN) is skipped and the scale halved; after ``growth_interval`` good steps
the scale doubles.  The gradients must be unscaled before they are clipped
(``scaler.unscale_(optimizer)``): ``clip_order="scaled"`` clips them while still scaled,
the common mistake, for the book to measure what it does.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, fields

import torch

from .engine.params import ConfigError, Param

PRECISIONS = ("fp32", "bf16", "fp16")
LOSS_SCALING = ("none", "dynamic")
CLIP_ORDERS = ("unscaled", "scaled")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

PRECISION_PARAMS = (
    Param("precision", "str", "fp32",
          "compute dtype of the forward pass: fp32, or bf16/fp16 under autocast (weights stay "
          "float32)", choices=PRECISIONS),
    Param("loss_scaling", "str", "none",
          "dynamic loss scaling with torch.amp.GradScaler (needs precision bf16 or fp16)",
          choices=LOSS_SCALING),
    Param("loss_scale_init", "float", 65536.0, "the loss scale GradScaler starts from",
          low=1.0, high=2.0**64),
    Param("loss_scale_growth", "int", 2000,
          "good steps after which GradScaler doubles the scale (a huge value keeps it static "
          "until an overflow halves it)", low=1, high=10**9),
    Param("clip_order", "str", "unscaled",
          "clip the unscaled gradients (right) or the still-scaled ones (the common mistake)",
          choices=CLIP_ORDERS),
)


@dataclass(frozen=True)
class Precision:
    """One run's numerics; the defaults are plain float32."""

    precision: str = "fp32"
    loss_scaling: str = "none"
    loss_scale_init: float = 65536.0
    loss_scale_growth: int = 2000
    clip_order: str = "unscaled"

    @classmethod
    def from_config(cls, config: dict) -> Precision:
        return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config})

    def autocast(self, device: torch.device | str = "cpu"):
        """The context of the forward pass: autocast to half precision, or nothing."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=DTYPES[self.precision])

    def scaler(self, device: torch.device | str = "cpu") -> torch.amp.GradScaler | None:
        if self.loss_scaling == "none":
            return None
        return torch.amp.GradScaler(torch.device(device).type, init_scale=self.loss_scale_init,
                                    growth_interval=self.loss_scale_growth)


def check_precision(config: dict) -> None:
    """Loss scaling needs half precision; a clip order only matters with both a scaler
    and clipping."""
    if config.get("loss_scaling", "none") != "none" and config.get("precision") == "fp32":
        raise ConfigError(
            f"parameter 'loss_scaling': got {config['loss_scaling']!r} with precision 'fp32'; "
            "allowed: 'none' with fp32 (float32 needs no loss scaling), or precision bf16/fp16")
    if config.get("clip_order", "unscaled") == "scaled" and (
            config.get("loss_scaling", "none") == "none" or config.get("clip", "none") == "none"):
        raise ConfigError(
            "parameter 'clip_order': got 'scaled'; allowed: 'unscaled', or 'scaled' together "
            "with loss_scaling='dynamic' and a clip (there is nothing to get wrong otherwise)")


def limits(precision: str) -> dict[str, float]:
    """What the compute dtype of ``precision`` can hold (IEEE 754 binary32 and binary16,
    and bfloat16, float32's exponent with 8 significant bits): ``max`` (the largest
    finite value: anything larger is Inf), ``smallest_normal``, ``smallest_subnormal``
    (smallest_normal * eps; a value under half of it rounds to zero), ``eps`` (the gap
    between 1 and the next number: the relative rounding step) and ``significant_bits``."""
    if precision not in DTYPES:
        raise ConfigError(f"parameter 'precision': got {precision!r}; allowed: "
                          f"{', '.join(PRECISIONS)}")
    info = torch.finfo(DTYPES[precision])
    return {"max": float(info.max), "smallest_normal": float(info.smallest_normal),
            "smallest_subnormal": float(info.smallest_normal * info.eps),
            "eps": float(info.eps), "significant_bits": 1 - round(math.log2(info.eps))}
