"""`gankit report RUN [RUN ...]`: one self-contained HTML file about one run or several.

What the file holds, for one run: the config in a short table (dataset, model and parameter
counts, device, images/s); the curves of metrics.jsonl against images seen (D and G loss, V
with the -log 4 line, D(x) and D(G(z)) before and after the G step with the 1/2 line, both
gradient norms, images/s), smoothed with the raw values faint, and warnings, rollbacks and
resumes marked; the evaluations over time with the best checkpoint marked and their protocol
stated; every snapshot grid on a timeline the reader steps through; for 1-D toy runs p_data,
p_G, D and D* of the last checkpoint, drawn as `gankit theory game` draws them. For several
runs: the curves overlaid, one colour per run, and the final grids side by side.

Libraries, chosen deliberately: the charts are static SVG from matplotlib (gankit.charts),
already a dependency; the snapshot grids are the run's own PNGs as data: URIs; the timeline
stepper is some 40 lines of plain inline JavaScript. No charting framework, nothing fetched:
the page carries a Content-Security-Policy that forbids any network request, so it opens from
disk, mails as one file, and a reference that slipped in would fail loudly in the browser test.
The same script checks the page as it loads (no script errors, every image decoded, every
chart drawn with data, the timeline steps) and writes the result into #selfcheck, which the
browser test reads from the DOM chromium dumps.

Reading a run is safe while it trains or after it was killed mid-write: only complete lines of
metrics.jsonl are read (a last line without its newline is left for next time), and lines
that do not parse are counted and skipped. A resume shows as the rows' clock (`time`) going
backwards. A folder that is not a run, or a run with no rows yet, is a GankitError; the HTML
is built in memory and written atomically, so a failure never replaces a good report.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import gankit
from gankit import charts, reportpage, runs
from gankit.charts import Chart, Series
from gankit.config import default_lr
from gankit.errors import GankitError
from gankit.files import atomic_write

REPORT = "report.html"
SPEED_WINDOW = 10  # rows over which images/s is measured
MAX_FRAMES = 80  # snapshot grids on the timeline; longer runs show this many, evenly spread
LOG4 = -math.log(4)
EVAL_GROUPS = (("FID", ("fid",)), ("KID", ("kid_mean",)), ("precision / recall", ("precision", "recall")),
               ("density / coverage", ("density", "coverage")))
EVAL_SKIP = {"event", "images", "time", "seconds", "n_samples", "protocol", "kid_std"}


@dataclass
class RunData:
    """What a report reads of one run folder."""

    path: Path
    name: str
    config: dict[str, Any]  # config.json
    rows: list[dict[str, Any]]  # iteration rows, in file order
    events: list[dict[str, Any]]  # warning / eval / rollback / ... rows
    samples: list[tuple[int, Path]]  # (images seen, PNG), in order
    skipped: int = 0  # lines that did not parse
    partial_last_line: bool = False  # a line still being written (or cut by a kill)
    resumes: list[int] = field(default_factory=list)  # images seen where the clock restarted
    seconds: np.ndarray = field(default_factory=lambda: np.empty(0))  # training seconds since the previous row
    speed: np.ndarray = field(default_factory=lambda: np.empty(0))  # images/s at each row

    def column(self, name: str) -> np.ndarray:
        return np.array([_number(r.get(name)) for r in self.rows], dtype=float)

    @property
    def images(self) -> np.ndarray:
        return np.array([r["images"] for r in self.rows], dtype=float)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == kind]


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


# --- reading a run -----------------------------------------------------------------------------

def load_run(path: str | os.PathLike) -> RunData:
    """Read a run folder; a GankitError says what is missing and what to do."""
    path = Path(path)
    if not path.exists():
        raise GankitError(f"report: {path}: no such folder")
    if not path.is_dir():
        raise GankitError(f"report: {path} is not a folder; give a run folder (the --out of gankit train)")
    if not any(path.iterdir()):
        raise GankitError(f"report: {path} is empty: not a gankit run folder (no {runs.CONFIG}, {runs.METRICS})")
    config_path = path / runs.CONFIG
    if not config_path.is_file():
        raise GankitError(f"report: {path} has no {runs.CONFIG}: not a gankit run folder, or one whose "
                          "training has not started yet")
    try:
        config = json.loads(config_path.read_text())
        if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
            raise ValueError("not a gankit config")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GankitError(f"report: cannot read {config_path}: {exc}") from None
    rows, events, skipped, partial = _read_lines(path / runs.METRICS)
    if not rows:
        raise GankitError(f"report: {path} has no metrics yet ({runs.METRICS} holds no complete iteration "
                          "row); try again once the run has logged its first iterations")
    if not (path / runs.SAMPLES).is_dir():
        raise GankitError(f"report: {path} has no {runs.SAMPLES}/ folder: not a complete gankit run folder "
                          "(gankit train creates it with the first snapshot)")
    run = RunData(path, path.resolve().name, config, rows, events, _samples(path / runs.SAMPLES),
                  skipped, partial)
    run.resumes, run.seconds, run.speed = _clock(run)
    return run


def _read_lines(path: Path) -> tuple[list[dict], list[dict], int, bool]:
    """(iteration rows, events, lines skipped, whether the last line is incomplete)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], [], 0, False
    except OSError as exc:
        raise GankitError(f"report: cannot read {path}: {exc.strerror or exc}") from None
    lines = data.split(b"\n")
    partial = lines[-1].strip() != b""  # no newline yet: still being written, or cut by a kill
    rows, events, skipped = [], [], 0
    for line in lines[:-1]:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            skipped += 1
            continue
        if not isinstance(record, dict) or not isinstance(record.get("images"), (int, float)):
            skipped += 1
        elif "event" in record:
            events.append(record)
        elif "iteration" in record:
            rows.append(record)
        else:
            skipped += 1
    return rows, events, skipped, partial


def _samples(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for png in folder.glob("*.png"):
        if png.stem.isdigit():
            found.append((int(png.stem), png))
    return sorted(found)


def _clock(run: RunData) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Resumes (the clock going backwards); the training seconds since the previous row of the
    same process, less the evaluations that ran in between (NaN where the clock restarted); and
    images/s at each row over the last SPEED_WINDOW rows (the clock has millisecond steps)."""
    eval_seconds: dict[int, float] = {}
    for e in run.of("eval"):
        seconds = _number(e.get("seconds"))
        eval_seconds[int(e["images"])] = eval_seconds.get(int(e["images"]), 0.0) + (0.0 if math.isnan(seconds) else seconds)
    resumes, seconds = [], np.full(len(run.rows), np.nan)
    for i in range(1, len(run.rows)):
        before, now = run.rows[i - 1], run.rows[i]
        dt = _number(now.get("time")) - _number(before.get("time"))
        if dt < 0:
            resumes.append(int(before["images"]))
            continue
        seconds[i] = max(0.0, dt - sum(s for images, s in eval_seconds.items()
                                       if before["images"] <= images < now["images"]))
    steps = np.diff(run.images, prepend=np.nan)
    speed = np.full(len(run.rows), np.nan)
    start = 1
    for i in range(1, len(run.rows)):
        if math.isnan(seconds[i]):
            start = i + 1
            continue
        j = max(start, i - SPEED_WINDOW + 1)
        dt = seconds[j:i + 1].sum()
        if dt > 0:
            speed[i] = steps[j:i + 1].sum() / dt
    return resumes, seconds, speed


def mean_speed(run: RunData) -> float:
    """Images/s over the whole run: images trained over training time (evaluations excluded)."""
    steps = np.diff(run.images, prepend=np.nan)
    ok = np.isfinite(run.seconds) & np.isfinite(steps)
    total = run.seconds[ok].sum()
    return float(steps[ok].sum() / total) if total > 0 else math.nan


# --- the charts --------------------------------------------------------------------------------

CURVES = (
    ("losses", "D and G loss", (("d_loss", "D loss"), ("g_loss", "G loss")), False, ()),
    ("value", "V(D, G), minibatch estimate", (("value", "V"),), False, ((LOG4, "-log 4 (equilibrium)"),)),
    ("d_outputs", "mean D(x) and D(G(z))", (("d_real", "D(x)"), ("d_fake_g_before", "D(G(z)) before G step"),
                                           ("d_fake_g_after", "D(G(z)) after G step")), False, ((0.5, "1/2"),)),
    ("grad_norms", "gradient norms", (("grad_norm_d", "|grad D|"), ("grad_norm_g", "|grad G|")), True, ()),
)


def curve_charts(runs_: list[RunData]) -> list[Chart]:
    out = []
    for key, title, columns, log_y, hlines in CURVES:
        series = [Series(label, run.images, run.column(name), i)
                  for i, run in enumerate(runs_) for name, label in columns]
        out.append(Chart(key, title, series, log_y=log_y, hlines=list(hlines), marks=_marks(runs_)))
    speed = [Series("images/s", run.images, run.speed, i) for i, run in enumerate(runs_)]
    out.append(Chart("speed", "training speed (evaluations excluded)", speed, marks=_marks(runs_),
                     ylabel="images/s"))
    return out


def _marks(runs_: list[RunData]) -> dict[str, list[float]]:
    marks: dict[str, list[float]] = {"warning": [], "rollback": [], "resume": []}
    for run in runs_:
        marks["warning"] += [e["images"] for e in run.of("warning")]
        marks["rollback"] += [e["images"] for e in run.of("rollback")]
        marks["resume"] += run.resumes
    return {k: v for k, v in marks.items() if v}


def eval_panels(runs_: list[RunData]) -> list[tuple[str, list[Series]]]:
    """(title, series) per group of evaluation metrics, in the order of EVAL_GROUPS, then any
    other numbers the eval rows hold (the toy metrics)."""
    evals = [(i, run.of("eval")) for i, run in enumerate(runs_)]
    names = list(dict.fromkeys(k for _, rows in evals for e in rows for k, v in e.items()
                               if k not in EVAL_SKIP and isinstance(_number(v), float) and not math.isnan(_number(v))))
    groups = [(title, [n for n in keys if n in names]) for title, keys in EVAL_GROUPS]
    grouped = {n for _, keys in groups for n in keys}
    groups += [(n, [n]) for n in names if n not in grouped]
    panels = []
    for title, keys in groups:
        series = []
        for i, rows in evals:
            for key in keys:
                points = [(e["images"], _number(e.get(key))) for e in rows if math.isfinite(_number(e.get(key)))]
                if points:
                    x, y = zip(*points, strict=True)
                    series.append(Series(key, np.array(x, dtype=float), np.array(y), i))
        if series:
            panels.append((title, series))
    return panels


def best_checkpoints(runs_: list[RunData]) -> list[tuple[int, float, float]]:
    """(run, images, fid) of the evaluation each run's checkpoints/best.pt holds: the first lowest FID."""
    best = []
    for i, run in enumerate(runs_):
        scored = [e for e in run.of("eval") if not math.isnan(_number(e.get("fid")))]
        if scored:
            top = min(scored, key=lambda e: e["fid"])
            best.append((i, top["images"], top["fid"]))
    return best


# --- the tables --------------------------------------------------------------------------------

def config_table(runs_: list[RunData]) -> list[tuple[str, list[str]]]:
    """(field, one value per run) for the config table."""
    return [
        ("dataset", [_dataset_text(r.config) for r in runs_]),
        ("model", [_model_text(r.config) for r in runs_]),
        ("parameters", [_params_text(r.config) for r in runs_]),
        ("training", [_algorithm_text(r.config) for r in runs_]),
        ("device", [_device_text(r.config) for r in runs_]),
        ("images/s", [_speed_text(r) for r in runs_]),
        ("images seen", [_progress_text(r) for r in runs_]),
        ("events", [_events_text(r) for r in runs_]),
        ("versions", [f"gankit {r.config.get('gankit_version', '?')}, torch {r.config.get('torch_version', '?')}"
                      for r in runs_]),
    ]


def _model_text(c: dict) -> str:
    cfg = c["config"]
    return (f"{cfg.get('model')} (G width {cfg.get('g_width') or 'default'}, D width "
            f"{cfg.get('d_width') or 'default'}, latent {cfg.get('latent_dim')})"
            + (", conditional: one-hot class joined to z, projection D" if cfg.get("conditional") else ""))


def _params_text(c: dict) -> str:
    p = c.get("params") or {}
    return f"G {p.get('G', 0):,}, D {p.get('D', 0):,}" if p else "?"


def _dataset_text(c: dict) -> str:
    d = c.get("dataset") or {}
    size = f", {d['size']:,} images" if d.get("size") else ""
    return f"{d.get('name', c['config'].get('data'))} {tuple(d.get('shape', ()))}{size}"


def _device_text(c: dict) -> str:
    n = c.get("processes", 1) or 1
    speed = c.get("speed") or {}
    return f"{c.get('device', '?')}{f' x {n} processes' if n > 1 else ''}, {speed.get('precision', '?')}"


def _algorithm_text(c: dict) -> str:
    cfg = c["config"]
    lr_g = cfg.get("lr_g") or default_lr(cfg.get("optimizer"))
    lr_d = cfg.get("lr_d") or default_lr(cfg.get("optimizer"))
    pack = cfg.get("pack") or 1  # absent in runs older than --pack
    return (f"k={cfg.get('k')}, batch {cfg.get('batch_size')}, {cfg.get('g_loss')} G loss, "
            f"{cfg.get('optimizer')} lr G {lr_g:g} / D {lr_d:g}, seed {cfg.get('seed')}"
            + (f", D on packs of {pack} (PacGAN)" if pack > 1 else ""))


def _progress_text(run: RunData) -> str:
    total = run.config["config"].get("max_images_resolved")
    done = int(run.rows[-1]["images"])
    state = "finished" if total and done >= total else "in progress or stopped"
    return f"{done:,} of {total:,} ({state})" if total else f"{done:,}"


def _speed_text(run: RunData) -> str:
    v, ok = mean_speed(run), run.speed[np.isfinite(run.speed)]
    if math.isnan(v):
        return "?"
    return f"{v:,.0f} over the whole run (median of the rows {np.median(ok):,.0f}), evaluations excluded"


def _events_text(run: RunData) -> str:
    parts = [f"{len(run.of(kind))} {kind}{'s' if len(run.of(kind)) != 1 else ''}"
             for kind in ("warning", "rollback", "eval")]
    parts.append(f"{len(run.resumes)} resume{'s' if len(run.resumes) != 1 else ''}")
    return ", ".join(parts)


def protocol_text(run: RunData) -> str:
    """The protocol of a run's evaluations, as its eval rows state it."""
    evals = run.of("eval")
    if not evals:
        return ""
    p = evals[-1].get("protocol") or {}
    if not p:
        return "The eval rows do not state their protocol (written by an older gankit)."
    if str(run.config["config"].get("data", "")).startswith("toy:"):
        return f"{p.get('n_samples')} samples, seed {p.get('seed')}: the toy metrics (modes, high-quality share, reverse KL; JSD for 1-D)."
    parts = [f"features: {p.get('features')}"]
    extractor = p.get("extractor") or {}
    if extractor.get("weights_sha256"):
        parts.append(f"weights sha256 {extractor['weights_sha256'][:16]}...")
    elif p.get("features") == "classifier":
        parts.append("gankit's own Fashion-MNIST/MNIST classifier (not comparable with Inception FIDs)")
    parts.append(f"{p.get('n_samples')} generated samples against the {p.get('split')} split, seed {p.get('seed')}")
    parts.append(f"KID: {p.get('kid_subsets')} subsets of {p.get('kid_subset_size')}; precision/recall k=3, "
                 "density/coverage k=5")
    return "; ".join(parts) + "."


# --- 1-D toy runs ------------------------------------------------------------------------------

def oned_panel(run: RunData) -> tuple[str, str]:
    """(SVG or '', note) for a 1-D toy run: p_data, p_G (a histogram of 20,000 samples of the
    last checkpoint's G), D and D* = p_data / (p_data + p_G) on a grid."""
    import torch

    from gankit import checkpoint
    from gankit.data import load_dataset
    from gankit.errors import GankitError as _Error
    from gankit.models import build_models
    from gankit.sample import generate
    from gankit.theory import oned, plots

    path = run.path / runs.CHECKPOINTS / checkpoint.LAST
    if not path.is_file():
        return "", "p_G and D are drawn from checkpoints/last.pt, which this run does not have yet."
    try:
        record = checkpoint.load(path)
        config = checkpoint.config_of(record, path)
        G, D = build_models(config, tuple(record["data_shape"]))
        checkpoint.load_state(G, record["G"], "the generator", path)
        checkpoint.load_state(D, record["D"], "the discriminator", path)
    except _Error as exc:
        return "", f"p_G and D not drawn: {exc}"
    if config.pack > 1:  # a packed D judges M points at once: it has no value at one point x
        return "", f"D is not drawn: it judges packs of {config.pack} points (--pack), not one x."
    G.eval()
    D.eval()
    toy = load_dataset(config.data).distribution
    x = oned.grid_covering(toy, n=801, widths=6.0)
    with torch.no_grad():
        samples = generate(G, 20_000, 0, config.latent_dim).flatten()
        lo, hi = min(float(x[0]), float(samples.min())), max(float(x[-1]), float(samples.max()))
        x = torch.linspace(lo, hi, 801, dtype=torch.float64)
        d = torch.sigmoid(oned.d_on_grid(D, x))
    p = oned.density(toy, x)
    q = oned.histogram_density(samples, x, bin_width=max((hi - lo) / 120, 1e-3))
    fig, axes = plots.figure(1, 1, width=6.0, height=3.1)
    images = record["progress"]["images_seen"]
    plots.density_panel(axes[0], x, p, q, d, oned.optimal_discriminator(p, q),
                        f"{config.data}: at {images:,} images (checkpoints/last.pt)")
    top = float(p.max())  # a collapsed G's spike of p_G is clipped at 3x the data's peak
    axes[0].set_ylim(0, max(1.3 * top, min(float(q.max()) * 1.05, 3 * top)))
    for k, ax in enumerate(fig.axes):  # the page's check finds the data lines by their ids
        for n, line in enumerate(ax.get_lines()):
            line.set_gid(f"data{k}-{n}")
    note = ("p_data exact (black dotted); p_G a histogram of 20,000 samples of G (green); D blue "
            "dashed and D* = p_data / (p_data + p_G) red, on the right axis.")
    return charts.to_svg(fig, "oned"), note


# --- the page ----------------------------------------------------------------------------------

def _frames(run: RunData) -> tuple[list[tuple[str, str]], str]:
    """The snapshot grids for the timeline (at most MAX_FRAMES, evenly spread, first and last
    kept) as (caption, data URI), and a note on what is shown."""
    from PIL import Image

    samples = run.samples
    if len(samples) > MAX_FRAMES:
        keep = sorted(set(np.linspace(0, len(samples) - 1, MAX_FRAMES).round().astype(int)))
        samples = [samples[i] for i in keep]
    frames, broken = [], []
    for images, png in samples:
        try:
            with Image.open(png) as im:
                im.verify()
            frames.append((f"{images:,} images", reportpage.data_uri(png)))
        except (OSError, SyntaxError, ValueError):
            broken.append(png.name)
    note = f"Showing {len(frames)} of {len(run.samples)} grids, evenly spread. " if len(run.samples) > MAX_FRAMES else ""
    if broken:
        note += f"Left out, unreadable: {', '.join(broken)}. "
    if run.config.get("dataset", {}).get("shape", [0])[:1] == [2]:
        note += "Each grid: 512 samples of G (red) over the data (grey), from the same noise every time."
    elif len(run.config.get("dataset", {}).get("shape", [])) == 3:
        note += "Each grid: G on the same fixed noise, so the same cell is the same z throughout."
    return frames, note.strip()


def _notes(runs_: list[RunData]) -> str:
    lines = []
    for run in runs_:
        if run.partial_last_line:
            lines.append(f"{run.name}: the last line of {runs.METRICS} is incomplete (being written, or cut "
                         "by a kill) and was left out.")
        if run.skipped:
            lines.append(f"{run.name}: {run.skipped} line{'s' if run.skipped != 1 else ''} of {runs.METRICS} "
                         "could not be read and were skipped.")
        for w in run.of("warning")[:20]:
            lines.append(f"{run.name}: warning at {w['images']:,} images: {w.get('message', w.get('kind'))}")
        for r in run.of("rollback"):
            lines.append(f"{run.name}: rollback to {r['images']:,} images ({r.get('diverged_at', 'NaN/Inf')}); "
                         f"learning rates now G {r.get('lr_g')}, D {r.get('lr_d')}")
        for images in run.resumes:
            lines.append(f"{run.name}: resumed from the checkpoint at {images:,} images")
    if not lines:
        return ""
    return "<h2>Events</h2><ul class=\"warnings\">" + "".join(f"<li>{reportpage.e(x)}</li>" for x in lines) + "</ul>"


def build(runs_: list[RunData]) -> str:
    """The report's HTML for one run or several."""
    several = len(runs_) > 1
    names = [r.name for r in runs_]
    sections = ["<h2>Run</h2>" + reportpage.table(names if several else None, config_table(runs_))]
    legend = ("Smoothed (exponential moving average); raw values faint. Vertical lines: warnings "
              "(orange dotted), rollbacks (red), resumes (grey dashed).")
    figures = [reportpage.chart(c.key, charts.to_svg(charts.curve_figure(c, several, names), c.key))
               for c in curve_charts(runs_)]
    sections.append(f"<h2>Training curves</h2><p class=\"note\">{legend} Against images seen (real images "
                    "shown to D).</p><div class=\"charts\">" + "".join(figures) + "</div>")
    panels = eval_panels(runs_)
    if panels:
        svg = charts.to_svg(charts.eval_figure(panels, best_checkpoints(runs_), several, names), "eval")
        protocol = " ".join(f"{r.name + ': ' if several else ''}{protocol_text(r)}" for r in runs_ if r.of("eval"))
        best = "; ".join(f"{names[i] + ': ' if several else ''}checkpoints/best.pt at {images:,} images, FID {fid:.4g}"
                         for i, images, fid in best_checkpoints(runs_))
        sections.append("<h2>Evaluations</h2>" + reportpage.chart("eval", svg) +
                        f"<p class=\"note\">{reportpage.e(best + ('. ' if best else '') + 'Protocol: ' + protocol)}</p>")
    if several:
        items = [(f"{r.name}: {r.samples[-1][0]:,} images", reportpage.data_uri(r.samples[-1][1]))
                 for r in runs_ if r.samples]
        sections.append("<h2>Final grids</h2>" + (reportpage.finals(items) if items else
                                                  "<p class=\"note\">No snapshot grids.</p>"))
    else:
        sections.append(_single_run_samples(runs_[0]))
    sections.append(_notes(runs_))
    title = f"gankit report: {', '.join(names)}"
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = reportpage.e(f"{'; '.join(str(r.path) for r in runs_)} · written {when} by gankit {gankit.__version__}")
    return reportpage.page(title, subtitle, sections)


def _single_run_samples(run: RunData) -> str:
    shape = run.config.get("dataset", {}).get("shape", [])
    if shape == [1]:
        svg, note = oned_panel(run)
        body = (reportpage.chart("oned", svg) if svg else "") + f"<p class=\"note\">{reportpage.e(note)}</p>"
        return "<h2>Densities</h2>" + body
    frames, note = _frames(run)
    return "<h2>Snapshots</h2>" + reportpage.timeline(frames, note)


def write_report(paths: list[str | os.PathLike], out: str | os.PathLike | None = None) -> Path:
    """Read the runs, build the page in memory, write it atomically; returns its path."""
    if not paths:
        raise GankitError("report: give at least one run folder")
    if out is None:
        if len(paths) > 1:
            raise GankitError("report: with several runs, say where the report goes with --out FILE.html")
        out = Path(paths[0]) / REPORT
    out = Path(out)
    if out.is_dir():
        out = out / REPORT
    runs_ = [load_run(p) for p in paths]
    text = build(runs_)
    try:
        with atomic_write(out) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise GankitError(f"report: cannot write {out}: {exc.strerror or exc}") from None
    return out
