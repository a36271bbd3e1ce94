"""Watch gradients inside any ``nn.Module`` with hooks, and catch an explosion early.

>>> monitor = GradientMonitor(model)          # every Linear/Conv/RNN layer by default
>>> loss = criterion(model(x), y); loss.backward()
>>> monitor.layer_stats()                     # one dict per watched layer
>>> monitor.remove()

For each watched module it records, on every forward/backward pass while enabled:

* ``preact_var`` - variance of the module's output (for a Linear layer: the
  pre-activation the mean-field theory describes);
* ``delta_norm`` - L2 norm of the loss gradient with respect to that output, i.e. the
  backpropagated signal (captured by a tensor hook registered during forward);
* ``grad_norm`` - L2 norm of the gradient of the module's own weight (read from
  ``.grad`` when asked, so it costs nothing during training), and ``grad_zero_fraction``,
  the fraction of its entries that are exactly zero (a half-precision gradient that
  underflowed, or dead units);
* ``nonfinite`` - whether the output, the gradient w.r.t. it or the weight's gradient
  held a NaN/Inf (:meth:`GradientMonitor.first_nonfinite` says where it started);
* ``calls`` - how many times the module ran in the pass (a shared layer runs more than
  once; its statistics are then those of its last call, with a warning).

Only the last pass is kept, and a pass's statistics never carry over into the next (a
forward pass without backward reports no ``delta_norm``); the training loop decides when
to read it.  A module whose output is not a tensor (a tuple, a dict: its first
floating-point tensor is watched; None: nothing is) never breaks the model.  A pass only
copies each output and keeps the gradient w.r.t. it; both are reduced when read, all
layers at once (stacked variances, fused norms) and converted to floats in one go, with
no host-device synchronisation per layer.  So an enabled monitor holds two tensors per
layer between a pass and the next read.  A disabled monitor has *no* hooks registered:
it costs nothing at all.

Also here: :meth:`GradientMonitor.before_step` / :meth:`~GradientMonitor.update_ratios`
(the per-layer update-to-weight ratio of one optimizer step), :class:`SpikeDetector`
(flags a gradient norm far above its recent median) and :func:`log_to_tensorboard`
(any writer with ``add_scalar``, such as ``torch.utils.tensorboard.SummaryWriter``).
"""

from __future__ import annotations

import math
import re
import statistics
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

WATCHED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.RNNBase)


def as_floats(tensors: list[torch.Tensor]) -> list[float]:
    """Scalar tensors as Python floats, converted together: one host-device copy, not one
    ``.item()`` (and one synchronisation) per tensor."""
    if not tensors:
        return []
    if len({(t.dtype, t.device) for t in tensors}) > 1:  # exact: float64 holds them all
        tensors = [t.to("cpu", torch.float64) for t in tensors]
    return torch.stack(tensors).tolist()


@torch.no_grad()
def norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """L2 norm of each tensor, as scalar tensors; one fused call when they share a device."""
    if not tensors:
        return []
    if len({t.device for t in tensors}) == 1:
        return list(torch._foreach_norm(tensors))
    return [torch.linalg.vector_norm(t) for t in tensors]


@torch.no_grad()
def variances(tensors: list[torch.Tensor]) -> list[float]:
    """Population variance of each tensor, as floats.

    Tensors of one size, dtype and device are stacked and done in one pass (the mean,
    then the mean squared deviation): for the many small outputs of a network's layers that is
    several times faster than one ``var()`` each.
    """
    out = [math.nan] * len(tensors)
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.numel(), t.dtype, t.device), []).append(i)
    for members in groups.values():
        # in float64: a float32 sum of squares overflows long before the variance does
        stacked = torch.stack([tensors[i].reshape(-1) for i in members]).double()
        var = (stacked - stacked.mean(1, keepdim=True)).square().mean(1)
        # back to the tensors' precision (at least float32), where var() would give it
        var = var.to(torch.promote_types(tensors[members[0]].dtype, torch.float32))
        for i, v in zip(members, var.tolist(), strict=True):
            out[i] = v
    return out


def _first_tensor(output) -> torch.Tensor | None:
    """The tensor a module's output stands for: the output itself, or the first
    floating-point tensor of a tuple, list or dict (many modules return those); None if
    there is none, so the monitor never breaks a model whatever it returns."""
    if isinstance(output, torch.Tensor):
        return output if output.is_floating_point() else None
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _weight(module: nn.Module) -> torch.Tensor | None:
    weight = getattr(module, "weight", None)
    if weight is None:  # e.g. RNNs name theirs weight_ih_l0
        weight = next(module.parameters(), None)
    return weight


class UpdateRatio:
    """Update-to-weight ratio ``||W_after - W_before|| / ||W_before||`` of one optimizer step.

    Call :meth:`before_step` right before ``optimizer.step()`` and :meth:`total` or
    :meth:`per_tensor` right after.  The weights are copied into views of one flat
    buffer, allocated once, so the total ratio takes two reductions over that buffer
    rather than one per tensor.  The parameters must share one dtype and device.
    """

    def __init__(self, params: Iterable[torch.Tensor]):
        self.params = list(params)
        if len({(p.dtype, p.device) for p in self.params}) > 1:
            raise ValueError("UpdateRatio needs parameters of one dtype and one device")
        self._flat: torch.Tensor | None = None
        self._before: list[torch.Tensor] = []
        self._ready = False

    @torch.no_grad()
    def before_step(self) -> None:
        if self._flat is None:
            first = self.params[0]
            self._flat = torch.empty(sum(p.numel() for p in self.params), dtype=first.dtype,
                                     device=first.device)
            self._before = [v.view_as(p) for v, p in zip(
                self._flat.split([p.numel() for p in self.params]), self.params, strict=True)]
        torch._foreach_copy_(self._before, self.params)
        self._ready = True

    @torch.no_grad()
    def _norms(self, norm: Callable) -> tuple:
        """(``norm`` of the update, ``norm`` of the weights before it)."""
        if not self._ready:
            raise RuntimeError("UpdateRatio: call before_step() before the optimizer step")
        self._ready = False
        weight = norm()
        # before - after in place: the update with its sign flipped, so the same norm
        torch._foreach_sub_(self._before, self.params)
        return norm(), weight

    def total(self) -> float:
        """The ratio over all tensors together (as if flattened into one vector)."""
        update, weight = self._norms(lambda: torch.linalg.vector_norm(self._flat))
        return (update / weight).item()

    def per_tensor(self) -> list[float]:
        """The ratio of each tensor on its own."""
        update, weight = self._norms(lambda: norms(self._before))
        return as_floats(list(torch._foreach_div(update, weight)))


def first_nonfinite_layer(rows: list[dict], key: str = "name"):
    """Where NaN/Inf first appeared in one forward and backward pass, from one row per
    layer, input side first, with ``preact_var``, ``delta_norm`` and ``grad_norm`` (as
    :meth:`GradientMonitor.layer_stats` gives them, or the per-layer rows of a training
    table at one step); returns the row's ``key``, or None if every value is finite.

    Forward first: the input-most layer whose output was non-finite.  Otherwise the
    backward pass, which reaches the output-most layer first and there computes the
    gradient w.r.t. the layer's output before its weight's gradient: the output-most
    layer whose either gradient was non-finite.  The weight's gradient counts because
    it can overflow alone: each of its entries sums one product per sample, so in
    half precision it passes the largest finite value before the gradients it is made
    of (a NaN of a missing value counts too: pass 0.0 for what was not measured).
    """
    def bad(row: dict, column: str) -> bool:
        return not math.isfinite(row.get(column, 0.0))

    for row in rows:
        if bad(row, "preact_var"):
            return row[key]
    for row in reversed(rows):
        if bad(row, "delta_norm") or bad(row, "grad_norm"):
            return row[key]
    return None


class GradientMonitor:
    """Forward/backward hooks that record per-layer statistics of ``model``.

    ``enabled`` can be switched at any time: a disabled monitor has no hooks registered
    (they are removed, not skipped), so a training loop that reads the statistics only
    every few steps pays for the hooks only on those steps.
    """

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module] | None = None,
                 enabled: bool = True):
        if modules is None:
            modules = {name: m for name, m in model.named_modules() if isinstance(m, WATCHED)}
        if not modules:
            raise ValueError("GradientMonitor found no layers to watch; pass modules=")
        self.modules = dict(modules)
        # The last pass: statistics already read (floats), and each output and the
        # gradient w.r.t. it, not yet read (reduced when read).
        self._stats: dict[str, dict[str, float]] = {name: {} for name in self.modules}
        self._outputs: dict[str, torch.Tensor] = {}
        self._grads: dict[str, torch.Tensor] = {}
        self._calls: dict[str, int] = {}  # forward calls of each module in this pass
        self._read_since_pass = True  # the next forward call starts a new pass
        self._warned: set[str] = set()
        self._handles: list = []
        self._update: UpdateRatio | None = None
        self.enabled = enabled

    @property
    def enabled(self) -> bool:
        """Whether the hooks are registered (passes are recorded)."""
        return bool(self._handles)

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if value and not self._handles:
            self._handles = [m.register_forward_hook(self._forward_hook(name))
                             for name, m in self.modules.items()]
        elif not value:
            self.remove()

    def _forward_hook(self, name: str):
        def hook(module, inputs, output):
            if self._read_since_pass:  # a new pass: nothing of the last one may remain
                self._read_since_pass = False
                self._stats = {n: {} for n in self.modules}
                self._outputs.clear()
                self._grads.clear()
                self._calls.clear()
            call = self._calls[name] = self._calls.get(name, 0) + 1
            self._grads.pop(name, None)  # an earlier call's, if the module runs twice
            out = _first_tensor(output)
            if out is None:  # None, or no floating-point tensor: nothing to watch
                self._outputs.pop(name, None)
                return
            if out.numel():
                # a copy: a later in-place op (ReLU(inplace=True)) may change the output
                self._outputs[name] = out.detach().clone()
            if out.requires_grad:
                out.register_hook(self._backward_hook(name, call))

        return hook

    def _backward_hook(self, name: str, call: int):
        def hook(grad):
            # only the module's last call of the pass, whose output is the one kept
            if grad.numel() and call == self._calls.get(name):
                self._grads[name] = grad.detach()  # its norm is taken when read, all at once

        return hook

    def _read(self) -> dict[str, dict[str, float]]:
        """The last pass's statistics as floats: the outputs and gradients kept since the
        last read are reduced, all layers at once, and converted in one go."""
        for name, value in zip(self._outputs, variances(list(self._outputs.values())),
                               strict=True):
            self._stats[name]["preact_var"] = value
        delta = as_floats(norms([g.float() for g in self._grads.values()]))
        for name, value in zip(self._grads, delta, strict=True):
            self._stats[name]["delta_norm"] = value
        for name, calls in self._calls.items():
            self._stats[name]["calls"] = calls
            if calls > 1 and name not in self._warned:
                self._warned.add(name)
                warnings.warn(f"GradientMonitor: {name!r} ran {calls} times in one pass (a "
                              "shared layer?); its statistics are those of its last call",
                              stacklevel=3)
        self._outputs.clear()
        self._grads.clear()
        self._read_since_pass = True
        return self._stats

    @staticmethod
    def _nonfinite(stats: dict[str, float], key: str) -> bool:
        return not math.isfinite(stats.get(key, 0.0))

    def layer_stats(self) -> list[dict]:
        """One dict per watched layer (in registration order) with the last pass's stats.

        ``nonfinite`` says the layer's output, the gradient w.r.t. it or its weight's
        gradient held a NaN/Inf, read off ``preact_var``, ``delta_norm`` and
        ``grad_norm``, which are then NaN/Inf too (as they are when the values are so
        large, beyond ~1e19, that their squares overflow).
        """
        grads = [None if w is None else w.grad for w in map(_weight, self.modules.values())]
        present = [g.detach() for g in grads if g is not None]
        stats = self._read()
        grad_norms = iter(as_floats(norms(present)))
        zeros = iter(as_floats([(g == 0).sum().double() / g.numel() for g in present]))
        rows = []
        for index, (name, grad) in enumerate(zip(self.modules, grads, strict=True), start=1):
            s = stats[name]
            grad_norm = float("nan") if grad is None else next(grad_norms)
            rows.append({
                "layer": index,
                "name": name,
                "grad_norm": grad_norm,
                "grad_zero_fraction": float("nan") if grad is None else next(zeros),
                "delta_norm": s.get("delta_norm", float("nan")),
                "preact_var": s.get("preact_var", float("nan")),
                "nonfinite": self._nonfinite(s, "preact_var") or self._nonfinite(s, "delta_norm")
                or (grad is not None and not math.isfinite(grad_norm)),
                "calls": int(s.get("calls", 0)),
            })
        return rows

    def first_nonfinite(self) -> str | None:
        """Name of the layer where NaN/Inf first appeared in the last pass, if anywhere:
        :func:`first_nonfinite_layer` of its output, the gradient w.r.t. it, and its
        weight's gradient (as in :meth:`layer_stats`; a module without a weight
        gradient is judged on the first two)."""
        stats = self._read()
        weights = {name: w.grad.detach() for name, w in
                   zip(self.modules, map(_weight, self.modules.values()), strict=True)
                   if w is not None and w.grad is not None}
        grad_norms = dict(zip(weights, as_floats(norms(list(weights.values()))), strict=True))
        return first_nonfinite_layer([
            {"name": name, "preact_var": stats[name].get("preact_var", 0.0),
             "delta_norm": stats[name].get("delta_norm", 0.0),
             "grad_norm": grad_norms.get(name, 0.0)} for name in self.modules])

    def before_step(self) -> None:
        """Remember the watched layers' weights; call right before ``optimizer.step()``."""
        weights = [w for w in map(_weight, self.modules.values()) if w is not None]
        if self._update is None or list(map(id, self._update.params)) != list(map(id, weights)):
            self._update = UpdateRatio(weights)
        self._update.before_step()

    def update_ratios(self) -> dict[str, float]:
        """``||W_after - W_before|| / ||W_before||`` of each watched layer's weight since
        :meth:`before_step` (the update-to-weight ratio of that optimizer step)."""
        if self._update is None:
            raise RuntimeError("GradientMonitor: call before_step() before optimizer.step()")
        names = [n for n, m in self.modules.items() if _weight(m) is not None]
        return dict(zip(names, self._update.per_tensor(), strict=True))

    def log_to(self, writer, step: int, prefix: str = "monitor") -> int:
        """Write :meth:`layer_stats` to a TensorBoard-style ``writer`` (see
        :func:`log_to_tensorboard`); returns the number of scalars written."""
        return log_to_tensorboard(writer, self.layer_stats(), step, prefix)

    def remove(self) -> None:
        """Detach every hook; the model is left as it was."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> GradientMonitor:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class SpikeDetector:
    """Flags a value far above its recent past: a gradient-norm spike.

    ``update(value)`` returns True when ``value`` exceeds ``factor`` times the median of
    the previous ``window`` values (the median, not the mean, so one earlier spike does
    not raise the bar), or when it is NaN/Inf.  Nothing is flagged until ``min_history``
    values have been seen.  Every finite value, flagged or not, joins the history, so a
    lasting change of scale stops being flagged after about ``window / 2`` steps.
    """

    def __init__(self, factor: float = 10.0, window: int = 20, min_history: int = 5):
        if not factor > 0 or not math.isfinite(factor):
            raise ValueError(f"factor must be a positive number, got {factor!r}")
        if not 1 <= min_history <= window:
            raise ValueError(f"need 1 <= min_history <= window, got {min_history}, {window}")
        self.factor = factor
        self.min_history = min_history
        self.history: deque[float] = deque(maxlen=window)
        self.steps = 0
        self.spikes: list[int] = []  # positions (0, 1, ... in update order) flagged

    @property
    def threshold(self) -> float | None:
        """The value above which the next one is flagged (None while warming up)."""
        if len(self.history) < self.min_history:
            return None
        return self.factor * statistics.median(self.history)

    def update(self, value) -> bool:
        """Record ``value`` (a float or a scalar tensor); True if it is a spike."""
        value = float(value)
        threshold = self.threshold
        spike = not math.isfinite(value) or (threshold is not None and value > threshold)
        if spike:
            self.spikes.append(self.steps)
        if math.isfinite(value):
            self.history.append(value)
        self.steps += 1
        return spike


def detect_spikes(values: Iterable[float], factor: float = 10.0, window: int = 20,
                  min_history: int = 5) -> list[int]:
    """Positions in ``values`` that a fresh :class:`SpikeDetector` flags."""
    detector = SpikeDetector(factor, window, min_history)
    for value in values:
        detector.update(value)
    return detector.spikes


def log_to_tensorboard(writer, stats, step: int, prefix: str = "monitor") -> int:
    """Write monitoring statistics with ``writer.add_scalar(tag, value, step)``.

    ``writer`` is anything with that method, e.g.
    ``torch.utils.tensorboard.SummaryWriter`` (TensorBoard is not needed otherwise).
    ``stats`` is either :meth:`GradientMonitor.layer_stats`' rows, written as
    ``prefix/<statistic>/<layer name>`` (one TensorBoard chart per statistic, one curve
    per layer), or a mapping ``{name: value}`` such as
    :meth:`GradientMonitor.update_ratios` or ``{"grad_norm": total}``, written as
    ``prefix/<name>``.  Returns the number of scalars written.
    """
    if isinstance(stats, Mapping):
        items = [(f"{prefix}/{key}", value) for key, value in stats.items()]
    else:
        items = [(f"{prefix}/{key}/{row['name']}", value) for row in stats
                 for key, value in row.items() if key not in ("layer", "name", "calls")]
    written = 0
    for tag, value in items:
        if isinstance(value, torch.Tensor):
            value = value.item()
        if isinstance(value, (bool, int, float)):
            writer.add_scalar(tag, float(value), step)
            written += 1
    return written



def anomaly_report(step: Callable[[], object]) -> dict:
    """Run ``step()`` (a forward and backward pass) under
    ``torch.autograd.detect_anomaly()`` and say what anomaly mode reported.

    Anomaly mode raises when a backward function *returns NaN* (not Inf), naming that
    function, and warns with the traceback of the forward call that created it.  Returns
    ``raised`` (whether it raised), ``function`` (the backward function it named, e.g.
    ``AddmmBackward0``; "" if none), ``error`` (its message) and ``forward_code`` /
    ``forward_file`` (the innermost line of that forward traceback, and its file).  Any
    other exception propagates.
    """
    report = {"raised": False, "function": "", "error": "", "forward_code": "",
              "forward_file": ""}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.autograd.detect_anomaly():
                step()
        except RuntimeError as error:
            match = re.search(r"Function '(\w+)' returned nan", str(error))
            if match is None:
                raise
            report.update(raised=True, function=match.group(1),
                          error=str(error).splitlines()[0])
    for warning in caught:
        text = str(warning.message)
        if "Traceback of forward call" in text:
            lines = text.splitlines()
            for i, line in enumerate(lines):  # innermost frame last
                frame = re.match(r'\s*File "([^"]+)", line \d+', line)
                if frame:
                    code = lines[i + 1] if i + 1 < len(lines) else ""
                    report["forward_file"] = frame.group(1)
                    report["forward_code"] = code.strip() if code.startswith("    ") else ""
    return report


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
