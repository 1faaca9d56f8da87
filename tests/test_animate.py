"""`gankit animate`: the snapshot grids as a looping GIF, each labelled with its images seen."""

import numpy as np
import pytest
from PIL import Image

from configs import TINY_DCGAN_ARGS
from fakes import make_npz
from gankit.animate import LABEL_HEIGHT
from gankit.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("animate")
    data = make_npz(tmp / "data.npz", n=32)
    run = tmp / "run"
    assert main(["train", "--data", f"npz:{data}", *TINY_DCGAN_ARGS, "--batch-size", "8", "--device", "cpu",
                 "--max-images", "48", "--snapshot-every", "16", "--grid-size", "16", "--out", str(run)]) == 0
    return run


def gif_frames(path):
    gif = Image.open(path)
    frames = []
    for i in range(gif.n_frames):
        gif.seek(i)
        frames.append(np.asarray(gif.convert("L")))
    return gif, frames


def test_frames_are_the_snapshot_grids_under_their_labels(run, tmp_path):
    out = tmp_path / "progress.gif"
    assert main(["animate", str(run), "--out", str(out)]) == 0
    grids = sorted((run / "samples").glob("*.png"))
    assert [g.name for g in grids] == ["000000000.png", "000000016.png", "000000032.png", "000000048.png"]
    gif, frames = gif_frames(out)
    assert gif.info.get("loop") == 0
    assert len(frames) == len(grids)
    labels = []
    for frame, grid in zip(frames, grids, strict=True):
        pixels = np.asarray(Image.open(grid))
        assert np.array_equal(frame[LABEL_HEIGHT:, :pixels.shape[1]], pixels)  # the grid, untouched
        strip = frame[:LABEL_HEIGHT]
        assert (strip < 100).any() and (strip == 255).mean() > 0.5  # dark text on white
        labels.append(strip)
    assert not np.array_equal(labels[0], labels[1])  # "images seen: 0", "images seen: 16", ...


def test_errors_without_samples(run, tmp_path, capsys):
    out = tmp_path / "p.gif"
    one_d = tmp_path / "run1d"
    assert main(["train", "--data", "toy:gauss1d", "--model", "mlp", "--g-width", "8", "--d-width", "8",
                 "--batch-size", "16", "--max-images", "32", "--device", "cpu", "--out", str(one_d)]) == 0
    capsys.readouterr()
    cases = [
        ([str(one_d)], "1-D toy run draws no snapshot pictures"),
        ([str(tmp_path / "nosuch")], "no such run folder"),
        ([str(run / "checkpoints" / "last.pt")], "give the folder, not a checkpoint"),
        ([str(tmp_path)], "has no snapshot grids"),
    ]
    for argv, message in cases:
        assert main(["animate", *argv, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert main(["animate", str(run), "--out", str(tmp_path / "p.png")]) == 1
    assert "ending in .gif" in capsys.readouterr().err
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert main(["animate", str(run), "--out", str(blocker / "p.gif")]) == 1
    assert "cannot write --out" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))
