"""Recurrent networks: gradients across time steps, and training on the adding task.

* ``rnn_gradients``: one forward/backward pass of a freshly initialized recurrent cell
  (vanilla tanh RNN, LSTM or GRU, :mod:`..models.rnn`) on Gaussian inputs, with the loss
  at the last time step only; reports ``||dL/dh_{T-k}||`` for every lag ``k`` (the
  hidden state ``k`` steps before the last), together with the recurrent matrix's
  spectral radius and largest singular value.
* ``rnn_training``: the same cells trained on the adding problem (Hochreiter &
  Schmidhuber 1997) with the one training loop, no remedy unless asked for; per-step
  loss, gradient norm and divergence, plus at sampled steps the ratio
  ``||dL/dh_1|| / ||dL/dh_T||``.

Pascanu, Mikolov & Bengio (2013): with ``h_t = W sigma(h_{t-1}) + U x_t + b`` and
``|sigma'| <= gamma`` (1 for tanh, 1/4 for the logistic sigmoid), a largest singular value
of ``W`` below ``1/gamma`` is *sufficient* for the gradients to vanish, and above it is
*necessary* (not sufficient) for them to explode.  For ``h_t = tanh(W h_{t-1} + U x_t)``,
as computed here, the same bound holds: ``dL/dh_{t-1} = W^T (tanh'(a_t) * dL/dh_t)``, so
``||dL/dh_{t-1}|| <= sigma_max(W) ||dL/dh_t||``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch

from ..data import adding_batch
from ..engine.memory import ROW_BYTES
from ..engine.params import ConfigError, Param
from ..engine.registry import experiment
from ..models.rnn import CELLS, GATES, Sequence, build_cell, matrix_stats, unroll
from ..remedies import REMEDY_PARAMS, Remedies, check_remedies
from ..train import OPTIMIZERS, TrainLog, train
from .feedforward import generator


# Memory (see engine.memory): parameters and their copies (gradients; when training,
# the optimizer's state, update ratio and update), and per time step the gate
# pre-activations and outputs, the hidden state and its retained gradient.
def _rnn_memory(config: dict, input_size: int, copies: int) -> dict[str, int]:
    gates = GATES[config["cell"]]
    hidden, batch, steps = config["hidden_size"], config["batch_size"], config["seq_len"]
    params = gates * hidden * (hidden + input_size + 2) + hidden + 1
    return {"parameters": copies * params,
            "activations": steps * batch * (hidden * (4 * gates + 3) + input_size + 1)}


def _rnn_gradients_memory(config: dict) -> tuple[int, dict[str, int]]:
    terms = _rnn_memory(config, config["input_size"], copies=2)
    terms["results"] = ROW_BYTES // 8 * (config["seq_len"] + 1)
    return 8, terms


def _rnn_training_memory(config: dict) -> tuple[int, dict[str, int]]:
    terms = _rnn_memory(config, 2, copies=6)
    terms["results"] = ROW_BYTES // 4 * (config["steps"] + 1)
    return 4, terms


CELL_PARAMS = (
    Param("cell", "str", "rnn", "recurrent cell: rnn (tanh), lstm or gru", choices=CELLS),
    Param("seq_len", "int", 100, "time steps T of each sequence", low=1, high=100_000),
    Param("hidden_size", "int", 64, "hidden units", low=1, high=4096),
    Param("spectral_radius", "float", 1.0,
          "largest |eigenvalue| of the recurrent matrix (of each gate's block for lstm/gru)",
          low=0.0, high=100.0),
    Param("input_std", "float", 1.0, "standard deviation of each unit's input drive U x_t",
          low=0.0, high=100.0),
    Param("forget_bias", "float", 0.0,
          "initial bias of the LSTM's forget gate (lstm only; 1 in Gers et al. 2000)",
          low=-20.0, high=20.0),
)


def lstm_only_forget_bias(config: dict) -> None:
    """``forget_bias`` sets the LSTM's forget gate: another cell has none."""
    if config["forget_bias"] != 0 and config["cell"] != "lstm":
        raise ConfigError(f"parameter 'forget_bias': got {config['forget_bias']}; allowed: "
                          f"0 when cell={config['cell']!r} (only the LSTM has a forget gate)")


@experiment("rnn_gradients", CELL_PARAMS + (
    Param("input_size", "int", 8, "input dimension (inputs x_t ~ N(0, I))", low=1, high=4096),
    Param("batch_size", "int", 32, "sequences in the batch", low=1, high=65536),
), columns=("lag", "grad_norm", "state_rms", "spectral_radius_measured", "sigma_max",
            "sigma_w"), constraints=(lstm_only_forget_bias,), memory=_rnn_gradients_memory)
def rnn_gradients(config: dict, seed: int) -> pd.DataFrame:
    """Norm of dL/dh_{T-k} at every lag k for a freshly initialized recurrent cell.

    Float64 throughout, so that gradients that vanish over hundreds of steps do not
    underflow.  Inputs x_t ~ N(0, I), h_0 = 0, loss = batch mean of v . h_T with a random
    unit vector v (the last time step only, so lag k is unambiguous).  Rows: one per lag
    k = 0 .. seq_len (k = seq_len is the initial state h_0), with ``grad_norm`` (Frobenius
    norm over the batch), ``state_rms`` (RMS of h_{T-k}) and the recurrent matrix's
    ``spectral_radius_measured``, ``sigma_max`` and ``sigma_w`` repeated on every row.
    """
    gen = generator(seed)
    hidden, batch, steps = config["hidden_size"], config["batch_size"], config["seq_len"]
    module = build_cell(config["cell"], config["input_size"], hidden, config["spectral_radius"],
                        gen, config["input_std"], dtype=torch.float64,
                        forget_bias=config["forget_bias"])
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


@dataclass
class RecurrentRun:
    """``rnn_training``'s starting point for one seed: the model (initialized from the
    seed's generator) and the adding-problem stream (from the data seed's)."""

    model: Sequence
    data_generator: torch.Generator
    config: dict

    def batches(self):
        return lambda: adding_batch(self.config["batch_size"], self.config["seq_len"],
                                    self.data_generator)

    def final(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.readout.parameters())


def build_recurrent_run(config: dict, seed: int) -> RecurrentRun:
    """The model and data stream of seed ``seed`` of an ``rnn_training`` config."""
    gen = generator(seed)
    cell = build_cell(config["cell"], 2, config["hidden_size"], config["spectral_radius"], gen,
                      config["input_std"], forget_bias=config["forget_bias"])
    return RecurrentRun(Sequence(cell, config["hidden_size"], gen),
                        generator(config["data_seed"]), config)


TRAINING_COLUMNS = ("step", "loss", "grad_norm", "step_lr", "clipped", "skipped", "lag_ratio")

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
) + REMEDY_PARAMS, columns=TRAINING_COLUMNS + TrainLog.OUTCOME,
    constraints=(check_remedies, lstm_only_forget_bias),
    memory=_rnn_training_memory)
def rnn_training(config: dict, seed: int) -> pd.DataFrame:
    """Train a recurrent cell on the adding problem (no remedy unless one is asked for).

    Mean squared error on the last time step; every step draws a fresh batch from the
    data stream.  Rows: one per step with ``loss`` (before the update), ``grad_norm``
    (total over all parameters, before clipping) and, every ``log_every`` steps,
    ``lag_ratio`` = ||dL/dh_1|| / ||dL/dh_T|| (how much of the gradient reaches the first
    time step).  ``diverged_step``, ``stopped_step`` and ``cause`` as in ``training``.
    """
    run = build_recurrent_run(config, seed)
    log = train(run.model, run.batches(), torch.nn.functional.mse_loss,
                optimizer=config["optimizer"], lr=config["lr"], steps=config["steps"],
                remedies=Remedies.from_config(config), log_every=config["log_every"],
                layers={}, final=run.final(), evaluate=lag_ratio)
    return log.table(columns=TRAINING_COLUMNS)


def lag_ratio(model: Sequence, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """``||dL/dh_1|| / ||dL/dh_T||`` on ``batch``: how much gradient reaches step 1."""
    out, states = model(batch[0], keep_states=True)
    loss = torch.nn.functional.mse_loss(out, batch[1])
    first, last = torch.autograd.grad(loss, [states[1], states[-1]])
    last_norm = last.norm().item()
    return {"lag_ratio": first.norm().item() / last_norm if last_norm > 0 else math.nan}
