"""Analysis helpers of the architecture-remedies chapter."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from exploding_gradients import analysis, timing
from exploding_gradients.init import lsuv_
from exploding_gradients.models import MLP, build_mlp


def test_residual_moments_start_with_the_textbook_factor_then_grow_faster():
    m = analysis.residual_relu_moments(1.0, 10)
    assert list(m["layer"]) == list(range(1, 11))
    assert m["q"].iloc[0] == 1.0 and m["mean"].iloc[0] == 0.0
    # No mean yet in the first block: exactly 1 + s^2.
    assert m["forward_factor"].iloc[0] == pytest.approx(2.0)
    # Then the branch's positive mean adds a cross term: every later factor is larger.
    assert (m["forward_factor"].iloc[1:] > 2.0).all()
    assert (np.diff(m["mean"]) > 0).all()
    np.testing.assert_allclose(m["preact_var"], 2 * m["q"])
    np.testing.assert_allclose(m["q"].iloc[1:].to_numpy() / m["q"].iloc[:-1].to_numpy(),
                               m["forward_factor"].iloc[:-1])


def test_residual_moments_asymptotic_factor_solves_the_fixed_point_equation():
    # For large depth q grows by g per block with g = 1 + s^2 + 2 s^2 / (pi (sqrt g - 1)).
    s = 1.0
    g = analysis.residual_relu_moments(s, 400)["forward_factor"].iloc[-1]
    assert g == pytest.approx(1 + s**2 + 2 * s**2 / (math.pi * (math.sqrt(g) - 1)), rel=1e-6)


def test_residual_moments_without_branch_are_constant_and_bad_input_is_refused():
    m = analysis.residual_relu_moments(0.0, 5, q0=3.0)
    np.testing.assert_allclose(m["q"], 3.0)
    np.testing.assert_allclose(m["forward_factor"], 1.0)
    with pytest.raises(ValueError):
        analysis.residual_relu_moments(0.5, 0)


def test_residual_moments_match_a_wide_simulated_network():
    """The recursion, including the mean term, against a wide random residual stack."""
    gen = torch.Generator().manual_seed(0)
    config = dict(width=2048, depth=8, activation="relu", normalization="none",
                  residual=True, residual_scale=0.5, init="he", sigma_w=1.0, sigma_b=0.0)
    model = build_mlp(config, d_in=2048, d_out=1, generator=gen)
    x = torch.randn(64, 2048, generator=gen)
    seen = []
    hooks = [b.linear.register_forward_hook(lambda m, i, o: seen.append(i[0].pow(2).mean()))
             for b in model.blocks]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    predicted = analysis.residual_relu_moments(0.5, 8)["q"].to_numpy()
    np.testing.assert_allclose(torch.stack(seen).numpy(), predicted, rtol=0.1)
    # The textbook law (1 + s^2)^l is clearly below the measurement at the last block.
    assert torch.stack(seen)[-1].item() > 1.2 * 1.25**7


def test_lsuv_prediction_relu_is_he_and_tanh_explodes_backwards():
    sw, chi = analysis.lsuv_prediction("relu")
    assert sw == pytest.approx(math.sqrt(2), rel=1e-6)
    assert chi == pytest.approx(1.0, rel=1e-6)
    sw, chi = analysis.lsuv_prediction("tanh")
    assert 1.5 < sw < 1.7 and 1.1 < chi < 1.25


def test_lsuv_prediction_matches_the_scale_lsuv_actually_sets():
    gen = torch.Generator().manual_seed(1)
    model = MLP(512, 512, 6, 1, activation="tanh")
    for lin in model.hidden_linears():
        torch.nn.init.orthogonal_(lin.weight, generator=gen)
        torch.nn.init.zeros_(lin.bias)
    lsuv_(model, torch.randn(512, 512, generator=gen))
    sw, _ = analysis.lsuv_prediction("tanh")
    # Deep layers see unit-variance inputs, so their weight scale is the prediction.
    measured = model.hidden_linears()[-1].weight.std().item() * math.sqrt(512)
    assert measured == pytest.approx(sw, rel=0.05)


def _table(losses, diverged_step=-1, acc=None):
    rows = [{"step": i, "layer": 0, "loss": v, "grad_norm": 1.0 + i, "diverged_step":
             diverged_step, "test_accuracy": np.nan} for i, v in enumerate(losses)]
    if acc is not None:
        rows[-1]["test_accuracy"] = acc
    rows.append({"step": 0, "layer": 1, "loss": np.nan, "grad_norm": 99.0,
                 "diverged_step": diverged_step, "test_accuracy": np.nan})
    return pd.DataFrame(rows)


def test_seed_outcomes_and_spread_keep_diverged_runs_visible():
    runs = pd.concat([
        _table([2.0] * 9 + [1.0], acc=0.8).assign(seed=0, cfg="a"),
        _table([2.0] * 9 + [0.5], acc=0.9).assign(seed=1, cfg="a"),
        _table([2.0, np.nan], diverged_step=1).assign(seed=0, cfg="b"),
    ], ignore_index=True)
    per_seed = analysis.seed_outcomes(runs, ["cfg"])
    a = per_seed[per_seed.cfg == "a"].sort_values("seed")
    assert list(a.final_accuracy) == [0.8, 0.9]
    assert list(a.initial_grad_norm) == [1.0, 1.0]  # layer rows (99) are ignored
    assert list(a.max_grad_norm) == [10.0, 10.0]
    b = per_seed[per_seed.cfg == "b"].iloc[0]
    assert b.diverged and math.isnan(b.final_accuracy) and math.isnan(b.final_loss)
    spread = analysis.outcome_spread(per_seed, ["cfg"], "final_accuracy").set_index("cfg")
    assert spread.loc["a", "diverged"] == "0/2" and spread.loc["b", "diverged"] == "1/1"
    assert (spread.loc["a", "median"], spread.loc["a", "min"], spread.loc["a", "max"]) == \
        pytest.approx((0.85, 0.8, 0.9))
    assert math.isnan(spread.loc["b", "median"])


def test_seed_outcomes_work_on_recurrent_tables_without_accuracy():
    runs = pd.DataFrame({"step": [0, 1, 2], "loss": [0.2, 0.1, 0.05],
                         "grad_norm": [3.0, 2.0, np.inf], "diverged_step": -1, "seed": 0,
                         "cell": "gru"})
    per_seed = analysis.seed_outcomes(runs, ["cell"])
    assert per_seed.loc[0, "max_grad_norm"] == 3.0
    assert math.isnan(per_seed.loc[0, "final_accuracy"])


def test_time_ratios_separate_the_cost_per_step_from_the_one_off_cost(monkeypatch):
    """A fake experiment whose 'run time' is setup + steps * per_step: the variant is
    twice as slow per step and pays 5 base steps more once."""
    import types

    order = []

    def func(config, seed):
        slow = config.get("normalization") == "batch"
        per_step, setup = (2.0, 15.0) if slow else (1.0, 10.0)
        order.append((slow, config["steps"]))
        return setup + per_step * config["steps"]

    fake = types.SimpleNamespace(resolve=dict, func=func)
    monkeypatch.setattr(timing, "get", lambda name: fake)
    monkeypatch.setattr(timing, "_cpu_seconds", lambda fn: fn())
    out = timing.time_ratios("fake", {}, {"bn": {"normalization": "batch"}}, steps=(2, 6),
                             rounds=2)
    np.testing.assert_allclose(out["ratio"], 2.0)
    np.testing.assert_allclose(out["extra_setup_steps"], 5.0)
    np.testing.assert_allclose(out["step_seconds"], 2.0)
    # warm-up, then round 0 with the base first, round 1 with the variant first
    assert order[0] == (False, 2)
    assert [slow for slow, _ in order[1:]] == [False, False, True, True,
                                               True, True, False, False]
    with pytest.raises(ValueError):
        timing.time_ratios("fake", {}, {}, steps=(5, 5))


def test_time_ratios_really_time_the_runs():
    base = dict(depth=2, width=4, n_train=16, batch_size=4, log_every=1)
    out = timing.time_ratios("training", base, {"deeper": {"depth": 3}}, steps=(1, 4),
                             rounds=1)
    assert len(out) == 1 and np.isfinite(out.loc[0, "ratio"])
