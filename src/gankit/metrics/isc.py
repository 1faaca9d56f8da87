"""The Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), over splits.

As torch-fidelity (and the original TensorFlow code) compute it: the samples shuffled with
numpy's RandomState(2020), cut into 10 splits; in each split p(y) is the mean of p(y|x) =
softmax(logits) over the split, and the score is exp of the mean KL divergence; reported as the
mean and the (population) standard deviation over the splits. The logits are the Inception
network's 1008 classes without fc's bias ("logits_unbiased"). In float64.
"""

from __future__ import annotations

import numpy as np
import torch

SPLITS = 10
SHUFFLE_SEED = 2020


def inception_score(logits: torch.Tensor | np.ndarray, splits: int = SPLITS,
                    seed: int | None = SHUFFLE_SEED) -> tuple[float, float]:
    """(mean, std) of the Inception Score of (N, classes) logits; seed None: no shuffle."""
    x = torch.as_tensor(np.asarray(logits)).double()
    if x.dim() != 2 or len(x) < splits:
        raise ValueError(f"need (N, classes) logits with N >= splits = {splits}, got {tuple(x.shape)}")
    if seed is not None:
        x = x[torch.from_numpy(np.random.RandomState(seed).permutation(len(x)))]
    log_p = x.log_softmax(dim=1)
    n = len(x)
    scores = []
    for i in range(splits):
        chunk = log_p[i * n // splits:(i + 1) * n // splits]
        log_q = chunk.exp().mean(0, keepdim=True).log()  # log p(y) over the split
        kl = (chunk.exp() * (chunk - log_q)).sum(1)  # KL(p(y|x) || p(y)) per sample
        scores.append(kl.mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))
