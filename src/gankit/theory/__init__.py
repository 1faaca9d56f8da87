"""The theory of Goodfellow et al. (2014) made observable: commands whose outputs are figures and
numbers (results.json) that check the claims of the paper on problems with known densities.

- optimal_d:  a frozen generator, D trained to convergence, compared with D* = p_data / (p_data + p_G)
- game:       a full 1-D run, the four panels of the paper's Fig. 1 and V against -log 4
- saturation: the saturating and non-saturating generator losses, as curves and in training
- modes:      the 2-D mode-collapse benchmark (ring of 8, grid of 25), in PacGAN's table format
- pacgan:     the same benchmark in PacGAN's published set-up (GAN and PacGAN2-4, Table 1)
- pacgan_batched: pacgan's trials trained together as stacked tensors (--engine batched)
- pacgan_curves: pacgan's trials scored along the way (--score-every), progress lines, curves.png
"""

from __future__ import annotations

from typing import TextIO


def say(log: TextIO | None, text: str) -> None:
    """A progress line of a theory command, when it has somewhere to go."""
    if log is not None:
        print(text, file=log, flush=True)
