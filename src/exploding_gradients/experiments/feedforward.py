"""Feed-forward networks: their parameters, the one run builder, and two experiments.

* ``signal_propagation``: one forward and backward pass through a freshly initialized
  network; per-layer gradient norms and pre-activation variances (the quantities of
  mean-field theory).
* ``training``: train the network on a synthetic task with the one training loop of
  :mod:`..train`, any remedy of :mod:`..remedies`; per-step loss and gradient norm,
  per-layer statistics at sampled steps, and how the run ended.

:func:`build_run` is the one place that turns a configuration and a seed into a model,
its data and the generator that then draws its minibatches: ``training``, the batched
engine, the curvature experiments, the timing helpers and the clipping measurements all
start from it, so they all start from the same network.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from ..activations import ACTIVATIONS
from ..data import TASKS, Dataset, gaussian_inputs, make_task
from ..engine import memory
from ..engine.memory import ROW_BYTES
from ..engine.params import ConfigError, Param
from ..engine.registry import experiment
from ..init import LSUV_BATCH, SCHEMES, lsuv_
from ..models.mlp import MLP, NORMALIZATIONS, build_mlp
from ..monitor import GradientMonitor, derivative_stats
from ..precision import PRECISION_PARAMS, Precision, check_precision
from ..remedies import REMEDY_PARAMS, Remedies, check_remedies
from ..train import DEVICES, OPTIMIZERS, TrainLog, minibatches, resolve_device, train

MODEL_PARAMS = (
    Param("depth", "int", 20, "number of hidden layers", low=1, high=1000),
    Param("width", "int", 128, "units per hidden layer", low=1, high=8192),
    Param("activation", "str", "relu", "nonlinearity after each hidden layer",
          choices=tuple(ACTIVATIONS)),
    Param("init", "str", "normal", "weight initialization scheme (see exploding_gradients.init)",
          choices=SCHEMES),
    Param("sigma_w", "float", 2**0.5, "weight scale for init='normal': Var W = sigma_w^2/fan_in",
          low=0.0, high=100.0),
    Param("sigma_b", "float", 0.0, "bias standard deviation for init='normal'", low=0.0,
          high=100.0),
    Param("normalization", "str", "none", "normalization after each Linear",
          choices=NORMALIZATIONS),
    Param("residual", "bool", False, "wrap each hidden layer in a skip connection"),
    Param("residual_scale", "float", 1.0,
          "multiplier of each residual branch, x + scale * block(x) (SkipInit-style when "
          "small)", low=0.0, high=100.0),
    Param("dropout", "float", 0.0,
          "dropout probability after each hidden activation while training (masks drawn from "
          "the seed's generator)", low=0.0, high=0.95),
)

# The synthetic task of every training-like experiment: the same overrides describe the
# same data wherever they are used.
DATA_PARAMS = (
    Param("task", "str", "classification", "synthetic teacher task", choices=TASKS),
    Param("d_in", "int", 16, "input dimension", low=1, high=8192),
    Param("input_scale_spread", "float", 1.0,
          "feature j is scaled by spread^(j/(d_in-1)); 1 = standardized inputs", low=1.0,
          high=1e6),
    Param("n_train", "int", 2048, "training samples", low=1, high=10**7),
    Param("data_seed", "int", 0, "seed of the dataset (shared by all model seeds)", low=0,
          high=2**31 - 1),
)

TEST_SAMPLES = 1024  # size of the synthetic test set


def generator(seed: int) -> torch.Generator:
    """The generator of one seed: every random draw of a run comes from it."""
    return torch.Generator().manual_seed(seed)


def make_data(config: dict) -> Dataset:
    """The dataset a config with :data:`DATA_PARAMS` describes."""
    return make_task(config["task"], config["n_train"], TEST_SAMPLES, config["d_in"],
                     generator(config["data_seed"]),
                     input_scale_spread=config["input_scale_spread"])


@dataclass
class Run:
    """A training run's starting point: the initialized model, its data, and the seed's
    generator, positioned after the initialization, which then draws the minibatches."""

    model: MLP
    data: Dataset
    generator: torch.Generator

    def layers(self) -> dict[str, nn.Module]:
        """The hidden Linear layers, by name, input side first: what the monitor watches."""
        return {f"blocks.{i}.linear": lin for i, lin in enumerate(self.model.hidden_linears())}

    def final(self) -> tuple[torch.Tensor, ...]:
        """The output layer's parameters (adaptive clipping leaves them alone)."""
        return tuple(self.model.readout.parameters())

    def batches(self, batch_size: int):
        """Minibatches of the training set, drawn from the run's generator."""
        return minibatches(self.data.x_train, self.data.y_train, batch_size, self.generator)


def build_run(config: dict, seed: int, device: torch.device | str = "cpu",
              data: Dataset | None = None) -> Run:
    """The model, data and generator of seed ``seed`` of a config with
    :data:`MODEL_PARAMS` and :data:`DATA_PARAMS`: every experiment that trains this
    network starts here.  The model is built on the CPU, then moved, so a seed gives the
    same initial weights on any device; LSUV then fits it to a batch of training data.
    ``data``: the config's dataset if already made (seeds share it)."""
    data = make_data(config) if data is None else data
    gen = generator(seed)
    model = build_mlp(config, d_in=config["d_in"], d_out=data.d_out, generator=gen)
    model, data = model.to(device), data.to(device)
    if config["init"] == "lsuv":
        lsuv_(model, data.x_train[:LSUV_BATCH])
    return Run(model, data, gen)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: Dataset) -> dict:
    """Test loss and accuracy (NaN for regression), in evaluation mode."""
    model.eval()
    out = model(data.x_test)
    loss = data.loss(out, data.y_test).item()
    model.train()
    return {"test_loss": loss, "test_accuracy": data.accuracy(out, data.y_test)}


# --------------------------------------------------------------------------- constraints

def batch_norm_batch(config: dict) -> None:
    """Batch norm in training mode needs at least two samples per minibatch."""
    if config.get("normalization") == "batch" and config.get("steps", 1) > 0 \
            and config["batch_size"] < 2:
        raise ConfigError(
            f"parameter 'batch_size': got {config['batch_size']}; allowed: >= 2 when "
            "normalization='batch' (batch norm needs two samples per minibatch)")


def device_available(config: dict) -> None:
    """A ``device`` of ``cuda`` is refused up front on a machine without CUDA."""
    resolve_device(config.get("device", "cpu"))


# --------------------------------------------------------------------------- memory

# Estimates of the peak memory of one seed (see engine.memory), in float32 values:
# parameters: weights and biases (input layer, depth-1 square layers, readout, and the
#   normalization's affine parameters) times the copies alive at once - with their
#   gradients (x2) for one backward pass; when training, the optimizer's state (two Adam
#   moments), the update-ratio copy and the update itself (x6).
# activations: what autograd keeps for the backward pass, about 8 tensors of
#   batch x width per layer (linear output, normalization output, activation, residual
#   sum, their gradients and the monitor's copies).
# data: training and test sets (inputs are drawn, rescaled and split) and the test pass.
# results: the rows of the table, ROW_BYTES each.
TENSORS_PER_LAYER = 8
D_OUT = 4  # classification: 4 classes (data.make_task); regression: 1 output


def mlp_params(config: dict, d_in: int, d_out: int) -> int:
    depth, width = config["depth"], config["width"]
    hidden = (depth - 1) * (width * width + width) + d_in * width + width
    norm = 2 * width * depth if config.get("normalization", "none") != "none" else 0
    return hidden + width * d_out + d_out + norm


def mlp_activations(config: dict, batch: int) -> int:
    return TENSORS_PER_LAYER * batch * config["width"] * (config["depth"] + 2)


def data_values(config: dict) -> int:
    """Training and test sets plus the evaluation pass on the test set (values)."""
    sets = (config["n_train"] + TEST_SAMPLES) * (3 * config["d_in"] + D_OUT + 1)
    return sets + 4 * TEST_SAMPLES * config["width"]


def training_rows(config: dict, steps: int, every: int, per_layer: bool = True) -> int:
    samples = steps // every + 2
    return steps + 1 + (samples * config["depth"] if per_layer else 0)


def _signal_propagation_memory(config: dict) -> tuple[int, dict[str, int]]:
    p = mlp_params(config, config["width"], config["d_out"])
    batch = config["batch_size"]
    return 4, {"parameters": 2 * p,
               "activations": mlp_activations(config, batch)
               + batch * (config["width"] + 2 * config["d_out"]),
               "results": ROW_BYTES // 4 * config["depth"]}


def _training_memory(config: dict) -> tuple[int, dict[str, int]]:
    p = mlp_params(config, config["d_in"], D_OUT)
    rows = training_rows(config, config["steps"], config["log_every"])
    return 4, {"parameters": 6 * p,
               "activations": mlp_activations(config, config["batch_size"]),
               "data": data_values(config),
               "results": ROW_BYTES // 4 * rows}


# --------------------------------------------------------------------------- experiments

@experiment("signal_propagation", MODEL_PARAMS + (
    Param("batch_size", "int", 64, "inputs in the batch", low=2, high=65536),
    Param("d_out", "int", 10, "outputs of the linear readout", low=1, high=8192),
), columns=("layer", "grad_norm", "delta_norm", "preact_var", "dphi_sq", "saturated"),
    memory=_signal_propagation_memory)
def signal_propagation(config: dict, seed: int) -> pd.DataFrame:
    """Per-layer gradient norms and pre-activation variance of a freshly initialized MLP.

    Inputs x ~ N(0, I_width), targets y ~ N(0, I_d_out), loss 0.5 * mean squared error;
    one forward and backward pass in training mode (so batch norm uses batch statistics).
    Rows: one per hidden layer, ``layer`` counted from the input, with the weight
    gradient norm, the norm of dL/d(pre-activation), the pre-activation variance, and the
    activation's derivative statistics (``dphi_sq``, ``saturated``; see
    :func:`..monitor.derivative_stats`).
    """
    gen = generator(seed)
    width = config["width"]
    model = build_mlp(config, d_in=width, d_out=config["d_out"], generator=gen)
    x = gaussian_inputs(config["batch_size"], width, gen)
    y = torch.randn(config["batch_size"], config["d_out"], generator=gen)
    if config["init"] == "lsuv":
        lsuv_(model, x)
    layers = {f"blocks.{i}.linear": lin for i, lin in enumerate(model.hidden_linears())}
    act_stats = []
    hooks = [block.act.register_forward_hook(
        lambda mod, inputs, out: act_stats.append(derivative_stats(mod, inputs[0])))
        for block in model.blocks]
    with GradientMonitor(model, layers) as monitor:
        model.train()
        loss = 0.5 * torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        rows = monitor.layer_stats()
    for hook in hooks:
        hook.remove()
    stats = pd.DataFrame(rows)[["layer", "grad_norm", "delta_norm", "preact_var"]]
    return stats.join(pd.DataFrame(act_stats))


#: Seeds trained as one ensemble at most; more are split into chunks of this many.
MAX_MEMBERS = 64


def members_per_batch(config: dict, max_members: int = MAX_MEMBERS) -> int:
    """How many seeds to train as one ensemble: ``max_members``, fewer if memory is short.

    Each member needs one seed's memory except the parts they share (torch's runtime,
    the data); half of the available memory is used.  A member's results do not depend
    on this number.
    """
    size, terms = _training_memory(config)
    per_member = size * sum(v for k, v in terms.items() if k != "data")
    have, _ = memory.available_bytes()
    if have is None or per_member <= 0:
        return max_members
    return max(1, min(max_members, int(have / 2 / (memory.SAFETY * per_member))))


def _training_batched(config: dict, seeds: list[int]) -> list[pd.DataFrame]:
    """Several seeds of ``training`` as one ensemble (see :mod:`..ensemble`), in chunks
    that fit in memory."""
    from ..ensemble import train_ensemble  # the batched engine loads only when used

    size, tables, data = members_per_batch(config), [], make_data(config)
    for start in range(0, len(seeds), size):
        runs = [build_run(config, seed, data=data) for seed in seeds[start:start + size]]
        tables.extend(log.table() for log in train_ensemble(config, runs))
    return tables


def _batched_unsupported(config: dict) -> str:
    from ..ensemble import unsupported_reason

    return unsupported_reason(config)


@experiment("training", MODEL_PARAMS + DATA_PARAMS + (
    Param("optimizer", "str", "sgd", "optimizer (momentum = SGD with momentum 0.9)",
          choices=OPTIMIZERS),
    Param("lr", "float", 0.01, "learning rate", low=1e-12, high=1e6),
    Param("steps", "int", 200, "optimizer steps", low=1, high=10**7),
    Param("batch_size", "int", 64, "minibatch size", low=1, high=65536),
    Param("log_every", "int", 10, "steps between per-layer samples", low=1, high=10**7),
    Param("engine", "str", "loop",
          "how several seeds are computed: one after another (loop) or as one batched "
          "ensemble (batched: same results up to float rounding; configurations it does not "
          "support run the loop)", choices=("loop", "batched")),
    Param("device", "str", "cpu", "where to train: cpu, cuda, or auto (cuda if available); "
          "minibatches are drawn on the CPU either way", choices=DEVICES),
) + REMEDY_PARAMS + PRECISION_PARAMS, columns=TrainLog.COLUMNS + TrainLog.OUTCOME,
    constraints=(batch_norm_batch, device_available, check_remedies, check_precision),
    memory=_training_memory,
    batched=_training_batched, batched_unsupported=_batched_unsupported)
def training(config: dict, seed: int) -> pd.DataFrame:
    """Train an MLP on a synthetic task; per-step loss, gradient norm and divergence.

    Rows with ``layer == 0`` describe the whole network at every step (loss, total
    gradient norm before clipping, the step's learning rate ``step_lr``, and at sampled
    steps the update-to-weight ratio and test loss/accuracy); rows with ``layer >= 1``
    hold hidden layer ``layer``'s statistics at sampled steps.  ``diverged_step`` and
    ``cause`` (``nan_loss``, ``inf_loss``, ``nan_grad``, ``inf_grad``) are repeated on
    every row of a run that diverged; -1 and "" otherwise.  ``stopped_step`` is the step
    where early stopping ended the run (``cause`` ``stopped_...``; the last row then
    measures the restored weights), -1 otherwise.
    """
    run = build_run(config, seed, resolve_device(config["device"]))
    log = train(run.model, run.batches(config["batch_size"]), run.data.loss,
                optimizer=config["optimizer"], lr=config["lr"], steps=config["steps"],
                remedies=Remedies.from_config(config), log_every=config["log_every"],
                layers=run.layers(), final=run.final(),
                evaluate=lambda m, batch: evaluate(m, run.data),
                precision=Precision.from_config(config))
    return log.table()



# --------------------------------------------------------------------------- Jacobian

WEIGHTS = ("gaussian", "orthogonal")


def _jacobian_memory(config: dict) -> tuple[int, dict[str, int]]:
    width = config["width"]
    return 8, {"parameters": 2 * config["depth"] * (width * width + width),
               "jacobian": 3 * width * width,
               "results": ROW_BYTES // 8 * width * config["inputs"]}


@experiment("jacobian_spectrum", (
    Param("depth", "int", 30, "number of hidden layers", low=2, high=1000),
    Param("width", "int", 128, "units per hidden layer (and input dimension)", low=1,
          high=4096),
    Param("activation", "str", "tanh", "nonlinearity after each hidden layer",
          choices=tuple(ACTIVATIONS)),
    Param("weights", "str", "gaussian",
          "hidden weights: gaussian, N(0, sigma_w^2/width), or orthogonal, sigma_w times a "
          "random orthogonal matrix (the same variance)", choices=WEIGHTS),
    Param("sigma_w", "float", 1.0, "weight scale", low=0.0, high=100.0),
    Param("sigma_b", "float", 0.0, "bias standard deviation", low=0.0, high=100.0),
    Param("input_q", "float", 1.0, "mean squared input coordinate (layer 1 then has "
          "q = sigma_w^2 input_q + sigma_b^2)", low=1e-8, high=1e4),
    Param("inputs", "int", 1, "inputs, each with its own Jacobian", low=1, high=1000),
), columns=("input", "index", "singular_value"), memory=_jacobian_memory)
def jacobian_spectrum(config: dict, seed: int) -> pd.DataFrame:
    """Singular values of the Jacobian dh^L/dh^1 of a freshly initialized MLP, per input.

    This is the matrix that carries the gradient from the last hidden layer's
    pre-activations back to the first's (delta^1 = J^T delta^L), the product
    W^L D^{L-1} ... W^2 D^1 with D^l = diag(phi'(h^l)) (Pennington, Schoenholz & Ganguli
    2017): its mean squared singular value is the mean-field prod chi^l, its spread is
    what "dynamical isometry" asks to be small.  The network is the book's MLP
    (:func:`..models.mlp.build_mlp`, ``init="normal"``, input dimension = width), whose
    hidden weights are redrawn orthogonal for ``weights="orthogonal"``; the product is
    formed in float64.  Rows: ``input``, ``index`` (1 = largest) and ``singular_value``.
    """
    gen = generator(seed)
    width = config["width"]
    model_config = {"width": width, "depth": config["depth"],
                    "activation": config["activation"], "normalization": "none",
                    "residual": False, "init": "normal", "sigma_w": config["sigma_w"],
                    "sigma_b": config["sigma_b"]}
    model = build_mlp(model_config, d_in=width, d_out=1, generator=gen)
    linears = model.hidden_linears()
    if config["weights"] == "orthogonal":
        with torch.no_grad():
            for linear in linears:
                nn.init.orthogonal_(linear.weight, gain=config["sigma_w"], generator=gen)
    x = gaussian_inputs(config["inputs"], width, gen).double() * config["input_q"] ** 0.5
    act = model.blocks[0].act.double()
    weights = [lin.weight.detach().double() for lin in linears]
    biases = [lin.bias.detach().double() for lin in linears]
    rows = []
    for i, xi in enumerate(x):
        h = weights[0] @ xi + biases[0]
        jac = torch.eye(width, dtype=torch.float64)
        for w, b in zip(weights[1:], biases[1:], strict=True):
            z = h.clone().requires_grad_(True)
            out = act(z)
            (slope,) = torch.autograd.grad(out.sum(), z)
            jac = w @ (slope[:, None] * jac)
            h = w @ out.detach() + b
        values = torch.linalg.svdvals(jac).numpy()
        rows.append(pd.DataFrame({"input": i, "index": range(1, width + 1),
                                  "singular_value": values}))
    return pd.concat(rows, ignore_index=True)
