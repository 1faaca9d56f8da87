"""Algorithm 1 as run by the training loop: the k-step schedule, exact resume, divergence, signals."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from configs import TOY, tiny_images
from fakes import make_npz
from gankit import checkpoint, runs
from gankit.config import TrainConfig
from gankit.data import load_dataset
from gankit.data.batches import ImageBatches
from gankit.errors import ConfigError, GankitError
from gankit.train import TrainingDiverged, resume, train
from runchecks import same_state


def test_k_discriminator_steps_per_generator_step(tmp_path):
    config = TrainConfig(**TOY, k=3, batch_size=8, max_images=3 * 8 * 5, snapshot_every=10**6)
    result = train(config, tmp_path / "run")
    assert (result.iterations, result.images_seen) == (5, 120)
    record = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")
    # Adam counts its own steps: 3 D steps and 1 G step per iteration.
    assert {int(s["step"]) for s in record["opt_D"]["state"].values()} == {15}
    assert {int(s["step"]) for s in record["opt_G"]["state"].values()} == {5}
    rows = runs.read_metrics(tmp_path / "run")
    assert [r["images"] for r in rows] == [24, 48, 72, 96, 120]
    for row in rows:
        assert row["value"] == pytest.approx(-row["d_loss"])
        assert 0 < row["d_real"] < 1 and 0 < row["d_fake_g_before"] < 1 and 0 < row["d_fake_g_after"] < 1
        assert row["grad_norm_d"] > 0 and row["grad_norm_g"] > 0


def test_each_d_step_draws_a_fresh_real_minibatch(tmp_path):
    data = load_dataset(f"npz:{make_npz(tmp_path / 'd.npz', n=10)}")
    batches = ImageBatches(data, seed=0, device=torch.device("cpu"))
    first = torch.cat([batches.next(4) for _ in range(2)] + [batches.next(2)])  # one epoch
    seen = {tuple(img.flatten().tolist()) for img in first}
    assert len(seen) == len({tuple(data.to_float(img).flatten().tolist()) for img in data.images})
    assert batches.position == 10
    again = ImageBatches(data, seed=0, device=torch.device("cpu"))
    again.load_state_dict({"position": 4})
    assert torch.equal(again.next(6), first[4:])


@pytest.mark.parametrize("kind", ["toy-mlp", "images-dcgan"])
def test_interrupted_and_resumed_run_ends_with_the_same_state(tmp_path, kind):
    base = TOY if kind == "toy-mlp" else tiny_images(tmp_path)
    common = dict(**base, k=2, batch_size=8, snapshot_every=64, checkpoint_every=10**6)
    train(TrainConfig(**common, max_images=160), tmp_path / "straight")
    train(TrainConfig(**common, max_images=64), tmp_path / "split")
    resume(tmp_path / "split", {"max_images": 112})
    resume(tmp_path / "split", {"max_images": 160})
    same_state(tmp_path / "straight", tmp_path / "split")

    def rows(run):  # per-iteration rows without wall time; diagnostics restart with each process
        return [{k: v for k, v in r.items() if k != "time"} for r in runs.read_metrics(run) if "event" not in r]

    assert rows(tmp_path / "straight") == rows(tmp_path / "split")


def test_resume_refuses_to_change_the_training_config(tmp_path):
    train(TrainConfig(**TOY, batch_size=8, max_images=16), tmp_path / "run")
    with pytest.raises(ConfigError, match="--k 2 differs from the run's k = 1"):
        resume(tmp_path / "run", {"k": 2, "max_images": 32})


def test_existing_run_folder_is_not_overwritten(tmp_path):
    config = TrainConfig(**TOY, batch_size=8, max_images=16)
    train(config, tmp_path / "run")
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(GankitError, match="--resume"):
        train(config, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before
    train(config, tmp_path / "run", overwrite=True)


def test_divergence_stops_with_the_step_and_last_good_checkpoint(tmp_path):
    # SGD with a learning rate of 100 blows the weights up within a few iterations.
    config = TrainConfig(**TOY, optimizer="sgd", lr_d=100.0, lr_g=100.0, batch_size=8,
                         max_images=8 * 200, checkpoint_every=8)
    with pytest.raises(TrainingDiverged) as err:
        train(config, tmp_path / "run")
    message = str(err.value)
    assert "diverged at iteration" in message and "= nan" in message
    assert f"last good checkpoint is {tmp_path / 'run' / 'checkpoints' / 'last.pt'}" in message
    record = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")
    diverged_at = int(message.split("(")[1].split(" images")[0])
    assert 0 < record["progress"]["images_seen"] < diverged_at
    for net in ("G", "D"):
        for tensor in record[net].values():
            assert torch.isfinite(tensor).all(), "the saved checkpoint predates the divergence"


def test_divergence_before_any_checkpoint_says_so(tmp_path):
    config = TrainConfig(**TOY, optimizer="sgd", lr_d=1e30, lr_g=1e30, batch_size=8, max_images=800)
    with pytest.raises(TrainingDiverged, match="No checkpoint was saved yet"):
        train(config, tmp_path / "run")


def test_snapshots_are_written(tmp_path):
    config = TrainConfig(**tiny_images(tmp_path), batch_size=8, max_images=48, snapshot_every=16)
    train(config, tmp_path / "run")
    names = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert names == [f"{n:09d}.png" for n in (0, 16, 32, 48)]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["config"]["max_images_resolved"] == 48 and saved["dataset"]["shape"] == [1, 28, 28]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "gankit", "train", "--data", "toy:ring8", "--model", "mlp",
           "--g-width", "16", "--d-width", "16", "--batch-size", "8", "--max-images", "100000000",
           "--device", "cpu", "--out", str(run)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while not (run / runs.METRICS).is_file() or (run / runs.METRICS).stat().st_size < 2000:
        assert time.time() < deadline and proc.poll() is None, "training did not start"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "SIGTERM received" in err and f"--resume {run}" in err and "Traceback" not in err
    record = checkpoint.load(run / "checkpoints" / "last.pt")
    rows = runs.read_metrics(run)
    assert rows[-1]["images"] == record["progress"]["images_seen"]


def test_on_nan_rollback_reloads_the_last_checkpoint_with_halved_learning_rates(tmp_path):
    config = TrainConfig(**TOY, optimizer="sgd", lr_d=100.0, lr_g=100.0, batch_size=8,
                         max_images=8 * 200, checkpoint_every=8, on_nan="rollback")
    with pytest.raises(TrainingDiverged, match="Rolled back the most times allowed"):
        train(config, tmp_path / "run")
    events = [r for r in runs.read_metrics(tmp_path / "run") if r.get("event") == "rollback"]
    assert [e["lr_d"] for e in events] == [50.0, 25.0, 12.5]
    assert all(e["lr_g"] == e["lr_d"] for e in events)
    rows = [r for r in runs.read_metrics(tmp_path / "run") if "event" not in r]
    images = [r["images"] for r in rows]
    assert images == sorted(images) and len(set(images)) == len(images), "no repeated rows after a rollback"


def test_the_first_line_names_the_files_trained_on(tmp_path):
    config = TrainConfig(**tiny_images(tmp_path), batch_size=8, max_images=8)
    out = io.StringIO()
    train(config, tmp_path / "run", stream=out)
    first = out.getvalue().splitlines()[0]
    assert first.startswith("gankit: training dcgan on npz:") and f"from {tmp_path / 'data.npz'} on cpu" in first


def test_a_length_of_part_of_an_iteration_is_rounded_up_and_said_so(tmp_path):
    out = io.StringIO()
    result = train(TrainConfig(**TOY, batch_size=128, max_images=64), tmp_path / "run", stream=out)
    assert result.images_seen == 128
    lines = out.getvalue().splitlines()
    assert lines[1] == ("gankit: the run's length, 64 images, is rounded up to whole iterations of k x batch = "
                        "128 images: it trains to 128 images (1 iteration)")
    # The progress line counts against the length trained to, never past 100 %.
    assert any(line.startswith("128/128 img (100.0%)") for line in lines), lines
    out = io.StringIO()
    resume(tmp_path / "run", {"max_images": 300}, stream=out)
    lines = out.getvalue().splitlines()
    assert "300 images, is rounded up to whole iterations of k x batch = 128 images: it trains to 384 images " \
           "(2 iterations)" in lines[1]
    assert any(line.startswith("384/384 img (100.0%)") for line in lines), lines
    out = io.StringIO()
    resume(tmp_path / "run", {"max_images": 384}, stream=out)  # a whole number of iterations: no such line
    assert "rounded up" not in out.getvalue()
