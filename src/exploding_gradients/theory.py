"""Mean-field predictions for signal propagation in wide random networks.

Poole et al. (2016) and Schoenholz et al. (2017): with W_ij ~ N(0, sigma_w^2/N) and
b_i ~ N(0, sigma_b^2), the pre-activations of layer l are, for wide layers, Gaussian with
variance q^l, which follows the *length map*

    q^l = sigma_w^2 E_z[phi(sqrt(q^{l-1}) z)^2] + sigma_b^2,      z ~ N(0, 1),

and the squared norm of the backpropagated gradient dL/dh^l is multiplied, per layer, by

    chi^l = sigma_w^2 E_z[phi'(sqrt(q^l) z)^2].

At the fixed point q* this is chi_1: chi_1 > 1 explodes, chi_1 < 1 vanishes, and the
gradient's depth scale is xi = -1 / ln(chi_1).  For ReLU chi_1 = sigma_w^2 / 2 exactly,
so sigma_w^2 = 2 (He et al. 2015) is critical.

Gaussian expectations are computed with the midpoint rule on a fine symmetric grid of
z in [-8, 8] (exact to machine precision for smooth integrands, and unlike Gauss-Hermite
it resolves phi'(sqrt(q) z)^2 of saturating functions, whose peak becomes narrow in z
when q is large); the activation and its derivative come from :mod:`.activations`
through autograd, in float64.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import torch

from .activations import make_activation

_N, _Z = 4000, 8.0  # an even count of midpoints: symmetric, and no node at ReLU's kink
_NODES = -_Z + (np.arange(_N) + 0.5) * (2 * _Z / _N)
_WEIGHTS = np.exp(-_NODES**2 / 2)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


@functools.cache
def _module(activation: str) -> torch.nn.Module:
    return make_activation(activation).double()


def _phi(activation: str, q: float) -> np.ndarray:
    with torch.no_grad():
        return _module(activation)(torch.from_numpy(_NODES * math.sqrt(q))).numpy()


def _dphi(activation: str, q: float) -> np.ndarray:
    z = torch.from_numpy(_NODES * math.sqrt(q)).requires_grad_(True)
    (dphi,) = torch.autograd.grad(_module(activation)(z).sum(), z)
    return dphi.numpy()


def gaussian_mean(values: np.ndarray) -> float:
    """E_z[f(z)] from f evaluated at the quadrature nodes."""
    return float(np.dot(_WEIGHTS, values))


def length_map(activation: str, sigma_w: float, sigma_b: float, q: float) -> float:
    """q^{l} from q^{l-1}: sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2."""
    return sigma_w**2 * gaussian_mean(_phi(activation, q) ** 2) + sigma_b**2


def chi(activation: str, sigma_w: float, q: float) -> float:
    """Per-layer factor sigma_w^2 E[phi'(sqrt(q) z)^2] on the squared gradient norm."""
    return sigma_w**2 * gaussian_mean(_dphi(activation, q) ** 2)


def q_fixed_point(activation: str, sigma_w: float, sigma_b: float, q0: float = 1.0,
                  iterations: int = 2000, tol: float = 1e-10) -> float:
    """q* of the length map by iteration from ``q0``; ``inf`` when q grows without bound."""
    q = q0
    for _ in range(iterations):
        new = length_map(activation, sigma_w, sigma_b, q)
        if not math.isfinite(new) or new > 1e12:
            return math.inf
        if abs(new - q) <= tol * max(1.0, q):
            return new
        q = new
    return q


def chi1(activation: str, sigma_w: float, sigma_b: float) -> float:
    """chi_1 at the fixed point q* (for unbounded q*, the limit for q -> infinity)."""
    q = q_fixed_point(activation, sigma_w, sigma_b)
    return chi(activation, sigma_w, q if math.isfinite(q) else 1e6)


def depth_scale(chi_value: float) -> float:
    """xi = -1/ln(chi): layers over which the squared gradient changes by a factor e."""
    if chi_value <= 0:
        return 0.0
    return math.inf if chi_value == 1 else -1.0 / math.log(chi_value)


def layer_profile(activation: str, sigma_w: float, sigma_b: float, depth: int,
                  input_q: float = 1.0) -> pd.DataFrame:
    """Predicted per-layer quantities of a ``depth``-layer network, input side first.

    ``input_q`` is the mean squared input coordinate, so layer 1 has
    q^1 = sigma_w^2 input_q + sigma_b^2.  ``log_delta_sq`` is ln E||dL/dh^l||^2 relative
    to the last hidden layer, from the backward product of chi^l.
    """
    qs = [sigma_w**2 * input_q + sigma_b**2]
    for _ in range(depth - 1):
        qs.append(length_map(activation, sigma_w, sigma_b, qs[-1]))
    chis = [chi(activation, sigma_w, q) for q in qs]
    log_chi = np.log(np.maximum(chis, 1e-300))
    # ||delta^l||^2 = chi^l ||delta^{l+1}||^2: sum ln chi over layers l .. depth-1.
    log_delta = np.concatenate([np.cumsum(log_chi[:-1][::-1])[::-1], [0.0]])
    return pd.DataFrame({"layer": np.arange(1, depth + 1), "q": qs, "chi": chis,
                         "log_delta_sq": log_delta})


def predicted_growth(activation: str, sigma_w: float, sigma_b: float, depth: int,
                     input_q: float = 1.0) -> float:
    """Geometric-mean factor per layer on the gradient *norm*, going from output to input.

    exp(mean ln chi^l / 2) over the layers the gradient crosses; equals sqrt(chi_1) once
    q^l sits at its fixed point.
    """
    profile = layer_profile(activation, sigma_w, sigma_b, depth, input_q)
    return float(np.exp(np.log(profile["chi"].to_numpy()[:-1]).mean() / 2))


def input_gradient_by_depth(activation: str, sigma_w: float, sigma_b: float,
                            depths: list[int], batch_size: int, d_out: int,
                            input_q: float = 1.0, target_var: float = 1.0) -> pd.DataFrame:
    """Predicted norm of dL/dh^1 (first layer's pre-activations) for networks of each depth.

    This is the setting of the ``signal_propagation`` experiment: a linear readout with
    ``d_out`` outputs initialized like the hidden layers, targets of variance
    ``target_var`` and the loss 0.5 * mean over the batch and outputs of (y_hat - y)^2.
    The output error dL/dy_hat = (y_hat - y) / (batch_size d_out) has squared norm
    (q_out + Var y) / (batch_size d_out), where q_out = sigma_w^2 E[phi(sqrt(q^L) z)^2]
    + sigma_b^2 is the readout's variance; crossing the readout and L hidden layers
    multiplies it by chi^l for each hidden layer:

        E||dL/dh^1||^2 = (q_out + Var y) / (batch_size d_out) * prod_{l=1}^{L} chi^l.

    So when the forward signal explodes too, the output error grows with it and the
    input-side gradient grows by about chi_1 per layer in norm, not sqrt(chi_1).
    """
    rows = []
    for depth in depths:
        profile = layer_profile(activation, sigma_w, sigma_b, depth, input_q)
        q_out = length_map(activation, sigma_w, sigma_b, profile["q"].iloc[-1])
        log_sq = (math.log((q_out + target_var) / (batch_size * d_out))
                  + np.log(profile["chi"]).sum())
        rows.append({"depth": depth, "q_out": q_out, "delta1_norm": math.exp(log_sq / 2)})
    return pd.DataFrame(rows)


def critical_sigma_w(activation: str, sigma_b: float = 0.0, low: float = 0.05,
                     high: float = 10.0, tol: float = 1e-5) -> float:
    """sigma_w at which chi_1 = 1 (the order-to-chaos boundary), by bisection.

    Assumes chi_1 increases with sigma_w on [low, high], as it does for the activations
    studied here; NaN when there is no crossing in that bracket.
    """
    f = lambda s: chi1(activation, s, sigma_b) - 1.0  # noqa: E731
    if f(low) > 0 or f(high) < 0:
        return float("nan")
    while high - low > tol:
        mid = (low + high) / 2
        low, high = (mid, high) if f(mid) < 0 else (low, mid)
    return (low + high) / 2


# --------------------------------------------------------------------------- closed forms

def residual_relu_moments(scale: float, depth: int, q0: float = 1.0) -> pd.DataFrame:
    """Mean-field moments of ``depth`` residual blocks x + scale * relu(W x), He-initialized.

    W ~ N(0, 2/N), zero biases, block input x_0 with E[x_i^2] = ``q0`` and mean 0 (as in
    ``signal_propagation``).  With q = E[x_i^2] and m = E[x_i] of a block's input, the
    pre-activation h = W x has variance 2 q (W is centred, so the second moment of x
    counts, not its variance), relu(h) has second moment q and mean sqrt(q / pi), and h_i
    is independent of x_i for wide layers, so

        q' = (1 + scale^2) q + 2 scale m sqrt(q / pi),    m' = m + scale sqrt(q / pi).

    The textbook factor 1 + scale^2 holds only while m = 0: the branch relu(.) >= 0 adds
    a positive mean to every unit, and that mean feeds the cross term.  Rows: ``layer``
    l = 1 .. depth (the block whose Linear sees x_{l-1}), ``q`` and ``mean`` of x_{l-1},
    ``preact_var`` = 2 q (what the gradient monitor reports for that Linear) and
    ``forward_factor`` = q_l / q_{l-1}, the factor by which block l multiplies q.
    """
    if depth < 1 or scale < 0 or q0 <= 0:
        raise ValueError("residual_relu_moments needs depth >= 1, scale >= 0 and q0 > 0")
    qs, ms = [float(q0)], [0.0]
    for _ in range(depth):
        q, m = qs[-1], ms[-1]
        branch_mean = scale * np.sqrt(q / np.pi)
        qs.append((1 + scale**2) * q + 2 * m * branch_mean)
        ms.append(m + branch_mean)
    q, m = np.array(qs), np.array(ms)
    return pd.DataFrame({"layer": np.arange(1, depth + 1), "q": q[:depth], "mean": m[:depth],
                         "preact_var": 2 * q[:depth], "forward_factor": q[1:] / q[:-1]})


def lsuv_prediction(activation: str) -> tuple[float, float]:
    """(sigma_w, chi) of a deep LSUV-initialized network (Mishkin & Matas 2016), mean field.

    LSUV rescales every layer until its pre-activations have unit variance, so q = 1 at
    every layer, which for a layer with Var W = sigma_w^2 / N and no bias means
    sigma_w^2 E[phi(z)^2] = 1 with z ~ N(0, 1).  The backward factor on the squared
    gradient norm is then chi = sigma_w^2 E[phi'(z)^2] (see :mod:`.theory`): 1 for ReLU
    (LSUV reproduces He initialization), above 1 for tanh (the forward pass is fixed, the
    backward pass still explodes).
    """
    sigma_w = 1.0 / np.sqrt(length_map(activation, 1.0, 0.0, 1.0))
    return float(sigma_w), float(chi(activation, sigma_w, 1.0))


def depth_gain(chi_value, depth):
    """Factor by which the gradient norm changes from the last of ``depth`` layers to the
    first when each layer multiplies its expected square by ``chi_value``:
    chi^((depth - 1) / 2) (Poole et al. 2016; Schoenholz et al. 2017).  Elementwise on
    arrays."""
    return chi_value ** ((depth - 1) / 2)


def residual_chi(scale):
    """Mean-field factor 1 + scale^2 on the squared gradient norm per residual block
    x + scale * relu(W x) with He weights: the block's Jacobian is I + scale D W, and
    treating the gradient as independent of W (as mean-field theory does) gives
    E||(I + scale D W)^T d||^2 = (1 + scale^2) ||d||^2 (the gradient-independence
    assumption of Schoenholz et al. 2017; Yang & Schoenholz 2017 for residual nets).  The
    forward second moment grows by the same factor only while the branch has zero mean
    (see :func:`residual_relu_moments`).  Elementwise on arrays."""
    return 1 + scale**2


def residual_gain(scale, depth):
    """The mean-field law (1 + scale^2)^((depth - 1) / 2): how much the gradient norm grows
    from the last of ``depth`` residual blocks to the first (:func:`residual_chi`,
    :func:`depth_gain`).  Elementwise on arrays."""
    return depth_gain(residual_chi(scale), depth)


#: pi / (pi - 1): the factor per layer on the squared gradient norm of a deep
#: batch-normalized ReLU network at initialization, in the limit of large batches, whatever
#: the weights' scale (Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz 2019, "A mean
#: field theory of batch normalization").
BATCHNORM_RELU_CHI = math.pi / (math.pi - 1)


#: Exponent of the depth L in the bounds of Xiong et al. (2020, "On layer normalization in
#: the transformer architecture", Theorem 1) on the gradient of a transformer's last
#: feed-forward weight at initialization: O(d sqrt(ln d)) when the layer norm follows each
#: residual addition (post-LN), whatever L, and O(d sqrt(ln d / L)) when it precedes each
#: branch (pre-LN), because there the residual stream's squared norm grows linearly with L
#: (their Lemma 2) and the final layer norm divides the gradient by the stream's size.
XIONG_DEPTH_EXPONENT = {"post": 0.0, "pre": -0.5}


def xiong_depth_scaling(norm_position: str, depth, reference_depth):
    """Predicted last-layer gradient norm at ``depth`` relative to ``reference_depth``:
    (depth / reference_depth) ** :data:`XIONG_DEPTH_EXPONENT` [``norm_position``]
    (Xiong et al. 2020, Theorem 1); the post-LN/pre-LN ratio therefore grows as
    sqrt(depth).  Elementwise on arrays."""
    return (np.asarray(depth, dtype=float) / reference_depth) ** XIONG_DEPTH_EXPONENT[
        norm_position]


def decay_steps(lr: float, strength: float, factor: float) -> float:
    """Steps for an L2 penalty or decoupled weight decay *alone* to shrink the weights by
    ``factor`` (> 1) under plain gradient descent: each step multiplies them by
    ``1 - lr * strength``, so ``ln(factor) / -ln|1 - lr * strength|``.  0 when one step
    zeroes them (``lr * strength == 1``), inf when they never shrink (``strength == 0``
    or ``lr * strength >= 2``)."""
    shrink = abs(1.0 - lr * strength)
    if shrink >= 1.0:
        return float("inf")
    if shrink == 0.0:
        return 0.0
    return float(np.log(factor) / -np.log(shrink))


#: Largest finite float32, about 3.4e38 (IEEE 754 binary32): a gradient norm beyond it is Inf.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def spike_warning_lead(growth: float, factor: float, start: float = 1.0) -> float:
    """Steps between a spike detector's first flag and float32 overflow, for a gradient
    norm growing geometrically by ``growth`` (> 1) per step from ``start``.

    Along the sharpest direction (curvature lambda) gradient descent multiplies the
    gradient by ``growth`` = |1 - lr * lambda| per step once lr * lambda > 2 (Cohen et al.
    2021).  A detector flagging norms above ``factor`` times their recent median fires
    about ln(factor) / ln(growth) steps in; the norm overflows after
    ln(FLOAT32_MAX / start) / ln(growth) steps, so the lead is
    (ln(FLOAT32_MAX / start) - ln(factor)) / ln(growth).  Faster-than-geometric growth,
    as in deep networks, shortens it.
    """
    if growth <= 1.0:
        raise ValueError(f"spike_warning_lead needs a growth factor above 1, got {growth}")
    return (math.log(FLOAT32_MAX / start) - math.log(factor)) / math.log(growth)


def penalty_shrink(lr: float, strength: float, steps: int, momentum: float = 0.0) -> float:
    """Fraction of a weight that an L2 penalty *alone* removes in ``steps`` steps of
    gradient descent: each step multiplies it by ``1 - lr * strength``, about
    ``exp(-lr * strength)`` (Krogh & Hertz 1992).  With heavy-ball momentum ``momentum``
    the penalty's gradient also passes through the momentum buffer, which once filled
    multiplies the step by ``1 / (1 - momentum)`` (10 for 0.9); counting that for every
    step gives an upper bound, ``1 - exp(-lr * strength * steps / (1 - momentum))``."""
    return float(1.0 - math.exp(-lr * strength * steps / (1.0 - momentum)))




# --------------------------------------------------------------------------- recurrence

#: sup |sigma'| of a recurrent nonlinearity (Pascanu, Mikolov & Bengio 2013).
GAMMA = {"tanh": 1.0, "sigmoid": 0.25}


def mean_field_growth(sigma_w: float, input_std: float) -> float:
    """Mean-field per-step factor sqrt(chi_1) of a tanh RNN (untied-weights approximation).

    The recurrent weights act like a layer with weight scale ``sigma_w`` and the input
    drive like a bias of standard deviation ``input_std`` (fresh at every step).
    """
    return math.sqrt(chi1("tanh", sigma_w, input_std))


def one_unit_trajectory(w, b, x0: float = 0.5, steps: int = 50):
    """Final state of ``x_t = w sigmoid(x_{t-1}) + b`` and its exact derivatives.

    Returns float64 arrays ``(x_steps, dx/dw, dx/db)``, the derivatives accumulated in
    forward mode along the trajectory (no finite differences).
    """
    w, b = np.broadcast_arrays(np.asarray(w, dtype=float), np.asarray(b, dtype=float))
    x = np.full(w.shape, float(x0))
    dw = np.zeros(w.shape)
    db = np.zeros(w.shape)
    for _ in range(steps):
        s = 1.0 / (1.0 + np.exp(-x))
        ds = s * (1.0 - s)
        dw, db = s + w * ds * dw, 1.0 + w * ds * db
        x = w * s + b
    return x, dw, db


def one_unit_model(w, b, x0: float = 0.5, steps: int = 50, target: float = 0.7):
    """Pascanu et al.'s one-unit RNN ``x_t = w sigmoid(x_{t-1}) + b``; loss and gradient.

    ``w`` and ``b`` are numbers or arrays of one shape (a grid).  Returns float64 arrays
    ``(loss, dloss_dw, dloss_db)`` with ``loss = (x_steps - target)^2``.
    """
    x, dw, db = one_unit_trajectory(w, b, x0, steps)
    err = x - target
    return err**2, 2 * err * dw, 2 * err * db


def one_unit_cliff(w: float, steps: int = 50, x0: float = 0.5, target: float = 0.7,
                   b_range: tuple[float, float] = (-10.0, 4.0), grid: int = 4001) -> dict:
    """Locate the cliff of the one-unit model along ``b`` at fixed ``w`` and measure it.

    x_steps increases with b (for w > 0), with one steep step where the trajectory
    switches between the basins of the two stable fixed points.  The step is found on a
    grid, then bisection on x_steps(b) = (midpoint of the step) narrows it to float64
    resolution.  Returns ``b_star``, the losses on either side (``loss_left``,
    ``loss_right``), the largest |dL/db| found at the cliff (``peak_grad``), and the
    multiplier ``saddle_slope`` = w sigmoid'(x_u) of the unstable fixed point x_u of the
    map at b_star (NaN if the map is not bistable there).
    """
    bs = np.linspace(*b_range, grid)
    xs = one_unit_trajectory(w, bs, x0, steps)[0]
    j = int(np.argmax(np.diff(xs)))
    lo, hi = bs[j], bs[j + 1]
    mid_x = (xs[j] + xs[j + 1]) / 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if one_unit_trajectory(w, mid, x0, steps)[0] < mid_x:
            lo = mid
        else:
            hi = mid
    peak = max(abs(float(one_unit_model(w, p, x0, steps, target)[2])) for p in (lo, hi))
    return {"b_star": (lo + hi) / 2, "peak_grad": peak,
            "loss_left": float(one_unit_model(w, bs[max(j - 1, 0)], x0, steps, target)[0]),
            "loss_right": float(one_unit_model(w, bs[min(j + 2, grid - 1)], x0, steps,
                                                target)[0]),
            "saddle_slope": _saddle_slope(w, (lo + hi) / 2)}


def _saddle_slope(w: float, b: float) -> float:
    """w sigmoid'(x_u) at the unstable fixed point x_u of x -> w sigmoid(x) + b."""
    if w <= 4:
        return math.nan  # sigmoid' <= 1/4: one fixed point, never unstable
    root = math.sqrt(1 - 4 / w)  # where w sigmoid'(x) = 1: sigmoid = (1 -+ root) / 2
    x1, x2 = (math.log((1 - r) / (1 + r)) for r in (root, -root))
    f = lambda x: w / (1 + math.exp(-x)) + b - x  # noqa: E731
    if not f(x1) < 0 < f(x2):
        return math.nan
    for _ in range(200):
        mid = (x1 + x2) / 2
        x1, x2 = (mid, x2) if f(mid) < 0 else (x1, mid)
    s = 1 / (1 + math.exp(-x1))
    return w * s * (1 - s)


# --------------------------------------------------------------------------- cost

#: Exponent of each size in the operation count of a training step: how the time per step
#: should grow once the arithmetic, not the fixed cost of each operation, dominates.  A
#: step of an MLP with L hidden layers of width n on a batch of B costs about 6 L n^2 B
#: floating-point operations (one product forward, two backward; Kaplan et al. 2020):
#: linear in depth, quadratic in width.  A recurrent network does its n x n product once
#: per time step, one after the other: linear in the sequence length.
STEP_COST_EXPONENTS = {"depth": 1, "width": 2, "sequence length": 1}
