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
    """q* of the length map by iteration from ``q0``; ``inf`` when q grows without bound.

    The answer depends on ``q0`` when the map is bistable: GELU with sigma_b = 0 and
    sqrt 2 < sigma_w < 2 has an attracting q* = 0 and an unstable fixed point q_u, and
    iterations started above q_u grow without bound while those started below it go to 0
    (q_u is about 3 at sigma_w = 1.45 and 0.56 at 1.6).  Near a critical point where q*
    leaves 0 continuously (tanh, sigma_b = 0, sigma_w = 1) q^l approaches 0 only like
    1/(2l), so ``iterations`` end before ``tol`` is met and the last iterate is returned
    (see :func:`zero_fixed_point_sigma_w` for the exact boundary there).
    """
    q = q0
    for _ in range(iterations):
        new = length_map(activation, sigma_w, sigma_b, q)
        if not math.isfinite(new) or new > 1e12:
            return math.inf
        if abs(new - q) <= tol * max(1.0, q):
            return new
        q = new
    return q


def chi1(activation: str, sigma_w: float, sigma_b: float, q0: float = 1.0) -> float:
    """chi_1 at the fixed point q* reached from ``q0`` (for unbounded q*, the limit for
    q -> infinity); for a bistable length map it depends on ``q0``
    (:func:`q_fixed_point`)."""
    q = q_fixed_point(activation, sigma_w, sigma_b, q0)
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


def fitted_growth(activation: str, sigma_w: float, sigma_b: float, depth: int,
                  input_q: float = 1.0) -> float:
    """The predicted per-layer factor on the gradient *norm* reduced by the measurement's
    own estimator: exp(-s), with s the least-squares slope of ln ||delta^l|| =
    log_delta_sq / 2 of :func:`layer_profile` against the layer
    (:func:`.study.growth.log_slope`, as :func:`.study.growth.growth_per_layer` fits the
    measured norms).

    The slope of a cumulative sum weighs each layer's ln chi^l by k (L - k), so the first,
    transient layers count less than in :func:`predicted_growth`'s uniform mean; the two
    agree when chi^l is constant (ReLU) and differ by about 1 % for tanh near
    sigma_w = 1, where q^l is still relaxing (science review of December 2026, E1).
    """
    from .study.growth import log_slope  # the one estimator; study imports no theory

    profile = layer_profile(activation, sigma_w, sigma_b, depth, input_q)
    return float(np.exp(-log_slope(profile["layer"], profile["log_delta_sq"] / 2)))


def gradient_scale_profile(activation: str, sigma_w: float, sigma_b: float, depth: int,
                           input_q: float = 1.0) -> pd.DataFrame:
    """Predicted gradient scale coefficient (GSC) of each layer relative to the last hidden
    layer: ``log_gsc`` = ln GSC(l, L), input side first.

    Philipp, Song & Carbonell (2018) define GSC(k, l) = ||J_lk||_qm ||f_k|| / ||f_l||, the
    Jacobian's quadratic-mean norm times the ratio of the layers' forward norms: invariant
    to rescaling a layer's output, so a pure change of scale (a bias-free ReLU net at any
    sigma_w is the He net with its output multiplied by (sigma_w / sqrt 2)^(L+1)) leaves it
    at 1, and only a real imbalance between layers moves it.  With the pre-activations h^l
    as layers and mean-field ||J||_qm^2 = prod chi, ln GSC(l, L) = log_delta_sq / 2 +
    (ln q^l - ln q^L) / 2: exactly 0 for ReLU at every sigma_w, since there chi = sigma_w^2
    / 2 and q^{l+1} / q^l = sigma_w^2 / 2.
    """
    profile = layer_profile(activation, sigma_w, sigma_b, depth, input_q)
    log_q = np.log(profile["q"].to_numpy())
    log_gsc = profile["log_delta_sq"].to_numpy() / 2 + (log_q - log_q[-1]) / 2
    return pd.DataFrame({"layer": profile["layer"], "log_gsc": log_gsc})


def relu_log_length_variance(width: int) -> float:
    """Variance, per layer, of ln ||h^l||^2 for one input of a bias-free ReLU network with
    Gaussian weights at finite ``width`` N, to first order in 1/N: 5 / N.

    Given the layer below, ||h^{l+1}||^2 = (sigma_w^2 / N) ||relu(h^l)||^2 chi^2_N, whose
    log has variance 2/N, and the share ||relu(h)||^2 / ||h||^2 of the positive units,
    independent of the length of the isotropic h, has log-variance 3/N; the layers'
    terms are independent, so ln ||h^L||^2 diffuses with variance 5 L / N.  This is the
    exp(5 sum 1/n_l) of Hanin & Rolnick (2018): fluctuations grow with depth / width,
    which the mean-field limit (width -> infinity) sets to 0.
    """
    if width < 1:
        raise ValueError(f"relu_log_length_variance needs a width >= 1, got {width}")
    return 5.0 / width


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


def gradient_entries_by_depth(activation: str, sigma_w: float, sigma_b: float, max_depth: int,
                              batch_size: int, d_out: int, width: int, input_q: float = 1.0,
                              target_var: float = 1.0) -> pd.DataFrame:
    """Predicted size of a typical gradient *entry* at the first layer, for networks of
    every depth 1 .. ``max_depth``: what a number format has to hold.

    ``delta1_norm`` is :func:`input_gradient_by_depth`'s ||dL/dh^1|| (computed in one
    pass: the first L layers of a deeper network are those of the network of depth L).
    Its root-mean-square entry over the batch_size x width values is ``delta_entry`` =
    delta1_norm / sqrt(batch_size width).  The first layer's weight gradient sums one
    product per sample, dL/dW^1_ij = sum_b delta^1_bi x_bj; treating the samples' terms
    as independent (the mean-field treatment of the batch), its mean square is
    sum_b E[delta_bi^2] E[x_bj^2], so its root-mean-square entry is

        ``weight_entry`` = delta1_norm sqrt(input_q / width),

    sqrt(batch_size input_q) times ``delta_entry``.  Both change by chi^l per layer
    like delta1_norm (Poole et al. 2016; Schoenholz et al. 2017).  A format overflows
    when its largest entry passes the largest finite value and flushes an entry to zero
    below half its smallest subnormal (IEEE 754); the largest of many entries is some
    times the typical one, so the first overflow comes a little before the typical entry
    reaches the limit.
    """
    if max_depth < 1:
        raise ValueError(f"gradient_entries_by_depth needs max_depth >= 1, got {max_depth}")
    qs = [sigma_w**2 * input_q + sigma_b**2]
    for _ in range(max_depth - 1):
        qs.append(length_map(activation, sigma_w, sigma_b, qs[-1]))
    log_chi = np.cumsum(np.log([max(chi(activation, sigma_w, q), 1e-300) for q in qs]))
    q_out = np.array([length_map(activation, sigma_w, sigma_b, q) for q in qs])
    log_sq = np.log((q_out + target_var) / (batch_size * d_out)) + log_chi
    delta1 = np.exp(log_sq / 2)
    return pd.DataFrame({"depth": np.arange(1, max_depth + 1), "q_out": q_out,
                         "delta1_norm": delta1,
                         "delta_entry": delta1 / math.sqrt(batch_size * width),
                         "weight_entry": delta1 * math.sqrt(input_q / width)})


def zero_fixed_point_sigma_w(activation: str) -> float:
    """sigma_w = 1 / phi'(0) at which the fixed point q* = 0 of the length map (sigma_b = 0)
    of a smooth *odd* activation loses its stability: near q = 0 the map is
    q -> sigma_w^2 phi'(0)^2 q, and at q* = 0 chi_1 = sigma_w^2 phi'(0)^2, which is 1
    there.  For tanh this is the order-to-chaos boundary sigma_w = 1 (Poole et al. 2016),
    exactly, where the fixed-point iteration converges only like 1/(2l) and cannot find
    it.  NaN for an activation that is not odd (ReLU, GELU, ELU, SELU, sigmoid).
    """
    z = torch.linspace(-3.0, 3.0, 61, dtype=torch.float64, requires_grad=True)
    value = _module(activation)(z)
    (slope,) = torch.autograd.grad(value.sum(), z)
    value, slope = value.detach().numpy(), slope.numpy()
    if not np.allclose(value, -value[::-1], atol=1e-12) or slope[30] == 0.0:
        return math.nan
    return 1.0 / abs(float(slope[30]))


def critical_sigma_w(activation: str, sigma_b: float = 0.0, low: float = 0.05,
                     high: float = 10.0, tol: float = 1e-5, max_jump: float = 0.01) -> float:
    """sigma_w at which chi_1 = 1 (the order-to-chaos boundary), by bisection.

    Assumes chi_1 increases with sigma_w on [low, high], as it does for the activations
    studied here; NaN when there is no crossing in that bracket.  With sigma_b = 0 and an
    odd activation, a crossing found within 1 % of :func:`zero_fixed_point_sigma_w` is that
    exact value (the iteration does not converge there).  Raises ValueError when chi_1
    *jumps* across 1 (by more than ``max_jump`` over the final bracket) instead of
    crossing it: the length map is bistable there (GELU with sigma_b = 0 jumps from 0.59
    to 1.18 near sigma_w = 1.534, where its unstable fixed point crosses the iteration's
    start q0 = 1), so no sigma_w has chi_1 = 1 and the answer would depend on q0.
    """
    f = lambda s: chi1(activation, s, sigma_b) - 1.0  # noqa: E731
    f_low, f_high = f(low), f(high)
    if f_low > 0 or f_high < 0:
        return float("nan")
    while high - low > tol:
        mid = (low + high) / 2
        f_mid = f(mid)
        if f_mid < 0:
            low, f_low = mid, f_mid
        else:
            high, f_high = mid, f_mid
    if f_high - f_low > max_jump:
        raise ValueError(
            f"chi_1 of {activation!r} (sigma_b = {sigma_b:g}) jumps from {1 + f_low:.3f} to "
            f"{1 + f_high:.3f} at sigma_w = {(low + high) / 2:.4f} instead of crossing 1: its "
            "length map is bistable there, so no sigma_w has chi_1 = 1 and the fixed point "
            "depends on the starting q0")
    found = (low + high) / 2
    if sigma_b == 0:  # an odd activation's boundary: exact, where the iteration is slow
        exact = zero_fixed_point_sigma_w(activation)
        if math.isfinite(exact) and abs(found - exact) <= 0.01 * exact:
            return exact
    return found


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


def layer_norm_chi(activation: str) -> float:
    """Per-layer factor on the squared gradient norm of a deep network with layer norm
    (Ba, Kiros & Hinton 2016) between each Linear and the activation, at initialization:

        chi_LN = E[phi'(z)^2] / E[phi(z)^2],    z ~ N(0, 1).

    Layer norm rescales every sample's pre-activations to unit variance, so the forward
    pass sits at q = 1 whatever the weight scale: it is LSUV (Mishkin & Matas 2016) redone
    at every forward pass, and chi_LN is :func:`lsuv_prediction`'s chi.  Backwards, layer
    norm divides the gradient by the standard deviation sigma_w sqrt(E[phi(z)^2]) of the
    Linear's output, and the Linear and phi' multiply its square by
    sigma_w^2 E[phi'(z)^2] (the mean-field backward step of Schoenholz et al. 2017), so
    sigma_w cancels.  Exact for wide layers up to the O(1/width) projection that removes
    each sample's mean and normalized direction.  1 for ReLU; about 1.178 for tanh and
    1.072 for GELU, whose gradients therefore explode under layer norm.
    """
    return gaussian_mean(_dphi(activation, 1.0) ** 2) / gaussian_mean(_phi(activation, 1.0) ** 2)


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


def dropout_chi_factor(p: float) -> float:
    """Factor by which (inverted) dropout with drop probability ``p`` multiplies the
    mean-field gradient factor chi_1 of every layer it follows: ``1 / (1 - p)``.

    A kept unit is scaled by ``1/(1-p)`` and kept with probability ``1-p``, so the mask
    m satisfies E[m^2] = 1/(1-p); it multiplies both the forward second moment and the
    backward one, chi_1 -> sigma_w^2 E[phi'(h)^2] / (1-p) (Schoenholz et al. 2017, with
    their keep probability rho = 1 - p).  Over L layers the gradient norm gains
    (1-p)^(-L/2): dropout adds growth, it cannot take it away."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return 1.0 / (1.0 - p)




# --------------------------------------------------------------------------- recurrence

#: sup |sigma'| of a recurrent nonlinearity (Pascanu, Mikolov & Bengio 2013).
GAMMA = {"tanh": 1.0, "sigmoid": 0.25}


def mean_field_growth(sigma_w: float, input_std: float) -> float:
    """Mean-field per-step factor sqrt(chi_1) of a tanh RNN (untied-weights approximation).

    The recurrent weights act like a layer with weight scale ``sigma_w`` and the input
    drive like a bias of standard deviation ``input_std`` (fresh at every step).
    """
    return math.sqrt(chi1("tanh", sigma_w, input_std))


def rnn_critical_sigma_w(input_std: float, tol: float = 1e-5) -> float:
    """sigma_w at which a tanh RNN's mean-field per-step factor :func:`mean_field_growth`
    is 1, for an input drive of standard deviation ``input_std``.

    The input drive plays the bias's role in the length map (Poole et al. 2016; Chen,
    Pennington & Schoenholz 2018): it keeps q* > 0 and pushes tanh into saturation, which
    lowers E[tanh'^2], so the threshold rises with the drive (about 1.19, 1.40, 1.55,
    1.86 and 2.33 at input_std 0.1, 0.3, 0.5, 1 and 2).  Without a drive q* = 0 for
    sigma_w <= 1 and chi_1 = sigma_w^2 tanh'(0)^2 = sigma_w^2: exactly 1 (returned as such;
    iterating the length map there converges only as a power law).
    """
    if input_std < 0:
        raise ValueError(f"input_std must be >= 0, got {input_std}")
    if input_std == 0:
        return 1.0
    return critical_sigma_w("tanh", input_std, tol=tol)


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
