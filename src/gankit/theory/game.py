"""`gankit theory game`: a full 1-D run of Algorithm 1, drawn as the four panels of Fig. 1 of
Goodfellow et al. (2014), with V tracked against -log 4 over training.

Panels: (a) at the start; (b) after D alone is trained against the initial G (D approaches D*);
(c) after G has moved for a few iterations of Algorithm 1; (d) at the end, near convergence
(p_G close to p_data, D close to 1/2). G is affine, so p_G is exact, as is p_data.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import torch
from torch import nn

from gankit.data.toy import TOY_DISTRIBUTIONS
from gankit.distributed import BothInputs
from gankit.errors import ConfigError
from gankit.files import write_json
from gankit.models.mlp import MLPDiscriminator
from gankit.theory import oned, plots, say
from gankit.theory.optimal_d import DATA_1D
from gankit.train import iteration


def run(out: str | Path, seed: int = 0, data: str = "gauss1d", iterations: int = 3000, k: int = 1,
        batch: int = 256, lr: float = 1e-3, lr_g: float = 1e-2, d_pretrain: int = 1000, panel_c: int = 50,
        every: int = 25, g_loss: str = "non-saturating", log: TextIO | None = None) -> dict:
    """Train a 1-D GAN; write game.png, game-curves.png and results.json to out; return the results."""
    with oned.one_thread():
        return _run(out, seed, data, iterations, k, batch, lr, lr_g, d_pretrain, panel_c, every, g_loss, log)


def _run(out, seed, data, iterations, k, batch, lr, lr_g, d_pretrain, panel_c, every, g_loss, log) -> dict:
    _check(data, iterations, k, batch, every, panel_c)
    out = Path(out)
    torch.manual_seed(seed)
    game = Game(data, seed, lr, lr_g)
    panels = {"a": game.measure(0)}
    say(log, f"gankit theory game: {data}, D pretrained {d_pretrain} steps, then {iterations} "
              f"iterations of Algorithm 1 (k = {k}, batch {batch}, {g_loss} G loss, Adam lr {lr})")
    oned.train_discriminator(game.D, game.real, game.fake, d_pretrain, batch, lr, decay=False)
    panels["b"] = game.measure(0)
    history = _play(game, iterations, k, batch, panel_c, every, g_loss, panels, log)
    titles = {"a": "(a) start", "b": f"(b) D trained {d_pretrain} steps",
              "c": f"(c) after {panel_c} iterations: G moves", "d": f"(d) after {iterations} iterations"}
    _draw_panels(out / "game.png", game.x, game.p, panels, titles)
    _draw_curves(out / "game-curves.png", history)
    final = _public(history[-1])
    results = {
        "command": "theory game", "seed": seed, "data": data, "g_loss": g_loss, "k": k,
        "batch": batch, "lr": lr, "iterations": iterations, "d_pretrain": d_pretrain,
        "models": {"G": "G(z) = w z + c, z ~ N(0, 1), starting at w = 1, c = 0", "D": "MLP 1 -> 64 -> 64 -> 1 (LeakyReLU 0.2)"},
        "p_G": "N(c, w^2), exact",
        "generator_final": {"w": float(game.G.w.detach()), "c": float(game.G.c.detach())},
        "minus_log4": -oned.LOG4,
        "panels": {key: _public(row) for key, row in panels.items()},
        "final": final,
        "final_value_minus_log4": final["value"] + oned.LOG4,
        "history": [_public(r) for r in history],
    }
    write_json(out / "results.json", results)
    say(log, f"final: V {final['value']:.4f} vs -log 4 = {-oned.LOG4:.4f}; JSD {final['jsd']:.4f} "
              f"(start {panels['a']['jsd']:.4f}); D(x) {final['d_real']:.3f}, D(G(z)) {final['d_fake']:.3f}\n"
              f"wrote {out / 'game.png'}, {out / 'game-curves.png'} and {out / 'results.json'}")
    return results


def _check(data: str, iterations: int, k: int, batch: int, every: int, panel_c: int) -> None:
    if data not in DATA_1D:
        raise ConfigError(f"--data must be one of {', '.join(DATA_1D)}, got {data!r}")
    for name, v in (("--iterations", iterations), ("--k", k), ("--batch-size", batch), ("--every", every)):
        if v <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {v}")
    if not 0 < panel_c < iterations:
        raise ConfigError(f"--panel-c must be between 1 and --iterations - 1 ({iterations - 1}), got {panel_c}")


class Game:
    """The two players on 1-D data, their optimisers, the data and noise they draw (one generator,
    in the order the training loop draws), and the grid on which p_data, p_G and D are measured
    exactly (its own generator for the Monte Carlo means, so measuring never moves training)."""

    def __init__(self, data: str, seed: int, lr: float, lr_g: float):
        self.rng = torch.Generator().manual_seed(seed)
        self.toy = TOY_DISTRIBUTIONS[data]
        self.G = AffineGenerator()  # starts at N(0, 1)
        self.D = MLPDiscriminator((1,), width=64)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=lr_g, betas=(0.5, 0.999))
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=lr, betas=(0.5, 0.999))
        self.x = oned.grid_covering(self.toy, self.G.distribution(), n=4001, widths=6.0)
        self.p = oned.density(self.toy, self.x)
        self.eval_rng = torch.Generator().manual_seed(seed + 99)

    def real(self, m: int) -> torch.Tensor:
        return self.toy.sample(m, self.rng)

    def noise(self, m: int) -> torch.Tensor:
        return torch.randn(m, 1, generator=self.rng)

    def fake(self, m: int) -> torch.Tensor:
        with torch.no_grad():
            return self.G(self.noise(m))

    def measure(self, iteration: int) -> dict:
        """Where the game stands: p_G, D and the exact-p quantities on the grid."""
        G, D, x = self.G, self.D, self.x
        with torch.no_grad():
            q = oned.density(G.distribution(), x)
            logits = oned.d_on_grid(D, x)
            d_real = float(torch.sigmoid(D(self.toy.sample(20_000, self.eval_rng))).mean())
            d_fake = float(torch.sigmoid(D(G(torch.randn(20_000, 1, generator=self.eval_rng)))).mean())
        jsd = oned.jsd(self.p, q, x)
        return {"iteration": iteration, "value": oned.value(self.p, q, logits, x), "jsd": jsd,
                "max_value": -oned.LOG4 + 2 * jsd, "d_real": d_real, "d_fake": d_fake,
                "_q": q, "_d": torch.sigmoid(logits)}


def _play(game: Game, iterations: int, k: int, batch: int, panel_c: int, every: int, g_loss: str,
          panels: dict, log: TextIO | None) -> list[dict]:
    """Algorithm 1 for `iterations` iterations; the measured rows (from panel (b) on), panels (c)
    and (d) filled in."""
    history = [panels["b"]]
    G_step, D_step = game.G, BothInputs(game.D)  # one process: the players themselves (distributed.wrap)
    for it in range(1, iterations + 1):
        # Algorithm 1 as the training loop runs it: k real and k + 1 noise minibatches, drawn in
        # that order (for k = 1, the order of drawing each where it is used), k D steps, a G step.
        reals = [game.real(batch) for _ in range(k)]
        noises = [game.noise(batch) for _ in range(k + 1)]
        iteration(game.G, game.D, game.opt_G, game.opt_D, reals, noises, G_step=G_step, D_step=D_step,
                  g_loss=g_loss, measure=False)
        if it % every == 0 or it in (panel_c, iterations):
            row = game.measure(it)
            history.append(row)
            if it == panel_c:
                panels["c"] = row
            if it % (every * 20) == 0:
                say(log, f"  iteration {it}: V {row['value']:.4f} (-log 4 = {-oned.LOG4:.4f}), "
                          f"JSD {row['jsd']:.4f}, D(x) {row['d_real']:.3f}, D(G(z)) {row['d_fake']:.3f}")
    panels["d"] = history[-1]
    return history


def _public(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def _draw_panels(path: Path, x: torch.Tensor, p: torch.Tensor, panels: dict, titles: dict) -> None:
    """Fig. 1 of the paper: p_data, p_G, D and D* at the four moments of the game."""
    fig, axes = plots.figure(1, 4, width=3.6)
    for ax, (key, row) in zip(axes, panels.items(), strict=True):
        d_star = oned.optimal_discriminator(p, row["_q"])
        plots.density_panel(ax, x, p, row["_q"], row["_d"], d_star,
                            f"{titles[key]}\nJSD {row['jsd']:.3f}, V {row['value']:.3f}")
        ax.set_xlim(float(x[0]), float(x[-1]))
    plots.save(fig, path)


def _draw_curves(path: Path, history: list[dict]) -> None:
    """V against -log 4 (and max_D V), the JSD, and mean D(x), D(G(z)) over training."""
    its = [r["iteration"] for r in history]
    fig, axes = plots.figure(1, 3, width=4.0)
    axes[0].plot(its, [r["value"] for r in history], color="blue", label="V(D, G)")
    axes[0].plot(its, [r["max_value"] for r in history], color="red", alpha=0.6, label="-log 4 + 2 JSD = max_D V")
    axes[0].axhline(-oned.LOG4, color="black", linestyle=":", label="-log 4")
    axes[0].set_title("value", fontsize=10)
    axes[1].plot(its, [r["jsd"] for r in history], color="green")
    axes[1].set_yscale("log")
    axes[1].set_title("JSD(p_data || p_G), nats", fontsize=10)
    axes[2].plot(its, [r["d_real"] for r in history], color="black", label="mean D(x)")
    axes[2].plot(its, [r["d_fake"] for r in history], color="green", label="mean D(G(z))")
    axes[2].axhline(0.5, color="grey", linestyle=":", label="1/2")
    axes[2].set_title("D on real and generated samples", fontsize=10)
    for ax in (axes[0], axes[2]):
        ax.legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("iteration")
    plots.save(fig, path)


class AffineGenerator(nn.Module):
    """G(z) = w z + c with z ~ N(0, 1), so p_G = N(c, w^2) exactly: no histogram noise in p_G,
    D* or the JSD. It contains p_data = N(mu, s^2) (w = s, c = mu), so the theorem's optimum
    p_G = p_data is reachable. (Small MLP generators in 1-D fold the line: their p_G has spikes.)"""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))
        self.c = nn.Parameter(torch.tensor(0.0))

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, 1) -> (B, 1)
        return self.w * z + self.c

    def distribution(self):
        return oned.gaussian("G", float(self.c.detach()), abs(float(self.w.detach())))

