"""`gankit nearest`: the k-NN search against brute force, the picture, the two spaces, errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from configs import TINY_DCGAN_ARGS, TOY_ARGS
from fakes import fake_mnist
from gankit import nearest as nn_module
from gankit.cli import main
from gankit.data import mnist
from gankit.features import classifier
from gankit.metrics.prdc import BLOCK, nearest


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "SYSTEM_DIRS", {"fashion-mnist": [], "mnist": []})
    return fake_mnist(tmp_path / "fm", n_train=64, n_test=16)


@pytest.fixture
def run(offline, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", "fashion-mnist", "--data-dir", str(offline), *TINY_DCGAN_ARGS,
                 "--batch-size", "8", "--max-images", "16", "--device", "cpu", "--out", str(run)]) == 0
    return run


def test_knn_matches_brute_force_across_blocks():
    g = torch.Generator().manual_seed(0)
    points = torch.randn(BLOCK * 2 + 37, 6, generator=g, dtype=torch.float64)
    queries = torch.randn(9, 6, generator=g, dtype=torch.float64)
    d, i = nearest(queries, points, 4)
    full = torch.cdist(queries, points)
    expected = full.argsort(dim=1)[:, :4]
    assert torch.equal(i, expected)
    assert torch.allclose(d, full.gather(1, expected))
    with pytest.raises(ValueError):
        nearest(queries, points[:3], 4)


def test_nearest_finds_the_training_images_in_both_spaces(run, offline, tmp_path, capsys):
    out = tmp_path / "nn.png"
    capsys.readouterr()
    assert main(["nearest", str(run), "-n", "4", "-k", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "classifier features" in printed and "pixels in [-1, 1]" in printed and "held-out" in printed
    picture = np.asarray(Image.open(out))
    assert picture.shape[0] == nn_module.HEADER + 4 * 30 + nn_module.PAD and picture.shape[2] == 3

    found = nn_module.find(run, 4, k=2)
    train = found["train"]
    fake = nn_module.quantise(found["fake"])
    pixels = torch.cdist(train.to_float(fake).flatten(1), train.to_float(train.images).flatten(1))
    assert torch.equal(found["pixel"][1], pixels.argsort(1)[:, :2])  # pixel space: brute force
    model, _ = classifier.load_or_train("fashion-mnist", str(offline))
    real = classifier.extract(model, train.images).double()
    ours = classifier.extract(model, fake).double()
    assert torch.equal(found["feature"][1], torch.cdist(ours, real).argsort(1)[:, :2])  # feature space
    # the picture shows them: row 0, the first pixel neighbour, after the feature group
    d, i = found["pixel"]
    left = picture.shape[1] - nn_module.PAD - max(2 * 30, 0)
    top = nn_module.HEADER + nn_module.PAD
    tile = picture[top:top + 28, left:left + 28, 0]
    assert np.array_equal(tile, train.images[i[0, 0], 0].numpy())


def test_a_copying_generator_is_caught(run, offline, monkeypatch):
    """If G returned training images, both searches would find them at distance 0."""
    found_train = {}

    def copying(G, n, seed, latent_dim):
        from gankit.data import load_dataset

        train = load_dataset("fashion-mnist", data_dir=offline)
        found_train["x"] = train.to_float(train.images[[5, 9]])
        return found_train["x"]

    monkeypatch.setattr("gankit.sample.generate", copying)
    found = nn_module.find(run, 2, k=1)
    assert found["pixel"][1][:, 0].tolist() == [5, 9] and float(found["pixel"][0].max()) == 0
    assert found["feature"][1][:, 0].tolist() == [5, 9] and float(found["feature"][0].max()) < 1e-4  # float32 batches


def test_errors(run, tmp_path, capsys):
    toy = tmp_path / "toy"
    assert main(["train", *TOY_ARGS, "--max-images", "32", "--device", "cpu", "--out", str(toy)]) == 0
    capsys.readouterr()
    out = tmp_path / "nn.png"
    for argv, message in (
        ([str(toy)], "this generator makes toy points"),
        ([str(tmp_path / "nosuch")], "no such checkpoint or run folder"),
        ([str(run), "-n", "0"], "-n must be a positive integer"),
        ([str(run), "-k", "0"], "-k must be a positive integer"),
        ([str(run), "-k", "65"], "the training set has only 64 images"),
    ):
        assert main(["nearest", *argv, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert message in err, err
    assert main(["nearest", str(run), "--out", str(tmp_path / "nn.gif")]) == 1
    assert "ending in .png" in capsys.readouterr().err
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert main(["nearest", str(run), "-n", "2", "--out", str(blocker / "nn.png")]) == 1
    assert "cannot write --out" in capsys.readouterr().err
    assert not out.exists()
