"""Initialization: where the boundary between vanishing and exploding gradients lies, where
the named schemes land, and whether it matters for training.

The page runs two ``signal_propagation`` sweeps (over sigma_w, and over the named schemes)
and one ``training`` sweep over ``init`` (all visible on it); this module turns their
tables into the page's numbers, tables and figures.
"""

from __future__ import annotations

import functools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import init, theory
from ..engine.params import Param
from ..init import SCHEMES
from ..study import growth, outcomes, plots
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
    return tuple(2 * np.log(theory.predicted_growth(activation, x, sigma_b, depth))
                 for x in np.linspace(low, high, _FINE))


def boundaries(sweep: pd.DataFrame, P: Params) -> dict[str, tuple[float, float, float]]:
    """Per activation, the sigma_w of the phase boundary: (measured, fixed-point theory,
    finite-depth theory)."""
    summary, fine = sweep_summary(sweep), _fine(P)
    out = {}
    for act in ACTIVATIONS:
        sub = summary[summary.activation == act]
        out[act] = (growth.crossing(sub.sigma_w, sub["mean"]),
                    theory.critical_sigma_w(act, P.sigma_b),
                    growth.crossing(fine, _finite_log_chi(act, P)))
    return out


def sweep_numbers(sweep: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 1."""
    numbers = {"init_depth": P.depth, "init_width": P.width, "init_seeds": P.seeds}
    for act, (measured, pred, finite) in boundaries(sweep, P).items():
        numbers[f"init_boundary_{act}_measured"] = f"{measured:.3f}"
        numbers[f"init_boundary_{act}_theory"] = f"{pred:.3f}"
        numbers[f"init_boundary_{act}_finite"] = f"{finite:.3f}"
    return numbers


def fig_sweep(sweep: pd.DataFrame, P: Params) -> plt.Figure:
    """ln(per-layer factor on the squared norm) against sigma_w, measured and predicted."""
    summary, fine = sweep_summary(sweep), _fine(P)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, act in enumerate(ACTIVATIONS):
        sub = summary[summary.activation == act]
        s = plots.style(i)
        ax.errorbar(sub.sigma_w, sub["mean"], yerr=sub["std"], fmt=s["marker"],
                    color=s["color"], capsize=3, label=f"{act}: measured (mean ± sd over seeds)")
        ax.plot(fine, [np.log(theory.chi1(act, x, P.sigma_b)) for x in fine],
                color=s["color"], label=f"{act}: $\\ln \\chi_1$ at the fixed point")
        ax.plot(fine, _finite_log_chi(act, P), ":", color=s["color"],
                label=f"{act}: finite-depth prediction")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel(r"$\sigma_w$ (weights $\sim \mathcal{N}(0, \sigma_w^2/N)$)")
    ax.set_ylabel(r"ln(per-layer factor on $\|\delta\|^2$)")
    ax.text(0.02, 0.95, "chaotic: explodes ↑", transform=ax.transAxes, va="top")
    ax.text(0.98, 0.05, "ordered: vanishes ↓", transform=ax.transAxes, ha="right")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
    return fig


def schemes_table(schemes: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per (activation, scheme): the scheme's effective sigma_w, chi_1, the measured and
    predicted per-layer factor, and the measured change over the whole network."""
    rows = []
    for (act, scheme), sub in schemes.groupby(["activation", "init"], sort=False):
        g = growth.growth_per_layer(sub, "delta_norm")["growth"]
        sw, sb = init.effective_sigmas(scheme, act, P.width, P.width, 1.0, P.sigma_b)
        rows.append({"activation": act, "scheme": scheme, "sigma_w": sw,
                     "chi_1": theory.chi1(act, sw, sb),
                     "measured factor": g.mean(), "sd": g.std(),
                     "predicted factor": theory.predicted_growth(act, sw, sb, P.depth),
                     f"gradient change over {P.depth} layers": g.mean() ** (P.depth - 1)})
    return pd.DataFrame(rows)


def schemes_display(schemes: pd.DataFrame, P: Params):
    """The schemes table as the page shows it."""
    return schemes_table(schemes, P).style.format(precision=3).hide()


def schemes_numbers(schemes: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 2: each scheme's factor per layer and over the
    network (NaN for a scheme not measured)."""
    table = schemes_table(schemes, P)
    numbers = {}
    for act in ACTIVATIONS:
        for scheme in P.schemes:
            row = table[(table.activation == act) & (table.scheme == scheme)]
            factor = row["measured factor"].iloc[0] if len(row) else float("nan")
            numbers[f"init_{act}_{scheme}_factor"] = f"{factor:.3f}"
            numbers[f"init_{act}_{scheme}_total"] = f"{factor ** (P.depth - 1):.2g}"
    return numbers


def fig_schemes(schemes: pd.DataFrame, P: Params) -> plt.Figure:
    """||delta^l|| / ||delta^L|| per layer under each scheme, for ReLU and tanh."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for ax, act in zip(axes, ACTIVATIONS, strict=True):
        sub = schemes[schemes.activation == act].copy()
        sub["rel"] = growth.relative_to_last(sub, "delta_norm", ["init"])
        plots.per_layer(ax, sub, "rel", "init", {s: s for s in P.schemes})
        ax.set_title(act)
        ax.legend()
    axes[0].set_ylabel(r"$\|\delta^l\| \,/\, \|\delta^L\|$")
    return fig


def training_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 3: its settings, and per scheme the final test
    accuracy, how many runs diverged and the initial gradient norm."""
    numbers = {f"init_{key}": P[key] for key in [
        "train_depth", "train_width", "train_lr", "train_steps", "train_seeds",
        "train_sigma_w"]}
    numbers["init_train_chi"] = f"{theory.chi1('relu', P.train_sigma_w, 0.0):.2f}"
    for _, row in outcomes.training_table(runs, ["init"]).iterrows():
        numbers[f"init_train_{row['init']}_acc"] = f"{row['final test accuracy']:.2f}"
        numbers[f"init_train_{row['init']}_div"] = f"{row['diverged']}"
        numbers[f"init_train_{row['init']}_g0"] = f"{row['initial gradient norm']:.3g}"
    return numbers


def fig_training(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Training loss and total gradient norm over the steps, per scheme."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    labels = {s: s for s in P.train_inits}
    plots.per_step(axes[0], runs, "loss", "init", labels)
    plots.per_step(axes[1], runs, "grad_norm", "init", labels)
    axes[0].set_ylabel("training loss (cross-entropy)")
    axes[1].set_ylabel("total gradient norm")
    axes[1].set_yscale("log")
    axes[0].legend()
    return fig


def training_display(runs: pd.DataFrame, P: Params):
    """The outcome table as the page shows it."""
    return outcomes.training_table(runs, ["init"]).style.format(precision=3).hide()
