"""Learning rate: where plain SGD diverges, against the stability limit 2 / lambda_max.

The page runs ``lr_boundary`` (each seed's network trained at multiples of its own
2 / lambda_max at initialization) and ``sharpness`` (lambda_max tracked during training),
both visible on it; this module turns their tables into the page's numbers, table and
figures.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..engine.params import Param
from ..study import plots
from ..study.growth import power_law_fit
from ..study.outcomes import med_range, run_outcomes
from ..study.readable import median_range, number, table
from . import Chapter, Params
from ._shared import BATCH, SEEDS, WIDTH, from_profile

CHAPTER = Chapter(
    "learning_rate",
    (
        SEEDS,
        WIDTH,
        BATCH,
        from_profile(
            "depths", "list[int]", "hidden layers of the compared networks", low=1, high=1000
        ),
        Param(
            "sigma_ws",
            "list[float]",
            [1.4142, 1.0],
            "sigma_w of the compared initializations (sqrt 2 is He for ReLU)",
            low=0.01,
            high=10.0,
        ),
        from_profile(
            "lr_ratios",
            "list[float]",
            "learning rates, as multiples of each seed's 2 / lambda_max at init",
            low=1e-4,
            high=1e4,
        ),
        from_profile("steps", "int", "plain-SGD steps per run", low=1, high=10**6),
        Param(
            "traj_ratios",
            "list[float]",
            [0.5, 2.0, 4.0],
            "multiples of 2 / lambda_max(init) whose sharpness is tracked during training",
            low=1e-4,
            high=1e4,
        ),
        from_profile(
            "measure_every", "int", "steps between sharpness measurements", low=1, high=10**6
        ),
    ),
    {
        "quick": dict(
            seeds=1,
            width=32,
            depths=[2, 6],
            lr_ratios=[0.5, 1.0, 2.0, 4.0, 8.0, 16.0],
            steps=20,
            measure_every=10,
        ),
        "default": dict(
            seeds=3,
            width=128,
            depths=[4, 16],
            lr_ratios=[0.5, 0.71, 1.0, 1.41, 2.0, 2.83, 4.0, 5.66, 8.0, 11.3, 16.0],
            steps=100,
            measure_every=10,
        ),
        "full": dict(
            seeds=10,
            width=256,
            depths=[4, 16],
            lr_ratios=[round(2 ** (k / 4), 3) for k in range(-4, 21)],
            steps=500,
            measure_every=10,
        ),
    },
)


def label(depth: int, sigma_w: float) -> str:
    """How the page names one of the compared networks."""
    return f"depth {depth}, σ_w = {sigma_w:g}"


def fig_label(depth: int, sigma_w: float) -> str:
    """How a figure names one of the compared networks (sigma_w in math text)."""
    return f"depth {depth}, $\\sigma_w$ = {sigma_w:g}"


def networks(P: Params) -> list[tuple[int, float]]:
    """The compared (depth, sigma_w) pairs, in the sweep's order."""
    return [(d, s) for d in P.depths for s in P.sigma_ws]


def setup_numbers(P: Params) -> dict:
    """The glued numbers of the setup paragraph."""
    return {"lr_width": P.width, "lr_depths": " and ".join(map(str, P.depths)),
            "lr_sigma_ws": " and ".join(f"{s:g}" for s in P.sigma_ws),
            "lr_batch": P.batch_size, "lr_steps": P.steps, "lr_seeds": P.seeds}


# --------------------------------------------------------------------------- lr_boundary


def outcomes(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (depth, sigma_w, seed, lr_ratio) of an ``lr_boundary`` table: the run's
    ``lr``, ``lambda_max`` and ``readout_share``, whether it ``diverged``, its
    ``loss_ratio`` (final over first test loss, inf if it diverged) and whether it
    ``lowered`` the test loss."""
    keys = ["depth", "sigma_w", "lr_ratio"]
    out = run_outcomes(runs, keys)
    per_run = runs.groupby([*keys, "seed"], as_index=False)[
        ["lr", "lambda_max", "readout_share"]].first()
    out = out.merge(per_run, on=[*keys, "seed"])
    ratio = out["final_test_loss"] / out["first_test_loss"]
    out["loss_ratio"] = ratio.where(~out["diverged"], np.inf)
    out["lowered"] = ~out["diverged"] & (out["final_test_loss"] < out["first_test_loss"])
    columns = ["depth", "sigma_w", "seed", "lr_ratio", "lr", "lambda_max", "readout_share",
               "diverged", "loss_ratio", "lowered"]
    return out[columns].sort_values(["depth", "sigma_w", "seed", "lr_ratio"],
                                    ignore_index=True)


def per_seed(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per (depth, sigma_w, seed): ``lambda_max`` and ``stability_lr`` = 2 / lambda_max at
    init, the smallest diverging ratio ``r_div`` and the largest loss-lowering ratio
    ``r_ok`` (NaN if none on the grid), and both as absolute rates ``lr_div``, ``lr_ok``."""
    rows = []
    for (depth, sigma_w, seed), g in outcomes.groupby(["depth", "sigma_w", "seed"]):
        lam = g["lambda_max"].iloc[0]
        div, ok = g.loc[g["diverged"], "lr_ratio"], g.loc[g["lowered"], "lr_ratio"]
        r_div = div.min() if len(div) else np.nan
        r_ok = ok.max() if len(ok) else np.nan
        rows.append({"depth": depth, "sigma_w": sigma_w, "seed": seed, "lambda_max": lam,
                     "stability_lr": 2 / lam, "readout_share": g["readout_share"].iloc[0],
                     "r_div": r_div, "r_ok": r_ok, "lr_div": r_div * 2 / lam,
                     "lr_ok": r_ok * 2 / lam})
    return pd.DataFrame(rows)


def ratio_text(values, P: Params) -> str:
    """Median [min, max] of a boundary ratio over seeds; a seed with none on the grid
    counts as above its largest ratio ('>R'), and 'none up to R' when no seed has one."""
    r_max = max(P.lr_ratios)
    values = pd.Series(values, dtype=float)
    if values.isna().all():
        return f"none up to {r_max:g}"
    shown = values.fillna(np.inf)
    text = f"{shown.median():.3g} [{shown.min():.3g}, {shown.max():.3g}]"
    return text.replace("inf", f">{r_max:g}")


def _network_rows(seedwise: pd.DataFrame, P: Params):
    """(glue key prefix, label, per-seed rows) of every compared network."""
    for i, d in enumerate(P.depths):
        for j, sw in enumerate(P.sigma_ws):
            sub = seedwise[(seedwise.depth == d) & (seedwise.sigma_w == sw)]
            yield f"lr_d{i}s{j}", label(d, sw), sub


def boundary_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurements 1 and 2 (sharpness at init, boundaries)."""
    out = outcomes(runs)
    seedwise = per_seed(out)
    numbers = {}
    for key, name, sub in _network_rows(seedwise, P):
        numbers.update({
            f"{key}_label": name, f"{key}_lam": med_range(sub["lambda_max"]),
            f"{key}_lam_med": f"{sub['lambda_max'].median():.3g}",
            f"{key}_stab": f"{(2 / sub['lambda_max']).median():.3g}",
            f"{key}_rdiv": ratio_text(sub["r_div"], P), f"{key}_rok": ratio_text(sub["r_ok"], P),
            f"{key}_lrdiv": med_range(sub["lr_div"]),
            f"{key}_readout": share_text(sub["readout_share"])})
    below = out[(out.lr_ratio < 1) & out.diverged]
    numbers["lr_n_below"] = f"{len(below)} of {int((out.lr_ratio < 1).sum())}"
    numbers["lr_below_where"] = "; ".join(
        f"{label(r.depth, r.sigma_w)}, seed {r.seed}, r = {r.lr_ratio:g}"
        for r in below.itertuples()) or "none"
    lam = seedwise.groupby(["depth", "sigma_w"])["lambda_max"]
    numbers["lr_lam_span"] = f"{lam.median().max() / lam.median().min():.0f}"
    numbers["lr_lam_seed_spread"] = f"{lam.agg(lambda s: s.max() / s.min()).max():.1f}"
    return numbers


def share_text(shares) -> str:
    """Readout shares (fractions) as percentages: '66%' or '64–69%' over seeds."""
    shares = 100 * pd.Series(shares, dtype=float).dropna()
    if shares.empty:
        return "–"
    low, high = f"{shares.min():.0f}", f"{shares.max():.0f}"
    return f"{low}%" if low == high else f"{low}–{high}%"


def sharpness_table(runs: pd.DataFrame, P: Params):
    """Per network: lambda_max at init, 2/lambda_max and the top eigenvector's share in
    the readout."""
    rows = [{"network": name,
             "λmax at init, median [min, max]": median_range(sub["lambda_max"]),
             "2/λmax (median)": number((2 / sub["lambda_max"]).median()),
             "top eigenvector in the readout": share_text(sub["readout_share"])}
            for _, name, sub in _network_rows(per_seed(outcomes(runs)), P)]
    return table(pd.DataFrame(rows))


def summary_table(runs: pd.DataFrame, P: Params):
    """Per network: the measured boundaries, in units of 2/lambda_max and absolute."""
    rows = [{"network": name,
             "first diverging r": ratio_text(sub["r_div"], P),
             "largest r lowering the loss": ratio_text(sub["r_ok"], P),
             "first diverging lr": median_range(sub["lr_div"])}
            for _, name, sub in _network_rows(per_seed(outcomes(runs)), P)]
    return table(pd.DataFrame(rows))


def fig_spikes(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Minibatch loss and gradient norm over steps at a few ratios, for the first and the
    last compared network."""
    shown = P.lr_ratios[:: max(1, len(P.lr_ratios) // 4)][:4]
    panels = [(P.depths[0], P.sigma_ws[0]), (P.depths[-1], P.sigma_ws[-1])]
    fig, axes = plots.figure(2, 2, height=6.4, sharex=True)
    for row, (d, sw) in enumerate(panels):
        sub = runs[(runs.depth == d) & (runs.sigma_w == sw)]
        for i, r in enumerate(shown):
            one = sub[sub.lr_ratio == r]
            loss = one.pivot(index="step", columns="seed", values="loss")
            norm = one.pivot(index="step", columns="seed", values="grad_norm")
            plots.band(axes[row, 0], loss.index, loss, i, f"r = {r:g}")
            plots.band(axes[row, 1], norm.index, norm, i, f"r = {r:g}")
        axes[row, 0].set_ylabel("minibatch loss")
        axes[row, 1].set_ylabel("gradient norm")
        for ax in axes[row]:
            ax.set_yscale("log")
            ax.set_title(fig_label(d, sw))
    for ax in axes[1]:
        ax.set_xlabel("SGD step")
    plots.legend_below(fig, ncol=len(shown))
    return fig


def fig_sweep(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Fraction of seeds diverged and final/initial test loss against the ratio."""
    out = outcomes(runs)
    fig, axes = plots.figure(1, 2, height=4.6)
    for i, (d, sw) in enumerate(networks(P)):
        sub = out[(out.depth == d) & (out.sigma_w == sw)]
        frac = sub.groupby("lr_ratio")["diverged"].mean()
        s = plots.style(i)
        axes[0].plot(frac.index, frac.to_numpy(), color=s["color"], marker=s["marker"],
                     label=fig_label(d, sw))
        finite = sub[~sub.diverged].pivot(index="lr_ratio", columns="seed",
                                          values="loss_ratio")
        if len(finite):
            plots.band(axes[1], finite.index, finite, i, fig_label(d, sw), markevery=1)
    for ax in axes:
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_xlabel(r"$r$ = lr / ($2/\lambda_{\max}$)")
    axes[0].set_ylabel("fraction diverged")
    axes[1].set_ylabel("final / initial test loss")
    axes[1].axhline(1.0, color="gray", linewidth=0.8)
    plots.log_axis(axes[1])
    plots.legend_below(fig, ncol=2)
    return fig


def fig_boundary(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Measured learning rates (first divergence, largest loss-lowering) against each
    seed's 2 / lambda_max, with the theory's identity line."""
    seedwise = per_seed(outcomes(runs))
    fig, ax = plots.figure(1, 1, height=5.6)
    for i, (d, sw) in enumerate(networks(P)):
        sub = seedwise[(seedwise.depth == d) & (seedwise.sigma_w == sw)]
        s = plots.style(i)
        ax.scatter(sub["stability_lr"], sub["lr_div"], color=s["color"], marker=s["marker"],
                   label=fig_label(d, sw))
        ax.scatter(sub["stability_lr"], sub["lr_ok"], facecolors="none", edgecolors=s["color"],
                   marker=s["marker"])
    xs = np.array([seedwise["stability_lr"].min() / 1.5, seedwise["stability_lr"].max() * 1.5])
    ax.plot(xs, xs, color="black", linestyle="--", linewidth=1,
            label=r"theory: lr = $2/\lambda_{\max}$")
    both = seedwise.dropna(subset=["lr_div"])
    nets = both.groupby(["depth", "sigma_w"])[["stability_lr", "lr_div"]].median()
    try:
        f = power_law_fit(nets["stability_lr"], nets["lr_div"])
        ax.plot(xs, f["prefactor"] * xs ** f["exponent"], color="0.45", linestyle=":",
                label=f"fit over the networks: slope {f['exponent']:.2f}")
    except ValueError:
        pass  # fewer than two networks diverged: no slope to draw
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$2/\lambda_{\max}$ at initialization")
    ax.set_ylabel("learning rate")
    handles, labels = ax.get_legend_handles_labels()
    handles += [plt.Line2D([], [], marker="o", color="gray", linestyle=""),
                plt.Line2D([], [], marker="o", markerfacecolor="none", color="gray",
                           linestyle="")]
    labels += ["filled: first diverging lr", "open: largest lr lowering the loss"]
    plots.legend_below(fig, ncol=2, handles=handles, labels=labels)
    return fig


def _two(value: float) -> str:
    """A correlation or slope with two decimals, '–' when there is none."""
    return f"{value:.2f}" if np.isfinite(value) else "–"


def _slope(points: pd.DataFrame) -> float:
    """Log-log slope of the first diverging lr against 2/lambda_max (1: proportional), or
    NaN when the points allow no fit."""
    try:
        return power_law_fit(points["stability_lr"], points["lr_div"])["exponent"]
    except ValueError:
        return np.nan


def correlation_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 4, over the runs that diverged somewhere on the
    grid: the spans of 2/lambda_max and of the first diverging lr; the correlation of
    their logarithms and the log-log slope (:func:`..study.growth.power_law_fit`) over the
    seeds and over the networks' medians (the seeds of one network are not independent
    samples of the relation: the networks are); the slope's range when each network in
    turn is left out; and the range of the networks' median first diverging ratio."""
    both = per_seed(outcomes(runs)).dropna(subset=["lr_div"])
    logs = np.log(both[["stability_lr", "lr_div"]])
    corr = np.corrcoef(logs["stability_lr"], logs["lr_div"])[0, 1] if len(both) > 1 \
        else np.nan
    nets = both.groupby(["depth", "sigma_w"])[["stability_lr", "lr_div", "r_div"]].median()
    net_logs = np.log(nets[["stability_lr", "lr_div"]])
    corr_net = np.corrcoef(net_logs["stability_lr"], net_logs["lr_div"])[0, 1] \
        if len(nets) > 2 else np.nan
    keys = list(nets.index)
    left_out = [_slope(nets.drop(index=[k])) for k in keys] if len(keys) > 2 else []
    left_out = [v for v in left_out if np.isfinite(v)]
    lrdiv, stab = both["lr_div"], both["stability_lr"]
    return {"lr_corr": _two(corr), "lr_corr_n": len(both),
            "lr_lrdiv_span": f"{lrdiv.max() / lrdiv.min():.0f}",
            "lr_stab_span": f"{stab.max() / stab.min():.0f}",
            "lr_n_networks": len(nets),
            "lr_corr_net": _two(corr_net), "lr_slope": _two(_slope(both)),
            "lr_slope_net": _two(_slope(nets)),
            "lr_slope_loo": (f"{min(left_out):.2f} to {max(left_out):.2f}" if left_out
                             else "–"),
            "lr_rdiv_net_min": f"{nets['r_div'].min():.3g}",
            "lr_rdiv_net_max": f"{nets['r_div'].max():.3g}"}


# --------------------------------------------------------------------------- sharpness


def step_fit(traj: pd.DataFrame) -> pd.Series:
    """eta * lambda_max(t) / 2 of a ``sharpness`` table: the step relative to the
    stability limit of the current curvature (> 1: too large for the quadratic model)."""
    return traj["step_lr"] * traj["lambda_max"] / 2


def trajectory_numbers(traj: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 3 (sharpness during training)."""
    fit = traj.assign(fit=step_fit(traj))
    first, last = fit[fit.step == P.measure_every], fit[fit.step == P.steps]
    numbers = {}
    for i, r in enumerate(P.traj_ratios):
        numbers[f"lr_traj{i}_r"] = f"{r:g}"
        numbers[f"lr_traj{i}_fit"] = med_range(first.loc[first.lr_ratio == r, "fit"], "{:.2f}")
        numbers[f"lr_traj{i}_fit_end"] = med_range(last.loc[last.lr_ratio == r, "fit"],
                                                   "{:.2f}")
    numbers["lr_traj_step"] = P.measure_every
    numbers["lr_traj_max_end"] = f"{last['fit'].max():.2f}"
    return numbers


def fig_sharpness(traj: pd.DataFrame, P: Params) -> plt.Figure:
    """eta * lambda_max(t) / 2 over training for each starting ratio."""
    fit = traj.assign(fit=step_fit(traj))
    fig, ax = plots.figure(1, 1, height=4.4)
    for i, r in enumerate(P.traj_ratios):
        sub = fit[fit.lr_ratio == r].pivot(index="step", columns="seed", values="fit")
        plots.band(ax, sub.index, sub, i, f"started at $r$ = {r:g}", markevery=1)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
    plots.log_axis(ax)
    ax.set_xlabel("SGD step")
    ax.set_ylabel(r"$\eta\,\lambda_{\max}(t)/2$")
    ax.set_title(fig_label(P.depths[0], P.sigma_ws[0]))
    plots.legend_below(fig, ncol=2)
    return fig
