"""Small, named reductions the chapters share: growth rates and seed spread."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _named(names: list[str], key) -> dict:
    """A groupby key as {name: value} (pandas gives a scalar for one name, else a tuple)."""
    return dict(zip(names, key if isinstance(key, tuple) else (key,), strict=True))


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
        if len(y) < 2 or not np.isfinite(y).all():
            return float("nan")
        slope = np.polyfit(group["layer"].to_numpy(dtype=float), y, 1)[0]
        return float(np.exp(-slope))

    rows = [{**_named(keys, key), "growth": fit(g)}
            for key, g in df.groupby(keys, sort=False)]
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


def training_outcomes(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One row per group of ``training`` runs: how many diverged and where the rest ended.

    Final values are each run's last logged step; a diverged run contributes its
    divergence, not a final loss.
    """
    whole = runs[runs["layer"] == 0]
    rows = []
    for key, group in whole.groupby(by, sort=False):
        per_seed = group.groupby("seed")
        last = per_seed.tail(1)
        ok = last[last["diverged_step"] < 0]
        rows.append({
            **_named(by, key),
            "diverged": f"{(last['diverged_step'] >= 0).sum()}/{len(last)}",
            "initial gradient norm": per_seed.head(1)["grad_norm"].median(),
            "final training loss": ok["loss"].median() if len(ok) else float("nan"),
            "final test accuracy": ok["test_accuracy"].mean() if len(ok) else float("nan"),
        })
    return pd.DataFrame(rows)


def loss_ratio(runs: pd.DataFrame) -> pd.Series:
    """Per seed: last logged loss / first loss of a training run; inf if it diverged.

    Works for any training table with ``seed``, ``step``, ``loss`` and ``diverged_step``
    (rows with ``layer`` > 0, if present, are per-layer samples and are ignored).
    """
    whole = runs[runs["layer"] == 0] if "layer" in runs else runs
    out = {}
    for seed, run in whole.groupby("seed"):
        run = run.sort_values("step")
        diverged = (run["diverged_step"] >= 0).any()
        out[seed] = np.inf if diverged else run["loss"].iloc[-1] / run["loss"].iloc[0]
    return pd.Series(out, name="loss_ratio")
