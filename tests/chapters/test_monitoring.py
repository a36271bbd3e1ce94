"""The monitoring chapter's numbers, tables and figures, on synthetic training tables and
a tiny model."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from torch import nn

from exploding_gradients.chapters import monitoring as chapter

P = chapter.CHAPTER.parameters({"profile": "quick"}, {})
DIVERGE = 40  # step at which every exploding fake run turns NaN


def fake_run(seed: int, lr: float, explode: bool, spike: bool = False) -> pd.DataFrame:
    """Per-step rows of a ``training``-style run swept over ``lr``: a flat gradient norm,
    for an exploding run a factor-3 climb over the last 8 steps before a NaN, for a
    spiking one a single spike of 50 at step 20 that passes."""
    last = DIVERGE if explode else P.steps
    steps = np.arange(last + 1)
    grad = 1.0 + 0.01 * np.sin(steps + seed)
    if spike:
        grad[20] = 50.0
    if explode:
        grad[last - 8:last] = 3.0 ** np.arange(1, 9)
        grad[last] = np.nan
    ratio = np.where(steps % P.log_every == 0, (0.05 if explode else 5e-4) * (1 + seed), np.nan)
    ratio[-1] = np.nan  # the diverged (or last) step makes no update
    return pd.DataFrame({
        "seed": seed, "step": steps, "layer": 0, "loss": 1.0, "grad_norm": grad,
        "step_lr": lr * np.minimum(1, (steps + 1) / P.warmup_steps), "update_ratio": ratio,
        "diverged_step": DIVERGE if explode else -1, "stopped_step": -1,
        "cause": "inf_grad" if explode else "", "lr": lr})


@pytest.fixture
def runs():
    spiking = [fake_run(s, lr, False, spike=True) for lr in P.spiking_lrs[:2]
               for s in range(P.seeds)]
    return pd.concat([fake_run(s, lr, lr == P.explode_lr) for lr in [P.explode_lr, P.healthy_lr]
                      for s in range(P.seeds)] + spiking, ignore_index=True)


def test_runs_are_labelled_by_the_swept_peak_rate_not_the_warmed_up_one(runs):
    labelled = chapter.labelled(runs, P)
    assert set(labelled[labelled.lr == P.explode_lr].run) == {"exploding"}
    assert set(labelled[labelled.lr == P.healthy_lr].run) == {"healthy"}
    assert set(labelled[labelled.lr == P.spiking_lrs[0]].run) == {"spiking"}
    assert (labelled.step_lr < labelled.lr).any()  # warmup: step_lr is not the label


def test_lead_numbers_count_the_final_climb(runs):
    n = chapter.lead_numbers(runs, P)
    assert n["mon_diverged"] == f"{P.seeds}/{P.seeds}" and n["mon_warned"] == "2/2"
    assert n["mon_false"] == "0/2" and n["mon_healthy_diverged"] == "0/2"
    assert n["mon_first_div"] == str(DIVERGE)
    # 3^k > 10 x median (1) first at k = 3 (27), step 34: flagged 6 steps ahead, every
    # step of the climb after it flagged too
    assert n["mon_lead_first"] == "6" and n["mon_streak"] == "6"
    assert n["mon_precursors"] == "the warning came from the final climb itself"
    assert n["mon_last_norm"] == f"{3.0 ** 8:.1e}" and n["mon_loss_breaks"] == "0/2"
    assert n["mon_explode_lr"] == f"{P.explode_lr:g}"


def test_lead_table_has_a_row_per_factor(runs):
    table = chapter.lead_table(runs, P).data
    assert list(table["factor k"]) == [f"{k:g}" for k in sorted({*P.factors, P.spike_factor})]
    assert (table["healthy runs flagged"] == "0/2").all()
    assert table.set_index("factor k").loc["100", "warning, steps (first flag)"] \
        == "4 [4, 4]"  # 3^5 = 243 > 100 at step 36
    # a spike of 50 passes 3x and 10x the median, not 100x
    assert list(table["recovering runs flagged"]) == ["4/4", "4/4", "0/4"]


def test_false_alarms_are_counted_per_rate_and_seed(runs):
    n = chapter.false_alarm_numbers(runs, P)
    assert n["mon_spiking_n"] == 2 * P.seeds and n["mon_spiking_diverged"] == "0/4"
    assert n["mon_spiking_flagged"] == "4/4"
    assert n["mon_spiking_verdict"] == "flagged every one of them"
    assert n["mon_spiking_spike"] == "50"


def test_ratio_numbers(runs):
    n = chapter.ratio_numbers(runs, P)
    assert n["mon_ratio_explode_last"] == "0.075"  # median of 0.05 and 0.1
    assert n["mon_ratio_healthy"] == "0.00075"
    assert n["mon_ratio_rule"] == "within an order of magnitude of"
    assert n["mon_ratio_sep"] == "100"
    assert n["mon_ratio_from"] == str(min(P.warmup_steps, P.steps) // 2)


def test_figures_have_the_expected_axes(runs):
    lead = chapter.fig_lead(runs, P).get_axes()
    assert len(lead) == 2 and lead[0].get_yscale() == "log"
    labels = [t.get_text() for t in lead[0].get_legend().get_texts()]
    assert f"exploding (lr {P.explode_lr:g})" in labels
    ratio = chapter.fig_ratio(runs, P).get_axes()
    assert len(ratio) == 1 and ratio[0].get_yscale() == "log"
    plt.close("all")


def tiny_model():
    return nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))


def history(broken_at: int | None, flagged: list[int], where: str | None = None):
    steps = (broken_at if broken_at is not None else 9) + 1
    h = pd.DataFrame({"step": range(steps), "loss": 1.0, "grad_norm": 1.0,
                      "flagged": [s in flagged for s in range(steps)]})
    if broken_at is not None:
        h.loc[broken_at, "grad_norm"] = math.inf
        h["first_nonfinite"] = None
        h.loc[broken_at, "first_nonfinite"] = where
    return h


def test_demo_rows_and_numbers():
    model = tiny_model()
    healthy = history(None, [])
    assert not chapter.broke(healthy) and chapter.broke(history(5, []))
    rows = [chapter.demo_row(0, history(6, [2, 6], "2"), model,
                             {"function": "MseLossBackward0", "forward_code": "return x"}),
            chapter.demo_row(1, history(7, [], "4"), model, {}),
            chapter.demo_row(2, healthy, model, {})]
    assert rows[0]["warning (steps)"] == 4  # the flag at the broken step itself is not one
    assert rows[0]["monitor: first non-finite layer"] == "Linear 2 of 3 (model[2])"
    assert rows[1]["anomaly mode: raised in"] == "nothing raised"
    assert rows[2]["NaN/Inf at step"] is None and rows[2]["in"] == ""
    demo = pd.DataFrame(rows)
    n = chapter.demo_numbers(demo, P)
    assert n["mon_demo_broken"] == "2/3" and n["mon_demo_warned"] == "1/2"
    assert n["mon_demo_layers"] == "2, 3"
    assert n["mon_demo_layer_phrase"] == "not always the same one, and never the first"
    assert n["mon_anomaly_raised"] == "1/2" and n["mon_anomaly_lines"] == '"return x"'
    assert n["mon_anomaly_silent"].startswith("In the other 1 it raised nothing: there the")
    assert chapter.demo_display(demo).data is demo


def test_theory_lead_is_the_geometric_estimate():
    assert chapter.theory_numbers() == {"mon_theory_lead": "38"}


def test_cost_numbers_and_figure():
    costs = {"monitoring": {"ratio": 1.04, "ratio_min": 1.01, "ratio_max": 1.1,
                            "ratios": [1.01, 1.04, 1.1], "off_step_seconds": 2e-3,
                            "every_step_overhead": 0.001, "sample_cost": 0.3,
                            "interval_for_budget": 8},
             "anomaly": {"ratio": 4.0, "ratio_min": 3.0, "ratio_max": 5.0,
                         "ratios": [3.0, 5.0], "repeat": 2}}
    n = chapter.cost_numbers(costs, P)
    assert n["mon_cost_pct"] == "4" and n["mon_cost_verdict"] == "within"
    assert n["mon_cost_step_note"].startswith("That is too little")
    assert n["mon_cost_interval"] == "every 8 steps or less often"
    assert n["mon_anomaly_repeat"] == 2 and n["mon_cost_ms"] == "2.0"
    costs["monitoring"]["interval_for_budget"] = math.inf
    assert chapter.cost_numbers(costs, P)["mon_cost_interval"] == "at no interval"
    ax = chapter.fig_cost(costs, P).get_axes()[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["monitoring on", "detect_anomaly"]
    plt.close("all")


def test_distribution_numbers_and_heatmaps_of_a_tiny_detailed_run():
    import exploding_gradients as eg
    from exploding_gradients.study.plots import check_legible

    detail = eg.sweep("training", [{"lr": P.explode_lr}, {"lr": P.healthy_lr}], seeds=1,
                      layer_detail=True, depth=3, width=8, n_train=128, batch_size=16,
                      steps=12, log_every=2, optimizer="momentum", warmup_steps=4)
    n = chapter.distribution_numbers(detail, P)
    assert n["mon_detail_every"] == P.detail_every
    assert n["mon_healthy_dead"].endswith("%") and "nan" not in str(n.values())
    fig = chapter.fig_distribution(detail, P)
    check_legible(fig)
    assert len([a for a in fig.get_axes() if a.get_title()]) == 4
    plt.close("all")


def fp16_run(seed: int, lr: float, explode: bool) -> pd.DataFrame:
    """A float16 run's per-step rows: a healthy one skips steps 10 and 30 at an ordinary
    loss, and its scale grows back; an exploding one skips 4 steps in a row at a rising
    loss, halving its scale each time, then diverges."""
    steps = np.arange(41)
    loss = np.ones(len(steps))
    skipped = np.zeros(len(steps))
    scale = np.full(len(steps), 1024.0)
    if explode:
        loss[34:] = [4, 8, 16, 32, 64, np.nan, np.nan]
        skipped[35:39] = 1
        scale[36:] = [512, 256, 128, 64, 64]
        diverged = 39
        steps, loss, skipped, scale = (a[:40] for a in (steps, loss, skipped, scale))
    else:
        skipped[[10, 30]] = 1
        scale[11:] = 512.0
        scale[25:] = 1024.0
        scale[31:] = 512.0
        diverged = -1
    return pd.DataFrame({"seed": seed, "step": steps, "layer": 0, "loss": loss,
                         "skipped": skipped, "loss_scale": scale, "diverged_step": diverged,
                         "lr": lr})


def test_precision_rows_tell_a_scalers_skip_from_an_explosion():
    fp16 = pd.concat([fp16_run(0, P.healthy_lr, False), fp16_run(0, P.explode_lr, True)],
                     ignore_index=True)
    rows = chapter.precision_rows(fp16, P).set_index("run")
    assert rows.loc["healthy", "skips"] == 2 and rows.loc["healthy", "longest streak"] == 1
    assert rows.loc["healthy", "loss at skips ÷ running median"] == 1
    assert rows.loc["exploding", "longest streak"] == 4
    assert rows.loc["exploding", "loss at skips ÷ running median"] > 8
    assert rows.loc["exploding", "smallest scale"] == 64 and rows.loc["exploding", "diverged"]
    n = chapter.precision_numbers(fp16, P)
    assert n["mon_fp16_exploding_diverged"] == "1/1" and n["mon_fp16_healthy_streak"] == 1
    assert len(chapter.fig_precision(fp16, P).get_axes()) == 2
    plt.close("all")
