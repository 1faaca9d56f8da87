"""`gankit theory optimal-d --conditional`: D(x, y) against D*(x|y) = p(x|y) / (p(x|y) + q(x|y)),
class by class, on mixture1d with each Gaussian its own class (issue #16, the theory side)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gankit import cli
from gankit.data.toy import TOY_DISTRIBUTIONS
from gankit.errors import ConfigError
from gankit.theory import oned, optimal_d

LOG4 = math.log(4)


def _normal_pdf(x: float, mean: float, std: float) -> float:
    return math.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def _d_star_by_hand(x: float, y: int) -> float:
    """D*(x|y) from the log density ratio of the two Gaussians, written out (no oned, no ToyDistribution)."""
    m, s = (-2.0, 0.5) if y == 0 else (2.0, 0.5)  # mixture1d's components
    a, b = optimal_d.AFFINE_BY_CLASS[y]
    log_ratio = math.log(abs(a) / s) - 0.5 * ((x - m) / s) ** 2 + 0.5 * ((x - b) / a) ** 2
    return 1 / (1 + math.exp(-log_ratio)) if log_ratio > -700 else 0.0


def test_optimal_d_conditional_d_star_matches_an_independent_computation(tmp_path):
    toy = TOY_DISTRIBUTIONS["mixture1d"]
    assert toy.means[:, 0].tolist() == [-2.0, 2.0] and toy.stds.tolist() == [0.5, 0.5]
    x = torch.linspace(-5, 6, 221, dtype=torch.float64)
    p, q = optimal_d.class_densities(toy, x)  # (2, n) each
    assert p.shape == q.shape == (2, len(x))
    d_star = oned.optimal_discriminator(p, q)
    by_hand = torch.tensor([[_d_star_by_hand(float(v), y) for v in x] for y in (0, 1)], dtype=torch.float64)
    assert torch.allclose(d_star, by_hand, atol=1e-12, rtol=1e-9)
    # Each class's densities integrate to 1, and the class weights make the mixture's density.
    wide = torch.linspace(-20, 20, 40001, dtype=torch.float64)
    pw, qw = optimal_d.class_densities(toy, wide)
    for y in (0, 1):
        assert oned.integrate(pw[y], wide) == pytest.approx(1.0, abs=1e-9)
        assert oned.integrate(qw[y], wide) == pytest.approx(1.0, abs=1e-9)
    assert torch.allclose(toy.weights @ p, oned.density(toy, x), atol=1e-15)

    # What the command reports at its probe points: D*(x|y) as above, and the unconditional D*
    # of the marginals, sum_y pi_y p(x|y) / sum_y pi_y (p(x|y) + q(x|y)). Two D steps: only the
    # closed forms are checked here.
    r = optimal_d.run(tmp_path, seed=0, steps=2, batch=64, conditional=True)
    assert [pr["x"] for pr in r["probes"]] == pytest.approx(list(optimal_d.PROBES), abs=0.01)
    for pr in r["probes"]:
        v = pr["x"]
        for y in (0, 1):
            assert pr["d_star_given_class"][y] == pytest.approx(_d_star_by_hand(v, y), abs=1e-9)
        num = sum(0.5 * _normal_pdf(v, m, 0.5) for m in (-2.0, 2.0))
        den = num + sum(0.5 * _normal_pdf(v, b, abs(a)) for a, b in optimal_d.AFFINE_BY_CLASS)
        assert pr["d_star_unconditional"] == pytest.approx(num / den, abs=1e-9)
    # Theorem 1 per class: V(D*(.|y)) = -log 4 + 2 JSD_y by two independent quadratures.
    for c in r["classes"]:
        assert c["value_optimal_d"] == pytest.approx(c["minus_log4_plus_2jsd"], abs=1e-5)


@pytest.mark.slow  # 2,000 D steps of 1,024 + 1,024 samples: about 8 s
def test_optimal_d_conditional_d_matches_d_star_per_class(tmp_path):
    # Measured with these settings (seeds 0, 1): per class max |D - D*| 0.041-0.047, mean
    # 0.0041-0.0049, gap 4e-4 to 6e-4 nats. The command's default (3,000 steps of 2,048):
    # max 0.026 / 0.014, mean 0.0028 / 0.0025. The bounds leave about 2x room; an untrained D
    # is off by ~0.5 and its gap is ~0.5 nats.
    r = optimal_d.run(tmp_path, seed=0, steps=2000, batch=1024, conditional=True)
    assert [c["class"] for c in r["classes"]] == [0, 1]
    for c in r["classes"]:
        assert c["max_abs_error"] < 0.1, c
        assert c["mean_abs_error"] < 0.015, c
        assert -1e-5 < c["gap"] < 0.003, c  # V(D) <= max_D V; quadrature error ~1e-6
        lo, hi = c["region_99"]
        assert lo < c["class"] * 4 - 2 < hi  # the region is around the class's own mode
    assert r["max_abs_error"] == max(c["max_abs_error"] for c in r["classes"])

    # Conditioning changes D*: a class-0 fake at x = 1 lands where class 1's data is. The
    # unconditional D* calls it fairly real; given its class, D* (and the trained D) says fake.
    at_1 = next(pr for pr in r["probes"] if pr["x"] == pytest.approx(1.0, abs=0.01))
    assert at_1["d_star_given_class"][0] < 1e-3 and at_1["d_given_class"][0] < 0.05
    assert at_1["d_star_unconditional"] > 0.3
    assert abs(at_1["d_given_class"][1] - at_1["d_star_given_class"][1]) < 0.05
    # So the conditional game's optimum is higher than the unconditional one's: the label only
    # adds information (E_y JSD(p(.|y) || q(.|y)) >= JSD of the marginals).
    assert r["minus_log4_plus_2_mean_class_jsd"] > r["unconditional"]["minus_log4_plus_2jsd"] + 0.02

    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["command"] == "theory optimal-d --conditional" and stored["classes"] == r["classes"]
    assert (tmp_path / "optimal-d-conditional.png").stat().st_size > 10_000


def test_optimal_d_conditional_bad_flags(tmp_path):
    with pytest.raises(ConfigError, match="--conditional needs --data mixture1d"):
        optimal_d.run(tmp_path, data="gauss1d", conditional=True)
    with pytest.raises(ConfigError, match="--generator must be affine"):
        optimal_d.run(tmp_path, generator="mlp", conditional=True)
    assert not (tmp_path / "results.json").exists()


def test_optimal_d_conditional_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "od"
    assert cli.main(["theory", "optimal-d", "--conditional", "--steps", "20", "--batch-size", "64",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "class 0:" in printed and "class 1:" in printed and "D*(x) unconditional" in printed
    assert json.loads((out / "results.json").read_text())["command"] == "theory optimal-d --conditional"
    assert cli.main(["theory", "optimal-d", "--conditional", "--data", "gauss1d", "--out", str(out)]) == 1
    assert "--conditional needs --data mixture1d" in capsys.readouterr().err
