import math

import pytest

import exploding_gradients as eg
from exploding_gradients.engine.params import ConfigError, Param


@pytest.mark.parametrize("overrides, named", [
    ({"dept": 10}, "dept"),                      # unknown parameter name
    ({"depth": "many"}, "depth"),                # wrong type
    ({"depth": -3}, "depth"),                    # negative depth
    ({"depth": 2.5}, "depth"),                   # not an integer
    ({"depth": True}, "depth"),                  # a bool is not a depth
    ({"activation": "swishy"}, "activation"),    # unknown activation
    ({"sigma_w": float("nan")}, "sigma_w"),      # NaN
    ({"sigma_w": "inf"}, "sigma_w"),             # Inf as a string
    ({"init": ""}, "init"),                      # empty string
])
def test_bad_signal_propagation_input_is_refused_by_name(overrides, named):
    with pytest.raises(ConfigError, match=named):
        eg.run("signal_propagation", seeds=1, **overrides)


@pytest.mark.parametrize("lr", [float("nan"), -0.1, 0.0, "fast"])
def test_bad_learning_rate_is_refused(lr):
    with pytest.raises(ConfigError, match="'lr'"):
        eg.run("training", lr=lr, steps=1)


def test_error_lists_allowed_values():
    with pytest.raises(ConfigError) as err:
        eg.run("signal_propagation", activation="swishy")
    assert "relu" in str(err.value) and "tanh" in str(err.value)


def test_bad_input_fails_before_any_compute(isolated_cache):
    with pytest.raises(ConfigError):
        eg.sweep("signal_propagation", [{"depth": 3}, {"depth": -1}], width=8)
    assert not isolated_cache.exists(), "the valid first point must not have run"


def test_unknown_experiment_lists_known_ones():
    with pytest.raises(ConfigError, match="signal_propagation"):
        eg.run("no_such_experiment")


@pytest.mark.parametrize("seeds", [0, -1, "many", True, 2.0])
def test_bad_seed_count(seeds):
    with pytest.raises(ConfigError, match="seeds"):
        eg.run("signal_propagation", seeds=seeds, depth=2, width=4)


def test_strings_from_the_command_line_are_coerced():
    p = Param("x", "int", 1, low=1)
    assert p.validate("12") == 12 and p.validate("1e3") == 1000
    assert Param("b", "bool", False).validate("true") is True
    assert Param("l", "list[float]", [1.0]).validate("[0.5, 2]") == [0.5, 2.0]
    assert math.isclose(Param("f", "float", 1.0).validate("0.25"), 0.25)


def test_dates_from_yaml_are_refused():
    import datetime

    with pytest.raises(ConfigError, match="depth"):
        Param("depth", "int", 1).validate(datetime.date(2024, 1, 1))


# Found by tests/test_fuzz.py; each of these used to escape as another exception or be
# accepted silently.
@pytest.mark.parametrize("value", [10**400, -(10**400), 10**5000], ids=["e400", "-e400", "e5000"])
def test_huge_ints_are_refused_not_overflowed(value):
    for name in ("depth", "sigma_w"):
        with pytest.raises(ConfigError, match=name) as err:
            eg.REGISTRY["signal_propagation"].resolve({name: value})
        assert len(str(err.value)) < 500  # no 5000-digit echo


@pytest.mark.parametrize("text", ["１２", "٣", "1_000", "0x10", " nan ", "9" * 5000],
                         ids=["fullwidth", "arabic", "underscore", "hex", "nan", "5000-digits"])
def test_only_plain_ascii_numbers_are_read(text):
    with pytest.raises(ConfigError, match="depth"):
        Param("depth", "int", 1, low=1, high=10**6).validate(text)


def test_negative_zero_is_zero():
    value = Param("s", "float", 1.0, low=0.0).validate(-0.0)
    assert value == 0.0 and math.copysign(1.0, value) == 1.0


def test_numpy_scalars_are_numbers():
    import numpy as np

    assert Param("d", "int", 1).validate(np.int64(7)) == 7
    assert type(Param("d", "int", 1).validate(np.int64(7))) is int
    assert Param("f", "float", 1.0).validate(np.float32(0.5)) == 0.5
    with pytest.raises(ConfigError):
        Param("d", "int", 1).validate(np.bool_(True))


def test_list_element_errors_say_which_element():
    with pytest.raises(ConfigError, match=r"'relu_sigma_w': element 1 of the list: got 'a'"):
        Param("relu_sigma_w", "list[float]", [1.0], low=0.01, high=10).validate([1, "a"])


def test_unknown_names_of_mixed_types():
    with pytest.raises(ConfigError, match="unknown parameter"):
        eg.REGISTRY["training"].resolve({1: 2, "dept": 3})
    with pytest.raises(ConfigError, match="mapping"):
        eg.REGISTRY["training"].resolve([("depth", 3)])
    with pytest.raises(ConfigError, match="unknown experiment"):
        eg.run(["training"])


@pytest.mark.parametrize("name, overrides, named", [
    ("training", {"normalization": "batch", "batch_size": 1}, "batch_size"),
    ("lr_boundary", {"normalization": "batch", "batch_size": 1}, "batch_size"),
    ("sharpness", {"normalization": "batch", "hessian_samples": 1}, "hessian_samples"),
    ("lr_boundary", {"normalization": "batch", "n_train": 1, "batch_size": 2}, "n_train"),
])
def test_batch_norm_needs_two_samples(name, overrides, named):
    # used to fail deep inside torch: "Expected more than 1 value per channel"
    with pytest.raises(ConfigError, match=f"'{named}'.*normalization='batch'"):
        eg.run(name, **overrides)


def test_batch_norm_single_sample_fine_without_training_steps():
    eg.REGISTRY["sharpness"].resolve({"normalization": "batch", "batch_size": 1, "steps": 0})
