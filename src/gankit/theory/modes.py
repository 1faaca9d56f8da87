"""`gankit bench modes`: the 2-D mode-collapse benchmark of VEEGAN and PacGAN.

The vanilla GAN (gankit's own trainer, MLP pair) on the ring of 8 and the grid of 25 Gaussians,
over several seeds, for k = 1 and a larger k and both generator losses, and optionally with the
other levers on the same budget: packing (D judges M samples at once, `--packs`) and an EMA
generator (`--g-ema`, its half-life in images; the EMA G is the one scored); each run is scored on
2,500 samples (modes captured, % high-quality samples, reverse KL of the mode histogram, see
gankit.metrics.toy) and the table prints mean +- std over seeds in PacGAN's Table 1 layout (PacGAN's
own +- is a standard error over 10 trials; `--protocol pacgan`, theory/pacgan.py, prints that).

PacGAN trained far longer (400 epochs of 100,000 points, about 400,000 generator steps) with a
4 x 400 batch-norm generator and a maxout discriminator; the defaults here are sized to run on a
CPU in minutes, so the comparison is with that difference stated, not hidden.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import TextIO

import torch

from gankit.config import TrainConfig
from gankit.data.toy import TOY_DISTRIBUTIONS
from gankit.errors import ConfigError
from gankit.files import write_json
from gankit.losses import G_LOSSES
from gankit.metrics.toy import mode_metrics
from gankit.sample import generate, load_generator
from gankit.theory import plots, say

DATASETS = ("ring8", "grid25")
SAMPLES = 2500  # scored samples per run (VEEGAN, PacGAN)
# Published vanilla-GAN rows (PacGAN, Lin et al. 2018, Table 1): modes captured, mean +- standard error.
# Only the figures quoted in our issue tracker are reproduced here; the paper's table also has
# high-quality % and reverse KL columns.
PUBLISHED = {"ring8": {"modes": (6.3, 0.5)}, "grid25": {"modes": (17.3, 0.8)}}
# The toy setup shared with `gankit theory saturation`: 2-D noise as in PacGAN, small MLPs and a
# learning rate high enough to find the modes in a few thousand steps.
TOY_SETUP = {"model": "mlp", "g_width": 128, "d_width": 128, "latent_dim": 2, "batch_size": 100,
             "lr_g": 1e-3, "lr_d": 1e-3, "beta1": 0.5}


def toy_config(data: str, seed: int, k: int, g_loss: str, iterations: int, pack: int = 1,
               g_ema: float = 0.0) -> TrainConfig:
    """The run config for `iterations` generator steps (k * batch real images each); D judges
    packs of `pack` samples, and `g_ema` > 0 keeps an EMA of G with that half-life in images."""
    batch = TOY_SETUP["batch_size"]
    return TrainConfig(data=f"toy:{data}", seed=seed, k=k, g_loss=g_loss, pack=pack, g_ema=g_ema,
                       max_images=iterations * k * batch, snapshot_every=iterations * k * batch,
                       checkpoint_every=iterations * k * batch, device="cpu", **TOY_SETUP)


def run(out: str | Path, seed: int = 0, seeds: int = 5, ks: tuple[int, ...] = (1, 5),
        g_losses: tuple[str, ...] = G_LOSSES, datasets: tuple[str, ...] = DATASETS,
        iterations: int = 2000, jobs: int | None = None, log: TextIO | None = None,
        packs: tuple[int, ...] = (1,), g_emas: tuple[float, ...] = (0.0,)) -> dict:
    """Train every (dataset, k, loss, pack, EMA half-life, seed) run under out/runs; write
    modes.png and results.json."""
    check_levers(seeds, ks, g_losses, datasets, iterations, packs, g_emas)
    # a value given twice would send two runs to one folder: once each, in the order given
    ks, g_losses, datasets, packs, g_emas = (tuple(dict.fromkeys(v)) for v in (ks, g_losses, datasets, packs, g_emas))
    jobs = jobs or min(2, os.cpu_count() or 1)
    out = Path(out)
    configs = list(itertools.product(datasets, ks, g_losses, packs, g_emas))
    tasks = [{"data": data, "k": k, "g_loss": loss, "pack": pack, "g_ema": g_ema, "seed": seed + s,
              "iterations": iterations, "run_dir": str(out / "runs" / run_name(data, k, loss, pack, g_ema, seed + s))}
             for data, k, loss, pack, g_ema in configs for s in range(seeds)]
    levers = "" if (packs, g_emas) == ((1,), (0.0,)) else f"; M in {list(packs)}; EMA half-life in {list(g_emas)}"
    say(log, f"gankit bench modes: {len(tasks)} runs ({', '.join(datasets)}; k in {list(ks)}; "
              f"{', '.join(g_losses)}{levers}; {seeds} seeds; {iterations} G steps each) on {jobs} processes")
    started = time.perf_counter()
    if jobs == 1:
        results = [train_and_score(**t) for t in tasks]
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_train_task, tasks))
    record = {
        "command": "bench modes", "seed": seed, "seeds": seeds, "iterations": iterations,
        "packs": list(packs), "g_emas": list(g_emas),
        "samples_scored": SAMPLES, "setup": TOY_SETUP, "rows": [_row(c, results) for c in configs],
        "published": PUBLISHED,
        "published_source": "PacGAN (Lin et al. 2018), Table 1, vanilla GAN: 400 epochs, 4x400 BN generator, maxout D",
        "mode_captured": "at least one high-quality sample (within 3 std) nearest to the mode",
        "seconds": round(time.perf_counter() - started, 1),
    }
    _figure(out / "modes.png", results, configs)
    write_json(out / "results.json", record)
    say(log, table(record))
    say(log, f"wrote {out / 'modes.png'} and {out / 'results.json'} ({record['seconds']:.0f} s)")
    return record


def check_levers(seeds: int, ks, g_losses, datasets, iterations: int, packs, g_emas) -> None:
    """A ConfigError naming the flag for any value `run` cannot use."""
    for name, values, allowed in (("--datasets", datasets, DATASETS), ("--g-loss", g_losses, G_LOSSES)):
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise ConfigError(f"{name}: {bad or 'nothing given'}; choose from {', '.join(allowed)}")
    for name, values in (("--k", ks), ("--packs", packs)):
        if not values or any(not isinstance(v, int) or v <= 0 for v in values):
            raise ConfigError(f"{name} must list positive integers, got {list(values)}")
    batch = TOY_SETUP["batch_size"]
    bad = [m for m in packs if batch % m]
    if bad:
        raise ConfigError(f"--packs {','.join(map(str, bad))}: the batch of {batch} samples must divide by "
                          f"each packing degree M (D judges packs of M); choose divisors of {batch} such as 1,2,4,5")
    if not g_emas or any(not (0 <= h < float("inf")) for h in g_emas):
        raise ConfigError(f"--g-ema must list half-lives in images >= 0 (0: no EMA), got {list(g_emas)}")
    for name, v in (("--seeds", seeds), ("--iterations", iterations)):
        if v <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {v}")


def run_name(data: str, k: int, g_loss: str, pack: int, g_ema: float, seed: int) -> str:
    """The run's folder under out/runs; the levers' defaults (M = 1, no EMA) add nothing."""
    levers = (f"-M{pack}" if pack > 1 else "") + (f"-ema{g_ema:g}" if g_ema else "")
    return f"{data}-k{k}-{short_name(g_loss)}{levers}-seed{seed}"


def _row(config: tuple, results: list[dict]) -> dict:
    """One table row: a configuration's mean +- std over its seeds."""
    data, k, loss, pack, g_ema = config
    runs = [r for r in results if _config_of(r) == config]
    row = {"data": data, "k": k, "g_loss": loss, "pack": pack, "g_ema": g_ema, "seeds": [r["seed"] for r in runs]}
    for metric in ("modes", "high_quality", "reverse_kl"):
        row[metric] = _summary([float(r[metric]) for r in runs])
    return row


def _config_of(result: dict) -> tuple:
    return result["data"], result["k"], result["g_loss"], result["pack"], result["g_ema"]


def table(record: dict) -> str:
    """The results in PacGAN's Table 1 format, published vanilla-GAN rows first."""
    labels = {id(r): f"{r['data']} gankit {row_label(r, record)}" for r in record["rows"]}
    width = max([34, *(len(label) + 2 for label in labels.values())])
    lines = [f"{'':<{width}}{'modes':>14}{'high quality %':>18}{'reverse KL':>16}"]
    for data in PUBLISHED:
        if not any(r["data"] == data for r in record["rows"]):
            continue
        pub = PUBLISHED[data]
        cells = [(f"{pub[m][0]:g} +- {pub[m][1]:g}" if m in pub else "-").rjust(w)
                 for m, w in (("modes", 14), ("high_quality", 18), ("reverse_kl", 16))]
        lines.append(f"{data + ' GAN (PacGAN Table 1)':<{width}}" + "".join(cells))
        for r in (r for r in record["rows"] if r["data"] == data):
            cells = [_pm(r[m]["mean"], r[m]["std"], p).rjust(w)
                     for m, w, p in (("modes", 14, 1), ("high_quality", 18, 1), ("reverse_kl", 16, 2))]
            lines.append(f"{labels[id(r)]:<{width}}" + "".join(cells))
    return "\n".join(lines)


def row_label(row: dict, record: dict) -> str:
    """k and the loss; M when the record compares packing degrees (or packs), `ema` for an EMA
    generator (`ema=H` when the record holds several half-lives)."""
    label = f"k={row['k']} {short_name(row['g_loss'])}"
    packs, halves = record.get("packs", [1]), [h for h in record.get("g_emas", [0.0]) if h]
    pack, g_ema = row.get("pack", 1), row.get("g_ema", 0.0)
    if pack > 1 or len(packs) > 1:
        label += f" M={pack}"
    if g_ema:
        label += " ema" if len(halves) == 1 else f" ema={g_ema:g}"
    return label


def train_and_score(data: str, k: int, g_loss: str, seed: int, iterations: int, run_dir: str,
                    threads: int | None = None, pack: int = 1, g_ema: float = 0.0) -> dict:
    """One training run and its 2,500-sample score, from the EMA generator when `g_ema` > 0
    (else from G as trained); `threads` limits torch in a worker process."""
    from gankit.train import train  # late: keeps the worker's import light until needed

    if threads is not None:
        torch.set_num_threads(threads)  # the pool runs one process per core
    train(toy_config(data, seed, k, g_loss, iterations, pack, g_ema), run_dir, overwrite=True, stream=io.StringIO())
    G, info = load_generator(run_dir, device="cpu", generator="ema" if g_ema else "raw")
    samples = generate(G, SAMPLES, seed, TOY_SETUP["latent_dim"])
    return {"data": data, "k": k, "g_loss": g_loss, "pack": pack, "g_ema": g_ema, "seed": seed, "run_dir": run_dir,
            "generator": info["generator"], **mode_metrics(samples, TOY_DISTRIBUTIONS[data]),
            "_samples": samples.numpy()}


def _train_task(task: dict) -> dict:
    """train_and_score in a worker process, one torch thread (the pool runs one process per core)."""
    return train_and_score(**task, threads=1)


FIGURE_COLUMNS = 8  # at most this many panels a row; a dataset with more configurations wraps


def _figure(path: Path, results: list[dict], configs: list[tuple]) -> None:
    """One scatter per configuration, the first seed's samples over the modes; each dataset
    starts a new row of panels."""
    datasets = list(dict.fromkeys(c[0] for c in configs))
    per_data = len(configs) // len(datasets)
    cols = min(per_data, FIGURE_COLUMNS)
    rows_each = math.ceil(per_data / cols)
    fig, axes = plots.figure(len(datasets) * rows_each, cols, width=3.0, height=3.0)
    for i, config in enumerate(configs):  # dataset d's j-th panel: axes[d * rows_each * cols + j]
        d, j = divmod(i, per_data)
        _scatter(axes[d * rows_each * cols + j], next(r for r in results if _config_of(r) == config))
    for d in range(len(datasets)):
        for ax in axes[d * rows_each * cols + per_data:(d + 1) * rows_each * cols]:
            ax.set_axis_off()
    plots.save(fig, path)
    for r in results:
        r.pop("_samples")


def _scatter(ax, r: dict) -> None:
    """A run's samples (green) over the modes (black crosses), titled with its score."""
    data = r["data"]
    means = TOY_DISTRIBUTIONS[data].means.numpy()
    ax.scatter(r["_samples"][:, 0], r["_samples"][:, 1], s=1, color="green", alpha=0.4)
    ax.scatter(means[:, 0], means[:, 1], s=12, color="black", marker="x")
    lim = 3 if data == "ring8" else 6
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    levers = (f" M={r['pack']}" if r["pack"] > 1 else "") + (f" ema{r['g_ema']:g}" if r["g_ema"] else "")
    ax.set_title(f"{data} k={r['k']} {short_name(r['g_loss'])}{levers} seed {r['seed']}\n{r['modes']} modes, "
                 f"{r['high_quality']:.0f}% HQ", fontsize=8)


def _summary(values: list[float]) -> dict:
    """Mean and sample std over seeds. Reverse KL is infinite for a run without any high-quality
    sample; such a row has no mean (None in JSON, "inf" in the table)."""
    if not all(math.isfinite(v) for v in values):
        return {"mean": None, "std": None, "values": [v if math.isfinite(v) else None for v in values]}
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}


def _pm(mean: float | None, std: float | None, places: int) -> str:
    return "inf" if mean is None else f"{mean:.{places}f} +- {std:.{places}f}"


def short_name(g_loss: str) -> str:
    return {"non-saturating": "ns", "saturating": "sat"}[g_loss]

