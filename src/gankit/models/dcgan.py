"""The DCGAN pair (Radford et al. 2015), following its architecture guidelines.

- no pooling: strided convolutions in D, transposed (fractional-strided) convolutions in G;
- batch norm in both, except G's output layer and D's input layer;
- no fully connected hidden layers;
- G: ReLU, tanh output; D: LeakyReLU(0.2), one logit out.

Image sizes are base * 2^n with base 4 (32, 64, 128, ...) or 7 (28, 56, ...), n >= 2: G starts
from a base x base map and doubles it n times; D mirrors that. For 64x64 this is exactly the
pytorch/examples network (ngf * 8 channels at 4x4).
"""

from __future__ import annotations

import torch
from torch import nn


def layout(image_size: int) -> tuple[int, int]:
    """(base, doublings) for an image size, or ValueError."""
    for base in (4, 7):
        n, size = 0, base
        while size < image_size:
            size, n = size * 2, n + 1
        if size == image_size and n >= 2:
            return base, n
    raise ValueError(
        f"DCGAN needs an image size of 4 or 7 times a power of two (at least 16 or 28, e.g. 28, 32, 64), got {image_size}"
    )


class DCGANGenerator(nn.Module):
    """z (B, latent_dim) -> x (B, channels, image_size, image_size) in [-1, 1]."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int = 64):
        super().__init__()
        self.latent_dim = latent_dim
        base, n = layout(image_size)
        ch = width * 2 ** (n - 1)
        # (B, latent_dim, 1, 1) -> (B, ch, base, base)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, ch, base, 1, 0, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):  # each block: (B, ch, s, s) -> (B, ch/2, 2s, 2s)
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(True),
            ]
            ch //= 2
        # (B, width, size/2, size/2) -> (B, channels, size, size); no batch norm on the output
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """x (B, channels, image_size, image_size) -> logits (B,). batch_norm=False leaves out the
    batch-norm layers (--d-norm spectral or none; models.build_models adds spectral norm)."""

    def __init__(self, channels: int, image_size: int, width: int = 64, batch_norm: bool = True):
        super().__init__()
        base, n = layout(image_size)
        ch = width
        # no batch norm on the input layer: (B, channels, size, size) -> (B, width, size/2, size/2)
        layers: list[nn.Module] = [
            nn.Conv2d(channels, ch, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for _ in range(n - 1):  # each block: (B, ch, s, s) -> (B, 2ch, s/2, s/2)
            layers.append(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False))
            if batch_norm:
                layers.append(nn.BatchNorm2d(ch * 2))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            ch *= 2
        # (B, ch, base, base) -> (B, 1, 1, 1): one logit, no sigmoid (see losses.py)
        layers.append(nn.Conv2d(ch, 1, base, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()
