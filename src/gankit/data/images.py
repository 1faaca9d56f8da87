"""Image folders (PNG/JPEG, recursively) and array files (.npz/.npy) -> uint8 or float (N, C, H, W)."""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from gankit.errors import DataError

EXTENSIONS = {".png", ".jpg", ".jpeg"}


def load_folder(path: str | os.PathLike, image_size: int | None = None,
                channels: int | None = None) -> tuple[torch.Tensor, str]:
    """(N, C, H, W) uint8 from every image under path, sorted by name; and a source description."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"folder:{root}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"folder:{root}: no .png/.jpg/.jpeg images found (searched recursively)")
    pictures = []
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
                pictures.append(image.copy())
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot read image {file}: {exc}") from None
    if channels is None:
        channels = 1 if all(p.mode in ("L", "1", "I;16", "I", "LA") for p in pictures) else 3
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    first_size = pictures[0].size
    for file, picture in zip(files, pictures, strict=True):
        picture = picture.convert(mode)
        if image_size is not None:
            picture = _resize_crop(picture, image_size)
        elif picture.size != first_size:
            raise DataError(
                f"images differ in size: {files[0]} is {first_size[0]}x{first_size[1]}, {file} is "
                f"{picture.size[0]}x{picture.size[1]}; pass --image-size to resize them all"
            )
        array = np.asarray(picture, dtype=np.uint8)
        arrays.append(array[:, :, None] if array.ndim == 2 else array)
    stacked = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
    return stacked, f"{len(files)} images under {root}"


def _resize_crop(picture: Image.Image, size: int) -> Image.Image:
    """Shorter side to size (bicubic, antialiased), then a centred size x size crop."""
    w, h = picture.size
    scale = size / min(w, h)
    picture = picture.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = picture.size
    left, top = (w - size) // 2, (h - size) // 2
    return picture.crop((left, top, left + size, top + size))


def load_array(path: str | os.PathLike, image_size: int | None = None,
               channels: int | None = None) -> tuple[torch.Tensor, str]:
    """(N, C, H, W) uint8, or float32 in [-1, 1], from an .npz or .npy array of images."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"npz:{path}: no such file")
    try:
        array = _read_array(path)
    except DataError:
        raise
    except ValueError as exc:  # object arrays need pickle, which we refuse; malformed headers
        raise DataError(f"cannot read {path}: {exc} (object arrays are not supported)") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"cannot read {path}: not a valid .npz/.npy file ({exc})") from None
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4) or array.shape[0] == 0:
        raise DataError(f"{path}: expected images (N, H, W) or (N, H, W, C) with C in 1, 3, 4 and N > 0, "
                        f"got shape {array.shape}")
    array = array[..., :3] if array.shape[-1] == 4 else array  # drop alpha
    if array.dtype == np.uint8:
        x = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise DataError(f"{path}: the images contain NaN or Inf")
        lo, hi = float(array.min()), float(array.max())
        if lo >= 0 and hi <= 1:
            array = array * 2 - 1
        elif not (lo >= -1 and hi <= 1):
            raise DataError(f"{path}: float images must lie in [0, 1] or [-1, 1], found [{lo:g}, {hi:g}]")
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(0, 3, 1, 2)
    else:
        raise DataError(f"{path}: images must be uint8 or float, got {array.dtype}")
    x = convert(x, image_size, channels)
    return x.contiguous(), str(path)


def _read_array(path: Path) -> np.ndarray:
    """The image array of an .npy file, or of an .npz archive ("images", "x", "arr_0" or its only
    array). The header's claimed size is checked against the bytes that can back it before any
    allocation, so a lying header cannot make numpy allocate terabytes."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            return _read_npy(f, path.stat().st_size, path)
    with zipfile.ZipFile(path) as archive:
        names = {n[:-4]: n for n in archive.namelist() if n.endswith(".npy")}
        key = next((k for k in ("images", "x", "arr_0") if k in names),
                   next(iter(names)) if len(names) == 1 else None)
        if key is None:
            raise DataError(f"{path} holds arrays {sorted(names)}; name the images array 'images'")
        info = archive.getinfo(names[key])
        # deflate expands at most ~1032:1, so the member's real size is bounded by its compressed size
        backing = min(info.file_size, info.compress_size * 1032 + 1024)
        with archive.open(info) as f:
            return _read_npy(f, backing, path)


def _read_npy(f, backing_bytes: int, path: Path) -> np.ndarray:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise DataError(f"cannot read {path}: .npy format version {version} is not supported (1.0, 2.0 are)")
    if dtype.hasobject:
        raise DataError(f"cannot read {path}: object arrays are not supported (they need pickle)")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > backing_bytes:
        raise DataError(f"{path}: the array header claims shape {shape} ({claimed} bytes) but the "
                        f"file holds at most {backing_bytes} bytes: truncated or corrupt")
    return _read_body(f, shape, fortran, dtype, path)


def _read_body(f, shape: tuple, fortran: bool, dtype: np.dtype, path: Path) -> np.ndarray:
    count = math.prod(shape)
    data = f.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise DataError(f"{path}: truncated array data ({len(data)} of {count * dtype.itemsize} bytes)")
    array = np.frombuffer(bytearray(data), dtype=dtype, count=count)  # writable, for torch
    return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)


def convert(x: torch.Tensor, image_size: int | None, channels: int | None) -> torch.Tensor:
    """Channel count and size for a (N, C, H, W) uint8 or float tensor, keeping its dtype."""
    if channels == 1 and x.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R 601, as PIL's "L"
        grey = (x.float() * weights).sum(1, keepdim=True)
        x = grey.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else grey
    elif channels == 3 and x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    if image_size is not None and x.shape[-2:] != (image_size, image_size):
        x = resize(x, image_size)
    return x


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side to size (bilinear, antialiased), centre crop; uint8 stays uint8."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    out = []
    for chunk in x.split(4096):  # bounded temporary float memory
        y = F.interpolate(chunk.float(), size=new, mode="bilinear", antialias=True, align_corners=False)
        out.append(y.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y.clamp(-1, 1))
    y = torch.cat(out)
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    return y[..., top:top + size, left:left + size]
