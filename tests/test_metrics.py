"""Metrics against independent reference implementations on the same feature arrays, and on cases
with known answers. References: torchmetrics (FID, KID, with a pass-through feature module) and
the prdc package (Naeem et al.'s own code)."""

import math

import numpy as np
import pytest
import torch

from gankit.data.toy import TOY_DISTRIBUTIONS
from gankit.metrics import (
    density_coverage,
    fid,
    frechet_distance,
    jsd_1d,
    kid,
    mode_metrics,
    precision_recall,
)
from test_inception import torch_fidelity_extractor


@pytest.fixture(autouse=True)
def fidelity_importable():
    """torchmetrics' FID imports torch-fidelity, whose package __init__ imports torchvision (not
    importable beside the CPU torch): the package without its __init__, as test_inception loads it,
    whichever test of the session imports torchmetrics first."""
    torch_fidelity_extractor()


def features(n, d=16, seed=0, shift=0.0, scale=1.0):
    mix = np.random.default_rng(1234).normal(size=(d, d)) / math.sqrt(d)  # correlated, not isotropic
    return np.random.default_rng(seed).normal(size=(n, d)) @ mix * scale + shift


class PassThrough(torch.nn.Module):
    """torchmetrics runs its feature module on the inputs; ours are features already."""

    def __init__(self, d):
        super().__init__()
        self.d = d

    def forward(self, x):
        return x.flatten(1)[:, : self.d].double()


def test_fid_matches_torchmetrics():
    import torchmetrics.image.fid as tm
    real, fake = features(500, seed=1), features(400, seed=2, shift=0.3, scale=1.2)
    ref = tm.FrechetInceptionDistance(feature=PassThrough(16), normalize=False)
    ref.update(torch.from_numpy(real), real=True)
    ref.update(torch.from_numpy(fake), real=False)
    assert fid(real, fake) == pytest.approx(ref.compute().item(), rel=1e-6)


def test_kid_matches_torchmetrics_on_one_full_subset():
    import torchmetrics.image.kid as tm
    real, fake = features(300, seed=3), features(300, seed=4, shift=0.2)
    # One subset holding every sample: the random subset choice cannot differ between the two.
    ref = tm.KernelInceptionDistance(feature=PassThrough(16), subsets=1, subset_size=300, normalize=False)
    ref.update(torch.from_numpy(real), real=True)
    ref.update(torch.from_numpy(fake), real=False)
    mean, _ = ref.compute()
    assert kid(real, fake, subsets=1, subset_size=300)[0] == pytest.approx(mean.item(), rel=1e-6)


def test_kid_subsets_mean_and_std():
    real, fake = features(3000, seed=5), features(3000, seed=6, shift=0.5)
    mean, std = kid(real, fake, subsets=20, subset_size=1000)
    assert mean > 0 and 0 < std < mean
    x, y = features(3000, seed=7), features(3000, seed=8)
    same_mean, same_std = kid(x, y, subsets=20, subset_size=1000)
    # Unbiased: ~0 for one distribution, within 3 of this pair's own subset standard deviations.
    # Not std / sqrt(20): the 20 subsets are drawn from the same 3,000 samples and overlap, so
    # their mean is not an average of 20 independent estimates. (Over 24 other seed pairs,
    # |mean| / std was at most 1.2.)
    assert same_std > 0 and abs(same_mean) < 3 * same_std
    # The bound is tight enough to catch a biased estimator: the biased MMD^2 (the diagonals
    # k(x_i, x_i) kept) of one subset of this pair lies outside it.
    def k(a, b):
        return (a @ b.T / a.shape[1] + 1) ** 3

    xs, ys = x[:1000], y[:1000]
    assert k(xs, xs).mean() + k(ys, ys).mean() - 2 * k(xs, ys).mean() > 3 * same_std


@pytest.mark.parametrize("k", [3, 5])
def test_prdc_matches_the_prdc_package(k):
    import prdc
    real, fake = features(600, seed=9), features(500, seed=10, shift=0.4, scale=0.8)
    ref = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    precision, recall = precision_recall(real, fake, k=k)
    density, coverage = density_coverage(real, fake, k=k)
    assert precision == pytest.approx(ref["precision"], abs=1e-12)
    assert recall == pytest.approx(ref["recall"], abs=1e-12)
    assert density == pytest.approx(ref["density"], rel=1e-12)
    assert coverage == pytest.approx(ref["coverage"], abs=1e-12)


def test_identical_sets():
    x = features(1000, seed=11)
    assert abs(fid(x, x)) < 1e-8
    assert precision_recall(x, x) == (1.0, 1.0)


def test_coverage_and_density_for_one_distribution():
    # Naeem et al.: for real and fake from the same distribution, E[coverage] =
    # 1 - prod_{i=1..k} (N - i) / (N + M - i) -> 1 - 1/2^k = 0.969 for k = 5, and E[density] = 1.
    n = 2000
    density, coverage = density_coverage(features(n, seed=12), features(n, seed=13), k=5)
    expected = 1 - math.prod((n - i) / (2 * n - i) for i in range(1, 6))
    assert coverage == pytest.approx(expected, abs=0.015)  # binomial sd ~ 0.004 at n = 2000
    assert density == pytest.approx(1.0, abs=0.08)


def test_fid_of_two_gaussians_is_analytic():
    # Diagonal covariances commute: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2.
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 1.0])
    analytic = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(analytic, rel=1e-12)
    # A shifted copy of a sample: same covariance, so FID is exactly the squared shift.
    x = features(2000, seed=14)
    shift = np.linspace(-1, 1, 16)
    assert fid(x, x + shift) == pytest.approx((shift**2).sum(), rel=1e-6)
    # Samples of two known Gaussians: FID converges to the analytic value.
    rng = np.random.default_rng(15)
    a = rng.normal(size=(200_000, 3)) * np.sqrt(s1) + mu1
    b = rng.normal(size=(200_000, 3)) * np.sqrt(s2) + mu2
    assert fid(a, b) == pytest.approx(analytic, rel=0.01)


def test_mode_metrics_on_perfect_and_collapsed_samples():
    ring = TOY_DISTRIBUTIONS["grid25"]
    g = torch.Generator().manual_seed(0)
    perfect = mode_metrics(ring.sample(2500, g), ring)
    assert perfect["modes"] == 25
    # 3 std in 2-D holds P(chi2_2 <= 9) = 1 - e^-4.5 = 98.89% of a Gaussian's mass; sd 0.2% at 2,500
    assert perfect["high_quality"] == pytest.approx(100 * (1 - math.exp(-4.5)), abs=0.8)
    assert perfect["reverse_kl"] < 0.02
    one_mode = ring.means[7].float() + 0.01 * torch.randn(2500, 2, generator=g)
    collapsed = mode_metrics(one_mode, ring)
    assert collapsed["modes"] == 1 and collapsed["reverse_kl"] == pytest.approx(math.log(25))
    far = mode_metrics(torch.full((100, 2), 1.0), ring)  # between modes: nothing is high quality
    assert far["modes"] == 0 and far["high_quality"] == 0.0 and far["reverse_kl"] == float("inf")


def test_jsd_1d():
    toy = TOY_DISTRIBUTIONS["mixture1d"]
    g = torch.Generator().manual_seed(0)
    assert jsd_1d(toy.sample(200_000, g), toy) < 0.003  # histogram noise only
    half = toy.sample(200_000, g)
    one_mode = jsd_1d(half[half > 0], toy)  # only the right-hand mode
    # The modes barely overlap: p puts 1/2 on each, q all on the right, m = (3/4 right, 1/4 left):
    expected = 0.5 * (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)) + 0.5 * math.log(1 / 0.75)
    assert one_mode == pytest.approx(expected, abs=0.01)
    disjoint = jsd_1d(torch.full((1000, 1), 40.0), toy)
    assert disjoint == pytest.approx(math.log(2), abs=1e-9)
