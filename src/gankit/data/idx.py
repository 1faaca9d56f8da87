"""IDX files (the MNIST format), gzipped or not, read strictly and with bounded memory.

Header: two zero bytes, a type code, the number of dimensions, then each dimension as a
big-endian uint32. The payload must hold exactly prod(dims) items: a header that claims more
than the file holds is rejected before anything that size is allocated.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from gankit.errors import DataError

DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions (N, rows, cols)
LABELS_MAGIC = 0x00000801  # uint8, 1 dimension (N,)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an IDX file; DataError naming the file on any defect."""
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
        opener = gzip.open if gz else open
        with opener(path, "rb") as f:
            header = f.read(4)
            if len(header) < 4:
                raise DataError(f"not an IDX file (shorter than its 4-byte header): {path}")
            zero, code, ndim = header[:2], header[2], header[3]
            if zero != b"\x00\x00" or code not in DTYPES or not 1 <= ndim <= 4:
                magic = struct.unpack(">I", header)[0]
                raise DataError(f"not an IDX file (magic 0x{magic:08x}): {path}")
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"truncated IDX header in {path}")
            dims = struct.unpack(f">{ndim}I", dims_raw)
            dtype = np.dtype(DTYPES[code])
            expected = int(np.prod(dims, dtype=object)) * dtype.itemsize
            if not gz and expected > path.stat().st_size:  # cheap check before reading anything
                raise DataError(
                    f"IDX file {path} claims {dims} items ({expected} bytes) but holds only "
                    f"{path.stat().st_size} bytes: truncated or corrupt"
                )
            # For gzip, read at most expected + 1 bytes: a lying header cannot make us read forever,
            # and the gzip stream's own size bounds the allocation.
            payload = _read_bounded(f, expected + 1)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(payload) != expected:
        what = "truncated" if len(payload) < expected else "has trailing data"
        raise DataError(f"IDX file {path} {what}: header says {expected} payload bytes for shape "
                        f"{dims}, found {'more' if len(payload) > expected else len(payload)}")
    return np.frombuffer(payload, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _read_bounded(f, limit: int, chunk: int = 1 << 22) -> bytes:
    parts, total = [], 0
    while total < limit:
        block = f.read(min(chunk, limit - total))
        if not block:
            break
        parts.append(block)
        total += len(block)
    return b"".join(parts)


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """(N, H, W) uint8 images from an IDX image file (magic 0x00000803)."""
    array = read_idx(path)
    if array.dtype != np.uint8 or array.ndim != 3:
        raise DataError(f"not an IDX image file (magic 0x{_magic(array):08x}, expected "
                        f"0x{IMAGES_MAGIC:08x}): {path}")
    return array


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
    """(N,) uint8 labels from an IDX label file (magic 0x00000801)."""
    array = read_idx(path)
    if array.dtype != np.uint8 or array.ndim != 1:
        raise DataError(f"not an IDX label file (magic 0x{_magic(array):08x}, expected "
                        f"0x{LABELS_MAGIC:08x}): {path}")
    return array


def _magic(array: np.ndarray) -> int:
    code = {v: k for k, v in DTYPES.items()}[array.dtype.newbyteorder(">").str.replace("|", ">")]
    return (code << 8) | array.ndim
