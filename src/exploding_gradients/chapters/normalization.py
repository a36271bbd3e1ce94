"""Normalization: what batch norm and layer norm do to the gradient at initialization and
in training, and what unnormalized inputs do.

The page runs ``signal_propagation`` sweeps (batch norm over the batch size and the
width, layer norm over activations, batch norm over sigma_w), a ``training`` sweep
(normalization x learning rate) and, for the inputs, ``lr_boundary`` (each seed's
network trained at multiples of its own 2 / lambda_max, on both tasks) with a one-step
``training`` sweep for the first gradients, all visible on it; this module turns their
tables into the page's numbers, tables and figures.
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import theory
from ..activations import ACTIVATIONS
from ..data import feature_scales
from ..engine.params import Param
from ..engine.registry import get
from ..models.mlp import NORMALIZATIONS
from ..study import growth, outcomes, plots
from ..study.readable import number, table
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
        from_profile(
            "bn_widths",
            "list[int]",
            "widths of batch norm's rate at the largest batch size",
            low=2,
            high=8192,
        ),
        from_profile("width_seeds", "int", "seeds per width of that sweep", low=1, high=1000),
        Param(
            "ln_activations",
            "list[str]",
            ["relu", "tanh", "gelu"],
            "activations of the layer-norm measurement",
            choices=tuple(ACTIVATIONS),
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
        from_profile("input_seeds", "int", "seeds per configuration of the input-scale sweep",
                     low=1, high=1000),
        Param(
            "input_tasks",
            "list[str]",
            ["classification", "regression"],
            "tasks of the input-scale sweep",
            choices=("classification", "regression"),  # the MLP's tasks
        ),
        Param(
            "input_ratios",
            "list[float]",
            [1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
            "learning rates of the input-scale sweep, as multiples of each seed's "
            "2 / lambda_max at initialization (plain SGD)",
            low=1e-3,
            high=1e4,
        ),
    ),
    {
        "quick": dict(
            seeds=2,
            depth=8,
            width=64,
            batch_sizes=[16, 64],
            bn_widths=[32, 64],
            width_seeds=1,
            train_seeds=1,
            train_steps=20,
            input_seeds=1,
            input_spreads=[1.0, 100.0],
        ),
        "default": dict(
            seeds=4,
            depth=30,
            width=256,
            batch_sizes=[16, 64, 256],
            bn_widths=[128, 256, 512, 1024],
            width_seeds=2,
            train_seeds=3,
            train_steps=200,
            input_seeds=2,
            input_spreads=[1.0, 10.0, 100.0],
        ),
        "full": dict(
            seeds=10,
            depth=50,
            width=1024,
            batch_sizes=[16, 64, 256, 1024],
            bn_widths=[128, 256, 512, 1024, 2048],
            width_seeds=4,
            train_seeds=5,
            train_steps=1000,
            input_seeds=5,
            input_spreads=[1.0, 3.0, 10.0, 30.0, 100.0, 1000.0],
        ),
    },
)

#: Labels of the normalizations in the figures.
LABELS = {"none": "no normalization", "batch": "batch norm", "layer": "layer norm"}
#: Hidden layers and width of the network of the input-scale measurement.
INPUT_DEPTH, INPUT_WIDTH = 3, 64


def squared_rates(layers: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group: mean, sd, min, max and count over seeds of lambda, the per-layer factor
    on the squared gradient norm."""
    rate = growth.growth_per_layer(layers, "delta_norm", by)
    rate["lambda"] = rate["growth"] ** 2
    return growth.spread(rate, "lambda", by)


def mid_batch(P: Params) -> int:
    """The middle batch size of the sweep (the one the per-layer figure shows)."""
    return sorted(P.batch_sizes)[len(P.batch_sizes) // 2]


def others(P: Params) -> list[str]:
    """The normalizations other than batch norm (measured at the middle batch size)."""
    return [n for n in NORMALIZATIONS if n != "batch"]


def init_rates(layers: pd.DataFrame) -> pd.DataFrame:
    """:func:`squared_rates` per (normalization, batch size)."""
    return squared_rates(layers, ["normalization", "batch_size"])


def init_display(layers: pd.DataFrame, P: Params):
    """The rate table as the page shows it."""
    rates = init_rates(layers).rename(columns={
        "normalization": "normalization", "batch_size": "batch size",
        "mean": "factor on ‖δ‖² per layer (mean)", "std": "sd", "count": "seeds"})
    rates["normalization"] = rates["normalization"].map(LABELS)
    return table(rates.drop(columns=["min", "max"]), digits=4)


def init_numbers(layers: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 1: each normalization's rate at the middle batch
    size, and batch norm's at the largest, against the large-batch theory."""
    rates, mid, largest = init_rates(layers), mid_batch(P), max(P.batch_sizes)
    target = theory.BATCHNORM_RELU_CHI
    numbers = {"norm_depth": P.depth, "norm_width": P.width, "norm_seeds": P.seeds,
               "norm_target": f"{target:.3f}", "norm_mid_batch": mid}
    for _, row in rates[rates.batch_size == mid].iterrows():
        numbers[f"norm_{row.normalization}_mid"] = f"{row['mean']:.3f}"
    bn = rates[rates.normalization == "batch"].set_index("batch_size")
    bn_large, bn_mid = bn.loc[largest, "mean"], bn.loc[mid, "mean"]
    numbers.update({
        "norm_largest_batch": largest, "norm_bn_largest": f"{bn_large:.3f}",
        "norm_bn_largest_sd": f"{bn.loc[largest, 'std']:.3f}",
        "norm_bn_largest_err": f"{100 * (bn_large / target - 1):+.1f}",
        "norm_smallest_batch": min(P.batch_sizes),
        "norm_bn_smallest": f"{bn.loc[min(P.batch_sizes), 'mean']:.3f}",
        "norm_bn_mid": f"{bn_mid:.3f}",
        "norm_bn_total": number(bn_mid ** ((P.depth - 1) / 2))})
    return numbers


def fig_init(layers: pd.DataFrame, P: Params) -> plt.Figure:
    """Gradient per layer at the middle batch size with the batch-norm prediction, and
    batch norm's rate against batch size."""
    target, mid = theory.BATCHNORM_RELU_CHI, mid_batch(P)
    sub = layers[layers.batch_size == mid].copy()
    sub["rel"] = growth.relative_to_last(sub, "delta_norm", ["normalization"])
    fig, axes = plots.figure(1, 2, height=3.6)
    plots.per_layer(axes[0], sub, "rel", "normalization", LABELS)
    layer = np.arange(1, P.depth + 1)
    axes[0].plot(layer, target ** ((P.depth - layer) / 2), "k--", linewidth=1,
                 label="large-batch theory")
    axes[0].set_ylabel(r"$\|\delta^l\| \,/\, \|\delta^L\|$")
    axes[0].set_xlabel("layer")
    axes[0].set_title(f"batch size {mid}")
    plots.log_axis(axes[0])
    axes[0].legend(loc="upper right")
    rates = init_rates(layers)
    bn = rates[rates.normalization == "batch"]
    axes[1].errorbar(bn.batch_size, bn["mean"], yerr=bn["std"], marker="o", capsize=3,
                     color=plots.style(1)["color"], label="batch norm")
    axes[1].axhline(target, color="black", linestyle="--", linewidth=1,
                    label=r"$\pi/(\pi-1)$")
    axes[1].set_xscale("log")
    axes[1].set_xticks(P.batch_sizes, [str(b) for b in P.batch_sizes])
    axes[1].minorticks_off()
    axes[1].set_xlabel("batch size")
    axes[1].set_ylabel(r"factor on $\|\delta\|^2$ per layer")
    axes[1].set_title("batch norm's rate")
    axes[1].legend(loc="upper right")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- width sweep

def spans(P: Params) -> dict[str, tuple[int, int]]:
    """The layer ranges of the width table: the whole network, without layer 1 (which
    sees the raw Gaussian inputs, not normalized ReLU outputs), and the input-side and
    the output-side half of layers 2 .. depth."""
    middle = (P.depth + 2) // 2
    return {"whole": (1, P.depth), "from2": (2, P.depth), "input": (2, middle),
            "output": (middle + 1, P.depth)}


def span_label(span: tuple[int, int]) -> str:
    return f"layers {span[0]}–{span[1]}"


def width_table(widths: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per width: batch norm's rate (mean over seeds) fitted over each of :func:`spans`,
    with the sd over seeds of the whole-network fit."""
    rows = []
    for w, g in widths.groupby("width"):
        row = {"width": w}
        for key, (lo, hi) in spans(P).items():
            rate = squared_rates(g[(g.layer >= lo) & (g.layer <= hi)], ["width"]).iloc[0]
            row[span_label((lo, hi))] = rate["mean"]
            if key == "whole":
                row["sd"] = rate["std"]
        rows.append(row)
    return pd.DataFrame(rows)


def width_display(widths: pd.DataFrame, P: Params):
    """:func:`width_table` as the page shows it."""
    return table(width_table(widths, P), digits=4)


def width_numbers(widths: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the width sweep: the whole-network rate at the narrowest and
    the widest width, and at the widest the rate without layer 1 and over each half."""
    t = width_table(widths, P).set_index("width")
    lo, hi = min(P.bn_widths), max(P.bn_widths)
    sp = spans(P)
    target = theory.BATCHNORM_RELU_CHI

    def rate(width, key):
        return t.loc[width, span_label(sp[key])]

    def err(value):
        return f"{100 * (value / target - 1):+.1f}"

    first = widths[widths.width == hi].pivot(index="layer", columns="seed",
                                             values="delta_norm")
    layer1 = ((first.loc[1] / first.loc[2]) ** 2).mean()
    return {"norm_w_lo": lo, "norm_w_hi": hi, "norm_w_seeds": P.width_seeds,
            "norm_w_rate_lo": f"{rate(lo, 'whole'):.3f}",
            "norm_w_rate_hi": f"{rate(hi, 'whole'):.3f}", "norm_w_err_hi": err(rate(hi, "whole")),
            "norm_w_layer1": f"{layer1:.2f}",
            "norm_w_from2": f"{rate(hi, 'from2'):.3f}", "norm_w_from2_err": err(rate(hi, "from2")),
            "norm_w_out_layers": f"{sp['output'][0]}–{sp['output'][1]}",
            "norm_w_in_layers": f"{sp['input'][0]}–{sp['input'][1]}",
            "norm_w_out": f"{rate(hi, 'output'):.3f}", "norm_w_out_err": err(rate(hi, "output")),
            "norm_w_in": f"{rate(hi, 'input'):.3f}", "norm_w_in_err": err(rate(hi, "input"))}


# --------------------------------------------------------------------------- layer norm

def ln_table(ln: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per activation: the closed form chi_LN and the measured factor on the squared norm.

    The predicted profile under layer norm is exactly geometric (q = 1 at every layer),
    so the least-squares slope the measurement uses returns chi_LN itself."""
    rates = squared_rates(ln, ["activation"]).set_index("activation")
    rows = []
    for a in P.ln_activations:
        chi = theory.layer_norm_chi(a)
        rows.append({"activation": a, "predicted χ_LN": chi,
                     "measured (mean)": rates.loc[a, "mean"], "sd": rates.loc[a, "std"],
                     "error %": 100 * (rates.loc[a, "mean"] / chi - 1),
                     "per layer in norm": rates.loc[a, "mean"] ** 0.5})
    return pd.DataFrame(rows)


def ln_display(ln: pd.DataFrame, P: Params):
    """:func:`ln_table` as the page shows it."""
    return table(ln_table(ln, P), digits=4, formats={"error %": "{:+.1f}"})


def ln_numbers(ln: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the layer-norm measurement, per activation."""
    t = ln_table(ln, P).set_index("activation")
    numbers = {"norm_ln_worst": f"{t['error %'].abs().max():.1f}"}
    for a in P.ln_activations:
        numbers.update({f"norm_ln_{a}_chi": f"{t.loc[a, 'predicted χ_LN']:.3f}",
                        f"norm_ln_{a}": f"{t.loc[a, 'measured (mean)']:.3f}",
                        f"norm_ln_{a}_norm": f"{t.loc[a, 'per layer in norm']:.3f}",
                        f"norm_ln_{a}_total": number(
                            t.loc[a, "measured (mean)"] ** ((P.depth - 1) / 2))})
    return numbers


def fig_layer_norm(ln: pd.DataFrame, P: Params) -> plt.Figure:
    """Gradient per layer under layer norm for each activation, with chi_LN dashed."""
    sub = ln.copy()
    sub["rel"] = growth.relative_to_last(sub, "delta_norm", ["activation"])
    layer = np.arange(1, P.depth + 1)
    predictions = {a: (layer, theory.layer_norm_chi(a) ** ((P.depth - layer) / 2))
                   for a in P.ln_activations}
    fig, ax = plots.figure(1, 1, height=3.4)
    plots.per_layer(ax, sub, "rel", "activation", {a: a for a in P.ln_activations},
                    predictions)
    ax.set_ylabel(r"$\|\delta^l\| \,/\, \|\delta^L\|$")
    ax.set_title(f"layer norm, {P.depth} layers of width {P.width}")
    plots.theory_legend(ax)
    ax.legend(*ax.get_legend_handles_labels(), loc="upper right")
    ax.set_xlabel("layer")
    plots.log_axis(ax)
    fig.tight_layout()
    return fig


def scale_numbers(bn_scale: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the weight-scale measurement: the smallest and largest
    batch-norm rate over the weight scales."""
    rates = squared_rates(bn_scale, ["sigma_w"])
    return {"norm_scale_min": f"{rates['mean'].min():.3f}",
            "norm_scale_max": f"{rates['mean'].max():.3f}",
            "norm_scale_list": ", ".join(f"{s:g}" for s in P.scale_sigma_w),
            "norm_scale_batch": P.scale_batch_size}


# --------------------------------------------------------------------------- training

def lr0(P: Params) -> float:
    """The smallest learning rate of the training sweep (the one the figure shows)."""
    return min(P.train_lrs)


def training_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (normalization, learning rate): the outcome of the training runs."""
    return outcomes.training_table(runs, ["normalization", "lr"])


def training_display(runs: pd.DataFrame, P: Params):
    """The training outcome table as the page shows it."""
    shown = training_table(runs)
    shown["normalization"] = shown["normalization"].map(LABELS)
    return table(shown, formats={"lr": "{:g}"})


def training_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the training measurement: its settings, and per
    normalization and learning rate the final test accuracy (mean over seeds), and the
    initial gradient norm."""
    t = training_table(runs)
    numbers = {f"norm_{key}": P[key] for key in ["train_depth", "train_width", "train_steps",
                                                 "train_seeds"]}
    for n in NORMALIZATIONS:
        for i, lr in enumerate(sorted(P.train_lrs)):
            row = t[(t.normalization == n) & (t.lr == lr)].iloc[0]
            suffix = "" if i == 0 else f"_lr{i}"
            numbers[f"norm_train_{n}_acc{suffix}"] = f"{row['final test accuracy']:.2f}"
        row = t[(t.normalization == n) & (t.lr == lr0(P))].iloc[0]
        numbers[f"norm_train_{n}_g0"] = number(row["initial gradient norm"])
    numbers["norm_train_lr0"] = f"{lr0(P):g}"
    numbers["norm_train_lr1"] = f"{sorted(P.train_lrs)[-1]:g}"
    return numbers


def fig_training(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Training loss at the smallest learning rate, and each layer's weight-gradient norm
    at step 0, per normalization."""
    at_lr0 = runs[runs.lr == lr0(P)]
    fig, axes = plots.figure(1, 2, height=3.6)
    plots.per_step(axes[0], at_lr0, "loss", "normalization", LABELS)
    for i, n in enumerate(NORMALIZATIONS):
        first = at_lr0[(at_lr0.normalization == n) & (at_lr0.layer >= 1)]
        step0 = first[first.step == 0].groupby("layer").grad_norm.median()
        axes[1].plot(step0.index, step0.values, label=LABELS[n], **plots.style(i))
    axes[0].set_ylabel("training loss")
    axes[0].set_title(f"learning rate {lr0(P):g}")
    axes[0].legend(loc="upper right")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("layer")
    axes[1].set_ylabel(r"$\|\partial L/\partial W^l\|$ at step 0")
    axes[1].set_title("first gradient")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- inputs

def mean_square_scale(spread: float) -> float:
    """Mean over the input features of their squared scale: E||x||^2 / d_in for inputs of
    unit variance spread over a factor ``spread`` (the experiments' default d_in)."""
    d_in = get("lr_boundary").resolve({})["d_in"]
    return float((feature_scales(d_in, spread).double() ** 2).mean())


def boundary_seeds(inputs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, spread, seed) of an ``lr_boundary`` table: lambda_max at initialization,
    2 / lambda_max, and the largest ratio below the first diverging one (``r_ok``: NaN if
    the smallest ratio diverged; the largest ratio if none did)."""
    keys = ["task", "input_scale_spread", "lr_ratio"]
    out = outcomes.run_outcomes(inputs, keys).merge(
        inputs.groupby([*keys, "seed"], as_index=False)["lambda_max"].first())
    rows = []
    for (task, s, seed), g in out.groupby(["task", "input_scale_spread", "seed"], sort=False):
        g = g.sort_values("lr_ratio")
        div = g.loc[g["diverged"], "lr_ratio"]
        ok = g.loc[g["lr_ratio"] < div.min(), "lr_ratio"] if len(div) else g["lr_ratio"]
        lam = g["lambda_max"].iloc[0]
        r_ok = ok.max() if len(ok) else np.nan
        rows.append({"task": task, "input_scale_spread": s, "seed": seed, "lambda_max": lam,
                     "stability_lr": 2 / lam, "r_ok": r_ok})
    return pd.DataFrame(rows)


def boundary_table(inputs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, spread): medians over seeds of lambda_max and 2 / lambda_max, the
    largest ratio at which no seed diverged (``r_ok``, the smallest over seeds) and that
    ratio times the median 2 / lambda_max (``lr_ok``)."""
    per = boundary_seeds(inputs)
    out = per.groupby(["task", "input_scale_spread"], sort=False).agg(
        lambda_max=("lambda_max", "median"), stability_lr=("stability_lr", "median"),
        r_ok=("r_ok", "min")).reset_index()
    out["lr_ok"] = out["r_ok"] * out["stability_lr"]
    return out


def inputs_display(inputs: pd.DataFrame, P: Params):
    """The input-scale table as the page shows it."""
    shown = boundary_table(inputs).rename(columns={
        "input_scale_spread": "spread s", "lambda_max": "λ_max at init",
        "stability_lr": "2/λ_max", "r_ok": "largest stable multiple of 2/λ_max",
        "lr_ok": "largest stable learning rate"})
    return table(shown, formats={"spread s": "{:g}"})


def step0_grad_norm(first: pd.DataFrame, layer: int) -> pd.Series:
    """Median over seeds of ``layer``'s weight-gradient norm at step 0, per spread (the
    last hidden layer is ``first.layer.max()``)."""
    rows = first[(first.step == 0) & (first.layer == layer)]
    return rows.groupby("input_scale_spread").grad_norm.median()


def inputs_numbers(inputs: pd.DataFrame, first: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the input-scale measurement: how the first and the last
    hidden layer's initial gradients grow with the spread; per task how lambda_max and
    the largest stable learning rate change from the smallest to the largest spread,
    against the squared spread and the mean squared feature scale."""
    t = boundary_table(inputs).set_index(["task", "input_scale_spread"])
    g1, g3 = step0_grad_norm(first, 1), step0_grad_norm(first, first.layer.max())
    smin, smax = min(P.input_spreads), max(P.input_spreads)
    numbers = {"norm_in_smax": f"{smax:g}", "norm_in_depth": INPUT_DEPTH,
               "norm_in_width": INPUT_WIDTH, "norm_in_seeds": P.input_seeds,
               "norm_in_ratios": ", ".join(f"{r:g}" for r in P.input_ratios),
               "norm_in_g1_ratio": number(g1[smax] / g1[smin]),
               "norm_in_g3_ratio": number(g3[smax] / g3[smin]),
               "norm_in_s2": number((smax / smin) ** 2),
               "norm_in_meansq": number(mean_square_scale(smax) / mean_square_scale(smin))}
    for task in P.input_tasks:
        lo, hi = t.loc[(task, smin)], t.loc[(task, smax)]
        numbers.update({
            f"norm_in_{task}_lam": number(hi.lambda_max / lo.lambda_max),
            f"norm_in_{task}_lr_fall": number(lo.lr_ok / hi.lr_ok),
            f"norm_in_{task}_lr_smin": number(lo.lr_ok),
            f"norm_in_{task}_lr_smax": number(hi.lr_ok),
            f"norm_in_{task}_r_smin": number(lo.r_ok),
            f"norm_in_{task}_r_smax": number(hi.r_ok)})
    return numbers


def fig_inputs(inputs: pd.DataFrame, first: pd.DataFrame, P: Params) -> plt.Figure:
    """Left: per task the largest stable learning rate against the spread, with
    2 / lambda_max at initialization dashed and 1/s^2 dotted; right: the first and last
    hidden layer's initial gradient norm against the spread."""
    t = boundary_table(inputs)
    fig, axes = plots.figure(1, 2, height=3.6)
    ax = axes[0]
    for i, task in enumerate(P.input_tasks):
        sub = t[t.task == task]
        ax.plot(sub.input_scale_spread, sub.lr_ok, label=task, **plots.style(i))
        ax.plot(sub.input_scale_spread, sub.stability_lr, "--", linewidth=1,
                color=plots.style(i)["color"])
    s = np.array(sorted(P.input_spreads))
    start = t[t.input_scale_spread == s[0]].lr_ok.max()
    ax.plot(s, start / (s / s[0]) ** 2, ":", color="gray", label="$1/s^2$")
    handles, labels = ax.get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color="gray", linestyle="--", linewidth=1))
    labels.append(r"$2/\lambda_{\max}$ at init")
    ax.legend(handles, labels, loc="lower left")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input scale spread $s$")
    ax.set_ylabel("largest stable learning rate")
    last = first.layer.max()
    for i, (layer, label) in enumerate([(1, "layer 1"), (last, f"layer {last}")]):
        norms = step0_grad_norm(first, layer)
        axes[1].plot(norms.index, norms.values, label=label, **plots.style(i + 2))
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("input scale spread $s$")
    axes[1].set_ylabel(r"$\|\partial L/\partial W^l\|$ at step 0")
    axes[1].legend(loc="upper left")
    for a in axes:
        a.xaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    fig.tight_layout()
    return fig
