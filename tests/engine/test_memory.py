import dataclasses

import pytest

import exploding_gradients as eg
from exploding_gradients.cli import main
from exploding_gradients.engine import memory
from exploding_gradients.engine.params import ConfigError

GIB = 2**30


def config(name, **overrides):
    return eg.REGISTRY[name].resolve(overrides)


def test_every_experiment_has_an_estimate():
    for name in eg.REGISTRY:
        assert memory.estimate_bytes(eg.REGISTRY[name], config(name)) > 0, name


def test_huge_mlp_is_refused_up_front_with_the_estimate(monkeypatch, isolated_cache,
                                                         spy_experiment):
    calls = spy_experiment("signal_propagation")
    monkeypatch.setenv(memory.LIMIT_ENV_VAR, str(8 * GIB))
    with pytest.raises(ConfigError, match=r"needs about [0-9.]+ GiB") as err:
        eg.run("signal_propagation", depth=1000, width=8192)
    text = str(err.value)
    assert "8 GiB" in text and "depth=1000" in text and "width=8192" in text
    assert calls == [] and not isolated_cache.exists()


def test_refused_even_without_a_limit_set():
    # 1000 x 8192^2 float32 weights are 250 GiB before gradients: no machine here has that
    with pytest.raises(ConfigError, match="GiB"):
        eg.run("training", depth=1000, width=8192)


def test_small_config_passes(monkeypatch):
    monkeypatch.setenv(memory.LIMIT_ENV_VAR, str(GIB))
    assert memory.check_memory(eg.REGISTRY["signal_propagation"],
                                  config("signal_propagation", depth=3, width=8)) < GIB
    assert len(eg.run("signal_propagation", depth=3, width=8)) == 3


def test_estimate_grows_with_width_squared():
    est = [memory.estimate_terms(eg.REGISTRY["training"], config("training", width=w))["parameters"]
           for w in (1024, 2048, 4096)]
    assert 3.5 < est[1] / est[0] < 4.5 and 3.5 < est[2] / est[1] < 4.5
    total = [memory.estimate_bytes(eg.REGISTRY["signal_propagation"],
                                      config("signal_propagation", width=w, batch_size=2))
             for w in (2048, 4096)]
    assert total[1] > 3.5 * total[0] - 4 * memory.RUNTIME


@pytest.mark.parametrize("name, bigger", [
    ("signal_propagation", {"depth": 500}),
    ("training", {"n_train": 10**6}),
    ("sharpness", {"hessian_samples": 10**5, "n_train": 10**5}),
    ("lr_boundary", {"lr_ratios": [0.5, 1.0, 2.0, 4.0], "steps": 10**5}),
    ("rnn_gradients", {"seq_len": 10**4}),
    ("rnn_training", {"cell": "lstm"}),
])
def test_estimate_grows_with_size(name, bigger):
    assert memory.estimate_bytes(eg.REGISTRY[name], config(name, **bigger)) > \
        memory.estimate_bytes(eg.REGISTRY[name], config(name))


def test_hessian_costs_more_than_training():
    base = dict(depth=20, width=512, batch_size=64, steps=1)
    assert memory.estimate_bytes(eg.REGISTRY["sharpness"], config("sharpness", hessian_samples=64,
                                                        **base)) > \
        memory.estimate_bytes(eg.REGISTRY["training"], config("training", **base))


def test_limit_env_var(monkeypatch):
    cfg = config("signal_propagation", depth=3, width=8)
    need = memory.estimate_bytes(eg.REGISTRY["signal_propagation"], cfg)
    monkeypatch.setenv(memory.LIMIT_ENV_VAR, str(need))
    assert memory.check_memory(eg.REGISTRY["signal_propagation"], cfg) == need
    monkeypatch.setenv(memory.LIMIT_ENV_VAR, str(need - 1))
    with pytest.raises(ConfigError, match=memory.LIMIT_ENV_VAR):
        memory.check_memory(eg.REGISTRY["signal_propagation"], cfg)
    for bad in ("lots", "-1", "1e9", "１２"):
        monkeypatch.setenv(memory.LIMIT_ENV_VAR, bad)
        with pytest.raises(ConfigError, match=memory.LIMIT_ENV_VAR):
            memory.check_memory(eg.REGISTRY["signal_propagation"], cfg)


def test_available_memory_is_read_from_meminfo(monkeypatch, tmp_path):
    monkeypatch.delenv(memory.LIMIT_ENV_VAR, raising=False)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  100 kB\nMemAvailable:  42 kB\n")
    monkeypatch.setattr(memory, "Path", lambda _: meminfo)
    assert memory.available_bytes() == (42 * 1024, "available (MemAvailable in /proc/meminfo)")


def test_sweep_checks_every_point_before_the_first_runs(monkeypatch, isolated_cache):
    monkeypatch.setenv(memory.LIMIT_ENV_VAR, str(GIB))
    with pytest.raises(ConfigError, match="GiB"):
        eg.sweep("signal_propagation", [{"depth": 2}, {"depth": 1000, "width": 8192}], width=8)
    assert not isolated_cache.exists()


def test_cli_returns_2_for_a_configuration_too_large(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(memory.LIMIT_ENV_VAR, str(4 * GIB))
    code = main(["run", "signal_propagation", "--set", "depth=1000", "--set", "width=8192",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "needs about" in err and "GiB" in err
    assert not (tmp_path / "out").exists()


def test_an_experiment_without_an_estimate_is_not_refused():
    bare = dataclasses.replace(eg.REGISTRY["signal_propagation"], memory=None)
    assert memory.estimate_bytes(bare, {}) == 0
