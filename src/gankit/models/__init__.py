"""Model families: config + data shape -> (generator, discriminator), with DCGAN's N(0, 0.02) init."""

from __future__ import annotations

import torch
from torch import nn

from gankit.config import TrainConfig
from gankit.errors import ConfigError
from gankit.models.conditional import MAX_CLASSES, conditional
from gankit.models.dcgan import DCGANDiscriminator, DCGANGenerator
from gankit.models.mlp import MLPDiscriminator, MLPGenerator
from gankit.models.pack import Packed, packed_shape

DEFAULT_WIDTH = {"dcgan": 64, "mlp": 512}


def build_models(config: TrainConfig, data_shape: tuple[int, ...],
                 num_classes: int | None = None) -> tuple[nn.Module, nn.Module]:
    """G and D for data of shape (C, H, W) (images) or (dim,) (toy points), freshly initialised;
    with config.conditional, the conditional pair for num_classes classes (models/conditional.py);
    with --pack M > 1, D judges packs of M samples (models/pack.py); --d-norm spectral puts
    spectral norm on D's weights in place of its batch norm (see spectral)."""
    if config.conditional and not (isinstance(num_classes, int) and 2 <= num_classes <= MAX_CLASSES):
        raise ConfigError(f"--conditional needs data with 2 to {MAX_CLASSES} classes, got {num_classes}")
    z_in = config.latent_dim + (num_classes if config.conditional else 0)  # G's input: z, and the class one-hot
    g_width = config.g_width or DEFAULT_WIDTH[config.model]
    d_width = config.d_width or DEFAULT_WIDTH[config.model]
    if config.model == "dcgan":
        if len(data_shape) != 3 or data_shape[1] != data_shape[2]:
            raise ConfigError(f"--model dcgan needs square images, got data of shape {tuple(data_shape)}")
        channels, size = data_shape[0], data_shape[1]
        try:
            G = DCGANGenerator(z_in, channels, size, g_width)
            D = DCGANDiscriminator(config.pack * channels, size, d_width, batch_norm=config.d_norm == "batch")
        except ValueError as exc:
            raise ConfigError(f"--image-size: {exc}") from None
    else:
        images = len(data_shape) == 3
        G = MLPGenerator(z_in, data_shape, g_width, tanh=images)
        D = MLPDiscriminator(packed_shape(tuple(data_shape), config.pack), d_width)
    G.apply(init_weights)
    D.apply(init_weights)
    if config.d_norm == "spectral":  # after the initialisation: it normalises the N(0, 0.02) weights
        spectral(D)
    if config.conditional:
        return conditional(G, D, num_classes, config.latent_dim, config.pack)
    return G, (Packed(D, config.pack) if config.pack > 1 else D)


def spectral(D: nn.Module) -> nn.Module:
    """Spectral norm (Miyato et al. 2018) on every convolution and linear layer of D, in place:
    W / sigma(W), sigma by one power iteration per training-mode forward pass. Its vectors u and
    v are buffers (`...parametrizations.weight.0._u`, `._v`) in D's state_dict, so checkpoints
    and resume carry them. (A conditional D's class embedding is left as it is.)"""
    for module in list(D.modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            torch.nn.utils.parametrizations.spectral_norm(module)
    return D


def init_weights(module: nn.Module) -> None:
    """DCGAN's initialisation: weights ~ N(0, 0.02), batch-norm scale ~ N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
