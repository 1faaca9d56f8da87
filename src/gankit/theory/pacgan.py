"""`gankit bench modes --protocol pacgan`: PacGAN's Table 1 (Lin et al., NeurIPS 2018), as published.

The set-up is the authors' code (github.com/fjxmlzn/PacGAN, synthetic_data_experiments/), which
docs/theory.md ("PacGAN's 2-D set-up") cites line by line:
- data: ring of 8 Gaussians of radius 1, std 0.01; grid of 25 at (-4..4 step 2)^2, std 0.05; a fixed
  training set of 100,000 points, packed by M independent resamplings (GaussianPackingMixture);
- G: z ~ N(0, I_2) -> 4 x [Linear 400 (no bias), batch norm, ReLU] -> Linear 2;
- D: packs of M points (2M inputs) -> 3 x [maxout, 200 units of 5 pieces] -> Linear 1;
- weights N(0, 0.02), biases 0; Adam lr 1e-4, beta1 0.8 for both players; 100 packs per minibatch;
  400 epochs of 1,000 minibatches (400,000 updates); ALI's algorithm: D and G updated
  simultaneously from one forward pass, G on the non-saturating loss;
- scoring: 2,500 samples of G in inference mode (batch-norm population statistics); a sample is
  high quality within 3 std of its nearest mode; a mode is captured by at least one high-quality
  sample; reverse KL of the modes' histogram (gankit.metrics.toy.mode_metrics);
- 10 trials per row; the table gives mean +- standard error.

Each trial is independent (its own seed). The loop engine trains them one at a time per worker
process (one thread each); the batched engine (gankit.theory.pacgan_batched) trains a pack's trials
together as stacked tensors (the default).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import multiprocessing
import os
import signal
import statistics
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import TextIO

import torch
from torch import nn

from gankit import ema
from gankit.data.toy import TOY_DISTRIBUTIONS, ToyDistribution
from gankit.devices import resolve_device
from gankit.errors import ConfigError
from gankit.files import atomic_write, write_json
from gankit.losses import G_LOSSES, discriminator_loss, generator_loss
from gankit.metrics.toy import mode_metrics
from gankit.models.pack import Packed
from gankit.theory import pacgan_curves as curves
from gankit.theory import plots, say

DATASETS = ("ring8", "grid25")
PACKS = (1, 2, 3, 4)
SETUP = {
    "latent_dim": 2, "g_width": 400, "g_layers": 4, "d_width": 200, "d_layers": 3, "maxout_pieces": 5,
    "init_std": 0.02, "lr": 1e-4, "beta1": 0.8, "beta2": 0.999, "batch_packs": 100,
    "dataset_size": 100_000, "epochs": 400, "bn_momentum": 0.05, "bn_eps": 1e-4,
    "trials": 10, "samples": 2500, "high_quality_stds": 3,
}
ITERATIONS = SETUP["epochs"] * SETUP["dataset_size"] // SETUP["batch_packs"]  # 400,000
# The training coordinates of the authors' code. gankit's toy:ring8 is the same ring at twice the
# scale (radius 2, std 0.02); the metric is scale-free (distances in units of the std), training is not.
PACGAN_TOYS: dict[str, ToyDistribution] = {
    "ring8": ToyDistribution(
        "ring8-pacgan", 2, TOY_DISTRIBUTIONS["ring8"].means / 2, TOY_DISTRIBUTIONS["ring8"].stds / 2,
        TOY_DISTRIBUTIONS["ring8"].weights),
    "grid25": TOY_DISTRIBUTIONS["grid25"],
}
# PacGAN Table 1 (paper; also synthetic_data_experiments/results/Table1.png): mean, standard error
# over 10 trials. high_quality in percent.
PUBLISHED = {
    ("ring8", 1): {"modes": (6.3, 0.5), "high_quality": (98.2, 0.2), "reverse_kl": (0.45, 0.09)},
    ("ring8", 2): {"modes": (7.9, 0.1), "high_quality": (95.6, 2.0), "reverse_kl": (0.07, 0.03)},
    ("ring8", 3): {"modes": (7.8, 0.1), "high_quality": (97.7, 0.3), "reverse_kl": (0.10, 0.02)},
    ("ring8", 4): {"modes": (7.8, 0.1), "high_quality": (95.9, 1.4), "reverse_kl": (0.07, 0.02)},
    ("grid25", 1): {"modes": (17.3, 0.8), "high_quality": (94.8, 0.7), "reverse_kl": (0.70, 0.07)},
    ("grid25", 2): {"modes": (23.8, 0.7), "high_quality": (91.3, 0.8), "reverse_kl": (0.13, 0.04)},
    ("grid25", 3): {"modes": (24.6, 0.4), "high_quality": (94.2, 0.4), "reverse_kl": (0.06, 0.02)},
    ("grid25", 4): {"modes": (24.8, 0.2), "high_quality": (93.6, 0.6), "reverse_kl": (0.04, 0.01)},
}
METRICS = ("modes", "high_quality", "reverse_kl")
SNAPSHOTS = (0.01, 0.1, 0.5, 1.0)  # fractions of training at which trial 0's samples are kept
ENGINES = ("auto", "batched", "loop")  # run(engine=...): see run


# --- the players ---------------------------------------------------------------------------------

class BNGenerator(nn.Module):
    """z (B, 2) -> x (B, 2): 4 x [Linear(400, no bias), BatchNorm1d, ReLU], then Linear(400, 2)."""

    def __init__(self, latent_dim: int = 2, width: int = 400, layers: int = 4, out: int = 2,
                 momentum: float = 0.05, eps: float = 1e-4):
        super().__init__()
        blocks: list[nn.Module] = []
        fan_in = latent_dim
        for _ in range(layers):
            blocks += [nn.Linear(fan_in, width, bias=False), nn.BatchNorm1d(width, eps, momentum), nn.ReLU()]
            fan_in = width
        blocks.append(nn.Linear(fan_in, out))
        self.net = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Maxout(nn.Module):
    """(B, in) -> (B, out): the max over `pieces` linear maps (blocks' LinearMaxout)."""

    def __init__(self, fan_in: int, out: int, pieces: int):
        super().__init__()
        self.out, self.pieces = out, pieces
        self.linear = nn.Linear(fan_in, out * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(x.shape[0], self.out, self.pieces).max(-1).values


class MaxoutDiscriminator(nn.Module):
    """x (B, dim) -> logits (B,): 3 maxout layers (200 units, 5 pieces), then Linear(200, 1)."""

    def __init__(self, dim: int, width: int = 200, layers: int = 3, pieces: int = 5):
        super().__init__()
        fan_ins = [dim] + [width] * (layers - 1)
        self.net = nn.Sequential(*(Maxout(f, width, pieces) for f in fan_ins), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def build_players(pack: int) -> tuple[nn.Module, nn.Module]:
    """PacGAN's G and D (packed when pack > 1): weights N(0, 0.02), biases 0, batch norm (1, 0)."""
    s = SETUP
    G = BNGenerator(s["latent_dim"], s["g_width"], s["g_layers"], 2, s["bn_momentum"], s["bn_eps"])
    D: nn.Module = MaxoutDiscriminator(2 * pack, s["d_width"], s["d_layers"], s["maxout_pieces"])
    for m in itertools.chain(G.modules(), D.modules()):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, s["init_std"])
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return G, (Packed(D, pack) if pack > 1 else D)


def simultaneous_step(G: nn.Module, D: nn.Module, opt_G: torch.optim.Optimizer, opt_D: torch.optim.Optimizer,
                      real: torch.Tensor, zs: list[torch.Tensor],
                      g_loss: str = "non-saturating") -> tuple[torch.Tensor, torch.Tensor]:
    """One update of ALI's algorithm, which PacGAN's code uses: both losses from ONE forward pass,
    both players stepped together (not Algorithm 1's alternation). real: (P*M, 2), M consecutive
    points per pack; zs: M noise batches (P, 2), each its own pass through G (its own batch norm
    statistics, as in PacGAN's compute_losses). g_loss: G's loss (PacGAN's: non-saturating).
    Returns the (D loss, G loss) tensors, detached (no wait for the device)."""
    fake = torch.stack([G(z) for z in zs], 1).reshape(-1, 2)  # (P*M, 2): pack i = (G(z_1)[i], ..., G(z_M)[i])
    real_logits, fake_logits = D(real), D(fake)  # (P,), (P,): each pack from one source
    loss_d = discriminator_loss(real_logits, fake_logits)
    loss_g = generator_loss(fake_logits, g_loss)
    d_params, g_params = list(D.parameters()), list(G.parameters())
    grads_d = torch.autograd.grad(loss_d, d_params, retain_graph=True)
    grads_g = torch.autograd.grad(loss_g, g_params)
    for p, g in itertools.chain(zip(d_params, grads_d, strict=True), zip(g_params, grads_g, strict=True)):
        p.grad = g
    opt_D.step()
    opt_G.step()
    return loss_d.detach(), loss_g.detach()


def ema_beta(half_life: float) -> float:
    """--g-ema's beta (gankit.ema.decay) for one update: half-life in generated examples, PacGAN's
    minibatch of 100 (packs) an update, whatever M; 0: no average (beta 0, the EMA is G)."""
    return ema.decay(SETUP["batch_packs"], 0, half_life) if half_life > 0 else 0.0


# --- one trial -----------------------------------------------------------------------------------

def trial(data: str, pack: int, seed: int, iterations: int, snapshots: bool = False,
          threads: int | None = None, device: str = "cpu", score_every: int | None = None,
          g_emas: tuple[float, ...] = (), g_loss: str = "non-saturating") -> list[dict]:
    """Train one PacGAN-M (M = 1: the vanilla GAN) and score 2,500 samples; optionally keep samples
    at SNAPSHOTS of training; score them every `score_every` updates (its `curve`; default:
    pacgan_curves.default_every), with a progress line. One dict per scorer: G, then an EMA of G
    for each half-life in g_emas (ema_beta), which follows G and does not change its training.
    g_loss: G's loss (simultaneous_step).
    `threads` limits torch in a worker process.
    Every random number is drawn on the CPU, so a trial's data, noise and initial weights do not
    depend on `device`."""
    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    toy = PACGAN_TOYS[data]
    s = SETUP
    G, D = build_players(pack)
    G, D = G.to(device), D.to(device)
    opt_G = torch.optim.Adam(G.parameters(), lr=s["lr"], betas=(s["beta1"], s["beta2"]))
    opt_D = torch.optim.Adam(D.parameters(), lr=s["lr"], betas=(s["beta1"], s["beta2"]))
    scorers = [G, *(ema.make_ema(G) for _ in g_emas)]  # the generators each trial is scored from
    points = toy.sample(s["dataset_size"], rng).to(device)  # (100000, 2): the fixed training set
    packed = torch.randint(s["dataset_size"], (s["dataset_size"], pack), generator=rng)  # (N, M) point ids
    per_epoch = s["dataset_size"] // s["batch_packs"]
    keep = {max(1, round(f * iterations)) for f in SNAPSHOTS} if snapshots else set()
    eval_z = torch.randn(s["samples"], s["latent_dim"], generator=torch.Generator().manual_seed(10_000 + seed)).to(device)
    kept = [[] for _ in scorers]
    labels = [curves.row_label(data, pack, h, g_loss) for h in (0.0, *g_emas)]
    watch = curves.Watch(f"{labels[0]}, seed {seed}", labels, [toy] * len(labels),
                         score_every or curves.default_every(iterations), iterations)
    scores = []
    order = torch.empty(0, dtype=torch.long)
    for it in range(iterations):
        if it % per_epoch == 0:
            order = torch.randperm(s["dataset_size"], generator=rng)  # ShuffledScheme: a new order each epoch
        rows = order[(it % per_epoch) * s["batch_packs"]:(it % per_epoch + 1) * s["batch_packs"]]
        real = points[packed[rows].flatten().to(device)]  # (P*M, 2), pack after pack
        zs = [torch.randn(s["batch_packs"], s["latent_dim"], generator=rng).to(device) for _ in range(pack)]
        loss_d, loss_g = simultaneous_step(G, D, opt_G, opt_D, real, zs, g_loss)
        for average, h in zip(scorers[1:], g_emas, strict=True):
            ema.update(average, G, ema_beta(h))
        if it + 1 in keep or watch.due(it + 1):
            shots = torch.stack([_samples(g, eval_z) for g in scorers])  # (scorers, 2500, 2)
            if it + 1 in keep:
                for mine, shot in zip(kept, shots, strict=True):
                    mine.append({"iteration": it + 1, "samples": shot.numpy(), **mode_metrics(shot, toy)})
            if watch.due(it + 1):
                scores.append(watch(it + 1, shots, (loss_d, loss_g)))
    seconds = round(time.perf_counter() - started, 2)
    results = []
    for e, (scorer, h) in enumerate(zip(scorers, (0.0, *g_emas), strict=True)):
        samples = _samples(scorer, eval_z)
        results.append({"data": data, "pack": pack, "g_loss": g_loss, "g_ema": float(h), "seed": seed,
                        "iterations": iterations,
                        "loss_d": loss_d.item(), "loss_g": loss_g.item(), "device": str(device),
                        "cuda_graph": False, "precision": "fp32", **mode_metrics(samples, toy), "seconds": seconds,
                        "curve": curves.curve(scores, e), "_samples": samples.numpy(), "_snapshots": kept[e]})
    return results


def _samples(G: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """G in inference mode (batch-norm population statistics), as PacGAN's GraphLogger samples."""
    G.eval()
    with torch.no_grad():
        x = G(z).cpu()
    G.train()
    return x


# --- the benchmark -------------------------------------------------------------------------------

def run(out: str | Path, seed: int = 0, trials: int = SETUP["trials"], packs: tuple[int, ...] = PACKS,
        datasets: tuple[str, ...] = DATASETS, iterations: int = ITERATIONS, jobs: int | None = None,
        device: str = "cpu", log: TextIO | None = None, engine: str = "auto", precision: str = "fp32",
        stop_after: float | None = None, one_batch: bool | None = None, score_every: int | None = None,
        g_emas: tuple[float, ...] = (), g_losses: tuple[str, ...] = ("non-saturating",)) -> dict:
    """Every (dataset, pack, trial); write results.json, table.txt and collapse.png to out.
    device: auto, cpu or cuda (on a GPU, the `jobs` worker processes share it). engine: loop (one
    trial at a time per process, `trial`), batched (the trials of one pack trained together,
    gankit.theory.pacgan_batched) or auto (batched; see choose_engine). precision: fp32 (as
    published) or tf32 (the batched engine's matrix products on CUDA in TF32). The batched engine
    keeps each batch's checkpoint in out/checkpoints/: stop_after (seconds) stops every batch then
    and returns {"stopped": True, ...}; the same call again continues, and reuses finished batches.
    one_batch: every trial in one batch of mixed packs (default: on CUDA, where an update of a
    pack's 20 trials is launch-bound; on a CPU, compute-bound, a batch per pack wastes nothing).
    score_every: score every trial every so many updates, with a progress line, into results.json
    (`curve`) and curves.png (default: 20 times a run). g_emas: each (dataset, pack) row
    again, its trials scored from an EMA of G of each half-life (ema_beta): the same runs. g_losses:
    G's losses, each its own trials (PacGAN's: non-saturating)."""
    if precision not in ("fp32", "tf32"):
        raise ConfigError(f"--precision must be fp32 or tf32 for --protocol pacgan; got {precision!r}")
    bad = [d for d in datasets if d not in DATASETS]
    if bad or not datasets:
        raise ConfigError(f"--datasets: {bad or 'nothing given'}; choose from {', '.join(DATASETS)}")
    if not packs or any(m <= 0 for m in packs):
        raise ConfigError(f"--packs must list positive integers, got {list(packs)}")
    if any(not 0 <= h < math.inf for h in g_emas):
        raise ConfigError(f"--g-ema must list finite half-lives >= 0 (0: G itself), got {list(g_emas)}")
    g_emas = tuple(dict.fromkeys(float(h) for h in g_emas if h))  # G itself is always scored; twice is once
    if not g_losses or not set(g_losses) <= set(G_LOSSES):
        raise ConfigError(f"--g-loss must list {' or '.join(G_LOSSES)}, got {list(g_losses)}")
    variants = list(itertools.product(packs, dict.fromkeys(g_losses)))  # (M, G loss): each trained
    methods = [(m, g, h) for m, g in variants for h in (0.0, *g_emas)]  # (M, G loss, EMA) of each row
    every = score_every if score_every is not None else curves.default_every(iterations)
    for name, v in (("--trials", trials), ("--iterations", iterations), ("--score-every", every)):
        if v <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {v}")
    jobs = jobs or min(2, os.cpu_count() or 1)
    out = Path(out)
    dev = str(resolve_device(device))
    engine = choose_engine(engine, dev)
    if precision == "tf32" and (engine == "loop" or dev != "cuda"):
        raise ConfigError("--precision tf32: for the batched engine on CUDA only (--engine batched --device cuda)")
    if stop_after is not None and engine == "loop":
        raise ConfigError("--stop-after: for the batched engine only (the loop engine keeps no checkpoints); "
                          "drop --engine loop")
    if stop_after is not None and stop_after <= 0:
        raise ConfigError(f"--stop-after must be a positive number of seconds, got {stop_after}")
    emas = f"; each also scored from G's EMAs of half-life {list(g_emas)}" if g_emas else ""
    say(log, f"gankit bench modes --protocol pacgan: {len(datasets) * len(variants) * trials} trials "
             f"({', '.join(datasets)}; packs {list(packs)}; G losses {list(dict.fromkeys(g_losses))}{emas}; "
             f"{trials} trials each; {iterations:,} updates "
             f"each, published {ITERATIONS:,}) on {jobs} processes, {dev}, {engine} engine")
    started = time.perf_counter()
    if engine == "loop":
        results = _train_loop(datasets, variants, g_emas, trials, seed, iterations, jobs, dev, every)
    else:
        deadline = None if stop_after is None else time.time() + stop_after
        one = dev == "cuda" if one_batch is None else one_batch
        results = _train_batched(datasets, variants, g_emas, trials, seed, iterations, jobs, dev, precision, out,
                                 deadline, one, every)
    if results is None:
        from gankit.theory.pacgan_batched import STOP

        why = f"--stop-after {stop_after:g}" if STOP.signal is None else signal.Signals(STOP.signal).name
        where = (f"where each batch is: {out / 'checkpoints'}. The same command continues from there."
                 if any((out / "checkpoints").glob("*.pt")) else
                 "before its first checkpoint: the same command starts from the beginning.")
        say(log, f"stopped after {time.perf_counter() - started:.0f} s ({why}); {where}")
        return {"stopped": True, "signal": STOP.signal, "checkpoints": str(out / "checkpoints")}
    record = {
        "command": "bench modes --protocol pacgan", "seed": seed, "trials": trials, "packs": list(packs),
        "g_losses": list(dict.fromkeys(g_losses)), "g_emas": list(g_emas),
        "g_ema_unit": "generated examples (PacGAN's minibatch: 100 an update); each trial scored from G and each EMA",
        "iterations": iterations, "published_iterations": ITERATIONS, "device": dev, "jobs": jobs, "engine": engine,
        "precision": precision, "score_every": every,
        "setup": SETUP, "rows": _rows(results, datasets, methods),
        "published_source": "PacGAN (Lin et al. 2018), Table 1: mean +- standard error over 10 trials",
        "mode_captured": "at least one high-quality sample (within 3 std of its nearest mode), PacGAN's code",
        "within": "|ours - published| <= our standard error + the published one (the error bars overlap)",
        "trial_seconds": [r["seconds"] for r in results],
        "seconds": round(time.perf_counter() - started, 1),
    }
    _figure(out / "collapse.png", results, datasets, methods)
    curves.figure(out / "curves.png", results, datasets, methods, PUBLISHED)
    for r in results:
        r.pop("_samples")
        # the scores along the way (every trial in the batched engine, trial 0 in the loop engine)
        r["snapshots"] = [{k: v for k, v in shot.items() if k != "samples"} for shot in r.pop("_snapshots")]
    record["trial_results"] = results
    text = table(record)
    write_json(out / "results.json", record)
    with atomic_write(out / "table.txt", suffix=".txt") as tmp:
        tmp.write_text(text + "\n")
    say(log, text)
    say(log, f"wrote {out / 'table.txt'}, {out / 'results.json'}, {out / 'collapse.png'} and {out / 'curves.png'} "
             f"({record['seconds']:.0f} s)")
    return record


def _rows(results: list[dict], datasets, methods) -> list[dict]:
    """One row per (dataset, pack, G loss, EMA): mean +- standard error of its trials, and the
    published row beside it (PacGAN's own rows: non-saturating, no EMA). An EMA row also has `paired`: its trials' scores
    minus the same trials' scores from G, mean +- standard error (one run, two scorers)."""
    rows = []
    for data, (m, g, h) in itertools.product(datasets, methods):
        runs = [r for r in results if (r["data"], r["pack"], r["g_loss"], r["g_ema"]) == (data, m, g, h)]
        if not runs:  # a merged table's dataset that lacks this method (merge)
            continue
        row = {"data": data, "pack": m, "g_loss": g, "g_ema": h, "seeds": [r["seed"] for r in runs],
               **{k: summary([float(r[k]) for r in runs]) for k in METRICS}}
        pub = None if h or g != "non-saturating" else PUBLISHED.get((data, m))
        row["published"] = pub
        row["within"] = {k: within(row[k], pub[k]) for k in METRICS} if pub else None
        if h:
            plain = {r["seed"]: r for r in results if (r["data"], r["pack"], r["g_loss"], r["g_ema"]) == (data, m, g, 0.0)}
            row["paired"] = {k: summary([float(r[k]) - float(plain[r["seed"]][k]) for r in runs]) for k in METRICS}
        elif g == "saturating":
            row.update(_minus_non_saturating(runs, results))
        rows.append(row)
    return rows


def _minus_non_saturating(runs: list[dict], results: list[dict]) -> dict:
    """A saturating row's trials minus the non-saturating trials of the same seed (a seed fixes the
    initial weights), over the seeds both hold; {} if none."""
    data, m = runs[0]["data"], runs[0]["pack"]
    other = {r["seed"]: r for r in results
             if (r["data"], r["pack"], r["g_loss"], r["g_ema"]) == (data, m, "non-saturating", 0.0)}
    pairs = [(r, other[r["seed"]]) for r in runs if r["seed"] in other]
    if not pairs:
        return {}
    return {"minus_non_saturating": {"seeds": [r["seed"] for r, _ in pairs],
                                     **{k: summary([float(r[k]) - float(o[k]) for r, o in pairs]) for k in METRICS}}}


def merge(records: list[dict], sources: list[str]) -> dict:
    """One table from runs of different rows (a GPU session's units, benchmarks/pacgan_merge.py):
    their trials together and each row's mean +- se again. sources names each record in errors.
    The runs must share updates and EMAs and hold no (dataset, method, seed) twice. They may differ
    in seeds and trial counts: a row's trials can come from several runs (one CPU trial a session,
    `--seed S --trials 1`), and then the rows' trial counts can differ."""
    for key in ("iterations", "g_emas"):
        values = {json.dumps(r.get(key)) for r in records}
        if len(values) > 1:
            per = ", ".join(f"{src}: {r.get(key)}" for src, r in zip(sources, records, strict=True))
            raise ConfigError(f"cannot merge runs that differ in {key} ({per}); merge runs of one set-up")
    results, seen = [], {}
    for src, record in zip(sources, records, strict=True):
        for r in record["trial_results"]:
            key = (r["data"], r["pack"], r.get("g_loss", "non-saturating"), r["g_ema"], r["seed"])
            if key in seen:
                raise ConfigError(f"{src} and {seen[key]} both hold {key}: merge each trial once")
            seen[key] = src
            results.append({**r, "g_loss": key[2]})
    datasets, methods = rows_of(results)
    rows = _rows(results, datasets, methods)
    first, counts, seeds = records[0], {len(row["seeds"]) for row in rows}, {r.get("seed") for r in records}
    return {"command": "bench modes --protocol pacgan, merged", "sources": sources,
            **{k: first.get(k) for k in ("iterations", "published_iterations", "g_emas", "setup")},
            "seed": seeds.pop() if len(seeds) == 1 else None,  # None: the runs started from different seeds
            "trials": counts.pop() if len(counts) == 1 else None,  # None: the rows' counts differ
            "packs": sorted({m for m, _, _ in methods}), "precision": sorted({r.get("precision") for r in records}),
            "devices": sorted({r.get("device") for r in records}), "rows": rows,
            "datasets": datasets, "methods": [list(x) for x in methods], "trial_results": results}


def rows_of(results: list[dict]) -> tuple[list[str], list[tuple]]:
    """The datasets and the methods (pack, G loss, EMA) that trial results hold, in the table's order."""
    datasets = [d for d in DATASETS if any(r["data"] == d for r in results)]
    methods = sorted({(r["pack"], r["g_loss"], r["g_ema"]) for r in results},
                     key=lambda x: (x[0], G_LOSSES.index(x[1]), x[2]))
    return datasets, methods


LOSS_TAGS = {"non-saturating": "ns", "saturating": "sat"}  # unit names' (and pacgan_cpu.py --rows') short forms


def unit_name(packs, losses, datasets, seeds=()) -> str:
    """A run's rows as a folder name (benchmarks/pacgan_gpu.py's units, pacgan_merge.py --add-run,
    pacgan_cpu.py's trials): "pack1-ring8-grid25" (PacGAN's loss), "pack2-sat-grid25",
    "pack1-ns-sat-ring8-grid25"; with seeds, "pack1-sat-grid25-seed1" or "...-seeds0-9"."""
    losses = [g for g in G_LOSSES if g in set(losses)]
    tag = "" if losses == ["non-saturating"] else "-" + "-".join(LOSS_TAGS[g] for g in losses)
    packs = "-".join(str(m) for m in sorted(set(packs)))
    name = f"pack{packs}{tag}-{'-'.join(d for d in DATASETS if d in set(datasets))}"
    seeds = sorted(set(seeds))
    if not seeds:
        return name
    return f"{name}-seed{seeds[0]}" if len(seeds) == 1 else f"{name}-seeds{seeds[0]}-{seeds[-1]}"


def choose_engine(engine: str, device: str) -> str:
    """--engine auto|batched|loop -> batched or loop. auto: batched on every device. On a GPU one
    trial's update is launch-bound; on a CPU it is compute-bound, but the batched update was still
    8-13% faster per core (measured on 2 cores, M = 1 and 4, mostly its fused Adam)."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine must be {', '.join(ENGINES[:-1])} or {ENGINES[-1]}; got {engine!r}")
    return "batched" if engine == "auto" else engine


def _train_loop(datasets, variants, g_emas, trials, seed, iterations, jobs, dev, every) -> list[dict]:
    """One `trial` per (dataset, (pack, G loss), trial), in `jobs` processes of one thread each;
    its results (G's, then each EMA's) in the order of `_rows`."""
    threads = None if jobs == 1 else 1  # the pool runs one process per core
    tasks = [(data, m, seed + t, iterations, t == 0, threads, dev, every, g_emas, g)
             for data, (m, g), t in itertools.product(datasets, variants, range(trials))]
    if jobs == 1:
        done = [trial(*t) for t in tasks]
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            done = list(pool.map(trial, *zip(*tasks, strict=True)))
    return _in_row_order([r for rs in done for r in rs], datasets, variants, g_emas, seed, trials)


def _train_batched(datasets, variants, g_emas, trials, seed, iterations, jobs, dev, precision, out: Path,
                   deadline: float | None, one_batch: bool, every: int) -> list[dict] | None:
    """`run_batch` on every trial at once (one_batch: packs mixed, see pacgan_batched.stack_players)
    or once per pack M (G losses mixed: set_losses), and on a CPU each pack's trials split into
    `jobs` batches, one process of one thread each. Each batch checkpoints to out/checkpoints/. The results come back in the loop
    engine's order; None if any batch stopped at the deadline."""
    from gankit.theory.pacgan_batched import STOP, install_stop, run_batch

    STOP.signal = None  # a new command: an earlier one's signal is spent

    trials_of = [(m, g, data, seed + t) for (m, g), data, t in itertools.product(variants, datasets, range(trials))]
    packs = dict.fromkeys(m for m, _ in variants)
    groups = {"all": trials_of} if one_batch else {f"pack{m}": [x for x in trials_of if x[0] == m] for m in packs}
    parts = []  # (name of its checkpoint, its trials)
    for name, items in groups.items():
        n = 1 if one_batch or dev == "cuda" else min(jobs, len(items))
        parts += [(f"{name}-{k}", items[k * len(items) // n:(k + 1) * len(items) // n]) for k in range(n)]
    jobs = min(jobs, len(parts))
    threads = None if jobs == 1 else 1  # one thread per worker process: one per core
    batches = [([x[2] for x in part], [x[0] for x in part], [x[3] for x in part], iterations, dev, True, threads,
                precision, str(out / "checkpoints" / f"{name}.pt"), deadline, every, name, g_emas,
                [x[1] for x in part]) for name, part in parts]
    if jobs == 1:
        done = [run_batch(*b) for b in batches]
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=install_stop) as pool, \
                _passing_on_signals(STOP):
            done = list(pool.map(run_batch, *zip(*batches, strict=True)))
    if any(rs is None for rs in done):
        return None
    return _in_row_order([r for rs in done for r in rs], datasets, variants, g_emas, seed, trials)


def _in_row_order(results: list[dict], datasets, variants, g_emas, seed, trials) -> list[dict]:
    """Results sorted by dataset, (pack, G loss), scorer (G, then each EMA) and seed, as the table reads."""
    order = {(d, m, g, h, s): i for i, (d, (m, g), h, s) in
             enumerate(itertools.product(datasets, variants, (0.0, *g_emas), range(seed, seed + trials)))}
    return sorted(results, key=lambda r: order[(r["data"], r["pack"], r["g_loss"], r["g_ema"], r["seed"])])


@contextlib.contextmanager
def _passing_on_signals(stop):
    """While worker processes train: a SIGINT or SIGTERM to this process goes on to each of them
    (each checkpoints at its next update and stops; a terminal's Ctrl-C reached them already, and
    StopFlag counts a repeat within a second once); this one records it in `stop` and waits."""
    def forward(signum, frame):
        stop.signal = stop.signal or signum
        for child in multiprocessing.active_children():
            with contextlib.suppress(ProcessLookupError):  # it has just exited
                os.kill(child.pid, signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def summary(values: list[float]) -> dict:
    """Mean and standard error (sample std / sqrt(n)) over trials. Reverse KL is infinite for a
    trial without any high-quality sample; such a row has no mean (None in JSON, "inf" in the table)."""
    if not all(math.isfinite(v) for v in values):
        return {"mean": None, "se": None, "values": [v if math.isfinite(v) else None for v in values]}
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "se": se, "values": values}


def within(ours: dict, published: tuple[float, float]) -> bool | None:
    """Whether our mean +- se and the published mean +- se overlap."""
    if ours["mean"] is None:
        return None
    return abs(ours["mean"] - published[0]) <= ours["se"] + published[1] + 1e-12


def table(record: dict) -> str:
    """PacGAN's Table 1 layout: per dataset, each row ours and the published one, and whether
    they agree within the error bars."""
    names = {"ring8": "2D-ring", "grid25": "2D-grid"}
    places = {"modes": 1, "high_quality": 1, "reverse_kl": 2}
    counts = {len(r["seeds"]) for r in record["rows"]}
    # a merged table's rows can hold different numbers of trials: each row then says how many
    ours = {id(r): _label(r) + " gankit" + ("" if len(counts) == 1 else f", {_count(len(r['seeds']), 'trial')}")
            for r in record["rows"]}
    width = max(26, *(len(_label(r)) + 15 for r in record["rows"]), *(len(x) for x in ours.values()))
    lines = [f"{'':<{width + 2}}{'modes':>18}{'high quality %':>20}{'reverse KL':>18}"]
    over = _count(counts.pop(), "trial") if len(counts) == 1 else "each row's trials (their number in its label)"
    for data in dict.fromkeys(r["data"] for r in record["rows"]):
        lines.append(f"{names[data]} ({data}), mean +- standard error over {over}, {record['iterations']:,} updates")
        for r in (r for r in record["rows"] if r["data"] == data):
            label, one = _label(r), len(r["seeds"]) == 1  # one trial has no standard error: its score alone
            cells = [_pm(r[k]["mean"], None if one else r[k]["se"], places[k]) for k in METRICS]
            lines.append(f"  {ours[id(r)]:<{width}}" + "".join(c.rjust(w) for c, w in zip(cells, (18, 20, 18), strict=True)))
            if r["published"]:
                pub = [_pm(*r["published"][k], places[k]) + {True: " ok", False: " NO", None: " -"}[r["within"][k]]
                       for k in METRICS]
                lines.append(f"  {label + ' PacGAN Table 1':<{width}}" + "".join(c.rjust(w) for c, w in zip(pub, (18, 20, 18), strict=True)))
            if r.get("paired"):
                lines.append(_difference_line("  minus G, same trials", r["paired"], one, places, width))
            if r.get("minus_non_saturating"):
                n = len(r["minus_non_saturating"]["seeds"])
                lines.append(_difference_line(f"  minus non-saturating, same seeds ({n})", r["minus_non_saturating"],
                                              n == 1, places, width))
    lines.append("ok / NO: our mean +- se overlaps / misses the published mean +- se (-: ours is infinite)")
    return "\n".join(lines)


def _difference_line(label: str, paired: dict, one: bool, places: dict, width: int) -> str:
    """A paired difference under its row: mean +- se of the per-trial differences (one pair: no se)."""
    cells = [_pm(paired[k]["mean"], None if one else paired[k]["se"], places[k], signed=True) for k in METRICS]
    return f"  {label:<{width}}" + "".join(c.rjust(w) for c, w in zip(cells, (18, 20, 18), strict=True))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _label(row: dict) -> str:
    return curves.method_label(row["pack"], row.get("g_ema", 0.0), row.get("g_loss", "non-saturating"))


def _pm(mean: float | None, se: float | None, places: int, signed: bool = False) -> str:
    if mean is None:
        return "inf"
    return f"{mean:{'+' if signed else ''}.{places}f}" + ("" if se is None else f" +- {se:.{places}f}")


def _figure(path: Path, results: list[dict], datasets, methods) -> None:
    """Trial 0 of each (dataset, (pack, EMA)): its samples over the modes at SNAPSHOTS of training."""
    combos = [(data, *method) for data, method in itertools.product(datasets, methods)]
    # the lowest seed of each row wins
    first = {(r["data"], r["pack"], r["g_loss"], r["g_ema"]): r
             for r in sorted(results, key=lambda r: r["seed"], reverse=True)}
    cols = max(len(first[c]["_snapshots"]) for c in combos) or 1
    fig, axes = plots.figure(len(combos), cols, width=2.6, height=2.6)
    for row, (data, m, g, h) in enumerate(combos):
        r = first[(data, m, g, h)]
        shots = r["_snapshots"] or [{"iteration": r["iterations"], "samples": r["_samples"],
                                     "modes": r["modes"], "high_quality": r["high_quality"]}]
        means = PACGAN_TOYS[data].means.numpy()
        lim = 1.5 if data == "ring8" else 6
        for col in range(cols):
            ax = axes[row * cols + col]
            if col >= len(shots):
                ax.set_axis_off()
                continue
            shot = shots[col]
            ax.scatter(shot["samples"][:, 0], shot["samples"][:, 1], s=1, color="green", alpha=0.4)
            ax.scatter(means[:, 0], means[:, 1], s=10, color="black", marker="x")
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            # the row's label on a line of its own: "grid25 GAN, saturating + EMA 10,000" is a panel wide
            ax.set_title(f"{curves.row_label(data, m, h, g)}\nupdate {shot['iteration']:,}: {_count(shot['modes'], 'mode')}, "
                         f"{shot['high_quality']:.0f}% HQ", fontsize=7)
    plots.save(fig, path)
