"""Scores along the way for `gankit bench modes --protocol pacgan` (`--score-every UPDATES`).

Every `every` updates each trial's 2,500 scoring samples are scored (modes, high-quality share,
reverse KL), a progress line says where the batch is and how long it has to go, and at the end
curves.png draws every row's mean against updates beside its published value. A 400,000-update
run takes half an hour on a GPU and days on a CPU: the lines are how it is watched, and the
curves say whether a gap to the published row is still closing at the end or has settled.
"""

from __future__ import annotations

import math
import re
import statistics
import time
import warnings

import numpy as np
import torch
from matplotlib.ticker import FuncFormatter

from gankit.data.toy import ToyDistribution
from gankit.metrics.toy import mode_metrics
from gankit.theory import plots

SCORES_PER_RUN = 20  # the default --score-every: iterations / 20
METRICS = ("modes", "high_quality", "reverse_kl")
LABELS = {"modes": "modes", "high_quality": "high quality %", "reverse_kl": "reverse KL (nats)",
          "loss_d": "D's loss at the update (log 4 dashed)"}


def default_every(iterations: int) -> int:
    return max(1, iterations // SCORES_PER_RUN)


def row_label(data: str, pack: int, g_ema: float = 0.0, g_loss: str = "non-saturating") -> str:
    """"ring8 GAN", "grid25 PacGAN2 + EMA 10,000" (the half-life in generated examples), "ring8
    GAN, saturating" (the published rows' G loss is non-saturating)."""
    return f"{data} {method_label(pack, g_ema, g_loss)}"


def method_label(pack: int, g_ema: float = 0.0, g_loss: str = "non-saturating") -> str:
    name = "GAN" if pack == 1 else f"PacGAN{pack}"
    return name + (", saturating" if g_loss == "saturating" else "") + (f" + EMA {g_ema:,.0f}" if g_ema else "")


class Watch:
    """Scores a batch's trials every `every` updates and prints where the batch is. names: each
    trial's row (row_label); toys: each trial's distribution, in the batch's order."""

    def __init__(self, batch: str, names: list[str], toys: list[ToyDistribution], every: int, iterations: int):
        if every <= 0:
            raise ValueError(f"score every a positive number of updates, got {every}")
        self.batch, self.names, self.toys = batch, names, toys
        self.every, self.iterations = every, iterations
        self.start(0)

    def start(self, it: int) -> None:
        """This process trains from update `it` (a continued run: the ETA counts this process only)."""
        self.start_it, self.started = it, time.perf_counter()

    def due(self, it: int) -> bool:
        return it % self.every == 0 or it == self.iterations

    def __call__(self, it: int, samples: torch.Tensor, losses: tuple | None = None) -> tuple[int, list[dict]]:
        """samples (V, N, 2), each view's scoring samples after update `it` -> (it, one score per
        view). losses: update `it`'s (D loss, G loss), (T,) each, of the T trials; view v is trial
        v % T seen by one scorer (G or an EMA of G), and its score gets its trial's losses too."""
        scores = []
        # [(D loss, G loss) of trial t], copied to the host once
        trials = None if losses is None else list(zip(*(x.reshape(-1).tolist() for x in losses), strict=True))
        for v, (x, toy) in enumerate(zip(samples, self.toys, strict=True)):
            m = mode_metrics(x, toy)
            scores.append({k: float(m[k]) for k in METRICS})
            if trials is not None:
                loss_d, loss_g = trials[v % len(trials)]
                scores[-1].update(loss_d=loss_d, loss_g=loss_g)
        print(self.line(it, scores), flush=True)
        return it, scores

    def line(self, it: int, scores: list[dict]) -> str:
        seconds = time.perf_counter() - self.started
        left = seconds / max(1, it - self.start_it) * (self.iterations - it)
        text = [f"  {self.batch}: update {it:,} of {self.iterations:,} ({100 * it / self.iterations:.0f}%), "
                f"{seconds:,.0f} s, about {left:,.0f} s to go"]
        for name in dict.fromkeys(self.names):
            mine = [s for s, n in zip(scores, self.names, strict=True) if n == name]
            kl = [s["reverse_kl"] for s in mine]
            kl_text = f"{statistics.fmean(kl):.2f}" if all(math.isfinite(v) for v in kl) else "inf"
            text.append(f"      {name}, mean of {len(mine)}: {statistics.fmean(s['modes'] for s in mine):.1f} modes, "
                        f"{statistics.fmean(s['high_quality'] for s in mine):.1f}% high quality, reverse KL {kl_text}")
        return "\n".join(text)


HEADER = re.compile(r"^  (\S+): update ([\d,]+) of [\d,]+ ")
ROW = re.compile(r"^      (\w+) (GAN|PacGAN(\d+))(, saturating)?(?: \+ EMA ([\d,]+))?, mean of (\d+): ([\d.]+) modes, "
                 r"([\d.]+)% high quality, reverse KL (\S+)$")


def parse_lines(lines, skip: tuple[str, ...] = ("batch",)) -> list[dict]:
    """Watch.line's progress lines (a run's log) back into means: one dict per row and scoring,
    {"batch", "iteration", "data", "pack", "g_loss", "g_ema", "trials", *METRICS}. Batches named
    in skip are left out (run_batch's default name, which the GPU script's timing runs use)."""
    points, batch, it = [], None, None
    for line in lines:
        if head := HEADER.match(line):
            batch, it = head.group(1), int(head.group(2).replace(",", ""))
        elif (row := ROW.match(line.rstrip("\n"))) and batch is not None and batch not in skip:
            data, name, m, sat, ema, n, modes, hq, kl = row.groups()
            points.append({"batch": batch, "iteration": it, "data": data, "pack": int(m or 1),
                           "g_loss": "saturating" if sat else "non-saturating",
                           "g_ema": float(ema.replace(",", "")) if ema else 0.0, "trials": int(n),
                           "modes": float(modes), "high_quality": float(hq), "reverse_kl": float(kl)})
    return points


def curve(scores: list[tuple[int, list[dict]]], t: int) -> list[dict]:
    """View t's scores along the way: [{"iteration", "modes", "high_quality", "reverse_kl"}], and
    "loss_d", "loss_g" (its trial's losses at that update) where the watch was given them."""
    return [{"iteration": it, **per_trial[t]} for it, per_trial in scores]


COLOURS = ("black", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")  # one per (M, G loss)
EMA_STYLES = (":", "-.", (0, (5, 1, 1, 1, 1, 1)))  # one per EMA half-life (G itself: solid)


def figure(path, results: list[dict], datasets, methods, published: dict, means_of: int | None = None) -> None:
    """A row per dataset, a panel per metric: each method's (pack, G loss, EMA half-life) mean over
    its trials against updates (band: +- standard error); a colour per (pack, G loss), solid for G,
    dotted (and so on) for each EMA; the published value dashed in its pack's colour. means_of: each
    method's one curve is already the mean of so many trials (a run's progress lines), no band."""
    trained = list(dict.fromkeys((m, g) for m, g, _ in methods))
    emas = list(dict.fromkeys(h for _, _, h in methods if h))
    # D's loss as a panel of its own where some trial recorded it (runs from before it did: none)
    panels = METRICS + (("loss_d",) if any("loss_d" in p for r in results for p in r["curve"]) else ())
    fig, axes = plots.figure(len(datasets), len(panels), width=3.6, height=2.8)
    for row, data in enumerate(datasets):
        for col, metric in enumerate(panels):
            ax = axes[row * len(panels) + col]
            for m, g, h in methods:
                if metric == "loss_d" and h:  # an EMA of G is not trained: its trial's losses are G's
                    continue
                mine = [r["curve"] for r in results if (r["data"], r["pack"], r["g_loss"], r["g_ema"]) == (data, m, g, h)]
                if metric == "loss_d":  # only the trials that recorded it; the label's count says how many
                    mine = [c for c in mine if all("loss_d" in p for p in c)]
                style = EMA_STYLES[emas.index(h) % len(EMA_STYLES)] if h else "-"
                colour = COLOURS[trained.index((m, g)) % len(COLOURS)]
                _draw(ax, mine, metric, (colour, style), row_label(data, m, h, g),
                      None if h or g != "non-saturating" else published.get((data, m)), means_of)
            if metric == "loss_d":
                _mark_losses(ax)
            ax.set_title(f"{data}: {LABELS[metric]}", fontsize=8)
            ax.set_xlabel("updates", fontsize=7)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"))
            ax.tick_params(labelsize=7)
            if col == 0:
                ax.plot([], [], color="grey", linestyle="--", linewidth=0.8, label="PacGAN Table 1")
                ax.legend(fontsize=6)
    spread = "no standard errors: only the means came back" if means_of else "band +- standard error"
    fig.suptitle(f"mean over each row's trials (their number in brackets), {spread}; a colour per "
                 "pack and G loss; dotted: scored from an EMA of G; dashed: the published mean", fontsize=8)
    plots.save(fig, path)


def _mark_losses(ax) -> None:
    """D's loss panel: log 4 (-V(D, G) where D = 1/2 everywhere, as at the equilibrium), and a legend
    of its own, since fewer trials than the others' may have recorded the loss."""
    if ax.lines:
        ax.legend(fontsize=6)
    else:
        ax.text(0.5, 0.25, "no trial here recorded D's loss", ha="center", va="center", fontsize=7,
                transform=ax.transAxes)
    ax.axhline(math.log(4), color="grey", linestyle="--", linewidth=0.6)


def _draw(ax, curves: list[list[dict]], metric: str, look: tuple, label: str, published: dict | None,
          means_of: int | None = None) -> None:
    if not curves or not curves[0]:
        return
    its = np.array([p["iteration"] for p in curves[0]])
    values = np.array([[p[metric] for p in c] for c in curves], dtype=float)  # (trials, points)
    values[~np.isfinite(values)] = np.nan  # reverse KL of a trial without a high-quality sample
    with warnings.catch_warnings():  # a point where every trial's value is nan stays nan, unplotted
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, 0)
        se = np.nanstd(values, 0, ddof=1) / np.sqrt(len(curves)) if len(curves) > 1 else np.zeros(len(its))
    colour, style = look
    ax.plot(its, mean, color=colour, linestyle=style, linewidth=1.2, label=f"{label} ({means_of or len(curves)})")
    if not means_of:
        ax.fill_between(its, mean - se, mean + se, color=colour, alpha=0.2, linewidth=0)
    if published is not None and metric in published:
        ax.axhline(published[metric][0], color=colour, linestyle="--", linewidth=0.6, alpha=0.7)
