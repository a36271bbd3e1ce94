"""Scaling: the time per training step against depth, width and sequence length, batched
seeds against a loop, a sweep on every core, and the ``make benchmark`` record.

Every time comes from :mod:`..study.timing` (the one timer), called visibly on the page;
this module turns the timings into the page's numbers, figure and tables.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .. import theory
from ..study import plots, timing
from ..study.growth import power_law_fit
from ..study.readable import number, table
from . import Chapter, Params
from ._shared import from_profile

CHAPTER = Chapter(
    "scaling",
    (
        from_profile(
            "repeat", "int", "timed repetitions per point (the median is reported)", low=1, high=100
        ),
        from_profile(
            "steps",
            "int",
            "training steps per timed run (the slope from a quarter of them)",
            low=4,
            high=10**6,
        ),
        from_profile(
            "depths", "list[int]", "hidden layers of the depth sweep (width 64)", low=1, high=1000
        ),
        from_profile(
            "widths", "list[int]", "units per layer of the width sweep (depth 10)", low=1, high=8192
        ),
        from_profile(
            "seq_lens", "list[int]", "sequence lengths of the recurrent sweep", low=2, high=100_000
        ),
        from_profile(
            "ensemble_seeds",
            "int",
            "seeds trained at once in the batched-vs-loop timing",
            low=1,
            high=1000,
        ),
        from_profile(
            "sweep_jobs", "int", "jobs of the serial-vs-local sweep timing", low=1, high=10_000
        ),
    ),
    {
        "quick": dict(
            repeat=1,
            steps=5,
            depths=[2, 4],
            widths=[16, 32],
            seq_lens=[5, 10],
            ensemble_seeds=2,
            sweep_jobs=2,
        ),
        "default": dict(
            repeat=3,
            steps=20,
            depths=[5, 10, 20, 40, 80],
            widths=[16, 32, 64, 128, 256, 512],
            seq_lens=[10, 20, 40, 80, 160],
            ensemble_seeds=16,
            sweep_jobs=8,
        ),
        "full": dict(
            repeat=5,
            steps=50,
            depths=[5, 10, 20, 40, 80, 160],
            widths=[16, 32, 64, 128, 256, 512, 1024, 2048],
            seq_lens=[10, 20, 40, 80, 160, 320, 640],
            ensemble_seeds=64,
            sweep_jobs=32,
        ),
    },
)

#: The parameter holding the sizes of each runtime sweep, and its glue key's name.
SIZES = {"depth": "depths", "width": "widths", "sequence length": "seq_lens"}
KEYS = {"depth": "depth", "width": "width", "sequence length": "seq"}
#: A fitted exponent within this of the operation count's counts as following it.
CLOSE = 0.15
NOT_MEASURED = "could not be measured"


def machine_numbers() -> dict:
    """The machine the page's times were measured on."""
    return {"scale_machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                             f"{platform.python_version()}, torch {torch.__version__}, "
                             f"{torch.get_num_threads()} torch thread(s) per process"}


# --------------------------------------------------------------------------- time per step


def runtime(timed: dict[str, pd.DataFrame], P: Params) -> pd.DataFrame:
    """Seconds per optimizer step (``sweep``, ``size``, ``seconds``) from the
    :func:`..study.timing.time_ratios` table of each sweep, whose base is the sweep's
    first size and whose variants are the others.  The base's seconds per round are a
    variant's over its ratio; each size's is the median over the rounds (NaN if it was
    not timed)."""
    rows = []
    for sweep, out in timed.items():
        sizes = P[SIZES[sweep]]
        if len(out):
            base = (out["step_seconds"] / out["ratio"]).groupby(out["round"]).first().median()
            medians = out.groupby("variant", sort=False)["step_seconds"].median()
        else:
            base, medians = np.nan, {}
        rows.extend({"sweep": sweep, "size": size,
                     "seconds": base if i == 0 else medians.get(size, np.nan)}
                    for i, size in enumerate(sizes))
    return pd.DataFrame(rows)


def fit(sizes, seconds) -> dict | None:
    """:func:`..study.growth.power_law_fit` of seconds against size, or None when the
    times allow no fit (a negative or non-finite time, fewer than two sizes)."""
    try:
        return power_law_fit(sizes, seconds)
    except ValueError:
        return None


def fits(table: pd.DataFrame) -> dict[str, tuple[dict | None, dict | None]]:
    """Per sweep: the fit over all sizes, and over the top half of them (at least two),
    where the arithmetic should dominate the fixed costs."""
    out = {}
    for sweep, g in table.groupby("sweep", sort=False):
        top = g.iloc[-max(2, len(g) // 2):]
        out[sweep] = (fit(g["size"], g["seconds"]), fit(top["size"], top["seconds"]))
    return out


def verdict(exponent: float, expected: float) -> str:
    """How a fitted exponent compares with the operation count's."""
    gap = exponent - expected
    if abs(gap) <= CLOSE:
        return f"close to the operation count's {expected}"
    return f"{'below' if gap < 0 else 'above'} the operation count's {expected}"


def fit_phrase(whole: dict | None, expected: float) -> str:
    """A sweep's fit as the page says it: 'exponent 0.80 (R² 0.970), below the operation
    count's 1', or, when the times allow no fit, that the exponent was not measured."""
    if whole is None:
        return f"not measured, since the times allowed no fit (operation count: {expected})"
    return f"exponent {whole['exponent']:.2f} (R² {whole['r2']:.3f}), " + \
        verdict(whole["exponent"], expected)


def runtime_numbers(timed: dict[str, pd.DataFrame], P: Params) -> dict:
    """The glued exponents and R^2 of the runtime sweeps and a phrase per sweep
    (:func:`fit_phrase`); a fit the times do not allow is said to be unmeasured rather
    than shown as NaN, in words that read as a sentence."""
    numbers = {}
    for sweep, (whole, top) in fits(runtime(timed, P)).items():
        key, expected = KEYS[sweep], theory.STEP_COST_EXPONENTS[sweep]
        numbers.update({
            f"scale_{key}_exp": f"{whole['exponent']:.2f}" if whole else NOT_MEASURED,
            f"scale_{key}_exp_top": f"{top['exponent']:.2f}" if top else NOT_MEASURED,
            f"scale_{key}_r2": f"{whole['r2']:.3f}" if whole else "–",
            f"scale_{key}_fit": fit_phrase(whole, expected),
            f"scale_{key}_top_fit": f"exponent {top['exponent']:.2f}" if top
            else "no exponent (the times allowed no fit)"})
    numbers["scale_summary"] = summary_sentence(fits(runtime(timed, P)))
    return numbers


def summary_sentence(fitted: dict[str, tuple[dict | None, dict | None]]) -> str:
    """One sentence on what the measured exponents (of :func:`fits`) say together."""
    measured = {sweep: whole["exponent"] for sweep, (whole, _) in fitted.items() if whole}
    if not measured:
        return "No exponent could be measured in this build."
    below = [sweep for sweep, e in measured.items()
             if e < theory.STEP_COST_EXPONENTS[sweep] - CLOSE]
    if len(below) == len(measured):
        return ("Every measured exponent is below the operation count's: at these sizes the "
                "fixed cost of each operation weighs as much as its arithmetic.")
    if below:
        one = len(below) == 1
        return (f"The {'exponent' if one else 'exponents'} below the operation count's "
                f"({', '.join(below)}) {'means' if one else 'mean'} that the fixed cost of "
                "each operation weighs as much as its arithmetic there.")
    return "The measured exponents follow the operation count: the arithmetic dominates."


def fig_runtime(timed: dict[str, pd.DataFrame], P: Params) -> plt.Figure:
    """Milliseconds per step against each size (log-log): measured points, the fitted
    power law and the operation count's slope through the largest size."""
    table = runtime(timed, P)
    fitted = fits(table)
    fig, grid = plots.figure(2, 2, height=6.4)
    axes = [grid[0, 0], grid[0, 1], grid[1, 0]]
    for i, (ax, (sweep, g)) in enumerate(zip(axes, table.groupby("sweep", sort=False),
                                             strict=True)):
        s = plots.style(i)
        expected = theory.STEP_COST_EXPONENTS[sweep]
        shown = g[np.isfinite(g["seconds"]) & (g["seconds"] > 0)]  # a log axis can show
        ax.loglog(shown["size"], 1e3 * shown["seconds"], color=s["color"], marker=s["marker"],
                  linestyle="none", label="measured")
        x = np.geomspace(g["size"].min(), g["size"].max(), 50)
        whole = fitted[sweep][0]
        if whole:
            ax.loglog(x, 1e3 * whole["prefactor"] * x ** whole["exponent"], color=s["color"],
                      label="fitted power law")
        ax.set_title(f"fitted exponent {whole['exponent']:.2f}" if whole else "no fit")
        if len(shown):
            anchor = shown.iloc[-1]
            ax.loglog(x, 1e3 * anchor["seconds"] * (x / anchor["size"]) ** expected,
                      color="black", linestyle=":", label="slope of the operation count")
        ax.set_xscale("log")
        ax.set_xticks(g["size"], [f"{v:g}" for v in g["size"]])  # the sizes, not powers of 10
        ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
        ax.set_xlabel(sweep)
        ax.set_ylabel("ms per step")
        if len(shown):
            plots.log_axis(ax)
    grid[1, 1].axis("off")
    handles = [plt.Line2D([], [], color="gray", marker="o", linestyle="none"),
               plt.Line2D([], [], color="gray"),
               plt.Line2D([], [], color="black", linestyle=":")]
    grid[1, 1].legend(handles, ["measured (median)", "fitted power law",
                                "the operation count's slope"], loc="center left")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- seeds, cores


def ensemble_numbers(bench: dict, P: Params) -> dict:
    """The glued numbers of :func:`..study.timing.benchmark_ensemble`'s result."""
    return {"scale_ens_seeds": P.ensemble_seeds, "scale_ens_steps": P.steps,
            "scale_ens_ratio": f"{bench['ratio']:.1f}", "scale_ens_engine": bench["engine"],
            "scale_ens_loop_ms": f"{1e3 * bench['loop_s']:.2f}",
            "scale_ens_batched_ms": f"{1e3 * bench['batched_s']:.2f}",
            "scale_ens_bare_ms": f"{1e3 * bench['bare_s']:.2f}",
            "scale_ens_over_bare": f"{bench['over_bare']:.2f}",
            "scale_ens_unlogged_over_bare": f"{bench['unlogged_over_bare']:.2f}",
            "scale_ens_eval_flops": f"{100 * bench['evaluation_flops']:.0f}%",
            "scale_ens_unlogged_eval_flops": f"{100 * bench['unlogged_evaluation_flops']:.0f}%",
            "scale_ens_peak": f"{bench['peak_flops'] / 1e9:.0f}",
            **{f"scale_ens_{k}_share": f"{100 * bench[f'{k}_share']:.0f}%"
               for k in ("loop", "batched", "bare")}}


def sweep_numbers(speedup: dict, P: Params) -> dict:
    """The glued numbers of :func:`..study.timing.sweep_speedup`'s result."""
    return {"scale_sweep_jobs": speedup["jobs"], "scale_sweep_workers": speedup["workers"],
            "scale_sweep_ratio": f"{speedup['ratio']:.2f}"}


# --------------------------------------------------------------------------- the record


def record_numbers(record: pd.DataFrame | None) -> dict:
    """What the page says about the ``make benchmark`` record: where it comes from, or
    that this build had none and measured everything itself."""
    if record is None:
        return {"scale_record_text": "This build found no record, so every number on this "
                "page was measured in this build, above; the record appears here when the "
                "book is built after running make benchmark.",
                "scale_record_ens": ""}
    first = record.iloc[0]
    ratio = record.set_index("measurement")["value"].get(
        "batched / looped seeds (speed-up per seed-step)", np.nan)
    return {"scale_record_text": f"Its latest record, made on {first['machine']} on "
            f"{first['date']} (commit {first['commit']}, book profile {first['profile']}), "
            "is below; its machine may differ from the one that built this page.",
            "scale_record_ens": f"With the longer runs of make benchmark, the record at the "
            f"end of this page measured {number(ratio, 2)}×."}


def record_table(record: pd.DataFrame | None):
    """The record's ratios as the page shows them, or None (nothing shown)."""
    if record is None:
        return None
    return table(record[["measurement", "value"]], digits=3)


def record_path(cwd: Path | None = None) -> Path:
    """Where ``make benchmark`` writes its record: ``benchmarks/latest.json`` of the
    repository, whose root is the parent of the page's working directory (papermill
    runs a page in ``notebooks/``)."""
    return (cwd or Path.cwd()).resolve().parent / "benchmarks" / "latest.json"


def benchmark_record(cwd: Path | None = None) -> pd.DataFrame | None:
    """The ``make benchmark`` record beside the notebooks' folder as a table of ratios
    (:func:`..study.timing.benchmark_record`), or None if there is none."""
    return timing.benchmark_record(record_path(cwd))
