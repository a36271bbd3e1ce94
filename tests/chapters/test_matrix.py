"""The matrix chapter's module: settings from the parameters, the verdict's numbers and
tables from a hand-made matrix (whose outcome per cell is known), the cost table."""

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from exploding_gradients import theory
from exploding_gradients.chapters import matrix as chapter
from exploding_gradients.study import remedy_matrix as rm
from exploding_gradients.study.remedy_matrix import CAUSES, REMEDIES

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture
def P():
    return chapter.CHAPTER.parameters({"profile": "quick", "steps": 20, "clip_norm": 2.0},
                                      before={})


def test_settings_and_common_come_from_the_parameters(P):
    s = chapter.settings(P)
    assert s.clip_norm == 2.0 and s.stall_threshold == P.stall_threshold
    assert chapter.common(P) == dict(steps=20, depth=4, width=16, n_train=512, batch_size=64)


def test_setup_numbers(P):
    numbers = chapter.setup_numbers(P)
    assert numbers["matrix_warmup_steps"] == math.ceil(P.warmup_fraction * 20) == 2
    assert numbers["matrix_clip_norm"] == "2" and numbers["matrix_residual_scale"] == "0.50"
    assert numbers["matrix_stall_pct"] == "10" and numbers["matrix_n_causes"] == len(CAUSES)
    # the fastest L2 shrink: lr 0.1 without momentum (lr_large, inputs) beats lr 0.01
    # with momentum's tenfold amplification (the deep rows)
    assert chapter.l2_shrink(P) == pytest.approx(theory.penalty_shrink(0.1, 1e-3, 20))
    assert numbers["matrix_l2_shrink_pct"] == f"{100 * chapter.l2_shrink(P):.1g}"


def test_labels_come_from_the_rows_and_columns():
    assert chapter.names([]) == "none"
    assert chapter.names(["weights_large", "inputs"]) == (
        f"{CAUSES['weights_large'].label}; {CAUSES['inputs'].label}")
    assert chapter.rnn_network() == "RNN, T = 40"
    assert "lstm" not in chapter.MLP_TIMED and "healthy" not in chapter.MLP_TIMED


DIVERGING = ("weights_large", "lr_large", "inputs")


def _cell(cause, remedy):
    """(diverged, stopped, baseline ratio) of both seeds of a hand-made cell."""
    if remedy == "healthy":
        return False, False, 2.0 if cause == "long_rnn" else 0.5
    if remedy == "init" or (remedy == "clip_norm" and cause == "lr_large"):
        return False, False, 0.4
    if remedy == "clip_norm" and cause == "inputs":
        return False, False, 1.5  # no longer diverges, but stalls
    if remedy == "early_stopping" and cause in DIVERGING:
        return False, True, 1.0
    return cause in DIVERGING, False, 1.2  # none, l2 and the rest: as without a remedy


def _fake_runs(seeds=2):
    rows = []
    for cause in CAUSES:
        for remedy in REMEDIES:
            config = rm.cell_config(cause, remedy, steps=4)
            row = dict(cause=cause, remedy=remedy, applicable=not isinstance(config, str),
                       note=config if isinstance(config, str) else "")
            if row["applicable"]:
                diverged, stopped, ratio = _cell(cause, remedy)
                ratio = math.inf if diverged else ratio
                row.update(diverged=diverged, stopped=stopped,
                           stalled=not diverged and ratio > 0.9, initial_loss=2.0,
                           final_loss=np.nan if diverged else ratio, trivial_loss=1.0,
                           loss_ratio=ratio / 2, baseline_ratio=ratio, test_accuracy=0.5,
                           diverged_step=3 if diverged else -1,
                           stopped_step=2 if stopped else -1)
            rows += [dict(row, seed=s) for s in range(seeds)]
    return pd.DataFrame(rows)


def test_the_verdicts_numbers_follow_the_cells(P):
    runs = _fake_runs()
    numbers = chapter.matrix_numbers(runs, P)
    assert numbers["matrix_n_failing"] == len(CAUSES)
    assert numbers["matrix_n_diverging"] == 3
    assert numbers["matrix_diverging"] == chapter.names(DIVERGING)
    assert numbers["matrix_cell_lr_large_none"] == "2/2 diverged"
    assert numbers["matrix_cell_lr_large_clip_norm"] == "fixed (median 0.4)"
    assert numbers["matrix_fixlist_clip_norm"] == CAUSES["lr_large"].label
    assert numbers["matrix_tamed_clip_norm"] == 2  # lr_large and inputs
    assert numbers["matrix_tamed_stalled_clip_norm"] == 1  # inputs
    assert numbers["matrix_fixlist_init"] == chapter.names(
        ["weights_large", "weights_small", "tanh_chaotic", "long_rnn"])
    assert numbers["matrix_best"] == REMEDIES["init"].label and numbers["matrix_best_n"] == 4
    assert numbers["matrix_unfixed"] == chapter.names(["batch_norm", "inputs"])
    assert numbers["matrix_n_healthy_ok"] == len(CAUSES) - 1
    assert numbers["matrix_healthy_failed"] == CAUSES["long_rnn"].label
    assert numbers["matrix_l2_same"] == len(CAUSES) and numbers["matrix_l2_change"] == "0"
    assert numbers["matrix_es_div_none"] == 6 and numbers["matrix_es_div"] == 0
    assert numbers["matrix_es_stopped"] == 6 and numbers["matrix_es_fixed"] == 0
    assert numbers["matrix_weight_size"] == f"{2 / math.sqrt(16):.2f}"
    assert numbers["matrix_n_runs"] == int(runs.applicable.sum())


def test_tables_and_figures_of_the_matrix(P):
    runs = _fake_runs()
    fixes = chapter.fixes_table(runs).data
    assert len(fixes) == len(REMEDIES) - 2  # not "none", not the reference
    assert fixes.set_index("remedy").loc[REMEDIES["clip_norm"].label, "rows fixed"] == 1
    cells = chapter.cells_table(runs).data
    assert len(cells) == runs.groupby(["cause", "remedy"]).applicable.all().sum()
    assert chapter.describe(P).data.shape == (len(REMEDIES), len(CAUSES))
    fig = chapter.fig_heatmap(runs, P)
    assert len(fig.axes) == 2  # the matrix and its colour bar
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
        c.label for c in CAUSES.values()]
    fig = chapter.fig_seeds(runs, P)
    assert len(fig.axes) == 1 and fig.axes[0].get_legend() is not None
    plt.close("all")


def test_cost_table_labels_each_network_from_its_row(P):
    mlp = pd.DataFrame({"remedy": ["none", "clip_norm", "adam"], "seconds_per_step": 1e-3,
                        "ratio": [1.0, 1.2, 1.5], "ratio_min": [1.0, 1.1, 1.4],
                        "ratio_max": [1.0, 1.3, 1.6]})
    rnn = pd.DataFrame({"remedy": ["none", "lstm"], "seconds_per_step": 1e-3,
                        "ratio": [1.0, 3.0], "ratio_min": [1.0, 2.5], "ratio_max": [1.0, 3.5]})
    table = chapter.cost_table(mlp, rnn, P).data
    assert list(table.network) == ["ReLU MLP, depth 4"] * 3 + ["RNN, T = 40"]
    assert list(table.remedy) == [REMEDIES[r].label for r in ["none", "clip_norm", "adam",
                                                               "lstm"]]
    assert table.hyperparameters.iloc[1] == "threshold c = 2"
    assert chapter.cost_numbers(mlp, rnn) == {
        "matrix_cost_max": "1.50", "matrix_cost_max_name": REMEDIES["adam"].label,
        "matrix_cost_lstm": "3.0"}
