"""Memory guard: refuse, before any compute, a configuration the machine cannot hold.

:func:`estimate_bytes` is a deliberately *conservative* (rounded-up) estimate of the peak
memory one seed of an experiment needs on top of the already running Python process;
:func:`check_memory` compares it with the memory available and raises
:class:`~exploding_gradients.config.ConfigError` with the estimate if it does not fit, so a
too-large configuration is refused up front instead of being killed by the kernel's
out-of-memory killer half-way through (or swapping the machine to a halt).

What is counted, per seed (seeds run one after another, so they do not add up):

* ``parameters``: every weight and bias of the model (MLP: ``depth x width^2`` hidden
  weights plus input layer, readout, biases and normalization affine parameters; RNN:
  ``gates x hidden x (hidden + input + 2)``) times the number of parameter-sized copies
  alive at once - the parameters and their gradients (x2) for one backward pass; plus
  the optimizer state (two Adam moments), the copy of the weights used for the
  update-to-weight ratio, and the update itself when training (x6); the Hessian-vector
  product's differentiable gradient, flat vectors and power-iteration vectors when the
  sharpness is measured (x8 more).
* ``activations``: what autograd keeps for the backward pass, ``batch x width x
  (depth + 2)`` values per tensor and about 8 tensors per layer (linear output,
  normalization output, activation, residual sum, their gradients and the
  :class:`~exploding_gradients.monitor.GradientMonitor`'s copies); the Hessian-vector
  product keeps the graph of the gradient as well, about 3 times that on the
  ``min(hessian_samples, n_train)`` samples.  RNN: ``seq_len x batch x hidden`` values
  times ``4 x gates + 3`` tensors per time step (gate pre-activations and outputs, the
  hidden state, its retained gradient).
* ``data``: the synthetic training and test sets (``(n_train + 1024) x (3 d_in + d_out)``
  values: inputs are drawn, rescaled and split) and the test-set forward pass.
* ``runtime``: a fixed 256 MiB that torch allocates on its first forward and backward
  pass (thread pools, kernels, allocator caches).
* ``results``: the rows of the result table, about 2 KiB each while they exist at the
  same time as Python dicts, a DataFrame, Python lists and the JSON text of the cache
  entry.

Values are float32 (4 bytes) except ``rnn_gradients``, which is float64 (8 bytes).  Not
counted: the interpreter, torch and the libraries already loaded (they are part of the
process whose *available* memory is compared), and memory-allocator slack, for which
the total is multiplied by :data:`SAFETY`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .config import ConfigError, short_repr

LIMIT_ENV_VAR = "EXPLODING_GRADIENTS_MEMORY_LIMIT"
SAFETY = 1.25          # allocator slack and temporaries not listed above
TENSORS_PER_LAYER = 8  # activation-sized tensors autograd and the monitor keep per layer
HVP_FACTOR = 3         # the double-backward graph of a Hessian-vector product
ROW_BYTES = 2048       # one result row: dict, DataFrame, list and JSON text of the cache
TEST_SAMPLES = 1024    # size of the synthetic test set (see data.make_task)
RUNTIME = 256 * 2**20  # bytes torch allocates on a first forward/backward (pools, kernels)
GIB = 2**30


def _mlp_params(config: dict, d_in: int, d_out: int) -> int:
    depth, width = config["depth"], config["width"]
    hidden = (depth - 1) * (width * width + width) + d_in * width + width
    norm = 2 * width * depth if config.get("normalization", "none") != "none" else 0
    return hidden + width * d_out + d_out + norm


def _mlp_activations(config: dict, batch: int) -> int:
    return TENSORS_PER_LAYER * batch * config["width"] * (config["depth"] + 2)


def _d_out(config: dict) -> int:
    return 4  # classification: 4 classes (data.make_task); regression: 1 output


def _data(config: dict) -> int:
    """Training and test sets plus the evaluation pass on the test set (values)."""
    d_out = _d_out(config)
    # the inputs are drawn, rescaled (a copy) and split: up to 3 input-sized tensors alive
    sets = (config["n_train"] + TEST_SAMPLES) * (3 * config["d_in"] + d_out + 1)
    return sets + 4 * TEST_SAMPLES * config["width"]


def _training_rows(config: dict, steps: int, every: int, per_layer: bool = True) -> int:
    samples = steps // every + 2
    return steps + 1 + (samples * config["depth"] if per_layer else 0)


def _hessian(config: dict, n_params: int) -> dict[str, int]:
    n = min(config["hessian_samples"], config["n_train"])
    return {"parameters": 8 * n_params,
            "activations": HVP_FACTOR * _mlp_activations(config, n)}


def _signal_propagation(config: dict) -> tuple[int, dict[str, int]]:
    p = _mlp_params(config, config["width"], config["d_out"])
    batch = config["batch_size"]
    return 4, {"parameters": 2 * p,
               "activations": _mlp_activations(config, batch)
               + batch * (config["width"] + 2 * config["d_out"]),
               "results": ROW_BYTES // 4 * config["depth"]}


def _training(config: dict) -> tuple[int, dict[str, int]]:
    p = _mlp_params(config, config["d_in"], _d_out(config))
    rows = _training_rows(config, config["steps"], config["log_every"])
    return 4, {"parameters": 6 * p,
               "activations": _mlp_activations(config, config["batch_size"]),
               "data": _data(config),
               "results": ROW_BYTES // 4 * rows}


def _sharpness(config: dict) -> tuple[int, dict[str, int]]:
    p = _mlp_params(config, config["d_in"], _d_out(config))
    hess = _hessian(config, p)
    train = _mlp_activations(config, config["batch_size"]) if config["steps"] else 0
    rows = config["steps"] // config["measure_every"] + 2
    return 4, {"parameters": 6 * p + hess["parameters"],
               "activations": hess["activations"] + train,
               "data": _data(config),
               "results": ROW_BYTES // 4 * rows}


def _lr_boundary(config: dict) -> tuple[int, dict[str, int]]:
    p = _mlp_params(config, config["d_in"], _d_out(config))
    hess = _hessian(config, p)
    ratios = len(config["lr_ratios"])
    # the step rows of every ratio are kept; the per-layer rows of one run at a time
    rows = ratios * (config["steps"] + 1) + _training_rows(config, config["steps"],
                                                           config["log_every"])
    return 4, {"parameters": 7 * p + hess["parameters"],  # + the deep copy being trained
               "activations": max(hess["activations"],
                                  _mlp_activations(config, config["batch_size"])),
               "data": _data(config),
               "results": ROW_BYTES // 4 * rows}


_GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def _rnn(config: dict, input_size: int, copies: int) -> dict[str, int]:
    gates = _GATES.get(config["cell"], 4)
    hidden, batch, steps = config["hidden_size"], config["batch_size"], config["seq_len"]
    params = gates * hidden * (hidden + input_size + 2) + hidden + 1
    return {"parameters": copies * params,
            "activations": steps * batch * (hidden * (4 * gates + 3) + input_size + 1)}


def _rnn_gradients(config: dict) -> tuple[int, dict[str, int]]:
    terms = _rnn(config, config["input_size"], copies=2)
    terms["results"] = ROW_BYTES // 8 * (config["seq_len"] + 1)
    return 8, terms


def _rnn_training(config: dict) -> tuple[int, dict[str, int]]:
    terms = _rnn(config, 2, copies=6)
    terms["results"] = ROW_BYTES // 4 * (config["steps"] + 1)
    return 4, terms


#: experiment name -> ``config -> (bytes per value, {term: number of values})``
ESTIMATORS: dict[str, Callable[[dict], tuple[int, dict[str, int]]]] = {
    "signal_propagation": _signal_propagation,
    "training": _training,
    "sharpness": _sharpness,
    "lr_boundary": _lr_boundary,
    "rnn_gradients": _rnn_gradients,
    "rnn_training": _rnn_training,
}


def estimate_terms(name: str, config: dict) -> dict[str, int]:
    """:func:`estimate_bytes` broken down into its terms (bytes, before :data:`SAFETY`)."""
    estimator = ESTIMATORS.get(name)
    if estimator is None:
        return {}
    size, terms = estimator(config)
    return {"runtime": RUNTIME, **{term: size * values for term, values in terms.items()}}


def estimate_bytes(name: str, config: dict) -> int:
    """Conservative peak memory, in bytes, of one seed of experiment ``name``.

    ``config`` is a *resolved* configuration (every parameter present and valid).  See
    the module docstring for what is counted.  An experiment without an estimator
    (registered by other code) is estimated at 0, so it is never refused.
    """
    return int(SAFETY * sum(estimate_terms(name, config).values()))


def available_bytes() -> tuple[int | None, str]:
    """Memory this process may still use, in bytes, and where that number comes from.

    ``$EXPLODING_GRADIENTS_MEMORY_LIMIT`` (bytes) if set, else ``MemAvailable`` from
    ``/proc/meminfo`` (Linux), else the physical memory from ``os.sysconf`` (macOS);
    ``None`` if none of these is known.
    """
    override = os.environ.get(LIMIT_ENV_VAR, "").strip()
    if override:
        if not override.isascii() or not override.isdigit() or len(override) > 30:
            raise ConfigError(f"environment variable {LIMIT_ENV_VAR}: got "
                              f"{short_repr(override)}; allowed: a whole number of bytes")
        return int(override), f"available (the limit set by {LIMIT_ENV_VAR})"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "available (MemAvailable in /proc/meminfo)"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return (os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
                "of physical memory")
    except (OSError, ValueError, AttributeError):
        return None, "unknown"


def _gib(n: int) -> str:
    return f"{n / GIB:.3g} GiB" if n >= GIB / 100 else f"{n / 2**20:.3g} MiB"


def check_memory(name: str, config: dict) -> int:
    """Raise :class:`ConfigError` if one seed of ``name`` would not fit in memory.

    Returns the estimate (bytes) when it fits.  The message gives the estimate, its
    largest terms, the memory available and the parameters that set the size.
    """
    need = estimate_bytes(name, config)
    have, source = available_bytes()
    if have is None or need <= have:
        return need
    terms = sorted(estimate_terms(name, config).items(), key=lambda kv: -kv[1])
    detail = ", ".join(f"{term} {_gib(size)}" for term, size in terms if size)
    sizes = [k for k in ("depth", "width", "batch_size", "n_train", "hessian_samples",
                         "seq_len", "hidden_size", "steps") if k in config]
    raise ConfigError(
        f"experiment {name!r} needs about {_gib(need)} of memory for this configuration "
        f"({detail}; x{SAFETY} for allocator slack), this machine has {_gib(have)} "
        f"{source}; reduce {', '.join(sizes)}"
        + ("" if not sizes else f" (now {', '.join(f'{k}={config[k]}' for k in sizes)})")
    )
