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


# --------------------------------------------------------------- convolutional network

def test_convnet_shapes_and_circular_padding_give_every_position_a_whole_kernel():
    from exploding_gradients.models.cnn import ConvNet

    net = ConvNet(in_channels=3, channels=8, depth=3, kernel_size=3, image_size=6, d_out=5)
    assert net(torch.randn(2, 3, 6, 6)).shape == (2, 5)
    assert len(net.hidden_layers()) == 3
    # an impulse in the corner reaches the opposite corner's neighbours: wrap-around
    conv = net.hidden_layers()[1]
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
        x = torch.zeros(1, 8, 6, 6)
        x[0, 0, 0, 0] = 1.0
        out = conv(x)[0, 0]
    assert out[5, 5] == 1.0 and out[0, 5] == 1.0 and out[5, 0] == 1.0
    assert out.sum() == 9.0  # 9 positions see it, each through one kernel tap
    with pytest.raises(ValueError, match="odd"):
        ConvNet(3, 8, 2, kernel_size=2, image_size=6, d_out=5)


@pytest.mark.parametrize("scheme", ["normal", "he", "xavier"])
def test_conv_init_uses_fan_in_of_channels_times_kernel_area(scheme):
    from exploding_gradients.init import effective_sigmas, fans
    from exploding_gradients.models.cnn import build_cnn

    config = dict(channels=32, depth=2, kernel_size=5, image_size=4, activation="relu",
                  normalization="none", residual=False, init=scheme, sigma_w=1.7, sigma_b=0.0)
    net = build_cnn(config, 32, 3, torch.Generator().manual_seed(0))
    conv = net.hidden_layers()[1]
    fan_in, fan_out = fans(conv.weight)
    assert (fan_in, fan_out) == (32 * 25, 32 * 25)
    sigma_w, _ = effective_sigmas(scheme, "relu", fan_in, fan_out, 1.7)
    assert conv.weight.std().item() == pytest.approx(sigma_w / fan_in**0.5, rel=0.03)


# --------------------------------------------------------------- transformer

@pytest.mark.parametrize("norm_position", ["pre", "post", "none"])
def test_transformer_runs_on_tokens_and_on_features(norm_position):
    from exploding_gradients.models.transformer import Transformer

    tokens = Transformer(vocab=7, seq_len=5, width=16, depth=2, heads=4, d_out=7,
                         norm_position=norm_position)
    assert tokens(torch.randint(0, 7, (3, 5))).shape == (3, 5, 7)
    features = Transformer(vocab=0, seq_len=5, width=16, depth=2, heads=4, d_out=2,
                           norm_position=norm_position)
    assert features(torch.randn(3, 5, 16)).shape == (3, 5, 2)
    assert len(features.hidden_layers()) == 2 and features.readout is features.head
    has_norm = any(isinstance(m, torch.nn.LayerNorm) for m in features.modules())
    assert has_norm == (norm_position != "none")


def test_attention_is_softmax_of_the_logits_it_shows_and_qk_norm_bounds_them():
    from exploding_gradients.models.transformer import SelfAttention

    torch.manual_seed(0)
    attn = SelfAttention(width=8, heads=2)
    with torch.no_grad():
        attn.q.weight.mul_(30.0)  # large queries: large logits
    x = torch.randn(2, 4, 8)
    seen = []
    attn.logits.register_forward_hook(lambda m, i, out: seen.append(out))
    out = attn(x)
    q = attn.q(x).view(2, 4, 2, 4).transpose(1, 2)
    k = attn.k(x).view(2, 4, 2, 4).transpose(1, 2)
    v = attn.v(x).view(2, 4, 2, 4).transpose(1, 2)
    logits = q @ k.transpose(-2, -1) / 2.0
    torch.testing.assert_close(seen[0], logits)
    mixed = (torch.softmax(logits, -1) @ v).transpose(1, 2).reshape(2, 4, 8)
    torch.testing.assert_close(out, attn.out(mixed))
    # with layer-normed queries and keys (gain 1), |q.k| <= head_dim: logits <= sqrt(4)
    normed = SelfAttention(width=8, heads=2, qk_norm=True)
    normed.load_state_dict(attn.state_dict(), strict=False)
    normed.logits.register_forward_hook(lambda m, i, out: seen.append(out))
    normed(x)
    assert logits.abs().max() > 10 and seen[1].abs().max() <= 2.0 + 1e-5


def test_post_ln_normalizes_the_residual_stream_and_pre_ln_does_not():
    from exploding_gradients.models.transformer import Transformer

    x = torch.randn(8, 6, 16) * 3
    for position, unit in (("post", True), ("pre", False)):
        torch.manual_seed(1)
        net = Transformer(0, 6, 16, depth=3, heads=2, d_out=1, norm_position=position)
        stream = net.blocks[1](net.blocks[0](x))
        assert (stream.var(-1, unbiased=False).mean().item() == pytest.approx(1, abs=1e-3)) == unit
