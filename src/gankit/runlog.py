"""What a training run writes about itself: config.json once, metrics.jsonl as it goes.

metrics.jsonl has one JSON object a line: an iteration's statistics
({"iteration", "images", "time", d_loss, ...}) or an event ({"event": "warning" | "eval" |
"rollback", "images", ...}). Only rank 0 of a torchrun job writes; the others hold a MetricsLog
of path None, which writes nowhere. On rank 0, MetricsLog.mirror (tblog.TensorBoardLog, with
--tensorboard on) gets the same rows and events, and the snapshot grids.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

import gankit
from gankit import runs
from gankit.config import TrainConfig
from gankit.data import ImageDataset, ToyDataset
from gankit.files import write_json


class MetricsLog:
    """metrics.jsonl, open for appending; truncated (a new file, reopened) on resume and rollback."""

    def __init__(self, path: Path | None):
        self.path = path
        self.file = open(path if path is not None else os.devnull, "a")  # noqa: SIM115 (close())
        # What else gets every row, event and snapshot (tblog.TensorBoardLog), attached once
        # the run folder is ready; it has the same methods, plus image().
        self.mirror: Any = None

    def row(self, iteration: int, images: int, time: float, stats: dict[str, float]) -> None:
        """One iteration's statistics; time: seconds since training started when it was queued."""
        self._write({"iteration": iteration, "images": images, "time": time, **stats})
        if self.mirror is not None:
            self.mirror.row(iteration, images, time, stats)

    def event(self, name: str, images: int, **fields: Any) -> None:
        """A warning, an evaluation or a rollback, at `images` images seen."""
        self._write({"event": name, "images": images, **fields})
        if self.mirror is not None:
            self.mirror.event(name, images, **fields)

    def image(self, images: int, png: Path) -> None:
        """A snapshot grid just written to samples/ (metrics.jsonl does not list them)."""
        if self.mirror is not None:
            self.mirror.image(images, png)

    def truncate(self, images: int) -> None:
        """Drop every line past `images` (written after the checkpoint being returned to)."""
        if self.path is None:
            return
        self.file.close()
        runs.truncate_metrics(self.path.parent, images)
        self.file = open(self.path, "a")  # noqa: SIM115
        if self.mirror is not None:
            self.mirror.truncate(images)

    def flush(self) -> None:
        self.file.flush()
        if self.mirror is not None:
            self.mirror.flush()

    def close(self) -> None:
        self.file.close()
        if self.mirror is not None:
            self.mirror.close()

    def _write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")


def write_config(run_dir: Path, config: TrainConfig, total: int, dataset: ImageDataset | ToyDataset, device: torch.device,
                 processes: int, speed: dict, G: nn.Module, D: nn.Module) -> None:
    """config.json: the config as resolved, the data, the versions, the device and the speed plan."""
    write_json(run_dir / runs.CONFIG, {
        "config": {**config.to_dict(), "max_images_resolved": total},
        "dataset": {"name": dataset.name, "shape": list(dataset.shape),
                    "size": len(dataset) if isinstance(dataset, ImageDataset) else None,
                    "source": getattr(dataset, "source", dataset.name)},
        "gankit_version": gankit.__version__,
        "torch_version": torch.__version__,
        "device": str(device),
        "processes": processes,
        "speed": speed,
        "params": {"G": sum(p.numel() for p in G.parameters()),
                   "D": sum(p.numel() for p in D.parameters())},
    })
