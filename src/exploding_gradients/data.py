"""Deterministic synthetic data: the same seed gives the same tensors, bit for bit.

Nothing is downloaded; every task is generated from a ``torch.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

TASKS = ("classification", "regression", "images", "sort")
#: MSE of always predicting 1 on the adding problem: Var(u1 + u2), u ~ U[0, 1].
ADDING_BASELINE_MSE = 1.0 / 6.0


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors plus the loss that goes with them."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str
    d_out: int

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy for classes (over every position of a sequence), half the mean
        squared error for regression."""
        if self.task == "regression":
            return 0.5 * torch.nn.functional.mse_loss(output, target)
        return torch.nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]),
                                                 target.reshape(-1))

    def to(self, device: torch.device) -> Dataset:
        """The same data on ``device`` (itself when it is already there)."""
        if self.x_train.device == torch.device(device):
            return self
        return replace(self, **{k: getattr(self, k).to(device)
                                for k in ("x_train", "y_train", "x_test", "y_test")})

    def accuracy(self, output: torch.Tensor, target: torch.Tensor) -> float:
        """Fraction correct (of every position, for a sequence), NaN for regression."""
        if self.task == "regression":
            return float("nan")
        return (output.argmax(dim=-1) == target).float().mean().item()


def gaussian_inputs(n: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """n samples of x ~ N(0, I_d)."""
    return torch.randn(n, d, generator=generator)


def feature_scales(d_in: int, spread: float) -> torch.Tensor:
    """Per-feature scales spread^(j/(d_in-1)), j = 0..d_in-1: from 1 up to ``spread``."""
    if d_in == 1:
        return torch.ones(1)
    return spread ** (torch.arange(d_in, dtype=torch.float64) / (d_in - 1)).float()


def make_task(task: str, n_train: int, n_test: int, d_in: int, generator: torch.Generator,
              n_classes: int = 4, input_scale_spread: float = 1.0) -> Dataset:
    """A teacher task on Gaussian inputs.

    ``classification``: labels are the argmax of a random linear teacher, so the classes
    are separable and a network that fails to fit them fails because of its optimization.
    ``regression``: targets are a random one-hidden-layer tanh teacher's outputs.
    ``input_scale_spread`` > 1 multiplies feature j by :func:`feature_scales` *after* the
    targets are computed: the same task, presented with unnormalized features.
    """
    x = gaussian_inputs(n_train + n_test, d_in, generator)
    if task == "classification":
        teacher = torch.randn(d_in, n_classes, generator=generator)
        y, d_out = (x @ teacher).argmax(dim=1), n_classes
    elif task == "regression":
        w1 = torch.randn(d_in, 32, generator=generator) / d_in**0.5
        w2 = torch.randn(32, 1, generator=generator) / 32**0.5
        y, d_out = torch.tanh(x @ w1) @ w2, 1
    else:
        raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    x = x * feature_scales(d_in, input_scale_spread)
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], task, d_out)


def adding_batch(batch: int, seq_len: int, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The adding problem: inputs (seq_len, batch, 2) and targets (batch, 1).

    Channel 0 holds values u_t ~ U[0, 1]; channel 1 marks two positions, one uniform in
    the first half [0, T//2) and one in the second half [T//2, T); the target is the sum
    of the two marked values.  Always predicting 1 gives MSE 1/6.
    """
    values = torch.rand(seq_len, batch, generator=generator)
    half = seq_len // 2
    first = torch.randint(0, half, (batch,), generator=generator)
    second = torch.randint(half, seq_len, (batch,), generator=generator)
    marks = torch.zeros(seq_len, batch)
    cols = torch.arange(batch)
    marks[first, cols] = 1.0
    marks[second, cols] = 1.0
    target = (values * marks).sum(dim=0, keepdim=True).T
    return torch.stack([values, marks], dim=2), target


@torch.no_grad()
def make_images(n_train: int, n_test: int, in_channels: int, image_size: int,
                generator: torch.Generator, n_classes: int = 4) -> Dataset:
    """Images x ~ N(0, I) of ``in_channels`` x ``image_size`` x ``image_size``, labelled by
    a random teacher convnet (two 3 x 3 circular convolutions with ReLU, global average
    pooling, features standardized over the dataset, a linear map to ``n_classes``, the
    largest wins): a task whose classes a convnet can separate, with every class present,
    drawn entirely from ``generator``."""
    x = torch.randn(n_train + n_test, in_channels, image_size, image_size, generator=generator)
    w1 = torch.randn(16, in_channels, 3, 3, generator=generator) / (9 * in_channels) ** 0.5
    w2 = torch.randn(16, 16, 3, 3, generator=generator) / (9 * 16) ** 0.5
    head = torch.randn(16, n_classes, generator=generator) / 4
    pad = lambda t: torch.nn.functional.pad(t, (1, 1, 1, 1), mode="circular")  # noqa: E731
    h = torch.relu(torch.nn.functional.conv2d(pad(x), w1))
    h = torch.relu(torch.nn.functional.conv2d(pad(h), w2))
    features = h.mean(dim=(2, 3))
    features = (features - features.mean(0)) / features.std(0).clamp_min(1e-12)
    y = (features @ head).argmax(dim=1)
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], "images", n_classes)


def make_sequences(n_train: int, n_test: int, seq_len: int, vocab: int,
                   generator: torch.Generator) -> Dataset:
    """Sorting: sequences of ``seq_len`` tokens uniform in 0 .. vocab-1; the target at
    each position is the token at that position once the sequence is sorted (every
    position needs the whole sequence: a task for attention)."""
    x = torch.randint(0, vocab, (n_train + n_test, seq_len), generator=generator)
    y = x.sort(dim=1).values
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], "sort", vocab)


# --------------------------------------------------------------------------- outlier batches

OUTLIER_KINDS = ("inputs", "labels")


def outlier_generator(seed: int) -> torch.Generator:
    """The generator of a run's outlier batches: its own stream, apart from the one that
    draws the minibatches, so that a run with outliers sees the same minibatches as its
    clean twin, only some of them corrupted (a fixed odd multiplier keeps it apart from
    every seed's main generator)."""
    return torch.Generator().manual_seed((seed * 0x9E3779B1 + 0x5EED) % 2**63)


def outlier_steps(steps: int, prob: float, burst: int, generator: torch.Generator
                  ) -> torch.Tensor:
    """Which of ``steps`` minibatches are outliers: an episode starts at each step with
    probability ``prob`` (one uniform draw per step, from ``generator``) and corrupts
    ``burst`` consecutive minibatches.  A boolean tensor of length ``steps``."""
    if not 0 <= prob <= 1 or burst < 1:
        raise ValueError(f"need 0 <= prob <= 1 and burst >= 1, got {prob}, {burst}")
    starts = torch.rand(steps, generator=generator) < prob
    hit = torch.zeros(steps, dtype=torch.bool)
    for t in torch.nonzero(starts).flatten().tolist():
        hit[t:t + burst] = True
    return hit


class OutlierBatches:
    """Minibatches of which some are outliers, to make spikes on purpose.

    ``next_batch`` draws the clean minibatches (one call per step, as the training loop
    makes them); ``schedule`` (see :func:`outlier_steps`) says which calls get corrupted.
    ``kind="inputs"``: the batch's inputs multiplied by ``scale`` (a burst of
    heavy-tailed inputs: a ReLU network's outputs and gradients grow with them);
    ``kind="labels"``: its targets replaced by random ones (classification: uniform
    random classes among ``n_classes``; regression: Gaussian targets of standard
    deviation ``scale``), drawn from ``generator``.  ``calls`` counts the batches drawn.
    """

    def __init__(self, next_batch, schedule: torch.Tensor, kind: str, scale: float,
                 generator: torch.Generator, n_classes: int | None = None):
        if kind not in OUTLIER_KINDS:
            raise ValueError(f"unknown outlier kind {kind!r}; allowed: "
                             f"{', '.join(OUTLIER_KINDS)}")
        self.next_batch, self.schedule, self.kind, self.scale = next_batch, schedule, kind, scale
        self.generator, self.n_classes, self.calls = generator, n_classes, 0

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.next_batch()
        hit = self.calls < len(self.schedule) and bool(self.schedule[self.calls])
        self.calls += 1
        if not hit:
            return x, y
        if self.kind == "inputs":
            return x * self.scale, y
        if self.n_classes is not None:  # classification: labels are class indices
            return x, torch.randint(0, self.n_classes, y.shape, generator=self.generator
                                    ).to(y.device)
        noise = torch.randn(y.shape, generator=self.generator).to(y.device)
        return x, self.scale * noise
