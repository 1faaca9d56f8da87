"""Packing (--pack M, PacGAN): shapes, the indivisible-batch error, one source per pack, resume."""

import pytest
import torch

from configs import TOY, TOY_ARGS, tiny_images
from gankit import checkpoint
from gankit.cli import main
from gankit.config import TrainConfig
from gankit.errors import ConfigError
from gankit.models import build_models
from gankit.models.pack import Packed, pack
from gankit.train import resume, train
from runchecks import same_state


@pytest.mark.parametrize("m", [1, 2, 4])
def test_packed_mlp_d_takes_m_samples_per_logit(m):
    _, D = build_models(TrainConfig(**TOY, pack=m, batch_size=8), (2,))
    assert isinstance(D, Packed) == (m > 1)
    first = next(mod for mod in D.modules() if isinstance(mod, torch.nn.Linear))
    assert first.in_features == 2 * m  # the M points' coordinates, concatenated
    assert D(torch.randn(8, 2)).shape == (8 // m,)


def test_packed_dcgan_d_concatenates_along_channels(tmp_path):
    _, D = build_models(TrainConfig(**tiny_images(tmp_path), pack=3, batch_size=6), (1, 28, 28))
    first = next(mod for mod in D.modules() if isinstance(mod, torch.nn.Conv2d))
    assert first.in_channels == 3
    assert D(torch.randn(6, 1, 28, 28)).shape == (2,)


def test_pack_groups_consecutive_samples_feature_after_feature():
    x = torch.arange(12.0).reshape(6, 2)  # sample i is (2i, 2i + 1)
    assert pack(x, 3).tolist() == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]
    images = torch.arange(4.0).reshape(4, 1, 1, 1)
    assert pack(images, 2).shape == (2, 2, 1, 1) and pack(images, 2)[1, :, 0, 0].tolist() == [2, 3]
    with pytest.raises(ValueError, match="not a multiple of 3"):
        Packed(torch.nn.Identity(), 3)(torch.zeros(4, 2))


def test_indivisible_batch_and_bad_pack_are_errors_naming_the_flags(capsys):
    with pytest.raises(ConfigError, match=r"--batch-size 10 must divide by --pack 3"):
        TrainConfig(**TOY, batch_size=10, pack=3)
    with pytest.raises(ConfigError, match=r"--pack must be a positive integer, got 0"):
        TrainConfig(**TOY, pack=0)
    assert main(["train", *TOY_ARGS, "--pack", "3", "--device", "cpu", "--out", "never"]) == 1
    err = capsys.readouterr().err
    assert "--batch-size 16" in err and "--pack 3" in err


def test_packed_d_is_given_packs_from_one_source_at_a_time(tmp_path, monkeypatch):
    """Real ring points lie at radius 2; G's first outputs (N(0, 0.02) weights, tiny learning rate)
    lie near 0. Every pack the inner D sees must be all real or all fake."""
    packs: list[torch.Tensor] = []
    forward = Packed.forward

    def spy(self, x):
        packs.append(pack(x.detach(), self.pack).reshape(-1, self.pack, 2).norm(dim=2))  # (B/M, M) radii
        return forward(self, x)

    monkeypatch.setattr(Packed, "forward", spy)
    train(TrainConfig(**TOY, pack=4, batch_size=16, k=2, max_images=3 * 32, lr_g=1e-6, lr_d=1e-6,
                      snapshot_every=10**6), tmp_path / "run")
    assert packs
    sources = set()
    for radii in packs:
        real = radii > 1.0  # (B/M, M)
        assert (real.all(1) | (~real).all(1)).all(), "a pack mixed real and fake samples"
        assert radii.shape[1] == 4
        sources.update(bool(r) for r in real[:, 0])
    assert sources == {True, False}


def test_pack_is_recorded_and_resume_is_exact_and_keeps_it(tmp_path):
    common = dict(**TOY, pack=2, batch_size=8, snapshot_every=64, checkpoint_every=10**6)
    train(TrainConfig(**common, max_images=96), tmp_path / "straight")
    train(TrainConfig(**common, max_images=48), tmp_path / "split")
    record = checkpoint.load(checkpoint.resolve(tmp_path / "split"))
    assert checkpoint.config_of(record, tmp_path / "split").pack == 2
    with pytest.raises(ConfigError, match="--pack 4 differs from the run's pack = 2"):
        resume(tmp_path / "split", {"pack": 4, "max_images": 96})
    resume(tmp_path / "split", {"max_images": 96})
    same_state(tmp_path / "straight", tmp_path / "split")



@pytest.mark.slow  # two torchrun processes and one plain run: about 15 s on 2 cores
def test_two_processes_train_the_one_process_packed_model(tmp_path):
    """Under DDP each process packs its own share of the batch (8 = 4 packs of 2 per process);
    the averaged gradient is the one-process one."""
    import os
    import subprocess
    import sys

    args = ["train", *TOY_ARGS, "--pack", "2", "--max-images", "96", "--device", "cpu", "--out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for out, extra in ((tmp_path / "one", []), (tmp_path / "two", ["--nproc", "2"])):
        proc = subprocess.run([sys.executable, "-m", "gankit", *args, str(out), *extra],
                              capture_output=True, text=True, env=env, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
    same_state(tmp_path / "one", tmp_path / "two", atol=1e-6)

# --- bench modes --protocol pacgan -------------------------------------------------------------

def test_pacgan_players_have_the_published_shapes():
    from gankit.theory import pacgan

    G, D = pacgan.build_players(3)
    assert [m.in_features for m in G.modules() if isinstance(m, torch.nn.Linear)] == [2, 400, 400, 400, 400]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in G.modules()) == 4
    maxouts = [m for m in D.modules() if isinstance(m, pacgan.Maxout)]
    assert [m.linear.in_features for m in maxouts] == [6, 200, 200] and all(m.pieces == 5 for m in maxouts)
    assert G(torch.randn(10, 2)).shape == (10, 2) and D(torch.randn(30, 2)).shape == (10,)


def test_pacgan_step_gives_d_packs_from_one_source(monkeypatch):
    """Each call of the packed D gets exactly the real batch or exactly the generated one, so each
    of its packs (M consecutive rows, test_pack_groups_...) holds M samples of one source."""
    from gankit.theory import pacgan

    seen, reals = [], []
    forward, step = Packed.forward, pacgan.simultaneous_step
    monkeypatch.setattr(Packed, "forward", lambda self, x: seen.append(x.detach().clone()) or forward(self, x))
    monkeypatch.setattr(pacgan, "simultaneous_step",
                        lambda G, D, oG, oD, real, zs, g: reals.append(real.clone()) or step(G, D, oG, oD, real, zs, g))
    [result] = pacgan.trial("ring8", 2, seed=0, iterations=2)
    assert len(seen) == 2 * len(reals) == 4  # per update: D(real), then D(fake)
    for real, (x_real, x_fake) in zip(reals, zip(seen[::2], seen[1::2], strict=True), strict=True):
        assert torch.equal(x_real, real) and x_real.shape == x_fake.shape == (200, 2)
        assert not (torch.cdist(x_fake, real) == 0).any()  # no real point among the fakes
    assert result["n_samples"] == 2500


def test_pacgan_protocol_end_to_end_writes_its_table(tmp_path, capsys):
    import json

    from gankit.theory import pacgan

    assert main(["bench", "modes", "--protocol", "pacgan", "--datasets", "ring8", "--packs", "1,2",
                 "--trials", "2", "--iterations", "4", "--jobs", "1", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "table.txt").read_text()
    assert "GAN PacGAN Table 1" in text and "6.3 +- 0.5" in text and "PacGAN2 gankit" in text
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["device"] == "cpu" or torch.cuda.is_available()
    assert [(r["pack"], r["seeds"]) for r in record["rows"]] == [(1, [0, 1]), (2, [0, 1])]
    for row in record["rows"]:
        v = row["modes"]["values"]
        assert row["modes"]["se"] == pytest.approx(abs(v[0] - v[1]) / 2)  # std / sqrt(2) of two values
    assert (tmp_path / "collapse.png").is_file()
    assert pacgan.within({"mean": 6.0, "se": 0.2}, (6.3, 0.1)) and not pacgan.within({"mean": 5.0, "se": 0.2}, (6.3, 0.5))
    assert main(["bench", "modes", "--protocol", "pacgan", "--k", "2", "--out", str(tmp_path)]) == 1
    assert "--k" in capsys.readouterr().err
    assert main(["bench", "modes", "--protocol", "pacgan", "--packs", "two", "--out", str(tmp_path)]) == 1
    assert "--packs" in capsys.readouterr().err
    assert main(["bench", "modes", "--device", "cpu", "--out", str(tmp_path)]) == 1  # quick: always the CPU
    assert "--device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "modes", "--protocol", "pacgan", "--device", "cuda", "--out", str(tmp_path)]) == 1
        assert "--device cuda" in capsys.readouterr().err


def test_mode_metrics_are_scale_free():
    """gankit's toy:ring8 is PacGAN's ring at twice the scale; the metrics cannot tell them apart."""
    from gankit.data.toy import TOY_DISTRIBUTIONS
    from gankit.metrics.toy import mode_metrics
    from gankit.theory.pacgan import PACGAN_TOYS

    theirs, ours = PACGAN_TOYS["ring8"], TOY_DISTRIBUTIONS["ring8"]
    assert torch.allclose(2 * theirs.means, ours.means) and torch.allclose(2 * theirs.stds, ours.stds)
    x = theirs.sample(2500, torch.Generator().manual_seed(0))
    x[:1000] = x[:1000] * 0.97 + 0.01  # some samples pulled off their modes
    x[1000:1500] = theirs.means[0].float()  # and a pile on one mode
    assert mode_metrics(x, theirs) == mode_metrics(2 * x, ours)
    perfect = mode_metrics(theirs.means.float().repeat(10, 1), theirs)
    assert perfect["modes"] == 8 and perfect["high_quality"] == 100.0 and perfect["reverse_kl"] == pytest.approx(0)


def test_report_of_a_packed_1d_run_says_why_d_is_not_drawn(tmp_path):
    from gankit import report

    train(TrainConfig(data="toy:gauss1d", model="mlp", g_width=8, d_width=8, latent_dim=1, device="cpu",
                      pack=2, batch_size=8, max_images=16), tmp_path / "run")
    svg, note = report.oned_panel(report.load_run(tmp_path / "run"))
    assert svg == "" and "--pack" in note
