"""A plain convolutional stack, the convolutional twin of :mod:`.mlp`.

``depth`` blocks, each ``Conv2d -> normalization -> activation`` (the convolution's output
is the pre-activation), optionally residual (``x + scale * block(x)``), on images of
``channels`` channels; a first convolution maps the input's channels to ``channels``, and a
linear readout sees every position (flattened).  Convolutions pad circularly, so every
position sees a whole kernel: with a dense readout of all positions, a layer then
multiplies the backpropagated gradient's squared norm by the same chi_1 as a dense layer
whose fan-in is channels x kernel area (Xiao et al. 2018).  (Zero padding shrinks the
border's fan-in; a global-average-pool readout excites only the spatially constant mode, so
the effective width falls to the channel count.)
"""

from __future__ import annotations

import torch
from torch import nn

from ..activations import make_activation
from ..init import initialize
from .mlp import SeededDropout

NORMALIZATIONS = ("none", "batch")


class ConvBlock(nn.Module):
    """``act(norm(conv(x)))``, plus ``x`` when residual (and shapes agree)."""

    def __init__(self, c_in: int, channels: int, kernel_size: int, activation: str,
                 normalization: str, residual: bool, residual_scale: float = 1.0,
                 dropout: float = 0.0, generator: torch.Generator | None = None):
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {normalization!r} for a convolutional "
                             f"network; allowed: {', '.join(NORMALIZATIONS)}")
        self.conv = nn.Conv2d(c_in, channels, kernel_size, padding=kernel_size // 2,
                              padding_mode="circular")
        self.norm = nn.BatchNorm2d(channels) if normalization == "batch" else nn.Identity()
        self.act = make_activation(activation)
        self.drop = SeededDropout(dropout, generator) if dropout else nn.Identity()
        self.residual = residual and c_in == channels
        self.residual_scale = residual_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(self.act(self.norm(self.conv(x))))
        return x + self.residual_scale * out if self.residual else out


class ConvNet(nn.Module):
    """``depth`` :class:`ConvBlock` s of ``channels`` channels on ``image_size`` x
    ``image_size`` images with ``in_channels`` channels, and a linear readout."""

    def __init__(self, in_channels: int, channels: int, depth: int, kernel_size: int,
                 image_size: int, d_out: int, activation: str = "relu",
                 normalization: str = "none", residual: bool = False,
                 residual_scale: float = 1.0, dropout: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centred kernel), got {kernel_size}")
        self.blocks = nn.ModuleList(
            ConvBlock(in_channels if i == 0 else channels, channels, kernel_size, activation,
                      normalization, residual, residual_scale, dropout, generator)
            for i in range(depth))
        self.readout = nn.Linear(channels * image_size * image_size, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.readout(x.flatten(1))

    def hidden_layers(self) -> list[nn.Conv2d]:
        """The blocks' convolutions, input side first (layer 1, 2, ...)."""
        return [block.conv for block in self.blocks]


def build_cnn(config: dict, in_channels: int, d_out: int,
              generator: torch.Generator) -> ConvNet:
    """An initialized :class:`ConvNet` from a config's model parameters; the fan-in of a
    convolution is its input channels x kernel area (see :mod:`..init`)."""
    model = ConvNet(in_channels, config["channels"], config["depth"], config["kernel_size"],
                    config["image_size"], d_out, config["activation"],
                    config["normalization"], config["residual"],
                    config.get("residual_scale", 1.0), config.get("dropout", 0.0), generator)
    return initialize(model, config["init"], config["activation"], generator,
                      config["sigma_w"], config["sigma_b"])
