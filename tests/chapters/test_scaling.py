"""The scaling chapter's reductions of timings: seconds per step, power-law exponents (and
what the page says when the times allow no fit), the record's location."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from exploding_gradients import theory
from exploding_gradients.chapters import scaling as chapter
from exploding_gradients.study import timing
from exploding_gradients.study.growth import power_law_fit


def params(**overrides):
    P = chapter.CHAPTER.parameters({"profile": "quick"}, before={})
    P.update(overrides)
    return P


def ratios_table(base_seconds, seconds, rounds=2):
    """A :func:`timing.time_ratios`-like table: variant ``size`` takes ``seconds[size]``
    per step in every round, the base ``base_seconds``."""
    return pd.DataFrame([{"variant": size, "round": r, "step_seconds": s,
                          "ratio": s / base_seconds, "extra_setup_steps": 0.0}
                         for r in range(rounds) for size, s in seconds.items()])


def power(sizes, exponent, prefactor=1e-4):
    return {s: prefactor * s**exponent for s in sizes}


@pytest.fixture
def P():
    return params(depths=[2, 4, 8], widths=[16, 32, 64, 128], seq_lens=[5, 10])


@pytest.fixture
def timed(P):
    """Depth costs exactly linear, width quadratic, sequence length grows by 2**0.5 per
    doubling (exponent 0.5)."""
    out = {}
    for sweep, exponent in [("depth", 1.0), ("width", 2.0), ("sequence length", 0.5)]:
        sizes = P[chapter.SIZES[sweep]]
        seconds = power(sizes, exponent)
        out[sweep] = ratios_table(seconds[sizes[0]], {s: seconds[s] for s in sizes[1:]})
    return out


def test_runtime_recovers_the_bases_seconds(timed, P):
    table = chapter.runtime(timed, P)
    assert list(table["sweep"].unique()) == ["depth", "width", "sequence length"]
    depth = table[table.sweep == "depth"]
    assert list(depth["size"]) == [2, 4, 8]
    assert np.allclose(depth["seconds"], [2e-4, 4e-4, 8e-4])


def test_runtime_numbers_follow_the_fitted_exponents(timed, P):
    numbers = chapter.runtime_numbers(timed, P)
    assert numbers["scale_depth_exp"] == "1.00" and numbers["scale_depth_r2"] == "1.000"
    assert numbers["scale_width_exp"] == "2.00" and numbers["scale_width_exp_top"] == "2.00"
    assert numbers["scale_depth_fit"] == \
        "exponent 1.00 (R² 1.000), close to the operation count's 1"
    assert numbers["scale_width_top_fit"] == "exponent 2.00"
    assert numbers["scale_seq_exp"] == "0.50"
    assert numbers["scale_seq_fit"].endswith("below the operation count's 1")
    assert numbers["scale_summary"].startswith("The exponent below the operation count's "
                                               "(sequence length) means")


def test_the_top_half_is_fitted_on_its_own():
    seconds = {16: 1e-4, 32: 1e-4, 64: 2e-4, 128: 8e-4}  # flat, then quadratic
    table = pd.DataFrame({"sweep": "width", "size": list(seconds),
                          "seconds": list(seconds.values())})
    whole, top = chapter.fits(table)["width"]
    assert top["exponent"] == pytest.approx(2.0) and whole["exponent"] < 2.0


def test_verdict_tolerance():
    assert chapter.verdict(1.1, 1) == "close to the operation count's 1"
    assert chapter.verdict(2.3, 2) == "above the operation count's 2"
    assert chapter.verdict(0.5, 1) == "below the operation count's 1"


def test_a_negative_time_is_said_unmeasured_not_nan(timed, P):
    """CPU-time slopes of short runs can come out negative; power_law_fit refuses them."""
    timed["depth"] = ratios_table(2e-4, {4: -1e-4, 8: 8e-4})
    table = chapter.runtime(timed, P)
    depth = table[table.sweep == "depth"]
    with pytest.raises(ValueError):
        power_law_fit(depth["size"], depth["seconds"])
    numbers = chapter.runtime_numbers(timed, P)
    assert numbers["scale_depth_exp"] == "could not be measured"
    assert numbers["scale_depth_r2"] == "–"
    assert numbers["scale_depth_fit"] == \
        "not measured, since the times allowed no fit (operation count: 1)"
    assert numbers["scale_depth_top_fit"] == "no exponent (the times allowed no fit)"
    assert "nan" not in " ".join(map(str, numbers.values()))
    # the top half (4 and 8) holds the negative time too; the other sweeps are unaffected
    assert numbers["scale_depth_exp_top"] == "could not be measured"
    assert numbers["scale_width_exp"] == "2.00"
    fig = chapter.fig_runtime(timed, P)
    assert len(fig.axes) == 4 and not fig.axes[3].axison  # the fourth holds the legend
    assert len(fig.axes[0].get_lines()) == 2  # the measured points and the theory's slope
    assert fig.axes[0].get_title() == "no fit"
    plt.close(fig)


def test_a_non_finite_time_or_a_single_size_is_unmeasured(timed, P):
    timed["width"] = ratios_table(1e-4, {32: np.inf, 64: 1e-3, 128: 2e-3})
    P = params(depths=[2, 4, 8], widths=[16, 32, 64, 128], seq_lens=[5])
    timed["sequence length"] = ratios_table(1e-4, {})
    numbers = chapter.runtime_numbers(timed, P)
    assert numbers["scale_width_exp"] == "could not be measured"
    assert numbers["scale_width_exp_top"] == "1.00"  # 64 -> 128: the time doubled
    assert numbers["scale_seq_exp"] == "could not be measured"
    plt.close(chapter.fig_runtime(timed, P))


def test_the_summary_sentence_reads_whatever_was_measured():
    def fitted(**exponents):
        return {sweep: ({"exponent": e} if e is not None else None, None)
                for sweep, e in exponents.items()}
    assert chapter.summary_sentence(fitted(depth=None, width=None)) == \
        "No exponent could be measured in this build."
    assert chapter.summary_sentence(fitted(depth=0.5, width=None)).startswith(
        "Every measured exponent is below")
    assert chapter.summary_sentence(fitted(depth=1.0, width=2.0)).startswith(
        "The measured exponents follow")


def test_the_operation_count_exponents_cover_every_sweep():
    assert set(chapter.SIZES) == set(chapter.KEYS) == set(theory.STEP_COST_EXPONENTS)


def test_runtime_of_a_real_tiny_timing(P):
    P = params(depths=[1, 2])
    out = timing.time_ratios("training", {"depth": 1, "width": 8, "n_train": 64, "lr": 1e-6,
                                          "log_every": 2}, {2: {"depth": 2}}, steps=(1, 2),
                             rounds=1)
    table = chapter.runtime({"depth": out}, P)
    assert list(table["size"]) == [1, 2]
    base = out["step_seconds"].iloc[0] / out["ratio"].iloc[0]
    assert table["seconds"].tolist() == pytest.approx([base, out["step_seconds"].iloc[0]])


def test_ensemble_and_sweep_numbers():
    P = params(ensemble_seeds=4, steps=8)
    bench = {"ratio": 3.14, "engine": "bmm", "loop_s": 0.002, "batched_s": 0.0005,
             "bare_s": 0.0004, "over_bare": 1.25, "peak_flops": 1.1e11, "loop_share": 0.12,
             "batched_share": 0.48, "bare_share": 0.6, "unlogged_over_bare": 1.1,
             "evaluation_flops": 0.587, "unlogged_evaluation_flops": 0.107}
    assert chapter.ensemble_numbers(bench, P) == {
        "scale_ens_seeds": 4, "scale_ens_steps": 8, "scale_ens_ratio": "3.1",
        "scale_ens_engine": "bmm", "scale_ens_loop_ms": "2.00", "scale_ens_batched_ms": "0.50",
        "scale_ens_bare_ms": "0.40", "scale_ens_over_bare": "1.25", "scale_ens_peak": "110",
        "scale_ens_unlogged_over_bare": "1.10", "scale_ens_eval_flops": "59%",
        "scale_ens_unlogged_eval_flops": "11%",
        "scale_ens_loop_share": "12%", "scale_ens_batched_share": "48%",
        "scale_ens_bare_share": "60%"}
    speedup = {"jobs": 8, "workers": 2, "serial_s": 2.0, "local_s": 1.1, "ratio": 1.818}
    assert chapter.sweep_numbers(speedup, P) == {
        "scale_sweep_jobs": 8, "scale_sweep_workers": 2, "scale_sweep_ratio": "1.82"}


def test_machine_numbers_name_the_cores():
    assert " cores, Python " in chapter.machine_numbers()["scale_machine"]


def test_the_record_is_read_beside_the_notebooks_folder(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    assert chapter.record_path(notebooks) == tmp_path / "benchmarks" / "latest.json"
    assert chapter.benchmark_record(notebooks) is None
    numbers = chapter.record_numbers(None)  # no record: the page says what it measured
    assert "measured in this build" in numbers["scale_record_text"]
    assert numbers["scale_record_ens"] == "" and chapter.record_table(None) is None
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "latest.json").write_text(json.dumps({
        "date": "2026-01-01", "commit": "abc", "machine": "x86_64, 2 cores",
        "batched_seeds": {"ratio": 3.0}, "parallel_sweep": {"ratio": 1.9},
        "monitoring": {"ratio": 1.1, "interval_for_budget": 10},
        "book": {"warm_s": 10.0, "cold_s": 100.0, "incremental_s": 20.0,
                 "profile": "default"}}))
    record = chapter.benchmark_record(notebooks)
    assert record.set_index("measurement")["value"]["warm / cold book build"] == 0.1
    numbers = chapter.record_numbers(record)
    assert "made on x86_64, 2 cores on 2026-01-01 (commit abc" in numbers["scale_record_text"]
    assert numbers["scale_record_ens"].endswith("measured 3×.")
    shown = chapter.record_table(record).data
    assert list(shown.columns) == ["measurement", "value"] and "nan" not in shown.to_string()
