"""`gankit eval --samples PATH --data NAME`: images from any program scored under the same
protocol; the conversions and the errors; the Inception Score against torch-fidelity's."""

import importlib
import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from fakes import fake_mnist
from gankit.cli import main
from gankit.config import TrainConfig
from gankit.data import mnist
from gankit.evaluate import EvalProtocol, check_fits, load_samples, score_images
from gankit.features import classifier, inception
from gankit.metrics import inception_score
from test_inception import random_weights, torch_fidelity_extractor  # noqa: F401 (a fixture)

FAST = {**classifier.RECIPE, "epochs": 1, "batch_size": 32}
SMALL_KID = ["--kid-subsets", "2", "--kid-subset-size", "4"]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Fake Fashion-MNIST IDX files, no system copies, a one-epoch classifier."""
    monkeypatch.setattr(mnist, "SYSTEM_DIRS", {"fashion-mnist": [], "mnist": []})
    monkeypatch.setattr(classifier, "RECIPE", FAST)
    return fake_mnist(tmp_path / "fm", n_train=64, n_test=32)


def torch_fidelity_isc():
    """torch-fidelity's isc_features_to_metric. Its module imports torch_fidelity.utils, which
    imports torchvision (not importable beside the CPU torch): a stub stands in for utils, whose
    functions the compared one does not use."""
    torch_fidelity_extractor()  # the package without its __init__
    if "torch_fidelity.metric_isc" not in sys.modules:
        stub = types.ModuleType("torch_fidelity.utils")
        for name in ("extract_featuresdict_from_input_id_cached", "create_feature_extractor",
                     "resolve_feature_extractor", "resolve_feature_layer_for_metric"):
            setattr(stub, name, None)
        saved = sys.modules.get("torch_fidelity.utils")
        sys.modules["torch_fidelity.utils"] = stub
        try:
            importlib.import_module("torch_fidelity.metric_isc")
        finally:
            if saved is None:
                del sys.modules["torch_fidelity.utils"]
            else:
                sys.modules["torch_fidelity.utils"] = saved
    from torch_fidelity.defaults import DEFAULTS
    from torch_fidelity.metric_isc import isc_features_to_metric

    return isc_features_to_metric, DEFAULTS


@pytest.mark.parametrize("n, scale", [(100, 1.0), (1000, 3.0), (257, 0.1)])
def test_inception_score_matches_torch_fidelity_on_the_same_logits(n, scale):
    reference, defaults = torch_fidelity_isc()
    assert (defaults["isc_splits"], defaults["samples_shuffle"], defaults["rng_seed"]) == (10, True, 2020)
    logits = torch.randn(n, 1008, generator=torch.Generator().manual_seed(n)) * scale
    theirs = reference(logits, splits=10, shuffle=True, rng_seed=2020)
    mean, std = inception_score(logits)
    assert mean == pytest.approx(theirs["inception_score_mean"], rel=1e-12)
    assert std == pytest.approx(theirs["inception_score_std"], rel=1e-9, abs=1e-12)
    theirs = reference(logits, splits=5, shuffle=False)
    assert inception_score(logits, splits=5, seed=None)[0] == pytest.approx(theirs["inception_score_mean"], rel=1e-12)


def test_inception_score_bounds():
    confident = torch.full((1000, 10), -50.0)
    confident[torch.arange(1000), torch.arange(1000) % 10] = 50.0  # sure of one class, all 10 used
    assert inception_score(confident, seed=None)[0] == pytest.approx(10.0, rel=1e-6)  # unshuffled: splits balanced
    assert inception_score(torch.zeros(100, 10))[0] == pytest.approx(1.0)


@pytest.mark.slow  # two Inception networks at 299x299 on the CPU: ~30 s
def test_inception_logits_match_torch_fidelity_on_the_same_weights(random_weights):  # noqa: F811
    Reference, _ = torch_fidelity_extractor()
    reference = Reference("inception-v3-compat", ["logits_unbiased"],
                          feature_extractor_weights_path=str(random_weights))
    ours, _ = inception.load(random_weights)
    images = torch.randint(0, 256, (3, 3, 40, 40), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    features, logits = inception.extract_with_logits(ours, images, batch=2)
    with torch.no_grad():
        theirs = reference(images)[0]
    assert logits.shape == (3, 1008) and logits.dtype == torch.float32
    assert torch.allclose(logits, theirs, rtol=1e-4, atol=1e-4)
    assert torch.equal(features, inception.extract(ours, images, batch=2))


def write_folder(folder, images):
    folder.mkdir(parents=True)
    for i, picture in enumerate(images):
        Image.fromarray(picture).save(folder / f"{i:03d}.png")
    return folder


def test_folder_and_npz_are_read_alike(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=grey)
    a, described = load_samples(tmp_path / "a.npz")
    b, _ = load_samples(write_folder(tmp_path / "pngs", grey))
    assert a.shape == (8, 1, 28, 28) and torch.equal(a, b) and torch.equal(a[:, 0], torch.from_numpy(grey))
    assert described["read_as"] == "uint8 as given"
    floats = grey.astype(np.float32) / 127.5 - 1  # gankit's own range
    np.savez(tmp_path / "f.npz", images=floats)
    c, described = load_samples(tmp_path / "f.npz")
    assert torch.equal(c, a) and "quantised" in described["read_as"]


def test_conversions_are_stated_and_misfits_refused():
    def images(c, h, w, n=8):
        return torch.zeros(n, c, h, w, dtype=torch.uint8)

    assert check_fits(images(1, 28, 28), "classifier") == "kept at 28x28"
    assert check_fits(images(3, 64, 64), "classifier") == \
        "RGB averaged to 1 channel; resized 64x64 -> 28x28 (bilinear, antialiased)"
    assert check_fits(images(1, 32, 48), "inception").startswith("grey repeated to 3 channels; resized 32x48")
    for bad, message in ((images(1, 32, 48), "crop or pad them square"),
                         (images(1, 16, 16), "at least 28x28"),
                         (images(2, 28, 28), "2 channels"),
                         (images(1, 28, 28, n=3), "at least 6")):
        with pytest.raises(Exception, match=message):
            check_fits(bad, "classifier")


def test_eval_samples_end_to_end_matches_score_images(offline, tmp_path, capsys):
    rng = np.random.default_rng(1)
    pictures = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", images=pictures)
    out = tmp_path / "e.json"
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--data", "fashion-mnist", "--data-dir",
                 str(offline), *SMALL_KID, "--json", str(out)]) == 0
    err = capsys.readouterr().err
    assert "20 samples 3x32x32" in err and "RGB averaged to 1 channel; resized 32x32 -> 28x28" in err
    record = json.loads(out.read_text())
    assert record["protocol"]["samples"]["conversion"].startswith("RGB averaged")
    assert record["protocol"]["reference"] == {"dataset": "fashion-mnist", "split": "test", "n": 32}
    # the same numbers as gankit's own path on the same uint8 images
    fake = torch.from_numpy(pictures).permute(0, 3, 1, 2).contiguous()
    metrics, _ = score_images(fake, TrainConfig(data="fashion-mnist", data_dir=str(offline)),
                              EvalProtocol(kid_subsets=2, kid_subset_size=4, data_dir=str(offline)))
    assert record["metrics"] == pytest.approx(metrics)


@pytest.mark.slow  # the Inception network on 42 images at 299x299 on the CPU: ~25 s
def test_eval_samples_with_inception_reports_the_inception_score(offline, tmp_path, random_weights):  # noqa: F811
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "s.npz", images=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8))
    out = tmp_path / "e.json"
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--data", "fashion-mnist", "--data-dir",
                 str(offline), "--features", "inception", "--inception-weights", str(random_weights),
                 *SMALL_KID, "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["metrics"]["is_mean"] >= 1.0 and np.isfinite(record["metrics"]["is_std"])
    assert record["protocol"]["inception_score"]["splits"] == 10
    assert record["protocol"]["samples"]["conversion"].startswith("grey repeated to 3 channels")


@pytest.mark.parametrize("argv, message", [
    (["--samples", "nosuch.npz", "--data", "fashion-mnist"], "no such file or folder"),
    (["--samples", "s.npz", "--data", "cifar10"], "--data must name the reference dataset"),
    (["--samples", "s.npz"], "--samples PATH and --data NAME go together"),
    ([], "give a CHECKPOINT_OR_RUN_DIR to score, or --samples"),
    (["--samples", "s.npz", "--data", "mnist", "--n-samples", "5"], "--n-samples does not apply"),
    (["--samples", "wide.npz", "--data", "mnist"], "crop or pad them square"),
    (["--samples", "empty", "--data", "mnist"], "no .png/.jpg/.jpeg images found"),
])
def test_eval_samples_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "s.npz", images=np.zeros((8, 28, 28), dtype=np.uint8))
    np.savez(tmp_path / "wide.npz", images=np.zeros((8, 28, 40), dtype=np.uint8))
    (tmp_path / "empty").mkdir()
    assert main(["eval", *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
