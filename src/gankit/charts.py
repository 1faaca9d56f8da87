"""The report's charts: matplotlib figures (object API, Agg, no display) written as inline SVG.

Why SVG from matplotlib: matplotlib is already a dependency, a static SVG needs no script to
draw and no network, it stays sharp when zoomed or printed, and the browser test can check
that every chart holds drawn lines. Long series are decimated to at most MAX_POINTS points per
line, so a chart stays a few tens of kB whatever the run's length.

A curve is drawn twice: the raw values faint, an exponential moving average (debiased, as
TensorBoard smooths) on top. Events are vertical lines: warnings orange dotted, rollbacks red,
resumes grey dashed; the best checkpoint a green star on the FID panel.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field

import matplotlib
import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

MAX_POINTS = 1200
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
STYLES = ("-", "--", ":", "-.")
MARKS = {"warning": {"color": "#ff7f0e", "linestyle": ":", "linewidth": 1.0},
         "rollback": {"color": "#d62728", "linestyle": "-", "linewidth": 1.2},
         "resume": {"color": "#555555", "linestyle": "--", "linewidth": 1.0}}


@dataclass
class Series:
    """One line: x (images seen) and y, from one run."""

    label: str
    x: np.ndarray
    y: np.ndarray
    run: int = 0  # which run (colour when several runs are overlaid)


@dataclass
class Chart:
    """One panel of curves against images seen."""

    key: str  # the chart's id in the page
    title: str
    series: list[Series]
    log_y: bool = False
    hlines: list[tuple[float, str]] = field(default_factory=list)  # (y, label)
    marks: dict[str, list[float]] = field(default_factory=dict)  # kind -> images seen
    ylabel: str = ""


def smooth(y: np.ndarray) -> np.ndarray:
    """Debiased exponential moving average over ~1/60 of the series; NaNs are skipped (carried)."""
    n = len(y)
    if n < 3:
        return y.astype(float)
    alpha = 1.0 - math.exp(-1.0 / max(1.0, n / 60))
    out = np.empty(n)
    mean, weight = 0.0, 0.0
    for i, v in enumerate(y):
        if np.isfinite(v):
            mean = (1 - alpha) * mean + alpha * v
            weight = (1 - alpha) * weight + alpha
        out[i] = mean / weight if weight > 0 else np.nan
    return out


def decimate(x: np.ndarray, y: np.ndarray, limit: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= limit:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, limit).round().astype(int))
    return x[keep], y[keep]


def curve_figure(chart: Chart, several_runs: bool, run_names: list[str]) -> Figure:
    """The chart as a figure: one colour per series (one run) or per run (several, one line
    style per series)."""
    fig = Figure(figsize=(6.0, 3.1), layout="constrained")
    ax = fig.subplots()
    labels = list(dict.fromkeys(s.label for s in chart.series))
    for s in chart.series:
        index = labels.index(s.label)
        colour = COLOURS[(s.run if several_runs else index) % len(COLOURS)]
        style = STYLES[index % len(STYLES)] if several_runs else "-"
        y = s.y.astype(float)
        if chart.log_y:
            y = np.where(y > 0, y, np.nan)
        x_raw, y_raw = decimate(s.x, y)
        x_s, y_s = decimate(s.x, smooth(y))
        label = f"{run_names[s.run]}: {s.label}" if several_runs else s.label
        if not several_runs or len(run_names) <= 3:
            ax.plot(x_raw, y_raw, color=colour, alpha=0.25, linewidth=0.7)
        ax.plot(x_s, y_s, color=colour, linestyle=style, linewidth=1.5, label=label,
                gid=f"data{len(ax.lines)}")  # the page's check finds the data lines by this id
    for y, label in chart.hlines:
        ax.axhline(y, color="black", linewidth=0.8, alpha=0.6, linestyle="-.", label=label)
    _marks(ax, chart.marks)
    if chart.log_y:
        ax.set_yscale("log")
        plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))  # ticks even on a narrow range
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_title(chart.title, fontsize=10)
    ax.set_xlabel("images seen", fontsize=8)
    if chart.ylabel:
        ax.set_ylabel(chart.ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    return fig


def _marks(ax, marks: dict[str, list[float]]) -> None:
    for kind, where in marks.items():
        for i, images in enumerate(sorted(set(where))):
            ax.axvline(images, label=f"{kind}" if i == 0 else None, **MARKS[kind])


def eval_figure(panels: list[tuple[str, list[Series]]], best: list[tuple[int, float, float]],
                several_runs: bool, run_names: list[str]) -> Figure:
    """The evaluation metrics, one small panel per group (FID, KID, precision/recall, ...);
    best: (run, images, fid) of each run's best checkpoint, starred on the FID panel."""
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.1 * cols, 2.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for k, (ax, (title, series)) in enumerate(zip(axes, panels, strict=False)):
        labels = list(dict.fromkeys(s.label for s in series))
        for s in series:
            index = labels.index(s.label)
            colour = COLOURS[(s.run if several_runs else index) % len(COLOURS)]
            style = STYLES[index % len(STYLES)] if several_runs else "-"
            label = f"{run_names[s.run]}: {s.label}" if several_runs else s.label
            ax.plot(s.x, s.y, color=colour, linestyle=style, marker="o", markersize=3, linewidth=1.2,
                    label=label, gid=f"data{k}-{len(ax.lines)}")
        if title == "FID":
            for i, (_, images, value) in enumerate(best):
                ax.plot([images], [value], marker="*", markersize=13, color="#2ca02c", linestyle="none",
                        markeredgecolor="black", label="best.pt" if i == 0 else None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("images seen", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
        ax.legend(fontsize=7, loc="best")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return fig


def to_svg(fig: Figure, key: str) -> str:
    """The figure as an <svg> element for inlining in HTML: no XML prolog, text kept as text,
    and every id prefixed with `key` so that the charts of one page cannot clash."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "gankit"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'id="([^"]+)"', rf'id="{key}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{key}-\1)", text)
    return re.sub(r'href="#([^"]+)"', rf'href="#{key}-\1"', text)


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
