"""The offline feature extractor for (Fashion-)MNIST: a small CNN that gankit trains itself.

It is trained on the labelled training split with a fixed recipe and seed, cached under a key that
hashes the recipe and the training data, and reused. Its penultimate layer (128 units) gives the
features. Its FIDs are comparable with each other (same recipe, same data), never with
Inception FIDs from papers.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gankit import checkpoint
from gankit.cache import cache_dir
from gankit.errors import GankitError

RECIPE = {"arch": "cnn-2conv-128", "epochs": 10, "batch_size": 128, "optimizer": "adam", "lr": 1e-3,
          "lr_decay": "cosine", "seed": 0, "input": "28x28x1 in [-1, 1]"}
FEATURE_DIM = 128


class Classifier(nn.Module):
    """(B, 1, 28, 28) in [-1, 1] -> logits (B, 10); features() gives the (B, 128) penultimate layer."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),   # (B, 32, 14, 14)
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 7, 7)
            nn.Flatten(), nn.Linear(64 * 7 * 7, FEATURE_DIM), nn.ReLU(),                      # (B, 128)
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.body(x)))


def cache_key(dataset: str, train_images: torch.Tensor, train_labels: torch.Tensor) -> str:
    digest = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode())
    digest.update(dataset.encode())
    digest.update(train_images.numpy().tobytes())
    digest.update(train_labels.numpy().tobytes())
    return digest.hexdigest()[:16]


def load_or_train(dataset: str, data_dir: str | None = None, cache: str | os.PathLike | None = None,
                  log=sys.stderr) -> tuple[Classifier, dict]:
    """The cached classifier for this dataset and recipe, trained first if needed.

    Returns the model (eval mode, CPU) and its record: key, test accuracy, recipe, file."""
    if dataset not in ("fashion-mnist", "mnist"):
        raise GankitError(f"--features classifier exists for fashion-mnist and mnist, not {dataset}; "
                          "use --features inception")
    train_images, train_labels = _labelled(dataset, "train", data_dir)
    key = cache_key(dataset, train_images, train_labels)
    folder = Path(cache) if cache is not None else cache_dir("classifiers")
    path = folder / f"{dataset}-{key}.pt"
    model = Classifier()
    if path.is_file():
        record = checkpoint.load_plain(path)  # weights only: a cache file cannot run code
        model.load_state_dict(record["weights"])
        model.eval()
        return model, {"key": key, "test_accuracy": record["test_accuracy"], "recipe": RECIPE, "file": str(path)}
    print(f"gankit: training the {dataset} feature classifier (once; cached as {path})", file=log)
    test_images, test_labels = _labelled(dataset, "test", data_dir)
    with torch.random.fork_rng(devices=[]):  # a run that trains it mid-way keeps its own RNG stream
        torch.manual_seed(RECIPE["seed"])  # the initialisation is part of the recipe
        model = Classifier()
        train_classifier(model, train_images, train_labels, recipe=RECIPE, log=log)
    accuracy = accuracy_of(model, test_images, test_labels)
    print(f"gankit: feature classifier test accuracy {100 * accuracy:.2f}%", file=log)
    checkpoint.save_plain(path, {"weights": model.state_dict(), "test_accuracy": accuracy,
                                 "recipe": json.dumps(RECIPE), "key": key})
    return model, {"key": key, "test_accuracy": accuracy, "recipe": RECIPE, "file": str(path)}


def _labelled(dataset: str, split: str, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    from gankit.data import mnist

    images, labels, _ = mnist.load_split(dataset, split, data_dir)
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long()


def train_classifier(model: Classifier, images: torch.Tensor, labels: torch.Tensor,
                     recipe: dict = RECIPE, log=sys.stderr) -> None:
    """The fixed recipe: Adam, cosine decay, seeded shuffling; images (N, 1, 28, 28) uint8."""
    g = torch.Generator().manual_seed(recipe["seed"])
    torch.manual_seed(recipe["seed"])
    steps_per_epoch = (len(images) + recipe["batch_size"] - 1) // recipe["batch_size"]
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe["epochs"] * steps_per_epoch)
    model.train()
    start = time.perf_counter()
    for epoch in range(recipe["epochs"]):
        order = torch.randperm(len(images), generator=g)
        total = 0.0
        for i in range(steps_per_epoch):
            index = order[i * recipe["batch_size"]:(i + 1) * recipe["batch_size"]]
            x = images[index].float() / 127.5 - 1
            loss = F.cross_entropy(model(x), labels[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            total += loss.item()
        print(f"  epoch {epoch + 1}/{recipe['epochs']}: loss {total / steps_per_epoch:.4f} "
              f"({time.perf_counter() - start:.0f} s)", file=log)
    model.eval()


@torch.no_grad()
def accuracy_of(model: Classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(images), 1000):
        x = images[start:start + 1000].float() / 127.5 - 1
        correct += (model(x).argmax(1) == labels[start:start + 1000]).sum().item()
    return correct / len(images)


@torch.no_grad()
def extract(model: Classifier, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """(N, 128) float64 features of (N, 1, 28, 28) images in [-1, 1] (float) or uint8."""
    model.eval()
    out = []
    for start in range(0, len(images), batch):
        x = images[start:start + batch]
        x = x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x.float()
        out.append(model.features(x).double())
    return torch.cat(out)


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, 1, 28, 28): one channel, 28x28, for the classifier."""
    if images.shape[1:] == (1, 28, 28):
        return images
    x = images.float()
    if x.shape[1] == 3:
        x = x.mean(1, keepdim=True)
    if x.shape[-2:] != (28, 28):
        x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)
