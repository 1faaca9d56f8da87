"""Differentiable augmentation of D's inputs (--augment diffaug): DiffAugment, Zhao et al. 2020.

The policies of the paper's code, in its order: colour (brightness, saturation, contrast; for
3-channel images only), translation (by up to 1/8 of the image, the gap zero-filled) and cutout
(a square of half the image's side set to 0). Every operation is differentiable in the pixels, so
in the G step the gradient reaches G through them. The paper augments real and fake images alike,
in the D step and in the G step: `Augmented` wraps D, so every call of D sees augmented images
and train.iteration is unchanged. The measuring pass after the G step (D(G(z)), d_fake_g_after)
sees augmented images too, as the G step's own D(G(z)) did, so the two numbers stay comparable;
train.frozen_batchnorm_stats restores the augmentation's generator after it, so measuring or not
leaves the training stream as it was.

The random parameters are drawn on the CPU from the run's own generator (checkpointed with the
other RNG states in state.rng_state), for the global minibatch, then this process's rows are
moved to the device without waiting for it (as state.draw_noise does). So resume is exact, and N
processes augment each row as one process does. A conditional sample's label plane (the last
channel, models/conditional.py) is split off first and attached again unaugmented.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gankit.models.conditional import attach, split

TRANSLATION = 1 / 8  # of the image side, each way
CUTOUT = 1 / 2  # side of the square, of the image side


def diffaugment(x: torch.Tensor, generator: torch.Generator, p: float = 1.0, rows: slice | None = None,
                total: int | None = None) -> torch.Tensor:
    """x (B, C, H, W) augmented, each sample with probability p (p = 0: x itself).

    Parameters are drawn for `total` samples (default B) and `rows` of them used: one process's
    share of a global minibatch of `total` rows."""
    b, c, h, w = x.shape
    n, rows = (total or b), (rows or slice(0, b))
    draw = _Draws(generator, n, rows, x.device)
    keep = draw.uniform() < p  # (B,) which samples are augmented; drawn first, whatever p is
    out = x
    if c == 3:  # colour: only for RGB, as the paper's policy (on grey images it would be contrast twice)
        out = out + (draw.uniform(4) - 0.5)  # brightness in [-0.5, 0.5)
        mean = out.mean(dim=1, keepdim=True)
        out = (out - mean) * (draw.uniform(4) * 2) + mean  # saturation in [0, 2)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * (draw.uniform(4) + 0.5) + mean  # contrast in [0.5, 1.5)
    out = translate(out, draw.integers(int(h * TRANSLATION + 0.5)), draw.integers(int(w * TRANSLATION + 0.5)))
    out = cutout(out, draw.uniform(), draw.uniform())
    if p >= 1:
        return out
    return torch.where(keep.view(-1, 1, 1, 1), out, x)


class _Draws:
    """Per-sample random parameters: drawn on the CPU for all n rows, this process's rows moved
    to the device (pinned and non-blocking on CUDA: no host sync)."""

    def __init__(self, generator: torch.Generator, n: int, rows: slice, device: torch.device):
        self.generator, self.n, self.rows, self.device = generator, n, rows, device

    def _move(self, t: torch.Tensor) -> torch.Tensor:
        t = t[self.rows]
        if self.device.type == "cpu":
            return t
        return t.pin_memory().to(self.device, non_blocking=True)

    def uniform(self, dims: int = 1) -> torch.Tensor:
        """(B,) or (B, 1, 1, 1) uniform in [0, 1)."""
        t = torch.rand(self.n, generator=self.generator)
        return self._move(t.view(-1, *([1] * (dims - 1))))

    def integers(self, limit: int) -> torch.Tensor:
        """(B,) int64 uniform in [-limit, limit]."""
        return self._move(torch.randint(-limit, limit + 1, (self.n,), generator=self.generator))


def translate(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) shifted by (dy, dx) pixels ((B,) int64 each), zeros shifted in (the paper's
    index arithmetic: out[i, j] = padded[clamp(i + dy + 1), clamp(j + dx + 1)])."""
    b, _, h, w = x.shape
    padded = F.pad(x, [1, 1, 1, 1])  # (B, C, H + 2, W + 2), a border of zeros
    i = (torch.arange(h, device=x.device) + dy.view(-1, 1) + 1).clamp(0, h + 1)  # (B, H)
    j = (torch.arange(w, device=x.device) + dx.view(-1, 1) + 1).clamp(0, w + 1)  # (B, W)
    batch = torch.arange(b, device=x.device).view(-1, 1, 1)
    # advanced indices on dims 0, 2, 3 around a slice: the result is (B, H, W, C)
    return padded[batch, :, i.view(b, h, 1), j.view(b, 1, w)].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) with a square of side CUTOUT * size set to 0, its centre at (cy, cx) in
    [0, 1) of the image ((B,) each; the paper's offsets, 0 .. size - 1 for an even side)."""
    b, _, h, w = x.shape
    sh, sw = int(h * CUTOUT + 0.5), int(w * CUTOUT + 0.5)
    top = (cy * (h + 1 - sh % 2)).long() - sh // 2  # (B,)
    left = (cx * (w + 1 - sw % 2)).long() - sw // 2
    rows = torch.arange(h, device=x.device).view(1, h)
    cols = torch.arange(w, device=x.device).view(1, w)
    inside_r = (rows >= top.view(-1, 1)) & (rows < top.view(-1, 1) + sh)  # (B, H)
    inside_c = (cols >= left.view(-1, 1)) & (cols < left.view(-1, 1) + sw)  # (B, W)
    mask = ~(inside_r.view(b, 1, h, 1) & inside_c.view(b, 1, 1, w))  # (B, 1, H, W)
    return x * mask.to(x.dtype)


class Augmented(nn.Module):
    """D on DiffAugment-ed inputs: x (B, C, H, W) -> inner(augment(x)). `rank` of `size`
    processes: each call draws the parameters of the global minibatch (size * B rows) and uses
    this process's rows. conditional: x carries its labels as the last channel, left as it is."""

    def __init__(self, inner: nn.Module, generator: torch.Generator, conditional: bool = False,
                 rank: int = 0, size: int = 1, p: float = 1.0):
        super().__init__()
        self.inner = inner
        self.generator = generator
        self.conditional = conditional
        self.rank, self.size, self.p = rank, size, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        rows = slice(self.rank * b, (self.rank + 1) * b)
        if self.conditional:
            images, labels = split(x)
            x = attach(diffaugment(images, self.generator, self.p, rows, self.size * b), labels)
        else:
            x = diffaugment(x, self.generator, self.p, rows, self.size * b)
        return self.inner(x)

    def extra_repr(self) -> str:
        return f"diffaug: colour (RGB), translation {TRANSLATION:g}, cutout {CUTOUT:g}; p={self.p:g}"
