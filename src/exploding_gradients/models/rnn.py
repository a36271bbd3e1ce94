"""Recurrent cells and the network that unrolls them.

``spectral_radius`` sets the recurrent weights: the recurrent matrix of a vanilla tanh
RNN is a Gaussian matrix rescaled so that its largest eigenvalue modulus is exactly
``spectral_radius``.  LSTM and GRU cells have one recurrent block per gate (LSTM: input,
forget, cell, output; GRU: reset, update, new); each block is drawn independently and
rescaled the same way.  Input weights are Gaussian with variance ``input_std^2 /
input_size`` (each unit's input drive has standard deviation ``input_std``); all biases
are zero, except the LSTM's forget gate, whose bias is ``forget_bias`` (0 by default;
Gers, Schmidhuber & Cummins 2000 and Jozefowicz, Zaremba & Sutskever 2015 recommend 1,
which makes the forget gate start near sigmoid(1) = 0.73 instead of 0.5).
"""

from __future__ import annotations

import math

import torch
from torch import nn

CELLS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def scaled_block(n: int, spectral_radius: float, generator: torch.Generator,
                 dtype=torch.float64) -> torch.Tensor:
    """An n x n Gaussian matrix rescaled to have spectral radius ``spectral_radius``."""
    g = torch.randn(n, n, generator=generator, dtype=torch.float64) / math.sqrt(n)
    radius = torch.linalg.eigvals(g).abs().max().item()
    return (g * (spectral_radius / radius)).to(dtype)


def build_cell(cell: str, input_size: int, hidden_size: int, spectral_radius: float,
               generator: torch.Generator, input_std: float = 1.0,
               dtype=torch.float32, forget_bias: float = 0.0) -> nn.Module:
    """``nn.RNNCell`` (tanh), ``nn.LSTMCell`` or ``nn.GRUCell`` initialized from ``generator``.

    Every parameter is overwritten, so the result depends on ``generator`` (and
    ``forget_bias``) only.  ``forget_bias`` is the LSTM forget gate's initial bias (the
    second of PyTorch's four gate blocks: input, forget, cell, output); it draws nothing
    from ``generator``, and a nonzero value for another cell is an error.
    """
    classes = {"rnn": lambda: nn.RNNCell(input_size, hidden_size, nonlinearity="tanh"),
               "lstm": lambda: nn.LSTMCell(input_size, hidden_size),
               "gru": lambda: nn.GRUCell(input_size, hidden_size)}
    if cell not in classes:
        raise ValueError(f"unknown cell {cell!r}; allowed: {', '.join(CELLS)}")
    if forget_bias and cell != "lstm":
        raise ValueError(f"forget_bias is an LSTM parameter; got {forget_bias} for {cell!r}")
    module = classes[cell]().to(dtype)
    gates = GATES[cell]
    with torch.no_grad():
        module.weight_hh.copy_(torch.cat([scaled_block(hidden_size, spectral_radius, generator)
                                          for _ in range(gates)]))
        module.weight_ih.copy_(torch.randn(gates * hidden_size, input_size, generator=generator,
                                           dtype=torch.float64) * input_std / input_size**0.5)
        module.bias_ih.zero_()
        module.bias_hh.zero_()
        if cell == "lstm":
            module.bias_ih[hidden_size:2 * hidden_size] = forget_bias
    return module


def recurrent_blocks(module: nn.Module) -> list[torch.Tensor]:
    """The per-gate square recurrent blocks of a cell's ``weight_hh``."""
    w = module.weight_hh.detach().double()
    return list(w.split(w.shape[1]))


def matrix_stats(module: nn.Module) -> dict:
    """Spectral radius, largest singular value and RMS row norm (sigma_w) of the blocks.

    For gated cells, the largest value over the gate blocks.
    """
    blocks = recurrent_blocks(module)
    return {
        "spectral_radius_measured": max(torch.linalg.eigvals(b).abs().max().item()
                                        for b in blocks),
        "sigma_max": max(torch.linalg.matrix_norm(b, ord=2).item() for b in blocks),
        "sigma_w": max((b.norm() / math.sqrt(b.shape[0])).item() for b in blocks),
    }


def unroll(module: nn.Module, x: torch.Tensor, h0: torch.Tensor) -> list[torch.Tensor]:
    """Hidden states ``[h_0, h_1, ..., h_T]`` for inputs ``x`` of shape (T, batch, input)."""
    states = [h0]
    h, c = h0, torch.zeros_like(h0)
    for x_t in x:
        if isinstance(module, nn.LSTMCell):
            h, c = module(x_t, (h, c))
        else:
            h = module(x_t, h)
        states.append(h)
    return states


class Sequence(nn.Module):
    """A recurrent cell unrolled over the sequence and a linear readout of h_T."""

    def __init__(self, cell: nn.Module, hidden_size: int, generator: torch.Generator):
        super().__init__()
        self.cell = cell
        self.readout = nn.Linear(hidden_size, 1)
        with torch.no_grad():
            self.readout.weight.copy_(torch.randn(1, hidden_size, generator=generator)
                                      / hidden_size**0.5)
            self.readout.bias.fill_(1.0)  # start at the mean target: loss 1/6

    def forward(self, x: torch.Tensor, keep_states: bool = False):
        """The readout of h_T, and with ``keep_states`` also ``[h_0, ..., h_T]``."""
        h0 = torch.zeros(x.shape[1], self.readout.in_features, dtype=x.dtype)
        states = unroll(self.cell, x, h0)
        out = self.readout(states[-1])
        return (out, states) if keep_states else out
