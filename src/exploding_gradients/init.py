"""Named weight-initialization schemes.

=============  ============================================  ====================
scheme         weights                                       biases
=============  ============================================  ====================
``default``    PyTorch's ``nn.Linear`` default:               U(-1/sqrt(fan_in), +)
               U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
               i.e. variance 1/(3 fan_in)
``normal``     N(0, sigma_w^2 / fan_in)                       N(0, sigma_b^2)
``xavier``     N(0, 2 / (fan_in + fan_out))  (Glorot 2010)    0
``he``         N(0, 2 / fan_in)              (He 2015)        0
``orthogonal`` gain * orthogonal, gain from                   0
               ``torch.nn.init.calculate_gain(activation)``
``lsuv``       orthogonal, then each hidden layer rescaled    0
               on a batch of data until its output has
               unit variance (Mishkin & Matas 2016; data-
               dependent: :func:`lsuv_`)
=============  ============================================  ====================

:func:`effective_sigmas` gives the (sigma_w, sigma_b) of each scheme in the
mean-field convention W ~ N(0, sigma_w^2/fan_in), so theory and measurement use
exactly the same numbers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SCHEMES = ("default", "normal", "xavier", "he", "orthogonal", "lsuv")
LSUV_BATCH = 256  # samples LSUV measures variances on

# calculate_gain knows these names; the rest get gain 1 (its own default).
_GAIN_NAMES = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "linear": "linear",
               "leaky_relu": "leaky_relu", "selu": "selu"}


def gain(activation: str) -> float:
    """PyTorch's recommended gain for ``activation`` (used by ``orthogonal``)."""
    if activation == "leaky_relu":
        return nn.init.calculate_gain("leaky_relu", 0.01)
    return nn.init.calculate_gain(_GAIN_NAMES.get(activation, "linear"))


def effective_sigmas(scheme: str, activation: str, fan_in: int, fan_out: int,
                     sigma_w: float = 1.0, sigma_b: float = 0.0) -> tuple[float, float]:
    """(sigma_w, sigma_b) such that Var[W] = sigma_w^2/fan_in and Var[b] = sigma_b^2."""
    if scheme == "default":
        return math.sqrt(1 / 3), math.sqrt(1 / (3 * fan_in))
    if scheme == "normal":
        return sigma_w, sigma_b
    if scheme == "xavier":
        return math.sqrt(2 * fan_in / (fan_in + fan_out)), 0.0
    if scheme == "he":
        return math.sqrt(2.0), 0.0
    if scheme == "orthogonal":
        # An orthogonal fan_out x fan_in matrix scaled by g has Var[W_ij] = g^2/max(fan_in,
        # fan_out); for square layers that is g^2/fan_in.
        return gain(activation) * math.sqrt(fan_in / max(fan_in, fan_out)), 0.0
    if scheme == "lsuv":
        raise ValueError("init 'lsuv' is data-dependent: it has no sigma_w before it sees data")
    raise ValueError(f"unknown init scheme {scheme!r}; allowed: {', '.join(SCHEMES)}")


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a dense or convolutional weight: for a convolution, input
    channels x kernel area and output channels x kernel area (PyTorch's convention)."""
    receptive = weight[0][0].numel() if weight.ndim > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


@torch.no_grad()
def init_linear(layer: nn.Module, scheme: str, activation: str, generator: torch.Generator,
                sigma_w: float = 1.0, sigma_b: float = 0.0) -> None:
    """Initialize one ``nn.Linear`` or convolution in place, drawing only from
    ``generator``; the variances use its fan-in (:func:`fans`)."""
    w, b = layer.weight, layer.bias
    fan_in, fan_out = fans(w)
    if scheme == "default":
        bound = 1 / math.sqrt(fan_in)
        w.uniform_(-bound, bound, generator=generator)
        if b is not None:
            b.uniform_(-bound, bound, generator=generator)
        return
    if scheme == "orthogonal":
        nn.init.orthogonal_(w, gain=gain(activation), generator=generator)
    elif scheme == "lsuv":  # orthonormal start; lsuv_ rescales it once data is at hand
        nn.init.orthogonal_(w, generator=generator)
    else:
        sw, _ = effective_sigmas(scheme, activation, fan_in, fan_out, sigma_w, sigma_b)
        w.normal_(0.0, sw / math.sqrt(fan_in), generator=generator)
    if b is not None:
        if scheme == "normal" and sigma_b > 0:
            b.normal_(0.0, sigma_b, generator=generator)
        else:
            b.zero_()


LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def initialize(model: nn.Module, scheme: str, activation: str, generator: torch.Generator,
               sigma_w: float = 1.0, sigma_b: float = 0.0) -> nn.Module:
    """Apply ``scheme`` to every ``nn.Linear`` and convolution of ``model`` in module
    order, and draw every embedding from N(0, 1); returns it."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; allowed: {', '.join(SCHEMES)}")
    for module in model.modules():
        if isinstance(module, LAYERS):
            init_linear(module, scheme, activation, generator, sigma_w, sigma_b)
        elif isinstance(module, nn.Embedding):
            with torch.no_grad():
                module.weight.normal_(0.0, 1.0, generator=generator)
    return model


@torch.no_grad()
def lsuv_(model: nn.Module, x: torch.Tensor, tol: float = 0.02, max_iter: int = 10) -> list[float]:
    """Layer-sequential unit-variance scaling (Mishkin & Matas 2016), in place.

    Input side first, each hidden Linear's weights are divided by the standard deviation
    of its output on ``x`` until that variance is within ``tol`` of 1, so every layer
    starts with the same signal scale whatever the activation.  Returns each layer's
    final output variance.  Needs ``model.hidden_layers()`` (the MLP's Linear layers, the
    convolutional network's convolutions).
    """
    variances, seen = [], []
    for layer in model.hidden_layers():
        hook = layer.register_forward_hook(lambda m, i, out: seen.append(out.var().item()))
        try:
            for _ in range(max_iter):
                seen.clear()
                model(x)
                if abs(seen[0] - 1) < tol or not 0 < seen[0] < math.inf:
                    break  # done, or a dead/overflowing layer no rescaling can fix
                layer.weight.div_(math.sqrt(seen[0]))
        finally:
            hook.remove()
        variances.append(seen[0])
    return variances
