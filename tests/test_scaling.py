"""The helpers behind the "Scaling up" page."""

import json

import pytest

from exploding_gradients import analysis, timing


def test_power_law_fit_recovers_exponent_and_prefactor():
    fit = analysis.power_law_fit([1, 2, 4, 8], [3, 12, 48, 192])
    assert fit["exponent"] == pytest.approx(2.0)
    assert fit["prefactor"] == pytest.approx(3.0)
    assert fit["r2"] == pytest.approx(1.0)


def test_benchmark_record_is_none_without_a_record_and_a_table_with_one(tmp_path):
    assert timing.benchmark_record(tmp_path / "absent.json") is None
    record = {"date": "2026-01-01T00:00:00+00:00", "commit": "abc", "machine": "x86_64",
              "batched_seeds": {"ratio": 4.0}, "parallel_sweep": {"ratio": 1.8},
              "monitoring": {"ratio": 1.02},
              "book": {"profile": "default", "cold_s": 200.0, "warm_s": 0.1,
                       "incremental_s": 30.0, "incremental_pages": ["depth"]}}
    path = tmp_path / "latest.json"
    path.write_text(json.dumps(record))
    table = timing.benchmark_record(path)
    values = dict(zip(table.measurement, table.value, strict=True))
    assert values["warm / cold book build"] == pytest.approx(0.0005)
    assert values["incremental / cold book build"] == pytest.approx(0.15)
    assert set(table.machine) == {"x86_64"}
