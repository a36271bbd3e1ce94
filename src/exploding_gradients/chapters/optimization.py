"""Optimizer-side remedies: weight penalties, warmup and schedules, adaptive optimizers,
early stopping, each tried on the failing configurations of the cause chapters.

The page runs the sweeps (visible on it) on the configurations of :func:`cases`; this
module turns their tables into the page's numbers, tables and figures.  Per run, the
chapter's "final loss" is the test loss for the MLPs and the last minibatch loss for
the RNN (:func:`final_value`), taken from :func:`.study.outcomes.run_outcomes`.
"""

from __future__ import annotations

from typing import NamedTuple

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import theory
from ..data import ADDING_BASELINE_MSE
from ..engine.params import Param
from ..engine.registry import get
from ..remedies import PENALTIES
from ..study import plots, readable
from ..study.outcomes import (
    constant_output_loss,
    count_spikes,
    run_outcomes,
    summarize,
)
from . import Chapter, Params
from ._shared import SEEDS, from_profile

CHAPTER = Chapter(
    "optimization",
    (
        SEEDS,
        from_profile("width", "int", "units per hidden layer of every MLP", low=2, high=8192),
        from_profile(
            "steps",
            "int",
            "optimizer steps of the shallow MLPs (regression, inputs)",
            low=1,
            high=10**6,
        ),
        from_profile(
            "deep_steps", "int", "optimizer steps of the deep sigma_w network", low=1, high=10**6
        ),
        from_profile("rnn_steps", "int", "optimizer steps of the RNN", low=1, high=10**6),
        from_profile("budget_steps", "int", "optimizer steps of the long runs of the deep "
                     "sigma_w network (Adam against the budget)", low=1, high=10**6),
        Param("deep_depth", "int", 30, "hidden layers of the deep ReLU network", low=1, high=1000),
        Param(
            "deep_sigma_w", "float", 2.0, "its too-large weight scale sigma_w", low=0.0, high=100.0
        ),
        Param(
            "deep_lr",
            "float",
            0.01,
            "its learning rate (SGD with momentum 0.9)",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "regression_lr",
            "float",
            0.2,
            "too-large learning rate of the depth-4 regression MLP (plain SGD)",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "input_spread",
            "float",
            100.0,
            "largest/smallest feature scale of the unnormalized-inputs MLP",
            low=1.0,
            high=1e6,
        ),
        Param("input_lr", "float", 0.1, "its learning rate (plain SGD)", low=1e-8, high=100.0),
        Param("rnn_radius", "float", 3.0, "spectral radius of the tanh RNN", low=0.0, high=100.0),
        Param(
            "rnn_seq_len", "int", 40, "sequence length of the adding problem", low=2, high=100_000
        ),
        Param("rnn_hidden", "int", 32, "hidden units of the RNN", low=2, high=4096),
        Param("rnn_lr", "float", 0.01, "learning rate of the RNN (Adam)", low=1e-8, high=100.0),
        Param(
            "rnn_sgd_lr",
            "float",
            0.1,
            "plain-SGD learning rate of the RNN in the early-stopping runs",
            low=1e-8,
            high=100.0,
        ),
        from_profile(
            "decay_rates",
            "list[float]",
            "penalty strengths, as lr x strength (the shrink per step)",
            low=1e-8,
            high=1.0,
        ),
        from_profile(
            "warmup_lrs",
            "list[float]",
            "peak learning rates of the warmup sweep (plain SGD, regression MLP)",
            low=1e-8,
            high=100.0,
        ),
        from_profile("warmup_lengths", "list[int]", "warmup lengths in steps", low=0, high=10**6),
        Param(
            "schedule_lr",
            "float",
            0.8,
            "peak learning rate of the schedule comparison",
            low=1e-8,
            high=100.0,
        ),
        from_profile(
            "optimizer_lrs",
            "list[float]",
            "learning rates given to every optimizer",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "stop_lrs",
            "list[float]",
            [0.1, 0.2],
            "learning rates of the early-stopping runs (plain SGD, regression MLP)",
            low=1e-8,
            high=100.0,
        ),
        from_profile(
            "stop_factors",
            "list[float]",
            "early-stopping thresholds (x the first loss)",
            low=1.0,
            high=1e12,
        ),
        Param(
            "safe_lr",
            "float",
            0.01,
            "learning rate of the safe reference runs",
            low=1e-8,
            high=100.0,
        ),
        from_profile(
            "timing_steps",
            "int",
            "steps of the longer timed run (the shorter has a quarter of them)",
            low=2,
            high=10**6,
        ),
        from_profile(
            "timing_repeat",
            "int",
            "timed rounds of each variant (the median ratio over rounds is used)",
            low=1,
            high=100,
        ),
    ),
    {
        "quick": dict(
            seeds=1,
            width=32,
            steps=20,
            deep_steps=4,
            rnn_steps=8,
            budget_steps=8,
            decay_rates=[0.5],
            warmup_lrs=[0.8],
            warmup_lengths=[0, 5],
            optimizer_lrs=[0.1],
            stop_factors=[10.0],
            timing_steps=5,
            timing_repeat=1,
        ),
        "default": dict(
            seeds=3,
            width=64,
            steps=120,
            deep_steps=25,
            rnn_steps=40,
            budget_steps=300,
            decay_rates=[1e-2, 1e-1, 0.5],
            warmup_lrs=[0.1, 0.2, 0.4, 0.8],
            warmup_lengths=[0, 10, 50],
            optimizer_lrs=[1e-3, 1e-2, 1e-1],
            stop_factors=[2.0, 10.0, 100.0],
            timing_steps=40,
            timing_repeat=3,
        ),
        "full": dict(
            seeds=10,
            width=128,
            steps=1000,
            deep_steps=300,
            rnn_steps=300,
            budget_steps=2000,
            decay_rates=[1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 0.3, 0.5],
            warmup_lrs=[0.05, 0.1, 0.2, 0.4, 0.8, 1.6],
            warmup_lengths=[0, 10, 50, 200],
            optimizer_lrs=[1e-4, 1e-3, 1e-2, 1e-1, 1.0],
            stop_factors=[1.5, 2.0, 10.0, 100.0, 1000.0],
            timing_steps=200,
            timing_repeat=5,
        ),
    },
)


# --------------------------------------------------------------------------- the cases


class Case(NamedTuple):
    """A failing configuration: its experiment, its configuration, its label."""

    experiment: str
    config: dict
    label: str


def med_range(values, fmt: str | None = None) -> str:
    """``"median [min, max]"`` of the non-missing ``values`` (one value alone; "–" if
    none), written by :func:`.readable.number` (4.4 × 10¹⁰, never 4.4e+10) unless ``fmt``."""
    values = pd.Series(values, dtype=float).dropna()
    write = fmt.format if fmt else (lambda v: readable.number(v, 3))
    if values.empty:
        return "–"
    if len(values) == 1:
        return write(values.iloc[0])
    return f"{write(values.median())} [{write(values.min())}, {write(values.max())}]"


def tex(label: str) -> str:
    """A label for a figure: sigma_w and σ_w as mathtext, so that no underscore shows."""
    return label.replace("σ_w", r"$\sigma_w$").replace(" sigma_w", r" $\sigma_w$")


def every(n: int) -> int:
    """Steps between the logged test loss and per-layer statistics: five times per run."""
    return max(1, n // 5)


def cases(P: Params) -> dict[str, Case]:
    """The four failing configurations of the page, narrowed to width ``P.width``.  The
    MLPs train the seeds of a configuration as one ensemble (``engine="batched"``: same
    results up to float rounding; early stopping falls back to the per-seed loop)."""
    deep = dict(depth=P.deep_depth, width=P.width, activation="relu", init="normal",
                sigma_w=P.deep_sigma_w, optimizer="momentum", lr=P.deep_lr,
                steps=P.deep_steps, log_every=every(P.deep_steps), engine="batched")
    regression = dict(depth=4, width=P.width, activation="relu", init="he", task="regression",
                      optimizer="sgd", lr=P.regression_lr, steps=P.steps,
                      log_every=every(P.steps), engine="batched")
    inputs = dict(depth=3, width=P.width, activation="relu", init="he",
                  input_scale_spread=P.input_spread, optimizer="sgd", lr=P.input_lr,
                  steps=P.steps, log_every=every(P.steps), engine="batched")
    rnn = dict(cell="rnn", spectral_radius=P.rnn_radius, hidden_size=P.rnn_hidden,
               seq_len=P.rnn_seq_len, optimizer="adam", lr=P.rnn_lr, steps=P.rnn_steps,
               log_every=every(P.rnn_steps))
    return {
        "deep": Case("training", deep, f"σ_w = {P.deep_sigma_w:g}, depth {P.deep_depth}"),
        "regression": Case("training", regression, f"lr {P.regression_lr:g} (regression)"),
        "inputs": Case("training", inputs, f"inputs spread ×{P.input_spread:g}"),
        "rnn": Case("rnn_training", rnn, f"RNN ρ = {P.rnn_radius:g}, T = {P.rnn_seq_len}"),
    }


def references(P: Params) -> dict[str, float]:
    """Per case, the loss of a network that learned nothing: a zero output for the MLPs,
    predicting the mean for the adding problem (a zero output would be worse)."""
    out = {key: constant_output_loss(c.config) for key, c in cases(P).items()
           if c.experiment == "training"}
    out["rnn"] = ADDING_BASELINE_MSE
    return out


def network(config: dict, experiment: str) -> dict:
    """The parameters of ``config`` that ``experiment`` takes, without its training
    length and learning rate: the same network, e.g. for ``sharpness`` at initialization."""
    names = {p.name for p in get(experiment).params} - {"lr", "steps"}
    return {k: v for k, v in config.items() if k in names}


def final_value(experiment: str, outcomes: pd.DataFrame) -> pd.Series:
    """The chapter's "final loss": test loss for the MLPs, last minibatch loss for the RNN."""
    return (outcomes["final_test_loss"] if experiment == "training"
            else outcomes["final_loss"])


def setup_numbers(P: Params) -> dict:
    """The glued parameters of the failing configurations."""
    numbers = {f"opt_{key}": P[key] for key in [
        "width", "seeds", "steps", "deep_steps", "deep_depth", "rnn_hidden", "rnn_seq_len",
        "rnn_steps"]}
    numbers.update({f"opt_{key}": f"{P[key]:g}" for key in [
        "deep_sigma_w", "deep_lr", "regression_lr", "input_spread", "input_lr", "rnn_radius",
        "rnn_lr", "rnn_sgd_lr", "safe_lr", "schedule_lr"]})
    return numbers


NOTHING = "learned nothing (zero output; RNN: mean)"

# --------------------------------------------------------------------------- 1. penalties

#: The penalties of section 1 (decoupled weight decay is ``weight_decay``, not a penalty).
REMEDY_LABELS = {"l1": "L1 penalty", "l2": "L2 penalty", "decoupled": "decoupled weight decay"}
PENALIZED = ("deep", "regression", "rnn")


def penalty_kinds(key: str) -> list[str]:
    """The loss penalties tried on case ``key``: the RNN (Adam) only compares L2 with
    decoupled decay."""
    return ["l2"] if key == "rnn" else [k for k in PENALTIES if k != "none"]


def _labelled(runs: pd.DataFrame, lr: float) -> pd.DataFrame:
    """``runs`` with ``remedy`` (none, l1, l2, decoupled) and ``rate``, the shrink per step
    lr x strength."""
    runs = runs.copy()
    runs["remedy"] = np.where(runs["weight_decay"] > 0, "decoupled", runs["penalty"])
    runs["rate"] = lr * (runs["penalty_strength"] + runs["weight_decay"])
    return runs


def penalty_outcomes(penalties: dict[str, pd.DataFrame], P: Params) -> dict[str, pd.DataFrame]:
    """Per case, one row per (remedy, rate, seed) with ``final`` and the x label; the
    unpenalized runs are the rate-0 point of every kind of penalty."""
    result = {}
    for key, runs in penalties.items():
        name, cfg, _ = cases(P)[key]
        out = run_outcomes(_labelled(runs, cfg["lr"]), ["remedy", "rate"])
        out["final"] = final_value(name, out)
        base = out[out.remedy == "none"]
        out = pd.concat([base.assign(remedy=k) for k in [*penalty_kinds(key), "decoupled"]]
                        + [out[out.remedy != "none"]], ignore_index=True)
        out["x"] = out["rate"].map(lambda r: "none" if r == 0 else f"{r:g}")
        result[key] = out
    return result


def fig_penalty(penalties: dict[str, pd.DataFrame], P: Params) -> plt.Figure:
    """Final loss against the shrink per step of each penalty, one panel per case."""
    outs, refs, labels = penalty_outcomes(penalties, P), references(P), cases(P)
    fig, grid = plots.figure(2, 2, height=6.4, layout="constrained")
    axes = grid.flat[:3]
    order = list(REMEDY_LABELS)
    for ax, key in zip(axes, PENALIZED, strict=True):
        out = outs[key]
        kinds = [k for k in order if k in set(out.remedy)]
        plots.outcome_panel(ax, out, "x", "remedy", {k: REMEDY_LABELS[k] for k in kinds},
                            refs[key], order)
        ax.set_title(tex(labels[key].label))
        ax.set_xlabel(r"shrink per step $\eta\lambda$")
        ax.set_ylabel("final loss")
        _decades(ax)
    plots.outcome_legend(fig, REMEDY_LABELS, order, NOTHING)
    legend = fig.legends[-1]
    handles, texts = legend.legend_handles, [t.get_text() for t in legend.get_texts()]
    legend.remove()
    grid.flat[3].axis("off")
    grid.flat[3].legend(handles, texts, loc="center")
    return fig


def penalty_table(penalties: dict[str, pd.DataFrame], P: Params) -> pd.DataFrame:
    """Diverged seeds / seeds per case, remedy and shrink per step."""
    outs, labels = penalty_outcomes(penalties, P), cases(P)
    rows = []
    for key in PENALIZED:
        summ = summarize(outs[key], ["remedy", "rate"], "final")
        rows += [{"configuration": labels[key].label, "remedy": REMEDY_LABELS[row.remedy],
                  "rate": row.rate, "cell": row.diverged} for row in summ.itertuples()]
    table = (pd.DataFrame(rows)
             .pivot_table(index=["configuration", "remedy"], columns="rate", values="cell",
                          aggfunc="first", sort=False))
    table.columns = ["none" if c == 0 else f"ηλ = {c:g}" for c in table.columns]
    return table.reset_index()


def scale_table(P: Params) -> pd.DataFrame:
    """The penalties' time scales: 1/(ηλ) and the steps to shrink σ_w to √2 and ρ to 1."""
    return pd.DataFrame([{
        "ηλ": f"{r:g}", "1/(ηλ) (steps)": f"{1 / r:.3g}",
        f"steps to shrink σ_w {P.deep_sigma_w:g} → √2":
            f"{theory.decay_steps(1.0, r, P.deep_sigma_w / np.sqrt(2)):.3g}",
        f"steps to shrink ρ {P.rnn_radius:g} → 1":
            f"{theory.decay_steps(1.0, r, max(P.rnn_radius, 1.0)):.3g}"}
        for r in P.decay_rates])


def penalty_numbers(penalties: dict[str, pd.DataFrame], P: Params) -> dict:
    """The glued numbers of section 1's feed-forward cases."""
    outs, rates, refs = penalty_outcomes(penalties, P), P.decay_rates, references(P)
    deep_base = outs["deep"].query("rate == 0 and remedy == 'l2'")
    reg_base = outs["regression"].query("rate == 0 and remedy == 'l2'")
    numbers = {
        "opt_pen_rates": ", ".join(f"{r:g}" for r in rates),
        "opt_pen_taus": ", ".join(f"{1 / r:.3g}" for r in rates),
        "opt_pen_deep_div": med_range(deep_base.loc[deep_base.diverged, "diverged_step"],
                                      "{:.0f}"),
        "opt_pen_deep_ndiv": f"{int(deep_base.diverged.sum())}/{len(deep_base)}",
        "opt_pen_reg_div": med_range(reg_base.loc[reg_base.diverged, "diverged_step"],
                                     "{:.0f}"),
        "opt_pen_reg_ndiv": f"{int(reg_base.diverged.sum())}/{len(reg_base)}",
    }
    for key in ["deep", "regression"]:
        pen = outs[key][outs[key].rate > 0]
        saved = pen[~pen.diverged]
        numbers.update({
            f"opt_pen_{key}_ndiv_pen": f"{int(pen.diverged.sum())} of {len(pen)}",
            f"opt_pen_{key}_nsaved": len(saved),
            f"opt_pen_{key}_saved_loss": med_range(saved["final"]),
            f"opt_pen_{key}_saved_rates":
                ", ".join(f"{r:g}" for r in sorted(saved["rate"].unique())) or "none"})
    reg = outs["regression"]
    l1_top = reg[(reg.remedy == "l1") & (reg.rate == max(rates))]
    numbers.update({
        "opt_pen_l1_top_div": f"{int(l1_top.diverged.sum())}/{len(l1_top)}",
        "opt_pen_reg_zero": f"{refs['regression']:.3g}",
        "opt_pen_rate_max": f"{max(rates):g}",
        "opt_pen_rate_min": f"{min(rates):g}",
        "opt_deep_zero": f"{refs['deep']:.3g}",
        "opt_pen_deep_shrink_top":
            f"{theory.decay_steps(1.0, max(rates), P.deep_sigma_w / np.sqrt(2)):.2g}",
        "opt_pen_deep_first_update": med_range(deep_base["first_update_ratio"]),
    })
    return numbers


def _adamw_shown(P: Params) -> list[tuple[str, float, str, int]]:
    """(remedy, rate, label, style) of the RNN runs in the AdamW figure."""
    top = max(P.decay_rates)
    second = sorted(P.decay_rates)[-2] if len(P.decay_rates) > 1 else top
    shown = [("none", 0.0, "no penalty (Adam)", 0),
             ("l2", top, f"L2 penalty, ηλ = {top:g}", 1),
             ("decoupled", second, f"decoupled decay (AdamW), ηλ = {second:g}", 4),
             ("decoupled", top, f"decoupled decay (AdamW), ηλ = {top:g}", 2)]
    if second == top:
        shown = [t for t in shown if t[1] != second or t[3] != 4]
    return shown


def fig_adamw(penalties: dict[str, pd.DataFrame], P: Params) -> plt.Figure:
    """The RNN with Adam: gradient norm and loss over the steps, without a penalty, with
    the strongest L2 penalty and with the two strongest decoupled decays."""
    runs = _labelled(penalties["rnn"], cases(P)["rnn"].config["lr"])
    fig, axes = plots.figure(1, 2, height=3.6)
    for kind, r, label, i in _adamw_shown(P):
        sub = runs[(runs.remedy == kind) & np.isclose(runs.rate, r)]
        for ax, col in zip(axes, ["grad_norm", "loss"], strict=True):
            piv = sub.pivot(index="step", columns="seed", values=col)
            plots.band(ax, piv.index, piv, i, label)
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("Adam step")
    axes[0].set_ylabel("gradient norm")
    axes[1].set_ylabel("minibatch loss (MSE)")
    axes[1].axhline(ADDING_BASELINE_MSE, color="black", linestyle="--", linewidth=1,
                    label="predict the mean (1/6)")
    plots.legend_below(fig, *axes[1].get_legend_handles_labels())
    return fig


def _rnn_last(penalties: dict[str, pd.DataFrame], P: Params) -> pd.DataFrame:
    """Per (remedy, rate, seed) of the RNN: the last gradient norm and lag ratio."""
    runs = _labelled(penalties["rnn"], cases(P)["rnn"].config["lr"])
    rank = {"none": 0, "l2": 1, "decoupled": 2}
    return (runs.groupby(["remedy", "rate", "seed"])
            .agg(grad=("grad_norm", "last"), lag=("lag_ratio", "last")).reset_index()
            .sort_values(["remedy", "rate"],
                         key=lambda c: c.map(rank) if c.name == "remedy" else c,
                         kind="stable"))


def adamw_table(penalties: dict[str, pd.DataFrame], P: Params) -> pd.DataFrame:
    """Per RNN remedy and strength: final gradient norm, lag ratio and loss over seeds."""
    last = _rnn_last(penalties, P)
    out = penalty_outcomes({"rnn": penalties["rnn"]}, P)["rnn"]
    rows = []
    for (kind, r), g in last.groupby(["remedy", "rate"], sort=False):
        fin = out[(out.remedy == (kind if kind != "none" else "l2"))
                  & np.isclose(out.rate, r)]["final"]
        rows.append({"remedy": "none" if kind == "none" else REMEDY_LABELS[kind],
                     "ηλ": f"{r:g}",
                     "final gradient norm": med_range(g["grad"]),
                     "final ||dL/dh_1|| / ||dL/dh_T||": med_range(g["lag"]),
                     "final loss": med_range(fin)})
    return pd.DataFrame(rows)


def adamw_numbers(penalties: dict[str, pd.DataFrame], P: Params) -> dict:
    """The glued numbers of the RNN under penalties (L2 through Adam against AdamW)."""
    last = _rnn_last(penalties, P)
    top = max(P.decay_rates)
    numbers = {}
    for kind, r, tag in [("none", 0.0, "none"), ("l2", top, "l2"), ("decoupled", top, "wd")]:
        g = last[(last.remedy == kind) & np.isclose(last.rate, r)]
        numbers[f"opt_rnn_{tag}_grad"] = med_range(g["grad"])
        numbers[f"opt_rnn_{tag}_lag"] = med_range(g["lag"])
    runs = _labelled(penalties["rnn"], cases(P)["rnn"].config["lr"])
    first_grad = runs[(runs.step == 0) & (runs.remedy == "none")]["grad_norm"]
    out = penalty_outcomes({"rnn": penalties["rnn"]}, P)["rnn"]
    numbers.update({
        "opt_rnn_first_grad": med_range(first_grad),
        "opt_rnn_ndiv": int(out.diverged.sum()),
        "opt_rnn_shrink_steps": f"{theory.decay_steps(1.0, top, P.rnn_radius):.2g}"})
    return numbers


# --------------------------------------------------------------------------- 2. warmup

#: A warmup whose first step is a thousandth of the learning rate.
LONG_WARMUP = 1000


def stability_lr(sharp: pd.DataFrame) -> float:
    """The median over seeds of 2 / lambda_max at initialization."""
    return float((2 / sharp["lambda_max"]).median())


def _final_test(runs: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    out = run_outcomes(runs, by)
    out["final"] = out["final_test_loss"]
    return out


def safe_final(safe: pd.DataFrame) -> float:
    """Median final test loss of the regression MLP at the safe learning rate."""
    return float(run_outcomes(safe)["final_test_loss"].median())


def _legend_below(fig: plt.Figure, ncol: int = 2) -> None:
    """Move the figure legend that :func:`.plots.outcome_legend` put above the panels to
    below them, in ``ncol`` columns at the book's legend size."""
    legend = fig.legends[-1]
    handles = legend.legend_handles
    texts = [t.get_text().replace(", one per seed", "") for t in legend.get_texts()]
    legend.remove()
    plots.legend_below(fig, handles, texts, ncol)


def _decades(ax: plt.Axes) -> None:
    """Tick labels written as powers of ten (10⁹, never 1e+09) on a log y axis that
    spans more than three decades."""
    low, high = ax.get_ylim()
    if high / low > 1e3:
        ax.yaxis.set_major_formatter(mpl.ticker.LogFormatterMathtext())
        ax.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())


def _log_formatters(ax: plt.Axes) -> None:
    """Plain numbers on a log y axis, minor ticks labelled at 2 and 5."""
    ax.yaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(mpl.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if round(v / 10 ** np.floor(np.log10(v))) in (2, 5) else ""))


def fig_warmup(sharp: pd.DataFrame, warm: pd.DataFrame, safe: pd.DataFrame,
               P: Params) -> plt.Figure:
    """Fraction of seeds diverged and final test loss against the peak learning rate (in
    units of 2/lambda_max at initialization), per warmup length."""
    stab, warm_out = stability_lr(sharp), _final_test(warm, ["lr", "warmup_steps"])
    fig, axes = plots.figure(1, 2, height=3.6)
    for i, w in enumerate(P.warmup_lengths):
        sub = warm_out[warm_out.warmup_steps == w]
        frac = sub.groupby("lr")["diverged"].mean()
        s = plots.style(i)
        label = "no warmup" if w == 0 else f"warmup {w} steps"
        axes[0].plot(frac.index / stab, frac.to_numpy(), color=s["color"], marker=s["marker"],
                     label=label)
        ok = sub[~sub.diverged]
        axes[1].scatter(ok["lr"] / stab, ok["final"], color=s["color"], marker=s["marker"],
                        s=22, alpha=0.75)
        med = ok.groupby("lr")["final"].median()
        axes[1].plot(med.index / stab, med.to_numpy(), color=s["color"], label=label)
    ratios = [lr / stab for lr in P.warmup_lrs]
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(ratios, [f"{r:.2g}" for r in ratios])
        ax.minorticks_off()
        ax.set_xlabel(r"peak lr / (2/$\lambda_{\max}$ at init)")
    axes[0].set_ylabel("fraction of seeds diverged")
    axes[0].set_ylim(-0.05, 1.05)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("final test loss (finite runs)")
    axes[1].axhline(safe_final(safe), color="gray", linestyle=":", linewidth=1.2,
                    label=f"constant lr {P.safe_lr:g} (median)")
    axes[1].axhline(references(P)["regression"], color="black", linestyle="--", linewidth=1,
                    label="zero output")
    _log_formatters(axes[1])
    plots.legend_below(fig, *axes[1].get_legend_handles_labels())
    return fig


def warmup_table(sharp: pd.DataFrame, warm: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per peak learning rate and warmup length: diverged seeds, when, and the final loss."""
    stab, warm_out = stability_lr(sharp), _final_test(warm, ["lr", "warmup_steps"])
    summ = summarize(warm_out, ["lr", "warmup_steps"], "final")
    return pd.DataFrame({
        "peak lr": summ["lr"].map("{:g}".format),
        "× 2/λ_max": (summ["lr"] / stab).map("{:.2g}".format),
        "warmup steps": summ["warmup_steps"],
        "diverged": summ["diverged"],
        "median divergence step": summ["median_diverged_step"].map(
            lambda v: "–" if np.isnan(v) else f"{v:.0f}"),
        "final test loss, median [min, max]": [
            med_range(warm_out.loc[(warm_out.lr == r.lr)
                                   & (warm_out.warmup_steps == r.warmup_steps)
                                   & ~warm_out.diverged, "final"])
            for r in summ.itertuples()]})


def largest_safe(warm_out: pd.DataFrame, w: int) -> float:
    """The largest peak learning rate at which no seed with warmup ``w`` diverged."""
    g = warm_out[warm_out.warmup_steps == w].groupby("lr")["diverged"].sum()
    ok = g[g == 0]
    return ok.index.max() if len(ok) else np.nan


def warmup_numbers(sharp: pd.DataFrame, warm: pd.DataFrame, safe: pd.DataFrame,
                   deep_warm: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the warmup sweep and of warmup on the deep network."""
    stab, warm_out = stability_lr(sharp), _final_test(warm, ["lr", "warmup_steps"])
    numbers = {
        "opt_warm_lam": med_range(sharp["lambda_max"]),
        "opt_warm_stab": f"{stab:.3g}",
        "opt_warm_lrs": ", ".join(f"{lr:g}" for lr in P.warmup_lrs),
        "opt_warm_ratios": ", ".join(f"{lr / stab:.2g}" for lr in P.warmup_lrs),
        "opt_warm_lengths": ", ".join(str(w) for w in P.warmup_lengths),
    }
    for tag, w in [("w0", min(P.warmup_lengths)), ("wmax", max(P.warmup_lengths))]:
        lr_ok = largest_safe(warm_out, w)
        n = warm_out[warm_out.warmup_steps == w]
        head = "without warmup" if w == 0 else f"with {w} warmup steps"
        tail = ("no peak learning rate of the grid was free of diverged seeds"
                if np.isnan(lr_ok)
                else f"the largest peak learning rate without a diverged seed was {lr_ok:g}, "
                     f"{lr_ok / stab:.2g} times the median 2/λ_max")
        numbers[f"opt_warm_{tag}_sentence"] = (
            f"{head}, {int(n.diverged.sum())} of {len(n)} runs diverged and {tail}")
        numbers[f"opt_warm_{tag}_len"] = w
    deep_out = run_outcomes(deep_warm, ["warmup_steps"])
    best = warm_out[~warm_out.diverged].groupby(["lr", "warmup_steps"])["final"].median()
    numbers.update({
        "opt_warm_deep": "; ".join(f"{w} steps: {int(g.diverged.sum())}/{len(g)}"
                                   for w, g in deep_out.groupby("warmup_steps")),
        "opt_warm_long": LONG_WARMUP,
        "opt_warm_long_lr": f"{P.deep_lr / LONG_WARMUP:g}",
        "opt_warm_best": f"{best.min():.3g}" if len(best) else "–",
        "opt_warm_best_at": (f"peak lr {best.idxmin()[0]:g} with {best.idxmin()[1]} warmup "
                             "steps" if len(best) else "–"),
        "opt_warm_safe_final": f"{safe_final(safe):.3g}",
    })
    return numbers


def schedule_outcomes(sched: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per (schedule, seed): the outcome and ``late_spikes``, steps of the second half
    whose minibatch loss exceeds 3 times the median of the 10 steps before."""
    whole = sched[sched.layer == 0].sort_values("step")
    spikes = (whole.groupby(["schedule", "seed"])["loss"]
              .apply(lambda s: count_spikes(s.to_numpy(), 3.0, 10, P.steps // 2))
              .rename("late_spikes").reset_index())
    return run_outcomes(sched, ["schedule"]).merge(spikes, on=["schedule", "seed"])


def fig_schedule(sched: pd.DataFrame, P: Params) -> plt.Figure:
    """Minibatch loss over the steps per schedule after the same warmup, and the learning
    rate each schedule used (the logged ``step_lr``)."""
    whole = sched[sched.layer == 0].sort_values("step")
    fig, axes = plots.figure(1, 2, height=3.4, gridspec_kw={"width_ratios": [2, 1]},
                             layout="constrained")
    for i, s in enumerate(dict.fromkeys(sched.schedule)):
        sub = whole[whole.schedule == s]
        loss = sub.pivot(index="step", columns="seed", values="loss")
        plots.band(axes[0], loss.index, loss, i, s)
        lr_curve = sub[sub.seed == sub.seed.min()].set_index("step")["step_lr"].dropna()
        axes[1].plot(lr_curve.index, lr_curve.to_numpy(), color=plots.style(i)["color"],
                     label=s)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("SGD step")
    axes[0].set_ylabel("minibatch loss (½ MSE)")
    axes[0].axvline(P.steps // 2, color="gray", linewidth=0.8, linestyle=":")
    axes[0].legend(title="after warmup")
    axes[1].set_xlabel("SGD step")
    axes[1].set_ylabel("learning rate")
    return fig


def schedule_table(sched: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per schedule: diverged seeds, late spikes and final test loss."""
    out = schedule_outcomes(sched, P)
    summ = summarize(out, ["schedule"], "final_test_loss")
    return pd.DataFrame({
        "schedule after warmup": summ["schedule"],
        "diverged": summ["diverged"],
        "late spikes per run, median [min, max]": [
            med_range(out.loc[out.schedule == s, "late_spikes"], "{:.0f}")
            for s in summ["schedule"]],
        "final test loss, median [min, max]": [
            med_range(out.loc[(out.schedule == s) & ~out.diverged, "final_test_loss"])
            for s in summ["schedule"]]})


def schedule_numbers(sched: pd.DataFrame, P: Params) -> dict:
    """Per schedule: late spikes, final test loss and diverged seeds, as glued."""
    out = schedule_outcomes(sched, P)
    numbers = {}
    for s in dict.fromkeys(sched.schedule):
        sub = out[out.schedule == s]
        numbers[f"opt_sched_{s}_spikes"] = med_range(sub["late_spikes"], "{:.0f}")
        numbers[f"opt_sched_{s}_loss"] = med_range(sub.loc[~sub.diverged, "final_test_loss"])
        numbers[f"opt_sched_{s}_ndiv"] = f"{int(sub.diverged.sum())}/{len(sub)}"
    return numbers


# --------------------------------------------------------------------------- 3. optimizers

#: The SGD variant of each case: its own for the MLPs, plain SGD in place of the RNN's Adam.
SGD_OF = {"deep": "momentum", "regression": "sgd", "inputs": "sgd", "rnn": "sgd"}
ADAPTIVE = ("adam", "rmsprop")
OPT_LABELS = {"sgd": "SGD", "momentum": "SGD + momentum", "adam": "Adam",
              "rmsprop": "RMSprop"}
OPT_ORDER = ["sgd", "adam", "rmsprop", "momentum"]


def optimizer_outcomes(optimizers: dict[str, pd.DataFrame],
                       P: Params) -> dict[str, pd.DataFrame]:
    """Per case, one row per (optimizer, lr, seed), with ``final`` and ``family``
    (momentum counted as SGD)."""
    result = {}
    for key, runs in optimizers.items():
        out = run_outcomes(runs, ["optimizer", "lr"])
        out["final"] = final_value(cases(P)[key].experiment, out)
        out["family"] = out["optimizer"].replace({"momentum": "sgd"})
        result[key] = out
    return result


def fig_optimizers(optimizers: dict[str, pd.DataFrame], P: Params) -> plt.Figure:
    """Final loss against the learning rate for SGD, Adam and RMSprop, per case."""
    outs, refs, labels = optimizer_outcomes(optimizers, P), references(P), cases(P)
    fig, grid = plots.figure(2, 2, height=6.6)
    axes = grid.flat
    for ax, key in zip(axes, labels, strict=True):
        out = outs[key].assign(optimizer=lambda d: d["family"])
        plots.outcome_panel(ax, out, "lr", "optimizer",
                            {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSprop"}, refs[key],
                            OPT_ORDER)
        ax.set_title(tex(labels[key].label))
        ax.set_xlabel("learning rate")
        ax.set_ylabel("final loss")
        _decades(ax)
    plots.outcome_legend(fig, {"sgd": r"SGD (momentum on the $\sigma_w$ net)",
                               "adam": "Adam", "rmsprop": "RMSprop"}, OPT_ORDER, NOTHING)
    _legend_below(fig)
    return fig


MLP_CASES = ("deep", "regression", "inputs")


def _first_steps(optimizers: dict[str, pd.DataFrame], P: Params) -> pd.DataFrame:
    """Every MLP run's first step: gradient norm and update-to-weight ratio per unit lr."""
    outs = optimizer_outcomes({k: optimizers[k] for k in MLP_CASES}, P)
    mlp = pd.concat([outs[k].assign(case=k) for k in MLP_CASES], ignore_index=True)
    mlp["step_per_lr"] = mlp["first_update_ratio"] / mlp["lr"]
    return mlp


def fig_first_step(optimizers: dict[str, pd.DataFrame], P: Params) -> plt.Figure:
    """First update / weights per unit learning rate against the first gradient norm."""
    mlp, labels = _first_steps(optimizers, P), cases(P)
    fig, ax = plots.figure(1, 1, height=4.4)
    case_markers = {"deep": "o", "regression": "s", "inputs": "^"}
    fam_colors = {"sgd": plots.style(0)["color"], "adam": plots.style(1)["color"],
                  "rmsprop": plots.style(2)["color"]}
    for fam, color in fam_colors.items():
        for case, marker in case_markers.items():
            sub = mlp[(mlp.family == fam) & (mlp.case == case)]
            ax.scatter(sub["first_grad_norm"], sub["step_per_lr"], color=color, marker=marker,
                       s=26, alpha=0.8)
    for fam, color in fam_colors.items():
        ax.scatter([], [], color=color, marker="o",
                   label={"sgd": "SGD (± momentum)", "adam": "Adam", "rmsprop": "RMSprop"}[fam])
    for case, marker in case_markers.items():
        ax.scatter([], [], color="gray", marker=marker, label=tex(labels[case].label))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"gradient norm $\|g\|$ at step 0")
    ax.set_ylabel(r"$\|\Delta w\|/(\eta\|w\|)$ at step 0")
    plots.legend_below(fig, *ax.get_legend_handles_labels())
    return fig


def optimizer_table(optimizers: dict[str, pd.DataFrame], P: Params) -> pd.DataFrame:
    """Per case and optimizer: diverged runs over the grid, where, the best learning rate
    at which no seed diverged and the final loss there."""
    outs, refs, labels = optimizer_outcomes(optimizers, P), references(P), cases(P)
    rows = []
    for key, out in outs.items():
        for opt in [SGD_OF[key], *ADAPTIVE]:
            sub = out[out.optimizer == opt]
            per_lr = sub.groupby("lr").agg(ndiv=("diverged", "sum"),
                                           med=("final", lambda s: s.dropna().median()))
            clean = per_lr[per_lr.ndiv == 0].dropna()
            best_lr = clean["med"].idxmin() if len(clean) else np.nan
            best = sub[(sub.lr == best_lr) & ~sub.diverged]["final"] if len(clean) else []
            rows.append({
                "configuration": labels[key].label, "optimizer": OPT_LABELS[opt],
                "diverged over the grid": f"{int(sub.diverged.sum())}/{len(sub)}",
                "diverged at": ", ".join(f"{lr:g}" for lr in per_lr.index[per_lr.ndiv > 0])
                or "–",
                "best lr (no seed diverged)": "–" if np.isnan(best_lr) else f"{best_lr:g}",
                "final loss at best lr": med_range(best),
                "learned nothing at": f"{refs[key]:.3g}"})
    return pd.DataFrame(rows)


def optimizer_numbers(optimizers: dict[str, pd.DataFrame], P: Params) -> dict:
    """The glued numbers of section 3: the grid, the first steps, each table cell."""
    mlp = _first_steps(optimizers, P)
    pair = mlp[mlp.family.isin(ADAPTIVE)].pivot_table(
        index=["case", "lr", "seed"], columns="family", values="first_update_ratio")
    adam_steps = mlp.loc[mlp.family == "adam", "step_per_lr"].dropna()
    sgd_steps = mlp.loc[mlp.family == "sgd", "step_per_lr"].replace(np.inf, np.nan).dropna()
    grads = mlp["first_grad_norm"].replace(np.inf, np.nan).dropna()
    numbers = {
        "opt_opt_lrs": ", ".join(f"{lr:g}" for lr in P.optimizer_lrs),
        "opt_weight_scale": f"{np.sqrt(2 / P.width):.2g} (He) to "
                            f"{P.deep_sigma_w / np.sqrt(P.width):.2g} "
                            f"(σ_w = {P.deep_sigma_w:g})",
        "opt_rms_over_adam": med_range((pair["rmsprop"] / pair["adam"]).dropna(), "{:.3g}"),
        "opt_adam_step_span": readable.number(adam_steps.max() / adam_steps.min(), 2),
        "opt_sgd_step_span": readable.number(sgd_steps.max() / sgd_steps.min(), 2),
        "opt_grad_span": readable.number(grads.max() / grads.min(), 2),
    }
    table, labels = optimizer_table(optimizers, P), cases(P)
    columns = {"div": "diverged over the grid", "best": "final loss at best lr",
               "bestlr": "best lr (no seed diverged)", "divat": "diverged at"}
    for key in optimizers:
        for opt in [SGD_OF[key], *ADAPTIVE]:
            row = table[(table.configuration == labels[key].label)
                        & (table.optimizer == OPT_LABELS[opt])]
            fam = "sgd" if opt == "momentum" else opt
            numbers.update({f"opt_{key}_{fam}_{tag}": row[col].iloc[0]
                            for tag, col in columns.items()})
    return numbers


BUDGET_LABELS = {"adam": "Adam", "momentum": "SGD + momentum"}


def budget_labels(budget: pd.DataFrame) -> dict[tuple, str]:
    """(optimizer, lr, init) of each long run -> its legend label."""
    keys = budget[["optimizer", "lr", "init"]].drop_duplicates().itertuples(index=False)
    return {tuple(k): (f"{BUDGET_LABELS[k[0]]}, lr {k[1]:g}"
                       + (", He init (healthy twin)" if k[2] == "he" else ""))
            for k in keys}


def budget_curves(budget: pd.DataFrame) -> pd.DataFrame:
    """Test loss of every long run at every logged step (NaN once it diverged)."""
    whole = budget[(budget.layer == 0) & budget.test_loss.notna()]
    return whole[["optimizer", "lr", "init", "seed", "step", "test_loss"]]


def fig_budget(budget: pd.DataFrame, P: Params) -> plt.Figure:
    """Test loss over the steps of the long runs of the deep network: Adam at each
    learning rate against the He-initialized twin, with the short budget marked."""
    curves, labels = budget_curves(budget), budget_labels(budget)
    fig, ax = plots.figure(1, 1, height=3.8)
    for i, (key, label) in enumerate(labels.items()):
        sub = curves[(curves.optimizer == key[0]) & (curves.lr == key[1])
                     & (curves.init == key[2])]
        piv = sub.pivot(index="step", columns="seed", values="test_loss")
        plots.band(ax, piv.index, piv, i, label)
    ax.axhline(references(P)["deep"], color="black", linestyle="--", linewidth=1,
               label="uniform prediction")
    ax.axvline(P.deep_steps, color="gray", linestyle=":", linewidth=1.2,
               label=f"{P.deep_steps} steps (section's grid)")
    ax.set_yscale("log")
    _log_formatters(ax)
    _decades(ax)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("test loss")
    plots.legend_below(fig, *ax.get_legend_handles_labels())
    return fig


def budget_numbers(budget: pd.DataFrame, P: Params) -> dict:
    """Adam's test loss on the deep network after the section's short budget and after
    the long one (best learning rate at the end), the twin's, and the verdict."""
    curves = budget_curves(budget)
    adam = curves[curves.optimizer == "adam"]
    end = adam[adam.step == adam.step.max()].groupby("lr").test_loss.median()
    best = end.idxmin()
    at = adam[adam.lr == best].groupby("step").test_loss
    short = at.median().loc[at.median().index[at.median().index <= P.deep_steps].max()]
    long = end.loc[best]
    twin = curves[curves.init == "he"]
    twin_end = twin[twin.step == twin.step.max()].test_loss.median()
    uniform = references(P)["deep"]
    learned = bool(long <= 0.9 * uniform)
    return {"opt_budget_steps": P.budget_steps, "opt_budget_lr": f"{best:g}",
            "opt_budget_short": readable.number(short, 3),
            "opt_budget_long": readable.number(long, 3),
            "opt_budget_twin": readable.number(twin_end, 3),
            "opt_budget_learned": (f"learns, given {P.budget_steps} steps" if learned else
                                   f"has not learned after {P.budget_steps} steps either")}


# --------------------------------------------------------------------------- 4. stopping


def factor_label(f: float) -> str:
    return "off" if f == 0 else f"k = {f:g}"


def false_alarms(out: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Stopped runs whose unstopped twin (same keys and seed, k = 0) did not diverge."""
    off = out[out.stop_factor == 0][[*keys, "seed", "diverged"]].rename(
        columns={"diverged": "would_diverge"})
    on = out[out.stop_factor > 0].merge(off, on=[*keys, "seed"])
    return on.assign(false_alarm=on.stopped & ~on.would_diverge)


def stopping_outcomes(stop_mlp: pd.DataFrame,
                      stop_rnn: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per run of the early-stopping sweeps (MLP by lr and threshold, RNN by threshold):
    the outcome with ``final`` (restored weights if stopped) and the threshold's label."""
    mlp = run_outcomes(stop_mlp, ["lr", "stop_factor"])
    mlp["final"] = mlp["final_test_loss"]
    rnn = run_outcomes(stop_rnn, ["stop_factor"])
    rnn["final"] = rnn["final_loss"]
    mlp["x"] = mlp["stop_factor"].map(factor_label)
    rnn["x"] = rnn["stop_factor"].map(factor_label)
    rnn["case"] = "rnn"
    return mlp, rnn


def safe_rnn_final(safe_rnn: pd.DataFrame) -> float:
    """Median final minibatch loss of the RNN at the safe learning rate."""
    return float(run_outcomes(safe_rnn)["final_loss"].median())


def fig_stopping(stop_mlp: pd.DataFrame, stop_rnn: pd.DataFrame, safe: pd.DataFrame,
                 safe_rnn: pd.DataFrame, P: Params) -> plt.Figure:
    """Final (or restored) loss against the early-stopping threshold, MLP and RNN."""
    mlp, rnn = stopping_outcomes(stop_mlp, stop_rnn)
    mlp_safe, rnn_safe = safe_final(safe), safe_rnn_final(safe_rnn)
    fig, axes = plots.figure(1, 2, height=3.6)
    order = [*P.stop_lrs, "rnn"]
    labels = {**{lr: f"MLP, lr {lr:g}" for lr in P.stop_lrs}, "rnn": f"RNN, lr {P.rnn_sgd_lr:g}"}
    plots.outcome_panel(axes[0], mlp, "x", "lr", {lr: labels[lr] for lr in P.stop_lrs},
                        references(P)["regression"], order, levels=[mlp_safe])
    axes[0].axhline(mlp_safe, color="gray", linestyle=":", linewidth=1.5)
    axes[0].set_ylabel("final loss (restored if stopped)")
    axes[0].set_title("regression MLP, plain SGD")
    plots.outcome_panel(axes[1], rnn, "x", "case", {"rnn": labels["rnn"]},
                        ADDING_BASELINE_MSE, order, levels=[rnn_safe])
    axes[1].axhline(rnn_safe, color="gray", linestyle=":", linewidth=1.5)
    axes[1].set_title("RNN, plain SGD")
    for ax in axes:
        ax.set_xlabel("stop threshold k")
        _decades(ax)
    plots.outcome_legend(
        fig, labels, order, NOTHING,
        extra=[mpl.lines.Line2D([], [], color="gray", linestyle=":", linewidth=1.5,
                                label=f"lr {P.safe_lr:g}, no stopping (median)")], ncol=3)
    _legend_below(fig)
    return fig


def _stop_rows(out: pd.DataFrame, alarms: pd.DataFrame, label, keys: list[str]) -> list[dict]:
    rows = []
    for key, g in out.groupby([*keys, "stop_factor"], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        f = key[-1]
        a = alarms
        for k, v in zip(keys, key[:-1], strict=True):
            a = a[a[k] == v]
        a = a[a.stop_factor == f]
        stopped = g[g.stopped]
        rows.append({
            "run": label(key), "threshold": factor_label(f),
            "diverged": f"{int(g.diverged.sum())}/{len(g)}",
            "stopped": f"{len(stopped)}/{len(g)}",
            "stop (or NaN) step": med_range(
                np.where(g.stopped, g.stopped_step, np.where(g.diverged, g.diverged_step,
                                                            np.nan)), "{:.0f}"),
            "false alarms": "–" if f == 0 else f"{int(a.false_alarm.sum())}/{len(a)}",
            "final loss": med_range(g.loc[~g.diverged, "final"])})
    return rows


def stopping_table(stop_mlp: pd.DataFrame, stop_rnn: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per run and threshold: diverged, stopped, when, false alarms and final loss."""
    mlp, rnn = stopping_outcomes(stop_mlp, stop_rnn)
    return pd.DataFrame(
        _stop_rows(mlp, false_alarms(mlp, ["lr"]), lambda k: f"MLP, lr {k[0]:g}", ["lr"])
        + _stop_rows(rnn, false_alarms(rnn, []), lambda k: f"RNN, lr {P.rnn_sgd_lr:g}", []))


def stopping_numbers(stop_mlp: pd.DataFrame, stop_rnn: pd.DataFrame, safe: pd.DataFrame,
                     safe_rnn: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of section 4."""
    mlp, rnn = stopping_outcomes(stop_mlp, stop_rnn)
    alarms = false_alarms(mlp, ["lr"])
    stopped_mlp = mlp[mlp.stopped]
    alarm_at = alarms[alarms.false_alarm].groupby("stop_factor").size()
    rnn_off = rnn[rnn.stop_factor == 0]
    rnn_on = rnn[rnn.stopped]
    peak = (stop_rnn[stop_rnn.stop_factor == 0].groupby("seed")["loss"]
            .apply(lambda s: s[np.isfinite(s)].max() / s.iloc[0]))
    return {
        "opt_stop_lrs": " and ".join(f"{lr:g}" for lr in P.stop_lrs),
        "opt_stop_factors": ", ".join(f"{f:g}" for f in P.stop_factors),
        "opt_stop_first_test": med_range(mlp["first_test_loss"]),
        "opt_stop_safe": f"{safe_final(safe):.3g}",
        "opt_stop_mlp_restored": med_range(stopped_mlp["final"]),
        "opt_stop_mlp_steps": med_range(stopped_mlp["stopped_step"], "{:.0f}"),
        "opt_stop_mlp_n": f"{len(stopped_mlp)} of {int((mlp.stop_factor > 0).sum())}",
        "opt_stop_mlp_alarms": f"{int(alarms.false_alarm.sum())}",
        "opt_stop_mlp_alarm_at": ", ".join(f"k = {f:g}" for f in alarm_at.index) or "none",
        "opt_stop_rnn_nan_step": med_range(rnn_off.loc[rnn_off.diverged, "diverged_step"],
                                           "{:.0f}"),
        "opt_stop_rnn_ndiv": f"{int(rnn_off.diverged.sum())}/{len(rnn_off)}",
        "opt_stop_rnn_stop_step": med_range(rnn_on["stopped_step"], "{:.0f}"),
        "opt_stop_rnn_restored": med_range(rnn_on["final"]),
        "opt_stop_rnn_first": med_range(rnn_off["first_loss"]),
        "opt_stop_rnn_safe": f"{safe_rnn_final(safe_rnn):.3g}",
        "opt_stop_rnn_peak": med_range(peak),
    }


# --------------------------------------------------------------------------- 5. summary

NO_REMEDY = "none"


def _rounds(costs: pd.DataFrame) -> dict[str, pd.Series]:
    """Per variant, its time ratio to no remedy in each round (no remedy itself: 1)."""
    ratios = {NO_REMEDY: pd.Series(1.0, index=costs["round"].unique())}
    for variant, g in costs.groupby("variant", sort=False):
        ratios[variant] = g.set_index("round")["ratio"]
    return ratios


def ratio_text(costs: pd.DataFrame, variant: str) -> str:
    """A variant's time per step over no remedy's, median [min, max] over the rounds."""
    return med_range(_rounds(costs)[variant], "{:.2f}")


def timing_numbers(costs: pd.DataFrame, P: Params) -> dict:
    """The timing's parameters and the ratios the text quotes."""
    return {"opt_timing_steps": P.timing_steps, "opt_timing_repeat": P.timing_repeat,
            "opt_time_noise": ratio_text(costs, "none, timed again"),
            "opt_time_adam": ratio_text(costs, "Adam"),
            "opt_time_sched": ratio_text(costs, "warmup + cosine"),
            "opt_time_stop": ratio_text(costs, "early stopping (checked every step)")}


def timing_table(costs: pd.DataFrame) -> pd.DataFrame:
    """Per variant: CPU seconds per step and the ratio to no remedy, over the rounds."""
    base = costs["step_seconds"] / costs["ratio"]  # each round's no-remedy time per step
    seconds = {NO_REMEDY: base.groupby(costs["round"]).first().median(),
               **costs.groupby("variant", sort=False)["step_seconds"].median().to_dict()}
    return pd.DataFrame({
        "variant": list(seconds),
        "CPU seconds per step (median over rounds)":
            [readable.number(s, 3) for s in seconds.values()],
        "ratio to none in the same round, median [min, max]":
            [ratio_text(costs, k) for k in seconds]})


def summary_table(costs: pd.DataFrame) -> pd.DataFrame:
    """What each remedy fixed here, what it did not, its time per step and what it adds."""
    def r(k):
        return ratio_text(costs, k)
    return pd.DataFrame([
        {"remedy": "L1 / L2 penalty",
         "what it fixed here": "nothing at usual strengths; divergence only when the shrink "
                               "erases the network",
         "what it did not fix": "too-large weights (NaN in the first steps), the large "
                                "learning rate at useful strengths",
         "time per step vs none": f"{r('L1 penalty')} / {r('L2 penalty')}",
         "new hyperparameters": "λ"},
        {"remedy": "decoupled weight decay",
         "what it fixed here": "with SGD the same as L2; with Adam (RNN) the exploding "
                               "gradient, by decaying the recurrent weights away",
         "what it did not fix": "any divergence within its time scale 1/(ηλ)",
         "time per step vs none": r("decoupled weight decay"),
         "new hyperparameters": "λ"},
        {"remedy": "warmup (+ decay)",
         "what it fixed here": "divergence from a too-large learning rate",
         "what it did not fix": "explosions built into the initialization",
         "time per step vs none": r("warmup + cosine"),
         "new hyperparameters": "warmup length, schedule"},
        {"remedy": "Adam / RMSprop",
         "what it fixed here": "NaN from huge gradients (bounded step)",
         "what it did not fix": "the exploding forward signal and the RNN's long-range "
                                "gradient; diverges at large η (RMSprop)",
         "time per step vs none": f"{r('Adam')} / {r('RMSprop')}",
         "new hyperparameters": "β₁, β₂, ε; η on a new scale"},
        {"remedy": "early stopping",
         "what it fixed here": "NaN replaced by the best weights so far; early alarm",
         "what it did not fix": "the model: restored weights ≈ the initial ones",
         "time per step vs none": r("early stopping (checked every step)"),
         "new hyperparameters": "threshold k, how often to check"},
    ])
