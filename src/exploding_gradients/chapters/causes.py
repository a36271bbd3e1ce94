"""Causes at a glance: every failing configuration of :data:`.study.remedy_matrix.CAUSES`
beside its healthy twin, at initialization and in training.

The page runs, for each cause and each twin, the gradient measurement at initialization
and the training run (visible on it); this module reduces them to one row per twin and
draws the page's figure.
"""

from __future__ import annotations

import re

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..study import plots, readable
from ..study.outcomes import k_of_n, run_outcomes
from ..study.remedy_matrix import (  # noqa: F401 (AT_INIT, init_config: used by the page)
    AT_INIT,
    CAUSES,
    Cause,
    init_config,
    log10_amplification,
)
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

def twin_change(cause: Cause) -> str:
    """What the healthy twin changes, e.g. ``"init=he"``."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in cause.healthy.items())


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
    """The table as the page shows it: each cause, the healthy twin's change, the
    amplification as a ratio, and a link to the chapter that explains it."""
    shown = table.assign(
        cause=table["label"],
        variant=[v if v == "failing" else f"{v} ({twin_change(CAUSES[c])})"
                 for c, v in zip(table["cause"], table["variant"], strict=True)],
        amplification=10.0 ** table["log10 amplification"],
        chapter=[f'<a href="{c}.html">{c}</a>' for c in table["chapter"]])
    shown = shown[["cause", "chapter", "variant", "amplification", "diverged",
                   "final/initial loss"]].replace([np.inf], np.nan)
    return readable.table(shown, digits=2, formats={
        "final/initial loss": lambda v: readable.number(v, 2, missing="diverged")})


def numbers(table: pd.DataFrame, P: Params) -> dict:
    """How many failing configurations there are, had a run diverge, and change the
    gradient by an order of magnitude or more at initialization (and which)."""
    failing = table[table.variant == "failing"]
    visible = failing["log10 amplification"].abs() >= 1
    diverged = failing["n_diverged"] > 0
    labels = failing["label"]
    return {"causes_n": len(failing),
            "causes_n_diverged": int(diverged.sum()),
            "causes_n_visible": int(visible.sum()),
            "causes_visible": "; ".join(labels[visible]) or "none",
            "causes_invisible": "; ".join(labels[~visible]) or "none",
            "causes_diverged": "; ".join(labels[diverged]) or "none"}


def tex(label: str) -> str:
    """A cause label for a figure: σ_w written as mathtext, so no literal underscore."""
    return re.sub(r"σ_w|(?<![\\$])sigma_w", lambda _: r"$\sigma_w$", label)


#: Where a diverged run is drawn on the loss axis (beyond every finite ratio shown).
DIVERGED_AT = 30.0


def fig_causes(table: pd.DataFrame, P: Params) -> plt.Figure:
    """Per cause, failing and healthy twin, stacked: the gradient's amplification at
    initialization (bars from 1, log axis) above the final/initial loss (points; a cross
    at :data:`DIVERGED_AT` where runs diverged), one legend below both."""
    names = list(dict.fromkeys(table.cause))
    labels = [f"{tex(CAUSES[n].label)}\nvs {tex(twin_change(CAUSES[n]))}" for n in names]
    fig, axes = plots.figure(2, 1, height=0.5 * len(names) * 2 + 1.8)
    y = np.arange(len(names))[::-1]
    for i, variant in enumerate(["healthy", "failing"]):
        sub = table[table.variant == variant].set_index("cause").loc[names]
        s = plots.style(i)
        offset = 0.18 if variant == "healthy" else -0.18
        ratio = 10.0 ** sub["log10 amplification"].to_numpy(dtype=float)
        axes[0].barh(y + offset, ratio - 1, left=1, height=0.34, color=s["color"])
        loss = sub["final/initial loss"].to_numpy(dtype=float)
        finite = np.isfinite(loss)
        axes[1].scatter(loss[finite], (y + offset)[finite], color=s["color"],
                        marker=s["marker"], zorder=3)
        axes[1].scatter(np.full((~finite).sum(), DIVERGED_AT), (y + offset)[~finite],
                        color=s["color"], marker="X", s=90, zorder=3)
    for ax in axes:
        ax.set_yticks(y, labels)
        ax.set_xscale("log")
        ax.axvline(1, color="black", linewidth=0.8)
        ax.grid(axis="y", visible=False)
    axes[0].set_xlabel("gradient at the input end / at the loss end\n(at initialization)")
    axes[1].set_xlabel("final loss / initial loss after training")
    low, _ = axes[1].get_xlim()
    axes[1].set_xlim(low, DIVERGED_AT * 2.5)
    axes[1].axvspan(DIVERGED_AT / 1.8, DIVERGED_AT * 2.5, color="0.93", zorder=0)
    axes[1].text(DIVERGED_AT, y[0] + 0.6, "diverged", ha="center", va="bottom", color="0.3")
    handles = [mpl.lines.Line2D([], [], linestyle="none", markersize=8, **plots.style(i))
               for i in range(2)]
    handles.append(mpl.lines.Line2D([], [], linestyle="none", marker="X", markersize=9,
                                    color="0.3"))
    plots.legend_below(fig, handles, ["healthy twin", "failing configuration",
                                      "runs diverged"], ncol=3)
    return fig
