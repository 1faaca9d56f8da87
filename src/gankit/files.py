"""Small file helpers shared by the modules that write or verify files."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_write(path: str | os.PathLike, suffix: str = "", fsync: bool = False) -> Iterator[Path]:
    """Write `path` whole or not at all: yields a temporary path beside it to write to.

    The temporary file is `.NAME.tmp-PID` plus `suffix` (for writers that choose the format by
    the file's suffix or append one, such as numpy's .npz), in the same folder, which is created
    if needed; `runs.remove_stale_temp_files` finds the ones a killed process leaves. When the
    block ends normally the file is renamed over `path` (atomic: readers see the old file or the
    new one, never half of one); when it raises, the file is removed and `path` is untouched.
    fsync=True also flushes the file to disk before the rename and the folder after it, so the
    new file survives a power cut (checkpoints).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if fsync:
            _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform: the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike, record: dict) -> None:
    """Write JSON atomically (temp file + rename): readers never see half a file."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
