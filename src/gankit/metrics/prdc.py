"""k-nearest-neighbour manifold metrics on feature sets.

- Improved precision and recall (Kynkaanniemi et al. 2019, k = 3): precision is the share of fake
  samples inside the real manifold (the union of balls around each real sample reaching its k-th
  nearest real neighbour); recall is the share of real samples inside the fake manifold.
- Density and coverage (Naeem et al. 2020, k = 5): density counts, per fake sample, how many real
  balls contain it (divided by k, averaged); coverage is the share of real samples whose ball
  contains at least one fake sample.
Distances are Euclidean, computed in float64 in row blocks so that 10,000 x 10,000 fits in memory.
"""

from __future__ import annotations

import numpy as np
import torch

BLOCK = 2048


def _distances(a: torch.Tensor, b: torch.Tensor):
    """Yield (start, (block, len(b)) distances) over row blocks of a."""
    for start in range(0, len(a), BLOCK):
        yield start, torch.cdist(a[start:start + BLOCK], b)


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row (self excluded), (N,)."""
    if len(x) <= k:
        raise ValueError(f"need more than k = {k} samples, got {len(x)}")
    radii = torch.empty(len(x), dtype=torch.float64)
    for start, d in _distances(x, x):
        # the smallest distance is the point itself (0), so the k-th other neighbour is index k
        radii[start:start + len(d)] = d.kthvalue(k + 1, dim=1).values
    return radii


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    x, y = _as_tensor(real), _as_tensor(fake)
    return _inside_share(y, x, knn_radii(x, k)), _inside_share(x, y, knn_radii(y, k))


def _inside_share(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of points within the ball of at least one centre."""
    inside = torch.zeros(len(points), dtype=torch.bool)
    for start, d in _distances(points, centres):
        inside[start:start + len(d)] = (d <= radii[None, :]).any(1)
    return inside.double().mean().item()


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    x, y = _as_tensor(real), _as_tensor(fake)
    radii = knn_radii(x, k)
    balls_containing = torch.zeros(len(y), dtype=torch.float64)
    nearest_fake = torch.empty(len(x), dtype=torch.float64)
    for start, d in _distances(y, x):  # (fake block, real)
        balls_containing[start:start + len(d)] = (d <= radii[None, :]).sum(1).double()
    for start, d in _distances(x, y):  # (real block, fake)
        nearest_fake[start:start + len(d)] = d.min(1).values
    density = balls_containing.sum().item() / (k * len(y))
    coverage = (nearest_fake < radii).double().mean().item()
    return density, coverage


def nearest(queries: torch.Tensor, points: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, indices), each (len(queries), k): every query's k nearest points, nearest
    first; Euclidean, over the same row blocks as the metrics (`gankit nearest`)."""
    if not 1 <= k <= len(points):
        raise ValueError(f"need 1 <= k <= {len(points)} points, got k = {k}")
    best_d = torch.full((len(queries), 0), float("inf"), dtype=queries.dtype)
    best_i = torch.empty((len(queries), 0), dtype=torch.long)
    for start, d in _distances(points, queries):  # (block of points, queries)
        d = torch.cat([best_d, d.T], dim=1)
        i = torch.cat([best_i, torch.arange(start, start + d.shape[1] - best_d.shape[1]).expand(len(queries), -1)], 1)
        top = d.topk(min(k, d.shape[1]), dim=1, largest=False)  # sorted, nearest first
        best_d, best_i = top.values, i.gather(1, top.indices)
    return best_d, best_i
