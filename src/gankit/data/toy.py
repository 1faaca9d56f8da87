"""Toy distributions with known densities: the 1-D problems of the theory and the 2-D
mode-collapse benchmarks (ring of 8 and grid of 25 Gaussians, as in VEEGAN and PacGAN).

Samples stay in their natural coordinates (not scaled to [-1, 1]) so that the published
definitions (e.g. "within 3 standard deviations of a mode") apply unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ToyDistribution:
    """An isotropic Gaussian mixture: K components with means (K, dim), stds (K,), weights (K,)."""

    name: str
    means: torch.Tensor
    stds: torch.Tensor
    weights: torch.Tensor

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, m: int, generator: torch.Generator) -> torch.Tensor:
        """(m, dim) float32 samples on the generator's device, drawn only from `generator`."""
        device = generator.device
        component = torch.multinomial(self.weights.to(device), m, replacement=True, generator=generator)
        noise = torch.randn(m, self.dim, generator=generator, device=device, dtype=torch.float64)
        x = self.means.to(device)[component] + noise * self.stds.to(device)[component, None]
        return x.float()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log density of (m, dim) points, float64 (m,)."""
        x = x.to(torch.float64).reshape(-1, self.dim).cpu()
        sq = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)  # (m, K)
        log_norm = -self.dim * (torch.log(self.stds) + 0.5 * math.log(2 * math.pi))  # (K,)
        return torch.logsumexp(torch.log(self.weights) + log_norm - sq / (2 * self.stds**2), dim=1)


def _mixture(name: str, means: list, std: float) -> ToyDistribution:
    means_t = torch.tensor(means, dtype=torch.float64).reshape(len(means), -1)
    k = len(means)
    return ToyDistribution(name, means_t, torch.full((k,), std, dtype=torch.float64),
                           torch.full((k,), 1.0 / k, dtype=torch.float64))


TOY_DISTRIBUTIONS: dict[str, ToyDistribution] = {
    "gauss1d": _mixture("gauss1d", [[4.0]], 0.5),
    "mixture1d": _mixture("mixture1d", [[-2.0], [2.0]], 0.5),
    "ring8": _mixture("ring8", [[2 * math.cos(2 * math.pi * i / 8), 2 * math.sin(2 * math.pi * i / 8)]
                                for i in range(8)], 0.02),
    "grid25": _mixture("grid25", [[float(i), float(j)] for i in (-4, -2, 0, 2, 4)
                                  for j in (-4, -2, 0, 2, 4)], 0.05),
}
