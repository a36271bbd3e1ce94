"""Numerical precision: when a large gradient becomes Inf, and a small one becomes zero.

The page runs one training step of ReLU networks of many depths in float32, bfloat16 and
float16 (against the mean-field prediction of the gradient's size), trains an exploding
and a vanishing network in each format with and without dynamic loss scaling, clips
gradients in the right and the wrong order under loss scaling, and times each format;
this module turns their tables into the page's numbers, tables and figures.
"""

from __future__ import annotations

import functools
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from .. import theory
from ..engine.params import Param
from ..engine.registry import get
from ..experiments.feedforward import make_data
from ..monitor import first_nonfinite_layer
from ..precision import PRECISIONS, Precision, limits
from ..study import plots
from ..study.outcomes import k_of_n, run_outcomes, steps_only
from ..study.readable import number, table
from . import Chapter, Params
from ._shared import BATCH, SEEDS, from_profile

CHAPTER = Chapter(
    "precision",
    (
        SEEDS,
        Param("width", "int", 64, "units per hidden layer", low=2, high=8192),
        BATCH,
        Param("overflow_sigma_w", "float", 2.0,
              "sigma_w of the exploding ReLU network (chi_1 is sigma_w^2/2, here 2)", low=0.01,
              high=10.0),
        Param("underflow_sigma_w", "float", 0.8,
              "sigma_w of the vanishing ReLU network (chi_1 here 0.32)", low=0.01, high=10.0),
        from_profile("depths", "list[int]", "depths of the one-step sweep of both networks",
                     low=1, high=400),
        Param("overflow_depth", "int", 22, "hidden layers of the exploding network trained",
              low=1, high=400),
        Param("forward_depth", "int", 32,
              "hidden layers of the exploding network whose forward pass overflows float16",
              low=1, high=400),
        Param("underflow_depth", "int", 24, "hidden layers of the vanishing network trained",
              low=1, high=400),
        Param("lr", "float", 3e-3, "Adam's learning rate for the exploding and vanishing "
              "networks", low=1e-8, high=10.0),
        Param("n_train", "int", 512, "training samples of the regression task", low=1,
              high=10**6),
        from_profile("steps", "int", "optimizer steps of the exploding and vanishing runs",
                     low=1, high=10**6),
        Param("clip_depth", "int", 4, "hidden layers of the clipped network (He init)", low=1,
              high=1000),
        Param("clip_lr", "float", 0.2,
              "too-large plain-SGD learning rate of the clipped network", low=1e-8, high=100.0),
        Param("clip_threshold", "float", 1.0, "largest gradient norm of norm clipping",
              low=1e-12, high=1e12),
        from_profile("clip_steps", "int", "optimizer steps of each clipped run", low=1,
                     high=10**6),
        Param("timing_depth", "int", 8, "hidden layers of the healthy network timed", low=1,
              high=1000),
        from_profile("timing_steps", "list[int]",
                     "the two run lengths whose difference in time gives the time per step",
                     low=1, high=10**6),
        from_profile("timing_rounds", "int", "interleaved rounds of the timing", low=1,
                     high=100),
    ),
    {
        "quick": dict(seeds=2, depths=[14, 18, 22, 26], steps=12, clip_steps=20,
                      timing_steps=[2, 6], timing_rounds=1),
        "default": dict(seeds=3, depths=list(range(12, 31, 2)), steps=100, clip_steps=100,
                        timing_steps=[5, 20], timing_rounds=3),
        "full": dict(seeds=10, depths=list(range(10, 33)), steps=300, clip_steps=300,
                     timing_steps=[10, 50], timing_rounds=7),
    },
)

NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
SCALED = "float16 + loss scaling"
#: The four ways of computing the page compares, in the order it shows them.
VARIANTS = [*NAMES.values(), SCALED]
FP16 = limits("fp16")
#: A run "learned" when its final test loss is below this fraction of its first.
LEARNED = 0.5


#: How a run ended (``cause`` of a training table), in words.
CAUSES = {"nan_loss": "a NaN loss", "inf_loss": "an infinite loss",
          "nan_grad": "a NaN gradient", "inf_grad": "an infinite gradient"}


def causes(runs: pd.DataFrame) -> str:
    """The distinct ways the runs of ``runs`` ended, in words ("a NaN loss", ...)."""
    ended = steps_only(runs).groupby("seed")["cause"].first()
    return " or ".join(CAUSES[c] for c in sorted(set(ended)) if c in CAUSES) or "none"


def variant(precision: str, loss_scaling: str = "none") -> str:
    """A run's number format as the page names it: "float16 + loss scaling", ..."""
    return NAMES[precision] + (" + loss scaling" if loss_scaling == "dynamic" else "")


def with_variant(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` (a sweep over ``precision`` and ``loss_scaling``) with a ``variant`` column."""
    scaling = runs["loss_scaling"] if "loss_scaling" in runs else "none"
    return runs.assign(variant=[variant(p, s) for p, s in
                                zip(runs["precision"], pd.Series(scaling, index=runs.index),
                                    strict=True)])


def spread(values, fmt: str | None = None) -> str:
    """"median [min, max]" over seeds, as :func:`..study.outcomes.med_range` writes it,
    but with numbers written for readers (:func:`..study.readable.number`, or ``fmt``)
    and the one value alone when every seed gave the same; "–" when there is none."""
    values = pd.Series(values, dtype=float).dropna()
    if values.empty:
        return "–"
    write = fmt.format if fmt else number
    low, mid, high = (write(v) for v in (values.min(), values.median(), values.max()))
    return mid if low == high else f"{mid} [{low}, {high}]"


def depth_spread(values) -> str:
    """A depth per seed, for prose: "18", or "18 (18 to 20 over seeds)"."""
    values = pd.Series(values, dtype=float).dropna()
    if values.empty:
        return "none of the depths tried"
    mid = f"{values.median():.0f}"
    if values.min() == values.max():
        return mid
    return f"{mid} ({values.min():.0f} to {values.max():.0f} over seeds)"


def scales(values) -> str:
    """The loss scales the seeds' runs ended with: "2⁻⁷", or "2⁻⁷ to 2⁻⁴ (by seed)"."""
    values = sorted(set(pd.Series(values, dtype=float).dropna()))
    if not values:
        return "–"
    if len(values) == 1:
        return power_of_two(values[0])
    return f"{power_of_two(values[0])} to {power_of_two(values[-1])} (by seed)"


def power_of_two(value: float) -> str:
    """2^k written for readers (2⁻⁷), or the number if it is not a power of two."""
    k = math.log2(value) if value > 0 else math.nan
    if math.isfinite(k) and k == round(k):
        return "2" + str(int(k)).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return number(value)


# --------------------------------------------------------------------------- theory

@functools.cache
def task_moments(n_train: int) -> tuple[float, float]:
    """(mean squared input, target variance) of the regression task's training set: what
    the prediction needs to know of the data."""
    data = make_data(get("training").resolve({"task": "regression", "n_train": n_train}))
    return float(data.x_train.pow(2).mean()), float(data.y_train.var(unbiased=False))


def predicted_entries(sigma_w: float, max_depth: int, P: Params, n_train: int
                      ) -> pd.DataFrame:
    """:func:`..theory.gradient_entries_by_depth` for the page's ReLU networks (one output,
    the regression task's input and target moments)."""
    return _entries(sigma_w, max_depth, P.batch_size, P.width, n_train).copy()


@functools.cache
def _entries(sigma_w: float, max_depth: int, batch_size: int, width: int,
             n_train: int) -> pd.DataFrame:
    input_q, target_var = task_moments(n_train)
    return theory.gradient_entries_by_depth("relu", sigma_w, 0.0, max_depth, batch_size, 1,
                                            width, input_q, target_var)


def first_depth(depths, values, limit: float, above: bool) -> float:
    """The first of ``depths`` whose value reaches ``limit`` (``above``) or falls below
    it; NaN if none does."""
    for depth, value in zip(depths, values, strict=True):
        if (value >= limit) if above else (value < limit):
            return depth
    return math.nan


def predicted_depth(sigma_w: float, precision: str, P: Params, depths=None) -> float:
    """Depth at which the typical entry of the first layer's weight gradient reaches
    ``precision``'s largest value (``sigma_w`` above the critical sqrt 2) or falls below
    its smallest subnormal (below it): the first of ``depths`` (default every depth up
    to 400) where it does."""
    grid = list(depths) if depths is not None else list(range(1, 401))
    entries = predicted_entries(sigma_w, max(grid), P, P.batch_size).set_index("depth")
    above = sigma_w > math.sqrt(2)
    limit = limits(precision)["max" if above else "smallest_subnormal"]
    return first_depth(grid, entries.loc[grid, "weight_entry"], limit, above)


def predicted_forward_depth(P: Params) -> float:
    """Depth at which the network's typical output, sqrt(q_out), reaches float16's largest
    value at the exploding sigma_w: where the forward pass itself starts to overflow."""
    entries = predicted_entries(P.overflow_sigma_w, 400, P, P.batch_size)
    return first_depth(entries.depth, np.sqrt(entries.q_out), FP16["max"], above=True)


def formats_table(P: Params):
    """What each format holds, and where the networks of the page would reach it."""
    rows = []
    for precision in PRECISIONS:
        info = limits(precision)
        rows.append({
            "format": NAMES[precision], "significant bits": info["significant_bits"],
            "largest finite": info["max"], "smallest normal": info["smallest_normal"],
            "smallest subnormal": info["smallest_subnormal"],
            f"overflow depth, σ_w = {P.overflow_sigma_w:g}":
                predicted_depth(P.overflow_sigma_w, precision, P),
            f"flush depth, σ_w = {P.underflow_sigma_w:g}":
                predicted_depth(P.underflow_sigma_w, precision, P)})
    df = pd.DataFrame(rows)
    depth = {c: (lambda v: "beyond 400" if math.isnan(v) else f"{v:.0f}")
             for c in df.columns if "depth" in c}
    return table(df, formats={"significant bits": "{:d}", **depth, "largest finite":
                              lambda v: f"{v:.0f}" if v < 1e6 else number(v)})


# --------------------------------------------------------------------------- one step

def first_steps(steps0: pd.DataFrame, P: Params) -> pd.DataFrame:
    """One row per run of the one-step sweep (``sigma_w``, ``depth``, ``precision``,
    ``seed``), read at step 0: ``event`` (``finite``; ``gradient``: the loss is finite but
    the gradient is not; ``forward``: the loss itself is Inf/NaN), ``entry`` (the typical
    entry of the first layer's weight gradient, its norm over the square root of its
    number of entries), ``zeros`` (its fraction of exact zeros) and ``excess_zeros``
    (minus the float32 run's of the same depth and seed: zeros that are not ReLU's)."""
    first = steps0[steps0["step"] == 0]
    keys = ["sigma_w", "depth", "precision", "seed"]
    whole = steps_only(first).set_index(keys)
    d_in = get("training").resolve({})["d_in"]
    layer1 = first[first["layer"] == 1].set_index(keys)
    out = pd.DataFrame(index=whole.index)
    out["event"] = np.where(~np.isfinite(whole["loss"]), "forward",
                            np.where(~np.isfinite(whole["grad_norm"]), "gradient", "finite"))
    out["grad_is_nan"] = np.isnan(whole["grad_norm"])
    out["entry"] = layer1["grad_norm"].reindex(out.index) / math.sqrt(P.width * d_in)
    out["zeros"] = layer1["grad_zero_fraction"].reindex(out.index)
    out = out.reset_index()
    fp32 = out[out.precision == "fp32"].set_index(["sigma_w", "depth", "seed"])["zeros"]
    out["excess_zeros"] = out["zeros"].to_numpy() - fp32.reindex(
        pd.MultiIndex.from_frame(out[["sigma_w", "depth", "seed"]])).to_numpy()
    return out


def measured_depths(runs: pd.DataFrame, sigma_w: float, precision: str, event) -> pd.Series:
    """Per seed, the first depth of the sweep at which ``event(rows)`` holds (NaN if at
    none); ``runs`` is :func:`first_steps`."""
    sub = runs[(runs.sigma_w == sigma_w) & (runs.precision == precision)]
    return sub.sort_values("depth").groupby("seed").apply(
        lambda g: g.depth[event(g)].min(), include_groups=False)


def overflowed(rows: pd.DataFrame) -> pd.Series:
    return rows["event"] != "finite"


def flushed(rows: pd.DataFrame) -> pd.Series:
    """Most of the first layer's weight gradient is zero beyond float32's own zeros."""
    return rows["excess_zeros"] >= 0.5


def depth_numbers(steps0: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the one-step measurement."""
    runs = first_steps(steps0, P)
    up, down = P.overflow_sigma_w, P.underflow_sigma_w
    d_in = get("training").resolve({})["d_in"]
    over = measured_depths(runs, up, "fp16", overflowed)
    forward = measured_depths(runs, up, "fp16", lambda g: g["event"] == "forward")
    flush = measured_depths(runs, down, "fp16", flushed)
    fp32 = runs[runs.precision == "fp32"]
    ratios = []
    for sigma_w in (up, down):
        pred = predicted_entries(sigma_w, max(P.depths), P, P.batch_size).set_index("depth")
        med = fp32[fp32.sigma_w == sigma_w].groupby("depth")["entry"].median()
        ratios.extend(med / pred.loc[med.index, "weight_entry"])
    at_overflow = fp32[(fp32.sigma_w == up) & (fp32.depth == over.min())]["entry"]
    halves = [h for h in ("bf16", "fp16") if h in set(runs.precision)]
    errors = {h: relative_errors(steps0, h, up) for h in halves}
    bf16 = runs[runs.precision == "bf16"]
    gradient = runs[(runs.precision == "fp16") & (runs.event == "gradient")]
    depth = over.median()
    entries = (P.width * d_in + (depth - 1) * P.width**2 + P.width) if len(over) else math.nan
    return {
        "prec_seeds": P.seeds, "prec_width": P.width, "prec_batch": P.batch_size,
        "prec_entries": number(entries, 2),
        "prec_bits_bf16": limits("bf16")["significant_bits"],
        "prec_bits_fp16": FP16["significant_bits"],
        "prec_doublings_fp16": f"{math.log2(FP16['max']):.0f}",
        "prec_doublings_fp32": f"{math.log2(limits('fp32')['max']):.0f}",
        "prec_growth_interval": Precision().loss_scale_growth,
        "prec_up_sigma": f"{up:g}", "prec_down_sigma": f"{down:g}",
        "prec_up_chi": f"{theory.chi1('relu', up, 0.0):g}",
        "prec_down_chi": f"{theory.chi1('relu', down, 0.0):g}",
        "prec_depths": ", ".join(map(str, P.depths)) if len(P.depths) < 4
        else f"{P.depths[0]}, {P.depths[1]}, …, {P.depths[-1]}",
        "prec_pred_overflow": _depth(predicted_depth(up, "fp16", P)),
        "prec_pred_flush": _depth(predicted_depth(down, "fp16", P)),
        "prec_pred_overflow_bf16": _depth(predicted_depth(up, "bf16", P)),
        "prec_pred_overflow_fp32": _depth(predicted_depth(up, "fp32", P)),
        "prec_meas_overflow": depth_spread(over),
        "prec_meas_forward": depth_spread(forward),
        "prec_pred_forward": _depth(predicted_forward_depth(P)),
        "prec_meas_flush": depth_spread(flush),
        "prec_theory_low": number(min(ratios), 2), "prec_theory_high": number(max(ratios), 2),
        "prec_headroom": number(FP16["max"] / at_overflow.median(), 2)
        if len(at_overflow) else "–",
        "prec_gradient_runs": len(gradient),
        "prec_gradient_nan": k_of_n(gradient["grad_is_nan"]) if len(gradient) else "0/0",
        "prec_bf16_nonfinite": k_of_n(bf16["event"] != "finite"),
        "prec_bf16_max_zeros": number(bf16["excess_zeros"].max(), 2),
        **{f"prec_error_{h}": number(e.median(), 2) for h, e in errors.items()},
    }


def _depth(value: float) -> str:
    return "beyond 400" if math.isnan(value) else f"{value:.0f}"


def relative_errors(steps0: pd.DataFrame, precision: str, sigma_w: float) -> pd.Series:
    """|g / g_float32 - 1| of the total gradient norm at step 0, for every run of the
    one-step sweep at ``sigma_w`` where both are finite: the cost of rounding to fewer
    significant bits.  Take the exploding networks: their values stay in the normal
    range (the vanishing ones reach float16's subnormals, which hold fewer bits)."""
    first = steps_only(steps0[(steps0["step"] == 0) & (steps0["sigma_w"] == sigma_w)])
    norms = first.set_index(["depth", "precision", "seed"])["grad_norm"].unstack("precision")
    ratio = norms[precision] / norms["fp32"]
    return (ratio - 1).abs().replace([np.inf, -np.inf], np.nan).dropna()


def fig_depth(steps0: pd.DataFrame, P: Params) -> plt.Figure:
    """Typical entry of the first layer's weight gradient against depth, measured in
    float32 and predicted, with float16's limits and where float16 failed."""
    runs = first_steps(steps0, P)
    fig, axes = plots.figure(2, 1, height=7.4)
    cases = [(axes[0], P.overflow_sigma_w, P.depths, FP16["max"],
              "float16 largest value 65504", overflowed, "float16 gave Inf/NaN"),
             (axes[1], P.underflow_sigma_w, P.depths, FP16["smallest_subnormal"],
              f"float16 smallest subnormal {number(FP16['smallest_subnormal'], 2)}",
              flushed, "float16 zeroed most of it")]
    for i, (ax, sigma_w, depths, limit, limit_label, failed, fail_label) in enumerate(cases):
        sub = runs[runs.sigma_w == sigma_w]
        fp32 = sub[sub.precision == "fp32"].pivot(index="depth", columns="seed",
                                                  values="entry")
        plots.band(ax, fp32.index, fp32, i, "float32, measured (median, range)")
        pred = predicted_entries(sigma_w, max(depths), P, P.batch_size)
        pred = pred[pred.depth >= min(depths)]
        ax.plot(pred.depth, pred.weight_entry, "--", color=plots.style(i)["color"],
                label="mean-field prediction")
        ax.axhline(limit, color="black", linewidth=1.2, label=limit_label)
        half = sub[sub.precision == "fp16"].set_index(["depth", "seed"])
        bad = half[failed(half)].index
        values = [fp32.loc[d, s] for d, s in bad if d in fp32.index]
        ax.scatter([d for d, _ in bad], values, marker="X", s=70, color=plots.OKABE_ITO[3],
                   zorder=4, label=fail_label)
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("network depth (hidden layers)")
        ax.set_ylabel("typical entry of ∂L/∂W¹")
        ax.set_title(f"ReLU, $\\sigma_w$ = {sigma_w:g} ($\\chi_1$ = "
                     f"{theory.chi1('relu', sigma_w, 0.0):g})")
        ax.legend(loc="upper left" if i == 0 else "lower left")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- overflow

def overflow_numbers(overflow: pd.DataFrame, deeper: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the exploding network trained in each format."""
    runs = with_variant(overflow)
    out = run_outcomes(runs, ["variant"]).set_index("variant")
    whole = steps_only(runs)
    numbers = {"prec_up_depth": P.overflow_depth, "prec_steps": P.steps,
               "prec_lr": f"{P.lr:g}", "prec_forward_depth": P.forward_depth}
    for name in VARIANTS:
        sub = out.loc[[name]]
        key = name.replace(" + loss scaling", "_ls").replace("float", "f").replace(
            "bfloat", "bf")
        numbers[f"prec_up_{key}_div"] = k_of_n(sub["diverged"])
        numbers[f"prec_up_{key}_loss"] = spread(sub["final_test_loss"])
    numbers["prec_up_first_loss"] = spread(out.loc[["float32"], "first_test_loss"])
    fp16 = out.loc[["float16"]]
    numbers["prec_up_f16_step"] = spread(fp16.loc[fp16.diverged, "diverged_step"], "{:.0f}")
    named, grads, deltas = [], [], []
    for seed, row in fp16[fp16.diverged].set_index("seed").iterrows():
        rows = runs[(runs.variant == "float16") & (runs.seed == seed) & (runs.layer > 0)
                    & (runs.step == row["diverged_step"])]
        named.append(first_nonfinite_layer(rows.to_dict("records"), "layer"))
        grads.append(int((~np.isfinite(rows.grad_norm)).sum()))
        deltas.append(int((~np.isfinite(rows.delta_norm)).sum()))
    numbers.update({"prec_up_named": ", ".join(sorted({f"layer {n} of {P.overflow_depth}"
                                                       for n in named})),
                    "prec_up_inf_grads": spread(grads, "{:.0f}"),
                    "prec_up_inf_deltas": spread(deltas, "{:.0f}")})
    scaled = whole[whole.variant == SCALED]
    skipped = scaled.groupby("seed")["skipped"].sum()
    settled = scaled[scaled.skipped == 0].groupby("seed")["loss_scale"].first()
    numbers.update({
        "prec_up_skipped": spread(skipped, "{:.0f}"),
        "prec_up_scale": scales(settled),
        "prec_up_scale_init": power_of_two(scaled["loss_scale"].iloc[0]),
    })
    deep = run_outcomes(deeper)
    numbers["prec_forward_div"] = k_of_n(deep["diverged"])
    numbers["prec_forward_step"] = spread(deep.loc[deep.diverged, "diverged_step"], "{:.0f}")
    numbers["prec_forward_cause"] = causes(deeper)
    numbers["prec_up_f16_cause"] = causes(runs[runs.variant == "float16"])
    return numbers


def fig_overflow(overflow: pd.DataFrame, P: Params) -> plt.Figure:
    """Training loss of the exploding network in each format, and the loss scale of the
    loss-scaled run with its skipped steps."""
    runs = with_variant(overflow)
    fig, axes = plots.figure(2, 1, height=7.4, sharex=True)
    plots.loss_panel(axes[0], runs, "variant", VARIANTS, {v: v for v in VARIANTS}, smooth=1)
    legend = axes[0].get_legend()  # again at the book's smallest legible size
    axes[0].legend(legend.legend_handles, [t.get_text() for t in legend.get_texts()],
                   fontsize=10)
    axes[0].set_ylabel("training loss")
    axes[0].set_xlabel("")
    whole = steps_only(runs)
    scaled = whole[whole.variant == SCALED]
    i = VARIANTS.index(SCALED)
    for seed, g in scaled.groupby("seed"):
        axes[1].step(g.step, g.loss_scale, where="post", color=plots.style(i)["color"],
                     alpha=0.8, label="loss scale, one line per seed" if seed == 0 else None)
        skip = g[g.skipped == 1]
        axes[1].scatter(skip.step, skip.loss_scale, marker="x", s=25, color="black",
                        zorder=3, label="skipped step (overflow)" if seed == 0 else None)
    axes[1].set_yscale("log", base=2)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("loss scale")
    axes[1].legend(loc="upper right")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- underflow

def zero_fractions(underflow: pd.DataFrame) -> pd.DataFrame:
    """Per-layer rows of the vanishing runs with their ``variant``."""
    runs = with_variant(underflow)
    return runs[runs["layer"] > 0]


def underflow_numbers(underflow: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the vanishing network trained in each format."""
    layers = zero_fractions(underflow)
    runs = with_variant(underflow)
    out = run_outcomes(runs, ["variant"]).set_index("variant")
    numbers = {"prec_down_depth": P.underflow_depth}
    first = layers.step.min()
    for name in VARIANTS:
        key = name.replace(" + loss scaling", "_ls").replace("float", "f").replace(
            "bfloat", "bf")
        sub = layers[layers.variant == name]
        at0 = sub[sub.step == first]
        numbers[f"prec_down_{key}_z1"] = spread(100 * at0[at0.layer == 1].grad_zero_fraction,
                                                   "{:.0f}")
        numbers[f"prec_down_{key}_zall"] = spread(
            100 * at0.groupby("seed").grad_zero_fraction.mean(), "{:.0f}")
        ratio = out.loc[[name], "final_test_loss"] / out.loc[[name], "first_test_loss"]
        numbers[f"prec_down_{key}_loss"] = spread(ratio, "{:.2f}")
        numbers[f"prec_down_{key}_learned"] = k_of_n(ratio < LEARNED)
    half = layers[(layers.variant == "float16") & (layers.layer == 1)]
    stuck = half.groupby("seed").grad_zero_fraction.min() == 1.0
    numbers["prec_down_stuck"] = k_of_n(stuck)
    scaled = steps_only(runs[runs.variant == SCALED])
    numbers["prec_down_skipped"] = spread(scaled.groupby("seed").skipped.sum(), "{:.0f}")
    numbers["prec_down_scale"] = scales(scaled.groupby("seed").loss_scale.last())
    q_out = predicted_entries(P.underflow_sigma_w, P.underflow_depth, P, P.n_train)["q_out"]
    numbers["prec_down_output"] = number(math.sqrt(q_out.iloc[-1]), 1)
    return numbers


def fig_underflow(underflow: pd.DataFrame, P: Params) -> plt.Figure:
    """Fraction of exact zeros in each layer's weight gradient at the first step, and in
    the first layer's over training, per format."""
    layers = zero_fractions(underflow)
    fig, axes = plots.figure(2, 1, height=7.4)
    first = layers[layers.step == layers.step.min()]
    for i, name in enumerate(VARIANTS):
        sub = first[first.variant == name].pivot(index="layer", columns="seed",
                                                 values="grad_zero_fraction")
        plots.band(axes[0], sub.index, 100 * sub, i, name)
        one = layers[(layers.variant == name) & (layers.layer == 1)].pivot(
            index="step", columns="seed", values="grad_zero_fraction")
        plots.band(axes[1], one.index, 100 * one, i, name)
    axes[0].set_xlabel("layer (counted from the input)")
    axes[0].set_ylabel("zero entries of ∂L/∂Wˡ (%)")
    axes[0].set_title("first step, every layer")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("zero entries of ∂L/∂W¹ (%)")
    axes[1].set_title("first layer, during training")
    for ax in axes:
        ax.set_ylim(-5, 105)
    axes[1].legend(loc="center right")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- clipping

def clip_label(row) -> str:
    """The clipping measurement's variant names."""
    name = variant(row["precision"], row["loss_scaling"])
    if row["clip"] == "none":
        return name + ", no clipping"
    if row["loss_scaling"] == "none":
        return name + ", clipped"
    return name + (", clipped after unscaling" if row["clip_order"] == "unscaled"
                   else ", clipped while scaled")


def clip_summary(clipping: pd.DataFrame) -> pd.DataFrame:
    """Per variant: diverged (k/n), steps clipped and skipped, the median update-to-weight
    ratio and final over first test loss (median, range over seeds)."""
    runs = clipping.assign(variant=clipping.apply(clip_label, axis=1))
    out = run_outcomes(runs, ["variant"])
    whole = steps_only(runs)
    rows = []
    for name, g in whole.groupby("variant", sort=False):
        o = out[out.variant == name]
        rows.append({"variant": name, "diverged": k_of_n(o.diverged),
                     "steps clipped (%)": 100 * g.clipped.mean(),
                     "steps skipped": g.groupby("seed").skipped.sum().median(),
                     "update / weight (median)": g.update_ratio.median(),
                     "final / first test loss": spread(
                         o.final_test_loss / o.first_test_loss, "{:.2f}")})
    return pd.DataFrame(rows)


def clip_numbers(clipping: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the clip-order measurement."""
    summary = clip_summary(clipping).set_index("variant")
    right = summary.filter(like="after unscaling", axis=0).iloc[0]
    wrong = summary.filter(like="while scaled", axis=0).iloc[0]
    none = summary.filter(like="no clipping", axis=0).iloc[0]
    ref = summary.filter(like="float32", axis=0).iloc[0]
    return {"prec_clip_depth": P.clip_depth, "prec_clip_lr": f"{P.clip_lr:g}",
            "prec_clip_threshold": f"{P.clip_threshold:g}", "prec_clip_steps": P.clip_steps,
            "prec_clip_ref_loss": ref["final / first test loss"],
            "prec_clip_right_loss": right["final / first test loss"],
            "prec_clip_wrong_loss": wrong["final / first test loss"],
            "prec_clip_wrong_clipped": f"{wrong['steps clipped (%)']:.0f}",
            "prec_clip_right_clipped": f"{right['steps clipped (%)']:.0f}",
            "prec_clip_update_ratio": number(right["update / weight (median)"]
                                             / wrong["update / weight (median)"], 2),
            "prec_clip_none_div": none["diverged"],
            "prec_clip_none_skipped": f"{none['steps skipped']:.0f}"}


def clip_table(clipping: pd.DataFrame):
    return table(clip_summary(clipping), formats={
        "steps clipped (%)": "{:.0f}", "steps skipped": "{:.0f}"})


# --------------------------------------------------------------------------- bf16 or fp16

def cost_summary(costs: pd.DataFrame) -> pd.DataFrame:
    """Per variant of :func:`..study.timing.time_ratios`: the median, min and max ratio of
    its time per step to float32's over the rounds."""
    return costs.groupby("variant", sort=False)["ratio"].agg(
        ["median", "min", "max"]).reset_index()


def cost_numbers(costs: pd.DataFrame, P: Params) -> dict:
    numbers = {"prec_timing_depth": P.timing_depth, "prec_timing_rounds": P.timing_rounds}
    for row in cost_summary(costs).itertuples():
        key = row.variant.replace(" + loss scaling", "_ls").replace("bfloat", "bf").replace(
            "float", "f")
        numbers[f"prec_cost_{key}"] = (f"{row.median:.2f}× (range {row.min:.2f}–"
                                       f"{row.max:.2f})")
    return numbers


def protection_table(numbers: dict):
    """bfloat16 against float16 with loss scaling, side by side, from the page's glued
    ``numbers`` (what each measurement found)."""
    n = numbers
    rows = [
        ("gradient overflow at initialization (Measurement 2)",
         f"diverged {n['prec_up_bf16_div']}", f"diverged {n['prec_up_f16_ls_div']}, after "
         f"{n['prec_up_skipped']} skipped steps"),
        ("forward pass beyond float16's range (Measurement 1)",
         f"non-finite in {n['prec_bf16_nonfinite']} one-step runs",
         f"diverged {n['prec_forward_div']} at step {n['prec_forward_step']}"),
        ("first layer's gradient flushed to zero (Measurement 3, % zero at step 0)",
         n["prec_down_bf16_z1"], n["prec_down_f16_ls_z1"]),
        ("rounding: error of the first gradient norm against float32 (median, "
         "Measurement 1)",
         n.get("prec_error_bf16", "–"), n.get("prec_error_fp16", "–")),
        ("time per step against float32 on this CPU", n.get("prec_cost_bf16", "–"),
         n.get("prec_cost_f16_ls", "–")),
    ]
    return table(pd.DataFrame(rows, columns=["", "bfloat16", SCALED]))


# --------------------------------------------------------------------------- claims

def claim_numbers(steps0: pd.DataFrame, P: Params) -> dict:
    """How many float16 runs of the one-step sweep overflowed in the forward pass (their
    loss is NaN or Inf before any gradient exists)."""
    runs = first_steps(steps0, P)
    half = runs[(runs.precision == "fp16") & (runs.event == "forward")]
    first = steps_only(steps0[steps0["step"] == 0]).set_index(
        ["sigma_w", "depth", "precision", "seed"])["loss"]
    losses = first.reindex(pd.MultiIndex.from_frame(half[["sigma_w", "depth", "precision",
                                                          "seed"]]))
    return {"prec_claim_forward": len(half), "prec_claim_forward_nan": k_of_n(np.isnan(losses))}
