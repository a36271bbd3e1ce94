"""Depth: how the gradient norm changes from layer to layer, and with the number of layers.

The page runs two sweeps of ``signal_propagation`` (visible on it); this module turns
their tables into the page's numbers, tables and figures.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import theory
from ..engine.params import Param
from ..study import growth, plots
from . import Chapter, Params
from ._shared import BATCH, SEEDS, WIDTH, from_profile

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
        Param("relu_sigma_w", "list[float]", [1.2, 1.4142, 1.6],
              "sigma_w values for ReLU (critical: sqrt 2)", low=0.01, high=10.0),
        Param("tanh_sigma_w", "list[float]", [0.8, 1.0, 1.5, 2.0],
              "sigma_w values for tanh (critical: 1 when sigma_b is 0)", low=0.01, high=10.0),
        Param("sigma_b", "float", 0.0, "bias standard deviation", low=0.0, high=10.0),
    ),
    {
        "quick": dict(seeds=2, depth=12, width=64, depths=[2, 4, 8, 12]),
        "default": dict(seeds=6, depth=50, width=256,
                        depths=[1, 2, 5, 10, 20, 30, 50, 75, 100]),
        "full": dict(seeds=20, depth=100, width=1024,
                     depths=[1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200]),
    },
)

BY = ["activation", "sigma_w"]


def with_relative(layers: pd.DataFrame) -> pd.DataFrame:
    """``layers`` plus each norm relative to the last hidden layer of the same run:
    ``delta_norm_rel``, ``grad_norm_rel`` and ``forward_rel`` (the pre-activations' scale,
    sqrt of their variance)."""
    out = layers.copy()
    for column in ["delta_norm", "grad_norm"]:
        out[column + "_rel"] = growth.relative_to_last(out, column, BY)
    out["forward_rel"] = np.sqrt(growth.relative_to_last(out, "preact_var", BY))
    return out


def predicted_profile(activation: str, sigma_w: float, P: Params):
    """(layers, ||delta^l|| / ||delta^L||) predicted by mean-field theory."""
    prof = theory.layer_profile(activation, sigma_w, P.sigma_b, P.depth)
    return prof["layer"], np.exp(prof["log_delta_sq"] / 2)


def growth_table(layers: pd.DataFrame, P: Params, column: str = "delta_norm") -> pd.DataFrame:
    """Measured per-layer factor of ``column`` per (activation, sigma_w) beside theory."""
    return growth.growth_table(
        layers, column, lambda a, s: theory.predicted_growth(a, s, P.sigma_b, P.depth))


def layer_numbers(layers: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurements 1 and 2."""
    table = growth_table(layers, P)
    weights = growth.growth_table(layers, "grad_norm", lambda a, s: np.nan)
    numbers = {"depth_depth": P.depth, "depth_width": P.width, "depth_seeds": P.seeds,
               "depth_worst_error_pct": f"{100 * table['rel_error'].abs().max():.1f}"}
    crit = table[(table.activation == "relu") & np.isclose(table.sigma_w, 2**0.5, atol=1e-3)]
    if len(crit):
        numbers["depth_relu_critical_growth"] = f"{crit['mean'].iloc[0]:.3f}"
        numbers["depth_relu_critical_std"] = f"{crit['std'].iloc[0]:.3f}"
    top = table[table.activation == "relu"].sort_values("sigma_w").iloc[-1]
    numbers.update({
        "depth_relu_top_sigma": f"{top.sigma_w:g}",
        "depth_relu_top_growth": f"{top['mean']:.3f}",
        "depth_relu_top_pred": f"{top.predicted:.3f}",
        "depth_relu_top_total": f"{top['mean'] ** (P.depth - 1):.3g}",
    })
    relu_top = weights[weights.activation == "relu"].sort_values("sigma_w").iloc[-1]
    tanh_top = weights[weights.activation == "tanh"].sort_values("sigma_w").iloc[-1]
    tanh_d = table[table.activation == "tanh"].sort_values("sigma_w").iloc[-1]
    numbers.update({"depth_relu_top_wgrowth": f"{relu_top['mean']:.3f}",
                    "depth_tanh_top_wgrowth": f"{tanh_top['mean']:.3f}",
                    "depth_tanh_top_growth": f"{tanh_d['mean']:.3f}"})
    return numbers


def fig_profiles(layers: pd.DataFrame, P: Params) -> plt.Figure:
    """||delta^l|| / ||delta^L|| per layer for ReLU and tanh, with mean-field predictions."""
    rel = with_relative(layers)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for ax, act in zip(axes, ["relu", "tanh"], strict=True):
        sub = rel[rel.activation == act]
        sws = sorted(sub.sigma_w.unique())
        labels = {s: f"$\\sigma_w$ = {s:g}, $\\chi_1$ = {theory.chi1(act, s, P.sigma_b):.2f}"
                  for s in sws}
        plots.per_layer(ax, sub, "delta_norm_rel", "sigma_w", labels,
                        {s: predicted_profile(act, s, P) for s in sws})
        ax.set_title(f"{act}")
        plots.theory_legend(ax)
    axes[0].set_ylabel(r"$\|\delta^l\| \,/\, \|\delta^L\|$ (gradient w.r.t. pre-activations)")
    return fig


def fig_weight_vs_delta(layers: pd.DataFrame, P: Params) -> plt.Figure:
    """Backward signal, forward signal and weight gradient per layer, for the most
    explosive ReLU and tanh settings."""
    rel = with_relative(layers)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    picks = [("relu", max(P.relu_sigma_w)), ("tanh", max(P.tanh_sigma_w))]
    for ax, (act, sw) in zip(axes, picks, strict=True):
        sub = rel[(rel.activation == act) & (rel.sigma_w == sw)]
        for i, (column, label) in enumerate([
                ("delta_norm_rel", r"backward: $\|\delta^l\|$"),
                ("forward_rel", r"forward: $\sqrt{q^l}$ (pre-activation scale)"),
                ("grad_norm_rel", r"weight gradient $\|\partial L/\partial W^l\|$")]):
            values = sub.pivot(index="layer", columns="seed", values=column)
            plots.band(ax, values.index, values, i, label)
        ax.set_yscale("log")
        ax.set_xlabel("layer (counted from the input)")
        ax.set_title(f"{act}, $\\sigma_w$ = {sw:g}")
        ax.legend()
    axes[0].set_ylabel("relative to the last hidden layer")
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
    fig, ax = plt.subplots(figsize=(7, 4.2))
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
            "depth_span_top": f"{span.iloc[-1] / span.iloc[0]:.3g}"}


def growth_display(layers: pd.DataFrame, P: Params):
    """The growth table as the page shows it."""
    return growth_table(layers, P).rename(columns={
        "mean": "measured (mean)", "std": "measured (sd)", "count": "seeds",
        "rel_error": "relative error"}).style.format(precision=4).hide()
