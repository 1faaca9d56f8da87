"""Checkpoints: round trip, atomic writes, and strict, code-free loading of untrusted files."""

import os
import pickle

import pytest
import torch

from gankit import checkpoint
from gankit.config import TrainConfig
from gankit.errors import CheckpointError
from gankit.models import build_models


def payload(config=None):
    config = config or TrainConfig(model="mlp", g_width=8, d_width=8, latent_dim=4)
    G, D = build_models(config, (1, 28, 28))
    opt = torch.optim.Adam(G.parameters())
    G(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {"config": config.to_json(), "data_shape": [1, 28, 28], "G": G.state_dict(),
            "D": D.state_dict(), "opt_G": opt.state_dict(), "opt_D": opt.state_dict(),
            "progress": {"images_seen": 5, "iterations": 1}, "rng": {"torch": torch.get_rng_state()}}


def test_round_trip(tmp_path):
    data = payload()
    checkpoint.save(tmp_path / "c.pt", data)
    record = checkpoint.load(tmp_path / "c.pt")
    assert record["format"] == checkpoint.FORMAT
    for key, tensor in data["G"].items():
        assert torch.equal(record["G"][key], tensor)
    assert record["opt_G"]["state"][0]["step"] == data["opt_G"]["state"][0]["step"]
    assert torch.equal(record["rng"]["torch"], data["rng"]["torch"])
    assert checkpoint.config_of(record, "c.pt") == TrainConfig.from_dict(
        __import__("json").loads(data["config"]))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp file left behind"


def test_a_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save(path, payload())
    before = path.read_bytes()

    def full_disk(obj, f, *args, **kwargs):  # the disk fills up half-way through the write
        f.write(b"half a checkpoint")
        f.flush()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device.*untouched") as err:
        checkpoint.save(path, payload())
    assert str(path) in str(err.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_atomic_write_renames_on_success_and_cleans_up_on_failure(tmp_path, monkeypatch):
    from gankit import runs
    from gankit.files import atomic_write

    path = tmp_path / "sub" / "f.txt"
    with atomic_write(path) as tmp:
        assert tmp.parent == path.parent and tmp.name == f".f.txt.tmp-{os.getpid()}"
        tmp.write_text("one")
        assert not path.exists()
    assert path.read_text() == "one"
    with pytest.raises(RuntimeError), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert path.read_text() == "one" and os.listdir(path.parent) == ["f.txt"]
    with atomic_write(tmp_path / "a.npz", suffix=".npz") as tmp:
        assert tmp.name.endswith(".npz")
        tmp.write_bytes(b"x")
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    with atomic_write(path, fsync=True) as tmp:
        tmp.write_text("two")
    assert path.read_text() == "two" and len(synced) == 2  # the file, then its folder
    # what a killed process leaves is what runs.remove_stale_temp_files removes
    left = tmp_path / f".last.pt.tmp-{os.getpid()}"
    with pytest.raises(KeyboardInterrupt), atomic_write(tmp_path / "last.pt"):
        left.write_bytes(b"half")
        assert runs.remove_stale_temp_files(tmp_path) == [left]
        raise KeyboardInterrupt


def test_truncated_file(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save(path, payload())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable gankit checkpoint") as err:
        checkpoint.load(path)
    assert str(path) in str(err.value)


def test_garbage_and_foreign_files(tmp_path):
    (tmp_path / "g.pt").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match=str(tmp_path / "g.pt")):
        checkpoint.load(tmp_path / "g.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a gankit checkpoint") as err:
        checkpoint.load(tmp_path / "other.pt")
    assert str(tmp_path / "other.pt") in str(err.value)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickled_code_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.pt", "wb") as f:
        pickle.dump({"format": checkpoint.FORMAT, "x": Exploit()}, f)
    torch.save({"format": checkpoint.FORMAT, "x": Exploit()}, "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(CheckpointError):
            checkpoint.load(name)
    assert not (tmp_path / "pwned").exists()


def test_newer_format_version(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save(path, payload())
    record = torch.load(path, weights_only=True)
    record["format_version"] = checkpoint.FORMAT_VERSION + 1
    torch.save(record, path)
    with pytest.raises(CheckpointError, match="newer than this gankit") as err:
        checkpoint.load(path)
    assert str(path) in str(err.value)


def test_missing_entries(tmp_path):
    path = tmp_path / "c.pt"
    data = payload()
    del data["opt_D"]
    checkpoint.save(path, data)
    with pytest.raises(CheckpointError, match="missing checkpoint entries.*opt_D") as err:
        checkpoint.load(path)
    assert str(path) in str(err.value)


def test_wrong_shapes_are_a_clear_error(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save(path, payload())
    record = checkpoint.load(path)
    other, _ = build_models(TrainConfig(model="mlp", g_width=16, d_width=8, latent_dim=4), (1, 28, 28))
    with pytest.raises(CheckpointError, match="the generator does not match this model config") as err:
        checkpoint.load_state(other, record["G"], "the generator", path)
    assert str(path) in str(err.value)


def test_resolve(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.resolve(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="no checkpoints/last.pt"):
        checkpoint.resolve(tmp_path)
    checkpoint.save(tmp_path / "checkpoints" / "last.pt", payload())
    assert checkpoint.resolve(tmp_path) == tmp_path / "checkpoints" / "last.pt"
