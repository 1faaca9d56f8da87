"""Datasets by name: images come as (N, C, H, W) uint8 (or float in [-1, 1]) and are served to the
networks in [-1, 1] by ImageDataset.to_float; toy distributions are sampled afresh.

Names: fashion-mnist, mnist, folder:PATH, npz:PATH, toy:NAME.
"""

from __future__ import annotations

import os

import torch

from gankit.data import mnist
from gankit.data.images import ImageDataset, check_options, convert, load_folder, load_npz
from gankit.data.toy import TOY_DISTRIBUTIONS, ToyDataset
from gankit.errors import DataError

__all__ = ["IMAGE_NAMES", "ImageDataset", "ToyDataset", "load_dataset"]

IMAGE_NAMES = ("fashion-mnist", "mnist")  # plus "folder:PATH", "npz:PATH", "toy:NAME"
_TOY_NAMES = ", ".join(f"toy:{n}" for n in TOY_DISTRIBUTIONS)
ALL_NAMES = f"fashion-mnist, mnist, folder:PATH, npz:PATH, {_TOY_NAMES}"


def load_dataset(name: str, *, split: str = "train", data_dir: str | os.PathLike | None = None,
                 image_size: int | None = None, channels: int | None = None,
                 download: bool = True) -> ImageDataset | ToyDataset:
    """The dataset called `name` (see ALL_NAMES).

    split ("train"/"test") applies to fashion-mnist and mnist only. image_size resizes images
    (folders and arrays: shorter side, then a centre crop); channels (1 or 3) converts them.
    """
    if name in IMAGE_NAMES:
        check_options(image_size, channels, name)
        images, _, source = mnist.load_split(name, split, data_dir, download)
        x = torch.from_numpy(images).unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28) uint8
        return ImageDataset(name, convert(x, image_size, channels).contiguous(), source)
    kind, _, path = name.partition(":")
    if kind in ("folder", "npz") and not path:
        raise DataError(f"dataset {name!r} names no path; use {kind}:PATH")
    if kind == "folder":
        return load_folder(path, image_size, channels)
    if kind == "npz":
        return load_npz(path, image_size, channels)
    if name.startswith("toy:"):
        toy = name[len("toy:"):]
        if toy not in TOY_DISTRIBUTIONS:
            raise DataError(f"unknown toy distribution {name!r}; use one of {_TOY_NAMES}")
        return ToyDataset(name, TOY_DISTRIBUTIONS[toy])
    raise DataError(f"unknown dataset {name!r}; use one of: {ALL_NAMES}")
