"""One figure style for the whole book, and the plots the chapters share.

Colors are the Okabe-Ito palette, which stays distinguishable under the common forms
of color blindness; series also differ by marker so they survive grayscale printing.

Figures are drawn at the size they are shown: :data:`COLUMN` inches wide at
:data:`DPI`, the width of the book's text column, so that nothing is shrunk on a
desktop; :func:`check_legible` (run by :func:`glue_figure`) refuses a figure wider than
that, or one with text smaller than :data:`MIN_FONT` points per column width, which would
be illegible on a phone.  A figure that needs the whole page (the remedy matrix) is
glued with ``wide=True``: up to :data:`WIDE` inches, its text scaled up in proportion.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import matplotlib.transforms as mtransforms
import numpy as np
import pandas as pd

from .._version import __version__

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
             "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


DPI = 100
COLUMN = 6.7  # inches: 670 pixels, the width of the book's text column
WIDE = 9.5  # inches: the whole page, for the few figures that need it
MIN_FONT = 10.0  # points per COLUMN of width: 7.5 px on a 390 px phone


def use_style() -> None:
    """Apply the book's matplotlib style (call once at the top of a notebook)."""
    mpl.rcParams.update({
        "figure.figsize": (COLUMN, 4.0),
        "figure.dpi": DPI,
        "savefig.dpi": DPI,
        "savefig.bbox": "tight",
        "axes.prop_cycle": mpl.cycler(color=OKABE_ITO),
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "font.size": 11,
        "axes.titlesize": 11,
        "axes.labelsize": 11,
        "xtick.labelsize": 10,
        "ytick.labelsize": 10,
        "legend.frameon": False,
        "legend.fontsize": 10,
        "legend.title_fontsize": 10,
        "figure.titlesize": 11,
        "mathtext.default": "regular",
    })


def figure(nrows: int = 1, ncols: int = 1, height: float | None = None, wide: bool = False,
           **kwargs) -> tuple[plt.Figure, object]:
    """``plt.subplots`` at the book's width (:data:`COLUMN`, or :data:`WIDE`); the height
    defaults to 3.6 inches per row."""
    width = WIDE if wide else COLUMN
    return plt.subplots(nrows, ncols, figsize=(width, height or 3.6 * nrows), **kwargs)


def check_legible(fig: plt.Figure, wide: bool = False) -> None:
    """Refuse a figure wider than the column (or the page, ``wide``) or with text smaller
    than :data:`MIN_FONT` points per column width: it would be shrunk to illegibility."""
    width = fig.get_figwidth()
    limit = WIDE if wide else COLUMN
    if width > limit + 1e-6:
        raise ValueError(f"figure {width:g} in wide; at most {limit:g} in (draw it at the size "
                         "it is shown)")
    smallest = MIN_FONT * max(1.0, width / COLUMN)
    for text in fig.findobj(mpl.text.Text):
        if text.get_visible() and text.get_text().strip() and \
                text.get_fontsize() < smallest - 1e-6:
            raise ValueError(f"text {text.get_text()[:40]!r} is {text.get_fontsize():g} pt; at "
                             f"least {smallest:g} pt at this width")


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


def loss_panel(ax: plt.Axes, runs: pd.DataFrame, by_col: str, keys: list, labels: dict,
               styles: list[int] | None = None, title: str | None = None,
               smooth: int = 5) -> None:
    """Training loss over steps of each ``by_col`` value in ``keys`` (``labels``: key ->
    legend text; ``styles``: the series index of each key, default its position).

    Each curve is a ``smooth``-step moving average, median and range over seeds.  The y
    range fits the runs that did not diverge; a cross at the top marks the step at which
    a seed diverged (its curve leaves the plot).  ``runs`` is a training table (per-step
    rows, ``layer == 0``, with ``step``, ``seed``, ``loss`` and ``diverged_step``).
    """
    from .outcomes import steps_only  # here: it imports torch, which bookbuild need not

    whole = steps_only(runs)
    trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    top, bottom, any_div = 0.0, np.inf, False
    for i, key in enumerate(keys):
        sub = whole[whole[by_col] == key]
        if sub.empty:
            continue
        j = i if styles is None else styles[i]
        loss = sub.pivot(index="step", columns="seed", values="loss").rolling(smooth, 1).mean()
        band(ax, loss.index, loss, j, labels[key])
        div = sub.groupby("seed").diverged_step.first()
        ok = loss[[c for c in loss.columns if div[c] < 0]]
        if ok.size:
            top = max(top, np.nanmax(ok.to_numpy()))
            bottom = min(bottom, np.nanmin(ok.to_numpy()))
        for step in div[div >= 0]:
            any_div = True
            ax.scatter([step], [0.97], marker="X", s=90, color=style(j)["color"],
                       transform=trans, zorder=4, clip_on=False)
    ax.set_yscale("log")
    if top > 0:
        ax.set_ylim(bottom / 1.3, 1.5 * top)
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss ({smooth}-step moving average)")
    handles, names = ax.get_legend_handles_labels()
    if any_div:
        handles.append(plt.Line2D([], [], marker="X", color="gray", linestyle="", markersize=9))
        names.append("diverged (NaN/Inf) at this step")
    ax.legend(handles, names)
    if title:
        ax.set_title(title)


def outcome_panel(ax: plt.Axes, out: pd.DataFrame, x: str, series: str, labels: dict,
                  reference: float | None = None, order: list | None = None,
                  levels=()) -> None:
    """Per-seed final values (column ``final``) against the categorical column ``x``.

    One offset series per key of ``labels`` (the rows whose ``series`` equals the key),
    coloured by the key's place in ``order``; the median over the seeds that did not
    diverge as a line, each diverged seed (column ``diverged``) as a cross in a band at
    the top of the panel, and ``reference`` (the level of a network that learned
    nothing) dashed.  Log y axis, whose range also covers ``levels`` (other reference
    lines the caller draws).  :func:`outcome_legend` draws the matching legend.
    """
    order = order or list(labels)
    xs = list(dict.fromkeys(out[x]))
    pos = {v: i for i, v in enumerate(xs)}
    width = 0.5 / max(1, len(labels))
    finite = out.loc[~out["diverged"], "final"].replace([np.inf, -np.inf], np.nan).dropna()
    levels = [*finite, *([reference] if reference is not None else []), *levels]
    lo, hi = (min(levels), max(levels)) if levels else (0.1, 1.0)
    span = max(np.log10(hi / lo), 0.6)
    for i, (key, label) in enumerate(labels.items()):
        s = style(order.index(key))
        sub = out[out[series] == key]
        offset = (i - (len(labels) - 1) / 2) * width
        px = sub[x].map(pos) + offset
        ok = ~sub["diverged"]
        ax.scatter(px[ok], sub.loc[ok, "final"], color=s["color"], marker=s["marker"], s=22,
                   alpha=0.75, zorder=3)
        med = sub[ok].groupby(x, sort=False)["final"].median()
        ax.plot([pos[v] + offset for v in med.index], med.to_numpy(), color=s["color"],
                label=label)
        if (~ok).any():
            ax.scatter(px[~ok], np.full((~ok).sum(), 0.93), color=s["color"], marker="X",
                       s=55, transform=ax.get_xaxis_transform(), zorder=4)
    if reference is not None:
        ax.axhline(reference, color="black", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_ylim(lo / 10 ** (0.1 * span), hi * 10 ** (0.35 * span))
    ax.axhline(hi * 10 ** (0.2 * span), color="0.7", linewidth=0.6)
    ax.set_xticks(range(len(xs)), [f"{v:g}" if isinstance(v, float) else str(v) for v in xs])
    ax.set_xlim(-0.6, len(xs) - 0.4)
    fmt = mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    minor = mpl.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if span < 1.5 and round(v / 10 ** np.floor(np.log10(v))) in (2, 5)
        else "")
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(minor)


def outcome_legend(fig: plt.Figure, labels: dict, order: list, reference_label: str,
                   extra=(), ncol: int | None = None) -> None:
    """One legend above the panels of :func:`outcome_panel`: the series (coloured by
    their place in ``order``), the diverged marker, the dashed reference level, and the
    ``extra`` handles."""
    handles = [mpl.lines.Line2D([], [], color=style(order.index(k))["color"],
                                marker=style(order.index(k))["marker"], label=v)
               for k, v in labels.items()]
    handles.append(mpl.lines.Line2D([], [], color="gray", marker="X", linestyle="none",
                                    markersize=8, label="diverged (NaN/Inf), one per seed"))
    handles.append(mpl.lines.Line2D([], [], color="black", linestyle="--",
                                    label=reference_label))
    handles.extend(extra)
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0),
               ncol=ncol or len(handles))


def per_step(ax: plt.Axes, runs: pd.DataFrame, column: str, group: str, labels: dict) -> None:
    """``column`` of a training table against ``step`` for each value of ``group``: seeds
    as a band (the per-step rows only; a diverged run's line stops where it diverged)."""
    whole = runs[runs["layer"] == 0] if "layer" in runs else runs
    for i, (key, label) in enumerate(labels.items()):
        sub = whole[whole[group] == key].pivot(index="step", columns="seed", values=column)
        band(ax, sub.index, sub, i, label)
    ax.set_xlabel("step")


def legend_below(fig: plt.Figure, handles: list | None = None, labels: list | None = None,
                 ncol: int = 2) -> None:
    """One legend for the whole figure, under its panels and inside the figure: the
    entries of every axes (each label once, in order of appearance) unless ``handles``
    and ``labels`` are given.  The panels are laid out by ``tight_layout`` above a strip
    kept free for the legend's rows, so neither the legend nor the provenance
    :func:`stamp` runs into the axes' labels, and the figure keeps its width."""
    if handles is None:
        seen: dict = {}
        for ax in fig.get_axes():
            for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
                if not label.startswith("_"):
                    seen.setdefault(label, h)
        labels, handles = list(seen), list(seen.values())
    rows = -(-len(labels) // ncol)
    strip = (0.3 * rows + 0.15) / fig.get_figheight()
    fig.tight_layout(rect=(0, strip, 1, 1))
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=ncol)


def theory_legend(ax: plt.Axes) -> None:
    """Add a 'dashed = theory' entry to the legend."""
    handles, labels = ax.get_legend_handles_labels()
    handles.append(mpl.lines.Line2D([], [], color="gray", linestyle="--"))
    labels.append("mean-field prediction")
    ax.legend(handles, labels)


def log_axis(ax: plt.Axes) -> None:
    """Log y axis with readable ticks when the data span few decades.

    Over less than two decades matplotlib's default log ticks leave one or no labelled
    tick; this labels 1, 2, 5 x 10^k (and 3 x 10^k below a factor 30) in plain numbers.
    Call it after plotting: it reads the axis limits.
    """
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    if high / low < 100:
        subs = (1.0, 2.0, 3.0, 5.0) if high / low < 30 else (1.0, 2.0, 5.0)
        ax.yaxis.set_major_locator(mpl.ticker.LogLocator(subs=subs))
        ax.yaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())


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
    size = MIN_FONT * max(1.0, fig.get_figwidth() / COLUMN)
    width_chars = int(fig.get_figwidth() * 72 / (0.55 * size))  # characters per line
    fig.text(0.0, -0.01, "\n".join(textwrap.wrap(text, width_chars)), ha="left", va="top",
             fontsize=size, color="0.35")


FIGURES_ENV = "EXPLODING_GRADIENTS_FIGURES"
#: Where the book build puts the executed pages (set for the kernel; the ledger reads them).
PAGES_ENV = "EXPLODING_GRADIENTS_PAGES"


def glue_figure(name: str, fig: plt.Figure, params: dict, wide: bool = False) -> None:
    """Check that ``fig`` is legible (:func:`check_legible`), stamp it with its
    provenance, glue it for the page under ``name``, close it.

    When ``$EXPLODING_GRADIENTS_FIGURES`` names a folder (the book build sets it), the
    figure is also saved there as ``name.png``, so other pages can show it.
    """
    from myst_nb import glue  # only needed when building the book

    check_legible(fig, wide)
    stamp(fig, params)
    folder = os.environ.get(FIGURES_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tmp = Path(folder) / f".{name}.png.part"  # renamed when whole: never half a figure
        fig.savefig(tmp, format="png")
        os.replace(tmp, Path(folder) / f"{name}.png")
    glue(name, fig, display=False)
    plt.close(fig)


def glue_numbers(numbers: dict) -> None:
    """Glue every ``{key: value}`` for the page's ``{glue:text}`` roles."""
    from myst_nb import glue

    for key, value in numbers.items():
        glue(key, value, display=False)
