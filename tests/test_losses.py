"""The value function and both generator losses against hand computations from probabilities."""

import math

import pytest
import torch

from gankit.losses import discriminator_loss, generator_loss, value

REAL = [2.0, -0.5, 0.0, 3.5]
FAKE = [-1.0, 0.25, -4.0, 1.5]


def sigmoid(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t))


def by_hand_value(real, fake):
    # V = mean log D(x) + mean log(1 - D(G(z))), from probabilities
    return (sum(math.log(sigmoid(r)) for r in real) / len(real)
            + sum(math.log(1 - sigmoid(f)) for f in fake) / len(fake))


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def test_value_matches_probabilities():
    assert value(t(REAL), t(FAKE)).item() == pytest.approx(by_hand_value(REAL, FAKE), rel=1e-12)


def test_discriminator_loss_is_minus_value():
    assert discriminator_loss(t(REAL), t(FAKE)).item() == pytest.approx(-by_hand_value(REAL, FAKE), rel=1e-12)


def test_generator_losses_match_probabilities():
    saturating = sum(math.log(1 - sigmoid(f)) for f in FAKE) / len(FAKE)
    non_saturating = -sum(math.log(sigmoid(f)) for f in FAKE) / len(FAKE)
    assert generator_loss(t(FAKE), "saturating").item() == pytest.approx(saturating, rel=1e-12)
    assert generator_loss(t(FAKE), "non-saturating").item() == pytest.approx(non_saturating, rel=1e-12)


def test_equilibrium_value_is_minus_log_4():
    # D = 1/2 everywhere (logit 0): V = log(1/2) + log(1/2) = -log 4
    zeros = torch.zeros(10, dtype=torch.float64)
    assert value(zeros, zeros).item() == pytest.approx(-math.log(4), rel=1e-12)


def test_stable_where_sigmoid_rounds_to_zero_or_one():
    # In float32 sigmoid(-200) == 0 and log(0) = -inf; the logit form stays finite.
    extreme = torch.tensor([-200.0, 200.0])
    assert torch.isfinite(value(extreme, extreme))
    assert torch.isfinite(discriminator_loss(extreme, extreme))
    for kind in ("saturating", "non-saturating"):
        assert torch.isfinite(generator_loss(extreme, kind))
    assert value(torch.tensor([200.0]), torch.tensor([-200.0])).item() == pytest.approx(0.0, abs=1e-6)


def test_saturating_gradient_vanishes_when_d_rejects_fakes():
    # Early in training D(G(z)) ~ 0 (logit very negative): d loss / d logit is -sigmoid(l) ~ 0 for
    # the saturating loss, but -(1 - sigmoid(l)) ~ -1 for the non-saturating one.
    grads = {}
    for kind in ("saturating", "non-saturating"):
        logits = torch.tensor([-8.0], dtype=torch.float64, requires_grad=True)
        generator_loss(logits, kind).backward()
        grads[kind] = logits.grad.item()
    assert grads["saturating"] == pytest.approx(-sigmoid(-8.0), rel=1e-9)
    assert grads["non-saturating"] == pytest.approx(-(1 - sigmoid(-8.0)), rel=1e-9)
    assert abs(grads["non-saturating"]) > 1000 * abs(grads["saturating"])


def test_unknown_generator_loss():
    with pytest.raises(ValueError, match="saturating"):
        generator_loss(torch.zeros(2), "wasserstein")
