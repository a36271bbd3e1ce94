import errno
import json
import os
import time
import warnings

import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients.engine import cache


def entries(folder):
    return sorted(folder.glob("*.json"))


def test_second_run_reads_the_cache(isolated_cache, spy_experiment):
    first = eg.run("signal_propagation", depth=3, width=8, seeds=2)
    assert len(entries(isolated_cache)) == 2
    calls = spy_experiment("signal_propagation")
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
    with pytest.warns(UserWarning, match="is not valid"):
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


def test_failed_write_leaves_nothing_and_keeps_the_result(isolated_cache, monkeypatch):
    clean = eg.run("signal_propagation", depth=3, width=8, use_cache=False)

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.os, "replace", boom)
    with pytest.warns(UserWarning, match="is full: results are computed but not cached"):
        again = eg.run("signal_propagation", depth=3, width=8)
    pd.testing.assert_frame_equal(clean, again, check_exact=True)
    assert [p for p in isolated_cache.iterdir() if p.suffix == ".tmp"] == []


def test_nan_and_types_round_trip(isolated_cache):
    df = pd.DataFrame({"a": [1.5, float("nan"), float("inf")], "b": [1, 2, 3],
                       "c": ["x", "", "z"], "d": [True, False, True]})
    cache.store("k", df, {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = cache.load("k")
    pd.testing.assert_frame_equal(df, back, check_exact=True)


# --------------------------------------------------------------------------- odd entries

def _entry_path(isolated_cache):
    eg.run("signal_propagation", depth=3, width=8)
    (path,) = entries(isolated_cache)
    return path


def _deeply_nested(path):
    path.write_text("[" * 100_000 + "]" * 100_000)


def _pyarrow_dtype(path):
    entry = json.loads(path.read_text())
    entry["table"]["dtypes"]["layer"] = "int64[pyarrow]"
    entry["checksum"] = cache._checksum(entry["table"])
    path.write_text(json.dumps(entry))


def _folder(path):
    path.unlink()
    (path / "inside").mkdir(parents=True)


def _symlink_loop(path):
    path.unlink()
    path.symlink_to(path)


def _fifo(path):
    path.unlink()
    os.mkfifo(path)


def _wrong_types(path):
    entry = json.loads(path.read_text())
    entry["table"]["data"]["delta_norm"][0] = {"nested": [1, 2]}
    entry["checksum"] = cache._checksum(entry["table"])
    path.write_text(json.dumps(entry))


@pytest.mark.parametrize("craft", [_deeply_nested, _pyarrow_dtype, _folder, _symlink_loop,
                                   _fifo, _wrong_types], ids=lambda f: f.__name__.strip("_"))
def test_an_entry_that_is_not_whole_plain_and_valid_is_recomputed(isolated_cache, craft):
    clean = eg.run("signal_propagation", depth=3, width=8, use_cache=False)
    path = _entry_path(isolated_cache)
    craft(path)
    with pytest.warns(UserWarning, match="is not valid"):
        again = eg.run("signal_propagation", depth=3, width=8)
    pd.testing.assert_frame_equal(clean, again, check_exact=True)
    assert path.is_file() and not path.is_symlink()  # replaced by a whole entry
    eg.run("signal_propagation", depth=3, width=8)  # and read back without a warning


def test_a_cache_path_that_is_a_file_is_refused_before_any_compute(tmp_path, monkeypatch,
                                                                   spy_experiment):
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    monkeypatch.setenv(cache.ENV_VAR, str(not_a_folder))
    calls = spy_experiment("signal_propagation")
    with pytest.raises(eg.ConfigError, match=f"environment variable {cache.ENV_VAR}"):
        eg.run("signal_propagation", depth=3, width=8)
    assert calls == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_computes_warns_and_keeps_the_results(isolated_cache):
    clean = eg.run("signal_propagation", depth=3, width=8, use_cache=False)
    path = _entry_path(isolated_cache)
    path.write_text("not json")  # corrupted, and cannot be removed below
    eg.run("signal_propagation", depth=2, width=8, use_cache=False)
    isolated_cache.chmod(0o555)
    try:
        with pytest.warns(UserWarning) as caught:
            again = eg.run("signal_propagation", depth=3, width=8)
            other = eg.run("signal_propagation", depth=4, width=8)
    finally:
        isolated_cache.chmod(0o755)
    pd.testing.assert_frame_equal(clean, again, check_exact=True)
    assert len(other) == 4
    text = " ".join(str(w.message) for w in caught)
    assert "could not be removed" in text and "not cached" in text


def test_a_read_only_cache_as_root_is_simulated(isolated_cache, monkeypatch):
    """The same path when the test runs as root (which ignores permissions): every write
    fails with EROFS."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(cache.tempfile, "mkstemp", read_only)
    with pytest.warns(UserWarning, match="is read-only: results are computed but not cached"):
        table = eg.run("signal_propagation", depth=3, width=8)
    assert len(table) == 3 and entries(isolated_cache) == []


def test_stale_temporaries_of_killed_writers_are_removed(isolated_cache, monkeypatch):
    isolated_cache.mkdir()
    stale, fresh = isolated_cache / ".abc-old.tmp", isolated_cache / ".abc-new.tmp"
    stale.write_text("{")
    fresh.write_text("{")
    old = time.time() - 2 * cache.STALE_SECONDS
    os.utime(stale, (old, old))
    monkeypatch.setattr(cache, "_swept", set())
    eg.run("signal_propagation", depth=3, width=8)
    assert not stale.exists() and fresh.exists()  # a writer may still own the fresh one
