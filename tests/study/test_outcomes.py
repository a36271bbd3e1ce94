"""The one reduction of training runs (run_outcomes), its group summary, text helpers,
spike counts and warnings."""

import math

import numpy as np
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients.engine.registry import get
from exploding_gradients.experiments.feedforward import make_data
from exploding_gradients.study import outcomes

TINY = dict(depth=2, width=8, steps=6, log_every=2, task="regression")


def test_run_outcomes_of_a_healthy_a_diverged_and_a_stopped_run():
    runs = eg.sweep("training", [{"lr": 0.01}, {"lr": 1e3}, {"lr": 1e3, "stop_factor": 2.0}],
                    seeds=2, **TINY)
    out = outcomes.run_outcomes(runs, ["lr", "stop_factor"]).set_index(["lr", "stop_factor",
                                                                       "seed"])
    assert len(out) == 6
    healthy = out.xs(0.01, level="lr").iloc[0]
    assert not healthy["diverged"] and not healthy["stopped"]
    assert healthy["last_step"] == TINY["steps"]
    whole = runs[(runs.layer == 0) & (runs.lr == 0.01) & (runs.seed == 0)]
    assert healthy["final_loss"] == whole["loss"].iloc[-1]
    assert healthy["first_loss"] == whole["loss"].iloc[0]
    assert healthy["final_test_loss"] == whole["test_loss"].dropna().iloc[-1]
    assert healthy["first_update_ratio"] == whole["update_ratio"].iloc[0]
    blown = out[out.index.get_level_values("lr") == 1e3]
    diverged = blown[~blown["stopped"]]
    assert diverged["diverged"].all() and diverged["final_loss"].isna().all()
    assert diverged["final_test_loss"].isna().all() and (diverged["diverged_step"] >= 0).all()
    stopped = blown[blown["stopped"]]
    assert len(stopped) == 2 and not stopped["diverged"].any()
    assert np.isfinite(stopped["final_loss"]).all()  # the restored weights' loss
    assert (stopped["stopped_step"] <= diverged["diverged_step"].to_numpy()).all()


def test_run_outcomes_reads_rnn_tables_without_test_loss():
    runs = eg.run("rnn_training", cell="rnn", seq_len=5, hidden_size=4, steps=4, log_every=2,
                  seeds=2)
    out = outcomes.run_outcomes(runs)
    assert list(out["seed"]) == [0, 1]
    assert out["first_test_loss"].isna().all() and out["first_update_ratio"].isna().all()
    assert (out["last_step"] == 4).all()


def test_blew_up_flags_a_diverged_run_and_a_finite_loss_that_grew_past_the_factor():
    runs = eg.sweep("training", [{"lr": 0.01}, {"lr": 1e3}], seeds=1, **TINY)
    out = outcomes.run_outcomes(runs, ["lr"]).set_index("lr")
    assert not out.loc[0.01, "blew_up"] and out.loc[1e3, "blew_up"]
    ratio = out.loc[0.01, "final_test_loss"] / out.loc[0.01, "first_test_loss"]
    # the same healthy run counts as blown up once the factor is below its own ratio
    low = outcomes.run_outcomes(runs, ["lr"], blow_up=ratio / 2).set_index("lr")
    assert low.loc[0.01, "blew_up"] == (ratio > ratio / 2)
    assert list(low.columns[:-1]) == list(out.columns[:-1])  # the other columns unchanged


def test_outcome_summary_counts_and_ignores_diverged_values():
    per_run = pd.DataFrame({
        "g": ["a", "a", "a", "b"], "seed": [0, 1, 2, 0],
        "diverged": [False, True, False, True], "diverged_step": [-1, 7, -1, 3],
        "stopped": [False, False, True, False], "final_loss": [1.0, np.nan, 3.0, np.nan]})
    s = outcomes.summarize(per_run, ["g"], "final_loss").set_index("g")
    assert s.loc["a", "diverged"] == "1/3" and s.loc["a", "stopped"] == "1/3"
    assert s.loc["a", "median"] == 2.0 and s.loc["a", "min"] == 1.0 and s.loc["a", "max"] == 3.0
    assert s.loc["a", "median_diverged_step"] == 7
    assert s.loc["b", "n_diverged"] == 1 and math.isnan(s.loc["b", "median"])


def test_training_table_reads_each_group_from_run_outcomes():
    runs = eg.sweep("training", [{"lr": 0.01}, {"lr": 1e6}], seeds=2,
                    **{**TINY, "task": "classification"})
    table = outcomes.training_table(runs, ["lr"]).set_index("lr")
    per_run = outcomes.run_outcomes(runs, ["lr"])
    healthy = per_run[per_run.lr == 0.01]
    assert list(table["diverged"]) == ["0/2", "2/2"]
    assert table.loc[0.01, "initial gradient norm"] == healthy["first_grad_norm"].median()
    assert table.loc[0.01, "final training loss"] == healthy["final_loss"].median()
    assert table.loc[0.01, "final test accuracy"] == healthy["final_accuracy"].mean() > 0
    assert math.isnan(table.loc[1e6, "final training loss"])  # every run diverged
    assert np.isfinite(table.loc[1e6, "initial gradient norm"])  # yet it had a start


def test_count_spikes():
    flat = np.ones(30)
    assert outcomes.count_spikes(flat) == 0
    spiky = flat.copy()
    spiky[[12, 25]] = 5.0
    assert outcomes.count_spikes(spiky, factor=3, window=10) == 2
    assert outcomes.count_spikes(spiky, factor=3, window=10, start=20) == 1
    assert outcomes.count_spikes(spiky, factor=6, window=10) == 0
    spiky[28] = np.inf
    assert outcomes.count_spikes(spiky, factor=3, window=10, start=20) == 2


def _table(losses, diverged_step=-1, acc=None):
    rows = [{"step": i, "layer": 0, "loss": v, "grad_norm": 1.0 + i, "diverged_step":
             diverged_step, "test_accuracy": np.nan} for i, v in enumerate(losses)]
    if acc is not None:
        rows[-1]["test_accuracy"] = acc
    rows.append({"step": 0, "layer": 1, "loss": np.nan, "grad_norm": 99.0,
                 "diverged_step": diverged_step, "test_accuracy": np.nan})
    return pd.DataFrame(rows)


def test_run_outcomes_and_summary_keep_diverged_runs_visible():
    runs = pd.concat([
        _table([2.0] * 9 + [1.0], acc=0.8).assign(seed=0, cfg="a"),
        _table([2.0] * 9 + [0.5], acc=0.9).assign(seed=1, cfg="a"),
        _table([2.0, np.nan], diverged_step=1).assign(seed=0, cfg="b"),
    ], ignore_index=True)
    per_seed = outcomes.run_outcomes(runs, ["cfg"], tail=0.1)
    a = per_seed[per_seed.cfg == "a"].sort_values("seed")
    assert list(a.final_accuracy) == [0.8, 0.9]
    assert list(a.first_grad_norm) == [1.0, 1.0]  # layer rows (99) are ignored
    assert list(a.max_grad_norm) == [10.0, 10.0]
    assert list(a.final_loss) == [1.0, 0.5]  # the last tenth of 10 steps: the last one
    b = per_seed[per_seed.cfg == "b"].iloc[0]
    assert b.diverged and math.isnan(b.final_accuracy) and math.isnan(b.final_loss)
    spread = outcomes.summarize(per_seed, ["cfg"], "final_accuracy").set_index("cfg")
    assert spread.loc["a", "diverged"] == "0/2" and spread.loc["b", "diverged"] == "1/1"
    assert (spread.loc["a", "median"], spread.loc["a", "min"], spread.loc["a", "max"]) == \
        pytest.approx((0.85, 0.8, 0.9))
    assert math.isnan(spread.loc["b", "median"])


def test_run_outcomes_tail_is_a_mean_over_the_last_steps():
    runs = pd.DataFrame({"step": range(10), "loss": [9.0] * 8 + [1.0, 3.0], "grad_norm": 1.0,
                         "diverged_step": -1, "seed": 0})
    assert outcomes.run_outcomes(runs, tail=0.2)["final_loss"].iloc[0] == 2.0
    assert outcomes.run_outcomes(runs)["final_loss"].iloc[0] == 3.0


def test_run_outcomes_work_on_recurrent_tables_without_accuracy():
    runs = pd.DataFrame({"step": [0, 1, 2], "loss": [0.2, 0.1, 0.05],
                         "grad_norm": [3.0, 2.0, np.inf], "diverged_step": -1, "seed": 0,
                         "cell": "gru", "lag_ratio": [0.5, np.nan, 0.1]})
    per_seed = outcomes.run_outcomes(runs, ["cell"])
    assert per_seed.loc[0, "max_grad_norm"] == 3.0
    assert math.isnan(per_seed.loc[0, "final_accuracy"])
    assert (per_seed.loc[0, "lag_ratio_start"], per_seed.loc[0, "lag_ratio_end"]) == (0.5, 0.1)


def test_text_helpers():
    assert outcomes.k_of_n([True, False, True]) == "2/3"
    assert outcomes.med_range([1.0, 2.0, 10.0]) == "2 [1, 10]"
    assert outcomes.med_range([0.5], "{:.2f}") == "0.50"
    assert outcomes.med_range([np.nan]) == "–"


@pytest.mark.parametrize("task", ["classification", "regression", "sort", "images"])
def test_constant_output_loss(task):
    arch = {"sort": "transformer", "images": "cnn"}.get(task, "mlp")
    config = {"task": task, "architecture": arch, "n_train": 64,
              **({"d_in": 8} if arch == "mlp" else {})}
    loss = outcomes.constant_output_loss(config)
    data = make_data(get("training").resolve(config))
    if task != "regression":  # uniform over the classes, at every position of a sequence
        assert loss == pytest.approx(math.log(data.d_out))
    else:
        assert loss == pytest.approx(0.5 * data.y_test.pow(2).mean().item())


def _steps(losses, diverged_step=-1, seed=0, **extra):
    return pd.DataFrame({"step": range(len(losses)), "loss": losses,
                         "grad_norm": [float(v) for v in range(1, len(losses) + 1)],
                         "diverged_step": diverged_step, "seed": seed, **extra})


def test_run_outcomes_tail_final_loss_and_divergence():
    runs = pd.concat([
        _steps([4.0] + [2.0] * 9, seed=0, clip="norm"),
        _steps([4.0, 8.0, math.nan], diverged_step=2, seed=1, clip="norm"),
    ])
    out = outcomes.run_outcomes(runs, ["clip"], tail=0.2).set_index("seed")
    assert out.loc[0, "final_loss"] == 2.0 and out.loc[0, "final_over_first"] == 0.5
    assert not out.loc[0, "diverged"] and out.loc[1, "diverged"]
    assert math.isnan(out.loc[1, "final_loss"]) and out.loc[1, "diverged_step"] == 2
    with_layers = pd.concat([runs.assign(layer=0), runs.assign(layer=1, loss=99.0)])
    pd.testing.assert_frame_equal(outcomes.run_outcomes(with_layers, ["clip"], tail=0.2),
                                  outcomes.run_outcomes(runs, ["clip"], tail=0.2))


def test_mean_grad_norm_over_the_window_uses_finite_steps_only():
    run = _steps([1.0] * 6, seed=0)
    run.loc[4, "grad_norm"] = math.inf
    out = outcomes.mean_grad_norm(run, window=5)
    assert out["mean_grad_norm"].iloc[0] == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert out["median_grad_norm"].iloc[0] == pytest.approx(2.5)
    assert out["steps_used"].iloc[0] == 4


def test_spike_warnings_measures_the_lead_before_divergence():
    def run(seed, norms, diverged):
        return pd.DataFrame({"seed": seed, "layer": 0, "step": range(len(norms)),
                             "grad_norm": norms, "diverged_step": diverged})

    steady = [1.0] * 30
    table = pd.concat([
        # an early transient at 8, the final blow-up from 25, NaN at step 29
        run(0, steady[:8] + [50.0] + steady[:16] + [20.0, 400.0, 1e4, 1e6, float("nan")], 29),
        run(1, steady, -1),                                   # healthy: no flag
        run(2, steady[:20] + [1.5, 2.0, float("inf")], 22),   # diverges without warning
    ])
    out = outcomes.spike_warnings(table, window=10, min_history=5).set_index("seed")
    assert out.loc[0, "n_flags"] == 5  # 8, 25, 26, 27, 28 (the NaN step is not judged)
    assert (out.loc[0, "first_flag"], out.loc[0, "lead_first"]) == (8, 21)
    assert (out.loc[0, "episode_start"], out.loc[0, "lead_episode"]) == (25, 4)
    assert out.loc[0, "final_streak"] == 4 and out.loc[2, "final_streak"] == 0
    assert math.isnan(out.loc[1, "final_streak"])
    assert out.loc[1, "n_flags"] == 0 and math.isnan(out.loc[1, "lead_first"])
    assert out.loc[2, "diverged_step"] == 22 and math.isnan(out.loc[2, "lead_episode"])


def test_blew_up_counts_a_finite_loss_far_above_its_start_and_every_divergence():
    rows = []
    for seed, (loss, diverge_at) in enumerate([([1.0, 0.5, 0.2], -1), ([1.0, 5.0, 20.0], -1),
                                              ([1.0, 9.0, 10.0], -1), ([1.0, 2.0, np.nan], 2)]):
        rows.append(pd.DataFrame({"seed": seed, "step": range(3), "loss": loss,
                                  "diverged_step": diverge_at, "stopped_step": -1}))
    out = outcomes.run_outcomes(pd.concat(rows, ignore_index=True))
    assert out["blew_up"].tolist() == [False, True, False, True]
    assert out.columns[-1] == "blew_up"  # added after the columns pages already read
    assert outcomes.run_outcomes(rows[2], blow_up=5.0)["blew_up"].item()


def test_skipping_hid_a_divergence_when_most_late_updates_were_skipped():
    assert not outcomes.skipping_hid([0.0] * 7 + [1.0, 0.0, 0.0])  # the last fifth: none
    assert outcomes.skipping_hid([0.0] * 8 + [0.0, 1.0])  # half of the last fifth
    assert outcomes.skipping_hid([0.0] * 8 + [1.0, 1.0])
    assert not outcomes.skipping_hid([1.0] * 8 + [np.nan, 0.0])  # early skips do not count
    assert not outcomes.skipping_hid([])
