"""--memory-format: the DCGAN pair's memory layout, chosen on the CPU by a short measurement at start-up.

oneDNN's convolutions are faster in channels_last (NHWC) on our AMD EPYC (the demo model trains
15-50% faster in it), but that is one CPU: on an Intel Xeon with AVX-512, gankit in channels_last
trained slower than the pytorch/examples DCGAN, which stays contiguous (NCHW). So `--memory-format auto`
(the default) does on the CPU what cuDNN's autotuner does on CUDA: it times a few training-like
steps in both layouts and keeps the faster; no CPU vendor or instruction set is named anywhere.

- The step timed: forward and backward of D(G(z)) and D(x) at the run's batch (per process),
  model and precision, on throwaway players of the run's shapes (left out: the optimiser step,
  elementwise and the same in both layouts, and --augment's ops). One warm-up step per layout,
  then rounds of one step per layout, alternating which goes first, until MAX_ROUNDS or
  BUDGET_S (at least MIN_ROUNDS, unless HARD_BUDGET_S has passed); the median of each layout
  decides, a tie keeps channels_last. On a busy machine the rounds can disagree about which
  layout is faster: such a choice is used but not cached (SETTLED), and the next start measures
  again. A large model may get only 2 rounds in HARD_BUDGET_S: their choice is cached when both
  agree by a clear margin (CLEAR, rounds_agree).
  The throwaway players are built and fed inside torch.random.fork_rng: the run's random
  streams and its players are untouched, so its numbers depend only on the layout chosen.
- The choice is cached (cache.py: memory-format/choices.json) by CPU model, torch version,
  threads, processes, model shape, batch and precision, so later starts skip the measurement.
- The resolved layout (never auto) is what the run's stored config records, and what --resume
  uses: auto on resume keeps it, because channels_last and contiguous round differently on the
  CPU and a resumed run must end bit-identical to an uninterrupted one. A run written before
  this flag trained the DCGAN in channels_last (checkpoint.config_of says so for it).
- Several processes (torchrun): rank 0 reads the cache; if it has no entry, every rank measures
  (at the same time, as they will train) and the medians are averaged over ranks by one
  all-reduce, so every rank picks the same layout.
- On CUDA auto is channels_last (the layout of cuDNN's tensor-core convolutions); the MLP pair
  has no convolutions and is always contiguous.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gankit import distributed
from gankit.cache import cache_dir
from gankit.config import TrainConfig
from gankit.files import write_json
from gankit.models import build_models
from gankit.models.conditional import join_noise

LAYOUTS = ("channels_last", "contiguous")  # a tie keeps the first (gankit's layout before this choice)
MIN_ROUNDS, MAX_ROUNDS = 3, 7  # timed steps per layout
BUDGET_S = 1.0  # timed rounds stop after this (once MIN_ROUNDS are done)
HARD_BUDGET_S = 2.0  # and after this in any case (a busy machine, a large model), with at least one round
SETTLED = 0.8  # a choice is cached when at least this share of the rounds agree on the faster layout
CLEAR = 0.10  # or, after fewer than MIN_ROUNDS (a large model), when every round agrees by this margin or more
CACHE_VERSION = 1  # part of every key: a change to what is timed starts the cache afresh

Timer = Callable[[TrainConfig, tuple[int, ...], int | None, int], dict[str, list[float]]]


@dataclass(frozen=True)
class Choice:
    """The layout a run uses, and how it was chosen: "asked" (a flag, or the run's record),
    "rule" (CUDA, the MLP), "measured" or "cached"; ms: the median ms/step of each layout."""

    layout: str
    how: str = "asked"
    ms: dict[str, float] | None = None
    when: str = ""  # a cached choice: the date it was measured
    settled: bool = True  # a measured choice: the rounds agreed (rounds_agree), so it is cached

    def note(self) -> str:
        """What the speed line says after the layout's name ("" when there was nothing to choose)."""
        if self.ms is None:
            return ""
        other = next(name for name in LAYOUTS if name != self.layout)
        times = f"{self.ms[self.layout]:.1f} vs {self.ms[other]:.1f} ms/step for {other}"
        if self.how == "cached":
            return f"cached choice: {times}, measured {self.when}; {cache_file()} holds it"
        return f"measured: {times}" + ("" if self.settled else "; the timed rounds disagreed (a busy machine?): "
                                       "not cached, measured again at the next start")


def choose(config: TrainConfig, data_shape: tuple[int, ...], num_classes: int | None,
           world: distributed.World, timer: Timer | None = None) -> tuple[TrainConfig, Choice]:
    """config with memory_format resolved (never auto), and how it was chosen. timer (tests):
    instead of time_layouts."""
    if config.memory_format != "auto":
        return config, Choice(config.memory_format)
    if config.model != "dcgan" or world.device.type != "cpu":
        layout = "channels_last" if config.model == "dcgan" else "contiguous"
        return dataclasses.replace(config, memory_format=layout), Choice(layout, "rule")
    batch = config.batch_size // world.size
    key = cache_key(config, data_shape, num_classes, batch, world.size)
    choice = _agreed_cached(world, lookup(key) if world.main else None)
    if choice is None:
        times = (timer or time_layouts)(config, data_shape, num_classes, batch)
        ms = [statistics.median(times[name]) * 1000 for name in LAYOUTS]
        ms = world.sum(torch.tensor(ms, dtype=torch.float64)).div(world.size).tolist()  # every rank: the mean
        choice = dataclasses.replace(pick(dict(zip(LAYOUTS, ms, strict=True))), settled=rounds_agree(times))
        if world.main and choice.settled:  # (rank 0's rounds decide whether the choice is kept)
            store(key, choice)
    return dataclasses.replace(config, memory_format=choice.layout), choice


def pick(ms: dict[str, float]) -> Choice:
    """The faster layout by median ms/step; a tie keeps channels_last."""
    layout = min(LAYOUTS, key=lambda name: (ms[name], LAYOUTS.index(name)))
    return Choice(layout, "measured", {name: ms[name] for name in LAYOUTS})


def rounds_agree(times: dict[str, list[float]]) -> bool:
    """Whether the timed rounds agree on the faster layout (each round timed both, back to back):
    at least SETTLED of MIN_ROUNDS or more; or, when HARD_BUDGET_S left fewer (a step of the 64x64
    DCGAN at batch 128 takes ~0.7 s on 2 cores, so 2 s hold 2 rounds), at least 2 rounds that all
    agree with the slower layout at least CLEAR slower in each. Without that second rule a large
    model's choice was never cached and every start paid the measurement again."""
    rounds = list(zip(*(times[name] for name in LAYOUTS), strict=True))
    first = sum(a < b for a, b in rounds)
    if len(rounds) >= MIN_ROUNDS:
        return max(first, len(rounds) - first) >= SETTLED * len(rounds)
    return len(rounds) >= 2 and all(max(a, b) >= (1 + CLEAR) * min(a, b) for a, b in rounds) \
        and first in (0, len(rounds))


def _agreed_cached(world: distributed.World, cached: Choice | None) -> Choice | None:
    """Rank 0's cached choice, on every rank (one all-reduce under torchrun)."""
    if not world.launched:
        return cached
    mine = [1.0, float(LAYOUTS.index(cached.layout)), *(cached.ms[n] for n in LAYOUTS)] if cached else [0.0] * 4
    found, index, *ms = world.sum(torch.tensor(mine, dtype=torch.float64)).tolist()
    if not found:
        return None
    return Choice(LAYOUTS[int(index)], "cached", dict(zip(LAYOUTS, ms, strict=True)),
                  cached.when if cached else "on rank 0")


# --- the measurement -----------------------------------------------------------------------------

def time_layouts(config: TrainConfig, data_shape: tuple[int, ...], num_classes: int | None,
                 batch: int) -> dict[str, list[float]]:
    """Seconds per training-like step of throwaway players in each layout (see the module's
    docstring); the run's random streams are left as they were."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G, D = build_models(config, data_shape, num_classes)
        z = torch.randn(batch, config.latent_dim)
        if config.conditional:
            z = join_noise(z, torch.randint(num_classes, (batch,)))
        with torch.no_grad():
            x = G(z)  # (batch, C, H, W): a real minibatch's shape (with a conditional run's label plane)
        pairs = {name: _in_layout(G, D, x, name) for name in LAYOUTS}
        bf16 = config.precision == "bf16"  # as fastpath.autocast_for: bf16 autocast on the CPU, else nothing
        times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
        for name in LAYOUTS:  # warm-up: oneDNN creates its primitives on the first call
            _step(*pairs[name], z, bf16)
        began = time.perf_counter()
        for r in range(MAX_ROUNDS):
            spent = time.perf_counter() - began
            if (r >= MIN_ROUNDS and spent > BUDGET_S) or (r >= 1 and spent > HARD_BUDGET_S):
                break
            for name in (LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]):
                start = time.perf_counter()
                _step(*pairs[name], z, bf16)
                times[name].append(time.perf_counter() - start)
    return times


def _in_layout(G: nn.Module, D: nn.Module, x: torch.Tensor, name: str) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    G, D = copy.deepcopy(G), copy.deepcopy(D)
    if name == "channels_last":
        return G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last), \
            x.contiguous(memory_format=torch.channels_last)
    return G, D, x.contiguous()


def _step(G: nn.Module, D: nn.Module, x: torch.Tensor, z: torch.Tensor, bf16: bool) -> None:
    """Forward and backward of D(x) and D(G(z)), as a D step and a G step do between them."""
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        real, fake = D(x), D(G(z))
    (real.float().mean() - fake.float().mean()).backward()
    for p in (*G.parameters(), *D.parameters()):
        p.grad = None


# --- the cache -------------------------------------------------------------------------------------

def cache_file() -> Path:
    return cache_dir("memory-format") / "choices.json"


def cpu_name() -> str:
    """The CPU's model name: /proc/cpuinfo's (Linux), else platform.processor(), else the machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Model", "cpu model"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cache_key(config: TrainConfig, data_shape: tuple[int, ...], num_classes: int | None, batch: int,
              processes: int) -> str:
    """What the measured choice depends on: the machine, torch, the threads, the model's shapes,
    the batch and the precision."""
    return json.dumps({
        "version": CACHE_VERSION, "cpu": cpu_name(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "processes": processes,
        "model": [config.model, config.g_width, config.d_width, config.latent_dim, list(data_shape),
                  num_classes if config.conditional else None, config.pack, config.d_norm],
        "batch": batch, "precision": config.precision,
    }, sort_keys=True)


def _read() -> dict:
    try:
        entries = json.loads(cache_file().read_text())
    except (OSError, ValueError):  # none yet, or damaged: measured afresh and rewritten
        return {}
    return entries if isinstance(entries, dict) else {}


def lookup(key: str) -> Choice | None:
    """The cached choice for key, or None."""
    entry = _read().get(key)
    try:
        layout, ms = entry["layout"], {name: float(entry["ms"][name]) for name in LAYOUTS}
    except (TypeError, KeyError, ValueError):
        return None
    return Choice(layout, "cached", ms, str(entry.get("measured", "?"))) if layout in LAYOUTS else None


def store(key: str, choice: Choice) -> None:
    """Add a measured choice to the cache (atomically; a cache that cannot be written is skipped)."""
    entries = _read()
    entries[key] = {"layout": choice.layout, "ms": {n: round(v, 3) for n, v in choice.ms.items()},
                    "measured": datetime.date.today().isoformat()}
    try:
        write_json(cache_file(), entries)
    except OSError:
        pass
