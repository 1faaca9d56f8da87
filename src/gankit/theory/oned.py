"""One-dimensional GAN quantities computed exactly, by quadrature on a fine grid.

With p = p_data and q = p_G on a grid x (n,), float64 throughout:
    V(D, G) = integral p log D + q log(1 - D)               (the value, eq. 1 of the paper)
    D*(x)   = p / (p + q)                                    (Proposition 1)
    C(G)    = V(D*, G) = -log 4 + 2 JSD(p || q)              (Theorem 1)
The training code works with logits l, D = sigmoid(l), so the value uses
log D = -softplus(-l) and log(1 - D) = -softplus(l), finite where D rounds to 0 or 1.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gankit.data.toy import ToyDistribution
from gankit.losses import discriminator_loss

LOG4 = math.log(4.0)


@contextlib.contextmanager
def one_thread():
    """Run torch on one CPU thread. The 1-D networks are so small that the threads' hand-offs
    cost more than the arithmetic, and on a busy machine spinning threads make it ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def gaussian(name: str, mean: float, std: float) -> ToyDistribution:
    """A single 1-D Gaussian as a ToyDistribution (exact log density, sampling)."""
    return ToyDistribution(name, 1, torch.tensor([[mean]], dtype=torch.float64),
                           torch.tensor([std], dtype=torch.float64), torch.ones(1, dtype=torch.float64))


def grid_covering(*distributions: ToyDistribution, n: int = 4001, widths: float = 8.0) -> torch.Tensor:
    """(n,) float64 points covering every component of the distributions to +- `widths` stds."""
    lo = min(float((d.means[:, 0] - widths * d.stds).min()) for d in distributions)
    hi = max(float((d.means[:, 0] + widths * d.stds).max()) for d in distributions)
    return torch.linspace(lo, hi, n, dtype=torch.float64)


def density(distribution: ToyDistribution, x: torch.Tensor) -> torch.Tensor:
    """Exact density on the grid x (n,) -> (n,) float64."""
    return distribution.log_prob(x[:, None]).exp()


def histogram_density(samples: torch.Tensor, x: torch.Tensor, bin_width: float) -> torch.Tensor:
    """Density of 1-D samples estimated by a histogram of the given bin width, read at the grid
    points x (n,) -> (n,) float64. Points outside the samples' range get 0."""
    s = samples.detach().to(torch.float64).flatten().cpu()
    lo, hi = float(x[0]), float(x[-1])
    bins = max(1, round((hi - lo) / bin_width))
    counts = torch.histc(s, bins=bins, min=lo, max=hi)
    width = (hi - lo) / bins
    index = ((x - lo) / width).floor().long().clamp(0, bins - 1)
    return counts[index] / (len(s) * width)


def integrate(f: torch.Tensor, x: torch.Tensor) -> float:
    return float(torch.trapezoid(f, x))


def optimal_discriminator(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """D* = p / (p + q); 1/2 where both densities vanish (any D is optimal there)."""
    total = p + q
    return torch.where(total > 0, p / total.clamp_min(1e-300), torch.full_like(p, 0.5))


def value(p: torch.Tensor, q: torch.Tensor, logits: torch.Tensor, x: torch.Tensor) -> float:
    """V(D, G) = integral p log D + q log(1 - D), D = sigmoid(logits), all on the grid x."""
    logits = logits.to(torch.float64)
    return integrate(-p * F.softplus(-logits) - q * F.softplus(logits), x)


def value_at_optimum(p: torch.Tensor, q: torch.Tensor, x: torch.Tensor) -> float:
    """V(D*, G) by quadrature of its definition, independently of the JSD formula."""
    d = optimal_discriminator(p, q)
    log_d = torch.where(p > 0, d.clamp_min(1e-300).log(), torch.zeros_like(p))
    log_1md = torch.where(q > 0, (1 - d).clamp_min(1e-300).log(), torch.zeros_like(q))
    return integrate(p * log_d + q * log_1md, x)


def jsd(p: torch.Tensor, q: torch.Tensor, x: torch.Tensor) -> float:
    """JSD(p || q) in nats between two densities on the grid x."""
    m = 0.5 * (p + q)

    def kl(a: torch.Tensor) -> torch.Tensor:
        ratio = torch.where(a > 0, a / m.clamp_min(1e-300), torch.ones_like(a))
        return a * ratio.log()

    return 0.5 * integrate(kl(p), x) + 0.5 * integrate(kl(q), x)


def central_region(p: torch.Tensor, q: torch.Tensor, x: torch.Tensor, mass: float = 0.99) -> tuple[float, float]:
    """The interval holding the central `mass` of the equal mixture (p + q) / 2. Outside it both
    densities are tiny: D* is a ratio of two tiny numbers and D sees almost no training samples."""
    m = 0.5 * (p + q)
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(m, x)])
    cdf = cdf / cdf[-1]
    tail = (1 - mass) / 2
    lo = x[torch.searchsorted(cdf, torch.tensor([tail], dtype=torch.float64)).clamp(max=len(x) - 1)]
    hi = x[torch.searchsorted(cdf, torch.tensor([1 - tail], dtype=torch.float64)).clamp(max=len(x) - 1)]
    return float(lo), float(hi)


def d_on_grid(D: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """D's logits at the grid points: (n,) float64."""
    with torch.no_grad():
        return D(x.float()[:, None]).to(torch.float64)


def train_discriminator(D: nn.Module, real: Callable[[int], torch.Tensor],
                        fake: Callable[[int], torch.Tensor], steps: int, batch: int,
                        lr: float, decay: bool = True) -> list[float]:
    """Train D alone for `steps` Adam steps on fresh (batch, 1) real and fake minibatches, by the
    discriminator loss -V. With `decay` the learning rate falls to 0 on a cosine, so the last
    steps average out minibatch noise instead of jumping around the optimum. Returns the losses."""
    opt = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if decay else None)
    losses = []
    for _ in range(steps):
        loss = discriminator_loss(D(real(batch)), D(fake(batch)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if schedule is not None:
            schedule.step()
        losses.append(float(loss.detach()))
    return losses
