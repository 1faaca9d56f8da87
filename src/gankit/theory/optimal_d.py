"""`gankit theory optimal-d`: for a frozen G, train D to convergence and compare it with
D*(x) = p_data(x) / (p_data(x) + p_G(x)) (Proposition 1 of Goodfellow et al. 2014).

p_G is exact for the affine generator G(z) = a z + b of z ~ N(0, 1), i.e. N(b, a^2); for a
frozen random MLP generator it is a fine histogram of many samples. The value reached by the
trained D is compared with max_D V = -log 4 + 2 JSD(p_data || p_G) (Theorem 1), both by quadrature.

With `conditional`, each Gaussian of mixture1d is a class y and G is affine per class,
G(z, y) = a_y z + b_y. D(x, y) reads x with the one-hot class joined to it (Mirza & Osindero's
conditioning) and is compared with D*(x|y) = p_data(x|y) / (p_data(x|y) + p_G(x|y)) class by
class. The fakes' labels are drawn from the data's class frequencies; then the joint optimum
pi_y p(x|y) / (pi_y p(x|y) + pi_y q(x|y)) is exactly D*(x|y), with no prior ratio left over.
"""

from __future__ import annotations

import functools
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
# --conditional: G(z, y) = a_y z + b_y for the classes of mixture1d (data N(-2, 0.5^2), N(2, 0.5^2)).
# Class 0's G is too wide and leaks into class 1's region; class 1's sits to the right of its data.
AFFINE_BY_CLASS = ((1.2, -1.0), (0.75, 2.5))
PROBES = (-2.0, -1.0, 0.0, 1.0, 2.0)  # where the conditional and unconditional D* are printed side by side


def run(out: str | Path, seed: int = 0, data: str = "mixture1d", generator: str = "affine",
        steps: int = 3000, batch: int = 2048, d_width: int = 128, lr: float = 1e-3,
        log: TextIO | None = None, conditional: bool = False) -> dict:
    """Train D against a frozen G; write optimal-d.png (optimal-d-conditional.png with
    `conditional`) and results.json to out; return the results."""
    _check(data, generator, steps, batch, d_width, conditional)
    with oned.one_thread():
        if conditional:
            return _run_conditional(Path(out), seed, data, steps, batch, d_width, lr, log)
        return _run(Path(out), seed, data, generator, steps, batch, d_width, lr, log)


def _check(data, generator, steps, batch, d_width, conditional) -> None:
    if data not in DATA_1D:
        raise ConfigError(f"--data must be one of {', '.join(DATA_1D)}, got {data!r}")
    if generator not in GENERATORS:
        raise ConfigError(f"--generator must be one of {', '.join(GENERATORS)}, got {generator!r}")
    for name, v in (("--steps", steps), ("--batch-size", batch), ("--d-width", d_width)):
        if v <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {v}")
    if conditional and data != "mixture1d":
        raise ConfigError(f"--conditional needs --data mixture1d (each Gaussian is a class), got {data!r}")
    if conditional and generator != "affine":
        raise ConfigError(f"--conditional uses an affine G per class: --generator must be affine, got {generator!r}")


def _run(out, seed, data, generator, steps, batch, d_width, lr, log) -> dict:
    torch.manual_seed(seed)
    toy = TOY_DISTRIBUTIONS[data]
    rng = torch.Generator().manual_seed(seed)
    frozen = _affine_generator if generator == "affine" else _mlp_generator
    fake, x, q, g_info = frozen(toy, rng, seed)  # the frozen generator and its density on the grid
    p = oned.density(toy, x)
    real = Draw(toy.sample, rng)
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
    _figure(out / "optimal-d.png", x, p, q, d, d_star, (lo, hi), steps, results)
    write_json(out / "results.json", results)
    say(log, f"max |D - D*| = {results['max_abs_error']:.4f}, mean {results['mean_abs_error']:.4f} "
              f"over [{lo:.2f}, {hi:.2f}] (99% of the mass)\n"
              f"V(trained D) = {v_trained:.5f} (Monte Carlo {v_mc:.5f}); -log 4 + 2 JSD = {c_of_g:.5f} "
              f"(JSD = {jsd:.5f}); gap {results['gap']:.2e}\n"
              f"wrote {out / 'optimal-d.png'} and {out / 'results.json'}")
    return results


class Draw:
    """m -> m samples of `sample(m, rng)`: a sampler bound to its generator."""

    def __init__(self, sample, rng: torch.Generator):
        self.sample, self.rng = sample, rng

    def __call__(self, m: int) -> torch.Tensor:
        return self.sample(m, self.rng)


def _affine_samples(m: int, rng: torch.Generator) -> torch.Tensor:
    """G(z) = a z + b, z ~ N(0, 1): (m, 1)."""
    a, b = AFFINE
    return (a * torch.randn(m, 1, generator=rng) + b).float()


def _affine_generator(toy, rng: torch.Generator, seed: int):
    """(fake, grid x, p_G on x, description) of the affine G: p_G exact."""
    a, b = AFFINE
    p_g_dist = oned.gaussian("affine", b, abs(a))
    x = oned.grid_covering(toy, p_g_dist)
    g_info = {"kind": "affine", "formula": f"G(z) = {a} z + {b}, z ~ N(0, 1)", "p_G": f"N({b}, {abs(a)}^2), exact"}
    return Draw(_affine_samples, rng), x, oned.density(p_g_dist, x), g_info


class StandardisedMLP:
    """m -> (m, 1) samples of a frozen random MLP G, standardised to the affine G's mean and std.
    A random MLP's outputs are bunched near 0; the affine map (part of the frozen G) makes p_G
    overlap the data."""

    def __init__(self, seed: int, rng: torch.Generator):
        self.G = MLPGenerator(1, (1,), width=32, depth=3, tanh=False).requires_grad_(False)
        with torch.no_grad():
            probe = self.G(torch.randn(100_000, 1, generator=torch.Generator().manual_seed(seed + 1)))
        self.shift, self.scale, self.rng = float(probe.mean()), float(probe.std()), rng

    def __call__(self, m: int) -> torch.Tensor:
        with torch.no_grad():
            return (self.G(torch.randn(m, 1, generator=self.rng)) - self.shift) / self.scale * AFFINE[0] + AFFINE[1]


def _mlp_generator(toy, rng: torch.Generator, seed: int):
    """(fake, grid x, p_G on x, description) of the frozen MLP G: p_G a histogram of its samples."""
    fake = StandardisedMLP(seed, rng)
    samples = torch.cat([fake(100_000) for _ in range(HISTOGRAM_SAMPLES // 100_000)])
    lo = min(float(samples.min()), float((toy.means - 8 * toy.stds[:, None]).min()))
    hi = max(float(samples.max()), float((toy.means + 8 * toy.stds[:, None]).max()))
    x = torch.linspace(lo, hi, 4001, dtype=torch.float64)
    g_info = {"kind": "mlp", "formula": f"frozen random MLP 1 -> 32 -> 32 -> 1 (ReLU), z ~ N(0, 1), output "
                                        f"standardised to mean {AFFINE[1]}, std {AFFINE[0]}",
              "p_G": f"histogram of {HISTOGRAM_SAMPLES} samples, bins {HISTOGRAM_BIN} wide"}
    return fake, x, oned.histogram_density(samples, x, HISTOGRAM_BIN), g_info


def _figure(path: Path, x, p, q, d, d_star, region: tuple[float, float], steps: int, results: dict) -> None:
    """D against D* (left) and D - D* (right), the 1% of the mass outside `region` greyed."""
    lo, hi = region
    fig, axes = plots.figure(1, 2, width=5.0)
    plots.density_panel(axes[0], x, p, q, d, d_star, f"D after {steps} steps vs D* = p_data / (p_data + p_G)")
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
    fig.suptitle(f"V(D) = {results['value_trained_d']:.4f}  vs  -log 4 + 2 JSD = {results['minus_log4_plus_2jsd']:.4f}",
                 fontsize=10)
    plots.save(fig, path)


# --- --conditional: D(x, y) against D*(x|y), class by class --------------------------------------

def class_distributions(toy) -> tuple[list, list]:
    """p_data(.|y), the mixture's components, and p_G(.|y) = N(b_y, a_y^2) of G(z, y) = a_y z + b_y."""
    data = [oned.gaussian(f"class {y}", float(toy.means[y, 0]), float(toy.stds[y])) for y in range(len(toy.weights))]
    fakes = [oned.gaussian(f"G class {y}", b, abs(a)) for y, (a, b) in enumerate(AFFINE_BY_CLASS)]
    return data, fakes


def class_densities(toy, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """p_data(x|y) and p_G(x|y) on the grid x (n,): each (K, n) float64."""
    data, fakes = class_distributions(toy)
    return (torch.stack([oned.density(d, x) for d in data]), torch.stack([oned.density(g, x) for g in fakes]))


def with_class(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Points x (m, 1) and classes y (m,) -> D's input (m, 1 + k): x, then the one-hot class."""
    return torch.cat([x.float(), torch.nn.functional.one_hot(y, k).float()], dim=1)


def _class_points(weights: torch.Tensor, centre: torch.Tensor, scale: torch.Tensor,
                  rng: torch.Generator, m: int) -> torch.Tensor:
    """m points of D's input (m, 1 + K): classes y ~ weights, x = centre[y] + scale[y] * eps,
    with the one-hot y joined."""
    y = torch.multinomial(weights.float(), m, replacement=True, generator=rng)
    x = centre[y] + scale[y] * torch.randn(m, generator=rng)
    return with_class(x[:, None], y, len(weights))


def _run_conditional(out, seed, data, steps, batch, d_width, lr, log) -> dict:
    torch.manual_seed(seed)
    toy = TOY_DISTRIBUTIONS[data]
    k = len(toy.weights)
    rng = torch.Generator().manual_seed(seed)
    means, stds = toy.means[:, 0].float(), toy.stds.float()  # (K,)
    a, b = torch.tensor(AFFINE_BY_CLASS).T  # (K,) each

    # Reals and fakes: classes at the data's frequencies, then x given the class (data: the
    # component; G: the affine map of z), both from rng.
    real = functools.partial(_class_points, toy.weights, means, stds, rng)
    fake = functools.partial(_class_points, toy.weights, b, a, rng)

    # D(x, y) trained to convergence against the frozen conditional G.
    D = MLPDiscriminator((1 + k,), width=d_width)
    say(log, f"gankit theory optimal-d --conditional: training D(x, y) for {steps} steps (batch {batch} real "
             f"+ {batch} fake, classes at the data's frequencies) against an affine G per class on {data}")
    losses = oned.train_discriminator(D, real, fake, steps, batch, lr)

    # Per class on the grid: D(x|y) against D*(x|y).
    x = oned.grid_covering(toy, *class_distributions(toy)[1])
    p, q = class_densities(toy, x)  # (K, n) each
    with torch.no_grad():
        logits = torch.stack([D(with_class(x[:, None], torch.full((len(x),), y), k)).double()
                              for y in range(k)])  # (K, n)
    d, d_star = torch.sigmoid(logits), oned.optimal_discriminator(p, q)
    classes = [_class_result(toy, y, x, p[y], q[y], d[y], d_star[y], logits[y]) for y in range(k)]

    # What the label adds: the unconditional D* sees only the marginals sum_y pi_y p(x|y).
    w = toy.weights
    p_marginal, q_marginal = w @ p, w @ q  # (n,)
    d_star_marginal = oned.optimal_discriminator(p_marginal, q_marginal)
    jsd_marginal = oned.jsd(p_marginal, q_marginal, x)
    at = [int((x - v).abs().argmin()) for v in PROBES]
    probes = [{"x": float(x[i]), "d_star_given_class": d_star[:, i].tolist(), "d_given_class": d[:, i].tolist(),
               "d_star_unconditional": float(d_star_marginal[i])} for i in at]
    # V(D) = sum_y pi_y V_y. Its maximum, -log 4 + 2 sum_y pi_y JSD_y, is at least the unconditional
    # -log 4 + 2 JSD(p || q) of the marginals (JSD is jointly convex): the label only adds information.
    v_trained = sum(float(w[y]) * c["value_trained_d"] for y, c in enumerate(classes))
    c_conditional = -oned.LOG4 + 2 * sum(float(w[y]) * c["jsd"] for y, c in enumerate(classes))

    results = {
        "command": "theory optimal-d --conditional",
        "seed": seed,
        "data": {"name": data, "p_data": _describe(toy), "classes": "component y of the mixture is class y"},
        "generator": {"kind": "affine per class", "p_G": "exact", "labels": "drawn at the data's class frequencies"},
        "discriminator": {"model": f"MLP (x, one-hot y) {1 + k} -> {d_width} -> {d_width} -> 1 (LeakyReLU 0.2)",
                          "steps": steps, "batch": batch, "lr": lr,
                          "optimizer": "adam (0.5, 0.999), cosine decay to 0", "final_loss": losses[-1]},
        "classes": classes,
        "max_abs_error": max(c["max_abs_error"] for c in classes),
        "value_trained_d": v_trained,
        "minus_log4_plus_2_mean_class_jsd": c_conditional,
        "gap": c_conditional - v_trained,
        "unconditional": {"jsd": jsd_marginal, "minus_log4_plus_2jsd": -oned.LOG4 + 2 * jsd_marginal},
        "probes": probes,
    }
    _conditional_figure(out / "optimal-d-conditional.png", results, x, p, q, d, d_star, d_star_marginal)
    write_json(out / "results.json", results)
    say(log, _conditional_summary(results, out))
    return results


def _class_result(toy, y, x, p, q, d, d_star, logits) -> dict:
    """One class's numbers: D(x|y) against D*(x|y) over the class's central 99%, and its value."""
    lo, hi = oned.central_region(p, q, x, 0.99)
    inside = (x >= lo) & (x <= hi)
    error = (d - d_star).abs()[inside]
    jsd = oned.jsd(p, q, x)
    v = oned.value(p, q, logits, x)
    a, b = AFFINE_BY_CLASS[y]
    return {"class": y, "weight": float(toy.weights[y]),
            "p_data": f"N({float(toy.means[y, 0]):g}, {float(toy.stds[y]):g}^2)",
            "generator": f"G(z, {y}) = {a} z + {b}", "p_G": f"N({b:g}, {abs(a):g}^2)",
            "region_99": [lo, hi], "max_abs_error": float(error.max()), "mean_abs_error": float(error.mean()),
            "value_trained_d": v, "value_optimal_d": oned.value_at_optimum(p, q, x),
            "minus_log4_plus_2jsd": -oned.LOG4 + 2 * jsd, "jsd": jsd, "gap": -oned.LOG4 + 2 * jsd - v}


def _conditional_figure(path, results, x, p, q, d, d_star, d_star_marginal) -> None:
    """One panel per class (densities, D(x|y), D*(x|y), the unconditional D* in grey), then D - D*."""
    classes = results["classes"]
    k = len(classes)
    fig, axes = plots.figure(1, k + 1, width=4.6)
    for y, c in enumerate(classes):
        plots.density_panel(axes[y], x, p[y], q[y], d[y], d_star[y],
                            f"class {y}: D(x|{y}) vs D*(x|{y}); max |.| {c['max_abs_error']:.3f}",
                            reference=(d_star_marginal, "D* unconditional"))
        axes[y].set_xlim(*c["region_99"])
        handles = axes[y].get_legend().legend_handles
        axes[y].get_legend().remove()  # one legend for both panels, below them: the curves fill each panel
    fig.legend(handles=handles, labels=["p_data(x|y)", "p_G(x|y)", "D*(x|y)", "D(x, y) trained",
                                        "D*(x) unconditional"], loc="outside lower center", ncols=5, fontsize=8)
    for y, c in enumerate(classes):
        lo, hi = c["region_99"]
        inside = (x >= lo) & (x <= hi)
        axes[k].plot(x[inside].numpy(), (d[y] - d_star[y])[inside].numpy(),
                     label=f"class {y}: mean |.| {c['mean_abs_error']:.4f}")
    axes[k].axhline(0, color="grey", linewidth=0.5)
    axes[k].set_ylim(-0.2, 0.2)
    axes[k].set_title("D(x|y) - D*(x|y) over each class's central 99%", fontsize=10)
    axes[k].legend(fontsize=7)
    fig.suptitle(f"conditional: V(D) = {results['value_trained_d']:.4f}  vs  -log 4 + 2 E_y JSD_y = "
                 f"{results['minus_log4_plus_2_mean_class_jsd']:.4f}  (unconditional optimum "
                 f"{results['unconditional']['minus_log4_plus_2jsd']:.4f})", fontsize=10)
    plots.save(fig, path)


def _conditional_summary(results, out) -> str:
    """The printed lines: per class errors and values, then D*(x|y) beside the unconditional D*(x)."""
    classes = results["classes"]
    lines = [f"class {c['class']}: p_data {c['p_data']}, p_G {c['p_G']}: max |D - D*| = {c['max_abs_error']:.4f}, "
             f"mean {c['mean_abs_error']:.4f} over [{c['region_99'][0]:.2f}, {c['region_99'][1]:.2f}]; "
             f"V = {c['value_trained_d']:.5f} vs -log 4 + 2 JSD = {c['minus_log4_plus_2jsd']:.5f}" for c in classes]
    lines.append(f"V(trained D) = {results['value_trained_d']:.5f}; -log 4 + 2 E_y JSD = "
                 f"{results['minus_log4_plus_2_mean_class_jsd']:.5f} (gap {results['gap']:.2e}); "
                 f"unconditional -log 4 + 2 JSD = {results['unconditional']['minus_log4_plus_2jsd']:.5f}")
    lines.append("     x  " + "  ".join(f"D*(x|{c['class']})  D(x|{c['class']}) " for c in classes)
                 + "  D*(x) unconditional")
    for r in results["probes"]:  # "-": outside the class's central 99%, where D sees next to no samples
        cells = []
        for y, c in enumerate(classes):
            flag = " " if c["region_99"][0] <= r["x"] <= c["region_99"][1] else "-"
            cells.append(f"{r['d_star_given_class'][y]:8.4f}  {r['d_given_class'][y]:7.4f}{flag}")
        lines.append(f"{r['x']:6.2f}  " + "  ".join(cells) + f"  {r['d_star_unconditional']:8.4f}")
    lines.append("(- : outside the class's central 99%, where D is not compared)")
    lines.append(f"wrote {out / 'optimal-d-conditional.png'} and {out / 'results.json'}")
    return "\n".join(lines)


def _describe(toy) -> str:
    parts = [f"N({float(m[0]):g}, {float(s):g}^2)" for m, s in zip(toy.means, toy.stds, strict=True)]
    w = float(toy.weights[0])
    return parts[0] if len(parts) == 1 else " + ".join(f"{w:g} {p}" for p in parts)


