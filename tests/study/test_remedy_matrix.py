"""The remedy x cause matrix: cell definitions, outcome definitions, tiny end-to-end runs."""

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

import exploding_gradients as eg
from exploding_gradients.experiments.feedforward import make_data
from exploding_gradients.study import remedy_matrix as mx

matplotlib.use("Agg")

TINY = dict(steps=4, depth=3, width=8, n_train=32, batch_size=8)


def test_the_rows_are_the_seven_classic_and_five_modern_configurations():
    assert list(mx.CLASSIC) == ["weights_large", "weights_small", "tanh_chaotic", "batch_norm",
                                "lr_large", "inputs", "long_rnn"]
    assert list(mx.MODERN) == ["fp16_overflow", "fp16_underflow", "outliers",
                               "cnn_weights_large", "post_ln"]
    assert list(mx.CAUSES) == list(mx.CLASSIC) + list(mx.MODERN)
    assert {c.chapter for c in mx.CAUSES.values()} <= {
        "initialization", "activation", "normalization", "learning_rate", "recurrence",
        "precision", "spikes", "convnets", "transformers"}
    assert {r.chapter for r in mx.REMEDIES.values()} <= {
        None, "clipping", "architecture", "optimization", "causes", "precision", "spikes",
        "transformers"}
    # the columns of the first matrix are as they were; the new ones skip its rows
    assert [r for r in mx.REMEDIES if r in mx.CLASSIC_REMEDIES] == list(mx.CLASSIC_REMEDIES)
    for r in mx.REMEDIES:
        if r not in mx.CLASSIC_REMEDIES:
            assert all(c in mx.REMEDIES[r].not_for for c in mx.CLASSIC)
    assert [r.name for r in mx.REMEDIES.values() if r.reference] == ["healthy"]


def test_every_applicable_cell_is_a_valid_configuration():
    for cause, c in mx.CAUSES.items():
        for remedy in mx.REMEDIES:
            config = mx.cell_config(cause, remedy, **TINY)
            if isinstance(config, str):
                assert config  # a reason, never an empty string
                continue
            eg.REGISTRY[c.experiment].resolve(config)  # raises on any invalid value


def test_inapplicable_cells_say_why():
    assert "recurrence" in mx.cell_config("weights_large", "lstm", **TINY)
    assert "dropout" in mx.cell_config("long_rnn", "dropout", **TINY)
    assert mx.cell_config("inputs", "dropout", mx.Settings(dropout=0.3), **TINY)["dropout"] == 0.3
    assert "cause" in mx.cell_config("batch_norm", "batch_norm", **TINY)
    assert "Adam" in mx.cell_config("long_rnn", "adam", **TINY)
    assert isinstance(mx.cell_config("lr_large", "init", **TINY), str)
    assert isinstance(mx.cell_config("long_rnn", "residual", **TINY), str)


def test_one_setting_per_remedy_scaled_only_by_the_cells_depth_and_steps():
    s = mx.Settings(clip_norm=2.0, warmup_fraction=0.25, adam_lr=3e-4)
    deep = mx.cell_config("weights_large", "residual", s, steps=20, depth=16)
    shallow = mx.cell_config("lr_large", "residual", s, steps=20, depth=16)
    assert deep["residual"] and deep["residual_scale"] == pytest.approx(1 / 4)
    assert shallow["depth"] == 4 and shallow["residual_scale"] == pytest.approx(1 / 2)
    assert mx.cell_config("inputs", "warmup", s, steps=20)["warmup_steps"] == 5
    assert mx.cell_config("inputs", "warmup", s, steps=3)["warmup_steps"] == 1
    assert mx.cell_config("tanh_chaotic", "clip_norm", s, steps=5)["clip_threshold"] == 2.0
    adam = mx.cell_config("weights_small", "adam", s, steps=5)
    assert adam["optimizer"] == "adam" and adam["lr"] == 3e-4
    # the init remedy is the standard init of the cell's activation or cell
    assert mx.cell_config("weights_large", "init", steps=5)["init"] == "he"
    assert mx.cell_config("tanh_chaotic", "init", steps=5)["init"] == "xavier"
    assert mx.cell_config("long_rnn", "init", steps=5)["spectral_radius"] == 1.0
    # the batched engine is asked for only where the caller says so, and only for MLPs
    assert "engine" not in mx.cause_config("inputs", steps=5)
    assert mx.cause_config("inputs", steps=5, engine="batched")["engine"] == "batched"
    assert mx.cause_config("inputs", steps=5, engine="loop")["engine"] == "loop"
    assert "engine" not in mx.cause_config("long_rnn", steps=5, engine="batched")
    # a remedy changes only what it names
    base = mx.cause_config("batch_norm", steps=5)
    wd = mx.cell_config("batch_norm", "l2", steps=5)
    assert {k for k in wd if wd[k] != base.get(k)} == {"penalty", "penalty_strength"}


def test_trivial_loss_is_the_best_constant_prediction():
    config = mx.cause_config("weights_large", **TINY)
    data = make_data(eg.REGISTRY["training"].resolve(config))
    p = torch.bincount(data.y_test, minlength=data.d_out).double() / len(data.y_test)
    logits = torch.log(p.clamp_min(1e-12)).expand(len(data.y_test), -1)
    expected = torch.nn.functional.cross_entropy(logits, data.y_test).item()
    assert mx.trivial_loss("training", config) == pytest.approx(expected, rel=1e-6)
    reg = mx.cause_config("lr_large", **TINY)
    data = make_data(eg.REGISTRY["training"].resolve(reg))
    const = data.y_test.mean().expand_as(data.y_test)
    assert mx.trivial_loss("training", reg) == pytest.approx(
        data.loss(const, data.y_test).item(), rel=1e-5)
    assert mx.trivial_loss("rnn_training", {}) == pytest.approx(1 / 6)
    counts = torch.bincount(make_data(eg.REGISTRY["training"].resolve(
        config)).y_test)
    assert mx.constant_accuracy(config) == pytest.approx((counts.max() / counts.sum()).item())
    assert math.isnan(mx.constant_accuracy(reg))


def _mlp_run(seed, test_losses, diverged=-1, stopped=-1, accuracy=0.5):
    steps = len(test_losses)
    return pd.DataFrame({"seed": seed, "step": range(steps), "layer": 0,
                         "loss": test_losses, "test_loss": test_losses,
                         "test_accuracy": accuracy, "diverged_step": diverged,
                         "stopped_step": stopped})


def test_outcome_definitions():
    runs = pd.concat([
        _mlp_run(0, [2.0, 1.0, 0.5]),                  # learned: 0.5 / 1.0 trivial
        _mlp_run(1, [2.0, 1.0, 0.95]),                 # stalled: above 0.9 x trivial
        _mlp_run(2, [2.0, math.nan], diverged=1),      # diverged: never also stalled
        _mlp_run(3, [2.0, 3.0, 0.2], stopped=2),       # early-stopped, restored weights
    ])
    out = mx.outcome(runs, "training", trivial=1.0).set_index("seed")
    assert out.diverged.tolist() == [False, False, True, False]
    assert out.blew_up.tolist() == [False, False, True, False]
    assert out.stalled.tolist() == [False, True, False, False]
    assert out.stopped.tolist() == [False, False, False, True]
    assert out.baseline_ratio.tolist() == [0.5, 0.95, math.inf, 0.2]
    assert out.loss_ratio[0] == 0.25 and math.isinf(out.loss_ratio[2])
    assert math.isnan(out.test_accuracy[2]) and out.test_accuracy[0] == 0.5
    # a per-layer row (layer >= 1) is ignored
    extra = runs.assign(layer=1, test_loss=99.0)
    assert mx.outcome(pd.concat([runs, extra]), "training", 1.0).equals(
        mx.outcome(runs, "training", 1.0))


def test_a_finite_loss_that_grew_tenfold_blew_up_and_checkpoints_read_the_run_early():
    runs = pd.concat([
        _mlp_run(0, [1.0, 0.5, 0.4, 0.3, 0.2]),          # learned, at every checkpoint
        _mlp_run(1, [1.0, 0.5, 0.5, 30.0, 50.0]),        # blew up late, without NaN
        _mlp_run(2, [1.0, 0.5, 0.5, 0.5, math.nan], diverged=4),  # NaN at the last step
    ])
    out = mx.outcome(runs, "training", trivial=1.0).set_index("seed")
    assert out.blew_up.tolist() == [False, True, True]
    assert out.diverged.tolist() == [False, False, True]
    assert not out.stalled.any() and math.isinf(out.baseline_ratio[1])
    assert out.q50.tolist() == [2, 2, 2]
    assert out.blew_up_q50.tolist() == [False, False, False]  # at step 2 all were fine
    assert out.baseline_ratio_q50.tolist() == [0.4, 0.5, 0.5]
    assert out.blew_up_q75.tolist() == [False, True, False]
    df = out.reset_index().assign(cause="inputs", remedy="none", applicable=True, note="")
    early = mx.at_budget(df, 0.5, stall_threshold=0.45)
    assert early.blew_up.tolist() == [False, False, False]
    assert early.diverged.tolist() == [False, False, False]
    assert early.stalled.tolist() == [False, True, True]
    assert mx.at_budget(df, 1) is df
    row = mx.summarize(df).iloc[0]
    assert row.blew_up == 2 and row.diverged == 1 and row.learned == 1 and not row.fixed
    assert mx.outcome_text(row) == "2/3 blew up (1 to NaN/Inf)"


def test_outcome_of_a_recurrent_run_averages_the_last_tenth_of_its_fresh_batches():
    losses = [1.0] + [0.5] * 10 + [0.1] * 10  # 21 rows: the last ceil(0.1 * 20) = 2 count
    run = pd.DataFrame({"seed": 0, "step": range(21), "loss": losses, "diverged_step": -1,
                        "stopped_step": -1})
    out = mx.outcome(run, "rnn_training", trivial=1 / 6).iloc[0]
    assert out.final_loss == pytest.approx(0.1) and out.initial_loss == 1.0
    assert not out.stalled and math.isnan(out.test_accuracy)
    stopped = run.assign(stopped_step=20)
    assert mx.outcome(stopped, "rnn_training", 1 / 6).iloc[0].final_loss == pytest.approx(0.1)


TINY_CELLS = dict(causes=["lr_large", "inputs", "long_rnn"],
                  remedies=["none", "clip_norm", "lstm", "adam", "healthy"])


@pytest.fixture(scope="module")
def tiny_matrix(tmp_path_factory):
    """Computed once for the module, in a cache of its own (the autouse per-test cache
    fixture is function-scoped, so it is not active here yet)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXPLODING_GRADIENTS_CACHE", str(tmp_path_factory.mktemp("matrix-cache")))
        return mx.run_matrix(2, **TINY, **TINY_CELLS)


def test_run_matrix_has_one_row_per_cause_remedy_and_seed(tiny_matrix):
    df = tiny_matrix
    assert len(df) == 3 * 5 * 2
    assert df.groupby(["cause", "remedy"]).size().eq(2).all()
    na = df[~df.applicable]
    assert set(zip(na.cause, na.remedy, strict=True)) == {("lr_large", "lstm"), ("inputs", "lstm"),
                                             ("long_rnn", "adam")}
    assert (na.note != "").all() and na.diverged.isna().all()
    ok = df[df.applicable]
    assert ok.diverged.notna().all() and (ok.trivial_loss > 0).all()
    assert ((ok.baseline_ratio == np.inf) == ok.blew_up.astype(bool)).all()
    assert (ok.blew_up.astype(bool) >= ok.diverged.astype(bool)).all()
    assert not (ok.blew_up.astype(bool) & ok.stalled.astype(bool)).any()


def test_run_matrix_is_reproducible_and_refuses_unknown_names(tiny_matrix):
    again = mx.run_matrix(2, **TINY, **TINY_CELLS)  # recomputed in this test's own cache
    pd.testing.assert_frame_equal(again, tiny_matrix)
    with pytest.raises(eg.ConfigError, match="unknown"):
        mx.run_matrix(1, **TINY, remedies=["magic"])


def test_the_batched_engine_gives_the_same_cells_up_to_rounding(tiny_matrix):
    batched = mx.run_matrix(2, **TINY, **TINY_CELLS, engine="batched")
    ok = tiny_matrix.applicable
    for column in ("blew_up", "diverged", "stalled"):
        assert batched.loc[ok, column].tolist() == tiny_matrix.loc[ok, column].tolist()
    np.testing.assert_allclose(batched.loc[ok, "baseline_ratio"].astype(float),
                               tiny_matrix.loc[ok, "baseline_ratio"].astype(float), rtol=1e-4)


def test_summarize_counts_over_seeds_and_marks_fixed_cells(tiny_matrix):
    summary = mx.summarize(tiny_matrix)
    assert len(summary) == 15
    cell = summary.set_index(["cause", "remedy"])
    ok = cell[cell.applicable]
    assert ((ok.frac_diverged >= 0) & (ok.frac_diverged <= 1)).all()
    assert (ok.fixed == ((ok.blew_up == 0) & (ok.stalled == 0))).all()
    assert (ok.min_ratio <= ok.median_ratio).all() and (ok.median_ratio <= ok.max_ratio).all()
    assert not cell.loc[("inputs", "lstm"), "fixed"]
    fixes = mx.fixes_per_remedy(summary).set_index("remedy")
    assert "healthy" not in fixes.index and "none" not in fixes.index
    assert fixes.loc["lstm", "applicable"] == 1 and fixes.loc["adam", "applicable"] == 2
    assert (fixes.fixed == fixes.fixed_causes.map(len)).all()


def test_summarize_takes_the_median_with_diverged_runs_as_infinite():
    df = pd.DataFrame({"cause": "inputs", "remedy": "none", "seed": [0, 1, 2],
                       "applicable": True, "note": "", "diverged": [True, True, False],
                       "blew_up": [True, True, False],
                       "stalled": [False, False, False], "stopped": False,
                       "baseline_ratio": [np.inf, np.inf, 0.3], "loss_ratio": 1.0,
                       "test_accuracy": np.nan})
    row = mx.summarize(df).iloc[0]
    assert row.median_ratio == np.inf and row.min_ratio == 0.3
    assert row.diverged == 2 and row.frac_diverged == pytest.approx(2 / 3) and not row.fixed
    assert mx.cell_text(row) == "✕\n2/3 ✕"
    mixed = row.copy()
    mixed.update({"blew_up": 1, "stalled": 2, "median_ratio": 1.04})
    assert mx.cell_text(mixed) == "1\n1/3 ✕\n2/3 st"  # one count per line


def test_plot_matrix_draws_every_cell(tiny_matrix):
    import matplotlib.pyplot as plt

    summary = mx.summarize(tiny_matrix)
    fig, ax = plt.subplots()
    image = mx.plot_matrix(ax, summary)
    assert len(ax.patches) == len(summary) + int(summary.fixed.sum())  # + frames of fixed
    assert sum(t.get_text() == "n/a" for t in ax.texts) == 3
    # remedies down, causes across
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        mx.CAUSES[c].label for c in TINY_CELLS["causes"]]
    assert len(ax.get_yticklabels()) == len(TINY_CELLS["remedies"])
    assert image.norm.vcenter == 0 and image.norm.vmin < 0 < image.norm.vmax
    plt.close(fig)
    fig, ax = plt.subplots()
    mx.plot_seeds(ax, tiny_matrix, ["C0", "C1", "C2"], ["o", "s", "^"])
    applicable = int(tiny_matrix.applicable.sum())
    assert sum(len(c.get_offsets()) for c in ax.collections) == applicable  # one per run
    plt.close(fig)


def test_describe_lists_what_each_cell_changes():
    table = mx.describe()
    assert table.shape == (len(mx.CAUSES), len(mx.REMEDIES))
    assert table.iloc[0, 0] == "-"
    assert table.loc[mx.CAUSES["long_rnn"].label, mx.REMEDIES["lstm"].label] == "cell=lstm"


def test_outcome_text_says_fixed_diverged_or_stalled():
    row = pd.Series({"applicable": True, "seeds": 3, "median_ratio": 0.7234, "fixed": True,
                     "diverged": 0, "blew_up": 0, "stalled": 0})
    assert mx.outcome_text(row) == "fixed (median 0.72)"
    row = row.copy()
    row.update({"fixed": False, "diverged": 0, "blew_up": 1, "stalled": 2.0,
                "median_ratio": 1.04})
    assert mx.outcome_text(row) == "1/3 blew up, 2/3 stalled, median 1"
    row.update({"diverged": 3, "blew_up": 3, "stalled": 0, "median_ratio": np.inf})
    assert mx.outcome_text(row) == "3/3 blew up (3 to NaN/Inf)"
    assert mx.outcome_text(pd.Series({"applicable": False})) == "not applicable"


def test_step_cost_is_a_ratio_to_no_remedy():
    cost = mx.step_cost("inputs", ["clip_norm", "init"], steps=2, repeat=1, width=8,
                        n_train=16, batch_size=4)
    assert list(cost.remedy) == ["none", "clip_norm"]  # init does not apply to this row
    assert cost.ratio.iloc[0] == 1.0 and cost.ratio_min.iloc[0] == cost.ratio_max.iloc[0] == 1.0
    assert np.isfinite(cost.seconds_per_step).all() and np.isfinite(cost.ratio).all()


def test_the_modern_rows_pass_only_the_settings_their_architecture_reads():
    cnn = mx.cause_config("cnn_weights_large", **TINY)
    assert "width" not in cnn and cnn["architecture"] == "cnn"  # a convnet has no width
    tf = mx.cause_config("post_ln", **TINY)
    assert tf["width"] == 32 and tf["norm_position"] == "post"  # the row's own width
    assert mx.cause_config("outliers", **TINY)["width"] == TINY["width"]
    for cause in mx.MODERN:
        eg.REGISTRY["training"].resolve(mx.cause_config(cause, **TINY))


def test_the_new_columns_apply_only_where_they_make_sense():
    s = mx.Settings(zclip_z=3.0, percentile=80.0)
    assert mx.cell_config("fp16_overflow", "loss_scaling", **TINY)["loss_scaling"] == "dynamic"
    assert mx.cell_config("fp16_underflow", "bf16", **TINY)["precision"] == "bf16"
    assert mx.cell_config("post_ln", "pre_ln", **TINY)["norm_position"] == "pre"
    assert mx.cell_config("post_ln", "qk_norm", **TINY)["qk_norm"] is True
    zclip = mx.cell_config("outliers", "zclip", s, **TINY)
    assert (zclip["clip"], zclip["clip_threshold"]) == ("zclip", 3.0)
    assert mx.cell_config("outliers", "percentile", s, **TINY)["clip_threshold"] == 80.0
    assert mx.cell_config("fp16_overflow", "skip_nonfinite", **TINY)["skip"] == "nonfinite"
    assert "float16" in mx.cell_config("weights_large", "bf16", **TINY)
    assert "transformer" in mx.cell_config("cnn_weights_large", "pre_ln", **TINY)
    assert "spike" in mx.cell_config("post_ln", "zclip", **TINY)
    assert "Adam" in mx.cell_config("fp16_overflow", "adam", **TINY)
    assert isinstance(mx.cell_config("fp16_underflow", "clip_norm", **TINY), str)
    # the existing columns on the new rows: the same change as on the old ones
    assert mx.cell_config("cnn_weights_large", "init", **TINY)["init"] == "he"
    assert mx.cell_config("post_ln", "adam", **TINY)["lr"] == mx.Settings.adam_lr
    assert mx.cell_config("post_ln", "warmup", steps=20)["warmup_steps"] == 2


def test_trivial_loss_of_images_and_sequences_is_the_entropy_of_their_classes():
    for cause in ("cnn_weights_large", "post_ln"):
        config = eg.REGISTRY["training"].resolve(mx.cause_config(cause, **TINY))
        data = make_data(config)
        assert data.task in ("images", "sort")
        y = data.y_test.reshape(-1)
        p = np.bincount(y.numpy(), minlength=data.d_out) / len(y)
        p = p[p > 0]
        assert mx.trivial_loss("training", config) == pytest.approx(-(p * np.log(p)).sum())
    # vocabulary 8, every token about equally frequent: close to log 8
    assert mx.trivial_loss("training", mx.cause_config("post_ln", **TINY)) == pytest.approx(
        math.log(8), abs=0.05)


def test_a_run_that_skips_most_of_its_last_steps_hid_a_divergence():
    run = eg.run("training", mx.cause_config("lr_large", **{**TINY, "steps": 20}), seeds=2)
    run = run[run["seed"] >= 0].copy()
    assert not mx.hidden_divergence(run).any()
    late = (run["seed"] == 1) & (run["step"] >= 16)  # 4 of the 20 updates, the last fifth
    run.loc[late, "skipped"] = 1.0
    assert list(mx.hidden_divergence(run)) == [False, True]
    assert not mx.hidden_divergence(run, until=15).any()  # not yet at step 15
    trivial = mx.trivial_loss("training", mx.cause_config("lr_large", **TINY))
    cell = mx.outcome(run, "training", trivial)
    assert list(cell.hidden) == [False, True] and bool(cell.blew_up.iloc[1])
    assert cell.baseline_ratio.iloc[1] == math.inf and not cell.diverged.iloc[1]
    row = mx.summarize(cell.assign(cause="lr_large", remedy="none", applicable=True,
                                   note="")).iloc[0]
    assert row.hidden == 1 and not row.fixed
    assert "1 hidden by skipping" in mx.outcome_text(row)


def test_every_new_cell_runs(tmp_path, monkeypatch):
    """Each new column on each row it applies to is accepted by the training experiment
    (two steps, one seed, small networks); the rest are marked not applicable."""
    monkeypatch.setenv("EXPLODING_GRADIENTS_CACHE", str(tmp_path))
    new = [r for r in mx.REMEDIES if r not in mx.CLASSIC_REMEDIES]
    df = mx.run_matrix(1, steps=2, depth=3, width=8, n_train=64, batch_size=8,
                       causes=mx.MODERN, remedies=["none", *new])
    ok = df[df.applicable]
    assert set(zip(ok.cause, ok.remedy, strict=True)) >= {
        ("fp16_overflow", "loss_scaling"), ("fp16_underflow", "bf16"), ("post_ln", "qk_norm"),
        ("post_ln", "pre_ln"), ("outliers", "adagc"), ("outliers", "skip_zscore")}
    assert not df[~df.applicable].note.eq("").any()
    assert len(ok) == 5 + 2 + 2 + 2 + 5 + 1  # none; 2 precision x 2; 2 transformer; 5 + 1 spike
