"""Metrics for the toy distributions, where the data density is known.

2-D mixtures (ring of 8, grid of 25), as defined by VEEGAN and PacGAN over 2,500 samples:
- a sample is high quality if it lies within 3 standard deviations of its nearest mode;
- a mode is captured if at least `min_count` high-quality samples are nearest to it;
- reverse KL: KL(q || p) between q, the histogram of high-quality samples over the modes, and p,
  the true mode weights (uniform); 0 when every mode gets its share, log K for one mode.
1-D problems: the Jensen-Shannon divergence between the data density and a histogram of the
generator's samples, in nats (between 0 and log 2).
"""

from __future__ import annotations

import torch

from gankit.data.toy import ToyDistribution


def mode_metrics(samples: torch.Tensor, toy: ToyDistribution, min_count: int = 1) -> dict[str, float]:
    """{"modes": captured, "high_quality": percent, "reverse_kl": nats} for (N, dim) samples."""
    x = samples.detach().to(torch.float64).cpu().reshape(len(samples), toy.dim)
    d = torch.cdist(x, toy.means)  # (N, K)
    nearest_d, nearest = d.min(1)
    high = nearest_d <= 3 * toy.stds[nearest]
    counts = torch.bincount(nearest[high], minlength=len(toy.means)).double()
    captured = int((counts >= min_count).sum())
    reverse_kl = float("inf")
    if counts.sum() > 0:
        q = counts / counts.sum()
        present = q > 0
        reverse_kl = float((q[present] * (q[present] / toy.weights[present]).log()).sum())
    return {"modes": captured, "high_quality": 100.0 * high.double().mean().item(),
            "reverse_kl": reverse_kl, "n_samples": len(x)}

def jsd_1d(samples: torch.Tensor, toy: ToyDistribution, bins: int = 400,
           lo: float | None = None, hi: float | None = None) -> float:
    """JSD(p_data || p_G) in nats, p_G estimated by a histogram of the 1-D samples.

    The data's bin masses are exact (density integrated with the trapezoid rule on a fine grid), so
    the only estimation error is the generator's histogram. The range covers the data's mass (mean
    +- 8 std of every component) and the samples."""
    if toy.dim != 1:
        raise ValueError("jsd_1d is for 1-D distributions")
    x = samples.detach().to(torch.float64).cpu().flatten()
    lo = lo if lo is not None else min(float((toy.means[:, 0] - 8 * toy.stds).min()), float(x.min()))
    hi = hi if hi is not None else max(float((toy.means[:, 0] + 8 * toy.stds).max()), float(x.max()))
    q = torch.histc(x, bins=bins, min=lo, max=hi)
    q = q / q.sum()
    fine = torch.linspace(lo, hi, bins * 50 + 1, dtype=torch.float64)
    density = toy.log_prob(fine[:, None]).exp()
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64),
                            torch.cumulative_trapezoid(density, fine)])
    p = cumulative[::50].diff()
    p = p / p.sum()
    return jsd(p, q)

def jsd(p: torch.Tensor, q: torch.Tensor) -> float:
    """Jensen-Shannon divergence (nats) between two discrete distributions on the same bins."""
    m = 0.5 * (p + q)

    def kl(a: torch.Tensor) -> float:
        present = a > 0
        return float((a[present] * (a[present] / m[present]).log()).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)

