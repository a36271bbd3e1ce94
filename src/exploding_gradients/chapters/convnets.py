"""Convolutional networks: mean-field theory at initialization, the seed article's CNN case
study, batch norm and residual branches, and adaptive gradient clipping.

The page runs its measurements (``signal_propagation`` and ``training`` sweeps with
``architecture="cnn"``) in visible cells; this module turns their tables into the page's
numbers, tables and figures.  The per-layer factor is compared with the Depth chapter's
prediction (:func:`.depth.predicted_profile`), reduced by the measurement's own
least-squares fit (:func:`..study.growth.log_slope`).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .. import theory
from ..engine.params import Param
from ..engine.registry import get
from ..experiments.feedforward import make_data
from ..study import growth, plots, readable
from ..study.outcomes import k_of_n, med_range, run_outcomes
from . import Chapter, Params, architecture, depth
from ._shared import BATCH, SEEDS, SIGMA_SWEEP, from_profile

CHAPTER = Chapter(
    "convnets",
    (
        SEEDS,
        from_profile("depth", "int", "convolutions of the networks measured at initialization",
                     low=2, high=1000),
        from_profile("channels", "int", "channels of every convolution at initialization",
                     low=1, high=4096),
        from_profile("image_size", "int", "side of the images at initialization, in pixels",
                     low=1, high=512),
        Param("kernel_size", "int", 3, "side of the (odd) convolution kernels", low=1,
              high=31),
        BATCH,
        *SIGMA_SWEEP,
        from_profile("train_seeds", "int", "seeds per trained configuration", low=1,
                     high=1000),
        from_profile("train_depth", "int", "convolutions of the trained networks", low=1,
                     high=1000),
        from_profile("train_channels", "int", "channels of the trained networks", low=1,
                     high=4096),
        from_profile("train_image_size", "int", "side of the training images, in pixels",
                     low=1, high=512),
        from_profile("train_steps", "int", "optimizer steps of the case-study runs", low=1,
                     high=10**6),
        Param("train_lr", "float", 0.01,
              "learning rate of the case study (SGD with momentum 0.9)", low=1e-8, high=100.0),
        Param("large_sigma_w", "float", 2.5,
              "sigma_w of the too-large initialization (init normal)", low=0.01, high=100.0),
        Param("nf_scale", "float", 0.2,
              "branch scale s of the normalizer-free residual network (x + s f(x))",
              low=0.0, high=100.0),
        from_profile("agc_steps", "int", "optimizer steps of the AGC runs", low=1,
                     high=10**6),
        Param("agc_lr", "float", 2.0,
              "too-large learning rate of the AGC measurement (plain SGD)", low=1e-8,
              high=100.0),
        Param("agc_healthy_lr", "float", 0.1,
              "learning rate of its healthy twin (plain SGD)", low=1e-8, high=100.0),
        Param("agc_factors", "list[float]", [0.01, 0.04, 0.16],
              "clip factors lambda of adaptive gradient clipping", low=1e-6, high=100.0),
        Param("log_every", "int", 50, "steps between test evaluations of a training run",
              low=1, high=10**6),
    ),
    {
        "quick": dict(seeds=2, depth=6, channels=8, image_size=4, train_seeds=2,
                      train_depth=3, train_channels=4, train_image_size=4, train_steps=12,
                      agc_steps=12),
        "default": dict(seeds=6, depth=20, channels=16, image_size=8, train_seeds=3,
                        train_depth=8, train_channels=16, train_image_size=6, train_steps=130,
                        agc_steps=80),
        "full": dict(seeds=20, depth=50, channels=64, image_size=8, train_seeds=10,
                     train_depth=8, train_channels=16, train_image_size=6, train_steps=400,
                     agc_steps=300),
    },
)

BY = depth.BY
#: The Depth chapter's standard, as its test of the MLP states it: measured and predicted
#: per-layer factors agree within 3 % (tests/experiments/test_feedforward.py).
TOLERANCE = 0.03
#: Fraction of the logged steps whose mean loss is a run's final training loss.
TAIL = 0.1
#: The grid keys that name a training configuration on the page, in label order.
GRID = ("init", "sigma_w", "normalization", "residual", "residual_scale", "lr", "clip",
        "clip_threshold")
INIT_NAMES = {"he": "He", "xavier": "Xavier", "orthogonal": "orthogonal", "lsuv": "LSUV",
              "default": "PyTorch default"}


def fan_in(P: Params) -> int:
    """Fan-in of a hidden convolution: input channels x kernel area (Xiao et al. 2018)."""
    return P.channels * P.kernel_size**2


# --------------------------------------------------------------------------- 1. mean field

def predicted_factor(activation: str, sigma_w: float, P: Params) -> float:
    """The predicted per-layer factor of ||delta^l||, towards the input, reduced by the
    measurement's estimator: exp(-slope) of the least-squares line through ln of the
    Depth chapter's predicted profile (:func:`.depth.predicted_profile`).  For ReLU it is
    sqrt(chi_1) exactly; for tanh it weighs the layers where q^l still relaxes as the
    fit of the measured norms does."""
    layers, rel = depth.predicted_profile(activation, sigma_w, P)
    return float(np.exp(-growth.log_slope(layers, np.log(rel))))


def factor_table(layers: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per (activation, sigma_w): chi_1 at the fixed point, the predicted and the measured
    per-layer factor of ||delta|| (mean and sd over seeds) and the relative error."""
    table = growth.growth_table(layers, "delta_norm",
                                lambda a, s: predicted_factor(a, s, P))
    table.insert(2, "chi1", [theory.chi1(a, s, P.sigma_b)
                             for a, s in zip(table.activation, table.sigma_w, strict=True)])
    return table


def factor_numbers(layers: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 1."""
    table = factor_table(layers, P)
    err = table["rel_error"].abs()
    relu, tanh = (table[table.activation == a].sort_values("sigma_w") for a in ("relu", "tanh"))
    numbers = {"cnn_depth": P.depth, "cnn_channels": P.channels, "cnn_kernel": P.kernel_size,
               "cnn_fan_in": fan_in(P), "cnn_image": P.image_size, "cnn_seeds": P.seeds,
               "cnn_batch": P.batch_size,
               "cnn_worst_error_pct": f"{100 * err.max():.1f}",
               "cnn_tolerance_pct": f"{100 * TOLERANCE:g}",
               "cnn_n_within": f"{int((err <= TOLERANCE).sum())} of {len(table)}",
               "cnn_relu_worst_pct": f"{100 * err[table.activation == 'relu'].max():.1f}",
               "cnn_tanh_worst_pct": f"{100 * err[table.activation == 'tanh'].max():.1f}",
               "cnn_relu_sd": f"{relu['std'].median():.3f}",
               "cnn_tanh_sd": f"{tanh['std'].median():.3f}"}
    crit = relu[np.isclose(relu.sigma_w, 2**0.5, atol=1e-3)]
    if len(crit):
        numbers["cnn_relu_crit_factor"] = f"{crit['mean'].iloc[0]:.3f}"
    for name, sub in (("relu", relu), ("tanh", tanh)):
        top = sub.iloc[-1]
        numbers.update({f"cnn_{name}_top_sigma": f"{top.sigma_w:g}",
                        f"cnn_{name}_top_factor": f"{top['mean']:.3f}",
                        f"cnn_{name}_top_pred": f"{top.predicted:.3f}",
                        f"cnn_{name}_top_total": readable.number(top["mean"] ** (P.depth - 1))})
    return numbers


def factor_display(layers: pd.DataFrame, P: Params):
    """The measured-against-predicted table as the page shows it."""
    table = factor_table(layers, P)
    shown = pd.DataFrame({
        "activation": table.activation, "σ_w": table.sigma_w.map("{:g}".format),
        "χ₁": table.chi1.map("{:.3f}".format),
        "predicted factor": table.predicted.map("{:.4f}".format),
        "measured factor": [f"{m:.4f} ± {s:.4f}" for m, s in zip(table["mean"], table["std"],
                                                                strict=True)],
        "relative error": [f"{100 * e:+.1f} %" for e in table.rel_error]})
    return readable.table(shown)


def fig_profiles(layers: pd.DataFrame, P: Params) -> plt.Figure:
    """||delta^l|| / ||delta^L|| per convolution for ReLU and tanh, with the mean-field
    predictions dashed."""
    rel = depth.with_relative(layers)
    fig, axes = plots.figure(2, 1, height=7.4, sharex=True)
    for ax, act in zip(axes, ["relu", "tanh"], strict=True):
        depth.profile_panel(ax, rel, act, P)
        ax.set_title(f"{act}, {P.channels} channels, {P.kernel_size}×{P.kernel_size} kernels")
        ax.set_ylabel(r"$\|\delta^l\| \,/\, \|\delta^L\|$")
        plots.log_axis(ax)
        plots.theory_legend(ax)
    axes[0].set_xlabel("")
    axes[1].set_xlabel("convolution (counted from the input)")
    return fig


# --------------------------------------------------------------------------- training runs

def _set(config: dict, key: str) -> bool:
    """Whether a sweep's row set the grid key ``key`` (unset keys are missing or NaN)."""
    value = config.get(key)
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def case_label(config: dict) -> str:
    """A reader's name for a training configuration given by the grid keys ``GRID``
    (missing or NaN keys were not set)."""
    has = lambda key: _set(config, key)  # noqa: E731
    parts = []
    if has("init"):
        parts.append(f"σ_w = {config['sigma_w']:g}" if config["init"] == "normal"
                     else INIT_NAMES[config["init"]])
    if has("normalization") and config["normalization"] != "none":
        parts.append(f"{config['normalization']} norm")
    if has("residual") and bool(config["residual"]):
        scale = config["residual_scale"] if has("residual_scale") else 1.0
        parts.append(f"residual, s = {scale:g}")
    if has("lr"):
        parts.append(f"lr {config['lr']:g}")
    if has("clip") and config["clip"] != "none":
        parts.append(f"AGC λ = {config['clip_threshold']:g}" if config["clip"] == "agc"
                     else f"{config['clip']} clipping {config['clip_threshold']:g}")
    return " + ".join(parts)


def labelled(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with a ``case`` column, :func:`case_label` of its grid keys."""
    keys = [k for k in GRID if k in runs]
    return runs.assign(case=[case_label(c) for c in runs[keys].to_dict("records")])


def outcomes(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (case, seed): :func:`..study.outcomes.run_outcomes`, the final training
    loss being the mean over the last ``TAIL`` of the logged steps; cases in the order
    they were run."""
    out = run_outcomes(labelled(runs), ["case"], tail=TAIL)
    order = list(dict.fromkeys(labelled(runs)["case"]))
    return out.sort_values("case", key=lambda c: c.map(order.index), kind="stable")


def majority_accuracy(P: Params) -> float:
    """Test accuracy of always predicting the most frequent class of the training task:
    the level of a network that learned nothing about the images."""
    config = get("training").resolve({"architecture": "cnn",
                                      "image_size": P.train_image_size})
    y = make_data(config).y_test
    return float(torch.bincount(y).max() / len(y))


def _case(out: pd.DataFrame, label: str) -> pd.DataFrame:
    return out[out["case"] == label]


def _acc(g: pd.DataFrame) -> str:
    return med_range(g["final_accuracy"], "{:.2f}")


def outcome_display(*tables: pd.DataFrame):
    """The outcome table of training sweeps, a row per configuration: how many seeds
    diverged and when, the first step's gradient norm, and the final training loss and
    test accuracy of the others (median [min, max])."""
    out = pd.concat([outcomes(t) for t in tables], ignore_index=True)
    rows = []
    for case, g in out.groupby("case", sort=False):
        steps = g.loc[g.diverged, "diverged_step"]
        rows.append({"configuration": case, "diverged": k_of_n(g.diverged),
                     "at step": med_range(steps, "{:g}"),
                     "initial gradient norm": readable.number(g.first_grad_norm.median()),
                     "final training loss": med_range(g.final_loss, "{:.2f}"),
                     "final test accuracy": _acc(g)})
    return readable.table(pd.DataFrame(rows))


def _legible_legend(ax: plt.Axes) -> None:
    """The book's legend size on a legend drawn smaller (:func:`..study.plots.loss_panel`)."""
    for text in ax.get_legend().get_texts():
        text.set_fontsize(plt.rcParams["legend.fontsize"])


def fig_training(case_runs: pd.DataFrame, arch_runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Training loss of every case: the initializations (top), and the too-large
    initialization with batch norm and He with residual branches (bottom)."""
    fig, axes = plots.figure(2, 1, height=7.6, sharex=True)
    for ax, runs, title in ((axes[0], case_runs, "initialization"),
                            (axes[1], arch_runs, "batch norm and residual branches")):
        runs = labelled(runs)
        cases = list(dict.fromkeys(runs["case"]))
        plots.loss_panel(ax, runs, "case", cases, {c: c for c in cases}, title=title)
        _legible_legend(ax)
        plots.log_axis(ax)
        ax.set_ylabel("training loss")
    axes[0].set_xlabel("")
    return fig


# --------------------------------------------------------------------------- 2. case study

def case_numbers(case_runs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the case study (Measurement 2)."""
    out = outcomes(case_runs)
    large = _case(out, case_label({"init": "normal", "sigma_w": P.large_sigma_w}))
    he, xavier = _case(out, "He"), _case(out, "Xavier")
    steps = large.loc[large.diverged, "diverged_step"]
    return {
        "cnn_train_depth": P.train_depth, "cnn_train_channels": P.train_channels,
        "cnn_train_image": P.train_image_size, "cnn_train_steps": P.train_steps,
        "cnn_train_lr": f"{P.train_lr:g}", "cnn_train_seeds": P.train_seeds,
        "cnn_batch_size": P.batch_size,
        "cnn_large_sigma": f"{P.large_sigma_w:g}",
        "cnn_large_chi": f"{theory.chi1('relu', P.large_sigma_w, 0.0):.3g}",
        "cnn_large_total": readable.number(
            theory.depth_gain(theory.chi1("relu", P.large_sigma_w, 0.0), P.train_depth)),
        "cnn_large_div": k_of_n(large.diverged),
        "cnn_large_step": med_range(steps, "{:g}"),
        "cnn_large_grad0": readable.number(large.first_grad_norm.median()),
        "cnn_large_grad_ratio": readable.number(
            large.first_grad_norm.median() / he.first_grad_norm.median()),
        "cnn_he_grad0": readable.number(he.first_grad_norm.median()),
        "cnn_xavier_grad0": readable.number(xavier.first_grad_norm.median()),
        "cnn_he_div": k_of_n(he.diverged), "cnn_xavier_div": k_of_n(xavier.diverged),
        "cnn_he_acc": _acc(he), "cnn_xavier_acc": _acc(xavier),
        "cnn_xavier_chi": f"{theory.chi1('relu', 1.0, 0.0):.2g}",
        "cnn_majority": f"{majority_accuracy(P):.2f}",
    }


# --------------------------------------------------------------------------- 3. bn, residual

def block_label(config: dict) -> str:
    """The name of an initialization-time variant (grid keys normalization, residual,
    residual_scale)."""
    return case_label({"init": "he", **config})


def block_table(blocks: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per variant: the measured factor per convolution on ||delta||^2 (mean and sd over
    seeds) and on the forward signal q, beside the mean-field values where there is one:
    1 for He (chi_1), pi/(pi-1) for batch norm (Yang et al. 2019), 1 + s^2 for a
    residual branch of scale s under gradient independence, and the forward recursion
    with the branch's mean (:func:`.architecture.recursion_factor`)."""
    keys = [k for k in ("normalization", "residual", "residual_scale") if k in blocks]
    configs = {}
    for config in blocks[keys].to_dict("records"):
        configs.setdefault(block_label(config), config)
    named = blocks.assign(case=[block_label(c) for c in blocks[keys].to_dict("records")])
    back = growth.growth_per_layer(named, "delta_norm", ["case"])
    back["growth"] = back["growth"] ** 2
    fwd = growth.growth_per_layer(named, "preact_var", ["case"])
    fwd["growth"] = 1 / fwd["growth"]  # the forward signal grows towards the output
    table = growth.spread(back, "growth", ["case"])[["case", "mean", "std"]]
    table["forward"] = growth.spread(fwd, "growth", ["case"])["mean"].to_numpy()
    rows = []
    for case in table["case"]:
        c = configs[case]
        residual = _set(c, "residual") and bool(c["residual"])
        scale = float(c["residual_scale"]) if _set(c, "residual_scale") else 1.0
        batch = _set(c, "normalization") and c["normalization"] == "batch"
        if residual and not batch:
            rows.append((theory.residual_chi(scale),
                         architecture.recursion_factor(scale, P.depth)))
        elif batch and not residual:
            rows.append((theory.BATCHNORM_RELU_CHI, np.nan))
        elif not residual and not batch:
            rows.append((theory.chi1("relu", 2**0.5, 0.0), np.nan))
        else:
            rows.append((np.nan, np.nan))
    table["predicted"], table["recursion"] = zip(*rows, strict=True)
    return table


def block_numbers(blocks: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 3 at initialization."""
    t = block_table(blocks, P).set_index("case")
    he, bn = block_label({}), block_label({"normalization": "batch"})
    res1 = block_label({"residual": True})
    nf = block_label({"residual": True, "residual_scale": P.nf_scale})
    resbn = block_label({"residual": True, "normalization": "batch"})
    numbers = {"cnn_nf_scale": f"{P.nf_scale:g}",
               "cnn_bn_pred": f"{theory.BATCHNORM_RELU_CHI:.3f}"}
    for key, case in (("he", he), ("bn", bn), ("res1", res1), ("nf", nf), ("resbn", resbn)):
        if case in t.index:
            numbers[f"cnn_{key}_f"] = f"{t.loc[case, 'mean']:.3f}"
            numbers[f"cnn_{key}_f_sd"] = f"{t.loc[case, 'std']:.3f}"
            numbers[f"cnn_{key}_fwd"] = f"{t.loc[case, 'forward']:.3f}"
            numbers[f"cnn_{key}_total"] = readable.number(
                theory.depth_gain(t.loc[case, "mean"], P.train_depth))
    for key, case in (("res1", res1), ("nf", nf)):
        if case in t.index:
            numbers[f"cnn_{key}_naive"] = f"{t.loc[case, 'predicted']:.3f}"
            numbers[f"cnn_{key}_rec"] = f"{t.loc[case, 'recursion']:.3f}"
    if bn in t.index:
        numbers["cnn_bn_error_pct"] = \
            f"{100 * (t.loc[bn, 'mean'] / theory.BATCHNORM_RELU_CHI - 1):+.1f}"
    return numbers


def block_display(blocks: pd.DataFrame, P: Params):
    """The factors at initialization as the page shows them."""
    t = block_table(blocks, P)
    shown = pd.DataFrame({
        "network (He)": t.case.str.replace("He + ", "").str.replace("He", "plain"),
        "backward, on ‖δ‖²": [f"{m:.3f} ± {s:.3f}" for m, s in zip(t["mean"], t["std"],
                                                                  strict=True)],
        "mean field": t.predicted, "forward, on q": t.forward,
        "forward recursion": t.recursion})
    return readable.table(shown, digits=3)


def variant_numbers(case_runs: pd.DataFrame, arch_runs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 3 in training."""
    out = outcomes(arch_runs)
    he = _case(outcomes(case_runs), "He")
    bn = _case(out, case_label({"init": "normal", "sigma_w": P.large_sigma_w,
                                "normalization": "batch"}))
    res1 = _case(out, case_label({"init": "he", "residual": True}))
    nf = _case(out, case_label({"init": "he", "residual": True,
                                "residual_scale": P.nf_scale}))
    loss = lambda g: med_range(g.final_loss, "{:.2f}")  # noqa: E731
    return {"cnn_bnlarge_div": k_of_n(bn.diverged), "cnn_bnlarge_acc": _acc(bn),
            "cnn_bnlarge_loss": loss(bn), "cnn_he_loss": loss(he),
            "cnn_res1_div": k_of_n(res1.diverged), "cnn_res1_acc": _acc(res1),
            "cnn_res1_loss": loss(res1),
            "cnn_res1_grad0": readable.number(res1.first_grad_norm.median()),
            "cnn_res1_grad_ratio": readable.number(
                res1.first_grad_norm.median() / he.first_grad_norm.median()),
            "cnn_nf_div": k_of_n(nf.diverged), "cnn_nf_acc": _acc(nf), "cnn_nf_loss": loss(nf),
            "cnn_nf_grad0": readable.number(nf.first_grad_norm.median())}


# --------------------------------------------------------------------------- 4. AGC

def agc_numbers(agc_runs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 4."""
    out = outcomes(agc_runs)
    twin = _case(out, case_label({"lr": P.agc_healthy_lr}))
    bare = _case(out, case_label({"lr": P.agc_lr}))
    clipped = out[out["case"].str.contains("AGC")]
    numbers = {"cnn_agc_lr": f"{P.agc_lr:g}", "cnn_agc_healthy_lr": f"{P.agc_healthy_lr:g}",
               "cnn_agc_steps": P.agc_steps,
               "cnn_agc_lambdas": ", ".join(f"{f:g}" for f in P.agc_factors),
               "cnn_agc_ratio": f"{P.agc_lr / P.agc_healthy_lr:g}",
               "cnn_agc_twin_div": k_of_n(twin.diverged), "cnn_agc_twin_acc": _acc(twin),
               "cnn_agc_twin_loss": med_range(twin.final_loss, "{:.2f}"),
               "cnn_agc_none_div": k_of_n(bare.diverged),
               "cnn_agc_none_acc": _acc(bare),
               "cnn_agc_clipped_div": f"{int(clipped.diverged.sum())} of {len(clipped)}",
               "cnn_agc_clipped_acc": _acc(clipped),
               "cnn_agc_clipped_loss": med_range(clipped.final_loss, "{:.2f}")}
    low = min(P.agc_factors)
    g = _case(out, case_label({"lr": P.agc_lr, "clip": "agc", "clip_threshold": low}))
    numbers.update({"cnn_agc_low_lambda": f"{low:g}",
                    "cnn_agc_low_loss": med_range(g.final_loss, "{:.2f}")})
    return numbers


def fig_agc(agc_runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Final test accuracy of every seed per configuration, diverged seeds as crosses at
    the top, the majority-class level dashed."""
    out = outcomes(agc_runs)
    cases = list(dict.fromkeys(out["case"]))
    fig, ax = plots.figure(1, 1, height=3.8)
    for i, case in enumerate(cases):
        g = out[out["case"] == case]
        s = plots.style(i)
        jitter = np.linspace(-0.12, 0.12, len(g)) if len(g) > 1 else np.zeros(1)
        ok = ~g.diverged.to_numpy()
        ax.scatter(i + jitter[ok], g.final_accuracy.to_numpy()[ok], color=s["color"],
                   marker=s["marker"], s=40, zorder=3)
        ax.scatter(i + jitter[~ok], np.full((~ok).sum(), 0.95), marker="X", s=80,
                   color=s["color"], transform=ax.get_xaxis_transform(), zorder=4)
    majority = majority_accuracy(P)
    ax.axhline(majority, color="black", linestyle="--", linewidth=1)
    top = 1.25 * max(out.final_accuracy.max(skipna=True), majority)
    ax.set_ylim(0, top)  # the crosses sit in a band above every accuracy
    ax.axhline(0.9 * top, color="0.7", linewidth=0.6)
    ax.set_xticks(range(len(cases)),
                  [c.replace(" + AGC", "\nAGC").replace("lr ", "lr = ") for c in cases])
    ax.set_ylabel("final test accuracy")
    handles = [plt.Line2D([], [], color="gray", marker="X", linestyle="", markersize=9),
               plt.Line2D([], [], color="black", linestyle="--")]
    ax.legend(handles, ["diverged (NaN/Inf), one per seed", "most frequent class"],
              loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
    return fig
