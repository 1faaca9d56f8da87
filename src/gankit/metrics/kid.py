"""Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with the polynomial kernel
k(x, y) = (x.y / D + 1)^3, averaged over random subsets (100 subsets of 1,000 by default)."""

from __future__ import annotations

import numpy as np


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 estimate between (m, D) x and (m, D) y (the same m), float64."""
    d = x.shape[1]
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    m = len(x)
    # The diagonals k(x_i, x_i) are left out of the within-set means: that is what makes it unbiased.
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.mean())


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """(mean, std) of MMD^2 over `subsets` random subsets of `subset_size` from each set (without
    replacement within a subset); the subset size is capped at the smaller set."""
    x, y = (np.asarray(a, dtype=np.float64) for a in (real, fake))
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    scores = np.array([
        mmd2_unbiased(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)])
        for _ in range(subsets)
    ])
    return float(scores.mean()), float(scores.std())
