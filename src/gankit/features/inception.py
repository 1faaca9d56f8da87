"""The standard FID feature extractor: InceptionV3 as in TensorFlow's 2015-12-05 graph.

This is the network behind pytorch-fid and torch-fidelity (weights `pt_inception-2015-12-05`):
torchvision's InceptionV3 with the TensorFlow differences (average pools that ignore padding,
max pool in the last block's pool branch, 1008 classes). Preprocessing follows torch-fidelity:
uint8 RGB (grey repeated to 3 channels), bilinear resize to 299x299 as TensorFlow 1.x computes
it (no half-pixel offset), then (x - 128) / 128. Features: the 2048-d average pool.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gankit import checkpoint
from gankit.cache import cache_dir
from gankit.errors import GankitError
from gankit.files import atomic_write, sha256

WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
               "weights-inception-2015-12-05-6726825d.pth")
WEIGHTS_SHA256_PREFIX = "6726825d"  # torch.hub convention: the file name carries its hash's prefix
FEATURE_DIM = 2048
SIZE = 299


def resize_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) as tf.image.resize_bilinear(align_corners=False) in TF 1.x:
    output pixel i samples the input at i * (in / out), with no half-pixel offset."""

    def taps(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(size, dtype=torch.float32, device=x.device) * (n_in / size)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        return lo, hi, (src - lo).to(x.dtype)

    y0, y1, wy = taps(x.shape[2])
    x0, x1, wx = taps(x.shape[3])
    left, right = x[..., x0], x[..., x1]  # (N, C, H, size)
    rows = left + (right - left) * wx
    top, bottom = rows[..., y0, :], rows[..., y1, :]  # (N, C, size, size)
    return top + (bottom - top) * wy[:, None]


class ConvBN(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3, as TensorFlow) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_same(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's 3x3 average pool leaves the zero padding out of the mean.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):  # Mixed_5b/c/d, 35x35
    def __init__(self, cin: int, pool: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = ConvBN(cin, 48, 1), ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool_same(x)),
        ], 1)


class BlockB(nn.Module):  # Mixed_6a, 35x35 -> 17x17
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class BlockC(nn.Module):  # Mixed_6b/c/d/e, 17x17, factorised 7x7
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x):
        double = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            double,
            self.branch_pool(_avg_pool_same(x)),
        ], 1)


class BlockD(nn.Module):  # Mixed_7a, 17x17 -> 8x8
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = ConvBN(cin, 192, 1), ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3_2(self.branch3x3_1(x)),
            self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x)))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class BlockE(nn.Module):  # Mixed_7b/c, 8x8; the last one pools with max, as TensorFlow's graph does
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x):
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool_same(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(single), self.branch3x3_2b(single),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(pooled),
        ], 1)


class FIDInception(nn.Module):
    """uint8 images (N, 1 or 3, H, W) -> (N, 2048) float32 pool features."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)         # (N, 32, 149, 149)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)                  # (N, 32, 147, 147)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)       # (N, 64, 147, 147) -> pool 73
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)                  # (N, 80, 73, 73)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)                 # (N, 192, 71, 71) -> pool 35
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.Mixed_6a = BlockB(288)                             # (N, 768, 17, 17)
        self.Mixed_6b, self.Mixed_6c = BlockC(768, 128), BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = BlockC(768, 160), BlockC(768, 192)
        self.Mixed_7a = BlockD(768)                             # (N, 1280, 8, 8)
        self.Mixed_7b, self.Mixed_7c = BlockE(1280, max_pool=False), BlockE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)  # the Inception Score's logits (weight only); not the features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(images)

    def logits_unbiased(self, pool: torch.Tensor) -> torch.Tensor:
        """(N, 1008) class logits of pool features without fc's bias: torch-fidelity's
        'logits_unbiased', the input of its (and the original TF) Inception Score."""
        return pool.mm(self.fc.weight.T)

    def pool(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected uint8 images (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
        x = images.expand(-1, 3, -1, -1).float() if images.shape[1] == 1 else images.float()
        x = (resize_tf1(x, SIZE) - 128) / 128
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                      self.Mixed_7c):
            x = block(x)
        return x.mean((2, 3))  # (N, 2048)


def load(weights: str | os.PathLike | None = None) -> tuple[FIDInception, dict]:
    """The network with the FID weights: from `weights`, the cache, or a download (hash-checked)."""
    path = Path(weights) if weights is not None else _cached_or_download()
    state = checkpoint.load_plain(path)  # weights only: never runs code
    model = FIDInception()
    checkpoint.load_state(model, state, "the Inception weights", path)
    model.eval().requires_grad_(False)
    return model, {"file": str(path), "sha256": sha256(path)}


def _cached_or_download() -> Path:
    target = cache_dir("weights") / WEIGHTS_URL.rsplit("/", 1)[1]
    if target.is_file():
        return target
    try:
        with atomic_write(target) as tmp:  # moved into place only once its hash is checked
            with urllib.request.urlopen(WEIGHTS_URL, timeout=60) as response, open(tmp, "wb") as out:
                while block := response.read(1 << 20):
                    out.write(block)
            digest = sha256(tmp)
            if not digest.startswith(WEIGHTS_SHA256_PREFIX):
                raise GankitError(f"checksum mismatch for {WEIGHTS_URL}: SHA-256 {digest} does not start with "
                                  f"{WEIGHTS_SHA256_PREFIX}; the download was discarded")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise GankitError(
            f"the FID Inception weights are not here and could not be downloaded ({getattr(exc, 'reason', exc)}). "
            f"Download {WEIGHTS_URL} (or pytorch-fid's pt_inception-2015-12-05-6726825d.pth) on a machine "
            f"with network access and pass it with --inception-weights PATH, or put it at {target}"
        ) from None
    return target


@torch.no_grad()
def extract(model: FIDInception, images: torch.Tensor, batch: int = 100) -> torch.Tensor:
    """(N, 2048) float64 features of uint8 (N, C, H, W) images."""
    device = next(model.parameters()).device
    return torch.cat([model(images[i:i + batch].to(device)).double().cpu()
                      for i in range(0, len(images), batch)])


@torch.no_grad()
def extract_with_logits(model: FIDInception, images: torch.Tensor,
                        batch: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2048) float64 features and (N, 1008) float32 unbiased logits (Inception Score) of
    uint8 (N, C, H, W) images, in one pass."""
    device = next(model.parameters()).device
    features, logits = [], []
    for i in range(0, len(images), batch):
        pool = model(images[i:i + batch].to(device))
        features.append(pool.double().cpu())
        logits.append(model.logits_unbiased(pool).float().cpu())
    return torch.cat(features), torch.cat(logits)
