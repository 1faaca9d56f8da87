"""Writing samples as pictures: image grids, single PNGs, and scatter plots of 2-D toy points."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

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


def label_rows(grid: np.ndarray, names: list[str], cell: int, pad: int = 2) -> np.ndarray:
    """A make_grid picture (H, W, C) with a name written left of each row of `cell`-pixel images:
    (H, W + margin, C), white text on the grid's black."""
    font = ImageFont.load_default()
    margin = max(int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(n, font=font)) for n in names) + 2 * pad
    canvas = Image.new("L", (margin, grid.shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(names):
        draw.text((pad, pad + r * (cell + pad) + max(0, (cell - 11) // 2)), name, fill=255, font=font)
    text = np.repeat(np.asarray(canvas)[..., None], grid.shape[2], axis=2)
    return np.concatenate([text, grid], axis=1)


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


def save_gif(pictures: list[np.ndarray], out: str | os.PathLike, fps: float,
             hold_last_ms: int = 0) -> None:
    """(H, W, C) uint8 frames as a looping GIF, atomically. Grey frames keep their 256 levels
    exactly; colour frames are quantised to one shared 256-colour palette (of up to 16 of them).
    Pillow merges identical neighbouring frames into one of their summed duration."""
    frames = [Image.fromarray(p[..., 0] if p.shape[-1] == 1 else p) for p in pictures]
    if frames[0].mode == "RGB":
        step = max(1, len(pictures) // 16)
        palette = Image.fromarray(np.concatenate(pictures[::step], axis=0)).quantize(256)
        frames = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    durations = [frame_ms(fps)] * len(frames)
    durations[-1] += hold_last_ms
    with atomic_write(out) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], loop=0,
                       duration=durations, optimize=False)


def frame_ms(fps: float) -> int:
    """A GIF frame's duration: GIF counts in hundredths of a second (browsers: at least 2)."""
    return max(20, 10 * round(100 / fps))
