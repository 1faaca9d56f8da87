"""Datasets: names -> tensors. Images come as (N, C, H, W) uint8 (or float in [-1, 1]) and are
served to the networks in [-1, 1]; toy distributions are sampled afresh."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from gankit.data import images as _images
from gankit.data import mnist
from gankit.data.toy import TOY_DISTRIBUTIONS, ToyDistribution
from gankit.errors import DataError

IMAGE_NAMES = ("fashion-mnist", "mnist")
ALL_NAMES = "fashion-mnist, mnist, folder:PATH, npz:PATH, " + ", ".join(f"toy:{n}" for n in TOY_DISTRIBUTIONS)


@dataclass
class ImageDataset:
    name: str
    images: torch.Tensor  # (N, C, H, W), uint8 0..255 or float32 in [-1, 1]
    source: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def to_float(self, batch: torch.Tensor) -> torch.Tensor:
        """A slice of self.images -> float32 in [-1, 1]: 0 -> -1, 255 -> 1."""
        if batch.dtype == torch.uint8:
            return batch.float() / 127.5 - 1.0
        return batch.float()


@dataclass
class ToyDataset:
    name: str
    distribution: ToyDistribution

    @property
    def shape(self) -> tuple[int]:
        return (self.distribution.dim,)

    def sample(self, m: int, generator: torch.Generator) -> torch.Tensor:
        return self.distribution.sample(m, generator)  # (m, dim)


def load_dataset(name: str, *, split: str = "train", data_dir: str | os.PathLike | None = None,
                 image_size: int | None = None, channels: int | None = None,
                 download: bool = True) -> ImageDataset | ToyDataset:
    """The dataset called `name` (see ALL_NAMES)."""
    if name in IMAGE_NAMES:
        images, _, source = mnist.load_split(name, split, data_dir, download)
        x = torch.from_numpy(images).unsqueeze(1)  # (N, 1, 28, 28) uint8
        return ImageDataset(name, _images.convert(x, image_size, channels).contiguous(), source)
    if name.startswith("folder:"):
        x, source = _images.load_folder(name[len("folder:"):], image_size, channels)
        return ImageDataset(name, x, source)
    if name.startswith("npz:"):
        x, source = _images.load_array(name[len("npz:"):], image_size, channels)
        return ImageDataset(name, x, source)
    if name.startswith("toy:"):
        toy = name[len("toy:"):]
        if toy not in TOY_DISTRIBUTIONS:
            raise DataError(f"unknown toy distribution {toy!r}; use one of "
                            + ", ".join(f"toy:{n}" for n in TOY_DISTRIBUTIONS))
        return ToyDataset(name, TOY_DISTRIBUTIONS[toy])
    raise DataError(f"unknown dataset {name!r}; use one of: {ALL_NAMES}")
