"""`gankit nearest`: does the generator copy its training set? Each sample beside its nearest
training images, found twice:

- in feature space: the evaluation's features (the classifier's 128-d for (Fashion-)MNIST, or the
  Inception network's 2048-d pool), where "near" means "looks alike to a classifier";
- in pixel space: Euclidean distance between the images as the run trained on them (its size
  and channels, pixels in [-1, 1]), where "near" means "nearly the same picture".

The samples are `gankit sample --seed S -n N`'s. The search is the metrics' k-NN code
(metrics/prdc.py) over the whole training set (for (Fashion-)MNIST the train split). The PNG has
one row per sample: the sample, a gap, its k nearest in feature space, a gap, its k nearest in
pixel space, nearest first, under a header that says which is which. The printed summary gives
the median distance from each sample to its nearest training image in each space, beside the
same distance from real held-out images (the test split, for (Fashion-)MNIST) for scale: a
generator that copies sits far below the held-out images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from gankit.errors import GankitError
from gankit.files import sha256
from gankit.imagegrid import quantise
from gankit.metrics.prdc import nearest as knn

PAD, GAP, HEADER = 2, 8, 16


def find(path_or_run: str | os.PathLike, n: int, k: int = 3, seed: int = 0,
         features: str = "classifier", inception_weights: str | None = None,
         device: str = "auto", log=None) -> dict[str, Any]:
    """The samples, their nearest training images in both spaces and the distances."""
    import sys

    from gankit import evaluate
    from gankit.data import load_dataset
    from gankit.features import classifier, inception
    from gankit.sample import generate, load_generator

    log = log or sys.stderr
    if n < 1:
        raise GankitError(f"-n must be a positive integer, got {n}")
    if k < 1:
        raise GankitError(f"-k must be a positive integer, got {k}")
    if features not in evaluate.FEATURES:
        raise GankitError(f"--features must be one of {', '.join(evaluate.FEATURES)}; got {features!r}")
    G, info = load_generator(path_or_run, device)
    config = info["config"]
    if len(info["shape"]) != 3:
        raise GankitError("nearest compares images; this generator makes toy points (for those, "
                          "`gankit eval` gives the mode metrics)")
    fake = generate(G, n, seed, config.latent_dim)  # float (n, C, H, W) in [-1, 1]
    train = load_dataset(config.data, data_dir=config.data_dir, image_size=config.image_size,
                         channels=config.channels)
    if k > len(train):
        raise GankitError(f"-k {k}: the training set has only {len(train)} images")

    # pixel space: as trained on, in [-1, 1]; the samples quantised as a saved picture is
    pixels_fake = train.to_float(quantise(fake)).flatten(1)
    pixels_train = train.to_float(train.images).flatten(1)
    d_pix, i_pix = knn(pixels_fake, pixels_train, k)

    # feature space: the evaluation's extractor and its cached features of the train split
    protocol = evaluate.EvalProtocol(features=features, split="train", data_dir=config.data_dir,
                                     inception_weights=inception_weights)
    if features == "classifier":
        model, cinfo = classifier.load_or_train(config.data, config.data_dir, log=log)
        extract = classifier.extract
        extractor = {"name": "classifier", "weights_sha256": sha256(cinfo["file"])}
        prepare = classifier.to_input
    else:
        model, iinfo = inception.load(protocol.inception_weights)
        extract = inception.extract
        extractor = {"name": "inception-v3-compat (pt_inception-2015-12-05)", "weights_sha256": iinfo["sha256"]}

        def prepare(x):
            return x
    real_features, _ = evaluate._reference_features(config, "train", config.data_dir, model, extract, extractor)
    if len(real_features) != len(train):
        raise GankitError(f"the train split's features ({len(real_features)}) and images ({len(train)}) "
                          "differ in number; clear the cache folder's stats/ and retry")
    fake_features = extract(model, prepare(quantise(fake))).double()
    d_feat, i_feat = knn(fake_features, real_features.double(), k)
    scale = _held_out_scale(config, train, real_features, model, extract, prepare, evaluate)
    return {"fake": fake, "train": train, "features": features, "k": k,
            "feature": (d_feat, i_feat), "pixel": (d_pix, i_pix), "held_out": scale,
            "images_seen": int(info["progress"]["images_seen"])}


def _held_out_scale(config, train, real_features, model, extract, prepare, evaluate) -> dict | None:
    """Median distance of up to 200 test-split images to their nearest train image, both spaces;
    None for data without a test split."""
    if not evaluate._has_splits(config):
        return None
    from gankit.data import load_dataset

    test = load_dataset(config.data, split="test", data_dir=config.data_dir,
                        image_size=config.image_size, channels=config.channels)
    x = test.images[:200]
    d_pix, _ = knn(test.to_float(x).flatten(1), train.to_float(train.images).flatten(1), 1)
    images = x if x.dtype == torch.uint8 else quantise(x)
    d_feat, _ = knn(extract(model, prepare(images)).double(), real_features.double(), 1)
    return {"n": len(x), "feature": float(d_feat[:, 0].median()), "pixel": float(d_pix[:, 0].median())}


def _tile(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) float in [-1, 1] or uint8 -> (H, W, 3) uint8."""
    x = x if x.dtype == torch.uint8 else quantise(x[None])[0]
    x = x.permute(1, 2, 0).numpy()
    return np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x


def picture(found: dict) -> np.ndarray:
    """Rows: sample | k nearest in feature space | k nearest in pixel space, under a header."""
    fake, train, k = found["fake"], found["train"], found["k"]
    h, w = fake.shape[-2:]
    cell_w, cell_h = w + PAD, h + PAD
    groups = [[_tile(f)] for f in fake]
    for row, f in enumerate(groups):
        f.extend(_tile(train.images[i]) for i in found["feature"][1][row])
        f.extend(_tile(train.images[i]) for i in found["pixel"][1][row])
    font = ImageFont.load_default()
    labels = ["sample", f"{found['features']} NN", "pixel NN"]
    widths = [cell_w, k * cell_w, k * cell_w]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [max(wd, int(measure.textlength(t, font=font)) + 4) for wd, t in zip(widths, labels, strict=True)]
    starts = [PAD, PAD + widths[0] + GAP, PAD + widths[0] + GAP + widths[1] + GAP]
    total_w = starts[2] + widths[2] + PAD
    total_h = HEADER + len(fake) * cell_h + PAD
    canvas = np.full((total_h, total_w, 3), 255, dtype=np.uint8)
    for row, tiles in enumerate(groups):
        top = HEADER + PAD + row * cell_h
        positions = [starts[0]] + [starts[1] + j * cell_w for j in range(k)] + \
            [starts[2] + j * cell_w for j in range(k)]
        for tile, left in zip(tiles, positions, strict=True):
            canvas[top:top + h, left:left + w] = tile
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for text, left in zip(labels, starts, strict=True):
        draw.text((left, 2), text, fill="black", font=font)
    return np.asarray(image)


def nearest(path_or_run: str | os.PathLike, n: int, out: str | os.PathLike, k: int = 3, seed: int = 0,
            features: str = "classifier", inception_weights: str | None = None,
            device: str = "auto", log=None) -> dict[str, Any]:
    """Write the picture to out (.png) and return what was found."""
    from gankit.imagegrid import save_png

    out = Path(out)
    if out.suffix.lower() != ".png" or out.is_dir():
        raise GankitError(f"--out {out}: give a file name ending in .png")
    found = find(path_or_run, n, k, seed, features, inception_weights, device, log)
    try:
        save_png(picture(found), out)
    except OSError as exc:
        raise GankitError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    return found


def summary(found: dict) -> str:
    """Median nearest distances of the samples (and of held-out real images, for scale)."""
    lines = []
    for space, name in (("feature", f"{found['features']} features"), ("pixel", "pixels in [-1, 1]")):
        d = found[space][0][:, 0]
        line = f"{name:>22}: median distance to the nearest training image {float(d.median()):.4g}"
        if found["held_out"]:
            line += f" (held-out test images: {found['held_out'][space]:.4g})"
        lines.append(line)
    return "\n".join(lines)
