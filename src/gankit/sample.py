"""Sampling from a trained generator: a grid PNG, a folder of PNGs, or an .npz array."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from gankit import checkpoint
from gankit.devices import resolve_device
from gankit.errors import GankitError
from gankit.files import atomic_write
from gankit.imagegrid import label_rows, make_grid, save_png, to_uint8
from gankit.models import build_models
from gankit.models.conditional import draw_classes, is_conditional

BATCH = 1024


GENERATORS = ("ema", "raw")  # gankit sample / eval --generator


def load_generator(path_or_run: str | os.PathLike, device: str = "auto",
                   generator: str | None = None) -> tuple[torch.nn.Module, dict]:
    """The generator of a checkpoint (or run folder), in eval mode, and what else callers need of
    the checkpoint (read once): the run's stored config, the data shape, the checkpoint's path,
    its progress counters (images_seen, ...) and which generator it is ("ema" or "raw"). A folder
    written by `gankit export --format safetensors` is read too (its config.json rebuilds G).

    generator: "ema", the EMA of G's weights (a run with --g-ema; an error without); "raw", G
    as trained; None, the EMA where the checkpoint has one, else G."""
    from gankit import export  # import cycle: export.export() loads checkpoints through here

    if generator is not None and generator not in GENERATORS:
        raise GankitError(f"--generator must be one of {', '.join(GENERATORS)}; got {generator!r}")
    if export.is_export(path_or_run):
        if generator == "raw":
            raise GankitError(f"--generator raw: {path_or_run} is an export, which holds one generator; "
                              "leave out --generator")
        return export.load_export(path_or_run, device)
    path = checkpoint.resolve(path_or_run)
    record = checkpoint.load(path)
    config = checkpoint.config_of(record, path)
    shape = tuple(int(d) for d in record["data_shape"])
    classes = tuple(str(c) for c in record["classes"]) if config.conditional else None
    if generator == "ema" and "G_ema" not in record:
        raise GankitError(f"--generator ema: {path} holds no EMA generator (trained without --g-ema); "
                          "use --generator raw or leave it out")
    which = generator or ("ema" if "G_ema" in record else "raw")
    G, _ = build_models(config, shape, len(classes) if classes else None)
    checkpoint.load_state(G, record["G_ema" if which == "ema" else "G"],
                          "the EMA generator" if which == "ema" else "the generator", path)
    G.to(resolve_device(device)).eval()
    return G, {"config": config, "shape": shape, "path": path, "progress": record["progress"], "classes": classes,
               "generator": which}


def sample_classes(G: torch.nn.Module, n: int, seed: int) -> torch.Tensor | None:
    """The classes (n,) int64 `generate` gives a conditional G's samples when none are asked for:
    drawn from p(y), the training data's class frequencies, with their own stream of `seed`
    (None for an unconditional G)."""
    if not is_conditional(G):
        return None
    return draw_classes(G.class_weights, n, torch.Generator().manual_seed(seed + 1))


def generate(G: torch.nn.Module, n: int, seed: int, latent_dim: int,
             part: tuple[int, int] = (0, 1), classes: torch.Tensor | None = None) -> torch.Tensor:
    """n samples from G with noise drawn from `seed` on the CPU, so results match across devices.

    A conditional G makes sample i of class classes[i] ((n,) int64; default: sample_classes).

    part=(r, N): only the chunks of BATCH samples whose index is r modulo N, one process's share
    of a distributed evaluation; `interleave` puts the N parts back in order, identical to
    the one-process result (the noise is drawn for every chunk, so each chunk gets the same z).
    """
    rank, size = part
    device = next(G.parameters()).device
    g = torch.Generator().manual_seed(seed)
    if is_conditional(G) and classes is None:
        classes = sample_classes(G, n, seed)
    out = []
    with torch.no_grad():
        for i, start in enumerate(range(0, n, BATCH)):
            z = torch.randn(min(BATCH, n - start), latent_dim, generator=g)
            if i % size == rank:
                z = z.to(device)
                x = G(z) if classes is None else G.sample(z, classes[start:start + len(z)])
                out.append(x.float().cpu())
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
           device: str = "auto", class_: str | None = None, generator: str | None = None) -> Path:
    """Write n samples to out: FILE.png (a grid), FILE.npz (array), or a folder (one PNG each).
    class_ (a conditional run): a class name or index, n samples of it; or "all": n of each
    class, the grid one labelled row per class. generator: as for load_generator."""
    if n <= 0:
        raise GankitError(f"-n must be a positive integer, got {n}")
    out = Path(out)
    G, info = load_generator(path_or_run, device, generator)
    images = len(info["shape"]) == 3
    suffix = out.suffix.lower()
    if suffix not in (".png", ".npz", "") and not out.is_dir():
        raise GankitError(f"--out {out}: use FILE.png (grid), FILE.npz (array) or a folder (one PNG per sample)")
    if not images and suffix != ".npz":
        raise GankitError(f"--out {out}: this generator makes toy points, not images; use --out FILE.npz")
    classes = _asked_classes(class_, n, info, path_or_run)
    total = n if classes is None or class_ != "all" else len(classes)
    samples = generate(G, total, seed, info["config"].latent_dim, classes=classes)
    labels = classes if classes is not None else sample_classes(G, total, seed)
    if suffix == ".png":
        _save_sample_grid(samples, out, info["classes"] if class_ == "all" else None, n)
    elif suffix == ".npz":
        _save_npz(samples, out, images, labels, info["classes"])
    else:
        _save_folder(samples, out, labels, info["classes"])
    return out


def resolve_class(name: str, classes: tuple[str, ...]) -> int:
    """A class index from a name (any case) or an index; GankitError listing the valid ones."""
    lowered = [c.lower() for c in classes]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    if name.isdigit() and int(name) < len(classes):
        return int(name)
    listed = ", ".join(f"{i}: {c}" for i, c in enumerate(classes))
    raise GankitError(f"--class {name!r} is not one of this run's classes; use a name or an index: {listed}")


def _asked_classes(class_: str | None, n: int, info: dict, run) -> torch.Tensor | None:
    """The class of each sample asked for with --class (None: not asked; p(y) of the data)."""
    if class_ is None:
        return None
    if info["classes"] is None:
        raise GankitError(f"--class {class_}: {run} is not a conditional run (trained without --conditional), "
                          f"so it cannot be asked for a class; leave out --class")
    if class_ == "all":
        return torch.arange(len(info["classes"])).repeat_interleave(n)
    return torch.full((n,), resolve_class(class_, info["classes"]), dtype=torch.long)


def _save_sample_grid(samples: torch.Tensor, out: Path, row_names: tuple[str, ...] | None, per_row: int) -> None:
    if row_names is None:
        save_png(make_grid(samples), out)
        return
    save_png(label_rows(make_grid(samples, nrow=per_row), list(row_names), samples.shape[2]), out)


def _save_npz(samples: torch.Tensor, out: Path, images: bool, labels: torch.Tensor | None,
              classes: tuple[str, ...] | None) -> None:
    # Images as uint8 (N, H, W, C) like the npz: data reader expects; toy points as float32.
    array = to_uint8(samples) if images else samples.numpy().astype(np.float32)
    extra = {} if labels is None else {"labels": labels.numpy(), "classes": np.array(classes)}
    with atomic_write(out, suffix=".npz") as tmp:  # numpy would append .npz to any other name
        np.savez_compressed(tmp, images=array, **extra)


def _save_folder(samples: torch.Tensor, out: Path, labels: torch.Tensor | None,
                 classes: tuple[str, ...] | None) -> None:
    """One PNG per sample, numbered (and for a conditional run, named after its class too)."""
    if out.exists() and any(out.iterdir()):
        raise GankitError(f"--out {out} is a folder that is not empty; choose an empty or new folder")
    pixels = to_uint8(samples)
    width = len(str(len(samples) - 1))
    for i, picture in enumerate(pixels):
        tag = "" if labels is None else "-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", classes[int(labels[i])])
        save_png(picture, out / f"{i:0{width}d}{tag}.png")
