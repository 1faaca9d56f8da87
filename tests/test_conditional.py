"""Class-conditional GANs (--conditional): the players, the labelled minibatches, training on the
labels, sampling by class, the class metrics, resume and data-parallel training."""

import json

import numpy as np
import pytest
import torch

from gankit import checkpoint, runs
from gankit.cli import main
from gankit.config import TrainConfig
from gankit.data import ImageDataset, load_dataset
from gankit.data.batches import ImageBatches, ToyBatches
from gankit.errors import DataError, GankitError
from gankit.evaluate import EvalProtocol, evaluate
from gankit.models import build_models
from gankit.models.conditional import attach, join_noise, split
from gankit.sample import generate, load_generator
from gankit.state import draw_noise
from gankit.train import resume, train
from runchecks import same_state
from test_evaluate import halves, offline_cache  # noqa: F401 (a fixture)

TWO_GAUSSIANS = dict(data="toy:mixture1d", model="mlp", g_width=32, d_width=32, latent_dim=2, device="cpu",
                     lr_g=1e-3, lr_d=1e-3, batch_size=64, conditional=True)


def labelled_npz(path, n=24, size=16):
    """n grey images (n, size, size), class 0 dark and class 1 bright, with labels 'y'."""
    y = np.arange(n) % 2
    images = np.where(y[:, None, None] == 1, 220, 30).astype(np.uint8) * np.ones((n, size, size), np.uint8)
    np.savez(path, images=images, y=y)
    return path


# --- the players ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model,shape", [("dcgan", (1, 28, 28)), ("mlp", (2,))])
def test_the_class_rides_with_the_sample_through_g_and_d(model, shape):
    config = TrainConfig(data="toy:ring8" if model == "mlp" else "mnist", model=model, latent_dim=8,
                         g_width=8, d_width=8, conditional=True)
    G, D = build_models(config, shape, num_classes=3)
    y = torch.tensor([0, 2, 1, 2])
    out = G(join_noise(torch.randn(4, 8), y))
    assert out.shape == (4, shape[0] + 1, *shape[1:])  # one more channel (column): the class
    x, classes = split(out)
    assert x.shape == (4, *shape) and torch.equal(classes, y)
    assert D(out).shape == (4,)
    # D judges the sample against its class: the same x with another class scores differently.
    assert not torch.equal(D(out), D(attach(x, (y + 1) % 3)))


def test_conditional_needs_two_or_more_classes():
    with pytest.raises(GankitError, match="2 to 256 classes"):
        build_models(TrainConfig(conditional=True), (1, 28, 28), num_classes=1)


def test_unconditional_players_are_unchanged():
    torch.manual_seed(0)
    G, D = build_models(TrainConfig(g_width=8, d_width=8), (1, 28, 28))
    assert "embed.weight" not in G.state_dict() and G.net[0].in_channels == 100


# --- labelled minibatches and noise --------------------------------------------------------------

def test_image_batches_carry_the_labels_of_the_images_they_draw():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    data = ImageDataset("t", images, "test", labels=torch.arange(10) % 3, classes=("a", "b", "c"))
    plain = ImageBatches(data, seed=1, device=torch.device("cpu")).next(7)
    x, y = split(ImageBatches(data, seed=1, device=torch.device("cpu"), conditional=True).next(7))
    assert torch.equal(x, plain)  # the same images in the same order
    drawn = ((x[:, 0, 0, 0] + 1) * 127.5).round().long()  # which image each row is
    assert torch.equal(y, drawn % 3)


def test_toy_batches_label_each_point_with_its_component():
    data = load_dataset("toy:mixture1d")
    x, y = split(ToyBatches(data, seed=0, device=torch.device("cpu"), conditional=True).next(500))
    assert torch.equal(y, (x[:, 0] > 0).long())  # components at -2 and 2, std 0.5
    plain = ToyBatches(data, seed=0, device=torch.device("cpu")).next(500)
    assert torch.equal(plain, x)  # the unconditional stream is the same numbers


def test_fake_classes_follow_the_class_frequencies_after_the_same_z():
    weights = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    z = draw_noise(a, 20_000, 4, torch.device("cpu"), class_weights=weights)
    assert z.shape == (20_000, 5)
    assert torch.equal(z[:, :4], draw_noise(b, 20_000, 4, torch.device("cpu")))
    counts = torch.bincount(z[:, 4].long(), minlength=3) / 20_000
    assert torch.allclose(counts, weights.float(), atol=0.015)


# --- training, sampling, metrics -----------------------------------------------------------------

@pytest.fixture(scope="module")
def two_gaussians(tmp_path_factory):
    """A conditional MLP on the two Gaussians at -2 and 2, each its own class: 500 iterations."""
    out = tmp_path_factory.mktemp("cond") / "run"
    train(TrainConfig(**TWO_GAUSSIANS, max_images=32_000, snapshot_every=16_000), out)
    return out


def test_a_conditional_toy_run_learns_each_class_from_the_label_alone(two_gaussians):
    G, _ = load_generator(two_gaussians, "cpu")
    for c, mean in ((0, -2.0), (1, 2.0)):
        x = generate(G, 2000, seed=0, latent_dim=2, classes=torch.full((2000,), c))
        # the same noise for both classes: only the label moves the samples to their component
        assert abs(float(x.mean()) - mean) < 0.5, (c, float(x.mean()))
        assert float(((x > 0).long().squeeze(1) == c).float().mean()) > 0.95


def test_sample_by_class_name_index_and_all(two_gaussians, tmp_path, capsys):
    assert main(["sample", str(two_gaussians), "--class", "1", "-n", "300", "--out", str(tmp_path / "one.npz")]) == 0
    saved = np.load(tmp_path / "one.npz")
    assert (saved["labels"] == 1).all() and list(saved["classes"]) == ["0", "1"]
    assert (saved["images"][:, 0] > 0).mean() > 0.95  # class 1 is the Gaussian at +2
    assert main(["sample", str(two_gaussians), "--class", "all", "-n", "5", "--out", str(tmp_path / "all.npz")]) == 0
    assert list(np.load(tmp_path / "all.npz")["labels"]) == [0] * 5 + [1] * 5
    assert main(["sample", str(two_gaussians), "--class", "ring", "--out", str(tmp_path / "x.npz")]) == 1
    assert "--class 'ring' is not one of this run's classes; use a name or an index: 0: 0, 1: 1" in capsys.readouterr().err


def test_interpolate_walks_within_the_class_asked_for(two_gaussians, tmp_path, capsys):
    out = tmp_path / "walk.npz"
    assert main(["interpolate", str(two_gaussians), "--class", "1", "--seeds", "0,1", "--frames", "4",
                 "--out", str(out)]) == 0
    frames = np.load(out)["frames"]
    assert (frames[:, 0] > 0).all()  # every frame a point of class 1's Gaussian at +2
    assert main(["sample", str(two_gaussians), "--class", "1", "-n", "1", "--seed", "1",
                 "--out", str(tmp_path / "key.npz")]) == 0
    assert np.array_equal(np.load(tmp_path / "key.npz")["images"][0], frames[-1])  # the last key frame is seed 1's
    assert main(["interpolate", str(two_gaussians), "--out", str(out)]) == 1
    assert "is a conditional run: give the class to walk in with --class (one of 0, 1)" in capsys.readouterr().err


def test_eval_of_a_conditional_toy_run_reports_class_accuracy(two_gaussians):
    record = evaluate(two_gaussians, EvalProtocol(n_samples=1000), device="cpu")
    assert record["metrics"]["class_accuracy"] > 0.95
    assert "nearest mixture component" in record["protocol"]["class_accuracy"]


def test_a_class_of_an_unconditional_run_is_an_error(toy_run, tmp_path, capsys):
    assert main(["sample", str(toy_run), "--class", "0", "--out", str(tmp_path / "x.npz")]) == 1
    assert "is not a conditional run (trained without --conditional)" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_conditional_training_on_unlabelled_data_is_a_clear_error_before_any_folder(tmp_path):
    data = tmp_path / "plain.npz"
    np.savez(data, images=np.zeros((8, 16, 16), np.uint8))
    with pytest.raises(DataError, match="has no labels; --conditional needs"):
        train(TrainConfig(data=f"npz:{data}", model="dcgan", conditional=True, device="cpu"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_conditional_image_run_resumes_bit_identically_and_records_its_classes(tmp_path):
    data = labelled_npz(tmp_path / "two.npz")
    common = dict(data=f"npz:{data}", model="dcgan", g_width=4, d_width=4, latent_dim=8, device="cpu",
                  conditional=True, k=2, batch_size=8, snapshot_every=64, checkpoint_every=10**6)
    train(TrainConfig(**common, max_images=128), tmp_path / "straight")
    train(TrainConfig(**common, max_images=64), tmp_path / "split")
    resume(tmp_path / "split", {"max_images": 128})
    same_state(tmp_path / "straight", tmp_path / "split")
    record = checkpoint.load(tmp_path / "split" / "checkpoints" / "last.pt")
    assert record["classes"] == ["0", "1"]
    assert json.loads(record["config"])["conditional"] is True
    assert (tmp_path / "split" / runs.SAMPLES / f"{128:09d}.png").is_file()


def test_a_short_conditional_image_run_makes_the_class_asked_for(tmp_path, offline_cache):  # noqa: F811
    """Class 0 bright on top, class 1 bright at the bottom; the feature classifier judges the samples."""
    data = halves(tmp_path / "halves")
    # (The MLP: a DCGAN this small collapses on these 512 images with or without --conditional.)
    config = TrainConfig(data="mnist", data_dir=str(data), model="mlp", g_width=64, d_width=64, latent_dim=16,
                         batch_size=32, max_images=9600, snapshot_every=9600, device="cpu", conditional=True)
    train(config, tmp_path / "run")
    record = evaluate(tmp_path / "run", EvalProtocol(n_samples=400), device="cpu")
    metrics = record["metrics"]
    assert metrics["class_accuracy_real"] > 0.95  # the classifier tells the halves apart
    assert metrics["class_accuracy"] > 0.9, metrics
    assert {"fid_class_0", "fid_class_1", "fid_per_class_mean"} <= metrics.keys()


# --- several processes ---------------------------------------------------------------------------

@pytest.mark.slow  # two real torchrun jobs of 2 processes
def test_two_processes_on_gloo_train_the_one_process_conditional_runs(tmp_path):
    from test_distributed import ATOL, gankit, ok, toy

    extra = ("--conditional", "--max-images", "320", "--eval-every", "320", "--eval-samples", "500")
    ok(gankit(toy(tmp_path / "one", *extra)))
    ok(gankit(toy(tmp_path / "two", *extra), nproc=2))
    same_state(tmp_path / "one", tmp_path / "two", atol=ATOL)
    data = labelled_npz(tmp_path / "two.npz", n=48)
    dcgan = ["train", "--data", f"npz:{data}", "--model", "dcgan", "--g-width", "8", "--d-width", "8",
             "--latent-dim", "8", "--batch-size", "16", "--k", "2", "--device", "cpu", "--conditional",
             "--max-images", "192", "--snapshot-every", "192", "--memory-format", "channels_last"]
    ok(gankit([*dcgan, "--out", str(tmp_path / "one-dcgan")]))
    ok(gankit([*dcgan, "--out", str(tmp_path / "two-dcgan")], nproc=2))
    same_state(tmp_path / "one-dcgan", tmp_path / "two-dcgan", atol=ATOL)


# --- CUDA (skipped without a GPU; benchmarks/gpu_check.sh runs them) ------------------------------

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda_only
def test_a_conditional_run_on_cuda_never_waits_for_the_gpu_and_graphs_train_like_eager(tmp_path):
    import gankit.train
    from gankit.fastpath import GraphedIteration

    data = labelled_npz(tmp_path / "two.npz", n=40)
    common = dict(data=f"npz:{data}", model="dcgan", g_width=4, d_width=4, latent_dim=8, device="cuda",
                  conditional=True, k=2, batch_size=8, max_images=16 * 12, sync_every=5, checkpoint_every=16 * 6)
    made, real = [], gankit.train._make_step
    gankit.train._make_step = lambda run, state: made.append(real(run, state)) or made[-1]
    try:
        train(TrainConfig(**common, cuda_graphs="off"), tmp_path / "eager")
        torch.cuda.set_sync_debug_mode("error")  # the step, the labelled batches and the noise: no host waits
        try:
            step = made[0]
            state = step.state
            reals = [state.batches.next(8) for _ in range(2)]
            noises = [draw_noise(state.noise, 8, 8, torch.device("cuda"), None, state.class_weights)
                      for _ in range(3)]
            step(reals, noises, True)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        train(TrainConfig(**common, cuda_graphs="auto"), tmp_path / "graph")
    finally:
        gankit.train._make_step = real
    assert isinstance(made[-1], GraphedIteration) and made[-1].failed is None and made[-1].captures == 1
    eager, graph = ([r for r in runs.read_metrics(tmp_path / n) if "event" not in r] for n in ("eager", "graph"))
    for a, b in zip(eager, graph, strict=True):
        assert abs(a["d_loss"] - b["d_loss"]) <= 1e-3 * max(1.0, abs(a["d_loss"])), (a, b)


@pytest.mark.parametrize("model,shape", [("dcgan", (1, 28, 28)), ("mlp", (2,))])
def test_a_packed_conditional_d_judges_m_samples_with_their_m_classes(model, shape):
    config = TrainConfig(data="toy:ring8" if model == "mlp" else "mnist", model=model, latent_dim=8,
                         g_width=8, d_width=8, conditional=True, pack=2, batch_size=4)
    G, D = build_models(config, shape, num_classes=3)
    first = next(m for m in D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert (first.in_channels if model == "dcgan" else first.in_features) == 2 * shape[0]  # the classes are not input
    assert D.embed.num_embeddings == 2 * 3  # a table per place in the pack
    y = torch.tensor([0, 2, 1, 2])
    xy = G(join_noise(torch.randn(4, 8), y))
    assert D(xy).shape == (2,)
    x, _ = split(xy)
    other = D(attach(x, torch.tensor([0, 2, 1, 0])))  # pack 1's second class changed: only its logit moves
    assert other[0] == D(xy)[0] and other[1] != D(xy)[1]
    swapped = D(attach(x, torch.tensor([2, 0, 1, 2])))  # pack 0's classes at each other's place
    assert swapped[0] != D(xy)[0]
    with pytest.raises(ValueError, match="got a batch of 3, not a multiple of 2"):
        D(xy[:3])


def test_a_conditional_d_of_pack_1_is_the_projection_discriminator():
    torch.manual_seed(0)
    _, D = build_models(TrainConfig(data="toy:ring8", model="mlp", g_width=8, d_width=8, conditional=True), (2,),
                        num_classes=3)
    x, y = torch.randn(5, 2), torch.tensor([0, 1, 2, 1, 0])
    h = D.inner.net[:-1](x)
    expected = D.inner.net[-1](h).reshape(5) + (D.embed(y) * h).sum(1)  # Miyato & Koyama's logit
    assert torch.equal(D(attach(x, y)), expected)


def test_a_packed_conditional_run_gives_d_one_source_a_pack_and_resumes_exactly(tmp_path, monkeypatch):
    """Real ring points (8 classes, one a mode) lie at radius 2, G's first ones near 0 (tiny
    learning rate): every pack D sees is all real or all fake. Resume continues bit-identically."""
    from gankit.models.conditional import ProjectionDiscriminator

    seen = []
    forward = ProjectionDiscriminator.forward

    def spy(self, xy):
        seen.append(split(xy.detach())[0].reshape(-1, self.pack, 2).norm(dim=2))  # (B/M, M) radii
        return forward(self, xy)

    monkeypatch.setattr(ProjectionDiscriminator, "forward", spy)
    ring = {**TWO_GAUSSIANS, "data": "toy:ring8", "lr_g": 1e-7, "lr_d": 1e-7}
    train(TrainConfig(**ring, pack=4, max_images=3 * 64, snapshot_every=10**6), tmp_path / "spied")
    real = torch.cat(seen) > 1.0
    assert (real.all(1) | (~real).all(1)).all(), "a pack mixed real and fake samples"
    assert real.any() and (~real).any()
    monkeypatch.setattr(ProjectionDiscriminator, "forward", forward)
    common = dict(**TWO_GAUSSIANS, pack=2, snapshot_every=10**6, checkpoint_every=10**6)
    train(TrainConfig(**common, max_images=256), tmp_path / "straight")
    train(TrainConfig(**common, max_images=128), tmp_path / "split")
    resume(tmp_path / "split", {"max_images": 256})
    same_state(tmp_path / "straight", tmp_path / "split")


