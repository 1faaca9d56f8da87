"""Figures for the theory commands, in the paper's colours: data density black dotted, generator
density green, D blue dashed; D* (the optimal discriminator) added in red for reference.

Uses matplotlib's object API on the Agg canvas (no pyplot state, no display needed).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from matplotlib.figure import Figure

from gankit.files import atomic_write

DATA = {"color": "black", "linestyle": ":", "linewidth": 2.0}
GENERATOR = {"color": "green", "linewidth": 1.5}
DISCRIMINATOR = {"color": "blue", "linestyle": "--", "linewidth": 1.5}
OPTIMAL = {"color": "red", "linewidth": 1.0, "alpha": 0.7}


def figure(rows: int, cols: int, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list]:
    fig = Figure(figsize=(cols * width, rows * height), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write the PNG atomically (temp file + rename)."""
    path = Path(path)
    with atomic_write(path, suffix=".png") as tmp:  # savefig picks the format by the suffix
        fig.savefig(tmp, dpi=110)
    return path


def density_panel(ax, x: torch.Tensor, p: torch.Tensor, q: torch.Tensor, d: torch.Tensor | None,
                  d_star: torch.Tensor | None, title: str,
                  reference: tuple[torch.Tensor, str] | None = None) -> None:
    """Densities (left axis) and D, D* in [0, 1] (right axis) over the grid x; `reference`, a
    further curve in [0, 1] and its label, is drawn in grey."""
    xs = x.numpy()
    ax.plot(xs, p.numpy(), label="p_data", **DATA)
    ax.plot(xs, q.numpy(), label="p_G", **GENERATOR)
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    right = ax.twinx()
    right.set_ylim(-0.02, 1.02)
    if d_star is not None:
        right.plot(xs, d_star.numpy(), label="D*", **OPTIMAL)
    if d is not None:
        right.plot(xs, d.numpy(), label="D", **DISCRIMINATOR)
    if reference is not None:
        right.plot(xs, reference[0].numpy(), label=reference[1], color="grey", linestyle="-.", linewidth=1.0)
    right.axhline(0.5, color="grey", linewidth=0.5)
    right.set_ylabel("D(x)")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=7, loc="upper left")
