"""Run folders: config.json, metrics.jsonl, samples/, checkpoints/; never overwritten by accident."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from gankit.errors import GankitError
from gankit.files import atomic_write

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SAMPLES = "samples"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"  # the event files (tblog.py), where tensorboard is installed


def prepare_new(run_dir: Path, overwrite: bool = False) -> None:
    """Create an empty run folder; refuse to reuse a non-empty one unless --overwrite."""
    if run_dir.exists() and not run_dir.is_dir():
        raise GankitError(f"--out {run_dir} exists and is not a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not overwrite:
            raise GankitError(
                f"run folder {run_dir} already exists and is not empty; continue it with "
                f"--resume {run_dir}, choose another --out, or pass --overwrite to start it afresh"
            )
        if not (run_dir / CONFIG).is_file():
            raise GankitError(
                f"--overwrite refused: {run_dir} does not look like a gankit run folder (no {CONFIG}); "
                "remove it yourself or choose another --out"
            )
        shutil.rmtree(run_dir)
    try:
        (run_dir / SAMPLES).mkdir(parents=True, exist_ok=True)
        (run_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GankitError(f"cannot create run folder {run_dir}: {exc.strerror or exc}") from None


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete the half-written temp files a killed process left (".last.pt.tmp-PID" and the like).
    Only the complete files they were meant to replace count; those were never touched."""
    stale = [p for folder in (run_dir, run_dir / CHECKPOINTS, run_dir / SAMPLES, run_dir / TENSORBOARD) if folder.is_dir()
             for p in folder.glob(".*.tmp-*")]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def truncate_metrics(run_dir: Path, images: int) -> None:
    """Drop metrics rows past a checkpoint (written after it, before a crash) so a resume does not repeat them."""
    path = run_dir / METRICS
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if row.get("images", 0) <= images:
            kept.append(line)
    with atomic_write(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept))


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
