"""The precision chapter's predictions, numbers, tables and figures, on synthetic tables
and tiny real runs."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import exploding_gradients as eg
from exploding_gradients.chapters import Params
from exploding_gradients.chapters import precision as chapter
from exploding_gradients.precision import PRECISIONS

QUICK = chapter.CHAPTER.parameters({"profile": "quick"}, {})
P = Params("precision", {**QUICK, "seeds": 1, "steps": 4, "clip_steps": 4})
NET = dict(width=P.width, batch_size=P.batch_size, activation="relu", init="normal",
           task="regression", optimizer="adam", lr=P.lr)
FORMATS = [dict(precision=p, loss_scaling="none") for p in PRECISIONS] + [
    dict(precision="fp16", loss_scaling="dynamic")]


def one_step(sigma_w, depth, precision, seed, loss=1.0, grad=1.0, zeros=0.0, entry=1.0,
             d_in=16):
    """The step-0 rows of one run of the one-step sweep: the step row and layer 1."""
    keys = dict(sigma_w=sigma_w, depth=depth, precision=precision, seed=seed, step=0)
    norm = entry * math.sqrt(P.width * d_in)
    return [dict(keys, layer=0, loss=loss, grad_norm=grad, grad_zero_fraction=np.nan),
            dict(keys, layer=1, loss=np.nan, grad_norm=norm, grad_zero_fraction=zeros)]


def test_variant_names_and_small_formatters():
    assert chapter.variant("fp16", "dynamic") == chapter.SCALED
    assert chapter.variant("bf16") == "bfloat16"
    assert chapter.power_of_two(2.0**-7) == "2⁻⁷" and chapter.power_of_two(3.0) == "3"
    assert chapter.spread([2.0, 2.0]) == "2" and chapter.spread([1.0, 2.0, 30.0]) == "2 [1, 30]"
    assert chapter.spread([]) == "–"
    assert chapter.depth_spread([18, 20, 18]) == "18 (18 to 20 over seeds)"
    assert chapter.depth_spread([22]) == "22"
    assert chapter.scales([2.0**-4, 2.0**-7, 2.0**-7]) == "2⁻⁷ to 2⁻⁴ (by seed)"
    assert chapter.scales([65536.0]) == "2¹⁶"
    assert chapter.first_depth([1, 2, 3], [1.0, 5.0, 9.0], 5.0, above=True) == 2
    assert chapter.first_depth([1, 2, 3], [9.0, 5.0, 1.0], 5.0, above=False) == 3
    assert math.isnan(chapter.first_depth([1, 2], [1.0, 2.0], 5.0, above=True))


def test_predicted_depths_follow_the_formats_range():
    """float16's range is 2^16 above 1, float32's 2^128: with a gradient doubling per
    layer float16 overflows about 112 layers sooner; bfloat16's subnormals stop sooner
    than float32's; the forward pass overflows later than the gradient."""
    up, down = P.overflow_sigma_w, P.underflow_sigma_w
    fp16, fp32 = (chapter.predicted_depth(up, p, P) for p in ("fp16", "fp32"))
    assert 15 <= fp16 <= 25 and fp32 - fp16 == pytest.approx(112, abs=2)
    assert chapter.predicted_depth(up, "bf16", P) == fp32
    assert chapter.predicted_depth(down, "fp16", P) < chapter.predicted_depth(down, "bf16", P) \
        < chapter.predicted_depth(down, "fp32", P)
    assert chapter.predicted_forward_depth(P) > fp16
    # on a coarse grid: the first grid depth at or after the crossing
    assert chapter.predicted_depth(up, "fp16", P, [10, 30]) == 30
    shown = chapter.formats_table(P).data
    assert list(shown["format"]) == ["float32", "bfloat16", "float16"]


def test_first_steps_classify_each_run_and_subtract_relus_zeros():
    rows = (one_step(2.0, 10, "fp32", 0) + one_step(2.0, 10, "fp16", 0, grad=np.inf)
            + one_step(2.0, 12, "fp32", 0) + one_step(2.0, 12, "fp16", 0, loss=np.nan)
            + one_step(0.8, 10, "fp32", 0, zeros=0.25)
            + one_step(0.8, 10, "fp16", 0, zeros=0.875, entry=1e-8))
    runs = chapter.first_steps(pd.DataFrame(rows), P).set_index(
        ["sigma_w", "depth", "precision"])
    assert runs.loc[(2.0, 10, "fp16"), "event"] == "gradient"
    assert runs.loc[(2.0, 12, "fp16"), "event"] == "forward"
    assert runs.loc[(2.0, 10, "fp32"), "event"] == "finite"
    assert runs.loc[(2.0, 10, "fp32"), "entry"] == pytest.approx(1.0)
    assert runs.loc[(0.8, 10, "fp16"), "excess_zeros"] == pytest.approx(0.625)
    depths = chapter.measured_depths(runs.reset_index(), 2.0, "fp16", chapter.overflowed)
    assert depths.to_dict() == {0: 10}


def test_depth_numbers_on_a_tiny_real_sweep():
    """Depth 6 fits every format; depth 26 overflows float16 with sigma_w = 2 and flushes
    it with sigma_w = 0.8, as the prediction says."""
    Q = Params("precision", {**P, "depths": [6, 26]})
    grid = [dict(sigma_w=s, depth=d, precision=p) for s in (2.0, 0.8) for d in Q.depths
            for p in PRECISIONS]
    steps0 = eg.sweep("training", grid, seeds=1, **NET, n_train=Q.batch_size, steps=1)
    numbers = chapter.depth_numbers(steps0, Q) | chapter.claim_numbers(steps0, Q)
    assert numbers["prec_meas_overflow"] == "26" and numbers["prec_meas_flush"] == "26"
    assert numbers["prec_bf16_nonfinite"] == "0/4"
    # the one float16 overflow (sigma_w = 2, depth 26) is in the gradient or the forward pass
    assert numbers["prec_gradient_runs"] + numbers["prec_claim_forward"] == 1
    errors = {h: chapter.relative_errors(steps0, h, 2.0).median() for h in ("bf16", "fp16")}
    assert 0 < errors["fp16"] < errors["bf16"] < 0.05  # 11 significant bits against 8
    fig = chapter.fig_depth(steps0, Q)
    assert len(fig.axes) == 2 and all(ax.get_yscale() == "log" for ax in fig.axes)
    plt.close(fig)


def test_overflow_names_the_layer_and_loss_scaling_skips_steps():
    train = dict(NET, n_train=P.n_train, steps=P.steps, log_every=1)
    explode = dict(train, depth=P.overflow_depth, sigma_w=P.overflow_sigma_w)
    overflow = eg.sweep("training", FORMATS, seeds=1, **explode)
    deeper = eg.run("training", explode, depth=P.forward_depth, precision="fp16",
                    loss_scaling="dynamic", steps=1)
    numbers = chapter.overflow_numbers(overflow, deeper, P)
    assert numbers["prec_up_f32_div"] == numbers["prec_up_bf16_div"] == "0/1"
    assert numbers["prec_up_f16_div"] == "1/1" and numbers["prec_up_f16_step"] == "0"
    depth = P.overflow_depth
    assert numbers["prec_up_named"] == f"layer {depth} of {depth}"  # the last hidden layer
    assert numbers["prec_up_skipped"] == str(P.steps)  # 2^16 is far too large a scale
    assert numbers["prec_forward_cause"] in ("a NaN loss", "an infinite loss")
    fig = chapter.fig_overflow(overflow, P)
    assert len(fig.axes) == 2
    plt.close(fig)


def test_underflow_numbers_count_zeros_and_learning():
    train = dict(NET, n_train=P.n_train, steps=P.steps, log_every=2)
    underflow = eg.sweep("training", FORMATS, seeds=1, **train, depth=P.underflow_depth,
                         sigma_w=P.underflow_sigma_w)
    numbers = chapter.underflow_numbers(underflow, P)
    assert numbers["prec_down_f16_z1"] == "100" and numbers["prec_down_f32_z1"] == "0"
    assert numbers["prec_down_f16_ls_z1"] == "0" and numbers["prec_down_skipped"] == "0"
    assert numbers["prec_down_scale"] == "2¹⁶"
    fig = chapter.fig_underflow(underflow, P)
    assert len(fig.axes) == 2
    plt.close(fig)


def test_clipping_the_scaled_gradient_is_measured_as_too_hard():
    clipped = dict(depth=P.clip_depth, width=P.width, activation="relu", init="he",
                   task="regression", optimizer="sgd", lr=P.clip_lr, steps=6, log_every=1,
                   clip_threshold=P.clip_threshold)
    orders = [dict(precision="fp32", loss_scaling="none", clip="norm", clip_order="unscaled"),
              dict(precision="fp16", loss_scaling="dynamic", clip="none",
                   clip_order="unscaled")]
    orders += [dict(precision="fp16", loss_scaling="dynamic", clip="norm", clip_order=o)
               for o in ("unscaled", "scaled")]
    clipping = eg.sweep("training", orders, seeds=1, **clipped)
    summary = chapter.clip_summary(clipping)
    assert list(summary.variant) == ["float32, clipped", "float16 + loss scaling, no clipping",
                                     "float16 + loss scaling, clipped after unscaling",
                                     "float16 + loss scaling, clipped while scaled"]
    numbers = chapter.clip_numbers(clipping, P)
    assert float(numbers["prec_clip_update_ratio"].replace(" × 10⁴", "e4")
                 .replace(" × 10³", "e3")) > 100


def test_costs_and_the_side_by_side_table():
    costs = pd.DataFrame({"variant": ["bfloat16", "bfloat16", chapter.SCALED, chapter.SCALED],
                          "round": [0, 1, 0, 1], "ratio": [1.2, 1.4, 2.0, 3.0],
                          "step_seconds": [1.0] * 4})
    numbers = chapter.cost_numbers(costs, P)
    assert numbers["prec_cost_bf16"] == "1.30× (range 1.20–1.40)"
    assert numbers["prec_cost_f16_ls"] == "2.50× (range 2.00–3.00)"
    keys = ["prec_up_bf16_div", "prec_up_f16_ls_div", "prec_up_skipped",
            "prec_bf16_nonfinite", "prec_forward_div", "prec_forward_step",
            "prec_down_bf16_z1", "prec_down_f16_ls_z1"]
    shown = chapter.protection_table({k: "x" for k in keys} | numbers).data
    assert list(shown.columns) == ["", "bfloat16", chapter.SCALED] and len(shown) == 5
    assert shown.iloc[-1, 1] == numbers["prec_cost_bf16"]
