"""Activation functions: how the activation changes the per-layer gradient factor, and
whether saturation makes gradients explode.

The page runs two ``signal_propagation`` sweeps (every activation at one sigma_w; tanh and
sigmoid over sigma_w) and trains each activation at the shared and at its critical
sigma_w (all visible on it); this module turns their tables into the page's numbers,
tables and figures.
"""

from __future__ import annotations

import functools
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import theory
from ..activations import ACTIVATIONS
from ..engine.params import Param
from ..study import growth, outcomes, plots, readable
from . import Chapter, Params
from ._shared import BATCH, SEEDS, WIDTH, from_profile

CHAPTER = Chapter(
    "activation",
    (
        SEEDS,
        from_profile(
            "depth", "int", "hidden layers in the signal-propagation measurements", low=2, high=1000
        ),
        WIDTH,
        BATCH,
        Param(
            "activations",
            "list[str]",
            ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu"],
            "activations compared",
            choices=tuple(ACTIVATIONS),
        ),
        Param(
            "sigma_w",
            "float",
            1.4142,
            "shared weight scale of the matched comparison",
            low=0.01,
            high=10.0,
        ),
        from_profile(
            "saturation_grid",
            "list[float]",
            "sigma_w values of the saturation sweep",
            low=0.01,
            high=20.0,
        ),
        from_profile("train_seeds", "int", "seeds per configuration in training", low=1, high=1000),
        Param(
            "train_activations",
            "list[str]",
            ["sigmoid", "tanh", "relu", "selu"],
            "activations trained",
            choices=tuple(ACTIVATIONS),
        ),
        Param("train_depth", "int", 20, "hidden layers of the trained network", low=1, high=1000),
        Param("train_width", "int", 128, "width of the trained network", low=2, high=8192),
        from_profile("train_steps", "int", "optimizer steps", low=1, high=10**6),
        Param(
            "train_lr", "float", 0.01, "learning rate (SGD with momentum 0.9)", low=1e-8, high=100.0
        ),
        from_profile("gelu_widths", "list[int]", "widths of the GELU width sweep", low=2,
                     high=8192),
        Param("preserving", "list[str]", ["tanh", "sigmoid", "selu"],
              "activations initialized to keep the forward signal: LSUV, SELU at its sigma_w of 1",
              choices=tuple(ACTIVATIONS)),
    ),
    {
        "quick": dict(
            seeds=2,
            depth=8,
            width=64,
            saturation_grid=[0.5, 2.0, 8.0],
            train_seeds=1,
            train_steps=20,
            gelu_widths=[64, 128],
        ),
        "default": dict(
            seeds=5,
            depth=30,
            width=256,
            saturation_grid=[0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0],
            train_seeds=2,
            train_steps=300,
            gelu_widths=[256, 1024],
        ),
        "full": dict(
            seeds=20,
            depth=50,
            width=1024,
            saturation_grid=[0.25 * 1.25**i for i in range(18)],
            train_seeds=10,
            train_steps=2000,
            gelu_widths=[256, 1024, 2048],
        ),
    },
)

#: How figures name the activations (no underscores, the usual capitals).
DISPLAY = {"relu": "ReLU", "leaky_relu": "leaky ReLU", "elu": "ELU", "selu": "SELU",
           "gelu": "GELU"}

#: The saturating activations of the weight-scale sweep.
SATURATING = ("tanh", "sigmoid")
#: The two training runs of each activation: at the shared sigma_w, at its critical one.
SCALES = ("shared", "critical")


def matched_table(matched: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per activation at the shared sigma_w: measured and predicted per-layer factor,
    chi_1, the measured chi (sigma_w^2 E[phi'^2]) and the saturated fraction."""
    matched = matched.assign(sigma_w=P.sigma_w)
    table = growth.growth_table(
        matched, "delta_norm", lambda a, s: theory.fitted_growth(a, s, 0.0, P.depth))
    stats = matched.groupby("activation", sort=False)[["dphi_sq", "saturated"]].mean()
    table = table.join(stats, on="activation")
    table.insert(2, "chi_1", [theory.chi1(a, P.sigma_w, 0.0) for a in table.activation])
    table["measured chi (sigma_w^2 E[phi'^2])"] = P.sigma_w ** 2 * table["dphi_sq"]
    return table.drop(columns=["sigma_w", "dphi_sq"]).rename(columns={
        "mean": "measured factor", "std": "sd", "count": "seeds",
        "predicted": "predicted factor", "rel_error": "relative error",
        "saturated": "saturated fraction"})


def matched_display(matched: pd.DataFrame, P: Params):
    """The matched-scale table as the page shows it."""
    table = matched_table(matched, P)
    shown = pd.DataFrame({
        "activation": table["activation"], "χ₁": table["chi_1"],
        "measured": [f"{m:.3f} ± {s:.3f}" for m, s in zip(table["measured factor"],
                                                           table["sd"], strict=True)],
        "predicted": table["predicted factor"],
        "error (%)": 100 * table["relative error"],
        "σ_w² E[φ′²]": table["measured chi (sigma_w^2 E[phi'^2])"],
        "saturated": table["saturated fraction"]})
    return readable.table(shown, digits=3, formats={"error (%)": "{:+.1f}",
                                                    "saturated": "{:.0%}".format})


def matched_numbers(matched: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 1: how many activations the theory predicts
    within 5%, which not, and each activation's factor, chi_1 and seed spread."""
    table = matched_table(matched, P)
    numbers = {f"act_{key}": P[key] for key in ["sigma_w", "depth", "width", "seeds"]}
    close = table["relative error"].abs() <= 0.05
    numbers["act_n_close"] = f"{close.sum()} of {len(table)}"
    numbers["act_far"] = ", ".join(
        f"{a} ({100 * e:+.0f}%)"
        for a, e in zip(table.activation[~close], table["relative error"][~close],
                        strict=True)) or "none"
    for _, row in table.iterrows():
        numbers[f"act_{row.activation}_factor"] = f"{row['measured factor']:.3f}"
        numbers[f"act_{row.activation}_chi"] = f"{row['chi_1']:.3f}"
        numbers[f"act_{row.activation}_sd"] = f"{row['sd']:.3f}"
    return numbers


def fig_matched(matched: pd.DataFrame, P: Params) -> plt.Figure:
    """Gradient norm per layer relative to the last layer, and the saturated fraction per
    layer, for every activation at the shared sigma_w."""
    fig, axes = plots.figure(1, 2, height=4.0)
    acts = list(P.activations)
    rel = matched.copy()
    rel["rel"] = growth.relative_to_last(rel, "delta_norm", ["activation"])
    plots.per_layer(axes[0], rel, "rel", "activation", {a: DISPLAY.get(a, a) for a in acts})
    axes[0].set_ylabel(r"$\|\delta^l\| \,/\, \|\delta^L\|$")
    for i, a in enumerate(acts):
        sub = matched[matched.activation == a].pivot(index="layer", columns="seed",
                                                     values="saturated")
        plots.band(axes[1], sub.index, sub, i, DISPLAY.get(a, a))
    for ax in axes:
        ax.set_xlabel("layer $l$")
    axes[1].set_ylabel("fraction of saturated units")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4)
    return fig


def saturation_per_seed(sat: pd.DataFrame) -> pd.DataFrame:
    """Per (activation, sigma_w, seed): the per-layer gradient factor and the saturated
    fraction and E[phi'^2], each averaged over the layers."""
    by = ["activation", "sigma_w", "seed"]
    factor = growth.growth_per_layer(sat, "delta_norm", by[:2])
    level = sat.groupby(by, sort=False)[["saturated", "dphi_sq"]].mean().reset_index()
    return factor.merge(level, on=by)


def saturation_summary(sat: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds of :func:`saturation_per_seed`, indexed by (activation,
    sigma_w), with columns (quantity, mean|std)."""
    return saturation_per_seed(sat).groupby(["activation", "sigma_w"], sort=False)[
        ["saturated", "dphi_sq", "growth"]].agg(["mean", "std"])


def _predicted_factor(activation: str, sigma_w: float, P: Params) -> float:
    """The per-layer factor predicted at this depth, reduced by the measurement's fit."""
    return theory.fitted_growth(activation, sigma_w, 0.0, P.depth)


def fig_saturation(sat: pd.DataFrame, P: Params) -> plt.Figure:
    """Saturated fraction, E[phi'^2] and the per-layer gradient factor against sigma_w,
    for tanh and sigmoid, with the factor's mean-field prediction."""
    summary = saturation_summary(sat)
    fig, axes = plots.figure(3, 1, height=8.4, sharex=True)
    fine = np.geomspace(min(P.saturation_grid), max(P.saturation_grid), 40)
    for i, a in enumerate(SATURATING):
        sub = summary.loc[a]
        s = plots.style(i)
        for ax, col in zip(axes, ["saturated", "dphi_sq", "growth"], strict=True):
            ax.errorbar(sub.index, sub[(col, "mean")], yerr=sub[(col, "std")],
                        color=s["color"], marker=s["marker"], capsize=3, label=a)
        axes[2].plot(fine, [_predicted_factor(a, x, P) for x in fine], "--", color=s["color"])
    axes[0].set_xscale("log")
    axes[2].set_xlabel(r"$\sigma_w$")
    axes[2].xaxis.set_major_locator(plt.LogLocator(subs=(1.0, 2.0, 5.0)))
    axes[2].xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    axes[2].xaxis.set_minor_formatter(plt.NullFormatter())
    axes[0].set_ylabel("saturated fraction")
    axes[1].set_ylabel(r"measured $\mathbb{E}[\phi'(h)^2]$")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("gradient factor per layer")
    plots.log_axis(axes[2])
    axes[2].axhline(1, color="black", linewidth=0.8)
    axes[0].legend()
    plots.theory_legend(axes[2])
    return fig


def saturation_numbers(sat: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 2: the largest saturation and the factor there,
    where the gradient starts to explode (measured; predicted at this depth, on the same
    sigma_w grid and interpolated alike; and the fixed-point theory's chi_1 = 1), the
    rank correlation of saturation with E[phi'^2] for tanh, and the smallest chi_1 of
    tanh above its boundary."""
    summary = saturation_summary(sat)
    numbers = {}
    for a in SATURATING:
        sub = summary.loc[a]
        numbers[f"act_{a}_sat_max"] = f"{sub[('saturated', 'mean')].max():.2f}"
        numbers[f"act_{a}_growth_at_max_sat"] = (
            f"{sub[('growth', 'mean')].iloc[sub[('saturated', 'mean')].argmax()]:.2f}")
        crossing = growth.crossing(sub.index, sub[("growth", "mean")], 1.0)
        predicted = growth.crossing(sub.index, [_predicted_factor(a, x, P) for x in sub.index],
                                    1.0)
        for key, value in [("explode_from", crossing), ("explode_pred", predicted)]:
            numbers[f"act_{a}_{key}"] = ("never in this range" if np.isnan(value)
                                         else f"σ_w ≈ {value:.2f}")
        numbers[f"act_{a}_critical"] = f"{critical_sigma_w(a):.2f}"
    corr = saturation_per_seed(sat).groupby("activation")[["saturated", "dphi_sq"]].corr(
        method="spearman")
    numbers["act_tanh_corr"] = f"{corr.loc[('tanh', 'saturated'), 'dphi_sq']:.2f}".replace(
        "-", "−")
    chis = [theory.chi1("tanh", x, 0.0) for x in np.linspace(1.05, 4.0, 12)]
    numbers["act_tanh_min_chi_above_one"] = f"{min(chis):.4f}"
    return numbers


@functools.cache
def critical_sigma_w(activation: str) -> float:
    """The sigma_w where chi_1 = 1 with sigma_b = 0 (searched up to 20: the sigmoid's
    lies above 10; remembered: tanh's takes a second); NaN for an activation whose chi_1
    jumps across 1 (GELU: its length map is bistable, see
    :func:`..theory.critical_sigma_w`)."""
    try:
        return theory.critical_sigma_w(activation, 0.0, high=20.0)
    except ValueError:
        return math.nan


# --------------------------------------------------------------------------- GELU

def gelu_table(widths: pd.DataFrame, P: Params) -> pd.DataFrame:
    """GELU at the shared sigma_w, per width: the measured per-layer factor (mean and sd
    over seeds) and the mean-field prediction reduced by the same fit."""
    table = growth.spread(growth.growth_per_layer(widths, "delta_norm", ["width"]),
                          "growth", ["width"])
    table["predicted"] = theory.fitted_growth("gelu", P.sigma_w, 0.0, P.depth)
    return table[["width", "mean", "std", "count", "predicted"]]


def gelu_display(widths: pd.DataFrame, P: Params):
    """The GELU width table as the page shows it."""
    table = gelu_table(widths, P).rename(columns={
        "mean": "measured", "std": "sd over seeds", "count": "seeds"})
    return readable.table(table, digits=3)


def gelu_numbers(widths: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the GELU width sweep, with the two scales of the argument:
    the deterministic drift of ln q per layer at q = 2, and the finite-width fluctuation
    of ln q per layer at the narrowest width, sqrt(5 / N) for a ReLU-like unit."""
    table = gelu_table(widths, P)
    narrow, wide = table.iloc[0], table.iloc[-1]
    drift = math.log(theory.length_map("gelu", P.sigma_w, 0.0, 2.0) / 2.0)
    noise = math.sqrt(theory.relu_log_length_variance(int(narrow.width)))
    return {"act_gelu_narrow": int(narrow.width), "act_gelu_wide": int(wide.width),
            "act_gelu_narrow_factor": f"{narrow['mean']:.3f}",
            "act_gelu_narrow_sd": f"{narrow['std']:.3f}",
            "act_gelu_wide_factor": f"{wide['mean']:.3f}",
            "act_gelu_wide_sd": f"{wide['std']:.3f}",
            "act_gelu_pred": f"{wide['predicted']:.3f}",
            "act_gelu_drift": f"{drift:.3f}".replace("-", "−"),
            "act_gelu_noise": f"{noise:.2f}"}


# --------------------------------------------------------------------------- preserving

def preserving_table(kept: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per network that keeps its forward signal (LSUV, or SELU at sigma_w = 1): the
    measured pre-activation variance (mean over layers and seeds), the measured per-layer
    gradient factor, and the prediction (LSUV: q = 1 at every layer, so the square root
    of :func:`..theory.lsuv_prediction`'s chi; otherwise the profile through the fit)."""
    rows = []
    for (act, scheme), sub in kept.groupby(["activation", "init"], sort=False):
        g = growth.growth_per_layer(sub, "delta_norm")["growth"]
        if scheme == "lsuv":
            sw, chi = theory.lsuv_prediction(act)
            predicted = math.sqrt(chi)
        else:
            sw = float(sub["sigma_w"].iloc[0])
            predicted = theory.fitted_growth(act, sw, 0.0, P.depth)
        rows.append({"activation": act, "initialization": scheme, "sigma_w": sw,
                     "q": sub["preact_var"].mean(), "measured": g.mean(), "sd": g.std(),
                     "predicted": predicted})
    return pd.DataFrame(rows)


def preserving_display(kept: pd.DataFrame, P: Params):
    """The signal-preserving table as the page shows it."""
    table = preserving_table(kept, P)
    table["initialization"] = table["initialization"].replace({"normal": "N(0, σ_w²/N)"})
    return readable.table(table.rename(columns={"sigma_w": "σ_w", "q": "measured q",
                                                "sd": "sd over seeds"}), digits=3)


def preserving_numbers(kept: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 3."""
    numbers = {}
    for _, row in preserving_table(kept, P).iterrows():
        key = f"act_keep_{row.activation}"
        numbers[key] = f"{row.measured:.3f}"
        numbers[key + "_sd"] = f"{row.sd:.3f}"
        numbers[key + "_pred"] = f"{row.predicted:.3f}"
        numbers[key + "_total"] = readable.number(row.measured ** (P.depth - 1), 2)
    numbers["act_selu_chi1"] = f"{theory.chi1('selu', 1.0, 0.0):.3f}"
    return numbers


def training_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (activation, scale, sigma_w): the outcome of the training runs, with chi_1."""
    table = outcomes.training_table(runs, ["activation", "scale", "sigma_w"])
    table.insert(3, "chi_1", [theory.chi1(a, s, 0.0)
                              for a, s in zip(table.activation, table.sigma_w, strict=True)])
    return table


def training_display(runs: pd.DataFrame, P: Params):
    """The training outcome table as the page shows it ("diverged" where every run did)."""
    diverged = lambda v: readable.number(v, 3, missing="diverged")  # noqa: E731
    return readable.table(training_table(runs).rename(columns={"sigma_w": "σ_w",
                                                               "chi_1": "χ₁"}),
                          formats={"final training loss": diverged,
                                   "final test accuracy": diverged})


def training_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 4: its settings, each activation's final test
    accuracy at both scales ("diverged" if every run diverged, "–" if not run) and how
    many of its runs at the shared scale diverged."""
    table = training_table(runs)
    numbers = {f"act_{key}": P[key]
               for key in ["train_depth", "train_width", "train_lr", "train_steps"]}
    for a in P.train_activations:
        for scale in SCALES:
            row = table[(table.activation == a) & (table.scale == scale)]
            numbers[f"act_train_{a}_{scale}"] = (
                readable.number(row["final test accuracy"].iloc[0], 2, missing="diverged")
                if len(row) else "–")
        shared = table[(table.activation == a) & (table.scale == "shared")]
        numbers[f"act_train_{a}_div"] = shared["diverged"].iloc[0]
    return numbers
