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
