"""The original GAN's pair: fully connected generator and discriminator (Goodfellow et al. 2014)."""

from __future__ import annotations

import math

import torch
from torch import nn


class MLPGenerator(nn.Module):
    """z (B, latent_dim) -> x (B, *out_shape). tanh output for images in [-1, 1], linear for toy data."""

    def __init__(self, latent_dim: int, out_shape: tuple[int, ...], width: int = 512,
                 depth: int = 3, tanh: bool = True):
        super().__init__()
        self.latent_dim = latent_dim
        self.out_shape = tuple(out_shape)
        layers: list[nn.Module] = []
        fan_in = latent_dim
        for _ in range(depth - 1):
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        layers.append(nn.Linear(fan_in, math.prod(self.out_shape)))
        if tanh:
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.flatten(1)).view(z.shape[0], *self.out_shape)


class MLPDiscriminator(nn.Module):
    """x (B, *in_shape) -> logits (B,). LeakyReLU(0.2) hidden layers; no sigmoid (see losses.py)."""

    def __init__(self, in_shape: tuple[int, ...], width: int = 512, depth: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        fan_in = math.prod(in_shape)
        for _ in range(depth - 1):
            layers += [nn.Linear(fan_in, width), nn.LeakyReLU(0.2)]
            fan_in = width
        layers.append(nn.Linear(fan_in, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)
