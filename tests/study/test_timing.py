"""The one timer and the costs built on it."""

import json
import math

import numpy as np
import pytest

from exploding_gradients.study import growth, timing


def test_interleaved_rotates_the_order_and_warms_up_each_variant():
    order = []
    variants = {name: (lambda n=name: order.append(n)) for name in "abc"}
    times = timing.interleaved(variants, rounds=3)
    assert order == list("abc") + list("abc") + list("bca") + list("cab")
    assert set(times) == set("abc") and all(len(v) == 3 and min(v) >= 0 for v in times.values())
    with pytest.raises(ValueError, match="clock"):
        timing.interleaved(variants, rounds=1, clock="sundial")


def test_time_ratios_separate_the_cost_per_step_from_the_one_off_cost(monkeypatch):
    """A fake experiment whose 'run time' is setup + steps * per_step: the variant is
    twice as slow per step and pays 5 base steps more once."""
    import types

    def func(config, seed):
        slow = config.get("normalization") == "batch"
        per_step, setup = (2.0, 15.0) if slow else (1.0, 10.0)
        return setup + per_step * config["steps"]

    def fake_interleaved(variants, rounds, warmup=1, clock="cpu"):
        return {name: [fn() for _ in range(rounds)] for name, fn in variants.items()}

    monkeypatch.setattr(timing, "get", lambda name: types.SimpleNamespace(resolve=dict,
                                                                          func=func))
    monkeypatch.setattr(timing, "interleaved", fake_interleaved)
    out = timing.time_ratios("fake", {}, {"bn": {"normalization": "batch"}}, steps=(2, 6),
                             rounds=2)
    np.testing.assert_allclose(out["ratio"], 2.0)
    np.testing.assert_allclose(out["extra_setup_steps"], 5.0)
    np.testing.assert_allclose(out["step_seconds"], 2.0)
    with pytest.raises(ValueError):
        timing.time_ratios("fake", {}, {}, steps=(5, 5))


def test_time_ratios_really_time_the_runs():
    base = dict(depth=2, width=4, n_train=16, batch_size=4, log_every=1)
    out = timing.time_ratios("training", base, {"deeper": {"depth": 3}}, steps=(1, 4),
                             rounds=1)
    assert len(out) == 1 and np.isfinite(out.loc[0, "ratio"])


def test_power_law_fit_recovers_exponent_and_prefactor():
    fit = growth.power_law_fit([1, 2, 4, 8], [3, 12, 48, 192])
    assert fit["exponent"] == pytest.approx(2.0)
    assert fit["prefactor"] == pytest.approx(3.0)
    assert fit["r2"] == pytest.approx(1.0)


@pytest.mark.parametrize("x, y", [
    ([2, 4, 8, 16], [1e-4, 2e-4, -1e-6, 8e-4]),  # a negative time: no power law
    ([2, 4, 8], [1.0, float("nan"), 3.0]),
    ([2], [1.0]),
    ([3, 3, 3], [1.0, 2.0, 3.0]),
    ([1, 2], [1.0, 2.0, 3.0]),
])
def test_power_law_fit_refuses_data_it_cannot_fit(x, y):
    with pytest.raises(ValueError, match="power_law_fit needs"):
        growth.power_law_fit(x, y)


def test_benchmark_record_is_none_without_a_record_and_a_table_with_one(tmp_path):
    assert timing.benchmark_record(tmp_path / "absent.json") is None
    record = {"date": "2026-01-01T00:00:00+00:00", "commit": "abc", "machine": "x86_64",
              "batched_seeds": {"ratio": 4.0}, "parallel_sweep": {"ratio": 1.8},
              "monitoring": {"ratio": 1.02}, "monitoring_parts": {"hooks": 0.25},
              "book": {"profile": "default", "cold_s": 200.0, "warm_s": 0.1,
                       "incremental_s": 30.0, "incremental_pages": ["depth"]}}
    path = tmp_path / "latest.json"
    path.write_text(json.dumps(record))
    table = timing.benchmark_record(path)
    values = dict(zip(table.measurement, table.value, strict=True))
    assert values["warm / cold book build"] == pytest.approx(0.0005)
    assert values["incremental / cold book build"] == pytest.approx(0.15)
    assert values["monitoring: the hooks of a sampled step"] == 0.25
    assert math.isnan(values["monitoring: the reductions of a sampled step"])  # not recorded
    assert set(table.machine) == {"x86_64"}


def test_benchmark_ensemble_reports_both_engines_and_the_loop():
    result = timing.benchmark_ensemble(depth=2, width=8, seeds=2, steps=3, rounds=2)
    assert {"loop_s", "batched_s", "ratio", "engine", "bmm_s", "vmap_s", "loop_min_s",
            "ratio_min", "ratio_max"} <= set(result)
    assert result["batched_s"] == min(result["bmm_s"], result["vmap_s"])
    assert result["ratio_min"] <= result["ratio"] <= result["ratio_max"]
    assert result["unlogged_over_bare_min"] <= result["unlogged_over_bare"] \
        <= result["unlogged_over_bare_max"]


def test_evaluation_flops_count_one_forward_pass_over_the_test_set_per_sampled_step():
    from exploding_gradients.experiments.feedforward import TEST_SAMPLES
    cfg = {"width": 8, "depth": 3, "d_in": 4, "batch_size": 16, "steps": 25, "log_every": 10}
    forward = 2 * (4 * 8 + 2 * 8 * 8 + 8 * 4)  # per sample: input, two hidden, readout
    assert timing.training_flops(cfg) == 3 * forward * 16
    # sampled: steps 0, 10, 20 and the last, 25
    assert timing.evaluation_flops(cfg) == 4 * TEST_SAMPLES * forward / 25


def test_monitoring_parts_split_a_sampled_step():
    parts = timing.monitoring_parts({"depth": 3, "width": 8}, passes=2, rounds=3)
    assert set(parts) == {"bare_step_seconds", "hooks", "reading", "update_ratio"}
    assert parts["bare_step_seconds"] > 0
    assert all(math.isfinite(parts[k]) for k in ("hooks", "reading", "update_ratio"))


def test_benchmark_monitoring_reports_a_ratio():
    result = timing.benchmark_monitoring({"depth": 2, "width": 8, "n_train": 64}, steps=4, repeat=2,
                                  log_every=2)
    assert len(result["ratios"]) == 2 and result["ratio"] > 0
    assert result["on_step_seconds"] > 0 and result["off_step_seconds"] > 0
    assert result["ended_early"] is False
