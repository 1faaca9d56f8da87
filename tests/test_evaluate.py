"""`gankit eval` end to end on tiny synthetic data, and the classifier feature extractor."""

import json

import numpy as np
import pytest
import torch

from configs import TINY_DCGAN_ARGS, TOY_ARGS
from fakes import fake_mnist, idx_bytes, write
from gankit.cli import main
from gankit.data import mnist
from gankit.evaluate import EvalProtocol, _quantise, evaluate
from gankit.features import classifier

FAST = {**classifier.RECIPE, "epochs": 1, "batch_size": 32}


@pytest.fixture
def offline_cache(monkeypatch):
    """No system copies and a one-epoch classifier; the user cache is conftest's tmp_path/cache."""
    monkeypatch.setattr(mnist, "SYSTEM_DIRS", {"fashion-mnist": [], "mnist": []})
    monkeypatch.setattr(classifier, "RECIPE", FAST)


def halves(directory, n_train=512, n_test=256):
    """A learnable two-class IDX dataset: class 0 bright on top, class 1 bright at the bottom."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 2, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 14 * label:14 * label + 14] += 180
        write(directory / f"{split}-images-idx3-ubyte", idx_bytes(images))
        write(directory / f"{split}-labels-idx1-ubyte", idx_bytes(labels))
    return directory


def test_classifier_learns_and_is_cached(tmp_path, offline_cache):
    data = halves(tmp_path / "d")
    model, info = classifier.load_or_train("mnist", str(data))
    assert info["test_accuracy"] > 0.95
    assert info["file"].startswith(str(tmp_path / "cache"))
    again, info2 = classifier.load_or_train("mnist", str(data))
    assert info2 == info
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])
    features = classifier.extract(model, torch.zeros(3, 1, 28, 28, dtype=torch.uint8))
    assert features.shape == (3, classifier.FEATURE_DIM) and features.dtype == torch.float64


def test_classifier_key_changes_with_the_data(tmp_path, offline_cache):
    images = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    labels = torch.zeros(4, dtype=torch.long)
    other = images.clone()
    other[0, 0, 0, 0] = 1
    assert classifier.cache_key("mnist", images, labels) != classifier.cache_key("mnist", other, labels)


def test_reference_features_of_a_split_are_shared_by_every_training_size(tmp_path, offline_cache):
    from gankit.config import TrainConfig
    from gankit.evaluate import score_images

    data = halves(tmp_path / "d", n_train=64, n_test=32)
    fake = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    stats = tmp_path / "cache" / "gankit" / "stats"
    small_kid = EvalProtocol(kid_subsets=2, kid_subset_size=4)
    results = []
    for size in (None, 28, 64):  # the split is the same stored 28x28 images for all three runs
        config = TrainConfig(data="mnist", data_dir=str(data), image_size=size)
        results.append(score_images(fake, config, small_kid)[0]["fid"])
        assert len(list(stats.glob("*.pt"))) == 1
    assert results[0] == results[1] == results[2]
    # another split is another reference set
    score_images(fake, TrainConfig(data="mnist", data_dir=str(data)), EvalProtocol(split="train", kid_subsets=2, kid_subset_size=4))
    assert len(list(stats.glob("*.pt"))) == 2
    # so is another test split under the same name, with the same training split (and so the
    # same cached classifier): the cache is keyed by the split's bytes, not its name
    other = halves(tmp_path / "d2", n_train=64, n_test=31)
    assert np.array_equal(mnist.load_split("mnist", "train", other)[0], mnist.load_split("mnist", "train", data)[0])
    score_images(fake, TrainConfig(data="mnist", data_dir=str(other)), small_kid)
    assert len(list(stats.glob("*.pt"))) == 3


def test_preprocessing_round_trips_real_images():
    real = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(classifier.to_input(_quantise(real.float() / 127.5 - 1)), real)
    rgb64 = classifier.to_input(_quantise(torch.zeros(2, 3, 64, 64)))
    assert rgb64.shape == (2, 1, 28, 28) and rgb64.dtype == torch.uint8


@pytest.fixture
def image_run(tmp_path, offline_cache):
    data = fake_mnist(tmp_path / "fm", n_train=256, n_test=128)
    run = tmp_path / "run"
    assert main(["train", "--data", "fashion-mnist", "--data-dir", str(data), *TINY_DCGAN_ARGS,
                 "--batch-size", "16", "--max-images", "64", "--device", "cpu", "--out", str(run)]) == 0
    return run


def test_eval_end_to_end(image_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    argv = ["eval", str(image_run), "--n-samples", "64", "--kid-subsets", "5", "--kid-subset-size",
            "32", "--json", str(out)]
    assert main(argv) == 0
    first = json.loads(out.read_text())
    printed = capsys.readouterr()
    assert "fid" in printed.out and "not comparable with Inception" in printed.out
    metrics, protocol = first["metrics"], first["protocol"]
    assert set(metrics) == {"fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage"}
    assert all(np.isfinite(v) for v in metrics.values()) and metrics["fid"] > 0
    assert 0 <= metrics["precision"] <= 1 and 0 <= metrics["coverage"] <= 1
    assert protocol["extractor"]["name"] == "classifier"
    assert protocol["n_samples"] == 64 and protocol["reference"] == {"dataset": "fashion-mnist", "split": "test", "n": 128}
    assert protocol["kid"]["subsets"] == 5 and first["images_seen"] == 64
    assert len(protocol["extractor"]["weights_sha256"]) == 64
    # The second evaluation reuses the cached classifier and reference features: same numbers.
    assert main(argv) == 0
    assert "training the fashion-mnist feature classifier" not in capsys.readouterr().err
    assert json.loads(out.read_text())["metrics"] == metrics
    other = evaluate(image_run, EvalProtocol(n_samples=64, seed=1, kid_subsets=5, kid_subset_size=32))
    assert other["metrics"]["fid"] != metrics["fid"]


def test_eval_of_a_toy_run(tmp_path):
    run = tmp_path / "toy"
    assert main(["train", *TOY_ARGS, "--max-images", "64", "--out", str(run)]) == 0
    record = evaluate(run, EvalProtocol())
    assert record["protocol"]["n_samples"] == 2500
    assert 0 <= record["metrics"]["modes"] <= 8 and 0 <= record["metrics"]["high_quality"] <= 100


def test_eval_loads_the_checkpoint_once(tmp_path, monkeypatch):
    from gankit import checkpoint

    run = tmp_path / "toy"
    assert main(["train", *TOY_ARGS, "--max-images", "32", "--out", str(run)]) == 0
    loads = []
    real_load = checkpoint.load
    monkeypatch.setattr(checkpoint, "load", lambda path: loads.append(path) or real_load(path))
    record = evaluate(run, EvalProtocol(n_samples=100, seed=3))
    assert len(loads) == 1 and record["images_seen"] == 32
    assert record["protocol"] == {"metric": "modes/high_quality/reverse_kl (VEEGAN, PacGAN)",
                                  "n_samples": 100, "seed": 3}


def test_eval_protocol_is_validated_once_and_names_the_flag(capsys):
    from gankit.config import TrainConfig
    from gankit.errors import GankitError

    for fields, flag in (({"features": "vgg"}, "--features"), ({"split": "valid"}, "--split"),
                         ({"n_samples": 1}, "--n-samples"), ({"kid_subsets": 0}, "--kid-subsets"),
                         ({"kid_subset_size": 1}, "--kid-subset-size")):
        with pytest.raises(GankitError, match=flag):
            EvalProtocol(**fields)
    assert main(["eval", "no-such-run", "--n-samples", "1"]) == 1
    assert "--n-samples must be at least 2" in capsys.readouterr().err
    assert EvalProtocol().to_dict() == {
        "features": "classifier", "split": "test", "n_samples": None, "seed": 0, "kid_subsets": 100,
        "kid_subset_size": 1000, "data_dir": None, "inception_weights": None}
    config = TrainConfig(data="mnist", data_dir="/d", seed=7, eval_samples=40)
    assert EvalProtocol.for_training(config) == EvalProtocol(n_samples=40, seed=7, data_dir="/d")


def test_eval_during_training_keeps_the_best_checkpoint(tmp_path, offline_cache):
    from gankit import checkpoint, runs
    from gankit.train import resume

    data = fake_mnist(tmp_path / "fm", n_train=256, n_test=128)
    run = tmp_path / "run"
    assert main(["train", "--data", "fashion-mnist", "--data-dir", str(data), *TINY_DCGAN_ARGS,
                 "--batch-size", "16", "--max-images", "96", "--eval-every", "32", "--eval-samples", "40",
                 "--device", "cpu", "--out", str(run)]) == 0
    evals = [r for r in runs.read_metrics(run) if r.get("event") == "eval"]
    assert [e["images"] for e in evals] == [32, 64, 96]
    # Each evaluation says when it began on the iteration rows' clock and how long it took, so
    # time to a given FID can be read with or without the evaluations' own time.
    rows = {r["images"]: r["time"] for r in runs.read_metrics(run) if "iteration" in r}
    for e in evals:
        assert e["seconds"] > 0
        assert rows[e["images"]] <= e["time"]  # after the iteration it evaluates
        if e["images"] + 16 in rows:  # before the next one was queued
            assert e["time"] + e["seconds"] <= rows[e["images"] + 16]
    assert all(a["time"] + a["seconds"] <= b["time"] for a, b in zip(evals, evals[1:], strict=False))
    best = checkpoint.load(run / "checkpoints" / "best.pt")
    assert best["progress"]["best_fid"] == min(e["fid"] for e in evals)
    best_at = min(evals, key=lambda e: e["fid"])["images"]
    assert best["progress"]["images_seen"] == best_at
    # best_fid survives a resume: a later, worse evaluation does not replace best.pt.
    resume(run, {"max_images": 128})
    last = checkpoint.load(run / "checkpoints" / "last.pt")
    evals = [r for r in runs.read_metrics(run) if r.get("event") == "eval"]
    assert last["progress"]["best_fid"] == min(e["fid"] for e in evals)


def test_eval_with_inception_features_on_an_array_dataset(tmp_path, offline_cache, capsys):
    from fakes import make_npz
    from gankit.features import inception
    from gankit.files import sha256

    data = make_npz(tmp_path / "d.npz", n=12, size=32, channels=3)
    run = tmp_path / "run"
    assert main(["train", "--data", f"npz:{data}", *TINY_DCGAN_ARGS, "--batch-size", "4",
                 "--max-images", "8", "--device", "cpu", "--out", str(run)]) == 0
    weights = tmp_path / "w.pth"
    torch.save(inception.FIDInception().state_dict(), weights)  # random weights: the real ones cannot be downloaded here
    # The classifier only exists for (Fashion-)MNIST: a clear error, not a crash.
    assert main(["eval", str(run), "--n-samples", "8"]) == 1
    assert "use --features inception" in capsys.readouterr().err
    out = tmp_path / "e.json"
    assert main(["eval", str(run), "--features", "inception", "--inception-weights", str(weights),
                 "--n-samples", "8", "--kid-subsets", "2", "--kid-subset-size", "4", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["protocol"]["reference"] == {"dataset": f"npz:{data}", "split": "all images", "n": 12}
    assert record["protocol"]["extractor"]["weights_sha256"] == sha256(weights)
    assert np.isfinite(record["metrics"]["fid"])
