"""Checkpoints: self-describing, strict, written atomically, loaded without executing code.

A checkpoint is a dict of tensors and plain values written with torch.save and read back with
torch.load(weights_only=True), which refuses to unpickle anything but tensors and containers of
primitives. It holds the config, both networks, both optimisers, progress counters and every
RNG state the training loop draws from, so a resumed run continues exactly.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

import gankit
from gankit.config import TrainConfig
from gankit.errors import CheckpointError
from gankit.files import atomic_write

FORMAT = "gankit.checkpoint"
FORMAT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"  # lowest FID seen by --eval-every
REQUIRED_KEYS = ("format", "format_version", "gankit_version", "config", "data_shape", "G", "D",
                 "opt_G", "opt_D", "progress", "rng")


def save(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write a training checkpoint (payload plus the format header) atomically."""
    save_plain(path, {"format": FORMAT, "format_version": FORMAT_VERSION,
                      "gankit_version": gankit.__version__, **payload})


def save_plain(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write a dict of tensors and plain values atomically: temp file, fsync, rename.
    The old file stays complete until the rename."""
    path = Path(path)
    try:
        with atomic_write(path, fsync=True) as tmp, open(tmp, "wb") as f:
            torch.save(record, f)
    except OSError as exc:
        raise CheckpointError(
            f"could not write checkpoint {path}: {exc.strerror or exc}; "
            "earlier checkpoints are untouched (free disk space or choose another --out)"
        ) from None


def load_plain(path: str | os.PathLike) -> dict[str, Any]:
    """Read a dict written by save_plain; never unpickles code. CheckpointError on any failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            KeyError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable gankit checkpoint (truncated, corrupt, or not a checkpoint): {first_line}"
        ) from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{path} is not a gankit checkpoint (not a dictionary)")
    return record


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a training checkpoint; every failure is a CheckpointError naming the file."""
    path = Path(path)
    record = load_plain(path)
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gankit checkpoint (no '{FORMAT}' header)")
    version = record.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}, newer than this gankit "
            f"({gankit.__version__}) reads (up to {FORMAT_VERSION}); upgrade gankit"
        )
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise CheckpointError(f"{path} is missing checkpoint entries {missing}")
    return record


def config_of(record: dict[str, Any], path: str | os.PathLike) -> TrainConfig:
    """The TrainConfig stored in a checkpoint."""
    try:
        values = json.loads(record["config"])
    except (TypeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: the stored config is not valid JSON") from None
    if isinstance(values, dict) and "memory_format" not in values:
        # Written before --memory-format, when the DCGAN pair trained in channels_last on every device:
        # it resumes in the layout it trained with (memformat.py).
        values["memory_format"] = "channels_last" if values.get("model", "dcgan") == "dcgan" else "contiguous"
    return TrainConfig.from_dict(values, source=f"{path} (stored config)")


def load_state(module: torch.nn.Module | torch.optim.Optimizer, state: dict, what: str,
               path: str | os.PathLike) -> None:
    """load_state_dict, strict, with a readable error on missing keys or wrong shapes."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        detail = " ".join(str(exc).split())[:400]
        raise CheckpointError(f"{path}: {what} does not match this model config: {detail}") from None


def resolve(path_or_run: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder's checkpoints/last.pt."""
    path = Path(path_or_run)
    if path.is_dir():
        candidate = path / "checkpoints" / LAST
        if not candidate.is_file():
            raise CheckpointError(f"{path} is a folder but has no checkpoints/{LAST}; is it a gankit run folder?")
        return candidate
    if not path.exists():
        raise CheckpointError(f"no such checkpoint or run folder: {path}")
    return path

