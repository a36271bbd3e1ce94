"""Growth factors and seed spread: how a gradient norm changes per layer or per time step.

Every measured factor here is a least-squares slope of a log-norm against the layer (or
lag), fitted per seed; :func:`log_slope` is that one fit, so a prediction compared
with a measurement can be reduced by the very same estimator.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def _named(names: list[str], key) -> dict:
    """A groupby key as {name: value} (pandas gives a scalar for one name, else a tuple)."""
    return dict(zip(names, key if isinstance(key, tuple) else (key,), strict=True))


def log_slope(x, log_y) -> float:
    """Slope of the least-squares line through the points (x, log_y): the estimator of
    every growth factor here (NaN with fewer than two points)."""
    x, log_y = np.asarray(x, dtype=float), np.asarray(log_y, dtype=float)
    if len(log_y) < 2:
        return math.nan
    return float(np.polyfit(x, log_y, 1)[0])


def growth_per_layer(df: pd.DataFrame, column: str, by: list[str] | None = None) -> pd.DataFrame:
    """Per-layer factor of ``column`` going from the output towards the input.

    For each seed (and each group in ``by``) fit ln(column) = a + s * layer by least
    squares over the hidden layers and report exp(-s): > 1 means the quantity grows as
    the gradient travels back towards the input (explodes), < 1 that it shrinks.
    Non-finite or zero values make the fit meaningless and give NaN.
    """
    keys = [*(by or []), "seed"]

    def fit(group: pd.DataFrame) -> float:
        y = np.log(group[column].to_numpy(dtype=float))
        if not np.isfinite(y).all():
            return math.nan
        return float(np.exp(-log_slope(group["layer"], y)))

    rows = [{**_named(keys, key), "growth": fit(g)}
            for key, g in df.groupby(keys, sort=False)]
    return pd.DataFrame(rows)


def growth_per_lag(df: pd.DataFrame, by: list[str] | None = None,
                   min_lag: int = 0) -> pd.DataFrame:
    """Per-step factor of ``grad_norm`` going back in time, per seed (and group).

    Least-squares fit of ln ||dL/dh_{T-k}|| = a + s k over lags ``k >= min_lag`` where the
    norm is finite and positive; the factor is exp(s): > 1 explodes, < 1 vanishes.
    """
    keys = [*(by or []), "seed"]
    rows = []
    for key, group in df.groupby(keys, sort=False):
        g = group[group["lag"] >= min_lag]
        y = np.log(g["grad_norm"].to_numpy(dtype=float))
        ok = np.isfinite(y)
        rows.append({**_named(keys, key),
                     "growth": float(np.exp(log_slope(g["lag"].to_numpy()[ok], y[ok])))})
    return pd.DataFrame(rows)


def spread(df: pd.DataFrame, value: str, by: list[str]) -> pd.DataFrame:
    """Mean, standard deviation, min, max and count of ``value`` across seeds, per group."""
    out = df.groupby(by, sort=False)[value].agg(["mean", "std", "min", "max", "count"])
    return out.reset_index()


def relative_to_last(df: pd.DataFrame, column: str, by: list[str] | None = None) -> pd.Series:
    """``column`` divided by its value at the last layer of the same seed (and group)."""
    keys = [*(by or []), "seed"]
    last = df.groupby(keys, sort=False)[column].transform(
        lambda s: s.loc[df.loc[s.index, "layer"].idxmax()])
    return df[column] / last


def gradient_scale(df: pd.DataFrame, by: list[str] | None = None) -> pd.Series:
    """Philipp, Song & Carbonell's (2018) gradient scale coefficient of each layer relative
    to the last hidden layer of the same seed (and group), estimated from a
    ``signal_propagation``-like table: GSC(l, L) = (||delta^l|| / ||delta^L||)
    sqrt(preact_var^l / preact_var^L).

    The backward ratio stands for the Jacobian's quadratic-mean norm ||J_Ll||_qm, which it
    equals when delta^L is a random direction for the Jacobian (the independence that
    mean-field theory assumes); the forward ratio is ||h^l|| / ||h^L||.  Multiplying every
    layer's output by a constant leaves the GSC unchanged, so it tells a pure rescaling
    (flat at 1) from a real imbalance between layers.
    """
    backward = relative_to_last(df, "delta_norm", by)
    forward = np.sqrt(relative_to_last(df, "preact_var", by))
    return backward * forward


def growth_table(df: pd.DataFrame, column: str, predicted) -> pd.DataFrame:
    """Measured per-layer growth of ``column`` per (activation, sigma_w), beside theory.

    ``predicted(activation, sigma_w)`` returns the theory's per-layer factor.  Columns:
    measured mean and standard deviation over seeds, the prediction, and the relative
    error of the mean.
    """
    by = ["activation", "sigma_w"]
    table = spread(growth_per_layer(df, column, by), "growth", by)
    pairs = zip(table["activation"], table["sigma_w"], strict=True)
    table["predicted"] = [predicted(a, s) for a, s in pairs]
    table["rel_error"] = table["mean"] / table["predicted"] - 1
    return table[[*by, "mean", "std", "count", "predicted", "rel_error"]]


def crossing(x, y, level: float = 0.0) -> float:
    """First x where the piecewise-linear curve (x, y) crosses ``level``; NaN if never."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float) - level
    for i in range(len(x) - 1):
        if y[i] == 0:
            return float(x[i])
        if y[i] * y[i + 1] < 0:
            return float(x[i] - y[i] * (x[i + 1] - x[i]) / (y[i + 1] - y[i]))
    return float("nan")


def power_law_fit(x, y) -> dict:
    """Least-squares fit of ``y = a * x**b`` in log-log space: exponent ``b``, prefactor
    ``a`` and ``r2`` (of the log fit).  Used for how runtime grows with a size.

    Raises ValueError unless there are two or more points, all with finite, positive x
    and y, and two distinct x: a fit of anything else would be a number without meaning.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    valid = x.shape == y.shape and x.ndim == 1 and len(x) >= 2 \
        and bool((np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)).all()) \
        and len(np.unique(x)) >= 2
    if not valid:
        raise ValueError(f"power_law_fit needs two or more points with finite, positive x and "
                         f"y and distinct x; got x={x.tolist()}, y={y.tolist()}")
    lx, ly = np.log(x), np.log(y)
    b, log_a = np.polyfit(lx, ly, 1)
    residual = ly - (log_a + b * lx)
    r2 = 1 - residual.var() / ly.var() if ly.var() > 0 else 1.0
    return {"exponent": float(b), "prefactor": float(np.exp(log_a)), "r2": float(r2)}
