"""Prepared datasets: a folder DATASET/ of images decoded once (`gankit data prepare`, or the
cache of a folder: source), read at start-up without decoding.

    DATASET/images.npy     uint8 (N, C, H, W), C-order: memory-mappable
    DATASET/labels.npy     int64 (N,), where the source has labels (class subfolders)
    DATASET/skipped.txt    files left out (--on-bad-file skip), one "path<TAB>reason" a line
    DATASET/manifest.json  written last: its presence is what makes the folder complete

The array is never decoded or converted at start-up: it is mapped. A dataset up to
RESIDENT_FRACTION of the available memory is resident: served like any in-memory dataset, its
pages read ahead by the kernel in the background (MADV_WILLNEED), so start-up does not wait for
them; a larger one is memory-mapped (ImageDataset.mapping), and its
minibatches are gathered from the map by StreamedImageBatches' background thread, which hands the
pages back as it goes. Either way the images are the same tensor values.
"""

from __future__ import annotations

import json
import math
import mmap
import os
from pathlib import Path

import numpy as np
import torch

import gankit
from gankit.data.images import ImageDataset, _check_labels, _read_npy
from gankit.errors import DataError
from gankit.files import sha256, write_json

FORMAT = "gankit-prepared"
VERSION = 1
MANIFEST, IMAGES, LABELS, SKIPPED = "manifest.json", "images.npy", "labels.npy", "skipped.txt"
RESIDENT_FRACTION = 0.5  # of MemAvailable: a larger dataset is memory-mapped, not read in


def is_prepared(path: str | os.PathLike) -> bool:
    """Whether path is a folder holding a prepared dataset (its manifest and image array)."""
    path = Path(path)
    return (path / MANIFEST).is_file() and (path / IMAGES).is_file()


def write_manifest(folder: Path, *, source: str, files_sha256: str | None, options: dict,
                   shape: tuple[int, ...], classes: tuple[str, ...] | None, skipped: int,
                   images_sha256: str | None = None) -> dict:
    """Write folder/manifest.json, the last step of a prepare; images_sha256 is folder/images.npy's
    SHA-256, hashed here when not given."""
    manifest = {
        "format": FORMAT, "version": VERSION, "gankit_version": gankit.__version__,
        "source": source, "files_sha256": files_sha256, "options": options,
        "count": int(shape[0]), "shape": [int(s) for s in shape], "dtype": "uint8",
        "images_sha256": images_sha256 or sha256(folder / IMAGES), "classes": list(classes) if classes else None,
        "skipped": skipped,
    }
    write_json(folder / MANIFEST, manifest)
    return manifest


def read_manifest(folder: Path) -> dict:
    """The manifest, checked for the fields a reader relies on; DataError naming the file."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable prepared-dataset manifest ({exc}); prepare the dataset "
                        f"again with gankit data prepare") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a gankit prepared-dataset manifest (no \"format\": \"{FORMAT}\")")
    if manifest.get("version") != VERSION:
        raise DataError(f"{path}: prepared-dataset format version {manifest.get('version')!r}; this "
                        f"gankit reads version {VERSION}: prepare the dataset again")
    shape, count, classes = manifest.get("shape"), manifest.get("count"), manifest.get("classes")
    if (not isinstance(shape, list) or len(shape) != 4 or not all(_natural(s) for s in shape)
            or shape[1] not in (1, 3) or count != shape[0] or manifest.get("dtype") != "uint8"):
        raise DataError(f"{path}: the manifest's shape {shape!r}, count {count!r} and dtype "
                        f"{manifest.get('dtype')!r} are not a uint8 (N, C, H, W) image array with C 1 or 3")
    if classes is not None and (not isinstance(classes, list) or not classes
                                or not all(isinstance(c, str) for c in classes)):
        raise DataError(f"{path}: \"classes\" must be a list of class names or null, got {classes!r}")
    return manifest


def info(path: str | os.PathLike) -> dict:
    """`gankit data info prepared:DATASET`: what the manifest says, checked against the files
    (the array's header and size, the labels), and how training would hold it."""
    folder = Path(path)
    data = load_prepared(folder)  # every check a training start makes: a damaged dataset is a DataError
    manifest = read_manifest(folder)
    nbytes = math.prod(manifest["shape"])
    return {
        "path": str(folder.resolve()), "images": manifest["count"],
        "shape": " x ".join(str(s) for s in manifest["shape"][1:]) + " (channels x height x width)",
        "classes": _names(manifest["classes"]), "source": manifest.get("source"),
        "options": manifest.get("options"), "skipped": manifest.get("skipped"),
        "images_sha256": manifest.get("images_sha256"), "gankit_version": manifest.get("gankit_version"),
        "bytes": nbytes,
        "training_holds_it": ("memory-mapped" if data.mapping is not None else "in memory")
        + f" (the limit for in memory: {RESIDENT_FRACTION:.0%} of the available memory now)",
    }


def _names(classes: list[str] | None, shown: int = 12) -> str | None:
    if not classes:
        return None
    more = f", ... ({len(classes) - shown} more)" if len(classes) > shown else ""
    return f"{len(classes)}: " + ", ".join(classes[:shown]) + more


def _natural(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def load_prepared(path: str | os.PathLike, image_size: int | None = None, channels: int | None = None,
                  name: str | None = None) -> ImageDataset:
    """The prepared dataset in folder path, resident or memory-mapped (see the module docstring).

    image_size and channels, when given, must be the ones it was prepared with."""
    folder = Path(path)
    name = name or f"prepared:{path}"
    if not is_prepared(folder):
        raise DataError(f"{name}: not a prepared dataset (no {MANIFEST} and {IMAGES} in {folder}); "
                        f"make one with: gankit data prepare SOURCE --image-size N --out {folder}")
    manifest = read_manifest(folder)
    n, c, h, w = manifest["shape"]
    if (image_size is not None and (h, w) != (image_size, image_size)) or channels not in (None, c):
        raise DataError(f"{name} was prepared at {h}x{w} with {c} channel(s), not --image-size "
                        f"{image_size} --channels {channels}; leave those flags out, or prepare it again")
    images, mapping = _open_images(folder / IMAGES, (n, c, h, w))
    labels = classes = None
    if manifest["classes"] is not None:
        labels, classes = _read_labels(folder / LABELS, n, tuple(manifest["classes"]))
    how = "memory-mapped" if mapping is not None else "in memory"
    source = f"{n} images prepared from {manifest.get('source')} ({folder.resolve()}, {how})"
    return ImageDataset(name, images, source, labels, classes, mapping=mapping)


def _open_images(path: Path, shape: tuple[int, int, int, int]) -> tuple[torch.Tensor, mmap.mmap | None]:
    """(images (N, C, H, W) uint8, the mapping or None) after checking the .npy header against
    the manifest's shape and the file's size: a truncated, padded or lying file is a DataError."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f".npy format version {version} (1.0 and 2.0 are read)")
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            got_shape, fortran, dtype = read(f)
            offset = f.tell()
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {path}: not a valid .npy array ({exc}); prepare the dataset again") from None
    if tuple(got_shape) != shape or fortran or dtype != np.uint8:
        raise DataError(f"{path}: the array is {dtype} {tuple(got_shape)}{' Fortran-order' if fortran else ''}"
                        f" but the manifest says uint8 {shape}; prepare the dataset again")
    nbytes = math.prod(shape)
    size = path.stat().st_size
    if size != offset + nbytes:
        raise DataError(f"{path}: {size} bytes, but a uint8 {shape} array needs {offset + nbytes}: "
                        f"truncated or corrupt; prepare the dataset again")
    resident = nbytes <= RESIDENT_FRACTION * available_memory()
    mapping = _map(path)
    # Resident: the kernel reads the file ahead while the run starts (it returns at once; a row
    # touched before its page arrived waits for that page only). Mapping with MAP_POPULATE instead
    # made start-up wait for all of it: 0.5 s for 1.2 GB from the page cache, more from disk.
    # Memory-mapped: rows are read in shuffled order, so no read-ahead at all.
    advice = "MADV_WILLNEED" if resident else "MADV_RANDOM"
    if hasattr(mmap, advice):
        mapping.madvise(getattr(mmap, advice))
    array = np.frombuffer(mapping, np.uint8, count=nbytes, offset=offset).reshape(shape)
    return torch.from_numpy(array), None if resident else mapping


def _map(path: Path) -> mmap.mmap:
    """A private (copy-on-write) mapping of the whole file: numpy and torch see a writable buffer,
    and the file is never written. Its pages are the page cache's own (no second copy), read
    when first touched."""
    with open(path, "rb") as f:
        if not hasattr(mmap, "MAP_PRIVATE"):  # Windows
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        return mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)


def _read_labels(path: Path, n: int, classes: tuple[str, ...]) -> tuple[torch.Tensor, tuple[str, ...]]:
    if not path.is_file():
        raise DataError(f"{path}: missing, but the manifest names {len(classes)} classes; prepare the dataset again")
    try:
        with open(path, "rb") as f:
            array = _read_npy(f, path.stat().st_size, path, hint="int64 labels")
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {path}: not a valid .npy array ({exc})") from None
    labels = _check_labels(array, n, path, "labels")
    if len(labels) and int(labels.max()) >= len(classes):
        raise DataError(f"{path}: labels go up to {int(labels.max())} but the manifest names {len(classes)} classes")
    return labels, classes


def available_memory() -> int:
    """Bytes of memory available to new data: MemAvailable from /proc/meminfo (Linux), else the
    free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
