import math

import pytest
import torch
from torch import nn

from exploding_gradients import GradientMonitor


def test_monitor_works_on_any_module():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))
    x = torch.randn(5, 2, 6)
    with GradientMonitor(model) as monitor:
        model(x).pow(2).sum().backward()
        rows = monitor.layer_stats()
    assert [r["name"] for r in rows] == ["0", "3"]
    assert all(r["grad_norm"] > 0 and r["delta_norm"] > 0 for r in rows)
    # the weight-gradient norm it reports is the real one
    assert rows[1]["grad_norm"] == pytest.approx(model[3].weight.grad.norm().item())


def test_delta_norm_is_the_gradient_wrt_the_output():
    lin = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with GradientMonitor(nn.Sequential(lin)) as monitor:
        out = lin(x)
        out.retain_grad()
        (out**3).sum().backward()
        (row,) = monitor.layer_stats()
    assert row["delta_norm"] == pytest.approx(out.grad.norm().item())
    assert row["preact_var"] == pytest.approx(out.detach().var(unbiased=False).item())


def test_nonfinite_is_traced_to_the_first_layer():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 1))
    with torch.no_grad():
        model[1].weight[0, 0] = float("inf")
    with GradientMonitor(model) as monitor:
        model(torch.randn(2, 3)).sum().backward()
        assert monitor.first_nonfinite() == "1"


def test_remove_detaches_hooks():
    model = nn.Sequential(nn.Linear(3, 3))
    monitor = GradientMonitor(model)
    monitor.remove()
    model(torch.randn(1, 3)).sum().backward()
    assert math.isnan(monitor.layer_stats()[0]["delta_norm"])


def test_nonfinite_gradient_is_traced_backwards():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 1))
    x = torch.randn(2, 3)
    with GradientMonitor(model) as monitor:
        (model(x) * float("nan")).sum().backward()  # finite forward, NaN loss
        assert monitor.first_nonfinite() == "2"


def test_a_half_precision_weight_gradient_that_overflows_alone_is_named():
    """Each weight-gradient entry sums one product per sample: in float16 it passes
    65504 while the gradients it is made of stay finite, and the monitor must say so."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 1))
    with torch.no_grad():
        for layer in model:
            layer.weight.fill_(0.5)
    x = torch.full((64, 4), 100.0)
    with GradientMonitor(model) as monitor, torch.autocast("cpu", dtype=torch.float16):
        out = model(x)
    (out.float().sum() * 40.0).backward()  # dL/d(output) = 40: fine; dW3 = 64 x 40 x 400
    rows = monitor.layer_stats()
    assert all(math.isfinite(r["delta_norm"]) and math.isfinite(r["preact_var"]) for r in rows)
    assert math.isinf(rows[2]["grad_norm"]) and rows[2]["nonfinite"]
    assert monitor.first_nonfinite() == "2"  # the backward pass computes it first


def test_first_nonfinite_layer_reads_forward_then_backward_from_rows():
    from exploding_gradients.monitor import first_nonfinite_layer

    inf, nan = float("inf"), float("nan")

    def rows(*values):
        return [{"layer": i, "preact_var": p, "delta_norm": d, "grad_norm": g}
                for i, (p, d, g) in enumerate(values, start=1)]

    assert first_nonfinite_layer(rows((1, 1, 1), (1, 1, 1)), "layer") is None
    # forward: the input-most; it wins over any gradient
    assert first_nonfinite_layer(rows((1, inf, 1), (inf, 1, 1), (nan, 1, 1)), "layer") == 2
    # backward: the output-most layer with a non-finite delta or weight gradient
    assert first_nonfinite_layer(rows((1, inf, inf), (1, 1, inf), (1, 1, 1)), "layer") == 2
    assert first_nonfinite_layer(rows((1, nan, 1), (1, 1, 1)), "layer") == 1


def test_derivative_stats_of_known_functions():
    from exploding_gradients.monitor import derivative_stats

    h = torch.tensor([0.0, 0.0, 10.0, -10.0])
    stats = derivative_stats(nn.Tanh(), h)
    # tanh'(0) = 1 twice, tanh'(+-10) ~ 8e-9 twice
    assert stats["dphi_sq"] == pytest.approx(0.5, abs=1e-6)
    assert stats["saturated"] == 0.5
    relu = derivative_stats(nn.ReLU(), torch.tensor([-1.0, 2.0, 3.0, -4.0]))
    assert relu == {"dphi_sq": 0.5, "saturated": 0.5}


# --------------------------------------------------------------- spikes, logging, costs

def test_spike_detector_flags_a_jump_over_the_running_median():
    from exploding_gradients.monitor import SpikeDetector

    detector = SpikeDetector(factor=10.0, window=5, min_history=3)
    flags = [detector.update(v) for v in [1.0, 50.0, 1.2, 0.9, 1.1, 11.5, 1.0, 9.0]]
    # 50 comes before 3 values are known; 11.5 > 10 x median(1.0, 50, 1.2, 0.9, 1.1) = 11
    assert flags == [False, False, False, False, False, True, False, False]
    assert detector.spikes == [5]
    assert detector.threshold == pytest.approx(10 * 1.1)  # median of the last 5
    assert detector.update(float("nan")) and detector.update(float("inf"))
    assert detector.spikes == [5, 8, 9]
    assert len(detector.history) == 5  # NaN/Inf never enter the history


def test_spike_detector_accepts_tensors_and_rejects_bad_settings():
    from exploding_gradients.monitor import SpikeDetector, detect_spikes

    assert detect_spikes([torch.tensor(1.0)] * 5 + [torch.tensor(100.0)], min_history=5) == [5]
    # a lasting change of scale stops being flagged once it fills half the window
    flagged = detect_spikes([1.0] * 10 + [100.0] * 10, window=6, min_history=3)
    assert flagged == [10, 11, 12]
    with pytest.raises(ValueError):
        SpikeDetector(factor=0.0)
    with pytest.raises(ValueError):
        SpikeDetector(window=3, min_history=4)


class FakeWriter:
    """What log_to_tensorboard needs of torch.utils.tensorboard.SummaryWriter."""

    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, global_step=None):
        self.scalars.append((tag, value, global_step))


def test_log_to_tensorboard_writes_each_layer_statistic():
    from exploding_gradients.monitor import log_to_tensorboard

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    writer = FakeWriter()
    with GradientMonitor(model) as monitor:
        model(torch.randn(5, 3)).sum().backward()
        written = monitor.log_to(writer, step=7)
        rows = monitor.layer_stats()
    assert written == len(writer.scalars) == 2 * 5  # 2 layers x 5 numeric statistics
    tags = {tag: (value, step) for tag, value, step in writer.scalars}
    assert tags["monitor/grad_norm/2"] == (rows[1]["grad_norm"], 7)
    assert tags["monitor/nonfinite/0"] == (0.0, 7)
    assert set(tags) == {f"monitor/{k}/{n}" for k in ("grad_norm", "delta_norm",
                                                      "preact_var", "nonfinite",
                                                      "grad_zero_fraction")
                         for n in ("0", "2")}
    writer = FakeWriter()
    assert log_to_tensorboard(writer, {"loss": torch.tensor(0.5), "note": "x"}, 3, "train") == 1
    assert writer.scalars == [("train/loss", 0.5, 3)]


def test_update_ratios_per_layer():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with GradientMonitor(model) as monitor:
        model(torch.randn(5, 3)).pow(2).sum().backward()
        before = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
        monitor.before_step()
        opt.step()
        ratios = monitor.update_ratios()
    for (name, ratio), w0, layer in zip(ratios.items(), before, (model[0], model[2]),
                                        strict=True):
        expected = (layer.weight.detach() - w0).norm() / w0.norm()
        assert ratio == pytest.approx(expected.item(), rel=1e-6), name
    with pytest.raises(RuntimeError):
        monitor.update_ratios()  # one reading per before_step


def test_disabled_monitor_has_no_hooks():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    monitor = GradientMonitor(model, enabled=False)
    assert not monitor.enabled and not model[0]._forward_hooks
    monitor.enabled = True
    assert monitor.enabled and len(model[0]._forward_hooks) == 1
    monitor.enabled = True  # idempotent: still one hook
    assert len(model[0]._forward_hooks) == 1
    model(torch.randn(2, 3)).sum().backward()
    monitor.enabled = False
    assert not model[0]._forward_hooks
    assert monitor.layer_stats()[0]["delta_norm"] > 0  # what was recorded stays readable


def test_statistics_match_direct_computation_in_half_precision():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3).to(torch.bfloat16)
    x = torch.randn(6, 4, dtype=torch.bfloat16)
    with GradientMonitor(nn.Sequential(lin)) as monitor:
        out = lin(x)
        out.retain_grad()
        out.float().pow(2).sum().backward()
        (row,) = monitor.layer_stats()
    assert row["delta_norm"] == out.grad.float().norm().item()
    # the variances of all layers are taken together, in another order: equal up to rounding
    assert row["preact_var"] == pytest.approx(out.detach().float().var(unbiased=False).item(),
                                              rel=1e-6)
    assert row["grad_norm"] == lin.weight.grad.norm().item()


def test_train_without_monitoring_logs_no_gradient_statistics():
    from exploding_gradients.train import minibatches, train

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, generator=gen), torch.randn(32, 1, generator=gen)
    runs = {}
    for monitor in (True, False):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
        runs[monitor] = train(model, minibatches(x, y, 8, torch.Generator().manual_seed(2)),
                              nn.functional.mse_loss, optimizer="sgd", lr=0.1, steps=6,
                              log_every=3, layers={"0": model[0]}, monitor=monitor)
    on, off = runs[True], runs[False]
    assert [r["loss"] for r in on.steps] == [r["loss"] for r in off.steps]  # same training
    assert all(math.isfinite(r["grad_norm"]) for r in on.steps)
    assert all(math.isnan(r["grad_norm"]) for r in off.steps)
    assert "update_ratio" in on.steps[0] and "update_ratio" not in off.steps[0]
    assert len(on.layers) == 3 and off.layers == []  # steps 0, 3, 6


def test_total_norm_is_get_total_norm_bit_for_bit():
    from exploding_gradients.train import total_norm

    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(s, generator=gen) * 10.0**k
             for k, s in zip(range(-6, 6), [(7,), (3, 5), (64, 64), (1,)] * 3, strict=True)]
    assert total_norm(grads).item() == torch.nn.utils.get_total_norm(grads).item()
    mixed = [g.double() if i % 2 else g for i, g in enumerate(grads)]
    assert total_norm(mixed).item() == torch.nn.utils.get_total_norm(mixed).item()


def _trained_grads(flat: bool, first_dtype=torch.float32):
    from exploding_gradients.train import FlatGrads

    torch.manual_seed(0)
    first, second = nn.Linear(3, 8).to(first_dtype), nn.Linear(8, 2)  # mixed if float64
    params = [*first.parameters(), *second.parameters()]
    grads = FlatGrads(params) if flat else None
    x = torch.randn(5, 3, dtype=first_dtype)
    norms_seen = []
    for _ in range(3):  # zeroing between passes: each pass's gradients, not their sum
        if flat:
            grads.zero_()
        else:
            for p in params:
                p.grad = None
        second(torch.tanh(first(x)).float()).pow(3).sum().backward()
        norms_seen.append(grads.norm() if flat else
                          torch.nn.utils.get_total_norm([p.grad for p in params]).item())
        with torch.no_grad():
            for p in params:
                p -= 0.01 * p.grad
    return [p.grad.clone() for p in params], norms_seen, grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flat_gradients_equal_fresh_ones_bit_for_bit(dtype):
    flat_grads, flat_norms, buffer = _trained_grads(True, dtype)
    fresh_grads, fresh_norms, _ = _trained_grads(False, dtype)
    assert all(torch.equal(a, b) for a, b in zip(flat_grads, fresh_grads, strict=True))
    assert flat_norms == pytest.approx(fresh_norms, rel=1e-6)
    assert (buffer.flat is None) == (dtype == torch.float64)  # mixed dtypes: no buffer


def test_variances_of_tensors_of_mixed_sizes():
    from exploding_gradients.monitor import variances

    gen = torch.Generator().manual_seed(0)
    tensors = [torch.randn(s, generator=gen) * k + k for k, s in
               enumerate([(4, 5), (20,), (3, 7), (2, 10), (1,)], start=1)]
    expected = [t.var(unbiased=False).item() for t in tensors]
    assert variances(tensors) == pytest.approx(expected, rel=1e-5)
    assert variances([]) == []
    # a float32 sum of these squares overflows, their variance does not; 1e60 does
    huge = torch.randn(4096, generator=gen)
    big, too_big = variances([huge * 1e18, huge * 1e30])
    assert big == pytest.approx((huge.double() * 1e18).var(unbiased=False).item(), rel=1e-5)
    assert too_big == math.inf


def test_update_ratio_total_and_per_tensor():
    from exploding_gradients.monitor import UpdateRatio

    a, b = torch.ones(3), torch.full((2, 2), 2.0)
    ratio = UpdateRatio([a, b])
    for _ in range(2):  # the buffer is reused
        ratio.before_step()
        a += 1.0
        expected = (3 ** 0.5) / (3 + 16) ** 0.5
        assert ratio.total() == pytest.approx(expected)
        a -= 1.0
    ratio.before_step()
    b *= 1.5
    assert ratio.per_tensor() == pytest.approx([0.0, 0.5])
    with pytest.raises(RuntimeError, match="before_step"):
        ratio.total()
    with pytest.raises(ValueError, match="one dtype"):
        UpdateRatio([a, b.double()])


def test_anomaly_report_names_the_backward_function():
    from exploding_gradients.monitor import anomaly_report

    w = torch.zeros(3, requires_grad=True)

    def step():
        y = w.sqrt()  # Inf slope at 0, times 0: NaN
        (y * 0).sum().backward()

    report = anomaly_report(step)
    assert report["raised"] and report["function"] == "SqrtBackward0"
    assert report["forward_code"] == "y = w.sqrt()  # Inf slope at 0, times 0: NaN"
    assert report["forward_file"].endswith("test_monitor.py")
    healthy = anomaly_report(lambda: (w * 2).sum().backward())
    assert not healthy["raised"] and healthy["function"] == ""


# --------------------------------------------------------------------------- odd models

class DictOut(torch.nn.Module):
    """A Hugging-Face-style module returning a dict, and one returning None."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        return {"hidden": self.lin(x), "note": "not a tensor"}


class NoneOut(torch.nn.Module):
    def forward(self, x):
        return None


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block, self.side, self.head = DictOut(), NoneOut(), torch.nn.Linear(4, 1)

    def forward(self, x):
        self.side(x)
        return self.head(torch.tanh(self.block(x)["hidden"]))


def test_the_monitor_never_breaks_a_model_whatever_its_modules_return():
    model = Model()
    x = torch.randn(8, 4)
    monitor = GradientMonitor(model, {"block": model.block, "side": model.side,
                                      "head": model.head})
    model(x).sum().backward()  # the user's own forward pass runs as without the monitor
    rows = {row["name"]: row for row in monitor.layer_stats()}
    hidden = model.block.lin(x)
    assert rows["block"]["preact_var"] == pytest.approx(hidden.var(unbiased=False).item())
    assert rows["block"]["delta_norm"] > 0 and rows["block"]["calls"] == 1
    assert math.isnan(rows["side"]["preact_var"]) and math.isnan(rows["side"]["delta_norm"])
    monitor.remove()


def test_a_forward_pass_alone_reports_no_gradient_from_an_earlier_pass():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    monitor = GradientMonitor(model)
    model(torch.randn(5, 3)).sum().backward()
    first = monitor.layer_stats()
    assert all(math.isfinite(row["delta_norm"]) for row in first)
    with torch.no_grad():
        model(torch.randn(5, 3) * 10)  # forward only
    second = monitor.layer_stats()
    assert all(math.isnan(row["delta_norm"]) for row in second)
    assert second[0]["preact_var"] != first[0]["preact_var"]  # this pass's output


def test_a_layer_called_twice_reports_its_last_call_consistently():
    shared, head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
    x = torch.randn(6, 4)
    monitor = GradientMonitor(torch.nn.ModuleDict({"l": shared, "h": head}),
                              {"l": shared, "h": head})
    first = shared(x)
    second = shared(torch.tanh(first))
    second.retain_grad()
    head(second).sum().backward()
    with pytest.warns(UserWarning, match="'l' ran 2 times in one pass"):
        row = monitor.layer_stats()[0]
    assert row["calls"] == 2
    assert row["preact_var"] == pytest.approx(second.detach().var(unbiased=False).item())
    assert row["delta_norm"] == pytest.approx(second.grad.norm().item())


# --------------------------------------------------------------- every kind of layer

@pytest.mark.parametrize("conv, shape", [(nn.Conv1d, (2, 3, 9)), (nn.Conv2d, (2, 3, 7, 7)),
                                         (nn.Conv3d, (2, 3, 5, 5, 5))])
def test_the_monitor_watches_convolutions_of_every_dimension(conv, shape):
    layer = conv(3, 4, 3, padding=1)
    model = nn.Sequential(layer, nn.ReLU(), conv(4, 2, 3))
    x = torch.randn(shape)
    with GradientMonitor(model) as monitor:
        out = layer(x)
        out.retain_grad()
        model[2](model[1](out)).pow(2).sum().backward()
        rows = monitor.layer_stats()
    assert [r["name"] for r in rows] == ["0", "2"]
    assert rows[0]["grad_norm"] == pytest.approx(layer.weight.grad.norm().item())
    assert rows[0]["delta_norm"] == pytest.approx(out.grad.norm().item())
    assert rows[0]["preact_var"] == pytest.approx(out.detach().var(unbiased=False).item())
    assert rows[0]["calls"] == 1 and "attn_logit_max" not in rows[0]  # no attention in it


@pytest.mark.parametrize("norm", [nn.LayerNorm(6), nn.BatchNorm1d(6), nn.GroupNorm(2, 6),
                                  nn.RMSNorm(6)])
def test_the_monitor_watches_normalization_layers(norm):
    model = nn.Sequential(nn.Linear(4, 6), norm, nn.Linear(6, 1))
    with GradientMonitor(model) as monitor:
        model(torch.randn(5, 4)).pow(2).sum().backward()
        rows = monitor.layer_stats()
    assert [r["name"] for r in rows] == ["0", "1", "2"]
    assert rows[1]["grad_norm"] == pytest.approx(norm.weight.grad.norm().item())
    assert rows[1]["delta_norm"] > 0 and rows[1]["preact_var"] > 0


def _manual_attention(mha: nn.MultiheadAttention, x: torch.Tensor):
    """q, k, v and the logits of a batch-first self-attention, computed by hand."""
    e, h = mha.embed_dim, mha.num_heads
    w, b = mha.in_proj_weight, mha.in_proj_bias
    q, k, v = (torch.nn.functional.linear(x, w[i * e:(i + 1) * e], b[i * e:(i + 1) * e])
               .view(x.shape[0], x.shape[1], h, e // h).transpose(1, 2) for i in range(3))
    return q, k, v, q @ k.transpose(-2, -1) / math.sqrt(e // h)


def test_multihead_attention_is_fully_visible():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(3, 5, 8)
    with GradientMonitor(nn.ModuleDict({"attn": mha})) as monitor:
        out, _ = mha(x, x, x)
        out.retain_grad()
        out.pow(2).sum().backward()
        rows = {r["name"]: r for r in monitor.layer_stats()}
    assert list(rows) == ["attn", "attn.q", "attn.k", "attn.v", "attn.out_proj"]
    q, k, v, logits = _manual_attention(mha, x)
    assert rows["attn"]["attn_logit_max"] == pytest.approx(logits.max().item(), rel=1e-5)
    assert rows["attn"]["delta_norm"] == pytest.approx(out.grad.norm().item())
    assert rows["attn.out_proj"]["delta_norm"] == rows["attn"]["delta_norm"]
    assert rows["attn.out_proj"]["grad_norm"] == pytest.approx(
        mha.out_proj.weight.grad.norm().item())
    everything = torch.cat([p.grad.flatten() for p in mha.parameters()]).norm().item()
    assert rows["attn"]["grad_norm"] == pytest.approx(everything, rel=1e-5)
    for i, (name, t) in enumerate(zip("qkv", (q, k, v), strict=True)):
        assert rows[f"attn.{name}"]["grad_norm"] == pytest.approx(
            mha.in_proj_weight.grad[i * 8:(i + 1) * 8].norm().item())
        assert rows[f"attn.{name}"]["preact_var"] == pytest.approx(
            t.detach().var(unbiased=False).item(), rel=1e-5)


def test_sequence_first_attention_with_separate_projections():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, kdim=6, vdim=4)  # (length, batch, features) inputs
    query, key, value = torch.randn(5, 3, 8), torch.randn(7, 3, 6), torch.randn(7, 3, 4)
    with GradientMonitor(nn.ModuleDict({"attn": mha})) as monitor:
        mha(query, key, value)[0].sum().backward()
        rows = {r["name"]: r for r in monitor.layer_stats()}
    q = (query @ mha.q_proj_weight.T + mha.in_proj_bias[:8]).view(5, 3, 2, 4).permute(1, 2, 0, 3)
    k = (key @ mha.k_proj_weight.T + mha.in_proj_bias[8:16]).view(7, 3, 2, 4).permute(1, 2, 0, 3)
    expected = (q @ k.transpose(-2, -1) / 2.0).max().item()
    assert rows["attn"]["attn_logit_max"] == pytest.approx(expected, rel=1e-5)
    assert rows["attn.k"]["grad_norm"] == pytest.approx(mha.k_proj_weight.grad.norm().item())


def test_a_transformer_encoder_layer_is_fully_visible_and_saturation_is_caught():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    x = torch.randn(2, 4, 8)
    with GradientMonitor(layer) as monitor:
        layer(x).pow(2).sum().backward()
        rows = {r["name"]: r for r in monitor.layer_stats()}
    assert set(rows) == {"self_attn", "self_attn.q", "self_attn.k", "self_attn.v",
                         "self_attn.out_proj", "linear1", "linear2", "norm1", "norm2"}
    attn = rows["self_attn"]
    assert math.isfinite(attn["delta_norm"]) and math.isfinite(attn["preact_var"])
    assert attn["attn_logit_max"] == pytest.approx(
        _manual_attention(layer.self_attn, x)[3].max().item(), rel=1e-5)
    assert not any(r["nonfinite"] for r in rows.values())
    with torch.no_grad():  # queries so large that the logits overflow: softmax gives NaN
        layer.self_attn.in_proj_weight[:8].mul_(1e30)
        layer.self_attn.in_proj_weight[8:16].mul_(1e30)
    layer.zero_grad()
    with GradientMonitor(layer) as monitor:
        layer(x).pow(2).sum().backward()
        rows = {r["name"]: r for r in monitor.layer_stats()}
        assert monitor.first_nonfinite() == "self_attn"  # the attention, not the norm after it
    assert rows["self_attn"]["nonfinite"] and not math.isfinite(rows["self_attn"]["attn_logit_max"])


def test_a_block_row_measures_all_its_parameters_and_its_attention_logits():
    from exploding_gradients.models.transformer import Transformer

    torch.manual_seed(0)
    net = Transformer(0, 5, 8, depth=2, heads=2, d_out=1)
    logits = []
    for block in net.blocks:
        block.attn.logits.register_forward_hook(lambda m, i, out: logits.append(out.max()))
    with GradientMonitor(net, {f"blocks.{i}": b for i, b in enumerate(net.blocks)}) as monitor:
        net(torch.randn(3, 5, 8)).sum().backward()
        rows = monitor.layer_stats()
    for row, block, top in zip(rows, net.blocks, logits, strict=True):
        everything = torch.cat([p.grad.flatten() for p in block.parameters()]).norm().item()
        assert row["grad_norm"] == pytest.approx(everything, rel=1e-5)
        assert row["attn_logit_max"] == pytest.approx(top.item())
    # by default the model's every layer is watched, its logits and layer norms included
    names = [r["name"] for r in GradientMonitor(net).layer_stats()]
    assert "blocks.0.attn.logits" in names and "blocks.0.norm1" in names
    assert "blocks.1.attn.q" in names and "head" in names


def test_update_ratios_of_an_attention_cover_its_projections():
    mha = nn.MultiheadAttention(4, 1, batch_first=True)
    monitor = GradientMonitor(nn.ModuleDict({"attn": mha}), enabled=False)
    before = mha.in_proj_weight.detach().clone()
    monitor.before_step()
    with torch.no_grad():
        mha.in_proj_weight[4:8] += 0.1  # the keys' slice only
    ratios = monitor.update_ratios()
    assert ratios["attn.q"] == 0.0 and ratios["attn.v"] == 0.0
    expected = 0.1 * 4 / before[4:8].norm().item()
    assert ratios["attn.k"] == pytest.approx(expected, rel=1e-5)
    assert 0 < ratios["attn"] < ratios["attn.k"]


# --------------------------------------------------------------- the whole distribution

class HistogramWriter:
    """A TensorBoard-style writer that only remembers what it was given."""

    def __init__(self):
        self.histograms, self.images, self.scalars = {}, {}, {}

    def add_histogram(self, tag, values, step):
        self.histograms[tag] = (values, step)

    def add_image(self, tag, image, step):
        self.images[tag] = (image, step)

    def add_scalar(self, tag, value, step):
        self.scalars[tag] = (value, step)


def test_detailed_monitor_reports_quantiles_dead_and_saturated_units():
    lin = nn.Linear(2, 3, bias=False)
    with torch.no_grad():  # unit 0 always negative (dead behind a ReLU), unit 1 huge
        lin.weight.copy_(torch.tensor([[-1.0, 0.0], [10.0, 0.0], [0.5, 0.0]]))
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    with GradientMonitor(nn.Sequential(lin), detail=True) as monitor:
        lin(x).sum().backward()
        (row,) = monitor.layer_stats()
    out = x @ lin.weight.T
    assert row["act_q50"] == pytest.approx(torch.quantile(out.abs(), 0.5).item())
    assert row["act_q99"] == pytest.approx(torch.quantile(out.abs(), 0.99).item())
    assert row["grad_q99"] == pytest.approx(torch.quantile(lin.weight.grad.abs(), 0.99).item())
    assert row["dead_fraction"] == pytest.approx(1 / 3)
    assert row["saturated_fraction"] == pytest.approx(5 / 12)  # 10..40 and -4 exceed 3
    values = monitor.layer_values()["0"]
    assert torch.equal(values["activations"], out.reshape(-1))
    assert values["gradients"].numel() == 6


def test_a_plain_monitor_computes_no_distribution():
    model = nn.Sequential(nn.Linear(3, 3))
    with GradientMonitor(model) as monitor:
        model(torch.randn(4, 3)).sum().backward()
        (row,) = monitor.layer_stats()
    assert "act_q99" not in row and monitor._values == {}
    with pytest.raises(RuntimeError, match="detail=True"):
        monitor.layer_values()


def test_detailed_monitor_samples_large_layers_and_finds_conv_channels():
    from exploding_gradients.monitor import SAMPLE, distribution_stats

    out = torch.randn(8, 4, 100, 100)  # 320,000 values: a strided sample is reduced
    out[:, 2] = -out[:, 2].abs()  # channel 2 never positive
    stats = distribution_stats(out, None, 1, 3.0)
    assert stats["dead_fraction"] == 0.25 and math.isnan(stats["grad_q50"])
    assert stats["act_q50"] == pytest.approx(0.674, abs=0.03)  # median |N(0, 1)|
    assert SAMPLE < out.numel()


def test_optimizer_moments_are_bias_corrected_adam_moments():
    from exploding_gradients.monitor import optimizer_moments

    model = nn.Sequential(nn.Linear(3, 2))
    layers = {"0": model[0]}
    adam = torch.optim.Adam(model.parameters(), lr=0.1)
    assert math.isnan(optimizer_moments(adam, layers)["0"]["moment1"])  # no step yet
    model(torch.randn(5, 3)).sum().backward()
    g = model[0].weight.grad.clone()
    adam.step()
    m = optimizer_moments(adam, layers)["0"]
    rms = g.square().mean().sqrt().item()  # after one step m_hat = g, v_hat = g^2
    assert m["moment1"] == pytest.approx(rms, rel=1e-5)
    assert m["moment2"] == pytest.approx(rms, rel=1e-5)
    adam.zero_grad()
    (100 * model(torch.randn(5, 3)).sum()).backward()  # a spike: moment2 jumps
    adam.step()
    assert optimizer_moments(adam, layers)["0"]["moment2"] > 10 * rms
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sgd.step()
    m = optimizer_moments(sgd, layers)["0"]
    assert m["moment1"] > 0 and math.isnan(m["moment2"])


def test_layer_history_heatmap_and_histograms_go_to_any_writer():
    from exploding_gradients.monitor import (
        LayerHistory,
        heatmap_image,
        log_heatmap,
        log_histograms,
    )

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    monitor = GradientMonitor(model, detail=True)
    history, writer = LayerHistory(), HistogramWriter()
    for step in range(3):
        model.zero_grad()
        model(torch.randn(8, 3)).pow(2).sum().backward()
        history.add(step, monitor.layer_stats())
        assert log_histograms(writer, monitor, step) == 4  # 2 layers x 2 kinds
    monitor.remove()
    names, steps, values = history.matrix("grad_q99")
    assert names == ["0", "2"] and steps == [0, 1, 2] and values.shape == (2, 3)
    assert set(writer.histograms) == {f"monitor/{k}/{n}" for k in ("activations", "gradients")
                                      for n in names}
    log_heatmap(writer, "monitor/grad_q99", history, "grad_q99", 2)
    image, step = writer.images["monitor/grad_q99"]
    assert image.shape == (3, 2 * 4, 3 * 4) and step == 2
    assert 0 <= image.min() and image.max() <= 1
    img = heatmap_image(torch.tensor([[1.0, 10.0], [100.0, math.nan]]), cell=1)
    assert torch.equal(img[:, 1, 1], torch.zeros(3))  # missing: black
    assert img[:, 1, 0].sum() > img[:, 0, 0].sum()  # bright yellow at the top of the range


def test_training_records_each_layers_update_ratio_and_moments():
    import exploding_gradients as eg

    config = dict(depth=3, width=8, n_train=64, batch_size=16, steps=20, log_every=5,
                  optimizer="adam", engine="loop")  # as the detailed run, which needs it
    plain = eg.run("training", config, seeds=1)
    detailed = eg.run("training", config, seeds=1, layer_detail=True)
    shared = list(plain.columns)
    # the detail changes no result: the same table plus columns (and per-layer ratios)
    pd_equal = detailed[shared].drop(columns="update_ratio").equals(
        plain.drop(columns="update_ratio"))
    assert pd_equal
    layers = detailed[(detailed.layer > 0) & (detailed.step < 20)]
    assert (layers.update_ratio > 0).all() and (layers.moment2 > 0).all()
    assert layers[["act_q99", "grad_q99", "dead_fraction"]].notna().all().all()
    skipped = eg.run("training", dict(config, lr=1e6, optimizer="sgd", skip="nonfinite"),
                     seeds=1, layer_detail=True)
    steps = skipped[(skipped.layer == 0) & (skipped.skipped == 1)].step
    rows = skipped[(skipped.layer > 0) & skipped.step.isin(steps)]
    assert len(rows) and (rows.update_ratio == 0).all()  # a skipped step changes nothing
    assert rows.moment1.isna().all()  # plain SGD keeps no moments
