"""Spikes in long runs: skip the step or adapt the clip.

Two workloads that spike on their own: rare outlier minibatches (inputs scaled up) under
Adam, and plain SGD at a learning rate above the stability edge 2 / lambda_max.  Each is
trained without remedy and with each spike remedy of :mod:`..remedies` (one setting
each); the page shows the sweeps, this module reduces them: per run, the spikes it saw
and survived, how it ended (finished, diverged, stopped, or a divergence hidden by
skipping), the final test loss and the fractions of steps clipped or skipped.
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..engine.params import Param
from ..study import plots, readable
from ..study.outcomes import BLOW_UP, k_of_n, run_outcomes, skipping_hid, steps_only
from . import Chapter, Params
from ._shared import BATCH, SEEDS, from_profile

CHAPTER = Chapter(
    "spikes",
    (
        SEEDS,
        from_profile("steps", "int", "optimizer steps per run", low=10, high=10**6),
        Param("depth", "int", 4, "hidden layers of the ReLU network (He initialization)", low=1,
              high=100),
        Param("width", "int", 64, "units per hidden layer", low=2, high=4096),
        BATCH,
        Param("log_every", "int", 50, "steps between test-loss evaluations", low=1,
              high=10**6),
        Param("outlier_lr", "float", 1e-3, "Adam's learning rate on the outlier workload",
              low=1e-8, high=10.0),
        Param("outlier_prob", "float", 0.02,
              "probability that a minibatch is an outlier (its inputs scaled up)", low=0.0,
              high=1.0),
        Param("outlier_scale", "float", 30.0, "input multiplier of an outlier minibatch",
              low=1.0, high=1e6),
        Param("edge_ratios", "list[float]", [4.0, 8.0],
              "SGD learning rates as multiples of 2 / lambda_max at initialization (median "
              "over seeds): one the catapult survives, one it does not", low=0.01, high=1e3),
        Param("clip_norm", "float", 1.0, "threshold of fixed global-norm clipping", low=1e-6,
              high=1e6),
        Param("agc_factor", "float", 0.01, "AGC's clip factor lambda (Brock et al.'s default)",
              low=1e-6, high=10.0),
        Param("autoclip_percentile", "float", 90.0, "AutoClip's percentile of past norms",
              low=1.0, high=100.0),
        Param("zclip_z", "float", 2.5, "ZClip's z-score threshold (its authors' default)",
              low=0.1, high=100.0),
        Param("adagc_lambda", "float", 1.05, "AdaGC's lambda_rel (its authors' default)",
              low=0.1, high=100.0),
        Param("skip_sigma", "float", 6.0,
              "skip a step whose loss or gradient norm is this many standard deviations from "
              "the last 128 steps' mean (OLMo-core's default)", low=0.1, high=100.0),
        Param("stop_factor", "float", 10.0,
              "early stopping: stop when the loss exceeds this multiple of the first loss",
              low=1.0, high=1e6),
        Param("spike_factor", "float", 10.0,
              "a spike: a gradient norm above this multiple of the run's median (or NaN/Inf)",
              low=1.0, high=1e6),
        Param("recover_steps", "int", 20,
              "a spike is survived if the loss is back within 2x its level before the spike "
              "this many steps after it ends", low=1, high=10**6),
        Param("detail_every", "int", 5, "steps between per-layer samples of the moment run",
              low=1, high=10**6),
    ),
    {
        "quick": dict(seeds=2, steps=80),
        "default": dict(seeds=4, steps=250),
        "full": dict(seeds=10, steps=800),
    },
)

#: The remedies compared, in the order shown; each maps to its ``training`` overrides.
REMEDIES = ("none", "norm", "agc", "autoclip", "zclip", "adagc", "skip", "skip_nonfinite",
            "early_stop")
#: A spike episode ends after this many steps without a spike.
EPISODE_GAP = 5
def remedy_label(name: str, P: Params) -> str:
    """How the page names a remedy, with its setting."""
    return {"none": "none", "norm": f"norm clip at {P.clip_norm:g}",
            "agc": f"AGC, λ = {P.agc_factor:g}",
            "autoclip": f"AutoClip, p{P.autoclip_percentile:g}",
            "zclip": f"ZClip, z = {P.zclip_z:g}", "adagc": f"AdaGC, λ = {P.adagc_lambda:g}",
            "skip": f"skip (z > {P.skip_sigma:g})", "skip_nonfinite": "skip NaN/Inf",
            "early_stop": f"early stop ({P.stop_factor:g}×)"}[name]


def remedy_overrides(name: str, P: Params) -> dict:
    """The ``training`` overrides of remedy ``name``: every point sets the same keys, so
    the sweep's columns say which remedy a row ran."""
    point = {"clip": "none", "clip_threshold": 1.0, "skip": "none", "skip_threshold": 6.0,
             "stop_factor": 0.0}
    clip = {"norm": ("norm", P.clip_norm), "agc": ("agc", P.agc_factor),
            "autoclip": ("percentile", P.autoclip_percentile), "zclip": ("zclip", P.zclip_z),
            "adagc": ("adagc", P.adagc_lambda)}
    if name in clip:
        point["clip"], point["clip_threshold"] = clip[name]
    elif name == "skip":
        point["skip"], point["skip_threshold"] = "zscore", P.skip_sigma
    elif name == "skip_nonfinite":
        point["skip"] = "nonfinite"
    elif name == "early_stop":
        point["stop_factor"] = P.stop_factor
    return point


def remedy_grid(P: Params) -> list[dict]:
    """One sweep point per remedy, in :data:`REMEDIES` order."""
    return [remedy_overrides(name, P) for name in REMEDIES]


def labelled(runs: pd.DataFrame, P: Params) -> pd.DataFrame:
    """``runs`` (a sweep over :func:`remedy_grid`) with a ``remedy`` column."""
    keys = ["clip", "skip", "stop_factor"]
    names = {tuple(remedy_overrides(n, P)[k] for k in keys): n for n in REMEDIES}
    return runs.assign(remedy=[names[t] for t in zip(*(runs[k] for k in keys), strict=True)])


# --------------------------------------------------------------------------- per run

def spike_episodes(grad_norm: np.ndarray, factor: float, gap: int = EPISODE_GAP
                   ) -> list[tuple[int, int]]:
    """(first, last) index of each spike episode of a run's gradient norms: steps above
    ``factor`` times the median of the run's finite norms, or not finite; spikes less
    than ``gap`` steps apart belong to one episode."""
    g = np.asarray(grad_norm, dtype=float)
    finite = g[np.isfinite(g)]
    level = np.median(finite) if len(finite) else np.nan
    hit = np.flatnonzero(~np.isfinite(g) | (g > factor * level))
    episodes: list[tuple[int, int]] = []
    for i in hit:
        if episodes and i - episodes[-1][1] < gap:
            episodes[-1] = (episodes[-1][0], int(i))
        else:
            episodes.append((int(i), int(i)))
    return episodes


def survived(loss: np.ndarray, episode: tuple[int, int], recover: int, alive: int) -> bool:
    """Whether a run came back from a spike episode: it was still alive (not diverged,
    stopped or skipping everything; ``alive`` is the last such index) ``recover`` steps
    after the episode ended (or at its last step, if sooner), and its loss there (median
    of the 5 steps before) was at most twice the median of the 20 steps before the
    episode (the first loss, for an episode at the start)."""
    start, end = episode
    at = min(end + recover, len(loss) - 1)
    if alive < at:
        return False
    if at == end:  # the run's last step: nothing after it to judge but that it is finite
        return bool(np.isfinite(loss[end]))
    before = loss[max(0, start - 20):start] if start > 0 else loss[:1]
    after = loss[max(end + 1, at - 4):at + 1]
    return bool(np.isfinite(after).all() and np.median(after) <= 2 * np.median(before))


def run_table(runs: pd.DataFrame, P: Params, by: list[str]) -> pd.DataFrame:
    """One row per run (``by``, ``remedy`` and seed): ``ended`` (finished; diverged: the
    loss or gradient became NaN/Inf, or the final test loss is above :data:`.outcomes.BLOW_UP` times
    the first; stopped; or hidden: its last steps were mostly skipped), ``failed`` (diverged or
    hidden), ``spikes`` and ``survived`` (episodes of :func:`spike_episodes`),
    ``final_test_loss`` (NaN when it failed), ``clipped`` and ``skipped`` (fractions of
    its steps)."""
    runs = labelled(runs, P)
    keys = [*by, "remedy"]
    outcomes = run_outcomes(runs, keys).set_index([*keys, "seed"])
    rows = []
    for key, g in steps_only(runs).groupby([*keys, "seed"], sort=False):
        g = g.sort_values("step")
        o = outcomes.loc[key]
        skipped = g["skipped"].fillna(0).to_numpy()
        # the last row makes no update
        hidden = not o["diverged"] and skipping_hid(skipped[:-1])
        blown = not o["stopped"] and o["final_test_loss"] > BLOW_UP * o["first_test_loss"]
        ended = ("diverged" if o["diverged"] or (blown and not hidden) else
                 "stopped" if o["stopped"] else "hidden" if hidden else "finished")
        alive = len(g) - 1
        if hidden:  # alive until the skipping took over (the last row makes no update)
            taken = np.flatnonzero(skipped[:-1] == 0)
            alive = int(taken[-1]) if len(taken) else 0
        elif ended != "finished":
            alive = len(g) - 2  # its last row is the failure (or the restored weights)
        loss = g["loss"].to_numpy(dtype=float)
        episodes = spike_episodes(g["grad_norm"].to_numpy(dtype=float), P.spike_factor)
        rows.append({
            **dict(zip([*keys, "seed"], key, strict=True)), "ended": ended,
            "failed": ended in ("diverged", "hidden"),
            "spikes": len(episodes),
            "survived": sum(survived(loss, e, P.recover_steps, alive) for e in episodes),
            "first_test_loss": o["first_test_loss"],
            "final_test_loss": np.nan if ended in ("diverged", "hidden")
            else o["final_test_loss"],
            "clipped": float(g["clipped"].fillna(0).mean()),
            "skipped": float(skipped.mean())})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- summaries

def _ended(g: pd.DataFrame) -> str:
    """'4 finished', '3 hidden, 1 diverged', ... in a fixed order."""
    counts = g["ended"].value_counts()
    return ", ".join(f"{counts[k]} {k}" for k in ("finished", "stopped", "diverged", "hidden")
                     if k in counts)


def _pct(x: float) -> str:
    """A fraction as a percentage with two significant digits (at most 100%)."""
    v = 100 * x
    return "0" if v == 0 else f"{v:.0f}%" if v >= 10 else f"{v:.2g}%"


def summary_table(table: pd.DataFrame, P: Params, by: list[str], reference: pd.Series):
    """Per group and remedy, as the page shows it: spikes seen and survived (over all
    seeds), how the runs ended, the final test loss relative to ``reference`` (the
    median clean run's, indexed like the groups; median [min, max] of the runs that did
    not fail) and the fractions of steps clipped and skipped (mean over seeds)."""
    rows = []
    for key, g in table.groupby([*by, "remedy"], sort=False):
        group = key[:-1] if len(by) > 1 else key[0]
        ref = reference.loc[group]
        ok = g["final_test_loss"].dropna() / ref
        rows.append({**dict(zip(by, key[:-1], strict=True)),
                     "remedy": remedy_label(key[-1], P),
                     "spikes survived": f"{int(g.survived.sum())} of {int(g.spikes.sum())}",
                     "runs": _ended(g),
                     "final test loss ÷ clean": _med_range(ok),
                     "clipped": _pct(g.clipped.mean()), "skipped": _pct(g.skipped.mean())})
    return pd.DataFrame(rows)


def _med_range(values: pd.Series) -> str:
    if values.empty:
        return "–"
    if len(values) == 1:
        return readable.number(values.iloc[0], 2)
    return (f"{readable.number(values.median(), 2)} [{readable.number(values.min(), 2)}, "
            f"{readable.number(values.max(), 2)}]")


def outlier_reference(table: pd.DataFrame) -> pd.Series:
    """The clean runs' median final test loss without remedy, for every group."""
    clean = table[(table.outlier_prob == 0) & (table.remedy == "none")]
    value = clean["final_test_loss"].median()
    return pd.Series(value, index=sorted(table.outlier_prob.unique()))


def edge_reference(table: pd.DataFrame) -> pd.Series:
    """The median final test loss of the runs without remedy at the smallest rate."""
    lowest = table[table.ratio == table.ratio.min()]
    value = lowest[lowest.remedy == "none"]["final_test_loss"].median()
    return pd.Series(value, index=sorted(table.ratio.unique()))


def with_ratio(edge: pd.DataFrame, lr_edge: float) -> pd.DataFrame:
    """The edge sweep with ``ratio`` = lr / (2 / lambda_max), rounded as the grid was."""
    return edge.assign(ratio=(edge["lr"] / lr_edge).round(3))


def outlier_display(table: pd.DataFrame, P: Params):
    """The outlier workload's table (rows with outliers only; the clean twin's losses are
    the reference)."""
    summary = summary_table(table, P, ["outlier_prob"], outlier_reference(table))
    spiky = summary[summary.outlier_prob == P.outlier_prob].drop(columns="outlier_prob")
    return readable.table(spiky)


def edge_display(table: pd.DataFrame, P: Params):
    """The edge workload's table, one block per learning rate."""
    summary = summary_table(table, P, ["ratio"], edge_reference(table))
    summary.insert(0, "lr × λ/2", summary.pop("ratio").map(lambda r: f"{r:g}"))
    return readable.table(summary)


# --------------------------------------------------------------------------- numbers

def outlier_numbers(table: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the outlier workload."""
    ref = outlier_reference(table).iloc[0]
    spiky = table[table.outlier_prob == P.outlier_prob]
    clean = table[table.outlier_prob == 0]

    def ratio(frame, name):
        return frame[frame.remedy == name]["final_test_loss"].median() / ref

    numbers = {"spk_outlier_lr": f"{P.outlier_lr:g}", "spk_outlier_prob": f"{P.outlier_prob:g}",
               "spk_outlier_scale": f"{P.outlier_scale:g}", "spk_seeds": P.seeds,
               "spk_steps": P.steps, "spk_depth": P.depth, "spk_width": P.width,
               "spk_clean_loss": readable.number(ref, 3)}
    for name in REMEDIES:
        numbers[f"spk_out_{name}_ratio"] = readable.number(ratio(spiky, name), 2)
        numbers[f"spk_clean_{name}_ratio"] = readable.number(ratio(clean, name), 2)
        sub = spiky[spiky.remedy == name]
        numbers[f"spk_out_{name}_clipped"] = _pct(sub.clipped.mean())
        numbers[f"spk_out_{name}_skipped"] = _pct(sub.skipped.mean())
        numbers[f"spk_out_{name}_spikes"] = f"{int(sub.survived.sum())} of {int(sub.spikes.sum())}"
    none = spiky[spiky.remedy == "none"]
    numbers["spk_out_spikes_per_run"] = readable.number(none.spikes.median(), 2)
    adaptive = spiky[spiky.remedy.isin(["autoclip", "zclip"])]
    numbers["spk_out_adaptive_clipped"] = _pct(adaptive.clipped.max())
    clip_rules = ["norm", "agc", "autoclip", "zclip", "adagc"]
    best = {n: ratio(spiky, n) for n in clip_rules}
    numbers["spk_out_clip_range"] = (f"{readable.number(min(best.values()), 2)} to "
                                     f"{readable.number(max(best.values()), 2)}")
    numbers["spk_out_failed"] = int(spiky.failed.sum())
    return numbers


def edge_numbers(table: pd.DataFrame, lr_edge: float, sharp: pd.DataFrame, P: Params) -> dict:
    """The glued numbers of the edge workload (``sharp``: the ``sharpness`` table at
    initialization, one row per seed)."""
    lam = sharp["lambda_max"]
    numbers = {"spk_lr_edge": readable.number(lr_edge, 3),
               "spk_readout_share": f"{100 * sharp['readout_share'].median():.0f}%",
               "spk_lam_range": f"{readable.number(lam.min(), 3)} to "
                                f"{readable.number(lam.max(), 3)}",
               "spk_edge_low": f"{min(P.edge_ratios):g}",
               "spk_edge_high": f"{max(P.edge_ratios):g}"}
    for i, r in enumerate(sorted(P.edge_ratios)):
        at = table[table.ratio == round(r, 3)]
        for name in REMEDIES:
            sub = at[at.remedy == name]
            tag = f"spk_edge{i}_{name}"
            numbers[f"{tag}_ended"] = _ended(sub)
            numbers[f"{tag}_failed"] = k_of_n(sub.failed)
            numbers[f"{tag}_skipped"] = _pct(sub.skipped.mean())
            numbers[f"{tag}_clipped"] = _pct(sub.clipped.mean())
    high = table[table.ratio == round(max(P.edge_ratios), 3)]
    low = table[table.ratio == round(min(P.edge_ratios), 3)]
    skips = high[high.remedy.isin(["skip", "skip_nonfinite"])]
    numbers["spk_hidden"] = k_of_n(skips.ended == "hidden")
    numbers["spk_hidden_skip_rate"] = _pct(skips[skips.ended == "hidden"].skipped.median()) \
        if (skips.ended == "hidden").any() else "–"
    stop = low[low.remedy == "early_stop"]
    numbers["spk_stop_low"] = k_of_n(stop.ended == "stopped")
    none = low[low.remedy == "none"]
    numbers["spk_none_low_survived"] = f"{int(none.survived.sum())} of {int(none.spikes.sum())}"
    none_failed = high[high.remedy == "none"].failed
    rescued = high[high.ended == "finished"]
    names = [n for n in REMEDIES if n != "none" and (rescued.remedy == n).sum() == P.seeds]
    numbers["spk_edge_rescuers"] = _and([SHORT[n] for n in names]) if none_failed.all() \
        else "no remedy (not every run diverged without one)"
    return numbers


#: Remedy names in running text.
SHORT = {"none": "no remedy", "norm": "norm clipping", "agc": "AGC", "autoclip": "AutoClip",
         "zclip": "ZClip", "adagc": "AdaGC", "skip": "z-score skipping",
         "skip_nonfinite": "NaN/Inf skipping", "early_stop": "early stopping"}


def _and(words: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'; 'none' for no words."""
    if not words:
        return "none"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def robust_numbers(outlier_table: pd.DataFrame, edge_table: pd.DataFrame, P: Params,
                   tolerance: float = 1.25) -> dict:
    """The remedies that finished every run of both workloads (with spikes) with a median
    final loss within ``tolerance`` of the reference, and that cost at most that much on
    the clean runs: the page's rule of thumb rests on this list."""
    spiky = outlier_table[outlier_table.outlier_prob == P.outlier_prob]
    clean = outlier_table[outlier_table.outlier_prob == 0]
    refs = [(spiky, outlier_reference(outlier_table).iloc[0]),
            (clean, outlier_reference(outlier_table).iloc[0])]
    refs += [(edge_table[edge_table.ratio == r], edge_reference(edge_table).iloc[0])
             for r in sorted(edge_table.ratio.unique())]
    good = []
    for name in REMEDIES:
        ok = True
        for frame, ref in refs:
            runs = frame[frame.remedy == name]
            ok &= bool((runs.ended == "finished").all()) and \
                runs.final_test_loss.median() <= tolerance * ref
        if ok:
            good.append(name)
    return {"spk_robust": _and([SHORT[n] for n in good]),
            "spk_robust_n": len(good), "spk_tolerance": f"{tolerance:g}"}


def moment_numbers(moments: pd.DataFrame, P: Params) -> dict:
    """What the outlier minibatches did to Adam's moments, measured against the run with
    ZClip (same seed, same minibatches): the median over the sampled steps after the
    first outlier, and over layers, of the ratio of their second moments (sqrt(v_hat));
    the largest ratio of their update-to-weight ratios within ``recover_steps`` after an
    outlier (the burst the first moment carries), and the median ratio later than that
    (the smaller steps an inflated second moment leaves)."""
    runs = labelled(moments, P)
    layers = runs[runs.layer > 0]
    wide = layers.pivot_table(index=["step", "layer"], columns="remedy",
                              values=["moment2", "update_ratio"]).dropna()
    hits = steps_only(runs)
    hits = np.sort(hits[(hits.remedy == "none") & (hits.outlier == 1)].step.unique())
    if not len(hits) or wide.empty:
        return {"spk_mom_inflation": "–", "spk_mom_burst": "–", "spk_mom_quiet": "–",
                "spk_mom_first": "–"}
    steps = wide.index.get_level_values("step").to_numpy()
    since = steps - hits[np.maximum(np.searchsorted(hits, steps, side="right") - 1, 0)]
    after = steps > hits[0]
    m2 = wide["moment2"]["none"] / wide["moment2"]["zclip"]
    upd = wide["update_ratio"]["none"] / wide["update_ratio"]["zclip"]
    burst = upd[after & (since <= P.recover_steps)]
    quiet = upd[after & (since > P.recover_steps)]
    return {"spk_mom_inflation": readable.number(m2[after].median(), 2),
            "spk_mom_burst": readable.number(burst.max(), 2) if len(burst) else "–",
            "spk_mom_quiet": readable.number(quiet.median(), 2) if len(quiet) else "–",
            "spk_mom_first": int(hits[0])}


# --------------------------------------------------------------------------- figures

def _dot_panel(ax: plt.Axes, table: pd.DataFrame, column: str, series: list, labels: dict,
               reference: float, P: Params, lo: float, hi: float) -> None:
    """Final test loss / ``reference`` per remedy (rows) and seed (dots), one offset
    series per value of ``column``; failed runs as crosses at the right edge ``hi``,
    stopped runs as open squares.  Log x axis from ``lo`` to ``hi``."""
    names = list(REMEDIES)
    for j, key in enumerate(series):
        s = plots.style(j)
        offset = (j - (len(series) - 1) / 2) * 0.3
        sub = table[table[column] == key]
        for i, name in enumerate(names):
            r = sub[sub.remedy == name]
            y = np.full(len(r), len(names) - 1 - i - offset)
            v = (r["final_test_loss"] / reference).clip(upper=hi / 1.3).to_numpy()
            failed = r["failed"].to_numpy()
            stop = (r["ended"] == "stopped").to_numpy()
            ok = ~failed & ~stop
            ax.scatter(v[ok], y[ok], color=s["color"], marker=s["marker"], s=22, alpha=0.8,
                       zorder=3)
            ax.scatter(v[stop], y[stop], marker="s", s=40, facecolors="none",
                       edgecolors=s["color"], zorder=3)
            ax.scatter(np.full(failed.sum(), hi / 1.12), y[failed], color=s["color"],
                       marker="X", s=55, zorder=4, clip_on=False)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_yticks(range(len(names)), [remedy_label(n, P) for n in reversed(names)])
    ax.grid(axis="y", alpha=0)
    ax.xaxis.set_major_locator(mpl.ticker.LogLocator(subs=(1.0, 3.0)))
    ax.xaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    handles = [mpl.lines.Line2D([], [], color=plots.style(j)["color"],
                                marker=plots.style(j)["marker"], linestyle="none",
                                label=labels[k]) for j, k in enumerate(series)]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)


def fig_outcomes(outliers: pd.DataFrame, edge: pd.DataFrame, P: Params) -> plt.Figure:
    """Final test loss per remedy and seed relative to the run without spikes and
    without remedy: left, with and without outlier minibatches (Adam); right, plain SGD
    at the two learning rates above the edge.  ``outliers`` and ``edge`` are
    :func:`run_table` s."""
    fig, (left, right) = plots.figure(1, 2, height=5.6, sharey=True,
                                      gridspec_kw={"wspace": 0.08})
    lo, hi = 0.5, 60.0
    _dot_panel(left, outliers, "outlier_prob", [0.0, P.outlier_prob],
               {0.0: "clean minibatches",
                P.outlier_prob: f"{P.outlier_prob:g} of them × {P.outlier_scale:g}"},
               outlier_reference(outliers).iloc[0], P, lo, hi)
    ratios = sorted(edge.ratio.unique())
    _dot_panel(right, edge, "ratio", ratios, {r: f"lr = {r:g} × 2/λ" for r in ratios},
               edge_reference(edge).iloc[0], P, lo, hi)
    left.set_title("outlier minibatches, Adam")
    right.set_title("above the edge, SGD")
    left.set_xlabel("final test loss ÷ clean, no remedy")
    right.set_xlabel(f"… ÷ no remedy at {min(ratios):g} × 2/λ")
    right.tick_params(axis="y", left=False)
    marks = [mpl.lines.Line2D([], [], color="gray", marker="X", linestyle="none",
                              markersize=8, label="diverged or hidden"),
             mpl.lines.Line2D([], [], color="gray", marker="s", markerfacecolor="none",
                              linestyle="none", markersize=7, label="stopped early")]
    fig.legend(handles=marks, loc="lower center", bbox_to_anchor=(0.55, 1.0), ncol=2)
    return fig


def fig_traces(edge: pd.DataFrame, P: Params, seed: int = 0) -> plt.Figure:
    """Above the edge, one seed: the gradient norm without remedy, with norm clipping and
    with skipping (top), and the share of each window of steps that skipping skipped
    (bottom): it climbs to every step."""
    runs = steps_only(labelled(edge, P))
    high = runs[(runs.ratio == round(max(P.edge_ratios), 3)) & (runs.seed == seed)]
    fig, (top, bottom) = plots.figure(2, 1, height=6.0, sharex=True)
    shown = ["none", "norm", "skip", "skip_nonfinite"]
    for i, name in enumerate(shown):
        g = high[high.remedy == name].sort_values("step")
        s = plots.style(i)
        finite = g[np.isfinite(g.grad_norm)]
        top.plot(finite.step, finite.grad_norm, color=s["color"], label=remedy_label(name, P),
                 linewidth=1.2, linestyle="-" if i < 2 else "--")
        if name.startswith("skip"):
            rate = g.skipped.fillna(0).rolling(20, min_periods=1).mean()
            bottom.plot(g.step, rate, color=s["color"], linestyle="--",
                        label=remedy_label(name, P))
    top.set_yscale("log")
    top.set_ylabel("gradient norm")
    top.legend(loc="upper right", ncol=2)
    bottom.set_ylabel("steps skipped\n(last 20 steps)")
    bottom.set_xlabel("step")
    bottom.set_ylim(-0.05, 1.05)
    return fig


def fig_moments(moments: pd.DataFrame, P: Params) -> plt.Figure:
    """Adam's second moment (top) and each update's size (bottom), per layer, over the
    steps of one run with outlier batches: without remedy and with ZClip; the outlier
    steps dashed."""
    runs = labelled(moments, P)
    steps = steps_only(runs)
    fig, (top, bottom) = plots.figure(2, 1, height=6.0, sharex=True)
    for name in ["none", "zclip"]:
        s = plots.style(0 if name == "none" else 2)
        layers = runs[(runs.layer > 0) & (runs.remedy == name)]
        for j, (_, g) in enumerate(layers.groupby("layer")):
            g = g.dropna(subset=["moment2"]).sort_values("step")
            label = remedy_label(name, P) if j == 0 else None
            top.plot(g.step, g.moment2, color=s["color"], linewidth=1, label=label)
            bottom.plot(g.step, g.update_ratio, color=s["color"], linewidth=1, label=label)
    hits = steps[(steps.remedy == "none") & (steps.outlier == 1)].step
    for ax in (top, bottom):
        for t in hits:
            ax.axvline(t, color="0.6", linestyle="--", linewidth=0.8, zorder=0)
        ax.set_yscale("log")
    top.set_ylabel("√v̂ (RMS, per layer)")
    bottom.set_ylabel("update ÷ weight\n(per layer)")
    bottom.set_xlabel("step (dashed: outlier minibatches)")
    plots.log_axis(top)
    plots.log_axis(bottom)
    handles, names = top.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
    return fig


def setup_numbers(P: Params) -> dict:
    """The settings the page's prose names."""
    return {"spk_factor": f"{P.spike_factor:g}", "spk_recover": P.recover_steps,
            "spk_batch": P.batch_size, "spk_clip_norm": f"{P.clip_norm:g}",
            "spk_agc": f"{P.agc_factor:g}", "spk_autoclip": f"{P.autoclip_percentile:g}",
            "spk_zclip": f"{P.zclip_z:g}", "spk_adagc": f"{P.adagc_lambda:g}",
            "spk_skip_sigma": f"{P.skip_sigma:g}", "spk_stop_factor": f"{P.stop_factor:g}"}
