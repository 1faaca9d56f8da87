"""Does a conditional generator make the class it is asked for? The class metrics of `gankit eval`
(and of --eval-every) on a conditional run.

- class accuracy: the fraction of samples that the feature classifier assigns to the class they
  were asked for, beside the classifier's own accuracy on the real reference images of those
  classes (class_accuracy_real): that is the ceiling, since a G that made real images would score
  it, not 100%;
- per-class FID: each class's samples against that class's reference images, in the protocol's
  features, and their mean (fid_per_class_mean). About 1,000 images a class: such FIDs are
  biased upwards against the overall FID of 10,000, so compare them with each other, not with it.

Toy data: a sample's class is its nearest mixture component.
"""

from __future__ import annotations

import statistics

import torch

from gankit.config import TrainConfig
from gankit.data import IMAGE_NAMES
from gankit.data.mnist import load_split
from gankit.data.toy import ToyDistribution
from gankit.features import classifier
from gankit.metrics import fid

TOY_ACCURACY = "fraction of samples whose nearest mixture component is the class asked for"


def toy_class_accuracy(samples: torch.Tensor, labels: torch.Tensor, toy: ToyDistribution) -> float:
    """Samples (n, dim) asked for classes labels (n,): the fraction nearest their class's mean."""
    distances = torch.cdist(samples.double().reshape(len(samples), -1), toy.means)  # (n, K)
    return float((distances.argmin(1) == labels.cpu()).double().mean())


def class_metrics(fake: torch.Tensor, labels: torch.Tensor, real_features: torch.Tensor,
                  fake_features: torch.Tensor, config: TrainConfig, split: str, data_dir: str | None,
                  log) -> tuple[dict[str, float], dict]:
    """(metrics, record) for uint8 samples fake (N, C, H, W) asked for classes labels (N,), whose
    features (N, F) and the reference split's (M, F) (in stored order) the caller computed."""
    if config.data not in IMAGE_NAMES:
        return {}, {"note": f"class accuracy and per-class FID need reference labels and the feature classifier, "
                            f"which exist for {', '.join(IMAGE_NAMES)}, not {config.data}"}
    model, info = classifier.load_or_train(config.data, data_dir, log=log)
    images, reference_labels, _ = load_split(config.data, split, data_dir)
    reference_labels = torch.from_numpy(reference_labels).long()
    asked = labels.long().cpu()
    present = asked.unique()
    keep = torch.isin(reference_labels, present)  # real images of the classes asked for
    real = torch.from_numpy(images).unsqueeze(1)[keep]
    metrics = {
        "class_accuracy": classifier.accuracy_of(model, classifier.to_input(fake), asked),
        "class_accuracy_real": classifier.accuracy_of(model, real, reference_labels[keep]),
    }
    per_class = {}
    for c in present.tolist():
        mine, theirs = fake_features[asked == c], real_features[reference_labels == c]
        if len(mine) >= 2 and len(theirs) >= 2:  # a covariance needs two
            per_class[c] = fid(theirs.numpy(), mine.numpy())
    if per_class:
        metrics["fid_per_class_mean"] = statistics.fmean(per_class.values())
        metrics.update({f"fid_class_{c}": v for c, v in per_class.items()})
    record = {"classifier_weights": info["file"], "reference": f"{config.data} {split} split, the classes asked for",
              "samples_per_class": {int(c): int((asked == c).sum()) for c in present},
              "fid_per_class": "each class's samples against that class's reference images, in the protocol's features"}
    return metrics, record

