"""Data-parallel training with torch.distributed: one process per device, started by torchrun.

A run with N processes trains the same game as one process with the same global batch:

- every process follows the same data order and the same noise stream (the single-process ones)
  and takes its own slice of each global minibatch: rank r gets rows [r*b, (r+1)*b) of the B
  rows, b = B / N. So each rank sees different images and different noise, the union over
  ranks is exactly the single-process minibatch, and a checkpoint's RNG state means the same
  thing whatever N is (resume with another N works). Per-rank seeds would give each rank its own
  stream, but then N would change what is trained and a run could not resume on another N;
  drawing the global noise costs B x latent_dim normals per step on every rank, which is
  nothing next to the networks;
- gradients are averaged by DistributedDataParallel, so with equal slices the update is the
  single-process one;
- batch norm is SyncBatchNorm by default (--sync-bn on): its batch statistics are those of the
  global batch, as in one process. Off, each rank normalises over its own b rows: faster with
  many GPUs (no collective inside each forward pass), but a different model for each N.

Only rank 0 writes (run folder, metrics, sample grids, checkpoints). Every collective is
reached by every rank in the same order: whatever the loop decides (log a row, stop on NaN,
roll back, stop on a signal) it decides from numbers all ranks share after an all-reduce.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import inspect
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from gankit.errors import ConfigError, GankitError

# How long a collective may wait for a rank before it fails. Long, because the other ranks wait
# while rank 0 alone evaluates (the first evaluation may train the feature classifier, minutes on
# a CPU). Lost ranks fail their peers much sooner: the gloo sockets close when a process exits,
# and torchrun stops the other workers when one fails.
TIMEOUT = datetime.timedelta(minutes=60)


class PeerFailed(GankitError):
    """Another process of the same distributed run failed; this one stops too."""


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank `rank` of `size` (size 1 and not `launched`: a plain
    single-process run)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (WORLD_SIZE set), even with one process
    device: torch.device = torch.device("cpu")  # where collectives put their tensors

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, batch: int) -> slice:
        """This rank's rows of a global minibatch of `batch` rows."""
        b = batch // self.size
        return slice(self.rank * b, (self.rank + 1) * b)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (a copy on this process's device)."""
        if not self.launched:
            return values
        out = values.to(self.device, copy=True)
        with _lost_peer(self):
            dist.all_reduce(out)
        return out

    def barrier(self) -> None:
        """Wait for every rank (an all-reduce of nothing: works on every backend and device)."""
        if self.launched:
            self.sum(torch.zeros(1))

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on any rank."""
        return bool(self.sum(torch.tensor([float(flag)])).item() > 0)

    def gather(self, obj):
        """A list of every rank's `obj` on rank 0 (None on the others)."""
        if not self.launched:
            return [obj]
        out = [None] * self.size if self.main else None
        with _lost_peer(self):
            dist.gather_object(obj, out, dst=0)
        return out

    @contextlib.contextmanager
    def together(self, what: str) -> Iterator[None]:
        """Run a block on every rank; if it fails on any rank it fails on all, the failing rank
        with its own error, the others with PeerFailed. So no rank is left waiting in a
        collective for a peer that gave up (a bad flag, a missing file, a full disk)."""
        error: BaseException | None = None
        try:
            yield
        except Exception as exc:
            error = exc
        if self.launched and self.any(error is not None) and error is None:
            raise PeerFailed(f"another process of this run failed while {what} (its error is above); "
                             f"process {self.rank} stops too")
        if error is not None:
            raise error


@contextlib.contextmanager
def _lost_peer(world: World) -> Iterator[None]:
    """A collective that fails because a peer went away becomes one clear PeerFailed."""
    try:
        yield
    except RuntimeError as exc:
        if not _from_a_lost_peer(exc):
            raise  # anything else (a CUDA fault surfacing here, a bad tensor) keeps its own message
        raise PeerFailed(_lost_peer_message(exc)) from exc


# What the backends say when the connection to a peer is gone: gloo's and the TCP store's socket
# errors, NCCL's remote error (ncclRemoteError), a collective that timed out waiting for a peer.
# Only these become PeerFailed. Not every error that merely mentions NCCL or a ProcessGroup: an
# asynchronous CUDA fault is reported by the NCCL watchdog too ("NCCL error in: ...
# ProcessGroupNCCL.cpp ... unhandled cuda error"), even in a one-process run, and must keep its
# own message.
_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Socket Timeout",
              "Connection refused", "ncclRemoteError", "remote process exit",
              "Watchdog caught collective operation timeout", "Timed out waiting")


def _from_a_lost_peer(exc: BaseException) -> bool:
    """Whether exc is a backend's report of a lost connection to another process."""
    # DistNetworkError and DistStoreError are the sockets and the TCP store (torch >= 2.3); a bare
    # DistBackendError is any backend failure, a CUDA fault included, so it is judged by its text.
    connection = tuple(getattr(dist, name) for name in ("DistNetworkError", "DistStoreError") if hasattr(dist, name))
    return isinstance(exc, connection) or any(m in str(exc) for m in _LOST_PEER)


def _lost_peer_message(exc: BaseException) -> str:
    return (f"lost contact with the rest of the run ({' '.join(str(exc).split())[:160]}): another "
            "process stopped, see its error above")


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


@contextlib.contextmanager
def initialised(device: torch.device) -> Iterator[World]:
    """The World of this process; under torchrun, the process group for the length of the block
    (nccl on CUDA, gloo on the CPU), torn down at the end even after an error, so no run hangs
    or crashes at exit. Outside torchrun: a one-process World and no process group."""
    if not launched_by_torchrun():
        yield World(device=device)
        return
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"process {rank} has local rank {local_rank}, but this machine has only "
                f"{torch.cuda.device_count()} GPU(s): give torchrun --nproc_per_node at most that many")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    ours = not dist.is_initialized()
    if ours:
        dist.init_process_group(backend, timeout=TIMEOUT)
    world = World(rank=rank, size=size, local_rank=local_rank, launched=True, device=device)
    try:
        yield world
    except RuntimeError as exc:
        if not _from_a_lost_peer(exc):
            raise
        raise PeerFailed(_lost_peer_message(exc)) from exc
    finally:
        # The DDP wrappers and synchronised batch norm of the run hold the process group; they
        # can sit in reference cycles, and one collected only at interpreter exit, after the
        # group is gone, aborts the process ("terminate called without an active exception").
        gc.collect()
        if ours and dist.is_initialized():
            dist.destroy_process_group()


def check_batch(world: World, batch_size: int, pack: int = 1) -> None:
    if batch_size % (world.size * pack):
        error = ConfigError(
            f"--batch-size {batch_size} is the global batch and must split evenly over the "
            f"{world.size} processes" + (f" into whole packs of --pack {pack}" if pack > 1 else "")
            + f"; give a multiple of {world.size * pack}")
        error.every_process = True  # every rank finds it: rank 0 reports it
        raise error


class BothInputs(nn.Module):
    """D on real and on fake minibatches in one forward call.

    DistributedDataParallel expects one forward per backward; Algorithm 1's D step runs D twice
    (batch norm sees real and fake batches separately, as in one process), so the two calls are
    one module call here and one backward averages D's gradients once.
    """

    def __init__(self, D: nn.Module):
        super().__init__()
        self.D = D

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.D(real), self.D(fake)


class _AllReduceSum(torch.autograd.Function):
    """y = the sum over ranks of x, on every rank. Backward: each rank's loss depends on every
    rank's x through y, so the gradient for x is the sum over ranks of dL_r/dy (an all-reduce)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch for processes on the CPU (torch's SyncBatchNorm is GPU
    only). Two all-reduces that autograd sees through: the sum (for the mean), then the sum of
    squared deviations (the two-pass variance, as accurate as one process's). Same parameters and
    buffers as nn.BatchNorm*, so checkpoints load into the plain models."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {input.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C) or (N, C, H, W)
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]  # all but the channel dimension
        shape = [1, -1] + [1] * (x.dim() - 2)
        local = torch.cat([x.sum(dims), x.new_full((1,), x.numel() // x.shape[1])])
        total = _AllReduceSum.apply(local)
        count = total[-1].detach()  # values per channel over all ranks
        mean = total[:-1] / count
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / count  # biased, as batch norm uses
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            with torch.no_grad():  # running variance unbiased, as in nn.BatchNorm
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * count / (count - 1), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _cpu_sync_batchnorm(module: nn.Module) -> nn.Module:
    """module with every batch-norm layer replaced by CPUSyncBatchNorm, sharing its parameters
    and buffers."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        new = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _cpu_sync_batchnorm(child))
    return module


def wrap(G: nn.Module, D: nn.Module, world: World, sync_bn: bool) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """(G, D, G for the G step, D pair for the D step). The first two are the plain modules (with
    synchronised batch norm if asked): the measuring and sampling passes and the checkpoints use
    them. Under torchrun the other two are the DDP wrappers that average gradients; in one
    process they are G itself and BothInputs(D), so the training step has one shape for both."""
    if not world.launched:
        return G, D, G, BothInputs(D)
    from torch.nn.parallel import DistributedDataParallel as DDP

    if sync_bn:
        convert = (nn.SyncBatchNorm.convert_sync_batchnorm if world.device.type == "cuda"
                   else _cpu_sync_batchnorm)
        G, D = convert(G), convert(D)
    ids = [world.device.index] if world.device.type == "cuda" else None
    # With synchronised batch norm the running statistics are the same on every rank; without it,
    # rank 0's are broadcast at each forward (DDP's default), so every rank uses the checkpoint's.
    # (torch 2.13 renamed broadcast_buffers to forward_sync_buffers; 2.11 has only the old name.)
    name = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
            else "broadcast_buffers")
    G_step = DDP(G, device_ids=ids, **{name: not sync_bn})
    D_step = DDP(BothInputs(D), device_ids=ids, **{name: not sync_bn})
    return G, D, G_step, D_step


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """The command `gankit train --nproc N ...` runs: torchrun on this machine with N workers,
    each running `gankit train ...` without --nproc."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be a positive integer, got {nproc}")
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    # --standalone: a rendezvous on a free local port, so two jobs on one machine do not collide.
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "gankit", *rest]
