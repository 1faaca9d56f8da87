"""folder: sources through the cache: each folder is prepared once (data/prepare.py) into
$XDG_CACHE_HOME/gankit/prepared/KEY, and later starts and resumes read it without decoding.

KEY is the folder's content as cheaply known: the sorted relative paths, sizes and modification
times of its images, plus the image size and channels asked for (not the folder's path, so a
copy with the same files shares it). Changing, adding or removing one file changes the key.
prepared/sources/ remembers the last key of each (path, options), so that a run can say that a
folder's cache was invalidated (and remove the stale copy) rather than only that it is new.
A folder that is itself a prepared dataset (manifest.json + images.npy) is read as one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TextIO

from gankit.cache import cache_dir
from gankit.data.images import ImageDataset, check_options, scan_images
from gankit.data.prepare import file_list, prepare_folder
from gankit.data.prepared import is_prepared, load_prepared, read_manifest
from gankit.errors import DataError
from gankit.files import sha256, write_json

KEY_VERSION = 1  # bump when the decode changes, so old caches are not taken for new ones


def folder_key(root: Path, name: str, image_size: int | None, channels: int | None) -> str:
    """The content key of a folder's images under these options (stats only, no decoding)."""
    rows = file_list(scan_images(root, name))
    blob = json.dumps([KEY_VERSION, image_size, channels, rows]).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def load_cached_folder(path: str, image_size: int | None, channels: int | None, log: TextIO) -> ImageDataset:
    """The folder at path as a dataset, from the cache (built first when missing or stale).
    Says in one line on log whether it used, built or invalidated a cache."""
    root, name = Path(path), f"folder:{path}"
    check_options(image_size, channels, name)
    if is_prepared(root):
        print(f"gankit: {name} is a prepared dataset; reading it as prepared:{path}", file=log)
        return load_prepared(root, image_size, channels, name=name)
    key = folder_key(root, name, image_size, channels)
    base = cache_dir("prepared")
    dataset = base / key
    pointer = base / "sources" / (_digest([str(root.resolve()), image_size, channels]) + ".json")
    if is_prepared(dataset):
        print(f"gankit: {name}: using its prepared cache {dataset}", file=log)
    else:
        previous = _read_pointer(pointer)
        if previous is not None and previous != key:
            print(f"gankit: {name} changed since it was prepared (files added, removed or modified): its "
                  f"cache {base / previous} is invalidated; preparing it again into {dataset}", file=log)
            shutil.rmtree(base / previous, ignore_errors=True)
        else:
            print(f"gankit: {name}: preparing it once into the cache {dataset}; later starts read it "
                  f"from there", file=log)
        _build(root, dataset, image_size, channels, log, name)
    write_json(pointer, {"source": str(root.resolve()), "key": key})
    data = load_prepared(dataset, name=name)
    where = f"{len(data)} images under {root.resolve()}"
    data.source = where if data.classes is None else f"{where} in {len(data.classes)} classes (its subfolders)"
    return data


def _build(root: Path, dataset: Path, image_size: int | None, channels: int | None, log: TextIO, name: str) -> None:
    if dataset.exists():
        shutil.rmtree(dataset)  # an unfinished copy from an older gankit, never a complete one
    try:
        prepare_folder(root, dataset, image_size=image_size, channels=channels, log=log, name=name)
    except OSError:
        if not is_prepared(dataset):  # else another process (a torchrun rank) finished it first
            raise


def _read_pointer(pointer: Path) -> str | None:
    try:
        key = json.loads(pointer.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None
    return key if isinstance(key, str) and key.isalnum() else None


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:16]


def content_key(name: str, image_size: int | None, channels: int | None) -> str | None:
    """What identifies a folder:/prepared:/npz: dataset's images, for caches of things computed
    from them (the evaluation's reference statistics); None for other names."""
    kind, _, path = name.partition(":")
    root = Path(path)
    if kind in ("folder", "prepared") and is_prepared(root):
        return f"prepared-{read_manifest(root)['images_sha256']}"
    if kind == "folder":
        return f"folder-{folder_key(root, name, image_size, channels)}"
    if kind == "npz":
        if not root.is_file():
            raise DataError(f"{name}: no such file; give an .npz or .npy file of images")
        return f"npz-{sha256(root)}"
    return None
