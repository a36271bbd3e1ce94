"""The training loop's building blocks."""

import pytest
import torch

from exploding_gradients.train import OPTIMIZERS, make_optimizer


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_multi_tensor_optimizers_match_the_per_tensor_ones_bit_for_bit(name):
    def trained(foreach: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        opt = make_optimizer(name, net.parameters(), 0.01)
        for group in opt.param_groups:
            group["foreach"] = foreach
        x = torch.randn(16, 8)
        for _ in range(5):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
        return [p.detach() for p in net.parameters()]

    assert make_optimizer(name, [torch.zeros(1, requires_grad=True)], 0.1).defaults["foreach"]
    assert all(torch.equal(a, b) for a, b in zip(trained(True), trained(False), strict=True))
