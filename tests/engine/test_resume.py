"""Interrupted and concurrent sweeps: the cache makes both safe.

A killed sweep loses at most the seed in flight, and rerunning it resumes from the cache
to exactly the results of an uninterrupted run; two sweeps writing one cache at once
leave only whole, valid entries.
"""

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import pandas as pd
import pytest

from exploding_gradients.engine import cache

# The per-seed loop caches each seed as it finishes (the batched engine caches a whole
# ensemble at once), so a kill can land between two cached seeds.
SWEEP = ["run", "training", "--set", "depth=6", "--set", "width=32", "--set", "steps=40",
         "--set", "log_every=20", "--set", "engine=loop", "--seeds", "24"]


def cli(args, cache_dir, **kwargs):
    env = {**os.environ, cache.ENV_VAR: str(cache_dir), "OMP_NUM_THREADS": "1"}
    # A shell that starts jobs in the background (as CI may) ignores SIGINT, and children
    # inherit that; restore the default so Ctrl-C reaches the sweep as it would a user's.
    return subprocess.Popen([sys.executable, "-m", "exploding_gradients", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            **kwargs)


def entries(cache_dir):
    return sorted(cache_dir.glob("*.json")) if cache_dir.exists() else []


def assert_cache_is_whole(cache_dir, monkeypatch):
    assert not list(cache_dir.glob("*.tmp")), "a temporary file was left behind"
    monkeypatch.setenv(cache.ENV_VAR, str(cache_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a corrupted entry would warn
        for path in entries(cache_dir):
            json.loads(path.read_text())
            assert cache.load(path.stem) is not None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path, sig, monkeypatch):
    reference = cli([*SWEEP, "--out", str(tmp_path / "ref")], tmp_path / "ref-cache")
    assert reference.wait(timeout=300) == 0

    cache_dir = tmp_path / "cache"
    victim = cli([*SWEEP, "--out", str(tmp_path / "out")], cache_dir)
    deadline = time.monotonic() + 120
    while len(entries(cache_dir)) < 3 and victim.poll() is None:
        assert time.monotonic() < deadline, "the sweep never started writing its cache"
        time.sleep(0.02)
    victim.send_signal(sig)
    victim.wait(timeout=60)
    done = len(entries(cache_dir))
    assert 3 <= done < 24, f"the kill should land mid-sweep ({done} of 24 seeds cached)"
    assert_cache_is_whole(cache_dir, monkeypatch)
    before = {p.name: p.stat().st_mtime_ns for p in entries(cache_dir)}
    assert not (tmp_path / "out" / "results.csv").exists()

    resumed = cli([*SWEEP, "--out", str(tmp_path / "out")], cache_dir)
    assert resumed.wait(timeout=300) == 0
    assert len(entries(cache_dir)) == 24
    after = {p.name: p.stat().st_mtime_ns for p in entries(cache_dir)}
    assert all(after[name] == mtime for name, mtime in before.items()), \
        "the rerun recomputed seeds that were already cached instead of resuming"
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "results.csv"),
                                  pd.read_csv(tmp_path / "ref" / "results.csv"),
                                  check_exact=True)


def test_two_sweeps_share_one_cache_safely(tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first = cli([*SWEEP, "--out", str(tmp_path / "a")], cache_dir)
    second = cli([*SWEEP, "--out", str(tmp_path / "b")], cache_dir)
    assert first.wait(timeout=300) == 0 and second.wait(timeout=300) == 0
    assert len(entries(cache_dir)) == 24
    assert_cache_is_whole(cache_dir, monkeypatch)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "results.csv"),
                                  pd.read_csv(tmp_path / "b" / "results.csv"),
                                  check_exact=True)
