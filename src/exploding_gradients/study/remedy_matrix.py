"""The remedy x cause matrix: every remedy tried on every cause's failing configuration.

Rows (:data:`CAUSES`) are the failing configurations of the cause chapters; columns
(:data:`REMEDIES`) are remedies, each applied with **one** fixed setting
(:class:`Settings`), never tuned per cell.  A remedy that makes no sense for a cause
(an LSTM for a feed-forward network, He initialization for a network that already has
it) is recorded as not applicable, with the reason.

Outcome of one run, the same definitions for every cell:

* **diverged**: its loss or gradient became NaN/Inf (``diverged_step >= 0``).  A run
  ended by early stopping is *stopped*, not diverged; its restored weights are scored.
* **final loss**: on data the run did not train on: the 1024-sample test set for the
  MLPs, and for the recurrent network the mean loss of the fresh batches of its last 10%
  of steps (each batch is new, and its loss is computed before the update on it).
* **trivial loss**: the loss of the best constant prediction, which needs no learning:
  the entropy of the test labels (classification), half their variance (regression,
  whose loss is 0.5 MSE), 1/6 for the adding problem (always predict 1).
* **stalled**: did not diverge, but its final loss is above ``stall_threshold`` (0.9)
  times the trivial loss: it learned less than 10% of what separates a constant guess
  from a perfect fit, whether it sat still or drifted upwards without reaching NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data import ADDING_BASELINE_MSE
from ..engine.params import ConfigError
from ..engine.registry import get
from ..engine.runner import check_seeds
from ..engine.runner import run as run_experiment
from ..experiments.feedforward import make_data
from .outcomes import run_outcomes
from .timing import time_ratios


@dataclass(frozen=True)
class Cause:
    """A failing configuration (a row) and the change that removes the cause."""

    name: str
    label: str
    chapter: str  # notebook (without .ipynb) that explains the cause
    experiment: str  # "training" or "rnn_training"
    failing: dict  # overrides on top of the common settings
    healthy: dict  # overrides on top of ``failing`` that remove the cause

    @property
    def recurrent(self) -> bool:
        return self.experiment == "rnn_training"


#: The failing configurations of notebooks/causes.ipynb (depth and width come from
#: :func:`cause_config`'s arguments where the cause needs a deep network).
CAUSES: dict[str, Cause] = {c.name: c for c in (
    Cause("weights_large", "weights too large (ReLU, σ_w = 2)", "initialization", "training",
          dict(activation="relu", init="normal", sigma_w=2.0), dict(init="he")),
    Cause("weights_small", "weights too small (ReLU, Xavier)", "initialization", "training",
          dict(activation="relu", init="xavier"), dict(init="he")),
    Cause("tanh_chaotic", "tanh, chaotic phase (σ_w = 2.5)", "activation", "training",
          dict(activation="tanh", init="normal", sigma_w=2.5), dict(sigma_w=1.0)),
    Cause("batch_norm", "batch norm without skips", "normalization", "training",
          dict(activation="relu", init="he", normalization="batch"),
          dict(normalization="none")),
    Cause("lr_large", "learning rate too large (0.1)", "learning_rate", "training",
          dict(activation="relu", init="he", depth=4, optimizer="sgd", task="regression",
               lr=0.1), dict(lr=0.01)),
    Cause("inputs", "unnormalized inputs (scales 1-100)", "normalization", "training",
          dict(activation="relu", init="he", depth=3, optimizer="sgd", lr=0.1,
               input_scale_spread=100.0), dict(input_scale_spread=1.0)),
    Cause("long_rnn", "long sequences (tanh RNN, ρ = 3, T = 40)", "recurrence",
          "rnn_training", dict(cell="rnn", spectral_radius=3.0, hidden_size=32, seq_len=40,
                               optimizer="adam", lr=0.01), dict(seq_len=5)),
)}


@dataclass(frozen=True)
class Settings:
    """The one setting of every remedy (the same in every cell) and the stall threshold."""

    clip_norm: float = 1.0  # largest global gradient norm
    clip_value: float = 0.1  # largest |g| of any single gradient entry
    agc_lambda: float = 0.01  # AGC clip factor (Brock et al. 2021)
    warmup_fraction: float = 0.1  # linear warmup over this fraction of the steps
    l2: float = 1e-3  # L2 penalty lambda/2 * sum w^2 added to the loss
    stop_factor: float = 10.0  # early stopping: loss above this x the first loss
    adam_lr: float = 1e-3  # Adam's own default learning rate (Kingma & Ba 2015)
    stall_threshold: float = 0.9  # stalled: final loss > this x the trivial loss


@dataclass(frozen=True)
class Remedy:
    """A column: what it changes, per cause; ``not_for`` maps causes to why it does not apply.

    ``changes(cause, settings, config)`` returns the overrides for one cause, given the
    cause's failing ``config`` (some remedies scale with its depth or steps).
    """

    name: str
    label: str
    chapter: str | None  # notebook (without .ipynb) that studies the remedy
    changes: object  # callable (Cause, Settings, config) -> dict
    not_for: dict = field(default_factory=dict)
    reference: bool = False  # the "cause removed" column: a yardstick, not a remedy


_NO_RNN = "no such layer in the recurrent network"
_FEEDFORWARD = "no recurrence in a feed-forward network"
_ALREADY_HE = "already He-initialized"

_INIT = {"weights_large": dict(init="he"), "weights_small": dict(init="he"),
         "tanh_chaotic": dict(init="xavier"), "long_rnn": dict(spectral_radius=1.0)}

REMEDIES: dict[str, Remedy] = {r.name: r for r in (
    Remedy("none", "none", None, lambda c, s, k: {}),
    Remedy("clip_norm", "clip by norm", "clipping",
           lambda c, s, k: dict(clip="norm", clip_threshold=s.clip_norm)),
    Remedy("clip_value", "clip by value", "clipping",
           lambda c, s, k: dict(clip="value", clip_threshold=s.clip_value)),
    Remedy("agc", "adaptive clipping (AGC)", "clipping",
           lambda c, s, k: dict(clip="agc", clip_threshold=s.agc_lambda)),
    Remedy("init", "standard init (He / Glorot / ρ = 1)", "architecture",
           lambda c, s, k: _INIT[c.name],
           not_for={"batch_norm": _ALREADY_HE + " (batch norm divides the scale out)",
                    "lr_large": _ALREADY_HE, "inputs": _ALREADY_HE}),
    Remedy("batch_norm", "batch norm", "architecture",
           lambda c, s, k: dict(normalization="batch"),
           not_for={"batch_norm": "batch norm is the cause", "long_rnn": _NO_RNN}),
    Remedy("layer_norm", "layer norm", "architecture",
           lambda c, s, k: dict(normalization="layer"), not_for={"long_rnn": _NO_RNN}),
    Remedy("residual", "residual (branch × 1/√depth)", "architecture",
           lambda c, s, k: dict(residual=True, residual_scale=1 / math.sqrt(k["depth"])),
           not_for={"long_rnn": _NO_RNN}),
    Remedy("adam", "Adam (lr 1e-3)", "optimization",
           lambda c, s, k: dict(optimizer="adam", lr=s.adam_lr),
           not_for={"long_rnn": "the recurrent baseline already uses Adam"}),
    Remedy("warmup", "linear warmup", "optimization",
           lambda c, s, k: dict(warmup_steps=max(1, math.ceil(s.warmup_fraction * k["steps"])))),
    Remedy("l2", "L2 penalty", "optimization",
           lambda c, s, k: dict(penalty="l2", penalty_strength=s.l2)),
    Remedy("early_stopping", "early stopping", "optimization",
           lambda c, s, k: dict(stop_factor=s.stop_factor)),
    Remedy("lstm", "LSTM cell", "architecture", lambda c, s, k: dict(cell="lstm"),
           not_for={c: _FEEDFORWARD for c in ("weights_large", "weights_small",
                                              "tanh_chaotic", "batch_norm", "lr_large",
                                              "inputs")}),
    Remedy("healthy", "cause removed (reference)", "causes",
           lambda c, s, k: c.healthy, reference=True),
)}


def cause_config(cause: str, *, steps: int, depth: int = 30, width: int = 64,
                 n_train: int = 512, batch_size: int = 64) -> dict:
    """The failing configuration of ``cause`` with the common training settings.

    MLPs: SGD with momentum 0.9 at lr 0.01, ReLU, width ``width``, ``depth`` hidden layers,
    unless the cause says otherwise.  Test loss (and the per-layer statistics) are sampled
    every ``steps // 4`` steps and at the last step: the samples early stopping chooses
    from.  (Sampling is a large part of a short run's cost, hence so few.)
    """
    c = CAUSES[cause]
    log_every = max(1, steps // 4)
    if c.recurrent:
        return dict(c.failing, steps=steps, log_every=log_every)
    base = dict(depth=depth, width=width, optimizer="momentum", lr=0.01, n_train=n_train,
                batch_size=batch_size, steps=steps, log_every=log_every)
    return {**base, **c.failing}


def cell_config(cause: str, remedy: str, settings: Settings | None = None, **common
                ) -> dict | str:
    """The configuration of one cell, or the reason the remedy does not apply (a str).

    ``common`` goes to :func:`cause_config` (``steps``, ``depth``, ...).
    """
    settings = settings or Settings()
    c, r = CAUSES[cause], REMEDIES[remedy]
    if cause in r.not_for:
        return r.not_for[cause]
    config = cause_config(cause, **common)
    return {**config, **r.changes(c, settings, config)}


def trivial_loss(experiment: str, config: dict) -> float:
    """Loss of the best constant prediction on the data the final loss is measured on."""
    if experiment == "rnn_training":
        return ADDING_BASELINE_MSE
    data = make_data(get("training").resolve(config))
    y = data.y_test
    if data.task == "classification":
        p = np.bincount(y.numpy(), minlength=data.d_out) / len(y)
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())
    return float(0.5 * y.double().var(unbiased=False).item())


def constant_accuracy(config: dict) -> float:
    """Test accuracy of always predicting the most frequent class (classification)."""
    data = make_data(get("training").resolve(config))
    if data.task != "classification":
        return math.nan
    return float(np.bincount(data.y_test.numpy()).max() / len(data.y_test))


def outcome(runs: pd.DataFrame, experiment: str, trivial: float,
            stall_threshold: float = Settings.stall_threshold) -> pd.DataFrame:
    """Per seed of one cell: diverged, stopped, stalled, and the losses they rest on.

    Columns: seed, diverged, stopped, stalled, initial_loss, final_loss, trivial_loss,
    loss_ratio (final / initial), baseline_ratio (final / trivial; inf when diverged),
    test_accuracy (NaN unless classification), diverged_step, stopped_step.
    """
    recurrent = experiment == "rnn_training"
    per_run = run_outcomes(runs, tail=0.1 if recurrent else None).sort_values("seed")
    if recurrent:  # the loss of fresh batches; no test set, no accuracy
        initial, final = per_run["first_loss"], per_run["final_loss"]
        accuracy = pd.Series(math.nan, index=per_run.index)
    else:
        initial, final = per_run["first_test_loss"], per_run["final_test_loss"]
        accuracy = per_run["final_accuracy"]
    diverged = per_run["diverged"]
    ratio = (final / trivial).where(~diverged, math.inf)
    return pd.DataFrame({
        "seed": per_run["seed"], "diverged": diverged, "stopped": per_run["stopped"],
        "stalled": ~diverged & ~(ratio <= stall_threshold),  # NaN counts as stalled
        "initial_loss": initial, "final_loss": final, "trivial_loss": trivial,
        "loss_ratio": (final / initial).where(~diverged, math.inf), "baseline_ratio": ratio,
        "test_accuracy": accuracy, "diverged_step": per_run["diverged_step"],
        "stopped_step": per_run["stopped_step"]}).reset_index(drop=True)


def run_matrix(seeds: int, steps: int, *, depth: int = 30, width: int = 64,
               n_train: int = 512, batch_size: int = 64, settings: Settings | None = None,
               causes: Iterable[str] | None = None, remedies: Iterable[str] | None = None
               ) -> pd.DataFrame:
    """Train every applicable (cause, remedy) cell for seeds ``0 .. seeds-1``.

    One row per cause x remedy x seed, in the order of :data:`CAUSES` and
    :data:`REMEDIES`: ``applicable`` and, when not, ``note`` (why); otherwise the
    columns of :func:`outcome`.  Runs go through :func:`.experiments.run`, so they are
    cached; identical cells (He init as a remedy and as the cause removed) run once.
    """
    settings = settings or Settings()
    check_seeds(seeds)
    causes = list(CAUSES) if causes is None else list(causes)
    remedies = list(REMEDIES) if remedies is None else list(remedies)
    for name, known in [(causes, CAUSES), (remedies, REMEDIES)]:
        unknown = [n for n in name if n not in known]
        if unknown:
            raise ConfigError(f"unknown names {unknown}; known: {', '.join(known)}")
    common = dict(steps=steps, depth=depth, width=width, n_train=n_train,
                  batch_size=batch_size)
    tables = []
    for cause in causes:
        experiment = CAUSES[cause].experiment
        for remedy in remedies:
            config = cell_config(cause, remedy, settings, **common)
            label = {"cause": cause, "remedy": remedy}
            if isinstance(config, str):
                tables.append(pd.DataFrame({**label, "seed": range(seeds),
                                            "applicable": False, "note": config}))
                continue
            runs = run_experiment(experiment, config, seeds=seeds)
            cell = outcome(runs, experiment, trivial_loss(experiment, config),
                           settings.stall_threshold)
            tables.append(cell.assign(**label, applicable=True, note=""))
    out = pd.concat(tables, ignore_index=True)
    front = ["cause", "remedy", "seed", "applicable", "note"]
    return out[front + [c for c in out.columns if c not in front]]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per (cause, remedy) cell: counts and fractions of diverged/stalled/stopped runs,
    the median and range over seeds of final/trivial loss (diverged runs count as +inf)
    and of final/initial loss, and ``fixed``: applicable, no run diverged, none stalled."""
    rows = []
    for (cause, remedy), cell in df.groupby(["cause", "remedy"], sort=False):
        row = {"cause": cause, "remedy": remedy, "applicable": bool(cell["applicable"].all()),
               "note": cell["note"].iloc[0], "seeds": len(cell)}
        if row["applicable"]:
            ratio = cell["baseline_ratio"].to_numpy(dtype=float)
            n = len(cell)
            row.update({
                "diverged": int(cell["diverged"].sum()), "stalled": int(cell["stalled"].sum()),
                "stopped": int(cell["stopped"].sum()),
                "frac_diverged": cell["diverged"].mean(), "frac_stalled": cell["stalled"].mean(),
                "median_ratio": float(np.median(ratio)), "min_ratio": float(ratio.min()),
                "max_ratio": float(ratio.max()),
                "median_loss_ratio": float(np.median(cell["loss_ratio"].to_numpy(float))),
                "median_accuracy": float(cell["test_accuracy"].median()),
            })
            row["fixed"] = row["diverged"] == 0 and row["stalled"] == 0 and n > 0
        else:
            row["fixed"] = False
        rows.append(row)
    return pd.DataFrame(rows)


def outcome_text(row: pd.Series) -> str:
    """One summarized cell in words, e.g. "fixed (median 0.72)", "3/3 diverged",
    "2/3 stalled, median 0.95", "not applicable"."""
    if not row["applicable"]:
        return "not applicable"
    n = int(row["seeds"])
    median = row["median_ratio"]
    where = "" if math.isinf(median) else f"median {median:.2g}"
    if row["fixed"]:
        return f"fixed ({where})"
    parts = []
    if row["diverged"]:
        parts.append(f"{int(row['diverged'])}/{n} diverged")
    if row["stalled"]:
        parts.append(f"{int(row['stalled'])}/{n} stalled")
    return ", ".join(parts + ([where] if where else []))


def fixes_per_remedy(summary: pd.DataFrame) -> pd.DataFrame:
    """Per remedy (reference column excluded): causes it applies to, causes it fixes, and
    causes whose baseline already passes (so a "fix" there proves nothing).

    Columns: remedy, applicable, fixed, fixed_failing (fixed among the causes whose
    no-remedy baseline failed), failing (how many baselines failed), fixed_causes (list).
    """
    base = summary[summary["remedy"] == "none"].set_index("cause")
    failing = {c for c in base.index if not base.loc[c, "fixed"]}
    rows = []
    for remedy, group in summary.groupby("remedy", sort=False):
        if REMEDIES[remedy].reference or remedy == "none":
            continue
        applicable = group[group["applicable"]]
        fixed = applicable[applicable["fixed"]]
        rows.append({"remedy": remedy, "applicable": len(applicable), "fixed": len(fixed),
                     "fixed_failing": int(fixed["cause"].isin(failing).sum()),
                     "failing": int(applicable["cause"].isin(failing).sum()),
                     "fixed_causes": list(fixed["cause"])})
    return pd.DataFrame(rows)


def step_cost(cause: str, remedies: Iterable[str], steps: int, repeat: int = 3,
              settings: Settings | None = None, base: dict | None = None,
              **common) -> pd.DataFrame:
    """CPU time per step of each applicable remedy on ``cause``'s network, vs no remedy.

    ``base`` overrides the cause's configuration first (e.g. ``CAUSES[c].healthy``, so
    that the timed runs do not diverge and stop early); the remedy's changes go on top,
    measurements sampled only at the first and last step.  Timed by the book's one
    timer, :func:`.timing.time_ratios` (time per step as the slope between runs of a
    quarter and all of ``steps``, ``repeat`` rounds).  Columns: remedy,
    seconds_per_step (median), ratio, ratio_min, ratio_max (over rounds).
    """
    settings = settings or Settings()
    name = CAUSES[cause].experiment
    configs = {}
    for remedy in ["none", *[r for r in remedies if r != "none"]]:
        config = cell_config(cause, remedy, settings, steps=steps, **common)
        if isinstance(config, str):
            continue
        changes = REMEDIES[remedy].changes(CAUSES[cause], settings, config)
        configs[remedy] = {**config, **(base or {}), **changes, "log_every": steps}
    none = configs.pop("none")
    rounds = time_ratios(name, none, configs, steps=(max(1, steps // 4), steps),
                         rounds=repeat)
    base = rounds["step_seconds"] / rounds["ratio"]  # each round's time per step of "none"
    rows = [{"remedy": "none", "seconds_per_step": float(base.median()), "ratio": 1.0,
             "ratio_min": 1.0, "ratio_max": 1.0}]
    for remedy, g in rounds.groupby("variant", sort=False):
        rows.append({"remedy": remedy, "seconds_per_step": float(g["step_seconds"].median()),
                     "ratio": float(g["ratio"].median()), "ratio_min": float(g["ratio"].min()),
                     "ratio_max": float(g["ratio"].max())})
    return pd.DataFrame(rows)


def describe(settings: Settings | None = None, **common) -> pd.DataFrame:
    """What each cell changes, as text: one row per cause, one column per remedy."""
    settings = settings or Settings()
    common = {"steps": 100, **common}
    rows = {}
    for cause in CAUSES:
        base = cause_config(cause, **common)
        rows[CAUSES[cause].label] = {}
        for name, remedy in REMEDIES.items():
            config = cell_config(cause, name, settings, **common)
            if isinstance(config, str):
                text = f"n/a: {config}"
            else:
                diff = {k: v for k, v in config.items() if base.get(k) != v}
                text = ", ".join(f"{k}={_fmt(v)}" for k, v in diff.items()) or "-"
            rows[CAUSES[cause].label][remedy.label] = text
    return pd.DataFrame(rows).T


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- the figure

def cell_text(row: pd.Series) -> str:
    """What a heatmap cell says: median final/trivial loss (✓ when the cell is fixed),
    then how many runs diverged (✕) and stalled."""
    if not row["applicable"]:
        return "n/a"
    n = int(row["seeds"])
    median = row["median_ratio"]
    lines = ["✕" if math.isinf(median) else f"{median:.2g}" + (" ✓" if row["fixed"] else "")]
    if row["diverged"]:
        lines.append(f"{int(row['diverged'])}/{n} ✕")
    if row["stalled"]:
        lines.append(f"{int(row['stalled'])}/{n} stall")
    return "\n".join(lines)


def plot_matrix(ax, summary: pd.DataFrame, low: float = 1.0, high: float = 2.0,
                cmap: str = "RdBu_r"):
    """Heatmap of the median final/trivial loss (log10, centred at 1) with counts as text.

    The colour saturates at 10^-``low`` (blue) and 10^``high`` (red); diverged medians
    take the top colour; fixed cells get a black frame and a ✓; not-applicable cells are
    hatched grey; the reference column ("cause removed") is set apart by a gap.  Returns
    the colour mapping (for a colour bar).
    """
    import matplotlib as mpl

    causes = list(dict.fromkeys(summary["cause"]))
    remedies = list(dict.fromkeys(summary["remedy"]))
    cells = summary.set_index(["cause", "remedy"])
    x_of = {r: i + (0.35 if REMEDIES[r].reference else 0.0) for i, r in enumerate(remedies)}
    norm = mpl.colors.TwoSlopeNorm(vmin=-low, vcenter=0.0, vmax=high)
    colormap = mpl.colormaps[cmap]
    for i, cause in enumerate(causes):
        for remedy in remedies:
            row = cells.loc[(cause, remedy)]
            x, y = x_of[remedy], i
            if not row["applicable"]:
                ax.add_patch(mpl.patches.Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor="0.9",
                                                   edgecolor="0.6", hatch="///", linewidth=0))
                ax.text(x, y, "n/a", ha="center", va="center", fontsize=7, color="0.35")
                continue
            ratio = row["median_ratio"]
            value = np.clip(np.log10(ratio), -low, high) if ratio > 0 else -low
            color = colormap(norm(value))
            ax.add_patch(mpl.patches.Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=color,
                                               edgecolor="white", linewidth=1))
            if row["fixed"]:
                ax.add_patch(mpl.patches.Rectangle((x - 0.44, y - 0.44), 0.88, 0.88,
                                                   facecolor="none", edgecolor="black",
                                                   linewidth=1.6, zorder=2))
            dark = sum(color[:3]) / 3 < 0.5
            ax.text(x, y, cell_text(row), ha="center", va="center", fontsize=7,
                    color="white" if dark else "black", linespacing=1.1, zorder=3)
    ax.set_xlim(-0.5, max(x_of.values()) + 0.5)
    ax.set_ylim(len(causes) - 0.5, -0.5)
    ax.set_xticks([x_of[r] for r in remedies], [REMEDIES[r].label for r in remedies],
                  rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(causes)), [CAUSES[c].label for c in causes])
    ax.tick_params(length=0)
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)
    return mpl.cm.ScalarMappable(norm=norm, cmap=colormap)


def plot_seeds(ax, df: pd.DataFrame, colors: list[str], markers: list[str],
               top: float = 100.0, bottom: float = 0.1) -> None:
    """Every run's final/trivial loss: one column per remedy, causes side by side.

    Diverged runs are drawn as crosses on a band above ``top``; values are clipped to
    [``bottom``, ``top``] (a clipped point is drawn hollow).  Log scale, a line at 1 (the
    best constant prediction) and one at the stall threshold are added by the caller.
    """
    causes = list(dict.fromkeys(df["cause"]))
    remedies = list(dict.fromkeys(df["remedy"]))
    width = 0.8 / len(causes)
    diverged_y = top * 2.5
    for i, cause in enumerate(causes):
        sub = df[(df["cause"] == cause) & df["applicable"].astype(bool)]
        x = np.array([remedies.index(r) for r in sub["remedy"]], dtype=float)
        x += (i - (len(causes) - 1) / 2) * width
        seeds = sub["seed"].to_numpy(dtype=float)
        x += (seeds - seeds.mean()) / max(1.0, np.ptp(seeds)) * width * 0.5  # seeds apart
        y = sub["baseline_ratio"].to_numpy(dtype=float)
        div = sub["diverged"].astype(bool).to_numpy()
        clipped = ~div & ((y > top) | (y < bottom))
        ok = ~div & ~clipped
        ax.scatter(x[ok], y[ok], color=colors[i], marker=markers[i], s=18, zorder=3,
                   label=CAUSES[cause].label)
        ax.scatter(x[clipped], np.clip(y[clipped], bottom, top), facecolor="none",
                   edgecolor=colors[i], marker=markers[i], s=18, zorder=3)
        ax.scatter(x[div], np.full(div.sum(), diverged_y), color=colors[i], marker="x",
                   s=22, zorder=3)
    ax.set_yscale("log")
    ax.set_ylim(bottom / 1.5, diverged_y * 2)
    ax.axhspan(top * 1.4, diverged_y * 2, color="0.93", zorder=0)
    ax.text(len(remedies) - 0.45, diverged_y, "diverged", ha="right", va="center", fontsize=8,
            color="0.3")
    ax.set_xlim(-0.6, len(remedies) - 0.4)
    ax.set_xticks(range(len(remedies)), [REMEDIES[r].label for r in remedies], rotation=40,
                  ha="right", rotation_mode="anchor")
    for k in range(len(remedies) - 1):
        ax.axvline(k + 0.5, color="0.85", linewidth=0.6, zorder=0)
    ax.grid(axis="x", visible=False)
