"""The quality levers (docs/quality.md): the EMA generator (ema.py), spectral norm in D
(--d-norm), DiffAugment (augment.py) and training on a fixed subset (--max-train-images)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from configs import TINY_DCGAN_ARGS, tiny_images
from fakes import make_npz
from gankit import checkpoint, ema
from gankit.augment import Augmented, cutout, diffaugment, translate
from gankit.cli import main
from gankit.config import TrainConfig
from gankit.data import ImageDataset, subset
from gankit.errors import ConfigError, DataError, GankitError
from gankit.models import build_models
from gankit.models.conditional import attach, split
from gankit.sample import load_generator
from gankit.state import TrainState
from gankit.train import resume, train
from runchecks import same_state
from test_compat import FIXTURES
from test_conditional import labelled_npz
from test_distributed import gankit, images, ok, torchrun

LEVERS = dict(g_ema=40.0, g_ema_rampup=0.05, d_norm="spectral", augment="diffaug")


# --- the EMA generator ---------------------------------------------------------------------------

def test_a_decay_that_keeps_nothing_makes_the_ema_equal_g_exactly():
    torch.manual_seed(0)
    G, _ = build_models(TrainConfig(g_width=4, d_width=4, latent_dim=8), (1, 16, 16))
    average = ema.make_ema(G)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p))
        for b in G.buffers():
            b.add_(1)
    ema.update(average, G, ema.decay(16, images_before=0, half_life=1000, rampup=0.05))  # ramp-up: beta 0
    for (name, a), b in zip(average.state_dict().items(), G.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not average.training and not any(p.requires_grad for p in average.parameters())


def test_the_decay_is_a_half_life_in_images_with_stylegan2_adas_ramp_up():
    assert ema.decay(100, 10_000, half_life=100) == 0.5  # one half-life per step
    assert ema.decay(16, 10_000, half_life=1000) == 0.5 ** (16 / 1000)
    assert ema.decay(32, 10_000, half_life=1000) == pytest.approx(ema.decay(16, 10_000, half_life=1000) ** 2)
    assert ema.decay(16, 100, half_life=1000, rampup=0.05) == 0.5 ** (16 / 5)  # min(1000, 100 * 0.05)
    assert ema.decay(16, 10**6, half_life=1000, rampup=0.05) == 0.5 ** (16 / 1000)


def test_the_ema_follows_the_defined_update_for_a_known_sequence():
    G = nn.Linear(1, 1, bias=False).double()
    average = ema.make_ema(G)  # starts at G's weight w0
    expected = G.weight.item()
    for w, beta in [(1.0, 0.5), (3.0, 0.9), (-2.0, 0.25), (0.5, 0.0)]:
        with torch.no_grad():
            G.weight.fill_(w)
        ema.update(average, G, beta)
        expected = beta * expected + (1 - beta) * w  # by hand
        assert average.weight.item() == pytest.approx(expected, rel=0, abs=1e-15)


def test_standing_statistics_recompute_batch_norm_for_the_ema_weights():
    torch.manual_seed(0)
    G, _ = build_models(TrainConfig(g_width=4, d_width=4, latent_dim=8), (1, 16, 16))
    average = ema.make_ema(G)
    noises = [torch.randn(32, 8) for _ in range(3)]
    ema.recompute_batchnorm_stats(average, noises)
    bn = average.net[1]
    with torch.no_grad():  # the plain average of the three batches' means at the first batch norm
        means = [average.net[0](z.view(32, 8, 1, 1)).mean(dim=(0, 2, 3)) for z in noises]
    assert torch.allclose(bn.running_mean, torch.stack(means).mean(0), atol=1e-6)
    assert not average.training and bn.momentum == G.net[1].momentum


def tiny(tmp_path: Path, **extra) -> dict:
    return dict(tiny_images(tmp_path), batch_size=8, k=2, snapshot_every=64, checkpoint_every=10**6, **extra)


def test_an_ema_run_samples_snapshots_and_checkpoints_the_ema(tmp_path):
    train(TrainConfig(**tiny(tmp_path, g_ema=40.0), max_images=64), tmp_path / "run")
    record = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert record["G_ema"].keys() == record["G"].keys()
    assert any(not torch.equal(record["G_ema"][k], record["G"][k]) for k in record["G"])
    G, info = load_generator(tmp_path / "run", "cpu")
    assert info["generator"] == "ema" and torch.equal(G.net[0].weight, record["G_ema"]["net.0.weight"])
    G, info = load_generator(tmp_path / "run", "cpu", generator="raw")
    assert info["generator"] == "raw" and torch.equal(G.net[0].weight, record["G"]["net.0.weight"])
    assert main(["sample", str(tmp_path / "run"), "-n", "4", "--out", str(tmp_path / "a.png"),
                 "--generator", "raw"]) == 0


def test_asking_for_the_ema_of_a_run_without_one_is_an_error(tmp_path):
    train(TrainConfig(**tiny(tmp_path), max_images=16), tmp_path / "run")
    with pytest.raises(GankitError, match="holds no EMA generator"):
        load_generator(tmp_path / "run", "cpu", generator="ema")
    assert load_generator(tmp_path / "run", "cpu")[1]["generator"] == "raw"


# --- resume: every lever's state is in the checkpoint -------------------------------------------

@pytest.mark.parametrize("variant", ["plain", "conditional", "pack", "rgb"])
def test_every_lever_on_resumes_bit_identically(tmp_path, variant):
    common = tiny(tmp_path, **LEVERS)
    if variant == "conditional":
        common.update(data=f"npz:{labelled_npz(tmp_path / 'two.npz')}", conditional=True)
    elif variant == "pack":
        common.update(pack=2)
    elif variant == "rgb":
        common.update(data=f"npz:{make_npz(tmp_path / 'rgb.npz', n=24, size=16, channels=3)}")
    train(TrainConfig(**common, max_images=96), tmp_path / "straight")
    train(TrainConfig(**common, max_images=48), tmp_path / "split")
    resume(tmp_path / "split", {"max_images": 96})
    same_state(tmp_path / "straight", tmp_path / "split")
    a, b = (checkpoint.load(p / "checkpoints" / "last.pt") for p in (tmp_path / "straight", tmp_path / "split"))
    assert all(torch.equal(a["G_ema"][k], b["G_ema"][k]) for k in a["G_ema"])
    assert torch.equal(a["rng"]["augment"], b["rng"]["augment"])
    vectors = [k for k in a["D"] if k.endswith("._u") or k.endswith("._v")]  # spectral norm's power iteration
    assert vectors and all(torch.equal(a["D"][k], b["D"][k]) for k in vectors)
    assert not any("running_mean" in k for k in a["D"])  # no batch norm left in D


def test_measuring_or_not_leaves_the_training_state_as_it_was(tmp_path):
    """d_fake_g_after's extra pass must not move spectral norm's vectors or the augmentation's stream."""
    common = tiny(tmp_path, **LEVERS, max_images=96)
    train(TrainConfig(**common, log_every=1), tmp_path / "every")
    train(TrainConfig(**common, log_every=5), tmp_path / "some")
    same_state(tmp_path / "every", tmp_path / "some")


def test_an_old_format_checkpoint_without_an_ema_starts_it_as_a_copy_of_g(tmp_path):
    train(TrainConfig(**tiny(tmp_path, g_ema=40.0), max_images=32), tmp_path / "run")
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    record = checkpoint.load(path)
    del record["G_ema"]  # as written before --g-ema
    state = _state(TrainConfig(**tiny(tmp_path, g_ema=40.0)))
    notes = state.load_state_dict(record, path)
    assert any("holds no EMA generator" in n and "copy of its G" in n for n in notes)
    assert all(torch.equal(a, b) for a, b in zip(state.G_ema.state_dict().values(), record["G"].values(), strict=True))


def _state(config: TrainConfig) -> TrainState:
    from gankit import distributed
    from gankit.data import load_dataset
    from gankit.fastpath import fast_path_plan
    from gankit.state import build_state

    world = distributed.World()
    dataset = load_dataset(config.data, split="train")
    return build_state(config, dataset, fast_path_plan(config, world.device), world)


@pytest.mark.parametrize("kind", ["toy-mlp", "images-dcgan"])
def test_old_run_folders_resume_with_the_levers_off_and_cannot_turn_them_on(tmp_path, monkeypatch, kind):
    shutil.copy(FIXTURES / "data.npz", tmp_path / "data.npz")
    shutil.copytree(FIXTURES / kind / "split", tmp_path / "split")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="--g-ema 100.0 differs from the run's g_ema = 0.0"):
        resume(tmp_path / "split", {"g_ema": 100.0})
    result = resume(tmp_path / "split", {"max_images": 160})
    assert result.images_seen == 160
    assert "G_ema" not in checkpoint.load(tmp_path / "split" / "checkpoints" / "last.pt")


# --- spectral norm -------------------------------------------------------------------------------

def test_d_norm_batch_is_the_dcgan_d_and_spectral_replaces_its_batch_norm():
    torch.manual_seed(0)
    _, plain = build_models(TrainConfig(), (1, 28, 28))
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    torch.manual_seed(0)
    _, spectral = build_models(TrainConfig(d_norm="spectral"), (1, 28, 28))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in spectral.modules())
    convs = [m for m in spectral.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)
    for m in convs:  # the effective weight has spectral norm ~1 (one power iteration per forward)
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.05)
    _, none = build_models(TrainConfig(d_norm="none"), (1, 28, 28))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in none.modules())
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in none.modules())


# --- DiffAugment ---------------------------------------------------------------------------------

def test_augmentation_with_probability_zero_is_the_identity(tmp_path):
    assert not isinstance(_state(TrainConfig(**tiny(tmp_path))).D, Augmented)  # --augment off: no wrapper
    x = torch.randn(6, 3, 16, 16)
    assert torch.equal(diffaugment(x, torch.Generator().manual_seed(0), p=0.0), x)
    assert torch.equal(translate(x, torch.zeros(6, dtype=torch.long), torch.zeros(6, dtype=torch.long)), x)


def test_translation_shifts_in_zeros_and_cutout_blanks_half_the_side():
    x = torch.arange(16.0).view(1, 1, 4, 4) + 1
    shifted = translate(x, torch.tensor([1]), torch.tensor([0]))  # out[i] = x[i + 1]: up one row
    assert torch.equal(shifted[0, 0, :3], x[0, 0, 1:]) and torch.equal(shifted[0, 0, 3], torch.zeros(4))
    x = torch.ones(2, 1, 8, 8)
    out = cutout(x, torch.tensor([0.5, 0.0]), torch.tensor([0.5, 0.0]))
    assert (out[0] == 0).sum() == 16  # a 4x4 square inside
    assert (out[1] == 0).sum() == 4  # centred on the corner: a quarter of it inside


def test_augmentation_is_differentiable_and_gradients_reach_g():
    torch.manual_seed(0)
    G, D = build_models(TrainConfig(g_width=4, d_width=4, latent_dim=8, channels=3), (3, 16, 16))
    D = Augmented(D, torch.Generator().manual_seed(0))
    D(G(torch.randn(8, 8))).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in G.parameters())


def test_a_conditional_sample_keeps_its_label_plane():
    seen = []
    D = Augmented(nn.Identity(), torch.Generator().manual_seed(0), conditional=True)
    D.inner = _Record(seen)
    y = torch.tensor([0, 1, 2, 1])
    D(attach(torch.ones(4, 1, 16, 16), y))
    images, labels = split(seen[0])
    assert torch.equal(labels, y) and torch.equal(seen[0][:, -1], attach(images, y)[:, -1])
    assert not torch.equal(images, torch.ones(4, 1, 16, 16))  # the images were augmented


class _Record(nn.Module):
    def __init__(self, seen: list):
        super().__init__()
        self.seen = seen

    def forward(self, x):
        self.seen.append(x)
        return x.flatten(1).sum(1)


def test_each_process_augments_its_rows_as_one_process_does():
    x = torch.randn(8, 3, 16, 16)
    whole = diffaugment(x, torch.Generator().manual_seed(3))
    halves = [diffaugment(x[r * 4:(r + 1) * 4], torch.Generator().manual_seed(3), rows=slice(r * 4, r * 4 + 4),
                          total=8) for r in range(2)]
    assert torch.equal(torch.cat(halves), whole)


# --- config: errors and resume rules -------------------------------------------------------------

@pytest.mark.parametrize("values,message", [
    (dict(g_ema=-1.0), "--g-ema must be a number >= 0"),
    (dict(g_ema=float("inf")), "--g-ema must be a number >= 0"),
    (dict(g_ema=100.0, g_ema_rampup=-0.1), "--g-ema-rampup must be a number >= 0"),
    (dict(g_ema_rampup=0.05), "--g-ema-rampup 0.05 needs an EMA"),
    (dict(d_norm="layer"), "--d-norm must be one of batch, spectral, none"),
    (dict(augment="ada"), "--augment must be one of off, diffaug"),
    (dict(max_train_images=0), "--max-train-images must be a positive integer"),
    (dict(data="toy:ring8", model="mlp", augment="diffaug"), "--augment applies to image data"),
    (dict(data="toy:ring8", model="mlp", max_train_images=10), "--max-train-images applies to image data"),
])
def test_a_bad_value_is_an_error_naming_the_flag(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**values)


@pytest.mark.parametrize("name,value", [("g_ema", 10.0), ("g_ema_rampup", 0.1), ("d_norm", "spectral"),
                                        ("augment", "diffaug"), ("max_train_images", 20)])
def test_no_lever_may_change_on_resume(name, value):
    with pytest.raises(ConfigError, match="a resumed run keeps its training config"):
        TrainConfig(g_ema=5.0).resumed({name: value})


def test_the_cli_takes_every_lever(tmp_path):
    data = make_npz(tmp_path / "d.npz", n=24, size=16)
    assert main(["train", "--data", f"npz:{data}", *TINY_DCGAN_ARGS, "--batch-size", "8", "--device", "cpu",
                 "--max-images", "16", "--g-ema", "100", "--g-ema-rampup", "0.05", "--d-norm", "spectral",
                 "--augment", "diffaug", "--max-train-images", "20", "--out", str(tmp_path / "run")]) == 0
    config = checkpoint.config_of(checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt"), "x")
    assert (config.g_ema, config.g_ema_rampup, config.d_norm, config.augment, config.max_train_images) == \
        (100.0, 0.05, "spectral", "diffaug", 20)


# --- --max-train-images --------------------------------------------------------------------------

def test_a_subset_is_the_same_shuffled_images_every_time_and_keeps_its_labels():
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 1, 4, 4).contiguous()
    data = ImageDataset("t", images, "test", labels=torch.arange(50) % 5, classes=tuple("abcde"))
    a, b = subset(data, 20), subset(data, 20)
    assert torch.equal(a.images, b.images) and len(a) == 20
    assert torch.equal(a.labels, a.images[:, 0, 0, 0].long() % 5)
    assert not torch.equal(a.images, images[:20])  # shuffled, not the first 20 of the file
    assert torch.equal(subset(data, 30).images[:20], a.images)  # a longer subset extends a shorter one
    with pytest.raises(DataError, match="--max-train-images 51 is more than the 50 training images"):
        subset(data, 51)


def test_training_on_more_images_than_there_are_is_an_error(tmp_path):
    with pytest.raises(DataError, match="--max-train-images 41 is more than the 40"):
        train(TrainConfig(**tiny(tmp_path), max_images=16, max_train_images=41), tmp_path / "run")
    assert np.load(tmp_path / "data.npz")["images"].shape[0] == 40


# --- several processes ----------------------------------------------------------------------------

@torchrun
def test_two_processes_with_every_lever_train_the_one_process_run(tmp_path):
    levers = ("--max-images", "192", "--g-ema", "100", "--g-ema-rampup", "0.05", "--d-norm", "spectral",
              "--augment", "diffaug", "--max-train-images", "40")
    ok(gankit(images(tmp_path, tmp_path / "one", *levers)))
    ok(gankit(images(tmp_path, tmp_path / "two", *levers), nproc=2))
    same_state(tmp_path / "one", tmp_path / "two", atol=1e-6)
    a, b = (checkpoint.load(p / "checkpoints" / "last.pt") for p in (tmp_path / "one", tmp_path / "two"))
    assert max((a["G_ema"][k].double() - b["G_ema"][k].double()).abs().max().item() for k in a["G_ema"]) < 1e-6
    assert torch.equal(a["rng"]["augment"], b["rng"]["augment"])


def test_augmentation_runs_eagerly_under_cuda_graphs_and_says_why():
    from gankit.fastpath import fast_path_plan

    assert fast_path_plan(TrainConfig(cuda_graphs="auto", g_ema=100.0, d_norm="spectral"), "cuda").graphs
    plan = fast_path_plan(TrainConfig(cuda_graphs="auto", augment="diffaug"), "cuda")
    assert not plan.graphs and any("no CUDA graph with --augment" in r for r in plan.reasons)


def test_eval_of_a_run_without_an_ema_refuses_generator_ema(tmp_path, capsys):
    train(TrainConfig(**tiny(tmp_path), max_images=16), tmp_path / "run")
    assert main(["eval", str(tmp_path / "run"), "--generator", "ema", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "--generator ema" in err and "holds no EMA generator (trained without --g-ema)" in err
