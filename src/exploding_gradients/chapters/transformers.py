"""Transformers: pre-LN against post-LN at initialization (Xiong et al. 2020), learning-rate
warmup in training (Xiong et al.; Liu et al. 2020), and attention-logit growth with its cure
by QK-layernorm (Wortsman et al. 2023).

The page runs its measurements (a ``signal_propagation`` sweep over depths and two
``training`` sweeps) in visible cells; this module turns their tables into the page's
numbers, tables and figures.
"""

from __future__ import annotations

import math

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import theory
from ..activations import ACTIVATIONS
from ..engine.params import Param
from ..init import SCHEMES
from ..study import plots
from ..study.growth import log_slope
from ..study.ledger import parse_number
from ..study.outcomes import constant_output_loss, k_of_n, med_range, run_outcomes
from ..study.readable import number, table
from . import Chapter, Params
from ._shared import SEEDS, from_profile

CHAPTER = Chapter(
    "transformers",
    (
        SEEDS,
        from_profile("depths", "list[int]", "numbers of blocks compared at initialization",
                     low=1, high=1000),
        from_profile("width", "int", "dimensions of the residual stream", low=2, high=8192),
        Param("heads", "int", 4, "attention heads (a divisor of width)", low=1, high=1024),
        Param("seq_len", "int", 8, "tokens per sequence", low=2, high=4096),
        Param("batch_size", "int", 32, "sequences per batch (at initialization and in training)",
              low=2, high=65536),
        Param("activation", "str", "gelu", "nonlinearity of the feed-forward layers",
              choices=tuple(ACTIVATIONS)),
        Param("init", "str", "xavier", "initialization of every weight (Xiong et al.: Xavier)",
              choices=tuple(s for s in SCHEMES if s != "lsuv")),
        from_profile("train_seeds", "int", "seeds per training configuration", low=1, high=1000),
        from_profile("train_depth", "int", "blocks of the trained transformers", low=1,
                     high=1000),
        from_profile("train_steps", "int", "Adam steps per training run", low=2, high=10**6),
        from_profile("long_steps", "int",
                     "Adam steps of the longer runs at the rate where post-LN fails",
                     low=2, high=10**7),
        from_profile("warmup_steps", "int", "steps of linear learning-rate warmup, when used",
                     low=1, high=10**6),
        Param("vocab", "int", 8, "token values of the sorting task", low=2, high=65536),
        Param("n_train", "int", 1024, "training sequences", low=1, high=10**7),
        Param("warmup_lrs", "list[float]", [0.01, 0.03, 0.1],
              "Adam learning rates of the warmup comparison", low=1e-8, high=100.0),
        Param("qk_lrs", "list[float]", [0.01, 0.03, 0.1, 0.3],
              "Adam learning rates of the QK-layernorm comparison (pre-LN, with warmup)",
              low=1e-8, high=100.0),
    ),
    {
        "quick": dict(seeds=1, depths=[2, 4], width=16, train_seeds=1, train_depth=2,
                      train_steps=6, long_steps=12, warmup_steps=2),
        "default": dict(seeds=4, depths=[2, 4, 8, 16, 32, 64], width=32, train_seeds=3,
                        train_depth=4, train_steps=50, long_steps=120, warmup_steps=12),
        "full": dict(seeds=20, depths=[2, 4, 8, 16, 32, 64, 128, 256], width=128,
                     train_seeds=10, train_depth=12, train_steps=2000, long_steps=6000,
                     warmup_steps=500),
    },
)

POSITIONS = ("post", "pre")
POSITION_LABELS = {"post": "post-LN", "pre": "pre-LN"}
#: Every trained configuration (:func:`arm`) and its label; its place here is its series
#: (color, marker) in every figure.
ARMS = {"post_cold": "post-LN, no warmup", "post_warm": "post-LN, warmup",
        "pre_cold": "pre-LN, no warmup", "pre_warm": "pre-LN, warmup",
        "pre_warm_qk": "pre-LN, warmup, QK-layernorm"}
WARMUP_ARMS = ("post_cold", "post_warm", "pre_cold", "pre_warm")
QK_ARMS = ("pre_warm", "pre_warm_qk")
#: Fraction of the logged steps whose mean loss is a run's final loss.
TAIL = 0.1
#: A run failed when it diverged or ended above this fraction of the chance loss.
FAILED = 0.9


# --------------------------------------------------------------------------- shared

def signed(text: str) -> str:
    """``text`` with typographic minus signs."""
    return text.replace("-", "−")


def chance_loss(P: Params) -> float:
    """Cross-entropy of a uniform prediction of every token of the sorting task: ln(vocab)."""
    return constant_output_loss({"architecture": "transformer", "seq_len": P.seq_len,
                                 "vocab": P.vocab, "n_train": P.n_train})


def setup_numbers(P: Params) -> dict:
    """The parameters the page quotes."""
    return {"tf_seeds": P.seeds, "tf_width": P.width, "tf_heads": P.heads,
            "tf_seq_len": P.seq_len, "tf_depth_min": min(P.depths),
            "tf_depth_max": max(P.depths), "tf_train_seeds": P.train_seeds,
            "tf_train_depth": P.train_depth, "tf_train_steps": P.train_steps,
            "tf_long_steps": P.long_steps,
            "tf_warmup": P.warmup_steps, "tf_vocab": P.vocab,
            "tf_chance": f"{chance_loss(P):.2f}", "tf_fail_line": f"{FAILED * chance_loss(P):.2f}"}


# --------------------------------------------------------------------------- 1. initialization

def last_blocks(at_init: pd.DataFrame) -> pd.DataFrame:
    """Per depth and seed: the last block's gradient norm with post-LN and with pre-LN, their
    ratio, and the ratio of the residual stream's RMS after the last block (pre over post,
    sqrt of ``preact_var``): what Xiong et al.'s mechanism says the gradient ratio is."""
    last = at_init[at_init["layer"] == at_init["depth"]]
    wide = last.pivot_table(index=["depth", "seed"], columns="norm_position",
                            values=["grad_norm", "preact_var"])
    out = pd.DataFrame({"post": wide["grad_norm"]["post"], "pre": wide["grad_norm"]["pre"]})
    out["ratio"] = out["post"] / out["pre"]
    out["stream"] = np.sqrt(wide["preact_var"]["pre"] / wide["preact_var"]["post"])
    return out.reset_index()


def depth_exponents(at_init: pd.DataFrame) -> pd.DataFrame:
    """Per seed: the least-squares exponent of depth in the last block's gradient norm
    (post-LN, pre-LN), in their ratio and in the stream's RMS ratio (log-log slopes)."""
    last = last_blocks(at_init)
    rows = [{"seed": seed, **{c: log_slope(np.log(g["depth"]), np.log(g[c]))
                              for c in ("post", "pre", "ratio", "stream")}}
            for seed, g in last.groupby("seed")]
    return pd.DataFrame(rows)


def init_numbers(at_init: pd.DataFrame, P: Params) -> dict:
    """Measurement 1: exponents of depth against Xiong et al.'s, the ratio at the smallest
    and largest depth, and the profile over the blocks of the deepest network."""
    last, exps = last_blocks(at_init), depth_exponents(at_init)
    lo, hi = min(P.depths), max(P.depths)
    at = {d: last[last["depth"] == d] for d in (lo, hi)}
    pred = theory.XIONG_DEPTH_EXPONENT
    deep = at_init[at_init["depth"] == hi]
    per_block = deep.groupby(["norm_position", "layer"]).grad_norm.median()
    ratio_lo = at[lo]["ratio"].median()
    numbers = {
        "tf_exp_post": signed(med_range(exps["post"], "{:+.2f}")),
        "tf_exp_pre": signed(med_range(exps["pre"], "{:+.2f}")),
        "tf_exp_ratio": med_range(exps["ratio"], "{:.2f}"),
        "tf_exp_stream": med_range(exps["stream"], "{:.2f}"),
        "tf_exp_pred_pre": signed(f"{pred['pre']:+.1f}"),
        "tf_exp_pred_ratio": f"{pred['post'] - pred['pre']:.1f}",
        # medians alone, as plain numbers, for rules that decide a verdict from them
        "tf_exp_ratio_med": f"{exps['ratio'].median():.2f}",
        "tf_exp_post_med": f"{exps['post'].median():.2f}",
        "tf_exp_pre_med": f"{exps['pre'].median():.2f}",
        "tf_ratio_lo": med_range(at[lo]["ratio"], "{:.2f}"),
        "tf_ratio_hi": med_range(at[hi]["ratio"], "{:.2f}"),
        "tf_ratio_hi_pred": f"{ratio_lo * math.sqrt(hi / lo):.2f}",
        "tf_stream_hi": med_range(at[hi]["stream"], "{:.2f}"),
        "tf_post_lo": f"{at[lo]['post'].median():.2f}",
        "tf_post_hi": f"{at[hi]['post'].median():.2f}",
        "tf_pre_lo": f"{at[lo]['pre'].median():.2f}",
        "tf_pre_hi": f"{at[hi]['pre'].median():.2f}",
        "tf_pre_hi_pred": f"{at[lo]['pre'].median() * math.sqrt(lo / hi):.2f}",
    }
    for pos in POSITIONS:
        blocks = per_block[pos]
        numbers[f"tf_profile_{pos}"] = f"{blocks.iloc[0] / blocks.iloc[-1]:.2f}"
    return numbers


def control_numbers(control: pd.DataFrame, P: Params) -> dict:
    """The same exponents with one token per sequence (attention then mixes nothing)."""
    exps = depth_exponents(control)
    return {"tf_ctrl_exp_post": signed(med_range(exps["post"], "{:+.2f}")),
            "tf_ctrl_exp_pre": signed(med_range(exps["pre"], "{:+.2f}")),
            "tf_ctrl_exp_ratio": med_range(exps["ratio"], "{:.2f}")}


def init_table(at_init: pd.DataFrame, P: Params):
    """Per depth: the last block's gradient norm with each placement, their ratio (median
    [min, max] over seeds), the sqrt(L) law through the smallest depth's ratio, and the
    stream's RMS ratio."""
    last = last_blocks(at_init)
    lo = min(P.depths)
    ratio_lo = last.loc[last["depth"] == lo, "ratio"].median()
    rows = [{"blocks L": d, "post-LN": g["post"].median(), "pre-LN": g["pre"].median(),
             "post / pre": med_range(g["ratio"], "{:.2f}"),
             "√L law": ratio_lo * math.sqrt(d / lo),
             "stream RMS ratio": g["stream"].median()}
            for d, g in last.groupby("depth")]
    return table(pd.DataFrame(rows), digits=3)


def fig_init(at_init: pd.DataFrame, P: Params) -> plt.Figure:
    """Left: the last block's gradient norm against depth, post-LN and pre-LN, with Xiong et
    al.'s depth laws through the smallest depth.  Right: their ratio, with the sqrt(L) law
    and the ratio of the residual stream's RMS."""
    last = last_blocks(at_init)
    lo = min(P.depths)
    depths = np.array(sorted(P.depths), dtype=float)
    fig, (left, right) = plots.figure(1, 2, height=3.9)
    for i, pos in enumerate(POSITIONS):
        values = last.pivot(index="depth", columns="seed", values=pos)
        plots.band(left, values.index, values, i, POSITION_LABELS[pos])
        left.plot(depths, values.loc[lo].median()
                  * theory.xiong_depth_scaling(pos, depths, lo), "--",
                  color=plots.style(i)["color"], linewidth=1.2)
    left.set_ylabel("gradient norm, last block")
    handles, names = left.get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color="gray", linestyle="--"))
    left.legend(handles, [*names, r"Xiong et al.: $L^0$, $L^{-1/2}$"], loc="lower left")
    values = last.pivot(index="depth", columns="seed", values="ratio")
    plots.band(right, values.index, values, 2, "measured post / pre")
    right.plot(depths, values.loc[lo].median() * np.sqrt(depths / lo), "--", color="gray",
               linewidth=1.2, label=r"$\sqrt{L}$ law")
    stream = last.groupby("depth")["stream"].median()
    right.plot(stream.index, stream.to_numpy(), ":", color="black", linewidth=1.5,
               label="stream RMS, pre / post")
    right.set_ylabel("post-LN / pre-LN")
    right.legend(loc="upper left")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(depths, [f"{d:g}" for d in depths])
        ax.set_xlabel("blocks L")
        plots.log_axis(ax)
    fig.tight_layout()
    return fig


def fig_profile(at_init: pd.DataFrame, P: Params) -> plt.Figure:
    """Gradient norm of each block of the deepest network, post-LN and pre-LN."""
    deep = at_init[at_init["depth"] == max(P.depths)]
    fig, ax = plots.figure(1, 1, height=3.4)
    plots.per_layer(ax, deep, "grad_norm", "norm_position",
                    {pos: POSITION_LABELS[pos] for pos in POSITIONS})
    ax.set_xlabel("block (counted from the input)")
    ax.set_ylabel("gradient norm of the block")
    plots.log_axis(ax)
    ax.legend()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- 2. warmup

def arm(runs: pd.DataFrame) -> pd.Series:
    """Each row's configuration as a key of :data:`ARMS`: the layer norm's place, warmup
    or not, QK-layernorm or not (a column the sweep did not set counts as off)."""
    warm = np.where(runs["warmup_steps"] > 0, "_warm", "_cold")
    qk = runs["qk_norm"].fillna(False).astype(bool) if "qk_norm" in runs else False
    return runs["norm_position"] + warm + np.where(qk, "_qk", "")


def outcomes(runs: pd.DataFrame, P: Params) -> pd.DataFrame:
    """:func:`run_outcomes` per arm and learning rate (final loss: mean over the last
    ``TAIL`` of the steps) plus ``failed``: diverged, or ended above ``FAILED`` x the
    chance loss."""
    out = run_outcomes(runs.assign(arm=arm(runs)), ["arm", "lr"], tail=TAIL)
    out["failed"] = out["diverged"] | (out["final_loss"] >= FAILED * chance_loss(P))
    return out


def failing_lr(out: pd.DataFrame) -> float:
    """The smallest learning rate at which most post-LN runs without warmup failed (NaN if
    none did)."""
    arm = out[out["arm"] == "post_cold"]
    share = arm.groupby("lr")["failed"].mean()
    failing = share[share > 0.5]
    return float(failing.index.min()) if len(failing) else math.nan


def probe_lr(runs: pd.DataFrame, P: Params) -> float:
    """The rate the page looks at closely: where post-LN fails without warmup
    (:func:`failing_lr`), else the largest rate of the warmup sweep."""
    lr = failing_lr(outcomes(runs, P))
    return max(P.warmup_lrs) if math.isnan(lr) else lr


#: The arms run again for ``long_steps`` at :func:`probe_lr`: the rescued one, and the
#: architecture that needed no rescue.
LONG_ARMS = ("post_warm", "pre_cold")


def long_numbers(longer: pd.DataFrame, warm: pd.DataFrame, P: Params) -> dict:
    """Measurement 2, continued: failures and final loss of the :data:`LONG_ARMS` trained
    for ``long_steps`` at the probed rate; and the verdict on the seed's claim
    (:func:`seed_verdict`), which rests on these and on the ``warm`` sweep's numbers."""
    out = outcomes(longer, P)
    numbers = {"tf_long_lr": f"{out['lr'].iloc[0]:g}"}
    for key in LONG_ARMS:
        g = out[out["arm"] == key]
        numbers[f"tf_long_{key}_failed"] = k_of_n(g["failed"])
        numbers[f"tf_long_{key}_nfailed"] = int(g["failed"].sum())
        numbers[f"tf_long_{key}_loss"] = med_range(g["final_loss"], "{:.2f}")
    numbers["tf_seed_verdict"] = seed_verdict({**warmup_numbers(warm, P), **numbers})
    return numbers


def block_spread(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run (arm, learning rate, seed): the gradient norm of the first block over that of
    the last block, at the last sampled step (below 1: the gradient vanishes towards the
    input)."""
    blocks = runs[runs["layer"] > 0].assign(arm=lambda d: arm(d))
    keys = ["arm", "lr", "seed"]
    last = blocks[blocks["step"] == blocks.groupby(keys)["step"].transform("max")]
    ends = last.groupby(keys)["layer"].agg(["min", "max"])
    norms = last.set_index([*keys, "layer"])["grad_norm"]
    first = norms.loc[[(*k, lo) for k, lo in ends["min"].items()]].to_numpy()
    final = norms.loc[[(*k, hi) for k, hi in ends["max"].items()]].to_numpy()
    return ends.assign(spread=first / final)["spread"].reset_index()


def warmup_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """Measurement 2: at the learning rate where post-LN fails without warmup, each arm's
    failures, final loss and end-of-training gradient spread over the blocks; the largest
    gradient norm of the failed runs."""
    out = outcomes(runs, P)
    lr = failing_lr(out)
    numbers = {"tf_fail_lr": "none" if math.isnan(lr) else f"{lr:g}"}
    at = out[out["lr"] == lr]
    spread = block_spread(runs)
    spread = spread[spread["lr"] == lr]
    for key in WARMUP_ARMS:
        g, runs_of = at[at["arm"] == key], out[out["arm"] == key]
        numbers[f"tf_{key}_spread"] = number(
            spread.loc[spread["arm"] == key, "spread"].median(), 2)
        numbers[f"tf_{key}_failed"] = k_of_n(g["failed"]) if len(g) else "–"
        numbers[f"tf_{key}_nfailed"] = int(g["failed"].sum())
        numbers[f"tf_{key}_loss"] = med_range(g["final_loss"], "{:.2f}") if len(g) else "–"
        ok = runs_of.groupby("lr")["failed"].sum()  # rates at which no run of the arm failed
        numbers[f"tf_{key}_maxlr"] = f"{ok[ok == 0].index.max():g}" if (ok == 0).any() \
            else "none"
    failed = out[out["failed"]]
    numbers["tf_failed_growth"] = med_range(failed["max_grad_norm"]
                                            / failed["first_grad_norm"], "{:.2f}")
    numbers["tf_failed_growth_max"] = number((failed["max_grad_norm"]
                                              / failed["first_grad_norm"]).max(), 2)
    numbers["tf_failed_n"] = f"{len(failed)}/{len(out)}"
    numbers["tf_failed_diverged"] = int(failed["diverged"].sum())
    first = out.groupby([out["arm"].str.split("_").str[0], "seed"])["first_grad_norm"].first()
    post, pre = first["post"], first["pre"]
    numbers["tf_first_grad_post"] = med_range(post, "{:.2f}")
    numbers["tf_first_grad_pre"] = med_range(pre, "{:.2f}")
    return numbers


#: A failed run's largest gradient norm over its first from which its failure counts as
#: a gradient explosion (an order of magnitude).
EXPLOSION_GROWTH = 10.0


def seed_verdict(numbers: dict) -> str:
    """The verdict on the seed article's transformer case study (schedules tame large
    gradients), from :func:`warmup_numbers`' plain numbers: *untestable here* without a
    rate at which post-LN fails without warmup, or if pre-LN with warmup fails there too
    (the runs are too short to learn at that rate); *refuted* if warmup does not lower the
    failures there; *supported* if it removes them, also in the longer runs, and the
    failures were explosions (a run diverged, or a gradient grew :data:`EXPLOSION_GROWTH`
    times); *nuanced* if warmup helps otherwise."""
    cold, warm = numbers["tf_post_cold_nfailed"], numbers["tf_post_warm_nfailed"]
    if numbers["tf_fail_lr"] == "none" or cold == 0 or numbers["tf_pre_warm_nfailed"] > 0:
        return "untestable here"
    if warm >= cold:
        return "refuted"
    growth = parse_number(numbers["tf_failed_growth_max"])
    exploded = numbers["tf_failed_diverged"] > 0 or growth >= EXPLOSION_GROWTH
    lasting = warm == 0 and numbers["tf_long_post_warm_nfailed"] == 0
    return "supported" if lasting and exploded else "nuanced"


def _cell(g: pd.DataFrame) -> str:
    """'median final loss (k/n failed)' of one arm at one learning rate."""
    loss = g.loc[~g["diverged"], "final_loss"]
    return f"{number(loss.median(), 2)} ({k_of_n(g['failed'])} failed)"


def warmup_table(runs: pd.DataFrame, P: Params):
    """Per learning rate, each arm's median final loss and failed runs."""
    out = outcomes(runs, P)
    rows = [{"learning rate": f"{lr:g}", **{ARMS[key]: _cell(g[g["arm"] == key])
                                           for key in WARMUP_ARMS}}
            for lr, g in out.groupby("lr")]
    return table(pd.DataFrame(rows))


def fig_warmup(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Top: each run's final loss against the learning rate, per arm, with the chance
    level.  Bottom: the training loss of each arm at the rate where post-LN fails without
    warmup (or the largest rate)."""
    out = outcomes(runs, P).assign(final=lambda d: d["final_loss"])
    labels, order = {k: ARMS[k] for k in WARMUP_ARMS}, list(ARMS)
    fig, (top, bottom) = plots.figure(2, 1, height=7.4)
    plots.outcome_panel(top, out, "lr", "arm", labels, chance_loss(P), order)
    top.set_xlabel("peak learning rate (Adam)")
    top.set_ylabel("final training loss")
    lr = probe_lr(runs, P)
    sub = runs[runs["lr"] == lr]
    plots.loss_panel(bottom, sub.assign(arm=arm(sub)), "arm", list(WARMUP_ARMS), labels,
                     smooth=5)
    bottom.axhline(chance_loss(P), color="black", linestyle="--", linewidth=1)
    plots.log_axis(bottom)
    bottom.set_title(f"learning rate {lr:g}")
    bottom.legend(loc="lower left", ncol=2)
    fig.tight_layout()
    plots.outcome_legend(fig, labels, order, "uniform prediction (chance)", ncol=2)
    return fig


# --------------------------------------------------------------------------- 3. QK-layernorm

def final_logits(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run (arm, learning rate, seed): the largest attention logit over the blocks at
    the first and at the last sampled step (``attn_logit_max`` of the per-block rows)."""
    blocks = runs[runs["layer"] > 0].assign(arm=lambda d: arm(d))
    keys = ["arm", "lr", "seed"]
    first = blocks[blocks["step"] == blocks.groupby(keys)["step"].transform("min")]
    last = blocks[blocks["step"] == blocks.groupby(keys)["step"].transform("max")]
    return pd.DataFrame({
        "logit_first": first.groupby(keys)["attn_logit_max"].max(),
        "logit_last": last.groupby(keys)["attn_logit_max"].max()}).reset_index()


def qk_outcomes(runs: pd.DataFrame, P: Params) -> pd.DataFrame:
    """Outcomes of the QK-layernorm sweep, with each run's largest attention logits."""
    return outcomes(runs, P).merge(final_logits(runs), on=["arm", "lr", "seed"])


def lr_sensitivity(out: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Wortsman et al.'s (2023) learning-rate sensitivity per group and seed: the mean,
    over the learning rates swept, of the final loss capped at the initial loss (a
    diverged run counts as the initial loss), minus the best final loss of the sweep."""
    rows = []
    for key, g in out.groupby([*by, "seed"], sort=False):
        capped = np.fmin(g["final_loss"].fillna(np.inf), g["first_loss"])
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip([*by, "seed"], key, strict=True)),
                     "sensitivity": float(capped.mean() - capped.min())})
    return pd.DataFrame(rows)


def qk_numbers(runs: pd.DataFrame, P: Params) -> dict:
    """Measurement 3: learning-rate sensitivity with and without QK-layernorm, the largest
    attention logit and the final loss at the largest learning rate."""
    out = qk_outcomes(runs, P)
    sens = lr_sensitivity(out, ["arm"])
    top = out[out["lr"] == max(P.qk_lrs)]
    numbers = {"tf_qk_lr_max": f"{max(P.qk_lrs):g}", "tf_qk_lr_min": f"{min(P.qk_lrs):g}"}
    for arm_key, key in zip(QK_ARMS, ("noqk", "qk"), strict=True):
        numbers[f"tf_sens_{key}"] = med_range(sens.loc[sens["arm"] == arm_key, "sensitivity"],
                                              "{:.2f}")
        numbers[f"tf_sens_{key}_med"] = \
            f"{sens.loc[sens['arm'] == arm_key, 'sensitivity'].median():.2f}"
        g, runs_of = top[top["arm"] == arm_key], out[out["arm"] == arm_key]
        numbers[f"tf_top_loss_{key}"] = med_range(g["final_loss"], "{:.2f}")
        numbers[f"tf_top_logit_{key}"] = number(g["logit_last"].median(), 2)
        numbers[f"tf_top_failed_{key}"] = k_of_n(g["failed"])
        numbers[f"tf_logit_start_{key}"] = number(runs_of["logit_first"].median(), 2)
        best = runs_of.groupby("lr")["final_loss"].median()
        numbers[f"tf_best_lr_{key}"] = f"{best.idxmin():g}"
        numbers[f"tf_best_loss_{key}"] = f"{best.min():.2f}"
    return numbers


def qk_table(runs: pd.DataFrame, P: Params):
    """Per learning rate: final loss and final largest attention logit, without and with
    QK-layernorm (median over seeds; failed runs counted)."""
    out = qk_outcomes(runs, P)
    rows = []
    for lr, g in out.groupby("lr"):
        row = {"learning rate": f"{lr:g}"}
        for key, name in zip(QK_ARMS, ("no QK-norm", "QK-norm"), strict=True):
            h = g[g["arm"] == key]
            row[f"final loss, {name}"] = _cell(h)
            row[f"largest logit, {name}"] = h["logit_last"].median()
        rows.append(row)
    return table(pd.DataFrame(rows), digits=2)


def fig_qk(runs: pd.DataFrame, P: Params) -> plt.Figure:
    """Left: final loss against the learning rate, pre-LN with warmup, without and with
    QK-layernorm.  Right: the largest attention logit at the end of each run."""
    out = qk_outcomes(runs, P)
    labels, order = {k: ARMS[k] for k in QK_ARMS}, list(ARMS)
    fig, (left, right) = plots.figure(1, 2, height=3.9)
    plots.outcome_panel(left, out.assign(final=out["final_loss"]), "lr", "arm", labels,
                        chance_loss(P), order)
    left.set_ylabel("final training loss")
    plots.outcome_panel(right, out.assign(final=out["logit_last"]), "lr", "arm", labels,
                        None, order)
    right.set_ylabel("largest attention logit, last step")
    right.yaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: number(v, 2)))
    right.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    for ax in (left, right):
        ax.set_xlabel("peak learning rate")
    fig.tight_layout()
    plots.outcome_legend(fig, labels, order, "uniform prediction (chance)", ncol=2)
    return fig
