"""Curvature of the loss: Hessian-vector products, power iteration, and the sharpness.

Gradient descent with step ``lr`` on a quadratic ``0.5 w^T H w`` multiplies the component
of ``w`` along an eigenvector of ``H`` with eigenvalue ``lam`` by ``1 - lr * lam`` per
step, so it is stable if and only if ``lr < 2 / lam_max`` (LeCun et al. 1998).  For a
network, ``lam_max`` - the *sharpness* - is the top eigenvalue of the Hessian of the
training loss at the current weights.  It is estimated here without ever forming the
Hessian: :func:`hessian_vector_product` gives ``H v`` by differentiating ``g(w) . v``
(Pearlmutter 1994), and :func:`top_eigenvalue` runs power iteration on it.

The ``sharpness`` experiment builds exactly the model and data of the ``training``
experiment for the same configuration and seed (same parameters, same generators, same
draws), measures ``lam_max`` at initialization and, when ``steps > 0``, keeps measuring
it while training with plain SGD along the same minibatch sequence as ``training`` with
``optimizer="sgd"``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from .config import Param
from .data import Dataset
from .experiments import DATA_PARAMS, MODEL_PARAMS, _generator, evaluate, experiment, make_data
from .models import build_mlp
from .train import minibatches, train

# --------------------------------------------------------------------------- linear algebra

@dataclass(frozen=True)
class Eigen:
    """Result of :func:`top_eigenvalue`.

    ``value`` is the Rayleigh quotient ``v^T H v`` of the returned unit ``vector``;
    ``residual`` is ``||H v - value v|| / |value|`` (0 for an exact eigenpair);
    ``iterations`` counts matrix-vector products; ``converged`` says whether the relative
    change of the Rayleigh quotient fell below the tolerance before ``max_iters``.
    """

    value: float
    vector: torch.Tensor
    iterations: int
    residual: float
    converged: bool


def power_iteration(matvec: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor,
                    max_iters: int = 100, tol: float = 1e-4, shift: float = 0.0) -> Eigen:
    """Eigenvalue of largest magnitude of ``A - shift I`` (plus ``shift``) by power iteration.

    Stops when the Rayleigh quotient changes by less than ``tol`` (relative) between two
    iterations.  ``start`` must not be orthogonal to the top eigenvector (a random vector
    is not, with probability 1).
    """
    v = start / torch.linalg.vector_norm(start)
    value, converged, iterations = float("nan"), False, 0
    av = matvec(v)
    for iterations in range(1, max_iters + 1):  # noqa: B007 - used after the loop
        w = av - shift * v
        new = torch.dot(v, w).item()
        norm = torch.linalg.vector_norm(w)
        if not math.isfinite(new) or norm == 0:
            value = new
            break
        v = w / norm
        av = matvec(v)
        if math.isfinite(value) and abs(new - value) <= tol * abs(new):
            value, converged = new, True
            break
        value = new
    rayleigh = torch.dot(v, av).item()
    residual = (torch.linalg.vector_norm(av - rayleigh * v).item() / abs(rayleigh)
                if rayleigh != 0 else float("inf"))
    return Eigen(rayleigh, v, iterations, residual, converged)


def top_eigenvalue(matvec: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor,
                   max_iters: int = 100, tol: float = 1e-4) -> Eigen:
    """The *largest* (most positive) eigenvalue of a symmetric operator.

    Plain power iteration finds the eigenvalue of largest magnitude.  If that one is
    negative (a Hessian with a strongly negative direction), iterate again on
    ``A - lam_neg I``, whose dominant eigenvalue is ``lam_max - lam_neg >= 0``.
    """
    first = power_iteration(matvec, start, max_iters, tol)
    if first.value >= 0 or not math.isfinite(first.value):
        return first
    second = power_iteration(matvec, start, max_iters, tol, shift=first.value)
    return Eigen(second.value, second.vector, first.iterations + second.iterations,
                 second.residual, second.converged)


def flat_params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def hessian_vector_product(loss: torch.Tensor, params: list[torch.Tensor]
                           ) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """``(v -> H v, g)``: the Hessian of ``loss`` with respect to ``params``, and its gradient.

    The gradient ``g`` is computed once, with its graph; every product is one more
    backward pass through that graph, ``H v = d/dw (g(w) . v)`` (Pearlmutter 1994).
    Vectors are flat, in the order of ``params``.
    """
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat_grad = torch.cat([g.reshape(-1) for g in grads])

    def matvec(v: torch.Tensor) -> torch.Tensor:
        hv = torch.autograd.grad(flat_grad, params, grad_outputs=v, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).detach()

    return matvec, flat_grad.detach()


def sharpness(model: nn.Module, data: Dataset, n: int, start: torch.Tensor,
              max_iters: int = 100, tol: float = 1e-4) -> tuple[Eigen, float, float]:
    """Top Hessian eigenvalue of the training loss on the first ``n`` training samples.

    Returns the eigenpair, and the loss and gradient norm on those samples.
    """
    model.train()
    loss = data.loss(model(data.x_train[:n]), data.y_train[:n])
    matvec, grad = hessian_vector_product(loss, flat_params(model))
    eig = top_eigenvalue(matvec, start, max_iters, tol)
    return eig, loss.item(), torch.linalg.vector_norm(grad).item()


# --------------------------------------------------------------------------- experiment

HESSIAN_PARAMS = (
    Param("hessian_samples", "int", 2048,
          "training samples (the first ones, at most n_train) whose loss's Hessian is measured",
          low=1, high=10**7),
    Param("power_iters", "int", 100, "maximum power-iteration steps", low=1, high=10**5),
    Param("tol", "float", 1e-4, "relative change of the Rayleigh quotient that stops it",
          low=1e-12, high=1.0),
)
SHARPNESS_PARAMS = MODEL_PARAMS + DATA_PARAMS + (
    Param("lr", "float", 0.01, "SGD learning rate (used only when steps > 0)", low=1e-12,
          high=1e6),
    Param("lr_ratio", "float", 0.0,
          "if > 0, train at lr = lr_ratio * 2 / lambda_max(init) instead of lr", low=0.0,
          high=1e4),
    Param("steps", "int", 0, "plain-SGD steps (0: measure at initialization only)", low=0,
          high=10**7),
    Param("batch_size", "int", 64, "SGD minibatch size", low=1, high=65536),
    Param("measure_every", "int", 10, "steps between sharpness measurements", low=1,
          high=10**7),
) + HESSIAN_PARAMS


@experiment("sharpness", SHARPNESS_PARAMS)
def sharpness_experiment(config: dict, seed: int) -> pd.DataFrame:
    """Top Hessian eigenvalue lam_max of the training loss, at init and along plain SGD.

    Model and data are those of the ``training`` experiment with the same configuration
    and seed; with ``steps > 0`` the SGD run follows the same minibatch sequence as
    ``training`` with ``optimizer="sgd"`` (the power iteration's random start vector comes
    from a copy of the seed's generator, so it does not shift that sequence; later
    measurements start from the previous eigenvector).  Rows: one per measurement, with
    ``step``, ``lambda_max``, ``stability_lr`` (= 2 / lambda_max), ``hessian_loss`` and
    ``hessian_grad_norm`` (loss and gradient norm on the Hessian samples),
    ``readout_share`` (fraction of the top eigenvector's squared norm in the linear
    readout's weights and bias), ``power_iters`` used, ``residual``, ``converged``, the
    ``lr`` trained with, and ``diverged_step``: the step whose minibatch loss or gradient
    was not finite, -1 if none.
    """
    data = make_data(config)
    gen = _generator(seed)
    model = build_mlp(config, d_in=config["d_in"], d_out=data.d_out, generator=gen)
    params = flat_params(model)
    probe = torch.Generator().set_state(gen.get_state())
    start = torch.randn(sum(p.numel() for p in params), generator=probe)
    n_hess = min(config["hessian_samples"], config["n_train"])
    readout = sum(p.numel() for p in flat_params(model.readout))  # the last parameters
    n, steps, rows, diverged = data.x_train.shape[0], config["steps"], [], -1
    lr = config["lr"]
    for step in range(steps + 1):
        if step % config["measure_every"] == 0 or step == steps:
            eig, loss, gnorm = sharpness(model, data, n_hess, start, config["power_iters"],
                                         config["tol"])
            start = eig.vector
            if step == 0 and config["lr_ratio"] > 0:
                lr = config["lr_ratio"] * 2 / eig.value
            rows.append({"step": step, "lambda_max": eig.value,
                         "stability_lr": 2 / eig.value if eig.value > 0 else float("inf"),
                         "hessian_loss": loss, "hessian_grad_norm": gnorm,
                         "readout_share": (eig.vector[-readout:] ** 2).sum().item(),
                         "power_iters": eig.iterations, "residual": eig.residual,
                         "converged": eig.converged})
        if step == steps:
            break
        if step == 0:
            opt = torch.optim.SGD(model.parameters(), lr=lr)
        model.train()  # the same operations, in the same order, as train.train with "sgd"
        idx = torch.randint(0, n, (config["batch_size"],), generator=gen)
        loss = data.loss(model(data.x_train[idx]), data.y_train[idx])
        if not math.isfinite(loss.item()):
            diverged = step
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if not math.isfinite(torch.nn.utils.get_total_norm([p.grad for p in params]).item()):
            diverged = step
            break
        opt.step()
    return pd.DataFrame(rows).astype({"step": "int64", "power_iters": "int64",
                                      "converged": "bool"}).assign(lr=lr,
                                                                   diverged_step=diverged)


@experiment("lr_boundary", MODEL_PARAMS + DATA_PARAMS + (
    Param("lr_ratios", "list[float]", [0.5, 1.0, 2.0],
          "learning rates as multiples of this seed's 2 / lambda_max at initialization",
          low=1e-6, high=1e4),
    Param("steps", "int", 200, "plain-SGD steps per learning rate", low=1, high=10**7),
    Param("batch_size", "int", 64, "SGD minibatch size", low=1, high=65536),
    Param("log_every", "int", 10, "steps between test-loss evaluations", low=1, high=10**7),
) + HESSIAN_PARAMS)
def lr_boundary(config: dict, seed: int) -> pd.DataFrame:
    """Plain SGD at learning rates lr = ratio * 2 / lambda_max(init), per seed.

    For each seed: build the model of the ``training`` experiment, measure lambda_max of
    the training loss at initialization (as ``sharpness``), then train a copy of the
    initial model with ``train.train`` and ``optimizer="sgd"`` at each ratio.  Every run
    starts from a copy of the seed's generator as it is after the model is built, so
    each run is bit-identical to ``training`` with ``optimizer="sgd"`` and that ``lr``.
    Rows: one per step and ratio, with ``lr_ratio``, ``lr``, ``lambda_max``,
    ``readout_share`` (as in ``sharpness``), ``step``,
    ``loss`` (minibatch), ``grad_norm``, ``test_loss`` (at logged steps), and the run's
    ``diverged_step`` (-1 if none) and ``cause``.
    """
    data = make_data(config)
    gen = _generator(seed)
    model = build_mlp(config, d_in=config["d_in"], d_out=data.d_out, generator=gen)
    state = gen.get_state()
    start = torch.randn(sum(p.numel() for p in flat_params(model)),
                        generator=torch.Generator().set_state(state))
    n_hess = min(config["hessian_samples"], config["n_train"])
    eig, _, _ = sharpness(model, data, n_hess, start, config["power_iters"], config["tol"])
    readout = sum(p.numel() for p in flat_params(model.readout))
    share = (eig.vector[-readout:] ** 2).sum().item()
    tables = []
    for ratio in config["lr_ratios"]:
        lr = ratio * 2 / eig.value
        run_model = copy.deepcopy(model)
        layers = {f"blocks.{i}.linear": lin for i, lin in enumerate(run_model.hidden_linears())}
        batches = minibatches(data.x_train, data.y_train, config["batch_size"],
                              torch.Generator().set_state(state))
        log = train(run_model, batches, data.loss, optimizer="sgd", lr=lr,
                    steps=config["steps"], log_every=config["log_every"], layers=layers,
                    evaluate=lambda m, batch: evaluate(m, data))
        steps = pd.DataFrame(log.steps).reindex(
            columns=["step", "loss", "grad_norm", "test_loss"]).astype(
            {"loss": "float64", "grad_norm": "float64", "test_loss": "float64"})
        tables.append(steps.assign(
            lr_ratio=ratio, lr=lr, lambda_max=eig.value, readout_share=share,
            diverged_step=-1 if log.diverged_step is None else log.diverged_step,
            cause=log.cause))
    table = pd.concat(tables, ignore_index=True)
    return table[["lr_ratio", "lr", "lambda_max", "readout_share", "step", "loss",
                  "grad_norm", "test_loss", "diverged_step", "cause"]]
