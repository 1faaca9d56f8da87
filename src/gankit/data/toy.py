"""Toy distributions with known densities: the 1-D problems of the theory and the 2-D
mode-collapse benchmarks (ring of 8 and grid of 25 Gaussians, as in VEEGAN and PacGAN). Each
mixture component is a class ("0".."K-1") for conditional training.

Samples stay in their natural coordinates, NOT scaled to [-1, 1], so that the published
definitions (e.g. "within 3 standard deviations of a mode") apply unchanged; models for toy
data therefore use a linear output layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ToyDistribution:
    """An isotropic Gaussian mixture: K components with means (K, dim), stds (K,), weights (K,)."""

    name: str
    dim: int
    means: torch.Tensor  # (K, dim) float64
    stds: torch.Tensor  # (K,) float64
    weights: torch.Tensor  # (K,) float64, sums to 1

    def __post_init__(self) -> None:
        k = len(self.weights)
        if self.means.shape != (k, self.dim) or self.stds.shape != (k,):
            raise ValueError(f"toy {self.name}: means {tuple(self.means.shape)}, stds "
                             f"{tuple(self.stds.shape)} do not fit {k} components of dimension {self.dim}")
        if not math.isclose(float(self.weights.sum()), 1.0, abs_tol=1e-9):
            raise ValueError(f"toy {self.name}: weights sum to {float(self.weights.sum())}, not 1")

    def sample(self, m: int, generator: torch.Generator) -> torch.Tensor:
        """(m, dim) float32 samples on the generator's device, drawn only from `generator`."""
        return self.sample_labelled(m, generator)[0]

    def sample_labelled(self, m: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (m, dim) float32, component index (m,) int64), on the generator's device and drawn
        only from `generator`; x is exactly what sample() draws from the same generator state."""
        device = generator.device
        if m <= 0:
            return torch.empty(0, self.dim, device=device), torch.empty(0, dtype=torch.int64, device=device)
        component = torch.multinomial(self.weights.to(device), m, replacement=True, generator=generator)
        noise = torch.randn(m, self.dim, generator=generator, device=device, dtype=torch.float64)
        x = self.means.to(device)[component] + noise * self.stds.to(device)[component, None]  # (m, dim)
        return x.float(), component

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact mixture log density of (m, dim) points: (m,) float64 on x's device."""
        x = x.to(torch.float64).reshape(-1, self.dim)
        means, stds = self.means.to(x.device), self.stds.to(x.device)
        sq = ((x[:, None, :] - means[None]) ** 2).sum(-1)  # (m, K) squared distances to the means
        log_norm = -self.dim * (torch.log(stds) + 0.5 * math.log(2 * math.pi))  # (K,)
        log_w = torch.log(self.weights.to(x.device))
        return torch.logsumexp(log_w + log_norm - sq / (2 * stds**2), dim=1)


def _mixture(name: str, means: list[list[float]], std: float) -> ToyDistribution:
    """Equal-weight mixture of isotropic Gaussians with a shared std."""
    means_t = torch.tensor(means, dtype=torch.float64)  # (K, dim)
    k, dim = means_t.shape
    return ToyDistribution(name, dim, means_t, torch.full((k,), std, dtype=torch.float64),
                           torch.full((k,), 1.0 / k, dtype=torch.float64))


def _ring(k: int, radius: float) -> list[list[float]]:
    return [[radius * math.cos(2 * math.pi * i / k), radius * math.sin(2 * math.pi * i / k)]
            for i in range(k)]


TOY_DISTRIBUTIONS: dict[str, ToyDistribution] = {
    "gauss1d": _mixture("gauss1d", [[4.0]], 0.5),
    "mixture1d": _mixture("mixture1d", [[-2.0], [2.0]], 0.5),
    "ring8": _mixture("ring8", _ring(8, 2.0), 0.02),
    "grid25": _mixture("grid25", [[float(i), float(j)] for i in (-4, -2, 0, 2, 4)
                                  for j in (-4, -2, 0, 2, 4)], 0.05),
}


@dataclass
class ToyDataset:
    """A toy distribution under its dataset name ("toy:ring8"); batches are sampled afresh."""

    name: str
    distribution: ToyDistribution

    @property
    def shape(self) -> tuple[int]:
        return (self.distribution.dim,)

    @property
    def classes(self) -> tuple[str, ...]:
        """One class per mixture component: "0".."K-1"."""
        return tuple(str(i) for i in range(len(self.distribution.weights)))

    @property
    def class_weights(self) -> torch.Tensor:
        """(K,) float64 component weights, summing to 1 (a copy)."""
        return self.distribution.weights.clone()

    def sample(self, m: int, generator: torch.Generator) -> torch.Tensor:
        """(m, dim) float32 on generator.device."""
        return self.distribution.sample(m, generator)

    def sample_labelled(self, m: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (m, dim) float32, component index (m,) int64) on generator.device; x is what
        sample() would draw from the same generator state."""
        return self.distribution.sample_labelled(m, generator)
