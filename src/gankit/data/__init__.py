"""Datasets by name: images come as (N, C, H, W) uint8 (or float in [-1, 1]) and are served to the
networks in [-1, 1] by ImageDataset.to_float; toy distributions are sampled afresh.

Names: fashion-mnist, mnist, folder:PATH, prepared:PATH, npz:PATH, toy:NAME. A folder: is read
through the cache of prepared datasets (foldercache.py), a prepared: one directly (prepared.py),
memory-mapped when it is larger than memory. Labels, where a source has them:
ImageDataset.labels / .classes (IDX label files; a folder's class subfolders; an npz's 'y' or
'labels', see images.py), and a toy mixture's components (ToyDataset.sample_labelled).
class_frequencies gives what conditional training draws fake labels from.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import TextIO

import torch

from gankit.data import mnist
from gankit.data.foldercache import content_key, load_cached_folder
from gankit.data.images import ImageDataset, check_options, convert, load_npz
from gankit.data.prepared import load_prepared
from gankit.data.toy import TOY_DISTRIBUTIONS, ToyDataset
from gankit.errors import DataError

__all__ = ["IMAGE_NAMES", "ImageDataset", "ToyDataset", "class_frequencies", "content_key", "load_dataset",
           "subset"]

IMAGE_NAMES = ("fashion-mnist", "mnist")  # plus "folder:PATH", "prepared:PATH", "npz:PATH", "toy:NAME"
SUBSET_SEED = 20_200_617  # --max-train-images: one fixed shuffle, the same N images for every --seed
_TOY_NAMES = ", ".join(f"toy:{n}" for n in TOY_DISTRIBUTIONS)
ALL_NAMES = f"fashion-mnist, mnist, folder:PATH, prepared:PATH, npz:PATH, {_TOY_NAMES}"
LABELLED_NAMES = ("fashion-mnist, mnist, folder:PATH with class subfolders (or prepared:PATH from one), "
                  "npz:PATH with a y/labels array, toy:NAME")


def load_dataset(name: str, *, split: str = "train", data_dir: str | os.PathLike | None = None,
                 image_size: int | None = None, channels: int | None = None,
                 download: bool = True, log: TextIO | None = None) -> ImageDataset | ToyDataset:
    """The dataset called `name` (see ALL_NAMES).

    split ("train"/"test") applies to fashion-mnist and mnist only. image_size resizes images
    (folders and arrays: shorter side, then a centre crop); channels (1 or 3) converts them
    (a prepared dataset must have been prepared with them). log (default stderr) gets the line
    saying whether a folder's cache was used, built or invalidated, and the prepare's progress.
    """
    if name in IMAGE_NAMES:
        check_options(image_size, channels, name)
        images, labels, source = mnist.load_split(name, split, data_dir, download)
        x = torch.from_numpy(images).unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28) uint8
        return ImageDataset(name, convert(x, image_size, channels).contiguous(), source,
                            torch.from_numpy(labels).long(), mnist.CLASSES[name])
    kind, _, path = name.partition(":")
    if kind in ("folder", "npz", "prepared") and not path:
        raise DataError(f"dataset {name!r} names no path; use {kind}:PATH")
    if kind == "folder":
        return load_cached_folder(path, image_size, channels, log or sys.stderr)
    if kind == "prepared":
        check_options(image_size, channels, name)
        return load_prepared(path, image_size, channels)
    if kind == "npz":
        return load_npz(path, image_size, channels)
    if name.startswith("toy:"):
        toy = name[len("toy:"):]
        if toy not in TOY_DISTRIBUTIONS:
            raise DataError(f"unknown toy distribution {name!r}; use one of {_TOY_NAMES}")
        return ToyDataset(name, TOY_DISTRIBUTIONS[toy])
    raise DataError(f"unknown dataset {name!r}; use one of: {ALL_NAMES}")


def class_frequencies(dataset: ImageDataset | ToyDataset) -> torch.Tensor:
    """(K,) float64 summing to 1: each class's share of the images (label counts), or a toy
    mixture's component weights. DataError if the dataset has no labels."""
    if isinstance(dataset, ToyDataset):
        return dataset.class_weights
    if dataset.labels is None or dataset.classes is None or len(dataset.labels) == 0:
        raise DataError(f"{dataset.name} has no labels; --conditional needs a labelled dataset "
                        f"({LABELLED_NAMES})")
    counts = torch.bincount(dataset.labels, minlength=len(dataset.classes))  # (K,) int64
    return counts.double() / counts.sum()


def subset(dataset: ImageDataset, n: int) -> ImageDataset:
    """The first n images (and labels) of the dataset shuffled once with SUBSET_SEED
    (--max-train-images); DataError if it has fewer than n."""
    if n > len(dataset):
        raise DataError(f"--max-train-images {n} is more than the {len(dataset)} training images of {dataset.name}; "
                        f"give at most {len(dataset)}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(SUBSET_SEED))[:n]
    labels = dataset.labels[order] if dataset.labels is not None else None
    return dataclasses.replace(dataset, images=dataset.images[order].contiguous(), labels=labels)
