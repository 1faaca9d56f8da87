"""Sampling from a trained generator: a grid PNG, a folder of PNGs, or an .npz array."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from gankit import checkpoint
from gankit.devices import resolve_device
from gankit.errors import GankitError
from gankit.files import atomic_write
from gankit.imagegrid import make_grid, save_png, to_uint8
from gankit.models import build_models

BATCH = 1024


def load_generator(path_or_run: str | os.PathLike, device: str = "auto") -> tuple[torch.nn.Module, dict]:
    """The generator of a checkpoint (or run folder), in eval mode, and what else callers need of
    the checkpoint (read once): the run's stored config, the data shape, the checkpoint's path
    and its progress counters (images_seen, ...). A folder written by `gankit export --format
    safetensors` is read too (its config.json rebuilds G)."""
    from gankit import export  # import cycle: export.export() loads checkpoints through here

    if export.is_export(path_or_run):
        return export.load_export(path_or_run, device)
    path = checkpoint.resolve(path_or_run)
    record = checkpoint.load(path)
    config = checkpoint.config_of(record, path)
    shape = tuple(int(d) for d in record["data_shape"])
    G, _ = build_models(config, shape)
    checkpoint.load_state(G, record["G"], "the generator", path)
    G.to(resolve_device(device)).eval()
    return G, {"config": config, "shape": shape, "path": path, "progress": record["progress"]}


def generate(G: torch.nn.Module, n: int, seed: int, latent_dim: int,
             part: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """n samples from G with noise drawn from `seed` on the CPU, so results match across devices.

    part=(r, N): only the chunks of BATCH samples whose index is r modulo N, one process's share
    of a distributed evaluation; `interleave` puts the N parts back in order, identical to
    the one-process result (the noise is drawn for every chunk, so each chunk gets the same z).
    """
    rank, size = part
    device = next(G.parameters()).device
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for i, start in enumerate(range(0, n, BATCH)):
            z = torch.randn(min(BATCH, n - start), latent_dim, generator=g)
            if i % size == rank:
                out.append(G(z.to(device)).float().cpu())
    if not out:
        return torch.empty(0)
    return torch.cat(out)


def interleave(parts: list[torch.Tensor]) -> torch.Tensor:
    """The samples of `generate(..., part=(r, N))` for r = 0..N-1, back in one-process order."""
    chunks = [list(p.split(BATCH)) if len(p) else [] for p in parts]
    ordered = []
    for i in range(sum(len(c) for c in chunks)):
        ordered.append(chunks[i % len(parts)][i // len(parts)])
    return torch.cat(ordered)


def sample(path_or_run: str | os.PathLike, n: int, out: str | os.PathLike, seed: int = 0,
           device: str = "auto") -> Path:
    """Write n samples to out: FILE.png (a grid), FILE.npz (array), or a folder (one PNG each)."""
    if n <= 0:
        raise GankitError(f"-n must be a positive integer, got {n}")
    out = Path(out)
    G, info = load_generator(path_or_run, device)
    images = len(info["shape"]) == 3
    suffix = out.suffix.lower()
    if suffix not in (".png", ".npz", "") and not out.is_dir():
        raise GankitError(f"--out {out}: use FILE.png (grid), FILE.npz (array) or a folder (one PNG per sample)")
    if not images and suffix != ".npz":
        raise GankitError(f"--out {out}: this generator makes toy points, not images; use --out FILE.npz")
    samples = generate(G, n, seed, info["config"].latent_dim)
    if suffix == ".png":
        save_png(make_grid(samples), out)
    elif suffix == ".npz":
        # Images as uint8 (N, H, W, C) like the npz: data reader expects; toy points as float32.
        array = to_uint8(samples) if images else samples.numpy().astype(np.float32)
        with atomic_write(out, suffix=".npz") as tmp:  # numpy would append .npz to any other name
            np.savez_compressed(tmp, images=array)
    else:
        if out.exists() and any(out.iterdir()):
            raise GankitError(f"--out {out} is a folder that is not empty; choose an empty or new folder")
        pixels = to_uint8(samples)
        width = len(str(n - 1))
        for i, picture in enumerate(pixels):
            save_png(picture, out / f"{i:0{width}d}.png")
    return out
