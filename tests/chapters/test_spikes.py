"""The spikes chapter's reductions (spike episodes, survival, hidden divergence), tables,
numbers and figures, on synthetic tables and one tiny real sweep."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients.chapters import spikes as chapter
from exploding_gradients.study.plots import check_legible

P = chapter.CHAPTER.parameters({"profile": "quick"}, {})
STEPS = 60


def fake_run(remedy: str, seed: int, kind: str = "finished", ratio: float = 4.0) -> pd.DataFrame:
    """Per-step rows of a ``training`` run of the remedy grid: flat loss 1 and gradient
    norm 1 with a spike of 50 at step 20; ``diverged`` ends in NaN at step 30, ``hidden``
    skips every step from 30 on, ``blowup`` ends with a test loss 100 times the first,
    ``stopped`` was stopped at step 20."""
    steps = np.arange(STEPS + 1)
    loss, grad = np.ones(len(steps)), np.ones(len(steps))
    grad[20], loss[20] = 50.0, 5.0
    skipped = np.zeros(len(steps))
    test = np.where(steps % 10 == 0, 1.0, np.nan)
    diverged = stopped = -1
    if kind == "diverged":
        steps, loss, grad, skipped, test = (a[:31] for a in (steps, loss, grad, skipped, test))
        loss[30], grad[30], diverged = np.nan, np.nan, 30
    elif kind == "hidden":
        skipped[30:-1] = 1.0
        loss[30:], grad[30:] = np.inf, np.nan
    elif kind == "blowup":
        test[-1] = 100.0
    elif kind == "stopped":
        steps, loss, grad, skipped, test = (a[:22] for a in (steps, loss, grad, skipped, test))
        stopped, test[-1] = 20, 1.0
    point = chapter.remedy_overrides(remedy, P)
    return pd.DataFrame({"seed": seed, "step": steps, "layer": 0, "loss": loss,
                         "grad_norm": grad, "clipped": 0.0, "skipped": skipped,
                         "test_loss": test, "test_accuracy": np.nan, "update_ratio": np.nan,
                         "diverged_step": diverged, "stopped_step": stopped, "cause": "",
                         "ratio": ratio, **point})


def test_the_remedy_grid_round_trips_through_the_sweeps_columns():
    grid = chapter.remedy_grid(P)
    assert len(grid) == len(chapter.REMEDIES) and all(g.keys() == grid[0].keys() for g in grid)
    table = pd.DataFrame(grid)
    assert list(chapter.labelled(table, P).remedy) == list(chapter.REMEDIES)
    assert chapter.remedy_overrides("autoclip", P)["clip"] == "percentile"
    assert chapter.remedy_overrides("skip", P)["skip"] == "zscore"
    for name in chapter.REMEDIES:  # the labels carry the settings
        assert chapter.remedy_label(name, P)


def test_spike_episodes_merge_close_spikes_and_count_nonfinite_values():
    g = np.ones(40)
    g[[5, 7, 30]] = 20.0
    g[39] = np.nan
    assert chapter.spike_episodes(g, 10.0) == [(5, 7), (30, 30), (39, 39)]
    assert chapter.spike_episodes(np.ones(10), 10.0) == []


def test_a_spike_is_survived_when_the_loss_comes_back_while_alive():
    loss = np.ones(60)
    loss[20] = 50
    assert chapter.survived(loss, (20, 20), 10, alive=59)
    assert not chapter.survived(loss, (20, 20), 10, alive=25)  # dead before it recovered
    loss[21:] = 3.0  # back above twice the level before
    assert not chapter.survived(loss, (20, 20), 10, alive=59)
    assert chapter.survived(np.ones(10), (9, 9), 5, alive=9)  # at the end: finite, alive


def test_run_table_tells_finished_diverged_hidden_blown_up_and_stopped_runs_apart():
    runs = pd.concat([fake_run("none", 0), fake_run("none", 1, "diverged"),
                      fake_run("skip", 0, "hidden"), fake_run("norm", 0, "blowup"),
                      fake_run("early_stop", 0, "stopped")], ignore_index=True)
    table = chapter.run_table(runs, P, ["ratio"]).set_index(["remedy", "seed"])
    assert table.loc[("none", 0), "ended"] == "finished"
    assert table.loc[("none", 0), ["spikes", "survived"]].tolist() == [1, 1]
    assert table.loc[("none", 1), "ended"] == "diverged"
    assert table.loc[("none", 1), "survived"] == 0  # the NaN is a spike it did not survive
    hidden = table.loc[("skip", 0)]
    assert hidden.ended == "hidden" and hidden.failed and np.isnan(hidden.final_test_loss)
    assert hidden.skipped == pytest.approx(30 / 61)
    assert table.loc[("norm", 0), "ended"] == "diverged"  # test loss 100x the first
    assert table.loc[("early_stop", 0), "ended"] == "stopped"
    assert not table.loc[("early_stop", 0), "failed"]


def test_summary_table_and_numbers_of_the_edge_workload():
    runs = pd.concat([fake_run(name, seed, kind, ratio)
                      for ratio, kinds in [(4.0, {"early_stop": "stopped"}),
                                           (8.0, {"none": "diverged", "skip": "hidden",
                                                  "skip_nonfinite": "hidden",
                                                  "early_stop": "stopped"})]
                      for name in chapter.REMEDIES for seed in range(P.seeds)
                      for kind in [kinds.get(name, "finished")]], ignore_index=True)
    table = chapter.run_table(runs, P, ["ratio"])
    display = chapter.edge_display(table, P)
    shown = display.data
    assert list(shown.columns[:2]) == ["lr × λ/2", "remedy"] and len(shown) == 18
    assert "nan" not in display.to_html()
    sharp = pd.DataFrame({"lambda_max": [90.0, 110.0], "readout_share": [0.4, 0.6]})
    n = chapter.edge_numbers(table, 0.02, sharp, P)
    assert n["spk_hidden"] == f"{2 * P.seeds}/{2 * P.seeds}"
    assert n["spk_hidden_skip_rate"] == chapter._pct(30 / 61)
    assert n["spk_stop_low"] == f"{P.seeds}/{P.seeds}"
    assert n["spk_edge1_none_ended"] == f"{P.seeds} diverged"
    assert n["spk_edge_rescuers"] == "norm clipping, AGC, AutoClip, ZClip and AdaGC"
    assert n["spk_readout_share"] == "50%"


def test_percentages_and_lists_read_well():
    assert chapter._pct(0) == "0" and chapter._pct(0.997) == "100%"
    assert chapter._pct(0.012) == "1.2%" and chapter._pct(0.54) == "54%"
    assert chapter._and([]) == "none" and chapter._and(["a", "b", "c"]) == "a, b and c"


@pytest.fixture(scope="module")
def tiny():
    """One tiny real sweep of each workload (the page's calls at toy sizes)."""
    small = chapter.CHAPTER.parameters({"profile": "quick", "seeds": 1, "steps": 30,
                                        "log_every": 10, "width": 16, "depth": 2}, {})
    net = dict(depth=small.depth, width=small.width, init="he", batch_size=16, n_train=256)
    train = dict(net, steps=small.steps, log_every=small.log_every)
    grid = chapter.remedy_grid(small)
    outliers = eg.sweep("training", [dict(r, outlier_prob=p) for p in (0.0, 0.1)
                                     for r in grid], seeds=1, optimizer="adam", lr=1e-3,
                        outlier_scale=30.0, **train)
    edge = eg.sweep("training", [dict(r, lr=x * 0.05) for x in (1.0, 8.0) for r in grid],
                    seeds=1, optimizer="sgd", task="regression", **train)
    moments = eg.sweep("training", [chapter.remedy_overrides(n, small) for n in
                                    ("none", "zclip")], seeds=1, optimizer="adam",
                       lr=1e-3, outlier_prob=0.1, outlier_scale=30.0, layer_detail=True,
                       **dict(train, log_every=2))
    small = chapter.CHAPTER.parameters({"profile": "quick", "seeds": 1, "steps": 30,
                                        "outlier_prob": 0.1, "edge_ratios": [1.0, 8.0]}, {})
    return small, outliers, chapter.with_ratio(edge, 0.05), moments


def test_numbers_tables_and_figures_of_a_real_sweep(tiny):
    small, outliers, edge, moments = tiny
    out_table = chapter.run_table(outliers, small, ["outlier_prob"])
    edge_table = chapter.run_table(edge, small, ["ratio"])
    assert set(edge_table.ratio) == {1.0, 8.0}
    numbers = {**chapter.outlier_numbers(out_table, small),
               **chapter.moment_numbers(moments, small),
               **chapter.robust_numbers(out_table, edge_table, small),
               **chapter.setup_numbers(small)}
    assert all(isinstance(v, (str, int)) and "nan" not in str(v) for v in numbers.values())
    assert numbers["spk_robust_n"] <= len(chapter.REMEDIES)
    assert len(chapter.outlier_display(out_table, small).data) == len(chapter.REMEDIES)
    for fig in (chapter.fig_outcomes(out_table, edge_table, small),
                chapter.fig_traces(edge, small), chapter.fig_moments(moments, small)):
        check_legible(fig)
        assert len(fig.get_axes()) == 2
        plt.close(fig)
