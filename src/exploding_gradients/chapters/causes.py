"""Causes at a glance: every failing configuration of :data:`.study.remedy_matrix.CAUSES`
beside its healthy twin, at initialization and in training.

The page runs, for each cause and each twin, the gradient measurement at initialization
and the training run (visible on it); this module reduces them to one row per twin and
draws the page's figure.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..engine.registry import get
from ..study import plots
from ..study.outcomes import k_of_n, run_outcomes
from ..study.remedy_matrix import CAUSES, Cause
from . import Chapter, Params
from ._shared import SEEDS, from_profile

CHAPTER = Chapter(
    "causes",
    (
        SEEDS,
        from_profile("steps", "int", "optimizer steps per training run", low=1, high=10**6),
    ),
    {
        "quick": dict(seeds=1, steps=15),
        "default": dict(seeds=3, steps=200),
        "full": dict(seeds=10, steps=1000),
    },
)

#: The experiment that measures a network's gradients at initialization, for each kind of
#: training run (a cause's ``experiment``).
AT_INIT = {"training": "signal_propagation", "rnn_training": "rnn_gradients"}


def init_config(cause: Cause, config: dict) -> dict:
    """The part of a training ``config`` that the cause's :data:`AT_INIT` experiment
    takes: the same network, without the training settings."""
    keys = {p.name for p in get(AT_INIT[cause.experiment]).params}
    return {k: v for k, v in config.items() if k in keys}


def twin_change(cause: Cause) -> str:
    """What the healthy twin changes, e.g. ``"init=he"``."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in cause.healthy.items())


def log10_amplification(at_init: pd.DataFrame, config: dict) -> float:
    """Median over seeds of log10(gradient at the input end / gradient at the loss end):
    the first over the last hidden layer of an MLP, the first over the last time step of
    a recurrent network (lags ``seq_len - 1`` and 0)."""
    if "lag" in at_init:
        def ratio(g):
            return (g.grad_norm[g.lag == config["seq_len"] - 1].iloc[0]
                    / g.grad_norm[g.lag == 0].iloc[0])
    else:
        def ratio(g):
            g = g.sort_values("layer")
            return g.delta_norm.iloc[0] / g.delta_norm.iloc[-1]
    return float(np.log10(at_init.groupby("seed").apply(ratio, include_groups=False)).median())


def twin_table(runs: dict) -> pd.DataFrame:
    """One row per (cause, variant) of ``runs``, a dict (cause name, variant) ->
    (config, table at initialization, training table): the cause, its chapter, the
    log10 amplification at initialization, how many runs diverged, and the median
    final/initial training loss of the runs that did not (inf if none)."""
    rows = []
    for (name, variant), (config, at_init, trained) in runs.items():
        cause = CAUSES[name]
        per_run = run_outcomes(trained)
        ratio = per_run.loc[~per_run["diverged"], "final_over_first"]
        ratio = ratio[np.isfinite(ratio)]
        rows.append({"cause": name, "label": cause.label, "chapter": cause.chapter,
                     "variant": variant,
                     "log10 amplification": log10_amplification(at_init, config),
                     "n_diverged": int(per_run["diverged"].sum()),
                     "diverged": k_of_n(per_run["diverged"]),
                     "final/initial loss": ratio.median() if len(ratio) else np.inf})
    return pd.DataFrame(rows)


def display(table: pd.DataFrame, P: Params):
    """The table as the page shows it: each cause, the healthy twin's change, and a link
    to the chapter that explains it."""
    shown = table.assign(
        cause=table["label"],
        variant=[v if v == "failing" else f"{v} ({twin_change(CAUSES[c])})"
                 for c, v in zip(table["cause"], table["variant"], strict=True)])
    return shown[["cause", "chapter", "variant", "log10 amplification", "diverged",
                  "final/initial loss"]].style.format(precision=2).format(
        lambda c: f'<a href="{c}.html">{c}</a>', subset=["chapter"]).hide()


def numbers(table: pd.DataFrame, P: Params) -> dict:
    """How many failing configurations there are, had a run diverge, and change the
    gradient by an order of magnitude or more at initialization."""
    failing = table[table.variant == "failing"]
    return {"causes_n": len(failing),
            "causes_n_diverged": int((failing["n_diverged"] > 0).sum()),
            "causes_n_visible": int((failing["log10 amplification"].abs() >= 1).sum())}


def fig_causes(table: pd.DataFrame, P: Params) -> plt.Figure:
    """Per cause, failing and healthy twin: the log10 amplification at initialization
    (bars) and the final/initial loss (points; a cross at 10 where runs diverged)."""
    names = list(dict.fromkeys(table.cause))
    labels = [f"{CAUSES[n].label}\nvs {twin_change(CAUSES[n])}" for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.6 * len(names) + 1.5), sharey=True)
    y = np.arange(len(names))[::-1]
    for i, variant in enumerate(["healthy", "failing"]):
        sub = table[table.variant == variant].set_index("cause").loc[names]
        s = plots.style(i)
        offset = 0.18 if variant == "healthy" else -0.18
        axes[0].barh(y + offset, sub["log10 amplification"], height=0.34, color=s["color"],
                     label=variant)
        finite = np.isfinite(sub["final/initial loss"]).to_numpy()
        axes[1].scatter(sub["final/initial loss"][finite], (y + offset)[finite],
                        color=s["color"], marker=s["marker"], label=variant, zorder=3)
        cap = 10.0
        axes[1].scatter(np.full((~finite).sum(), cap), (y + offset)[~finite], color=s["color"],
                        marker="X", s=90, zorder=3,
                        label=f"{variant}: diverged" if (~finite).any() else None)
    axes[0].axvline(0, color="black", linewidth=0.8)
    axes[0].set_yticks(y, labels)
    axes[0].set_xlabel("log10(gradient at input end / gradient at loss end), at init")
    axes[1].set_xscale("log")
    axes[1].axvline(1, color="black", linewidth=0.8)
    axes[1].set_xlabel("final loss / initial loss (× at 10: diverged)")
    axes[0].legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
    axes[1].legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3)
    fig.tight_layout()
    return fig
