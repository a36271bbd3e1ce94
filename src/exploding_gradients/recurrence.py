"""Recurrent networks: gradients across time steps, Pascanu's one-unit model, the adding task.

Experiments registered here:

* ``rnn_gradients``: one forward/backward pass of a freshly initialized recurrent cell
  (vanilla tanh RNN, LSTM or GRU) on Gaussian inputs, with the loss at the last time step
  only; reports ``||dL/dh_{T-k}||`` for every lag ``k`` (the hidden state ``k`` steps
  before the last), together with the recurrent matrix's spectral radius and largest
  singular value.
* ``rnn_training``: the same cells trained on the adding problem (Hochreiter &
  Schmidhuber 1997), with no remedy unless asked for; per-step loss, gradient norm and
  divergence, plus at sampled steps the ratio ``||dL/dh_1|| / ||dL/dh_T||``.

How ``spectral_radius`` is applied: the recurrent weight matrix of a vanilla RNN is a
Gaussian matrix rescaled so that its largest eigenvalue modulus is exactly
``spectral_radius``.  LSTM and GRU cells have one recurrent block per gate (LSTM: input,
forget, cell, output; GRU: reset, update, new); each block is drawn independently and
rescaled the same way, so every block has spectral radius ``spectral_radius``.  Input
weights are Gaussian with variance ``input_std^2 / input_size`` (each unit's input drive
has standard deviation ``input_std``); all biases are zero.

Pascanu, Mikolov & Bengio (2013): with ``h_t = W sigma(h_{t-1}) + U x_t + b`` and
``|sigma'| <= gamma`` (1 for tanh, 1/4 for the logistic sigmoid), a largest singular value
of ``W`` below ``1/gamma`` is *sufficient* for the gradients to vanish, and above it is
*necessary* (not sufficient) for them to explode.  For ``h_t = tanh(W h_{t-1} + U x_t)``,
as computed here, the same bound holds: ``dL/dh_{t-1} = W^T (tanh'(a_t) * dL/dh_t)``, so
``||dL/dh_{t-1}|| <= sigma_max(W) ||dL/dh_t||``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from .config import Param
from .experiments import experiment
from .remedies import REMEDY_PARAMS, Remedies
from .train import OPTIMIZERS, train

CELLS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
GAMMA = {"tanh": 1.0, "sigmoid": 0.25}  # sup |sigma'| of the nonlinearity
ADDING_BASELINE_MSE = 1.0 / 6.0  # Var(u1 + u2), u ~ U[0, 1]: MSE of always predicting 1


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- models

def scaled_block(n: int, spectral_radius: float, generator: torch.Generator,
                 dtype=torch.float64) -> torch.Tensor:
    """An n x n Gaussian matrix rescaled to have spectral radius ``spectral_radius``."""
    g = torch.randn(n, n, generator=generator, dtype=torch.float64) / math.sqrt(n)
    radius = torch.linalg.eigvals(g).abs().max().item()
    return (g * (spectral_radius / radius)).to(dtype)


def build_cell(cell: str, input_size: int, hidden_size: int, spectral_radius: float,
               generator: torch.Generator, input_std: float = 1.0,
               dtype=torch.float32) -> nn.Module:
    """``nn.RNNCell`` (tanh), ``nn.LSTMCell`` or ``nn.GRUCell`` initialized from ``generator``.

    Every parameter is overwritten, so the result depends on ``generator`` only.
    """
    classes = {"rnn": lambda: nn.RNNCell(input_size, hidden_size, nonlinearity="tanh"),
               "lstm": lambda: nn.LSTMCell(input_size, hidden_size),
               "gru": lambda: nn.GRUCell(input_size, hidden_size)}
    if cell not in classes:
        raise ValueError(f"unknown cell {cell!r}; allowed: {', '.join(CELLS)}")
    module = classes[cell]().to(dtype)
    gates = GATES[cell]
    with torch.no_grad():
        module.weight_hh.copy_(torch.cat([scaled_block(hidden_size, spectral_radius, generator)
                                          for _ in range(gates)]))
        module.weight_ih.copy_(torch.randn(gates * hidden_size, input_size, generator=generator,
                                           dtype=torch.float64) * input_std / input_size**0.5)
        module.bias_ih.zero_()
        module.bias_hh.zero_()
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


# --------------------------------------------------------------------------- one-unit model

def one_unit_trajectory(w, b, x0: float = 0.5, steps: int = 50):
    """Final state of ``x_t = w sigmoid(x_{t-1}) + b`` and its exact derivatives.

    Returns float64 arrays ``(x_steps, dx/dw, dx/db)``, the derivatives accumulated in
    forward mode along the trajectory (no finite differences).
    """
    w, b = np.broadcast_arrays(np.asarray(w, dtype=float), np.asarray(b, dtype=float))
    x = np.full(w.shape, float(x0))
    dw = np.zeros(w.shape)
    db = np.zeros(w.shape)
    for _ in range(steps):
        s = 1.0 / (1.0 + np.exp(-x))
        ds = s * (1.0 - s)
        dw, db = s + w * ds * dw, 1.0 + w * ds * db
        x = w * s + b
    return x, dw, db


def one_unit_model(w, b, x0: float = 0.5, steps: int = 50, target: float = 0.7):
    """Pascanu et al.'s one-unit RNN ``x_t = w sigmoid(x_{t-1}) + b``; loss and gradient.

    ``w`` and ``b`` are numbers or arrays of one shape (a grid).  Returns float64 arrays
    ``(loss, dloss_dw, dloss_db)`` with ``loss = (x_steps - target)^2``.
    """
    x, dw, db = one_unit_trajectory(w, b, x0, steps)
    err = x - target
    return err**2, 2 * err * dw, 2 * err * db


def one_unit_cliff(w: float, steps: int = 50, x0: float = 0.5, target: float = 0.7,
                   b_range: tuple[float, float] = (-10.0, 4.0), grid: int = 4001) -> dict:
    """Locate the cliff of the one-unit model along ``b`` at fixed ``w`` and measure it.

    x_steps increases with b (for w > 0), with one steep step where the trajectory
    switches between the basins of the two stable fixed points.  The step is found on a
    grid, then bisection on x_steps(b) = (midpoint of the step) narrows it to float64
    resolution.  Returns ``b_star``, the losses on either side (``loss_left``,
    ``loss_right``), the largest |dL/db| found at the cliff (``peak_grad``), and the
    multiplier ``saddle_slope`` = w sigmoid'(x_u) of the unstable fixed point x_u of the
    map at b_star (NaN if the map is not bistable there).
    """
    bs = np.linspace(*b_range, grid)
    xs = one_unit_trajectory(w, bs, x0, steps)[0]
    j = int(np.argmax(np.diff(xs)))
    lo, hi = bs[j], bs[j + 1]
    mid_x = (xs[j] + xs[j + 1]) / 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if one_unit_trajectory(w, mid, x0, steps)[0] < mid_x:
            lo = mid
        else:
            hi = mid
    peak = max(abs(float(one_unit_model(w, p, x0, steps, target)[2])) for p in (lo, hi))
    return {"b_star": (lo + hi) / 2, "peak_grad": peak,
            "loss_left": float(one_unit_model(w, bs[max(j - 1, 0)], x0, steps, target)[0]),
            "loss_right": float(one_unit_model(w, bs[min(j + 2, grid - 1)], x0, steps,
                                                target)[0]),
            "saddle_slope": _saddle_slope(w, (lo + hi) / 2)}


def _saddle_slope(w: float, b: float) -> float:
    """w sigmoid'(x_u) at the unstable fixed point x_u of x -> w sigmoid(x) + b."""
    if w <= 4:
        return math.nan  # sigmoid' <= 1/4: one fixed point, never unstable
    root = math.sqrt(1 - 4 / w)  # where w sigmoid'(x) = 1: sigmoid = (1 -+ root) / 2
    x1, x2 = (math.log((1 - r) / (1 + r)) for r in (root, -root))
    f = lambda x: w / (1 + math.exp(-x)) + b - x  # noqa: E731
    if not f(x1) < 0 < f(x2):
        return math.nan
    for _ in range(200):
        mid = (x1 + x2) / 2
        x1, x2 = (mid, x2) if f(mid) < 0 else (x1, mid)
    s = 1 / (1 + math.exp(-x1))
    return w * s * (1 - s)


# --------------------------------------------------------------------------- parameters

CELL_PARAMS = (
    Param("cell", "str", "rnn", "recurrent cell: rnn (tanh), lstm or gru", choices=CELLS),
    Param("seq_len", "int", 100, "time steps T of each sequence", low=1, high=100_000),
    Param("hidden_size", "int", 64, "hidden units", low=1, high=4096),
    Param("spectral_radius", "float", 1.0,
          "largest |eigenvalue| of the recurrent matrix (of each gate's block for lstm/gru)",
          low=0.0, high=100.0),
    Param("input_std", "float", 1.0, "standard deviation of each unit's input drive U x_t",
          low=0.0, high=100.0),
)


# --------------------------------------------------------------------------- experiments

@experiment("rnn_gradients", CELL_PARAMS + (
    Param("input_size", "int", 8, "input dimension (inputs x_t ~ N(0, I))", low=1, high=4096),
    Param("batch_size", "int", 32, "sequences in the batch", low=1, high=65536),
))
def rnn_gradients(config: dict, seed: int) -> pd.DataFrame:
    """Norm of dL/dh_{T-k} at every lag k for a freshly initialized recurrent cell.

    Float64 throughout, so that gradients that vanish over hundreds of steps do not
    underflow.  Inputs x_t ~ N(0, I), h_0 = 0, loss = batch mean of v . h_T with a random
    unit vector v (the last time step only, so lag k is unambiguous).  Rows: one per lag
    k = 0 .. seq_len (k = seq_len is the initial state h_0), with ``grad_norm`` (Frobenius
    norm over the batch), ``state_rms`` (RMS of h_{T-k}) and the recurrent matrix's
    ``spectral_radius_measured``, ``sigma_max`` and ``sigma_w`` repeated on every row.
    """
    gen = _generator(seed)
    hidden, batch, steps = config["hidden_size"], config["batch_size"], config["seq_len"]
    module = build_cell(config["cell"], config["input_size"], hidden, config["spectral_radius"],
                        gen, config["input_std"], dtype=torch.float64)
    x = torch.randn(steps, batch, config["input_size"], generator=gen, dtype=torch.float64)
    v = torch.randn(hidden, generator=gen, dtype=torch.float64)
    v = v / v.norm()
    h0 = torch.zeros(batch, hidden, dtype=torch.float64, requires_grad=True)
    states = unroll(module, x, h0)
    for h in states[1:]:
        h.retain_grad()
    loss = (states[-1] @ v).mean()
    loss.backward()
    rows = []
    for lag, h in enumerate(reversed(states)):
        rows.append({"lag": lag, "grad_norm": h.grad.norm().item(),
                     "state_rms": h.detach().pow(2).mean().sqrt().item()})
    return pd.DataFrame(rows).assign(**matrix_stats(module))


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


TRAINING_PARAMS = (
    CELL_PARAMS[0],
    Param("seq_len", "int", 20, "time steps T of each adding-problem sequence", low=2,
          high=100_000),
    Param("hidden_size", "int", 32, "hidden units", low=1, high=4096),
    *CELL_PARAMS[3:],
)


@experiment("rnn_training", TRAINING_PARAMS + (
    Param("optimizer", "str", "adam", "optimizer (momentum = SGD with momentum 0.9)",
          choices=OPTIMIZERS),
    Param("lr", "float", 0.001, "learning rate", low=1e-12, high=1e6),
    Param("steps", "int", 300, "optimizer steps (each on a fresh batch)", low=1, high=10**7),
    Param("batch_size", "int", 32, "sequences per batch", low=1, high=65536),
    Param("log_every", "int", 25, "steps between measurements of dL/dh_1 / dL/dh_T",
          low=1, high=10**7),
    Param("data_seed", "int", 0, "seed of the data stream (shared by all model seeds)", low=0,
          high=2**31 - 1),
) + REMEDY_PARAMS)
def rnn_training(config: dict, seed: int) -> pd.DataFrame:
    """Train a recurrent cell on the adding problem (no remedy unless one is asked for).

    Mean squared error on the last time step; every step draws a fresh batch from the
    data stream.  Rows: one per step with ``loss`` (before the update), ``grad_norm``
    (total over all parameters, before clipping) and, every ``log_every`` steps,
    ``lag_ratio`` = ||dL/dh_1|| / ||dL/dh_T|| (how much of the gradient reaches the first
    time step).  ``diverged_step``, ``stopped_step`` and ``cause`` as in ``training``.
    """
    gen = _generator(seed)
    data_gen = _generator(config["data_seed"])
    hidden = config["hidden_size"]
    cell = build_cell(config["cell"], 2, hidden, config["spectral_radius"], gen,
                      config["input_std"])
    model = Sequence(cell, hidden, gen)
    log = train(model, lambda: adding_batch(config["batch_size"], config["seq_len"], data_gen),
                torch.nn.functional.mse_loss, optimizer=config["optimizer"], lr=config["lr"],
                steps=config["steps"], remedies=Remedies.from_config(config),
                log_every=config["log_every"], layers={},
                final=tuple(model.readout.parameters()), evaluate=lag_ratio)
    table = pd.DataFrame(log.steps).reindex(columns=["step", "loss", "grad_norm", "lr",
                                                     "lag_ratio"])
    table = table.astype({c: "float64" for c in table.columns[1:]})
    return table.assign(diverged_step=-1 if log.diverged_step is None else log.diverged_step,
                        stopped_step=-1 if log.stopped_step is None else log.stopped_step,
                        cause=log.cause)


def lag_ratio(model: Sequence, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """``||dL/dh_1|| / ||dL/dh_T||`` on ``batch``: how much gradient reaches step 1."""
    out, states = model(batch[0], keep_states=True)
    loss = torch.nn.functional.mse_loss(out, batch[1])
    first, last = torch.autograd.grad(loss, [states[1], states[-1]])
    last_norm = last.norm().item()
    return {"lag_ratio": first.norm().item() / last_norm if last_norm > 0 else math.nan}


# --------------------------------------------------------------------------- analysis

def growth_per_lag(df: pd.DataFrame, by: list[str] | None = None,
                   min_lag: int = 0) -> pd.DataFrame:
    """Per-step factor of ``grad_norm`` going back in time, per seed (and group).

    Least-squares fit of ln ||dL/dh_{T-k}|| = a + s k over lags ``k >= min_lag`` where the
    norm is finite and positive; the factor is exp(s): > 1 explodes, < 1 vanishes.
    """
    keys = [*(by or []), "seed"]
    rows = []
    for key, group in df.groupby(keys, sort=False):
        g = group[group["lag"] >= min_lag]
        y = np.log(g["grad_norm"].to_numpy(dtype=float))
        ok = np.isfinite(y)
        slope = (np.polyfit(g["lag"].to_numpy(dtype=float)[ok], y[ok], 1)[0]
                 if ok.sum() >= 2 else math.nan)
        named = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        rows.append({**named, "growth": float(np.exp(slope))})
    return pd.DataFrame(rows)


def pascanu_verdicts(df: pd.DataFrame, gamma: float = GAMMA["tanh"]) -> pd.DataFrame:
    """Per (cell, spectral_radius): matrix statistics, measured growth, Pascanu's verdict.

    ``condition`` is what Pascanu et al.'s criterion says from sigma_max alone:
    "vanishing guaranteed" if gamma sigma_max < 1, otherwise "exploding possible".
    ``measured`` is "explodes" if the mean per-step factor exceeds 1, else "vanishes".
    ``consistent`` is False only if a guaranteed vanishing case was measured to explode.
    ``naive rule`` is the popular reading "spectral radius > 1 explodes", checked the same
    way (``naive correct``).  For lstm/gru the criterion does not apply (the cell is not
    of the form h_t = sigma(W h_{t-1} + ...)), so ``condition`` is "n/a".
    """
    by = ["cell", "spectral_radius"]
    growth = growth_per_lag(df, by)
    stats = df.groupby(by, sort=False)[["spectral_radius_measured", "sigma_max",
                                        "sigma_w"]].mean().reset_index()
    agg = growth.groupby(by, sort=False)["growth"].agg(["mean", "std", "min", "max", "count"])
    table = stats.merge(agg.reset_index(), on=by)
    explodes = table["mean"] > 1
    table["measured"] = np.where(explodes, "explodes", "vanishes")
    rnn = table["cell"] == "rnn"
    guaranteed = gamma * table["sigma_max"] < 1
    table["condition"] = np.where(~rnn, "n/a", np.where(guaranteed, "vanishing guaranteed",
                                                         "exploding possible"))
    table["consistent"] = ~(rnn & guaranteed & explodes)
    table["naive rule"] = np.where(table["spectral_radius_measured"] > 1, "explodes",
                                   "vanishes")
    table["naive correct"] = table["naive rule"] == table["measured"]
    return table


def mean_field_growth(sigma_w: float, input_std: float) -> float:
    """Mean-field per-step factor sqrt(chi_1) of a tanh RNN (untied-weights approximation).

    The recurrent weights act like a layer with weight scale ``sigma_w`` and the input
    drive like a bias of standard deviation ``input_std`` (fresh at every step).
    """
    from .theory import chi1

    return math.sqrt(chi1("tanh", sigma_w, input_std))


def training_summary(runs: pd.DataFrame, by: list[str], tail: float = 0.1,
                     solved_fraction: float = 0.1) -> pd.DataFrame:
    """Per run: final loss (mean over the last ``tail`` of steps), solved, spikes.

    ``lag_ratio_start`` / ``lag_ratio_end``: ||dL/dh_1|| / ||dL/dh_T|| at the first and
    the last sampled step (how much gradient reaches the first time step).
    Solved: final MSE below ``solved_fraction`` times the baseline 1/6 (the model explains
    at least 90% of the target variance).  ``spike`` is the largest gradient norm over the
    run divided by its median.  A diverged run is not solved and has NaN final loss.
    """
    rows = []
    for key, g in runs.groupby([*by, "seed"], sort=False):
        named = dict(zip([*by, "seed"], key if isinstance(key, tuple) else (key,), strict=True))
        n = max(1, int(round(len(g) * tail)))
        diverged = int(g["diverged_step"].iloc[0]) >= 0
        final = math.nan if diverged else float(g["loss"].tail(n).mean())
        grads = g["grad_norm"].to_numpy(dtype=float)
        finite = grads[np.isfinite(grads)]
        ratios = g["lag_ratio"].dropna().to_numpy(dtype=float)
        rows.append({**named, "diverged": diverged, "final_loss": final,
                     "solved": bool(final < solved_fraction * ADDING_BASELINE_MSE),
                     "max_grad": float(finite.max()) if len(finite) else math.nan,
                     "spike": float(finite.max() / np.median(finite)) if len(finite) else
                     math.nan,
                     "lag_ratio_start": ratios[0] if len(ratios) else math.nan,
                     "lag_ratio_end": ratios[-1] if len(ratios) else math.nan})
    return pd.DataFrame(rows)
