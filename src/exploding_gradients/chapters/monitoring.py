"""Monitoring: how early a spike detector warns of divergence and how often it flags a
spike that passes, where the NaN starts, the update-to-weight ratio, the per-layer
distributions over training, half-precision runs, and what watching costs.

The page shows its example loop (``train_and_watch``) and every measurement's call; this
module turns their results into the page's numbers, tables and figures.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from torch import nn

from .. import theory
from ..engine.params import Param
from ..monitor import detect_spikes
from ..study import plots, readable
from ..study.outcomes import k_of_n, spike_warnings, steps_only
from . import Chapter, Params
from ._shared import SEEDS, from_profile

CHAPTER = Chapter(
    "monitoring",
    (
        SEEDS,
        Param("depth", "int", 10, "hidden layers of the trained ReLU network", low=1, high=1000),
        Param("width", "int", 64, "width of the trained network", low=2, high=8192),
        from_profile(
            "steps", "int", "largest number of optimizer steps per training run", low=1, high=10**6
        ),
        Param(
            "warmup_steps", "int", 100, "steps of linear learning-rate warmup", low=0, high=10**6
        ),
        Param(
            "explode_lr",
            "float",
            0.6,
            "peak learning rate of the exploding runs (SGD with momentum 0.9)",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "healthy_lr",
            "float",
            0.01,
            "peak learning rate of their healthy twins",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "spiking_lrs",
            "list[float]",
            [0.15, 0.2, 0.25, 0.3],
            "peak learning rates in between, where runs spike and some recover (the "
            "detector's false alarms are counted on those)",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "detail_every",
            "int",
            2,
            "steps between per-layer samples of the whole-distribution run",
            low=1,
            high=10**6,
        ),
        Param(
            "scale_growth",
            "int",
            20,
            "good steps after which the fp16 runs' loss scaler doubles its scale",
            low=1,
            high=10**6,
        ),
        Param(
            "log_every",
            "int",
            10,
            "steps between per-layer samples and update ratios",
            low=1,
            high=10**6,
        ),
        Param(
            "spike_factor",
            "float",
            10.0,
            "the detector flags a gradient norm above this multiple of its running median",
            low=1.0,
            high=1e6,
        ),
        Param(
            "spike_window", "int", 20, "steps in the detector's running median", low=1, high=10**6
        ),
        Param(
            "factors",
            "list[float]",
            [3.0, 10.0, 100.0],
            "detector factors compared",
            low=1.0,
            high=1e6,
        ),
        from_profile(
            "demo_seeds", "int", "seeds of the plain-PyTorch example loop", low=1, high=1000
        ),
        from_profile(
            "fp16_seeds", "int", "seeds of the float16 runs with loss scaling", low=1, high=1000
        ),
        from_profile(
            "demo_steps", "int", "largest number of steps of the example loop", low=1, high=10**6
        ),
        Param(
            "demo_depth", "int", 8, "hidden layers of the example's nn.Sequential", low=1, high=1000
        ),
        Param(
            "demo_lr",
            "float",
            1.0,
            "peak learning rate of the example loop (SGD with momentum 0.9)",
            low=1e-8,
            high=100.0,
        ),
        Param(
            "timing_depth",
            "int",
            20,
            "hidden layers of the network whose step is timed",
            low=1,
            high=1000,
        ),
        Param("timing_width", "int", 64, "width of the timed network", low=2, high=8192),
        from_profile("timing_steps", "int", "steps of each timed run", low=1, high=10**6),
        from_profile(
            "timing_repeat",
            "int",
            "timed rounds of the monitoring cost (anomaly mode: half)",
            low=1,
            high=100,
        ),
        from_profile(
            "anomaly_steps",
            "int",
            "steps of each run timed under detect_anomaly",
            low=1,
            high=10**6,
        ),
    ),
    {
        "quick": dict(
            seeds=2,
            steps=50,
            fp16_seeds=1,
            demo_seeds=2,
            demo_steps=30,
            timing_steps=5,
            timing_repeat=2,
            anomaly_steps=2,
        ),
        "default": dict(
            seeds=5,
            steps=120,
            fp16_seeds=3,
            demo_seeds=5,
            demo_steps=60,
            timing_steps=40,
            timing_repeat=8,
            anomaly_steps=10,
        ),
        "full": dict(
            seeds=20,
            steps=300,
            fp16_seeds=10,
            demo_seeds=20,
            demo_steps=100,
            timing_steps=100,
            timing_repeat=20,
            anomaly_steps=30,
        ),
    },
)


# --------------------------------------------------------------------------- example loop

def broke(history: pd.DataFrame) -> bool:
    """Whether the example loop's run ended with a NaN/Inf loss or gradient norm."""
    last = history.iloc[-1]
    return not (math.isfinite(last["loss"]) and math.isfinite(last["grad_norm"]))


def demo_row(seed: int, history: pd.DataFrame, model: nn.Module, report: dict) -> dict:
    """One row of the example's table: where the run of ``seed`` broke, how early the
    detector flagged it, the layer the monitor named, and anomaly mode's ``report`` of
    the failing step (:func:`..monitor.anomaly_report`; empty if it did not break)."""
    last = history.iloc[-1]
    broken = broke(history)
    flags = history.step[history.flagged & (history.step < last["step"] if broken else True)]
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    where = last.get("first_nonfinite") if broken else None
    return {
        "seed": seed,
        "NaN/Inf at step": int(last["step"]) if broken else None,
        "in": ("loss" if not math.isfinite(last["loss"]) else "gradient") if broken else "",
        "first flag": int(flags.iloc[0]) if len(flags) else None,
        "warning (steps)": int(last["step"] - flags.iloc[0]) if broken and len(flags) else None,
        "monitor: first non-finite layer":
            f"Linear {linears.index(where) + 1} of {len(linears)} (model[{where}])"
            if isinstance(where, str) else "not recorded" if broken else "",
        "anomaly mode: raised in": report.get("function") or
            ("nothing raised" if broken else ""),
        "anomaly mode: forward line": report.get("forward_code", ""),
    }


def demo_numbers(demo: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the example loop and of anomaly mode (``demo``: the
    :func:`demo_row` of every seed)."""
    numbers = {"mon_demo_depth": P.demo_depth, "mon_demo_lr": f"{P.demo_lr:g}",
               "mon_demo_seeds": P.demo_seeds, "mon_demo_steps": P.demo_steps}
    broken = demo[demo["NaN/Inf at step"].notna()]
    warned = broken["warning (steps)"].dropna()
    numbers.update({
        "mon_demo_broken": f"{len(broken)}/{len(demo)}",
        "mon_demo_warned": f"{len(warned)}/{len(broken)}",
        "mon_demo_warn_median": f"{warned.median():.0f}" if len(warned) else "n/a",
        "mon_demo_warn_range": f"{warned.min():.0f} to {warned.max():.0f}" if len(warned)
        else "n/a"})
    located = broken["monitor: first non-finite layer"].str.startswith("Linear")
    numbers["mon_demo_located"] = f"{int(located.sum())}/{len(broken)}"
    layers = broken["monitor: first non-finite layer"][located].str.extract(r"Linear (\d+)")[0]
    distinct = sorted(set(layers), key=int)
    numbers["mon_demo_layers"] = ", ".join(distinct) or "none"
    numbers["mon_demo_layer_phrase"] = (
        "not recorded" if not distinct else
        f"always the same one, layer {distinct[0]}" if len(distinct) == 1 else
        "not always the same one, and never the first" if "1" not in distinct else
        "not always the same one")
    raised = broken["anomaly mode: raised in"].ne("nothing raised")
    numbers["mon_anomaly_raised"] = f"{int(raised.sum())}/{len(broken)}"
    functions = sorted(set(broken["anomaly mode: raised in"][raised]))
    numbers["mon_anomaly_functions"] = ", ".join(functions) or "none"
    lines = sorted(set(broken["anomaly mode: forward line"][raised]) - {""})
    numbers["mon_anomaly_lines"] = "; ".join(f"\"{c}\"" for c in lines) or "none"
    silent = broken[~raised]
    numbers["mon_anomaly_silent"] = (
        f"In the other {len(silent)} it raised nothing: there the gradient overflowed to Inf "
        "without producing a NaN, which anomaly mode does not look for."
        if len(silent) and (silent["in"] == "gradient").all() else
        f"In the other {len(silent)} it raised nothing." if len(silent) else "")
    return numbers


def demo_display(demo: pd.DataFrame):
    """The example's table as the page shows it (whole steps; "–" where nothing
    happened)."""
    whole = {c: (lambda v: readable.number(v, 3) if v == v and v is not None else "–")
             for c in ("NaN/Inf at step", "first flag", "warning (steps)")}
    return readable.table(demo, formats=whole)


def theory_numbers() -> dict:
    """The geometric estimate of the warning, for growth r = 10 from g0 = 1 with k = 10."""
    return {"mon_theory_lead": f"{theory.spike_warning_lead(10.0, 10.0, start=1.0):.0f}"}


# --------------------------------------------------------------------------- spike lead
# ``runs`` is the ``training`` sweep over ``lr`` (explode_lr and healthy_lr): its ``lr``
# column is the swept peak rate, ``step_lr`` the warmed-up rate each step used.

def labelled(runs: pd.DataFrame, P: Params) -> pd.DataFrame:
    """``runs`` with a ``run`` column: ``exploding`` (peak rate explode_lr), ``healthy``
    (healthy_lr) or ``spiking`` (the rates in between, ``spiking_lrs``)."""
    run = np.where(runs["lr"] == P.explode_lr, "exploding",
                   np.where(runs["lr"] == P.healthy_lr, "healthy", "spiking"))
    return runs.assign(run=run)


def factors(P: Params) -> list[float]:
    """The detector factors compared, the page's own included."""
    return sorted(set(P.factors) | {P.spike_factor})


def warnings_by_factor(runs: pd.DataFrame, P: Params) -> pd.DataFrame:
    """:func:`..study.outcomes.spike_warnings` per run and seed, for every factor."""
    runs = labelled(runs, P)
    return pd.concat([spike_warnings(runs, ["run", "lr"], factor=k, window=P.spike_window)
                      .assign(factor=k) for k in factors(P)], ignore_index=True)


def _span(s: pd.Series) -> str:
    """'median [min, max]' in whole steps, or '–'."""
    s = s.dropna()
    return f"{s.median():.0f} [{s.min():.0f}, {s.max():.0f}]" if len(s) else "–"


def lead_table(runs: pd.DataFrame, P: Params):
    """Per detector factor: warnings before divergence and flags on runs that did not
    diverge, as the page shows it."""
    warned = warnings_by_factor(runs, P)
    rows = []
    for k in factors(P):
        at = warned[warned.factor == k]
        bad = at[(at.run == "exploding") & (at.diverged_step >= 0)]
        calm = at[(at.run == "spiking") & (at.diverged_step < 0)]
        good = at[at.run == "healthy"]
        rows.append({"factor k": f"{k:g}",
                     "diverging runs flagged in time": k_of_n(bad.lead_first.notna()),
                     "warning, steps (first flag)": _span(bad.lead_first),
                     "warning, steps (final episode)": _span(bad.lead_episode),
                     "recovering runs flagged": k_of_n(calm.n_flags > 0),
                     "healthy runs flagged": k_of_n(good.n_flags > 0)})
    return readable.table(pd.DataFrame(rows))


def lead_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 1 (the detector with the page's factor)."""
    numbers = {"mon_depth": P.depth, "mon_width": P.width, "mon_seeds": P.seeds,
               "mon_steps": P.steps, "mon_warmup": P.warmup_steps, "mon_window": P.spike_window,
               "mon_explode_lr": f"{P.explode_lr:g}", "mon_healthy_lr": f"{P.healthy_lr:g}",
               "mon_factor": f"{P.spike_factor:g}"}
    warned = warnings_by_factor(runs, P)
    main = warned[warned.factor == P.spike_factor]
    bad = main[(main.run == "exploding") & (main.diverged_step >= 0)]
    has_lead = bad.lead_episode.notna().any()
    numbers.update({
        "mon_diverged": f"{len(bad)}/{P.seeds}",
        "mon_lead_first": f"{bad.lead_first.median():.0f}" if bad.lead_first.notna().any()
        else "n/a",
        "mon_lead_episode": f"{bad.lead_episode.median():.0f}" if has_lead else "n/a",
        "mon_lead_range": f"{bad.lead_episode.min():.0f} to {bad.lead_episode.max():.0f}"
        if has_lead else "n/a",
        "mon_warned": f"{bad.lead_first.notna().sum()}/{len(bad)}",
        "mon_streak": f"{bad.final_streak.median():.0f}" if len(bad) else "n/a",
        "mon_streak_range": f"{bad.final_streak.min():.0f} to {bad.final_streak.max():.0f}"
        if len(bad) else "n/a"})
    steps = steps_only(labelled(runs, P))
    exploding = steps[steps.run == "exploding"]
    last_finite = (exploding[np.isfinite(exploding.grad_norm)].sort_values("step")
                   .groupby("seed").grad_norm.last())
    last_finite = last_finite[last_finite.index.isin(bad.seed)]
    numbers["mon_last_norm"] = f"{last_finite.median():.1e}" if len(last_finite) else "n/a"
    causes = exploding.groupby("seed").cause.first()
    in_loss = causes[causes.isin(["nan_loss", "inf_loss"])]
    numbers["mon_loss_breaks"] = f"{len(in_loss)}/{len(bad)}"
    early_share = len(bad) and bad.lead_episode.median() > bad.final_streak.median() + 2
    numbers["mon_precursors"] = (
        "most of the warning came from earlier, smaller spikes: the gradient norm jumped "
        "above k times its median and fell back again before the final climb"
        if early_share else "the warning came from the final climb itself")
    good = main[main.run == "healthy"]
    numbers["mon_false"] = f"{(good.n_flags > 0).sum()}/{len(good)}"
    numbers["mon_healthy_diverged"] = f"{(good.diverged_step >= 0).sum()}/{len(good)}"
    numbers["mon_first_div"] = f"{bad.diverged_step.min():.0f}" if len(bad) else "n/a"
    return numbers


def false_alarm_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """The detector (the page's factor) on the runs at the rates in between: how many
    diverged, and how many of those that did not were flagged anyway, with the size of
    their largest spike (largest over median gradient norm)."""
    from ..study.outcomes import run_outcomes

    warned = warnings_by_factor(runs, P)
    main = warned[(warned.factor == P.spike_factor) & (warned.run == "spiking")]
    calm = main[main.diverged_step < 0]
    spikes = run_outcomes(labelled(runs, P), ["run", "lr"])
    spikes = spikes[(spikes.run == "spiking") & ~spikes.diverged]
    flagged = calm.n_flags > 0
    return {"mon_spiking_lrs": ", ".join(f"{x:g}" for x in P.spiking_lrs),
            "mon_spiking_n": len(main),
            "mon_spiking_diverged": k_of_n(main.diverged_step >= 0),
            "mon_spiking_flagged": k_of_n(flagged),
            "mon_spiking_spike": readable.number(spikes.spike.median(), 2)
            if len(spikes) else "–",
            "mon_spiking_verdict": "flagged every one of them" if len(calm) and flagged.all()
            else "flagged none of them" if not flagged.any()
            else "flagged some of them"}


def fig_lead(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Top: every seed's gradient norm (exploding, recovering and healthy runs) with the
    flagged steps and divergence; bottom: the warning before divergence per exploding
    seed, for each factor."""
    steps = steps_only(labelled(runs, P))
    warned = warnings_by_factor(runs, P)
    fig, (ax, low) = plots.figure(2, 1, height=7.0, gridspec_kw={"height_ratios": [1.6, 1]})
    colors = {"healthy": 0, "spiking": 2, "exploding": 3}
    names = {"healthy": f"healthy (lr {P.healthy_lr:g})",
             "spiking": f"in between (lr {P.spiking_lrs[0]:g} to {P.spiking_lrs[-1]:g})",
             "exploding": f"exploding (lr {P.explode_lr:g})"}
    for run in ["healthy", "spiking", "exploding"]:
        color = plots.style(colors[run])["color"]
        for j, (_, g) in enumerate(steps[steps.run == run].groupby(["lr", "seed"])):
            g = g.sort_values("step")
            finite = g[np.isfinite(g.grad_norm)]
            ax.plot(finite.step, finite.grad_norm, color=color, linewidth=0.9, alpha=0.7,
                    label=names[run] if j == 0 else None)
            d = int(g.diverged_step.iloc[0])
            if d >= 0 and len(finite):
                ax.plot([d], [finite.grad_norm.max()], marker="X", markersize=8, color=color,
                        linestyle="none")
    for j, (_, g) in enumerate(steps[steps.run != "healthy"].groupby(["lr", "seed"])):
        g = g.sort_values("step")
        d = int(g.diverged_step.iloc[0])
        before = g[g.step < d] if d >= 0 else g
        idx = detect_spikes(before.grad_norm.to_numpy(), P.spike_factor, P.spike_window)
        ax.plot(before.step.iloc[idx], before.grad_norm.iloc[idx], "o", markersize=4,
                markerfacecolor="none", color="black",
                label=f"flagged (k = {P.spike_factor:g})" if j == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("step (X: diverged)")
    ax.set_ylabel("total gradient norm")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    ks = factors(P)
    for i, k in enumerate(ks):
        sub = warned[(warned.factor == k) & (warned.run == "exploding")]
        jitter = np.linspace(-0.12, 0.12, len(sub)) if len(sub) > 1 else np.zeros(len(sub))
        low.plot(i + jitter, sub.lead_episode, "o", color=plots.style(3)["color"],
                 label="from the final episode" if i == 0 else None)
        low.plot(i + jitter, sub.lead_first, "s", markerfacecolor="none",
                 color=plots.style(0)["color"], label="from the first flag" if i == 0 else None)
    low.set_xticks(range(len(ks)), [f"{k:g}" for k in ks])
    low.set_xlabel("detector factor k")
    low.set_ylabel("warning (steps)")
    low.set_ylim(bottom=0)
    low.legend(loc="upper right")
    fig.subplots_adjust(hspace=0.75)
    return fig


# --------------------------------------------------------------------------- update ratio

def _ratios(runs: pd.DataFrame, P: Params) -> pd.DataFrame:
    """The sampled steps (those with an update ratio) of every run."""
    return steps_only(labelled(runs, P)).dropna(subset=["update_ratio"])


def ratio_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of Measurement 3."""
    ratios = _ratios(runs, P)
    start = min(P.warmup_steps, P.steps) // 2
    h = ratios[(ratios.step >= start) & (ratios.run == "healthy")].update_ratio
    exploding = ratios[ratios.run == "exploding"]
    last_before = exploding.sort_values("step").groupby("seed").update_ratio.last()
    early = exploding[exploding.step <= P.log_every]
    return {"mon_log_every": P.log_every,
            "mon_ratio_healthy": f"{h.median():.2g}",
            "mon_ratio_healthy_range": f"{h.min():.2g} to {h.max():.2g}",
            "mon_ratio_explode_last": f"{last_before.median():.2g}",
            "mon_ratio_explode_range": f"{last_before.min():.2g} to {last_before.max():.2g}",
            "mon_ratio_explode_early": f"{early.update_ratio.median():.2g}",
            "mon_ratio_from": f"{start}",
            "mon_ratio_sep": f"{last_before.median() / h.median():.0f}",
            "mon_ratio_rule": "within an order of magnitude of" if 1e-4 <= h.median() <= 1e-2
            else "more than an order of magnitude away from"}


def fig_ratio(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Update-to-weight ratio against step: healthy runs as a band, exploding ones each."""
    ratios = _ratios(runs, P)
    ratios = ratios[ratios.run != "spiking"]
    fig, ax = plots.figure(1, 1, height=4.2)
    healthy = ratios[ratios.run == "healthy"].pivot(index="step", columns="seed",
                                                    values="update_ratio")
    plots.band(ax, healthy.index, healthy, 0,
               f"healthy (lr {P.healthy_lr:g}), median and range")
    for j, (_, g) in enumerate(ratios[ratios.run == "exploding"].groupby("seed")):
        s = plots.style(3)
        ax.plot(g.step, g.update_ratio, color=s["color"], marker=s["marker"], markersize=3,
                linewidth=1, label=f"exploding (lr {P.explode_lr:g}), each seed"
                if j == 0 else None)
    ax.axhline(1e-3, color="black", linestyle="--", linewidth=1, label="rule of thumb $10^{-3}$")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(r"update-to-weight ratio $\|\Delta\theta\|/\|\theta\|$")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    return fig


# --------------------------------------------------------------------------- distributions
# ``detail`` is a ``training`` sweep over ``lr`` (explode_lr, healthy_lr), one seed, with
# ``layer_detail=True``: its per-layer rows hold quantiles, dead fractions, each layer's
# update ratio and the optimizer's moments.

HEATMAPS = (("grad_q99", "99th percentile of |weight gradient|", True),
            ("act_q99", "99th percentile of |pre-activation|", True),
            ("dead_fraction", "fraction of dead units", False),
            ("update_ratio", "update ÷ weight, per layer", True))


def _layers(detail: pd.DataFrame, P: Params, run: str) -> pd.DataFrame:
    runs = labelled(detail, P)
    return runs[(runs.layer > 0) & (runs.run == run)]


def fig_distribution(detail: pd.DataFrame, P: Params) -> plt.Figure:
    """The exploding run as layer x step heatmaps (the colorful dimension): four
    statistics of each hidden layer at each sampled step, on log scales where they span
    decades."""
    layers = _layers(detail, P, "exploding")
    fig, axes = plots.figure(2, 2, height=6.4, sharex=True, sharey=True)
    for ax, (key, title, log) in zip(axes.flat, HEATMAPS, strict=True):
        grid = layers.pivot_table(index="layer", columns="step", values=key)
        values = grid.to_numpy(dtype=float)
        if log:
            values = np.log10(np.where(values > 0, values, np.nan))
        mesh = ax.pcolormesh(grid.columns, grid.index, values, shading="nearest",
                             cmap="viridis")
        bar = fig.colorbar(mesh, ax=ax, pad=0.02)
        bar.set_label("log₁₀" if log else "fraction")
        ax.set_title(title, fontsize=10)
        ax.grid(False)
    for ax in axes[1]:
        ax.set_xlabel("step")
    for ax in axes[:, 0]:
        ax.set_ylabel("layer")
    fig.tight_layout()
    return fig


def distribution_numbers(detail: pd.DataFrame, P: Params) -> dict:
    """How the distributions of the exploding run moved against its healthy twin's: the
    growth of the largest 99th-percentile gradient over its first sample, the layer
    where it first grew a hundredfold, the dead fraction at the last sample before
    divergence, and the largest per-layer update ratio."""
    numbers = {"mon_detail_every": P.detail_every}
    for run in ("exploding", "healthy"):
        layers = _layers(detail, P, run)
        if layers.empty:
            continue
        top = layers.groupby("step").grad_q99.max()
        first = top.iloc[0]
        grown = layers.assign(g=layers.grad_q99 / layers.groupby("layer").grad_q99
                              .transform("first"))
        hundred = grown[grown.g >= 100].sort_values(["step", "layer"])
        last_step = layers.dropna(subset=["dead_fraction"]).step.max()
        dead = layers[layers.step == last_step].dead_fraction.mean()
        numbers.update({
            f"mon_{run}_grad_growth": readable.number(top.max() / first, 2),
            f"mon_{run}_first_layer": str(int(hundred.layer.iloc[0])) if len(hundred)
            else "none",
            f"mon_{run}_dead": f"{100 * dead:.0f}%",
            f"mon_{run}_dead_step": int(last_step),
            f"mon_{run}_max_update": readable.number(layers.update_ratio.max(), 2)})
    return numbers


# --------------------------------------------------------------------------- half precision
# ``fp16`` is a ``training`` sweep over ``lr`` (explode_lr, healthy_lr) with
# precision="fp16" and dynamic loss scaling.

def precision_rows(fp16: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Per run: the loss scaler's skips, their longest streak, the loss at the skipped
    steps over its median of the 20 steps before (median over skips), the smallest and
    the last loss scale, and whether the run diverged."""
    rows = []
    for (run, seed), g in steps_only(labelled(fp16, P)).groupby(["run", "seed"]):
        g = g.sort_values("step").reset_index(drop=True)
        skipped = g.skipped.fillna(0).to_numpy() == 1
        streak = longest = 0
        for hit in skipped:
            streak = streak + 1 if hit else 0
            longest = max(longest, streak)
        level = g.loss.rolling(20, min_periods=1).median().shift(1)
        jump = (g.loss / level)[skipped & (g.index > 0)]
        rows.append({"run": run, "seed": seed, "skips": int(skipped.sum()),
                     "longest streak": longest,
                     "loss at skips ÷ running median": float(jump.median())
                     if len(jump) else np.nan,
                     "smallest scale": float(g.loss_scale.min()),
                     "last scale": float(g.loss_scale.dropna().iloc[-1]),
                     "diverged": bool(g.diverged_step.iloc[0] >= 0)})
    return pd.DataFrame(rows)


def precision_numbers(fp16: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the half-precision section."""
    rows = precision_rows(fp16, P)
    numbers = {"mon_fp16_seeds": P.fp16_seeds, "mon_fp16_growth": P.scale_growth}
    for run in ("healthy", "exploding"):
        r = rows[rows.run == run]
        if r.empty:
            continue
        numbers.update({
            f"mon_fp16_{run}_skips": readable.number(r.skips.median(), 2),
            f"mon_fp16_{run}_streak": int(r["longest streak"].max()),
            f"mon_fp16_{run}_jump": readable.number(r["loss at skips ÷ running median"]
                                                    .median(), 2),
            f"mon_fp16_{run}_min_scale": readable.number(r["smallest scale"].min(), 3),
            f"mon_fp16_{run}_last_scale": readable.number(r["last scale"].median(), 3),
            f"mon_fp16_{run}_diverged": k_of_n(r.diverged)})
    return numbers


def fig_precision(fp16: pd.DataFrame, P: Params) -> plt.Figure:
    """float16 runs: the loss scale (top) and the loss (bottom) over steps, healthy and
    exploding, the scaler's skipped steps marked."""
    steps = steps_only(labelled(fp16, P))
    fig, (top, bottom) = plots.figure(2, 1, height=5.6, sharex=True)
    for run, i in (("healthy", 0), ("exploding", 3)):
        s = plots.style(i)
        for j, (_, g) in enumerate(steps[steps.run == run].groupby("seed")):
            g = g.sort_values("step")
            label = f"{run} (lr {g['lr'].iloc[0]:g})" if j == 0 else None
            top.plot(g.step, g.loss_scale, color=s["color"], linewidth=1, label=label,
                     drawstyle="steps-post")
            bottom.plot(g.step, g.loss, color=s["color"], linewidth=1, label=label)
            hit = g[g.skipped == 1]
            top.plot(hit.step, hit.loss_scale, "o", markersize=4, markerfacecolor="none",
                     color="black", label="skipped by the scaler" if j == 0 and i == 0
                     else None)
            bottom.plot(hit.step, hit.loss, "o", markersize=4, markerfacecolor="none",
                        color="black")
    top.set_yscale("log", base=2)
    top.set_ylabel("loss scale")
    bottom.set_yscale("log")
    bottom.set_ylabel("training loss")
    bottom.set_xlabel("step")
    top.legend(loc="upper center", bbox_to_anchor=(0.5, 1.32), ncol=3)
    return fig


# --------------------------------------------------------------------------- cost
# ``costs`` is {"monitoring": benchmark_monitoring(...), "anomaly":
# benchmark_anomaly_detection(...)} of :mod:`..study.timing`.

def cost_numbers(costs: dict, P: Params) -> dict:
    """The glued numbers of the cost section."""
    cost, anomaly = costs["monitoring"], costs["anomaly"]
    step_part = cost["every_step_overhead"]
    return {
        "mon_timing_depth": P.timing_depth, "mon_timing_width": P.timing_width,
        "mon_timing_repeat": P.timing_repeat, "mon_anomaly_repeat": anomaly["repeat"],
        "mon_cost_ratio": f"{cost['ratio']:.2f}",
        "mon_cost_pct": f"{100 * (cost['ratio'] - 1):.0f}",
        "mon_cost_range": f"{cost['ratio_min']:.2f} to {cost['ratio_max']:.2f}",
        "mon_cost_ms": f"{1e3 * cost['off_step_seconds']:.1f}",
        "mon_anomaly_ratio": f"{anomaly['ratio']:.1f}",
        "mon_anomaly_range": f"{anomaly['ratio_min']:.1f} to {anomaly['ratio_max']:.1f}",
        "mon_cost_verdict": "within" if cost["ratio"] <= 1.05 else "more than",
        "mon_cost_step": f"{100 * step_part:.1f}%",
        "mon_cost_step_note": "That is too little to tell apart from the rounds' scatter."
        if step_part < 0.005 else "",
        "mon_cost_sample": f"{cost['sample_cost']:.2f}",
        "mon_cost_interval": f"every {cost['interval_for_budget']} steps or less often"
        if math.isfinite(cost["interval_for_budget"]) else "at no interval"}


def fig_cost(costs: dict, P: Params) -> plt.Figure:
    """Each round's time per step relative to the unmonitored loop, and the median."""
    cost, anomaly = costs["monitoring"], costs["anomaly"]
    fig, ax = plots.figure(1, 1, height=2.8)
    for i, res in enumerate([cost, anomaly]):
        s = plots.style(i)
        ax.plot(res["ratios"], np.full(len(res["ratios"]), i), linestyle="none",
                marker=s["marker"], color=s["color"], alpha=0.6)
        ax.plot([res["ratio"]], [i], marker="|", markersize=22, color="black",
                linestyle="none")
    ax.axvline(1.0, color="gray", linewidth=1)
    ax.set_xscale("log")
    ticks = [t for t in [0.5, 1, 2, 5, 10, 20, 50] if
             min(cost["ratio_min"], 1) / 1.5 <= t <= anomaly["ratio_max"] * 1.5]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_yticks([0, 1], ["monitoring on", "detect_anomaly"])
    ax.set_ylim(-0.6, 1.6)
    ax.set_xlabel("time per step relative to the unmonitored loop")
    fig.tight_layout()
    return fig
