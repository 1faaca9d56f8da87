"""Fashion-MNIST and MNIST: find the four IDX files locally, or download them with SHA-256 checks.

A folder the user names is used or refused, never passed over: with --data-dir DIR (else
$GANKIT_DATA=DIR) the files are looked for in DIR and DIR/NAME only, the first of the two holding
all four wins, and a folder there holding some of the files but not all is an error that lists
the missing ones (unless they are what an interrupted download left, which is then completed).
Without either, the search order is the user cache $XDG_CACHE_HOME/gankit/NAME (default
~/.cache/gankit/NAME), then system directories (Debian's dataset-fashion-mnist). Downloads go to
--data-dir DIR, else $GANKIT_DATA/NAME, else the user cache, and are moved into place only once
their SHA-256 matches. Files found locally are trusted as they are (a user may have uncompressed
them); one that is not a valid IDX file is an error naming it.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from gankit.cache import cache_dir
from gankit.data.idx import read_idx_images, read_idx_labels
from gankit.errors import DataError
from gankit.files import atomic_write, sha256

NAMES = ("fashion-mnist", "mnist")
CLASSES = {  # label i is CLASSES[name][i]; Fashion-MNIST's official names
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple(str(digit) for digit in range(10)),
}
SPLITS = ("train", "test")
FILES = {  # split -> (images, labels), without the optional .gz
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MIRRORS = {  # base URLs, tried in order
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
# Read-only system copies, searched last; a module constant so that tests can empty it.
SYSTEM_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")], "mnist": []}
TIMEOUT = 30.0  # seconds per connection attempt / read


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where the files are looked for, in order: the folder the user named and its NAME
    subfolder, and nowhere else; without one, the user cache and the system directories."""
    _check_name(name)
    given = _given(data_dir)
    if given is not None:
        return [given[0], given[0] / name]
    return [cache_dir(name)] + list(SYSTEM_DIRS.get(name, []))


def _given(data_dir: str | os.PathLike | None) -> tuple[Path, str] | None:
    """(the folder the user named, how it was named): --data-dir, else $GANKIT_DATA; or None."""
    if data_dir is not None:
        return Path(data_dir), f"--data-dir {data_dir}"
    if os.environ.get("GANKIT_DATA"):
        return Path(os.environ["GANKIT_DATA"]), f"$GANKIT_DATA ({os.environ['GANKIT_DATA']})"
    return None


def _download_target(name: str, data_dir: str | os.PathLike | None) -> Path:
    """--data-dir itself; $GANKIT_DATA/NAME (one $GANKIT_DATA serves both datasets); the user cache."""
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get("GANKIT_DATA"):
        return Path(os.environ["GANKIT_DATA"]) / name
    return cache_dir(name)


def _stems() -> list[str]:
    return [stem for pair in FILES.values() for stem in pair]


def _file(directory: Path, stem: str) -> Path | None:
    """directory/stem or directory/stem.gz, whichever exists (plain first)."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_files(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first searched directory that holds all four files, or None."""
    for directory in search_dirs(name, data_dir):
        if all(_file(directory, stem) for stem in _stems()):
            return directory
    return None


def _download(url: str, dest: Path, timeout: float) -> None:
    """Copy url to dest (a temporary file); raises URLError/OSError on network failure."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        while block := response.read(1 << 20):
            out.write(block)


def fetch(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The directory holding the dataset: found locally, else downloaded and checksum-verified."""
    found = find_files(name, data_dir)
    if found is not None:
        return found
    target = _download_target(name, data_dir)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {target} to download {name} into: {exc.strerror or exc}; "
                        f"pass --data-dir DIR with a writable DIR") from None
    for filename, expected in SHA256[name].items():
        dest = target / filename
        if dest.is_file() and sha256(dest) == expected:
            continue  # left by an earlier, interrupted fetch
        _download_checked(name, filename, expected, dest, data_dir)
    return target


def _download_checked(name: str, filename: str, expected: str, dest: Path,
                      data_dir: str | os.PathLike | None) -> None:
    """Download filename from the first mirror that serves it with the right SHA-256, to dest."""
    failures: list[str] = []
    mismatch: str | None = None
    for base in MIRRORS[name]:
        url = base + filename
        try:
            # Renamed to dest only if the block completes: nothing unverified carries the final name.
            with atomic_write(dest) as tmp:
                _download_verified(url, tmp, expected)
            return
        except _Unreachable as exc:
            failures.append(str(exc))
        except _Mismatch as exc:
            mismatch = str(exc)
    if mismatch is not None:
        raise DataError(mismatch)
    raise DataError(_not_found_message(name, data_dir, failures[-1] if failures else "no mirror"))


class _Unreachable(Exception):
    """A mirror did not serve the file; the next one is tried."""


class _Mismatch(Exception):
    """A mirror served the file with the wrong SHA-256; the next one is tried."""


def _download_verified(url: str, tmp: Path, expected: str) -> None:
    """Download url to tmp and check its SHA-256; _Unreachable or _Mismatch if it cannot be kept."""
    try:
        tmp.touch()
    except OSError as exc:
        raise DataError(f"cannot write into {tmp.parent}: {exc.strerror or exc}; pass --data-dir "
                        f"DIR with a writable DIR") from None
    try:
        _download(url, tmp, TIMEOUT)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise _Unreachable(f"{url}: {getattr(exc, 'reason', None) or exc}") from None
    actual = sha256(tmp)
    if actual != expected:
        raise _Mismatch(f"checksum mismatch for {url}: expected SHA-256 {expected}, got {actual}; "
                        f"the download was discarded, try again later")


def _not_found_message(name: str, data_dir: str | os.PathLike | None, reason: str) -> str:
    urls = " ".join(MIRRORS[name][0] + f for f in SHA256[name])
    searched = ", ".join(str(d) for d in search_dirs(name, data_dir))
    debian = ("install Debian's package (apt-get install dataset-fashion-mnist, Debian/Ubuntu), or "
              if name == "fashion-mnist" else "")
    return (f"{name} not found locally and not downloaded ({reason}). To get it, {debian}download "
            f"the four files {urls} into a directory DIR and pass --data-dir DIR or set GANKIT_DATA=DIR. "
            f"Searched: {searched}")


def load_split(name: str, split: str, data_dir: str | os.PathLike | None = None,
               download: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """(images (N, 28, 28) uint8, labels (N,) uint8 in 0..9, source) for the train or test split;
    label i names the class CLASSES[name][i]."""
    _check_name(name)
    if split not in FILES:
        raise DataError(f"unknown split {split!r} for {name}; use train or test")
    directory = find_files(name, data_dir)
    if directory is None:
        _refuse_incomplete(name, data_dir, download)
        if not download:
            raise DataError(_not_found_message(name, data_dir, "downloads disabled"))
        directory = fetch(name, data_dir)
    image_file, label_file = (_file(directory, stem) for stem in FILES[split])
    if image_file is None or label_file is None:  # removed since the search
        raise DataError(f"{name}: the {split} files vanished from {directory}; fetch them again")
    images, labels = read_idx_images(image_file), read_idx_labels(label_file)
    if len(images) != len(labels):
        raise DataError(f"{image_file} holds {len(images)} images but {label_file} holds "
                        f"{len(labels)} labels; one of them is wrong, download them again")
    if len(images) == 0:
        raise DataError(f"{image_file} holds no images")
    if labels.max() >= len(CLASSES[name]):
        i = int(np.argmax(labels))
        raise DataError(f"{label_file} holds label {labels[i]} at index {i}, outside {name}'s classes "
                        f"0..{len(CLASSES[name]) - 1}; the file is corrupt, download it again")
    return images, labels, f"{image_file}, {label_file}"


def _refuse_incomplete(name: str, data_dir: str | os.PathLike | None, download: bool) -> None:
    """DataError if the folder the user named (or its NAME subfolder) holds some of the four
    files but not all: which are missing, where gankit looked, and which of those present cannot
    be read. Not for what an interrupted download left there (verified .gz files only), which
    fetch completes."""
    given = _given(data_dir)
    if given is None:
        return
    folder, named = given
    target = _download_target(name, data_dir)
    for directory in (folder, folder / name):
        present = {stem: path for stem in _stems() if (path := _file(directory, stem)) is not None}
        if not present:
            continue
        if download and directory == target and all(_verified_download(name, p) for p in present.values()):
            continue  # fetch downloads the rest
        missing = [stem for stem in _stems() if stem not in present]
        unreadable = []
        for stem, path in present.items():
            try:
                (read_idx_labels if "labels" in stem else read_idx_images)(path)
            except DataError as exc:
                unreadable.append(str(exc))
        raise DataError(
            f"{name}: {directory} (from {named}) holds {', '.join(p.name for p in present.values())} but not "
            f"{', '.join(missing)} (plain or .gz); gankit looked in {folder} and {folder / name}, and uses a folder "
            f"given this way only when it holds all four files."
            + (f" Also: {' '.join(unreadable)}." if unreadable else "")
            + f" Put the missing files there, or download them with: gankit data fetch {name} --data-dir {directory}")


def _verified_download(name: str, path: Path) -> bool:
    """Whether path is one of the .gz files as the mirrors serve them (SHA-256 checked)."""
    expected = SHA256[name].get(path.name)
    return expected is not None and sha256(path) == expected


def info(name: str, data_dir: str | os.PathLike | None = None) -> dict:
    """Where the dataset is (or would be looked for), its files, their checksums and contents."""
    directory = find_files(name, data_dir)
    record: dict = {"name": name, "found": str(directory) if directory else None,
                    "searched": [str(d) for d in search_dirs(name, data_dir)],
                    "urls": [base + f for base in MIRRORS[name] for f in SHA256[name]]}
    if directory is None:
        return record
    record["files"] = {}
    for stem in _stems():
        path = _file(directory, stem)
        if path is None:  # removed since the search
            record["files"][stem] = {"path": None}
            continue
        # Checksums are of the .gz files; an uncompressed file cannot be checked.
        ok = sha256(path) == SHA256[name][path.name] if path.suffix == ".gz" else None
        record["files"][stem] = {"path": str(path), "bytes": path.stat().st_size, "sha256_ok": ok}
    for split in SPLITS:
        try:
            images, labels, _ = load_split(name, split, directory, download=False)
        except DataError as exc:
            record[split] = {"error": str(exc)}
            continue
        record[split] = {"images": len(images), "shape": list(images.shape[1:]),
                         "classes": sorted(int(c) for c in np.unique(labels))}
    return record


def _check_name(name: str) -> None:
    if name not in MIRRORS:
        raise DataError(f"unknown IDX dataset {name!r}; use one of {', '.join(NAMES)}")
