"""End to end through the command line: train a few steps on tiny data, then sample."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs import TINY_DCGAN_ARGS, TOY_ARGS
from fakes import make_npz
from gankit.cli import main

TINY = [*TINY_DCGAN_ARGS, "--batch-size", "8", "--device", "cpu"]


@pytest.fixture
def trained(tmp_path):
    data = make_npz(tmp_path / "data.npz", n=32, size=32, channels=3)
    run = tmp_path / "run"
    assert main(["train", "--data", f"npz:{data}", *TINY, "--max-images", "32",
                 "--snapshot-every", "16", "--out", str(run)]) == 0
    return run


def test_train_writes_a_run_folder(trained):
    assert (trained / "config.json").is_file()
    assert (trained / "checkpoints" / "last.pt").is_file()
    assert len((trained / "metrics.jsonl").read_text().splitlines()) == 4
    grids = sorted((trained / "samples").glob("*.png"))
    assert [p.name for p in grids] == ["000000000.png", "000000016.png", "000000032.png"]
    assert Image.open(grids[-1]).mode == "RGB"


def test_sample_grid_npz_and_folder(trained, tmp_path):
    assert main(["sample", str(trained), "-n", "10", "--out", str(tmp_path / "grid.png")]) == 0
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (4 * 34 + 2, 3 * 34 + 2)  # 10 samples: 4 columns, 3 rows, 2 px padding
    assert main(["sample", str(trained / "checkpoints" / "last.pt"), "-n", "10", "--seed", "3",
                 "--out", str(tmp_path / "s.npz")]) == 0
    first = np.load(tmp_path / "s.npz")["images"]
    assert first.shape == (10, 32, 32, 3) and first.dtype == np.uint8
    assert main(["sample", str(trained), "-n", "10", "--seed", "3", "--out", str(tmp_path / "s2.npz")]) == 0
    assert np.array_equal(first, np.load(tmp_path / "s2.npz")["images"]), "--seed reproduces"
    assert main(["sample", str(trained), "-n", "10", "--seed", "4", "--out", str(tmp_path / "s3.npz")]) == 0
    assert not np.array_equal(first, np.load(tmp_path / "s3.npz")["images"])
    assert main(["sample", str(trained), "-n", "5", "--out", str(tmp_path / "pngs")]) == 0
    files = sorted((tmp_path / "pngs").iterdir())
    assert [f.name for f in files] == ["0.png", "1.png", "2.png", "3.png", "4.png"]
    assert main(["sample", str(trained), "-n", "5", "--out", str(tmp_path / "s0.npz")]) == 0
    same_seed = np.load(tmp_path / "s0.npz")["images"]
    assert all(np.array_equal(np.asarray(Image.open(f)), same_seed[i]) for i, f in enumerate(files))


def test_resume_from_the_command_line(trained, capsys):
    assert main(["train", "--resume", str(trained), "--max-images", "48"]) == 0
    assert len((trained / "metrics.jsonl").read_text().splitlines()) == 6
    assert main(["train", "--resume", str(trained)]) == 0  # already complete: says so, changes nothing
    assert "nothing to train" in capsys.readouterr().err
    assert len((trained / "metrics.jsonl").read_text().splitlines()) == 6


def test_toy_run_and_sample(tmp_path):
    run = tmp_path / "toy"
    assert main(["train", *TOY_ARGS, "--max-images", "64", "--out", str(run)]) == 0
    assert main(["sample", str(run), "-n", "7", "--out", str(tmp_path / "p.npz")]) == 0
    assert np.load(tmp_path / "p.npz")["images"].shape == (7, 2)


@pytest.mark.parametrize("argv, message", [
    (["train", "--batch-size", "-3", "--data", "toy:ring8", "--model", "mlp"], "--batch-size must be a positive integer, got -3"),
    (["train", "--data", "nosuch", "--out", "x"], "nosuch"),
    (["train", "--data", "toy:ring8", "--model", "dcgan"], "use --model mlp"),
    (["train", *TOY_ARGS, "--memory-format", "channels_last"], "the MLP has none: give auto or contiguous"),
    (["sample", "does-not-exist", "--out", "a.png"], "no such checkpoint or run folder"),
    (["train", "--resume", "no-run-here"], "no such run folder"),
])
def test_user_errors_are_one_line_and_exit_1(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_bad_flags_exit_1(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--model", "resnet"])
    assert exit_.value.code == 1
    assert "invalid choice: 'resnet'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--memory-format", "nhwc"])
    assert "--memory-format: invalid choice: 'nhwc'" in capsys.readouterr().err


def test_existing_run_is_refused_without_overwrite(trained, capsys):
    before = (trained / "checkpoints" / "last.pt").read_bytes()
    assert main(["train", "--data", "toy:ring8", "--model", "mlp", "--out", str(trained)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (trained / "checkpoints" / "last.pt").read_bytes() == before


def test_python_dash_m_and_help():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    out = subprocess.run([sys.executable, "-m", "gankit", "train", "--help"], capture_output=True,
                         text=True, env=env, check=True).stdout
    for name in ("--data", "--model", "--out", "--max-images", "--epochs", "--batch-size", "--k",
                 "--g-loss", "--device", "--seed", "--snapshot-every", "--resume"):
        assert name in out
