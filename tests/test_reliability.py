"""Faults: SIGKILL at random moments, signals, unwritable folders, fuzzed inputs. Nothing is lost
beyond one checkpoint interval, and every bad input is a gankit error naming its file."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import configs
from gankit import checkpoint, runs
from gankit.cli import main
from gankit.config import TrainConfig
from gankit.data import load_dataset
from gankit.errors import ConfigError, DataError, GankitError
from gankit.train import train

SRC = str(Path(__file__).parents[1] / "src")
TOY_ARGS = [*configs.TOY_ARGS, "--device", "cpu"]
KILL_CYCLES = 10  # start-or-resume-then-SIGKILL cycles (docs/reliability.md states this number)
KILL_INTERVAL = 320  # --checkpoint-every of the SIGKILL test, in images
# Only a guard against a hung process, never a claim: a loaded machine may be slow.
HANG = 600


def wait_for(condition, proc: subprocess.Popen, what: str) -> None:
    """Poll until condition() holds; fail if the process ends first (with its error output)."""
    deadline = time.monotonic() + HANG
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"gankit ended (exit {proc.returncode}) before {what}: {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"hung: no {what} after {HANG} s"
        time.sleep(0.05)


def logged_images(run: Path) -> list[int]:
    """The images count of each per-iteration row in the complete lines of metrics.jsonl (a
    killed or running process may have left half a line at the end)."""
    text = (run / "metrics.jsonl").read_text() if (run / "metrics.jsonl").is_file() else ""
    rows = [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]
    return [r["images"] for r in rows if "event" not in r]


def gankit(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen([sys.executable, "-m", "gankit", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # 10 start-kill cycles of a gankit process, then a run to the end: about 35 s
def test_sigkill_at_random_moments_never_corrupts_and_resume_finishes(tmp_path):
    """KILL_CYCLES cycles of start-or-resume, then SIGKILL at a random moment of training; then
    run to the end. The moments are random in time, so where in an iteration or a checkpoint
    write each kill lands varies; what is checked holds wherever it lands, or if the process had
    ended before the kill."""
    run, interval = tmp_path / "run", KILL_INTERVAL
    rng = random.Random(0)
    last = run / "checkpoints" / "last.pt"
    progress = []
    for cycle in range(KILL_CYCLES):
        if cycle:
            proc = gankit("train", "--resume", str(run))
        else:
            proc = gankit("train", *TOY_ARGS, "--max-images", "1000000000", "--checkpoint-every",
                          str(interval), "--out", str(run), "--overwrite")
        proc.stderr.readline()  # "gankit: training ...": start-up (imports, data) is over
        if not cycle:  # the first kill after the first checkpoint: every cycle has one to resume
            wait_for(last.is_file, proc, "the first checkpoint")
        time.sleep(rng.uniform(0.3, 2.5))
        proc.kill()  # does nothing to a process that has already ended
        _, err = proc.communicate(timeout=HANG)
        if proc.returncode != -signal.SIGKILL:  # it ended before the kill: only by finishing, and it
            assert proc.returncode == 0, err    # cannot finish 10^9 images, so this is a crash
        record = checkpoint.load(last)  # never corrupt, wherever the kill came
        saved = record["progress"]["images_seen"]
        assert saved % interval == 0 and saved > 0
        # Lost: at most one interval. Every row the killed process had written (it flushes them
        # before each checkpoint) lies within one interval of the checkpoint it left.
        assert max(logged_images(run)) <= saved + interval, (saved, max(logged_images(run)))
        progress.append(saved)
    assert progress == sorted(progress), "every resume kept the earlier progress"
    total = progress[-1] + 2 * interval
    proc = gankit("train", "--resume", str(run), "--max-images", str(total))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    record = checkpoint.load(last)
    assert (record["progress"]["images_seen"], record["progress"]["iterations"]) == (total, total // 16)
    images = [r["images"] for r in runs.read_metrics(run) if "event" not in r]  # rows, not warnings
    assert images == list(range(16, total + 1, 16)), "one metrics row per iteration, none repeated or lost"
    # A kill during a write leaves its temp file (last.pt was never touched); resume removes it.
    assert not [p for p in (run / "checkpoints").iterdir() if p.name != "last.pt"], "no temp files left"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_save_a_checkpoint_and_exit_with_128_plus_signal(tmp_path, sig):
    run = tmp_path / "run"
    proc = gankit("train", *TOY_ARGS, "--max-images", "100000000", "--out", str(run))
    # Training runs (its rows are written in blocks) before the signal is sent.
    wait_for(lambda: len(logged_images(run)) > 0, proc, "a metrics row")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 128 + sig
    assert f"{signal.Signals(sig).name} received" in err and "Traceback" not in err
    record = checkpoint.load(run / "checkpoints" / "last.pt")
    assert record["progress"]["images_seen"] > 0
    assert runs.read_metrics(run)[-1]["images"] == record["progress"]["images_seen"]


def test_unwritable_run_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert main(["train", *TOY_ARGS, "--max-images", "32", "--out", str(tmp_path / "file" / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gankit: error: cannot create run folder") and str(tmp_path / "file" / "run") in err
    assert len(err.splitlines()) == 1, err


def test_a_full_disk_mid_run_keeps_the_earlier_checkpoint(tmp_path, monkeypatch):
    config = TrainConfig(data="toy:ring8", model="mlp", g_width=16, d_width=16, batch_size=16,
                         max_images=64, checkpoint_every=32, device="cpu")
    train(config, tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    import gankit.checkpoint as ckpt

    def full(obj, f, *args, **kwargs):  # the disk fills up half-way through the write
        f.write(b"half a checkpoint")
        f.flush()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(GankitError, match="No space left on device") as err:
        from gankit.train import resume
        resume(tmp_path / "run", {"max_images": 128})
    assert str(last) in str(err.value)
    assert last.read_bytes() == before
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt"], "no temp file left"
    assert not list((tmp_path / "run").rglob("*.tmp-*"))


def test_resume_with_different_data_shape_is_refused(tmp_path):
    from fakes import make_npz
    from gankit.errors import CheckpointError
    from gankit.train import resume

    data = make_npz(tmp_path / "d.npz", n=16, size=28)
    config = TrainConfig(data=f"npz:{data}", model="mlp", g_width=8, d_width=8, batch_size=8,
                         max_images=16, device="cpu")
    train(config, tmp_path / "run")
    make_npz(data, n=16, size=32)  # the file changed under the run
    with pytest.raises(CheckpointError, match=r"shape \(1, 28, 28\).*\(1, 32, 32\)") as err:
        resume(tmp_path / "run", {"max_images": 32})
    assert str(tmp_path / "run" / "checkpoints" / "last.pt") in str(err.value)


# --- fuzzed inputs -----------------------------------------------------------------------------

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# The fuzzing tests are marked slow: `make test-fast` leaves them to `make test`.


@pytest.mark.slow
@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["a.png", "b.jpg", "c.jpeg"]))
def test_fuzzed_image_files_give_data_errors(tmp_path_factory, data, name):
    folder = tmp_path_factory.mktemp("imgs")
    (folder / name).write_bytes(data)
    with pytest.raises(DataError, match=name):
        load_dataset(f"folder:{folder}", image_size=8)


@pytest.mark.slow
@FUZZ
@given(st.binary(max_size=400), st.sampled_from(["x.npz", "x.npy"]))
def test_fuzzed_array_files_give_data_errors(tmp_path_factory, data, name):
    # Without numpy's magic bytes (hypothesis does not make them up), no file is an array file.
    path = tmp_path_factory.mktemp("arr") / name
    path.write_bytes(data)
    with pytest.raises(DataError) as err:
        load_dataset(f"npz:{path}")
    assert str(path) in str(err.value)


@pytest.mark.slow
@FUZZ
@given(st.binary(min_size=1, max_size=64))
def test_fuzzed_npy_payloads_after_a_valid_header(tmp_path_factory, tail):
    path = tmp_path_factory.mktemp("npy") / "x.npy"
    np.save(path, np.zeros((4, 8, 8), np.uint8))
    raw = path.read_bytes()
    path.write_bytes(raw[:128] + tail)  # header intact, payload wrong
    with pytest.raises(DataError, match="x.npy"):
        load_dataset(f"npz:{path}")


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=3), max_leaves=5)


@pytest.mark.slow
@FUZZ
@given(st.dictionaries(st.sampled_from(list(TrainConfig.__dataclass_fields__) + ["bogus"]), JSON_VALUES, max_size=6))
def test_fuzzed_configs_give_config_errors(values):
    try:
        config = TrainConfig.from_dict(values)
    except ConfigError:
        return
    json.dumps(config.to_dict())  # what was accepted is a valid, serialisable config
    config.validate()
