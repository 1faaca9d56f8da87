"""Failure-mode diagnostics for the training loop, from statistics the loop already has.

The notes name the ways the game goes wrong: the discriminator wins (D(G(z)) near 0, the
generator's gradient vanishes), the discriminator does not learn (D stuck at 1/2 from the start),
and the generator collapses onto few modes. Each is watched over a window of iterations and
reported once, with a suggestion, until it clears. Divergence (NaN/Inf) is handled by the loop.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

WINDOW = 200  # iterations a condition must hold before it is reported
D_WINS_FAKE = 0.05  # mean D(G(z)) below this: D rejects nearly every fake
GRAD_COLLAPSE = 0.01  # generator gradient norm below 1% of its early median
STUCK_BAND = 0.01  # |D - 1/2| within this for real and fake: D cannot tell them apart
COLLAPSE_RATIO = 0.25  # fixed-noise batch diversity below a quarter of a real batch's


@dataclass
class Finding:
    kind: str
    message: str


@dataclass
class Diagnostics:
    window: int = WINDOW
    g_loss: str = "non-saturating"
    _fake: deque = field(default_factory=deque)
    _grad_g: deque = field(default_factory=deque)
    _stuck: deque = field(default_factory=deque)
    _early_grad: list = field(default_factory=list)
    _active: set = field(default_factory=set)
    _iterations: int = 0

    def update(self, stats: dict[str, float]) -> list[Finding]:
        """Feed one iteration's statistics; returns the warnings that start now."""
        self._iterations += 1
        for buffer, value in ((self._fake, stats["d_fake_g_before"]), (self._grad_g, stats["grad_norm_g"]),
                              (self._stuck, max(abs(stats["d_real"] - 0.5), abs(stats["d_fake"] - 0.5)))):
            buffer.append(value)
            if len(buffer) > self.window:
                buffer.popleft()
        if len(self._early_grad) < self.window:
            self._early_grad.append(stats["grad_norm_g"])
        if len(self._fake) < self.window:
            return []
        warnings = []
        early = sorted(self._early_grad)[len(self._early_grad) // 2]
        d_wins = max(self._fake) < D_WINS_FAKE
        vanishing = max(self._grad_g) < GRAD_COLLAPSE * early
        if self._edge("d_wins", d_wins or vanishing):
            what = (f"mean D(G(z)) stayed below {D_WINS_FAKE} for {self.window} iterations"
                    if d_wins else f"the generator's gradient norm fell below {GRAD_COLLAPSE:.0%} of its early value")
            advice = ("switch to --g-loss non-saturating (the saturating loss has no gradient there)"
                      if self.g_loss == "saturating" else "lower --lr-d, or use a smaller --k")
            warnings.append(Finding("discriminator_wins", f"the discriminator is winning: {what}; "
                                     f"the generator learns little. Try: {advice}."))
        # judged once, on the first window of iterations: "stuck at 1/2 from the start"
        if self._iterations == self.window and max(self._stuck) < STUCK_BAND:
            warnings.append(Finding("discriminator_not_learning",
                                     f"D(x) and D(G(z)) stayed within {STUCK_BAND} of 1/2 for the first "
                                     f"{self.window} iterations: the discriminator is not learning, so "
                                     "the generator gets no useful signal. Try: a larger --lr-d or --k."))
        return warnings

    def check_diversity(self, fake: torch.Tensor, real: torch.Tensor) -> list[Finding]:
        """Mode collapse: mean pairwise distance of a fixed-noise batch against a real batch's."""
        ratio = diversity(fake) / max(diversity(real), 1e-12)
        if self._edge("collapse", ratio < COLLAPSE_RATIO):
            return [Finding("mode_collapse",
                             f"the generator's samples are {ratio:.2f} times as diverse as real data "
                             f"(pixel distance, fixed noise): likely mode collapse. Try: a lower --lr-g, "
                             "a larger --k, or restarting from an earlier checkpoint.")]
        return []

    def _edge(self, name: str, condition: bool) -> bool:
        """True once when a condition starts; re-armed when it clears."""
        if condition and name not in self._active:
            self._active.add(name)
            return True
        if not condition:
            self._active.discard(name)
        return False


def diversity(batch: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance between the rows of a (B, ...) batch."""
    flat = batch.detach().float().flatten(1).cpu()
    d = torch.cdist(flat, flat)
    b = len(flat)
    return float(d.sum() / max(b * (b - 1), 1))
