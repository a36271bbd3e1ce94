"""Initialization: where the boundary between vanishing and exploding gradients lies, where
the named schemes land, and whether it matters for training.

The page runs two ``signal_propagation`` sweeps (over sigma_w, and over the named schemes)
and one ``training`` sweep over ``init`` (all visible on it); this module turns their
tables into the page's numbers, tables and figures.
"""

from __future__ import annotations

import functools
import math

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import init, theory
from ..engine.params import Param
from ..experiments.feedforward import D_OUT, DATA_PARAMS
from ..init import SCHEMES
from ..study import growth, outcomes, plots, readable
from . import Chapter, Params
from ._shared import BATCH, SEEDS, WIDTH, from_profile

CHAPTER = Chapter(
    "initialization",
    (
        SEEDS,
        from_profile(
            "depth", "int", "hidden layers in the signal-propagation measurements", low=2, high=1000
        ),
        WIDTH,
        from_profile(
            "sigma_w_grid", "list[float]", "sigma_w values of the sweep", low=0.01, high=10.0
        ),
        BATCH,
        Param("sigma_b", "float", 0.0, "bias standard deviation in the sweep", low=0.0, high=10.0),
        Param(
            "schemes",
            "list[str]",
            ["default", "xavier", "he", "orthogonal"],
            "named schemes to compare",
            choices=SCHEMES,
        ),
        from_profile(
            "train_seeds",
            "int",
            "seeds per initialization in the training experiment",
            low=1,
            high=1000,
        ),
        Param(
            "train_depth",
            "int",
            30,
            "hidden layers of the trained plain ReLU network",
            low=1,
            high=1000,
        ),
        Param("train_width", "int", 128, "width of the trained network", low=2, high=8192),
        from_profile("train_steps", "int", "optimizer steps", low=1, high=10**6),
        Param(
            "train_lr", "float", 0.01, "learning rate (SGD with momentum 0.9)", low=1e-8, high=100.0
        ),
        Param(
            "train_inits",
            "list[str]",
            ["default", "xavier", "he", "normal"],
            "schemes trained; 'normal' uses train_sigma_w",
            choices=SCHEMES,
        ),
        Param(
            "train_sigma_w",
            "float",
            2.0,
            "sigma_w of the 'normal' scheme in training",
            low=0.0,
            high=100.0,
        ),
        Param("jacobian_width", "int", 128, "width of the networks whose Jacobian spectrum "
              "is measured", low=2, high=1024),
        Param("jacobian_tanh_sigma_w", "float", 1.05,
              "sigma_w of the tanh networks of the Jacobian spectrum (inputs at its q*)",
              low=1.0001, high=10.0),
    ),
    {
        "quick": dict(
            seeds=2,
            depth=10,
            width=64,
            sigma_w_grid=[0.5, 1.0, 1.5, 2.0, 3.0],
            train_seeds=1,
            train_steps=20,
        ),
        "default": dict(
            seeds=6,
            depth=30,
            width=256,
            sigma_w_grid=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0],
            train_seeds=3,
            train_steps=400,
        ),
        "full": dict(
            seeds=20,
            depth=50,
            width=1024,
            sigma_w_grid=[round(0.25 + 0.125 * i, 3) for i in range(23)],
            train_seeds=10,
            train_steps=2000,
        ),
    },
)

#: The two activations whose phase boundaries the page measures.
ACTIVATIONS = ("relu", "tanh")
_FINE = 60  # points of the theory curves


def sweep_summary(sweep: pd.DataFrame) -> pd.DataFrame:
    """Per (activation, sigma_w): mean and spread over seeds of ln(per-layer factor on the
    squared gradient norm), from a ``signal_propagation`` sweep."""
    by = ["activation", "sigma_w"]
    measured = growth.growth_per_layer(sweep, "delta_norm", by)
    measured["log_chi"] = 2 * np.log(measured["growth"])  # factor on the squared norm
    return growth.spread(measured, "log_chi", by)


def _fine(P: Params) -> np.ndarray:
    """The sigma_w values at which the theory curves are drawn."""
    return np.linspace(min(P.sigma_w_grid), max(P.sigma_w_grid), _FINE)


def _finite_log_chi(activation: str, P: Params) -> list[float]:
    """ln of the finite-depth prediction of the factor on the squared norm, on
    :func:`_fine` (computed once for the page's numbers and its figure)."""
    return list(_finite_curve(activation, min(P.sigma_w_grid), max(P.sigma_w_grid),
                              P.sigma_b, P.depth))


@functools.lru_cache(maxsize=16)
def _finite_curve(activation: str, low: float, high: float, sigma_b: float,
                  depth: int) -> tuple[float, ...]:
    return tuple(2 * np.log(theory.fitted_growth(activation, x, sigma_b, depth))
                 for x in np.linspace(low, high, _FINE))


def boundaries(sweep: pd.DataFrame, P: Params) -> dict[str, tuple[float, ...]]:
    """Per activation, the sigma_w of the boundary: (measured, fixed-point theory,
    finite-depth theory, finite-depth theory on the measured grid).

    The finite-depth prediction is the per-layer factor reduced by the measurement's own
    fit (:func:`..theory.fitted_growth`); its crossing on a fine grid is where it lies,
    and its crossing when evaluated at the measured sigma_w and interpolated linearly, as
    the measurement is, is the like-for-like comparison (the interpolation moves a curved
    crossing)."""
    summary, fine = sweep_summary(sweep), _fine(P)
    out = {}
    for act in ACTIVATIONS:
        sub = summary[summary.activation == act]
        on_grid = [2 * math.log(theory.fitted_growth(act, x, P.sigma_b, P.depth))
                   for x in sub.sigma_w]
        out[act] = (growth.crossing(sub.sigma_w, sub["mean"]),
                    theory.critical_sigma_w(act, P.sigma_b),
                    growth.crossing(fine, _finite_log_chi(act, P)),
                    growth.crossing(sub.sigma_w, on_grid))
    return out


def sweep_gsc(sweep: pd.DataFrame) -> pd.DataFrame:
    """Per (activation, sigma_w): mean and spread over seeds of the per-layer factor of
    the gradient scale coefficient (:func:`..study.growth.gradient_scale`)."""
    by = ["activation", "sigma_w"]
    gsc = sweep.assign(gsc=growth.gradient_scale(sweep, by))
    return growth.spread(growth.growth_per_layer(gsc, "gsc", by), "growth", by)


def sweep_numbers(sweep: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 1."""
    numbers = {"init_depth": P.depth, "init_width": P.width, "init_seeds": P.seeds}
    for act, (measured, pred, finite, grid) in boundaries(sweep, P).items():
        numbers[f"init_boundary_{act}_measured"] = f"{measured:.3f}"
        numbers[f"init_boundary_{act}_theory"] = f"{pred:.3f}"
        numbers[f"init_boundary_{act}_finite"] = f"{finite:.3f}"
        numbers[f"init_boundary_{act}_finite_grid"] = f"{grid:.3f}"
    relu = sweep_gsc(sweep)
    relu = relu[relu.activation == "relu"]
    numbers["init_relu_gsc_low"] = f"{relu['mean'].min():.3f}"
    numbers["init_relu_gsc_high"] = f"{relu['mean'].max():.3f}"
    numbers["init_sigma_w_low"] = f"{min(P.sigma_w_grid):g}"
    numbers["init_sigma_w_high"] = f"{max(P.sigma_w_grid):g}"
    return numbers


def fig_sweep(sweep: pd.DataFrame, P: Params) -> plt.Figure:
    """ln(per-layer factor on the squared norm) against sigma_w, measured and predicted."""
    summary, fine = sweep_summary(sweep), _fine(P)
    fig, ax = plots.figure(1, 1, height=4.6)
    for i, act in enumerate(ACTIVATIONS):
        sub = summary[summary.activation == act]
        s = plots.style(i)
        name = "ReLU" if act == "relu" else act
        ax.errorbar(sub.sigma_w, sub["mean"], yerr=sub["std"], fmt=s["marker"],
                    color=s["color"], capsize=3, label=f"{name}: measured (mean ± sd)")
        ax.plot(fine, [np.log(theory.chi1(act, x, P.sigma_b)) for x in fine],
                color=s["color"], label=f"{name}: $\\ln \\chi_1$ at the fixed point")
        ax.plot(fine, _finite_log_chi(act, P), ":", color=s["color"], linewidth=2,
                label=f"{name}: prediction at this depth")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel(r"$\sigma_w$ (weights $\sim \mathcal{N}(0, \sigma_w^2/N)$)")
    ax.set_ylabel(r"ln(per-layer factor on $\|\delta\|^2$)")
    ax.text(0.02, 0.95, "explodes ↑", transform=ax.transAxes, va="top")
    ax.text(0.98, 0.05, "vanishes ↓", transform=ax.transAxes, ha="right")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    return fig


def schemes_table(schemes: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per (activation, scheme): the scheme's effective sigma_w, chi_1, the measured and
    predicted (same fit) per-layer factor, the measured change over the whole network and
    the per-layer factor of the gradient scale coefficient."""
    rows = []
    for (act, scheme), sub in schemes.groupby(["activation", "init"], sort=False):
        g = growth.growth_per_layer(sub, "delta_norm")["growth"]
        gsc = growth.growth_per_layer(sub.assign(gsc=growth.gradient_scale(sub)), "gsc")
        sw, sb = init.effective_sigmas(scheme, act, P.width, P.width, 1.0, P.sigma_b)
        rows.append({"activation": act, "scheme": scheme, "sigma_w": sw,
                     "chi_1": theory.chi1(act, sw, sb),
                     "measured factor": g.mean(), "sd": g.std(),
                     "predicted factor": theory.fitted_growth(act, sw, sb, P.depth),
                     f"gradient change over {P.depth} layers": g.mean() ** (P.depth - 1),
                     "GSC factor": gsc["growth"].mean()})
    return pd.DataFrame(rows)


def schemes_display(schemes: pd.DataFrame, P: Params):
    """The schemes table as the page shows it: measured ± sd in one column."""
    table = schemes_table(schemes, P)
    shown = pd.DataFrame({
        "activation": table["activation"], "scheme": table["scheme"],
        "σ_w": table["sigma_w"], "χ₁": table["chi_1"],
        "measured": [f"{m:.3f} ± {s:.3f}" for m, s in zip(table["measured factor"],
                                                           table["sd"], strict=True)],
        "predicted": table["predicted factor"],
        f"over {P.depth} layers": table[f"gradient change over {P.depth} layers"],
        "GSC": table["GSC factor"]})
    return readable.table(shown, digits=3)


def schemes_numbers(schemes: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 2: each scheme's factor per layer and over the
    network (NaN for a scheme not measured), and the GSC factors of ReLU's Xavier and He."""
    table = schemes_table(schemes, P)
    numbers = {}
    for act in ACTIVATIONS:
        for scheme in P.schemes:
            row = table[(table.activation == act) & (table.scheme == scheme)]
            factor = row["measured factor"].iloc[0] if len(row) else float("nan")
            numbers[f"init_{act}_{scheme}_factor"] = f"{factor:.3f}"
            numbers[f"init_{act}_{scheme}_total"] = readable.number(factor ** (P.depth - 1), 2)
            gsc = row["GSC factor"].iloc[0] if len(row) else float("nan")
            numbers[f"init_{act}_{scheme}_gsc"] = f"{gsc:.3f}"
    return numbers


def fig_schemes(schemes: pd.DataFrame, P: Params) -> plt.Figure:
    """||delta^l|| / ||delta^L|| per layer under each scheme, for ReLU and tanh."""
    fig, axes = plots.figure(1, 2, height=4.0, sharey=True)
    for ax, act in zip(axes, ACTIVATIONS, strict=True):
        sub = schemes[schemes.activation == act].copy()
        sub["rel"] = growth.relative_to_last(sub, "delta_norm", ["init"])
        plots.per_layer(ax, sub, "rel", "init", {s: s for s in P.schemes})
        ax.set_title("ReLU" if act == "relu" else act)
        ax.set_xlabel("layer $l$")
    axes[0].set_ylabel(r"$\|\delta^l\| \,/\, \|\delta^L\|$")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=len(names))
    return fig


# --------------------------------------------------------------------------- Jacobian

def isometry_table(spectra: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per (activation, weights): the mean squared singular value against its mean-field
    prediction prod chi^l, the fraction of singular values within a factor 2 of 1, the
    fraction that are zero (below 1e-10 of the largest), and the largest."""
    rows = []
    for (act, weights, sw, q), sub in spectra.groupby(
            ["activation", "weights", "sigma_w", "input_q"], sort=False):
        s = sub["singular_value"].to_numpy()
        prof = theory.layer_profile(act, sw, 0.0, P.depth, input_q=q)
        rows.append({"activation": act, "weights": weights, "sigma_w": sw,
                     "mean s²": float(np.mean(s**2)),
                     "predicted mean s²": float(np.exp(prof["log_delta_sq"].iloc[0])),
                     "within ×2 of 1": float(np.mean((s > 0.5) & (s < 2))),
                     "zero": float(np.mean(s < 1e-10 * s.max())),
                     "largest": float(s.max())})
    return pd.DataFrame(rows)


def isometry_display(spectra: pd.DataFrame, P: Params):
    """The Jacobian table as the page shows it."""
    table = isometry_table(spectra, P).drop(columns="sigma_w")
    return readable.table(table, digits=3, formats={
        c: "{:.0%}".format for c in ["within ×2 of 1", "zero"]})


def isometry_numbers(spectra: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the Jacobian measurement."""
    table = isometry_table(spectra, P).set_index(["activation", "weights"])
    numbers = {"init_jac_width": P.jacobian_width, "init_jac_tanh_sigma_w":
               f"{P.jacobian_tanh_sigma_w:g}",
               "init_jac_tanh_q": f"{theory.q_fixed_point('tanh', P.jacobian_tanh_sigma_w, 0):.3f}",
               "init_jac_tanh_chi": f"{theory.chi1('tanh', P.jacobian_tanh_sigma_w, 0):.4f}"}
    for act, pred in table.groupby(level="activation")["predicted mean s²"].first().items():
        numbers[f"init_jac_{act}_pred"] = f"{pred:.2f}"
    for (act, weights), row in table.iterrows():
        key = f"init_jac_{act}_{weights}"
        numbers[key + "_within"] = f"{row['within ×2 of 1']:.0%}"
        numbers[key + "_zero"] = f"{row['zero']:.0%}"
        numbers[key + "_mean"] = f"{row['mean s²']:.2f}"
        numbers[key + "_largest"] = f"{row['largest']:.3g}"
    return numbers


def fig_isometry(spectra: pd.DataFrame, P: Params) -> plt.Figure:
    """Cumulative distribution of the Jacobian's singular values, Gaussian against
    orthogonal weights, for ReLU and tanh (log x axis: zeros start the curve above 0)."""
    fig, axes = plots.figure(1, 2, height=3.8, sharey=True)
    for ax, act in zip(axes, ACTIVATIONS, strict=True):
        for i, weights in enumerate(("gaussian", "orthogonal")):
            s = np.sort(spectra.loc[(spectra.activation == act) &
                                    (spectra.weights == weights), "singular_value"].to_numpy())
            if not len(s):
                continue
            ax.step(np.maximum(s, 1e-8), np.arange(1, len(s) + 1) / len(s), where="post",
                    color=plots.style(i)["color"], label=f"{weights} weights")
        ax.axvspan(0.5, 2.0, color="0.85", zorder=0)
        ax.set_xscale("log")
        ax.set_xlim(1e-6, 1e2)
        ax.set_xlabel("singular value of $J$")
        sw = math.sqrt(2) if act == "relu" else P.jacobian_tanh_sigma_w
        ax.set_title(f"{'ReLU' if act == 'relu' else act}, $\\sigma_w$ = {sw:.3g}")
    axes[0].set_ylabel("fraction of singular values ≤ x")
    handles, names = axes[0].get_legend_handles_labels()
    handles.append(mpl.patches.Patch(color="0.85"))
    names.append("within a factor 2 of 1")
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3)
    return fig


# --------------------------------------------------------------------------- training

def first_step_layers(runs: pd.DataFrame) -> pd.DataFrame:
    """The per-layer rows of step 0: each hidden layer's weight-gradient norm before any
    update, per (init, seed)."""
    return runs[(runs.step == 0) & (runs.layer >= 1)]


def rescaling(scheme: str, reference: str, P: Params) -> np.ndarray:
    """Per hidden layer k, the factor by which ``scheme``'s weight gradient at step 0 is
    ``reference``'s when the two differ only by the scale of each weight matrix (both
    Gaussian, bias-free): a bias-free ReLU network is positively homogeneous, so scaling
    matrix j by rho_j scales the output by prod_j rho_j and the gradient of matrix k by
    prod_{j != k} rho_j, up to the change of the output error.  The matrices are the
    input layer (d_in -> width), the hidden ones and the readout (width -> 4 classes)."""
    d_in = next(p.default for p in DATA_PARAMS if p.name == "d_in")
    fans = ([(d_in, P.train_width)] + [(P.train_width, P.train_width)] * (P.train_depth - 1)
            + [(P.train_width, D_OUT)])
    rho = np.array([init.effective_sigmas(scheme, "relu", i, o)[0]
                    / init.effective_sigmas(reference, "relu", i, o)[0] for i, o in fans])
    return np.prod(rho) / rho[:-1]


def scale_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """How Xavier's weight gradients at step 0 compare with He's, layer by layer: the
    median ratio and its range over layers, how flat Xavier's are (first over last
    layer), the rescaling a hidden layer's gradient gets from the weights' scales alone
    (:func:`rescaling`), and what is left of the ratio after it, with its range over
    layers: one number at every layer if the difference is a change of scale."""
    first = first_step_layers(runs).groupby(["init", "layer"])["grad_norm"].median()
    inits = set(first.index.get_level_values("init"))
    numbers = {}
    if "default" in inits:
        default = first["default"]
        numbers["init_default_first_over_last"] = readable.number(
            default.iloc[0] / default.iloc[-1], 2)
    if not {"xavier", "he"} <= inits:
        return numbers
    ratio = first["xavier"] / first["he"]
    scale = rescaling("xavier", "he", P)
    left = ratio.to_numpy() / scale[:len(ratio)]
    return numbers | {
        "init_xavier_he_ratio": readable.number(ratio.median(), 2),
        "init_xavier_he_ratio_low": readable.number(ratio.min(), 2),
        "init_xavier_he_ratio_high": readable.number(ratio.max(), 2),
        "init_xavier_first_over_last": f"{first['xavier'].iloc[0] / first['xavier'].iloc[-1]:.2f}",
        "init_rescaling": readable.number(float(np.median(scale)), 2),
        "init_rescaling_left": f"{np.median(left):.2f}",
        "init_rescaling_left_low": f"{left.min():.2f}",
        "init_rescaling_left_high": f"{left.max():.2f}"}


def training_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 3: its settings, and per scheme the final test
    accuracy, how many runs diverged and the initial gradient norm."""
    numbers = {f"init_{key}": P[key] for key in [
        "train_depth", "train_width", "train_lr", "train_steps", "train_seeds",
        "train_sigma_w"]}
    numbers["init_train_chi"] = f"{theory.chi1('relu', P.train_sigma_w, 0.0):.2f}"
    for _, row in outcomes.training_table(runs, ["init"]).iterrows():
        numbers[f"init_train_{row['init']}_acc"] = readable.number(
            row["final test accuracy"], 2, missing="diverged")
        numbers[f"init_train_{row['init']}_div"] = f"{row['diverged']}"
        numbers[f"init_train_{row['init']}_g0"] = readable.number(
            row["initial gradient norm"], 3)
    numbers.update(scale_numbers(runs, P))
    return numbers


def fig_training(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Training loss over the steps per scheme (log axis, diverged runs marked), and each
    hidden layer's weight-gradient norm at step 0."""
    fig, axes = plots.figure(2, 1, height=7.4)
    labels = {s: s for s in P.train_inits}
    plots.loss_panel(axes[0], runs, "init", list(P.train_inits), labels)
    for text in axes[0].get_legend().get_texts():  # the shared panel writes 9 pt
        text.set_fontsize(10)
    plots.log_axis(axes[0])
    first = first_step_layers(runs)
    for i, scheme in enumerate(P.train_inits):
        sub = first[first["init"] == scheme].pivot(index="layer", columns="seed",
                                                   values="grad_norm")
        if len(sub):
            plots.band(axes[1], sub.index, sub, i, scheme)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("layer $l$")
    axes[1].set_ylabel(r"$\|\partial L/\partial W^l\|$ at step 0")
    axes[1].legend(ncol=len(labels), loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    return fig


def training_display(runs: pd.DataFrame, P: Params):
    """The outcome table as the page shows it ("diverged" where every run did)."""
    table = outcomes.training_table(runs, ["init"])
    diverged = lambda v: readable.number(v, 3, missing="diverged")  # noqa: E731
    return readable.table(table, formats={"final training loss": diverged,
                                          "final test accuracy": diverged})
