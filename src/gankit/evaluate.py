"""What `gankit eval` calls: sample a trained generator and score it under a named protocol.

Image runs: N generated samples against the dataset's reference split (default: all of the test
split), compared in the features of an extractor: FID, KID, precision/recall (k = 3),
density/coverage (k = 5). Toy runs: the mode metrics (2-D) or the JSD to the data density (1-D).
Every number is saved with the protocol that produced it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import gankit
from gankit import checkpoint, classeval
from gankit.cache import cache_dir
from gankit.config import TrainConfig
from gankit.data import content_key, load_dataset
from gankit.data.mnist import load_split
from gankit.errors import GankitError
from gankit.features import classifier, inception
from gankit.files import sha256
from gankit.imagegrid import quantise as _quantise
from gankit.metrics import (
    density_coverage,
    fid,
    inception_score,
    isc,
    jsd_1d,
    kid,
    mode_metrics,
    precision_recall,
)
from gankit.sample import generate, load_generator, sample_classes

FEATURES = ("classifier", "inception")
SPLITS = ("test", "train")
IMAGE_SAMPLES = 10_000
TOY_SAMPLES = 2500  # the VEEGAN / PacGAN protocol


@dataclass(frozen=True)
class EvalProtocol:
    """How a generator is scored, apart from the run itself; `gankit eval`'s flags.

    Validated once, here: errors name the flag. Image runs use every field; toy runs only the
    sample count and seed.
    """

    features: str = "classifier"  # one of FEATURES
    split: str = "test"  # the reference split of (Fashion-)MNIST; other image data use all images
    n_samples: int | None = None  # generated samples; None: IMAGE_SAMPLES, or TOY_SAMPLES for toy data
    seed: int = 0  # of the noise and the KID subsets
    kid_subsets: int = 100
    kid_subset_size: int = 1000  # capped at the smaller of the two sets
    data_dir: str | None = None  # the reference data's folder; None: the run's --data-dir
    inception_weights: str | None = None  # None: the cache, else a download

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise GankitError(f"--features must be one of {', '.join(FEATURES)}; got {self.features!r}")
        if self.split not in SPLITS:
            raise GankitError(f"--split must be one of {', '.join(SPLITS)}; got {self.split!r}")
        if self.n_samples is not None and self.n_samples < 2:
            raise GankitError(f"--n-samples must be at least 2, got {self.n_samples}")
        if self.kid_subsets < 1:
            raise GankitError(f"--kid-subsets must be at least 1, got {self.kid_subsets}")
        if self.kid_subset_size < 2:
            raise GankitError(f"--kid-subset-size must be at least 2, got {self.kid_subset_size}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def for_training(cls, config: TrainConfig) -> EvalProtocol:
        """The protocol of the evaluations during training (--eval-every): classifier features,
        the test split, --eval-samples samples drawn with the run's seed, the run's data folder."""
        return cls(n_samples=config.eval_samples, seed=config.seed, data_dir=config.data_dir)


def evaluate(path_or_run: str | os.PathLike, protocol: EvalProtocol, device: str = "auto",
             log=sys.stderr, generator: str | None = None) -> dict[str, Any]:
    """Score a checkpoint (or a run folder's last one); returns the JSON-ready record.
    generator: "ema", "raw" or None (the EMA where there is one; sample.load_generator)."""
    G, info = load_generator(path_or_run, device, generator)
    metrics, record = score(G, info["config"], protocol, log)
    return {
        "checkpoint": str(info["path"]),
        "images_seen": int(info["progress"]["images_seen"]),
        "generator": info.get("generator", "raw"),
        "dataset": info["config"].data,
        "gankit_version": gankit.__version__,
        "torch_version": torch.__version__,
        "metrics": metrics,
        "protocol": record,
    }


def score(G: torch.nn.Module, config: TrainConfig, protocol: EvalProtocol,
          log=sys.stderr) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, protocol record) for generator G (in eval mode) of a run with this config."""
    n = protocol.n_samples or (TOY_SAMPLES if config.data.startswith("toy:") else IMAGE_SAMPLES)
    labels = sample_classes(G, n, protocol.seed)  # a conditional G: the classes asked for, as the data's
    samples = generate(G, n, protocol.seed, config.latent_dim, classes=labels)
    return score_samples(samples, config, protocol, log, labels=labels)


def score_samples(samples: torch.Tensor, config: TrainConfig, protocol: EvalProtocol,
                  log=sys.stderr, labels: torch.Tensor | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, protocol record) for a generator's output (float, as `generate` gives it): the toy
    metrics, or score_images on images. The samples are scored as given: protocol.n_samples
    only says how many `score` draws. labels: the class each sample was asked for (a conditional
    run), which adds the class metrics (conditional.py)."""
    if config.data.startswith("toy:"):
        toy = load_dataset(config.data).distribution
        metrics = mode_metrics(samples, toy) if toy.dim == 2 else {"jsd": jsd_1d(samples, toy)}
        if labels is not None:
            metrics["class_accuracy"] = classeval.toy_class_accuracy(samples, labels, toy)
        return metrics, {
            "metric": "modes/high_quality/reverse_kl (VEEGAN, PacGAN)" if toy.dim == 2 else "jsd_1d (nats)",
            "n_samples": len(samples), "seed": protocol.seed,
            **({"class_accuracy": classeval.TOY_ACCURACY} if labels is not None else {})}
    return score_images(_quantise(samples), config, protocol, log, labels)  # (N, C, H, W) uint8


def score_images(fake: torch.Tensor, config: TrainConfig, protocol: EvalProtocol,
                 log=sys.stderr, labels: torch.Tensor | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, protocol record) for uint8 images (N, C, H, W) against the run's reference set;
    with labels (N,), the classes asked for, also class accuracy and per-class FID."""
    p = protocol
    data_dir = p.data_dir or config.data_dir
    if p.features == "classifier":
        model, info = classifier.load_or_train(config.data, data_dir, log=log)
        fake = classifier.to_input(fake)
        extract = classifier.extract
        extractor = {"name": "classifier", "recipe": info["recipe"], "key": info["key"],
                     "weights_sha256": sha256(info["file"]), "test_accuracy": info["test_accuracy"]}
        comparable = "only other gankit classifier-feature results on the same dataset (not Inception FIDs)"
        preprocessing = ("samples quantised to uint8, averaged to 1 channel, resized to 28x28 "
                         "(bilinear, antialiased) when needed")
    else:
        model, info = inception.load(p.inception_weights)
        extract = inception.extract
        extractor = {"name": "inception-v3-compat (pt_inception-2015-12-05)", "weights_sha256": info["sha256"]}
        comparable = "Inception FIDs computed with torch-fidelity's or pytorch-fid's protocol"
        preprocessing = ("samples quantised to uint8; grey repeated to 3 channels; TF1-compatible "
                         "bilinear resize to 299x299; (x - 128) / 128 (as torch-fidelity)")
    real_features, n_real = _reference_features(config, p.split, data_dir, model, extract, extractor)
    logits = None
    if p.features == "inception":
        fake_features, logits = inception.extract_with_logits(model, fake)
    else:
        fake_features = extract(model, fake)
    real_np, fake_np = real_features.numpy(), fake_features.numpy()
    kid_mean, kid_std = kid(real_np, fake_np, subsets=p.kid_subsets, subset_size=p.kid_subset_size, seed=p.seed)
    precision, recall = precision_recall(real_np, fake_np, k=3)
    density, coverage = density_coverage(real_np, fake_np, k=5)
    metrics = {"fid": fid(real_np, fake_np), "kid_mean": kid_mean, "kid_std": kid_std,
               "precision": precision, "recall": recall, "density": density, "coverage": coverage}
    if logits is not None and len(logits) >= isc.SPLITS:
        metrics["is_mean"], metrics["is_std"] = inception_score(logits)
    record = {
        "features": p.features,
        "extractor": extractor,
        "comparable_with": comparable,
        "n_samples": len(fake),
        "reference": {"dataset": config.data, "split": p.split if _has_splits(config) else "all images",
                      "n": n_real},
        "seed": p.seed,
        "kid": {"subsets": p.kid_subsets, "subset_size": p.kid_subset_size, "kernel": "(x.y/d + 1)^3"},
        "precision_recall_k": 3,
        "density_coverage_k": 5,
        "preprocessing": preprocessing,
    }
    if labels is not None:
        extra, about = classeval.class_metrics(fake, labels, real_features, fake_features, config, p.split,
                                                 data_dir, log)
        metrics.update(extra)
        record["conditional"] = about
    if "is_mean" in metrics:
        record["inception_score"] = {
            "logits": "1008 classes, fc without its bias (torch-fidelity's logits_unbiased)",
            "splits": isc.SPLITS, "shuffle": f"numpy RandomState({isc.SHUFFLE_SEED})",
            "comparable_with": "torch-fidelity's isc with its defaults"}
    return metrics, record


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
    one name; it is the stored 28x28 images whatever size the run trained at); folder, prepared
    and array data by their content key (data.content_key: a folder's file list with sizes and
    times, a prepared dataset's array hash, an array file's hash), not their path, and the size
    and channels the run trained at, so a changed folder never gets stale statistics."""
    images = None
    if _has_splits(config):
        images = _reference_images(config, split, data_dir)
        identity = [hashlib.sha256(images.numpy().tobytes()).hexdigest()]
    else:
        identity = [content_key(config.data, config.image_size, config.channels), config.image_size,
                    config.channels]
    data = config.data if identity[0] is None else None  # content-keyed data: the path plays no part
    key = hashlib.sha256(json.dumps([data, split, *identity,
                                     extractor["weights_sha256"]]).encode()).hexdigest()[:16]
    path = cache_dir("stats") / f"{extractor['name'].split()[0]}-{key}.pt"
    if path.is_file():
        features = checkpoint.load_plain(path)["features"]
        return features, len(features)
    if images is None:
        images = _reference_images(config, split, data_dir)
    if extractor["name"] == "classifier":
        images = classifier.to_input(images)
    features = extract(model, images)
    checkpoint.save_plain(path, {"features": features})
    return features, len(features)


# --- samples from anywhere: `gankit eval --samples PATH --data NAME` ----------------------------

SAMPLE_DATASETS = ("fashion-mnist", "mnist")
MIN_SAMPLES = 6  # the k-NN metrics need more than k = 5 samples


def load_samples(path: str | os.PathLike) -> tuple[torch.Tensor, dict[str, Any]]:
    """uint8 (N, C, H, W) images from a folder (.png/.jpg/.jpeg, recursively, sorted; all one
    size) or an .npz/.npy array (N, H, W[, C]), and a record of what was read and how converted.

    uint8 pixels are used as given; float arrays in [0, 1] or [-1, 1] are mapped to [-1, 1] and
    quantised as gankit's own samples are (round((x + 1) * 127.5)); an alpha channel is dropped;
    a folder of grey images is read as 1 channel, any colour image makes it 3 (PIL's RGB)."""
    from gankit.data.images import load_folder, load_npz
    from gankit.errors import DataError

    path = Path(path)
    try:
        if path.is_dir():
            data = load_folder(path)
        elif path.is_file():
            data = load_npz(path)
        else:
            raise GankitError(f"--samples {path}: no such file or folder; give a folder of images "
                              "or an .npz/.npy array (N, H, W[, C])")
    except DataError as exc:
        raise GankitError(f"--samples: {exc}") from None
    images = data.images
    read_as = "uint8 as given" if images.dtype == torch.uint8 else \
        "float mapped to [-1, 1], quantised to uint8 by round((x + 1) * 127.5)"
    if images.dtype != torch.uint8:
        images = _quantise(images)
    return images, {"path": str(path.resolve()), "n": len(images), "shape": list(images.shape[1:]),
                    "read_as": read_as}


def check_fits(images: torch.Tensor, features: str) -> str:
    """GankitError unless uint8 (N, C, H, W) images fit the extractor; else how they are converted."""
    c, h, w = images.shape[1:]
    if c not in (1, 3):
        raise GankitError(f"--samples: images with {c} channels; the extractors take 1 (grey) or 3 (RGB)")
    if len(images) < MIN_SAMPLES:
        raise GankitError(f"--samples: {len(images)} images; the metrics need at least {MIN_SAMPLES} "
                          "(FID wants thousands: 10,000 is the usual count)")
    if features == "classifier":
        if h != w or h < 28:
            raise GankitError(
                f"--samples: {h}x{w} images do not fit the classifier features, which take square "
                "images of at least 28x28 (they are averaged to one channel and resized down to "
                "28x28); crop or pad them square, or use --features inception (any size)")
        return ("RGB averaged to 1 channel; " if c == 3 else "") + (
            "kept at 28x28" if h == 28 else f"resized {h}x{w} -> 28x28 (bilinear, antialiased)")
    return ("grey repeated to 3 channels; " if c == 1 else "") + \
        f"resized {h}x{w} -> 299x299 (TF1-compatible bilinear, as torch-fidelity)"


def evaluate_samples(samples: str | os.PathLike, data: str, protocol: EvalProtocol,
                     log=None) -> dict[str, Any]:
    """Score a folder or array of images from any program against a named dataset's split, under
    the same protocol as gankit's own runs; returns the JSON-ready record. log: sys.stderr if None."""
    log = log or sys.stderr
    if data not in SAMPLE_DATASETS:
        raise GankitError(f"--data must name the reference dataset, one of {', '.join(SAMPLE_DATASETS)}; "
                          f"got {data!r}")
    if protocol.n_samples is not None:
        raise GankitError("--n-samples does not apply to --samples: every image given is scored")
    images, described = load_samples(samples)
    described["conversion"] = check_fits(images, protocol.features)
    print(f"gankit: {described['n']} samples {'x'.join(map(str, described['shape']))} (C x H x W) from "
          f"{described['path']}: {described['read_as']}; {described['conversion']}", file=log)
    config = TrainConfig(data=data, data_dir=protocol.data_dir)
    metrics, record = score_images(images, config, protocol, log)
    record["samples"] = described
    return {"samples": described["path"], "dataset": data, "gankit_version": gankit.__version__,
            "torch_version": torch.__version__, "metrics": metrics, "protocol": record}
