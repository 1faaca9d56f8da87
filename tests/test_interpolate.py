"""`gankit interpolate`: key frames are `gankit sample --seed s -n 1` pixel for pixel, middle frames
are G at the interpolated z (checked against an independent slerp), toy runs, and bad inputs."""

import numpy as np
import pytest
import torch
from PIL import Image

from configs import TINY_DCGAN_ARGS
from fakes import make_npz
from gankit.cli import main
from gankit.imagegrid import frame_ms, to_uint8
from gankit.sample import load_generator

TINY = [*TINY_DCGAN_ARGS, "--batch-size", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grey")
    data = make_npz(tmp / "data.npz", n=32)  # 28x28 grey
    run = tmp / "run"
    assert main(["train", "--data", f"npz:{data}", *TINY, "--max-images", "32",
                 "--snapshot-every", "16", "--out", str(run)]) == 0
    return run


def sampled(run, seed, tmp_path):
    """What `gankit sample --seed s -n 1` writes, as an array (images uint8 (H, W, C), points float)."""
    out = tmp_path / f"sample-{seed}.npz"
    assert main(["sample", str(run), "-n", "1", "--seed", str(seed), "--out", str(out)]) == 0
    return np.load(out)["images"][0]


def reference_slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    omega = np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1))
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def test_key_frames_are_gankit_sample_pixel_for_pixel(grey_run, tmp_path):
    seeds = [3, 7, 1]
    out = tmp_path / "walk.npz"
    assert main(["interpolate", str(grey_run), "--seeds", "3,7,1", "--frames", "5", "--out", str(out)]) == 0
    walk = np.load(out)
    assert walk["frames"].shape == (2 * 6, 28, 28, 1)  # open walk: 2 rows (pairs) of 5 + 1 frames
    assert list(walk["key_frames"]) == [0, 6, 11]
    assert np.array_equal(walk["frames"][5], walk["frames"][6])  # seed 7 ends row 0 and starts row 1
    for seed, index in zip(seeds, walk["key_frames"], strict=True):
        assert np.array_equal(walk["frames"][index], sampled(grey_run, seed, tmp_path))


def test_gif_loops_and_keeps_the_key_frames_exact(grey_run, tmp_path):
    out = tmp_path / "walk.gif"
    assert main(["interpolate", str(grey_run), "--seeds", "0,1,2,3", "--frames", "4", "--out", str(out)]) == 0
    gif = Image.open(out)
    assert gif.info.get("loop") == 0  # loops forever
    frames = []  # Pillow merges identical consecutive frames, adding up their durations
    for i in range(gif.n_frames):
        gif.seek(i)
        frames += [np.asarray(gif.convert("L"))] * round(gif.info["duration"] / frame_ms(12))
    assert len(frames) == 16  # closed walk: 4 segments of 4 frames, back to seed 0 without a repeat
    for i, seed in enumerate([0, 1, 2, 3]):
        assert np.array_equal(frames[4 * i], sampled(grey_run, seed, tmp_path)[..., 0])


def test_png_grid_rows_run_from_seed_to_seed(grey_run, tmp_path):
    out = tmp_path / "walk.png"
    assert main(["interpolate", str(grey_run), "--seeds", "5,6,9", "--frames", "3", "--out", str(out)]) == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 * 30 + 2, 4 * 30 + 2)  # 2 rows (pairs) x 4 frames, 28 px + 2 px padding

    def cell(row, col):
        return grid[2 + 30 * row:30 + 30 * row, 2 + 30 * col:30 + 30 * col]

    assert np.array_equal(cell(0, 0), sampled(grey_run, 5, tmp_path)[..., 0])
    assert np.array_equal(cell(0, 3), sampled(grey_run, 6, tmp_path)[..., 0])
    assert np.array_equal(cell(1, 0), sampled(grey_run, 6, tmp_path)[..., 0])
    assert np.array_equal(cell(1, 3), sampled(grey_run, 9, tmp_path)[..., 0])


@pytest.mark.parametrize("linear", [False, True])
def test_middle_frame_is_g_at_the_interpolated_z(grey_run, tmp_path, linear):
    out = tmp_path / "walk.npz"
    flags = ["--linear"] if linear else []
    assert main(["interpolate", str(grey_run), "--seeds", "3,7", "--frames", "5", "--out", str(out), *flags]) == 0
    walk = np.load(out)
    G, info = load_generator(grey_run, "cpu")
    d = info["config"].latent_dim
    z3 = torch.randn(1, d, generator=torch.Generator().manual_seed(3))[0].numpy()
    z7 = torch.randn(1, d, generator=torch.Generator().manual_seed(7))[0].numpy()
    t = 2 / 5
    expected_z = (1 - t) * z3.astype(np.float64) + t * z7 if linear else reference_slerp(z3, z7, t)
    assert np.allclose(walk["z"][2], expected_z, atol=1e-6, rtol=0)
    assert not np.allclose(walk["z"][2], reference_slerp(z3, z7, t) if linear else (1 - t) * z3 + t * z7,
                           atol=1e-4)  # the two methods differ: the flag is honoured
    with torch.no_grad():
        expected = to_uint8(G(torch.from_numpy(walk["z"][2:3])))[0]
    assert np.array_equal(walk["frames"][2], expected)
    if not linear:  # slerp keeps the norm between the ends' norms
        norms = np.linalg.norm(walk["z"], axis=1)
        assert norms.min() >= min(np.linalg.norm(z3), np.linalg.norm(z7)) - 1e-4


def test_toy_2d_walk(toy_run, tmp_path):
    out = tmp_path / "walk.npz"
    assert main(["interpolate", str(toy_run), "--seeds", "0,4", "--frames", "6", "--out", str(out)]) == 0
    walk = np.load(out)
    assert walk["frames"].shape == (7, 2) and walk["frames"].dtype == np.float32
    assert np.array_equal(walk["frames"][0], sampled(toy_run, 0, tmp_path))
    assert np.array_equal(walk["frames"][6], sampled(toy_run, 4, tmp_path))
    for name in ("walk.png", "walk.gif"):  # a scatter of the data with the path of G(z) drawn on it
        assert main(["interpolate", str(toy_run), "--seeds", "0,4", "--frames", "6",
                     "--out", str(tmp_path / name)]) == 0
        picture = Image.open(tmp_path / name)
        assert picture.size == (384, 384)
    gif = Image.open(tmp_path / "walk.gif")  # 12 frames; identical neighbours merged by Pillow
    total = 0
    for i in range(gif.n_frames):
        gif.seek(i)
        total += gif.info["duration"]
    assert total == 12 * frame_ms(12)


def test_one_dimensional_toy_pictures_are_refused(tmp_path, capsys):
    run = tmp_path / "run1d"
    assert main(["train", "--data", "toy:gauss1d", "--model", "mlp", "--g-width", "8", "--d-width", "8",
                 "--batch-size", "16", "--max-images", "32", "--device", "cpu", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["interpolate", str(run), "--out", str(tmp_path / "w.gif")]) == 1
    assert "use --out FILE.npz" in capsys.readouterr().err
    assert not (tmp_path / "w.gif").exists()
    assert main(["interpolate", str(run), "--frames", "3", "--out", str(tmp_path / "w.npz")]) == 0


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "0;1"], "--seeds must be comma-separated non-negative integers"),
    (["--seeds", "a,b"], "--seeds must be comma-separated non-negative integers"),
    (["--seeds", "0,-1"], "non-negative"),
    (["--seeds", "4"], "at least two seeds"),
    (["--frames", "0"], "--frames must be a positive integer, got 0"),
    (["--frames", "-2"], "--frames must be a positive integer"),
    (["--fps", "0"], "--fps must be positive"),
])
def test_bad_inputs_are_one_line_errors_and_write_nothing(grey_run, tmp_path, capsys, flags, message):
    out = tmp_path / "walk.gif"
    assert main(["interpolate", str(grey_run), *flags, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_missing_run_bad_suffix_and_unwritable_out(grey_run, tmp_path, capsys):
    assert main(["interpolate", str(tmp_path / "nosuch"), "--out", str(tmp_path / "w.gif")]) == 1
    assert "no such checkpoint or run folder" in capsys.readouterr().err
    assert main(["interpolate", str(grey_run), "--out", str(tmp_path / "w.jpg")]) == 1
    assert "use FILE.gif" in capsys.readouterr().err
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    for name in ("w.gif", "w.png", "w.npz"):
        assert main(["interpolate", str(grey_run), "--frames", "2", "--out", str(blocker / name)]) == 1
        assert "cannot write --out" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
