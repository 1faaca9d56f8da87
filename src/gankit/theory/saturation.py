"""`gankit theory saturation`: the saturating and the non-saturating generator loss, side by side.

1. Curves: each loss and its gradient as functions of D(G(z)), computed by autograd through
   gankit.losses (the functions the trainer uses), next to the closed forms:
       saturating      log(1 - D)   d/dD = -1 / (1 - D)   d/dlogit = -D
       non-saturating  -log D       d/dD = -1 / D         d/dlogit = -(1 - D)
   Backpropagation reaches G through the logit, so the last column is what G feels: it
   vanishes for the saturating loss exactly when D confidently rejects the fakes (D -> 0).
2. Measured: G's gradient norm and mean D(G(z)) over the first iterations of real training with
   each loss, on the 2-D ring and on an image dataset (Fashion-MNIST by default), several seeds.
3. Outcome of each run: toy mode metrics for the ring, classifier-feature FID for images.
"""

from __future__ import annotations

import io
import statistics
from pathlib import Path
from typing import TextIO

import torch

from gankit import runs
from gankit.config import TrainConfig
from gankit.errors import ConfigError
from gankit.evaluate import EvalProtocol, evaluate
from gankit.files import write_json
from gankit.losses import G_LOSSES, generator_loss
from gankit.theory import plots, say
from gankit.theory.modes import short_name, train_and_score
from gankit.theory.oned import one_thread

CURVE_POINTS = 199
# The image runs use `make demo`'s setup: DCGAN of widths 32, batch 64.
IMAGE_SETUP = {"model": "dcgan", "g_width": 32, "d_width": 32, "batch_size": 64}
FID_SAMPLES = 5000
CLASSIFIER_DATA = ("fashion-mnist", "mnist")


def curves() -> dict:
    """Loss and gradients over D(G(z)) in (0, 1), by autograd through gankit.losses."""
    d_values = torch.linspace(0.005, 0.995, CURVE_POINTS, dtype=torch.float64)
    result: dict = {"d_fake": d_values.tolist()}
    for kind in G_LOSSES:
        loss, grad_d, grad_logit = [], [], []
        for d in d_values:
            d = d.clone().requires_grad_(True)
            logit = torch.logit(d)
            logit.retain_grad()
            value = generator_loss(logit.reshape(1), kind)  # a minibatch of one fake
            value.backward()
            loss.append(float(value.detach()))
            grad_d.append(float(d.grad))
            grad_logit.append(float(logit.grad))
        result[kind] = {"loss": loss, "grad_d": grad_d, "grad_logit": grad_logit}
    return result


def run(out: str | Path, seed: int = 0, seeds: int = 3, toy_iterations: int = 2000,
        image_data: str | None = "fashion-mnist", image_images: int = 32_000, first: int = 200,
        data_dir: str | None = None, log: TextIO | None = None) -> dict:
    """Curves, measured gradient norms and outcomes; writes saturation.png and results.json."""
    for name, v in (("--seeds", seeds), ("--toy-iterations", toy_iterations), ("--first", first),
                    ("--image-images", image_images)):
        if v <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {v}")
    out = Path(out)
    record: dict = {"command": "theory saturation", "seed": seed, "seeds": seeds, "curves": curves()}

    # The 2-D ring: `gankit bench modes`'s setup, k = 1.
    record["ring8"] = {"iterations": toy_iterations, "runs": []}
    for kind in G_LOSSES:
        for s in range(seed, seed + seeds):
            run_dir = out / "runs" / f"ring8-{short_name(kind)}-seed{s}"
            say(log, f"gankit theory saturation: ring8, {kind} loss, seed {s}: {toy_iterations} iterations")
            with one_thread():  # small MLPs: one thread is faster, and much faster on a busy CPU
                scored = train_and_score("ring8", 1, kind, s, toy_iterations, str(run_dir))
            record["ring8"]["runs"].append({
                "g_loss": kind, "seed": s, **_early(run_dir, first),
                "outcome": {m: scored[m] for m in ("modes", "high_quality", "reverse_kl")}})
    # Images.
    if image_data:
        record["images"] = {"data": image_data, "images": image_images, "setup": IMAGE_SETUP, "runs": []}
        for kind in G_LOSSES:
            for s in range(seed, seed + seeds):
                run_dir = out / "runs" / f"images-{short_name(kind)}-seed{s}"
                say(log, f"gankit theory saturation: {image_data}, {kind} loss, seed {s}: {image_images} images")
                config = TrainConfig(data=image_data, data_dir=data_dir, seed=s, g_loss=kind,
                                     max_images=image_images, snapshot_every=image_images,
                                     checkpoint_every=image_images, **IMAGE_SETUP)
                from gankit.train import train

                train(config, run_dir, overwrite=True, stream=io.StringIO())
                outcome = None
                if image_data in CLASSIFIER_DATA:
                    protocol = EvalProtocol(n_samples=FID_SAMPLES, seed=s, data_dir=data_dir)
                    metrics = evaluate(run_dir, protocol, log=log or io.StringIO())["metrics"]
                    outcome = {"fid_classifier": metrics["fid"], "n_samples": FID_SAMPLES}
                record["images"]["runs"].append({"g_loss": kind, "seed": s, **_early(run_dir, first),
                                                 "outcome": outcome})
    record["summary"] = _summarise(record)
    _figure(out / "saturation.png", record, first)
    write_json(out / "results.json", record)
    for line in _report(record):
        say(log, line)
    say(log, f"wrote {out / 'saturation.png'} and {out / 'results.json'}")
    return record


def _early(run_dir: Path, first: int) -> dict:
    """G's gradient norm and mean D(G(z)) over the run's first iterations, from metrics.jsonl."""
    rows = [r for r in runs.read_metrics(run_dir) if "iteration" in r][:first]
    return {"grad_norm_g": [r["grad_norm_g"] for r in rows],
            "d_fake": [r["d_fake_g_before"] for r in rows]}


def _summarise(record: dict) -> dict:
    """Per problem and loss: median over seeds of G's gradient norm at iteration 1 and over the
    first iterations, mean D(G(z)) there, and the outcome's mean over seeds."""
    summary = {}
    for problem in ("ring8", "images"):
        if problem not in record:
            continue
        summary[problem] = {}
        for kind in G_LOSSES:
            rs = [r for r in record[problem]["runs"] if r["g_loss"] == kind]
            entry = {
                "grad_norm_g_first": statistics.median(r["grad_norm_g"][0] for r in rs),
                "grad_norm_g_median_early": statistics.median(statistics.median(r["grad_norm_g"]) for r in rs),
                "d_fake_mean_early": statistics.fmean(statistics.fmean(r["d_fake"]) for r in rs),
            }
            outcomes = [r["outcome"] for r in rs if r["outcome"]]
            for key in (outcomes[0] if outcomes else {}):
                if key != "n_samples":
                    entry[f"outcome_{key}"] = statistics.fmean(float(o[key]) for o in outcomes)
            summary[problem][kind] = entry
    return summary


def _report(record: dict) -> list[str]:
    lines = []
    for problem, by_loss in record["summary"].items():
        for kind, e in by_loss.items():
            outcome = ", ".join(f"{k.removeprefix('outcome_')} {v:.4g}" for k, v in e.items() if k.startswith("outcome_"))
            lines.append(f"{problem:>7} {kind:>15}: |grad G| at iteration 1 {e['grad_norm_g_first']:.3g}, "
                         f"median over the first iterations {e['grad_norm_g_median_early']:.3g}; "
                         f"mean D(G(z)) {e['d_fake_mean_early']:.3f}; outcome: {outcome or 'n/a'}")
    return lines


def _figure(path: Path, record: dict, first: int) -> None:
    c = record["curves"]
    problems = [p for p in ("ring8", "images") if p in record]
    fig, axes = plots.figure(1, 2 + len(problems), width=3.8)
    colours = {"saturating": "red", "non-saturating": "blue"}
    for kind in G_LOSSES:
        axes[0].plot(c["d_fake"], c[kind]["loss"], color=colours[kind],
                     label=f"{kind}: {'log(1 - D)' if kind == 'saturating' else '-log D'}")
        axes[1].plot(c["d_fake"], [abs(g) for g in c[kind]["grad_logit"]], color=colours[kind], label=kind)
    axes[0].set_title("generator loss (descended)", fontsize=10)
    axes[1].set_title("|d loss / d logit|: what reaches G", fontsize=10)
    for ax in axes[:2]:
        ax.set_xlabel("D(G(z))")
        ax.legend(fontsize=7)
    for ax, problem in zip(axes[2:], problems, strict=True):
        for kind in G_LOSSES:
            for i, r in enumerate(r for r in record[problem]["runs"] if r["g_loss"] == kind):
                ax.plot(range(1, len(r["grad_norm_g"]) + 1), r["grad_norm_g"], color=colours[kind],
                        alpha=0.6, linewidth=0.8, label=kind if i == 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        name = record[problem].get("data", "ring8")
        ax.set_title(f"{name}: |grad G| over the first {first} iterations", fontsize=10)
        ax.legend(fontsize=7)
    plots.save(fig, path)

