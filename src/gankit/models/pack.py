"""Packing (PacGAN, Lin et al. 2018): a discriminator that judges M samples at once.

`Packed(D, M)` takes the usual minibatch (B, ...) of samples from ONE source (all real or all
fake), groups M consecutive samples into one pack and concatenates them along the feature axis
(features for the MLP, channels for DCGAN), as PacGAN's code does (`tensor.concatenate(...,
axis=1)`): (B, C, ...) -> (B/M, M*C, ...). The inner D is built for M*C input channels (or M*dim
features) and returns one logit per pack, (B/M,). M = 1 is the plain D, not wrapped.
"""

from __future__ import annotations

import torch
from torch import nn


def packed_shape(shape: tuple[int, ...], pack: int) -> tuple[int, ...]:
    """The inner D's input shape for samples of `shape`: (C, H, W) -> (M*C, H, W), (dim,) -> (M*dim,)."""
    return (pack * shape[0], *shape[1:])


class Packed(nn.Module):
    """x (B, C, ...) -> logits (B/M,): D on packs of M consecutive samples."""

    def __init__(self, inner: nn.Module, pack: int):
        super().__init__()
        if pack < 2:
            raise ValueError(f"a packed D needs pack >= 2, got {pack}")
        self.inner = inner
        self.pack = pack

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if b % self.pack:
            raise ValueError(f"a D packing {self.pack} samples got a batch of {b}, not a multiple of {self.pack}")
        return self.inner(pack(x, self.pack))  # (B/M,)

    def extra_repr(self) -> str:
        return f"pack={self.pack}"


def pack(x: torch.Tensor, m: int) -> torch.Tensor:
    """(B, C, ...) -> (B/M, M*C, ...): samples m*i .. m*i + m-1 become pack i, concatenated along C.

    For contiguous x this is a view: pack i's channels are sample m*i's, then sample m*i+1's, ..."""
    return x.reshape(x.shape[0] // m, m * x.shape[1], *x.shape[2:])
