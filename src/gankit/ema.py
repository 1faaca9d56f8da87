"""The exponential moving average of G's weights (--g-ema HALF_LIFE_IMAGES), as stylegan2-ada.

After each iteration, every parameter of the EMA generator moves towards G's:
    ema <- beta * ema + (1 - beta) * g,   beta = 0.5 ** (images_per_step / half_life)
so after `half_life` images an old weight's share has halved, whatever the batch size (stylegan2-ada's
ema_kimg). images_per_step is the run's k * batch_size, the images the loop counts. With a ramp-up R
(--g-ema-rampup, stylegan2-ada's ema_rampup) the half-life is min(half_life, images_seen * R),
images_seen counted before the step: a short memory while G changes fast at the start (the first
step copies G).

Buffers (batch norm's running statistics) are not averaged: copy_buffers takes G's, which is what
the loop does. recompute_batchnorm_stats is BigGAN's "standing statistics" for the EMA weights (a
few batches of noise in train mode), for measuring the other choice (docs/quality.md).

The update runs between iterations, outside train.iteration and so outside a CUDA graph, by
design: it reads G's parameters after the optimiser step, as a few fused element-wise kernels
queued on the device, and never waits for it (beta is a Python float computed from the image
counter on the host).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn


def make_ema(G: nn.Module) -> nn.Module:
    """A copy of G (the plain module, not a DDP wrapper) that is never trained: no gradients,
    always in eval mode (it is only sampled from)."""
    ema = copy.deepcopy(G)
    ema.requires_grad_(False)
    return ema.eval()


def decay(images_per_step: int, images_before: int, half_life: float, rampup: float = 0.0) -> float:
    """beta for one step of images_per_step images, taken when images_before had been seen."""
    if rampup:
        half_life = min(half_life, images_before * rampup)
    return 0.5 ** (images_per_step / max(half_life, 1e-8))  # half-life 0 (ramp-up's first step): 0, a copy


@torch.no_grad()
def update(ema: nn.Module, G: nn.Module, beta: float) -> None:
    """ema's parameters <- beta * ema + (1 - beta) * G's (a lerp towards G by 1 - beta); its
    buffers <- G's. On the device, without a host sync. beta = 0 copies G exactly."""
    ema_params, g_params = list(ema.parameters()), list(G.parameters())
    torch._foreach_lerp_(ema_params, g_params, 1.0 - beta)
    copy_buffers(ema, G)


@torch.no_grad()
def copy_buffers(ema: nn.Module, G: nn.Module) -> None:
    """ema's buffers (batch norm's running mean, variance and counter; a conditional G's p(y)) <- G's."""
    for mine, theirs in zip(ema.buffers(), G.buffers(), strict=True):
        mine.copy_(theirs)


@torch.no_grad()
def recompute_batchnorm_stats(ema: nn.Module, noises: Iterable[torch.Tensor]) -> None:
    """BigGAN's standing statistics: batch norm's running statistics of `ema` recomputed as the
    plain average over forward passes on `noises` (batches of G's input, e.g. from
    state.draw_noise) in train mode; ema is back in eval mode after."""
    bns = [m for m in ema.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an exponential one
    ema.train()
    try:
        for z in noises:
            ema(z)
    finally:
        for m, momentum in zip(bns, saved, strict=True):
            m.momentum = momentum
        ema.eval()
