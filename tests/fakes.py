"""Small synthetic datasets for end-to-end tests (no downloads)."""

from pathlib import Path

import numpy as np


def make_npz(path: Path, n: int = 64, size: int = 28, channels: int | None = None, seed: int = 0) -> Path:
    """n uint8 images of bright squares at random places on black: (n, size, size[, channels])."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        s = rng.integers(size // 4, size // 2)
        top, left = rng.integers(0, size - s, size=2)
        images[i, top:top + s, left:left + s] = rng.integers(128, 256)
    if channels:
        images = np.repeat(images[..., None], channels, axis=-1)
    np.savez(path, images=images)
    return path
