"""Failure-mode warnings: each state is provoked on purpose and must be reported, with advice."""

import io

import pytest
import torch

from gankit import runs
from gankit.config import TrainConfig
from gankit.data.toy import TOY_DISTRIBUTIONS
from gankit.diagnostics import Diagnostics, diversity
from gankit.train import train

BASE = dict(data="toy:ring8", model="mlp", g_width=32, d_width=32, batch_size=32, device="cpu",
            max_images=32 * 400, snapshot_every=32 * 50)


def warnings_of(tmp_path, **overrides):
    out = io.StringIO()
    train(TrainConfig(**BASE, **overrides), tmp_path / "run", stream=out)
    found = [r for r in runs.read_metrics(tmp_path / "run") if r.get("event") == "warning"]
    return found, out.getvalue()


def test_discriminator_winning_with_the_saturating_loss(tmp_path):
    # A fast D and a nearly frozen G: D(G(z)) -> 0, where the saturating loss has no gradient.
    found, printed = warnings_of(tmp_path, g_loss="saturating", lr_d=1e-2, lr_g=1e-5)
    wins = [w for w in found if w["kind"] == "discriminator_wins"]
    assert len(wins) == 1, "reported once, not every iteration"
    assert "--g-loss non-saturating" in wins[0]["message"]
    assert "gankit: warning: the discriminator is winning" in printed


def test_discriminator_not_learning(tmp_path):
    found, _ = warnings_of(tmp_path, lr_d=1e-9, lr_g=1e-9)
    stuck = [w for w in found if w["kind"] == "discriminator_not_learning"]
    assert len(stuck) == 1 and "--lr-d" in stuck[0]["message"]
    assert stuck[0]["images"] == 200 * 32  # judged on the first 200 iterations


def test_a_healthy_run_raises_no_discriminator_warnings(tmp_path):
    found, _ = warnings_of(tmp_path)
    assert not [w for w in found if w["kind"] in ("discriminator_wins", "discriminator_not_learning")]


def test_mode_collapse_from_sample_diversity():
    ring = TOY_DISTRIBUTIONS["ring8"]
    real = ring.sample(64, torch.Generator().manual_seed(0))
    diagnostics = Diagnostics()
    assert diagnostics.check_diversity(ring.sample(64, torch.Generator().manual_seed(1)), real) == []
    one_mode = ring.means[3].float() + 0.02 * torch.randn(64, 2, generator=torch.Generator().manual_seed(2))
    found = diagnostics.check_diversity(one_mode, real)
    assert [f.kind for f in found] == ["mode_collapse"]
    assert diagnostics.check_diversity(one_mode, real) == [], "not repeated while it lasts"
    assert diversity(torch.zeros(5, 3)) == 0.0


def test_vanishing_generator_gradient():
    diagnostics = Diagnostics(window=10)
    healthy = dict(d_real=0.8, d_fake=0.3, d_fake_g_before=0.3, grad_norm_g=5.0)
    assert all(diagnostics.update(healthy) == [] for _ in range(20))
    found = []
    for _ in range(10):  # D(G(z)) is fine but the gradient collapses to 0.1% of its early value
        found += diagnostics.update({**healthy, "grad_norm_g": 0.005})
    assert [f.kind for f in found] == ["discriminator_wins"]
    assert "gradient norm fell below 1%" in found[0].message


@pytest.mark.parametrize("g_loss, advice", [("saturating", "non-saturating"), ("non-saturating", "--lr-d")])
def test_advice_depends_on_the_loss(g_loss, advice):
    diagnostics = Diagnostics(window=5, g_loss=g_loss)
    found = []
    for _ in range(5):
        found += diagnostics.update(dict(d_real=0.99, d_fake=0.01, d_fake_g_before=0.01, grad_norm_g=1.0))
    assert len(found) == 1 and advice in found[0].message
