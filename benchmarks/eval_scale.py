"""The scale of gankit's Fashion-MNIST metrics: real vs real, an untrained generator, trained runs.

    python benchmarks/eval_scale.py [RUN_DIR ...] [--n-samples 10000]

Prints a markdown table (rows in the order given) for docs/evaluation.md: FID, KID, precision,
recall, density and coverage in the classifier features, each against the whole test split.
"""

from __future__ import annotations

import argparse
import time

import torch

from gankit.config import TrainConfig
from gankit.data.mnist import load_split
from gankit.evaluate import IMAGE_SAMPLES, EvalProtocol, score, score_images
from gankit.models import build_models
from gankit.sample import load_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run folders or checkpoints to score")
    parser.add_argument("--n-samples", type=int, default=IMAGE_SAMPLES)
    parser.add_argument("--data", default="fashion-mnist")
    args = parser.parse_args()
    config = TrainConfig(data=args.data)
    protocol = EvalProtocol(n_samples=args.n_samples)
    rows = []

    # (a) real vs real: n images of the training split against the test split
    train_images, _, _ = load_split(args.data, "train")
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(train_images), generator=g)[: args.n_samples]
    real = torch.from_numpy(train_images).unsqueeze(1)[pick]
    rows.append((f"{args.data} training split ({len(real)} images)", *_timed(score_images, real, config, protocol)))

    # (b) an untrained generator: DCGAN at its N(0, 0.02) initialisation
    torch.manual_seed(0)
    G, _ = build_models(config, (1, 28, 28))
    rows.append(("untrained DCGAN generator", *_timed(score, G.eval(), config, protocol)))

    # (c), (d), ...: trained runs
    for run in args.runs:
        G, info = load_generator(run, "cpu")
        rows.append((f"{run} ({info['progress']['images_seen']} images)",
                     *_timed(score, G, info["config"], protocol)))

    print("| samples | FID | KID | precision | recall | density | coverage | eval time |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, (metrics, _), seconds in rows:
        m = metrics
        print(f"| {name} | {m['fid']:.2f} | {m['kid_mean']:.3f} +- {m['kid_std']:.3f} | {m['precision']:.3f} "
              f"| {m['recall']:.3f} | {m['density']:.3f} | {m['coverage']:.3f} | {seconds:.0f} s |")


def _timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


if __name__ == "__main__":
    main()
