"""The training loop: Algorithm 1 of Goodfellow et al. (2014), k discriminator steps per generator step.

Progress is counted in real images shown to D (k * batch_size per iteration), so schedules do not
depend on the batch size. Every iteration logs D and G losses, mean D(x), mean D(G(z)) before and
after the G step, the minibatch estimate of V and both gradient norms.

The step itself never waits for the device: each iteration's statistics stay where they were
computed and are read in one go every --sync-every iterations (and before every snapshot,
evaluation, checkpoint or stop), then checked and logged row by row, in order. How the
arithmetic is done (precision, fused optimisers, memory format, CUDA graphs) is fastpath.py's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

import gankit
from gankit import checkpoint, distributed, runs
from gankit.config import RESUMABLE_CHANGES, TrainConfig, flag
from gankit.data import ImageDataset, ToyDataset, load_dataset
from gankit.data.batches import StreamedImageBatches, batches_for
from gankit.devices import resolve_device
from gankit.diagnostics import Diagnostics, Finding
from gankit.errors import CheckpointError, ConfigError, GankitError
from gankit.evaluate import score_samples
from gankit.fastpath import (
    GraphedIteration,
    Plan,
    autocast_for,
    configure_optimizer,
    fast_path_plan,
    precision_flags,
)
from gankit.files import write_json
from gankit.imagegrid import save_grid, save_png, scatter
from gankit.losses import discriminator_loss, generator_loss
from gankit.models import build_models
from gankit.progress import Progress
from gankit.sample import generate, interleave

DEFAULT_MAX_IMAGES = 600_000  # 10 epochs of (Fashion-)MNIST when neither --max-images nor --epochs is given
MAX_ROLLBACKS = 3  # --on-nan rollback: give up after this many
STOP_GRACE = 10.0  # seconds a torchrun process may take to stop cleanly after a signal
STAT_NAMES = ("d_loss", "g_loss", "value", "d_real", "d_fake", "d_fake_g_before",
              "d_fake_g_after", "grad_norm_d", "grad_norm_g")


class TrainingDiverged(GankitError):
    """A loss or gradient became NaN or Inf."""

    every_process = True  # under torchrun all processes raise it together; rank 0 reports it


class TrainingInterrupted(GankitError):
    """SIGINT or SIGTERM: a checkpoint was saved and training stopped cleanly."""

    every_process = True

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class TrainResult:
    run_dir: Path
    images_seen: int
    iterations: int
    last_stats: dict[str, float]


def train(config: TrainConfig, run_dir: str | Path, *, overwrite: bool = False,
          stream: TextIO | None = None) -> TrainResult:
    """Start a new run in run_dir and train it to config's length."""
    return _start(config, Path(run_dir), record=None, stream=stream, overwrite=overwrite)


def resume(run_dir: str | Path, overrides: dict[str, Any] | None = None, *,
           stream: TextIO | None = None) -> TrainResult:
    """Continue the run in run_dir from checkpoints/last.pt, exactly where it stopped."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GankitError(f"--resume {run_dir}: no such run folder")
    path = checkpoint.resolve(run_dir)
    record = checkpoint.load(path)
    config = resumed_config(checkpoint.config_of(record, path), overrides or {})
    return _start(config, run_dir, record=record, stream=stream)


def _start(config: TrainConfig, run_dir: Path, record: dict | None, stream: TextIO | None,
           overwrite: bool = False) -> TrainResult:
    """The processes of the run (one, or torchrun's), its data and speed plan; then _run. A new
    run (record None) gets its folder prepared by rank 0."""
    device = resolve_device(config.device)
    with distributed.initialised(device) as world:
        with world.together("checking the data" + (" and the run folder" if record is None else "")):
            distributed.check_batch(world, config.batch_size)
            dataset = _load_data(config)
            if record is None and world.main:
                runs.prepare_new(run_dir, overwrite=overwrite)
        plan = fast_path_plan(config, world.device, distributed=world.launched)
        with _disk_errors(run_dir), precision_flags(plan, world.device):
            return _run(config, plan, run_dir, dataset, world, record=record, stream=stream)


@contextlib.contextmanager
def _disk_errors(run_dir: Path):
    """A failed write in the run folder (full disk, no permission) becomes one clear message."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or run_dir
        raise GankitError(
            f"cannot write {where}: {exc.strerror or exc}. Checkpoints already in {run_dir} are "
            f"intact; free space or fix permissions, then continue with: gankit train --resume {run_dir}"
        ) from None


def resumed_config(stored: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """The stored config with the flags a resume may change; any other differing flag is an error."""
    changed = {}
    for name, new in overrides.items():
        old = getattr(stored, name)
        if new == old:
            continue
        if name not in RESUMABLE_CHANGES:
            raise ConfigError(
                f"{flag(name)} {new} differs from the run's {name} = {old}; a resumed run keeps its "
                f"training config (only {', '.join(sorted(flag(n) for n in RESUMABLE_CHANGES))} may change)"
            )
        changed[name] = new
    if "max_images" in changed:
        changed.setdefault("epochs", None)
    elif "epochs" in changed:
        changed.setdefault("max_images", None)
    return replace(stored, **changed)


def total_images(config: TrainConfig, dataset: ImageDataset | ToyDataset) -> int:
    """The run's length in images: --max-images, or --epochs passes over the training set."""
    if config.max_images is not None:
        return config.max_images
    if config.epochs is not None:
        if isinstance(dataset, ToyDataset):
            raise ConfigError(f"--epochs has no meaning for a toy distribution ({config.data}); use --max-images")
        return max(1, round(config.epochs * len(dataset)))
    return DEFAULT_MAX_IMAGES


def _load_data(config: TrainConfig) -> ImageDataset | ToyDataset:
    return load_dataset(config.data, split="train", data_dir=config.data_dir,
                        image_size=config.image_size, channels=config.channels)


def _optimizer(config: TrainConfig, params, lr: float, fused: bool = False) -> torch.optim.Optimizer:
    extra = {"fused": True} if fused else {}  # else the constructor's default, as on the CPU
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(config.beta1, config.beta2), **extra)
    return torch.optim.SGD(params, lr=lr, momentum=config.momentum, **extra)


def grad_norm(module: nn.Module) -> torch.Tensor:
    """L2 norm of all of a module's gradients, as a 0-d tensor (no host sync)."""
    norms = [torch.linalg.vector_norm(p.grad) for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


@contextlib.contextmanager
def frozen_batchnorm_stats(*modules: nn.Module):
    """Forward passes that only measure must not move batch-norm running statistics (nor their
    batch counter), so that measuring or not leaves the training state bit-identical."""
    bns = [m for module in modules for m in module.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, (momentum, count) in zip(bns, saved, strict=True):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)  # in place: a CUDA graph keeps its address


def iteration(G: nn.Module, D: nn.Module, opt_G: torch.optim.Optimizer, opt_D: torch.optim.Optimizer,
              reals: list[torch.Tensor], noises: list[torch.Tensor], *, g_loss: str,
              autocast=contextlib.nullcontext, measure: bool = True,
              G_step: nn.Module | None = None, D_step: nn.Module | None = None) -> torch.Tensor:
    """One iteration of Algorithm 1 on minibatches the caller drew: k D steps (one per real
    minibatch in `reals`, with noises[:-1]), then one G step on noises[-1].

    Returns the iteration's statistics in STAT_NAMES order as one (9,) tensor on the device.
    Nothing here waits for the device (no .item(), no copies to the host), so on CUDA the
    iterations queue up, and the whole function can be captured as a CUDA graph.
    measure=False skips the extra forward pass behind d_fake_g_after (NaN in its place).
    G_step and D_step: the DDP wrappers of G and of D on (real, fake) (see distributed.wrap),
    used for the passes whose gradients are averaged over processes; G and D for the others.
    """
    # D steps (k times): ascend V in D's parameters on fresh real and noise minibatches.
    d_stats = []
    for x, z in zip(reals, noises[:-1], strict=True):
        with autocast():
            with torch.no_grad():
                fake = G(z)
            real_logits, fake_logits = D_step(x, fake) if D_step is not None else (D(x), D(fake))
        real_logits, fake_logits = real_logits.float(), fake_logits.float()  # the losses in fp32
        loss_d = discriminator_loss(real_logits, fake_logits)
        opt_D.zero_grad(set_to_none=True)
        loss_d.backward()
        norm_d = grad_norm(D)
        opt_D.step()
        d_stats.append(torch.stack([
            loss_d.detach(), torch.sigmoid(real_logits.detach()).mean(),
            torch.sigmoid(fake_logits.detach()).mean(), norm_d]))
    d_loss, d_real, d_fake, norm_d = torch.stack(d_stats).mean(0)

    # G step: one step on the chosen generator loss; D's weights are held fixed.
    z = noises[-1]
    D.requires_grad_(False)
    try:
        with autocast():
            fake_logits = D((G_step or G)(z)).float()
        loss_g = generator_loss(fake_logits, g_loss)
        opt_G.zero_grad(set_to_none=True)
        loss_g.backward()
        norm_g = grad_norm(G)
        opt_G.step()
        if measure:
            with torch.no_grad(), frozen_batchnorm_stats(G, D), autocast():
                d_fake_after = torch.sigmoid(D(G(z)).float()).mean()  # same z, after G moved
        else:
            d_fake_after = torch.full((), math.nan, device=d_loss.device)
    finally:
        D.requires_grad_(True)

    return torch.stack([
        d_loss, loss_g.detach(), -d_loss, d_real, d_fake,
        torch.sigmoid(fake_logits.detach()).mean(), d_fake_after, norm_d, norm_g,
    ])


@dataclass
class _Pending:
    """An iteration whose statistics are still on the device."""

    iteration: int
    images: int
    time: float  # seconds since the start of training when it was queued
    measured: bool  # whether d_fake_g_after was measured
    stats: torch.Tensor  # (9,), STAT_NAMES order


def _run(config: TrainConfig, plan: Plan, run_dir: Path, dataset: ImageDataset | ToyDataset,
         world: distributed.World, record: dict | None, stream: TextIO | None) -> TrainResult:
    device = world.device
    if not world.main:  # only rank 0 writes: its progress, its logs, its files
        stream = open(os.devnull, "w")  # noqa: SIM115 (closed with the process)
    total = total_images(config, dataset)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    G, D = build_models(config, dataset.shape)
    G, D = G.to(device), D.to(device)
    if plan.channels_last:  # (B, C, H, W) tensors stored as (B, H, W, C): cuDNN's fast layout
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    G_step = D_step = None
    if world.launched:
        G, D, G_step, D_step = distributed.wrap(G, D, world, sync_bn=config.sync_bn == "on")
    opt_G = _optimizer(config, G.parameters(), config.lr_g_resolved, fused=plan.fused)
    opt_D = _optimizer(config, D.parameters(), config.lr_d_resolved, fused=plan.fused)
    batches = batches_for(dataset, config.seed, device)
    noise = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + 1)
    # The snapshot noise is fixed for the whole run, so successive grids show the same z.
    fixed_z = torch.randn(config.grid_size, config.latent_dim,
                          generator=torch.Generator().manual_seed(config.seed + 12_345)).to(device)
    last = run_dir / runs.CHECKPOINTS / checkpoint.LAST

    def restore(record: dict) -> tuple[int, int]:
        """Load a checkpoint's networks, optimisers and RNG states; return its counters."""
        if tuple(record["data_shape"]) != tuple(dataset.shape):
            raise CheckpointError(
                f"{last} was trained on data of shape {tuple(record['data_shape'])}, but {config.data} "
                f"now gives {tuple(dataset.shape)}; resume with the same data and --image-size/--channels"
            )
        checkpoint.load_state(G, record["G"], "the generator", last)
        checkpoint.load_state(D, record["D"], "the discriminator", last)
        checkpoint.load_state(opt_G, record["opt_G"], "the generator's optimiser", last)
        checkpoint.load_state(opt_D, record["opt_D"], "the discriminator's optimiser", last)
        for opt in (opt_G, opt_D):  # the checkpoint's implementation flags may be another device's
            configure_optimizer(opt, fused=plan.fused)
        if graphed is not None:  # new optimiser state tensors: capture again
            graphed.reset()
        _set_rng_state(record["rng"], batches, noise)
        return int(record["progress"]["images_seen"]), int(record["progress"]["iterations"])

    autocast = autocast_for(plan, device, graphs=plan.graphs)

    def run_iteration(reals: list[torch.Tensor], noises: list[torch.Tensor], measure: bool) -> torch.Tensor:
        return iteration(G, D, opt_G, opt_D, reals, noises, g_loss=config.g_loss, autocast=autocast,
                         measure=measure, G_step=G_step, D_step=D_step)

    graphed = (GraphedIteration(run_iteration, [opt_G, opt_D], on_fallback=lambda line: progress.message(line))
               if plan.graphs else None)
    images_seen = iterations = rollbacks = 0
    best_fid: float | None = None
    if record is not None:
        images_seen, iterations = restore(record)
        best_fid = record["progress"].get("best_fid")
        if world.main:
            runs.truncate_metrics(run_dir, images_seen)
            runs.remove_stale_temp_files(run_dir)

    if world.main:
        write_json(run_dir / runs.CONFIG, {
            "config": {**config.to_dict(), "max_images_resolved": total},
            "dataset": {"name": dataset.name, "shape": list(dataset.shape),
                        "size": len(dataset) if isinstance(dataset, ImageDataset) else None,
                        "source": getattr(dataset, "source", dataset.name)},
            "gankit_version": gankit.__version__,
            "torch_version": torch.__version__,
            "device": str(device),
            "processes": world.size,
            "speed": plan.to_dict(),
            "params": {"G": sum(p.numel() for p in G.parameters()),
                       "D": sum(p.numel() for p in D.parameters())},
        })

    def save_checkpoint(path: Path = last) -> Path:
        if not world.main:
            return path
        checkpoint.save(path, {
            "config": json.dumps(config.to_dict(), sort_keys=True),
            "data_shape": list(dataset.shape),
            "G": G.state_dict(), "D": D.state_dict(),
            "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(),
            "progress": {"images_seen": images_seen, "iterations": iterations, "best_fid": best_fid},
            "rng": _rng_state(batches, noise),
        })
        return path

    def evaluate_now() -> None:
        """The cheap protocol during training; keeps best.pt by FID. Its row says when it began
        (the iteration rows' clock) and how long it took, so that time to a given FID can be
        read off metrics.jsonl with or without the evaluations' own time."""
        nonlocal best_fid
        began = time.perf_counter()
        G.eval()  # every process generates its share of the samples; rank 0 scores them all
        mine = generate(G, config.eval_samples, config.seed, config.latent_dim, part=(world.rank, world.size))
        G.train()
        parts = world.gather(mine)
        if not world.main:
            return
        metrics, _ = score_samples(interleave(parts), config, seed=config.seed, log=progress.stream)
        row = {"event": "eval", "images": images_seen, "time": round(began - started, 3), **metrics}
        metrics.pop("n_samples", None)
        text = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        if "fid" in metrics and (best_fid is None or metrics["fid"] < best_fid):
            best_fid = metrics["fid"]
            save_checkpoint(run_dir / runs.CHECKPOINTS / checkpoint.BEST)
            text += " (best so far: saved checkpoints/best.pt)"
        row["seconds"] = round(time.perf_counter() - began, 3)
        metrics_file.file.write(json.dumps(row) + "\n")
        progress.message(f"gankit: eval at {images_seen} images ({config.eval_samples} samples, "
                         f"{row['seconds']:.1f} s): {text}")

    diagnostics = Diagnostics(g_loss=config.g_loss)

    def snapshot() -> None:
        if not world.main:
            return
        G.eval()
        with torch.no_grad():
            fake = G(fixed_z)
        G.train()
        name = run_dir / runs.SAMPLES / f"{images_seen:09d}.png"
        if isinstance(dataset, ImageDataset):
            save_grid(fake, name)
            real = dataset.to_float(dataset.images[: config.grid_size])
        else:
            real = dataset.sample(config.grid_size, torch.Generator().manual_seed(0))
            if dataset.shape[0] == 2:
                save_png(scatter(fake, dataset.sample(512, torch.Generator().manual_seed(0))), name)
        if iterations >= diagnostics.window:  # an untrained G is not diverse yet; that is no collapse
            report(diagnostics.check_diversity(fake, real))

    def report(findings: list[Finding], images: int | None = None) -> None:
        for finding in findings:
            progress.message(f"gankit: warning: {finding.message}")
            metrics_file.file.write(json.dumps({
                "event": "warning", "kind": finding.kind,
                "images": images_seen if images is None else images, "message": finding.message}) + "\n")

    pending: list[_Pending] = []  # iterations queued on the device, not read yet
    stop_agreed = False  # under torchrun: some rank got SIGINT/SIGTERM (known at the next read)
    last_after = math.nan  # the latest measured d_fake_g_after, shown while it is not measured

    def read_pending() -> bool:
        """Read the queued iterations' statistics (one host sync) and handle them in order: the
        NaN/Inf check, diagnostics, metrics rows, progress line. False if training rolled back."""
        nonlocal images_seen, iterations, rollbacks, stats, last_after, stop_agreed
        if not pending:
            return True
        queued = list(pending)
        pending.clear()
        table = torch.stack([p.stats for p in queued])  # (iterations, len(STAT_NAMES))
        if world.launched:
            # One all-reduce: the statistics of the global minibatches (the mean over ranks of
            # their slices' means), and whether any rank was asked to stop. Every decision below
            # is taken from these shared numbers, so all ranks take it together.
            asked = torch.tensor([float(stop.signal is not None)], device=table.device)
            flat = world.sum(torch.cat([table.flatten(), asked]))
            stop_agreed = stop_agreed or bool(flat[-1] > 0)
            table = (flat[:-1] / world.size).view_as(table)
        for row, values in zip(queued, table.tolist(), strict=True):
            row_stats = dict(zip(STAT_NAMES, values, strict=True))
            if not row.measured:
                row_stats["d_fake_g_after"] = last_after
            if not all(math.isfinite(v) for v in row_stats.values()):
                bad = ", ".join(f"{k} = {v}" for k, v in row_stats.items() if not math.isfinite(v))
                where = f"iteration {row.iteration} ({row.images} images): {bad}"
                if config.on_nan == "rollback" and rollbacks < MAX_ROLLBACKS and last.is_file():
                    # Back to the last good checkpoint, with both learning rates halved. Iterations
                    # queued after the bad one are dropped with it.
                    rollbacks += 1
                    diverged_lrs = [[g["lr"] for g in opt.param_groups] for opt in (opt_G, opt_D)]
                    images_seen, iterations = restore(checkpoint.load(last))
                    for opt, lrs in zip((opt_G, opt_D), diverged_lrs, strict=True):
                        for group, lr in zip(opt.param_groups, lrs, strict=True):
                            group["lr"] = lr * 0.5
                    metrics_file.truncate(images_seen)
                    event = {"event": "rollback", "images": images_seen, "diverged_at": where,
                             "lr_g": opt_G.param_groups[0]["lr"], "lr_d": opt_D.param_groups[0]["lr"]}
                    metrics_file.file.write(json.dumps(event) + "\n")
                    progress.message(
                        f"gankit: warning: training diverged at {where}; rolled back to {last} "
                        f"({images_seen} images) with learning rates halved to G {event['lr_g']:g} / "
                        f"D {event['lr_d']:g} (rollback {rollbacks} of {MAX_ROLLBACKS})")
                    return False
                raise TrainingDiverged(
                    f"training diverged at {where}. "
                    + (f"The last good checkpoint is {last}. " if last.is_file() else "No checkpoint was saved yet. ")
                    + ("Rolled back the most times allowed. " if config.on_nan == "rollback" and last.is_file() else "")
                    + "Try lower learning rates (--lr-d / --lr-g), the non-saturating loss, or --on-nan rollback."
                )
            if row.measured:
                last_after = row_stats["d_fake_g_after"]
            stats = row_stats
            report(diagnostics.update(stats), row.images)
            if row.iteration % config.log_every == 0:
                metrics_file.file.write(json.dumps({"iteration": row.iteration, "images": row.images,
                                                    "time": row.time, **stats}) + "\n")
            progress.update(row.images, stats)
        return True

    progress = Progress(total, start=images_seen, stream=stream)
    m = config.batch_size
    share = world.share(m) if world.launched else None  # this process's rows of each minibatch

    def mine(x: torch.Tensor) -> torch.Tensor:
        return x if share is None else x[share]

    progress.message(
        f"gankit: training {config.model} on {dataset.name} {tuple(dataset.shape)} on {device}, "
        f"k={config.k}, batch {config.batch_size}, {config.g_loss} G loss, {config.optimizer} "
        f"lr G {config.lr_g_resolved:g} / D {config.lr_d_resolved:g}; run folder {run_dir}"
        + (f"; {world.size} processes (batch {m // world.size} each, batch norm "
           f"{'over the global batch' if config.sync_bn == 'on' else 'per process'})" if world.launched else "")
    )
    if device.type == "cuda" or plan.reasons:  # on the CPU, only when something asked for is not done
        progress.message(plan.describe())
    if isinstance(batches, StreamedImageBatches):
        progress.message("gankit: the images do not fit in half the free GPU memory: they stay in pinned host "
                         "memory and a background thread gathers the minibatches ahead of the step")
    if images_seen == 0:
        snapshot()
    # Under torchrun a stop is agreed at the next read of the statistics; a process that cannot
    # get there (a peer died inside a collective) exits after a grace period instead of hanging.
    stop = _StopFlag(grace=STOP_GRACE if world.launched else None)
    stats: dict[str, float] = {}
    started = time.perf_counter()
    measured_once = False
    metrics_path = run_dir / runs.METRICS if world.main else None
    with stop.installed(), contextlib.closing(batches), contextlib.closing(_Reopenable(metrics_path)) as metrics_file:
        while images_seen < total:
            # This iteration's minibatches, in the order the step uses them: k real batches (the
            # data order is a counter) and k + 1 noise batches, from the run's own generators.
            reals = [batches.next(m, share) for _ in range(config.k)]
            if plan.channels_last:
                reals = [x.contiguous(memory_format=torch.channels_last) for x in reals]
            noises = [mine(torch.randn(m, config.latent_dim, device=device, generator=noise))
                      for _ in range(config.k + 1)]
            # D(G(z)) after the G step costs a G and a D forward pass; it is measured on the
            # iterations whose rows are logged (all of them by default), the first and the last.
            measure = (graphed is not None or (iterations + 1) % config.log_every == 0
                       or not measured_once or images_seen + config.k * m >= total)
            measured_once = measured_once or measure

            # One iteration of Algorithm 1: k D steps, then one G step (see iteration()).
            out = graphed(reals, noises) if graphed is not None else run_iteration(reals, noises, measure)
            iterations += 1
            images_seen += config.k * m
            pending.append(_Pending(iterations, images_seen, round(time.perf_counter() - started, 3),
                                    measure, out))

            # Logging / divergence check: the queued statistics are read every --sync-every
            # iterations, and before anything that must see a consistent state.
            done = images_seen >= total
            before = images_seen - config.k * m
            snap = done or images_seen // config.snapshot_every > before // config.snapshot_every
            ckpt = done or images_seen // config.checkpoint_every > before // config.checkpoint_every
            evaluating = bool(config.eval_every) and (
                done or images_seen // config.eval_every > before // config.eval_every)
            # (Under torchrun every rank must read at the same iterations, so a signal waits for
            # the next read, which tells every rank.)
            asked_to_stop = stop.signal is not None and not world.launched
            if (len(pending) >= plan.sync_every or snap or ckpt or evaluating or asked_to_stop) \
                    and not read_pending():
                continue  # rolled back to the last checkpoint
            stopping = stop_agreed if world.launched else stop.signal is not None

            # Snapshots and checkpoints, at the image counts that crossed their intervals.
            if snap:
                snapshot()
            if evaluating:
                evaluate_now()
            if ckpt:
                metrics_file.file.flush()
                save_checkpoint()
            if stopping and not done:
                stop.acknowledge()
                metrics_file.file.flush()
                path = save_checkpoint()
                progress.update(images_seen, stats, force=True)
                progress.close()
                signum = stop.signal or signal.SIGTERM  # under torchrun: maybe another rank's signal
                name = signal.Signals(signum).name
                raise TrainingInterrupted(
                    f"{name} received: stopped at {images_seen} images; checkpoint saved to {path}. "
                    f"Continue with: gankit train --resume {run_dir}",
                    exit_code=128 + signum,
                )
    world.barrier()  # the last checkpoint is on disk before any process reports done
    if stats:
        progress.update(images_seen, stats, force=True)
    else:
        progress.message(f"gankit: nothing to train: the run is already at {images_seen} of {total} "
                         "images; give a larger --max-images or --epochs to continue it")
    progress.close()
    progress.message(f"gankit: done, {images_seen} images in {iterations} iterations; "
                     f"samples in {run_dir / runs.SAMPLES}, checkpoint {run_dir / runs.CHECKPOINTS / checkpoint.LAST}")
    return TrainResult(run_dir, images_seen, iterations, stats)


def _rng_state(batches, noise: torch.Generator) -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "noise": noise.get_state(),
        "data": batches.state_dict(),
        "python": json.dumps(random.getstate()),
        "numpy": json.dumps(_numpy_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], batches, noise: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    noise.set_state(state["noise"])
    batches.load_state_dict(state["data"])
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = json.loads(state["numpy"])
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> list:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]


class _StopFlag:
    """SIGINT/SIGTERM set a flag that the loop reads between iterations, so a checkpoint is
    always taken at a consistent point. A second Ctrl-C stops at once (torchrun passes the
    terminal's Ctrl-C on to workers that already got it: a repeat within a second is the same
    press). With `grace`, a process that has not acknowledged the stop that many seconds later
    exits: it is stuck, e.g. in a collective whose peer is gone."""

    def __init__(self, grace: float | None = None) -> None:
        self.signal: int | None = None
        self.grace = grace
        self._at = 0.0
        self._timer: threading.Timer | None = None

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if self.signal is not None and signum == signal.SIGINT and now - self._at > 1.0:
            raise KeyboardInterrupt
        if self.signal is None:
            self.signal, self._at = signum, now
            if self.grace is not None:
                self._timer = threading.Timer(self.grace, self._expire, args=(signum,))
                self._timer.daemon = True
                self._timer.start()

    def _expire(self, signum: int) -> None:
        sys.stderr.write(f"gankit: error: {signal.Signals(signum).name} received, but this process could not "
                         f"stop cleanly within {self.grace:g} s (another process of the run is probably gone); "
                         "exiting without a new checkpoint\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    def acknowledge(self) -> None:
        """The loop is stopping cleanly: no forced exit."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            self.acknowledge()
            for s, handler in previous.items():
                signal.signal(s, handler)


class _Reopenable:
    """The metrics log, which a rollback truncates (a new file) and reopens. path None: nowhere
    (the processes other than rank 0)."""

    def __init__(self, path: Path | None):
        self.path = path
        self.file = open(path if path is not None else os.devnull, "a")

    def truncate(self, images: int) -> None:
        if self.path is None:
            return
        self.file.close()
        runs.truncate_metrics(self.path.parent, images)
        self.file = open(self.path, "a")

    def close(self) -> None:
        self.file.close()
