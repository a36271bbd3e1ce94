"""A configurable multilayer perceptron.

``depth`` hidden layers, each ``Linear -> normalization -> activation -> dropout`` (the
Linear's output is the *pre-activation* the theory talks about), optionally wrapped in a
residual connection ``x + scale * block(x)``, followed by a linear readout.
"""

from __future__ import annotations

import torch
from torch import nn

from ..activations import make_activation
from ..init import initialize

NORMALIZATIONS = ("none", "batch", "layer")


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    raise ValueError(f"unknown normalization {kind!r}; allowed: {', '.join(NORMALIZATIONS)}")


class SeededDropout(nn.Module):
    """Dropout (Srivastava et al. 2014) whose masks come from ``generator`` instead of
    torch's global random state, so a seed's run is reproducible bit for bit; in
    evaluation mode it passes its input through."""

    def __init__(self, p: float, generator: torch.Generator | None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p, self.generator = p, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, generator=self.generator).to(x.device) >= self.p
        return x * keep / (1 - self.p)


class Block(nn.Module):
    """One hidden layer: ``dropout(act(norm(linear(x))))``, plus ``x`` when residual."""

    def __init__(self, d_in: int, width: int, activation: str, normalization: str,
                 residual: bool, residual_scale: float = 1.0, dropout: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.linear = nn.Linear(d_in, width)
        self.norm = _norm(normalization, width)
        self.act = make_activation(activation)
        self.drop = SeededDropout(dropout, generator) if dropout else nn.Identity()
        self.residual = residual and d_in == width
        self.residual_scale = residual_scale
        # identities are skipped, not called: a module call costs a few microseconds,
        # a few percent of a small network's step
        self._norm, self._drop = normalization != "none", bool(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        out = self.act(self.norm(out) if self._norm else out)
        out = self.drop(out) if self._drop else out
        return x + self.residual_scale * out if self.residual else out


class MLP(nn.Module):
    """``depth`` hidden :class:`Block` s of ``width`` units and a linear readout."""

    def __init__(self, d_in: int, width: int, depth: int, d_out: int, activation: str = "relu",
                 normalization: str = "none", residual: bool = False,
                 residual_scale: float = 1.0, dropout: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(d_in if i == 0 else width, width, activation, normalization, residual,
                  residual_scale, dropout, generator)
            for i in range(depth)
        )
        self.readout = nn.Linear(width, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.readout(x)

    def hidden_layers(self) -> list[nn.Linear]:
        """The hidden layers' Linear modules, input side first (layer 1, 2, ...)."""
        return [block.linear for block in self.blocks]


def build_mlp(config: dict, d_in: int, d_out: int, generator: torch.Generator) -> MLP:
    """An initialized :class:`MLP` from the shared model parameters of a config; its
    dropout masks, if any, are drawn from ``generator`` too."""
    model = MLP(d_in, config["width"], config["depth"], d_out, config["activation"],
                config["normalization"], config["residual"], config.get("residual_scale", 1.0),
                config.get("dropout", 0.0), generator)
    return initialize(model, config["init"], config["activation"], generator,
                      config["sigma_w"], config["sigma_b"])
