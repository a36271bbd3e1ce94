"""Clipping: what norm, value, percentile (AutoClip) and adaptive gradient clipping do to
an exploding gradient, which thresholds work, how long a clipped RNN was trained, and what
clipping costs.

The page builds the failing configurations and runs every measurement (visible on it);
this module turns their tables into the page's numbers, tables and figures.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..data import ADDING_BASELINE_MSE
from ..engine.params import Param
from ..engine.registry import get
from ..study import plots
from ..study.clip_directions import direction_summary
from ..study.outcomes import BLOW_UP, k_of_n, mean_grad_norm, run_outcomes, summarize
from ..study.readable import median_range, number, table
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
        from_profile(
            "rnn_long_steps",
            "int",
            "optimizer steps of the RNN's long norm-clipped run (the step budget)",
            low=1,
            high=10**7,
        ),
        Param(
            "rnn_long_threshold",
            "float",
            1.0,
            "norm threshold c of the RNN's long run",
            low=1e-12,
            high=1e12,
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
        from_profile(
            "percentiles",
            "list[float]",
            "percentiles p of past gradient norms at which AutoClip clips",
            low=1e-6,
            high=100.0,
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
            rnn_long_steps=20,
            pascanu_window=5,
            timing_rounds=1,
            percentiles=[10.0, 90.0],
            norm_thresholds=[0.1, 10.0],
            value_thresholds=[0.01, 1.0],
            agc_factors=[0.01, 1.0],
            direction_thresholds=[1e-3, 1.0, 100.0],
        ),
        "default": dict(
            seeds=3,
            steps=100,
            rnn_steps=40,
            rnn_long_steps=400,
            pascanu_window=20,
            timing_rounds=3,
            percentiles=[10.0, 90.0],
            norm_thresholds=[0.1, 1.0, 10.0, 100.0, 1000.0],
            value_thresholds=[0.01, 0.1, 1.0, 10.0],
            agc_factors=[0.001, 0.01, 0.1, 1.0],
            direction_thresholds=[1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0],
        ),
        "full": dict(
            seeds=10,
            steps=1000,
            rnn_steps=1000,
            rnn_long_steps=5000,
            pascanu_window=50,
            timing_rounds=7,
            percentiles=[10.0, 25.0, 50.0, 75.0, 90.0],
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
#: The sweep's configurations, in the order the page names them.
CONFIGS = ("mlp", "rnn")
#: The rules the direction measurement applies: those without a history of their own
#: (:meth:`..remedies.Remedies.clip_`).
DIRECTION_METHODS = ("norm", "value", "agc")
#: Steps of the two runs whose difference gives the time per step of the cost table.
TIMING_STEPS = (20, 100)
#: Steps of the moving average of the long run's loss curve.
SMOOTH = 10
#: Parameters the page quotes as they are.
QUOTED = ["width", "mlp_depth", "mlp_lr", "healthy_lr", "steps", "rnn_hidden", "rnn_radius",
          "rnn_seq_len", "rnn_lr", "rnn_steps", "direction_depth", "direction_sigma_w",
          "direction_step", "seeds", "pascanu_window", "rnn_long_steps"]


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
    numbers["clipping_blow_up"] = f"{BLOW_UP:g}"
    numbers["clipping_long_c"] = f"{P.rnn_long_threshold:g}"
    for key, name in [("mlp", "training"), ("rnn", "rnn_training")]:  # the runs' defaults
        numbers[f"clipping_{key}_batch"] = get(name).resolve({})["batch_size"]
    return numbers


# --------------------------------------------------------------------------- 1. direction

def direction_numbers(directions: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the direction measurement (``clip_directions`` rows of every
    case and seed, with a ``case`` column)."""
    cases = _cases(directions)
    cosines = direction_summary(directions, ["case"])
    finite = cosines[cosines.method == "norm"].cosine.dropna()
    numbers = {"clipping_norm_cos_err": number(np.abs(finite - 1).max(), 2),
               "clipping_norm_cos_n": len(finite)}
    value_cos = cosines[cosines.method == "value"].groupby(["case", "threshold"]).agg(
        cosine=("cosine", "median"), changed=("fraction_changed", "median")).reset_index()
    largest = max(P.direction_thresholds)
    for i, case in enumerate(cases):
        row = value_cos[(value_cos.case == case) & (value_cos.threshold == largest)].iloc[0]
        numbers[f"clipping_value_cos_large_{i}"] = f"{row.cosine:.2f}"
        numbers[f"clipping_value_changed_large_{i}"] = number(100 * row.changed, 2)
        numbers[f"clipping_value_cos_min_{i}"] = \
            f"{value_cos[value_cos.case == case].cosine.min():.2f}"
    numbers["clipping_dir_largest"] = f"{largest:g}"
    agc_cos = cosines[cosines.method == "agc"].groupby(["case", "threshold"]).cosine.median()
    numbers["clipping_agc_cos_rnn_min"] = number(agc_cos[cases[2]].min(), 2)
    return numbers


def fig_direction(directions: pd.DataFrame, P: Params) -> plt.Figure:
    """Cosine between the raw and the clipped gradient against the threshold, value
    clipping and AGC per case, norm clipping dashed."""
    cases = _cases(directions)
    cosines = direction_summary(directions, ["case"])
    fig, axes = plots.figure(1, 2, height=4.6, sharey=True)
    for ax, method, xlabel in [(axes[0], "value", "value threshold $c$"),
                               (axes[1], "agc", r"AGC clip factor $\lambda$")]:
        for i, case in enumerate(cases):
            sub = cosines[(cosines.case == case) & (cosines.method == method)]
            values = sub.pivot(index="threshold", columns="seed", values="cosine")
            plots.band(ax, values.index, values, i, case, markevery=1)
        norm = cosines[cosines.method == "norm"].groupby("threshold").cosine.min()
        ax.plot(norm.index, norm.values, color="black", linestyle="--", linewidth=1.2,
                label="norm clipping, every case")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylim(-0.02, 1.05)
        ax.set_yticks(np.linspace(0, 1, 6))
    axes[0].set_ylabel("cosine (raw, clipped)")
    axes[0].set_title("value clipping")
    axes[1].set_title("adaptive gradient clipping")
    plots.legend_below(fig, ncol=2)
    return fig


# --------------------------------------------------------------------------- 2. sweep
# ``runs`` below is {"mlp": sweep table, "rnn": sweep table, "healthy": the MLP's twin}.

def outcomes(runs: dict) -> dict[str, pd.DataFrame]:
    """Per configuration (``mlp``, ``rnn``): one row per run of its sweep."""
    return {key: run_outcomes(runs[key], BY, tail=TAIL) for key in CONFIGS}


def outcome_table(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per (clip, threshold): diverged and blew up as k/n (and ``n``, ``n_diverged``,
    ``n_blew_up``), and the median, min and max final loss of the seeds that did not
    diverge (a run that blew up without NaN keeps its, huge, final loss)."""
    table = pd.DataFrame(summarize(per_run, BY, "final_loss")).rename(columns={
        "median": "final_median", "min": "final_min", "max": "final_max"})
    blew = per_run.groupby(BY, sort=False).blew_up.agg(["sum", k_of_n]).reset_index()
    table = table.merge(blew.rename(columns={"sum": "n_blew_up", "k_of_n": "blew_up"}),
                        on=BY)
    return table[[*BY, "n", "n_diverged", "diverged", "n_blew_up", "blew_up",
                  "final_median", "final_min", "final_max"]]


def references(runs: dict, P: Params) -> dict[str, tuple[float, str]]:
    """Per configuration: the loss to beat and its label (the MLP's healthy twin; for
    the RNN, always predicting the mean target)."""
    healthy = run_outcomes(runs["healthy"], tail=TAIL).final_loss.median()
    return {"mlp": (healthy, f"healthy twin, lr {P.healthy_lr:g}"),
            "rnn": (ADDING_BASELINE_MSE, "predicting the mean, 1/6")}


def titles(P: Params) -> dict[str, str]:
    return {"mlp": f"MLP, SGD lr {P.mlp_lr:g}",
            "rnn": f"tanh RNN, ρ = {P.rnn_radius:g}, SGD lr {P.rnn_lr:g}"}


def good_thresholds(table: pd.DataFrame, reference: float, method: str) -> list[float]:
    """Thresholds of ``method`` in an :func:`outcome_table` where no seed blew up (NaN, or
    a final loss above :data:`BLOW_UP` times the first) and the median final loss is at or
    below ``reference``."""
    t = table[table["clip"] == method]
    ok = (t.n_blew_up == 0) & (t.final_median <= reference)
    return t.clip_threshold[ok].tolist()


def blew_up_at(table: pd.DataFrame, method: str, symbol: str = "c") -> str:
    """Where seeds of ``method`` blew up: 'c = 100 (3/3), c = 1000 (3/3)', or 'no c'."""
    t = table[(table["clip"] == method) & (table.n_blew_up > 0)]
    return ", ".join(f"{symbol} = {r.clip_threshold:g} ({r.blew_up})"
                     for r in t.itertuples()) or f"no {symbol}"


def rule_numbers(t: pd.DataFrame, ref: float, key: str, clip: str, tag: str | None = None
                 ) -> dict:
    """One clipping rule's runs on one configuration (``t``: :func:`outcome_table`,
    ``ref``: the healthy twin's final loss), glued as ``clipping_<key>_<tag>_*``: the
    thresholds that learned, the runs that diverged or blew up, and the best final loss."""
    runs, tag = t[t["clip"] == clip], tag or clip
    return {f"clipping_{key}_{tag}_good": as_set(good_thresholds(t, ref, clip)),
            f"clipping_{key}_{tag}_ndiv": int(runs.n_diverged.sum()),
            f"clipping_{key}_{tag}_nblew": int(runs.n_blew_up.sum()),
            f"clipping_{key}_{tag}_nruns": int(runs.n.sum()),
            f"clipping_{key}_{tag}_best": number(runs.final_median.min())}


def sweep_numbers(runs: dict, P: Params) -> dict:
    """The glued numbers of the threshold sweep."""
    numbers = {"clipping_norm_list": ", ".join(f"{t:g}" for t in P.norm_thresholds),
               "clipping_value_list": ", ".join(f"{t:g}" for t in P.value_thresholds),
               "clipping_agc_list": ", ".join(f"{t:g}" for t in P.agc_factors),
               "clipping_percentile_list": ", ".join(f"{t:g}" for t in P.percentiles)}
    per_run = outcomes(runs)
    refs = references(runs, P)
    for key in CONFIGS:
        t = outcome_table(per_run[key])
        numbers[f"clipping_{key}_none_div"] = t[t["clip"] == "none"].diverged.iloc[0]
        for method in ["norm", "value"]:
            numbers.update(rule_numbers(t, refs[key][0], key, method))
            numbers[f"clipping_{key}_{method}_blew_at"] = blew_up_at(t, method)
        numbers[f"clipping_{key}_first"] = number(per_run[key].first_loss.median())
    numbers["clipping_mlp_ref"] = number(refs["mlp"][0])
    t = outcome_table(per_run["rnn"])
    rnn_norm = t[t["clip"] == "norm"]
    numbers.update({"clipping_rnn_norm_low": number(rnn_norm.final_median.iloc[0]),
                    "clipping_rnn_norm_high": number(rnn_norm.final_median.iloc[-1]),
                    "clipping_rnn_c_low": f"{rnn_norm.clip_threshold.iloc[0]:g}",
                    "clipping_rnn_c_high": f"{rnn_norm.clip_threshold.iloc[-1]:g}"})
    return numbers


def _outcome_axes(axes, col: int, per_run: pd.DataFrame, method: str, i: int,
                  label: str) -> None:
    """Fraction blown up (top) and final loss of the seeds that did not diverge (bottom,
    points and median) against the threshold of ``method``, in column ``col``."""
    sub = per_run[per_run["clip"] == method]
    frac = sub.groupby("clip_threshold").blew_up.mean()
    axes[0, col].plot(frac.index, frac.values, **plots.style(i))
    ok = sub[~sub.diverged]
    axes[1, col].scatter(ok.clip_threshold, ok.final_loss, color=plots.style(i)["color"],
                         marker=plots.style(i)["marker"], alpha=0.45, s=22)
    med = ok.groupby("clip_threshold").final_loss.median()
    axes[1, col].plot(med.index, med.values, label=label, **plots.style(i))


def _outcome_frame(axes, per_run: dict, refs: dict, title: dict, xlabel: str) -> None:
    """The shared frame of the sweep and AGC figures: no-clipping and reference lines,
    titles, log axes, labels."""
    for col, key in enumerate(CONFIGS):
        s = per_run[key]
        axes[0, col].axhline(s[s["clip"] == "none"].blew_up.mean(), color="black",
                             linestyle=":", label="no clipping")
        axes[1, col].axhline(refs[key][0], color="black", linestyle="--", linewidth=1.2,
                             label="reference loss (caption)")
        axes[0, col].set_ylim(-0.05, 1.05)
        axes[0, col].set_title(title[key])
        axes[1, col].set_xscale("log")
        plots.log_axis(axes[1, col])
        axes[1, col].set_xlabel(xlabel)
    axes[0, 0].set_ylabel("fraction\nblown up")
    axes[1, 0].set_ylabel("final training loss")


def fig_sweep(runs: dict, P: Params) -> plt.Figure:
    """Fraction blown up and final loss against the norm and value threshold, for the MLP
    and the RNN."""
    per_run, refs = outcomes(runs), references(runs, P)
    fig, axes = plots.figure(2, 2, height=6.4, sharex="col",
                             gridspec_kw={"height_ratios": [1, 2]})
    for col, key in enumerate(CONFIGS):
        for i, method in enumerate(["norm", "value"]):
            _outcome_axes(axes, col, per_run[key], method, i, f"{method} clipping")
    _outcome_frame(axes, per_run, refs, titles(P), "threshold $c$")
    plots.legend_below(fig, ncol=2)
    return fig


def sweep_table(runs: dict, P: Params, key: str):
    """One configuration's sweep, per (clip, threshold), as the page shows it."""
    t = outcome_table(outcomes(runs)[key])
    shown = pd.DataFrame({
        "clipping": t["clip"], "threshold": t.clip_threshold.map(lambda v: f"{v:g}"),
        "diverged (NaN)": t.diverged, "blew up": t.blew_up,
        "final loss, median [min, max]": [
            "diverged" if np.isnan(r.final_median) else
            f"{number(r.final_median)} [{number(r.final_min)}, {number(r.final_max)}]"
            for r in t.itertuples()]})
    shown.loc[shown.clipping == "none", "threshold"] = "–"
    return table(shown)


# --------------------------------------------------------------------------- step budget

def long_outcomes(long: pd.DataFrame, P: Params) -> dict[str, pd.DataFrame]:
    """:func:`run_outcomes` of the long run at the sweep's budget (its first
    ``rnn_steps`` steps, which are the sweep's run: same seeds, same data, constant
    learning rate) and at its own."""
    return {"short": run_outcomes(long[long.step <= P.rnn_steps], tail=TAIL),
            "long": run_outcomes(long, tail=TAIL)}


def long_numbers(long: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the RNN's long norm-clipped run."""
    out = long_outcomes(long, P)
    final = out["long"].final_loss
    grads = long.pivot(index="step", columns="seed", values="grad_norm")
    first_ratio = grads.iloc[0] / grads.iloc[1:].median()
    typical = grads.iloc[1:].median()
    return {"clipping_long_at_short": median_range(out["short"].final_loss),
            "clipping_long_final": median_range(final),
            "clipping_long_below": k_of_n(final < ADDING_BASELINE_MSE),
            "clipping_long_blew": k_of_n(out["long"].blew_up),
            "clipping_long_first": median_range(out["long"].first_loss),
            "clipping_first_grad_ratio": median_range(first_ratio),
            "clipping_long_grad_low": number(typical.min(), 2),
            "clipping_long_grad_high": number(typical.max(), 2)}


def fig_long(long: pd.DataFrame, P: Params) -> plt.Figure:
    """The long run's training loss (moving average) against the step, beside the
    baseline and the sweep's budget."""
    fig, ax = plots.figure(1, 1, height=4.2)
    loss = long.pivot(index="step", columns="seed", values="loss").rolling(SMOOTH, 1).mean()
    plots.band(ax, loss.index, loss, 0, f"norm clipping, c = {P.rnn_long_threshold:g}")
    ax.axhline(ADDING_BASELINE_MSE, color="black", linestyle="--", linewidth=1.2,
               label="predicting the mean (1/6)")
    ax.axvline(P.rnn_steps, color="0.4", linestyle=":", label="the sweep's budget")
    plots.log_axis(ax)
    ax.set_xlabel("SGD step")
    ax.set_ylabel(f"training loss ({SMOOTH}-step average)")
    ax.set_title(titles(P)["rnn"])
    plots.legend_below(fig, ncol=2)
    return fig


# --------------------------------------------------------------------------- small c

def _small_and_best(runs: dict, P: Params) -> tuple[pd.DataFrame, float, float]:
    """The MLP's norm-clipped runs, its smallest threshold and the best one (the lowest
    median final loss among the thresholds where no seed blew up)."""
    per_run = outcomes(runs)["mlp"]
    norm = per_run[per_run["clip"] == "norm"]
    ok = norm.groupby("clip_threshold").filter(lambda g: not g.blew_up.any())
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
            "clipping_small_final": number(small), "clipping_best_final": number(best),
            "clipping_small_over_best": number(small / best),
            "clipping_small_frac_clipped": f"{100 * (updated.grad_norm > small_c).mean():.0f}"}


def fig_slow(runs: dict, P: Params) -> plt.Figure:
    """Training loss of the healthy twin and of the smallest and best norm threshold."""
    _, small_c, best_c = _small_and_best(runs, P)
    mlp = runs["mlp"]
    curves = [(f"healthy twin: lr {P.healthy_lr:g}, no clipping", runs["healthy"]),
              (f"lr {P.mlp_lr:g}, c = {small_c:g} (smallest)",
               mlp[(mlp["clip"] == "norm") & (mlp.clip_threshold == small_c)]),
              (f"lr {P.mlp_lr:g}, c = {best_c:g} (best)",
               mlp[(mlp["clip"] == "norm") & (mlp.clip_threshold == best_c)])]
    fig, ax = plots.figure(1, 1, height=4.0)
    for i, (label, tab) in enumerate(curves):
        whole = tab[tab.layer == 0]
        loss = whole.pivot(index="step", columns="seed", values="loss")
        plots.band(ax, loss.index, loss, i, label)
    plots.log_axis(ax)
    ax.set_xlabel("SGD step")
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
    for key in CONFIGS:
        safe_stats = mean_grad_norm(pascanu["safe"][key], window)
        c_bar = pascanu_c_bar(pascanu["safe"][key], window)
        own = mean_grad_norm(runs[key][runs[key]["clip"] == "none"], window)
        s = run_outcomes(pascanu["at_c_bar"][key], tail=TAIL)
        good = good_thresholds(outcome_table(per_run[key]), refs[key][0], "norm")
        in_range = [c for c in P.norm_thresholds if 0.5 * c_bar <= c <= 10 * c_bar]
        points[key] = (c_bar, s.final_loss.median())
        rows.append({
            "config": key.upper(), "c̄ (safe window)": number(c_bar),
            "median of the same window": number(safe_stats.median_grad_norm.mean()),
            "Pascanu's range 0.5c̄ – 10c̄": f"{number(0.5 * c_bar)} – {number(10 * c_bar)}",
            "swept thresholds in range": as_set(in_range),
            "of those, good": as_set([c for c in in_range if c in good]),
            "clipped at c̄: blew up": k_of_n(s.blew_up),
            "clipped at c̄: final loss (median)": number(s.final_loss.median()),
            "reference loss": number(refs[key][0]),
            "c̄ from the failing run": number(own.mean_grad_norm.mean())})
        numbers.update({
            f"clipping_{key}_cbar_median": number(safe_stats.median_grad_norm.mean()),
            f"clipping_{key}_cbar": number(c_bar),
            f"clipping_{key}_cbar_div": k_of_n(s.diverged),
            f"clipping_{key}_cbar_blew": k_of_n(s.blew_up),
            f"clipping_{key}_cbar_final": number(s.final_loss.median()),
            f"clipping_{key}_cbar_own": number(own.mean_grad_norm.mean()),
            f"clipping_{key}_cbar_own_ratio": number(own.mean_grad_norm.mean() / c_bar),
            f"clipping_{key}_cbar_inrange": rows[-1]["swept thresholds in range"],
            f"clipping_{key}_cbar_good": rows[-1]["of those, good"]})
    return rows, numbers, points


def pascanu_numbers(runs: dict, pascanu: dict, P: Params) -> dict:
    """The glued numbers of Pascanu's heuristic."""
    return _pascanu(runs, pascanu, P)[1]


def pascanu_table(runs: dict, pascanu: dict, P: Params):
    """The heuristic per configuration (a column each), as the page shows it."""
    rows = _pascanu(runs, pascanu, P)[0]
    return table(pd.DataFrame(rows).set_index("config").T.rename_axis("").reset_index())


def fig_pascanu(runs: dict, pascanu: dict, P: Params) -> plt.Figure:
    """Where Pascanu's range and the run clipped at c-bar land in the norm sweep."""
    points = _pascanu(runs, pascanu, P)[2]
    per_run, refs, title = outcomes(runs), references(runs, P), titles(P)
    fig, axes = plots.figure(1, 2, height=4.6)
    for ax, key in zip(axes, CONFIGS, strict=True):
        sub = per_run[key][per_run[key]["clip"] == "norm"]
        ok = sub[~sub.diverged]
        c_bar, final_at_c_bar = points[key]
        ax.axvspan(0.5 * c_bar, 10 * c_bar, color=plots.OKABE_ITO[2], alpha=0.15,
                   label="Pascanu's range 0.5c̄ – 10c̄")
        ax.scatter(ok.clip_threshold, ok.final_loss, color=plots.style(0)["color"],
                   alpha=0.45, s=22)
        med = ok.groupby("clip_threshold").final_loss.median()
        ax.plot(med.index, med.values, label="norm clipping sweep (median)", **plots.style(0))
        ax.scatter([c_bar], [final_at_c_bar], marker="*", s=220,
                   color=plots.style(1)["color"], zorder=4, label="run clipped at c̄ (median)")
        ax.axhline(refs[key][0], color="black", linestyle="--", linewidth=1.2,
                   label="reference loss (caption)")
        ax.set_xscale("log")
        ax.margins(y=0.08)  # room for the star
        plots.log_axis(ax)
        ax.set_xlabel("norm threshold $c$")
        ax.set_title(title[key])
    axes[0].set_ylabel("final training loss")
    plots.legend_below(fig, ncol=2)
    return fig


# --------------------------------------------------------------------------- 4. percentile

def autoclip_thresholds(grad_norms, percentile: float) -> np.ndarray:
    """The threshold AutoClip applied at each step of a run whose raw (unclipped) gradient
    norms were ``grad_norms``: at step t the ``percentile``-th percentile of the norms of
    steps 0 .. t-1, linearly interpolated (as :class:`..remedies.PercentileClip`); NaN at
    step 0, which has no history and is not clipped."""
    norms = np.asarray(grad_norms, dtype=float)
    return np.array([np.quantile(norms[:t], percentile / 100) if t else np.nan
                     for t in range(len(norms))])


def percentile_numbers(runs: dict, P: Params) -> dict:
    """The glued numbers of clipping at a percentile of past norms (AutoClip), and, for
    the RNN, the threshold of its second step (the first gradient's norm) and of its last
    step at the smallest and the largest percentile (medians over seeds)."""
    per_run, refs = outcomes(runs), references(runs, P)
    rnn = runs["rnn"]
    numbers = {}
    for name, p in [("low", min(P.percentiles)), ("high", max(P.percentiles))]:
        first, last = [], []
        for _, g in rnn[(rnn["clip"] == "percentile") & (rnn.clip_threshold == p)].groupby(
                "seed"):
            norms = g.sort_values("step").grad_norm
            c = autoclip_thresholds(norms[np.isfinite(norms)], p)
            if len(c) > 1:
                first.append(c[1])
                last.append(c[-1])
        numbers.update({f"clipping_pct_{name}": f"{p:g}",
                        f"clipping_rnn_pct_c_last_{name}": number(np.median(last)) if last
                        else "–"})
        if name == "low":  # the first norm: step 0 is the same run at every percentile
            numbers["clipping_rnn_pct_c_first"] = number(np.median(first)) if first else "–"
    for key in CONFIGS:
        t = outcome_table(per_run[key])
        numbers.update(rule_numbers(t, refs[key][0], key, "percentile", "pct"))
        numbers[f"clipping_{key}_pct_worst"] = number(
            t[t["clip"] == "percentile"].final_max.max())
    return numbers


def percentile_table(runs: dict, P: Params):
    """Both configurations' percentile runs, as the page shows them."""
    per_run = outcomes(runs)
    rows = []
    for key in CONFIGS:
        t = outcome_table(per_run[key])
        for r in t[t["clip"] == "percentile"].itertuples():
            rows.append({"configuration": key.upper(), "percentile p": f"{r.clip_threshold:g}",
                         "diverged (NaN)": r.diverged, "blew up": r.blew_up,
                         "final loss, median [min, max]":
                             "diverged" if np.isnan(r.final_median) else
                             f"{number(r.final_median)} [{number(r.final_min)}, "
                             f"{number(r.final_max)}]"})
    return table(pd.DataFrame(rows))


# --------------------------------------------------------------------------- 5. AGC

def agc_numbers(runs: dict, P: Params) -> dict:
    """The glued numbers of the AGC sweep."""
    per_run, refs = outcomes(runs), references(runs, P)
    numbers = {}
    for key in CONFIGS:
        t = outcome_table(per_run[key])
        numbers.update(rule_numbers(t, refs[key][0], key, "agc"))
        numbers[f"clipping_{key}_agc_blew_at"] = blew_up_at(t, "agc", "λ")
    return numbers


def fig_agc(runs: dict, P: Params) -> plt.Figure:
    """Fraction blown up and final loss against AGC's clip factor, for the MLP and the
    RNN, beside the best norm threshold and the reference."""
    per_run, refs = outcomes(runs), references(runs, P)
    fig, axes = plots.figure(2, 2, height=6.4, sharex=True,
                             gridspec_kw={"height_ratios": [1, 2]})
    for col, key in enumerate(CONFIGS):
        _outcome_axes(axes, col, per_run[key], "agc", 2, "AGC")
        t = outcome_table(per_run[key])
        best_norm = t[(t["clip"] == "norm") & (t.n_blew_up == 0)].final_median.min()
        axes[1, col].axhline(best_norm, color=plots.style(0)["color"], linestyle="-.",
                             label="best norm threshold")
    _outcome_frame(axes, per_run, refs, titles(P), r"clip factor $\lambda$")
    plots.legend_below(fig, ncol=2)
    return fig


def drift_numbers(drift: pd.DataFrame, runs: dict, P: Params) -> dict:
    """Which weights moved in the runs at AGC's smallest clip factor that blew up.

    ``drift`` holds :func:`..study.clip_directions.weight_drift` rows with a ``config``
    column.  For each configuration: how many of those runs blew up, and in them, at the
    last step whose weights were all finite, how far the readout weights had moved
    relative to their initial norm (median) and the largest relative move of any hidden
    or recurrent weight matrix."""
    per_run, numbers = outcomes(runs), {}
    smallest = min(P.agc_factors)
    for key in CONFIGS:
        o = per_run[key]
        blew = o[(o["clip"] == "agc") & (o.clip_threshold == smallest) & o.blew_up].seed
        d = drift[(drift.config == key) & drift.seed.isin(blew) & drift.matrix]
        d = d.assign(moved=d.distance / d.init_norm)
        finite = d.groupby(["seed", "step"]).moved.transform(lambda v: np.isfinite(v).all())
        d = d[finite.astype(bool)]
        last = d[d.step == d.groupby("seed").step.transform("max")]
        readout, hidden = last[last.final].moved, last[~last.final].moved
        numbers.update({
            f"clipping_{key}_drift_n": k_of_n(o[(o["clip"] == "agc")
                                                & (o.clip_threshold == smallest)].blew_up),
            f"clipping_{key}_drift_readout": number(readout.median()) if len(readout)
            else "–",
            f"clipping_{key}_drift_hidden": f"{number(100 * hidden.max(), 2)}%" if len(hidden)
            else "–"})
    numbers["clipping_agc_smallest"] = f"{smallest:g}"
    return numbers


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
    numbers = {f"clipping_layers_{name}_spread": number(layer_spread(weights, explodes, m, c))
               for name, m, c in [("raw", "norm", "raw_rel"), ("norm", "norm", "clipped_rel"),
                                  ("agc", "agc", "clipped_rel"),
                                  ("value", "value", "clipped_rel")]}
    numbers["clipping_xavier_raw_max"] = number(xav[xav.method == "norm"].raw_rel.max(), 2)
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
    fig, axes = plots.figure(1, 2, height=4.4)
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
        ax.set_xlabel("hidden layer")
        ax.set_title(case)
    axes[0].set_ylabel(r"$\|\partial L/\partial W^l\| \,/\, \|W^l\|$")
    plots.legend_below(fig, ncol=2)
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
    """The cost per clipping method (``settings``: its threshold, λ or percentile)."""
    cost = _cost(ratios)
    shown = pd.DataFrame({
        "clipping": cost.variant, "setting": [f"{settings[m]:g}" for m in cost.variant],
        "ms per step": cost.step_ms,
        "time per step / unclipped, median [range]": [
            f"{r.ratio:.2f} [{r.low:.2f}, {r.high:.2f}]" for r in cost.itertuples()]})
    return table(shown, digits=2)
