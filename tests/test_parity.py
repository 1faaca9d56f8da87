"""benchmarks/parity.py's bookkeeping, with a fake `gankit train` (the real runs are the
benchmark's): several runs at once print the same tables, a finished run of the same command is
read back and not trained again, and --wait-while waits before a training."""

import importlib.util
import json
import sys
from pathlib import Path

from gankit import runs

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("parity", ROOT / "benchmarks" / "parity.py")
parity = importlib.util.module_from_spec(spec)
sys.modules["parity"] = parity
spec.loader.exec_module(parity)

IMAGES = 256


def fake_trainer(monkeypatch):
    """Replace the training by writing a final evaluation row; returns the list of trained folders."""
    trained = []

    def run(args, cmd, run_dir):
        seed = int(cmd[cmd.index("--seed") + 1])
        fid = 100.0 + 10 * seed + (5.0 if "--conditional" in cmd else 0.0) + (1.0 if "--k" in cmd else 0.0)
        run_dir.mkdir(parents=True, exist_ok=True)
        row = {"event": "eval", "images": IMAGES, "fid": fid, "precision": 0.5, "recall": 0.25 + seed / 100}
        (run_dir / runs.METRICS).write_text(json.dumps(row) + "\n")
        trained.append(run_dir.name)
        return parity.final_eval(run_dir, IMAGES)

    monkeypatch.setattr(parity, "run", run)
    return trained


def main(out, capsys, *extra):
    assert parity.main(["--device", "cpu", "--max-images", str(IMAGES), "--seeds", "0,1,2", "--a=",
                        "--out", str(out), *extra]) == 0
    lines = capsys.readouterr().out.splitlines()
    return [line for line in lines if not line.startswith("#")], [line for line in lines if line.startswith("#")]


def test_jobs_print_the_same_tables_and_finished_runs_are_reused(tmp_path, monkeypatch, capsys):
    trained = fake_trainer(monkeypatch)
    one, _ = main(tmp_path / "one", capsys, "--b=--conditional")
    two, notes = main(tmp_path / "two", capsys, "--b=--conditional", "--jobs", "2")
    assert two == one
    assert one[-1] == "parity: mean FID A 110.00, B 115.00, difference +5.00 = 0.6 standard errors"
    assert sorted(trained) == sorted(2 * ["A-seed0", "B-seed0", "A-seed1", "B-seed1", "A-seed2", "B-seed2"])
    assert all("trained" in n for n in notes[1:])

    trained.clear()
    again, notes = main(tmp_path / "two", capsys, "--b=--conditional", "--jobs", "2")
    assert again == one and trained == []
    assert all("reused" in n for n in notes[1:])

    # another B against the same A: only B trains, in its own folders
    other, notes = main(tmp_path / "two", capsys, "--b", "--k 2", "--b-name", "k2", "--jobs", "2")
    assert sorted(trained) == ["k2-seed0", "k2-seed1", "k2-seed2"]
    assert other[-1] == "parity: mean FID A 110.00, B 111.00, difference +1.00 = 0.1 standard errors"
    assert (tmp_path / "two" / "parity-k2.json").is_file() and (tmp_path / "two" / "parity.json").is_file()

    # a changed command (another --eval-samples) is trained again; so is a run without its command file
    trained.clear()
    (tmp_path / "two" / "A-seed1" / parity.COMMAND_FILE).unlink()
    main(tmp_path / "two", capsys, "--b=--conditional")
    assert trained == ["A-seed1"]
    trained.clear()
    main(tmp_path / "two", capsys, "--b=--conditional", "--eval-samples", "500", "--seeds", "0,1")
    assert trained == ["A-seed0", "B-seed0", "A-seed1", "B-seed1"]


def test_wait_while_waits_until_the_file_is_gone(tmp_path, monkeypatch, capsys):
    trained = fake_trainer(monkeypatch)
    quiet = tmp_path / "QUIET"
    quiet.touch()
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 3:
            quiet.unlink()

    monkeypatch.setattr(parity.time, "sleep", sleep)
    _, notes = main(tmp_path / "runs", capsys, "--b=--conditional", "--wait-while", str(quiet))
    assert sleeps == [20.0, 20.0, 20.0] and len(trained) == 6
    assert notes[1] == f"# waiting for {quiet}"
