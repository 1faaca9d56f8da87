"""`gankit animate`: a run's snapshot grids (samples/*.png, G of the same fixed noise every time)
as one looping GIF, each frame labelled with the images seen when it was drawn, so that one can
watch the samples form. The last frame is held for a second before the loop starts again.

The label is a white strip above the grid, drawn with Pillow's default font. The images seen
are read from the file names (samples/000012800.png: 12,800 images), as training writes them.
2-D toy runs have scatter plots as snapshots and animate the same way; 1-D toy runs write none.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gankit import runs
from gankit.errors import GankitError
from gankit.imagegrid import save_gif

LABEL_HEIGHT = 16
SNAPSHOT = re.compile(r"^(\d+)\.png$")


def snapshots(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(images seen, file) of each snapshot grid of a run folder, in training order."""
    run = Path(run_dir)
    if not run.exists():
        raise GankitError(f"no such run folder: {run}")
    if not run.is_dir():
        raise GankitError(f"{run} is not a run folder (animate reads RUN/{runs.SAMPLES}/*.png; "
                          "give the folder, not a checkpoint)")
    folder = run / runs.SAMPLES
    found = sorted((int(m.group(1)), p) for p in folder.glob("*.png") if (m := SNAPSHOT.match(p.name))) \
        if folder.is_dir() else []
    if not found:
        raise GankitError(f"{run} has no snapshot grids in {runs.SAMPLES}/ ({_why_none(run)}); "
                          "nothing to animate")
    return found


def _why_none(run: Path) -> str:
    try:
        shape = json.loads((run / runs.CONFIG).read_text())["dataset"]["shape"]
    except (OSError, ValueError, KeyError, TypeError):
        return "is it a gankit run folder?"
    if len(shape) == 1:
        return f"a {shape[0]}-D toy run draws no snapshot pictures" if shape[0] != 2 else "none written yet"
    return "none written yet: --snapshot-every sets how often training draws one"


def label(picture: Image.Image, text: str) -> Image.Image:
    """The picture below a white strip holding `text` in black (Pillow's default font)."""
    try:
        font = ImageFont.load_default(size=12)  # Pillow >= 10.1: a scalable font, its spaces legible
    except TypeError:
        font = ImageFont.load_default()
    width = max(picture.width, int(ImageDraw.Draw(picture).textlength(text, font=font)) + 6)
    canvas = Image.new(picture.mode, (width, picture.height + LABEL_HEIGHT), "white")
    canvas.paste(picture, (0, LABEL_HEIGHT))
    ImageDraw.Draw(canvas).text((3, 2), text, fill="black", font=font)
    return canvas


def animate(run_dir: str | os.PathLike, out: str | os.PathLike, fps: float = 2.0) -> Path:
    """Write the labelled snapshot grids of a run as a looping GIF; returns out."""
    out = Path(out)
    if out.suffix.lower() != ".gif":
        raise GankitError(f"--out {out}: give a file name ending in .gif")
    if out.is_dir():
        raise GankitError(f"--out {out} is a folder; give a file name ending in .gif")
    if fps <= 0:
        raise GankitError(f"--fps must be positive, got {fps}")
    found = snapshots(run_dir)
    pictures = []
    for _, path in found:
        with Image.open(path) as grid:
            pictures.append(grid.convert("L" if grid.mode in ("L", "1") else "RGB"))
    mode = "RGB" if any(p.mode == "RGB" for p in pictures) else "L"
    frames = [label(p.convert(mode), f"images seen: {images:,}") for (images, _), p in zip(found, pictures, strict=True)]
    width, height = max(f.width for f in frames), max(f.height for f in frames)
    arrays = []
    for f in frames:  # one size for all (a run's grids all have one already)
        canvas = Image.new(mode, (width, height), "white")
        canvas.paste(f, (0, 0))
        array = np.asarray(canvas)
        arrays.append(array[..., None] if array.ndim == 2 else array)
    try:
        save_gif(arrays, out, fps, hold_last_ms=1000)
    except OSError as exc:
        raise GankitError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    return out
