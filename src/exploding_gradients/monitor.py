"""Watch gradients inside any ``nn.Module`` with hooks, and catch an explosion early.

>>> monitor = GradientMonitor(model)          # every layer worth watching, by default
>>> loss = criterion(model(x), y); loss.backward()
>>> monitor.layer_stats()                     # one dict per watched layer
>>> monitor.remove()

For each watched module it records, on every forward/backward pass while enabled:

* ``preact_var`` - variance of the module's output (for a Linear layer: the
  pre-activation the mean-field theory describes);
* ``delta_norm`` - L2 norm of the loss gradient with respect to that output, i.e. the
  backpropagated signal (captured by a tensor hook registered during forward);
* ``grad_norm`` - L2 norm of the gradient of the module's own weight, or of all its
  parameters together when it has no ``weight`` (an RNN, a multi-head attention, a whole
  transformer block); read from ``.grad`` when asked, so it costs nothing during
  training; and ``grad_zero_fraction``, the fraction of those entries that are exactly
  zero (a half-precision gradient that underflowed, or dead units);
* ``attn_logit_max`` - the largest attention logit q.k/sqrt(d) computed inside the module
  (the quantity Wortsman et al. 2023 watch): from every ``nn.MultiheadAttention``
  (recomputed from its inputs and weights, masks ignored, since PyTorch never
  materializes them) and every :class:`~.models.transformer.AttentionLogits` it contains
  (only in the rows of modules that contain attention);
* ``nonfinite`` - whether the output, the gradient w.r.t. it or the weight's gradient
  held a NaN/Inf (:meth:`GradientMonitor.first_nonfinite` says where it started);
* ``calls`` - how many times the module ran in the pass (a shared layer runs more than
  once; its statistics are then those of its last call, with a warning).

By default every Linear, convolution, recurrent layer, normalization layer and multi-head
attention is watched.  A ``torch.nn.MultiheadAttention`` is watched as itself (its output,
all its parameters, its logits), plus one row per projection: ``<name>.q``, ``.k``, ``.v``
(their slices of the fused ``in_proj_weight``: gradient, and the variance of the projected
inputs, recomputed; no ``delta_norm``, which PyTorch never materializes) and
``<name>.out_proj`` (whose output is the attention's: the same ``preact_var`` and
``delta_norm``).  Its ``out_proj`` module itself is never called by PyTorch (the functional
attention uses its weight directly), so a hook on it would record nothing.  (PyTorch's fast
inference path of ``TransformerEncoderLayer``, taken in eval mode without gradients,
bypasses every submodule: there is nothing to watch there.)

Only the last pass is kept, and a pass's statistics never carry over into the next (a
forward pass without backward reports no ``delta_norm``); the training loop decides when
to read it.  A module whose output is not a tensor (a tuple, a dict: its first
floating-point tensor is watched; None: nothing is) never breaks the model.  A pass only
copies each output and keeps the gradient w.r.t. it; both are reduced when read, all
layers at once (stacked variances, fused norms) and converted to floats in one go, with
no host-device synchronisation per layer.  So an enabled monitor holds two tensors per
layer between a pass and the next read.  A disabled monitor has *no* hooks registered:
it costs nothing at all.

With ``detail=True`` it also records the distributions, not only their sizes: the
median and 99th percentile of each layer's |output| and |weight gradient|, the fraction
of dead units (an output never positive on the batch: dead behind a ReLU) and of
saturated entries (|output| > ``saturation``: flat behind a tanh), and keeps a sample of
the values for histograms (:meth:`GradientMonitor.layer_values`).  Off, none of it is
computed.

Also here: :meth:`GradientMonitor.before_step` / :meth:`~GradientMonitor.update_ratios`
(the per-layer update-to-weight ratio of one optimizer step), :func:`optimizer_moments`
(the size of Adam's first and second moments per layer), :class:`LayerHistory` (per-layer
statistics over steps, as a layer x step matrix), :class:`SpikeDetector` (flags a
gradient norm far above its recent median), and TensorBoard logging through any writer
with ``add_scalar`` / ``add_histogram`` / ``add_image``, such as
``torch.utils.tensorboard.SummaryWriter`` (TensorBoard is not needed otherwise):
:func:`log_to_tensorboard` (scalars), :func:`log_histograms` (one histogram per layer and
kind) and :func:`log_heatmap` (one image for all layers over steps).
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

from .models.transformer import AttentionLogits

NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._BatchNorm)
WATCHED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.RNNBase, nn.MultiheadAttention,
           AttentionLogits, *NORMS)
PROJECTIONS = ("q", "k", "v")  # the rows of a watched nn.MultiheadAttention's projections
#: Quantiles of |output| and |weight gradient| a detailed monitor records per layer.
QUANTILES = (0.5, 0.99)
#: The detailed statistics' names, in the order :meth:`GradientMonitor.layer_stats` adds them.
DETAIL_STATS = ("act_q50", "act_q99", "grad_q50", "grad_q99", "dead_fraction",
                "saturated_fraction")
#: Largest number of values a detailed monitor reduces or keeps per tensor (a strided
#: sample beyond it: quantiles of a sample, cheap on any layer).
SAMPLE = 1 << 16


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
        # in place: a temporary this size costs its allocation more than its arithmetic
        var = stacked.sub_(stacked.mean(1, keepdim=True)).square_().mean(1)
        # back to the tensors' precision (at least float32), where var() would give it
        var = var.to(torch.promote_types(tensors[members[0]].dtype, torch.float32))
        for i, v in zip(members, var.tolist(), strict=True):
            out[i] = v
    return out


@torch.no_grad()
def _sample(t: torch.Tensor, size: int = SAMPLE) -> torch.Tensor:
    """``t`` flattened, as float32 on its device; every k-th value if it has more than
    ``size`` (a deterministic sample)."""
    flat = t.detach().reshape(-1)
    if flat.numel() > size:
        flat = flat[:: -(-flat.numel() // size)]
    return flat.float()


@torch.no_grad()
def distribution_stats(output: torch.Tensor, grad: torch.Tensor | None, unit_dim: int,
                       saturation: float) -> dict[str, float]:
    """The detailed statistics of one layer (see :data:`DETAIL_STATS`): quantiles of
    |output| and |grad| (NaN without a gradient), the fraction of units (along
    ``unit_dim``) whose output is never positive on the batch, and the fraction of output
    entries beyond ``saturation`` in absolute value."""
    q = torch.tensor(QUANTILES, device=output.device)
    act = torch.quantile(_sample(output).abs(), q).tolist()
    if grad is None or not grad.numel():
        g = [math.nan] * len(QUANTILES)
    else:
        g = torch.quantile(_sample(grad).abs(), q).tolist()
    dim = unit_dim % output.ndim if output.ndim > 1 else 0
    per_unit = output.detach().movedim(dim, -1).reshape(-1, output.shape[dim])
    dead = (per_unit.amax(dim=0) <= 0).double().mean().item()
    saturated = (output.detach().abs() > saturation).double().mean().item()
    return dict(zip(DETAIL_STATS, [*act, *g, dead, saturated], strict=True))


def _unit_dim(module: nn.Module | None) -> int:
    """The axis of a module's output that holds its units: channels second for
    convolutions and batch norm, features last for every other layer."""
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.modules.batchnorm._BatchNorm)
    return 1 if isinstance(module, conv) else -1


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


def default_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The modules a monitor watches by default: those of :data:`WATCHED`, except the
    ones inside a multi-head attention (PyTorch never calls its ``out_proj``)."""
    inside = {id(m) for mha in model.modules() if isinstance(mha, nn.MultiheadAttention)
              for m in mha.modules() if m is not mha}
    return {name: m for name, m in model.named_modules()
            if isinstance(m, WATCHED) and id(m) not in inside}


def _weight(module: nn.Module) -> torch.Tensor | None:
    """A module's ``weight``, or its first parameter when it has none (an RNN)."""
    weight = getattr(module, "weight", None)
    return weight if isinstance(weight, torch.Tensor) else next(module.parameters(), None)


# A row's parameters: (parameter, index), the index selecting a slice (None: all of it).
Piece = tuple[torch.Tensor, slice | None]


def _pieces(module: nn.Module) -> list[Piece]:
    """What a module's ``grad_norm`` measures: its ``weight`` if it has one, else all its
    parameters."""
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor):
        return [(weight, None)]
    return [(p, None) for p in module.parameters()]


def _projection_weights(mha: nn.MultiheadAttention) -> list[tuple[Piece, Piece | None]]:
    """(weight, bias) pieces of the query, key and value projections of ``mha``."""
    if mha._qkv_same_embed_dim:
        e = mha.embed_dim
        return [((mha.in_proj_weight, slice(i * e, (i + 1) * e)),
                 None if mha.in_proj_bias is None else (mha.in_proj_bias,
                                                        slice(i * e, (i + 1) * e)))
                for i in range(3)]
    e = mha.embed_dim
    return [((getattr(mha, f"{p}_proj_weight"), None),
             None if mha.in_proj_bias is None else (mha.in_proj_bias, slice(i * e, (i + 1) * e)))
            for i, p in enumerate(PROJECTIONS)]


def _take(piece: Piece | None, grad: bool = False) -> torch.Tensor | None:
    if piece is None:
        return None
    tensor, index = piece
    tensor = tensor.grad if grad else tensor.detach()
    if tensor is None:
        return None
    return tensor if index is None else tensor[index]


@torch.no_grad()
def attention_projections(mha: nn.MultiheadAttention, args: tuple, kwargs: dict
                          ) -> tuple[torch.Tensor, ...]:
    """(q, k, v, logits) that ``mha`` computed in a call with ``args``/``kwargs``: the
    projected inputs, (batch, heads, length, head_dim), and the logits q.k/sqrt(head_dim)
    (masks not applied; extra ``bias_k`` rows not included)."""
    names = ("query", "key", "value")
    inputs = [args[i] if i < len(args) else kwargs[n] for i, n in enumerate(names)]
    batched = inputs[0].dim() == 3
    if not batched:
        inputs = [t.unsqueeze(1) for t in inputs]
    if not (mha.batch_first and batched):
        inputs = [t.transpose(0, 1) for t in inputs]
    heads = mha.num_heads
    out = []
    for x, (weight, bias) in zip(inputs, _projection_weights(mha), strict=True):
        y = nn.functional.linear(x, _take(weight), _take(bias))
        out.append(y.view(y.shape[0], y.shape[1], heads, -1).transpose(1, 2))
    q, k, v = out
    return q, k, v, q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


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

    def norms_per_tensor(self) -> tuple[list[float], list[float]]:
        """(norm of the update, norm of the weights before it) of each tensor."""
        update, weight = self._norms(lambda: norms(self._before))
        return as_floats(update), as_floats(weight)


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

    ``modules``: the modules to watch, by name (default: :func:`default_modules`).
    ``enabled`` can be switched at any time: a disabled monitor has no hooks registered
    (they are removed, not skipped), so a training loop that reads the statistics only
    every few steps pays for the hooks only on those steps.
    """

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module] | None = None,
                 enabled: bool = True, detail: bool = False, saturation: float = 3.0):
        if modules is None:
            modules = default_modules(model)
        if not modules:
            raise ValueError("GradientMonitor found no layers to watch; pass modules=")
        self.modules = dict(modules)
        # One row per watched module, plus the projections of a multi-head attention; a
        # row's grad_norm measures its pieces, and an alias row repeats another's output.
        self._rows: dict[str, list[Piece]] = {}
        self._alias: dict[str, str] = {}
        for name, module in self.modules.items():
            self._rows[name] = _pieces(module)
            if isinstance(module, nn.MultiheadAttention):
                for p, (weight, _) in zip(PROJECTIONS, _projection_weights(module), strict=True):
                    self._rows[f"{name}.{p}"] = [weight]
                self._rows[f"{name}.out_proj"] = [(module.out_proj.weight, None)]
                self._alias[f"{name}.out_proj"] = name
        # Where attention logits are computed, and the watched modules they belong to.
        self._sources: dict[nn.Module, list[str]] = {}
        for name, module in self.modules.items():
            for m in module.modules():
                if isinstance(m, (nn.MultiheadAttention, AttentionLogits)):
                    self._sources.setdefault(m, []).append(name)
        self._attending = {n for names in self._sources.values() for n in names}
        # The last pass: statistics already read (floats), and each output and the
        # gradient w.r.t. it, not yet read (reduced when read).
        self._stats: dict[str, dict[str, float]] = {name: {} for name in self._rows}
        self._outputs: dict[str, torch.Tensor] = {}
        self._grads: dict[str, torch.Tensor] = {}
        self._logits: dict[str, list[torch.Tensor]] = {}  # largest logit of each call
        self._calls: dict[str, int] = {}  # forward calls of each module in this pass
        self._read_since_pass = True  # the next forward call starts a new pass
        self._warned: set[str] = set()
        self._handles: list = []
        self._update: UpdateRatio | None = None
        #: Whether :meth:`layer_stats` adds the distributions (see the module's docstring);
        #: ``saturation``: the |output| beyond which an entry counts as saturated (tanh'(3)
        #: is below 0.01).
        self.detail, self.saturation = detail, saturation
        self._values: dict[str, dict[str, torch.Tensor]] = {}
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
            self._handles += [m.register_forward_hook(self._logit_hook(m, names),
                                                      with_kwargs=True)
                              for m, names in self._sources.items()]
        elif not value:
            self.remove()

    def _begin(self) -> None:
        """Called by every hook: the first call after a read starts a new pass, and
        nothing of the last one may remain."""
        if self._read_since_pass:
            self._read_since_pass = False
            self._stats = {n: {} for n in self._rows}
            self._outputs.clear()
            self._grads.clear()
            self._logits.clear()
            self._calls.clear()

    def _forward_hook(self, name: str):
        def hook(module, inputs, output):
            self._begin()
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

    def _logit_hook(self, source: nn.Module, names: list[str]):
        def hook(module, args, kwargs, output):
            self._begin()
            if isinstance(source, AttentionLogits):
                logits = _first_tensor(output)
            else:
                *qkv, logits = attention_projections(source, args, kwargs)
                for name in names:  # the projections' rows of a watched attention
                    if self.modules[name] is source:
                        for p, t in zip(PROJECTIONS, qkv, strict=True):
                            self._outputs[f"{name}.{p}"] = t
            if logits is not None and logits.numel():
                top = logits.detach().amax()
                for name in names:
                    self._logits.setdefault(name, []).append(top)

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
        tops = as_floats([torch.stack(v).max().float() for v in self._logits.values()])
        for name, value in zip(self._logits, tops, strict=True):
            self._stats[name]["attn_logit_max"] = value
        if self.detail and self._outputs:
            self._read_distributions()
        for name, calls in self._calls.items():
            self._stats[name]["calls"] = calls
            if calls > 1 and name not in self._warned:
                self._warned.add(name)
                warnings.warn(f"GradientMonitor: {name!r} ran {calls} times in one pass (a "
                              "shared layer?); its statistics are those of its last call",
                              stacklevel=3)
        for row, name in self._alias.items():
            self._stats[row] = {k: v for k, v in self._stats[name].items()
                                if k != "attn_logit_max"}
        self._outputs.clear()
        self._grads.clear()
        self._logits.clear()
        self._read_since_pass = True
        return self._stats

    def _read_distributions(self) -> None:
        """The detailed statistics and a sample of the values of every layer whose output
        was kept in this pass (its weight gradient as it is now: after the backward
        pass, before the optimizer changes it)."""
        self._values = {}
        for name, out in self._outputs.items():
            grads = [g.reshape(-1) for g in (_take(p, grad=True) for p in self._rows[name])
                     if g is not None]
            grad = None if not grads else grads[0] if len(grads) == 1 else torch.cat(grads)
            module = self.modules.get(name)  # None for an attention's projection rows
            self._stats[name].update(distribution_stats(out, grad, _unit_dim(module),
                                                        self.saturation))
            self._values[name] = {"activations": _sample(out).cpu()}
            if grad is not None:
                self._values[name]["gradients"] = _sample(grad).cpu()

    def layer_values(self) -> dict[str, dict[str, torch.Tensor]]:
        """With ``detail``: per layer, a sample (at most :data:`SAMPLE` values, on the CPU)
        of the last read pass's outputs (``activations``) and weight gradient
        (``gradients``), for histograms (see :func:`log_histograms`).  Read after
        :meth:`layer_stats`."""
        if not self.detail:
            raise RuntimeError("GradientMonitor: layer_values() needs detail=True")
        return self._values

    @staticmethod
    def _nonfinite(stats: dict[str, float], key: str) -> bool:
        return not math.isfinite(stats.get(key, 0.0))

    def layer_stats(self) -> list[dict]:
        """One dict per row (the watched modules in registration order, each attention
        followed by its projections) with the last pass's stats.

        ``nonfinite`` says the layer's output, the gradient w.r.t. it or its weight's
        gradient held a NaN/Inf, read off ``preact_var``, ``delta_norm`` and
        ``grad_norm``, which are then NaN/Inf too (as they are when the values are so
        large, beyond ~1e19, that their squares overflow).
        """
        grads = {row: [_take(p, grad=True) for p in pieces] for row, pieces in self._rows.items()}
        present = [g.detach() for gs in grads.values() for g in gs if g is not None]
        stats = self._read()
        grad_norms = iter(as_floats(norms(present)))
        zeros = iter(as_floats([(g == 0).sum().double() for g in present]))
        rows = []
        for index, (name, gs) in enumerate(grads.items(), start=1):
            s, found = stats[name], [g for g in gs if g is not None]
            row_norms = [next(grad_norms) for _ in found]
            zero = sum(next(zeros) for _ in found)
            grad_norm = (float("nan") if not found else row_norms[0] if len(found) == 1
                         else math.sqrt(sum(v * v for v in row_norms)))
            rows.append({
                "layer": index,
                "name": name,
                "grad_norm": grad_norm,
                "grad_zero_fraction": (zero / sum(g.numel() for g in found) if found
                                       else float("nan")),
                "delta_norm": s.get("delta_norm", float("nan")),
                "preact_var": s.get("preact_var", float("nan")),
                "nonfinite": self._nonfinite(s, "preact_var") or self._nonfinite(s, "delta_norm")
                or (bool(found) and not math.isfinite(grad_norm)),
                "calls": int(s.get("calls", 0)),
                **({k: s.get(k, math.nan) for k in DETAIL_STATS} if self.detail else {}),
            })
            if name in self._attending:
                rows[-1]["attn_logit_max"] = s.get("attn_logit_max", float("nan"))
        return rows

    def first_nonfinite(self) -> str | None:
        """Name of the layer where NaN/Inf first appeared in the last pass, if anywhere:
        :func:`first_nonfinite_layer` of its output, the gradient w.r.t. it, and its
        weight's gradient (as in :meth:`layer_stats`; a module without a weight
        gradient is judged on the first two)."""
        stats = self._read()
        grads = {name: [g for g in (_take(p, grad=True) for p in self._rows[name])
                        if g is not None] for name in self.modules}
        grads = {name: torch.stack(norms(gs)).norm() for name, gs in grads.items() if gs}
        grad_norms = dict(zip(grads, as_floats(list(grads.values())), strict=True))
        return first_nonfinite_layer([
            {"name": name, "preact_var": stats[name].get("preact_var", 0.0),
             "delta_norm": stats[name].get("delta_norm", 0.0),
             "grad_norm": grad_norms.get(name, 0.0)} for name in self.modules])

    def before_step(self) -> None:
        """Remember the watched weights; call right before ``optimizer.step()``."""
        if self._update is None:
            views = [_take(p) for pieces in self._rows.values() for p in pieces]
            self._update = UpdateRatio(views)
        self._update.before_step()

    def update_ratios(self) -> dict[str, float]:
        """``||W_after - W_before|| / ||W_before||`` of each row's weights (all of its
        parameters together, for a row with several) since :meth:`before_step`: the
        update-to-weight ratio of that optimizer step."""
        if self._update is None:
            raise RuntimeError("GradientMonitor: call before_step() before optimizer.step()")
        update, weight = self._update.norms_per_tensor()
        out, start = {}, 0
        for name, pieces in self._rows.items():
            u, w = update[start:start + len(pieces)], weight[start:start + len(pieces)]
            start += len(pieces)
            if pieces:
                out[name] = math.sqrt(sum(x * x for x in u)) / math.sqrt(sum(x * x for x in w))
        return out

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



@torch.no_grad()
def optimizer_moments(optimizer: torch.optim.Optimizer,
                      modules: Mapping[str, nn.Module]) -> dict[str, dict[str, float]]:
    """The size of the optimizer's running moments of each module's weight, per name.

    ``moment1``: the root mean square of the first moment (Adam's ``exp_avg``, or the
    momentum buffer of SGD with momentum); ``moment2``: the root of the mean second
    moment (Adam's ``exp_avg_sq``, RMSprop's ``square_avg``), the gradient's size as the
    optimizer remembers it.  Adam's moments are bias-corrected (divided by ``1 - beta^t``)
    as its update uses them, so both are in gradient units and compare with the
    gradient's own RMS: a spike inflates ``moment2`` for about ``1 / (1 - beta2)`` steps,
    shrinking every later update (the damage AdaGC and SPAM address).  NaN where the
    optimizer keeps no such moment (plain SGD) or has not stepped yet.
    """
    betas = {id(p): g.get("betas") for g in optimizer.param_groups for p in g["params"]}
    out = {}
    for name, module in modules.items():
        weight = _weight(module)
        state = optimizer.state.get(weight, {}) if weight is not None else {}
        first = state.get("exp_avg", state.get("momentum_buffer"))
        second = state.get("exp_avg_sq", state.get("square_avg"))
        c1 = c2 = 1.0
        beta = betas.get(id(weight)) if weight is not None else None
        if beta is not None and "step" in state and "exp_avg" in state:
            t = float(state["step"])
            c1, c2 = 1 - beta[0] ** t, 1 - beta[1] ** t
        out[name] = {
            "moment1": math.nan if first is None else
            (first.float().square().mean() / c1 ** 2).sqrt().item(),
            "moment2": math.nan if second is None else (second.float().mean() / c2).sqrt().item(),
        }
    return out


class LayerHistory:
    """Per-layer statistics over steps, kept to draw (or log) as a layer x step matrix.

    ``add(step, rows)`` takes :meth:`GradientMonitor.layer_stats`' rows (or any dicts with
    ``name``); ``matrix(key)`` gives ``(layer names, steps, values)`` with ``values[i, j]``
    the statistic of layer ``i`` at step ``j`` (NaN where missing): the "colorful
    dimension" view of a run, one row per layer.
    """

    def __init__(self):
        self.steps: list[int] = []
        self.rows: list[list[dict]] = []

    def add(self, step: int, rows: Iterable[dict]) -> None:
        self.steps.append(step)
        self.rows.append([dict(r) for r in rows])

    def matrix(self, key: str) -> tuple[list[str], list[int], torch.Tensor]:
        names = list(dict.fromkeys(r["name"] for rows in self.rows for r in rows))
        values = torch.full((len(names), len(self.steps)), math.nan, dtype=torch.float64)
        index = {n: i for i, n in enumerate(names)}
        for j, rows in enumerate(self.rows):
            for r in rows:
                if key in r:
                    values[index[r["name"]], j] = float(r[key])
        return names, list(self.steps), values


def log_histograms(writer, monitor: GradientMonitor, step: int, prefix: str = "monitor") -> int:
    """Write one histogram per watched layer and kind (``activations``, ``gradients``)
    with ``writer.add_histogram(tag, values, step)``, tagged ``prefix/<kind>/<layer>``:
    the whole distribution in two charts per layer instead of a scalar per statistic.
    The monitor needs ``detail=True``; call after :meth:`~GradientMonitor.layer_stats`.
    Returns the number of histograms written."""
    written = 0
    for name, kinds in monitor.layer_values().items():
        for kind, values in kinds.items():
            finite = values[torch.isfinite(values)]
            if finite.numel():
                writer.add_histogram(f"{prefix}/{kind}/{name}", finite, step)
                written += 1
    return written


# Anchors of the viridis colormap (matplotlib's default), interpolated linearly.
_VIRIDIS = torch.tensor([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98],
                         [253, 231, 37]], dtype=torch.float64) / 255


def heatmap_image(values: torch.Tensor, log: bool = True, cell: int = 4) -> torch.Tensor:
    """A layer x step matrix as an RGB image (``3 x H x W`` floats in [0, 1], what
    ``add_image`` takes): viridis colors over the matrix's own range (of log10 |value|
    with ``log``), each value a ``cell`` x ``cell`` square, missing or non-finite values
    black.  Layers run down, steps to the right."""
    v = torch.as_tensor(values, dtype=torch.float64)
    if log:
        v = v.abs().log10()
    ok = torch.isfinite(v)
    lo, hi = (v[ok].min(), v[ok].max()) if ok.any() else (torch.tensor(0.0), torch.tensor(1.0))
    x = ((v - lo) / (hi - lo if hi > lo else 1.0)).clamp(0, 1).nan_to_num(0.0)
    pos = x * (len(_VIRIDIS) - 1)
    i = pos.floor().long().clamp(max=len(_VIRIDIS) - 2)
    frac = (pos - i).unsqueeze(-1)
    rgb = _VIRIDIS[i] * (1 - frac) + _VIRIDIS[i + 1] * frac
    rgb[~ok] = 0.0
    rgb = rgb.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    return rgb.permute(2, 0, 1).float()


def log_heatmap(writer, tag: str, history: LayerHistory, key: str, step: int,
                log: bool = True) -> None:
    """Write statistic ``key`` of every layer over the steps of ``history`` as one image
    (:func:`heatmap_image`) with ``writer.add_image(tag, image, step)``."""
    _, _, values = history.matrix(key)
    writer.add_image(tag, heatmap_image(values, log=log), step)


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
