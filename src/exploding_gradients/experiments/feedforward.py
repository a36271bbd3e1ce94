"""Feed-forward networks: their parameters, the one run builder, and two experiments.

Three families share them (``architecture``): the multilayer perceptron (the default), a
convolutional stack (:mod:`..models.cnn`) and a transformer encoder
(:mod:`..models.transformer`); their "layers" are the hidden Linear layers, the
convolutions, and the transformer blocks.

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

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..activations import ACTIVATIONS
from ..data import (
    OUTLIER_KINDS,
    TASKS,
    Dataset,
    OutlierBatches,
    gaussian_inputs,
    make_images,
    make_sequences,
    make_task,
    outlier_generator,
    outlier_steps,
)
from ..engine import memory
from ..engine.memory import ROW_BYTES
from ..engine.params import ConfigError, Param
from ..engine.registry import experiment
from ..init import LSUV_BATCH, SCHEMES, lsuv_
from ..models.cnn import build_cnn
from ..models.mlp import NORMALIZATIONS, build_mlp
from ..models.transformer import NORM_POSITIONS, build_transformer
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
    Param("residual", "bool", False,
          "wrap each hidden layer whose input and output sizes agree in a skip connection "
          "(all but the first when the input's width or channels differ)"),
    Param("residual_scale", "float", 1.0,
          "multiplier of each residual branch, x + scale * block(x) (SkipInit-style when "
          "small)", low=0.0, high=100.0),
    Param("dropout", "float", 0.0,
          "dropout probability after each hidden activation while training (masks drawn from "
          "the seed's generator)", low=0.0, high=0.95),
    Param("architecture", "str", "mlp",
          "network family: mlp (width units per layer), cnn (convolutional stack of "
          "channels channels), transformer (encoder of width dimensions)",
          choices=("mlp", "cnn", "transformer")),
    Param("channels", "int", 16, "cnn: channels of each convolution", low=1, high=4096),
    Param("kernel_size", "int", 3, "cnn: side of the (odd) convolution kernels", low=1,
          high=31),
    Param("image_size", "int", 8, "cnn: side of the square images, in pixels", low=1,
          high=512),
    Param("heads", "int", 4, "transformer: attention heads (width must be a multiple)",
          low=1, high=1024),
    Param("seq_len", "int", 8, "transformer: tokens per sequence", low=1, high=4096),
    Param("norm_position", "str", "pre",
          "transformer: layer norm before each residual branch (pre), after each residual "
          "addition (post), or none", choices=NORM_POSITIONS),
    Param("qk_norm", "bool", False, "transformer: layer norm on each head's queries and keys"),
)

ARCHITECTURES = ("mlp", "cnn", "transformer")

# The synthetic task of every training-like experiment: the same overrides describe the
# same data wherever they are used.
DATA_PARAMS = (
    Param("task", "str", "auto",
          "synthetic task: auto (the architecture's own: classification for mlp, images for "
          "cnn, sort for transformer) or one of those (regression: mlp only)",
          choices=("auto",) + TASKS),
    Param("d_in", "int", 16, "mlp: input dimension", low=1, high=8192),
    Param("input_scale_spread", "float", 1.0,
          "feature j is scaled by spread^(j/(d_in-1)); 1 = standardized inputs", low=1.0,
          high=1e6),
    Param("n_train", "int", 2048, "training samples", low=1, high=10**7),
    Param("data_seed", "int", 0, "seed of the dataset (shared by all model seeds)", low=0,
          high=2**31 - 1),
    Param("in_channels", "int", 3, "cnn: channels of the input images", low=1, high=4096),
    Param("vocab", "int", 8, "transformer: token values of the sorting task", low=2,
          high=65536),
)

#: The task of each architecture (what ``task="auto"`` means), and the tasks it accepts.
TASK_OF = {"mlp": ("classification", "regression"), "cnn": ("images",),
           "transformer": ("sort",)}
#: Parameters that only some architectures read: elsewhere they must keep their defaults,
#: so that a setting is never silently ignored.
APPLIES_TO = {
    "channels": ("cnn",), "kernel_size": ("cnn",), "image_size": ("cnn",),
    "in_channels": ("cnn",), "heads": ("transformer",), "seq_len": ("transformer",),
    "norm_position": ("transformer",), "qk_norm": ("transformer",), "vocab": ("transformer",),
    "d_in": ("mlp",), "input_scale_spread": ("mlp",), "width": ("mlp", "transformer"),
    "residual": ("mlp", "cnn"), "residual_scale": ("mlp", "cnn"),
}

TEST_SAMPLES = 1024  # size of the synthetic test set

# Spikes on purpose: some minibatches of a run are outliers (see data.OutlierBatches).
OUTLIER_PARAMS = (
    Param("outlier_prob", "float", 0.0,
          "probability that an episode of outlier minibatches starts at a step (0 = none)",
          low=0.0, high=1.0),
    Param("outlier_kind", "str", "inputs",
          "what an outlier minibatch is: inputs multiplied by outlier_scale, or random labels",
          choices=OUTLIER_KINDS),
    Param("outlier_scale", "float", 10.0,
          "input multiplier of an outlier batch (inputs); std of its random regression "
          "targets (labels)", low=0.0, high=1e6),
    Param("outlier_burst", "int", 1, "consecutive outlier minibatches per episode", low=1,
          high=10**6),
)


def generator(seed: int) -> torch.Generator:
    """The generator of one seed: every random draw of a run comes from it."""
    return torch.Generator().manual_seed(seed)


def task(config: dict) -> str:
    """The config's task, ``auto`` resolved by its architecture (:data:`TASK_OF`)."""
    name = config.get("task", "auto")
    return TASK_OF[config.get("architecture", "mlp")][0] if name == "auto" else name


def make_data(config: dict) -> Dataset:
    """The dataset a config with :data:`DATA_PARAMS` describes."""
    name, gen = task(config), generator(config["data_seed"])
    if name == "images":
        return make_images(config["n_train"], TEST_SAMPLES, config["in_channels"],
                           config["image_size"], gen)
    if name == "sort":
        return make_sequences(config["n_train"], TEST_SAMPLES, config["seq_len"],
                              config["vocab"], gen)
    return make_task(name, config["n_train"], TEST_SAMPLES, config["d_in"], gen,
                     input_scale_spread=config["input_scale_spread"])


def build_model(config: dict, d_in: int, d_out: int, gen: torch.Generator) -> nn.Module:
    """The initialized network of a config's model parameters: ``d_in`` is the MLP's input
    dimension, the convnet's input channels, or the transformer's vocabulary (0:
    continuous inputs of ``width`` features)."""
    arch = config.get("architecture", "mlp")
    if arch == "cnn":
        return build_cnn(config, d_in, d_out, gen)
    if arch == "transformer":
        return build_transformer(config, d_in, config["seq_len"], d_out, gen)
    return build_mlp(config, d_in=d_in, d_out=d_out, generator=gen)


def hidden_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's hidden layers by name, input side first: the MLP's Linear layers, the
    convolutions, the transformer blocks (what the monitor watches, one row each)."""
    names = {id(m): name for name, m in model.named_modules()}
    return {names[id(m)]: m for m in model.hidden_layers()}


@dataclass
class Run:
    """A training run's starting point: the initialized model, its data, and the seed's
    generator, positioned after the initialization, which then draws the minibatches."""

    model: nn.Module
    data: Dataset
    generator: torch.Generator

    def layers(self) -> dict[str, nn.Module]:
        """The hidden layers, by name, input side first: what the monitor watches
        (:func:`hidden_layers`)."""
        return hidden_layers(self.model)

    def final(self) -> tuple[torch.Tensor, ...]:
        """The output layer's parameters (adaptive clipping leaves them alone)."""
        return tuple(self.model.readout.parameters())

    def batches(self, batch_size: int):
        """Minibatches of the training set, drawn from the run's generator."""
        return minibatches(self.data.x_train, self.data.y_train, batch_size, self.generator)


def outlier_schedule(config: dict, seed: int) -> torch.Tensor:
    """Which steps (0 .. ``steps``) of seed ``seed`` of a ``training`` config draw an
    outlier minibatch: the first draws of the seed's :func:`..data.outlier_generator`."""
    return outlier_steps(config["steps"] + 1, config["outlier_prob"], config["outlier_burst"],
                         outlier_generator(seed))


def run_batches(run: Run, config: dict, seed: int):
    """The minibatches a ``training`` run draws: the run's own, some of them outliers if
    ``outlier_prob`` > 0 (the labels of an outlier batch come from the same generator,
    after the schedule)."""
    batches = run.batches(config["batch_size"])
    if not config.get("outlier_prob"):
        return batches
    gen = outlier_generator(seed)
    schedule = outlier_steps(config["steps"] + 1, config["outlier_prob"],
                             config["outlier_burst"], gen)
    classes = run.data.d_out if run.data.task == "classification" else None
    return OutlierBatches(batches, schedule, config["outlier_kind"], config["outlier_scale"],
                          gen, classes)


def build_run(config: dict, seed: int, device: torch.device | str = "cpu",
              data: Dataset | None = None) -> Run:
    """The model, data and generator of seed ``seed`` of a config with
    :data:`MODEL_PARAMS` and :data:`DATA_PARAMS`: every experiment that trains this
    network starts here.  The model is built on the CPU, then moved, so a seed gives the
    same initial weights on any device; LSUV then fits it to a batch of training data.
    ``data``: the config's dataset if already made (seeds share it)."""
    data = make_data(config) if data is None else data
    gen = generator(seed)
    arch = config.get("architecture", "mlp")
    d_in = {"cnn": config.get("in_channels"), "transformer": config.get("vocab")}.get(
        arch, config["d_in"])
    model = build_model(config, d_in, data.d_out, gen)
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


def check_architecture(config: dict) -> None:
    """Each architecture's own rules: its task, its normalizations, the parameters it
    reads (the others keep their defaults, see :data:`APPLIES_TO`)."""
    arch = config.get("architecture", "mlp")
    defaults = {p.name: p.default for p in MODEL_PARAMS + DATA_PARAMS}
    for name, archs in APPLIES_TO.items():
        if name in config and arch not in archs and config[name] != defaults[name]:
            raise ConfigError(
                f"parameter {name!r}: got {config[name]!r}; allowed with "
                f"architecture={arch!r}: only its default {defaults[name]!r} (it applies to "
                f"architecture {' or '.join(map(repr, archs))} only)")
    if "task" in config and config["task"] not in ("auto",) + TASK_OF[arch]:
        raise ConfigError(f"parameter 'task': got {config['task']!r}; allowed for "
                          f"architecture={arch!r}: auto, {', '.join(TASK_OF[arch])}")
    if arch == "cnn" and config["normalization"] not in ("none", "batch"):
        raise ConfigError(f"parameter 'normalization': got {config['normalization']!r}; "
                          "allowed for architecture='cnn': none, batch")
    if arch == "cnn" and config["kernel_size"] % 2 == 0:
        raise ConfigError(f"parameter 'kernel_size': got {config['kernel_size']}; allowed: "
                          "an odd number (a kernel centred on its pixel)")
    if arch == "transformer":
        if config["normalization"] != "none":
            raise ConfigError(f"parameter 'normalization': got {config['normalization']!r}; "
                              "allowed for architecture='transformer': none (its layer "
                              "norms are placed by norm_position)")
        if config["width"] % config["heads"]:
            raise ConfigError(f"parameter 'heads': got {config['heads']}; allowed: a "
                              f"divisor of width={config['width']}")
        if config["init"] == "lsuv":
            raise ConfigError("parameter 'init': got 'lsuv'; allowed for "
                              f"architecture='transformer': {', '.join(SCHEMES[:-1])}")
        if config.get("outlier_prob") and config.get("outlier_kind") == "inputs":
            raise ConfigError("parameter 'outlier_kind': got 'inputs'; allowed for "
                              "architecture='transformer': labels (its inputs are tokens)")


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


def model_params(config: dict, d_in: int, d_out: int) -> int:
    """Parameters of the config's network: by formula for the MLP, otherwise counted on
    a model built without storage (PyTorch's meta device)."""
    if config.get("architecture", "mlp") == "mlp":
        return mlp_params(config, d_in, d_out)
    with torch.device("meta"):
        model = build_model({**config, "init": "default"}, d_in, d_out, None)
    return sum(p.numel() for p in model.parameters())


def activation_values(config: dict, batch: int) -> int:
    """Values autograd keeps for the backward pass: about TENSORS_PER_LAYER tensors the
    size of a layer's output per layer, and for a transformer, its 4x wider feed-forward
    layer and the attention's probabilities (heads x length^2 per sequence)."""
    arch, depth = config.get("architecture", "mlp"), config["depth"] + 2
    if arch == "cnn":
        return TENSORS_PER_LAYER * batch * config["channels"] * config["image_size"] ** 2 * depth
    if arch == "transformer":
        tokens = batch * config["seq_len"]
        attention = 3 * batch * config["heads"] * config["seq_len"] ** 2
        return depth * (tokens * (TENSORS_PER_LAYER + 12) * config["width"] + attention)
    return TENSORS_PER_LAYER * batch * config["width"] * depth


def data_values(config: dict) -> int:
    """Training and test sets plus the evaluation pass on the test set (values)."""
    n, arch = config["n_train"] + TEST_SAMPLES, config.get("architecture", "mlp")
    if arch == "cnn":
        return n * (2 * config["in_channels"] * config["image_size"] ** 2 + 2) \
            + activation_values(config, TEST_SAMPLES) // TENSORS_PER_LAYER
    if arch == "transformer":  # tokens and targets are int64: two float32 values each
        return 4 * n * config["seq_len"] + activation_values(config, TEST_SAMPLES) // 4
    sets = n * (3 * config["d_in"] + D_OUT + 1)
    return sets + 4 * TEST_SAMPLES * config["width"]


def training_rows(config: dict, steps: int, every: int, per_layer: bool = True) -> int:
    samples = steps // every + 2
    return steps + 1 + (samples * config["depth"] if per_layer else 0)


def _signal_propagation_memory(config: dict) -> tuple[int, dict[str, int]]:
    p = model_params(config, _probe_d_in(config), config["d_out"])
    batch = config["batch_size"]
    return 4, {"parameters": 2 * p,
               "activations": activation_values(config, batch)
               + batch * (config["width"] + 2 * config["d_out"]),
               "results": ROW_BYTES // 4 * config["depth"]}


def training_params(config: dict) -> int:
    """Parameters of the network a training-like config (with :data:`DATA_PARAMS`) trains."""
    arch = config.get("architecture", "mlp")
    d_in = {"cnn": config["in_channels"], "transformer": config["vocab"]}.get(arch,
                                                                             config["d_in"])
    return model_params(config, d_in, config["vocab"] if arch == "transformer" else D_OUT)


def _training_memory(config: dict) -> tuple[int, dict[str, int]]:
    p = training_params(config)
    rows = training_rows(config, config["steps"], config["log_every"])
    return 4, {"parameters": 6 * p,
               "activations": activation_values(config, config["batch_size"]),
               "data": data_values(config),
               "results": ROW_BYTES // 4 * rows}


# --------------------------------------------------------------------------- experiments

def _probe_d_in(config: dict) -> int:
    """The probed network's input: as wide as a hidden layer (a square first layer), or,
    for a transformer, continuous features (vocabulary 0)."""
    return {"cnn": config["channels"], "transformer": 0}.get(config["architecture"],
                                                             config["width"])


def probe(config: dict, gen: torch.Generator) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The freshly initialized network of seed ``gen`` and its input and target batch for
    signal propagation: inputs and targets standard normal, shaped for the architecture
    (vectors, ``channels`` x ``image_size``^2 images, ``seq_len`` x ``width`` sequences)."""
    arch, batch, d_out = config["architecture"], config["batch_size"], config["d_out"]
    model = build_model(config, _probe_d_in(config), d_out, gen)
    if arch == "cnn":
        size = config["image_size"]
        x = torch.randn(batch, config["channels"], size, size, generator=gen)
        return model, x, torch.randn(batch, d_out, generator=gen)
    if arch == "transformer":
        x = torch.randn(batch, config["seq_len"], config["width"], generator=gen)
        return model, x, torch.randn(batch, config["seq_len"], d_out, generator=gen)
    x = gaussian_inputs(batch, config["width"], gen)
    return model, x, torch.randn(batch, d_out, generator=gen)


SIGNAL_COLUMNS = ("layer", "grad_norm", "delta_norm", "preact_var", "dphi_sq", "saturated",
                  "attn_logit_max")


@experiment("signal_propagation", MODEL_PARAMS + (
    Param("batch_size", "int", 64, "inputs in the batch", low=2, high=65536),
    Param("d_out", "int", 10, "outputs of the linear readout", low=1, high=8192),
), columns=SIGNAL_COLUMNS,
    constraints=(check_architecture,), memory=_signal_propagation_memory)
def signal_propagation(config: dict, seed: int) -> pd.DataFrame:
    """Per-layer gradient norms and output variances of a freshly initialized network.

    Inputs and targets standard normal (see :func:`probe`), loss 0.5 * mean squared
    error; one forward and backward pass in training mode (so batch norm uses batch
    statistics).  Rows: one per hidden layer (:func:`hidden_layers`: a Linear layer, a
    convolution, a transformer block), ``layer`` counted from the input, with the norm of
    the gradient of its weight (of all its parameters, for a transformer block), the norm
    of dL/d(its output), its output's variance (the pre-activation, for a Linear layer
    or a convolution; the residual stream after the block, for a transformer), the
    activation's derivative statistics (``dphi_sq``, ``saturated``; see
    :func:`..monitor.derivative_stats`) and the largest attention logit
    (``attn_logit_max``; NaN without attention).
    """
    model, x, y = probe(config, generator(seed))
    if config["init"] == "lsuv":
        lsuv_(model, x)
    act_stats = []
    hooks = [block.act.register_forward_hook(
        lambda mod, inputs, out: act_stats.append(derivative_stats(mod, inputs[0])))
        for block in model.blocks]
    with GradientMonitor(model, hidden_layers(model)) as monitor:
        model.train()
        loss = 0.5 * torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        rows = monitor.layer_stats()
    for hook in hooks:
        hook.remove()
    stats = pd.DataFrame(rows).reindex(columns=["layer", "grad_norm", "delta_norm",
                                                "preact_var", "attn_logit_max"])
    return stats.join(pd.DataFrame(act_stats))[list(SIGNAL_COLUMNS)]


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

    if config.get("outlier_prob", 0.0):
        return "outlier minibatches are drawn in the per-seed loop"
    if config.get("layer_detail", False):
        return "the detailed per-layer monitor runs in the per-seed loop"
    return unsupported_reason(config)


@experiment("training", MODEL_PARAMS + DATA_PARAMS + (
    Param("optimizer", "str", "sgd", "optimizer (momentum = SGD with momentum 0.9)",
          choices=OPTIMIZERS),
    Param("lr", "float", 0.01, "learning rate", low=1e-12, high=1e6),
    Param("steps", "int", 200, "optimizer steps", low=1, high=10**7),
    Param("batch_size", "int", 64, "minibatch size", low=1, high=65536),
    Param("log_every", "int", 10, "steps between per-layer samples", low=1, high=10**7),
    Param("layer_detail", "bool", False,
          "also record, per layer at the sampled steps, the distributions of outputs and "
          "weight gradients (quantiles, dead and saturated fractions), its update ratio and "
          "the optimizer's moments"),
    Param("engine", "str", "batched",
          "how several seeds are computed: as one batched ensemble (batched, several times "
          "faster; configurations it does not support run the loop) or one after another "
          "(loop); the same results up to float rounding", choices=("loop", "batched")),
    Param("device", "str", "cpu", "where to train: cpu, cuda, or auto (cuda if available); "
          "minibatches are drawn on the CPU either way", choices=DEVICES),
) + OUTLIER_PARAMS + REMEDY_PARAMS + PRECISION_PARAMS,
    columns=TrainLog.COLUMNS + TrainLog.OUTCOME,
    constraints=(check_architecture, batch_norm_batch, device_available, check_remedies,
                 check_precision),
    memory=_training_memory,
    batched=_training_batched, batched_unsupported=_batched_unsupported)
def training(config: dict, seed: int) -> pd.DataFrame:
    """Train a network (``architecture``) on a synthetic task; per-step loss, gradient
    norm and divergence.

    Rows with ``layer == 0`` describe the whole network at every step (loss, total
    gradient norm before clipping, the step's learning rate ``step_lr``, and at sampled
    steps the update-to-weight ratio and test loss/accuracy); rows with ``layer >= 1``
    hold hidden layer ``layer``'s statistics at sampled steps.  ``diverged_step`` and
    ``cause`` (``nan_loss``, ``inf_loss``, ``nan_grad``, ``inf_grad``) are repeated on
    every row of a run that diverged; -1 and "" otherwise.  ``stopped_step`` is the step
    where early stopping ended the run (``cause`` ``stopped_...``; the last row then
    measures the restored weights), -1 otherwise.  With ``outlier_prob`` > 0 some
    minibatches are outliers (see ``OUTLIER_PARAMS``), and the table gains the column
    ``outlier``: 1 on the per-step rows of those steps, 0 on the others.  With
    ``layer_detail`` the per-layer rows gain :attr:`..train.TrainLog.DETAIL` and their
    own ``update_ratio``.
    """
    run = build_run(config, seed, resolve_device(config["device"]))
    log = train(run.model, run_batches(run, config, seed), run.data.loss,
                optimizer=config["optimizer"], lr=config["lr"], steps=config["steps"],
                remedies=Remedies.from_config(config), log_every=config["log_every"],
                layers=run.layers(), final=run.final(),
                evaluate=lambda m, batch: evaluate(m, run.data),
                precision=Precision.from_config(config), detail=config["layer_detail"])
    table = log.table(TrainLog.COLUMNS + (TrainLog.DETAIL if config["layer_detail"] else ()))
    if config["outlier_prob"]:
        hit = outlier_schedule(config, seed).numpy()
        table["outlier"] = np.where(table["layer"] == 0, hit[table["step"].to_numpy()], np.nan)
    return table



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
    linears = model.hidden_layers()
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
