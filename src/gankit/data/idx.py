"""IDX files (the MNIST format), gzipped or not, read strictly and with bounded memory.

Header: two zero bytes, a type code, the number of dimensions, then each dimension as a
big-endian uint32; the payload is prod(dims) big-endian items, nothing more, nothing less.
A header that claims more data than the file holds is rejected before anything that size is
allocated: plain files are compared against their size on disk, gzipped ones are read with a
bound of claimed + 1 bytes.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gankit.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions (N, rows, cols)
LABELS_MAGIC = 0x00000801  # uint8, 1 dimension (N,)
_CHUNK = 1 << 22


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an IDX file, in native byte order; DataError naming the file on any defect."""
    return _read(Path(path))[1]


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """(N, H, W) uint8 images from an IDX image file (magic 0x00000803)."""
    return _read_expecting(Path(path), IMAGES_MAGIC, "image")


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
    """(N,) uint8 labels from an IDX label file (magic 0x00000801)."""
    return _read_expecting(Path(path), LABELS_MAGIC, "label")


def _read_expecting(path: Path, expected: int, what: str) -> np.ndarray:
    magic, array = _read(path)
    if magic != expected:
        known = {IMAGES_MAGIC: "it holds images", LABELS_MAGIC: "it holds labels"}.get(magic)
        hint = f" ({known}, not {what}s: check the file names)" if known else ""
        raise DataError(f"not an IDX {what} file (magic 0x{magic:08x}, expected 0x{expected:08x}): "
                        f"{path}{hint}")
    return array


def _read(path: Path) -> tuple[int, np.ndarray]:
    """(magic, array) of an IDX file."""
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == GZIP_MAGIC  # by content, not by extension
            raw.seek(0)
            if gz:
                with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                    return _parse(f, path, on_disk=None)
            return _parse(raw, path, on_disk=os.fstat(raw.fileno()).st_size)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise DataError(f"cannot read IDX file {path}: {reason}") from None


def _parse(f: BinaryIO, path: Path, on_disk: int | None) -> tuple[int, np.ndarray]:
    """Header and payload from an open stream; on_disk is the plain file's size (None for gzip)."""
    header = f.read(4)
    if len(header) < 4:
        raise DataError(f"not an IDX file (shorter than its 4-byte header, {len(header)} bytes): {path}")
    magic = struct.unpack(">I", header)[0]
    code, ndim = header[2], header[3]
    if header[:2] != b"\x00\x00":
        raise DataError(f"not an IDX file (magic 0x{magic:08x}: the first two bytes must be zero): {path}")
    if code not in DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in DTYPES)
        raise DataError(f"not an IDX file (magic 0x{magic:08x}: unknown type code 0x{code:02x}, "
                        f"expected one of {known}): {path}")
    if not 1 <= ndim <= 4:
        raise DataError(f"not an IDX file (magic 0x{magic:08x}: {ndim} dimensions, expected 1 to 4): {path}")
    dims_raw = f.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DataError(f"truncated IDX header in {path}: {ndim} dimensions need {4 * ndim} bytes, "
                        f"found {len(dims_raw)}")
    dims = struct.unpack(f">{ndim}I", dims_raw)
    dtype = np.dtype(DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize  # exact Python int: no overflow for lying headers
    if on_disk is not None:
        # Plain file: the payload size is known without reading anything.
        actual = on_disk - 4 - 4 * ndim
        if actual != expected:
            _size_error(path, dims, expected, actual)
        payload = _read_bounded(f, expected)
    else:
        # Gzip: the uncompressed size is unknown until read; reading at most expected + 1 bytes
        # detects trailing data, and a header that lies upwards only costs what the stream holds.
        payload = _read_bounded(f, expected + 1)
        if len(payload) != expected:
            _size_error(path, dims, expected, len(payload), at_least=len(payload) > expected)
    array = np.frombuffer(payload, dtype=dtype).reshape(dims)  # writable: backed by a bytearray
    return magic, array.astype(dtype.newbyteorder("="), copy=False)  # copies only to swap bytes


def _size_error(path: Path, dims: tuple, expected: int, actual: int, at_least: bool = False) -> None:
    what = "has trailing data" if actual > expected else "is truncated"
    found = f"at least {actual}" if at_least else str(actual)
    raise DataError(f"IDX file {path} {what}: its header claims shape {dims} = {expected} payload "
                    f"bytes, the file holds {found}; the file is corrupt, download it again")


def _read_bounded(f: BinaryIO, limit: int) -> bytearray:
    """At most `limit` bytes, read in chunks so that memory follows what the stream really holds."""
    buffer = bytearray()
    while len(buffer) < limit:
        block = f.read(min(_CHUNK, limit - len(buffer)))
        if not block:
            break
        buffer += block
    return buffer
