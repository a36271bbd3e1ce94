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


def power_law_fit(x, y) -> dict:
    """Least-squares fit of ``y = a * x**b`` in log-log space: exponent ``b``, prefactor
    ``a`` and ``r2`` (of the log fit).  Used for how runtime grows with a size."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    b, log_a = np.polyfit(lx, ly, 1)
    residual = ly - (log_a + b * lx)
    r2 = 1 - residual.var() / ly.var() if ly.var() > 0 else 1.0
    return {"exponent": float(b), "prefactor": float(np.exp(log_a)), "r2": float(r2)}


# --------------------------------------------------------------------------- clipping

def run_summary(runs: pd.DataFrame, by: list[str], tail: float = 0.1) -> pd.DataFrame:
    """One row per (``by``, seed) of a ``training`` or ``rnn_training`` table.

    ``diverged`` (NaN/Inf), ``diverged_step`` (-1 if not), ``first_loss``, ``final_loss``
    (mean of the logged loss over the last ``tail`` fraction of steps; NaN for a diverged
    run) and ``final_over_first``.  Rows with ``layer`` > 0 (per-layer samples) are ignored.
    """
    whole = runs[runs["layer"] == 0] if "layer" in runs else runs
    rows = []
    for key, g in whole.groupby([*by, "seed"], sort=False):
        g = g.sort_values("step")
        step = int(g["diverged_step"].iloc[0])
        n = max(1, int(round(len(g) * tail)))
        final = float("nan") if step >= 0 else float(g["loss"].tail(n).mean())
        first = float(g["loss"].iloc[0])
        rows.append({**_named([*by, "seed"], key), "diverged": step >= 0,
                     "diverged_step": step, "first_loss": first, "final_loss": final,
                     "final_over_first": final / first})
    return pd.DataFrame(rows)


def mean_grad_norm(runs: pd.DataFrame, window: int, by: list[str] | None = None) -> pd.DataFrame:
    """Per (``by``, seed): the average gradient norm over steps ``0 .. window-1`` (Pascanu,
    Mikolov & Bengio's statistic for choosing a clipping threshold), over the finite
    values only, with their median and ``steps_used``, how many finite steps there were
    (fewer than ``window`` when the run diverged or was shorter)."""
    whole = runs[runs["layer"] == 0] if "layer" in runs else runs
    early = whole[whole["step"] < window]
    keys = [*(by or []), "seed"]
    rows = []
    for key, g in early.groupby(keys, sort=False):
        finite = g["grad_norm"][np.isfinite(g["grad_norm"])]
        rows.append({**_named(keys, key), "mean_grad_norm": float(finite.mean()),
                     "median_grad_norm": float(finite.median()), "steps_used": len(finite)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- architecture

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
    from .theory import chi, length_map

    sigma_w = 1.0 / np.sqrt(length_map(activation, 1.0, 0.0, 1.0))
    return float(sigma_w), float(chi(activation, sigma_w, 1.0))


def seed_outcomes(runs: pd.DataFrame, by: list[str], tail: float = 0.1) -> pd.DataFrame:
    """:func:`run_summary` per (``by``, seed) plus gradient and accuracy columns.

    ``initial_grad_norm`` (the total gradient norm at step 0), ``max_grad_norm`` (largest
    finite one), and ``final_accuracy`` (last logged test accuracy; NaN for a diverged
    run and for tables without accuracy, such as ``rnn_training``).
    """
    summary = run_summary(runs, by, tail)
    whole = runs[runs["layer"] == 0] if "layer" in runs else runs
    extra = []
    for key, g in whole.groupby([*by, "seed"], sort=False):
        g = g.sort_values("step")
        grads = g["grad_norm"].to_numpy(dtype=float)
        finite = grads[np.isfinite(grads)]
        acc = g["test_accuracy"].dropna() if "test_accuracy" in g else pd.Series(dtype=float)
        diverged = int(g["diverged_step"].iloc[0]) >= 0
        extra.append({**_named([*by, "seed"], key),
                      "initial_grad_norm": float(grads[0]),
                      "max_grad_norm": float(finite.max()) if len(finite) else np.nan,
                      "final_accuracy": np.nan if diverged or acc.empty
                      else float(acc.iloc[-1])})
    return summary.merge(pd.DataFrame(extra), on=[*by, "seed"], how="left")


def outcome_spread(per_seed: pd.DataFrame, by: list[str], value: str,
                   flags: tuple[str, ...] = ("diverged",)) -> pd.DataFrame:
    """Per group of a per-seed table: ``k/n`` for each boolean column in ``flags`` and the
    median, min and max of ``value`` over its finite entries (NaN when there are none,
    e.g. when every seed diverged)."""
    rows = []
    for key, g in per_seed.groupby(by, sort=False):
        vals = g[value].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        row = _named(by, key)
        row.update({f: f"{int(g[f].sum())}/{len(g)}" for f in flags})
        row.update({"median": float(np.median(vals)) if len(vals) else np.nan,
                    "min": float(vals.min()) if len(vals) else np.nan,
                    "max": float(vals.max()) if len(vals) else np.nan})
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- optimization

def run_outcomes(runs: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """One row per (``by``, seed) of a ``training`` or ``rnn_training`` table: how it ended.

    ``diverged`` / ``diverged_step`` (NaN/Inf; -1 if not), ``stopped`` / ``stopped_step``
    (early stopping; -1 if not), ``last_step`` (the last step logged), ``first_loss``,
    ``final_loss`` (the last logged loss: for a stopped run the restored weights'; NaN for
    a diverged run), ``first_test_loss`` / ``final_test_loss`` (the same for the test
    loss, when the table has one), ``first_grad_norm``, ``max_grad_norm`` (largest finite
    one) and ``first_update_ratio`` (the update-to-weight ratio of step 0, when logged).
    ``by`` columns with missing values (points of a sweep that did not set them) are kept.
    Rows with ``layer`` > 0 (per-layer samples) are ignored.
    """
    whole = runs[runs["layer"] == 0] if "layer" in runs else runs
    keys = [*(by or []), "seed"]

    def first(s: pd.Series) -> float:
        s = s.dropna()
        return float(s.iloc[0]) if len(s) else float("nan")

    def last(s: pd.Series) -> float:
        s = s.dropna()
        return float(s.iloc[-1]) if len(s) else float("nan")

    nan = pd.Series(dtype=float)
    rows = []
    for key, g in whole.groupby(keys, sort=False, dropna=False):
        g = g.sort_values("step", kind="stable")
        diverged_step = int(g["diverged_step"].iloc[0])
        stopped_step = int(g["stopped_step"].iloc[0]) if "stopped_step" in g else -1
        diverged = diverged_step >= 0
        grad = g["grad_norm"][np.isfinite(g["grad_norm"])]
        test = g["test_loss"] if "test_loss" in g else nan
        ratio = g["update_ratio"] if "update_ratio" in g else nan
        rows.append({
            **_named(keys, key), "diverged": diverged, "diverged_step": diverged_step,
            "stopped": stopped_step >= 0, "stopped_step": stopped_step,
            "last_step": int(g["step"].iloc[-1]), "first_loss": float(g["loss"].iloc[0]),
            "final_loss": float("nan") if diverged else float(g["loss"].iloc[-1]),
            "first_test_loss": first(test),
            "final_test_loss": float("nan") if diverged else last(test),
            "first_grad_norm": first(g["grad_norm"]),
            "max_grad_norm": float(grad.max()) if len(grad) else float("nan"),
            "first_update_ratio": first(ratio[g["step"] == 0]) if len(ratio) else float("nan"),
        })
    return pd.DataFrame(rows)


def outcome_summary(outcomes: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Per group of :func:`run_outcomes` rows: ``diverged`` ("k/n"), ``n_diverged``,
    ``n``, ``stopped`` ("k/n"), the median divergence step of the diverged seeds, and the
    median, min and max of ``value`` over the seeds that did not diverge (NaN if none)."""
    rows = []
    for key, g in outcomes.groupby(by, sort=False, dropna=False):
        ok = g.loc[~g["diverged"], value].dropna()
        steps = g.loc[g["diverged"], "diverged_step"]
        rows.append({
            **_named(by, key), "n": len(g), "n_diverged": int(g["diverged"].sum()),
            "diverged": f"{int(g['diverged'].sum())}/{len(g)}",
            "stopped": f"{int(g['stopped'].sum())}/{len(g)}",
            "median_diverged_step": float(steps.median()) if len(steps) else float("nan"),
            "median": float(ok.median()) if len(ok) else float("nan"),
            "min": float(ok.min()) if len(ok) else float("nan"),
            "max": float(ok.max()) if len(ok) else float("nan"),
        })
    return pd.DataFrame(rows)


def count_spikes(values, factor: float = 3.0, window: int = 10, start: int = 0) -> int:
    """How many entries from index ``start`` on exceed ``factor`` times the median of the
    ``window`` entries before them (a loss spike, relative to the recent level).

    Entries with fewer than ``window`` predecessors are not judged; a non-finite entry
    counts as a spike.
    """
    v = np.asarray(values, dtype=float)
    count = 0
    for t in range(max(start, window), len(v)):
        level = np.median(v[t - window:t])
        if not np.isfinite(v[t]) or v[t] > factor * level:
            count += 1
    return count


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


def constant_output_loss(config: dict) -> float:
    """Test loss of a model whose output is always zero, on the data of the ``training``
    experiment with ``config``: ln(classes) for classification (uniform prediction), half
    the mean squared target for regression.  The level of a network that learned nothing
    and whose output was shrunk to zero."""
    import torch

    from .experiments import get, make_data

    data = make_data(get("training").resolve(config))
    zeros = torch.zeros(data.x_test.shape[0], data.d_out)
    return float(data.loss(zeros, data.y_test))


def spike_warnings(runs: pd.DataFrame, by: list[str] | None = None, factor: float = 10.0,
                   window: int = 20, min_history: int = 5) -> pd.DataFrame:
    """How early a :class:`.monitor.SpikeDetector` on the gradient norm warns of divergence.

    ``runs`` is a ``training``-style table (rows ``layer == 0``: ``step``, ``grad_norm``
    per step, ``diverged_step``).  The detector sees each seed's gradient norms in step
    order, up to but not including the step that diverged (whose NaN/Inf it would flag
    trivially).  Per seed (and group in ``by``): ``diverged_step`` (-1 if none), ``n_flags``
    (steps flagged), ``first_flag`` and ``lead_first`` = diverged_step - first_flag, and
    ``episode_start``/``lead_episode`` for the final episode of flags (flags separated by
    more than ``window`` unflagged steps start a new episode, so an early transient that
    the network recovered from does not count as warning of the final blow-up), and
    ``final_streak``, the number of consecutive flagged steps right before divergence
    (the uninterrupted final climb; 0 if the step before it was not flagged).  Leads are
    NaN for a run that did not diverge or was never flagged before it did.
    """
    from .monitor import detect_spikes

    keys = [*(by or []), "seed"]
    steps = runs[runs["layer"] == 0] if "layer" in runs else runs
    rows = []
    for key, group in steps.groupby(keys, sort=False):
        group = group.sort_values("step")
        diverged = int(group["diverged_step"].iloc[0])
        before = group[group["step"] < diverged] if diverged >= 0 else group
        flagged = [int(before["step"].iloc[i])
                   for i in detect_spikes(before["grad_norm"].to_numpy(dtype=float), factor,
                                          window, min_history)]
        start = flagged[0] if flagged else None
        for prev, cur in zip(flagged, flagged[1:], strict=False):
            if cur - prev > window:
                start = cur
        hit = diverged >= 0 and bool(flagged)
        streak = 0
        while hit and diverged - 1 - streak in flagged:
            streak += 1
        rows.append({**_named(keys, key), "diverged_step": diverged, "n_flags": len(flagged),
                     "first_flag": flagged[0] if flagged else np.nan,
                     "episode_start": start if flagged else np.nan,
                     "lead_first": diverged - flagged[0] if hit else np.nan,
                     "lead_episode": diverged - start if hit else np.nan,
                     "final_streak": streak if diverged >= 0 else np.nan})
    return pd.DataFrame(rows)
