"""Writing samples as pictures: image grids, single PNGs, and scatter plots of 2-D toy points."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image, ImageDraw

from gankit.files import atomic_write


def quantise(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) floats in [-1, 1] -> (B, C, H, W) uint8, as a saved image would hold them."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) floats in [-1, 1] -> (B, H, W, C) uint8 on the CPU."""
    return quantise(images.cpu()).permute(0, 2, 3, 1).numpy()


def make_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> one (rows*(H+pad)+pad, cols*(W+pad)+pad, C) uint8 picture."""
    pixels = to_uint8(images)
    b, h, w, c = pixels.shape
    cols = nrow or math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(b):
        r, col = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = pixels[i]
    return grid


def save_png(pixels: np.ndarray, path: str | os.PathLike) -> None:
    """Write an (H, W, C) uint8 array as PNG, atomically (temp file + rename)."""
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    with atomic_write(path) as tmp:
        image.save(tmp, format="PNG")


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> None:
    save_png(make_grid(images, nrow), path)


def scatter(points: torch.Tensor, reference: torch.Tensor | None = None, size: int = 512,
            extent: float | None = None) -> np.ndarray:
    """2-D points (B, 2) -> an RGB picture: reference points grey, points red; (size, size, 3) uint8."""
    points = points.detach().float().cpu()
    both = points if reference is None else torch.cat([points, reference.float().cpu()])
    if extent is None:
        extent = float(both.abs().max().clamp(min=1e-6)) * 1.1
    canvas = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(canvas)

    def pixel(p: torch.Tensor) -> tuple[float, float]:
        return ((float(p[0]) / extent + 1) * size / 2, (1 - float(p[1]) / extent) * size / 2)

    for group, colour in ((reference, (160, 160, 160)), (points, (200, 30, 30))):
        if group is None:
            continue
        for p in group:
            x, y = pixel(p)
            draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=colour)
    return np.asarray(canvas)
