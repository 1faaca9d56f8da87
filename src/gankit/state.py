"""The state of a training run as one object: what a checkpoint holds, defined once.

TrainState holds the two players, their optimisers, the batch source, the noise generator, the
progress counters and the best FID; with --g-ema, the EMA generator (ema.py); with --augment, the
augmentation's generator (augment.py). Its state_dict() is a checkpoint's payload and
load_state_dict() reads one back: --resume and --on-nan rollback are the same call.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gankit import checkpoint, distributed, ema
from gankit.augment import Augmented
from gankit.config import TrainConfig
from gankit.data import ImageDataset, ToyDataset, class_frequencies
from gankit.data.batches import batches_for, toy_seed
from gankit.errors import CheckpointError
from gankit.fastpath import Plan, configure_optimizer
from gankit.models import build_models
from gankit.models.conditional import draw_classes, join_noise


@dataclass
class TrainState:
    config: TrainConfig
    data_shape: tuple[int, ...]
    G: nn.Module  # the plain players: sampling, measuring and checkpoints use them
    D: nn.Module
    G_step: nn.Module  # the players for the passes whose gradients are averaged over processes
    D_step: nn.Module  # (see distributed.wrap): D_step(real, fake) -> (real logits, fake logits)
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    batches: Any  # ImageBatches, StreamedImageBatches or ToyBatches (data/batches.py)
    noise: torch.Generator  # every z of training is drawn from it (a CPU generator: see draw_noise)
    fused: bool  # the optimisers' implementation this run's plan chose
    classes: tuple[str, ...] | None = None  # --conditional: the class names, index i named classes[i]
    class_weights: torch.Tensor | None = None  # --conditional: p(y), the data's class frequencies (K,), CPU
    images_seen: int = 0  # real images shown to D: k * batch_size per iteration
    iterations: int = 0
    best_fid: float | None = None
    G_ema: nn.Module | None = None  # --g-ema: the moving average of G's weights (ema.py); eval mode
    augment: torch.Generator | None = None  # --augment: every augmentation parameter is drawn from it (CPU)

    @property
    def sampler(self) -> nn.Module:
        """The generator that snapshots, evaluations and checkpoints' users sample: the EMA when there is one."""
        return self.G_ema if self.G_ema is not None else self.G

    @property
    def optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        return self.opt_G, self.opt_D

    def state_dict(self) -> dict[str, Any]:
        """A training checkpoint's payload (checkpoint.save adds the format header)."""
        return {
            "config": json.dumps(self.config.to_dict(), sort_keys=True),
            "data_shape": list(self.data_shape),
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "progress": {"images_seen": self.images_seen, "iterations": self.iterations,
                         "best_fid": self.best_fid},
            "rng": rng_state(self.batches, self.noise, self.augment),
            **({"classes": list(self.classes)} if self.classes is not None else {}),
            **({"G_ema": self.G_ema.state_dict()} if self.G_ema is not None else {}),
        }

    def load_state_dict(self, record: dict[str, Any], path: Path) -> list[str]:
        """Continue from a checkpoint record (as checkpoint.load reads it from `path`). Returns
        the notes for the run's output: what of the record could not be restored here, and why."""
        if tuple(record["data_shape"]) != tuple(self.data_shape):
            raise CheckpointError(
                f"{path} was trained on data of shape {tuple(record['data_shape'])}, but {self.config.data} "
                f"now gives {tuple(self.data_shape)}; resume with the same data and --image-size/--channels"
            )
        if self.classes is not None and [str(c) for c in record.get("classes", [])] != list(self.classes):
            raise CheckpointError(
                f"{path} was trained on the classes {record.get('classes')}, but {self.config.data} now has "
                f"{list(self.classes)}; resume with the same labelled data")
        checkpoint.load_state(self.G, record["G"], "the generator", path)
        checkpoint.load_state(self.D, record["D"], "the discriminator", path)
        checkpoint.load_state(self.opt_G, record["opt_G"], "the generator's optimiser", path)
        checkpoint.load_state(self.opt_D, record["opt_D"], "the discriminator's optimiser", path)
        notes = self._load_ema(record, path)
        for opt in self.optimizers:  # the checkpoint's implementation flags may be another device's
            configure_optimizer(opt, fused=self.fused)
        progress = record["progress"]
        try:
            notes += set_rng_state(record["rng"], self.batches, self.noise, self.config.seed,
                                   int(progress["iterations"]), self.augment)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise CheckpointError(f"{path} holds random-number states that cannot be restored ({type(exc).__name__}: "
                                  f"{exc}); the file is damaged or not one of gankit's checkpoints") from None
        self.images_seen, self.iterations = int(progress["images_seen"]), int(progress["iterations"])
        self.best_fid = progress.get("best_fid")
        return notes

    def _load_ema(self, record: dict[str, Any], path: Path) -> list[str]:
        """The EMA generator from the record; one written without it (before --g-ema) starts it
        as a copy of the loaded G, and the note says so."""
        if self.G_ema is None:
            return []
        if "G_ema" not in record:
            ema.update(self.G_ema, self.G, beta=0.0)
            return [f"gankit: note: {path} holds no EMA generator (written before --g-ema): the EMA starts "
                    f"as a copy of its G at {record['progress']['images_seen']} images"]
        checkpoint.load_state(self.G_ema, record["G_ema"], "the EMA generator", path)
        return []


def build_state(config: TrainConfig, dataset: ImageDataset | ToyDataset, plan: Plan,
                world: distributed.World) -> TrainState:
    """A new run's state: every RNG seeded from config.seed, then the players, in this order
    (the order fixes the initial weights)."""
    device = world.device
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    classes = tuple(dataset.classes) if config.conditional else None
    weights = class_frequencies(dataset) if config.conditional else None  # CPU: drawing from it never syncs
    G, D = build_models(config, dataset.shape, len(classes) if classes else None)
    if classes:
        G.class_weights.copy_(weights)
    G, D = G.to(device), D.to(device)
    if plan.channels_last:  # (B, C, H, W) tensors stored as (B, H, W, C): cuDNN's fast layout
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    G_ema = ema.make_ema(G) if config.g_ema else None  # of the plain G: plain batch norm, not synchronised
    augment = torch.Generator().manual_seed(augment_seed(config.seed)) if config.augment != "off" else None
    if augment is not None:  # D on augmented inputs, in every pass (augment.py)
        D = Augmented(D, augment, conditional=config.conditional, rank=world.rank, size=world.size)
    G, D, G_step, D_step = distributed.wrap(G, D, world, sync_bn=config.sync_bn == "on")
    return TrainState(
        config=config, data_shape=tuple(dataset.shape), G=G, D=D, G_step=G_step, D_step=D_step,
        opt_G=make_optimizer(config, G.parameters(), config.lr_g_resolved, fused=plan.fused),
        opt_D=make_optimizer(config, D.parameters(), config.lr_d_resolved, fused=plan.fused),
        batches=batches_for(dataset, config.seed, device, conditional=config.conditional),
        noise=torch.Generator().manual_seed(noise_seed(config.seed)),  # on the CPU, whatever the device
        fused=plan.fused, classes=classes, class_weights=weights, G_ema=G_ema, augment=augment,
    )


def noise_seed(seed: int) -> int:
    """The noise generator's seed for --seed."""
    return seed * 1_000_003 + 1


def augment_seed(seed: int) -> int:
    """The augmentation generator's seed for --seed."""
    return seed * 1_000_003 + 2


def draw_noise(generator: torch.Generator, m: int, dim: int, device: torch.device,
               share: slice | None = None, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """m noise vectors (m, dim), or their `share` rows, on `device`. With class_weights (a
    conditional run), each with a class drawn from them joined on: (m, dim + 1).

    Drawn on the CPU from the run's CPU generator, so the noise stream is the same on every
    device and a checkpoint's noise state resumes on any device. On CUDA they are drawn into
    pinned memory and copied without waiting: the host does not wait for the GPU, and the
    caching pinned allocator reuses the block only once the copy has finished.
    """
    pinned = device.type == "cuda"
    z = torch.randn(m, dim, generator=generator, pin_memory=pinned)
    if class_weights is not None:  # after z, from the same stream: resume restores both
        z = join_noise(z, draw_classes(class_weights, m, generator))
        z = z.pin_memory() if pinned else z
    if share is not None:
        z = z[share]  # only this process's rows cross to the device
    return z if device.type == "cpu" else z.to(device, non_blocking=pinned)


def make_optimizer(config: TrainConfig, params, lr: float, fused: bool = False) -> torch.optim.Optimizer:
    extra = {"fused": True} if fused else {}  # else the constructor's default, as on the CPU
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(config.beta1, config.beta2), **extra)
    return torch.optim.SGD(params, lr=lr, momentum=config.momentum, **extra)


def rng_state(batches, noise: torch.Generator, augment: torch.Generator | None = None) -> dict[str, Any]:
    """Every random stream the loop draws from (the Python and NumPy ones as JSON text, which
    a weights-only load reads). The CUDA ones only where this process uses CUDA: asking for them
    would initialise CUDA (seconds, and memory on every GPU) in a CPU run on a GPU host."""
    state = {
        "torch": torch.get_rng_state(),
        "noise": noise.get_state(),
        "data": batches.state_dict(),
        "python": json.dumps(random.getstate()),
        "numpy": json.dumps(_numpy_state()),
        **({"augment": augment.get_state()} if augment is not None else {}),
    }
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], batches, noise: torch.Generator, seed: int, iterations: int,
                  augment: torch.Generator | None = None) -> list[str]:
    """Restore rng_state's streams; the notes (for the run's output) say what could not be."""
    notes = []
    torch.set_rng_state(state["torch"])
    if augment is not None:  # --augment cannot change on resume, so a run that augments saved its state
        augment.set_state(state["augment"])
    if not _fits(noise, state["noise"]):
        noise.manual_seed(_rederived(noise_seed(seed), iterations))
        notes.append(_rederived_note("noise", iterations))
    else:
        noise.set_state(state["noise"])
    data = state["data"]
    if "generator" in data and not _fits(batches.generator, data["generator"]):  # a toy distribution's
        data = {**data, "generator": torch.Generator().manual_seed(
            _rederived(toy_seed(seed), iterations)).get_state()}
        notes.append(_rederived_note("toy data", iterations))
    batches.load_state_dict(data)
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = json.loads(state["numpy"])
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_initialized():  # a CPU run has no use for them
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            notes.append(
                f"gankit: note: the checkpoint holds the CUDA RNG states of {len(state['cuda'])} GPU(s) and this "
                f"machine has {torch.cuda.device_count()}: they are not restored. Training does not draw from them "
                "(the noise and the data order have their own generators, which are restored)")
    return notes


def _fits(generator: torch.Generator, saved: torch.Tensor) -> bool:
    """Whether a saved generator state is one of this generator's kind. The checkpoints of
    gankit before the noise moved to the CPU hold CUDA generators' states on CUDA (16 bytes of
    Philox seed and offset), which a CPU generator (5056 bytes of Mersenne Twister) cannot take."""
    return saved.dtype == torch.uint8 and saved.numel() == generator.get_state().numel()


def _rederived(base: int, iterations: int) -> int:
    return (base * 1_000_003 + iterations) % 2**63


def _rederived_note(stream: str, iterations: int) -> str:
    return (f"gankit: note: the checkpoint's {stream} generator is a CUDA generator's (gankit before the {stream} was "
            f"drawn on the CPU), which this run's CPU generator cannot continue; it is seeded afresh from --seed and "
            f"the iteration ({iterations}): the run goes on, on another {stream} stream than the checkpoint's")


def _numpy_state() -> list:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]
