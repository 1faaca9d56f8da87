"""The theory commands: exact 1-D quantities, optimal D, the game, the two G losses, the mode benchmark.

Tolerances come from what the pieces can achieve, stated next to each assertion."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fakes import make_npz
from gankit import cli
from gankit.data.toy import TOY_DISTRIBUTIONS
from gankit.losses import generator_loss
from gankit.metrics.toy import mode_metrics
from gankit.models.mlp import MLPDiscriminator, MLPGenerator
from gankit.sample import generate, load_generator
from gankit.theory import game, modes, oned, optimal_d, saturation
from gankit.train import grad_norm

LOG4 = math.log(4)


@pytest.fixture
def fake_npz(tmp_path):
    return make_npz(tmp_path / "squares.npz", n=256)


# --- exact 1-D quantities ----------------------------------------------------------------------

def test_value_at_optimum_is_minus_log4_plus_two_jsd():
    """Theorem 1's identity, checked by two independent quadratures (grid error ~1e-8)."""
    p_dist, q_dist = TOY_DISTRIBUTIONS["mixture1d"], oned.gaussian("g", 0.5, 1.5)
    x = oned.grid_covering(p_dist, q_dist, n=8001)
    p, q = oned.density(p_dist, x), oned.density(q_dist, x)
    assert oned.value_at_optimum(p, q, x) == pytest.approx(-LOG4 + 2 * oned.jsd(p, q, x), abs=1e-6)
    d_star = oned.optimal_discriminator(p, q)
    assert oned.value(p, q, torch.logit(d_star.clamp(1e-12, 1 - 1e-12)), x) == pytest.approx(
        oned.value_at_optimum(p, q, x), abs=1e-6)
    # D* is the maximiser: any other D reaches less.
    for shift in (-0.5, 0.3):
        other = torch.logit(d_star.clamp(1e-12, 1 - 1e-12)) + shift
        assert oned.value(p, q, other, x) < oned.value_at_optimum(p, q, x) - 1e-3


def test_equal_densities_give_minus_log4_and_one_half():
    p_dist = TOY_DISTRIBUTIONS["gauss1d"]
    x = oned.grid_covering(p_dist)
    p = oned.density(p_dist, x)
    assert oned.jsd(p, p, x) == pytest.approx(0.0, abs=1e-9)
    assert oned.value_at_optimum(p, p, x) == pytest.approx(-LOG4, abs=1e-6)
    assert torch.allclose(oned.optimal_discriminator(p, p), torch.full_like(p, 0.5))


def test_disjoint_densities_give_jsd_log2():
    a, b = oned.gaussian("a", -10, 0.5), oned.gaussian("b", 10, 0.5)
    x = oned.grid_covering(a, b, n=20001)
    assert oned.jsd(oned.density(a, x), oned.density(b, x), x) == pytest.approx(math.log(2), abs=1e-6)


def test_histogram_density_integrates_to_one_and_matches_the_gaussian():
    g = oned.gaussian("g", 1.0, 0.7)
    x = torch.linspace(-4, 6, 2001, dtype=torch.float64)
    q = oned.histogram_density(g.sample(400_000, torch.Generator().manual_seed(0)), x, 0.05)
    assert oned.integrate(q, x) == pytest.approx(1.0, abs=0.01)
    assert (q - oned.density(g, x)).abs().max() < 0.03  # Poisson noise ~ sqrt(n p w)/(n w) ~ 0.006


def test_central_region_holds_the_mass():
    g = oned.gaussian("g", 0.0, 1.0)
    x = oned.grid_covering(g, n=8001)
    p = oned.density(g, x)
    lo, hi = oned.central_region(p, p, x, 0.99)
    assert lo == pytest.approx(-2.5758, abs=0.01) and hi == pytest.approx(2.5758, abs=0.01)


# --- theory optimal-d ----------------------------------------------------------------------------

@pytest.mark.slow  # 1,000 D steps of 1,024 + 1,024 samples: about 3.5 s
def test_optimal_d_trained_d_matches_d_star(tmp_path):
    # 1,000 steps of 1,024 + 1,024 samples (the command's default, 3,000 of 2,048, measured
    # max |D - D*| 0.029, mean 0.0034, gap 3.6e-4 nats). Measured with these settings: max 0.047,
    # mean 0.0087, gap 0.0022. The bounds leave about 2x room for variation between machines'
    # arithmetic, and each fails for a D that is not near D*: an untrained D has max error ~0.5,
    # mean ~0.3 and a gap ~0.5 nats.
    r = optimal_d.run(tmp_path, seed=0, data="mixture1d", generator="affine", steps=1000, batch=1024)
    assert r["max_abs_error"] < 0.1
    assert r["mean_abs_error"] < 0.02
    # V(D) <= max_D V for every D; quadrature error is ~1e-6.
    assert -1e-5 < r["gap"] < 0.005
    assert r["value_optimal_d"] == pytest.approx(r["minus_log4_plus_2jsd"], abs=1e-5)
    # The Monte Carlo value on 200,000 samples of each has a standard error of ~2e-3.
    assert r["value_trained_d_monte_carlo"] == pytest.approx(r["value_trained_d"], abs=0.01)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["max_abs_error"] == r["max_abs_error"] and stored["seed"] == 0
    assert (tmp_path / "optimal-d.png").stat().st_size > 10_000


@pytest.mark.slow  # 1,000 D steps of 1,024 + 1,024 samples: about 3.5 s
def test_optimal_d_with_a_histogram_generator(tmp_path):
    # Measured: max 0.037, mean 0.0052, gap 0.0046 (1,000 steps of 1,024).
    r = optimal_d.run(tmp_path, seed=1, data="gauss1d", generator="mlp", steps=1000, batch=1024)
    assert r["generator"]["kind"] == "mlp" and "histogram" in r["generator"]["p_G"]
    assert r["max_abs_error"] < 0.1 and r["mean_abs_error"] < 0.02
    assert abs(r["gap"]) < 0.01  # D* from a histogram: the gap may be slightly negative


def test_optimal_d_bad_flags(tmp_path):
    with pytest.raises(Exception, match="--data"):
        optimal_d.run(tmp_path, data="ring8")
    with pytest.raises(Exception, match="--steps"):
        optimal_d.run(tmp_path, steps=0)


# --- theory game -------------------------------------------------------------------------------

def test_game_reaches_the_equilibrium(tmp_path):
    r = game.run(tmp_path, seed=0, iterations=1000, d_pretrain=300, panel_c=50, every=25)
    a, b = r["panels"]["a"], r["panels"]["b"]
    # Start: N(0, 1) against N(4, 0.5): JSD close to log 2 = 0.693.
    assert a["jsd"] > 0.6
    # After D alone is trained, it separates the two almost perfectly: V near 0 (its maximum).
    assert b["value"] > -0.2 and b["d_real"] > 0.9 and b["d_fake"] < 0.1
    # Near convergence (measured: JSD ~3e-4, V within 0.002 of -log 4, D ~ 0.5 +- 0.02).
    final = r["final"]
    assert final["jsd"] < 0.01
    assert abs(final["value"] + LOG4) < 0.02
    assert abs(final["d_real"] - 0.5) < 0.06 and abs(final["d_fake"] - 0.5) < 0.06
    assert abs(abs(r["generator_final"]["w"]) - 0.5) < 0.1 and abs(r["generator_final"]["c"] - 4) < 0.1
    # max_D V >= V(D) at every measured point: D is never better than optimal.
    assert all(h["max_value"] >= h["value"] - 1e-6 for h in r["history"])
    for name in ("game.png", "game-curves.png", "results.json"):
        assert (tmp_path / name).is_file()


# --- theory saturation -------------------------------------------------------------------------

def test_saturation_curves_match_the_closed_forms():
    c = saturation.curves()
    d = np.array(c["d_fake"])
    sat, ns = c["saturating"], c["non-saturating"]
    np.testing.assert_allclose(sat["loss"], np.log(1 - d), rtol=1e-9)
    np.testing.assert_allclose(ns["loss"], -np.log(d), rtol=1e-9)
    np.testing.assert_allclose(sat["grad_d"], -1 / (1 - d), rtol=1e-6)
    np.testing.assert_allclose(ns["grad_d"], -1 / d, rtol=1e-6)
    np.testing.assert_allclose(sat["grad_logit"], -d, rtol=1e-6)
    np.testing.assert_allclose(ns["grad_logit"], -(1 - d), rtol=1e-6)


def test_saturating_gradient_vanishes_when_d_rejects_the_fakes():
    """The notes' claim on real networks: with D(G(z)) ~ 0.007, G's gradient under the saturating
    loss is D / (1 - D) ~ 0.7% of the non-saturating one (all D(G(z)) nearly equal here)."""
    torch.manual_seed(0)
    G, D = MLPGenerator(2, (2,), width=32, tanh=False), MLPDiscriminator((2,), width=32)
    with torch.no_grad():
        D.net[-1].bias.fill_(-5.0)  # D(G(z)) = sigmoid(-5 + small) ~ 0.0067
    z = torch.randn(256, 2)
    norms = {}
    for kind in ("saturating", "non-saturating"):
        G.zero_grad()
        logits = D(G(z))
        generator_loss(logits, kind).backward()
        norms[kind] = float(grad_norm(G))
    d_fake = float(torch.sigmoid(logits).mean())
    assert d_fake < 0.01
    assert norms["saturating"] / norms["non-saturating"] == pytest.approx(d_fake / (1 - d_fake), rel=0.1)


@pytest.mark.slow  # eight training runs (toy and images): about 15 s
def test_saturation_command_on_toy_and_images(tmp_path, fake_npz):
    r = saturation.run(tmp_path, seed=0, seeds=2, toy_iterations=60, image_data=f"npz:{fake_npz}",
                       image_images=640, first=40)
    assert [x["g_loss"] for x in r["ring8"]["runs"]] == ["non-saturating"] * 2 + ["saturating"] * 2
    for problem in ("ring8", "images"):
        by_seed: dict = {}
        for run in r[problem]["runs"]:
            assert 0 < len(run["grad_norm_g"]) <= 40 and all(g > 0 for g in run["grad_norm_g"])
            by_seed.setdefault(run["seed"], []).append(run)
        for pair in by_seed.values():
            # Same seed: the same first D step, so the same D(G(z)) before the first G step;
            # the G gradients differ only by the loss.
            assert pair[0]["d_fake"][0] == pytest.approx(pair[1]["d_fake"][0], abs=1e-6)
            assert pair[0]["grad_norm_g"][0] != pair[1]["grad_norm_g"][0]
        summary = r["summary"][problem]["saturating"]
        runs = [x for x in r[problem]["runs"] if x["g_loss"] == "saturating"]
        assert summary["grad_norm_g_first"] == pytest.approx(float(np.median([x["grad_norm_g"][0] for x in runs])))
    ring_outcome = r["ring8"]["runs"][0]["outcome"]
    # The outcome is the score of the saved generator, recomputed here from the checkpoint.
    G, _ = load_generator(tmp_path / "runs" / "ring8-ns-seed0", device="cpu")
    again = mode_metrics(generate(G, modes.SAMPLES, 0, 2), TOY_DISTRIBUTIONS["ring8"])
    assert ring_outcome["modes"] == again["modes"] and ring_outcome["high_quality"] == again["high_quality"]
    assert r["images"]["runs"][0]["outcome"] is None  # no classifier features for npz data
    assert (tmp_path / "saturation.png").is_file()


# --- bench modes -------------------------------------------------------------------------------

@pytest.mark.slow  # four training runs: about 7 s
def test_bench_modes_table_and_summary(tmp_path, capsys):
    r = modes.run(tmp_path, seed=3, seeds=2, ks=(1, 2), g_losses=("non-saturating",),
                  datasets=("ring8",), iterations=40, jobs=1)
    assert [(row["k"], row["seeds"]) for row in r["rows"]] == [(1, [3, 4]), (2, [3, 4])]
    for row in r["rows"]:
        values = row["modes"]["values"]
        assert row["modes"]["mean"] == pytest.approx(sum(values) / 2)
        assert row["modes"]["std"] == pytest.approx(float(np.std(values, ddof=1)))
        assert all(0 <= v <= 8 for v in values)
        assert all(0 <= v <= 100 for v in row["high_quality"]["values"])
    # Runs are real: the k = 2 run saw twice the real images of the k = 1 run, same G steps.
    rows_k1 = [json.loads(x) for x in (tmp_path / "runs/ring8-k1-ns-seed3/metrics.jsonl").read_text().splitlines()]
    rows_k2 = [json.loads(x) for x in (tmp_path / "runs/ring8-k2-ns-seed3/metrics.jsonl").read_text().splitlines()]
    assert rows_k1[-1]["iteration"] == rows_k2[-1]["iteration"] == 40
    assert rows_k2[-1]["images"] == 2 * rows_k1[-1]["images"] == 8000
    text = modes.table(r)
    assert "ring8 GAN (PacGAN Table 1)" in text and "6.3 +- 0.5" in text
    assert "ring8 gankit k=2 ns" in text
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == r["rows"]


@pytest.mark.slow  # two runs, one in worker processes: about 14 s
def test_bench_modes_in_worker_processes_matches_one_process(tmp_path):
    args = dict(seed=0, seeds=1, ks=(1,), g_losses=("saturating",), datasets=("grid25",), iterations=30)
    one = modes.run(tmp_path / "one", jobs=1, **args)
    two = modes.run(tmp_path / "two", jobs=2, **args)
    assert one["rows"][0]["modes"] == two["rows"][0]["modes"]
    assert one["rows"][0]["high_quality"] == two["rows"][0]["high_quality"]


def test_bench_modes_cli_errors(tmp_path, capsys):
    assert cli.main(["bench", "modes", "--k", "one", "--out", str(tmp_path)]) == 1
    assert "--k" in capsys.readouterr().err
    assert cli.main(["bench", "modes", "--datasets", "spiral", "--out", str(tmp_path)]) == 1
    assert "--datasets" in capsys.readouterr().err
    assert cli.main(["theory", "optimal-d", "--steps", "0", "--out", str(tmp_path)]) == 1
    assert "--steps" in capsys.readouterr().err
    assert cli.main(["theory", "game", "--seed", "-1", "--out", str(tmp_path)]) == 1
    assert "--seed" in capsys.readouterr().err
