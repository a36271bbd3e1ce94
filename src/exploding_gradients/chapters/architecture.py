"""Remedies in the architecture: initialization, normalization, skip connections, gated cells.

The page runs its measurements (``signal_propagation``, ``training`` and ``rnn_training``
sweeps, and ``time_ratios`` for the costs) in visible cells; this module turns their
tables into the page's numbers, tables and figures.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.transforms as mtransforms
import numpy as np
import pandas as pd
import torch

from .. import theory
from ..data import ADDING_BASELINE_MSE, gaussian_inputs
from ..engine.params import Param
from ..engine.registry import get
from ..experiments.feedforward import generator
from ..init import SCHEMES, effective_sigmas
from ..models.mlp import NORMALIZATIONS, build_mlp
from ..models.rnn import CELLS, build_cell
from ..study import growth, plots
from ..study.outcomes import med_range, run_outcomes, summarize
from ..study.readable import number
from ..study.readable import table as readable_table
from . import Chapter, Params
from ._shared import SEEDS, WIDTH, from_profile

CHAPTER = Chapter(
    "architecture",
    (
        SEEDS,
        from_profile(
            "depth",
            "int",
            "hidden layers of the deep networks (at init and in training)",
            low=2,
            high=1000,
        ),
        WIDTH,
        from_profile("train_seeds", "int", "seeds per configuration in training", low=1, high=1000),
        from_profile(
            "train_steps", "int", "optimizer steps per MLP training run", low=1, high=10**6
        ),
        Param(
            "train_lr", "float", 0.01, "learning rate (SGD with momentum 0.9)", low=1e-8, high=100.0
        ),
        Param(
            "large_sigma_w",
            "float",
            2.0,
            "sigma_w of the exploding plain ReLU network (init normal)",
            low=0.01,
            high=100.0,
        ),
        Param(
            "chaotic_sigma_w",
            "float",
            2.5,
            "sigma_w of the tanh network in its chaotic phase (init normal)",
            low=0.01,
            high=100.0,
        ),
        Param(
            "relu_inits",
            "list[str]",
            ["normal", "xavier", "he", "orthogonal", "lsuv"],
            "schemes measured at init on the ReLU network (normal uses large_sigma_w)",
            choices=SCHEMES,
        ),
        Param(
            "train_relu_inits",
            "list[str]",
            ["normal", "he", "orthogonal", "lsuv"],
            "schemes trained on the ReLU network",
            choices=SCHEMES,
        ),
        Param(
            "tanh_inits",
            "list[str]",
            ["normal", "xavier", "orthogonal", "lsuv"],
            "schemes measured at init on the tanh network (normal uses chaotic_sigma_w)",
            choices=SCHEMES,
        ),
        Param(
            "train_tanh_inits",
            "list[str]",
            ["normal", "xavier", "lsuv"],
            "schemes trained on the tanh network",
            choices=SCHEMES,
        ),
        Param(
            "input_spread",
            "float",
            100.0,
            "largest/smallest input feature scale of the unnormalized-input case",
            low=1.0,
            high=1e6,
        ),
        Param(
            "input_lr", "float", 0.1, "plain-SGD learning rate of that case", low=1e-8, high=100.0
        ),
        Param("input_depth", "int", 3, "hidden layers of that network", low=1, high=1000),
        Param(
            "residual_scales",
            "list[float]",
            [0.1, 0.25, 0.5, 0.75, 1.0],
            "residual branch scales s measured at init",
            low=0.0,
            high=100.0,
        ),
        from_profile(
            "residual_depths",
            "list[int]",
            "depths of the residual depth sweep at init",
            low=1,
            high=1000,
        ),
        Param(
            "rnn_seq_len", "int", 20, "sequence length of the adding problem", low=2, high=100_000
        ),
        Param("rnn_hidden", "int", 32, "hidden units of the recurrent cells", low=2, high=4096),
        Param(
            "rnn_radius",
            "float",
            1.0,
            "spectral radius of each recurrent block",
            low=0.0,
            high=100.0,
        ),
        Param("rnn_lr", "float", 0.01, "learning rate (Adam)", low=1e-8, high=100.0),
        Param(
            "clip_threshold",
            "float",
            1.0,
            "global-norm clipping threshold for the RNN",
            low=1e-12,
            high=1e12,
        ),
        from_profile(
            "rnn_steps", "int", "optimizer steps per recurrent training run", low=1, high=10**6
        ),
        from_profile("rnn_seeds", "int", "seeds per recurrent configuration", low=1, high=1000),
        from_profile(
            "timing_steps",
            "int",
            "optimizer steps of the longer timed run (the shorter has a quarter)",
            low=2,
            high=10**6,
        ),
        from_profile(
            "timing_repeat", "int", "timed repetitions (median reported)", low=1, high=100
        ),
    ),
    {
        "quick": dict(
            seeds=1,
            depth=6,
            width=16,
            train_seeds=1,
            train_steps=10,
            residual_depths=[3, 6],
            rnn_steps=10,
            rnn_seeds=1,
            timing_steps=2,
            timing_repeat=1,
        ),
        "default": dict(
            seeds=3,
            depth=30,
            width=64,
            train_seeds=3,
            train_steps=80,
            residual_depths=[5, 10, 20, 30, 50],
            rnn_steps=120,
            rnn_seeds=3,
            timing_steps=40,
            timing_repeat=3,
        ),
        "full": dict(
            seeds=20,
            depth=50,
            width=256,
            train_seeds=10,
            train_steps=1000,
            residual_depths=[5, 10, 20, 30, 50, 100, 200],
            rnn_steps=1000,
            rnn_seeds=10,
            timing_steps=100,
            timing_repeat=5,
        ),
    },
)

#: Fraction of the logged steps whose mean loss is a run's final loss in the tables.
TAIL = 0.1
#: A run of the adding problem is solved below this fraction of the trivial error.
SOLVED = 0.1

LABELS = {"normal": "normal (large σ_w)", "xavier": "Xavier", "he": "He",
          "orthogonal": "orthogonal", "lsuv": "LSUV", "default": "PyTorch default"}
#: Series index (color, marker) of each scheme, the same in every figure.
STYLE = {"normal": 0, "xavier": 1, "he": 2, "orthogonal": 3, "lsuv": 4, "default": 5}
NORMS = list(NORMALIZATIONS)
NORM_LABELS = {"none": "no normalization", "batch": "batch norm", "layer": "layer norm"}
#: The residual cases (keys of :func:`residual_masks`) and their labels at init.
RESIDUAL_CASES = {"plain": "plain (He)", "s1": "residual, s = 1",
                  "sqrt": "residual, s = 1/√L", "bn": "residual, s = 1, batch norm"}


# --------------------------------------------------------------------------- shared

def large_sigma(P: Params, activation: str) -> float:
    """sigma_w of the failing network of ``activation`` (init normal)."""
    return {"relu": P.large_sigma_w, "tanh": P.chaotic_sigma_w}[activation]


def scheme_label(activation: str, scheme: str, P: Params, tex: bool = False) -> str:
    """A scheme's name in tables, or in figures (``tex``: sigma_w as math)."""
    sigma = r"$\sigma_w$" if tex else "σ_w"
    return (f"normal, {sigma} = {large_sigma(P, activation):g}" if scheme == "normal"
            else LABELS[scheme])


def scheme_sigma(activation: str, scheme: str, P: Params) -> tuple[float, float]:
    """(sigma_w, input q) of a scheme in the mean-field convention; LSUV: q = 1 throughout."""
    if scheme == "lsuv":
        sw = theory.lsuv_prediction(activation)[0]
        return sw, 1 / sw**2
    return effective_sigmas(scheme, activation, P.width, P.width,
                            large_sigma(P, activation))[0], 1.0


def outcomes(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """:func:`run_outcomes` with the page's final loss (mean over the last ``TAIL``)."""
    return run_outcomes(runs, by, tail=TAIL)


def spread_text(per_seed: pd.DataFrame, by: list[str], value: str,
                fmt: str = "{:.2f}") -> pd.Series:
    """'median [min, max]' of the finite ``value`` over the seeds of each group."""
    return per_seed.groupby(by, sort=False, dropna=False)[value].agg(
        lambda v: med_range(v[np.isfinite(v)], fmt))


def outcome_table(per_seed: pd.DataFrame, by: list[str], names: dict | None = None):
    """Per configuration: diverged runs, initial gradient norm, final loss and accuracy,
    as the page shows it.  The initial gradient counts every seed (a diverged run
    started from it too); the final values only the seeds that did not diverge."""
    summary = summarize(per_seed, by, "final_accuracy")
    table = summary[by].copy()
    table["diverged"] = summary["diverged"].to_numpy()
    table["initial ‖∇L‖: median [min, max]"] = per_seed.groupby(
        by, sort=False, dropna=False)["first_grad_norm"].agg(grad_range).to_numpy()
    table["final / initial loss"] = spread_text(per_seed, by, "final_over_first").to_numpy()
    table["final test accuracy"] = spread_text(per_seed, by, "final_accuracy").to_numpy()
    for col, mapping in (names or {}).items():
        table[col] = table[col].map(lambda v, m=mapping: m.get(v, v))
    return readable_table(table)


def grad_range(values: pd.Series) -> str:
    """'median [min, max]' of the finite gradient norms (one value alone), each written
    by :func:`..study.readable.number` (they span from 1 to 10⁸ here)."""
    v = values[np.isfinite(values)]
    if v.empty:
        return "–"
    if len(v) == 1:
        return number(v.iloc[0])
    return f"{number(v.median())} [{number(v.min())}, {number(v.max())}]"


def legend_outside(ax: plt.Axes) -> None:
    """Move an axis' legend to its right, at the book's smallest legible font size
    (:func:`..study.plots.loss_panel` draws it inside, at 9 pt)."""
    legend = ax.get_legend()
    if legend is None:
        return
    handles, texts = legend.legend_handles, [t.get_text() for t in legend.get_texts()]
    ax.legend(handles, texts, loc="upper left", bbox_to_anchor=(1.0, 1.0),
              fontsize=plots.MIN_FONT)


def cost_text(costs: pd.DataFrame, variant: str, value: str = "ratio",
              fmt: str = "{:.2f}") -> str:
    """'median [min, max]' over the timing rounds of one variant's ``value``."""
    v = costs.loc[costs["variant"] == variant, value]
    return med_range(v[np.isfinite(v)], fmt)


def setup_numbers(P: Params) -> dict:
    """The parameters the introduction quotes."""
    numbers = {f"arch_{key}": P[key] for key in ["depth", "width", "seeds", "train_seeds",
                                                 "timing_steps", "timing_repeat"]}
    return {**numbers, "arch_lr": f"{P.train_lr:g}", "arch_steps": P.train_steps}


# --------------------------------------------------------------------------- 1. initialization

def theory_numbers(P: Params) -> dict:
    """The mean-field predictions of section 1's theory."""
    L = P.depth
    relu_chi = theory.chi1("relu", P.large_sigma_w, 0.0)
    orth_sw = effective_sigmas("orthogonal", "tanh", P.width, P.width)[0]
    lsuv_sw, lsuv_chi = theory.lsuv_prediction("tanh")
    return {
        "arch_large_sw": f"{P.large_sigma_w:g}",
        "arch_chaotic_sw": f"{P.chaotic_sigma_w:g}",
        "arch_relu_chi": f"{relu_chi:.2f}",
        "arch_relu_sqrtchi": f"{relu_chi ** 0.5:.3f}",
        "arch_relu_total": number(theory.depth_gain(relu_chi, L), 2),
        "arch_tanh_chi": f"{theory.chi1('tanh', P.chaotic_sigma_w, 0.0):.2f}",
        "arch_tanh_orth_chi": f"{theory.chi1('tanh', orth_sw, 0.0):.2f}",
        "arch_lsuv_tanh_sw": f"{lsuv_sw:.3f}",
        "arch_lsuv_tanh_chi": f"{lsuv_chi:.3f}",
        "arch_lsuv_tanh_total": number(theory.depth_gain(lsuv_chi, L), 3),
        "arch_ln_theory": f"{theory.layer_norm_chi('relu') ** 0.5:.3f}",
        "arch_ln_tanh_chi": f"{theory.layer_norm_chi('tanh'):.3f}",
    }


def _inits(activation: str, P: Params) -> list[str]:
    return P.relu_inits if activation == "relu" else P.tanh_inits


def predicted_factor(activation: str, sigma_w: float, input_q: float, depth: int) -> float:
    """The mean-field factor per layer on the gradient norm, reduced like the measurement:
    the least-squares slope of the predicted ln ||delta^l|| against the layer
    (:func:`..study.growth.log_slope`, the fit of ``growth_per_layer``), not a uniform
    mean of ln chi^l, which weights the transient first layers differently."""
    profile = theory.layer_profile(activation, sigma_w, 0.0, depth, input_q)
    return float(np.exp(-growth.log_slope(profile.layer, profile.log_delta_sq / 2)))


def init_table(at_init: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per (activation, scheme): predicted and measured factor per layer of the gradient
    norm, and the pre-activation variance of the first and the last layer."""
    L = P.depth
    per_seed = growth.growth_per_layer(at_init, "delta_norm", ["activation", "init"])
    rows = []
    for (act, scheme), g in per_seed.groupby(["activation", "init"], sort=False):
        sw, q_in = scheme_sigma(act, scheme, P)
        sub = at_init[(at_init["activation"] == act) & (at_init["init"] == scheme)]
        pv = sub.groupby("layer").preact_var.median()
        rows.append({"activation": act, "scheme": scheme_label(act, scheme, P), "σ_w": sw,
                     "predicted factor per layer": predicted_factor(act, sw, q_in, L),
                     "measured (mean)": g.growth.mean(), "sd": g.growth.std(),
                     "pre-activation variance, layer 1": pv.iloc[0],
                     f"… layer {L}": pv.iloc[-1]})
    return pd.DataFrame(rows)


def init_display(at_init: pd.DataFrame, P: Params):
    """:func:`init_table` as the page shows it."""
    shown = init_table(at_init, P).drop(columns=["σ_w", "pre-activation variance, layer 1"])
    return readable_table(shown.rename(columns={
        f"… layer {P.depth}": f"pre-activation variance, layer {P.depth}"}))


def init_numbers(at_init: pd.DataFrame, P: Params) -> dict:
    """Measurement 1: per activation and scheme, the factor per layer, its total over the
    network and the last layer's pre-activation variance."""
    L = P.depth
    table = init_table(at_init, P)

    def measured(act, scheme, col="measured (mean)"):
        row = table[(table.activation == act) & (table.scheme == scheme_label(act, scheme, P))]
        return row[col].iloc[0] if len(row) else float("nan")

    numbers = {}
    for act in ["relu", "tanh"]:
        for s in _inits(act, P):
            numbers[f"arch_init_{act}_{s}"] = f"{measured(act, s):.3f}"
            numbers[f"arch_init_{act}_{s}_total"] = number(measured(act, s) ** (L - 1), 3)
            numbers[f"arch_init_{act}_{s}_qlast"] = number(measured(act, s, f'… layer {L}'), 3)
    return numbers


def fig_init(at_init: pd.DataFrame, P: Params) -> plt.Figure:
    """||delta^l|| / ||delta^L|| per layer under each scheme, ReLU and tanh, with the
    mean-field prediction of each."""
    L, N = P.depth, P.width
    fig, axes = plots.figure(2, 1, height=7.0)
    for ax, act in zip(axes, ["relu", "tanh"], strict=True):
        sub = at_init[at_init.activation == act].copy()
        sub["rel"] = growth.relative_to_last(sub, "delta_norm", ["init"])
        for s in _inits(act, P):
            values = sub[sub["init"] == s].pivot(index="layer", columns="seed", values="rel")
            plots.band(ax, values.index, values, STYLE[s], scheme_label(act, s, P, tex=True))
            sw, q_in = scheme_sigma(act, s, P)
            prof = theory.layer_profile(act, sw, 0.0, L, q_in)
            ax.plot(prof.layer, np.exp(prof.log_delta_sq / 2), "--", linewidth=1.2,
                    color=plots.style(STYLE[s])["color"])
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_title(f"{act}, {L} layers of width {N}")
        ax.set_ylabel(r"$\|\delta^l\| \,/\, \|\delta^L\|$")
        plots.log_axis(ax)
        plots.theory_legend(ax)
        ax.legend(*ax.get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def init_train_numbers(init_runs: pd.DataFrame, P: Params) -> dict:
    """Measurement 2: median test accuracy and diverged runs per activation and scheme."""
    per_seed = outcomes(init_runs, ["activation", "init"])
    acc = per_seed.groupby(["activation", "init"]).final_accuracy.median()
    div = per_seed.groupby(["activation", "init"]).diverged.sum()
    numbers = {}
    for (act, s), v in acc.items():
        numbers[f"arch_train_{act}_{s}_acc"] = f"{v:.2f}"
        numbers[f"arch_train_{act}_{s}_div"] = f"{int(div[(act, s)])}/{P.train_seeds}"
    return numbers


def fig_init_train(init_runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Training loss of the ReLU and the tanh network under each trained scheme."""
    fig, axes = plots.figure(2, 1, height=7.0)
    for ax, act in zip(axes, ["relu", "tanh"], strict=True):
        keys = P.train_relu_inits if act == "relu" else P.train_tanh_inits
        plots.loss_panel(ax, init_runs[init_runs.activation == act], "init", keys,
                         {k: scheme_label(act, k, P, tex=True) for k in keys},
                         styles=[STYLE[k] for k in keys], title=f"{act}, {P.depth} layers")
        legend_outside(ax)
        plots.log_axis(ax)
    fig.tight_layout()
    return fig


def init_outcomes(init_runs: pd.DataFrame, P: Params):
    """The outcome table of Measurement 2."""
    per_seed = outcomes(init_runs, ["activation", "init"])
    per_seed["scheme"] = [scheme_label(a, s, P)
                          for a, s in zip(per_seed.activation, per_seed["init"], strict=True)]
    return outcome_table(per_seed, ["activation", "scheme"])


def mlp_cost_numbers(costs: pd.DataFrame) -> dict:
    """The MLP remedies' costs against the He-initialized plain network (step-time ratios,
    and LSUV's one-off cost in training steps), median [min, max] over the rounds."""
    return {"arch_lsuv_cost_steps": cost_text(costs, "lsuv", "extra_setup_steps", "{:.0f}"),
            "arch_cost_batch": cost_text(costs, "batch"),
            "arch_cost_layer": cost_text(costs, "layer"),
            "arch_res_cost": cost_text(costs, "residual")}


# --------------------------------------------------------------------------- 2. normalization

def with_reference(norm_runs: pd.DataFrame, he_runs: pd.DataFrame) -> pd.DataFrame:
    """The normalization runs plus the He-initialized plain network as "he reference"."""
    return pd.concat([norm_runs, he_runs.assign(normalization="he reference")],
                     ignore_index=True)


REFERENCE_LABELS = {**NORM_LABELS, "he reference": "He init, no normalization"}


def norm_numbers(norm_init: pd.DataFrame, norm_runs: pd.DataFrame, he_runs: pd.DataFrame,
                 P: Params) -> dict:
    """Section 2's theory and Measurement 3: growth per layer at init, initial gradient,
    accuracy and divergences with each normalization."""
    L, N = P.depth, P.width
    per_layer = growth.growth_per_layer(norm_init, "delta_norm", ["normalization"])
    norm_growth = growth.spread(per_layer, "growth", ["normalization"]).set_index(
        "normalization")
    per_seed = outcomes(with_reference(norm_runs, he_runs), ["normalization"])
    acc = per_seed.groupby("normalization").final_accuracy.median()
    div = per_seed.groupby("normalization").diverged.sum()
    g0 = per_seed.groupby("normalization").first_grad_norm.median()
    numbers = {"arch_bn_theory": f"{theory.BATCHNORM_RELU_CHI ** 0.5:.3f}",
               "arch_spread": f"{P.input_spread:g}"}
    for n in NORMS:
        numbers[f"arch_norm_{n}_growth"] = f"{norm_growth.loc[n, 'mean']:.3f}"
        numbers[f"arch_norm_{n}_growth_sd"] = f"{norm_growth.loc[n, 'std']:.3f}"
        numbers[f"arch_norm_{n}_g0"] = number(g0[n], 3)
    for n in [*NORMS, "he reference"]:
        key = n.replace(" ", "_")
        numbers[f"arch_norm_{key}_acc"] = f"{acc[n]:.2f}"
        numbers[f"arch_norm_{key}_div"] = f"{int(div[n])}/{P.train_seeds}"
    # A gain and a shift per unit; the step of a scale-invariant layer goes as
    # lr / ||w||^2, so He's sigma_w^2 = 2 over the large one.
    numbers["arch_norm_params"] = 2 * N * L
    numbers["arch_norm_steprat"] = number(2 / P.large_sigma_w ** 2, 2)
    return numbers


def fig_norm(norm_init: pd.DataFrame, norm_runs: pd.DataFrame, he_runs: pd.DataFrame,
             P: Params) -> plt.Figure:
    """Left: gradient per layer at init with each normalization; right: their training
    loss beside the He-initialized reference."""
    fig, axes = plots.figure(2, 1, height=7.0)
    sub = norm_init.copy()
    sub["rel"] = growth.relative_to_last(sub, "delta_norm", ["normalization"])
    plots.per_layer(axes[0], sub, "rel", "normalization", NORM_LABELS)
    axes[0].set_ylabel(r"$\|\delta^l\| \,/\, \|\delta^L\|$")
    axes[0].set_xlabel("layer")
    axes[0].set_title(f"ReLU, $\\sigma_w$ = {P.large_sigma_w:g}, at initialization")
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    plots.log_axis(axes[0])
    plots.loss_panel(axes[1], with_reference(norm_runs, he_runs), "normalization",
                     [*NORMS, "he reference"], REFERENCE_LABELS, title="training")
    legend_outside(axes[1])
    plots.log_axis(axes[1])
    fig.tight_layout()
    return fig


def norm_outcomes(norm_runs: pd.DataFrame, he_runs: pd.DataFrame, P: Params):
    """The outcome table of Measurement 3."""
    per_seed = outcomes(with_reference(norm_runs, he_runs), ["normalization"])
    return outcome_table(per_seed, ["normalization"], {"normalization": REFERENCE_LABELS})


def with_input_case(in_runs: pd.DataFrame) -> pd.DataFrame:
    """``in_runs`` with ``case``: the normalization, or "standardized" (spread 1)."""
    return in_runs.assign(case=np.where(in_runs.input_scale_spread == 1.0, "standardized",
                                        in_runs.normalization))


def input_labels(P: Params) -> dict:
    return {**{n: f"{NORM_LABELS[n]}, spread {P.input_spread:g}" for n in NORMS},
            "standardized": "standardized, no normalization"}


def input_numbers(in_runs: pd.DataFrame, P: Params) -> dict:
    """Measurement 4: accuracy, divergences and initial gradient with badly scaled inputs."""
    per_seed = outcomes(with_input_case(in_runs), ["case"])
    acc = per_seed.groupby("case").final_accuracy.median()
    div = per_seed.groupby("case").diverged.sum()
    g0 = per_seed.groupby("case").first_grad_norm.median()
    numbers = {"arch_in_depth": P.input_depth, "arch_in_lr": f"{P.input_lr:g}"}
    for c in [*NORMS, "standardized"]:
        numbers[f"arch_in_{c}_acc"] = f"{acc[c]:.2f}"
        numbers[f"arch_in_{c}_div"] = f"{int(div[c])}/{P.train_seeds}"
        numbers[f"arch_in_{c}_g0"] = number(g0[c], 3)
    return numbers


def fig_inputs(in_runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Training loss with badly scaled inputs, with and without normalization."""
    fig, ax = plots.figure(1, 1, height=3.6)
    plots.loss_panel(ax, with_input_case(in_runs), "case", [*NORMS, "standardized"],
                     input_labels(P),
                     title=f"{P.input_depth} layers, plain SGD, learning rate {P.input_lr:g}")
    legend_outside(ax)
    plots.log_axis(ax)
    fig.tight_layout()
    return fig


def input_outcomes(in_runs: pd.DataFrame, P: Params):
    """The outcome table of Measurement 4."""
    per_seed = outcomes(with_input_case(in_runs), ["case"])
    return outcome_table(per_seed, ["case"], {"case": input_labels(P)})


# --------------------------------------------------------------------------- 3. residual

def residual_masks(table: pd.DataFrame, depth) -> dict[str, pd.Series]:
    """Which rows of a sweep over the residual cases (grid keys ``residual``,
    ``residual_scale``, ``normalization``) belong to each case of ``RESIDUAL_CASES``: plain
    (``residual=False``), batch norm in the branch, s = 1, and s = 1/sqrt(``depth``)
    (a column or a number).  At depth 1 the last two are the same network."""
    def column(name):
        return table[name] if name in table else pd.Series(np.nan, index=table.index)

    plain = column("residual").eq(False)
    bn = column("normalization").eq("batch")
    scale = column("residual_scale").to_numpy(dtype=float)
    rest = ~plain & ~bn
    return {"plain": plain, "s1": rest & (scale == 1.0),
            "sqrt": rest & np.isclose(scale, np.asarray(depth, dtype=float) ** -0.5),
            "bn": bn}


def residual_growth(res_init: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per branch scale, mean and sd over seeds of the forward factor per block (on q, from
    the output towards the input inverted) and the backward one (on ||delta||)."""
    back = growth.growth_per_layer(res_init, "delta_norm", ["residual_scale"])
    fwd = growth.growth_per_layer(res_init, "preact_var", ["residual_scale"])
    fwd["growth"] = 1 / fwd["growth"]  # the forward signal grows towards the *output*
    return (growth.spread(fwd, "growth", ["residual_scale"]),
            growth.spread(back, "growth", ["residual_scale"]))


def recursion_factor(s: float, depth: int) -> float:
    """Geometric-mean factor of q per block over the layers of the mean-field recursion
    (the same fit as the measured one)."""
    m = theory.residual_relu_moments(s, depth)
    return float(np.exp(np.polyfit(m.layer, np.log(m.preact_var), 1)[0]))


def forward_amplification(scale: float, depth: int) -> float:
    """sqrt(q_L / q_1) of the mean-field recursion: the gradient amplification if it grew
    like the forward signal."""
    m = theory.residual_relu_moments(scale, depth)
    return float(np.sqrt(m.q.iloc[-1] / m.q.iloc[0]))


def amplification(by_depth: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per case, depth and seed: ||delta^1|| / ||delta^L||, the gradient's amplification
    from the last block to the first."""
    masks = residual_masks(by_depth, by_depth["depth"])
    rows = []
    for case, label in RESIDUAL_CASES.items():
        for d in P.residual_depths:
            sub = by_depth[masks[case] & (by_depth["depth"] == d)]
            for seed, g in sub.groupby("seed"):
                g = g.sort_values("layer")
                rows.append({"case": label, "depth": d, "seed": seed,
                             "amp": g.delta_norm.iloc[0] / g.delta_norm.iloc[-1]})
    return pd.DataFrame(rows)


def _forward_amps(P: Params) -> dict[str, list[float]]:
    return {"s1": [forward_amplification(1.0, d) for d in P.residual_depths],
            "sqrt": [forward_amplification(d ** -0.5, d) for d in P.residual_depths]}


def residual_numbers(res_init: pd.DataFrame, by_depth: pd.DataFrame, P: Params) -> dict:
    """Section 3's theory and Measurement 5: growth per block against the branch scale, and
    the amplification against depth."""
    L = P.depth
    fwd_s, back_s = residual_growth(res_init)
    fs, bs = fwd_s.set_index("residual_scale"), back_s.set_index("residual_scale")
    s_top, s_low = max(P.residual_scales), min(P.residual_scales)
    worst = max(abs(fs.loc[s, "mean"] / recursion_factor(s, L) - 1) for s in P.residual_scales)
    amp = amplification(by_depth, P)
    amp_med = amp.groupby(["case", "depth"]).amp.median()
    dmax = max(P.residual_depths)
    s1, sqrt = RESIDUAL_CASES["s1"], RESIDUAL_CASES["sqrt"]
    d_ok = max(d for d in P.residual_depths if np.isfinite(amp_med[(s1, d)]))
    fwd_amp = _forward_amps(P)
    return {
        "arch_res_g1":
            f"{theory.residual_relu_moments(1.0, 500).forward_factor.iloc[-1]:.2f}",
        "arch_res_stop": f"{s_top:g}",
        "arch_res_slow": f"{s_low:g}",
        "arch_res_fwd_top": f"{fs.loc[s_top, 'mean']:.3f}",
        "arch_res_fwd_top_rec": f"{recursion_factor(s_top, L):.3f}",
        "arch_res_fwd_top_naive": f"{theory.residual_chi(s_top):.3f}",
        "arch_res_back_top": f"{bs.loc[s_top, 'mean'] ** 2:.3f}",
        "arch_res_back_low": f"{bs.loc[s_low, 'mean'] ** 2:.4f}",
        "arch_res_back_low_naive": f"{theory.residual_chi(s_low):.4f}",
        "arch_res_fwd_low": f"{fs.loc[s_low, 'mean']:.4f}",
        "arch_res_fwd_worst": f"{100 * worst:.1f}",
        "arch_res_dok": d_ok,
        "arch_res_amp_s1": number(amp_med[(s1, d_ok)], 3),
        "arch_res_amp_s1_naive": number(theory.residual_gain(1.0, d_ok), 3),
        "arch_res_amp_s1_fwd": number(fwd_amp['s1'][P.residual_depths.index(d_ok)], 3),
        "arch_res_amp_sqrt_fwd": number(fwd_amp['sqrt'][-1], 3),
        "arch_res_amp_sqrt_naive": number(theory.residual_gain(dmax ** -0.5, dmax), 3),
        "arch_res_dmax": dmax,
        "arch_res_amp_sqrt": number(amp_med[(sqrt, dmax)], 3),
        "arch_res_amp_plain": number(amp_med[(RESIDUAL_CASES['plain'], dmax)], 3),
        "arch_res_amp_bn": number(amp_med[(RESIDUAL_CASES['bn'], dmax)], 3),
        "arch_res_overflow": int((~np.isfinite(amp.amp) | (amp.amp <= 0)).sum()),
    }


def euler_identity(depth: int, width: int, scale: float, seeds: int,
                   batch_size: int | None = None) -> pd.DataFrame:
    """Euler's identity for homogeneous functions, checked on the residual network of
    ``signal_propagation`` (same seeds, weights, inputs and targets), sample by sample.

    With blocks x + scale relu(W x) and no biases (He initialization), the map from a
    block's input x_l to the output y is positively 1-homogeneous, f(a x) = a f(x) for
    a > 0, so Euler's theorem gives for every sample and every block

        <dL/dx_l, x_l> = <dL/dy, y>,

    and by Cauchy-Schwarz ||dL/dx_l|| >= |<dL/dy, y>| / ||x_l||: where the forward signal
    is smaller (towards the input) the gradient must be larger.  Computed in float64.
    Rows per seed and block ``layer`` (1 = the first): ``identity_error``, the largest
    |<dL/dx_l, x_l> / <dL/dy, y> - 1| over the samples, and ``bound_share``, the median
    over samples of |<dL/dy, y>| / (||x_l|| ||dL/dx_l||): the fraction of the gradient's
    norm that the lower bound accounts for.
    """
    overrides = dict(depth=depth, width=width, activation="relu", init="he", residual=True,
                     residual_scale=scale)
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    config = get("signal_propagation").resolve(overrides)
    rows = []
    for seed in range(seeds):
        gen = generator(seed)  # the order of draws of signal_propagation
        model = build_mlp(config, d_in=width, d_out=config["d_out"], generator=gen).double()
        x = gaussian_inputs(config["batch_size"], width, gen).double()
        y = torch.randn(config["batch_size"], config["d_out"], generator=gen).double()
        h, inputs = x.requires_grad_(True), []
        for block in model.blocks:
            h.retain_grad()
            inputs.append(h)
            h = block(h)
        out = model.readout(h)
        out.retain_grad()
        (0.5 * torch.nn.functional.mse_loss(out, y)).backward()
        with torch.no_grad():
            euler = (out.grad * (out - model.readout.bias)).sum(1)
            for layer, xl in enumerate(inputs, start=1):
                inner = (xl.grad * xl).sum(1)
                share = euler.abs() / (xl.norm(dim=1) * xl.grad.norm(dim=1))
                rows.append({"seed": seed, "layer": layer,
                             "identity_error": (inner / euler - 1).abs().max().item(),
                             "bound_share": share.median().item()})
    return pd.DataFrame(rows)


def euler_table(euler: pd.DataFrame, P: Params) -> pd.DataFrame:
    """The identity's largest error and the bound's median share over seeds, at four
    blocks from the input to the output."""
    blocks = sorted({1, *np.linspace(1, P.depth, 4).round().astype(int).tolist()})
    g = euler[euler.layer.isin(blocks)].groupby("layer")
    return pd.DataFrame({"block": blocks,
                         "largest |⟨∂L/∂x, x⟩ / ⟨∂L/∂y, y⟩ − 1|":
                             g.identity_error.max().to_numpy(),
                         "share of ‖∂L/∂x‖ the bound gives": g.bound_share.median().to_numpy()})


def euler_display(euler: pd.DataFrame, P: Params):
    """:func:`euler_table` as the pages show it."""
    return readable_table(euler_table(euler, P), digits=2,
                          formats={"share of ‖∂L/∂x‖ the bound gives": "{:.0%}"})


def euler_numbers(euler: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the identity: its largest error, the range of the bound's
    share over the blocks, and the table for the residual sub-page (as HTML, whose
    plain-text form does not change from run to run, unlike a Styler's)."""
    from IPython.display import HTML

    share = euler.groupby("layer").bound_share.median()
    return {"arch_euler_err": number(euler.identity_error.max(), 1),
            "arch_euler_share_lo": f"{share.min():.0%}",
            "arch_euler_share_hi": f"{share.max():.0%}",
            "arch_euler_table": HTML(euler_display(euler, P).to_html())}


def fig_residual_init(res_init: pd.DataFrame, by_depth: pd.DataFrame, P: Params) -> plt.Figure:
    """Left: factor per block against the branch scale, measured and predicted; right: the
    gradient's amplification against depth for each residual case."""
    L, N = P.depth, P.width
    fwd_s, back_s = residual_growth(res_init)
    fine = np.linspace(0, max(P.residual_scales), 60)
    fig, axes = plots.figure(2, 1, height=7.6)
    ax = axes[0]
    ax.errorbar(fwd_s.residual_scale, fwd_s["mean"], yerr=fwd_s["std"], fmt="o", capsize=3,
                color=plots.style(0)["color"], label="forward: q measured")
    ax.plot(fine, [recursion_factor(s, L) for s in fine], color=plots.style(0)["color"],
            label="forward: recursion with the mean term")
    ax.plot(fine, theory.residual_chi(fine), "--", color="gray",
            label=r"$1+s^2$ (zero-mean branch; mean field)")
    ax.errorbar(back_s.residual_scale, back_s["mean"] ** 2,
                yerr=2 * back_s["mean"] * back_s["std"], fmt="s", capsize=3,
                color=plots.style(1)["color"], label=r"backward: $\|\delta\|^2$ measured")
    ax.set_xlabel("residual branch scale $s$")
    ax.set_ylabel("factor per block")
    ax.set_title(f"{L} blocks of width {N}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))

    amp = amplification(by_depth, P)
    ax = axes[1]
    for i, label in enumerate(RESIDUAL_CASES.values()):
        sub = amp[amp.case == label]
        ok = sub[np.isfinite(sub.amp) & (sub.amp > 0)]
        med = ok.groupby("depth").amp.agg(["median", "min", "max"]).reset_index()
        s = plots.style(i)
        ax.errorbar(med.depth, med["median"],
                    yerr=[med["median"] - med["min"], med["max"] - med["median"]],
                    color=s["color"], marker=s["marker"], capsize=3, label=label)
        bad = sub[~(np.isfinite(sub.amp) & (sub.amp > 0))].depth.unique()
        if len(bad):  # a cross at the top: the gradient overflowed at that depth
            trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
            ax.scatter(bad, [0.96] * len(bad), marker="X", s=90, color=s["color"],
                       transform=trans, clip_on=False, zorder=4)
    depths = np.array(P.residual_depths, dtype=float)
    ax.plot(depths, theory.residual_gain(1.0, depths), "--", color=plots.style(1)["color"],
            linewidth=1)
    ax.plot(depths, theory.residual_gain(depths ** -0.5, depths), "--",
            color=plots.style(2)["color"], linewidth=1)
    fwd_amp = _forward_amps(P)
    ax.plot(depths, fwd_amp["s1"], ":", color=plots.style(1)["color"], linewidth=1.5)
    ax.plot(depths, fwd_amp["sqrt"], ":", color=plots.style(2)["color"], linewidth=1.5)
    plots.log_axis(ax)
    ax.set_xlabel("depth $L$ (blocks)")
    ax.set_ylabel(r"$\|\delta^1\| / \|\delta^L\|$ at initialization")
    handles, labels_ = ax.get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color="gray", linestyle="--"))
    labels_.append(r"$(1+s^2)^{(L-1)/2}$")
    handles.append(plt.Line2D([], [], color="gray", linestyle=":", linewidth=1.5))
    labels_.append(r"$\sqrt{q_L/q_1}$ (recursion)")
    ax.legend(handles, labels_, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def training_cases(P: Params) -> dict[str, str]:
    """The residual cases' labels in training (the branch scale 1/sqrt of the depth used)."""
    return {**RESIDUAL_CASES, "sqrt": f"residual, s = 1/√{P.depth}"}


def with_residual_case(res_runs: pd.DataFrame, P: Params) -> pd.DataFrame:
    """``res_runs`` with ``case``, the label of its residual case."""
    masks = residual_masks(res_runs, P.depth)
    labels = training_cases(P)
    return res_runs.assign(case=np.select([masks[k] for k in labels], list(labels.values()),
                                          ""))


def residual_train_numbers(res_runs: pd.DataFrame, P: Params) -> dict:
    """Measurement 6: accuracy, divergences and initial gradient of each residual case."""
    per_seed = outcomes(with_residual_case(res_runs, P), ["case"])
    acc = per_seed.groupby("case").final_accuracy.median()
    div = per_seed.groupby("case").diverged.sum()
    g0 = per_seed.groupby("case").first_grad_norm.median()
    numbers = {}
    for key, label in zip(["plain", "s1", "sqrt", "bn"], training_cases(P).values(),
                          strict=True):
        numbers[f"arch_rtrain_{key}_acc"] = f"{acc[label]:.2f}"
        numbers[f"arch_rtrain_{key}_div"] = f"{int(div[label])}/{P.train_seeds}"
        numbers[f"arch_rtrain_{key}_g0"] = number(g0[label], 3)
    return numbers


def fig_residual_train(res_runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Training loss of the plain and the residual networks."""
    cases = list(training_cases(P).values())
    fig, ax = plots.figure(1, 1, height=3.6)
    plots.loss_panel(ax, with_residual_case(res_runs, P), "case", cases,
                     {k: k for k in cases},
                     title=f"ReLU, He initialization, {P.depth} blocks")
    legend_outside(ax)
    plots.log_axis(ax)
    fig.tight_layout()
    return fig


def residual_outcomes(res_runs: pd.DataFrame, P: Params):
    """The outcome table of Measurement 6."""
    return outcome_table(outcomes(with_residual_case(res_runs, P), ["case"]), ["case"])


# --------------------------------------------------------------------------- 4. gated cells

def cell_labels(P: Params) -> dict[str, str]:
    return {"rnn": "tanh RNN", "rnn+clip": f"RNN, clipped at {P.clip_threshold:g}",
            "lstm": "LSTM", "gru": "GRU"}


def with_cell_case(rnn_runs: pd.DataFrame) -> pd.DataFrame:
    """``rnn_runs`` with ``case``: the cell, or "rnn+clip" for the clipped RNN."""
    return rnn_runs.assign(case=np.where(rnn_runs["clip"] == "norm", "rnn+clip",
                                         rnn_runs.cell))


def rnn_outcomes(rnn_runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: :func:`outcomes` plus the final loss over the trivial answer's and whether
    it is below ``SOLVED`` of it."""
    per_seed = outcomes(with_cell_case(rnn_runs), ["case"])
    per_seed["final_over_baseline"] = per_seed.final_loss / ADDING_BASELINE_MSE
    per_seed["solved"] = per_seed.final_loss < SOLVED * ADDING_BASELINE_MSE
    return per_seed


def rnn_numbers(rnn_runs: pd.DataFrame, P: Params) -> dict:
    """Measurement 7: solved runs, final error and largest gradient per cell, and how
    often clipping acted."""
    per_seed = rnn_outcomes(rnn_runs)
    numbers = {}
    for c in cell_labels(P):
        g = per_seed[per_seed.case == c]
        key = c.replace("+", "_")
        numbers[f"arch_rnn_{key}_solved"] = f"{int(g.solved.sum())}/{len(g)}"
        numbers[f"arch_rnn_{key}_ratio"] = f"{g.final_over_baseline.median():.3f}"
        numbers[f"arch_rnn_{key}_maxgrad"] = number(g.max_grad_norm.median(), 3)
    runs = with_cell_case(rnn_runs)
    clipped = runs[(runs.case == "rnn+clip") & np.isfinite(runs.grad_norm)]
    numbers["arch_rnn_clip_frac"] = f"{100 * (clipped.grad_norm > P.clip_threshold).mean():.0f}"
    return {**numbers, "arch_rnn_T": P.rnn_seq_len, "arch_rnn_hidden": P.rnn_hidden,
            "arch_rnn_radius": f"{P.rnn_radius:g}", "arch_rnn_lr": f"{P.rnn_lr:g}",
            "arch_rnn_steps": P.rnn_steps, "arch_rnn_seeds": P.rnn_seeds,
            "arch_rnn_clip": f"{P.clip_threshold:g}"}


def fig_rnn(rnn_runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Left: training error per cell over steps; right: each seed's final error over the
    trivial answer's."""
    labels = cell_labels(P)
    runs, per_seed = with_cell_case(rnn_runs), rnn_outcomes(rnn_runs)
    fig, axes = plots.figure(2, 1, height=6.4, gridspec_kw={"height_ratios": [3, 2]})
    for i, c in enumerate(labels):
        sub = runs[runs.case == c]
        loss = sub.pivot(index="step", columns="seed", values="loss").rolling(10, 1).mean()
        plots.band(axes[0], loss.index, loss, i, labels[c])
        pts = per_seed[per_seed.case == c]
        y = np.full(len(pts), len(labels) - 1 - i) + np.linspace(-0.15, 0.15, len(pts))
        ok = pts.final_over_baseline.notna().to_numpy()
        axes[1].scatter(pts.final_over_baseline[ok], y[ok], **plots.style(i), zorder=3)
        axes[1].scatter(np.full((~ok).sum(), 3.0), y[~ok], marker="X", s=90,
                        color=plots.style(i)["color"], zorder=3)
    axes[0].axhline(ADDING_BASELINE_MSE, color="gray", linestyle="--", linewidth=1,
                    label="always predict 1")
    axes[0].axhline(SOLVED * ADDING_BASELINE_MSE, color="gray", linestyle=":", linewidth=1,
                    label="solved below")
    plots.log_axis(axes[0])
    axes[0].set_xlabel("optimizer step")
    axes[0].set_ylabel("training MSE")
    axes[0].set_title(f"adding problem, T = {P.rnn_seq_len} (10-step average)")
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[1].axvline(1.0, color="gray", linestyle="--", linewidth=1)
    axes[1].axvline(SOLVED, color="gray", linestyle=":", linewidth=1)
    axes[1].set_xscale("log")
    axes[1].set_yticks(range(len(labels)), [labels[c] for c in list(labels)[::-1]])
    axes[1].set_xlabel("final MSE / MSE of predicting 1 (× = diverged)")
    axes[1].set_title("each seed")
    fig.tight_layout()
    return fig


def rnn_table(rnn_runs: pd.DataFrame, P: Params):
    """The outcome table of Measurement 7, as the page shows it."""
    per_seed = rnn_outcomes(rnn_runs)
    rows = []
    for c, label in cell_labels(P).items():
        g = per_seed[per_seed.case == c]
        rows.append({"cell": label, "solved": f"{int(g.solved.sum())}/{len(g)}",
                     "diverged": f"{int(g.diverged.sum())}/{len(g)}",
                     "final MSE / baseline: median [min, max]":
                         med_range(g.final_over_baseline, "{:.3f}"),
                     "largest gradient norm (median)": g.max_grad_norm.median()})
    return readable_table(pd.DataFrame(rows))


def rnn_parameters(P: Params) -> dict[str, int]:
    """Trainable parameters of each recurrent cell at the page's size (2 inputs)."""
    return {c: sum(p.numel() for p in build_cell(c, 2, P.rnn_hidden, P.rnn_radius,
                                                 torch.Generator().manual_seed(0)).parameters())
            for c in CELLS}


def rnn_cost_numbers(rnn_costs: pd.DataFrame, P: Params) -> dict:
    """The gated cells' step-time ratios to the RNN and their parameter counts."""
    n_params = rnn_parameters(P)
    numbers = {"arch_rnn_nparams_rnn": n_params["rnn"]}
    for c in ["lstm", "gru"]:
        numbers[f"arch_rnn_cost_{c}"] = cost_text(rnn_costs, c)
        numbers[f"arch_rnn_params_{c}"] = f"{n_params[c] / n_params['rnn']:.0f}"
        numbers[f"arch_rnn_nparams_{c}"] = n_params[c]
    return numbers
