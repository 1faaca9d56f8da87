"""Fashion-MNIST and MNIST: find the IDX files locally, or download them with SHA-256 checks."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from gankit.data.idx import read_idx_images, read_idx_labels
from gankit.errors import DataError
from gankit.files import sha256

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MIRRORS = {
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"],
}
SHA256 = {  # of the .gz files as served by the mirrors
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
}
SYSTEM_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")], "mnist": []}
TIMEOUT = 30.0


def cache_dir(name: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gankit" / name


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where the files are looked for, in order."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs += [Path(data_dir), Path(data_dir) / name]
    if os.environ.get("GANKIT_DATA"):
        dirs += [Path(os.environ["GANKIT_DATA"]), Path(os.environ["GANKIT_DATA"]) / name]
    return dirs + [cache_dir(name)] + SYSTEM_DIRS[name]


def _file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_files(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first searched folder that holds all four files, or None."""
    _check_name(name)
    stems = [s for pair in FILES.values() for s in pair]
    for directory in search_dirs(name, data_dir):
        if all(_file(directory, s) for s in stems):
            return directory
    return None


def _download(url: str, dest: Path, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        while block := response.read(1 << 20):
            out.write(block)


def fetch(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the dataset: found locally, else downloaded and checksum-verified."""
    found = find_files(name, data_dir)
    if found is not None:
        return found
    target = Path(data_dir) if data_dir is not None else cache_dir(name)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {target} to download {name} into: {exc.strerror or exc}") from None
    errors = []
    for filename, expected in SHA256[name].items():
        dest = target / filename
        if dest.is_file() and sha256(dest) == expected:
            continue
        for base in MIRRORS[name]:
            url = base + filename
            tmp = target / f".{filename}.part-{os.getpid()}"
            try:
                _download(url, tmp, TIMEOUT)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                tmp.unlink(missing_ok=True)
                errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
                continue
            actual = sha256(tmp)
            if actual != expected:
                tmp.unlink(missing_ok=True)
                raise DataError(f"checksum mismatch for {url}: expected SHA-256 {expected}, got "
                                f"{actual}; the download was discarded, try again later")
            os.replace(tmp, dest)
            break
        else:
            raise DataError(_offline_message(name, data_dir, errors))
    return target


def _offline_message(name: str, data_dir, errors: list[str]) -> str:
    urls = " ".join(MIRRORS[name][0] + f for f in SHA256[name])
    searched = ", ".join(str(d) for d in search_dirs(name, data_dir))
    how = ("install Debian's package (apt-get install dataset-fashion-mnist), or " if name == "fashion-mnist" else "")
    return (f"{name} not found and could not be downloaded ({errors[-1] if errors else 'no network'}). "
            f"To get it, {how}download {urls} into a folder and pass --data-dir DIR or set GANKIT_DATA=DIR. "
            f"Searched: {searched}")


def load_split(name: str, split: str, data_dir: str | os.PathLike | None = None,
               download: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """(images (N, 28, 28) uint8, labels (N,) uint8, source) for the train or test split."""
    _check_name(name)
    if split not in FILES:
        raise DataError(f"unknown split {split!r} for {name}; use train or test")
    directory = find_files(name, data_dir)
    if directory is None:
        if not download:
            raise DataError(_offline_message(name, data_dir, ["downloads disabled"]))
        directory = fetch(name, data_dir)
    image_file, label_file = (_file(directory, s) for s in FILES[split])
    images, labels = read_idx_images(image_file), read_idx_labels(label_file)
    if len(images) != len(labels):
        raise DataError(f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels")
    return images, labels, str(image_file)


def info(name: str, data_dir: str | os.PathLike | None = None) -> dict:
    """Where the dataset is (or would be looked for), its files and their state."""
    _check_name(name)
    directory = find_files(name, data_dir)
    record: dict = {"name": name, "found": str(directory) if directory else None,
                    "searched": [str(d) for d in search_dirs(name, data_dir)],
                    "urls": [MIRRORS[name][0] + f for f in SHA256[name]]}
    if directory is None:
        return record
    record["files"] = {}
    for stem in [s for pair in FILES.values() for s in pair]:
        path = _file(directory, stem)
        entry = {"path": str(path), "bytes": path.stat().st_size}
        if path.suffix == ".gz":
            entry["sha256_ok"] = sha256(path) == SHA256[name][path.name]
        record["files"][stem] = entry
    for split in FILES:
        images, labels, _ = load_split(name, split, data_dir, download=False)
        record[split] = {"images": len(images), "shape": list(images.shape[1:]),
                         "classes": sorted(int(c) for c in np.unique(labels))}
    return record


def _check_name(name: str) -> None:
    if name not in MIRRORS:
        raise DataError(f"unknown IDX dataset {name!r}; use fashion-mnist or mnist")
