"""The transformers chapter's numbers, tables and figures, on synthetic tables built to
follow Xiong et al.'s laws exactly and on a few tiny real runs."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients.chapters import transformers as chapter
from exploding_gradients.study.plots import check_legible

P = chapter.CHAPTER.parameters({"profile": "quick", "depths": [2, 8, 32], "width": 8,
                                "heads": 2, "seq_len": 4, "n_train": 64,
                                "warmup_lrs": [0.01, 3.0], "qk_lrs": [0.01, 3.0],
                                "train_depth": 1, "train_steps": 3, "warmup_steps": 1}, {})


def xiong_table(seeds=3, noise=0.0):
    """signal_propagation-like rows: the last block's gradient is 1 (post-LN) and
    0.5 / sqrt(L) (pre-LN), pre-LN's stream variance L (post-LN: 1); pre-LN's first block
    has four times its last block's gradient."""
    rows = []
    rng = np.random.default_rng(0)
    for pos in ("post", "pre"):
        for depth in P.depths:
            for seed in range(seeds):
                for layer in range(1, depth + 1):
                    last = 1.0 if pos == "post" else 0.5 / math.sqrt(depth)
                    slope = 1.0 if pos == "post" else 4.0 ** ((depth - layer) / (depth - 1))
                    rows.append({"norm_position": pos, "depth": depth, "seed": seed,
                                 "layer": layer,
                                 "grad_norm": last * slope * math.exp(noise * rng.normal()),
                                 "preact_var": 1.0 if pos == "post" else float(depth)})
    return pd.DataFrame(rows)


def test_exponents_and_ratios_of_a_table_that_follows_xiong_exactly():
    exps = chapter.depth_exponents(xiong_table())
    assert np.allclose(exps["post"], 0.0) and np.allclose(exps["pre"], -0.5)
    assert np.allclose(exps["ratio"], 0.5) and np.allclose(exps["stream"], 0.5)
    n = chapter.init_numbers(xiong_table(), P)
    assert n["tf_exp_ratio"] == "0.50 [0.50, 0.50]" and n["tf_exp_pred_ratio"] == "0.5"
    assert (n["tf_exp_ratio_med"], n["tf_exp_post_med"]) == ("0.50", "0.00")
    assert n["tf_exp_pre"] == "−0.50 [−0.50, −0.50]" and n["tf_exp_pred_pre"] == "−0.5"
    assert n["tf_ratio_lo"] == f"{2 * math.sqrt(2):.2f} [{2 * math.sqrt(2):.2f}, " \
                               f"{2 * math.sqrt(2):.2f}]"
    assert n["tf_ratio_hi_pred"] == f"{2 * math.sqrt(32):.2f}"  # the sqrt(L) law, exact here
    assert n["tf_pre_hi_pred"] == n["tf_pre_hi"] == f"{0.5 / math.sqrt(32):.2f}"
    assert n["tf_profile_pre"] == "4.00" and n["tf_profile_post"] == "1.00"
    ctrl = chapter.control_numbers(xiong_table(), P)
    assert ctrl["tf_ctrl_exp_post"] == "+0.00 [+0.00, +0.00]"


def test_init_table_and_figures_are_readable():
    at_init = xiong_table(noise=0.1)
    shown = chapter.init_table(at_init, P).data
    assert list(shown["blocks L"]) == P.depths
    assert shown["√L law"].iloc[-1] == pytest.approx(shown["√L law"].iloc[0] * 4)
    for fig, panels in ((chapter.fig_init(at_init, P), 2), (chapter.fig_profile(at_init, P), 1)):
        assert len(fig.axes) == panels
        check_legible(fig)
        plt.close(fig)


def test_arm_names_each_configuration_and_a_missing_column_is_off():
    runs = pd.DataFrame({"norm_position": ["post", "pre", "pre"], "warmup_steps": [0, 5, 5]})
    assert list(chapter.arm(runs)) == ["post_cold", "pre_warm", "pre_warm"]
    runs["qk_norm"] = [np.nan, False, True]
    assert list(chapter.arm(runs)) == ["post_cold", "pre_warm", "pre_warm_qk"]
    assert set(chapter.arm(runs)) <= set(chapter.ARMS)


def test_lr_sensitivity_caps_at_the_initial_loss_and_counts_a_diverged_run_as_it():
    out = pd.DataFrame({"arm": "a", "seed": 0, "lr": [0.01, 0.1, 1.0, 10.0],
                        "first_loss": 2.0, "final_loss": [0.5, 1.0, 3.0, np.nan]})
    sens = chapter.lr_sensitivity(out, ["arm"])
    assert sens["sensitivity"].iloc[0] == pytest.approx((0.5 + 1.0 + 2.0 + 2.0) / 4 - 0.5)
    flat = out.assign(final_loss=0.7)
    assert chapter.lr_sensitivity(flat, ["arm"])["sensitivity"].iloc[0] == 0.0


def test_failing_rate_is_the_smallest_where_most_post_ln_runs_failed():
    out = pd.DataFrame({"arm": ["post_cold"] * 6 + ["pre_cold"] * 2,
                        "lr": [0.01, 0.01, 0.1, 0.1, 1.0, 1.0, 0.01, 0.01],
                        "failed": [False, True, True, True, True, True, True, True]})
    assert chapter.failing_lr(out) == 0.1
    assert math.isnan(chapter.failing_lr(out.assign(failed=False)))


def test_block_spread_compares_the_first_and_last_block_at_the_last_step():
    rows = [{"norm_position": "post", "warmup_steps": 0, "lr": 0.1, "seed": 0, "step": step,
             "layer": layer, "grad_norm": (10.0 ** (layer - 3) if step else 1.0)}
            for step in (0, 50) for layer in (1, 2, 3)]
    spread = chapter.block_spread(pd.DataFrame(rows))
    assert spread["spread"].iloc[0] == pytest.approx(0.01) and spread["arm"].iloc[0] == "post_cold"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny real sweeps of the page (one seed, a few steps), in a cache of their own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXPLODING_GRADIENTS_CACHE", str(tmp_path_factory.mktemp("cache")))
        train = dict(architecture="transformer", depth=P.train_depth, width=P.width,
                     heads=P.heads, seq_len=P.seq_len, vocab=P.vocab, n_train=P.n_train,
                     init=P.init, activation=P.activation, optimizer="adam",
                     steps=P.train_steps, batch_size=P.batch_size, log_every=P.train_steps)
        warm = eg.sweep("training", [{"norm_position": p, "warmup_steps": w, "lr": lr}
                                     for p in ("post", "pre") for w in (0, P.warmup_steps)
                                     for lr in P.warmup_lrs], seeds=1, **train)
        qk = eg.sweep("training", [{"norm_position": "pre", "warmup_steps": P.warmup_steps,
                                    "qk_norm": q, "lr": lr}
                                   for q in (False, True) for lr in P.qk_lrs], seeds=1, **train)
        lr = chapter.probe_lr(warm, P)
        longer = eg.sweep("training", [{"norm_position": p, "warmup_steps": w, "lr": lr}
                                       for p, w in (("post", P.warmup_steps), ("pre", 0))],
                          seeds=1, **{**train, "steps": P.long_steps})
    return warm, qk, longer


def test_warmup_and_qk_numbers_tables_and_figures_of_real_runs(trained):
    warm, qk, longer = trained
    assert chapter.chance_loss(P) == pytest.approx(math.log(P.vocab))
    n = chapter.warmup_numbers(warm, P)
    for key in chapter.WARMUP_ARMS:
        assert f"tf_{key}_spread" in n and f"tf_{key}_maxlr" in n
    assert n["tf_failed_diverged"] <= int(n["tf_failed_n"].split("/")[0])
    out = chapter.outcomes(warm, P)
    for key in chapter.WARMUP_ARMS:  # the plain counts agree with the k/n shown
        if n[f"tf_{key}_failed"] != "–":
            assert n[f"tf_{key}_failed"].startswith(f"{n[f'tf_{key}_nfailed']}/")
    assert int(n["tf_failed_n"].split("/")[0]) == int(out["failed"].sum())
    lr = chapter.probe_lr(warm, P)
    assert lr in P.warmup_lrs
    long = chapter.long_numbers(longer, warm, P)
    assert long["tf_long_lr"] == f"{lr:g}"
    assert long["tf_seed_verdict"] == chapter.seed_verdict({**n, **long})
    for key in chapter.LONG_ARMS:
        assert long[f"tf_long_{key}_failed"] == f"{long[f'tf_long_{key}_nfailed']}/1"
    shown = chapter.warmup_table(warm, P).data
    assert list(shown.columns) == ["learning rate", *(chapter.ARMS[k]
                                                      for k in chapter.WARMUP_ARMS)]
    q = chapter.qk_numbers(qk, P)
    assert q["tf_qk_lr_max"] == "3" and float(q["tf_sens_qk"].split()[0]) >= 0
    assert q["tf_sens_qk_med"] == q["tf_sens_qk"].split()[0]
    out = chapter.qk_outcomes(qk, P)
    assert set(out["arm"]) == set(chapter.QK_ARMS) and out["logit_last"].notna().all()
    assert len(chapter.qk_table(qk, P).data) == len(P.qk_lrs)
    for fig, panels in ((chapter.fig_warmup(warm, P), 2), (chapter.fig_qk(qk, P), 2)):
        assert len(fig.axes) == panels
        check_legible(fig)
        plt.close(fig)


def test_seed_verdict_follows_its_rule():
    base = {"tf_fail_lr": "0.03", "tf_post_cold_nfailed": 3, "tf_post_warm_nfailed": 0,
            "tf_failed_diverged": 0, "tf_failed_growth_max": "5.0", "tf_pre_warm_nfailed": 0,
            "tf_long_post_warm_nfailed": 0}
    assert chapter.seed_verdict(base) == "nuanced"  # warmup rescues, nothing exploded
    assert chapter.seed_verdict({**base, "tf_failed_diverged": 1}) == "supported"
    assert chapter.seed_verdict({**base, "tf_failed_growth_max": "1.2 × 10²"}) == "supported"
    # an explosion that warmup only partly removes, or only for a while, stays nuanced
    assert chapter.seed_verdict({**base, "tf_failed_diverged": 1,
                                 "tf_long_post_warm_nfailed": 2}) == "nuanced"
    assert chapter.seed_verdict({**base, "tf_failed_diverged": 1,
                                 "tf_post_warm_nfailed": 1}) == "nuanced"
    assert chapter.seed_verdict({**base, "tf_post_warm_nfailed": 3}) == "refuted"
    assert chapter.seed_verdict({**base, "tf_pre_warm_nfailed": 1}) == "untestable here"
    assert chapter.seed_verdict({**base, "tf_fail_lr": "none",
                                 "tf_post_cold_nfailed": 0}) == "untestable here"
