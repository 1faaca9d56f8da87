"""Model contracts, one suite over every family, image size and channel count."""

import pytest
import torch
from torch import nn

from gankit.config import TrainConfig
from gankit.errors import ConfigError
from gankit.models import build_models

SHAPES = [(c, s, s) for s in (28, 32, 64) for c in (1, 3)]


@pytest.mark.parametrize("model", ["dcgan", "mlp"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_shapes(model, shape):
    config = TrainConfig(model=model, latent_dim=16, g_width=8, d_width=8)
    G, D = build_models(config, shape)
    z = torch.randn(5, 16)
    x = G(z)
    assert x.shape == (5, *shape)
    assert x.min() >= -1 and x.max() <= 1  # tanh output for images
    logits = D(x)
    assert logits.shape == (5,)
    assert logits.dtype == torch.float32


def test_toy_mlp_has_linear_output():
    G, D = build_models(TrainConfig(data="toy:ring8", model="mlp", g_width=32, d_width=32), (2,))
    assert not isinstance(list(G.modules())[-1], nn.Tanh)
    assert G(torch.randn(4, 100)).shape == (4, 2)
    assert D(torch.randn(4, 2)).shape == (4,)


def test_dcgan_follows_the_guidelines():
    G, D = build_models(TrainConfig(model="dcgan"), (1, 64, 64))
    for net in (G, D):
        kinds = {type(m) for m in net.modules()}
        assert not kinds & {nn.MaxPool2d, nn.AvgPool2d, nn.Linear}, "no pooling, no fully connected layers"
    g_layers = list(G.net)
    assert isinstance(g_layers[-1], nn.Tanh) and isinstance(g_layers[-2], nn.ConvTranspose2d)
    assert all(isinstance(m, nn.ReLU) for m in g_layers if isinstance(m, (nn.ReLU, nn.LeakyReLU)))
    d_layers = list(D.net)
    assert isinstance(d_layers[0], nn.Conv2d) and isinstance(d_layers[1], nn.LeakyReLU)  # no BN on input
    assert all(m.negative_slope == 0.2 for m in d_layers if isinstance(m, nn.LeakyReLU))
    assert not isinstance(d_layers[-1], nn.Sigmoid)
    strided = [m for m in d_layers if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 4  # 64 -> 32 -> 16 -> 8 -> 4
    # The pytorch/examples 64x64 generator: ngf * 8 = 512 channels at 4x4.
    assert g_layers[0].out_channels == 512 and g_layers[0].kernel_size == (4, 4)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g_layers) == 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d_layers) == 3


def test_initialisation_is_normal_0_002():
    torch.manual_seed(0)
    G, D = build_models(TrainConfig(model="dcgan"), (1, 64, 64))
    weights = torch.cat([m.weight.flatten() for m in list(G.modules()) + list(D.modules())
                         if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(weights.mean().item()) < 1e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.02)
    bn_scale = torch.cat([m.weight for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn_scale.mean().item() == pytest.approx(1.0, abs=0.01)


def test_latent_and_width_are_configurable():
    G, D = build_models(TrainConfig(model="dcgan", latent_dim=7, g_width=16, d_width=4), (3, 32, 32))
    assert G.net[0].in_channels == 7 and G.net[0].out_channels == 16 * 4
    assert D.net[0].out_channels == 4


@pytest.mark.parametrize("size", [20, 30, 8])
def test_unsupported_dcgan_size_is_a_clear_error(size):
    with pytest.raises(ConfigError, match="image size"):
        build_models(TrainConfig(model="dcgan"), (1, size, size))
