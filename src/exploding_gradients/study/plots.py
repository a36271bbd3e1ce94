"""One figure style for the whole book, and the plots the chapters share.

Colors are the Okabe-Ito palette, which stays distinguishable under the common forms
of color blindness; series also differ by marker so they survive grayscale printing.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import pandas as pd

from .._version import __version__

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
             "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def use_style() -> None:
    """Apply the book's matplotlib style (call once at the top of a notebook)."""
    mpl.rcParams.update({
        "figure.figsize": (7.0, 4.2),
        "figure.dpi": 110,
        "savefig.dpi": 110,
        "savefig.bbox": "tight",
        "axes.prop_cycle": mpl.cycler(color=OKABE_ITO),
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "font.size": 11,
        "legend.frameon": False,
        "legend.fontsize": 10,
    })


def style(i: int) -> dict:
    """Color and marker of the ``i``-th series."""
    return {"color": OKABE_ITO[i % len(OKABE_ITO)], "marker": MARKERS[i % len(MARKERS)]}


def band(ax: plt.Axes, x: pd.Series, values: pd.DataFrame, i: int, label: str,
         markevery: int | None = None) -> None:
    """Median over seeds as a line, min-max over seeds as a shaded band.

    ``values`` has one column per seed and one row per ``x``.
    """
    s = style(i)
    ax.fill_between(x, values.min(axis=1), values.max(axis=1), color=s["color"], alpha=0.2,
                    linewidth=0)
    ax.plot(x, values.median(axis=1), label=label, color=s["color"], marker=s["marker"],
            markersize=4, markevery=markevery or max(1, len(x) // 10))


def per_layer(ax: plt.Axes, df: pd.DataFrame, column: str, group: str, labels: dict,
              predictions: dict | None = None) -> None:
    """``column`` against ``layer`` for each value of ``group``: seeds as a band.

    ``predictions`` maps a group value to a (layer, value) pair of arrays drawn dashed
    in the same color.
    """
    for i, (key, label) in enumerate(labels.items()):
        sub = df[df[group] == key].pivot(index="layer", columns="seed", values=column)
        band(ax, sub.index, sub, i, label)
        if predictions and key in predictions:
            layers, values = predictions[key]
            ax.plot(layers, values, linestyle="--", color=style(i)["color"], linewidth=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("layer (counted from the input)")


def per_step(ax: plt.Axes, runs: pd.DataFrame, column: str, group: str, labels: dict) -> None:
    """``column`` of a training table against ``step`` for each value of ``group``: seeds
    as a band (the per-step rows only; a diverged run's line stops where it diverged)."""
    whole = runs[runs["layer"] == 0] if "layer" in runs else runs
    for i, (key, label) in enumerate(labels.items()):
        sub = whole[whole[group] == key].pivot(index="step", columns="seed", values=column)
        band(ax, sub.index, sub, i, label)
    ax.set_xlabel("step")


def theory_legend(ax: plt.Axes) -> None:
    """Add a 'dashed = theory' entry to the legend."""
    handles, labels = ax.get_legend_handles_labels()
    handles.append(mpl.lines.Line2D([], [], color="gray", linestyle="--"))
    labels.append("mean-field prediction")
    ax.legend(handles, labels)


def stamp(fig: plt.Figure, params: dict) -> None:
    """Write provenance under the figure: the version of the code that made it and the
    parameters.

    A figure copied out of the book still says which code and which parameters made it.
    The code version is ``params.code_version`` when the parameters are a chapter's
    (:class:`..chapters.Params`: the hash of the code the chapter can run), else the
    package version.  ``$EXPLODING_GRADIENTS_STAMP=0`` leaves it off, so that figures
    made by different code versions can be compared byte for byte.
    """
    if os.environ.get("EXPLODING_GRADIENTS_STAMP", "1").strip() == "0":
        return
    version = getattr(params, "code_version", None) or __version__
    text = f"exploding_gradients {version} · " + ", ".join(
        f"{k}={v}" for k, v in params.items())
    width_chars = int(fig.get_figwidth() * 17)
    fig.text(0.0, -0.01, "\n".join(textwrap.wrap(text, width_chars)), ha="left", va="top",
             fontsize=6, color="0.35")


FIGURES_ENV = "EXPLODING_GRADIENTS_FIGURES"


def glue_figure(name: str, fig: plt.Figure, params: dict) -> None:
    """Stamp ``fig`` with its provenance, glue it for the page under ``name``, close it.

    When ``$EXPLODING_GRADIENTS_FIGURES`` names a folder (the book build sets it), the
    figure is also saved there as ``name.png``, so other pages can show it.
    """
    from myst_nb import glue  # only needed when building the book

    stamp(fig, params)
    folder = os.environ.get(FIGURES_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(folder) / f"{name}.png")
    glue(name, fig, display=False)
    plt.close(fig)


def glue_numbers(numbers: dict) -> None:
    """Glue every ``{key: value}`` for the page's ``{glue:text}`` roles."""
    from myst_nb import glue

    for key, value in numbers.items():
        glue(key, value, display=False)
