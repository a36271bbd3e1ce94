"""Normalization: what batch norm and layer norm do to the gradient at initialization and
in training, and what unnormalized inputs do.

The page runs two ``signal_propagation`` sweeps (normalization x batch size; batch norm
over sigma_w) and two ``training`` sweeps (normalization x learning rate; input scale
spread x learning rate), all visible on it; this module turns their tables into the
page's numbers, tables and figures.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import theory
from ..engine.params import Param
from ..models.mlp import NORMALIZATIONS
from ..study import growth, outcomes, plots
from . import Chapter, Params
from ._shared import SEEDS, WIDTH, from_profile

CHAPTER = Chapter(
    "normalization",
    (
        SEEDS,
        from_profile(
            "depth", "int", "hidden layers in the signal-propagation measurements", low=2, high=1000
        ),
        WIDTH,
        from_profile(
            "batch_sizes",
            "list[int]",
            "batch sizes for batch norm's explosion rate",
            low=2,
            high=65536,
        ),
        Param(
            "scale_sigma_w",
            "list[float]",
            [0.5, 1.4142, 3.0],
            "sigma_w values of the weight-scale measurement under batch norm",
            low=0.01,
            high=10.0,
        ),
        Param(
            "scale_batch_size",
            "int",
            64,
            "batch size of the weight-scale measurement",
            low=2,
            high=65536,
        ),
        from_profile("train_seeds", "int", "seeds per configuration in training", low=1, high=1000),
        Param(
            "train_depth", "int", 30, "hidden layers of the trained ReLU network", low=1, high=1000
        ),
        Param("train_width", "int", 64, "width of the trained network", low=2, high=8192),
        from_profile("train_steps", "int", "optimizer steps", low=1, high=10**6),
        Param(
            "train_lrs",
            "list[float]",
            [0.01, 0.1],
            "learning rates (SGD with momentum 0.9)",
            low=1e-8,
            high=100.0,
        ),
        from_profile(
            "input_spreads",
            "list[float]",
            "largest/smallest feature scale ratios",
            low=1.0,
            high=1e6,
        ),
        from_profile(
            "input_lrs",
            "list[float]",
            "learning rates of the input-scale sweep (plain SGD)",
            low=1e-8,
            high=100.0,
        ),
    ),
    {
        "quick": dict(
            seeds=2,
            depth=8,
            width=64,
            batch_sizes=[16, 64],
            train_seeds=1,
            train_steps=20,
            input_spreads=[1.0, 100.0],
            input_lrs=[0.01, 0.1],
        ),
        "default": dict(
            seeds=4,
            depth=30,
            width=256,
            batch_sizes=[16, 64, 256],
            train_seeds=2,
            train_steps=200,
            input_spreads=[1.0, 10.0, 100.0],
            input_lrs=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
        ),
        "full": dict(
            seeds=10,
            depth=50,
            width=1024,
            batch_sizes=[16, 64, 256, 1024],
            train_seeds=5,
            train_steps=1000,
            input_spreads=[1.0, 3.0, 10.0, 30.0, 100.0, 1000.0],
            input_lrs=[10 ** (k / 4) for k in range(-20, 1)],
        ),
    },
)

#: Labels of the normalizations in the figures.
LABELS = {"none": "no normalization", "batch": "batch norm", "layer": "layer norm"}


def squared_rates(layers: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group: mean, sd, min, max and count over seeds of lambda, the per-layer factor
    on the squared gradient norm."""
    rate = growth.growth_per_layer(layers, "delta_norm", by)
    rate["lambda"] = rate["growth"] ** 2
    return growth.spread(rate, "lambda", by)


def mid_batch(P: Params) -> int:
    """The middle batch size of the sweep (the one the per-layer figure shows)."""
    return sorted(P.batch_sizes)[len(P.batch_sizes) // 2]


def init_rates(layers: pd.DataFrame) -> pd.DataFrame:
    """:func:`squared_rates` per (normalization, batch size)."""
    return squared_rates(layers, ["normalization", "batch_size"])


def init_display(layers: pd.DataFrame, P: Params):
    """The rate table as the page shows it."""
    return init_rates(layers).rename(columns={
        "mean": "factor on ||delta||^2 (mean)", "std": "sd", "count": "seeds"}
    ).style.format(precision=3).hide()


def init_numbers(layers: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 1: each normalization's rate at the middle batch
    size, and batch norm's at the largest, against the large-batch theory."""
    rates, mid, largest = init_rates(layers), mid_batch(P), max(P.batch_sizes)
    target = theory.BATCHNORM_RELU_CHI
    numbers = {"norm_depth": P.depth, "norm_width": P.width, "norm_seeds": P.seeds,
               "norm_target": f"{target:.3f}", "norm_mid_batch": mid}
    for _, row in rates[rates.batch_size == mid].iterrows():
        numbers[f"norm_{row.normalization}_mid"] = f"{row['mean']:.3f}"
    bn = rates[rates.normalization == "batch"]
    bn_large = bn[bn.batch_size == largest]["mean"].iloc[0]
    bn_mid = bn[bn.batch_size == mid]["mean"].iloc[0]
    numbers.update({
        "norm_largest_batch": largest, "norm_bn_largest": f"{bn_large:.3f}",
        "norm_bn_largest_err": f"{100 * (bn_large / target - 1):+.1f}",
        "norm_bn_mid": f"{bn_mid:.3f}", "norm_bn_total": f"{bn_mid ** ((P.depth - 1) / 2):.3g}"})
    return numbers


def fig_init(layers: pd.DataFrame, P: Params) -> plt.Figure:
    """Gradient per layer at the middle batch size with the batch-norm prediction, and
    each normalization's rate against batch size."""
    target, mid = theory.BATCHNORM_RELU_CHI, mid_batch(P)
    sub = layers[layers.batch_size == mid].copy()
    sub["rel"] = growth.relative_to_last(sub, "delta_norm", ["normalization"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    plots.per_layer(axes[0], sub, "rel", "normalization", LABELS)
    layer = np.arange(1, P.depth + 1)
    axes[0].plot(layer, target ** ((P.depth - layer) / 2), "k--", linewidth=1,
                 label=r"$(\pi/(\pi-1))^{(L-l)/2}$")
    axes[0].set_ylabel(r"$\|\delta^l\| \,/\, \|\delta^L\|$")
    axes[0].legend()
    rates = init_rates(layers)
    bn = rates[rates.normalization == "batch"]
    axes[1].errorbar(bn.batch_size, bn["mean"], yerr=bn["std"], marker="o", capsize=3,
                     color=plots.style(1)["color"], label="batch norm, measured")
    for i, n in [(0, "none"), (2, "layer")]:
        r = rates[rates.normalization == n]
        axes[1].errorbar(r.batch_size, r["mean"], yerr=r["std"],
                         marker=plots.style(i)["marker"], capsize=3,
                         color=plots.style(i)["color"], label=f"{n}, measured")
    axes[1].axhline(target, color="black", linestyle="--", linewidth=1,
                    label=r"$\pi/(\pi-1)$ (large-batch theory)")
    axes[1].set_xscale("log")
    axes[1].set_xticks(P.batch_sizes, [str(b) for b in P.batch_sizes])
    axes[1].minorticks_off()
    axes[1].set_xlabel("batch size")
    axes[1].set_ylabel(r"per-layer factor on $\|\delta\|^2$")
    axes[1].legend()
    return fig


def scale_numbers(bn_scale: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 2: the smallest and largest batch-norm rate over
    the weight scales."""
    rates = squared_rates(bn_scale, ["sigma_w"])
    return {"norm_scale_min": f"{rates['mean'].min():.3f}",
            "norm_scale_max": f"{rates['mean'].max():.3f}"}


def lr0(P: Params) -> float:
    """The smallest learning rate of the training sweep (the one the figure shows)."""
    return min(P.train_lrs)


def training_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (normalization, learning rate): the outcome of the training runs."""
    return outcomes.training_table(runs, ["normalization", "lr"])


def training_display(runs: pd.DataFrame, P: Params):
    """The training outcome table as the page shows it (3 digits, learning rates as
    given; a ``format`` with a dict would drop the precision of the other columns)."""
    return training_table(runs).style.format(precision=3).format("{:g}", subset=["lr"]).hide()


def training_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 3: its settings, and per normalization the final
    test accuracy and initial gradient norm at the smallest learning rate."""
    table = training_table(runs)
    numbers = {f"norm_{key}": P[key] for key in ["train_depth", "train_width", "train_steps"]}
    for n in NORMALIZATIONS:
        row = table[(table.normalization == n) & (table.lr == lr0(P))].iloc[0]
        numbers[f"norm_train_{n}_acc"] = f"{row['final test accuracy']:.2f}"
        numbers[f"norm_train_{n}_g0"] = f"{row['initial gradient norm']:.3g}"
    numbers["norm_train_lr0"] = f"{lr0(P):g}"
    return numbers


def fig_training(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Training loss at the smallest learning rate, and each layer's weight-gradient norm
    at step 0, per normalization."""
    at_lr0 = runs[runs.lr == lr0(P)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    plots.per_step(axes[0], at_lr0, "loss", "normalization", {n: n for n in NORMALIZATIONS})
    for i, n in enumerate(NORMALIZATIONS):
        first = at_lr0[(at_lr0.normalization == n) & (at_lr0.layer >= 1)]
        step0 = first[first.step == 0].groupby("layer").grad_norm.median()
        axes[1].plot(step0.index, step0.values, label=n, **plots.style(i))
    axes[0].set_ylabel("training loss")
    axes[0].set_title(f"learning rate {lr0(P):g}")
    axes[0].legend()
    axes[1].set_yscale("log")
    axes[1].set_xlabel("layer (counted from the input)")
    axes[1].set_ylabel(r"$\|\partial L/\partial W^l\|$ at step 0")
    axes[1].legend()
    return fig


def inputs_table(inputs: pd.DataFrame) -> pd.DataFrame:
    """Per (input scale spread, learning rate): the outcome of the training runs."""
    return outcomes.training_table(inputs, ["input_scale_spread", "lr"])


def inputs_display(inputs: pd.DataFrame, P: Params):
    """The input-scale outcome table as the page shows it."""
    return inputs_table(inputs).style.format(precision=3).format("{:g}", subset=["lr"]).hide()


def step0_grad_norm(inputs: pd.DataFrame, layer: int) -> pd.Series:
    """Median over runs of ``layer``'s weight-gradient norm at step 0, per spread (the
    last hidden layer is ``inputs.layer.max()``)."""
    first = inputs[(inputs.step == 0) & (inputs.layer == layer)]
    return first.groupby("input_scale_spread").grad_norm.median()


def inputs_numbers(inputs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 4: how the first and the last hidden layer's
    initial gradients grow with the spread, and the largest learning rate at which no
    seed diverged, at the smallest and the largest spread (NaN if there is none)."""
    table = inputs_table(inputs)
    stable = table[table["diverged"].str.startswith("0/")].groupby("input_scale_spread").lr.max()
    first, last = step0_grad_norm(inputs, 1), step0_grad_norm(inputs, inputs.layer.max())
    smin, smax = min(P.input_spreads), max(P.input_spreads)
    return {"norm_in_smax": f"{smax:g}",
            "norm_in_lr_smin": f"{stable.get(smin, float('nan')):g}",
            "norm_in_lr_smax": f"{stable.get(smax, float('nan')):g}",
            "norm_in_g1_ratio": f"{first[smax] / first[smin]:.3g}",
            "norm_in_g3_ratio": f"{last[smax] / last[smin]:.3g}"}


def fig_inputs(inputs: pd.DataFrame, P: Params) -> plt.Figure:
    """Final training loss against learning rate per spread, and the first and last
    hidden layer's initial gradient norm against the spread."""
    table = inputs_table(inputs)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for i, s in enumerate(P.input_spreads):
        sub = table[table.input_scale_spread == s]
        axes[0].plot(sub.lr, sub["final training loss"], label=f"spread {s:g}",
                     **plots.style(i))
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("learning rate (plain SGD)")
    axes[0].set_ylabel("final training loss (missing: diverged)")
    axes[0].legend()
    last = inputs.layer.max()
    for i, (layer, label) in enumerate([(1, "layer 1 (sees the inputs)"),
                                        (last, f"layer {last}")]):
        norms = step0_grad_norm(inputs, layer)
        axes[1].plot(norms.index, norms.values, label=label, **plots.style(i))
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("input scale spread $s$ (largest / smallest feature scale)")
    axes[1].set_ylabel(r"$\|\partial L/\partial W^l\|$ at step 0")
    axes[1].legend()
    return fig
