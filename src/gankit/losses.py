"""The GAN objective as pure functions of discriminator logits (no networks, no backward).

D(x) = sigmoid(l) for a logit l, so with softplus(t) = log(1 + e^t):
    log D(x)      = -softplus(-l)
    log(1 - D(x)) = -softplus(l)
Working in logits keeps every term finite where sigmoid would round D to exactly 0 or 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

G_LOSSES = ("non-saturating", "saturating")


def value(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Minibatch estimate of V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))]."""
    return -F.softplus(-real_logits).mean() - F.softplus(fake_logits).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-V: descending it is gradient ascent on V with respect to D's parameters."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor, kind: str = "non-saturating") -> torch.Tensor:
    """The generator's loss on D's logits for G(z).

    saturating:      E_z log(1 - D(G(z)))   (the minimax form; flat when D(G(z)) ~ 0)
    non-saturating: -E_z log D(G(z))        (same fixed point, strong gradient early on)
    """
    if kind == "non-saturating":
        return F.softplus(-fake_logits).mean()
    if kind == "saturating":
        return -F.softplus(fake_logits).mean()
    raise ValueError(f"unknown generator loss {kind!r}; expected one of {', '.join(G_LOSSES)}")
