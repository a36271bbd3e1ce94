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


def test_derivative_stats_of_known_functions():
    from exploding_gradients.monitor import derivative_stats

    h = torch.tensor([0.0, 0.0, 10.0, -10.0])
    stats = derivative_stats(nn.Tanh(), h)
    # tanh'(0) = 1 twice, tanh'(+-10) ~ 8e-9 twice
    assert stats["dphi_sq"] == pytest.approx(0.5, abs=1e-6)
    assert stats["saturated"] == 0.5
    relu = derivative_stats(nn.ReLU(), torch.tensor([-1.0, 2.0, 3.0, -4.0]))
    assert relu == {"dphi_sq": 0.5, "saturated": 0.5}
