"""`gankit theory optimal-d`: for a frozen G, train D to convergence and compare it with
D*(x) = p_data(x) / (p_data(x) + p_G(x)) (Proposition 1 of Goodfellow et al. 2014).

p_G is exact for the affine generator G(z) = a z + b of z ~ N(0, 1), i.e. N(b, a^2); for a
frozen random MLP generator it is a fine histogram of many samples. The value reached by the
trained D is compared with max_D V = -log 4 + 2 JSD(p_data || p_G) (Theorem 1), both by quadrature.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import torch

from gankit.data.toy import TOY_DISTRIBUTIONS
from gankit.errors import ConfigError
from gankit.files import write_json
from gankit.models.mlp import MLPDiscriminator, MLPGenerator
from gankit.theory import oned, plots, say

DATA_1D = ("gauss1d", "mixture1d")
GENERATORS = ("affine", "mlp")
AFFINE = (1.5, 0.5)  # G(z) = 1.5 z + 0.5: overlaps both modes of mixture1d, matches neither
HISTOGRAM_SAMPLES = 2_000_000  # MLP generator: p_G from a histogram of this many samples ...
MC_SAMPLES = 200_000  # Monte Carlo estimate of V(D)
HISTOGRAM_BIN = 0.02  # ... in bins this wide (about 800 samples per bin where p_G = 0.02)


def run(out: str | Path, seed: int = 0, data: str = "mixture1d", generator: str = "affine",
        steps: int = 3000, batch: int = 2048, d_width: int = 128, lr: float = 1e-3,
        log: TextIO | None = None) -> dict:
    """Train D against a frozen G; write optimal-d.png and results.json to out; return the results."""
    with oned.one_thread():
        return _run(out, seed, data, generator, steps, batch, d_width, lr, log)


def _run(out, seed, data, generator, steps, batch, d_width, lr, log) -> dict:
    if data not in DATA_1D:
        raise ConfigError(f"--data must be one of {', '.join(DATA_1D)}, got {data!r}")
    if generator not in GENERATORS:
        raise ConfigError(f"--generator must be one of {', '.join(GENERATORS)}, got {generator!r}")
    for name, v in (("--steps", steps), ("--batch-size", batch), ("--d-width", d_width)):
        if v <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {v}")
    out = Path(out)
    torch.manual_seed(seed)
    toy = TOY_DISTRIBUTIONS[data]
    rng = torch.Generator().manual_seed(seed)

    # The frozen generator and its density on the grid.
    if generator == "affine":
        a, b = AFFINE
        G = None
        p_g_dist = oned.gaussian("affine", b, abs(a))
        x = oned.grid_covering(toy, p_g_dist)
        q = oned.density(p_g_dist, x)

        def fake(m: int) -> torch.Tensor:
            return (a * torch.randn(m, 1, generator=rng) + b).float()

        g_info = {"kind": "affine", "formula": f"G(z) = {a} z + {b}, z ~ N(0, 1)",
                  "p_G": f"N({b}, {abs(a)}^2), exact"}
    else:
        G = MLPGenerator(1, (1,), width=32, depth=3, tanh=False).requires_grad_(False)
        # A random MLP's outputs are bunched near 0; an affine map (part of the frozen G) gives
        # them the affine generator's mean and spread, so p_G overlaps the data.
        with torch.no_grad():
            probe = G(torch.randn(100_000, 1, generator=torch.Generator().manual_seed(seed + 1)))
        shift, scale = float(probe.mean()), float(probe.std())

        def fake(m: int) -> torch.Tensor:
            with torch.no_grad():
                return (G(torch.randn(m, 1, generator=rng)) - shift) / scale * AFFINE[0] + AFFINE[1]

        samples = torch.cat([fake(100_000) for _ in range(HISTOGRAM_SAMPLES // 100_000)])
        lo = min(float(samples.min()), float((toy.means - 8 * toy.stds[:, None]).min()))
        hi = max(float(samples.max()), float((toy.means + 8 * toy.stds[:, None]).max()))
        x = torch.linspace(lo, hi, 4001, dtype=torch.float64)
        q = oned.histogram_density(samples, x, HISTOGRAM_BIN)
        g_info = {"kind": "mlp", "formula": f"frozen random MLP 1 -> 32 -> 32 -> 1 (ReLU), z ~ N(0, 1), output "
                             f"standardised to mean {AFFINE[1]}, std {AFFINE[0]}",
                  "p_G": f"histogram of {HISTOGRAM_SAMPLES} samples, bins {HISTOGRAM_BIN} wide"}
    p = oned.density(toy, x)

    def real(m: int) -> torch.Tensor:
        return toy.sample(m, rng)

    # D trained to convergence against the frozen G.
    D = MLPDiscriminator((1,), width=d_width)
    say(log, f"gankit theory optimal-d: training D for {steps} steps (batch {batch} real + {batch} "
              f"fake) against the frozen {generator} generator on {data}")
    losses = oned.train_discriminator(D, real, fake, steps, batch, lr)
    logits = oned.d_on_grid(D, x)
    d = torch.sigmoid(logits)
    d_star = oned.optimal_discriminator(p, q)

    lo, hi = oned.central_region(p, q, x, 0.99)
    inside = (x >= lo) & (x <= hi)
    error = (d - d_star).abs()[inside]
    jsd = oned.jsd(p, q, x)
    c_of_g = -oned.LOG4 + 2 * jsd
    v_trained = oned.value(p, q, logits, x)
    # A Monte Carlo estimate as the training loop would see it, on 200,000 fresh samples of each
    # (standard error ~2e-3).
    with torch.no_grad():
        v_mc = float(-torch.nn.functional.softplus(-D(real(MC_SAMPLES))).double().mean()
                     - torch.nn.functional.softplus(D(fake(MC_SAMPLES))).double().mean())

    results = {
        "command": "theory optimal-d",
        "seed": seed,
        "data": {"name": data, "p_data": _describe(toy)},
        "generator": g_info,
        "discriminator": {"model": f"MLP 1 -> {d_width} -> {d_width} -> 1 (LeakyReLU 0.2)",
                          "steps": steps, "batch": batch, "lr": lr, "optimizer": "adam (0.5, 0.999), cosine decay to 0",
                          "final_loss": losses[-1]},
        "region_99": [lo, hi],
        "max_abs_error": float(error.max()),
        "mean_abs_error": float(error.mean()),
        "value_trained_d": v_trained,
        "value_trained_d_monte_carlo": v_mc, "monte_carlo_samples": MC_SAMPLES,
        "value_optimal_d": oned.value_at_optimum(p, q, x),
        "minus_log4_plus_2jsd": c_of_g,
        "jsd": jsd,
        "minus_log4": -oned.LOG4,
        "gap": c_of_g - v_trained,
    }
    fig, axes = plots.figure(1, 2, width=5.0)
    plots.density_panel(axes[0], x, p, q, d, d_star,
                        f"D after {steps} steps vs D* = p_data / (p_data + p_G)")
    axes[0].axvspan(float(x[0]), lo, color="grey", alpha=0.12)
    axes[0].axvspan(hi, float(x[-1]), color="grey", alpha=0.12)
    axes[1].plot(x.numpy(), (d - d_star).numpy(), color="blue")
    axes[1].axvspan(float(x[0]), lo, color="grey", alpha=0.12, label="outside 99% of the mass")
    axes[1].axvspan(hi, float(x[-1]), color="grey", alpha=0.12)
    axes[1].axhline(0, color="grey", linewidth=0.5)
    axes[1].set_ylim(-0.2, 0.2)
    axes[1].set_title(f"D - D*: max |.| {results['max_abs_error']:.3f}, mean {results['mean_abs_error']:.4f}",
                      fontsize=10)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"V(D) = {v_trained:.4f}  vs  -log 4 + 2 JSD = {c_of_g:.4f}", fontsize=10)
    plots.save(fig, out / "optimal-d.png")
    write_json(out / "results.json", results)
    say(log, f"max |D - D*| = {results['max_abs_error']:.4f}, mean {results['mean_abs_error']:.4f} "
              f"over [{lo:.2f}, {hi:.2f}] (99% of the mass)\n"
              f"V(trained D) = {v_trained:.5f} (Monte Carlo {v_mc:.5f}); -log 4 + 2 JSD = {c_of_g:.5f} "
              f"(JSD = {jsd:.5f}); gap {results['gap']:.2e}\n"
              f"wrote {out / 'optimal-d.png'} and {out / 'results.json'}")
    return results


def _describe(toy) -> str:
    parts = [f"N({float(m[0]):g}, {float(s):g}^2)" for m, s in zip(toy.means, toy.stds, strict=True)]
    w = float(toy.weights[0])
    return parts[0] if len(parts) == 1 else " + ".join(f"{w:g} {p}" for p in parts)


