"""EMA generator (issue 15): its batch-norm buffers copied from G, or recomputed for its weights
(BigGAN's standing statistics); and against G as trained, on the same finished runs.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/ema_stats.py build/parity-demo/ema-seed0 ...

For each run folder (trained with --g-ema) its last checkpoint is scored three ways with the
protocol of training-time evaluations (classifier features, --eval-samples samples drawn with the
run's seed, the test split): G as trained ("raw"); the EMA as the loop keeps it, buffers copied
from G after each update ("ema-copy", what sampling and evaluation use); and the EMA with its
running statistics recomputed from BATCHES batches of BATCH noise vectors in train mode
(ema.recompute_batchnorm_stats; "ema-standing"). One JSON line per run and way, then a table.
The three share the run and the samples' noise, so their differences are paired comparisons.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gankit import ema  # noqa: E402
from gankit.evaluate import EvalProtocol, score  # noqa: E402
from gankit.models.conditional import is_conditional, join_noise  # noqa: E402
from gankit.sample import load_generator  # noqa: E402

BATCHES, BATCH = 16, 256  # standing statistics: 4,096 noise vectors
WAYS = ("raw", "ema-copy", "ema-standing")
SHOWN = ("fid", "precision", "recall")


def standing_noise(G: torch.nn.Module, latent_dim: int, seed: int) -> list[torch.Tensor]:
    """BATCHES batches of G's input (B, latent_dim) or, conditional, (B, latent_dim + 1)."""
    g = torch.Generator().manual_seed(seed)
    batches = [torch.randn(BATCH, latent_dim, generator=g) for _ in range(BATCHES)]
    if is_conditional(G):
        weights = G.class_weights.float().cpu()
        batches = [join_noise(z, torch.multinomial(weights, BATCH, replacement=True, generator=g)) for z in batches]
    return batches


def score_run(run: Path) -> dict[str, dict]:
    results = {}
    for way in WAYS:
        G, info = load_generator(run, "cpu", "raw" if way == "raw" else "ema")
        config = info["config"]
        if way == "ema-standing":
            with torch.no_grad():
                ema.recompute_batchnorm_stats(G, standing_noise(G, config.latent_dim, seed=1))
        protocol = EvalProtocol(n_samples=config.eval_samples, seed=config.seed, data_dir=config.data_dir)
        metrics, record = score(G, config, protocol)
        results[way] = {k: metrics[k] for k in SHOWN}
        print(json.dumps({"run": str(run), "way": way, **results[way],
                          "weights_sha256": record["extractor"]["weights_sha256"]}), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders trained with --g-ema")
    args = parser.parse_args()
    scored = [score_run(run) for run in args.runs]
    print("| way | " + " | ".join(f"{m} per run" for m in SHOWN) + " | mean FID |")
    print("| --- |" + " --- |" * (len(SHOWN) + 1))
    for way in WAYS:
        cells = [", ".join(f"{s[way][m]:.3f}" if m != "fid" else f"{s[way][m]:.2f}" for s in scored) for m in SHOWN]
        print(f"| {way} | " + " | ".join(cells) + f" | {statistics.mean(s[way]['fid'] for s in scored):.2f} |")


if __name__ == "__main__":
    main()
