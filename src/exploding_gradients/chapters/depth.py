"""Depth: how the gradient norm changes from layer to layer, and with the number of layers.

The page runs four sweeps of ``signal_propagation`` (visible on it): the per-layer
profiles (also the data of the interactive explorer), networks of increasing depth, and
networks of several widths; this module turns their tables into the page's numbers,
tables and figures.  Every prediction is reduced by the measurement's own estimator
(:func:`..theory.fitted_growth`).
"""

from __future__ import annotations

import math

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import theory
from ..activations import ACTIVATIONS
from ..engine.params import Param
from ..study import explorer, growth, plots, readable
from . import Chapter, Params
from ._shared import BATCH, SEEDS, SIGMA_SWEEP, WIDTH, from_profile

CHAPTER = Chapter(
    "depth",
    (
        SEEDS,
        from_profile("depth", "int", "hidden layers of the network whose layers we compare",
                     low=2, high=1000),
        WIDTH,
        from_profile("depths", "list[int]", "network depths for the depth sweep", low=1,
                     high=1000),
        BATCH,
        *SIGMA_SWEEP,
        Param("explorer_activations", "list[str]", ["relu", "tanh"],
              "activations of the interactive explorer", choices=tuple(ACTIVATIONS)),
        Param("explorer_sigma_w", "list[float]", [0.8, 1.0, 1.2, 1.4142, 1.5, 1.6, 2.0],
              "sigma_w values of the interactive explorer", low=0.01, high=10.0),
        from_profile("explorer_seeds", "int", "seeds per configuration of the explorer",
                     low=1, high=1000),
        from_profile("spread_widths", "list[int]", "widths of the finite-width sweep", low=2,
                     high=8192),
        from_profile("spread_depth", "int", "hidden layers of the finite-width sweep", low=2,
                     high=1000),
        from_profile("spread_seeds", "int", "networks per width in the finite-width sweep",
                     low=3, high=10000),
    ),
    {
        "quick": dict(seeds=2, depth=12, width=64, depths=[2, 4, 8, 12], explorer_seeds=2,
                      spread_widths=[16, 32], spread_depth=8, spread_seeds=4),
        "default": dict(seeds=6, depth=50, width=256, depths=[1, 2, 5, 10, 20, 50, 100],
                        explorer_seeds=3, spread_widths=[32, 64, 128], spread_depth=32,
                        spread_seeds=32),
        "full": dict(seeds=20, depth=100, width=1024, explorer_seeds=20,
                     depths=[1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200],
                     spread_widths=[32, 64, 128, 256, 512], spread_depth=128,
                     spread_seeds=100),
    },
)

BY = ["activation", "sigma_w"]


def with_relative(layers: pd.DataFrame) -> pd.DataFrame:
    """``layers`` plus each norm relative to the last hidden layer of the same run:
    ``delta_norm_rel``, ``grad_norm_rel``, ``forward_rel`` (the pre-activations' scale,
    sqrt of their variance) and ``gsc`` (:func:`..study.growth.gradient_scale`)."""
    out = layers.copy()
    for column in ["delta_norm", "grad_norm"]:
        out[column + "_rel"] = growth.relative_to_last(out, column, BY)
    out["forward_rel"] = np.sqrt(growth.relative_to_last(out, "preact_var", BY))
    out["gsc"] = growth.gradient_scale(out, BY)
    return out


def predicted_profile(activation: str, sigma_w: float, P: Params):
    """(layers, ||delta^l|| / ||delta^L||) predicted by mean-field theory."""
    prof = theory.layer_profile(activation, sigma_w, P.sigma_b, P.depth)
    return prof["layer"], np.exp(prof["log_delta_sq"] / 2)


def growth_table(layers: pd.DataFrame, P: Params, column: str = "delta_norm") -> pd.DataFrame:
    """Measured per-layer factor of ``column`` per (activation, sigma_w) beside theory
    reduced by the same least-squares fit (``predicted``), and beside the uniform mean
    of ln chi^l (``uniform``), the estimator the two should not be compared with."""
    table = growth.growth_table(
        layers, column, lambda a, s: theory.fitted_growth(a, s, P.sigma_b, P.depth))
    table["uniform"] = [theory.predicted_growth(a, s, P.sigma_b, P.depth)
                        for a, s in zip(table.activation, table.sigma_w, strict=True)]
    return table


def layer_numbers(layers: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurements 1 and 2."""
    table = growth_table(layers, P)
    uniform_error = (table["mean"] / table["uniform"] - 1).abs().max()
    tanh_error = table.loc[table.activation == "tanh", "rel_error"].abs().max()
    numbers = {"depth_depth": P.depth, "depth_width": P.width, "depth_seeds": P.seeds,
               "depth_explorer_seeds": P.explorer_seeds,
               "depth_worst_error_pct": f"{100 * table['rel_error'].abs().max():.1f}",
               "depth_tanh_worst_error_pct": f"{100 * tanh_error:.1f}",
               "depth_uniform_worst_error_pct": f"{100 * uniform_error:.1f}"}
    crit = table[(table.activation == "relu") & np.isclose(table.sigma_w, 2**0.5, atol=1e-3)]
    if len(crit):
        numbers["depth_relu_critical_growth"] = f"{crit['mean'].iloc[0]:.3f}"
        numbers["depth_relu_critical_std"] = f"{crit['std'].iloc[0]:.3f}"
    top = table[table.activation == "relu"].sort_values("sigma_w").iloc[-1]
    numbers.update({
        "depth_relu_top_sigma": f"{top.sigma_w:g}",
        "depth_relu_top_growth": f"{top['mean']:.3f}",
        "depth_relu_top_pred": f"{top.predicted:.3f}",
        "depth_relu_top_total": readable.number(top["mean"] ** (P.depth - 1), 3),
    })
    rel = with_relative(layers)
    weights = growth.growth_table(layers, "grad_norm", lambda a, s: np.nan)
    gsc = gsc_table(rel, P)
    relu_top = weights[weights.activation == "relu"].sort_values("sigma_w").iloc[-1]
    tanh_top = weights[weights.activation == "tanh"].sort_values("sigma_w").iloc[-1]
    tanh_d = table[table.activation == "tanh"].sort_values("sigma_w").iloc[-1]
    relu_gsc = gsc[gsc.activation == "relu"]
    tanh_gsc = gsc[gsc.activation == "tanh"].sort_values("sigma_w").iloc[-1]
    numbers.update({"depth_relu_top_wgrowth": f"{relu_top['mean']:.3f}",
                    "depth_tanh_top_wgrowth": f"{tanh_top['mean']:.3f}",
                    "depth_tanh_top_growth": f"{tanh_d['mean']:.3f}",
                    "depth_tanh_top_sigma": f"{tanh_d.sigma_w:g}",
                    "depth_relu_gsc_low": f"{relu_gsc['mean'].min():.3f}",
                    "depth_relu_gsc_high": f"{relu_gsc['mean'].max():.3f}",
                    "depth_tanh_top_gsc": f"{tanh_gsc['mean']:.3f}",
                    "depth_tanh_top_gsc_pred": f"{tanh_gsc.predicted:.3f}",
                    "depth_relu_output_scale": readable.number(
                        (max(P.relu_sigma_w) / 2**0.5) ** (P.depth + 1), 2)})
    return numbers


def gsc_table(rel: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per-layer factor of the gradient scale coefficient per (activation, sigma_w),
    measured (the same least-squares fit as the norms) and predicted
    (:func:`..theory.gradient_scale_profile` through that fit)."""
    def predicted(a, s):
        prof = theory.gradient_scale_profile(a, s, P.sigma_b, P.depth)
        return math.exp(-growth.log_slope(prof["layer"], prof["log_gsc"]))

    return growth.growth_table(rel, "gsc", predicted)


def profile_panel(ax: plt.Axes, rel: pd.DataFrame, act: str, P: Params) -> None:
    """``delta_norm_rel`` (:func:`with_relative`) per layer of activation ``act``, a line
    per sigma_w labelled with its chi_1, and the mean-field profiles dashed."""
    sub = rel[rel.activation == act]
    sws = sorted(sub.sigma_w.unique())
    labels = {s: f"$\\sigma_w$ = {s:g} ($\\chi_1$ = {theory.chi1(act, s, P.sigma_b):.2f})"
              for s in sws}
    plots.per_layer(ax, sub, "delta_norm_rel", "sigma_w", labels,
                    {s: predicted_profile(act, s, P) for s in sws})


def fig_profiles(layers: pd.DataFrame, P: Params) -> plt.Figure:
    """||delta^l|| / ||delta^L|| per layer for ReLU and tanh, with mean-field predictions."""
    rel = with_relative(layers)
    fig, axes = plots.figure(1, 2, height=4.4, sharey=True)
    for ax, act in zip(axes, ["relu", "tanh"], strict=True):
        profile_panel(ax, rel, act, P)
        ax.set_title("ReLU" if act == "relu" else act)
        ax.set_xlabel("layer $l$")
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
        handles, names = ax.get_legend_handles_labels()
        ax.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)
    axes[0].set_ylabel(r"$\|\delta^l\| \,/\, \|\delta^L\|$")
    fig.legend([plt.Line2D([], [], color="gray", linestyle="--")], ["mean-field prediction"],
               loc="upper center", bbox_to_anchor=(0.5, 1.06))
    return fig


def fig_weight_vs_delta(layers: pd.DataFrame, P: Params) -> plt.Figure:
    """Backward signal, forward signal, weight gradient and gradient scale coefficient per
    layer, for the most explosive ReLU and tanh settings, the GSC's prediction dashed."""
    rel = with_relative(layers)
    fig, axes = plots.figure(1, 2, height=4.0, sharey=True)
    picks = [("relu", max(P.relu_sigma_w)), ("tanh", max(P.tanh_sigma_w))]
    series = [("delta_norm_rel", r"backward $\|\delta^l\|$"),
              ("forward_rel", r"forward $\sqrt{q^l}$"),
              ("grad_norm_rel", r"weight gradient $\|\partial L/\partial W^l\|$"),
              ("gsc", "gradient scale coefficient (GSC)")]
    for ax, (act, sw) in zip(axes, picks, strict=True):
        sub = rel[(rel.activation == act) & (rel.sigma_w == sw)]
        for i, (column, label) in enumerate(series):
            values = sub.pivot(index="layer", columns="seed", values=column)
            plots.band(ax, values.index, values, i, label)
        prof = theory.gradient_scale_profile(act, sw, P.sigma_b, P.depth)
        ax.plot(prof["layer"], np.exp(prof["log_gsc"]), "--", color=plots.style(3)["color"])
        plots.log_axis(ax)
        ax.set_xlabel("layer $l$")
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
        ax.set_title(f"{'ReLU' if act == 'relu' else act}, $\\sigma_w$ = {sw:g}")
    axes[0].set_ylabel("relative to the last hidden layer")
    handles, names = axes[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color=plots.style(3)["color"], linestyle="--"))
    names.append("GSC, mean-field prediction")
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2)
    return fig


def by_depth_ratios(by_depth: pd.DataFrame, P: Params) -> tuple[pd.DataFrame, list[float]]:
    """The first layer's ||delta^1|| of each network, and per sigma_w the ratio of the
    measured median to the prediction at the largest depth."""
    first = by_depth[by_depth.layer == 1]
    ratios = []
    for sw in P.relu_sigma_w:
        sub = first[first.sigma_w == sw].groupby("depth")["delta_norm"].median()
        pred = theory.input_gradient_by_depth("relu", sw, P.sigma_b, P.depths, P.batch_size,
                                              10)
        ratios.append(sub.iloc[-1] / pred["delta1_norm"].iloc[-1])
    return first, ratios


def fig_by_depth(by_depth: pd.DataFrame, P: Params) -> plt.Figure:
    """||delta^1|| against network depth for each ReLU sigma_w, with the prediction."""
    first, _ = by_depth_ratios(by_depth, P)
    fig, ax = plots.figure(1, 1, height=3.8)
    for i, sw in enumerate(P.relu_sigma_w):
        sub = first[first.sigma_w == sw].pivot(index="depth", columns="seed",
                                               values="delta_norm")
        plots.band(ax, sub.index, sub, i, f"ReLU, $\\sigma_w$ = {sw:g}")
        pred = theory.input_gradient_by_depth("relu", sw, P.sigma_b, P.depths, P.batch_size,
                                              10)
        ax.plot(pred["depth"], pred["delta1_norm"], "--", color=plots.style(i)["color"])
    ax.set_yscale("log")
    ax.set_xlabel("network depth $L$ (hidden layers)")
    ax.set_ylabel(r"$\|\delta^1\|$ at the first layer")
    plots.theory_legend(ax)
    return fig


def depth_numbers(by_depth: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 3."""
    first, ratios = by_depth_ratios(by_depth, P)
    span = first[first.sigma_w == max(P.relu_sigma_w)].groupby("depth").delta_norm.median()
    return {"depth_max_depth": max(P.depths), "depth_ratio_low": f"{min(ratios):.2f}",
            "depth_ratio_high": f"{max(ratios):.2f}",
            "depth_span_top": readable.number(span.iloc[-1] / span.iloc[0], 2)}


def growth_display(layers: pd.DataFrame, P: Params):
    """The growth table as the page shows it."""
    table = growth_table(layers, P)[["activation", "sigma_w", "mean", "std", "predicted",
                                     "rel_error"]]
    table["rel_error"] = 100 * table["rel_error"]
    return readable.table(table.rename(columns={
        "sigma_w": "σ_w", "mean": "measured", "std": "sd over seeds",
        "predicted": "predicted", "rel_error": "error (%)"}), digits=4,
        formats={"σ_w": "{:g}", "error (%)": "{:+.2f}"})


# --------------------------------------------------------------------------- explorer

def explorer_data(explored: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per (activation, sigma_w, layer): ||delta^l|| / ||delta^L|| over seeds (median,
    min, max) and its mean-field prediction, for the explorer."""
    rel = explored.assign(rel=growth.relative_to_last(explored, "delta_norm", BY))
    out = rel.groupby([*BY, "layer"], sort=True)["rel"].agg(["median", "min", "max"])
    out = out.reset_index()
    out["predicted"] = np.nan
    for (act, sw), idx in out.groupby(BY).groups.items():
        layers, values = predicted_profile(act, sw, P)
        out.loc[idx, "predicted"] = out.loc[idx, "layer"].map(dict(zip(layers, values,
                                                                       strict=True)))
    return out


def explorer_html(explored: pd.DataFrame, P: Params) -> str:
    """The explorer of the page, as HTML that loads plotly.js from the site itself."""
    data = explorer_data(explored, P)
    table = growth_table(explored, P).set_index(BY)
    notes = {key: (f"measured {row['mean']:.3f} per layer (mean over {int(row['count'])} seeds), "
                   f"predicted {row['predicted']:.3f}")
             for key, row in table.iterrows()}
    fig = explorer.profile_explorer(
        data, "activation", "sigma_w", notes=notes,
        labels={a: "ReLU" if a == "relu" else a for a in P.explorer_activations},
        y_title="‖δ<sup>l</sup>‖ / ‖δ<sup>L</sup>‖ (log scale)",
        slider_prefix="σ<sub>w</sub> = ")
    return explorer.to_html(fig, div_id="depth-explorer")


# --------------------------------------------------------------------------- finite width

def spread_table(spread: pd.DataFrame) -> pd.DataFrame:
    """Per (width, layer): the variance over networks of ln(||delta^l|| / ||delta^L||),
    with ``crossed`` = L - l, the layers the gradient crossed, and ``beta`` = crossed /
    width (Hanin's sum of 1 / n over those layers)."""
    logs = spread.assign(log_rel=np.log(growth.relative_to_last(spread, "delta_norm",
                                                                ["width"])))
    out = logs.groupby(["width", "layer"])["log_rel"].agg(["var", "count"]).reset_index()
    out["crossed"] = logs["layer"].max() - out["layer"]
    out["beta"] = out["crossed"] / out["width"]
    return out[out.crossed > 0].reset_index(drop=True)


def spread_slopes(table: pd.DataFrame) -> pd.Series:
    """Per width, the least-squares slope through the origin of the variance against beta:
    one common value when the spread depends on depth and width only through depth/width."""
    return table.groupby("width").apply(
        lambda t: float((t["beta"] * t["var"]).sum() / (t["beta"] ** 2).sum()),
        include_groups=False)


def spread_numbers(spread: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 4."""
    table = spread_table(spread)
    slopes = spread_slopes(table)
    widest_beta = table.loc[table["beta"].idxmax()]
    words = [f"{slopes[w]:.2f}" for w in slopes.index]
    return {"depth_spread_depth": P.spread_depth, "depth_spread_seeds": P.spread_seeds,
            "depth_spread_widths": ", ".join(map(str, P.spread_widths[:-1]))
            + f" and {P.spread_widths[-1]}",
            "depth_spread_slopes": ", ".join(words[:-1]) + f" and {words[-1]}",
            "depth_spread_slope_ratio": f"{slopes.max() / slopes.min():.1f}",
            "depth_spread_max_beta": f"{widest_beta['beta']:.2f}",
            "depth_spread_max_factor": f"{math.exp(math.sqrt(widest_beta['var'])):.1f}",
            "depth_spread_var_error_pct": f"{100 * math.sqrt(2 / (P.spread_seeds - 1)):.0f}"}


def fig_spread(spread: pd.DataFrame, P: Params) -> plt.Figure:
    """Variance over networks of ln(||delta^l|| / ||delta^L||) against the layers crossed
    divided by the width, one series per width, with the common line through the origin."""
    table = spread_table(spread)
    fig, ax = plots.figure(1, 1, height=3.8)
    for i, width in enumerate(P.spread_widths):
        sub = table[table.width == width]
        s = plots.style(i)
        ax.plot(sub["beta"], sub["var"], color=s["color"], marker=s["marker"], markersize=4,
                linestyle="", label=f"width {width}")
    common = float((table["beta"] * table["var"]).sum() / (table["beta"] ** 2).sum())
    x = np.linspace(0, table["beta"].max(), 20)
    ax.plot(x, common * x, "--", color="gray",
            label=f"one line: {common:.2f} × layers crossed / width")
    ax.set_xlabel("layers crossed / width")
    ax.set_ylabel(r"variance of $\ln(\|\delta^l\| / \|\delta^L\|)$")
    ax.legend()
    return fig
