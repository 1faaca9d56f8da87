"""The training loop: Algorithm 1 of Goodfellow et al. (2014), k discriminator steps per generator step.

Progress is counted in real images shown to D (k * batch_size per iteration), so schedules do not
depend on the batch size. Every iteration logs D and G losses, mean D(x), mean D(G(z)) before and
after the G step, the minibatch estimate of V and both gradient norms.

The step itself never waits for the device: each iteration's statistics stay where they were
computed and are read in one go every --sync-every iterations (and before every snapshot,
evaluation, checkpoint or stop), then checked and logged row by row, in order. (One exception,
which the speed line names: torchrun with several CUDA processes and --sync-bn on, where torch's
SyncBatchNorm waits for the GPU in every batch-norm layer; --sync-bn off does not.) How the
arithmetic is done (precision, fused optimisers, memory format, CUDA graphs) is fastpath.py's;
what the run's state is and what a checkpoint holds is state.py's.

Reading order: train() / resume() -> _start (processes, data, speed plan) -> _run (state, run
folder, the first lines) -> training_loop (the loop, in six phases) and the helpers it calls.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn
from torch.nn.utils.parametrizations import _SpectralNorm  # --d-norm spectral's parametrisation

from gankit import checkpoint, distributed, ema, memformat, runs, tblog
from gankit.augment import Augmented
from gankit.config import TrainConfig
from gankit.data import ImageDataset, ToyDataset, class_frequencies, load_dataset, subset
from gankit.data.batches import StreamedImageBatches
from gankit.devices import resolve_device
from gankit.diagnostics import Diagnostics, Finding
from gankit.errors import ConfigError, DataError, GankitError, TrainingDiverged, TrainingInterrupted
from gankit.evaluate import EvalProtocol, score_samples
from gankit.fastpath import GraphedIteration, Plan, autocast_for, fast_path_plan, precision_flags
from gankit.imagegrid import label_rows, make_grid, save_grid, save_png, scatter
from gankit.losses import discriminator_loss, generator_loss
from gankit.models.conditional import MAX_CLASSES, join_noise, split
from gankit.progress import Progress
from gankit.runlog import MetricsLog, write_config
from gankit.sample import generate, interleave, sample_classes
from gankit.state import TrainState, build_state, draw_noise
from gankit.stopsignal import STOP_GRACE, StopFlag

__all__ = ["STAT_NAMES", "TrainResult", "TrainingDiverged", "TrainingInterrupted", "iteration",
           "resume", "train"]

DEFAULT_MAX_IMAGES = 600_000  # 10 epochs of (Fashion-)MNIST when neither --max-images nor --epochs is given
MAX_ROLLBACKS = 3  # --on-nan rollback: give up after this many
STAT_NAMES = ("d_loss", "g_loss", "value", "d_real", "d_fake", "d_fake_g_before",
              "d_fake_g_after", "grad_norm_d", "grad_norm_g")


@dataclass
class TrainResult:
    run_dir: Path
    images_seen: int
    iterations: int
    last_stats: dict[str, float]


# --- starting a run ---------------------------------------------------------------------------

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
    config = checkpoint.config_of(record, path).resumed(overrides or {})
    return _start(config, run_dir, record=record, stream=stream)


def _start(config: TrainConfig, run_dir: Path, record: dict | None, stream: TextIO | None,
           overwrite: bool = False) -> TrainResult:
    """The processes of the run (one, or torchrun's), its data and speed plan; then _run. A new
    run (record None) gets its folder prepared by rank 0."""
    device = resolve_device(config.device)
    with distributed.initialised(device) as world:
        with world.together("checking the data" + (" and the run folder" if record is None else "")):
            distributed.check_batch(world, config.batch_size, config.pack)
            dataset = load_dataset(config.data, split="train", data_dir=config.data_dir,
                                   image_size=config.image_size, channels=config.channels)
            if config.max_train_images is not None:  # the small-data runs: the same N images for every seed
                dataset = subset(dataset, config.max_train_images)
            if config.conditional:  # a clear error for data without (enough) labels, before any folder exists
                check_classes(dataset)
            if record is None and world.main:
                runs.prepare_new(run_dir, overwrite=overwrite)
        # --memory-format auto: measured on the CPU (or cached), the same on every rank; recorded in
        # the config the run stores, which --resume then keeps (memformat.py).
        config, layout = memformat.choose(config, tuple(dataset.shape),
                                          len(dataset.classes) if config.conditional else None, world)
        plan = fast_path_plan(config, world.device, distributed=world.launched, processes=world.size,
                              layout_note=layout.note())
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


def check_classes(dataset: ImageDataset | ToyDataset) -> None:
    """DataError unless the dataset has labels of 2 to MAX_CLASSES classes (--conditional)."""
    count = len(class_frequencies(dataset))
    if not 2 <= count <= MAX_CLASSES:
        raise DataError(f"--conditional: {dataset.name} has {count} class{'es' if count != 1 else ''}; a "
                        f"conditional GAN needs 2 to {MAX_CLASSES} (for a folder: one subfolder per class)")


def total_images(config: TrainConfig, dataset: ImageDataset | ToyDataset) -> int:
    """The run's length in images: --max-images, or --epochs passes over the training set."""
    if config.max_images is not None:
        return config.max_images
    if config.epochs is not None:
        if isinstance(dataset, ToyDataset):
            raise ConfigError(f"--epochs has no meaning for a toy distribution ({config.data}); use --max-images")
        return max(1, round(config.epochs * len(dataset)))
    return DEFAULT_MAX_IMAGES


# --- Algorithm 1 --------------------------------------------------------------------------------

def grad_norm(module: nn.Module) -> torch.Tensor:
    """L2 norm of all of a module's gradients, as a 0-d tensor (no host sync)."""
    norms = [torch.linalg.vector_norm(p.grad) for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


@contextlib.contextmanager
def frozen_batchnorm_stats(*modules: nn.Module):
    """Forward passes that only measure must not move batch-norm running statistics (nor their
    batch counter), spectral norm's power-iteration vectors (--d-norm spectral) or the
    augmentation's random stream (--augment), so that measuring or not leaves the training state
    bit-identical."""
    every = [m for module in modules for m in module.modules()]
    bns = [m for m in every if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    norms = [m for m in every if isinstance(m, _SpectralNorm) and m.training]
    for m in norms:
        m.eval()  # W / sigma with the current u, v: no power iteration
    augments = [(m, m.generator.get_state()) for m in every if isinstance(m, Augmented)]
    try:
        yield
    finally:
        for m, (momentum, count) in zip(bns, saved, strict=True):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)  # in place: a CUDA graph keeps its address
        for m in norms:
            m.train()
        for m, state in augments:
            m.generator.set_state(state)


def iteration(G: nn.Module, D: nn.Module, opt_G: torch.optim.Optimizer, opt_D: torch.optim.Optimizer,
              reals: list[torch.Tensor], noises: list[torch.Tensor], *, G_step: nn.Module,
              D_step: nn.Module, g_loss: str, autocast=contextlib.nullcontext,
              measure: bool = True) -> torch.Tensor:
    """One iteration of Algorithm 1 on minibatches the caller drew: k D steps (one per real
    minibatch in `reals`, with noises[:-1]), then one G step on noises[-1].

    Returns the iteration's statistics in STAT_NAMES order as one (9,) tensor on the device.
    Nothing here waits for the device (no .item(), no copies to the host), so on CUDA the
    iterations queue up, and the whole function can be captured as a CUDA graph.
    measure=False skips the extra forward pass behind d_fake_g_after (NaN in its place).
    G_step and D_step (distributed.wrap): G, and D on (real, fake), for the passes whose
    gradients are averaged over processes; G and D themselves for the others.
    """
    # D steps (k times): ascend V in D's parameters on fresh real and noise minibatches.
    d_stats = []
    for x, z in zip(reals, noises[:-1], strict=True):
        with autocast():
            with torch.no_grad():
                fake = G(z)
            real_logits, fake_logits = D_step(x, fake)
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
            fake_logits = D(G_step(z)).float()
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
class EagerIteration:
    """iteration() on a run's state, called as GraphedIteration is: (reals, noises, measure)."""

    state: TrainState
    g_loss: str
    autocast: Any

    def __call__(self, reals: list[torch.Tensor], noises: list[torch.Tensor], measure: bool = True) -> torch.Tensor:
        s = self.state
        return iteration(s.G, s.D, s.opt_G, s.opt_D, reals, noises, G_step=s.G_step, D_step=s.D_step,
                         g_loss=self.g_loss, autocast=self.autocast, measure=measure)

    def reset(self) -> None:
        """Nothing to do after new weights or optimiser state (a CUDA graph must capture again)."""


# --- the run ------------------------------------------------------------------------------------

@dataclass
class Run:
    """What the loop works with, fixed for the length of the run."""

    config: TrainConfig
    plan: Plan
    world: distributed.World
    dir: Path
    dataset: ImageDataset | ToyDataset
    total: int  # images to train to
    log: MetricsLog
    progress: Progress
    diagnostics: Diagnostics
    fixed_z: torch.Tensor  # the snapshot noise: successive grids show the same z
    started: float = 0.0  # perf_counter() when the loop began: the rows' clock

    @property
    def last(self) -> Path:
        return self.dir / runs.CHECKPOINTS / checkpoint.LAST


@dataclass
class Pending:
    """An iteration whose statistics are still on the device."""

    iteration: int
    images: int
    time: float  # seconds since the start of training when it was queued
    measured: bool  # whether d_fake_g_after was measured
    stats: torch.Tensor  # (9,), STAT_NAMES order


@dataclass
class Reading:
    """The queued iterations and what reading them has found so far."""

    pending: list[Pending] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)  # the latest row read
    last_after: float = math.nan  # the latest measured d_fake_g_after, shown while it is not measured
    stop_agreed: bool = False  # under torchrun: some rank got SIGINT/SIGTERM (known at a read)
    rollbacks: int = 0


def _run(config: TrainConfig, plan: Plan, run_dir: Path, dataset: ImageDataset | ToyDataset,
         world: distributed.World, record: dict | None, stream: TextIO | None) -> TrainResult:
    """Build the state (from the checkpoint `record` on resume), open the run folder, train, and
    say where everything is."""
    state = build_state(config, dataset, plan, world)
    notes = [] if record is None else state.load_state_dict(record, run_dir / runs.CHECKPOINTS / checkpoint.LAST)
    run = open_run(config, plan, run_dir, dataset, world, state, stream, resumed=record is not None)
    step = _make_step(run, state)
    _announce(run, state)
    for note in notes:  # what of the checkpoint could not be restored on this machine
        run.progress.message(note)
    if state.images_seen == 0:
        snapshot(run, state)
    # Under torchrun a stop is agreed at the next read of the statistics; a process that cannot
    # get there (a peer died inside a collective) exits after a grace period instead of hanging.
    stop = StopFlag(grace=STOP_GRACE if world.launched else None)
    with stop.installed(), contextlib.closing(state.batches), contextlib.closing(run.log):
        reading = training_loop(run, state, step, stop)
        if isinstance(step, GraphedIteration):  # whether the graph was used, in the log and on the console
            run.log.event("cuda_graph", state.images_seen, **step.counts())
            run.progress.message(step.describe())
    world.barrier()  # the last checkpoint is on disk before any process reports done
    _finish(run, state, reading.stats)
    return TrainResult(run_dir, state.images_seen, state.iterations, reading.stats)


def open_run(config: TrainConfig, plan: Plan, run_dir: Path, dataset: ImageDataset | ToyDataset,
             world: distributed.World, state: TrainState, stream: TextIO | None, resumed: bool) -> Run:
    """The Run for a state: its metrics log (cut back to the checkpoint on resume), config.json,
    the progress line and the snapshot noise. Only rank 0 writes, to the folder or the console."""
    if not world.main:
        stream = open(os.devnull, "w")  # noqa: SIM115 (closed with the process)
    log = MetricsLog(run_dir / runs.METRICS if world.main else None)
    if resumed and world.main:
        log.truncate(state.images_seen)  # rows written after the checkpoint, before a crash
        runs.remove_stale_temp_files(run_dir)
    total = total_images(config, dataset)
    if world.main:
        write_config(run_dir, config, total, dataset, world.device, world.size, plan.to_dict(), state.G, state.D)
    tensorboard_missing = world.main and config.tensorboard == "on" and not tblog.available()
    if world.main and config.tensorboard == "on" and not tensorboard_missing:  # rewritten up to the checkpoint
        log.mirror = tblog.TensorBoardLog(run_dir, state.images_seen)
    fixed_z = snapshot_noise(config, state.classes).to(world.device)
    end = planned_end(total, state.images_seen, config.k * config.batch_size)
    progress = Progress(end, start=state.images_seen, stream=stream)
    if tensorboard_missing:
        progress.message(tblog.missing_note())
    return Run(config, plan, world, run_dir, dataset, total, log, progress, Diagnostics(g_loss=config.g_loss), fixed_z)


def snapshot_noise(config: TrainConfig, classes: tuple[str, ...] | None) -> torch.Tensor:
    """The snapshot grids' noise (grid_size, latent_dim); a conditional run's, one row of the grid
    per class (grid_size // K columns, at least 1), with the classes joined on."""
    g = torch.Generator().manual_seed(config.seed + 12_345)
    if classes is None:
        return torch.randn(config.grid_size, config.latent_dim, generator=g)
    per_class = max(1, config.grid_size // len(classes))
    z = torch.randn(per_class * len(classes), config.latent_dim, generator=g)
    return join_noise(z, torch.arange(len(classes)).repeat_interleave(per_class))


def _make_step(run: Run, state: TrainState) -> EagerIteration | GraphedIteration:
    eager = EagerIteration(state, run.config.g_loss, autocast_for(run.plan, run.world.device))
    if not run.plan.graphs:
        return eager
    # Captured, autocast must not cache its casts; after a failed capture, the eager loop's caching one.
    captured = EagerIteration(state, run.config.g_loss, autocast_for(run.plan, run.world.device, graphs=True))
    return GraphedIteration(captured, list(state.optimizers), on_fallback=run.progress.message, eager=eager)


def planned_end(total: int, start: int, per_iteration: int) -> int:
    """The image count the run stops at: `total` rounded up to whole iterations from `start`."""
    return start + math.ceil(max(total - start, 0) / per_iteration) * per_iteration


def _announce(run: Run, state: TrainState) -> None:
    """The run's first lines: what is trained on what (naming the files), and how fast it is done."""
    config, world = run.config, run.world
    source = getattr(run.dataset, "source", None)  # toy distributions have no files
    run.progress.message(
        f"gankit: training {config.model} on {run.dataset.name} {tuple(run.dataset.shape)}"
        + (f" from {source}" if source else "") + f" on {world.device}"
        + (f" (a fixed subset of {config.max_train_images} images)" if config.max_train_images else "")
        + (f", conditional on {len(state.classes)} classes ({_class_list(state.classes)})" if state.classes else "")
        + f", k={config.k}, batch {config.batch_size}, {config.g_loss} G loss, {config.optimizer} "
        f"lr G {config.lr_g_resolved:g} / D {config.lr_d_resolved:g}; run folder {run.dir}"
        + _levers(config)
        + (f"; {world.size} processes (batch {config.batch_size // world.size} each, batch norm "
           f"{'over the global batch' if config.sync_bn == 'on' else 'per process'})" if world.launched else "")
    )
    per_iteration = config.k * config.batch_size
    end = planned_end(run.total, state.images_seen, per_iteration)
    if end != run.total and end > state.images_seen:
        run.progress.message(
            f"gankit: the run's length, {run.total} images, is rounded up to whole iterations of k x batch = "
            f"{per_iteration} images: it trains to {end} images ({(end - state.images_seen) // per_iteration} "
            f"iteration{'s' if end - state.images_seen > per_iteration else ''})")
    # On the CPU, only when something asked for is not done, or the layout was chosen by measuring.
    if world.device.type == "cuda" or run.plan.reasons or run.plan.layout_note:
        run.progress.message(run.plan.describe())
    if isinstance(state.batches, StreamedImageBatches):
        run.progress.message("gankit: the images do not fit in half the free GPU memory: they stay in pinned host "
                             "memory and a background thread gathers the minibatches ahead of the step")


def _levers(config: TrainConfig) -> str:
    """The quality levers that are on (docs/quality.md), for the first line."""
    on = [f"D {config.d_norm} norm"] if config.d_norm != "batch" else []
    if config.g_ema:
        on.append(f"EMA of G, half-life {config.g_ema:g} images"
                  + (f" (ramp-up {config.g_ema_rampup:g})" if config.g_ema_rampup else ""))
    if config.augment != "off":
        on.append(f"{config.augment} augmentation")
    return "; " + ", ".join(on) if on else ""


def _class_list(classes: tuple[str, ...], most: int = 10) -> str:
    return ", ".join(classes[:most]) + (f", ... ({len(classes) - most} more)" if len(classes) > most else "")


def training_loop(run: Run, state: TrainState, step, stop: StopFlag) -> Reading:
    """Algorithm 1 until the run's length, with everything a run does between iterations."""
    config, world = run.config, run.world
    m, per_iteration = config.batch_size, config.k * config.batch_size
    share = world.share(m) if world.launched else None  # this process's rows of each minibatch
    reading = Reading()
    measured_once = False
    run.started = time.perf_counter()
    while state.images_seen < run.total:
        # 1. This iteration's minibatches, in the order the step uses them: k real batches (the
        # data order is a counter) and k + 1 noise batches, from the run's own generators.
        reals = [state.batches.next(m, share) for _ in range(config.k)]
        if run.plan.channels_last:
            reals = [x.contiguous(memory_format=torch.channels_last) for x in reals]
        noises = [draw_noise(state.noise, m, config.latent_dim, world.device, share,  # on the CPU: see state.py
                             state.class_weights) for _ in range(config.k + 1)]
        # D(G(z)) after the G step costs a G and a D forward pass; it is measured on the
        # iterations whose rows are logged (all of them by default), the first and the last.
        measure = (run.plan.graphs or (state.iterations + 1) % config.log_every == 0
                   or not measured_once or state.images_seen + per_iteration >= run.total)
        measured_once = measured_once or measure

        # 2. One iteration of Algorithm 1: k D steps, then one G step (see iteration()); then
        # the EMA of G's weights, outside the iteration (and a CUDA graph) by design (ema.py).
        out = step(reals, noises, measure)
        if state.G_ema is not None:
            ema.update(state.G_ema, state.G, ema.decay(per_iteration, state.images_seen, config.g_ema,
                                                       config.g_ema_rampup))
        state.iterations += 1
        state.images_seen += per_iteration

        # 3. Its statistics stay on the device, queued.
        reading.pending.append(Pending(state.iterations, state.images_seen,
                                       round(time.perf_counter() - run.started, 3), measure, out))

        # 4. A sync point every --sync-every iterations and before anything that must see a
        # consistent state: read, check and log the queue. (Under torchrun every rank must read
        # at the same iterations, so a signal waits for the next read, which tells every rank.)
        done = state.images_seen >= run.total
        due = {name: bool(every) and (done or crossed(state.images_seen, per_iteration, every))
               for name, every in (("snapshot", config.snapshot_every), ("checkpoint", config.checkpoint_every),
                                   ("eval", config.eval_every))}
        asked_to_stop = stop.signal is not None and not world.launched
        if (len(reading.pending) >= run.plan.sync_every or any(due.values()) or asked_to_stop) \
                and not read_pending(run, state, step, reading, stop):
            continue  # rolled back to the last checkpoint
        stopping = reading.stop_agreed if world.launched else stop.signal is not None

        # 5. Snapshots, evaluations and checkpoints, at the image counts that crossed their intervals.
        if due["snapshot"]:
            snapshot(run, state)
        if due["eval"]:
            evaluate_now(run, state)
        if due["checkpoint"]:
            run.log.flush()
            save_checkpoint(run, state)

        # 6. Stop on a signal, with a checkpoint and the command that continues the run.
        if stopping and not done:
            stop_on_signal(run, state, reading, stop)
    return reading


def crossed(images: int, step: int, every: int) -> bool:
    """Whether going from images - step to images crossed a multiple of `every`."""
    return images // every > (images - step) // every


# --- between iterations -----------------------------------------------------------------------

def read_pending(run: Run, state: TrainState, step, reading: Reading, stop: StopFlag) -> bool:
    """Read the queued iterations' statistics (one host sync) and handle them in order: the
    NaN/Inf check, diagnostics, metrics rows, progress line. False if training rolled back."""
    if not reading.pending:
        return True
    queued, reading.pending = reading.pending, []
    table = torch.stack([p.stats for p in queued])  # (iterations, len(STAT_NAMES))
    if run.world.launched:
        table = _agree(run.world, table, reading, stop)
    for row, values in zip(queued, table.tolist(), strict=True):
        stats = dict(zip(STAT_NAMES, values, strict=True))
        if not row.measured:
            stats["d_fake_g_after"] = reading.last_after
        if not all(math.isfinite(v) for v in stats.values()):
            bad = ", ".join(f"{k} = {v}" for k, v in stats.items() if not math.isfinite(v))
            where = f"iteration {row.iteration} ({row.images} images): {bad}"
            if run.config.on_nan == "rollback" and reading.rollbacks < MAX_ROLLBACKS and run.last.is_file():
                rollback(run, state, step, reading, where)  # iterations queued after it are dropped
                return False
            raise _diverged(run, where)
        if row.measured:
            reading.last_after = stats["d_fake_g_after"]
        reading.stats = stats
        report(run, run.diagnostics.update(stats), row.images)
        if row.iteration % run.config.log_every == 0:
            run.log.row(row.iteration, row.images, row.time, stats)
        run.progress.update(row.images, stats)
    return True


def _agree(world: distributed.World, table: torch.Tensor, reading: Reading, stop: StopFlag) -> torch.Tensor:
    """One all-reduce: the statistics of the global minibatches (the mean over ranks of their
    slices' means), and whether any rank was asked to stop. Every decision the loop takes is
    taken from these shared numbers, so all ranks take it together."""
    asked = torch.tensor([float(stop.signal is not None)], device=table.device)
    flat = world.sum(torch.cat([table.flatten(), asked]))
    reading.stop_agreed = reading.stop_agreed or bool(flat[-1] > 0)
    return (flat[:-1] / world.size).view_as(table)


def _diverged(run: Run, where: str) -> TrainingDiverged:
    saved = run.last.is_file()
    return TrainingDiverged(
        f"training diverged at {where}. "
        + (f"The last good checkpoint is {run.last}. " if saved else "No checkpoint was saved yet. ")
        + ("Rolled back the most times allowed. " if run.config.on_nan == "rollback" and saved else "")
        + "Try lower learning rates (--lr-d / --lr-g), the non-saturating loss, or --on-nan rollback."
    )


def rollback(run: Run, state: TrainState, step, reading: Reading, where: str) -> None:
    """Back to the last good checkpoint (the same call as a resume), with both learning rates
    halved; the metrics rows past it are dropped."""
    reading.rollbacks += 1
    diverged_lrs = [[g["lr"] for g in opt.param_groups] for opt in state.optimizers]
    state.load_state_dict(checkpoint.load(run.last), run.last)
    step.reset()  # new optimiser state tensors: a CUDA graph captures again
    for opt, lrs in zip(state.optimizers, diverged_lrs, strict=True):
        for group, lr in zip(opt.param_groups, lrs, strict=True):
            group["lr"] = lr * 0.5
    run.log.truncate(state.images_seen)
    lr_g, lr_d = state.opt_G.param_groups[0]["lr"], state.opt_D.param_groups[0]["lr"]
    run.log.event("rollback", state.images_seen, diverged_at=where, lr_g=lr_g, lr_d=lr_d)
    run.progress.message(
        f"gankit: warning: training diverged at {where}; rolled back to {run.last} "
        f"({state.images_seen} images) with learning rates halved to G {lr_g:g} / "
        f"D {lr_d:g} (rollback {reading.rollbacks} of {MAX_ROLLBACKS})")


def report(run: Run, findings: list[Finding], images: int) -> None:
    """The failure-mode warnings: on the console and as events in metrics.jsonl."""
    for finding in findings:
        run.progress.message(f"gankit: warning: {finding.message}")
        run.log.event("warning", images, kind=finding.kind, message=finding.message)


def snapshot(run: Run, state: TrainState) -> None:
    """A grid of G(fixed_z) (and for 2-D toy data, a scatter over the data), and the
    mode-collapse check on the same samples."""
    if not run.world.main:
        return
    G, config = state.sampler, run.config  # the EMA generator when there is one (always in eval mode)
    training = G.training
    G.eval()
    with torch.no_grad():
        fake = G(run.fixed_z)
    G.train(training)
    if state.classes is not None:  # drop the labels (models/conditional.py); the grid has a row per class
        fake = split(fake)[0]
    name = run.dir / runs.SAMPLES / f"{state.images_seen:09d}.png"
    if isinstance(run.dataset, ImageDataset):
        if state.classes:  # one labelled row per class
            per_class = len(fake) // len(state.classes)
            save_png(label_rows(make_grid(fake, nrow=per_class), list(state.classes), fake.shape[2]), name)
        else:
            save_grid(fake, name)
        real = run.dataset.to_float(run.dataset.images[: config.grid_size])
    else:
        real = run.dataset.sample(config.grid_size, torch.Generator().manual_seed(0))
        if run.dataset.shape[0] == 2:
            save_png(scatter(fake, run.dataset.sample(512, torch.Generator().manual_seed(0))), name)
    if name.is_file():
        run.log.image(state.images_seen, name)
    if state.iterations >= run.diagnostics.window:  # an untrained G is not diverse yet; that is no collapse
        report(run, run.diagnostics.check_diversity(fake, real), state.images_seen)


def evaluate_now(run: Run, state: TrainState) -> None:
    """The cheap protocol during training; keeps best.pt by FID. Its row says when it began
    (the iteration rows' clock) and how long it took, so that time to a given FID can be
    read off metrics.jsonl with or without the evaluations' own time."""
    began = time.perf_counter()
    config, world = run.config, run.world
    G = state.sampler  # the EMA generator when there is one (always in eval mode)
    training = G.training
    G.eval()  # every process generates its share of the samples; rank 0 scores them all
    labels = sample_classes(G, config.eval_samples, config.seed)  # None unless conditional
    mine = generate(G, config.eval_samples, config.seed, config.latent_dim, part=(world.rank, world.size),
                    classes=labels)
    G.train(training)
    parts = world.gather(mine)
    if not world.main:
        return
    protocol = EvalProtocol.for_training(config)
    metrics, record = score_samples(interleave(parts), config, protocol, log=run.progress.stream, labels=labels)
    row = {"time": round(began - run.started, 3), **metrics}
    metrics.pop("n_samples", None)
    text = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    if "fid" in metrics and (state.best_fid is None or metrics["fid"] < state.best_fid):
        state.best_fid = metrics["fid"]
        save_checkpoint(run, state, checkpoint.BEST)
        text += " (best so far: saved checkpoints/best.pt)"
    row["seconds"] = round(time.perf_counter() - began, 3)
    # The protocol as asked for, and as it ran (the extractor and its weights' hash, the reference set).
    run.log.event("eval", state.images_seen, **row, protocol={**protocol.to_dict(), **record})
    run.progress.message(f"gankit: eval at {state.images_seen} images ({config.eval_samples} samples, "
                         f"{row['seconds']:.1f} s): {text}")


def save_checkpoint(run: Run, state: TrainState, name: str = checkpoint.LAST) -> Path:
    path = run.dir / runs.CHECKPOINTS / name
    if run.world.main:
        checkpoint.save(path, state.state_dict())
    return path


def stop_on_signal(run: Run, state: TrainState, reading: Reading, stop: StopFlag) -> None:
    """Save a checkpoint and raise TrainingInterrupted (exit status 128 + the signal)."""
    stop.acknowledge()
    run.log.flush()
    path = save_checkpoint(run, state)
    run.progress.update(state.images_seen, reading.stats, force=True)
    run.progress.close()
    signum = stop.signal or signal.SIGTERM  # under torchrun: maybe another rank's signal
    raise TrainingInterrupted(
        f"{signal.Signals(signum).name} received: stopped at {state.images_seen} images; checkpoint "
        f"saved to {path}. Continue with: gankit train --resume {run.dir}",
        exit_code=128 + signum,
    )


def _finish(run: Run, state: TrainState, stats: dict[str, float]) -> None:
    if stats:
        run.progress.update(state.images_seen, stats, force=True)
    else:
        run.progress.message(f"gankit: nothing to train: the run is already at {state.images_seen} of "
                             f"{run.total} images; give a larger --max-images or --epochs to continue it")
    run.progress.close()
    run.progress.message(f"gankit: done, {state.images_seen} images in {state.iterations} "
                         f"iteration{'s' if state.iterations != 1 else ''}; "
                         f"samples in {run.dir / runs.SAMPLES}, checkpoint {run.last}")
    run.progress.message(f"gankit: report (one HTML file): gankit report {run.dir}")
    if run.log.mirror is not None:
        run.progress.message(f"gankit: TensorBoard: tensorboard --logdir {run.dir.parent}")
