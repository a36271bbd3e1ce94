"""The remedy x cause matrix: every remedy, with one setting, on every failing configuration.

The page runs :func:`.study.remedy_matrix.run_matrix` and
:func:`.study.remedy_matrix.step_cost` (visible on it), with the settings of
:func:`settings` and :func:`common`; this module turns their tables into the page's
numbers, tables and figures.  Every cause and remedy label comes from
:data:`.study.remedy_matrix.CAUSES` and :data:`.study.remedy_matrix.REMEDIES`.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import theory
from ..engine.params import Param
from ..study import plots
from ..study import remedy_matrix as rm
from ..study.remedy_matrix import CAUSES, REMEDIES
from . import Chapter, Params
from ._shared import SEEDS, WIDTH, from_profile

CHAPTER = Chapter(
    "matrix",
    (
        SEEDS,
        from_profile("steps", "int", "optimizer steps of every run", low=1, high=10**6),
        from_profile("depth", "int", "hidden layers of the deep MLP rows", low=1, high=1000),
        WIDTH,
        Param("n_train", "int", 512, "training samples of the MLP tasks", low=2, high=10**7),
        Param("batch_size", "int", 64, "minibatch size of the MLPs", low=2, high=65536),
        Param(
            "clip_norm",
            "float",
            1.0,
            "norm clipping: largest global gradient norm",
            low=1e-12,
            high=1e12,
        ),
        Param("clip_value", "float", 0.1, "value clipping: largest |g_i|", low=1e-12, high=1e12),
        Param("agc_lambda", "float", 0.01, "adaptive clipping factor lambda", low=1e-12, high=1e12),
        Param(
            "warmup_fraction",
            "float",
            0.1,
            "linear warmup over this fraction of steps",
            low=0.0,
            high=1.0,
        ),
        Param("l2", "float", 1e-3, "L2 penalty strength lambda", low=0.0, high=1e6),
        Param(
            "stop_factor",
            "float",
            10.0,
            "early stopping: loss above this x the first loss",
            low=1.0,
            high=1e12,
        ),
        Param("adam_lr", "float", 1e-3, "learning rate of the Adam column", low=1e-8, high=100.0),
        Param(
            "stall_threshold",
            "float",
            0.9,
            "stalled: final loss above this x the best constant prediction's",
            low=0.0,
            high=10.0,
        ),
        from_profile(
            "timing_steps",
            "int",
            "steps of the longer timed run of the cost table (the shorter has a quarter)",
            low=2,
            high=10**6,
        ),
        from_profile(
            "timing_repeat", "int", "timed rounds (the median ratio is used)", low=1, high=100
        ),
    ),
    {
        "quick": dict(seeds=1, steps=4, depth=4, width=16, timing_steps=2, timing_repeat=1),
        "default": dict(seeds=3, steps=50, depth=16, width=64, timing_steps=10, timing_repeat=3),
        "full": dict(seeds=10, steps=1000, depth=30, width=128, timing_steps=100, timing_repeat=5),
    },
)


# --------------------------------------------------------------------------- the setup


def settings(P: Params) -> rm.Settings:
    """The one setting of every remedy, and the stall threshold, from the parameters."""
    return rm.Settings(clip_norm=P.clip_norm, clip_value=P.clip_value,
                       agc_lambda=P.agc_lambda, warmup_fraction=P.warmup_fraction, l2=P.l2,
                       stop_factor=P.stop_factor, adam_lr=P.adam_lr,
                       stall_threshold=P.stall_threshold)


def common(P: Params) -> dict:
    """The training settings every row shares (where its cause does not set them)."""
    return dict(steps=P.steps, depth=P.depth, width=P.width, n_train=P.n_train,
                batch_size=P.batch_size)


def cause_label(cause: str) -> str:
    return CAUSES[cause].label


def remedy_label(remedy: str) -> str:
    return REMEDIES[remedy].label


def names(causes) -> str:
    """A readable list of cause labels ("none" when empty)."""
    labels = [cause_label(c) for c in causes]
    return "; ".join(labels) if labels else "none"


#: Heavy-ball momentum of the ``momentum`` optimizer (train.make_optimizer), 0 for SGD.
MOMENTUM = {"sgd": 0.0, "momentum": 0.9}


def l2_shrink(P: Params) -> float:
    """The largest fraction of a weight the L2 penalty alone removes in a run, over the
    feed-forward rows (momentum's amplification counted at every step: an upper bound)."""
    return max(theory.penalty_shrink(cfg["lr"], P.l2, P.steps, MOMENTUM[cfg["optimizer"]])
               for c in CAUSES if not CAUSES[c].recurrent
               for cfg in [rm.cause_config(c, **common(P))])


def residual_scale(P: Params) -> float:
    """The residual branches' scale in the deep rows, 1/sqrt(depth)."""
    return 1 / math.sqrt(P.depth)


def setup_numbers(P: Params) -> dict:
    """The glued settings of the rows and columns, and the L2 penalty's predicted shrink."""
    numbers = {f"matrix_{key}": P[key] for key in [
        "seeds", "steps", "depth", "width", "n_train", "batch_size", "timing_repeat",
        "timing_steps"]}
    numbers.update({f"matrix_{key}": f"{P[key]:g}" for key in [
        "clip_norm", "clip_value", "agc_lambda", "l2", "stop_factor", "adam_lr",
        "stall_threshold"]})
    numbers.update({
        "matrix_warmup_pct": f"{100 * P.warmup_fraction:g}",
        "matrix_warmup_steps":
            rm.cell_config("inputs", "warmup", settings(P), **common(P))["warmup_steps"],
        "matrix_stall_pct": f"{100 * (1 - P.stall_threshold):g}",
        "matrix_residual_scale": f"{residual_scale(P):.2f}",
        "matrix_n_causes": len(CAUSES),
        "matrix_l2_shrink_pct": f"{100 * l2_shrink(P):.1g}",
    })
    return numbers


# --------------------------------------------------------------------------- the matrix


def fig_heatmap(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """The matrix: median final/constant loss per cell, with counts, fixed cells framed."""
    fig, ax = plt.subplots(figsize=(12.5, 5.6))
    image = rm.plot_matrix(ax, rm.summarize(runs), low=1.0, high=2.0, cmap="RdBu_r")
    bar = fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01)
    bar.set_label("median final loss / constant-prediction loss")
    bar.set_ticks([-1, -0.5, 0, 1, 2], labels=["≤0.1", "0.3", "1", "10", "≥100 or ✕"])
    fig.tight_layout()
    return fig


def fig_seeds(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Every run's final/constant loss, one column per remedy, causes side by side."""
    fig, ax = plt.subplots(figsize=(12.5, 4.8))
    rm.plot_seeds(ax, runs, plots.OKABE_ITO, plots.MARKERS)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(P.stall_threshold, color="black", linewidth=0.8, linestyle="--")
    ax.set_ylabel("final loss / constant-prediction loss")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title="cause",
              title_fontsize=9)
    fig.tight_layout()
    return fig


#: The remedies whose effect on rows with diverging runs the verdict quotes.
STEP_REMEDIES = ["clip_norm", "clip_value", "agc", "warmup", "adam", "early_stopping"]


def matrix_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the verdict: counts, lists of rows, every cell in words."""
    summary = rm.summarize(runs)
    fx = rm.fixes_per_remedy(summary).set_index("remedy")
    cells = summary.set_index(["cause", "remedy"])
    base = summary[summary.remedy == "none"].set_index("cause")
    failing = [c for c in base.index if not base.loc[c, "fixed"]]
    columns = ~summary.remedy.isin(["none", "healthy"])
    numbers = {
        "matrix_n_failing": len(failing),
        "matrix_n_remedies": len(fx),
        "matrix_n_cells": int(summary[columns].applicable.sum()),
        "matrix_n_fixed_cells": int(summary[columns & summary.applicable].fixed.sum()),
        "matrix_n_runs": int(runs.applicable.sum()),
    }
    for r in fx.index:
        applies = [c for c in CAUSES if cells.loc[(c, r), "applicable"]]
        numbers.update({
            f"matrix_fix_{r}": f"{fx.loc[r, 'fixed']} of {fx.loc[r, 'applicable']}",
            f"matrix_fixlist_{r}": names(fx.loc[r, "fixed_causes"]),
            f"matrix_faillist_{r}": names([c for c in applies
                                           if c not in fx.loc[r, "fixed_causes"]])})
    for (c, r), row in cells.iterrows():  # every cell in words, e.g. "3/3 diverged"
        numbers[f"matrix_cell_{c}_{r}"] = rm.outcome_text(row)
    best = fx["fixed"].max()
    fixed_by = {c: [r for r in fx.index if c in fx.loc[r, "fixed_causes"]] for c in CAUSES}
    healthy_ok = [c for c in CAUSES if cells.loc[(c, "healthy"), "fixed"]]
    numbers.update({
        "matrix_best": " and ".join(remedy_label(r) for r in fx.index[fx["fixed"] == best]),
        "matrix_best_n": int(best),
        "matrix_unfixed": names([c for c in CAUSES if not fixed_by[c]]),
        "matrix_n_healthy_ok": len(healthy_ok),
        "matrix_healthy_failed": names([c for c in CAUSES if c not in healthy_ok]),
    })
    # Divergence stopped, but nothing learned: rows whose baseline diverged in some seed,
    # the remedy diverged in none, and yet stalled in some.
    diverging = [c for c in CAUSES if cells.loc[(c, "none"), "diverged"] > 0]
    numbers["matrix_diverging"] = names(diverging)
    numbers["matrix_n_diverging"] = len(diverging)
    for r in STEP_REMEDIES:
        tamed = [c for c in diverging if cells.loc[(c, r), "applicable"]
                 and cells.loc[(c, r), "diverged"] == 0]
        numbers[f"matrix_tamed_{r}"] = len(tamed)
        numbers[f"matrix_tamed_stalled_{r}"] = len(
            [c for c in tamed if cells.loc[(c, r), "stalled"] > 0])
    # L2 against no remedy: same outcome counts in how many rows, largest change of median
    same = [c for c in CAUSES
            if (cells.loc[(c, "l2"), ["diverged", "stalled"]].to_numpy()
                == cells.loc[(c, "none"), ["diverged", "stalled"]].to_numpy()).all()]
    l2_vs_none = (cells.xs("l2", level="remedy").median_ratio
                  / cells.xs("none", level="remedy").median_ratio)
    l2_vs_none = l2_vs_none[np.isfinite(l2_vs_none)]
    config = rm.cause_config("lr_large", **common(P))
    large = rm.cause_config("weights_large", **common(P))
    numbers.update({
        "matrix_l2_same": len(same),
        "matrix_l2_change": f"{100 * (l2_vs_none - 1).abs().max():.0f}",
        # early stopping: runs that diverged without it, and what became of them with it
        "matrix_es_div_none": int(cells.xs("none", level="remedy").diverged.sum()),
        "matrix_es_div": int(cells.xs("early_stopping", level="remedy").diverged.sum()),
        "matrix_es_stopped": int(cells.xs("early_stopping", level="remedy").stopped.sum()),
        "matrix_es_fixed": fx.loc["early_stopping", "fixed"],
        "matrix_inputs_clip_drop":
            f"{cells.loc[('inputs', 'clip_norm'), 'median_loss_ratio']:.2g}",
        "matrix_agc_step_pct": f"{100 * config['lr'] * P.agc_lambda:.2g}",
        # the typical size of a weight of the weights-too-large row, sigma_w / sqrt(width)
        "matrix_weight_size":
            f"{large['sigma_w'] / math.sqrt(P.width):.2f}",
        "matrix_const_acc": f"{rm.constant_accuracy(large):.2f}",
    })
    return numbers


def fixes_table(runs: pd.DataFrame):
    """Per remedy: the rows it applies to, fixes, and the failing rows among them."""
    fixes = rm.fixes_per_remedy(rm.summarize(runs))
    return fixes.assign(remedy=fixes.remedy.map(remedy_label),
                        fixed_causes=fixes.fixed_causes.map(names)).rename(columns={
        "remedy": "remedy", "applicable": "rows it applies to", "fixed": "rows fixed",
        "fixed_failing": "failing rows fixed", "failing": "failing rows it applies to",
        "fixed_causes": "which"}).style.hide()


def cells_table(runs: pd.DataFrame):
    """Every applicable cell in numbers: counts, ratios over seeds, test accuracy."""
    summary = rm.summarize(runs)
    show = summary[summary.applicable].assign(cause=lambda d: d.cause.map(cause_label),
                                              remedy=lambda d: d.remedy.map(remedy_label))
    show = show.astype({"diverged": int, "stalled": int, "stopped": int})
    return show[["cause", "remedy", "diverged", "stalled", "stopped", "median_ratio",
                 "min_ratio", "max_ratio", "median_loss_ratio", "median_accuracy"]].rename(
        columns={"median_ratio": "final/constant (median)", "min_ratio": "min",
                 "max_ratio": "max", "median_loss_ratio": "final/initial (median)",
                 "median_accuracy": "test accuracy"}
    ).style.format(precision=3, na_rep="-").hide()


def describe(P: Params):
    """What each cell changes relative to its row's failing configuration."""
    return rm.describe(settings(P), **common(P)).T.style


# --------------------------------------------------------------------------- the cost

#: The remedies timed on the feed-forward network (the LSTM is timed on the RNN).
MLP_TIMED = [r for r in REMEDIES if r not in ("lstm", "healthy")]


def mlp_network(P: Params) -> str:
    return f"ReLU MLP, depth {P.depth}"


def rnn_network() -> str:
    return f"RNN, T = {CAUSES['long_rnn'].failing['seq_len']}"


def hyperparameters(P: Params) -> dict[str, str]:
    """The hyperparameter each remedy adds, with its value here."""
    return {
        "none": "-", "clip_norm": f"threshold c = {P.clip_norm:g}",
        "clip_value": f"cap = {P.clip_value:g}", "agc": f"λ = {P.agc_lambda:g}",
        "init": "none (here the same network as no remedy)",
        "batch_norm": "none (γ, β are learned)", "layer_norm": "none (γ, β are learned)",
        "residual": f"branch scale (1/√depth = {residual_scale(P):.2f})",
        "adam": f"lr = {P.adam_lr:g}, β₁, β₂, ε",
        "warmup": f"warmup length ({100 * P.warmup_fraction:g}% of steps)",
        "l2": f"λ = {P.l2:g}",
        "early_stopping": f"stop factor {P.stop_factor:g}, how often to evaluate",
        "lstm": "none (4 gates instead of 1)"}


def cost_table(mlp_cost: pd.DataFrame, rnn_cost: pd.DataFrame, P: Params):
    """Time per step of each remedy over no remedy, with its range and hyperparameter."""
    cost = pd.concat([mlp_cost.assign(network=mlp_network(P)),
                      rnn_cost[rnn_cost.remedy == "lstm"].assign(network=rnn_network())])
    cost = cost.assign(hyperparameters=cost.remedy.map(hyperparameters(P)),
                       remedy=cost.remedy.map(remedy_label))
    return cost[["remedy", "network", "ratio", "ratio_min", "ratio_max",
                 "hyperparameters"]].rename(
        columns={"ratio": "time per step / no remedy", "ratio_min": "min",
                 "ratio_max": "max"}).style.format(precision=2).hide()


def cost_numbers(mlp_cost: pd.DataFrame, rnn_cost: pd.DataFrame) -> dict:
    """The most expensive feed-forward remedy and the LSTM's ratio."""
    return {"matrix_cost_max": f"{mlp_cost.ratio.max():.2f}",
            "matrix_cost_max_name": remedy_label(mlp_cost.remedy[mlp_cost.ratio.idxmax()]),
            "matrix_cost_lstm": f"{rnn_cost.ratio.iloc[-1]:.1f}"}
