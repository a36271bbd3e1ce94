import math

import pytest

import exploding_gradients as eg
from exploding_gradients.config import ConfigError, Param


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
