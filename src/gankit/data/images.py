"""Image datasets: folders of PNG/JPEG files and .npz/.npy arrays -> (N, C, H, W) tensors, with
class labels where the source has them.

Pixels stay uint8 (0..255) where the source is 8-bit, a quarter of the memory of float; they are
mapped to [-1, 1] per batch by ImageDataset.to_float. Float arrays are stored already in [-1, 1].

Labels (ImageDataset.labels, (N,) int64 in 0..K-1, and .classes, the K names):
- A folder is labelled when every image lies inside a first-level subfolder: those subfolders
  (the ones holding images, searched recursively) are the classes, in sorted order, named after
  themselves. A folder with any image directly at its top level is unlabelled, exactly as
  before, even if other images are in subfolders. The images are in the same (sorted-path)
  order either way.
- An .npz archive is labelled when it holds a label array 'y' or 'labels' beside the images
  (both: they must be equal, and 'y' is reported; different, an error). The labels are 1-D, one
  per image, integers >= 0 (any integer dtype, or floats with integer values). Class names are a
  'classes' (else 'class_names') string array when there is one, which then fixes K = its length
  and must cover every label; else "0".."K-1" with K = max label + 1. The source string says
  which arrays were used. A lone .npy file is unlabelled.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from gankit.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg")
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
ARRAY_KEYS = ("images", "x", "arr_0")  # preferred .npz members, in order
LABEL_KEYS = ("y", "labels")  # .npz label members, the first reported when both are present
CLASS_KEYS = ("classes", "class_names")  # .npz class-name members, likewise
MAX_CLASSES = 100_000  # a label above this is a corrupt array, not a class index
_RESIZE_CHUNK_BYTES = 1 << 26  # float32 working memory per interpolate call


@dataclass
class ImageDataset:
    """A whole image dataset in memory."""

    name: str  # e.g. "fashion-mnist", "folder:/x", "npz:/x.npz"
    images: torch.Tensor  # (N, C, H, W): uint8 0..255, or float32 already in [-1, 1]; CPU, contiguous
    source: str  # where it came from, for people
    labels: torch.Tensor | None = None  # (N,) int64 class indices 0..K-1, CPU; None if unlabelled
    classes: tuple[str, ...] | None = None  # the K class names: label i is classes[i]
    # The mmap.mmap behind images when they are memory-mapped from a prepared dataset larger than
    # memory (data/prepared.py); None when they are resident.
    mapping: object | None = None

    def __post_init__(self) -> None:
        # Programming errors, not user input: loaders validate their sources with DataErrors.
        if (self.labels is None) != (self.classes is None):
            raise ValueError(f"{self.name}: labels and classes come together (both or neither)")
        if self.labels is not None:
            if self.labels.dtype != torch.int64 or tuple(self.labels.shape) != (len(self.images),):
                raise ValueError(f"{self.name}: labels must be ({len(self.images)},) int64, got "
                                 f"{tuple(self.labels.shape)} {self.labels.dtype}")
            low, high = (int(self.labels.min()), int(self.labels.max())) if len(self.labels) else (0, -1)
            if low < 0 or high >= len(self.classes):
                raise ValueError(f"{self.name}: labels must lie in 0..{len(self.classes) - 1}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        c, h, w = self.images.shape[1:]
        return (c, h, w)

    def __len__(self) -> int:
        return len(self.images)

    def to_float(self, batch: torch.Tensor) -> torch.Tensor:
        """A slice of self.images (any device) -> float32 in [-1, 1]: uint8 0 -> -1.0, 255 -> 1.0."""
        if batch.dtype == torch.uint8:
            return batch.float() / 127.5 - 1.0  # 255 / 127.5 is exactly 2.0 in float32
        return batch.float()


def check_options(image_size: int | None, channels: int | None, what: str) -> None:
    """DataError for an image size or channel count no loader can produce."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise DataError(f"{what}: --image-size must be a positive integer, got {image_size!r}")
    if channels not in (None, 1, 3):
        raise DataError(f"{what}: --channels must be 1 or 3, got {channels!r}")


# --- folders ---------------------------------------------------------------------------------

def load_folder(path: str | os.PathLike, image_size: int | None = None,
                channels: int | None = None) -> ImageDataset:
    """Every .png/.jpg/.jpeg under path (recursively, sorted) as one (N, C, H, W) uint8 dataset.

    image_size None keeps the native size (all images must share it); otherwise the shorter side
    is resized to image_size and the centre cropped square. channels None: 1 if every image is
    grey, else 3. Labelled by first-level subfolder when no image is at the top level (see the
    module docstring).
    """
    root = Path(path)
    name = f"folder:{path}"
    check_options(image_size, channels, name)
    files = list_images(root, name)

    # Pass 1 reads headers only (cheap): the channel count and any size mismatch are known
    # before a single pixel is decoded, and the output can be allocated once.
    headers = [header(file) for file in files]  # (mode, (width, height)), upright
    channels, (out_h, out_w) = output_shape(name, files, headers, image_size, channels)

    # Pass 2 decodes each image straight into its slot of the output.
    out = torch.empty((len(files), channels, out_h, out_w), dtype=torch.uint8)
    for i, file in enumerate(files):
        out[i] = decode_resized(file, channels, image_size)
    labelled = folder_labels(root, files)
    if labelled is None:
        return ImageDataset(name, out, f"{len(files)} images under {root.resolve()}")
    labels, classes = labelled
    return ImageDataset(name, out, f"{len(files)} images under {root.resolve()} in {len(classes)} "
                                   f"classes (its subfolders)", labels, classes)


def list_images(root: Path, name: str) -> list[Path]:
    """Every .png/.jpg/.jpeg file under root, recursively, in sorted order (the dataset's order);
    DataError naming the source when root is not a folder or holds no images."""
    return [root / rel for rel, _ in scan_images(root, name)]


def scan_images(root: Path, name: str) -> list[tuple[str, os.stat_result]]:
    """(path relative to root with "/", its stat) of each image file under root, sorted as paths
    sort (part by part). One directory walk and one stat a file, each folder's entries sorted by
    name and a subfolder walked where its name falls: that is the part-by-part order, without
    sorting all the paths at the end (0.6 s of a 1.2 s scan of 100,000 files). Like pathlib's
    rglob, it does not enter symlinked folders."""
    if not root.is_dir():
        raise DataError(f"{name}: not a folder (or it does not exist); give a folder of .png/.jpg images")
    found = []
    try:
        stack = [("", _sorted_entries(root))]  # (folder relative to root + "/", its entries left)
        while stack:
            rel, entries = stack[-1]
            for entry in entries:
                if entry.is_dir() and not entry.is_symlink():
                    stack.append((f"{rel}{entry.name}/", _sorted_entries(entry.path)))
                    break  # walk the subfolder now; this folder's iterator resumes after it
                if _is_image_name(entry.name) and entry.is_file():
                    found.append((rel + entry.name, entry.stat()))
            else:
                stack.pop()
    except OSError as exc:
        raise DataError(f"{name}: cannot list the folder: {exc.strerror or exc}") from None
    if not found:
        raise DataError(f"{name}: no .png/.jpg/.jpeg images found (searched recursively)")
    return found


def _is_image_name(name: str) -> bool:
    """Whether os.path.splitext(name)[1].lower() is in EXTENSIONS (leading dots are not an
    extension: ".png" has none), at a third of splitext's cost."""
    dot = name.rfind(".")
    return name[dot:].lower() in EXTENSIONS and name[:dot].strip(".") != ""


def _sorted_entries(folder) -> Iterator[os.DirEntry]:
    with os.scandir(folder) as entries:
        return iter(sorted(entries, key=lambda entry: entry.name))


def output_shape(name: str, files: list[Path], headers: list[tuple[str, tuple[int, int]]],
                 image_size: int | None, channels: int | None) -> tuple[int, tuple[int, int]]:
    """(C, (H, W)) of the dataset from the files' headers: C 1 if every image is grey (unless
    given), (H, W) the shared native size unless image_size is given (else a DataError)."""
    if channels is None:
        channels = 1 if all(mode in GREY_MODES for mode, _ in headers) else 3
    if image_size is not None:
        return channels, (image_size, image_size)
    first_w, first_h = headers[0][1]
    for file, (_, (w, h)) in zip(files, headers, strict=True):
        if (w, h) != (first_w, first_h):
            raise DataError(f"{name}: images differ in size: {files[0]} is {first_w}x{first_h}, "
                            f"{file} is {w}x{h}; pass --image-size to resize them all")
    return channels, (first_h, first_w)


def decode_resized(file: Path, channels: int, image_size: int | None) -> torch.Tensor:
    """(C, H, W) uint8: one file decoded upright, resized and centre-cropped when image_size is
    given. The one decode that folders and prepared datasets share, so both hold the same pixels."""
    x = _decode(file, channels)  # (1, C, h, w) uint8
    return x[0] if image_size is None else resize(x, image_size)[0]


def folder_labels(root: Path, files: list[Path]) -> tuple[torch.Tensor, tuple[str, ...]] | None:
    """(labels (N,) int64, class names) from each file's first-level subfolder under root; None
    when any file lies directly in root (a mixed or flat folder is unlabelled)."""
    return labels_of_paths([file.relative_to(root).as_posix() for file in files])


def labels_of_paths(paths: list[str]) -> tuple[torch.Tensor, tuple[str, ...]] | None:
    """folder_labels from the paths relative to the root, "/"-separated (scan_images's)."""
    firsts = []
    for path in paths:
        first, sep, _ = path.partition("/")
        if not sep:
            return None
        firsts.append(first)
    classes = tuple(sorted(set(firsts)))
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index[f] for f in firsts], dtype=torch.int64), classes


_EXIF_ORIENTATION = 0x0112  # values 5..8 turn the image a quarter: width and height swap
_SIDEWAYS = (5, 6, 7, 8)


def header(file: Path) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (width, height) as displayed, i.e. after the EXIF orientation) of one file."""
    with _pil_errors(file):
        with Image.open(file) as image:  # parses the header; pixels are decoded on load()
            w, h = image.size
            if image.getexif().get(_EXIF_ORIENTATION) in _SIDEWAYS:
                w, h = h, w
            return image.mode, (w, h)


def _decode(file: Path, channels: int) -> torch.Tensor:
    """(1, C, H, W) uint8 pixels of one image file, upright (EXIF orientation applied), as grey
    (C=1, PIL "L") or RGB (C=3): CMYK and palettes are converted, 16-bit grey scaled, alpha dropped."""
    with _pil_errors(file):
        with Image.open(file) as image:
            image.load()
            image = ImageOps.exif_transpose(image)  # a phone photo stored sideways comes out upright
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")  # the palette's colours; the alpha is dropped below
            if image.mode.startswith("I;16") or image.mode == "I":
                # 16-bit grey: PIL's convert("L") clips at 255 instead of scaling, so scale here.
                wide = np.asarray(image, dtype=np.float64)
                grey = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
                image = Image.fromarray(grey)  # 2-D uint8 -> mode "L"
            array = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]  # (H, W) -> (H, W, 1)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0)  # (1, C, H, W)


@contextmanager
def _pil_errors(file: Path) -> Iterator[None]:
    """Turns whatever PIL raises for one file into a DataError naming that file."""
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise DataError(f"image {file} is too large to load safely ({exc}); shrink it or remove it "
                        f"from the folder") from None
    except DataError:
        raise
    except Exception as exc:
        # A corrupt file can make a PIL plugin raise almost anything (OSError, ValueError,
        # SyntaxError, struct.error, ...): all of them mean "this file is bad".
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise DataError(f"cannot read image {file}: {reason}; fix or remove the file") from None


# --- arrays ----------------------------------------------------------------------------------

def load_npz(path: str | os.PathLike, image_size: int | None = None,
             channels: int | None = None) -> ImageDataset:
    """Images from an .npz archive or .npy file: (N, H, W) or (N, H, W, C), C in 1, 3, 4.

    uint8 stays uint8; float in [0, 1] is mapped to [-1, 1], float in [-1, 1] kept; alpha dropped.
    Labels from a 'y' / 'labels' member (see the module docstring). Never unpickles (object
    arrays are refused).
    """
    path = Path(path)
    name = f"npz:{path}"
    check_options(image_size, channels, name)
    if not path.is_file():
        raise DataError(f"{name}: no such file; give an .npz or .npy file of images")
    try:
        array, key, extras = _read_arrays(path)
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
            RuntimeError, KeyError) as exc:  # malformed header, bad zip, encrypted or odd compression
        raise DataError(f"cannot read {path}: not a valid .npz/.npy array file ({exc})") from None

    if array.ndim == 3:
        array = array[..., None]  # (N, H, W) -> (N, H, W, 1)
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
        raise DataError(f"{path}: expected images (N, H, W) or (N, H, W, C) with C in 1, 3, 4 and N, H, "
                        f"W > 0, got shape {tuple(array.shape)}")
    if array.shape[-1] == 4:
        array = array[..., :3]  # drop alpha
    if array.dtype == np.uint8:
        x = torch.from_numpy(np.ascontiguousarray(array))
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():  # before the float32 cast, which would turn 1e300 into inf
            raise DataError(f"{path}: the images contain NaN or Inf")
        lo, hi = float(array.min()), float(array.max())
        if not (lo >= -1 and hi <= 1):
            raise DataError(f"{path}: float images must lie in [0, 1] or [-1, 1], found [{lo:g}, {hi:g}]; "
                            f"rescale them or store uint8 0..255")
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if lo >= 0:
            x = x * 2 - 1  # [0, 1] -> [-1, 1]
    else:
        raise DataError(f"{path}: images must be uint8 or float, got {array.dtype}")
    x = convert(x.permute(0, 3, 1, 2), image_size, channels)  # (N, C, H, W)
    if "labels" not in extras:
        return ImageDataset(name, x.contiguous(), str(path.resolve()))
    label_key, labels = extras["labels"]
    y = _check_labels(labels, len(x), path, label_key)
    used = f"images '{key}', labels '{label_key}'"
    if "classes" in extras:
        class_key, names = extras["classes"]
        classes = _check_classes(names, y, path, class_key)
        used += f", classes '{class_key}'"
    else:
        classes = tuple(str(i) for i in range(int(y.max()) + 1))  # N > 0 here
    return ImageDataset(name, x.contiguous(), f"{path.resolve()} ({used})", y, classes)


def _read_arrays(path: Path) -> tuple[np.ndarray, str | None, dict[str, tuple[str, np.ndarray]]]:
    """(images, their key, extras) from an .npy file (key None, no extras) or an .npz archive.

    The images are the member "images", "x" or "arr_0", else the archive's only array besides
    labels and class names. extras maps "labels" and "classes" to (key, array) where the archive
    has them (LABEL_KEYS, CLASS_KEYS). Each header's claimed size is checked against the bytes
    that can back it before any allocation, so a lying header cannot make numpy allocate
    terabytes.
    """
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            return _read_npy(f, path.stat().st_size, path), None, {}
    with zipfile.ZipFile(path) as archive:
        names = {n[:-4]: n for n in archive.namelist() if n.endswith(".npy")}
        if not names:
            raise DataError(f"{path}: the archive holds no .npy arrays")
        key = next((k for k in ARRAY_KEYS if k in names), None)
        if key is None:
            others = [k for k in names if k not in LABEL_KEYS + CLASS_KEYS]
            key = others[0] if len(others) == 1 else next(iter(names)) if len(names) == 1 else None
        if key is None:
            raise DataError(f"{path} holds arrays {sorted(names)}; name the images array 'images' "
                            f"(or 'x', 'arr_0'), or save only that array (and its labels as 'y')")
        images = _read_member(archive, names[key], path)
        extras = {}
        for what, keys in (("labels", LABEL_KEYS), ("classes", CLASS_KEYS)):
            present = [k for k in keys if k in names and k != key]
            arrays = [_read_member(archive, names[k], f"{path} (array '{k}')") for k in present]
            if len(arrays) > 1 and not all(np.array_equal(arrays[0], other) for other in arrays[1:]):
                both = " and ".join(f"'{k}'" for k in present)
                raise DataError(f"{path} holds {what} under both {both} and they differ; keep only one")
            if arrays:
                extras[what] = (present[0], arrays[0])
        return images, key, extras


def _read_member(archive: zipfile.ZipFile, member: str, where: Path | str) -> np.ndarray:
    info = archive.getinfo(member)
    # Deflate expands at most ~1032:1, so the member's real size is bounded by its compressed size.
    backing = min(info.file_size, info.compress_size * 1032 + 1024)
    with archive.open(info) as f:
        return _read_npy(f, backing, where)


def _check_labels(array: np.ndarray, n: int, path: Path, key: str) -> torch.Tensor:
    """(n,) int64 labels from an archive member; DataError naming the file and key unless they
    are one non-negative integer per image."""
    where = f"{path}: labels '{key}'"
    if array.ndim != 1:
        raise DataError(f"{where} must be 1-D (one class index per image), got shape {tuple(array.shape)}")
    if len(array) != n:
        raise DataError(f"{where} hold {len(array)} labels but there are {n} images")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where} must be integers (class indices), found {array[i].item()!r} at index {i}")
    elif array.dtype.kind not in "iu":
        raise DataError(f"{where} must be integers (class indices), got dtype {array.dtype}")
    if array.min() < 0:
        i = int(np.argmin(array))
        raise DataError(f"{where} must be class indices 0..K-1, found {array[i].item()!r} at index {i}")
    if array.max() >= MAX_CLASSES:
        i = int(np.argmax(array))
        raise DataError(f"{where} must be class indices 0..K-1 with K <= {MAX_CLASSES}, found "
                        f"{array[i].item()!r} at index {i}")
    return torch.from_numpy(array.astype(np.int64))


def _check_classes(array: np.ndarray, labels: torch.Tensor, path: Path, key: str) -> tuple[str, ...]:
    """Class names from an archive member: a 1-D string array, a distinct name for every label."""
    where = f"{path}: class names '{key}'"
    if array.ndim != 1 or array.dtype.kind not in "US":
        raise DataError(f"{where} must be a 1-D string array, got shape {tuple(array.shape)} and dtype "
                        f"{array.dtype}")
    names = tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.tolist())
    top = int(labels.max())
    if top >= len(names):
        raise DataError(f"{where} name {len(names)} classes but the labels go up to {top}; give a "
                        f"name for each class 0..{top}")
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise DataError(f"{where} repeat {repeated}; each class needs its own name")
    return names


def _read_npy(f: BinaryIO, backing_bytes: int, path: Path, hint: str = "a uint8 or float array") -> np.ndarray:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise DataError(f"cannot read {path}: .npy format version {version} is not supported (1.0, 2.0 are)")
    if dtype.hasobject:
        raise DataError(f"cannot read {path}: object arrays are not supported (they need pickle); "
                        f"save {hint}")
    count = math.prod(shape)
    claimed = count * dtype.itemsize
    if claimed > backing_bytes:
        raise DataError(f"{path}: the array header claims shape {shape} ({claimed} bytes) but the "
                        f"file holds at most {backing_bytes} bytes: truncated or corrupt")
    data = bytearray(claimed)  # writable, so torch.from_numpy needs no copy
    got = f.readinto(data) if claimed else 0
    if got != claimed:
        raise DataError(f"{path}: truncated array data ({got} of {claimed} bytes)")
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)


# --- channels and size -----------------------------------------------------------------------

def convert(x: torch.Tensor, image_size: int | None, channels: int | None) -> torch.Tensor:
    """Channel count and size for a (N, C, H, W) uint8 or float tensor, keeping its dtype.

    Grey conversion comes before and channel repetition after the resize, so the resize
    works on as few channels as possible.
    """
    if channels == 1 and x.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R 601, as PIL's "L"
        grey = (x.float() * weights).sum(1, keepdim=True)
        x = grey.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else grey
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        x = resize(x, image_size)
    if channels == 3 and x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size): shorter side to size (bilinear, antialiased), centre crop.

    uint8 is rounded back to uint8; float stays float32.
    """
    n, c, h, w = x.shape
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    out = torch.empty((n, c, size, size), dtype=x.dtype)
    per_image = 4 * c * max(h * w, new_h * new_w)  # float32 bytes per image while resizing
    step = max(1, _RESIZE_CHUNK_BYTES // per_image)
    for start in range(0, n, step):
        y = F.interpolate(x[start:start + step].float(), size=(new_h, new_w), mode="bilinear",
                          antialias=True, align_corners=False)
        y = y[..., top:top + size, left:left + size]
        out[start:start + step] = y.round().clamp(0, 255) if x.dtype == torch.uint8 else y.clamp(-1, 1)
    return out
