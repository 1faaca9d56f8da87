"""gankit.data: IDX reader, (Fashion-)MNIST discovery and checked downloads, image folders,
.npz/.npy arrays, toy distributions. Nothing here touches the network."""

from __future__ import annotations

import gzip
import math
import shutil
import struct
import tracemalloc
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fakes import folder_with_a_broken_image
from gankit.cache import cache_dir
from gankit.data import (
    IMAGE_NAMES,
    ImageDataset,
    ToyDataset,
    class_frequencies,
    load_dataset,
    mnist,
)
from gankit.data.idx import read_idx, read_idx_images, read_idx_labels
from gankit.data.images import load_folder, load_npz
from gankit.data.toy import TOY_DISTRIBUTIONS, ToyDistribution
from gankit.errors import DataError
from gankit.files import sha256

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")
REAL_DOWNLOAD = mnist._download  # before any test replaces it
CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
         np.float64: 0x0E}


# --- helpers ---------------------------------------------------------------------------------

def idx_header(code: int, dims: tuple[int, ...]) -> bytes:
    return struct.pack(">HBB", 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def idx_bytes(array: np.ndarray) -> bytes:
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    return idx_header(CODES[array.dtype.type], array.shape) + big_endian.tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_idx_dataset(directory: Path, n_train: int = 5, n_test: int = 3, gz: bool = True) -> Path:
    """The four (Fashion-)MNIST files with n_train / n_test random 28x28 images."""
    rng = np.random.default_rng(n_train)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write(directory / f"{prefix}-images-idx3-ubyte{suffix}",
              idx_bytes(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)), gz)
        write(directory / f"{prefix}-labels-idx1-ubyte{suffix}",
              idx_bytes(rng.integers(0, 10, n, dtype=np.uint8)), gz)
    return directory


@pytest.fixture
def isolated(monkeypatch, isolated_cache):
    """No system copies, no network; with conftest's private user cache and no $GANKIT_DATA,
    only what a test puts there is found."""
    monkeypatch.setattr(mnist, "SYSTEM_DIRS", {"fashion-mnist": [], "mnist": []})

    def no_network(url, dest, timeout):
        raise AssertionError(f"unexpected download of {url}")

    monkeypatch.setattr(mnist, "_download", no_network)
    return isolated_cache / "gankit"


def serve_from(directory: Path, calls: list[str] | None = None):
    """A stand-in for mnist._download that copies the file named by the URL from directory."""
    def download(url: str, dest: Path, timeout: float) -> None:
        assert timeout > 0
        if calls is not None:
            calls.append(url)
        shutil.copyfile(directory / url.rsplit("/", 1)[1], dest)
    return download


def checksums_of(directory: Path) -> dict[str, str]:
    return {p.name: sha256(p) for p in directory.iterdir()}


# --- IDX -------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", list(CODES))
@pytest.mark.parametrize("shape", [(7,), (2, 3), (2, 3, 4), (1, 2, 3, 2)])
def test_idx_round_trip(tmp_path, gz, dtype, shape):
    array = (np.arange(math.prod(shape)) * 37 - 50).astype(dtype).reshape(shape)
    out = read_idx(write(tmp_path / "a", idx_bytes(array), gz))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert np.array_equal(out, array)
    out[...] = 0  # writable, so torch.from_numpy will not warn


def test_gzip_is_detected_by_content_not_by_name(tmp_path):
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(read_idx(write(tmp_path / "plain.gz", idx_bytes(array))), array)
    assert np.array_equal(read_idx(write(tmp_path / "packed.idx", idx_bytes(array), gz=True)), array)


def test_images_and_labels_check_their_magic(tmp_path):
    images = write(tmp_path / "i.gz", idx_bytes(np.zeros((2, 28, 28), np.uint8)), gz=True)
    labels = write(tmp_path / "l.gz", idx_bytes(np.zeros(2, np.uint8)), gz=True)
    assert read_idx_images(images).shape == (2, 28, 28)
    assert read_idx_labels(labels).shape == (2,)
    with pytest.raises(DataError) as err:
        read_idx_images(labels)
    assert str(err.value).startswith(f"not an IDX image file (magic 0x00000801, expected 0x00000803): {labels}")
    with pytest.raises(DataError, match=r"not an IDX label file \(magic 0x00000803, expected 0x00000801\)"):
        read_idx_labels(images)
    floats = write(tmp_path / "f", idx_bytes(np.zeros((2, 2, 2), np.float32)))
    with pytest.raises(DataError, match=r"magic 0x00000d03, expected 0x00000803"):
        read_idx_images(floats)


@pytest.mark.parametrize("data, message", [
    (b"", "shorter than its 4-byte header"),
    (b"\x00\x00\x08", "shorter than its 4-byte header"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "first two bytes must be zero"),
    (b"\x00\x00\x07\x01" + b"\x00" * 8, "unknown type code 0x07"),
    (b"\x00\x00\x08\x00", "0 dimensions, expected 1 to 4"),
    (b"\x00\x00\x08\x05" + b"\x00" * 20, "5 dimensions, expected 1 to 4"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
])
@pytest.mark.parametrize("gz", [False, True])
def test_bad_headers_name_the_file(tmp_path, data, message, gz):
    path = write(tmp_path / "bad", data, gz)
    with pytest.raises(DataError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_payload(tmp_path, gz):
    good = idx_bytes(np.zeros((3, 4, 4), np.uint8))  # 48 payload bytes
    with pytest.raises(DataError, match=r"is truncated: its header claims shape \(3, 4, 4\) = 48 "
                                        r"payload bytes, the file holds 43") as err:
        read_idx(write(tmp_path / "t", good[:-5], gz))
    assert str(tmp_path / "t") in str(err.value)


@pytest.mark.parametrize("gz", [False, True])
def test_trailing_bytes(tmp_path, gz):
    good = idx_bytes(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(DataError, match="has trailing data: .* 48 payload bytes, the file holds (at least )?49"):
        read_idx(write(tmp_path / "x", good + b"\x00", gz))


@pytest.mark.parametrize("gz", [False, True])
def test_a_header_claiming_10_to_the_12_images_is_refused_without_allocating(tmp_path, gz):
    # 10**6 x 10**6 one-byte items (the most a 2-D header can claim is ~1.8e19): 1 TB claimed.
    # What is checked is memory, not time: a reader that allocated what the header claims, or
    # read more than the file holds, would exceed the 16 MiB peak. (No time limit: tracemalloc
    # slows every allocation, and a loaded machine is slow.)
    path = write(tmp_path / "huge", idx_header(0x08, (10**6, 10**6)) + b"\x00" * 4096, gz)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="is truncated: .*1000000000000 payload bytes"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # numpy and Python allocations are both traced


def test_missing_file_and_directory_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="cannot read IDX file .*nope"):
        read_idx(tmp_path / "nope")
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(tmp_path)


def test_corrupt_gzip_stream_is_a_data_error(tmp_path):
    packed = bytearray(gzip.compress(idx_bytes(np.arange(500, dtype=np.int16))))
    packed[20:30] = b"\xff" * 10  # inside the deflate stream
    with pytest.raises(DataError, match="IDX file"):
        read_idx(write(tmp_path / "c.gz", bytes(packed)))


@pytest.mark.slow  # fuzzing
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200), gz=st.booleans())
def test_arbitrary_bytes_give_an_array_or_a_data_error(tmp_path, data, gz):
    path = write(tmp_path / "fuzz", data, gz)
    try:
        out = read_idx(path)
    except DataError as exc:
        assert str(path) in str(exc)
        return
    assert isinstance(out, np.ndarray) and 1 <= out.ndim <= 4


_VALID_IMAGES = np.arange(5 * 28 * 28).astype(np.uint8).reshape(5, 28, 28)
_VALID_GZ = gzip.compress(idx_bytes(_VALID_IMAGES))


def test_every_truncation_of_a_gzipped_idx_file_is_a_data_error(tmp_path):
    # The gzip trailer (CRC and size) is the last 8 bytes, so every strict prefix is damaged.
    # All of them (a few hundred), not a sample: each read takes well under a millisecond.
    path = tmp_path / "cut.gz"
    for cut in range(len(_VALID_GZ)):
        path.write_bytes(_VALID_GZ[:cut])
        with pytest.raises(DataError) as err:
            read_idx_images(path)
        assert str(path) in str(err.value), (cut, str(err.value))


@pytest.mark.slow  # fuzzing
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0, max_value=len(_VALID_GZ) - 1), value=st.integers(0, 255))
def test_corrupted_gzip_bytes_give_the_original_array_or_a_data_error(tmp_path, position, value):
    # One byte changed: either the reader notices (a bad header, a broken deflate stream, a CRC
    # or length mismatch in the trailer: a DataError naming the file), or the byte was one gzip
    # does not check (the value it had, the time stamp, the OS byte) and the images are the
    # original ones. Never different images: the CRC-32 covers every uncompressed byte.
    # (Tried once for every position and all 256 values, on this file: no third outcome.)
    damaged = bytearray(_VALID_GZ)
    damaged[position] = value
    path = write(tmp_path / "bit.gz", bytes(damaged))
    try:
        out = read_idx(path)
    except DataError as exc:
        assert str(path) in str(exc)
        return
    assert np.array_equal(out, _VALID_IMAGES) and out.dtype == np.uint8


# --- (Fashion-)MNIST discovery -----------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_found_in_data_dir(tmp_path, isolated, gz):
    fake_idx_dataset(tmp_path / "d", n_train=5, n_test=3, gz=gz)
    data = load_dataset("mnist", data_dir=tmp_path / "d")
    assert isinstance(data, ImageDataset) and data.name == "mnist"
    assert data.images.shape == (5, 1, 28, 28) and data.images.dtype == torch.uint8
    assert data.images.is_contiguous() and data.shape == (1, 28, 28) and len(data) == 5
    assert str(tmp_path / "d") in data.source
    images, labels, _ = mnist.load_split("mnist", "test", tmp_path / "d")
    assert images.shape == (3, 28, 28) and labels.shape == (3,) and labels.dtype == np.uint8
    raw = read_idx(tmp_path / "d" / ("t10k-images-idx3-ubyte" + (".gz" if gz else "")))
    assert np.array_equal(images, raw)


def test_found_in_data_dir_subfolder_named_after_the_dataset(tmp_path, isolated):
    fake_idx_dataset(tmp_path / "d" / "fashion-mnist", n_train=4)
    assert mnist.find_files("fashion-mnist", tmp_path / "d") == tmp_path / "d" / "fashion-mnist"
    assert mnist.find_files("mnist", tmp_path / "d") is None
    assert len(load_dataset("fashion-mnist", data_dir=tmp_path / "d")) == 4


def test_found_through_gankit_data(tmp_path, isolated, monkeypatch):
    fake_idx_dataset(tmp_path / "env" / "fashion-mnist", n_train=6)
    fake_idx_dataset(tmp_path / "env", n_train=7)  # $GANKIT_DATA itself comes first
    monkeypatch.setenv("GANKIT_DATA", str(tmp_path / "env"))
    assert mnist.find_files("fashion-mnist") == tmp_path / "env"
    assert len(load_dataset("fashion-mnist")) == 7
    (tmp_path / "env" / "train-images-idx3-ubyte.gz").unlink()  # incomplete: the subfolder wins
    assert mnist.find_files("fashion-mnist") == tmp_path / "env" / "fashion-mnist"
    assert len(load_dataset("fashion-mnist")) == 6


def test_search_order(tmp_path, isolated, monkeypatch):
    system = fake_idx_dataset(tmp_path / "system", n_train=2)
    monkeypatch.setattr(mnist, "SYSTEM_DIRS", {"fashion-mnist": [system], "mnist": []})
    assert len(load_dataset("fashion-mnist")) == 2
    fake_idx_dataset(isolated / "fashion-mnist", n_train=3)  # user cache beats the system copy
    assert len(load_dataset("fashion-mnist")) == 3
    monkeypatch.setenv("GANKIT_DATA", str(fake_idx_dataset(tmp_path / "env", n_train=4)))
    assert len(load_dataset("fashion-mnist")) == 4
    assert len(load_dataset("fashion-mnist", data_dir=fake_idx_dataset(tmp_path / "arg", n_train=5))) == 5
    # A folder the user names is the only place looked in: --data-dir, else $GANKIT_DATA.
    assert mnist.search_dirs("fashion-mnist", tmp_path / "arg") == [tmp_path / "arg", tmp_path / "arg" / "fashion-mnist"]
    assert mnist.search_dirs("fashion-mnist") == [tmp_path / "env", tmp_path / "env" / "fashion-mnist"]
    monkeypatch.delenv("GANKIT_DATA")
    assert mnist.search_dirs("fashion-mnist") == [isolated / "fashion-mnist", system]
    with pytest.raises(DataError, match="downloads disabled"):
        load_dataset("mnist", download=False)  # the fashion-mnist cache and system copy are not mnist


def truncated_images(directory: Path) -> Path:
    """A plain train-images-idx3-ubyte cut short, as a failed copy leaves it."""
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    return write(directory / "train-images-idx3-ubyte", data[: len(data) // 2])


@pytest.mark.parametrize("how", ["--data-dir", "GANKIT_DATA"])
def test_a_named_folder_missing_files_is_refused_not_passed_over(tmp_path, isolated, monkeypatch, how):
    # A complete copy elsewhere (Debian's, say) must not be used instead of the folder named.
    monkeypatch.setattr(mnist, "SYSTEM_DIRS", {"fashion-mnist": [fake_idx_dataset(tmp_path / "system")], "mnist": []})
    bad = truncated_images(tmp_path / "mine")
    data_dir = tmp_path / "mine" if how == "--data-dir" else None
    if how == "GANKIT_DATA":
        monkeypatch.setenv("GANKIT_DATA", str(tmp_path / "mine"))
    for download in (True, False):  # nothing is downloaded either (the fixture fails any download)
        with pytest.raises(DataError) as err:
            load_dataset("fashion-mnist", data_dir=data_dir, download=download)
        message = str(err.value)
        assert f"{tmp_path / 'mine'} (from {'--data-dir' if data_dir else '$GANKIT_DATA'}" in message
        assert "but not train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte" in message
        assert f"looked in {tmp_path / 'mine'} and {tmp_path / 'mine' / 'fashion-mnist'}" in message
        assert f"Also: IDX file {bad} is truncated" in message, message
        assert "\n" not in message
    fake_idx_dataset(tmp_path / "mine" / "fashion-mnist", n_train=6)  # a complete subfolder is used
    assert len(load_dataset("fashion-mnist", data_dir=data_dir)) == 6


def test_a_named_folder_with_a_corrupt_file_names_it(tmp_path, isolated, monkeypatch):
    monkeypatch.setattr(mnist, "SYSTEM_DIRS", {"fashion-mnist": [fake_idx_dataset(tmp_path / "system")], "mnist": []})
    mine = fake_idx_dataset(tmp_path / "mine")
    (mine / "train-images-idx3-ubyte.gz").unlink()
    bad = truncated_images(mine)
    with pytest.raises(DataError, match=f"IDX file {bad} is truncated"):
        load_dataset("fashion-mnist", data_dir=mine)


@pytest.mark.parametrize("how", ["--data-dir", "GANKIT_DATA"])
def test_an_empty_named_folder_is_where_the_download_goes(tmp_path, isolated, monkeypatch, how):
    served = fake_idx_dataset(tmp_path / "served", n_train=3)
    monkeypatch.setitem(mnist.SHA256, "mnist", checksums_of(served))
    monkeypatch.setattr(mnist, "_download", serve_from(served))
    fake_idx_dataset(isolated / "mnist", n_train=9)  # the user cache is not looked in
    data_dir = tmp_path / "mine" if how == "--data-dir" else None
    if how == "GANKIT_DATA":  # one $GANKIT_DATA serves both datasets: downloads go to its NAME subfolder
        monkeypatch.setenv("GANKIT_DATA", str(tmp_path / "mine"))
    data = load_dataset("mnist", data_dir=data_dir)
    where = tmp_path / "mine" / ("" if data_dir else "mnist")
    assert len(data) == 3 and str(where / "train-images-idx3-ubyte.gz") in data.source


def test_an_interrupted_download_into_a_named_folder_is_completed(tmp_path, isolated, monkeypatch):
    served = fake_idx_dataset(tmp_path / "served", n_train=3)
    monkeypatch.setitem(mnist.SHA256, "mnist", checksums_of(served))
    calls: list[str] = []
    monkeypatch.setattr(mnist, "_download", serve_from(served, calls))
    write(tmp_path / "mine" / "t10k-labels-idx1-ubyte.gz", (served / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert len(load_dataset("mnist", data_dir=tmp_path / "mine")) == 3
    assert len(calls) == 3 and not any("t10k-labels" in url for url in calls)
    with pytest.raises(DataError, match="but not train-images-idx3-ubyte"):  # not downloads: the user's
        (tmp_path / "mine" / "train-images-idx3-ubyte.gz").unlink()
        (tmp_path / "mine" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"user's own"))
        load_dataset("mnist", data_dir=tmp_path / "mine")


def test_a_run_refuses_a_data_dir_it_cannot_use_and_names_the_files_it_trains_on(tmp_path, isolated, monkeypatch,
                                                                                  capsys):
    from gankit.cli import main

    system = fake_idx_dataset(tmp_path / "system", n_train=6)  # Debian's copy, say: not to be used
    monkeypatch.setattr(mnist, "SYSTEM_DIRS", {"fashion-mnist": [system], "mnist": []})
    mine, run = tmp_path / "mine", tmp_path / "run"
    truncated_images(mine)
    args = ["train", "--data", "fashion-mnist", "--data-dir", str(mine), "--model", "dcgan", "--g-width", "4",
            "--d-width", "4", "--latent-dim", "8", "--batch-size", "8", "--max-images", "8", "--device", "cpu",
            "--out", str(run)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"gankit: error: fashion-mnist: {mine} (from --data-dir") and "but not train-labels" in err
    assert not run.exists(), "refused before the run folder is made"
    fake_idx_dataset(mine, n_train=8, gz=False)  # now complete (its own, valid images file)
    assert main(args) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert f"from {mine / 'train-images-idx3-ubyte'}, {mine / 'train-labels-idx1-ubyte'} on cpu" in first


def test_cache_dir_defaults_to_home(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir("mnist") == tmp_path / ".cache" / "gankit" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("mnist") == tmp_path / "xdg" / "gankit" / "mnist"


def test_image_and_label_counts_must_match(tmp_path, isolated):
    d = fake_idx_dataset(tmp_path / "d", n_train=5)
    write(d / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(4, np.uint8)), gz=True)
    with pytest.raises(DataError, match="holds 5 images but .*train-labels-idx1-ubyte.gz holds 4 labels"):
        load_dataset("mnist", data_dir=d)


def test_swapped_files_are_reported(tmp_path, isolated):
    d = fake_idx_dataset(tmp_path / "d")
    shutil.copyfile(d / "train-labels-idx1-ubyte.gz", d / "train-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match=r"not an IDX image file \(magic 0x00000801"):
        load_dataset("mnist", data_dir=d)


def test_bad_split_and_name(tmp_path, isolated):
    fake_idx_dataset(tmp_path / "d")
    with pytest.raises(DataError, match="unknown split 'valid' for mnist; use train or test"):
        load_dataset("mnist", split="valid", data_dir=tmp_path / "d")
    with pytest.raises(DataError, match="unknown IDX dataset 'cifar10'"):
        mnist.load_split("cifar10", "train")


# --- downloads -------------------------------------------------------------------------------

def test_download_verifies_and_moves_into_the_cache(tmp_path, isolated, monkeypatch):
    served = fake_idx_dataset(tmp_path / "served", n_train=6)
    monkeypatch.setitem(mnist.SHA256, "mnist", checksums_of(served))
    calls: list[str] = []
    monkeypatch.setattr(mnist, "_download", serve_from(served, calls))
    path = mnist.fetch("mnist")
    assert path == isolated / "mnist"
    assert sorted(p.name for p in path.iterdir()) == sorted(mnist.SHA256["mnist"])  # no .part left
    assert calls == [mnist.MIRRORS["mnist"][0] + f for f in mnist.SHA256["mnist"]]
    assert len(load_dataset("mnist")) == 6
    assert mnist.fetch("mnist") == path and len(calls) == 4  # found now: no second download


def test_download_goes_to_data_dir_and_falls_back_to_the_second_mirror(tmp_path, isolated, monkeypatch):
    served = fake_idx_dataset(tmp_path / "served", n_train=3)
    monkeypatch.setitem(mnist.SHA256, "mnist", checksums_of(served))
    calls: list[str] = []
    copy = serve_from(served, calls)

    def first_mirror_down(url, dest, timeout):
        if url.startswith(mnist.MIRRORS["mnist"][0]):
            Path(dest).write_bytes(b"half a file")
            raise urllib.error.URLError("connection refused")
        copy(url, dest, timeout)

    monkeypatch.setattr(mnist, "_download", first_mirror_down)
    data = load_dataset("mnist", data_dir=tmp_path / "mine")
    assert len(data) == 3 and sorted(p.name for p in (tmp_path / "mine").iterdir()) == sorted(checksums_of(served))
    assert all(url.startswith(mnist.MIRRORS["mnist"][1]) for url in calls)
    assert not (isolated / "mnist").exists()


def test_an_interrupted_fetch_resumes_with_the_missing_files(tmp_path, isolated, monkeypatch):
    served = fake_idx_dataset(tmp_path / "served")
    monkeypatch.setitem(mnist.SHA256, "mnist", checksums_of(served))
    (isolated / "mnist").mkdir(parents=True)
    shutil.copyfile(served / "train-images-idx3-ubyte.gz", isolated / "mnist" / "train-images-idx3-ubyte.gz")
    calls: list[str] = []
    monkeypatch.setattr(mnist, "_download", serve_from(served, calls))
    mnist.fetch("mnist")
    assert len(calls) == 3 and not any("train-images" in url for url in calls)


def test_checksum_mismatch_discards_the_download(tmp_path, isolated, monkeypatch):
    served = fake_idx_dataset(tmp_path / "served")  # not the real files: every checksum differs
    monkeypatch.setattr(mnist, "_download", serve_from(served))
    with pytest.raises(DataError) as err:
        mnist.fetch("fashion-mnist")
    message = str(err.value)
    url = mnist.MIRRORS["fashion-mnist"][0] + "train-images-idx3-ubyte.gz"
    assert f"checksum mismatch for {url}" in message
    assert mnist.SHA256["fashion-mnist"]["train-images-idx3-ubyte.gz"] in message
    assert sha256(served / "train-images-idx3-ubyte.gz") in message
    assert list((isolated / "fashion-mnist").iterdir()) == []  # neither the file nor its temp copy


@pytest.mark.parametrize("failure", [urllib.error.URLError("no network"), TimeoutError("timed out"),
                                     ConnectionResetError("reset")])
def test_offline_error_says_how_to_get_fashion_mnist(tmp_path, isolated, monkeypatch, failure):
    def offline(url, dest, timeout):
        Path(dest).write_bytes(b"partial")
        raise failure

    monkeypatch.setattr(mnist, "_download", offline)
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist")
    message = str(err.value)
    assert "\n" not in message
    for part in ("apt-get install dataset-fashion-mnist", "--data-dir", "GANKIT_DATA",
                 mnist.MIRRORS["fashion-mnist"][0] + "t10k-labels-idx1-ubyte.gz",
                 str(isolated / "fashion-mnist")):
        assert part in message
    assert list((isolated / "fashion-mnist").iterdir()) == []  # no partial files


def test_offline_error_for_mnist_lists_the_urls_but_no_debian_package(tmp_path, isolated, monkeypatch):
    def offline(url, dest, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(mnist, "_download", offline)
    with pytest.raises(DataError, match="--data-dir DIR") as err:
        mnist.fetch("mnist", tmp_path / "d")
    assert "apt-get" not in str(err.value) and "ossci-datasets" in str(err.value)
    assert list((tmp_path / "d").iterdir()) == []


def test_no_download_when_disabled(isolated):
    with pytest.raises(DataError, match="fashion-mnist not found locally .*downloads disabled.*--data-dir"):
        load_dataset("fashion-mnist", download=False)  # the fixture's _download would fail loudly


def test_real_download_function_reads_a_local_url(tmp_path):
    source = write(tmp_path / "src.bin", bytes(range(256)) * 1000)
    mnist._download(source.as_uri(), tmp_path / "copy", timeout=5)
    assert (tmp_path / "copy").read_bytes() == source.read_bytes()
    with pytest.raises(urllib.error.URLError):
        mnist._download((tmp_path / "missing").as_uri(), tmp_path / "copy2", timeout=5)


def test_fetch_through_file_urls_with_the_real_download_function(tmp_path, isolated, monkeypatch):
    served = fake_idx_dataset(tmp_path / "served")
    monkeypatch.setattr(mnist, "_download", REAL_DOWNLOAD)
    monkeypatch.setitem(mnist.MIRRORS, "mnist", [(tmp_path / "gone").as_uri() + "/", served.as_uri() + "/"])
    monkeypatch.setitem(mnist.SHA256, "mnist", checksums_of(served))
    assert mnist.fetch("mnist") == isolated / "mnist"
    assert checksums_of(isolated / "mnist") == checksums_of(served)


def test_info(tmp_path, isolated, monkeypatch):
    record = mnist.info("mnist", tmp_path / "d")
    assert record["found"] is None and record["searched"][0] == str(tmp_path / "d")
    assert mnist.MIRRORS["mnist"][0] + "train-images-idx3-ubyte.gz" in record["urls"]
    d = fake_idx_dataset(tmp_path / "d", n_train=5, n_test=3)
    monkeypatch.setitem(mnist.SHA256, "mnist", {**checksums_of(d), "t10k-labels-idx1-ubyte.gz": "0" * 64})
    record = mnist.info("mnist", d)
    assert record["found"] == str(d)
    assert record["train"]["images"] == 5 and record["train"]["shape"] == [28, 28]
    assert record["test"]["images"] == 3
    assert [f["sha256_ok"] for f in record["files"].values()] == [True, True, True, False]
    assert record["files"]["train-images-idx3-ubyte"]["bytes"] == (d / "train-images-idx3-ubyte.gz").stat().st_size


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels, source = mnist.load_split("fashion-mnist", split, REAL_FASHION, download=False)
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and sorted(np.unique(labels).tolist()) == list(range(10))
        assert np.bincount(labels).tolist() == [n // 10] * 10  # Fashion-MNIST is balanced
        assert images.max() == 255 and images.min() == 0
        assert str(REAL_FASHION) in source
    assert all(f["sha256_ok"] is not False for f in mnist.info("fashion-mnist", REAL_FASHION)["files"].values())


# --- scaling, resizing, channels -------------------------------------------------------------

def test_uint8_scaling_is_exact():
    data = ImageDataset("x", torch.tensor([0, 255, 127, 128], dtype=torch.uint8).view(4, 1, 1, 1), "")
    out = data.to_float(data.images[:])
    assert out.dtype == torch.float32
    assert out.flatten().tolist()[:2] == [-1.0, 1.0]
    assert abs(out[2].item() + 1 / 255) < 1e-6 and abs(out[3].item() - 1 / 255) < 1e-6
    floats = ImageDataset("y", torch.tensor([-1.0, 0.25, 1.0]).view(3, 1, 1, 1), "")
    assert torch.equal(floats.to_float(floats.images[1:]), torch.tensor([0.25, 1.0]).view(2, 1, 1, 1))


@pytest.mark.parametrize("size", [32, 64])
def test_mnist_resize_and_channels(tmp_path, isolated, size):
    d = fake_idx_dataset(tmp_path / "d", n_train=4)
    base = load_dataset("mnist", data_dir=d)
    big = load_dataset("mnist", data_dir=d, image_size=size, channels=3)
    assert big.images.shape == (4, 3, size, size) and big.images.dtype == torch.uint8
    assert big.shape == (3, size, size) and big.images.is_contiguous()
    assert torch.equal(big.images[:, 0], big.images[:, 1]) and torch.equal(big.images[:, 0], big.images[:, 2])
    # Upsampling preserves the mean brightness up to rounding and edge effects.
    assert abs(big.images.float().mean() - base.images.float().mean()) < 2.0
    assert torch.equal(load_dataset("mnist", data_dir=d, image_size=28, channels=1).images, base.images)


def test_resizing_a_constant_image_keeps_it_constant(tmp_path, isolated):
    d = tmp_path / "d"
    fake_idx_dataset(d, n_train=2)
    write(d / "train-images-idx3-ubyte.gz", idx_bytes(np.full((2, 28, 28), 200, np.uint8)), gz=True)
    for size in (16, 32, 64):
        assert (load_dataset("mnist", data_dir=d, image_size=size).images == 200).all()


@pytest.mark.parametrize("image_size, channels", [(0, None), (-3, None), (32, 2), (2.5, None)])
def test_bad_image_size_or_channels(tmp_path, isolated, image_size, channels):
    fake_idx_dataset(tmp_path / "d")
    with pytest.raises(DataError, match="--image-size|--channels"):
        load_dataset("mnist", data_dir=tmp_path / "d", image_size=image_size, channels=channels)


# --- folders ---------------------------------------------------------------------------------

def _folder(tmp_path: Path) -> Path:
    """Three images of different sizes, formats and modes in nested folders (sorted order a, b, c)."""
    root = tmp_path / "imgs"
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.new("RGB", (40, 30), (255, 0, 0)).save(root / "a.png")
    Image.new("L", (20, 20), 128).save(root / "sub" / "b.JPG", quality=100)
    Image.new("RGB", (24, 36), (0, 0, 255)).save(root / "sub" / "deeper" / "c.jpeg", quality=100)
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_with_image_size(tmp_path):
    root = _folder(tmp_path)
    data = load_dataset(f"folder:{root}", image_size=16, split="test")  # split is ignored
    assert isinstance(data, ImageDataset) and data.name == f"folder:{root}"
    assert data.images.shape == (3, 3, 16, 16) and data.images.dtype == torch.uint8
    assert data.images[0, :, 8, 8].tolist() == [255, 0, 0]
    assert all(abs(v - 128) <= 2 for v in data.images[1, :, 8, 8].tolist())  # grey as RGB
    r, g, b = data.images[2, :, 8, 8].tolist()
    assert r < 10 and g < 10 and b > 245  # JPEG is lossy
    assert "3 images under" in data.source
    grey = load_folder(root, image_size=16, channels=1)
    assert grey.images.shape == (3, 1, 16, 16) and abs(int(grey.images[1, 0, 8, 8]) - 128) <= 2


def test_folder_native_size_and_automatic_channels(tmp_path):
    root = tmp_path / "grey"
    (root / "x").mkdir(parents=True)
    for i in range(3):
        Image.new("L", (12, 10), 60 * i).save(root / ("x" if i == 1 else "") / f"{i}.PNG")
    data = load_dataset(f"folder:{root}")
    assert data.images.shape == (3, 1, 10, 12)  # all grey -> 1 channel, native H x W kept
    assert data.images[:, 0, 0, 0].tolist() == [0, 120, 60]  # sorted: 0.PNG, 2.PNG, x/1.PNG
    assert load_folder(root, channels=3).images.shape == (3, 3, 10, 12)


def test_folder_resize_is_shorter_side_then_centre_crop(tmp_path):
    root = tmp_path / "stripes"
    root.mkdir()
    stripes = np.zeros((20, 60, 3), np.uint8)  # H=20, W=60: red | green | blue thirds
    stripes[:, :20, 0] = stripes[:, 20:40, 1] = stripes[:, 40:, 2] = 255
    Image.fromarray(stripes).save(root / "s.png")
    data = load_folder(root, image_size=20)
    assert data.images.shape == (1, 3, 20, 20)
    assert (data.images[0, 1] == 255).all() and (data.images[0, [0, 2]] == 0).all()
    # Folders and arrays of the same pixels resize identically.
    np.save(tmp_path / "s.npy", stripes[None])
    for size in (10, 20, 32):
        assert torch.equal(load_folder(root, image_size=size).images,
                           load_npz(tmp_path / "s.npy", image_size=size).images)


def test_sixteen_bit_pngs_are_scaled_not_clipped(tmp_path):
    root = tmp_path / "deep"
    root.mkdir()
    Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16)).save(root / "d.png")
    assert load_folder(root).images.flatten().tolist() == [0, 100, 255]


def test_folder_of_mixed_sizes_needs_image_size(tmp_path):
    root = _folder(tmp_path)
    with pytest.raises(DataError, match="pass --image-size") as err:
        load_dataset(f"folder:{root}")
    message = str(err.value)
    assert f"{root / 'a.png'} is 40x30" in message and f"{root / 'sub' / 'b.JPG'} is 20x20" in message


def test_folder_errors_name_the_folder(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match=f"folder:{tmp_path / 'empty'}: no .png/.jpg/.jpeg images"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="no .png/.jpg/.jpeg images"):
        load_dataset(f"folder:{tmp_path / 'text'}")
    with pytest.raises(DataError, match=f"folder:{tmp_path / 'nope'}: not a folder"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(f"folder:{(tmp_path / 'text' / 'a.txt')}")
    with pytest.raises(DataError, match="folder:PATH"):
        load_dataset("folder:")


def test_corrupt_images_are_named(tmp_path):
    root = folder_with_a_broken_image(tmp_path / "bad", b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(DataError, match=f"cannot read image {root / 'broken.png'}"):
        load_dataset(f"folder:{root}")
    # A valid header with truncated pixel data fails only on decoding (the second pass).
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(good)
    (root / "broken.png").write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match="broken.png"):
        load_dataset(f"folder:{root}")


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    root = tmp_path / "bomb"
    root.mkdir()
    Image.new("L", (64, 64)).save(root / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses > 2x this many pixels
    with pytest.raises(DataError, match=f"image {root / 'big.png'} is too large"):
        load_folder(root)


# --- arrays ----------------------------------------------------------------------------------

def test_npz_uint8_grey(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 9), dtype=np.uint8)
    np.savez(tmp_path / "u8.npz", images=images)
    data = load_dataset(f"npz:{tmp_path / 'u8.npz'}")
    assert data.name == f"npz:{tmp_path / 'u8.npz'}" and data.images.dtype == torch.uint8
    assert data.images.shape == (3, 1, 8, 9) and data.images.is_contiguous()
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))


def test_npz_float_in_0_1_maps_to_minus_1_1(tmp_path):
    images = np.zeros((2, 4, 4, 3), np.float64)
    images[0, 0, 0] = [0.0, 0.5, 1.0]
    images[1] = 1.0
    np.savez_compressed(tmp_path / "f.npz", x=images, labels=np.zeros(2))
    data = load_dataset(f"npz:{tmp_path / 'f.npz'}")
    assert data.images.dtype == torch.float32 and data.images.shape == (2, 3, 4, 4)
    assert data.images[0, :, 0, 0].tolist() == [-1.0, 0.0, 1.0]
    assert (data.images[1] == 1.0).all() and data.images.min() == -1.0
    assert torch.equal(data.to_float(data.images), data.images)


def test_npy_float_in_minus_1_1_is_kept_and_alpha_dropped(tmp_path):
    images = np.linspace(-1, 1, 2 * 5 * 5 * 4, dtype=np.float32).reshape(2, 5, 5, 4)
    np.save(tmp_path / "a.npy", images)
    data = load_npz(tmp_path / "a.npy")
    assert data.images.shape == (2, 3, 5, 5)
    assert torch.equal(data.images, torch.from_numpy(images[..., :3]).permute(0, 3, 1, 2))


def test_npz_resize_and_channels(tmp_path):
    np.savez(tmp_path / "rgb.npz", np.full((2, 10, 20, 3), 90, np.uint8))  # stored as arr_0
    assert load_npz(tmp_path / "rgb.npz", image_size=8).images.shape == (2, 3, 8, 8)
    grey = load_npz(tmp_path / "rgb.npz", image_size=8, channels=1).images
    assert grey.shape == (2, 1, 8, 8) and (grey == 90).all()


@pytest.mark.parametrize("array, message", [
    (np.full((2, 8, 8), 3.0, np.float32), r"\[0, 1\] or \[-1, 1\], found \[3, 3\]"),
    (np.full((2, 8, 8), -1.5, np.float64), r"\[0, 1\] or \[-1, 1\]"),
    (np.full((2, 8, 8), np.nan, np.float32), "NaN or Inf"),
    (np.array([[[0.5, np.inf]]]), "NaN or Inf"),
    (np.zeros((2, 8), np.uint8), "expected images"),
    (np.zeros((2, 8, 8, 3, 1), np.uint8), "expected images"),
    (np.zeros((2, 8, 8, 2), np.uint8), "expected images"),
    (np.zeros((0, 8, 8), np.uint8), "expected images"),
    (np.zeros((2, 8, 8), np.int64), "uint8 or float, got int64"),
    (np.zeros((2, 8, 8), bool), "uint8 or float, got bool"),
])
def test_bad_arrays(tmp_path, array, message):
    np.savez(tmp_path / "a.npz", images=array)
    with pytest.raises(DataError, match=message) as err:
        load_dataset(f"npz:{tmp_path / 'a.npz'}")
    assert str(tmp_path / "a.npz") in str(err.value)


def test_object_arrays_garbage_and_ambiguous_archives(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="o.npy: object arrays are not supported"):
        load_npz(tmp_path / "o.npy")
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="g.npz"):
        load_npz(tmp_path / "g.npz")
    np.savez(tmp_path / "two.npz", a=np.zeros((1, 2, 2), np.uint8), b=np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(DataError, match=r"holds arrays \['a', 'b'\]"):
        load_npz(tmp_path / "two.npz")
    with pytest.raises(DataError, match="no such file"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")


def test_a_lying_npy_header_is_refused_before_allocating(tmp_path):
    np.save(tmp_path / "small.npy", np.zeros((4, 8, 8), np.uint8))
    raw = (tmp_path / "small.npy").read_bytes()
    lying = raw.replace(b"(4, 8, 8), }", b"(10000000000, 8, 8), }").replace(b" " * 10 + b"\n", b"\n", 1)
    assert len(lying) == len(raw)
    (tmp_path / "lie.npy").write_bytes(lying)
    with zipfile.ZipFile(tmp_path / "lie.npz", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images.npy", lying)
    for path in (tmp_path / "lie.npy", tmp_path / "lie.npz"):
        with pytest.raises(DataError, match=r"claims shape \(10000000000, 8, 8\)"):
            load_npz(path)


@pytest.mark.slow  # fuzzing
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_arbitrary_array_files_give_a_dataset_or_a_data_error(tmp_path, data):
    path = write(tmp_path / "fuzz.npy", b"\x93NUMPY" + data)
    try:
        loaded = load_npz(path)
    except DataError as exc:
        assert str(path) in str(exc)
        return
    # It loaded (random bytes would have to make a valid header): then it holds the images
    # numpy reads from the file, (N, H, W) or (N, H, W, C) as (N, C, H, W).
    array = np.load(path, allow_pickle=False)
    assert loaded.images.shape[0] == array.shape[0] and tuple(loaded.images.shape[2:]) == array.shape[1:3]


# --- names -----------------------------------------------------------------------------------

def test_unknown_names_list_the_valid_ones():
    assert IMAGE_NAMES == ("fashion-mnist", "mnist")
    with pytest.raises(DataError) as err:
        load_dataset("cifar")
    for name in ("fashion-mnist", "mnist", "folder:PATH", "npz:PATH", "toy:ring8", "toy:grid25"):
        assert name in str(err.value)
    with pytest.raises(DataError, match="unknown toy distribution 'toy:spiral'; use one of toy:gauss1d"):
        load_dataset("toy:spiral")


# --- toy distributions -----------------------------------------------------------------------

def test_toy_definitions():
    ring, grid = TOY_DISTRIBUTIONS["ring8"], TOY_DISTRIBUTIONS["grid25"]
    assert set(TOY_DISTRIBUTIONS) == {"gauss1d", "mixture1d", "ring8", "grid25"}
    assert torch.allclose(ring.means.norm(dim=1), torch.full((8,), 2.0, dtype=torch.float64))
    assert torch.allclose(ring.means[2], torch.tensor([0.0, 2.0], dtype=torch.float64), atol=1e-12)
    assert (ring.stds == 0.02).all() and (grid.stds == 0.05).all()
    assert sorted(set(grid.means[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0] and len(grid.means) == 25
    for toy in TOY_DISTRIBUTIONS.values():
        assert toy.means.dtype == toy.stds.dtype == toy.weights.dtype == torch.float64
        assert toy.means.shape == (len(toy.weights), toy.dim)
        assert math.isclose(float(toy.weights.sum()), 1.0)


@pytest.mark.parametrize("name", list(TOY_DISTRIBUTIONS))
def test_toy_samples_follow_the_definition(name):
    toy = TOY_DISTRIBUTIONS[name]
    m = 200_000
    x = toy.sample(m, torch.Generator().manual_seed(0))
    assert x.shape == (m, toy.dim) and x.dtype == torch.float32
    x = x.double()
    # The components are at least 8 stds apart (mixture1d: 4 / 0.5), so assigning each sample
    # to its nearest mean misassigns a fraction < 1e-4, far below the tolerances below.
    nearest = torch.cdist(x, toy.means).argmin(1)
    for k in range(len(toy.weights)):
        w, mu, sd = float(toy.weights[k]), toy.means[k], float(toy.stds[k])
        xs = x[nearest == k]
        n = len(xs)
        # Tolerances are 5 standard errors (a false failure has probability ~6e-7 per check):
        # the share of samples is binomial, SE sqrt(w (1 - w) / m); the mean has SE sd / sqrt(n);
        # the sample std of a normal has SE sd / sqrt(2 n). float32 rounding (1e-7 relative) is
        # negligible against these.
        assert abs(n / m - w) < 5 * math.sqrt(w * (1 - w) / m) + 1e-12
        assert (xs.mean(0) - mu).abs().max() < 5 * sd / math.sqrt(n)
        assert (xs.std(0) - sd).abs().max() < 5 * sd / math.sqrt(2 * n)


def test_toy_sampling_is_reproducible_and_uses_only_the_generator():
    toy = TOY_DISTRIBUTIONS["ring8"]
    torch.manual_seed(1)
    first = toy.sample(100, torch.Generator().manual_seed(7))
    torch.manual_seed(2)  # the global RNG must not matter
    again = toy.sample(100, torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    assert not torch.equal(first, toy.sample(100, torch.Generator().manual_seed(8)))
    g = torch.Generator().manual_seed(7)
    assert torch.equal(toy.sample(100, g), first)
    assert not torch.equal(toy.sample(100, g), first)  # the generator moved on
    assert toy.sample(0, g).shape == (0, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_toy_samples_on_the_generators_device():
    g = torch.Generator(device="cuda").manual_seed(0)
    x = load_dataset("toy:grid25").sample(10, g)
    assert x.device.type == "cuda" and x.shape == (10, 2) and x.dtype == torch.float32
    assert TOY_DISTRIBUTIONS["grid25"].log_prob(x).shape == (10,)


def test_toy_dataset():
    data = load_dataset("toy:mixture1d")
    assert isinstance(data, ToyDataset) and data.name == "toy:mixture1d" and data.shape == (1,)
    assert data.sample(5, torch.Generator().manual_seed(0)).shape == (5, 1)
    assert load_dataset("toy:ring8").shape == (2,)


def _normal_log_pdf(x: float, mean: float, std: float) -> float:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


def test_toy_log_prob_by_hand():
    gauss = TOY_DISTRIBUTIONS["gauss1d"]
    points = [4.0, 3.0, 5.7, -1.0]
    got = gauss.log_prob(torch.tensor(points, dtype=torch.float64)[:, None])
    assert got.dtype == torch.float64 and got.shape == (4,)
    for value, point in zip(got.tolist(), points, strict=True):
        assert value == pytest.approx(_normal_log_pdf(point, 4.0, 0.5), rel=1e-12)
    mixture = TOY_DISTRIBUTIONS["mixture1d"]
    for point in (0.0, 2.0, -1.3):
        by_hand = math.log(0.5 * math.exp(_normal_log_pdf(point, -2, 0.5))
                           + 0.5 * math.exp(_normal_log_pdf(point, 2, 0.5)))
        x = torch.tensor([[point]], dtype=torch.float64)
        assert mixture.log_prob(x).item() == pytest.approx(by_hand, rel=1e-12)
    ring = TOY_DISTRIBUTIONS["ring8"]  # at a mean, the other modes contribute exp(-1e4)
    at_mode = math.log(1 / 8) - math.log(2 * math.pi * 0.02**2)
    assert ring.log_prob(ring.means[:1]).item() == pytest.approx(at_mode, rel=1e-12)
    assert torch.isfinite(ring.log_prob(torch.tensor([[50.0, 50.0]]))).all()  # logsumexp: no -inf


@pytest.mark.parametrize("name", ["gauss1d", "mixture1d"])
def test_1d_densities_integrate_to_one(name):
    # Step 1e-4 on [-10, 10]: the trapezoid error is ~h^2/12 * max|p''| < 1e-8, and the mass
    # outside the grid (> 12 stds from every mean) is < 1e-30.
    grid = torch.linspace(-10, 10, 200_001, dtype=torch.float64)
    density = TOY_DISTRIBUTIONS[name].log_prob(grid[:, None]).exp()
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-6)


def test_toy_distribution_checks_its_shapes():
    with pytest.raises(ValueError, match="do not fit"):
        ToyDistribution("bad", 2, torch.zeros(3, 1, dtype=torch.float64), torch.ones(3, dtype=torch.float64),
                        torch.full((3,), 1 / 3, dtype=torch.float64))


@pytest.mark.parametrize("container", ["npy", "npz"])
def test_a_lying_header_inside_an_npz_or_npy_is_refused_before_allocating(tmp_path, container):
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
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"claims shape \(1000000000000, 8, 8\)"):
            load_dataset(f"npz:{path}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, "refused before allocating: 64 TB claimed, under 16 MiB allocated"


def test_fortran_order_and_several_arrays(tmp_path):
    images = np.asfortranarray(np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8))
    np.save(tmp_path / "f.npy", images)
    assert torch.equal(load_dataset(f"npz:{tmp_path / 'f.npy'}").images[:, 0], torch.from_numpy(np.ascontiguousarray(images)))
    np.savez(tmp_path / "two.npz", a=images, b=images)
    with pytest.raises(DataError, match="name the images array 'images'"):
        load_dataset(f"npz:{tmp_path / 'two.npz'}")
    np.savez(tmp_path / "named.npz", labels=np.zeros(2), images=images)
    assert len(load_dataset(f"npz:{tmp_path / 'named.npz'}")) == 2


# --- labels ----------------------------------------------------------------------------------

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")


@pytest.mark.parametrize("name", IMAGE_NAMES)
@pytest.mark.parametrize("split, prefix", [("train", "train"), ("test", "t10k")])
def test_idx_labels_and_class_names(tmp_path, isolated, name, split, prefix):
    d = fake_idx_dataset(tmp_path / "d", n_train=7, n_test=4)
    data = load_dataset(name, split=split, data_dir=d)
    expected = read_idx_labels(d / f"{prefix}-labels-idx1-ubyte.gz")
    assert data.labels.dtype == torch.int64 and data.labels.shape == (len(data),)
    assert data.labels.tolist() == expected.tolist()
    assert data.classes == (FASHION_CLASSES if name == "fashion-mnist" else tuple("0123456789"))
    assert mnist.CLASSES[name] == data.classes
    freq = class_frequencies(data)
    assert freq.dtype == torch.float64 and freq.shape == (10,) and freq.sum().item() == pytest.approx(1.0)
    assert freq.tolist() == (np.bincount(expected, minlength=10) / len(expected)).tolist()


@pytest.mark.parametrize("gz", [False, True])
def test_an_idx_label_outside_0_9_names_the_file_and_the_value(tmp_path, isolated, gz):
    d = fake_idx_dataset(tmp_path / "d", n_train=5, gz=gz)
    label_file = d / f"train-labels-idx1-ubyte{'.gz' if gz else ''}"
    write(label_file, idx_bytes(np.array([1, 2, 10, 3, 4], np.uint8)), gz)
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", data_dir=d)
    message = str(err.value)
    assert str(label_file) in message and "label 10 at index 2" in message and "0..9" in message
    assert load_dataset("fashion-mnist", split="test", data_dir=d).labels is not None  # the other split is fine


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_labels():
    data = load_dataset("fashion-mnist", split="test", data_dir=REAL_FASHION, download=False)
    assert data.classes == FASHION_CLASSES and len(data.labels) == 10000
    assert class_frequencies(data).tolist() == [0.1] * 10


def _class_folder(root: Path) -> Path:
    """Classes bird (2 images, one nested deeper), cat (1), dog (2); grey value = 10 * image number."""
    layout = {"dog/1.png": 10, "bird/2.png": 20, "cat/3.png": 30, "dog/4.png": 40, "bird/deep/5.png": 50}
    for rel, value in layout.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (6, 6), value).save(root / rel)
    (root / "README.txt").write_text("not an image, so the top level holds no images")
    (root / "empty").mkdir()  # holds no images: not a class
    return root


def test_folder_class_subfolders(tmp_path):
    root = _class_folder(tmp_path / "pets")
    data = load_dataset(f"folder:{root}")
    assert data.classes == ("bird", "cat", "dog")
    # Same sorted-path order as an unlabelled folder: bird/2, bird/deep/5, cat/3, dog/1, dog/4.
    assert data.images[:, 0, 0, 0].tolist() == [20, 50, 30, 10, 40]
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == [0, 0, 1, 2, 2]
    assert "5 images under" in data.source and "3 classes" in data.source
    assert class_frequencies(data).tolist() == [0.4, 0.2, 0.4]
    again = load_folder(root, image_size=4, channels=3)  # deterministic, and resizing keeps the labels
    assert torch.equal(again.labels, data.labels) and again.classes == data.classes


def test_a_folder_with_images_at_the_top_level_is_unlabelled(tmp_path):
    root = _class_folder(tmp_path / "pets")
    Image.new("L", (6, 6), 60).save(root / "0.png")
    data = load_dataset(f"folder:{root}")
    assert data.labels is None and data.classes is None
    assert data.images[:, 0, 0, 0].tolist() == [60, 20, 50, 30, 10, 40]  # the order is unchanged
    assert data.source == f"6 images under {root.resolve()}"
    with pytest.raises(DataError, match=f"folder:{root} has no labels; --conditional needs .*folder:PATH "
                                        f"with class subfolders"):
        class_frequencies(data)
    flat = _folder(tmp_path)  # the mixed layout of the tests above
    assert load_folder(flat, image_size=8).labels is None


def test_a_folder_with_one_subfolder_is_one_class(tmp_path):
    (tmp_path / "f" / "only").mkdir(parents=True)
    for i in range(3):
        Image.new("L", (4, 4), i).save(tmp_path / "f" / "only" / f"{i}.png")
    data = load_folder(tmp_path / "f")
    assert data.classes == ("only",) and data.labels.tolist() == [0, 0, 0]


def _npz(path: Path, n: int = 4, **arrays) -> Path:
    np.savez(path, images=np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2), **arrays)
    return path


@pytest.mark.parametrize("key", ["y", "labels"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, np.uint64, np.float32])
def test_npz_labels(tmp_path, key, dtype):
    path = _npz(tmp_path / "a.npz", **{key: np.array([2, 0, 2, 1], dtype)})
    data = load_dataset(f"npz:{path}")
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == [2, 0, 2, 1]
    assert data.classes == ("0", "1", "2")
    assert data.source == f"{path.resolve()} (images 'images', labels '{key}')"
    assert class_frequencies(data).tolist() == [0.25, 0.25, 0.5]


def test_npz_label_keys_class_names_and_image_keys(tmp_path):
    y = np.array([1, 0, 1, 1])
    both = load_npz(_npz(tmp_path / "both.npz", y=y, labels=y.astype(np.float64)))
    assert both.labels.tolist() == [1, 0, 1, 1] and "labels 'y')" in both.source
    named = load_npz(_npz(tmp_path / "named.npz", y=y, classes=np.array(["cat", "dog", "emu"])))
    assert named.classes == ("cat", "dog", "emu")  # K is the names' count, not max label + 1
    assert named.source.endswith("(images 'images', labels 'y', classes 'classes')")
    assert class_frequencies(named).tolist() == [0.25, 0.75, 0.0]
    raw = load_npz(_npz(tmp_path / "raw.npz", labels=y, class_names=np.array([b"no", b"yes"])))
    assert raw.classes == ("no", "yes")
    # Without images / x / arr_0, the one array besides labels and class names is the images.
    np.savez(tmp_path / "data.npz", data=np.zeros((4, 2, 2), np.uint8), y=y, classes=np.array(["a", "b"]))
    data = load_npz(tmp_path / "data.npz")
    assert data.images.shape == (4, 1, 2, 2) and data.source.endswith("(images 'data', labels 'y', classes 'classes')")
    # Unlabelled sources: a .npy file, an archive without labels, one whose only array is 'y'.
    np.save(tmp_path / "a.npy", np.zeros((4, 2, 2), np.uint8))
    np.savez(tmp_path / "only_y.npz", y=np.zeros((4, 2, 2), np.uint8))
    for path in (tmp_path / "a.npy", _npz(tmp_path / "plain.npz"), tmp_path / "only_y.npz"):
        unlabelled = load_npz(path)
        assert unlabelled.labels is None and unlabelled.classes is None
        assert unlabelled.source == str(path.resolve())
        with pytest.raises(DataError, match="npz:PATH with a y/labels array"):
            class_frequencies(unlabelled)


@pytest.mark.parametrize("arrays, message", [
    ({"y": np.array([0, 1, 2])}, "labels 'y' hold 3 labels but there are 4 images"),
    ({"labels": np.arange(5)}, "labels 'labels' hold 5 labels but there are 4 images"),
    ({"y": np.array([0, 1.5, 2, 3])}, r"labels 'y' must be integers \(class indices\), found 1.5 at index 1"),
    ({"y": np.array([0, np.nan, 2, 3])}, "labels 'y' must be integers"),
    ({"y": np.array([0, 1, -1, 3])}, r"labels 'y' must be class indices 0..K-1, found -1 at index 2"),
    ({"y": np.array([0.0, -2.0, 1.0, 1.0])}, "labels 'y' must be class indices 0..K-1, found -2.0"),
    ({"y": np.zeros((4, 1), np.int64)}, r"labels 'y' must be 1-D .*got shape \(4, 1\)"),
    ({"y": np.array(3)}, r"labels 'y' must be 1-D"),
    ({"y": np.array([True, False, True, True])}, "labels 'y' must be integers .*got dtype bool"),
    ({"labels": np.array(["a", "b", "a", "b"])}, "labels 'labels' must be integers .*got dtype <U1"),
    ({"y": np.array([0, 1, 2, 10**9])}, "K <= 100000, found 1000000000 at index 3"),
    ({"y": np.array([0, 1, 0, 1]), "labels": np.array([1, 0, 1, 0])},
     "holds labels under both 'y' and 'labels' and they differ"),
    ({"y": np.array([0, 1, 2, 1]), "classes": np.array(["a", "b"])},
     "class names 'classes' name 2 classes but the labels go up to 2"),
    ({"y": np.array([0, 1, 0, 1]), "classes": np.array([[b"a", b"b"]])}, "class names 'classes' must be a 1-D string"),
    ({"y": np.array([0, 1, 0, 1]), "class_names": np.array([0, 1])}, "class names 'class_names' must be a 1-D string"),
    ({"y": np.array([0, 1, 0, 1]), "classes": np.array(["a", "b", "a"])}, r"repeat \['a'\]"),
    ({"y": np.array([0, 1, 0, 1]), "classes": np.array(["a", "b"]), "class_names": np.array(["a", "c"])},
     "holds classes under both 'classes' and 'class_names' and they differ"),
])
def test_bad_npz_labels_name_the_file(tmp_path, arrays, message):
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as err:
        load_dataset(f"npz:{path}")
    assert str(path) in str(err.value)


def test_npz_object_labels_are_refused_without_unpickling(tmp_path):
    path = _npz(tmp_path / "o.npz", y=np.array([0, 1, 0, 1], dtype=object))
    with pytest.raises(DataError, match=r"o.npz \(array 'y'\): object arrays are not supported"):
        load_npz(path)


def test_image_dataset_labels_are_optional_and_checked():
    images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    plain = ImageDataset("x", images, "here")  # the constructor as before
    assert plain.labels is None and plain.classes is None
    ok = ImageDataset("x", images, "here", torch.tensor([0, 1, 1]), ("a", "b"))
    assert ok.classes == ("a", "b")
    for labels, classes in [(torch.tensor([0, 1, 1]), None), (None, ("a",)), (torch.tensor([0, 1]), ("a", "b")),
                            (torch.tensor([0, 1, 1], dtype=torch.int32), ("a", "b")),
                            (torch.tensor([0, 1, 2]), ("a", "b")), (torch.tensor([0, -1, 1]), ("a", "b"))]:
        with pytest.raises(ValueError, match="x: labels"):
            ImageDataset("x", images, "here", labels, classes)


@pytest.mark.parametrize("name", list(TOY_DISTRIBUTIONS))
def test_toy_components_are_the_classes(name):
    data = load_dataset(f"toy:{name}")
    toy = data.distribution
    k = len(toy.weights)
    assert data.classes == tuple(str(i) for i in range(k))
    assert data.class_weights.dtype == torch.float64 and torch.equal(data.class_weights, toy.weights)
    assert torch.equal(class_frequencies(data), toy.weights)
    x, y = data.sample_labelled(4000, torch.Generator().manual_seed(3))
    assert x.shape == (4000, toy.dim) and x.dtype == torch.float32 and y.shape == (4000,) and y.dtype == torch.int64
    # The unconditional stream is unchanged: sample() draws exactly these x.
    assert torch.equal(x, data.sample(4000, torch.Generator().manual_seed(3)))
    assert torch.equal(x, toy.sample_labelled(4000, torch.Generator().manual_seed(3))[0])
    # Each point's label is its component: the nearest mean (mixture1d's means are 8 stds apart,
    # so a few of 4000 may lie nearer the other one; the 2-D ones are >= 38 stds apart).
    nearest = torch.cdist(x.double(), toy.means).argmin(1)
    agree = (nearest == y).double().mean().item()
    assert agree > 0.998 if name == "mixture1d" else agree == 1.0
    assert set(y.tolist()) == set(range(k))
    empty_x, empty_y = data.sample_labelled(0, torch.Generator())
    assert empty_x.shape == (0, toy.dim) and empty_y.shape == (0,) and empty_y.dtype == torch.int64


@pytest.mark.parametrize("name", ["mixture1d", "ring8"])
def test_toy_stream_is_the_unlabelled_one(name):
    # The draws as they were before labels: components, then float64 noise, from one generator.
    toy = TOY_DISTRIBUTIONS[name]
    g = torch.Generator().manual_seed(5)
    component = torch.multinomial(toy.weights, 300, replacement=True, generator=g)
    noise = torch.randn(300, toy.dim, generator=g, dtype=torch.float64)
    before = (toy.means[component] + noise * toy.stds[component, None]).float()
    g = torch.Generator().manual_seed(5)
    assert torch.equal(toy.sample(300, g), before)
    x, y = toy.sample_labelled(300, torch.Generator().manual_seed(5))
    assert torch.equal(x, before) and torch.equal(y, component)
