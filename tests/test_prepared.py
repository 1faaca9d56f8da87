"""Prepared datasets (`gankit data prepare`, prepared:PATH) and the folder: cache: the same pixels
as the direct decode, content-keyed invalidation, atomic writes, strict reading, bad files, EXIF
orientation, and memory-mapped training bit-identical to resident training."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fakes import folder_with_a_broken_image
from gankit.cli import main
from gankit.config import TrainConfig
from gankit.data import content_key, load_dataset, prepare, prepared
from gankit.data.batches import StreamedImageBatches, batches_for
from gankit.data.images import load_folder, scan_images
from gankit.data.prepare import prepare_folder
from gankit.errors import DataError
from gankit.files import sha256
from gankit.train import resume, train
from runchecks import same_state

SRC = Path(__file__).parents[1] / "src"


def _classes(root: Path, n: int = 6, seed: int = 0) -> Path:
    """n random RGB JPEGs/PNGs of assorted sizes in two class subfolders."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / ("cats" if i % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (12 + i % 5, 16 + i % 3, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.{'png' if i % 3 else 'jpg'}")
    return root


def _grey(root: Path, n: int, size: int = 8) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(root / f"{i:04d}.png")
    return root


def _same(a, b) -> None:
    assert torch.equal(a.images, b.images)
    assert (a.labels is None and b.labels is None) or torch.equal(a.labels, b.labels)
    assert a.classes == b.classes


# --- prepare = direct decode ------------------------------------------------------------------

@pytest.mark.parametrize("workers", [False, True])
def test_prepared_equals_the_direct_decode(tmp_path, monkeypatch, workers):
    root = _classes(tmp_path / "src", n=24)
    if workers:  # a pool of 2 processes, several chunks each, even for 24 files
        monkeypatch.setattr(prepare, "IN_PROCESS_BELOW", 0)
        monkeypatch.setattr(prepare, "CHUNK", 4)
    log = io.StringIO()
    manifest = prepare_folder(root, tmp_path / "ds", image_size=10, jobs=2, log=log)
    assert "24/24 images" in log.getvalue() and "images/s" in log.getvalue()
    assert manifest["shape"] == [24, 3, 10, 10] and manifest["classes"] == ["cats", "dogs"]
    assert manifest["source"] == str(root.resolve()) and manifest["gankit_version"]
    data = load_dataset(f"prepared:{tmp_path / 'ds'}")
    _same(data, load_folder(root, image_size=10))
    assert data.mapping is None
    assert np.load(tmp_path / "ds" / "images.npy", mmap_mode="r").shape == (24, 3, 10, 10)
    # hashed while the chunks were decoded (in any order): still the file's plain SHA-256
    assert manifest["images_sha256"] == sha256(tmp_path / "ds" / "images.npy")


def test_the_row_hasher_hashes_the_file_in_order_whatever_order_rows_finish(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.arange(5 * 6, dtype=np.uint8).reshape(5, 1, 2, 3))
    with prepare.RowHasher(path, (5, 1, 2, 3)) as hasher:
        for start, count in [(3, 2), (0, 1), (2, 1)]:
            hasher.rows_done(start, count)
        with pytest.raises(RuntimeError, match="rows from 1 were never reported"):
            hasher.hexdigest()
        hasher.rows_done(1, 1)
        assert hasher.hexdigest() == sha256(path)


def test_folders_list_their_images_in_path_order(tmp_path):
    names = ["a.png", "a/x.png", "a/b/c.jpg", "a.b/y.png", "B/z.PNG", "a/b.png", "ab.png",
             "a/b/a/z.jpeg", "notes.txt", ".png", "c/.jpg", "c/d..JPEG"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    got = [rel for rel, _ in scan_images(tmp_path, "folder:t")]
    assert got == ["B/z.PNG", "a/b/a/z.jpeg", "a/b/c.jpg", "a/b.png", "a/x.png", "a.b/y.png", "a.png",
                   "ab.png", "c/d..JPEG"]  # part by part; ".png" has no extension (os.path.splitext)


def test_cli_prepare_and_grey_channels(tmp_path, capsys):
    root = _classes(tmp_path / "src")
    assert main(["data", "prepare", str(root), "--image-size", "8", "--channels", "1",
                 "--out", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "prepared 6 images (1 x 8 x 8, 2 classes)" in out and f"prepared:{tmp_path / 'ds'}" in out
    _same(load_dataset(f"prepared:{tmp_path / 'ds'}"), load_folder(root, image_size=8, channels=1))
    # A second prepare does not overwrite it; a prepared folder given as folder: is read as prepared.
    with pytest.raises(DataError, match="already exists"):
        prepare_folder(root, tmp_path / "ds", image_size=8)
    log = io.StringIO()
    _same(load_dataset(f"folder:{tmp_path / 'ds'}", log=log), load_folder(root, image_size=8, channels=1))
    assert "is a prepared dataset" in log.getvalue()
    with pytest.raises(DataError, match="prepared at 8x8 with 1 channel"):
        load_dataset(f"prepared:{tmp_path / 'ds'}", image_size=16)


def test_data_info_describes_a_prepared_dataset_and_checks_it(tmp_path, capsys):
    root = _classes(tmp_path / "src")
    manifest = prepare_folder(root, tmp_path / "ds", image_size=8, log=io.StringIO())
    assert main(["data", "info", f"prepared:{tmp_path / 'ds'}"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == 6 and info["shape"].startswith("3 x 8 x 8") and info["classes"] == "2: cats, dogs"
    assert info["images_sha256"] == manifest["images_sha256"] and info["training_holds_it"].startswith("in memory")
    (tmp_path / "ds" / "labels.npy").unlink()
    assert main(["data", "info", f"prepared:{tmp_path / 'ds'}"]) == 1
    assert "labels.npy: missing" in capsys.readouterr().err


# --- the folder: cache ------------------------------------------------------------------------

def test_a_folder_is_cached_and_any_change_invalidates_it(tmp_path):
    root = _classes(tmp_path / "src")

    def load():
        log = io.StringIO()
        data = load_dataset(f"folder:{root}", image_size=8, log=log)
        _same(data, load_folder(root, image_size=8))  # the cache always holds the direct decode
        return log.getvalue()

    assert "preparing it once into the cache" in load()
    assert "using its prepared cache" in load()
    assert "using its prepared cache" in load()
    pixels = np.full((12, 16, 3), 7, np.uint8)
    changes = [
        lambda: Image.fromarray(pixels).save(root / "cats" / "001.png"),  # one file changed
        lambda: Image.fromarray(pixels).save(root / "dogs" / "new.png"),  # one added
        lambda: (root / "dogs" / "000.jpg").unlink(),  # one removed
        lambda: os.utime(root / "cats" / "005.png", ns=(1, 1)),  # only its time changed
    ]
    for change in changes:
        change()
        said = load()
        assert "changed since it was prepared" in said and "is invalidated" in said
        assert "using its prepared cache" in load()
    # Other options are another cache; the stale copies were removed.
    log = io.StringIO()
    load_dataset(f"folder:{root}", image_size=4, log=log)
    assert "preparing it once" in log.getvalue()
    cached = [p for p in (tmp_path / "cache" / "gankit" / "prepared").iterdir() if p.name not in ("sources", "locks")]
    assert len(cached) == 2


def test_the_folder_cache_keeps_the_folder_errors(tmp_path):
    root = folder_with_a_broken_image(tmp_path / "bad", b"")
    with pytest.raises(DataError, match=f"cannot read image {root / 'broken.png'}"):
        load_dataset(f"folder:{root}")
    assert not [p for p in (tmp_path / "cache" / "gankit" / "prepared").iterdir() if p.name not in ("sources", "locks")]


def test_processes_starting_on_one_folder_prepare_it_once(tmp_path):
    """torchrun's ranks, or two runs started together: one prepares the cache, the other waits."""
    root = _grey(tmp_path / "src", n=2 * prepare.CHUNK)
    env = {**os.environ, "PYTHONPATH": str(SRC), "XDG_CACHE_HOME": str(tmp_path / "cache"), prepare._DELAY_ENV: "1"}
    code = (f"import sys; from gankit.data import load_dataset; "
            f"d = load_dataset('folder:{root}', image_size=8, log=sys.stdout); print(int(d.images.sum()))")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = sorted(proc.communicate(timeout=120)[0] for proc in procs)
    assert all(proc.returncode == 0 for proc in procs)
    assert sum("preparing it once into the cache" in out for out in outs) == 1, outs
    assert sum("another process is preparing it" in out and "prepared meanwhile" in out for out in outs) == 1, outs
    assert outs[0].splitlines()[-1] == outs[1].splitlines()[-1] == str(int(load_folder(root, image_size=8).images.sum()))
    assert len(list((tmp_path / "cache" / "gankit" / "prepared").glob("*/manifest.json"))) == 1


# --- atomic writes --------------------------------------------------------------------------------

def test_a_killed_prepare_leaves_no_dataset_taken_for_complete(tmp_path):
    root = _grey(tmp_path / "src", n=3 * prepare.CHUNK)
    out = tmp_path / "ds"
    env = {**os.environ, "PYTHONPATH": str(SRC), prepare._DELAY_ENV: "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gankit", "data", "prepare", str(root), "--image-size",
                             "8", "--out", str(out), "--jobs", "1"], env=env, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()  # the progress line after the first of three chunks
    assert f"{prepare.CHUNK}/{3 * prepare.CHUNK} images" in line, line
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    leftovers = list(tmp_path.glob(".ds.tmp-*"))
    assert len(leftovers) == 1 and not (leftovers[0] / "manifest.json").exists()
    with pytest.raises(DataError, match="not a prepared dataset"):
        load_dataset(f"prepared:{out}")
    with pytest.raises(DataError, match="not a prepared dataset"):
        load_dataset(f"prepared:{leftovers[0]}")
    prepare_folder(root, out, image_size=8, log=io.StringIO())  # and the next prepare cleans up
    assert not list(tmp_path.glob(".ds.tmp-*"))
    _same(load_dataset(f"prepared:{out}"), load_folder(root, image_size=8))


# --- strict reading -------------------------------------------------------------------------------

def _damage_manifest(ds: Path, **changes) -> None:
    manifest = json.loads((ds / "manifest.json").read_text())
    manifest.update(changes)
    (ds / "manifest.json").write_text(json.dumps(manifest))


def _lying_header(ds: Path) -> None:
    images = np.load(ds / "images.npy")
    with open(ds / "images.npy", "wb") as f:  # a header for 1000 images over the real bytes
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (1000, *images.shape[1:])})
        f.write(images.tobytes())


DAMAGE = {
    "truncated array": (lambda ds: os.truncate(ds / "images.npy", 300), "images.npy: .* truncated"),
    "trailing bytes": (lambda ds: open(ds / "images.npy", "ab").write(b"x"), "images.npy: .* truncated or corrupt"),
    "lying header": (_lying_header, r"images.npy: the array is uint8 \(1000, 3, 8, 8\) but the manifest says"),
    "wrong dtype": (lambda ds: np.save(ds / "images.npy", np.zeros((6, 3, 8, 8), np.float32)), "the array is float32"),
    "not an array": (lambda ds: (ds / "images.npy").write_bytes(b"garbage"), "images.npy: not a valid .npy"),
    "manifest shape": (lambda ds: _damage_manifest(ds, shape=[6, 3, 9, 8]), "manifest says uint8 \\(6, 3, 9, 8\\)"),
    "manifest count": (lambda ds: _damage_manifest(ds, count=7), "manifest.json: the manifest's shape"),
    "manifest channels": (lambda ds: _damage_manifest(ds, shape=[6, 2, 8, 8], count=6), "C 1 or 3"),
    "manifest json": (lambda ds: (ds / "manifest.json").write_text("{"), "manifest.json: not a readable"),
    "manifest format": (lambda ds: _damage_manifest(ds, format="other"), "not a gankit prepared-dataset"),
    "manifest version": (lambda ds: _damage_manifest(ds, version=99), "format version 99"),
    "manifest classes": (lambda ds: _damage_manifest(ds, classes=["only one"]), "labels go up to 1"),
    "labels missing": (lambda ds: (ds / "labels.npy").unlink(), "labels.npy: missing"),
    "labels short": (lambda ds: np.save(ds / "labels.npy", np.zeros(5, np.int64)), "hold 5 labels but there are 6"),
    "labels truncated": (lambda ds: os.truncate(ds / "labels.npy", 140), "labels.npy"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_prepared_dataset_is_a_clear_error(tmp_path, damage):
    ds = tmp_path / "ds"
    prepare_folder(_classes(tmp_path / "src"), ds, image_size=8, log=io.StringIO())
    spoil, message = DAMAGE[damage]
    spoil(ds)
    with pytest.raises(DataError, match=message):
        load_dataset(f"prepared:{ds}")


# --- odd and bad files --------------------------------------------------------------------------

def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((10, 20, 3), np.uint8)  # H=10, W=20: red left half, blue right half
    stored[:, :10, 0] = stored[:, 10:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": the left half ends up on top
    root = tmp_path / "phone"
    root.mkdir()
    Image.fromarray(stored).save(root / "photo.png", exif=exif)
    upright = load_folder(root).images[0]
    assert upright.shape == (3, 20, 10)
    assert (upright[0, :10] == 255).all() and (upright[2, :10] == 0).all()  # red on top
    assert (upright[2, 10:] == 255).all() and (upright[0, 10:] == 0).all()  # blue below
    prepare_folder(root, tmp_path / "ds", image_size=None, log=io.StringIO())
    assert torch.equal(load_dataset(f"prepared:{tmp_path / 'ds'}").images[0], upright)


def test_cmyk_16_bit_and_transparent_palettes_are_converted(tmp_path):
    root = tmp_path / "odd"
    root.mkdir()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(root / "a_cmyk.jpg", quality=100)  # red
    Image.fromarray(np.full((8, 8), 257 * 200, np.uint16)).save(root / "b_deep.png")  # grey 200
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)  # index 1 is green
    palette.save(root / "c_palette.png", transparency=0)
    data = load_dataset(f"folder:{root}", log=io.StringIO())
    assert data.images.shape == (3, 3, 8, 8)
    r, g, b = data.images[0, :, 4, 4].tolist()
    assert r > 240 and g < 15 and b < 15
    assert data.images[1, :, 4, 4].tolist() == [200, 200, 200]
    assert data.images[2, :, 4, 4].tolist() == [0, 255, 0]


def _with_bad_files(root: Path) -> Path:
    _classes(root)
    good = (root / "cats" / "001.png").read_bytes()
    (root / "cats" / "empty.png").write_bytes(b"")
    (root / "dogs" / "garbage.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (root / "dogs" / "truncated.png").write_bytes(good[:100])
    return root


def test_bad_files_fail_by_default_naming_the_file(tmp_path):
    root = _with_bad_files(tmp_path / "src")
    with pytest.raises(DataError, match=f"cannot read image {root / 'cats' / 'empty.png'}"):
        prepare_folder(root, tmp_path / "ds", image_size=8, log=io.StringIO())
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds.tmp-*"))


def test_bad_files_are_skipped_and_listed(tmp_path, capsys):
    root = _with_bad_files(tmp_path / "src")
    assert main(["data", "prepare", str(root), "--image-size", "8", "--out", str(tmp_path / "ds"),
                 "--on-bad-file", "skip"]) == 0
    assert "skipped 3 unreadable file(s)" in capsys.readouterr().out
    lines = (tmp_path / "ds" / "skipped.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["cats/empty.png", "dogs/garbage.jpg", "dogs/truncated.png"]
    assert all("cannot read image" in line for line in lines)
    for name in ("empty.png", "garbage.jpg", "truncated.png"):
        (root / ("cats" if name == "empty.png" else "dogs") / name).unlink()
    _same(load_dataset(f"prepared:{tmp_path / 'ds'}"), load_folder(root, image_size=8))
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["skipped"] == 3 and manifest["images_sha256"] == sha256(tmp_path / "ds" / "images.npy")


# --- larger than memory ----------------------------------------------------------------------------

def test_a_large_dataset_is_memory_mapped_and_streamed_on_the_cpu(tmp_path, monkeypatch):
    prepare_folder(_classes(tmp_path / "src", n=12), tmp_path / "ds", image_size=8, log=io.StringIO())
    resident = load_dataset(f"prepared:{tmp_path / 'ds'}")
    monkeypatch.setattr(prepared, "RESIDENT_FRACTION", 0.0)
    mapped = load_dataset(f"prepared:{tmp_path / 'ds'}")
    assert mapped.mapping is not None and "memory-mapped" in mapped.source
    _same(mapped, resident)
    monkeypatch.setattr("gankit.data.batches.RELEASE_BYTES", 1)  # release the pages after every batch
    a = batches_for(resident, seed=3, device=torch.device("cpu"), conditional=True)
    b = batches_for(mapped, seed=3, device=torch.device("cpu"), conditional=True)
    assert isinstance(b, StreamedImageBatches) and not isinstance(a, StreamedImageBatches)
    for m in (5, 5, 7, 12, 1):
        assert torch.equal(a.next(m), b.next(m))
    b.close()


def test_memory_mapped_and_resident_training_are_bit_identical(tmp_path, monkeypatch):
    prepare_folder(_classes(tmp_path / "src", n=20), tmp_path / "ds", image_size=16, log=io.StringIO())
    common = dict(data=f"prepared:{tmp_path / 'ds'}", model="dcgan", g_width=4, d_width=4, latent_dim=8,
                  device="cpu", conditional=True, k=2, batch_size=8, snapshot_every=10**6,
                  checkpoint_every=10**6)
    train(TrainConfig(**common, max_images=96), tmp_path / "resident", stream=io.StringIO())
    monkeypatch.setattr(prepared, "RESIDENT_FRACTION", 0.0)  # every dataset is "larger than memory"
    train(TrainConfig(**common, max_images=96), tmp_path / "mapped", stream=io.StringIO())
    same_state(tmp_path / "resident", tmp_path / "mapped")
    train(TrainConfig(**common, max_images=40), tmp_path / "resumed", stream=io.StringIO())
    resume(tmp_path / "resumed", {"max_images": 96}, stream=io.StringIO())
    same_state(tmp_path / "resident", tmp_path / "resumed")
    config = json.loads((tmp_path / "mapped" / "config.json").read_text())
    assert "memory-mapped" in config["dataset"]["source"]


def test_reference_statistics_are_keyed_by_content_not_by_path(tmp_path):
    root = _classes(tmp_path / "src")
    key = content_key(f"folder:{root}", 8, None)
    shutil.copytree(root, tmp_path / "copy")  # copy2: same names, sizes and times
    assert content_key(f"folder:{tmp_path / 'copy'}", 8, None) == key
    assert content_key(f"folder:{root}", 16, None) != key
    Image.new("RGB", (12, 16)).save(root / "cats" / "001.png")
    assert content_key(f"folder:{root}", 8, None) != key
    manifest = prepare_folder(root, tmp_path / "ds", image_size=8, log=io.StringIO())
    assert content_key(f"prepared:{tmp_path / 'ds'}", None, None) == f"prepared-{manifest['images_sha256']}"
    assert content_key("toy:ring8", None, None) is None
