"""Watch gradients inside any ``nn.Module`` with hooks.

>>> monitor = GradientMonitor(model)          # every Linear/Conv/RNN layer by default
>>> loss = criterion(model(x), y); loss.backward()
>>> monitor.layer_stats()                     # one dict per watched layer
>>> monitor.remove()

For each watched module it records, on every forward/backward pass:

* ``preact_var`` - variance of the module's output (for a Linear layer: the
  pre-activation the mean-field theory describes);
* ``delta_norm`` - L2 norm of the loss gradient with respect to that output, i.e. the
  backpropagated signal (captured by a tensor hook registered during forward);
* ``grad_norm`` - L2 norm of the gradient of the module's own weight (read from
  ``.grad`` when asked, so it costs nothing during training);
* ``nonfinite`` - whether the output or its gradient held a NaN/Inf
  (:meth:`GradientMonitor.first_nonfinite` says where it started).

Only the last pass is kept; the training loop decides when to read it.
"""

from __future__ import annotations

import torch
from torch import nn

WATCHED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.RNNBase)


class GradientMonitor:
    """Forward/backward hooks that record per-layer statistics of ``model``."""

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module] | None = None,
                 enabled: bool = True):
        if modules is None:
            modules = {name: m for name, m in model.named_modules() if isinstance(m, WATCHED)}
        if not modules:
            raise ValueError("GradientMonitor found no layers to watch; pass modules=")
        self.modules = dict(modules)
        self.enabled = enabled
        self._stats: dict[str, dict[str, float]] = {name: {} for name in self.modules}
        self._handles = [
            m.register_forward_hook(self._forward_hook(name)) for name, m in self.modules.items()
        ]

    def _forward_hook(self, name: str):
        def hook(module, inputs, output):
            if not self.enabled:
                return
            out = output[0] if isinstance(output, tuple) else output
            stats = self._stats[name]
            with torch.no_grad():
                stats["preact_var"] = out.detach().float().var(unbiased=False).item()
                stats["nonfinite_output"] = not torch.isfinite(out).all().item()
            if out.requires_grad:
                out.register_hook(self._backward_hook(name))

        return hook

    def _backward_hook(self, name: str):
        def hook(grad):
            stats = self._stats[name]
            stats["delta_norm"] = grad.detach().float().norm().item()
            stats["nonfinite_grad"] = not torch.isfinite(grad).all().item()

        return hook

    def layer_stats(self) -> list[dict]:
        """One dict per watched layer (in registration order) with the last pass's stats."""
        rows = []
        for index, (name, module) in enumerate(self.modules.items(), start=1):
            weight = getattr(module, "weight", None)
            if weight is None:  # e.g. RNNs name theirs weight_ih_l0
                weight = next(module.parameters(), None)
            grad = None if weight is None else weight.grad
            rows.append({
                "layer": index,
                "name": name,
                "grad_norm": float("nan") if grad is None else grad.detach().norm().item(),
                "delta_norm": self._stats[name].get("delta_norm", float("nan")),
                "preact_var": self._stats[name].get("preact_var", float("nan")),
                "nonfinite": any(self._stats[name].get(k, False)
                                 for k in ("nonfinite_output", "nonfinite_grad")),
            })
        return rows

    def first_nonfinite(self) -> str | None:
        """Name of the layer where NaN/Inf first appeared in the last pass, if anywhere.

        Forward first: the input-most layer whose output was non-finite.  Otherwise the
        backward pass: the output-most layer whose gradient was non-finite, since the
        backward pass reaches it first.
        """
        for name in self.modules:
            if self._stats[name].get("nonfinite_output"):
                return name
        for name in reversed(self.modules):
            if self._stats[name].get("nonfinite_grad"):
                return name
        return None

    def remove(self) -> None:
        """Detach every hook; the model is left as it was."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> GradientMonitor:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


_MAX_SLOPE: dict[str, float] = {}


def derivative_stats(act: nn.Module, h: torch.Tensor) -> dict[str, float]:
    """Statistics of the activation's derivative at its inputs ``h``.

    ``dphi_sq`` is the mean of phi'(h)^2, the empirical E[phi'^2] of mean-field theory
    (so sigma_w^2 * dphi_sq is the layer's measured chi); ``saturated`` is the fraction
    of units whose |phi'(h)| is below 5 % of the activation's largest slope (for a
    saturating function the flat tails, for ReLU its inactive half).
    """
    # .forward, not __call__: this runs inside the module's own forward hook.
    h = h.detach().double().requires_grad_(True)
    (dphi,) = torch.autograd.grad(act.forward(h).sum(), h)
    key = repr(act)
    if key not in _MAX_SLOPE:
        z = torch.linspace(-10, 10, 20001, dtype=torch.float64, requires_grad=True)
        (dz,) = torch.autograd.grad(act.forward(z).sum(), z)
        _MAX_SLOPE[key] = dz.abs().max().item()
    return {"dphi_sq": dphi.pow(2).mean().item(),
            "saturated": (dphi.abs() < 0.05 * _MAX_SLOPE[key]).double().mean().item()}
