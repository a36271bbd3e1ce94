"""Recurrence: the gradient through time, Pascanu et al.'s conditions, the one-unit cliff,
and learning the adding problem.

The page runs ``rnn_gradients`` (vanilla and gated cells), evaluates the one-unit model of
:mod:`..theory`, and trains with ``rnn_training``, all visible on it; this module turns
the results into the page's numbers, tables and figures.
"""

from __future__ import annotations

import functools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import theory
from ..data import ADDING_BASELINE_MSE
from ..engine.params import Param
from ..models.rnn import CELLS, GATES
from ..study import growth, plots
from ..study.outcomes import run_outcomes
from ..study.readable import number, table
from ..train import OPTIMIZERS
from . import Chapter, Params
from ._shared import SEEDS, from_profile

CHAPTER = Chapter(
    "recurrence",
    (
        SEEDS,
        from_profile(
            "seq_len", "int", "time steps T of the gradient measurements", low=2, high=100_000
        ),
        from_profile("hidden_size", "int", "hidden units of the measured cells", low=2, high=4096),
        Param(
            "spectral_radii",
            "list[float]",
            [0.3, 0.45, 0.7, 1.0, 1.5, 2.0, 3.0],
            "spectral radii of the vanilla RNN's recurrent matrix",
            low=0.0,
            high=100.0,
        ),
        Param(
            "gated_radii",
            "list[float]",
            [0.5, 1.0, 3.0],
            "spectral radii of each gate block of the LSTM and GRU",
            low=0.0,
            high=100.0,
        ),
        Param(
            "input_std",
            "float",
            1.0,
            "standard deviation of each unit's input drive",
            low=0.0,
            high=100.0,
        ),
        Param(
            "input_stds",
            "list[float]",
            [0.1, 0.3, 1.0, 2.0],
            "input-drive standard deviations of the threshold measurement",
            low=0.0,
            high=100.0,
        ),
        Param(
            "forget_biases",
            "list[float]",
            [0.0, 1.0, 3.0],
            "initial forget-gate biases of the LSTM at initialization",
            low=-20.0,
            high=20.0,
        ),
        Param(
            "cliff_w",
            "float",
            8.0,
            "w of the one-unit model's slice across the cliff",
            low=4.5,
            high=50.0,
        ),
        from_profile("train_seeds", "int", "seeds per training configuration", low=1, high=1000),
        from_profile(
            "train_seq_lens",
            "list[int]",
            "sequence lengths of the adding problem",
            low=2,
            high=100_000,
        ),
        from_profile("train_steps", "int", "optimizer steps per training run", low=1, high=10**6),
        Param("train_hidden", "int", 32, "hidden units of the trained networks", low=2, high=4096),
        Param(
            "train_radius", "float", 1.0, "spectral radius of the trained RNNs", low=0.0, high=100.0
        ),
        Param(
            "explode_radius",
            "float",
            3.0,
            "spectral radius of the RNN started in the exploding regime",
            low=0.0,
            high=100.0,
        ),
        Param("train_lr", "float", 0.01, "learning rate", low=1e-8, high=100.0),
        Param("train_optimizer", "str", "adam", "optimizer", choices=OPTIMIZERS),
        from_profile(
            "gated_seeds", "int", "seeds per gated cell (LSTM, GRU) in training", low=1, high=1000
        ),
        Param(
            "train_forget_bias",
            "float",
            1.0,
            "forget-gate bias of the second trained LSTM (the first has 0)",
            low=-20.0,
            high=20.0,
        ),
    ),
    {
        "quick": dict(
            seeds=2,
            seq_len=30,
            hidden_size=32,
            train_seeds=1,
            train_seq_lens=[5, 15],
            train_steps=40,
            gated_seeds=1,
        ),
        "default": dict(
            seeds=4,
            seq_len=100,
            hidden_size=64,
            train_seeds=3,
            train_seq_lens=[5, 10, 20, 40],
            train_steps=300,
            gated_seeds=3,
        ),
        "full": dict(
            seeds=10,
            seq_len=300,
            hidden_size=256,
            train_seeds=10,
            train_seq_lens=[5, 10, 20, 40, 80, 160],
            train_steps=2000,
            gated_seeds=5,
        ),
    },
)

#: The gated cells (more than one gate block), compared with the vanilla RNN.
GATED = [c for c in CELLS if GATES[c] > 1]
#: A run solves the adding problem when its final error is below this fraction of the
#: error of always answering 1 (it explains at least 90% of the target's variance).
SOLVED_FRACTION = 0.1
#: How the page names each optimizer.
OPTIMIZER_NAMES = {"adam": "Adam", "sgd": "SGD", "momentum": "SGD with momentum",
                   "rmsprop": "RMSprop"}
LAG_COL = "‖∂L/∂h₁‖/‖∂L/∂h_T‖ at step 0"
LAG_END = "… at the last step"
LAG_LABEL = r"$\|\partial L/\partial h_{T-k}\| \,/\, \|\partial L/\partial h_T\|$"


# --------------------------------------------------------------------------- Measurements 1, 2


def pascanu_verdicts(df: pd.DataFrame, gamma: float = theory.GAMMA["tanh"],
                     by: list[str] | None = None) -> pd.DataFrame:
    """Per (cell, spectral_radius) (or ``by``): matrix statistics, measured growth,
    Pascanu's verdict.

    ``condition`` is what Pascanu et al.'s criterion says from sigma_max alone:
    "vanishing guaranteed" if gamma sigma_max < 1, otherwise "exploding possible".
    ``measured`` is "explodes" if the mean per-step factor exceeds 1, else "vanishes".
    ``consistent`` is False only if a guaranteed vanishing case was measured to explode.
    ``naive rule`` is the popular reading "spectral radius > 1 explodes", checked the same
    way (``naive correct``).  For lstm/gru the criterion does not apply (the cell is not
    of the form h_t = sigma(W h_{t-1} + ...)), so ``condition`` is "n/a".
    """
    by = by or ["cell", "spectral_radius"]
    factors = growth.growth_per_lag(df, by)
    stats = df.groupby(by, sort=False)[["spectral_radius_measured", "sigma_max",
                                        "sigma_w"]].mean().reset_index()
    agg = factors.groupby(by, sort=False)["growth"].agg(["mean", "std", "min", "max", "count"])
    table = stats.merge(agg.reset_index(), on=by)
    explodes = table["mean"] > 1
    table["measured"] = np.where(explodes, "explodes", "vanishes")
    rnn = (df.groupby(by, sort=False)["cell"].first().to_numpy() == "rnn"
           if "cell" not in by else table["cell"] == "rnn")
    guaranteed = gamma * table["sigma_max"] < 1
    table["condition"] = np.where(~rnn, "n/a", np.where(guaranteed, "vanishing guaranteed",
                                                         "exploding possible"))
    table["consistent"] = ~(rnn & guaranteed & explodes)
    table["naive rule"] = np.where(table["spectral_radius_measured"] > 1, "explodes",
                                   "vanishes")
    table["naive correct"] = table["naive rule"] == table["measured"]
    return table


def verdicts(grads: pd.DataFrame, P: Params) -> pd.DataFrame:
    """:func:`pascanu_verdicts` plus the mean-field factor sqrt(chi_1) and its relative
    error against the measured mean (``mf_error``)."""
    table = pascanu_verdicts(grads)
    table["mean-field"] = [theory.mean_field_growth(s, P.input_std) for s in table.sigma_w]
    table["mf_error"] = table["mean"] / table["mean-field"] - 1
    return table


def relative_to_last_step(grads: pd.DataFrame, by: list[str]) -> pd.Series:
    """||dL/dh_{T-k}|| / ||dL/dh_T|| of each row (lag 0 is a run's first row)."""
    return grads["grad_norm"] / grads.groupby([*by, "seed"])["grad_norm"].transform("first")


def fig_lags(grads: pd.DataFrame, P: Params) -> plt.Figure:
    """Relative gradient norm against the lag, one band per spectral radius."""
    rel = grads.assign(rel=relative_to_last_step(grads, ["spectral_radius"]))
    table = pascanu_verdicts(grads)
    fig, ax = plots.figure(1, 1, height=4.2)
    for i, r in enumerate(P.spectral_radii):
        sub = rel[rel.spectral_radius == r].pivot(index="lag", columns="seed", values="rel")
        smax = table.loc[table.spectral_radius == r, "sigma_max"].iloc[0]
        plots.band(ax, sub.index, sub, i, f"$\\rho$ = {r:g} ($\\sigma_{{\\max}}$ = {smax:.2f})")
    ax.set_yscale("log")
    ax.set_xlabel("lag $k$ (time steps before the last)")
    ax.set_ylabel(LAG_LABEL)
    ax.set_title(f"tanh RNN, input scale {P.input_std:g}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def verdict_table(grads: pd.DataFrame, P: Params):
    """The per-radius verdicts as the page shows them."""
    show = verdicts(grads, P)[["spectral_radius_measured", "sigma_max", "condition", "mean",
                               "std", "mean-field", "naive correct"]]
    show = show.rename(columns={
        "spectral_radius_measured": "ρ", "sigma_max": "σ_max",
        "condition": "Pascanu (σ_max < 1/γ?)", "mean": "factor per step (mean)",
        "std": "sd", "mean-field": "mean-field √χ₁", "naive correct": "ρ > 1 rule right?"})
    show["ρ > 1 rule right?"] = show["ρ > 1 rule right?"].map({True: "yes", False: "no"})
    return table(show)


def lag_numbers(grads: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 1."""
    table = verdicts(grads, P)
    numbers = {"rec_hidden": P.hidden_size, "rec_input_std": f"{P.input_std:g}",
               "rec_seq_len": P.seq_len, "rec_seeds": P.seeds}
    ratio = (grads.groupby("seed")["sigma_max"].first()
             / grads.groupby("seed")["spectral_radius_measured"].first())
    numbers.update({"rec_smax_ratio": f"{ratio.mean():.2f}",
                    "rec_smax_ratio_low": f"{ratio.min():.2f}",
                    "rec_smax_ratio_high": f"{ratio.max():.2f}",
                    "rec_rho_guarantee": f"{1 / ratio.mean():.2f}"})
    numbers["rec_n_guaranteed"] = int((table.condition == "vanishing guaranteed").sum())
    # The bound, checked seed by seed: measured factor against gamma sigma_max (gamma = 1).
    per_seed = growth.growth_per_lag(grads, ["spectral_radius"]).merge(
        grads.groupby(["spectral_radius", "seed"])["sigma_max"].first().reset_index())
    slack = per_seed["growth"] / (theory.GAMMA["tanh"] * per_seed["sigma_max"])
    numbers["rec_bound_max"] = f"{slack.max():.2f}"
    numbers["rec_bound_held"] = "held" if (slack <= 1).all() else "was VIOLATED"
    numbers["rec_n_violations"] = int((~table.consistent).sum())
    possible = table[table.condition == "exploding possible"]
    numbers["rec_n_possible"] = len(possible)
    numbers["rec_n_possible_vanish"] = int((possible.measured == "vanishes").sum())
    numbers["rec_n_naive_wrong"] = int((~table["naive correct"]).sum())
    numbers["rec_n_configs"] = len(table)
    wrong = table.loc[~table["naive correct"], "spectral_radius"]
    numbers["rec_naive_wrong_list"] = ", ".join(f"{r:g}" for r in wrong) if len(wrong) else "none"
    one = table.iloc[(table.spectral_radius - 1.0).abs().argsort().iloc[0]]
    numbers.update({"rec_rho1": f"{one.spectral_radius:g}",
                    "rec_rho1_growth": f"{one['mean']:.3f}",
                    "rec_rho1_total": number(one["mean"] ** P.seq_len),
                    "rec_rho1_smax": f"{one.sigma_max:.2f}"})
    crit = growth.crossing(table.spectral_radius, np.log(table["mean"]))
    numbers["rec_critical_rho"] = "not reached" if np.isnan(crit) else f"about {crit:.2f}"
    numbers["rec_mf_worst"] = f"{100 * table.mf_error.abs().max():.1f}"
    top = table.iloc[-1]
    numbers.update({"rec_top_rho": f"{top.spectral_radius:g}",
                    "rec_top_growth": f"{top['mean']:.3f}",
                    "rec_top_total": number(top["mean"] ** P.seq_len)})
    return numbers


# --------------------------------------------------------------------------- the input scale


@functools.cache
def _mean_field(sigma_w: float, input_std: float) -> float:
    """:func:`..theory.mean_field_growth`, remembered: the table, the numbers and the
    figure ask for the same values, and each costs a fixed-point iteration."""
    return theory.mean_field_growth(sigma_w, input_std)


@functools.cache
def _critical(input_std: float, tol: float = 1e-5) -> float:
    """:func:`..theory.rnn_critical_sigma_w`, remembered."""
    return theory.rnn_critical_sigma_w(input_std, tol=tol)


def threshold_table(scales: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per input scale: the mean-field critical sigma_w, and where the measured per-step
    factor crosses 1, in sigma_w (the mean-field variable: each matrix's RMS row norm)
    and in spectral radius (interpolated on the log of the factor); the largest error
    of the mean-field factor over the radii, and the one nearest the crossing."""
    rows = []
    for s, g in scales.groupby("input_std"):
        t = pascanu_verdicts(g, by=["spectral_radius"])
        mf = np.array([_mean_field(w, s) for w in t.sigma_w])
        err = t["mean"].to_numpy() / mf - 1
        near = int(np.argmin(np.abs(np.log(t["mean"].to_numpy()))))
        rows.append({"input std": s, "mean-field critical σ_w": _critical(s),
                     "measured critical σ_w": growth.crossing(t.sigma_w, np.log(t["mean"])),
                     "measured critical ρ": growth.crossing(t.spectral_radius,
                                                            np.log(t["mean"])),
                     "largest error %": 100 * np.abs(err).max(),
                     "error % at the crossing": 100 * err[near]})
    return pd.DataFrame(rows)


def threshold_display(scales: pd.DataFrame, P: Params):
    """:func:`threshold_table` as the page shows it."""
    return table(threshold_table(scales, P), formats={
        "input std": "{:g}", "largest error %": "{:.1f}", "error % at the crossing": "{:+.1f}"})


def threshold_numbers(scales: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the input-scale measurement."""
    t = threshold_table(scales, P).set_index("input std")
    lo, hi = min(P.input_stds), max(P.input_stds)
    numbers = {"rec_in_stds": ", ".join(f"{s:g}" for s in P.input_stds),
               "rec_in_lo": f"{lo:g}", "rec_in_hi": f"{hi:g}",
               "rec_in_zero_crit": f"{theory.rnn_critical_sigma_w(0.0):.2f}",
               "rec_in_cross_err": f"{t['error % at the crossing'].abs().max():.1f}",
               "rec_in_worst": f"{t['largest error %'].max():.1f}"}
    crit_err = (t["measured critical σ_w"] / t["mean-field critical σ_w"] - 1).abs()
    numbers["rec_in_crit_err"] = f"{100 * crit_err.max():.0f}"
    for key, s in (("lo", lo), ("hi", hi)):
        numbers.update({f"rec_in_{key}_mf": f"{t.loc[s, 'mean-field critical σ_w']:.2f}",
                        f"rec_in_{key}_sw": f"{t.loc[s, 'measured critical σ_w']:.2f}",
                        f"rec_in_{key}_rho": f"{t.loc[s, 'measured critical ρ']:.2f}"})
    weakest = t.index[0]
    numbers["rec_in_weak_err"] = f"{t.loc[weakest, 'largest error %']:.1f}"
    return numbers


def fig_threshold(scales: pd.DataFrame, P: Params) -> plt.Figure:
    """Left: the per-step factor against sigma_w for each input scale, with the
    mean-field sqrt(chi_1) drawn through; right: the critical sigma_w against the input
    scale, mean field and measured."""
    fig, axes = plots.figure(1, 2, height=3.8)
    ax = axes[0]
    for i, s in enumerate(P.input_stds):
        t = pascanu_verdicts(scales[scales.input_std == s], by=["spectral_radius"])
        ax.errorbar(t.sigma_w, t["mean"], yerr=t["std"], fmt=plots.style(i)["marker"],
                    color=plots.style(i)["color"], capsize=2, label=f"{s:g}")
        grid = np.linspace(t.sigma_w.min(), t.sigma_w.max(), 15)
        ax.plot(grid, [_mean_field(w, s) for w in grid], "-", linewidth=1,
                color=plots.style(i)["color"])
    ax.axhline(1.0, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel(r"$\sigma_w$ (RMS row norm of $W$)")
    ax.set_ylabel("factor per time step")
    plots.log_axis(ax)
    ax.legend(title="input std", loc="lower right")
    ax = axes[1]
    t = threshold_table(scales, P)
    fine = np.linspace(0, max(P.input_stds), 13)
    ax.plot(fine, [_critical(s, 1e-3) for s in fine], "-",
            color="black", linewidth=1, label="mean field")
    ax.plot(t["input std"], t["measured critical σ_w"], "o", color=plots.style(0)["color"],
            label="measured")
    ax.set_xlabel("input std")
    ax.set_ylabel(r"critical $\sigma_w$")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- gated cells


def with_gate_case(gated: pd.DataFrame) -> pd.DataFrame:
    """``gated`` with ``case``: the cell, with the LSTM's forget bias when it has one, and
    ``forget_bias`` filled with 0 where a sweep point left it out."""
    fb = gated["forget_bias"].fillna(0.0) if "forget_bias" in gated else 0.0
    out = gated.assign(forget_bias=fb)
    out["case"] = [f"LSTM, forget bias {b:g}" if c == "lstm" else c.upper()
                   for c, b in zip(out["cell"], out["forget_bias"], strict=True)]
    return out


def gated_factors(gated: pd.DataFrame) -> pd.DataFrame:
    """Per (case, spectral radius): mean and sd over seeds of the factor per step."""
    cases = with_gate_case(gated)
    factors = growth.growth_per_lag(cases, ["case", "spectral_radius"])
    return factors.groupby(["case", "spectral_radius"], sort=False)["growth"].agg(
        ["mean", "std"]).reset_index()


def fig_gated(gated: pd.DataFrame, P: Params) -> plt.Figure:
    """Left: factor per step against the block radius per case; right: the gradient
    against the lag at the radius nearest 1."""
    factors, cases = gated_factors(gated), with_gate_case(gated)
    labels = list(dict.fromkeys(factors["case"]))
    r1 = min(P.gated_radii, key=lambda r: abs(r - 1.0))
    fig, axes = plots.figure(1, 2, height=3.6)
    for i, case in enumerate(labels):
        sub = factors[factors.case == case]
        axes[0].errorbar(sub.spectral_radius, sub["mean"], yerr=sub["std"], capsize=2,
                         label=case, **plots.style(i))
        at = cases[(cases.case == case) & (cases.spectral_radius == r1)]
        rel = at.assign(rel=relative_to_last_step(at, ["case"])).pivot(
            index="lag", columns="seed", values="rel")
        plots.band(axes[1], rel.index, rel, i, case)
    axes[0].axhline(1.0, color="gray", linestyle=":", linewidth=1)
    axes[0].set_xscale("log")
    axes[0].set_xticks(P.gated_radii, [f"{r:g}" for r in P.gated_radii])
    axes[0].minorticks_off()
    axes[0].set_xlabel(r"spectral radius $\rho$ of each block")
    axes[0].set_ylabel("factor per time step")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("lag $k$")
    axes[1].set_ylabel(LAG_LABEL)
    axes[1].set_title(f"$\\rho$ = {r1:g}")
    handles, names = axes[0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles, names, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
    return fig


def gated_numbers(gated: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 2: the range of the factor with zero biases, and
    per forget bias the LSTM's factor at the radius nearest 1 with sigmoid(bias)."""
    factors = gated_factors(gated)
    zero = factors[~factors.case.str.startswith("LSTM") | factors.case.str.endswith(" 0")]
    r1 = min(P.gated_radii, key=lambda r: abs(r - 1.0))
    numbers = {"rec_gated_low": f"{zero['mean'].min():.3f}",
               "rec_gated_high": f"{zero['mean'].max():.3f}",
               "rec_gated_max_rho": f"{max(P.gated_radii):g}", "rec_fb_rho": f"{r1:g}",
               "rec_gated_any_explode": "none of them" if (zero["mean"] <= 1).all()
               else "some of them"}
    at = factors[factors.spectral_radius == r1].set_index("case")["mean"]
    biases = sorted(P.forget_biases)
    numbers["rec_fb_factors"] = and_list(
        [f"{at[f'LSTM, forget bias {b:g}']:.3f} with bias {b:g}" for b in biases])
    numbers["rec_fb_sigmoids"] = and_list([f"{1 / (1 + np.exp(-b)):.2f}" for b in biases])
    numbers["rec_fb_list"] = and_list([f"{b:g}" for b in biases])
    numbers["rec_gru_r1"] = f"{at['GRU']:.3f}"
    return numbers


def and_list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# --------------------------------------------------------------------------- Measurement 3


def cliff_numbers(surface, cliffs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the one-unit model: the cliff at ``cliff_w`` after the longest
    horizon, the median gradient norm over the ``surface`` grid (w, b, loss, dL/dw,
    dL/db), and the growth per step of the cliff's peak gradient with the horizon."""
    _, _, _, dldw, dldb = surface
    last = cliffs.iloc[-1]
    return {"rec_cliff_w": f"{P.cliff_w:g}", "rec_cliff_b": f"{last.b_star:.4f}",
            "rec_cliff_jump_from": number(last.loss_left),
            "rec_cliff_jump_to": number(last.loss_right),
            "rec_cliff_peak": number(last.peak_grad, 2),
            "rec_cliff_median_grad": number(np.median(np.hypot(dldw, dldb))),
            "rec_cliff_growth": f"{peak_growth(cliffs):.3f}",
            "rec_cliff_lambda": f"{last.saddle_slope:.3f}"}


def peak_growth(cliffs: pd.DataFrame) -> float:
    """Factor per step of the cliff's peak |dL/db| against the horizon (log-linear fit)."""
    return float(np.exp(growth.log_slope(cliffs.steps, np.log(cliffs.peak_grad))))


def fig_cliff(surface, cliffs: pd.DataFrame, P: Params) -> plt.Figure:
    """The loss surface and the slice across the cliff at ``cliff_w`` (top), and the peak
    gradient on the cliff against the horizon with the unstable fixed point's lambda^T
    (bottom, the whole width)."""
    w, b, loss = surface[:3]
    cw, last = P.cliff_w, cliffs.iloc[-1]
    bs = np.linspace(-10, 4, 4001)
    slice_loss = theory.one_unit_model(cw, bs)[0]
    fig, grid = plots.figure(2, 2, height=6.6)
    for ax in grid[1]:
        ax.remove()
    axes = [grid[0, 0], grid[0, 1], fig.add_subplot(2, 1, 2)]
    im = axes[0].pcolormesh(w, b, np.log10(loss + 1e-12), shading="auto", cmap="viridis")
    fig.colorbar(im, ax=axes[0], label=r"$\log_{10}$ loss")
    axes[0].axvline(cw, color="white", linestyle=":", linewidth=1)
    axes[0].set_xlabel("recurrent weight $w$")
    axes[0].set_ylabel("bias $b$")
    axes[0].set_title("loss after 50 steps")
    axes[0].grid(False)
    axes[1].plot(bs, slice_loss, color=plots.style(0)["color"])
    axes[1].axvline(last.b_star, color="gray", linestyle="--", linewidth=1)
    axes[1].set_xlabel(f"bias $b$ (at $w$ = {cw:g})")
    axes[1].set_ylabel(r"loss $(x_{50} - 0.7)^2$")
    axes[1].set_title("slice across the cliff")
    axes[2].semilogy(cliffs.steps, cliffs.peak_grad,
                     label=r"measured peak $|\partial L/\partial b|$", **plots.style(0))
    lam = last.saddle_slope
    axes[2].semilogy(cliffs.steps, last.peak_grad * lam ** (cliffs.steps - last.steps), "--",
                     color="gray", label=f"$\\lambda^T$, $\\lambda$ = {lam:.3f}")
    axes[2].set_xlabel("sequence length $T$ (steps of the map)")
    axes[2].set_ylabel(r"$|\partial L/\partial b|$ on the cliff")
    axes[2].legend(loc="upper left")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- Measurement 4


def training_outcomes(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """:func:`..study.outcomes.run_outcomes` of ``rnn_training`` runs (final loss: mean
    over the last tenth of the steps) plus ``solved``: final loss below
    ``SOLVED_FRACTION`` times the error of always answering 1 (never for a diverged run)."""
    out = run_outcomes(runs, by, tail=0.1)
    return out.assign(solved=out["final_loss"] < SOLVED_FRACTION * ADDING_BASELINE_MSE)


def outcome_table(outcomes: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of :func:`training_outcomes` rows: solved and diverged (k/n), medians of
    the final loss, the largest gradient norm, its spike and the lag ratios."""
    rows = []
    for key, g in outcomes.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key, strict=True)),
                     "solved": f"{int(g.solved.sum())}/{len(g)}",
                     "diverged": f"{int(g.diverged.sum())}/{len(g)}",
                     "final MSE (median)": g.final_loss.median(),
                     "max grad norm (median)": g.max_grad_norm.median(),
                     "max / median grad norm": g.spike.median(),
                     LAG_COL: g.lag_ratio_start.median(),
                     LAG_END: g.lag_ratio_end.median()})
    return pd.DataFrame(rows)


def training_display(runs: pd.DataFrame, P: Params):
    """The outcome table of the vanilla RNN runs per (radius, T), as the page shows it."""
    t = outcome_table(training_outcomes(runs, ["spectral_radius", "seq_len"]),
                      ["spectral_radius", "seq_len"])
    return table(t.rename(columns={"spectral_radius": "ρ", "seq_len": "T"}),
                 formats={"ρ": "{:g}"})


def setup_numbers(P: Params) -> dict:
    """The glued numbers describing the training setup of Measurement 4."""
    return {"rec_baseline": f"{ADDING_BASELINE_MSE:.3f}", "rec_train_hidden": P.train_hidden,
            "rec_train_radius": f"{P.train_radius:g}",
            "rec_train_opt": OPTIMIZER_NAMES[P.train_optimizer],
            "rec_train_lr": f"{P.train_lr:g}", "rec_train_steps": P.train_steps,
            "rec_train_seeds": P.train_seeds}


def training_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 4 (vanilla RNN)."""
    summary = training_outcomes(runs, ["spectral_radius", "seq_len"])
    ok = summary[summary.spectral_radius == P.train_radius]
    by_T = ok.groupby("seq_len").solved.mean()
    solved = [T for T, s in by_T.items() if s == 1]
    failed = [T for T, s in by_T.items() if s == 0]
    mixed = [T for T, s in by_T.items() if 0 < s < 1]
    ratio0 = ok.groupby("seq_len").lag_ratio_start.median()
    ex = summary[summary.spectral_radius == P.explode_radius]
    return {
        "rec_solved_T": ", ".join(map(str, solved)) if solved else "none",
        "rec_failed_T": ", ".join(map(str, failed)) if failed else "none",
        "rec_mixed_T": (", ".join(map(str, mixed)) + " (solved by some seeds only)")
        if mixed else "none",
        "rec_ratio_shortT": f"{ratio0.index[0]}", "rec_ratio_short": number(ratio0.iloc[0], 2),
        "rec_ratio_longT": f"{ratio0.index[-1]}", "rec_ratio_long": number(ratio0.iloc[-1], 2),
        "rec_spike_low": f"{ok.spike.min():.1f}", "rec_spike_high": f"{ok.spike.max():.1f}",
        "rec_explode_radius": f"{P.explode_radius:g}",
        "rec_explode_solved": f"{int(ex.solved.sum())}/{len(ex)}",
        "rec_explode_diverged": f"{int(ex.diverged.sum())}/{len(ex)}",
        "rec_explode_ratio_long":
            number(ex.groupby("seq_len").lag_ratio_start.median().iloc[-1], 2),
        "rec_explode_maxgrad": number(ex.max_grad_norm.max()),
        "rec_explode_spike": number(ex.spike.max()),
        "rec_ok_maxgrad": number(ok.max_grad_norm.max()),
    }


def fig_training(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Training error per T at ``train_radius`` (top) and the gradient norm of seed 0 for
    the shortest and longest T and the exploding start (bottom)."""
    fig, axes = plots.figure(2, 1, height=6.8, sharex=True)
    base = runs[runs.spectral_radius == P.train_radius]
    for i, T in enumerate(P.train_seq_lens):
        sub = base[base.seq_len == T]
        loss = sub.pivot(index="step", columns="seed", values="loss").rolling(10, 1).mean()
        plots.band(axes[0], loss.index, loss, i, f"T = {T}")
    traces = [(P.train_radius, min(P.train_seq_lens)), (P.train_radius, max(P.train_seq_lens)),
              (P.explode_radius, max(P.train_seq_lens))]
    for i, (r, T) in enumerate(traces):
        sub = runs[(runs.spectral_radius == r) & (runs.seq_len == T) & (runs.seed == 0)]
        axes[1].plot(sub.step, sub.grad_norm, color=plots.style(i)["color"], linewidth=0.8,
                     label=f"$\\rho$ = {r:g}, T = {T}")
    axes[0].axhline(ADDING_BASELINE_MSE, color="gray", linestyle="--", linewidth=1,
                    label="always predict 1")
    axes[0].axhline(SOLVED_FRACTION * ADDING_BASELINE_MSE, color="gray", linestyle=":",
                    linewidth=1, label="solved below")
    plots.log_axis(axes[0])
    axes[0].set_ylabel("training MSE")
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[0].set_title(f"tanh RNN, spectral radius {P.train_radius:g} (10-step average)")
    plots.log_axis(axes[1])
    axes[1].set_xlabel("optimizer step")
    axes[1].set_ylabel(r"$\|\nabla_\theta L\|$")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[1].set_title("total gradient norm, seed 0")
    fig.tight_layout()
    return fig


def gated_training(runs: pd.DataFrame, gruns: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Outcomes per run of the gated cells at the longest T (``case`` as in
    :func:`with_gate_case`), with the vanilla RNN's runs at that T and ``train_radius``
    first, as case "RNN"."""
    T = max(P.train_seq_lens)
    summary = training_outcomes(runs, ["spectral_radius", "seq_len"])
    rnn = summary[(summary.spectral_radius == P.train_radius) & (summary.seq_len == T)]
    gated = training_outcomes(with_gate_case(gruns), ["case"])
    return pd.concat([rnn.assign(case="RNN").drop(columns=["spectral_radius", "seq_len"]),
                      gated], ignore_index=True)


def gate_key(case: str) -> str:
    """The glue-key part of a case: rnn, gru, lstm (forget bias 0) or lstm_fb (the LSTM
    with ``train_forget_bias``)."""
    if case.startswith("LSTM"):
        return "lstm" if float(case.rsplit(" ", 1)[1]) == 0 else "lstm_fb"
    return case.lower()


def gated_training_numbers(runs: pd.DataFrame, gruns: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the gated cells on the adding problem."""
    both = gated_training(runs, gruns, P)
    numbers = {"rec_gated_T": max(P.train_seq_lens), "rec_gated_seeds": P.gated_seeds,
               "rec_train_fb": f"{P.train_forget_bias:g}"}
    for case, g in both.groupby("case", sort=False):
        key = gate_key(case)
        numbers.update({f"rec_gated_{key}_solved": f"{int(g.solved.sum())}/{len(g)}",
                        f"rec_gated_{key}_ratio0": number(g.lag_ratio_start.median(), 2),
                        f"rec_gated_{key}_ratio1": number(g.lag_ratio_end.median(), 2)})
    return numbers


def gated_training_display(runs: pd.DataFrame, gruns: pd.DataFrame, P: Params):
    """The outcome table per cell at the longest T, as the page shows it."""
    t = outcome_table(gated_training(runs, gruns, P), ["case"]).rename(columns={"case": "cell"})
    return table(t.drop(columns=["max / median grad norm"]))
