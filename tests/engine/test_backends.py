"""Sweep backends: local worker processes and a dask cluster give the serial tables bit
for bit, share the results cache with serial runs, and bad settings fail before compute."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import distributed
import pandas as pd
import pytest
import torch

import exploding_gradients as eg
from exploding_gradients import chapters, train
from exploding_gradients.cli import main
from exploding_gradients.engine import backends, cache, runner
from exploding_gradients.engine.params import ConfigError

SWEEP = dict(name="signal_propagation", grid=[{"sigma_w": 1.0}, {"sigma_w": 2.0}], seeds=2,
             depth=3, width=8)
TRAINING = dict(name="training", depth=2, width=8, steps=5, seeds=2)
WORKERS = min(2, os.cpu_count() or 1)  # 'local' allows at most one worker per core


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Serial runs in this process use one torch thread, as every worker does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    backends.shutdown()  # the local pool


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A dask LocalCluster started by the test; its workers inherit a decoy cache folder,
    which must stay empty: jobs are told the caller's folder explicitly."""
    decoy = tmp_path_factory.mktemp("decoy-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(cache.ENV_VAR, str(decoy))
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
    with cluster:
        yield cluster.scheduler_address
        backends.shutdown()  # close our client before its cluster
    assert not any(decoy.iterdir()), "a worker used its inherited cache folder"


@pytest.fixture(params=["local", "dask"])
def parallel(request):
    """Keyword arguments selecting each parallel backend."""
    if request.param == "local":
        return dict(backend="local", workers=WORKERS)
    return dict(backend="dask", scheduler=request.getfixturevalue("scheduler"))


def fail(*args):
    raise AssertionError("must not be called here")


def test_parallel_tables_equal_serial_and_share_its_cache(parallel, isolated_cache,
                                                          monkeypatch):
    serial_sweep = eg.sweep(**SWEEP, use_cache=False)
    serial_training = eg.run(**TRAINING, use_cache=False)
    # computed on the workers, which write the cache
    par_sweep = eg.sweep(**SWEEP, **parallel)
    par_training = eg.run(**TRAINING, **parallel)
    pd.testing.assert_frame_equal(par_sweep, serial_sweep, check_exact=True)
    pd.testing.assert_frame_equal(par_training, serial_training, check_exact=True)
    assert len(list(isolated_cache.glob("*.json"))) == 4 + 2

    # a serial run finds every entry: it would store any entry it had to compute
    monkeypatch.setattr(cache, "store", fail)
    pd.testing.assert_frame_equal(eg.sweep(**SWEEP), serial_sweep, check_exact=True)
    pd.testing.assert_frame_equal(eg.run(**TRAINING), serial_training, check_exact=True)


@pytest.mark.parametrize("settings, named", [
    (dict(backend="threads"), "backend"),
    (dict(backend=3), "backend"),
    (dict(backend="local", workers=0), "workers"),
    (dict(backend="local", workers=10**6), "workers"),
    (dict(backend="local", workers="two"), "workers"),
    (dict(backend="serial", workers=2), "workers"),
    (dict(backend="local", scheduler="tcp://127.0.0.1:8786"), "scheduler"),
    (dict(backend="dask", scheduler="not an address"), "scheduler"),
    (dict(backend="dask", scheduler=8786), "scheduler"),
    (dict(backend="dask", scheduler="tcp://127.0.0.1:8786", workers=2), "workers"),
])
def test_bad_settings_are_refused_before_compute(settings, named, monkeypatch):
    monkeypatch.setattr(runner, "_any_job", fail)  # the serial backend's compute
    monkeypatch.setattr(backends, "_executor", fail)  # the parallel ones' pools
    before = backends.check_backend()
    for call in (lambda: eg.run("signal_propagation", depth=2, width=4, **settings),
                 lambda: eg.sweep("signal_propagation", [{"depth": 2}], **settings),
                 lambda: eg.set_backend(**settings)):
        with pytest.raises(ConfigError, match=f"^parameter '{named}': got .*; allowed: "):
            call()
    assert backends.check_backend() == before  # a refused default changes nothing


def test_backend_error_lists_the_backends():
    with pytest.raises(ConfigError, match="allowed: one of 'serial', 'local', 'dask'"):
        backends.check_backend("threads")


def test_every_grid_point_is_checked_before_the_first_job(monkeypatch):
    monkeypatch.setattr(backends, "_executor", fail)
    with pytest.raises(ConfigError, match="'depth'"):
        eg.sweep("signal_propagation", [{"depth": 2}, {"depth": -1}], backend="local")


def test_default_backend_is_process_wide_and_scoped():
    assert backends.check_backend() == backends.Backend("serial")
    with eg.use_backend("local", workers=WORKERS):
        assert backends.check_backend() == backends.Backend("local", None, WORKERS)
        assert backends.check_backend(workers=1).workers == 1  # overrides the default's
    assert backends.check_backend() == backends.Backend("serial")


def test_chapters_take_backend_and_scheduler_parameters_and_set_nothing():
    causes = chapters.get("causes")
    params = causes.parameters({"profile": "quick", "backend": "dask",
                                "scheduler": "tcp://127.0.0.1:8786"}, before={})
    assert params.backend == "dask" and params.scheduler == "tcp://127.0.0.1:8786"
    assert backends.check_backend() == backends.Backend("serial")  # nothing was set
    params = causes.parameters({"profile": "quick"}, before={})
    assert (params.backend, params.scheduler) == ("serial", None)
    with pytest.raises(ConfigError, match="parameter 'backend'"):
        causes.parameters({"backend": "gpu"}, before={})
    with pytest.raises(ConfigError, match="parameter 'scheduler'"):
        causes.parameters({"scheduler": "tcp://127.0.0.1:8786"}, before={})


def test_progress_bar_only_when_asked_or_on_a_terminal(capsys):
    eg.run("signal_propagation", depth=2, width=4, seeds=2)
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal
    eg.run("signal_propagation", depth=2, width=4, seeds=2, progress=True)
    assert "2/2" in capsys.readouterr().err


def test_cli_local_backend_matches_serial(tmp_path, capsys):
    args = ["run", "signal_propagation", "--set", "depth=3", "--set", "width=8", "--seeds", "3"]
    assert main([*args, "--out", str(tmp_path / "serial"), "--no-cache"]) == 0
    assert main([*args, "--out", str(tmp_path / "local"), "--backend", "local",
                 "--workers", str(WORKERS)]) == 0
    serial, local = (pd.read_csv(tmp_path / d / "results.csv") for d in ("serial", "local"))
    pd.testing.assert_frame_equal(local, serial, check_exact=True)
    assert json.loads((tmp_path / "local" / "config.json").read_text())["seeds"] == 3

    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "bad"), "--backend", "threads"]) == 2
    assert "parameter 'backend'" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "bad"), "--workers", "2"]) == 2
    assert "parameter 'workers'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_resolve_device(monkeypatch):
    assert train.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"parameter 'device': got 'cuda'.*allowed: 'auto'"):
        train.resolve_device("cuda")
    with pytest.raises(ConfigError, match="parameter 'device'"):
        train.resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert train.resolve_device("auto") == torch.device("cuda")


def test_training_takes_a_device_and_refuses_cuda_without_it_before_any_compute():
    tiny = dict(depth=2, width=8, steps=3, n_train=32, batch_size=8)
    cpu = eg.run("training", tiny, use_cache=False)
    auto = eg.run("training", tiny, device="auto", use_cache=False)
    if not torch.cuda.is_available():
        assert cpu.equals(auto)  # auto is the CPU here, bit for bit
        with pytest.raises(eg.ConfigError, match="device"):
            eg.REGISTRY["training"].resolve({"device": "cuda"})


def _children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(c) for c in text.split()}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_local_workers_die_with_their_parent(tmp_path, sig):
    """Workers (hundreds of MB each) must not outlive a killed parent."""
    script = ("import exploding_gradients as eg\n"
              "if __name__ == '__main__':\n"
              "    eg.sweep('training', [{'lr': 0.001 * i} for i in range(1, 9)], "
              "backend='local', workers=2, depth=8, width=64, steps=20000, use_cache=False)\n")
    (tmp_path / "sweep.py").write_text(script)
    env = {**os.environ, cache.ENV_VAR: str(tmp_path / "cache")}
    parent = subprocess.Popen([sys.executable, str(tmp_path / "sweep.py")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while len(workers) < 2:  # the pool's workers (and its resource tracker)
        assert parent.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
        workers = {pid for pid in _children(parent.pid)
                   if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()}
    parent.send_signal(sig)
    parent.wait(timeout=60)
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "workers outlived their parent"
        time.sleep(0.2)


@pytest.fixture
def odd_server():
    """``serve(reply)``: a TCP server on 127.0.0.1 that accepts connections and then
    says ``reply`` (bytes) or nothing at all (None); returns its address."""
    import socket
    import threading

    servers = []

    def serve(reply):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        servers.append(server)

        def loop():
            conns = []
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                conns.append(conn)  # kept open: a silent peer
                if reply is not None:
                    conn.sendall(reply)

        threading.Thread(target=loop, daemon=True).start()
        return f"tcp://127.0.0.1:{server.getsockname()[1]}"

    yield serve
    for server in servers:
        server.close()


@pytest.mark.parametrize("reply, says", [
    (None, "no dask scheduler answered"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * 1000, "cannot use"),
], ids=["silent", "not-dask"])
def test_a_scheduler_that_is_not_one_is_named_within_a_time_limit(odd_server, monkeypatch,
                                                                  reply, says):
    monkeypatch.setattr(backends, "CONNECT_SECONDS", 2)
    address = odd_server(reply)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=f"parameter 'scheduler': {says}"):
        eg.run("signal_propagation", depth=2, width=4, backend="dask", scheduler=address)
    assert time.monotonic() - start < 20
