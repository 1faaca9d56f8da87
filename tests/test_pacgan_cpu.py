"""PacGAN's table a trial at a time on a CPU (benchmarks/pacgan_cpu.py): each row's next trial is
its lowest seed not yet held; a finished trial joins the units and the table; a stopped one is
continued by the same command and added then."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("pacgan_cpu", ROOT / "benchmarks" / "pacgan_cpu.py")
pacgan_cpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pacgan_cpu)

NS, SAT = "non-saturating", "saturating"
ROWS = [("grid25", 1, NS), ("grid25", 1, SAT)]


def test_rows_are_read_and_a_bad_one_is_named():
    assert pacgan_cpu.parse_rows("grid25:1:ns,ring8:3:saturating") == [("grid25", 1, NS), ("ring8", 3, SAT)]
    for bad in ("grid25:5:ns", "grid:1:ns", "grid25:1", "grid25:1:wgan", ""):
        with pytest.raises(ValueError, match="--rows"):
            pacgan_cpu.parse_rows(bad)


def test_each_row_takes_its_lowest_seeds_not_held_until_it_is_full():
    held = {("grid25", 1, NS, 0), ("grid25", 1, NS, 2), ("grid25", 1, SAT, 0), ("ring8", 1, NS, 1)}
    assert pacgan_cpu.plan(ROWS, held, jobs=2, trials=10) == [("grid25", 1, NS, 1), ("grid25", 1, SAT, 1)]
    assert pacgan_cpu.plan(ROWS, held, jobs=3, trials=10) == [("grid25", 1, NS, 1), ("grid25", 1, SAT, 1),
                                                               ("grid25", 1, NS, 3)]
    # the GAN row is full at 3 trials: only the saturating row runs, and only to 3
    assert pacgan_cpu.plan(ROWS, held, jobs=4, trials=3) == [("grid25", 1, NS, 1), ("grid25", 1, SAT, 1),
                                                              ("grid25", 1, SAT, 2)]
    assert pacgan_cpu.plan(ROWS, held | {("grid25", 1, NS, 1), ("grid25", 1, SAT, 1), ("grid25", 1, SAT, 2)},
                           jobs=2, trials=3) == []


def _main(tmp_path, *extra):
    return pacgan_cpu.main(["--rows", "grid25:1:sat", "--jobs", "1", "--iterations", "4", "--score-every", "2",
                            "--every", "0.2", "--units", str(tmp_path / "units"), "--work", str(tmp_path / "work"),
                            *extra])


def test_a_stopped_trial_is_continued_by_the_same_command_then_joins_the_table(tmp_path, capsys):
    assert _main(tmp_path, "--stop-after", "0.001") == pacgan_cpu.STOPPED
    assert "pack1-sat-grid25-seed0: stopped (exit status 3); the same command continues it" in capsys.readouterr().out
    log = (tmp_path / "work" / "pack1-sat-grid25-seed0" / "run.log").read_text()
    assert "before its first checkpoint: the same command starts from the beginning" in log  # 1 ms: no update ran
    assert not (tmp_path / "units").exists()
    assert _main(tmp_path) == 0
    assert "added pack1-sat-grid25-seed0" in capsys.readouterr().out
    record = json.loads((tmp_path / "units" / "pack1-sat-grid25-seed0" / "results.json").read_text())
    assert {(r["g_loss"], r["seed"], r["iterations"]) for r in record["trial_results"]} == {(SAT, 0, 4)}
    assert "GAN, saturating gankit" in (tmp_path / "units" / "table.txt").read_text()
    assert _main(tmp_path, "--dry-run") == 0  # the next trial is the next seed
    assert capsys.readouterr().out.startswith("pack1-sat-grid25-seed1: python -m gankit bench modes")
    assert _main(tmp_path, "--trials", "1") == 0
    assert "nothing to run" in capsys.readouterr().out


class _Trial:
    """A stand-in process that exits after `polls` polls."""

    def __init__(self, polls):
        self.polls = polls

    def poll(self):
        self.polls -= 1
        return 0 if self.polls < 0 else None


def test_the_wait_between_progress_lines_ends_when_the_trials_do(monkeypatch):
    clock, naps = [0.0], []
    monkeypatch.setattr(pacgan_cpu.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(pacgan_cpu.time, "sleep", lambda s: (naps.append(s), clock.__setitem__(0, clock[0] + s)))
    pacgan_cpu.wait({"a": (_Trial(2), None), "b": (_Trial(0), None)}, seconds=300)
    assert naps == [1.0, 1.0]  # both exited by the third poll: not 300 s
    naps.clear()
    pacgan_cpu.wait({"a": (_Trial(10**6), None)}, seconds=2.5)
    assert naps == [1.0, 1.0, 0.5]  # still running: back after --every, for the next progress line
