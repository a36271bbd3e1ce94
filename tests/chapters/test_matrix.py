"""The matrix chapter's module: settings from the parameters, the verdict's numbers and
tables from a hand-made matrix (whose outcome per cell is known), the budget, the
generalization test and the cost table."""

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from exploding_gradients import theory
from exploding_gradients.chapters import matrix as chapter
from exploding_gradients.study import remedy_matrix as rm
from exploding_gradients.study.plots import check_legible
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
    assert s.dropout == P.dropout and s.blowup_factor == P.blowup_factor
    assert chapter.common(P) == dict(steps=20, depth=4, width=16, n_train=2048, batch_size=64)


def test_rows_are_the_exploding_causes_and_the_columns_leave_out_l2_and_lstm():
    assert chapter.ROWS == ["weights_large", "tanh_chaotic", "batch_norm", "lr_large",
                            "inputs"]
    assert set(chapter.LEFT_OUT) == {"weights_small", "long_rnn"}
    assert "l2" not in chapter.COLUMNS and "lstm" not in chapter.COLUMNS
    assert "dropout" in chapter.COLUMNS and chapter.COLUMNS[-1] == "healthy"


def test_setup_numbers(P):
    numbers = chapter.setup_numbers(P)
    assert numbers["matrix_warmup_steps"] == math.ceil(P.warmup_fraction * 20) == 2
    assert numbers["matrix_clip_norm"] == "2" and numbers["matrix_residual_scale"] == "0.50"
    assert numbers["matrix_stall_pct"] == "10" and numbers["matrix_n_rows"] == 5
    assert numbers["matrix_checkpoints"] == "5, 10, 15, 20"
    # the fastest L2 shrink: lr 0.2 without momentum (lr_large) beats lr 0.01 with
    # momentum's tenfold amplification (the deep rows)
    assert chapter.l2_shrink(P) == pytest.approx(theory.penalty_shrink(0.2, 1e-3, 20))
    assert numbers["matrix_l2_tau"] == "10⁵"  # 1 / (0.01 * 1e-3)
    assert numbers["matrix_dropout_factor"] == f"{1 / (1 - P.dropout):.3f}"


def test_labels_come_from_the_rows_and_columns():
    assert chapter.names([]) == "none"
    assert chapter.names(["weights_large", "inputs"]) == (
        f"{CAUSES['weights_large'].label}; {CAUSES['inputs'].label}")
    assert "_" not in chapter.short("weights_large").replace(r"\sigma_w", "")
    assert "lstm" not in chapter.MLP_TIMED and "healthy" not in chapter.MLP_TIMED


BLOWING = ("weights_large", "lr_large", "inputs")


def _cell(cause, remedy):
    """(diverged, blew up, stopped, baseline ratio) of every seed of a hand-made cell."""
    if remedy == "healthy":
        return False, False, False, 0.5
    if remedy in ("init", "layer_norm") or (remedy == "clip_norm" and cause == "lr_large"):
        return False, False, False, 0.4
    if remedy == "clip_norm" and cause == "inputs":
        return False, False, False, 1.5  # no longer blows up, but stalls
    if remedy == "agc" and cause == "lr_large":
        return False, True, False, math.inf  # a finite loss that climbed past the factor
    if remedy == "early_stopping" and cause in BLOWING:
        return False, False, True, 1.0
    blown = cause in BLOWING
    return blown, blown, False, 1.2  # none and the rest: as without a remedy


def _fake_runs(seeds=2):
    rows = []
    for cause in chapter.ROWS:
        for remedy in chapter.COLUMNS:
            config = rm.cell_config(cause, remedy, steps=4)
            row = dict(cause=cause, remedy=remedy, applicable=not isinstance(config, str),
                       note=config if isinstance(config, str) else "")
            if row["applicable"]:
                diverged, blown, stopped, ratio = _cell(cause, remedy)
                ratio = math.inf if blown else ratio
                row.update(diverged=diverged, blew_up=blown, stopped=stopped,
                           stalled=not blown and ratio > 0.9, initial_loss=2.0,
                           final_loss=np.nan if blown else ratio, trivial_loss=1.0,
                           loss_ratio=ratio / 2, baseline_ratio=ratio, test_accuracy=0.5,
                           diverged_step=3 if diverged else -1,
                           stopped_step=2 if stopped else -1)
                for q in rm.CHECKPOINTS:  # the same outcome at every checkpoint, except
                    early = remedy == "healthy" and cause == "lr_large" and q < 0.5
                    tag = f"q{round(100 * q)}"  # the slow twin, which learns only later
                    row.update({tag: round(4 * q), f"blew_up_{tag}": blown,
                                f"baseline_ratio_{tag}": 1.0 if early else ratio})
            rows += [dict(row, seed=s) for s in range(seeds)]
    return pd.DataFrame(rows)


def test_the_verdicts_numbers_follow_the_cells(P):
    runs = _fake_runs()
    numbers = chapter.matrix_numbers(runs, P)
    assert numbers["matrix_n_failing"] == len(chapter.ROWS) and numbers["matrix_passing"] == "none"
    assert numbers["matrix_n_cells"] == 5 * 11 - 4  # 11 remedies, 4 n/a cells (init, bn)
    assert numbers["matrix_n_diverging"] == 3
    assert numbers["matrix_diverging"] == chapter.names(BLOWING)
    assert numbers["matrix_cell_lr_large_none"] == "2/2 blew up (2 to NaN/Inf)"
    assert numbers["matrix_cell_lr_large_agc"] == "2/2 blew up"
    assert numbers["matrix_cell_lr_large_clip_norm"] == "fixed (median 0.4)"
    assert numbers["matrix_fixlist_clip_norm"] == CAUSES["lr_large"].label
    assert numbers["matrix_tamed_clip_norm"] == 2  # lr_large and inputs
    assert numbers["matrix_tamed_stalled_clip_norm"] == 1  # inputs
    assert numbers["matrix_fixlist_layer_norm"] == chapter.names(chapter.ROWS)
    assert numbers["matrix_best"] == REMEDIES["layer_norm"].label
    assert numbers["matrix_best_n"] == 5 and numbers["matrix_unfixed"] == "none"
    assert numbers["matrix_n_healthy_ok"] == len(chapter.ROWS)
    assert numbers["matrix_es_div_none"] == 6 and numbers["matrix_es_div"] == 0
    assert numbers["matrix_es_stopped"] == 6 and numbers["matrix_es_fixed"] == 0
    assert numbers["matrix_n_nan"] == 6 and numbers["matrix_n_blown_finite"] == 0
    assert numbers["matrix_weight_size"] == f"{2 / math.sqrt(16):.2f}"
    assert numbers["matrix_n_runs"] == int(runs.applicable.sum())


def test_the_budget_reads_the_same_runs_at_each_quarter(P):
    runs = _fake_runs()
    P = chapter.CHAPTER.parameters({"profile": "quick", "steps": 4}, before={})
    budget = chapter.budget_summary(runs, P)
    assert sorted(budget.steps.unique()) == [1, 2, 3, 4]
    twin = budget[(budget.cause == "lr_large") & (budget.remedy == "healthy")]
    assert twin.set_index("steps").fixed.to_dict() == {1: False, 2: True, 3: True, 4: True}
    numbers = chapter.budget_numbers(runs, P)
    assert numbers["matrix_twins_first"] == 4 and numbers["matrix_twins_last"] == 5
    assert numbers["matrix_fixed_first"] == numbers["matrix_fixed_last"]
    assert numbers["matrix_n_gained"] == 0 and numbers["matrix_n_lost"] == 0
    table = chapter.budget_table(runs, P).data
    assert list(table.columns) == ["rows fixed by", "1 steps", "2 steps", "3 steps",
                                   "4 steps"]
    fig = chapter.fig_budget(runs, P)
    check_legible(fig)
    plt.close("all")


def test_at_initialization_splits_the_rows(P):
    flat = pd.DataFrame({"seed": [0, 0], "layer": [1, 2], "delta_norm": [1.0, 1.0]})
    steep = flat.assign(delta_norm=[300.0, 1.0])
    numbers = chapter.init_numbers({"weights_large": steep, "inputs": flat}, P)
    assert numbers["matrix_rows_at_init"] == CAUSES["weights_large"].label
    assert numbers["matrix_rows_in_training"] == CAUSES["inputs"].label
    assert numbers["matrix_amp_weights_large"] == "300"


def test_tables_and_figures_of_the_matrix_are_legible(P):
    runs = _fake_runs()
    cells = chapter.cells_table(runs)
    assert len(cells.data) == runs.groupby(["cause", "remedy"]).applicable.all().sum()
    assert "nan" not in cells.to_html() and "inf" not in cells.to_html()
    assert chapter.describe(P).data.shape == (len(chapter.COLUMNS), len(chapter.ROWS) + 1)
    fig = chapter.fig_heatmap(runs, P)
    check_legible(fig)
    assert len(fig.axes) == 2  # the matrix and its colour bar
    assert len(fig.axes[0].get_yticklabels()) == len(chapter.COLUMNS)
    fig = chapter.fig_seeds(runs, P)
    check_legible(fig)
    assert len(fig.legends) == 1  # under the panel, one entry per row
    plt.close("all")


def _gen_run(seed, train, test, diverged=-1):
    return pd.DataFrame({"seed": seed, "step": [0, 1], "layer": 0, "loss": [2.0, train],
                         "test_loss": [2.0, test], "test_accuracy": 0.5,
                         "diverged_step": diverged})


def test_generalization_compares_the_gap_of_each_exploding_row_with_its_twin(P):
    configs = chapter.gen_configs(P)
    assert set(configs) == {(c, v) for c in chapter.GEN_ROWS for v in ("failing", "healthy")}
    tanh = configs["tanh_chaotic", "failing"]
    assert tanh["n_train"] == tanh["batch_size"] == P.gen_n_train
    assert configs["tanh_chaotic", "healthy"]["sigma_w"] == 1.0
    gen = {("tanh_chaotic", "failing"): _gen_run(0, 0.01, 2.0),
           ("tanh_chaotic", "healthy"): _gen_run(0, 0.01, 1.0),
           ("batch_norm", "failing"): _gen_run(0, 0.01, 1.0),
           ("batch_norm", "healthy"): _gen_run(0, 0.01, 1.5)}
    numbers = chapter.gen_numbers(gen, P)
    assert numbers["matrix_gen_n_worse"] == 1 and numbers["matrix_gen_verdict"] == "nuanced"
    assert numbers["matrix_gen_worse"] == CAUSES["tanh_chaotic"].label
    assert numbers["matrix_gen_not_worse"] == CAUSES["batch_norm"].label
    assert numbers["matrix_gen_tanh_chaotic_failing_gap"] == "2"  # 1.99 to 2 digits
    assert len(chapter.gen_table(gen).data) == 4


def test_cost_table_names_each_remedys_hyperparameter(P):
    mlp = pd.DataFrame({"remedy": ["none", "clip_norm", "adam"], "seconds_per_step": 1e-3,
                        "ratio": [1.0, 1.2, 1.5], "ratio_min": [1.0, 1.1, 1.4],
                        "ratio_max": [1.0, 1.3, 1.6]})
    table = chapter.cost_table(mlp, P).data
    assert list(table.remedy) == [REMEDIES[r].label for r in ["none", "clip_norm", "adam"]]
    assert table.hyperparameter.iloc[1] == "threshold c = 2"
    assert chapter.cost_numbers(mlp) == {"matrix_cost_max": "1.50",
                                         "matrix_cost_max_name": REMEDIES["adam"].label}


def test_the_second_matrix_takes_the_modern_rows_and_the_columns_that_apply_to_them():
    assert chapter.MODERN_ROWS == list(rm.MODERN)
    assert not set(chapter.MODERN_ROWS) & set(chapter.ROWS)
    new = {"loss_scaling", "bf16", "pre_ln", "qk_norm", "percentile", "zclip", "adagc",
           "skip_zscore", "skip_nonfinite"}
    assert new <= set(chapter.MODERN_COLUMNS) and not new & set(chapter.COLUMNS)
    for left_out in ("clip_value", "layer_norm", "residual", "dropout", "l2", "lstm"):
        assert left_out not in chapter.MODERN_COLUMNS
    for r in chapter.MODERN_COLUMNS:  # every column is tried on at least one row
        assert any(not isinstance(rm.cell_config(c, r, steps=4), str)
                   for c in chapter.MODERN_ROWS)
    assert "\n" in chapter.short("post_ln") and "_" not in chapter.short("fp16_overflow")


def _fake_modern(seeds=2):
    """The second matrix by hand: every row fails without a remedy; pre-LN fixes the
    transformer; NaN skipping on the overflow row skipped its way to a hidden divergence."""
    rows = []
    for cause in chapter.MODERN_ROWS:
        for remedy in chapter.MODERN_COLUMNS:
            config = rm.cell_config(cause, remedy, steps=4)
            row = dict(cause=cause, remedy=remedy, applicable=not isinstance(config, str),
                       note=config if isinstance(config, str) else "")
            if row["applicable"]:
                fixed = remedy == "healthy" or (cause, remedy) == ("post_ln", "pre_ln")
                hidden = (cause, remedy) == ("fp16_overflow", "skip_nonfinite")
                ratio = math.inf if hidden else 0.3 if fixed else 1.0
                row.update(diverged=False, blew_up=hidden, hidden=hidden, stopped=False,
                           stalled=not (fixed or hidden), baseline_ratio=ratio, loss_ratio=0.5,
                           test_accuracy=np.nan)
            rows += [dict(row, seed=s) for s in range(seeds)]
    return pd.DataFrame(rows)


def test_the_second_matrix_in_numbers_and_as_a_figure(P):
    modern = _fake_modern()
    numbers = chapter.modern_numbers(modern, P)
    assert numbers["matrix_modern_n_failing"] == len(rm.MODERN) == 5
    assert numbers["matrix_modern_fixes_post_ln"] == REMEDIES["pre_ln"].label
    assert numbers["matrix_modern_fixes_outliers"] == "none"
    assert numbers["matrix_modern_n_fixed_cells"] == 1
    assert numbers["matrix_modern_n_hidden"] == 2  # both seeds of the one hidden cell
    assert numbers["matrix_cell_fp16_overflow_skip_nonfinite"] == (
        "2/2 blew up (2 hidden by skipping)")
    assert "matrix_cell_post_ln_bf16" not in numbers  # not applicable: no glue
    assert numbers["matrix_modern_healthy_failed"] == "none"
    fig = chapter.fig_modern(modern, P)
    check_legible(fig)
    assert len(fig.axes[0].get_yticklabels()) == len(chapter.MODERN_COLUMNS)
    assert chapter.cells_table(modern).data.shape[0] == modern.groupby(
        ["cause", "remedy"]).applicable.all().sum()
    described = chapter.describe(P, chapter.MODERN_ROWS, chapter.MODERN_COLUMNS).data
    assert described.shape == (len(chapter.MODERN_COLUMNS), len(chapter.MODERN_ROWS) + 1)
    plt.close("all")
