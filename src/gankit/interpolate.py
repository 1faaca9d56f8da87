"""`gankit interpolate`: a walk through the noise space between the noise vectors of some seeds.

What "seed s" means here: the noise vector z_s that `gankit sample --seed s -n 1` draws, the first
vector of `torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(s))` (so also the
first sample of `gankit sample --seed s -n N` for any N). A frame at z_s is therefore that
sample's picture, pixel for pixel.

The walk goes seed to seed: segment i runs from z_{s_i} to z_{s_{i+1}} in `frames` steps, at
t = j / frames (j = 0 .. frames - 1), by spherical interpolation (default: the noise's norm stays
near sqrt(d), where N(0, I) puts its mass) or linear interpolation. A GIF closes the loop (the last
seed walks back to the first) so that it repeats without a jump; a PNG is a grid with one row per
segment, each row from one seed to the next, both ends included; an .npz holds the frames (images
as uint8 (F, H, W, C), toy points as float32 (F, dim)), their z and the seed indices of the key
frames. Each frame is G of one z alone (batch of one, G in eval mode), as `gankit sample -n 1` does.

A 2-D toy generator makes one point per z: its PNG and GIF are scatter plots of the data (grey)
with the path of G(z) along the walk (red), the seeds' points marked (black) and, in the GIF, the
current point (blue).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from gankit.errors import GankitError
from gankit.files import atomic_write
from gankit.imagegrid import make_grid, save_gif, save_png, scatter, to_uint8

FORMATS = (".gif", ".png", ".npz")


def parse_seeds(text: str) -> list[int]:
    """'0,1,2,3' -> [0, 1, 2, 3]: at least two non-negative integers, comma-separated."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        seeds = [int(p) for p in parts]
    except ValueError:
        raise GankitError(f"--seeds must be comma-separated non-negative integers such as 0,1,2,3; "
                          f"got {text!r}") from None
    if any(s < 0 for s in seeds):
        raise GankitError(f"--seeds must be non-negative integers; got {text!r}")
    if len(seeds) < 2:
        raise GankitError(f"--seeds needs at least two seeds to walk between, such as 0,1; got {text!r}")
    return seeds


def seed_noise(seed: int, latent_dim: int) -> torch.Tensor:
    """z_s, (latent_dim,) float32: the first noise vector `gankit sample --seed s` draws."""
    return torch.randn(1, latent_dim, generator=torch.Generator().manual_seed(seed))[0]


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985) from z0 (t = 0) to z1 (t = 1), computed in float64.
    Parallel vectors (angle ~ 0) fall back to linear interpolation."""
    if t == 0:
        return z0.clone()
    if t == 1:
        return z1.clone()
    a, b = z0.double(), z1.double()
    cos = torch.clamp((a / a.norm()) @ (b / b.norm()), -1.0, 1.0)
    omega = torch.arccos(cos)
    if float(torch.sin(omega)) < 1e-8:
        return lerp(z0, z1, t)
    s = torch.sin(omega)
    return ((torch.sin((1 - t) * omega) / s) * a + (torch.sin(t * omega) / s) * b).to(z0.dtype)


def lerp(z0: torch.Tensor, z1: torch.Tensor, t: float) -> torch.Tensor:
    if t == 0:
        return z0.clone()
    if t == 1:
        return z1.clone()
    return ((1 - t) * z0.double() + t * z1.double()).to(z0.dtype)


def walk(seeds: list[int], frames: int, latent_dim: int, linear: bool = False,
         closed: bool = True) -> tuple[torch.Tensor, list[int]]:
    """(z of every frame (F, latent_dim), index of each seed's key frame).

    closed: the last seed walks back to the first (GIF), `frames` steps per segment, the key
    frame of seed i at i * frames. Open (PNG): rows of frames + 1 steps, both ends included."""
    if frames < 1:
        raise GankitError(f"--frames must be a positive integer, got {frames}")
    keys = [seed_noise(s, latent_dim) for s in seeds]
    mix = lerp if linear else slerp
    ends = keys[1:] + keys[:1] if closed else keys[1:]
    pairs = list(zip(keys[:len(ends)], ends, strict=True))
    steps = frames if closed else frames + 1
    zs = [mix(a, b, j / frames) for a, b in pairs for j in range(steps)]
    key_frames = [i * steps for i in range(len(seeds))] if closed else \
        [i * steps for i in range(len(pairs))] + [len(zs) - 1]
    return torch.stack(zs), key_frames


@torch.no_grad()
def render(G: torch.nn.Module, z: torch.Tensor, class_index: int | None = None) -> torch.Tensor:
    """G of each z alone (batch of one, as `gankit sample -n 1`), float on the CPU, (F, ...);
    a conditional G's of class class_index."""
    device = next(G.parameters()).device
    if class_index is None:
        return torch.cat([G(z[i:i + 1].to(device)).float().cpu() for i in range(len(z))])
    y = torch.tensor([class_index])
    return torch.cat([G.sample(z[i:i + 1].to(device), y).float().cpu() for i in range(len(z))])


def check_out(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise GankitError(f"--out {out}: use FILE.gif (a looping animation), FILE.png (a grid, one row "
                          "per pair of seeds) or FILE.npz (the frames as an array)")
    if out.is_dir():
        raise GankitError(f"--out {out} is a folder; give a file name ending in .gif, .png or .npz")
    return suffix


def interpolate(path_or_run: str | os.PathLike, seeds: str | list[int], frames: int,
                out: str | os.PathLike, linear: bool = False, fps: float = 12.0,
                device: str = "auto", class_: str | None = None) -> Path:
    """Write the walk to out (.gif, .png or .npz); returns out. A conditional run walks within
    class_ (a name or index), whose key frames are `gankit sample --seed s -n 1 --class class_`."""
    from gankit.sample import load_generator, resolve_class

    out = Path(out)
    suffix = check_out(out)
    seeds = parse_seeds(seeds) if isinstance(seeds, str) else list(seeds)
    if frames < 1:
        raise GankitError(f"--frames must be a positive integer, got {frames}")
    if fps <= 0:
        raise GankitError(f"--fps must be positive, got {fps}")
    G, info = load_generator(path_or_run, device)
    shape = info["shape"]
    images = len(shape) == 3
    if not images and shape[0] != 2 and suffix != ".npz":
        raise GankitError(f"--out {out}: this generator makes {shape[0]}-D toy points; a picture of a "
                          "walk is drawn for images and 2-D points only; use --out FILE.npz")
    classes = info.get("classes")
    if (class_ is None) != (classes is None):
        raise GankitError(f"--class {class_}: {path_or_run} is not a conditional run; leave out --class" if classes is None
                          else f"{path_or_run} is a conditional run: give the class to walk in with --class "
                               f"(one of {', '.join(classes)})")
    class_index = resolve_class(class_, classes) if classes is not None else None
    z, key_frames = walk(seeds, frames, info["config"].latent_dim, linear, closed=suffix == ".gif")
    x = render(G, z, class_index)
    try:
        _write(out, suffix, x, z, seeds, key_frames, images, frames, fps, info["config"].data)
    except OSError as exc:
        raise GankitError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    return out


def _write(out: Path, suffix: str, x: torch.Tensor, z: torch.Tensor, seeds: list[int],
           key_frames: list[int], images: bool, frames: int, fps: float, data: str) -> None:
    if suffix == ".npz":
        array = to_uint8(x) if images else x.numpy().astype(np.float32)
        with atomic_write(out, suffix=".npz") as tmp:
            np.savez_compressed(tmp, frames=array, z=z.numpy(), seeds=np.array(seeds),
                                key_frames=np.array(key_frames))
    elif images and suffix == ".png":
        save_png(make_grid(x, nrow=frames + 1), out)
    elif images:
        save_gif(list(to_uint8(x)), out, fps)
    else:
        _write_toy(out, suffix, x, key_frames, fps, data)


def _write_toy(out: Path, suffix: str, x: torch.Tensor, key_frames: list[int], fps: float,
               data: str) -> None:
    reference = _toy_reference(data)
    extent = float(torch.cat([x, reference]).abs().max().clamp(min=1e-6)) * 1.1
    keys = x[key_frames]
    if suffix == ".png":
        save_png(_toy_picture(x, keys, reference, extent), out)
    else:
        save_gif([_toy_picture(x, keys, reference, extent, current=x[i]) for i in range(len(x))], out, fps)


def _toy_reference(data: str) -> torch.Tensor:
    from gankit.data import load_dataset

    return load_dataset(data).sample(512, torch.Generator().manual_seed(0))


def _toy_picture(path: torch.Tensor, keys: torch.Tensor, reference: torch.Tensor, extent: float,
                 current: torch.Tensor | None = None, size: int = 384) -> np.ndarray:
    """Data grey, the path of G(z) red, the seeds' points black, the current point blue."""
    canvas = Image.fromarray(scatter(path, reference, size=size, extent=extent))
    draw = ImageDraw.Draw(canvas)

    def dot(p: torch.Tensor, r: float, colour) -> None:
        x, y = (float(p[0]) / extent + 1) * size / 2, (1 - float(p[1]) / extent) * size / 2
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)

    for p in keys:
        dot(p, 4, (0, 0, 0))
    if current is not None:
        dot(current, 5, (30, 60, 220))
    return np.asarray(canvas)
