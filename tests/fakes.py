"""Small synthetic datasets for end-to-end tests (no downloads)."""

import gzip
import struct
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


def idx_bytes(array: np.ndarray) -> bytes:
    code = {np.uint8: 0x08, np.int16: 0x0B, np.float32: 0x0D}[array.dtype.type]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_mnist(directory: Path, n_train: int = 6, n_test: int = 4, gz: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        suffix = ".gz" if gz else ""
        write(directory / f"{split}-images-idx3-ubyte{suffix}",
              idx_bytes(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)), gz)
        write(directory / f"{split}-labels-idx1-ubyte{suffix}",
              idx_bytes(rng.integers(0, 10, n, dtype=np.uint8)), gz)
    return directory


def folder_with_a_broken_image(root: Path, broken: bytes) -> Path:
    """root/ok.png, an 8x8 grey image, and root/broken.png holding `broken`: a folder dataset that
    load_dataset must refuse, naming broken.png."""
    from PIL import Image

    root.mkdir()
    Image.new("L", (8, 8)).save(root / "ok.png")
    (root / "broken.png").write_bytes(broken)
    return root
