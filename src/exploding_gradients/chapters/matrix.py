"""The remedy x cause matrix: every remedy, with one setting, on every failing configuration
whose gradient explodes, and the outcome against the step budget.

The page runs :func:`.study.remedy_matrix.run_matrix` (rows :data:`ROWS`, columns
:data:`COLUMNS`), the gradient at initialization of every row, a small generalization
test and :func:`.study.remedy_matrix.step_cost` (all visible on it), with the settings of
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
from ..study import plots, readable
from ..study import remedy_matrix as rm
from ..study.outcomes import run_outcomes
from ..study.remedy_matrix import CAUSES, REMEDIES
from . import Chapter, Params
from ._shared import SEEDS, WIDTH, from_profile

CHAPTER = Chapter(
    "matrix",
    (
        SEEDS,
        from_profile("steps", "int", "optimizer steps of every run (a multiple of 4: the "
                     "outcome is also read at each quarter)", low=4, high=10**6),
        from_profile("depth", "int", "hidden layers of the deep MLP rows", low=1, high=1000),
        WIDTH,
        Param("n_train", "int", 2048, "training samples of the MLP tasks", low=2, high=10**7),
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
        Param("l2", "float", 1e-3, "L2 penalty strength lambda (left out of the matrix; its "
              "time scale is quoted)", low=0.0, high=1e6),
        Param(
            "stop_factor",
            "float",
            10.0,
            "early stopping: loss above this x the first loss",
            low=1.0,
            high=1e12,
        ),
        Param("adam_lr", "float", 1e-3, "learning rate of the Adam column", low=1e-8, high=100.0),
        Param("dropout", "float", 0.1, "drop probability of the dropout column", low=0.0,
              high=0.99),
        Param(
            "stall_threshold",
            "float",
            0.9,
            "stalled: final loss above this x the best constant prediction's",
            low=0.0,
            high=10.0,
        ),
        Param("blowup_factor", "float", 10.0, "blew up: final loss above this x the initial "
              "loss (or NaN/Inf)", low=1.0, high=1e12),
        from_profile("modern_seeds", "int", "seeds per cell of the second matrix (the modern "
                     "failure modes)", low=1, high=1000),
        Param("percentile", "float", 90.0, "percentile clipping (AutoClip): the percentile of "
              "past gradient norms", low=1.0, high=100.0),
        Param("zclip_z", "float", 2.5, "ZClip's z-score threshold", low=0.1, high=100.0),
        Param("adagc_lambda", "float", 1.05, "AdaGC's lambda_rel", low=1.0, high=100.0),
        Param("skip_sigma", "float", 6.0, "z-score skipping: skip a step whose loss or "
              "gradient norm is this many standard deviations out", low=0.1, high=100.0),
        Param("gen_n_train", "int", 64, "training samples of the generalization test",
              low=2, high=10**7),
        from_profile("gen_steps", "int", "optimizer steps of the generalization test",
                     low=1, high=10**6),
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
        "quick": dict(seeds=1, steps=8, depth=4, width=16, gen_steps=8, timing_steps=2,
                      timing_repeat=1, modern_seeds=1),
        "default": dict(seeds=3, steps=120, depth=16, width=64, gen_steps=200, timing_steps=10,
                        timing_repeat=3, modern_seeds=2),
        "full": dict(seeds=10, steps=1000, depth=30, width=128, gen_steps=2000,
                     timing_steps=100, timing_repeat=5, modern_seeds=10),
    },
)

#: Rows of the page: the causes whose gradient explodes, at initialization or in training.
#: The two left out, and why (the page says so).
LEFT_OUT = {
    "weights_small": "its gradient vanishes instead (the initialization chapter)",
    "long_rnn": "its gradient explodes through time, but what fails in a short run is the "
                "40-step dependency: the LSTM and a recurrent matrix of spectral radius 1 "
                "failed it too in 50 steps (the recurrence chapter trains for longer)",
}
ROWS = [c for c in rm.CLASSIC if c not in LEFT_OUT]
#: Columns of the page: the L2 penalty and the LSTM cell are left out (see the page).
COLUMNS = [r for r in rm.CLASSIC_REMEDIES if r not in ("l2", "lstm")]
#: The second matrix: the failure modes of the later chapters (low precision, spikes,
#: convnets, transformers), with the columns that apply to at least one of them.
MODERN_ROWS = list(rm.MODERN)
MODERN_COLUMNS = [r for r in REMEDIES if r in ("none", "healthy") or any(
    c not in REMEDIES[r].not_for for c in MODERN_ROWS)]
#: Explodes at initialization: the gradient grows at least tenfold across the network.
AT_INIT_DECADES = 1.0


# --------------------------------------------------------------------------- the setup


def settings(P: Params) -> rm.Settings:
    """The one setting of every remedy, and the outcome thresholds, from the parameters."""
    return rm.Settings(clip_norm=P.clip_norm, clip_value=P.clip_value,
                       agc_lambda=P.agc_lambda, warmup_fraction=P.warmup_fraction, l2=P.l2,
                       stop_factor=P.stop_factor, adam_lr=P.adam_lr,
                       stall_threshold=P.stall_threshold, dropout=P.dropout,
                       blowup_factor=P.blowup_factor, percentile=P.percentile,
                       zclip_z=P.zclip_z, adagc_lambda=P.adagc_lambda,
                       skip_sigma=P.skip_sigma)


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


def tex(label: str) -> str:
    """A label for a figure: σ_w as mathtext, so that no literal underscore shows."""
    return label.replace("σ_w", r"$\sigma_w$")


#: Short column heads of the figures.
SHORT = {"weights_large": "weights\ntoo large\n(σ_w = 2)",
         "tanh_chaotic": "tanh,\nchaotic\n(σ_w = 2.5)", "batch_norm": "batch norm\nwithout\nskips",
         "lr_large": "learning\nrate too\nlarge",
         "inputs": "unnormalized\ninputs", "weights_small": "weights\ntoo small",
         "long_rnn": "long\nsequences", "fp16_overflow": "float16\noverflow",
         "fp16_underflow": "float16\nunderflow", "outliers": "outlier\nbatches",
         "cnn_weights_large": "convnet,\nweights\ntoo large",
         "post_ln": "post-LN\ntrans-\nformer"}


def short(cause: str) -> str:
    return tex(SHORT.get(cause, cause_label(cause)))


#: Heavy-ball momentum of the ``momentum`` optimizer (train.make_optimizer), 0 for SGD.
MOMENTUM = {"sgd": 0.0, "momentum": 0.9}


def l2_shrink(P: Params) -> float:
    """The largest fraction of a weight the L2 penalty alone removes in a run, over the
    feed-forward rows (momentum's amplification counted at every step: an upper bound)."""
    return max(theory.penalty_shrink(cfg["lr"], P.l2, P.steps, MOMENTUM[cfg["optimizer"]])
               for c in rm.CLASSIC if not CAUSES[c].recurrent
               for cfg in [rm.cause_config(c, **common(P))])


def residual_scale(P: Params) -> float:
    """The residual branches' scale in the deep rows, 1/sqrt(depth)."""
    return 1 / math.sqrt(P.depth)


def checkpoints(P: Params) -> list[int]:
    """The steps at which every run's outcome is read: each quarter of the run."""
    return [round(q * P.steps) for q in (*rm.CHECKPOINTS, 1)]


def setup_numbers(P: Params) -> dict:
    """The glued settings of the rows and columns, and the closed-form predictions of the
    two columns left out or added (L2's shrink, dropout's extra growth)."""
    numbers = {f"matrix_{key}": P[key] for key in [
        "seeds", "steps", "depth", "width", "n_train", "batch_size", "timing_repeat",
        "timing_steps", "gen_n_train", "gen_steps"]}
    numbers.update({f"matrix_{key}": f"{P[key]:g}" for key in [
        "clip_norm", "clip_value", "agc_lambda", "l2", "stop_factor", "adam_lr",
        "stall_threshold", "dropout", "blowup_factor", "percentile", "zclip_z",
        "adagc_lambda", "skip_sigma"]})
    deep_lr = rm.cause_config("weights_large", **common(P))["lr"]
    growth = theory.dropout_chi_factor(P.dropout) ** (P.depth / 2)
    numbers.update({
        "matrix_warmup_pct": f"{100 * P.warmup_fraction:g}",
        "matrix_warmup_steps":
            rm.cell_config("inputs", "warmup", settings(P), **common(P))["warmup_steps"],
        "matrix_stall_pct": f"{100 * (1 - P.stall_threshold):g}",
        "matrix_residual_scale": f"{residual_scale(P):.2f}",
        "matrix_n_rows": len(ROWS),
        "matrix_l2_shrink_pct": readable.number(100 * l2_shrink(P), 2),
        "matrix_l2_tau": readable.number(1 / (deep_lr * P.l2), 2),
        "matrix_checkpoints": ", ".join(str(c) for c in checkpoints(P)),
        "matrix_dropout_factor": f"{theory.dropout_chi_factor(P.dropout):.3f}",
        "matrix_dropout_growth": readable.number(growth, 2),
        "matrix_left_out": "; ".join(f"{cause_label(c)}: {why}" for c, why in LEFT_OUT.items()),
    })
    return numbers


# --------------------------------------------------------------------------- at initialization


def amplification(at_init: dict, P: Params) -> pd.Series:
    """Per row: log10 of the gradient at the input end over the loss end, at initialization
    (median over seeds; ``at_init`` maps a row to its measurement)."""
    return pd.Series({c: rm.log10_amplification(t, rm.cause_config(c, **common(P)))
                      for c, t in at_init.items()})


def init_numbers(at_init: dict, P: Params) -> dict:
    """Which rows explode at initialization (tenfold or more across the network) and
    which only in training."""
    amp = amplification(at_init, P)
    explode = [c for c in amp.index if amp[c] >= AT_INIT_DECADES]
    numbers = {"matrix_rows_at_init": names(explode),
               "matrix_rows_in_training": names([c for c in amp.index if c not in explode])}
    for c in amp.index:
        numbers[f"matrix_amp_{c}"] = readable.number(10.0 ** amp[c], 2)
    return numbers


# --------------------------------------------------------------------------- the matrix


def fig_heatmap(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """The matrix: median final/constant loss per cell, with counts, fixed cells framed."""
    summary = rm.summarize(runs)
    n = summary["remedy"].nunique()
    fig, ax = plots.figure(1, 1, height=0.5 * n + 2.4, layout="constrained")
    image = rm.plot_matrix(ax, summary, low=1.0, high=2.0, cmap="RdBu_r",
                           labels={c: short(c) for c in summary["cause"].unique()})
    bar = fig.colorbar(image, ax=ax, orientation="horizontal", fraction=0.035, pad=0.02,
                       aspect=40)
    bar.set_label("median final loss / constant-prediction loss")
    bar.set_ticks([-1, -0.5, 0, 1, 2], labels=["≤0.1", "0.3", "1", "10", "≥100"])
    return fig


def fig_seeds(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Every run's final/constant loss, one row per remedy, causes side by side."""
    n = runs["remedy"].nunique()
    fig, ax = plots.figure(1, 1, height=0.42 * n + 1.8)
    rm.plot_seeds(ax, runs, plots.OKABE_ITO, plots.MARKERS,
                  labels={c: short(c).replace("\n", " ") for c in runs["cause"].unique()})
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.axvline(P.stall_threshold, color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel("final loss / constant-prediction loss")
    plots.legend_below(fig, *ax.get_legend_handles_labels())
    return fig


def budget_summary(runs: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per checkpoint step and cell: the summary of :func:`.remedy_matrix.summarize` as if
    every run had ended there, with a ``steps`` column."""
    return pd.concat([rm.summarize(rm.at_budget(runs, q, P.stall_threshold)).assign(steps=s)
                      for q, s in zip((*rm.CHECKPOINTS, 1), checkpoints(P), strict=True)],
                     ignore_index=True)


def fig_budget(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Against the step budget: remedy cells fixed, with a blown-up run, with a stalled
    run; and the healthy twins that learned."""
    budget = budget_summary(runs, P)
    remedy = budget[~budget.remedy.isin(["none", "healthy"]) & budget.applicable]
    twins = budget[budget.remedy == "healthy"]
    fig, ax = plots.figure(1, 1, height=3.6)
    series = [("remedy cells fixed", remedy.groupby("steps").fixed.sum()),
              ("remedy cells with a run that blew up",
               remedy.assign(x=remedy.blew_up > 0).groupby("steps").x.sum()),
              ("remedy cells with a run that stalled",
               remedy.assign(x=remedy.stalled > 0).groupby("steps").x.sum()),
              ("healthy twins that learned", twins.groupby("steps").fixed.sum())]
    for i, (label, values) in enumerate(series):
        ax.plot(values.index, values.to_numpy(), label=label, **plots.style(i),
                linestyle="--" if i == 3 else "-")
    ax.set_xlabel("optimizer steps (the same runs, read at each quarter)")
    ax.set_ylabel("cells")
    ax.set_xticks(checkpoints(P))
    ax.set_ylim(0, None)
    plots.legend_below(fig, *ax.get_legend_handles_labels())
    return fig


def budget_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """Fixed remedy cells and learning twins at the first checkpoint and at the end."""
    budget = budget_summary(runs, P)
    remedy = budget[~budget.remedy.isin(["none", "healthy"]) & budget.applicable]
    first, last = checkpoints(P)[0], P.steps
    fixed = remedy.groupby("steps").fixed.sum()
    twins = budget[budget.remedy == "healthy"].groupby("steps").fixed.sum()
    at = {s: g.set_index(["cause", "remedy"]).fixed for s, g in remedy.groupby("steps")}
    gained = [key for key in at[last].index if at[last][key] and not at[first][key]]
    lost = [key for key in at[last].index if at[first][key] and not at[last][key]]
    return {"matrix_budget_first": first,
            "matrix_fixed_first": int(fixed.loc[first]), "matrix_fixed_last": int(fixed.loc[last]),
            "matrix_twins_first": int(twins.loc[first]), "matrix_twins_last": int(twins.loc[last]),
            "matrix_n_gained": len(gained), "matrix_n_lost": len(lost)}


def budget_table(runs: pd.DataFrame, P: Params):
    """Per remedy: rows fixed at each checkpoint step."""
    budget = budget_summary(runs, P)
    budget = budget[budget.remedy != "none"]
    table = budget.pivot_table(index="remedy", columns="steps", values="fixed", aggfunc="sum",
                               sort=False)
    table = table.loc[[r for r in COLUMNS if r in table.index and r != "none"]]
    table.index = [remedy_label(r) for r in table.index]
    table.columns = [f"{s} steps" for s in table.columns]
    return readable.table(table.astype(int).rename_axis("rows fixed by").reset_index())


#: The remedies whose effect on rows with blown-up runs the verdict quotes.
STEP_REMEDIES = ["clip_norm", "clip_value", "agc", "warmup", "adam", "early_stopping",
                 "dropout"]


def failing_rows(summary: pd.DataFrame) -> list[str]:
    """The rows whose no-remedy cell is not fixed: the only rows where a fix means
    something (a row whose baseline learns within the budget is not failing)."""
    base = summary[summary.remedy == "none"].set_index("cause")
    return [c for c in base.index if not base.loc[c, "fixed"]]


def _cells(runs: pd.DataFrame) -> tuple:
    """A matrix's summary (:func:`.remedy_matrix.summarize`), indexed by (cause, remedy);
    its rows in order, the failing ones, the remedy columns (not "none" or the healthy
    twin) and which summary rows are remedy cells on failing rows."""
    summary = rm.summarize(runs)
    rows = list(dict.fromkeys(summary.cause))
    failing = failing_rows(summary)
    remedies = [r for r in dict.fromkeys(summary.remedy) if r not in ("none", "healthy")]
    on_failing = summary.cause.isin(failing) & summary.remedy.isin(remedies)
    return summary, summary.set_index(["cause", "remedy"]), rows, failing, remedies, on_failing


def matrix_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the verdict: counts and lists of rows (fixes are counted on
    the failing rows only), every cell in words."""
    summary, cells, rows, failing, remedies, on_failing = _cells(runs)

    def fixes(r):
        return [c for c in failing if cells.loc[(c, r), "fixed"]]

    def applies(r):
        return [c for c in failing if cells.loc[(c, r), "applicable"]]

    numbers = {
        "matrix_n_failing": len(failing),
        "matrix_failing": names(failing),
        "matrix_passing": names([c for c in rows if c not in failing]),
        "matrix_n_remedies": len(remedies),
        "matrix_n_cells": int(summary[on_failing].applicable.sum()),
        "matrix_n_fixed_cells": int(summary[on_failing & summary.applicable].fixed.sum()),
        "matrix_n_runs": int(runs.applicable.sum()),
    }
    for r in remedies:
        numbers.update({
            f"matrix_fix_{r}": f"{len(fixes(r))} of {len(applies(r))}",
            f"matrix_fixlist_{r}": names(fixes(r)),
            f"matrix_faillist_{r}": names([c for c in applies(r) if c not in fixes(r)])})
    for (c, r), row in cells.iterrows():  # every cell in words, e.g. "3/3 blew up"
        numbers[f"matrix_cell_{c}_{r}"] = rm.outcome_text(row)
    best = max(len(fixes(r)) for r in remedies)
    healthy_ok = [c for c in rows if cells.loc[(c, "healthy"), "fixed"]]
    numbers.update({
        "matrix_best": " and ".join(remedy_label(r) for r in remedies
                                    if len(fixes(r)) == best),
        "matrix_best_n": best,
        "matrix_unfixed": names([c for c in failing if not any(c in fixes(r)
                                                               for r in remedies)]),
        "matrix_n_healthy_ok": len(healthy_ok),
        "matrix_healthy_failed": names([c for c in rows if c not in healthy_ok]),
    })
    # Blow-up stopped, but nothing learned: rows whose baseline blew up in some seed,
    # the remedy in none, and yet some of its runs stalled.
    blowing = [c for c in rows if cells.loc[(c, "none"), "blew_up"] > 0]
    numbers["matrix_diverging"] = names(blowing)
    numbers["matrix_n_diverging"] = len(blowing)
    for r in STEP_REMEDIES:
        tamed = [c for c in blowing if cells.loc[(c, r), "applicable"]
                 and cells.loc[(c, r), "blew_up"] == 0]
        numbers[f"matrix_tamed_{r}"] = len(tamed)
        numbers[f"matrix_tamed_stalled_{r}"] = len(
            [c for c in tamed if cells.loc[(c, r), "stalled"] > 0])
    large = rm.cause_config("weights_large", **common(P))
    none = cells.xs("none", level="remedy")
    es = cells.xs("early_stopping", level="remedy")
    numbers.update({
        # early stopping: runs that blew up without it, and what became of them with it
        "matrix_es_div_none": int(none.blew_up.sum()),
        "matrix_es_div": int(es.blew_up.sum()),
        "matrix_es_stopped": int(es.stopped.sum()),
        "matrix_es_fixed": len(fixes("early_stopping")),
        "matrix_n_nan": int(none.diverged.sum()),
        "matrix_n_blown_finite": int((none.blew_up - none.diverged).sum()),
        "matrix_agc_step_pct":
            f"{100 * rm.cause_config('lr_large', **common(P))['lr'] * P.agc_lambda:.2g}",
        # the typical size of a weight of the weights-too-large row, sigma_w / sqrt(width)
        "matrix_weight_size": f"{large['sigma_w'] / math.sqrt(P.width):.2f}",
        "matrix_const_acc": f"{rm.constant_accuracy(large):.2f}",
    })
    return numbers


def cells_table(runs: pd.DataFrame):
    """Every applicable cell in numbers: counts, ratios over seeds, test accuracy."""
    summary = rm.summarize(runs)
    show = summary[summary.applicable].assign(cause=lambda d: d.cause.map(cause_label),
                                              remedy=lambda d: d.remedy.map(remedy_label))
    n = show.seeds.astype(int).astype(str)
    show = show.assign(**{"blew up": show.blew_up.astype(int).astype(str) + "/" + n,
                          "NaN/Inf": show.diverged.astype(int).astype(str) + "/" + n,
                          "stalled": show.stalled.astype(int).astype(str) + "/" + n})
    shown = show[["cause", "remedy", "blew up", "NaN/Inf", "stalled", "median_ratio",
                  "min_ratio", "max_ratio", "median_accuracy"]].rename(
        columns={"median_ratio": "final/constant (median)", "min_ratio": "min",
                 "max_ratio": "max", "median_accuracy": "test accuracy"})
    return readable.table(shown.replace([np.inf], np.nan), digits=2,
                          missing="blew up")


def describe(P: Params, rows: list[str] = ROWS, columns: list[str] = COLUMNS):
    """What each cell changes relative to its row's failing configuration."""
    table = rm.describe(settings(P), **common(P))
    table = table.loc[[cause_label(c) for c in rows], [remedy_label(r) for r in columns]]
    return readable.table(table.T.rename_axis("remedy").reset_index())


# --------------------------------------------------------------------------- the second matrix


def fig_modern(modern: pd.DataFrame, P: Params) -> plt.Figure:
    """The second matrix (the modern failure modes): the same cells as :func:`fig_heatmap`,
    with the columns that apply to at least one of its rows."""
    return fig_heatmap(modern, P)


def modern_numbers(modern: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the second matrix: every cell in words, per row the remedies
    that fixed it and the failing ones, and the runs whose divergence skipping hid."""
    summary, cells, rows, failing, remedies, on_failing = _cells(modern)
    applicable = summary[on_failing & summary.applicable]
    numbers = {
        "matrix_modern_seeds": P.modern_seeds,
        "matrix_modern_n_rows": len(rows),
        "matrix_modern_n_failing": len(failing),
        "matrix_modern_failing": names(failing),
        "matrix_modern_passing": names([c for c in rows if c not in failing]),
        "matrix_modern_n_cells": len(applicable),
        "matrix_modern_n_fixed_cells": int(applicable.fixed.sum()),
        "matrix_modern_n_runs": int(modern.applicable.sum()),
        "matrix_modern_healthy_failed": names(
            [c for c in rows if not cells.loc[(c, "healthy"), "fixed"]]),
        "matrix_modern_n_hidden": int(summary[summary.applicable].hidden.sum()),
    }
    for c in rows:
        fixed = [r for r in remedies if cells.loc[(c, r), "fixed"]]
        tried = [r for r in remedies if cells.loc[(c, r), "applicable"]]
        numbers[f"matrix_modern_fixes_{c}"] = (
            "; ".join(remedy_label(r) for r in fixed) or "none")
        numbers[f"matrix_modern_fix_{c}"] = f"{len(fixed)} of {len(tried)}"
        for r in dict.fromkeys(summary.remedy):
            if cells.loc[(c, r), "applicable"]:
                numbers[f"matrix_cell_{c}_{r}"] = rm.outcome_text(cells.loc[(c, r)])
    return numbers


# --------------------------------------------------------------------------- generalization

#: The generalization test's pairs: an exploding-but-finite row and its healthy twin.
GEN_ROWS = ["tanh_chaotic", "batch_norm"]


def gen_configs(P: Params) -> dict:
    """(row, variant) -> the training configuration of the generalization test: the row's
    network on ``gen_n_train`` samples (one minibatch: full-batch gradient descent), run
    for ``gen_steps`` steps, test loss sampled at every tenth of the run."""
    out = {}
    for c in GEN_ROWS:
        config = rm.cause_config(c, **{**common(P), "steps": P.gen_steps})
        config.update(n_train=P.gen_n_train, batch_size=P.gen_n_train,
                      log_every=max(1, P.gen_steps // 10))
        out[c, "failing"] = config
        out[c, "healthy"] = {**config, **CAUSES[c].healthy}
    return out


def gen_outcomes(gen: dict) -> pd.DataFrame:
    """Per (row, variant, seed): final training loss (the full training set: one
    minibatch), final test loss, their gap, test accuracy, and whether it blew up."""
    rows = []
    for (c, variant), runs in gen.items():
        per = run_outcomes(runs)
        rows.append(per.assign(cause=c, variant=variant)[
            ["cause", "variant", "seed", "blew_up", "final_loss", "final_test_loss",
             "final_accuracy"]])
    out = pd.concat(rows, ignore_index=True)
    return out.assign(gap=out.final_test_loss - out.final_loss)


def gen_table(gen: dict):
    """Median over seeds per (row, variant) of the generalization test."""
    out = gen_outcomes(gen)
    med = out.groupby(["cause", "variant"], sort=False)[
        ["final_loss", "final_test_loss", "gap", "final_accuracy"]].median().reset_index()
    blown = out.groupby(["cause", "variant"], sort=False).blew_up.sum().to_numpy()
    med = med.assign(cause=med.cause.map(cause_label), **{"blew up": blown})
    return readable.table(med.rename(columns={
        "variant": "network", "final_loss": "train loss", "final_test_loss": "test loss",
        "gap": "test − train", "final_accuracy": "test accuracy"}), digits=2)


def gen_numbers(gen: dict, P: Params) -> dict:
    """Per pair: median train loss, test loss and gap of both twins; the verdict."""
    out = gen_outcomes(gen)
    numbers, worse = {}, []
    for c in GEN_ROWS:
        med = {v: out[(out.cause == c) & (out.variant == v)].median(numeric_only=True)
               for v in ("failing", "healthy")}
        for v in ("failing", "healthy"):
            for key, column in [("train", "final_loss"), ("test", "final_test_loss"),
                                ("gap", "gap")]:
                numbers[f"matrix_gen_{c}_{v}_{key}"] = readable.number(med[v][column], 2)
        # "explosion hurts generalization": the exploding twin overfits more (larger gap)
        # at no better training loss
        if med["failing"]["gap"] > med["healthy"]["gap"]:
            worse.append(c)
    n_blown = int(out[out.variant == "failing"].blew_up.sum())
    numbers.update({"matrix_gen_n_worse": len(worse), "matrix_gen_n": len(GEN_ROWS),
                    "matrix_gen_worse": names(worse), "matrix_gen_blown": n_blown,
                    "matrix_gen_not_worse": names([c for c in GEN_ROWS if c not in worse]),
                    "matrix_gen_verdict": generalization_verdict(len(worse), len(GEN_ROWS))})
    return numbers


def generalization_verdict(worse: int, pairs: int) -> str:
    """The verdict on "explosion hurts generalization": supported if the exploding network
    generalized worse than its healthy twin in every pair, refuted in none, else nuanced."""
    return "supported" if worse == pairs else "refuted" if not worse else "nuanced"


# --------------------------------------------------------------------------- the cost

#: The remedies timed on the feed-forward network.
MLP_TIMED = [r for r in COLUMNS if r not in ("healthy", "none")]


def mlp_network(P: Params) -> str:
    return f"ReLU MLP, depth {P.depth}"


def hyperparameters(P: Params) -> dict[str, str]:
    """The hyperparameter each remedy adds, with its value here."""
    return {
        "none": "–", "clip_norm": f"threshold c = {P.clip_norm:g}",
        "clip_value": f"cap = {P.clip_value:g}", "agc": f"λ = {P.agc_lambda:g}",
        "init": "none (here the same network as no remedy)",
        "batch_norm": "none (γ, β are learned)", "layer_norm": "none (γ, β are learned)",
        "residual": f"branch scale (1/√depth = {residual_scale(P):.2f})",
        "adam": f"lr = {P.adam_lr:g}, β₁, β₂, ε",
        "warmup": f"warmup length ({100 * P.warmup_fraction:g}% of steps)",
        "l2": f"λ = {P.l2:g}", "dropout": f"p = {P.dropout:g}",
        "early_stopping": f"stop factor {P.stop_factor:g}, how often to evaluate",
        "lstm": "none (4 gates instead of 1)"}


def cost_table(mlp_cost: pd.DataFrame, P: Params):
    """Time per step of each remedy over no remedy, with its range and hyperparameter."""
    cost = mlp_cost.assign(hyperparameter=mlp_cost.remedy.map(hyperparameters(P)),
                           remedy=mlp_cost.remedy.map(remedy_label))
    return readable.table(cost[["remedy", "ratio", "ratio_min", "ratio_max",
                                "hyperparameter"]].rename(
        columns={"ratio": "time per step / none", "ratio_min": "min", "ratio_max": "max"}),
        digits=2)


def cost_numbers(mlp_cost: pd.DataFrame) -> dict:
    """The most expensive feed-forward remedy."""
    return {"matrix_cost_max": f"{mlp_cost.ratio.max():.2f}",
            "matrix_cost_max_name": remedy_label(mlp_cost.remedy[mlp_cost.ratio.idxmax()])}
