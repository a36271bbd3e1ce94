"""A small transformer encoder, written out so that every part is a module one can watch.

Tokens are embedded (plus a learned position embedding) into ``width`` dimensions and pass
``depth`` blocks of multi-head self-attention and a feed-forward layer (``width`` -> 4
``width`` -> ``width``), each added to the residual stream, and a linear head reads every
position.  ``norm_position`` places the layer norms:

* ``post`` (Vaswani et al. 2017): ``x = LN(x + attn(x)); x = LN(x + ffn(x))``;
* ``pre`` (Xiong et al. 2020): ``x = x + attn(LN(x)); x = x + ffn(LN(x))``, and a final
  LN before the head;
* ``none``: no layer norm at all.

``qk_norm`` applies a layer norm to the queries and the keys of each head before their
dot product (Dehghani et al. 2023; Wortsman et al. 2023), which bounds the attention
logits.  The logits pass through an :class:`AttentionLogits` module (an identity), so a
:class:`~exploding_gradients.monitor.GradientMonitor` sees them like any layer's output,
their largest value included.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..activations import make_activation
from ..init import initialize
from .mlp import SeededDropout

NORM_POSITIONS = ("pre", "post", "none")


class AttentionLogits(nn.Identity):
    """The attention logits q . k / sqrt(d), passed through unchanged: a place for hooks."""


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate query, key, value and output projections."""

    def __init__(self, width: int, heads: int, qk_norm: bool = False):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.heads, self.head_dim = heads, width // heads
        self.q, self.k, self.v, self.out = (nn.Linear(width, width) for _ in range(4))
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.logits = AttentionLogits()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, L, W) -> (B, heads, L, head_dim)
            return t.view(batch, length, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = self.q_norm(split(self.q(x))), self.k_norm(split(self.k(x))), split(self.v(x))
        scores = self.logits(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim))
        mixed = torch.softmax(scores, dim=-1) @ v
        return self.out(mixed.transpose(1, 2).reshape(batch, length, width))


class TransformerBlock(nn.Module):
    """Attention and feed-forward, each added to the residual stream (see the module)."""

    def __init__(self, width: int, heads: int, activation: str, norm_position: str,
                 qk_norm: bool, dropout: float = 0.0, generator: torch.Generator | None = None):
        super().__init__()
        if norm_position not in NORM_POSITIONS:
            raise ValueError(f"unknown norm_position {norm_position!r}; allowed: "
                             f"{', '.join(NORM_POSITIONS)}")
        self.norm_position = norm_position
        self.attn = SelfAttention(width, heads, qk_norm)
        self.ff1, self.act, self.ff2 = (nn.Linear(width, 4 * width),
                                        make_activation(activation), nn.Linear(4 * width, width))
        norm = (lambda: nn.LayerNorm(width)) if norm_position != "none" else nn.Identity
        self.norm1, self.norm2 = norm(), norm()
        self.drop = SeededDropout(dropout, generator) if dropout else nn.Identity()

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff2(self.act(self.ff1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_position == "post":
            x = self.norm1(x + self.drop(self.attn(x)))
            return self.norm2(x + self.drop(self.ffn(x)))
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.ffn(self.norm2(x)))


class Transformer(nn.Module):
    """Token and position embeddings, ``depth`` :class:`TransformerBlock` s, a linear head
    on every position.  ``vocab = 0`` takes continuous inputs of ``width`` features instead
    of tokens (what the signal-propagation experiment feeds)."""

    def __init__(self, vocab: int, seq_len: int, width: int, depth: int, heads: int,
                 d_out: int, activation: str = "gelu", norm_position: str = "pre",
                 qk_norm: bool = False, dropout: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.embed = nn.Embedding(vocab, width) if vocab else nn.Identity()
        self.position = nn.Embedding(seq_len, width)
        self.blocks = nn.ModuleList(
            TransformerBlock(width, heads, activation, norm_position, qk_norm, dropout,
                             generator) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width) if norm_position == "pre" else nn.Identity()
        self.head = nn.Linear(width, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x) + self.position.weight[: x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))

    def hidden_layers(self) -> list[TransformerBlock]:
        """The blocks, input side first (layer 1, 2, ...)."""
        return list(self.blocks)

    @property
    def readout(self) -> nn.Linear:
        return self.head


def build_transformer(config: dict, vocab: int, seq_len: int, d_out: int,
                      generator: torch.Generator) -> Transformer:
    """An initialized :class:`Transformer` from a config's model parameters: every Linear
    by ``config["init"]`` (fan-in convention of :mod:`..init`), embeddings N(0, 1), layer
    norms at gain 1 and bias 0."""
    model = Transformer(vocab, seq_len, config["width"], config["depth"], config["heads"],
                        d_out, config["activation"], config["norm_position"],
                        config["qk_norm"], config.get("dropout", 0.0), generator)
    return initialize(model, config["init"], config["activation"], generator,
                      config["sigma_w"], config["sigma_b"])
