"""Many seeds of the ``training`` experiment as one batched computation.

:func:`train_ensemble` trains the seeds' networks side by side: the weights of layer
``l`` of every member are stacked into one ``(E, out, in)`` tensor and each layer is a
single batched matrix product (``torch.baddbmm``), so the Python, autograd and optimizer
overhead that dominates a small network is paid once per step instead of once per seed.
It returns, for each seed, the :class:`.train.TrainLog` the ``training`` experiment's
loop would: the same rows and columns, values equal up to floating-point rounding.

Why the results are the loop's:

* each member is the run the loop trains (``experiments.feedforward.build_run`` with
  its seed), copied into the stacks;
* each member draws its minibatch indices from that same generator, in the same order;
* the loss is the *sum* of the members' mean losses, so the gradient of each member's
  slice is the gradient of its own loss, and every optimizer of :mod:`.train` (SGD,
  momentum, Adam, RMSprop) and every elementwise remedy acts on each slice alone;
  norm clipping, adaptive clipping, the logged norms and update ratios are computed
  per member;
* a member whose loss or gradient turns NaN/Inf gets the rows the loop would have
  written and is then *removed* from the stacks (parameters, gradients and optimizer
  state are re-sliced), so it is never updated again and cannot touch the others.

Every per-member reduction runs along contiguous rows and the test set is evaluated
in chunks of a fixed size, so a member's arithmetic does not depend on how many others
share its ensemble: its table is bit-identical whether it is trained alone or with any
other members, before or after some of them diverged (tested, both engines).  The
batched results are therefore reproducible per seed; they differ from the loop's only
in the last bits (``baddbmm`` is not ``addmm``).

Batch normalization (couples the samples of a minibatch, and its running statistics)
and early stopping (restores weights per member) are not supported:
:func:`unsupported_reason` says so, and the experiment then runs the per-seed loop.

Two engines compute the stacked forward pass: ``bmm`` (explicit ``baddbmm``, the
default) and ``vmap`` (``torch.func.functional_call`` of the model under
``torch.func.vmap``); ``study.timing.benchmark_ensemble`` times them against the loop.
On the 2-core CPU this was developed on, ``bmm`` was the faster in every measurement
(depth 20, width 64, 16 seeds: 15-30 % less time per seed-step than ``vmap``), hence the
default.
"""

from __future__ import annotations

import ctypes
import math
import os
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .models.mlp import MLP
from .remedies import Remedies
from .train import FlatGrads, TrainLog, divergence_cause, make_optimizer, resolve_device

ENGINES = ("bmm", "vmap")
#: Test samples evaluated at once (a fixed number, so a member's results do not depend on
#: the size of its ensemble).
TEST_CHUNK = 256

Forward = Callable[["_Ensemble", torch.Tensor, bool], tuple[torch.Tensor, list[torch.Tensor]]]


def unsupported_reason(config: dict) -> str:
    """Why ``config`` cannot be trained batched ('' when it can)."""
    if config.get("architecture", "mlp") != "mlp":
        return "the batched engine trains multilayer perceptrons"
    if config.get("normalization") == "batch":
        return "batch normalization couples the samples of a minibatch"
    if resolve_device(config.get("device", "cpu")).type != "cpu":  # "auto" may be the CPU
        return "the batched engine runs on the CPU"
    if config.get("stop_factor", 0.0):
        return "early stopping restores each member's best weights"
    if config.get("dropout", 0.0):
        return "dropout draws each member's masks in the per-seed loop"
    if config.get("precision", "fp32") != "fp32":
        return "mixed precision and loss scaling run in the per-seed loop"
    if config.get("clip", "none") in ("percentile", "zclip", "adagc"):
        return "clipping rules with a history of their own run in the per-seed loop"
    if config.get("skip", "none") != "none":
        return "skipping steps runs in the per-seed loop"
    return ""


def train_ensemble(config: dict, runs: list, engine: str = "bmm") -> list[TrainLog]:
    """The :class:`.TrainLog` of each run of ``runs``, trained as one ensemble.

    ``config`` is a resolved ``training`` configuration that :func:`unsupported_reason`
    accepts; ``runs`` are its seeds' :class:`.experiments.feedforward.Run` s (built by
    ``build_run``, so each member starts exactly as the loop's run does, on one shared
    dataset).  ``engine`` is ``bmm`` or ``vmap`` (same results up to rounding).
    """
    reason = unsupported_reason(config)
    if reason:
        raise ValueError(f"train_ensemble does not support this config: {reason}")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; allowed: {', '.join(ENGINES)}")
    _keep_freed_memory()
    with warnings.catch_warnings():
        # The flat gradients are (E, n) rows: a member's slice of a stack is not the dense
        # layout autograd's check expects, though it accumulates into it all the same.
        warnings.filterwarnings("ignore", message="grad and param do not obey")
        return _train(config, runs, _forward_bmm if engine == "bmm" else _forward_vmap)


_MALLOC_TUNED = False
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def _keep_freed_memory() -> None:
    """Let glibc's ``malloc`` keep freed memory for reuse instead of returning it.

    By default glibc serves each block above its *mmap threshold* (128 KiB at first)
    with its own ``mmap`` and returns it to the system when freed, and trims the heap
    when more than twice that much is free at its top.  One ensemble step allocates and
    frees tens of MB in blocks of a few hundred KiB (activations, gradients), so every
    step faulted those pages in again: ~3000 page faults per step, a fifth of the step
    time (measured: 2.56 -> 2.05 ms CPU per seed-step at depth 20, width 64, 16 seeds).
    Once per process, this sets the thresholds glibc's own dynamic adjustment would reach
    after freeing a 32 MiB block (``mallopt(3)``): blocks below 32 MiB come from the
    heap, and up to 64 MiB of freed memory is kept there.  Nothing happens off glibc, or
    when ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES``
    already tune it.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    if any(v in os.environ for v in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                      "GLIBC_TUNABLES")):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only  # noqa: B018
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, 32 * 2**20)
    mallopt(M_TRIM_THRESHOLD, 64 * 2**20)


# --------------------------------------------------------------------------- the stacks

class _Ensemble:
    """Stacked parameters ``(E, ...)`` of the live members, their gradients (one flat
    ``(E, n)`` buffer, :class:`.train.FlatGrads`) and their optimizer."""

    def __init__(self, models: list[MLP], optimizer: str, lr: float):
        template = models[0]
        self.template = template
        self.names = [name for name, _ in template.named_parameters()]
        each = [dict(m.named_parameters()) for m in models]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.optimizer_name = optimizer
        self.members = list(range(len(models)))  # member of each slot
        blocks = template.blocks
        self.residual = [b.residual for b in blocks]
        self.residual_scale = [b.residual_scale for b in blocks]
        self.acts = [b.act for b in blocks]
        self.layer_norm_eps = [b.norm.eps if isinstance(b.norm, nn.LayerNorm) else None
                               for b in blocks]
        self.hidden = [self.index[f"blocks.{i}.linear.weight"] for i in range(len(blocks))]
        self.final = {self.index["readout.weight"], self.index["readout.bias"]}
        self._preacts: list[torch.Tensor] = []
        self._hooks = [b.linear.register_forward_hook(self._record) for b in blocks]
        self._bind([torch.stack([p[name].detach() for p in each]).requires_grad_()
                    for name in self.names], lr)

    def _bind(self, params: list[torch.Tensor], lr: float, grads: torch.Tensor | None = None
              ) -> None:
        """Take ``params`` as the stacks: flat gradients (a copy of ``grads`` if given),
        a fresh optimizer at learning rate ``lr``, and the per-layer tensors the forward
        pass reads (looked up once here, not by name at every layer and step)."""
        # The stacks become views of one (E, n) buffer, laid out as their gradients are
        # (a member's parameters in one row), so autograd accumulates into the flat
        # gradients with matching strides.
        members = params[0].shape[0]
        sizes = [p[0].numel() for p in params]
        self.flat = torch.cat([p.detach().reshape(members, -1) for p in params], dim=1)
        params = [v.view_as(p).detach().requires_grad_()
                  for v, p in zip(self.flat.split(sizes, dim=1), params, strict=True)]
        self.params = params
        self.grads = FlatGrads(params, members=members)
        if grads is not None:
            self.grads.flat.copy_(grads)
        self.opt = make_optimizer(self.optimizer_name, params, lr)

        def get(name: str) -> torch.Tensor | None:
            return params[self.index[name]] if name in self.index else None

        # The stacks themselves, not views of them: a view made once goes stale when the
        # optimizer updates its base in place, and autograd then differentiates it as an
        # as_strided of the whole flat buffer (a zero-filled (E, n) tensor per parameter
        # per step, a fifth of the step); the forward pass takes fresh views instead.
        self.layers = [(get(f"blocks.{i}.linear.weight"), get(f"blocks.{i}.linear.bias"),
                        get(f"blocks.{i}.norm.weight"), get(f"blocks.{i}.norm.bias"))
                       for i in range(len(self.acts))]
        self.readout = (get("readout.weight"), get("readout.bias"))

    def _record(self, module, inputs, output):
        self._preacts.append(output)

    def param(self, name: str) -> torch.Tensor:
        return self.params[self.index[name]]

    def keep(self, slots: list[int]) -> None:
        """Keep only ``slots`` (in order): parameters, gradients and optimizer state."""
        idx = torch.tensor(slots, dtype=torch.long)
        size = len(self.members)
        params = [p.detach().index_select(0, idx).requires_grad_() for p in self.params]
        old = self.opt
        self._bind(params, old.param_groups[0]["lr"], self.grads.flat.index_select(0, idx))
        for p, q in zip(old.param_groups[0]["params"], params, strict=True):
            state = old.state.get(p)
            if state:
                self.opt.state[q] = {k: _slice(v, idx, size) for k, v in state.items()}
        self.members = [self.members[s] for s in slots]


def _slice(value, idx: torch.Tensor, size: int):
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == size:
        return value.index_select(0, idx)
    return value.clone() if isinstance(value, torch.Tensor) else value


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x @ W^T + b`` per member: x ``(E, B, in)`` or shared ``(B, in)``, ``weight``
    ``(E, out, in)``, ``bias`` ``(E, out)``."""
    if x.ndim == 2:
        x = x.expand(weight.shape[0], *x.shape)
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _forward_bmm(ens: _Ensemble, x: torch.Tensor, retain: bool):
    """Outputs ``(E, B, d_out)`` and the hidden pre-activations, with ``baddbmm``."""
    preacts = []
    for (weight, bias, norm_w, norm_b), act, eps, residual, scale in zip(
            ens.layers, ens.acts, ens.layer_norm_eps, ens.residual, ens.residual_scale,
            strict=True):
        z = _linear(x, weight, bias)
        if retain:
            z.retain_grad()
        preacts.append(z)
        h = z
        if eps is not None:
            h = F.layer_norm(h, h.shape[-1:], eps=eps)
            h = torch.addcmul(norm_b.unsqueeze(1), h, norm_w.unsqueeze(1))
        h = act(h)
        x = x + scale * h if residual else h
    return _linear(x, *ens.readout), preacts


def _forward_vmap(ens: _Ensemble, x: torch.Tensor, retain: bool):
    """The same with ``torch.func.vmap`` over ``functional_call`` of the model."""
    names = ens.names

    def one(params, xe):
        ens._preacts.clear()
        out = torch.func.functional_call(ens.template, dict(zip(names, params, strict=True)), (xe,))
        return out, tuple(ens._preacts)

    out, preacts = torch.func.vmap(one, in_dims=(0, 0 if x.ndim == 3 else None))(
        tuple(ens.params), x)
    if retain:
        for z in preacts:
            z.retain_grad()
    return out, list(preacts)


# --------------------------------------------------------------------------- training

def _member_losses(data, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's mean loss ``(E,)``: ``data.loss`` of its own outputs."""
    if data.task == "classification":
        e, b, c = out.shape
        y = y.expand(e, b) if y.ndim == 1 else y
        return F.cross_entropy(out.reshape(e * b, c), y.reshape(e * b),
                               reduction="none").view(e, b).mean(dim=1)
    return 0.5 * (out - y).pow(2).mean(dim=(1, 2))


def _stacked(reduce: Callable, tensors: list[torch.Tensor]) -> torch.Tensor:
    """``(len(tensors), E)``: ``reduce`` (over a member's last two dimensions) of each
    tensor; one call on the stack when all have one shape (every hidden layer of an MLP
    of one width)."""
    if len({t.shape for t in tensors}) == 1:
        return reduce(torch.stack(tensors))
    return torch.stack([reduce(t) for t in tensors])


def _per_member_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``(len(tensors), E)``: each tensor's norm per member."""
    return torch.stack([torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1)
                        for t in tensors])


def _train(config: dict, runs: list, forward: Forward) -> list[TrainLog]:
    """The :class:`.TrainLog` of each run, trained together."""
    data = runs[0].data
    gens = [run.generator for run in runs]
    ens = _Ensemble([run.model for run in runs], config["optimizer"], config["lr"])
    remedies = Remedies.from_config(config)
    steps, log_every, lr = config["steps"], config["log_every"], config["lr"]
    n, batch_size = data.x_train.shape[0], config["batch_size"]
    logs = [TrainLog() for _ in runs]
    for step in range(steps + 1):
        if not ens.members:
            break
        sampled = step % log_every == 0 or step == steps
        idx = torch.stack([torch.randint(0, n, (batch_size,), generator=gens[m])
                           for m in ens.members])
        out, preacts = forward(ens, data.x_train[idx], sampled)
        losses = _member_losses(data, out, data.y_train[idx])
        rows = [{"step": step, "loss": value, "grad_norm": math.nan, "loss_scale": math.nan,
                 "clipped": 0.0, "skipped": 0.0} for value in losses.tolist()]
        dead = []  # slots whose run ends at this step
        for slot, row in enumerate(rows):
            if not math.isfinite(row["loss"]):
                _diverged(logs[ens.members[slot]], row, divergence_cause(row["loss"], "loss"))
                dead.append(slot)
        live = [slot for slot in range(len(rows)) if slot not in dead]
        if not live:
            break
        ens.grads.zero_()
        total = losses.sum() if not dead else losses[live].sum()
        (total + _penalty(remedies, ens.params)).backward()
        member_norms = ens.grads.member_norms()
        grad_norms = member_norms.tolist()
        if sampled:
            layer_rows = _layer_stats(ens, preacts)
            tests = _test_metrics(ens, data, forward)
        for slot in live:
            member, row = ens.members[slot], rows[slot]
            row["grad_norm"] = grad_norms[slot]
            if sampled:
                logs[member].layers.extend({"step": step, "layer": layer, **stats}
                                           for layer, stats in enumerate(layer_rows[slot], 1))
                row.update(tests[slot])
            if not math.isfinite(row["grad_norm"]):
                _diverged(logs[member], row, divergence_cause(row["grad_norm"], "grad"))
                dead.append(slot)
            elif step == steps:
                logs[member].steps.append(row)
        if step == steps:
            break
        if dead:
            keep = [slot for slot in range(len(rows)) if slot not in dead]
            if not keep:
                break
            rows = [rows[slot] for slot in keep]
            member_norms = member_norms[keep]
            ens.keep(keep)
        step_lr = lr * remedies.lr_factor(step, steps)
        for group in ens.opt.param_groups:
            group["lr"] = step_lr
        clipped = _clip(remedies, ens, member_norms).tolist()
        before = ens.flat.clone() if sampled else None
        if remedies.weight_decay:
            with torch.no_grad():
                torch._foreach_mul_([p for p in ens.params if p.ndim > 2],
                                    1 - step_lr * remedies.weight_decay)
        ens.opt.step()
        ratios = _update_ratios(ens.flat, before) if sampled else None
        for slot, row in enumerate(rows):
            row["step_lr"] = step_lr
            row["clipped"] = float(clipped[slot])
            if sampled:
                row["update_ratio"] = ratios[slot]
            logs[ens.members[slot]].steps.append(row)
    for hook in ens._hooks:
        hook.remove()
    return logs


def _diverged(log: TrainLog, row: dict, cause: str) -> None:
    log.steps.append(row)
    log.diverged_step, log.cause = row["step"], cause


def _penalty(remedies: Remedies, params: list[torch.Tensor]) -> torch.Tensor | float:
    """The members' weight penalties, summed (each member's gradient is its own)."""
    if remedies.penalty == "none" or remedies.penalty_strength == 0:
        return 0.0
    weights = [p for p in params if p.ndim > 2]  # a member's weight matrices
    if remedies.penalty == "l1":
        return remedies.penalty_strength * sum(w.abs().sum() for w in weights)
    return 0.5 * remedies.penalty_strength * sum(w.pow(2).sum() for w in weights)


@torch.no_grad()
def _clip(remedies: Remedies, ens: _Ensemble, total_norms: torch.Tensor) -> torch.Tensor:
    """:meth:`.Remedies.clip_` of each member: norms and units per member; returns, per
    member, whether a gradient changed."""
    flat = ens.grads.flat  # (E, n): each member's gradients, one row
    members = total_norms.shape[0]
    if remedies.clip == "norm":  # as torch.nn.utils.clip_grad_norm_, per member
        coef = (remedies.clip_threshold / (total_norms + 1e-6)).clamp(max=1.0)
        flat.mul_(coef.unsqueeze(1))
        return total_norms > remedies.clip_threshold
    if remedies.clip == "value":
        largest = flat.abs().amax(dim=1)
        flat.clamp_(min=-remedies.clip_threshold, max=remedies.clip_threshold)
        return largest > remedies.clip_threshold
    changed = torch.zeros(members, dtype=torch.bool)
    if remedies.clip == "agc":  # as remedies.adaptive_clip_grad_, readout left alone
        for i, p in enumerate(ens.params):
            if i in ens.final:
                continue
            max_norm = _unitwise_norm(p.detach()).clamp_min(1e-3) * remedies.clip_threshold
            grad_norm = _unitwise_norm(p.grad)
            clipped = p.grad * (max_norm / grad_norm.clamp_min(1e-6))
            mask = grad_norm > max_norm
            p.grad.copy_(torch.where(mask, clipped, p.grad))
            changed |= mask.reshape(members, -1).any(dim=1)
    return changed


def _unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """:func:`.remedies.unitwise_norm` of each member's slice of ``x``."""
    if x.ndim <= 2:
        return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)
    return torch.linalg.vector_norm(x, dim=tuple(range(2, x.ndim)), keepdim=True)


@torch.no_grad()
def _layer_stats(ens: _Ensemble, preacts: list[torch.Tensor]) -> list[list[dict]]:
    """Per member, per hidden layer: grad_norm, delta_norm, preact_var (the monitor's),
    each reduced over all layers at once where their shapes allow."""
    weights = [ens.params[i].grad for i in ens.hidden]
    grad = _per_member_norms(weights)  # (L, E)
    delta = _stacked(lambda z: torch.linalg.vector_norm(z, dim=(-2, -1)),
                     [z.grad for z in preacts])
    var = _stacked(lambda z: z.var(dim=(-2, -1), unbiased=False), [z.detach() for z in preacts])
    zeros = torch.stack([(g == 0).sum(dim=(1, 2)).double() / g[0].numel()
                         for g in weights]).to(grad.dtype)
    table = torch.stack([grad, delta, var, zeros], dim=-1).transpose(0, 1).tolist()
    return [[{"grad_norm": g, "delta_norm": d, "preact_var": v, "grad_zero_fraction": z}
             for g, d, v, z in member] for member in table]  # (E, L, 4)


@torch.no_grad()
def _test_metrics(ens: _Ensemble, data, forward: Forward) -> list[dict]:
    """Test loss and accuracy of each member, as ``experiments.evaluate``."""
    x = data.x_test  # in chunks: (E, 1024, width) activations would not stay in cache
    out = torch.cat([forward(ens, x[i:i + TEST_CHUNK], False)[0]
                     for i in range(0, x.shape[0], TEST_CHUNK)], dim=1)
    losses = _member_losses(data, out, data.y_test).tolist()
    if data.task == "classification":
        accuracy = (out.argmax(dim=2) == data.y_test).float().mean(dim=1).tolist()
    else:
        accuracy = [math.nan] * len(losses)
    return [{"test_loss": loss, "test_accuracy": acc}
            for loss, acc in zip(losses, accuracy, strict=True)]


@torch.no_grad()
def _update_ratios(flat: torch.Tensor, before: torch.Tensor) -> list[float]:
    """Each member's ``||W_after - W_before|| / ||W_before||`` over all its parameters:
    rows of the flat ``(E, n)`` parameters."""
    moved = torch.linalg.vector_norm(before - flat, dim=1)
    return (moved / torch.linalg.vector_norm(before, dim=1)).tolist()
