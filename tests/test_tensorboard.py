"""TensorBoard event files (tblog.py), read back with tensorboard's own reader, EventAccumulator:
the same steps and values as metrics.jsonl, none duplicated or stale after a resume or a rollback,
the same file from `gankit tensorboard RUN` for a run trained without it."""

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import gankit.train
from configs import TOY, TOY_ARGS, tiny_images
from gankit import checkpoint, runs, tblog
from gankit.cli import main
from gankit.config import RESUMABLE_CHANGES, TrainConfig
from gankit.errors import ConfigError
from gankit.train import STAT_NAMES, resume, train

NEEDS = "tensorboard is an optional extra (pip install 'gankit[tensorboard]'; make test installs it)"


def accumulator(run):
    """Everything in run/tensorboard, as TensorBoard's reader sees it."""
    module = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator", reason=NEEDS)
    # purge_orphaned_data=False: the reader must not hide repeated steps by purging them itself.
    acc = module.EventAccumulator(str(run / runs.TENSORBOARD), purge_orphaned_data=False,
                                  size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(run) -> dict[str, list[tuple[int, float]]]:
    acc = accumulator(run)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def texts(run, tag) -> list[tuple[int, str]]:
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in accumulator(run).Tensors(tag)]


def expected_scalars(run) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl's rows as TensorBoard holds them: float32, against images seen."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in metric_rows(run):
        prefix = "eval/" if row.get("event") == "eval" else "train/" if "event" not in row else None
        if prefix is None:
            continue
        for name, value in row.items():
            if name not in ("images", "event", "protocol"):
                out.setdefault(prefix + name, []).append((row["images"], float(np.float32(value))))
    return out


def metric_rows(run) -> list[dict]:
    """metrics.jsonl's complete lines (a test may leave a line cut short at the end)."""
    text = (run / runs.METRICS).read_text()
    return [json.loads(line) for line in text.split("\n")[:-1]]


def same(a: dict, b: dict) -> bool:
    """Equal, NaN equal to NaN (d_fake_g_after before it is first measured)."""
    return a.keys() == b.keys() and all(
        [s for s, _ in a[k]] == [s for s, _ in b[k]]
        and np.array_equal(np.array([v for _, v in a[k]]), np.array([v for _, v in b[k]]), equal_nan=True)
        for k in a)


def without_time(table: dict) -> dict:
    return {k: v for k, v in table.items() if k not in ("train/time", "eval/time", "eval/seconds")}


@pytest.fixture
def tensorboard():
    pytest.importorskip("tensorboard", reason=NEEDS)


def test_a_run_logs_every_column_the_grids_and_its_config(tmp_path, tensorboard):
    config = TrainConfig(**tiny_images(tmp_path), batch_size=8, max_images=48, snapshot_every=16)
    train(config, tmp_path / "run")
    run = tmp_path / "run"
    got = scalars(run)
    assert set(got) == {f"train/{c}" for c in ("iteration", "time", *STAT_NAMES)}
    assert same(got, expected_scalars(run))
    assert [s for s, _ in got["train/d_loss"]] == list(range(8, 49, 8))
    images = accumulator(run).Images("samples")
    assert [i.step for i in images] == [0, 16, 32, 48]
    assert images[-1].encoded_image_string == (run / "samples" / "000000048.png").read_bytes()
    assert images[-1].width > 0 and images[-1].height > 0
    [(step, text)] = texts(run, "config.json")
    assert step == 0 and json.loads(textwrap.dedent(text)) == json.loads((run / "config.json").read_text())


def test_evaluations_warnings_and_other_events(tmp_path, tensorboard):
    config = TrainConfig(**TOY, batch_size=16, max_images=320, eval_every=160, eval_samples=200,
                         snapshot_every=160)
    train(config, tmp_path / "run")
    run = tmp_path / "run"
    got = scalars(run)
    assert {"eval/time", "eval/seconds"} < set(got) and same(got, expected_scalars(run))
    assert [s for s, _ in got["eval/seconds"]] == [160, 320]
    assert [s for s, _ in texts(run, "eval/protocol")] == [160, 320]
    # A warning and another event, through the MetricsLog seam as the loop writes them.
    log = tblog.TensorBoardLog(run, 320)
    log.event("warning", 320, kind="d_wins", message="D wins")
    log.event("rollback", 320, diverged_at="iteration 3", lr_g=1e-4, lr_d=1e-4)
    log.close()
    assert texts(run, "warnings") == [(320, "d_wins: D wins")]
    [(step, text)] = texts(run, "events/rollback")
    assert step == 320 and json.loads(textwrap.dedent(text))["diverged_at"] == "iteration 3"


def test_a_resume_after_a_kill_continues_the_curves_without_stale_or_repeated_steps(tmp_path, tensorboard):
    common = dict(**TOY, batch_size=8, snapshot_every=32, checkpoint_every=10**6)
    train(TrainConfig(**common, max_images=160), tmp_path / "straight")
    run = tmp_path / "split"
    train(TrainConfig(**common, max_images=64), run)  # checkpoint at 64
    kept = run / "kept.pt"
    shutil.copy(run / "checkpoints" / "last.pt", kept)
    resume(run, {"max_images": 112})  # rows, grids and events up to 112 ...
    shutil.copy(kept, run / "checkpoints" / "last.pt")  # ... then killed before any checkpoint past 64
    with open(run / runs.METRICS, "a") as f:
        f.write('{"iteration": 15, "images": 12')  # and a line cut short
    resume(run, {"max_images": 160})
    got = scalars(run)
    assert same(got, expected_scalars(run))
    steps = [s for s, _ in got["train/d_loss"]]
    assert steps == list(range(8, 161, 8)), "each step once, in order"
    assert same(without_time(got), without_time(scalars(tmp_path / "straight")))
    assert [i.step for i in accumulator(run).Images("samples")] == [0, 32, 64, 96, 128, 160]


def test_a_rollback_rewrites_the_curves_from_the_checkpoint(tmp_path, monkeypatch, tensorboard):
    real, calls = gankit.train.iteration, []

    def poisoned(*args, **kwargs):  # the 10th iteration's D gradient norm is Inf
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 10:
            out = out.clone()
            out[STAT_NAMES.index("grad_norm_d")] = float("inf")
        return out

    monkeypatch.setattr(gankit.train, "iteration", poisoned)
    config = TrainConfig(**TOY, batch_size=8, max_images=8 * 16, checkpoint_every=64, on_nan="rollback")
    train(config, tmp_path / "run")
    run = tmp_path / "run"
    got = scalars(run)
    assert same(got, expected_scalars(run))
    assert [s for s, _ in got["train/d_loss"]] == list(range(8, 8 * 16 + 1, 8))
    [(step, text)] = texts(run, "events/rollback")
    assert step == 64 and "iteration 10 (80 images)" in text


def test_gankit_tensorboard_writes_the_same_scalars_for_a_run_trained_without(tmp_path, capsys, tensorboard):
    common = dict(**TOY, batch_size=8, max_images=96, snapshot_every=48)
    train(TrainConfig(**common), tmp_path / "on")
    train(TrainConfig(**common, tensorboard="off"), tmp_path / "off")
    assert not (tmp_path / "off" / runs.TENSORBOARD).exists()
    with open(tmp_path / "off" / runs.METRICS, "a") as f:
        f.write('{"iteration": 13, "images": 10')  # a line still being written: left out
    assert main(["tensorboard", str(tmp_path / "off")]) == 0
    assert f"tensorboard --logdir {tmp_path}" in capsys.readouterr().out
    got = scalars(tmp_path / "off")
    assert same(got, expected_scalars(tmp_path / "off"))
    assert same(without_time(got), without_time(scalars(tmp_path / "on")))
    assert [i.step for i in accumulator(tmp_path / "off").Images("samples")] == [0, 48, 96]


def test_turning_it_on_at_a_resume_writes_the_earlier_part_too(tmp_path, tensorboard):
    common = dict(**TOY, batch_size=8)
    train(TrainConfig(**common, max_images=48, tensorboard="off"), tmp_path / "run")
    resume(tmp_path / "run", {"max_images": 96, "tensorboard": "on"})
    got = scalars(tmp_path / "run")
    assert [s for s, _ in got["train/d_loss"]] == list(range(8, 97, 8))
    assert same(got, expected_scalars(tmp_path / "run"))


@pytest.mark.parametrize("case", ["missing", "file", "empty", "not-a-run", "no-rows"])
def test_gankit_tensorboard_on_bad_input_says_what_is_wrong(tmp_path, capsys, case):
    target = tmp_path / "x"
    if case == "file":
        target.write_text("hello")
    elif case in ("empty", "not-a-run"):
        target.mkdir()
        if case == "not-a-run":
            (target / "notes.txt").write_text("hello")
    elif case == "no-rows":
        target.mkdir()
        (target / runs.CONFIG).write_text("{}")
        (target / runs.METRICS).write_text('{"iteration": 1, "ima')
    assert main(["tensorboard", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gankit: error: tensorboard: ") and "Traceback" not in err
    expected = {"missing": "is not a folder", "file": "is not a folder", "empty": "not a gankit run folder",
                "not-a-run": "not a gankit run folder", "no-rows": "has no metrics yet"}[case]
    assert expected in err
    assert not (target / runs.TENSORBOARD).exists() if target.is_dir() else True


def test_the_flag_is_validated_and_may_change_on_resume():
    assert "tensorboard" in RESUMABLE_CHANGES
    with pytest.raises(ConfigError, match="--tensorboard must be one of on, off; got 'yes'"):
        TrainConfig(**TOY, tensorboard="yes")


def test_without_tensorboard_a_run_says_so_once_and_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tblog, "available", lambda: False)
    out = io.StringIO()
    train(TrainConfig(**TOY, batch_size=8, max_images=32), tmp_path / "run", stream=out)
    lines = out.getvalue().splitlines()
    assert sum("tensorboard is not installed" in line for line in lines) == 1
    assert not any("tensorboard --logdir" in line for line in lines)
    assert not (tmp_path / "run" / runs.TENSORBOARD).exists()
    monkeypatch.setattr(tblog, "available", lambda: True)
    out = io.StringIO()
    train(TrainConfig(**TOY, batch_size=8, max_images=32, tensorboard="off"), tmp_path / "off", stream=out)
    assert "tensorboard" not in out.getvalue().replace(str(tmp_path), "").lower()
    assert not (tmp_path / "off" / runs.TENSORBOARD).exists()


def test_ab_benchmark_compares_flag_variants_of_one_tree(tmp_path):
    root = Path(__file__).parents[1]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "ab_train.py"),
                           "--variant", "off=--tensorboard off", "--variant", "on=--tensorboard on",
                           "--rounds", "2", "--abba", "--warmup", "2", "--", *TOY_ARGS, "--max-images", "80",
                           "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "variant off: --tensorboard off" in proc.stdout and "| round | variant | images/s |" in proc.stdout
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line[:4] in ("| 1 ", "| 2 ")]
    assert [r[1] for r in rows] == ["off", "on", "on", "off"], "--abba: the second round the other way round"
    assert all(float(r[2].rstrip(" |")) > 0 for r in rows)
    assert proc.stdout.strip().splitlines()[-1].startswith("ratio on/off: ")


@pytest.mark.slow  # two gankit processes, one killed: about 10 s
def test_sigkill_then_resume_leaves_each_step_once(tmp_path, tensorboard):
    run, env = tmp_path / "run", {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    cmd = [sys.executable, "-m", "gankit", "train", *TOY_ARGS, "--device", "cpu", "--snapshot-every", "320",
           "--checkpoint-every", "320", "--max-images", "1000000000", "--out", str(run)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last, deadline = run / "checkpoints" / "last.pt", time.monotonic() + 300
    while not last.is_file():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.05)
    time.sleep(1.0)  # past the checkpoint: rows, grids and events it does not hold
    proc.kill()
    proc.wait(timeout=60)
    saved = checkpoint.load(last)["progress"]["images_seen"]
    total = saved + 640
    done = subprocess.run([sys.executable, "-m", "gankit", "train", "--resume", str(run), "--max-images", str(total)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = scalars(run)
    assert [s for s, _ in got["train/d_loss"]] == list(range(16, total + 1, 16)), "each step once"
    assert same(got, expected_scalars(run))
    assert [i.step for i in accumulator(run).Images("samples")] == list(range(0, total + 1, 320))


def test_gankit_tensorboard_without_the_package_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tblog, "available", lambda: False)
    (tmp_path / runs.METRICS).write_text('{"iteration": 1, "images": 8, "time": 0.1, "d_loss": 1.0}\n')
    assert main(["tensorboard", str(tmp_path)]) == 1
    assert "pip install 'gankit[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / runs.TENSORBOARD).exists()
