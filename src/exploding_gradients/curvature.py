"""Curvature of the loss: Hessian-vector products, power iteration, and the sharpness.

Gradient descent with step ``lr`` on a quadratic ``0.5 w^T H w`` multiplies the component
of ``w`` along an eigenvector of ``H`` with eigenvalue ``lam`` by ``1 - lr * lam`` per
step, so it is stable if and only if ``lr < 2 / lam_max`` (LeCun et al. 1998).  For a
network, ``lam_max`` - the *sharpness* - is the top eigenvalue of the Hessian of the
training loss at the current weights.  It is estimated here without ever forming the
Hessian: :func:`hessian_vector_product` gives ``H v`` by differentiating ``g(w) . v``
(Pearlmutter 1994), and :func:`top_eigenvalue` runs power iteration on it.

The ``sharpness`` and ``lr_boundary`` experiments that use it are in
:mod:`.experiments.curvature`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .data import Dataset


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
