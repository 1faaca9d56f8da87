"""How fast the training loop runs: precision, optimiser implementation, memory format, CUDA graphs.

None of this changes the game being trained (Algorithm 1, the losses, the data and noise
streams); it changes how the arithmetic is done. On the CPU the plan is the eager loop with the
DCGAN pair in the layout --memory-format chose (auto: whichever of channels_last and contiguous
a short measurement at start-up found faster on this CPU, memformat.py; channels_last is 15-50%
faster on our AMD EPYC, see docs/benchmarks.md, which need not hold on other CPUs) and the
statistics read every iteration. On CUDA:

- fused Adam/SGD (one kernel per step instead of one per tensor);
- channels_last for the DCGAN pair (the layout cuDNN's tensor-core convolutions want, as on the CPU);
- cuDNN autotuning (the shapes never change within a run);
- the statistics of each iteration stay on the GPU and are read every `sync_every` iterations;
- with --cuda-graphs auto, the whole iteration (k D steps + G step) captured once as a CUDA
  graph and replayed, where the configuration allows it; otherwise one line says why not.

The choice is `fast_path_plan`, a pure function of the config and the device name, so it is
tested without a GPU. The CUDA-graph runner (`GraphedIteration`) cannot run on a CPU (its
bookkeeping is tested there with fakes of torch.cuda) and has not been run on a GPU yet: that is
why --cuda-graphs defaults to off.

One thing on CUDA does wait for the GPU in every step: under torchrun with several processes and
--sync-bn on, torch's SyncBatchNorm syncs the host in each batch-norm layer of each forward
pass. The plan says so; --sync-bn off is the fast choice there.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch

from gankit.config import TrainConfig

CUDA_SYNC_EVERY = 50  # default --sync-every on CUDA; see fast_path_plan
GRAPH_WARMUP = 3  # eager iterations on the capture stream before the graph is captured


@dataclass(frozen=True)
class Plan:
    """What the training loop uses on one device; `reasons` says why something is not used."""

    precision: str  # fp32, tf32 or bf16, as asked (tf32 and bf16 mean fp32 where unsupported)
    fused: bool  # fused optimiser step
    channels_last: bool  # NHWC memory format for the DCGAN pair and its inputs
    cudnn_benchmark: bool  # let cuDNN time its algorithms on the first iterations
    graphs: bool  # capture the iteration as a CUDA graph (it may still fall back at capture time)
    sync_every: int  # iterations between reads of the statistics
    reasons: tuple[str, ...] = ()
    layout_note: str = ""  # how --memory-format auto chose on the CPU (memformat.Choice.note), or ""

    def to_dict(self) -> dict:
        return {**asdict(self), "reasons": list(self.reasons)}

    def describe(self) -> str:
        """One line for the log: what is on, and why the rest is off."""
        used = [self.precision]
        if self.fused:
            used.append("fused optimiser")
        if self.channels_last or self.layout_note:
            used.append(("channels_last" if self.channels_last else "contiguous")
                        + (f" ({self.layout_note})" if self.layout_note else ""))
        if self.cudnn_benchmark:
            used.append("cuDNN autotuning")
        used.append(f"statistics read every {self.sync_every} iteration{'s' if self.sync_every > 1 else ''}")
        used.append("CUDA graph of the whole iteration" if self.graphs else "eager")
        line = "gankit: speed: " + ", ".join(used)
        return line + ("; " + "; ".join(self.reasons) if self.reasons else "")


def fast_path_plan(config: TrainConfig, device: torch.device | str, distributed: bool = False,
                   processes: int = 1, layout_note: str = "") -> Plan:
    """The fast path for this config on this device ("cpu", "cuda", "cuda:1", ...); distributed:
    in a torchrun process (see distributed.py), one of `processes`. --memory-format auto counts
    as channels_last here: a run resolves it first (memformat.choose, which measures on the CPU),
    and layout_note says how."""
    cuda = torch.device(device).type == "cuda"
    optimizer_class = torch.optim.Adam if config.optimizer == "adam" else torch.optim.SGD
    fused = cuda and supports_fused(optimizer_class)
    # On the CPU syncing is free (there is no queue to drain), so every iteration is read at once.
    # On CUDA a read waits for the GPU to finish everything queued, and then the GPU idles while
    # Python queues the next iteration; 50 iterations make that bubble about 2% of the time,
    # while a NaN or the progress line is still seen within a fraction of a second.
    sync_every = config.sync_every or (CUDA_SYNC_EVERY if cuda else 1)
    reasons: list[str] = []
    graphs = False
    if config.cuda_graphs == "auto" and cuda:  # (a CPU has no graphs: nothing to say there)
        if distributed:
            reasons.append("no CUDA graph under torchrun: DDP's gradient all-reduce is not captured "
                           "here; running eagerly")
        elif config.optimizer != "adam":
            reasons.append(f"no CUDA graph with --optimizer {config.optimizer}: torch.optim.SGD has no "
                           "capturable mode, so its step cannot be captured; running eagerly")
        elif not fused:
            reasons.append("no CUDA graph: this torch has no fused Adam to capture; running eagerly")
        elif config.augment != "off":  # a graph would replay the augmentation parameters of its capture
            reasons.append("no CUDA graph with --augment: its parameters are drawn on the host in each D call; "
                           "running eagerly")
        else:
            graphs = True
    elif cuda:
        reasons.append("CUDA graphs off (--cuda-graphs off; the default, auto, captures the whole iteration)")
    if cuda and distributed and processes > 1 and config.sync_bn == "on" and config.model == "dcgan":
        # torch's SyncBatchNorm drops the statistics of ranks with empty inputs with a boolean
        # mask (torch/nn/modules/_functions.py, pytorch/pytorch#78549): a host sync in every
        # batch-norm layer of every training-mode forward pass. (With one process it falls back
        # to plain batch norm and does not sync.)
        reasons.append(f"--sync-bn on over {processes} processes: torch's SyncBatchNorm waits for the GPU "
                       "in every batch-norm layer of every forward pass, so the host cannot queue ahead; "
                       "--sync-bn off is the fast choice (batch statistics per process)")
    if config.precision == "bf16" and not cuda:  # (tf32 on the CPU is plain fp32: nothing to say)
        reasons.append("bf16 autocast on a CPU without native bf16 instructions is slower than fp32")
    channels_last = config.model == "dcgan" and config.memory_format != "contiguous"
    return Plan(precision=config.precision, fused=fused, channels_last=channels_last, cudnn_benchmark=cuda,
                graphs=graphs, sync_every=sync_every, reasons=tuple(reasons), layout_note=layout_note)


def supports_fused(optimizer_class: type[torch.optim.Optimizer]) -> bool:
    """Whether this torch's optimiser has the `fused` implementation (Adam: 2.0+, SGD: 2.3+)."""
    return "fused" in inspect.signature(optimizer_class.__init__).parameters


@contextlib.contextmanager
def precision_flags(plan: Plan, device: torch.device) -> Iterator[None]:
    """TF32 and cuDNN autotuning for the length of a run, restored afterwards (they are global).

    fp32 turns TF32 off for both matmuls and convolutions (PyTorch's own default leaves it on
    for convolutions); tf32 and bf16 turn it on (bf16: for what autocast leaves in fp32).
    """
    if device.type != "cuda":
        yield
        return
    cuda, cudnn = torch.backends.cuda, torch.backends.cudnn
    saved = (cuda.matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark)
    tf32 = plan.precision != "fp32"
    cuda.matmul.allow_tf32 = cudnn.allow_tf32 = tf32
    cudnn.benchmark = plan.cudnn_benchmark
    try:
        yield
    finally:
        cuda.matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark = saved


def autocast_for(plan: Plan, device: torch.device, graphs: bool = False) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the context the forward passes run in: bf16 autocast, or nothing.

    Inside a CUDA graph capture autocast must not cache its casts of the weights (the cache
    would hold tensors from outside the graph's memory pool), so graphs turn the cache off.
    """
    if plan.precision != "bf16":
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=not graphs)


def configure_optimizer(opt: torch.optim.Optimizer, fused: bool, capturable: bool = False) -> None:
    """Set the implementation flags of an optimiser, and put each `step` counter where that
    implementation keeps it (on the parameter's device for fused/capturable, else on the CPU).

    load_state_dict copies these flags from the checkpoint, which may come from another device
    or run; this puts back the ones this run's plan chose.
    """
    for group in opt.param_groups:
        group["fused"] = True if fused else None  # None is the constructor's default
        if "capturable" in group:
            group["capturable"] = capturable
        for p in group["params"]:
            step = opt.state.get(p, {}).get("step")
            if isinstance(step, torch.Tensor):
                where = p.device if (fused or capturable) else torch.device("cpu")
                opt.state[p]["step"] = step.to(device=where, dtype=torch.float32)


# The capture mode: "thread_local" makes CUDA refuse unsafe calls (a synchronisation, a cudaMalloc)
# only in the capturing thread. In the default "global" mode the StreamedImageBatches worker's
# calls (pinned host allocations, event queries) would invalidate the capture, and fail the
# worker itself with "operation not permitted when stream is capturing".
CAPTURE_ERROR_MODE = "thread_local"


def first_error(exc: BaseException) -> BaseException:
    """The error a chain of errors started with: a failed capture raises a second error when the
    capture ends ("operation failed due to a previous error during capture"), with the first as
    its context."""
    seen = {id(exc)}
    while exc.__context__ is not None and id(exc.__context__) not in seen:
        exc = exc.__context__
        seen.add(id(exc))
    return exc


def is_capture_error(exc: BaseException) -> bool:
    """Whether `exc` (by the error its chain started with) is CUDA's or torch's refusal of
    something inside a graph capture, after which the iteration still runs eagerly.

    These are RuntimeErrors (torch.AcceleratorError for the CUDA runtime's): the CUDA runtime's
    stream-capture errors 900-908 ("operation not permitted when stream is capturing",
    "operation failed due to a previous error during capture", "capturing stream has unjoined
    work", "dependency created on uncaptured work in another stream", "attempt to terminate a
    thread-local capture sequence from another thread", ...) and torch's own checks ("Cannot
    copy between CPU and CUDA tensors during CUDA graph capture unless the CPU tensor is pinned",
    "Attempting CUDA graph capture of step() ... capturable is False"): every one of them says
    "captur". Anything else (out of memory, an illegal memory access, a bug in the model) is
    not the capture's fault and is raised as it is.
    """
    first = first_error(exc)
    return (isinstance(first, RuntimeError) and not isinstance(first, torch.OutOfMemoryError)
            and "captur" in str(first).lower())


class GraphedIteration:
    """The whole iteration (k D steps, G step, its statistics) as one CUDA graph, replayed.

    The caller draws the real minibatches and the noise outside the graph, from the same
    generators in the same order as the eager loop, so the data order, the noise stream and the
    checkpoints are those of eager training. The first GRAPH_WARMUP calls run eagerly on the
    capture stream (cuDNN autotuning, the optimisers' lazily created state and cuBLAS
    workspaces must exist before capture); the next call copies its inputs into static buffers,
    captures the iteration, and replays it; later calls copy and replay.

    A learning-rate change (--on-nan rollback) or a reloaded optimiser state means new tensors
    and new scalars: call reset(), and the next calls warm up and capture again. If the capture
    fails with a capture error (is_capture_error), the reason goes to `on_fallback` and the run
    continues with `eager` (the eager loop's iteration, whose bf16 autocast caches its casts of
    the weights again); any other error is raised.

    What happened is counted, so that a test or a benchmark can tell a graph from its fallback:
    `captures` (1, plus one per re-capture after reset()), `replays` (iterations run by
    replaying the graph), `warmups` (eager iterations on the capture stream), `eager_iterations`
    (after a failed capture), `failed` (why the capture failed, or None) and `in_use`.

    Written from the PyTorch CUDA-graphs documentation; its CUDA tests passed on an H200
    (2026-11-30, docs/benchmarks.md). Also the runner of `gankit bench modes --protocol pacgan`'s
    batched update (theory/pacgan_batched.Update).
    """

    def __init__(self, iteration: Callable[..., torch.Tensor], optimizers: list[torch.optim.Optimizer],
                 on_fallback: Callable[[str], None], eager: Callable[..., torch.Tensor] | None = None):
        self.iteration = iteration  # iteration(reals, noises, measure) -> statistics (n,) on the device
        self.eager = eager if eager is not None else iteration  # after a failed capture
        self.optimizers = optimizers
        self.on_fallback = on_fallback
        self.stream = torch.cuda.Stream()
        self.failed: str | None = None
        self.captures = self.replays = self.warmups = self.eager_iterations = 0
        self.reset()

    @property
    def in_use(self) -> bool:
        """Whether the iterations are replays of a captured graph (False while warming up, and
        for good after a failed capture)."""
        return self.graph is not None and self.failed is None

    def counts(self) -> dict:
        """What ran how often, for the run's log."""
        return {"captures": self.captures, "replays": self.replays, "warmups": self.warmups,
                "eager_iterations": self.eager_iterations, "failed": self.failed}

    def describe(self) -> str:
        if self.failed is not None:
            return (f"gankit: CUDA graph: capture failed ({self.failed}); {self.eager_iterations} iterations "
                    f"ran eagerly after {self.warmups} warm-up iterations")
        return (f"gankit: CUDA graph: captured {self.captures} time{'s' if self.captures != 1 else ''}, "
                f"{self.replays} iterations replayed, {self.warmups} warm-up iterations eager")

    def reset(self) -> None:
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_reals: list[torch.Tensor] = []
        self.static_noises: list[torch.Tensor] = []
        self.static_out: torch.Tensor | None = None
        self.warmed = 0
        for opt in self.optimizers:
            configure_optimizer(opt, fused=True, capturable=False)

    def __call__(self, reals: list[torch.Tensor], noises: list[torch.Tensor], measure: bool = True) -> torch.Tensor:
        """The iteration's statistics; a graph always measures (measure is the eager loop's)."""
        if self.failed is not None:
            self.eager_iterations += 1
            return self.eager(reals, noises, measure)
        if self.graph is None and self.warmed < GRAPH_WARMUP:
            self.warmed += 1
            self.warmups += 1
            return self._on_side_stream(reals, noises)
        if self.graph is None:
            try:
                self._capture(reals, noises)
            except Exception as exc:
                if not is_capture_error(exc):
                    first = first_error(exc)
                    if first is exc:
                        raise
                    raise first from None  # what failed, not CUDA's complaint that the capture then ended badly
                self._fall_back(exc)
                self.eager_iterations += 1
                return self.eager(reals, noises, measure)
        for buffer, x in zip(self.static_reals + self.static_noises, reals + noises, strict=True):
            buffer.copy_(x)
        self.graph.replay()
        self.replays += 1
        return self.static_out.clone()  # the next replay overwrites static_out

    def _on_side_stream(self, reals: list[torch.Tensor], noises: list[torch.Tensor]) -> torch.Tensor:
        main = torch.cuda.current_stream()
        self.stream.wait_stream(main)  # the inputs were made on the main stream
        for x in reals + noises:
            x.record_stream(self.stream)  # read on the side stream: not handed out again before it has
        with torch.cuda.stream(self.stream):
            out = self.iteration(reals, noises, True)
        main.wait_stream(self.stream)  # later main-stream work sees the updated weights
        out.record_stream(main)  # made on the side stream, read (and freed) on the main one
        return out

    def _capture(self, reals: list[torch.Tensor], noises: list[torch.Tensor]) -> None:
        # Static inputs with the memory format the caller uses (channels_last or not).
        self.static_reals = [torch.empty_like(x) for x in reals]
        self.static_noises = [torch.empty_like(z) for z in noises]
        for buffer, x in zip(self.static_reals + self.static_noises, reals + noises, strict=True):
            buffer.copy_(x)
        for opt in self.optimizers:
            configure_optimizer(opt, fused=True, capturable=True)
            # Gradients set to None now are allocated from the graph's private pool during
            # capture, so every replay writes them at the same addresses.
            opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        # The same stream as the warm-up, so the handles and workspaces it created are reused.
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode=CAPTURE_ERROR_MODE):
            self.static_out = self.iteration(self.static_reals, self.static_noises, True)
        self.graph = graph
        self.captures += 1

    def _fall_back(self, exc: BaseException) -> None:
        """After a failed capture: nothing of it is kept, and the optimisers are eager ones again.
        (A capture only records kernels, so the weights and the optimiser state are those from
        before it, and the same inputs are run eagerly.)"""
        self.failed = " ".join(str(first_error(exc)).split())[:300]
        self.graph = None
        self.static_reals, self.static_noises, self.static_out = [], [], None
        torch.cuda.synchronize()
        for opt in self.optimizers:
            configure_optimizer(opt, fused=True, capturable=False)
            opt.zero_grad(set_to_none=True)  # gradients allocated in the failed capture's pool
        self.on_fallback(f"gankit: CUDA graph capture failed ({self.failed}); continuing eagerly")
