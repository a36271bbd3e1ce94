"""How training runs ended: one reduction per run, one summary per group, and their text.

:func:`run_outcomes` reduces the table of any training-like experiment (``training``,
``rnn_training``, ``lr_boundary``) to one row per run; every chapter's outcome table is
built from it, so "diverged", "final loss" and "largest gradient" mean the same thing on
every page.  :func:`summarize` reduces those rows per group (k of n diverged, median and
range of a value).  :func:`med_range` and :func:`k_of_n` write them for readers.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..engine.registry import get
from ..experiments.feedforward import make_data
from ..monitor import detect_spikes
from .growth import _named


def steps_only(runs: pd.DataFrame) -> pd.DataFrame:
    """The per-step rows of a training table (``layer == 0``), without per-layer samples."""
    return runs[runs["layer"] == 0] if "layer" in runs else runs


def _first(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.iloc[0]) if len(s) else math.nan


def _last(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.iloc[-1]) if len(s) else math.nan


#: A run whose final loss ends above this many times its first loss *blew up*, NaN or not
#: (the science review's "loss > 10x initial"): a run can climb to 10^8 times its start
#: without ever overflowing, and "did not diverge" would then read as a success.
BLOW_UP = 10.0


#: A run whose last ``HIDDEN_TAIL`` of updates were skipped at least half the time did not
#: survive: skipping hid its divergence (a skipped step updates nothing).
HIDDEN_TAIL = 0.2


def skipping_hid(skipped) -> bool:
    """Whether a run's per-update ``skipped`` flags, in step order, hide a divergence: at
    least half of the last :data:`HIDDEN_TAIL` of its updates were skipped."""
    skipped = np.nan_to_num(np.asarray(skipped, dtype=float))
    tail = skipped[-max(1, int(round(HIDDEN_TAIL * len(skipped)))):]
    return bool(len(tail) and tail.mean() >= 0.5)


def run_outcomes(runs: pd.DataFrame, by: list[str] | None = None,
                 tail: float | None = None, blow_up: float = BLOW_UP) -> pd.DataFrame:
    """One row per (``by``, seed) of a training-like table: how the run ended.

    * ``diverged`` / ``diverged_step``: loss or gradient became NaN/Inf (-1 if not);
      ``stopped`` / ``stopped_step``: early stopping ended it (-1 if not);
      ``last_step``: the last step logged.
    * ``first_loss``; ``final_loss``: the last logged loss, or with ``tail`` the mean over
      the last ``tail`` fraction of the logged steps (at least one), NaN for a diverged
      run; for a stopped run the restored weights' loss (its last row); ``final_over_first``.
    * ``first_test_loss`` / ``final_test_loss`` and ``final_accuracy`` (last logged test
      values; NaN for a diverged run or a table without them).
    * ``first_grad_norm``, ``max_grad_norm`` (largest finite) and ``spike`` (largest
      finite over the median finite gradient norm); ``first_update_ratio`` (of step 0).
    * ``lag_ratio_start`` / ``lag_ratio_end`` (recurrent runs: first and last sampled).
    * ``blew_up``: diverged, or the final loss above ``blow_up`` times the first (the test
      losses when the table has them, else the training losses), or no finite final loss
      (:data:`BLOW_UP`); a superset of ``diverged``.

    ``by`` columns with missing values (points of a sweep that did not set them) are kept.
    """
    whole = steps_only(runs)
    keys = [*(by or []), "seed"]
    nan = pd.Series(dtype=float)
    rows = []
    for key, g in whole.groupby(keys, sort=False, dropna=False):
        g = g.sort_values("step", kind="stable")
        diverged_step = int(g["diverged_step"].iloc[0])
        stopped_step = int(g["stopped_step"].iloc[0]) if "stopped_step" in g else -1
        diverged = diverged_step >= 0
        loss = g["loss"]
        if tail is None or stopped_step >= 0:  # a stopped run: its restored weights
            final = float(loss.iloc[-1])
        else:
            final = float(loss.tail(max(1, int(round(len(g) * tail)))).mean())
        grads = g["grad_norm"] if "grad_norm" in g else nan
        grad = grads[np.isfinite(grads)]
        test = g["test_loss"] if "test_loss" in g else nan
        accuracy = g["test_accuracy"] if "test_accuracy" in g else nan
        ratio = g["update_ratio"] if "update_ratio" in g else nan
        lag = g["lag_ratio"] if "lag_ratio" in g else nan
        first_loss = float(loss.iloc[0])
        final_loss = math.nan if diverged else final
        rows.append({
            **_named(keys, key), "diverged": diverged, "diverged_step": diverged_step,
            "stopped": stopped_step >= 0, "stopped_step": stopped_step,
            "last_step": int(g["step"].iloc[-1]), "first_loss": first_loss,
            "final_loss": final_loss, "final_over_first": final_loss / first_loss,
            "first_test_loss": _first(test),
            "final_test_loss": math.nan if diverged else _last(test),
            "final_accuracy": math.nan if diverged else _last(accuracy),
            "first_grad_norm": _first(grads),
            "max_grad_norm": float(grad.max()) if len(grad) else math.nan,
            "spike": float(grad.max() / grad.median()) if len(grad) else math.nan,
            "first_update_ratio": _first(ratio[g["step"] == 0]) if len(ratio) else math.nan,
            "lag_ratio_start": _first(lag), "lag_ratio_end": _last(lag),
        })
        first, last = ((rows[-1]["first_test_loss"], rows[-1]["final_test_loss"])
                       if len(test) else (first_loss, final_loss))
        rows[-1]["blew_up"] = bool(diverged or not last <= blow_up * first)
    return pd.DataFrame(rows)


def summarize(outcomes: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Per group of :func:`run_outcomes` rows: ``n``, ``n_diverged``, ``diverged`` and
    ``stopped`` as "k/n", the median divergence step of the diverged seeds, and the
    ``median``, ``min`` and ``max`` of ``value`` over the seeds that did not diverge and
    have a finite one (NaN if none)."""
    rows = []
    for key, g in outcomes.groupby(by, sort=False, dropna=False):
        ok = g.loc[~g["diverged"], value].to_numpy(dtype=float)
        ok = ok[np.isfinite(ok)]
        steps = g.loc[g["diverged"], "diverged_step"]
        rows.append({
            **_named(by, key), "n": len(g), "n_diverged": int(g["diverged"].sum()),
            "diverged": k_of_n(g["diverged"]), "stopped": k_of_n(g["stopped"]),
            "median_diverged_step": float(steps.median()) if len(steps) else math.nan,
            "median": float(np.median(ok)) if len(ok) else math.nan,
            "min": float(ok.min()) if len(ok) else math.nan,
            "max": float(ok.max()) if len(ok) else math.nan,
        })
    return pd.DataFrame(rows)


def training_table(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One row per group of ``training`` runs, as the feed-forward chapters show it:
    ``diverged`` ("k/n"), the median ``initial gradient norm``, the median ``final
    training loss`` and the mean ``final test accuracy`` of the runs that did not diverge
    (each run's last logged values, from :func:`run_outcomes`)."""
    rows = []
    for key, g in run_outcomes(runs, by).groupby(by, sort=False, dropna=False):
        rows.append({**_named(by, key), "diverged": k_of_n(g["diverged"]),
                     "initial gradient norm": g["first_grad_norm"].median(),
                     "final training loss": g["final_loss"].median(),
                     "final test accuracy": g["final_accuracy"].mean()})
    return pd.DataFrame(rows)


def k_of_n(flags) -> str:
    """``"k/n"``: how many of the booleans ``flags`` are true."""
    flags = np.asarray(flags, dtype=bool)
    return f"{int(flags.sum())}/{len(flags)}"


def med_range(values, fmt: str = "{:.3g}") -> str:
    """``"median [min, max]"`` of the non-missing ``values``; a single value alone; "–"
    when there is none."""
    values = pd.Series(values, dtype=float).dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return fmt.format(values.iloc[0])
    return (f"{fmt.format(values.median())} [{fmt.format(values.min())}, "
            f"{fmt.format(values.max())}]")


# --------------------------------------------------------------------------- gradients

def mean_grad_norm(runs: pd.DataFrame, window: int, by: list[str] | None = None) -> pd.DataFrame:
    """Per (``by``, seed): the average gradient norm over steps ``0 .. window-1`` (Pascanu,
    Mikolov & Bengio's statistic for choosing a clipping threshold), over the finite
    values only, with their median and ``steps_used``, how many finite steps there were
    (fewer than ``window`` when the run diverged or was shorter)."""
    whole = steps_only(runs)
    early = whole[whole["step"] < window]
    keys = [*(by or []), "seed"]
    rows = []
    for key, g in early.groupby(keys, sort=False):
        finite = g["grad_norm"][np.isfinite(g["grad_norm"])]
        rows.append({**_named(keys, key), "mean_grad_norm": float(finite.mean()),
                     "median_grad_norm": float(finite.median()), "steps_used": len(finite)})
    return pd.DataFrame(rows)


def count_spikes(values, factor: float = 3.0, window: int = 10, start: int = 0) -> int:
    """How many entries from index ``start`` on exceed ``factor`` times the median of the
    ``window`` entries before them (a loss spike, relative to the recent level).

    Entries with fewer than ``window`` predecessors are not judged; a non-finite entry
    counts as a spike.
    """
    v = np.asarray(values, dtype=float)
    count = 0
    for t in range(max(start, window), len(v)):
        level = np.median(v[t - window:t])
        if not np.isfinite(v[t]) or v[t] > factor * level:
            count += 1
    return count


def spike_warnings(runs: pd.DataFrame, by: list[str] | None = None, factor: float = 10.0,
                   window: int = 20, min_history: int = 5) -> pd.DataFrame:
    """How early a :class:`.monitor.SpikeDetector` on the gradient norm warns of divergence.

    ``runs`` is a ``training``-style table (rows ``layer == 0``: ``step``, ``grad_norm``
    per step, ``diverged_step``).  The detector sees each seed's gradient norms in step
    order, up to but not including the step that diverged (whose NaN/Inf it would flag
    trivially).  Per seed (and group in ``by``): ``diverged_step`` (-1 if none), ``n_flags``
    (steps flagged), ``first_flag`` and ``lead_first`` = diverged_step - first_flag, and
    ``episode_start``/``lead_episode`` for the final episode of flags (flags separated by
    more than ``window`` unflagged steps start a new episode, so an early transient that
    the network recovered from does not count as warning of the final blow-up), and
    ``final_streak``, the number of consecutive flagged steps right before divergence
    (the uninterrupted final climb; 0 if the step before it was not flagged).  Leads are
    NaN for a run that did not diverge or was never flagged before it did.
    """
    keys = [*(by or []), "seed"]
    steps = steps_only(runs)
    rows = []
    for key, group in steps.groupby(keys, sort=False):
        group = group.sort_values("step")
        diverged = int(group["diverged_step"].iloc[0])
        before = group[group["step"] < diverged] if diverged >= 0 else group
        flagged = [int(before["step"].iloc[i])
                   for i in detect_spikes(before["grad_norm"].to_numpy(dtype=float), factor,
                                          window, min_history)]
        start = flagged[0] if flagged else None
        for prev, cur in zip(flagged, flagged[1:], strict=False):
            if cur - prev > window:
                start = cur
        hit = diverged >= 0 and bool(flagged)
        streak = 0
        while hit and diverged - 1 - streak in flagged:
            streak += 1
        rows.append({**_named(keys, key), "diverged_step": diverged, "n_flags": len(flagged),
                     "first_flag": flagged[0] if flagged else np.nan,
                     "episode_start": start if flagged else np.nan,
                     "lead_first": diverged - flagged[0] if hit else np.nan,
                     "lead_episode": diverged - start if hit else np.nan,
                     "final_streak": streak if diverged >= 0 else np.nan})
    return pd.DataFrame(rows)


def constant_output_loss(config: dict) -> float:
    """Test loss of a model whose output is always zero, on the data of the ``training``
    experiment with ``config``: ln(classes) for classification (uniform prediction, at
    every position of a sequence), half the mean squared target for regression.  The
    level of a network that learned nothing and whose output was shrunk to zero."""
    data = make_data(get("training").resolve(config))
    targets = data.y_test.shape  # classes: one logit per class for each target
    zeros = torch.zeros(targets if data.task == "regression" else (*targets, data.d_out))
    return float(data.loss(zeros, data.y_test))
