"""The networks: dropout draws its masks from the seed's generator."""

import pytest
import torch

import exploding_gradients as eg
from exploding_gradients.models.mlp import SeededDropout


def test_seeded_dropout_is_reproducible_scaled_and_off_in_evaluation():
    x = torch.ones(1000, 8)
    a = SeededDropout(0.25, torch.Generator().manual_seed(3))(x)
    b = SeededDropout(0.25, torch.Generator().manual_seed(3))(x)
    assert torch.equal(a, b)
    assert a.unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    assert (a == 0).float().mean().item() == pytest.approx(0.25, abs=0.02)
    layer = SeededDropout(0.25, torch.Generator().manual_seed(3)).eval()
    assert torch.equal(layer(x), x)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        SeededDropout(1.0, None)


def test_training_with_dropout_is_bit_reproducible_and_differs_from_without():
    config = dict(depth=3, width=16, steps=10, n_train=64, batch_size=16)
    a = eg.run("training", config, dropout=0.3, seeds=2, use_cache=False)
    b = eg.run("training", config, dropout=0.3, seeds=2, use_cache=False)
    plain = eg.run("training", config, seeds=2, use_cache=False)
    assert a.equals(b) and not a.loss.equals(plain.loss)
    # the test loss is measured in evaluation mode: the same weights give the same value
    assert a[a.step == 0].test_loss.iloc[0] == plain[plain.step == 0].test_loss.iloc[0]
