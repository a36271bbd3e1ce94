"""Clipping: what norm, value and adaptive gradient clipping do to an exploding gradient,
which thresholds work, and what they cost.

The page builds the failing configurations and runs every measurement (visible on it);
this module turns their tables into the page's numbers, tables and figures.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..data import ADDING_BASELINE_MSE
from ..engine.params import Param
from ..study import plots
from ..study.clip_directions import direction_summary
from ..study.outcomes import k_of_n, mean_grad_norm, run_outcomes, summarize
from . import Chapter, Params
from ._shared import SEEDS, from_profile

CHAPTER = Chapter(
    "clipping",
    (
        SEEDS,
        Param("width", "int", 64, "units per hidden layer of the MLPs", low=2, high=8192),
        from_profile("steps", "int", "optimizer steps of each MLP run", low=1, high=10**6),
        from_profile("rnn_steps", "int", "optimizer steps of each RNN run", low=1, high=10**6),
        Param("mlp_depth", "int", 4, "hidden layers of the regression MLP", low=1, high=1000),
        Param(
            "mlp_lr",
            "float",
            0.2,
            "too-large learning rate of the regression MLP (plain SGD)",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "healthy_lr",
            "float",
            0.01,
            "learning rate of its healthy twin (plain SGD)",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "rnn_seq_len", "int", 40, "sequence length of the adding problem", low=2, high=100_000
        ),
        Param("rnn_radius", "float", 3.0, "spectral radius of the tanh RNN", low=0.0, high=100.0),
        Param("rnn_hidden", "int", 32, "hidden units of the RNN", low=2, high=4096),
        Param("rnn_lr", "float", 0.1, "learning rate of the RNN (plain SGD)", low=1e-8, high=100.0),
        Param(
            "rnn_healthy_lr",
            "float",
            0.01,
            "plain-SGD learning rate of the RNN's unclipped window for Pascanu's heuristic",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "rnn_adam_lr",
            "float",
            0.01,
            "learning rate of the RNN trained with Adam",
            low=1e-8,
            high=100.0,
        ),
        from_profile(
            "norm_thresholds",
            "list[float]",
            "largest gradient norm c of norm clipping",
            low=1e-12,
            high=1e12,
        ),
        from_profile(
            "value_thresholds",
            "list[float]",
            "largest |g_i| of value clipping",
            low=1e-12,
            high=1e12,
        ),
        from_profile(
            "agc_factors",
            "list[float]",
            "clip factors lambda of adaptive gradient clipping",
            low=1e-12,
            high=1e12,
        ),
        from_profile(
            "direction_thresholds",
            "list[float]",
            "thresholds (and AGC factors) of the direction measurement",
            low=1e-12,
            high=1e12,
        ),
        Param(
            "direction_depth", "int", 30, "hidden layers of the sigma_w network", low=2, high=1000
        ),
        Param(
            "direction_sigma_w",
            "float",
            2.0,
            "sigma_w of the exploding ReLU network",
            low=0.0,
            high=100.0,
        ),
        Param(
            "direction_step",
            "int",
            2,
            "step of the large-learning-rate run whose gradient is clipped",
            low=0,
            high=10**6,
        ),
        from_profile(
            "pascanu_window",
            "int",
            "unclipped steps averaged for Pascanu's heuristic",
            low=1,
            high=10**6,
        ),
        Param(
            "adam_threshold",
            "float",
            1.0,
            "norm threshold of the RNN's Adam check",
            low=1e-12,
            high=1e12,
        ),
        from_profile(
            "timing_rounds", "int", "interleaved rounds of the per-step timing", low=1, high=1000
        ),
    ),
    {
        "quick": dict(
            seeds=1,
            steps=20,
            rnn_steps=10,
            pascanu_window=5,
            timing_rounds=1,
            norm_thresholds=[0.1, 10.0],
            value_thresholds=[0.01, 1.0],
            agc_factors=[0.01, 1.0],
            direction_thresholds=[1e-3, 1.0, 100.0],
        ),
        "default": dict(
            seeds=3,
            steps=100,
            rnn_steps=40,
            pascanu_window=20,
            timing_rounds=3,
            norm_thresholds=[0.1, 1.0, 10.0, 100.0, 1000.0],
            value_thresholds=[0.01, 0.1, 1.0, 10.0],
            agc_factors=[0.001, 0.01, 0.1, 1.0],
            direction_thresholds=[1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0],
        ),
        "full": dict(
            seeds=10,
            steps=1000,
            rnn_steps=1000,
            pascanu_window=50,
            timing_rounds=7,
            norm_thresholds=[0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0],
            value_thresholds=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0],
            agc_factors=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
            direction_thresholds=[10 ** (k / 2) for k in range(-8, 5)],
        ),
    },
)

#: The final loss is the mean training loss over this fraction of the last steps.
TAIL = 0.1
#: A sweep's configuration columns.
BY = ["clip", "clip_threshold"]
#: Steps of the two runs whose difference gives the time per step of the cost table.
TIMING_STEPS = (20, 100)
#: Parameters the page quotes as they are.
QUOTED = ["width", "mlp_depth", "mlp_lr", "healthy_lr", "steps", "rnn_hidden", "rnn_radius",
          "rnn_seq_len", "rnn_lr", "rnn_steps", "direction_depth", "direction_sigma_w",
          "direction_step", "seeds", "pascanu_window"]


def as_set(values) -> str:
    """Thresholds as '{0.1, 1, 10}', or 'none'."""
    return "{" + ", ".join(f"{v:g}" for v in values) + "}" if len(values) else "none"


def _cases(table: pd.DataFrame) -> list[str]:
    """The ``case`` labels of a direction table, in the order they were measured."""
    return list(dict.fromkeys(table["case"]))


def setting_numbers(causes_lr: pd.DataFrame, P: Params) -> dict:
    """The quoted parameters, and how many seeds diverge at the causes chapter's rate."""
    numbers = {f"clipping_{key}": P[key] for key in QUOTED}
    numbers["clipping_causes_lr_div"] = k_of_n(run_outcomes(causes_lr, tail=TAIL).diverged)
    return numbers


# --------------------------------------------------------------------------- 1. direction

def direction_numbers(directions: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the direction measurement (``clip_directions`` rows of every
    case and seed, with a ``case`` column)."""
    cases = _cases(directions)
    cosines = direction_summary(directions, ["case"])
    finite = cosines[cosines.method == "norm"].cosine.dropna()
    numbers = {"clipping_norm_cos_err": f"{np.abs(finite - 1).max():.1e}",
               "clipping_norm_cos_n": len(finite)}
    value_cos = cosines[cosines.method == "value"].groupby(["case", "threshold"]).agg(
        cosine=("cosine", "median"), changed=("fraction_changed", "median")).reset_index()
    largest = max(P.direction_thresholds)
    for i, case in enumerate(cases):
        row = value_cos[(value_cos.case == case) & (value_cos.threshold == largest)].iloc[0]
        numbers[f"clipping_value_cos_large_{i}"] = f"{row.cosine:.2f}"
        numbers[f"clipping_value_changed_large_{i}"] = f"{100 * row.changed:.2g}"
        numbers[f"clipping_value_cos_min_{i}"] = \
            f"{value_cos[value_cos.case == case].cosine.min():.2f}"
    numbers["clipping_dir_largest"] = f"{largest:g}"
    agc_cos = cosines[cosines.method == "agc"].groupby(["case", "threshold"]).cosine.median()
    numbers["clipping_agc_cos_rnn_min"] = f"{agc_cos[cases[2]].min():.2g}"
    return numbers


def fig_direction(directions: pd.DataFrame, P: Params) -> plt.Figure:
    """Cosine between the raw and the clipped gradient against the threshold, value
    clipping and AGC per case, norm clipping dashed."""
    cases = _cases(directions)
    cosines = direction_summary(directions, ["case"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, method, xlabel in [(axes[0], "value", "value threshold $c$ (largest $|g_i|$)"),
                               (axes[1], "agc", r"AGC clip factor $\lambda$")]:
        for i, case in enumerate(cases):
            sub = cosines[(cosines.case == case) & (cosines.method == method)]
            values = sub.pivot(index="threshold", columns="seed", values="cosine")
            plots.band(ax, values.index, values, i, case, markevery=1)
        norm = cosines[cosines.method == "norm"].groupby("threshold").cosine.min()
        ax.plot(norm.index, norm.values, color="black", linestyle="--", linewidth=1.2,
                label="norm clipping, any case (min over seeds)")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylim(-0.02, 1.3)
        ax.set_yticks(np.linspace(0, 1, 6))
    axes[0].set_ylabel("cos(raw gradient, clipped gradient)")
    axes[0].set_title("value clipping")
    axes[1].set_title("adaptive gradient clipping")
    axes[0].legend(loc="upper left", ncol=2, fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- 2. sweep
# ``runs`` below is {"mlp": sweep table, "rnn": sweep table, "healthy": the MLP's twin}.

def outcomes(runs: dict) -> dict[str, pd.DataFrame]:
    """Per configuration (``mlp``, ``rnn``): one row per run of its sweep."""
    return {key: run_outcomes(runs[key], BY, tail=TAIL) for key in ("mlp", "rnn")}


def outcome_table(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per (clip, threshold): diverged k/n (and ``n``, ``n_diverged``) and the median,
    min and max final loss of the seeds that did not diverge."""
    return pd.DataFrame(summarize(per_run, BY, "final_loss")).rename(columns={
        "median": "final_median", "min": "final_min", "max": "final_max"})[
        [*BY, "n", "n_diverged", "diverged", "final_median", "final_min", "final_max"]]


def references(runs: dict, P: Params) -> dict[str, tuple[float, str]]:
    """Per configuration: the loss to beat and its label (the MLP's healthy twin; for
    the RNN, always predicting the mean target)."""
    healthy = run_outcomes(runs["healthy"], tail=TAIL).final_loss.median()
    return {"mlp": (healthy, f"healthy twin, lr {P.healthy_lr:g}, no clipping"),
            "rnn": (ADDING_BASELINE_MSE, "predict the mean (loss 1/6)")}


def titles(P: Params) -> dict[str, str]:
    return {"mlp": f"MLP, SGD lr {P.mlp_lr:g}",
            "rnn": f"tanh RNN, ρ = {P.rnn_radius:g}, T = {P.rnn_seq_len}, "
                   f"SGD lr {P.rnn_lr:g}"}


def good_thresholds(table: pd.DataFrame, reference: float, method: str) -> list[float]:
    """Thresholds of ``method`` in an :func:`outcome_table` where no seed diverged and the
    median final loss is at or below ``reference``."""
    t = table[table["clip"] == method]
    ok = (t.n_diverged == 0) & (t.final_median <= reference)
    return t.clip_threshold[ok].tolist()


def sweep_numbers(runs: dict, P: Params) -> dict:
    """The glued numbers of the threshold sweep."""
    numbers = {"clipping_norm_list": ", ".join(f"{t:g}" for t in P.norm_thresholds),
               "clipping_value_list": ", ".join(f"{t:g}" for t in P.value_thresholds),
               "clipping_agc_list": ", ".join(f"{t:g}" for t in P.agc_factors)}
    per_run = outcomes(runs)
    refs = references(runs, P)
    for key in ["mlp", "rnn"]:
        t = outcome_table(per_run[key])
        numbers[f"clipping_{key}_none_div"] = t[t["clip"] == "none"].diverged.iloc[0]
        for method in ["norm", "value"]:
            clipped = t[t["clip"] == method]
            numbers.update({
                f"clipping_{key}_{method}_good": as_set(good_thresholds(t, refs[key][0],
                                                                        method)),
                f"clipping_{key}_{method}_ndiv": int(clipped.n_diverged.sum()),
                f"clipping_{key}_{method}_nruns": int(clipped.n.sum()),
                f"clipping_{key}_{method}_best": f"{clipped.final_median.min():.3g}"})
    numbers["clipping_mlp_ref"] = f"{refs['mlp'][0]:.3g}"
    numbers["clipping_mlp_first"] = f"{per_run['mlp'].first_loss.median():.3g}"
    numbers["clipping_rnn_first"] = f"{per_run['rnn'].first_loss.median():.3g}"
    t = outcome_table(per_run["rnn"])
    rnn_norm = t[t["clip"] == "norm"]
    numbers.update({"clipping_rnn_norm_low": f"{rnn_norm.final_median.iloc[0]:.3g}",
                    "clipping_rnn_norm_high": f"{rnn_norm.final_median.iloc[-1]:.3g}",
                    "clipping_rnn_c_low": f"{rnn_norm.clip_threshold.iloc[0]:g}",
                    "clipping_rnn_c_high": f"{rnn_norm.clip_threshold.iloc[-1]:g}"})
    return numbers


def _outcome_axes(axes, col: int, per_run: pd.DataFrame, method: str, i: int,
                  label: str) -> None:
    """Fraction diverged (top) and final loss of the surviving seeds (bottom, points and
    median) against the threshold of ``method``, in column ``col``."""
    sub = per_run[per_run["clip"] == method]
    frac = sub.groupby("clip_threshold").diverged.mean()
    axes[0, col].plot(frac.index, frac.values, label=label, **plots.style(i))
    ok = sub[~sub.diverged]
    axes[1, col].scatter(ok.clip_threshold, ok.final_loss, color=plots.style(i)["color"],
                         marker=plots.style(i)["marker"], alpha=0.45, s=22)
    med = ok.groupby("clip_threshold").final_loss.median()
    axes[1, col].plot(med.index, med.values, label=f"{label} (median)", **plots.style(i))


def fig_sweep(runs: dict, P: Params) -> plt.Figure:
    """Fraction diverged and final loss against the norm and value threshold, for the MLP
    and the RNN."""
    per_run, refs, title = outcomes(runs), references(runs, P), titles(P)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex="col",
                             gridspec_kw={"height_ratios": [1, 2]})
    for col, key in enumerate(["mlp", "rnn"]):
        s = per_run[key]
        for i, method in enumerate(["norm", "value"]):
            _outcome_axes(axes, col, s, method, i, f"{method} clipping")
        axes[0, col].axhline(s[s["clip"] == "none"].diverged.mean(), color="black",
                             linestyle=":", label="no clipping")
        axes[1, col].axhline(refs[key][0], color="black", linestyle="--",
                             linewidth=1.2, label=refs[key][1])
        axes[0, col].set_ylim(-0.05, 1.05)
        axes[0, col].set_title(title[key], fontsize=10)
        axes[1, col].set_xscale("log")
        plots.log_axis(axes[1, col])
        axes[1, col].set_xlabel("threshold $c$ (norm: $\\|g\\|$; value: $|g_i|$)")
    axes[0, 0].set_ylabel("fraction of seeds\ndiverged (NaN/Inf)")
    axes[1, 0].set_ylabel("final training loss\n(seeds that did not diverge)")
    axes[0, 1].legend(loc="center right", fontsize=9)
    axes[1, 1].legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    return fig


def sweep_table(runs: dict, P: Params):
    """Both sweeps' outcomes per (configuration, clip, threshold), as the page shows them."""
    per_run = outcomes(runs)
    return pd.concat([outcome_table(per_run["mlp"]).assign(config="MLP"),
                      outcome_table(per_run["rnn"]).assign(config="RNN")])[
        ["config", "clip", "clip_threshold", "diverged", "final_median", "final_min",
         "final_max"]].rename(columns={"clip_threshold": "threshold / λ",
                                       "final_median": "final loss (median)",
                                       "final_min": "min", "final_max": "max"}).style.format(
        {"threshold / λ": "{:g}", "final loss (median)": "{:.3g}", "min": "{:.3g}",
         "max": "{:.3g}"}).hide()


def _small_and_best(runs: dict, P: Params) -> tuple[pd.DataFrame, float, float]:
    """The MLP's norm-clipped runs, its smallest threshold and the best one (the lowest
    median final loss among the thresholds where no seed diverged)."""
    per_run = outcomes(runs)["mlp"]
    norm = per_run[per_run["clip"] == "norm"]
    ok = norm.groupby("clip_threshold").filter(lambda g: not g.diverged.any())
    best = ok.groupby("clip_threshold").final_loss.median().idxmin() \
        if len(ok) else max(P.norm_thresholds)
    return norm, min(P.norm_thresholds), best


def slow_numbers(runs: dict, P: Params) -> dict:
    """The glued numbers of the too-small threshold."""
    norm, small_c, best_c = _small_and_best(runs, P)
    small = norm[norm.clip_threshold == small_c].final_loss.median()
    best = norm[norm.clip_threshold == best_c].final_loss.median()
    mlp = runs["mlp"]
    updated = mlp[(mlp["clip"] == "norm") & (mlp.clip_threshold == small_c)
                  & (mlp.layer == 0)].dropna(subset=["step_lr"])  # steps that updated
    return {"clipping_small_c": f"{small_c:g}", "clipping_best_c": f"{best_c:g}",
            "clipping_small_final": f"{small:.3g}", "clipping_best_final": f"{best:.3g}",
            "clipping_small_over_best": f"{small / best:.3g}",
            "clipping_small_frac_clipped": f"{100 * (updated.grad_norm > small_c).mean():.0f}"}


def fig_slow(runs: dict, P: Params) -> plt.Figure:
    """Training loss of the healthy twin and of the smallest and best norm threshold."""
    _, small_c, best_c = _small_and_best(runs, P)
    mlp = runs["mlp"]
    curves = [("healthy twin, no clipping", runs["healthy"]),
              (f"norm clipping, c = {small_c:g} (smallest)",
               mlp[(mlp["clip"] == "norm") & (mlp.clip_threshold == small_c)]),
              (f"norm clipping, c = {best_c:g} (best)",
               mlp[(mlp["clip"] == "norm") & (mlp.clip_threshold == best_c)])]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, (label, table) in enumerate(curves):
        whole = table[table.layer == 0]
        loss = whole.pivot(index="step", columns="seed", values="loss")
        plots.band(ax, loss.index, loss, i, label)
    plots.log_axis(ax)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (minibatch)")
    ax.legend()
    return fig


# --------------------------------------------------------------------------- 3. Pascanu
# ``pascanu`` is {"safe": {"mlp": ..., "rnn": ...} (unclipped runs at a safe learning
# rate), "at_c_bar": {"mlp": ..., "rnn": ...} (the failing runs clipped at c-bar)}.

def pascanu_c_bar(safe: pd.DataFrame, window: int) -> float:
    """Pascanu, Mikolov & Bengio's threshold: the average unclipped gradient norm over the
    first ``window`` steps (averaged over seeds)."""
    return float(mean_grad_norm(safe, window).mean_grad_norm.mean())


def _pascanu(runs: dict, pascanu: dict, P: Params) -> tuple[list[dict], dict, dict]:
    """(table rows, glued numbers, {config: (c_bar, median final loss at c_bar)})."""
    window = P.pascanu_window
    per_run, refs = outcomes(runs), references(runs, P)
    rows, numbers, points = [], {"clipping_rnn_healthy_lr": P.rnn_healthy_lr}, {}
    for key in ["mlp", "rnn"]:
        safe_stats = mean_grad_norm(pascanu["safe"][key], window)
        c_bar = pascanu_c_bar(pascanu["safe"][key], window)
        own = mean_grad_norm(runs[key][runs[key]["clip"] == "none"], window)
        s = run_outcomes(pascanu["at_c_bar"][key], tail=TAIL)
        good = good_thresholds(outcome_table(per_run[key]), refs[key][0], "norm")
        in_range = [c for c in P.norm_thresholds if 0.5 * c_bar <= c <= 10 * c_bar]
        points[key] = (c_bar, s.final_loss.median())
        rows.append({
            "config": key.upper(), "c̄ (safe window)": f"{c_bar:.3g}",
            "median of the same window": f"{safe_stats.median_grad_norm.mean():.3g}",
            "Pascanu's range 0.5c̄ – 10c̄": f"{0.5 * c_bar:.3g} – {10 * c_bar:.3g}",
            "swept thresholds in range": as_set(in_range),
            "of those, good": as_set([c for c in in_range if c in good]),
            "clipped at c̄: diverged": k_of_n(s.diverged),
            "clipped at c̄: final loss (median)": f"{s.final_loss.median():.3g}",
            "reference loss": f"{refs[key][0]:.3g}",
            "c̄ from the failing run": f"{own.mean_grad_norm.mean():.3g}",
            "finite steps in its window": f"{own.steps_used.min()}–{own.steps_used.max()}"})
        numbers.update({
            f"clipping_{key}_cbar_median": f"{safe_stats.median_grad_norm.mean():.3g}",
            f"clipping_{key}_cbar": f"{c_bar:.3g}",
            f"clipping_{key}_cbar_div": k_of_n(s.diverged),
            f"clipping_{key}_cbar_final": f"{s.final_loss.median():.3g}",
            f"clipping_{key}_cbar_own": f"{own.mean_grad_norm.mean():.3g}",
            f"clipping_{key}_cbar_own_ratio": f"{own.mean_grad_norm.mean() / c_bar:.3g}",
            f"clipping_{key}_cbar_inrange": rows[-1]["swept thresholds in range"],
            f"clipping_{key}_cbar_good": rows[-1]["of those, good"]})
    return rows, numbers, points


def pascanu_numbers(runs: dict, pascanu: dict, P: Params) -> dict:
    """The glued numbers of Pascanu's heuristic."""
    return _pascanu(runs, pascanu, P)[1]


def pascanu_table(runs: dict, pascanu: dict, P: Params):
    """The heuristic per configuration (a column each), as the page shows it."""
    rows = _pascanu(runs, pascanu, P)[0]
    return pd.DataFrame(rows).set_index("config").T.rename_axis("").reset_index().style.hide()


def fig_pascanu(runs: dict, pascanu: dict, P: Params) -> plt.Figure:
    """Where Pascanu's range and the run clipped at c-bar land in the norm sweep."""
    points = _pascanu(runs, pascanu, P)[2]
    per_run, refs, title = outcomes(runs), references(runs, P), titles(P)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key in zip(axes, ["mlp", "rnn"], strict=True):
        sub = per_run[key][per_run[key]["clip"] == "norm"]
        ok = sub[~sub.diverged]
        c_bar, final_at_c_bar = points[key]
        ax.axvspan(0.5 * c_bar, 10 * c_bar, color=plots.OKABE_ITO[2], alpha=0.15,
                   label="Pascanu's range 0.5c̄ – 10c̄")
        ax.scatter(ok.clip_threshold, ok.final_loss, color=plots.style(0)["color"],
                   alpha=0.45, s=22)
        med = ok.groupby("clip_threshold").final_loss.median()
        ax.plot(med.index, med.values, label="norm clipping sweep (median)", **plots.style(0))
        div = sub[sub.diverged].clip_threshold.unique()
        if len(div):  # at the top of the panel, whatever the loss scale
            ax.scatter(div, np.full(len(div), 0.95), marker="X", s=80,
                       color=plots.style(3)["color"], transform=ax.get_xaxis_transform(),
                       label="some seed diverged", zorder=3)
        ax.scatter([c_bar], [final_at_c_bar], marker="*", s=220,
                   color=plots.style(1)["color"], zorder=4, label="run at c̄ (median)")
        ax.axhline(refs[key][0], color="black", linestyle="--", linewidth=1.2,
                   label=refs[key][1])
        ax.set_xscale("log")
        plots.log_axis(ax)
        ax.set_xlabel("norm threshold $c$")
        ax.set_title(title[key], fontsize=10)
    axes[0].set_ylabel("final training loss")
    for ax in axes:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- 4. AGC

def agc_numbers(runs: dict, P: Params) -> dict:
    """The glued numbers of the AGC sweep."""
    per_run, refs = outcomes(runs), references(runs, P)
    numbers = {}
    for key in ["mlp", "rnn"]:
        t = outcome_table(per_run[key])
        agc = t[t["clip"] == "agc"]
        diverged_at = agc[agc.n_diverged > 0]
        numbers.update({
            f"clipping_{key}_agc_good": as_set(good_thresholds(t, refs[key][0], "agc")),
            f"clipping_{key}_agc_ndiv": int(agc.n_diverged.sum()),
            f"clipping_{key}_agc_nruns": int(agc.n.sum()),
            f"clipping_{key}_agc_best": f"{agc.final_median.min():.3g}",
            f"clipping_{key}_agc_div_at": ", ".join(
                f"λ = {r.clip_threshold:g} ({r.diverged})"
                for r in diverged_at.itertuples()) or "no λ"})
    return numbers


def fig_agc(runs: dict, P: Params) -> plt.Figure:
    """Fraction diverged and final loss against AGC's clip factor, for the MLP and the
    RNN, beside the best norm threshold and the reference."""
    per_run, refs, title = outcomes(runs), references(runs, P), titles(P)
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex=True,
                             gridspec_kw={"height_ratios": [1, 2]})
    for col, key in enumerate(["mlp", "rnn"]):
        s = per_run[key]
        _outcome_axes(axes, col, s, "agc", 2, "AGC")
        axes[0, col].axhline(s[s["clip"] == "none"].diverged.mean(), color="black",
                             linestyle=":", label="no clipping")
        t = outcome_table(s)
        best_norm = t[t["clip"] == "norm"].final_median.min()
        axes[1, col].axhline(best_norm, color=plots.style(0)["color"], linestyle="-.",
                             label="best norm threshold of the sweep (median)")
        axes[1, col].axhline(refs[key][0], color="black", linestyle="--", linewidth=1.2,
                             label=refs[key][1])
        axes[0, col].set_ylim(-0.05, 1.05)
        axes[0, col].set_title(title[key], fontsize=10)
        axes[1, col].set_xscale("log")
        plots.log_axis(axes[1, col])
        axes[1, col].set_xlabel(r"clip factor $\lambda$")
    axes[0, 0].set_ylabel("fraction of seeds\ndiverged (NaN/Inf)")
    axes[1, 0].set_ylabel("final training loss\n(seeds that did not diverge)")
    axes[0, 1].legend(loc="center right", fontsize=9)
    axes[1, 1].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- per layer

def relative_weight_gradients(layer_rows: pd.DataFrame) -> pd.DataFrame:
    """The hidden weight matrices' rows of ``clip_directions`` (with a ``case`` column),
    with the gradient relative to the weights before (``raw_rel``) and after
    (``clipped_rel``) clipping: ||G_l|| / ||W_l||."""
    weights = layer_rows[layer_rows.matrix & layer_rows.layer.notna()].copy()
    weights["raw_rel"] = weights.raw_norm / weights.weight_norm
    weights["clipped_rel"] = weights.clipped_norm / weights.weight_norm
    return weights


def layer_spread(weights: pd.DataFrame, case: str, method: str, column: str) -> float:
    """Median over seeds of (largest / smallest) relative gradient across hidden layers."""
    sub = weights[(weights.case == case) & (weights.method == method)]
    return sub.groupby("seed")[column].agg(lambda v: v.max() / v.min()).median()


def layer_numbers(layer_rows: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the per-layer measurement (first case exploding, second
    vanishing)."""
    weights = relative_weight_gradients(layer_rows)
    explodes, vanishes = _cases(layer_rows)
    xav = weights[weights.case == vanishes]
    same = np.allclose(xav.clipped_rel, xav.raw_rel, rtol=1e-6)
    numbers = {f"clipping_layers_{name}_spread": f"{layer_spread(weights, explodes, m, c):.3g}"
               for name, m, c in [("raw", "norm", "raw_rel"), ("norm", "norm", "clipped_rel"),
                                  ("agc", "agc", "clipped_rel"),
                                  ("value", "value", "clipped_rel")]}
    numbers["clipping_xavier_raw_max"] = f"{xav[xav.method == 'norm'].raw_rel.max():.2g}"
    numbers["clipping_xavier_changed"] = ("leaves every layer exactly as it was" if same
                                          else "shrinks some layers further")
    return numbers


def fig_layers(layer_rows: pd.DataFrame, P: Params) -> plt.Figure:
    """Each hidden layer's relative weight gradient before and after each rule, per case."""
    weights = relative_weight_gradients(layer_rows)
    threshold = weights.groupby("method").threshold.first()
    labels = {"none": "no clipping", "norm": f"norm, c = {threshold['norm']:g}",
              "value": f"value, c = {threshold['value']:g}",
              "agc": f"AGC, λ = {threshold['agc']:g}"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, case in zip(axes, _cases(layer_rows), strict=True):
        sub = weights[weights.case == case]
        raw = sub[sub.method == "norm"].pivot(index="layer", columns="seed", values="raw_rel")
        plots.band(ax, raw.index, raw, 7, labels["none"])
        for i, method in enumerate(["norm", "value", "agc"]):
            v = sub[sub.method == method].pivot(index="layer", columns="seed",
                                                values="clipped_rel")
            plots.band(ax, v.index, v, i, labels[method])
        ax.axhline(threshold["agc"], color=plots.style(2)["color"], linestyle=":",
                   linewidth=1)
        plots.log_axis(ax)
        ax.set_xlabel("hidden layer (counted from the input)")
        ax.set_title(case, fontsize=10)
    axes[0].set_ylabel(r"$\|\partial L/\partial W^l\| \,/\, \|W^l\|$ at init")
    axes[1].legend(fontsize=9, loc="center right")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- cost

def _cost(ratios: pd.DataFrame) -> pd.DataFrame:
    """Per variant of :func:`.timing.time_ratios` rows: median ms per step and the median,
    min and max ratio to the unclipped run over the rounds."""
    return ratios.groupby("variant", sort=False).agg(
        step_ms=("step_seconds", lambda v: 1000 * v.median()), ratio=("ratio", "median"),
        low=("ratio", "min"), high=("ratio", "max")).reset_index()


def cost_numbers(ratios: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the cost measurement."""
    numbers = {"clipping_timing_steps": f"{TIMING_STEPS[0]} and {TIMING_STEPS[1]}",
               "clipping_timing_rounds": P.timing_rounds}
    for row in _cost(ratios).itertuples():
        numbers[f"clipping_cost_{row.variant}"] = \
            f"{row.ratio:.2f}× (range {row.low:.2f}–{row.high:.2f})"
    return numbers


def cost_table(ratios: pd.DataFrame, settings: dict[str, float]):
    """The cost per clipping method (``settings``: its threshold or λ), as shown."""
    cost = _cost(ratios)
    cost.insert(1, "threshold / λ", [settings[m] for m in cost.variant])
    return cost.rename(columns={
        "variant": "clipping", "step_ms": "ms per step (median)",
        "ratio": "ratio to none (median)", "low": "min", "high": "max"}).style.format(
        {"threshold / λ": "{:g}", "ms per step (median)": "{:.2f}",
         "ratio to none (median)": "{:.2f}", "min": "{:.2f}", "max": "{:.2f}"}).hide()


# --------------------------------------------------------------------------- verdict

def adam_numbers(adam: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the RNN trained with Adam, unclipped and norm-clipped."""
    per_run = run_outcomes(adam, ["clip"], tail=TAIL)
    numbers = {"clipping_adam_lr": P.rnn_adam_lr, "clipping_adam_c": f"{P.adam_threshold:g}"}
    for clip in ["none", "norm"]:
        s = per_run[per_run["clip"] == clip]
        numbers[f"clipping_adam_{clip}_div"] = k_of_n(s.diverged)
        numbers[f"clipping_adam_{clip}_final"] = f"{s.final_loss.median():.3g}"
    return numbers
