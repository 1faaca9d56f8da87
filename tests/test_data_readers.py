"""Data readers: IDX, (Fashion-)MNIST discovery and download, folders, arrays, toy distributions."""

import gzip
import math
import shutil
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fakes import fake_mnist, idx_bytes, write
from gankit.data import ImageDataset, load_dataset, mnist
from gankit.data.idx import read_idx, read_idx_images, read_idx_labels
from gankit.data.toy import TOY_DISTRIBUTIONS
from gankit.errors import DataError
from gankit.files import sha256

# --- IDX ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("array", [np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
                                   np.array([-5, 7, 300], dtype=np.int16),
                                   np.linspace(0, 1, 6, dtype=np.float32).reshape(3, 2)])
def test_idx_round_trip(tmp_path, gz, array):
    out = read_idx(write(tmp_path / "a.idx", idx_bytes(array), gz))
    assert out.dtype == array.dtype and np.array_equal(out, array)


def test_images_and_labels_magic(tmp_path):
    images = write(tmp_path / "i", idx_bytes(np.zeros((2, 28, 28), np.uint8)))
    labels = write(tmp_path / "l", idx_bytes(np.zeros(2, np.uint8)))
    assert read_idx_images(images).shape == (2, 28, 28)
    with pytest.raises(DataError, match=r"not an IDX image file \(magic 0x00000801, expected 0x00000803\)"):
        read_idx_images(labels)
    with pytest.raises(DataError, match="not an IDX label file"):
        read_idx_labels(images)


@pytest.mark.parametrize("data, message", [
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "not an IDX file"),
    (b"\x00\x00\x08", "shorter than its 4-byte header"),
    (b"\x00\x00\x07\x01" + b"\x00" * 8, "not an IDX file"),   # unknown type code
    (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
])
def test_bad_headers(tmp_path, data, message):
    path = write(tmp_path / "bad", data)
    with pytest.raises(DataError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_and_trailing_payload(tmp_path, gz):
    good = idx_bytes(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(DataError, match="truncated|holds only"):
        read_idx(write(tmp_path / "t", good[:-5], gz))
    with pytest.raises(DataError, match="trailing data"):
        read_idx(write(tmp_path / "x", good + b"\x00", gz))


@pytest.mark.parametrize("gz", [False, True])
def test_a_header_claiming_10_to_the_12_images_is_refused_without_allocating(tmp_path, gz):
    header = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", 10**9, 1000, 1000)
    path = write(tmp_path / "huge", header + b"\x00" * 1000, gz)
    with pytest.raises(DataError, match="truncated|holds only"):
        read_idx(path)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_an_array_or_a_data_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "f"
    for payload in (data, gzip.compress(data)):
        path.write_bytes(payload)
        try:
            read_idx(path)
        except DataError:
            pass


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_truncated_gzip_files_give_a_data_error(tmp_path_factory, cut):
    good = gzip.compress(idx_bytes(np.arange(3 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(3, 28, 28)))
    path = tmp_path_factory.mktemp("cut") / "f.gz"
    path.write_bytes(good[: cut % len(good)])
    with pytest.raises(DataError):
        read_idx(path)


# --- Fashion-MNIST / MNIST ---------------------------------------------------------------------

@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    monkeypatch.setattr(mnist, "SYSTEM_DIRS", {"fashion-mnist": [], "mnist": []})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GANKIT_DATA", raising=False)


@pytest.mark.parametrize("gz", [False, True])
def test_found_in_data_dir(tmp_path, no_system_data, gz):
    fake_mnist(tmp_path / "d", gz=gz)
    data = load_dataset("mnist", data_dir=tmp_path / "d")
    assert data.images.shape == (6, 1, 28, 28) and data.images.dtype == torch.uint8
    assert len(load_dataset("mnist", split="test", data_dir=tmp_path / "d")) == 4


def test_found_through_gankit_data(tmp_path, no_system_data, monkeypatch):
    fake_mnist(tmp_path / "env" / "fashion-mnist")
    monkeypatch.setenv("GANKIT_DATA", str(tmp_path / "env"))
    assert mnist.find_files("fashion-mnist") == tmp_path / "env" / "fashion-mnist"
    assert len(load_dataset("fashion-mnist")) == 6


def _serve_from(directory: Path):
    def download(url, dest, timeout):
        shutil.copy(directory / url.rsplit("/", 1)[1], dest)
    return download


def test_download_checks_sha256(tmp_path, no_system_data, monkeypatch):
    served = fake_mnist(tmp_path / "served")
    sums = {p.name: sha256(p) for p in served.iterdir()}
    monkeypatch.setitem(mnist.SHA256, "mnist", sums)
    monkeypatch.setattr(mnist, "_download", _serve_from(served))
    path = mnist.fetch("mnist")
    assert path == tmp_path / "cache" / "gankit" / "mnist"
    assert sorted(p.name for p in path.iterdir()) == sorted(sums)
    assert len(load_dataset("mnist")) == 6


def test_checksum_mismatch_discards_the_download(tmp_path, no_system_data, monkeypatch):
    served = fake_mnist(tmp_path / "served")
    monkeypatch.setattr(mnist, "_download", _serve_from(served))
    with pytest.raises(DataError, match="checksum mismatch.*expected SHA-256"):
        mnist.fetch("mnist")
    assert list((tmp_path / "cache" / "gankit" / "mnist").iterdir()) == []


def test_offline_error_says_how_to_get_the_files(tmp_path, no_system_data, monkeypatch):
    def offline(url, dest, timeout):
        Path(dest).write_bytes(b"partial")
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(mnist, "_download", offline)
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist")
    message = str(err.value)
    for part in ("apt-get install dataset-fashion-mnist", "--data-dir", "GANKIT_DATA",
                 "train-images-idx3-ubyte.gz", "no network"):
        assert part in message
    assert list((tmp_path / "cache" / "gankit" / "fashion-mnist").iterdir()) == []


def test_label_count_mismatch(tmp_path, no_system_data):
    d = fake_mnist(tmp_path / "d")
    write(d / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(5, np.uint8)), gz=True)
    with pytest.raises(DataError, match="6 images but .* 5 labels"):
        load_dataset("mnist", data_dir=d)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    info = mnist.info("fashion-mnist", "/usr/share/datasets/fashion-mnist")
    assert info["train"] == {"images": 60000, "shape": [28, 28], "classes": list(range(10))}
    assert info["test"]["images"] == 10000
    assert all(f["sha256_ok"] for f in info["files"].values())


def test_scaling_and_resizing(tmp_path, no_system_data):
    data = ImageDataset("x", torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1), "")
    assert data.to_float(data.images).flatten().tolist() == [-1.0, 1.0]
    fake_mnist(tmp_path / "d")
    for size in (32, 64):
        big = load_dataset("mnist", data_dir=tmp_path / "d", image_size=size, channels=3)
        assert big.images.shape == (6, 3, size, size) and big.images.dtype == torch.uint8
        assert torch.equal(big.images[:, 0], big.images[:, 2])


# --- folders and arrays ------------------------------------------------------------------------

def test_folder_of_mixed_images(tmp_path):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "imgs" / "a.png")
    Image.new("L", (20, 20), 128).save(tmp_path / "imgs" / "sub" / "b.JPG")
    data = load_dataset(f"folder:{tmp_path / 'imgs'}", image_size=16)
    assert data.images.shape == (2, 3, 16, 16)
    assert data.images[0, :, 8, 8].tolist() == [255, 0, 0]
    grey = load_dataset(f"folder:{tmp_path / 'imgs'}", image_size=16, channels=1)
    assert grey.images.shape == (2, 1, 16, 16)
    with pytest.raises(DataError, match="pass --image-size"):
        load_dataset(f"folder:{tmp_path / 'imgs'}")


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .png/.jpg/.jpeg images"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "bad").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "bad" / "ok.png")
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset(f"folder:{tmp_path / 'bad'}")


def test_arrays(tmp_path):
    np.savez(tmp_path / "u8.npz", images=np.full((3, 8, 8), 255, np.uint8))
    assert load_dataset(f"npz:{tmp_path / 'u8.npz'}").images.shape == (3, 1, 8, 8)
    np.save(tmp_path / "f.npy", np.ones((2, 8, 8, 3), np.float32) * 0.5)
    data = load_dataset(f"npz:{tmp_path / 'f.npy'}")
    assert data.images.shape == (2, 3, 8, 8) and torch.allclose(data.to_float(data.images), torch.zeros(1))


@pytest.mark.parametrize("array, message", [
    (np.full((2, 8, 8), 3.0, np.float32), r"\[0, 1\] or \[-1, 1\]"),
    (np.full((2, 8, 8), np.nan, np.float32), "NaN"),
    (np.zeros((2, 8), np.uint8), "expected images"),
    (np.zeros((0, 8, 8), np.uint8), "expected images"),
    (np.zeros((2, 8, 8), np.int64), "uint8 or float"),
])
def test_bad_arrays(tmp_path, array, message):
    np.savez(tmp_path / "a.npz", images=array)
    with pytest.raises(DataError, match=message):
        load_dataset(f"npz:{tmp_path / 'a.npz'}")


def test_object_arrays_and_garbage_are_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="o.npy"):
        load_dataset(f"npz:{tmp_path / 'o.npy'}")
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="g.npz"):
        load_dataset(f"npz:{tmp_path / 'g.npz'}")


def test_unknown_names():
    with pytest.raises(DataError, match="toy:ring8"):
        load_dataset("cifar")
    with pytest.raises(DataError, match="unknown toy distribution"):
        load_dataset("toy:spiral")


# --- toy distributions -------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TOY_DISTRIBUTIONS))
def test_toy_samples_follow_the_definition(name):
    toy = TOY_DISTRIBUTIONS[name]
    x = toy.sample(40_000, torch.Generator().manual_seed(0)).double()
    assert x.shape == (40_000, toy.dim)
    # Mean of an equal-weight mixture is the mean of its means; with 40k samples the standard
    # error of the mean is below 0.015 for every toy (overall std <= 2.9), so 0.05 is > 3 SE.
    assert torch.allclose(x.mean(0), toy.means.mean(0), atol=0.05)
    # Each sample lies within 6 std of its nearest mode (fails only with probability ~1e-9 each).
    nearest = torch.cdist(x, toy.means).min(1).values
    assert (nearest < 6 * toy.stds.max() * math.sqrt(toy.dim)).all()
    first, again = (toy.sample(10, torch.Generator().manual_seed(1)) for _ in range(2))
    assert torch.equal(first, again)


def test_toy_log_prob_by_hand():
    toy = TOY_DISTRIBUTIONS["gauss1d"]
    for point in (4.0, 3.0, 5.7):
        by_hand = -0.5 * ((point - 4.0) / 0.5) ** 2 - math.log(0.5 * math.sqrt(2 * math.pi))
        assert toy.log_prob(torch.tensor([[point]], dtype=torch.float64)).item() == pytest.approx(by_hand, rel=1e-12)


@pytest.mark.parametrize("name", ["gauss1d", "mixture1d"])
def test_1d_densities_integrate_to_one(name):
    grid = torch.linspace(-10, 10, 200_001, dtype=torch.float64)
    density = TOY_DISTRIBUTIONS[name].log_prob(grid[:, None]).exp()
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("container", ["npy", "npz"])
def test_an_array_header_claiming_10_to_the_12_images_is_refused_before_allocating(tmp_path, container):
    np.save(tmp_path / "small.npy", np.zeros((4, 8, 8), np.uint8))
    raw = (tmp_path / "small.npy").read_bytes()
    header = raw[:128].decode("latin1").replace("(4, 8, 8), }", "(1000000000000, 8, 8), }")
    header = header.replace(" " * 12 + "\n", "\n", 1)  # keep the header length
    lying = header.encode("latin1") + raw[128:]
    path = tmp_path / f"lie.{container}"
    if container == "npy":
        path.write_bytes(lying)
    else:
        import zipfile
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("images.npy", lying)
    with pytest.raises(DataError, match=r"claims shape \(1000000000000, 8, 8\)"):
        load_dataset(f"npz:{path}")


def test_fortran_order_and_several_arrays(tmp_path):
    images = np.asfortranarray(np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8))
    np.save(tmp_path / "f.npy", images)
    assert torch.equal(load_dataset(f"npz:{tmp_path / 'f.npy'}").images[:, 0], torch.from_numpy(np.ascontiguousarray(images)))
    np.savez(tmp_path / "two.npz", a=images, b=images)
    with pytest.raises(DataError, match="name the images array 'images'"):
        load_dataset(f"npz:{tmp_path / 'two.npz'}")
    np.savez(tmp_path / "named.npz", labels=np.zeros(2), images=images)
    assert len(load_dataset(f"npz:{tmp_path / 'named.npz'}")) == 2
