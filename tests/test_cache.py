import dataclasses
import json
import warnings

import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients import cache


def entries(folder):
    return sorted(folder.glob("*.json"))


def test_second_run_reads_the_cache(isolated_cache, monkeypatch):
    first = eg.run("signal_propagation", depth=3, width=8, seeds=2)
    assert len(entries(isolated_cache)) == 2
    calls = []
    original = eg.REGISTRY["signal_propagation"]
    spy = dataclasses.replace(original, func=lambda config, seed: calls.append(seed))
    monkeypatch.setitem(eg.REGISTRY, "signal_propagation", spy)
    second = eg.run("signal_propagation", depth=3, width=8, seeds=2)
    assert calls == []
    pd.testing.assert_frame_equal(first, second, check_exact=True)


def test_config_change_misses_the_cache(isolated_cache):
    eg.run("signal_propagation", depth=3, width=8)
    eg.run("signal_propagation", depth=3, width=8, sigma_w=1.0)
    assert len(entries(isolated_cache)) == 2


@pytest.mark.parametrize("damage", [
    lambda text: text[: len(text) // 2],                      # truncated file
    lambda text: text.replace('"layer"', '"layer_"', 1),      # valid JSON, wrong content
    lambda text: "not json at all",
])
def test_corrupted_entry_is_detected_and_recomputed(isolated_cache, damage):
    clean = eg.run("signal_propagation", depth=3, width=8)
    (path,) = entries(isolated_cache)
    path.write_text(damage(path.read_text()))
    with pytest.warns(UserWarning, match="corrupted"):
        again = eg.run("signal_propagation", depth=3, width=8)
    pd.testing.assert_frame_equal(clean, again, check_exact=True)
    json.loads(path.read_text())  # rewritten whole


def test_tampered_numbers_fail_the_checksum(isolated_cache):
    eg.run("signal_propagation", depth=3, width=8)
    (path,) = entries(isolated_cache)
    entry = json.loads(path.read_text())
    entry["table"]["data"]["delta_norm"][0] *= 2
    path.write_text(json.dumps(entry))
    with pytest.warns(UserWarning, match="checksum"):
        assert cache.load(path.stem) is None


def test_failed_write_leaves_nothing(isolated_cache, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(cache.os, "replace", boom)
    with pytest.raises(OSError):
        eg.run("signal_propagation", depth=3, width=8)
    assert list(isolated_cache.iterdir()) == []


def test_nan_and_types_round_trip(isolated_cache):
    df = pd.DataFrame({"a": [1.5, float("nan"), float("inf")], "b": [1, 2, 3],
                       "c": ["x", "", "z"], "d": [True, False, True]})
    cache.store("k", df, {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = cache.load("k")
    pd.testing.assert_frame_equal(df, back, check_exact=True)
