"""What `gankit eval` calls: sample a trained generator and score it under a named protocol.

Image runs: N generated samples against the dataset's reference split (default: all of the test
split), compared in the features of an extractor: FID, KID, precision/recall (k = 3),
density/coverage (k = 5). Toy runs: the mode metrics (2-D) or the JSD to the data density (1-D).
Every number is saved with the protocol that produced it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

import torch
import torch.nn.functional as F

import gankit
from gankit import checkpoint
from gankit.config import TrainConfig
from gankit.data import load_dataset
from gankit.data.mnist import cache_dir, load_split
from gankit.errors import GankitError
from gankit.features import classifier, inception
from gankit.files import sha256
from gankit.imagegrid import quantise as _quantise
from gankit.metrics import density_coverage, fid, jsd_1d, kid, mode_metrics, precision_recall
from gankit.sample import generate, load_generator

FEATURES = ("classifier", "inception")
IMAGE_SAMPLES = 10_000
TOY_SAMPLES = 2500  # the VEEGAN / PacGAN protocol


def evaluate(path_or_run: str | os.PathLike, n_samples: int | None = None, features: str = "classifier",
             split: str = "test", seed: int = 0, device: str = "auto", data_dir: str | None = None,
             kid_subsets: int = 100, kid_subset_size: int = 1000, inception_weights: str | None = None,
             log=sys.stderr) -> dict[str, Any]:
    """Score a checkpoint (or a run folder's last one); returns the JSON-ready record.
    n_samples defaults to 10,000 for images and 2,500 for toy distributions."""
    G, info = load_generator(path_or_run, device)
    metrics, protocol = score(G, info["config"], n_samples, features, split, seed, data_dir,
                              kid_subsets, kid_subset_size, inception_weights, log)
    return {
        "checkpoint": str(info["path"]),
        "images_seen": int(checkpoint.load(info["path"])["progress"]["images_seen"]),
        "dataset": info["config"].data,
        "gankit_version": gankit.__version__,
        "torch_version": torch.__version__,
        "metrics": metrics,
        "protocol": protocol,
    }


def score(G: torch.nn.Module, config: TrainConfig, n_samples: int | None = None,
          features: str = "classifier", split: str = "test", seed: int = 0,
          data_dir: str | None = None, kid_subsets: int = 100, kid_subset_size: int = 1000,
          inception_weights: str | None = None, log=sys.stderr) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, protocol) for generator G (in eval mode) of a run with this config."""
    if n_samples is not None and n_samples < 2:
        raise GankitError(f"--n-samples must be at least 2, got {n_samples}")
    toy = config.data.startswith("toy:")
    samples = generate(G, n_samples or (TOY_SAMPLES if toy else IMAGE_SAMPLES), seed, config.latent_dim)
    return score_samples(samples, config, seed=seed, features=features, split=split, data_dir=data_dir,
                         kid_subsets=kid_subsets, kid_subset_size=kid_subset_size,
                         inception_weights=inception_weights, log=log)


def score_samples(samples: torch.Tensor, config: TrainConfig, seed: int = 0,
                  **image_options) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, protocol) for a generator's output (float, as `generate` gives it): the toy
    metrics, or score_images (which takes image_options: features, split, ...) on images."""
    if config.data.startswith("toy:"):
        toy = load_dataset(config.data).distribution
        metrics = mode_metrics(samples, toy) if toy.dim == 2 else {"jsd": jsd_1d(samples, toy)}
        return metrics, {
            "metric": "modes/high_quality/reverse_kl (VEEGAN, PacGAN)" if toy.dim == 2 else "jsd_1d (nats)",
            "n_samples": len(samples), "seed": seed}
    return score_images(_quantise(samples), config, seed=seed, **image_options)  # (N, C, H, W) uint8


def score_images(fake: torch.Tensor, config: TrainConfig, features: str = "classifier",
                 split: str = "test", seed: int = 0, data_dir: str | None = None,
                 kid_subsets: int = 100, kid_subset_size: int = 1000,
                 inception_weights: str | None = None, log=sys.stderr) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, protocol) for uint8 images (N, C, H, W) against the run's reference set."""
    if features not in FEATURES:
        raise GankitError(f"--features must be one of {', '.join(FEATURES)}; got {features!r}")
    data_dir = data_dir or config.data_dir
    n_samples = len(fake)
    if features == "classifier":
        model, info = classifier.load_or_train(config.data, data_dir, log=log)
        fake = _classifier_input(fake)
        extract = classifier.extract
        extractor = {"name": "classifier", "recipe": info["recipe"], "key": info["key"],
                     "weights_sha256": sha256(info["file"]), "test_accuracy": info["test_accuracy"]}
        comparable = "only other gankit classifier-feature results on the same dataset (not Inception FIDs)"
        preprocessing = ("samples quantised to uint8, averaged to 1 channel, resized to 28x28 "
                         "(bilinear, antialiased) when needed")
    else:
        model, info = inception.load(inception_weights)
        extract = inception.extract
        extractor = {"name": "inception-v3-compat (pt_inception-2015-12-05)", "weights_sha256": info["sha256"]}
        comparable = "Inception FIDs computed with torch-fidelity's or pytorch-fid's protocol"
        preprocessing = ("samples quantised to uint8; grey repeated to 3 channels; TF1-compatible "
                         "bilinear resize to 299x299; (x - 128) / 128 (as torch-fidelity)")
    real_features, n_real = _reference_features(config, split, data_dir, model, extract, extractor)
    fake_features = extract(model, fake)
    real_np, fake_np = real_features.numpy(), fake_features.numpy()
    kid_mean, kid_std = kid(real_np, fake_np, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    precision, recall = precision_recall(real_np, fake_np, k=3)
    density, coverage = density_coverage(real_np, fake_np, k=5)
    metrics = {"fid": fid(real_np, fake_np), "kid_mean": kid_mean, "kid_std": kid_std,
               "precision": precision, "recall": recall, "density": density, "coverage": coverage}
    protocol = {
        "features": features,
        "extractor": extractor,
        "comparable_with": comparable,
        "n_samples": n_samples,
        "reference": {"dataset": config.data, "split": split if _has_splits(config) else "all images",
                      "n": n_real},
        "seed": seed,
        "kid": {"subsets": kid_subsets, "subset_size": kid_subset_size, "kernel": "(x.y/d + 1)^3"},
        "precision_recall_k": 3,
        "density_coverage_k": 5,
        "preprocessing": preprocessing,
    }
    return metrics, protocol


def _classifier_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, 1, 28, 28): one channel, 28x28, for the classifier."""
    if images.shape[1:] == (1, 28, 28):
        return images
    x = images.float()
    if x.shape[1] == 3:
        x = x.mean(1, keepdim=True)
    if x.shape[-2:] != (28, 28):
        x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def _has_splits(config: TrainConfig) -> bool:
    return config.data in ("fashion-mnist", "mnist")


def _reference_images(config: TrainConfig, split: str, data_dir: str | None) -> torch.Tensor:
    """uint8 (N, C, H, W): the split of (Fashion-)MNIST as stored, or a folder/array dataset as the
    run trained on it (its own size and channels)."""
    if _has_splits(config):
        images, _, _ = load_split(config.data, split, data_dir)
        return torch.from_numpy(images).unsqueeze(1)
    data = load_dataset(config.data, data_dir=data_dir, image_size=config.image_size, channels=config.channels)
    return data.images if data.images.dtype == torch.uint8 else _quantise(data.images)


def _reference_features(config: TrainConfig, split: str, data_dir: str | None, model, extract,
                        extractor: dict) -> tuple[torch.Tensor, int]:
    """Features of the whole reference set, cached under a key of data, split and extractor.
    A (Fashion-)MNIST split is keyed by its bytes (two folders may hold different files under
    one name; it is the stored 28x28 images whatever size the run trained at); folder/array
    data by its path and the size and channels the run trained at."""
    images = None
    if _has_splits(config):
        images = _reference_images(config, split, data_dir)
        identity = [hashlib.sha256(images.numpy().tobytes()).hexdigest()]
    else:
        identity = [config.image_size, config.channels]
    key = hashlib.sha256(json.dumps([config.data, split, *identity,
                                     extractor["weights_sha256"]]).encode()).hexdigest()[:16]
    path = cache_dir("stats") / f"{extractor['name'].split()[0]}-{key}.pt"
    if path.is_file():
        features = checkpoint.load_plain(path)["features"]
        return features, len(features)
    if images is None:
        images = _reference_images(config, split, data_dir)
    if extractor["name"] == "classifier":
        images = _classifier_input(images)
    features = extract(model, images)
    checkpoint.save_plain(path, {"features": features})
    return features, len(features)
