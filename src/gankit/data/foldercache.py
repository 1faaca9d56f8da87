"""folder: sources through the cache: each folder is prepared once (data/prepare.py) into
$XDG_CACHE_HOME/gankit/prepared/KEY, and later starts and resumes read it without decoding.

KEY is the folder's content as cheaply known: the sorted relative paths, sizes and modification
times of its images, plus the image size and channels asked for (not the folder's path, so a
copy with the same files shares it). Changing, adding or removing one file changes the key.
prepared/sources/ remembers the last key of each (path, options), so that a run can say that a
folder's cache was invalidated (and remove the stale copy) rather than only that it is new.
A folder that is itself a prepared dataset (manifest.json + images.npy) is read as one. One
process at a time prepares a given key (a lock file in prepared/locks/): torchrun's other ranks
wait for the first and read what it prepared.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from gankit.cache import cache_dir
from gankit.data.images import ImageDataset, check_options, scan_images
from gankit.data.prepare import listing, prepare_folder, text_sha256
from gankit.data.prepared import is_prepared, load_prepared, read_manifest
from gankit.errors import DataError
from gankit.files import sha256, write_json

KEY_VERSION = 2  # bump when the decode or the key changes, so old caches are not taken for new ones


def folder_key(root: Path, name: str, image_size: int | None, channels: int | None) -> str:
    """The content key of a folder's images under these options (stats only, no decoding)."""
    return text_sha256(f"{KEY_VERSION}\t{image_size}\t{channels}\n{listing(scan_images(root, name))}")[:32]


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
        with _build_lock(base / "locks" / key, name, log):
            if is_prepared(dataset):
                print(f"gankit: {name}: using its prepared cache {dataset}, which another process "
                      f"prepared meanwhile", file=log)
            else:
                _announce(base, key, _read_pointer(pointer), name, log)
                _build(root, dataset, image_size, channels, log, name)
    write_json(pointer, {"source": str(root.resolve()), "key": key})
    data = load_prepared(dataset, name=name)
    where = f"{len(data)} images under {root.resolve()}"
    data.source = where if data.classes is None else f"{where} in {len(data.classes)} classes (its subfolders)"
    return data


@contextmanager
def _build_lock(path: Path, name: str, log: TextIO) -> Iterator[None]:
    """One process at a time prepares a folder into the cache: the others (torchrun's other ranks,
    a second run started on the same folder) wait, then read what it prepared. Where fcntl does
    not exist (Windows) there is no lock: each process prepares a copy of its own, and the first
    to finish is kept (see _build)."""
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:  # the lock file stays: removing it would race with a waiter
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"gankit: {name}: another process is preparing it into the cache; waiting for it",
                  file=log, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _announce(base: Path, key: str, previous: str | None, name: str, log: TextIO) -> None:
    """Say whether the cache is new or replaces a stale one (and remove the stale one)."""
    if previous is not None and previous != key:
        print(f"gankit: {name} changed since it was prepared (files added, removed or modified): its "
              f"cache {base / previous} is invalidated; preparing it again into {base / key}", file=log)
        shutil.rmtree(base / previous, ignore_errors=True)
    else:
        print(f"gankit: {name}: preparing it once into the cache {base / key}; later starts read it "
              f"from there", file=log)


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
