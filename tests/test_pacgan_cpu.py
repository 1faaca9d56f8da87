"""PacGAN's table a trial at a time on a CPU (benchmarks/pacgan_cpu.py): each row's next trial is
its lowest seed not yet held; a finished trial joins the units and the table; a stopped one is
continued by the same command and added then."""

import argparse
import importlib.util
import json
import signal
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


def test_each_trial_goes_to_the_row_with_fewest_its_lowest_seed_not_held_until_the_rows_are_full():
    held = {("grid25", 1, NS, 0), ("grid25", 1, NS, 2), ("grid25", 1, SAT, 0), ("ring8", 1, NS, 1)}
    # the saturating row holds 1 trial, the GAN row 2: the saturating row first, then the rows in turn
    assert pacgan_cpu.plan(ROWS, held, jobs=2, trials=10) == [("grid25", 1, SAT, 1), ("grid25", 1, NS, 1)]
    assert pacgan_cpu.plan(ROWS, held, jobs=4, trials=10) == [("grid25", 1, SAT, 1), ("grid25", 1, NS, 1),
                                                               ("grid25", 1, SAT, 2), ("grid25", 1, NS, 3)]
    # the GAN row is full at 3 trials: only the saturating row runs, and only to 3
    assert pacgan_cpu.plan(ROWS, held, jobs=4, trials=3) == [("grid25", 1, SAT, 1), ("grid25", 1, NS, 1),
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
    assert _main(tmp_path, "--dry-run") == 0  # what the same command would continue, and from where
    out = capsys.readouterr().out
    assert out.startswith("pack1-sat-grid25-seed0: python -m gankit") and out.endswith("\n  so far: starting\n")
    assert _main(tmp_path, "--trials", "1") == 0  # the row is full once seed 0 joins: no next trial
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


def test_the_wait_between_progress_lines_ends_when_a_trial_does(monkeypatch):
    clock, naps = [0.0], []
    monkeypatch.setattr(pacgan_cpu.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(pacgan_cpu.time, "sleep", lambda s: (naps.append(s), clock.__setitem__(0, clock[0] + s)))
    pacgan_cpu.wait({"a": (_Trial(5), None), "b": (_Trial(2), None)}, seconds=300)
    assert naps == [1.0, 1.0]  # b exited at its third poll, a still runs: its core is free, not 300 s later
    naps.clear()
    pacgan_cpu.wait({"a": (_Trial(10**6), None)}, seconds=2.5)
    assert naps == [1.0, 1.0, 0.5]  # still running: back after --every, for the next progress line


def test_a_core_whose_trial_ends_takes_the_next_missing_one_and_each_joins_the_table_at_once(tmp_path, capsys,
                                                                                             monkeypatch):
    monkeypatch.setattr(pacgan_cpu.Pool, "MIN_START", 10**9)  # too little time left for a second trial
    assert _main(tmp_path, "--trials", "2") == 0
    out = capsys.readouterr().out
    assert "added pack1-sat-grid25-seed0" in out and "seed1" not in out
    monkeypatch.setattr(pacgan_cpu.Pool, "MIN_START", 0)
    (tmp_path / "units" / "pack1-sat-grid25-seed0").rename(tmp_path / "seed0")  # seed 0 to train again
    assert _main(tmp_path, "--trials", "2") == 0
    out = capsys.readouterr().out
    # one core: seed 0 (continued from its final checkpoint) is added before seed 1 starts, then seed 1
    assert out.index("added pack1-sat-grid25-seed0") < out.index("pack1-sat-grid25-seed1: python") \
        < out.index("added pack1-sat-grid25-seed1")
    assert pacgan_cpu.seeds_held(tmp_path / "units", 4) == {("grid25", 1, SAT, 0), ("grid25", 1, SAT, 1)}


class _Signalled:
    def __init__(self, returncode=None):
        self.signals, self.returncode = [], returncode

    def send_signal(self, sig):
        self.signals.append(sig)

    def poll(self):
        return self.returncode


def test_a_running_trial_is_not_planned_again_and_after_a_sigterm_no_trial_starts(tmp_path):
    args = argparse.Namespace(stop_after=1000, units=tmp_path, iterations=4, trials=10, jobs=2, work=tmp_path,
                              whole_trials=False)
    pool = pacgan_cpu.Pool(ROWS, args)
    trial = _Signalled()
    pool.running[("grid25", 1, NS, 0)] = (trial, tmp_path)
    assert pool.next_trial() == ("grid25", 1, SAT, 0)
    pool.outcomes[("grid25", 1, SAT, 0)] = "failed"  # not retried by the same run: each row has one
    assert pool.next_trial() == ("grid25", 1, NS, 1)
    pool.stop()
    pool.fill()  # would start a trial on the free core, were it not stopping
    assert trial.signals == [signal.SIGTERM] and list(pool.running) == [("grid25", 1, NS, 0)]


def test_after_a_sigusr1_the_running_trials_go_on_and_no_trial_starts(tmp_path, capsys, monkeypatch):
    args = argparse.Namespace(stop_after=1000, units=tmp_path, iterations=4, trials=10, jobs=2, work=tmp_path,
                              whole_trials=False)
    pool = pacgan_cpu.Pool(ROWS, args)
    trial = _Signalled()
    pool.running[("grid25", 1, NS, 0)] = (trial, tmp_path)
    pool.drain()
    pool.fill()  # a core is free and SAT's seed 0 is missing, but the pool is draining
    assert trial.signals == [] and list(pool.running) == [("grid25", 1, NS, 0)]
    assert "no trial is started" in capsys.readouterr().out
    handlers = {}
    monkeypatch.setattr(pacgan_cpu.signal, "signal", lambda sig, handler: handlers.setdefault(sig, handler))
    pacgan_cpu.run(ROWS, argparse.Namespace(**{**vars(args), "trials": 0}))  # every row full: returns at once
    assert handlers[signal.SIGUSR1].__name__ == "drain" and handlers[signal.SIGTERM].__name__ == "stop"


def test_after_a_trial_fails_no_trial_starts(tmp_path, capsys):
    args = argparse.Namespace(stop_after=1000, units=tmp_path, iterations=4, trials=10, jobs=2, work=tmp_path,
                              whole_trials=False)
    pool = pacgan_cpu.Pool(ROWS, args)
    pool.running = {("grid25", 1, NS, 0): (_Signalled(returncode=1), tmp_path),
                    ("grid25", 1, SAT, 0): (_Signalled(), tmp_path)}
    pool.reap()
    assert pool.outcomes == {("grid25", 1, NS, 0): "failed"} and list(pool.running) == [("grid25", 1, SAT, 0)]
    assert "pack1-grid25-seed0: failed (exit status 1); see" in capsys.readouterr().err
    pool.fill()  # a core is free, but the next trial would most likely fail the same way
    assert list(pool.running) == [("grid25", 1, SAT, 0)]


def test_with_whole_trials_a_freed_core_starts_none_that_would_not_finish_before_the_deadline(tmp_path, monkeypatch):
    clock, starts = [0.0], []
    monkeypatch.setattr(pacgan_cpu.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(pacgan_cpu, "finish", lambda trial, code, args: "added")
    monkeypatch.setattr(pacgan_cpu.Pool, "start", lambda pool, trial, seconds: (
        starts.append(trial), pool.running.__setitem__(trial, (_Signalled(), tmp_path))))
    for whole_trials, started in [(True, []), (False, [("grid25", 1, SAT, 0)])]:
        clock[0], starts[:] = 0.0, []
        args = argparse.Namespace(stop_after=1000, units=tmp_path, iterations=4, trials=10, jobs=1, work=tmp_path,
                                  whole_trials=whole_trials)
        pool = pacgan_cpu.Pool(ROWS, args)
        pool.running[("grid25", 1, NS, 0)] = (_Signalled(returncode=0), tmp_path)
        pool.started[("grid25", 1, NS, 0)] = 0.0
        clock[0] = 600.0  # the trial took 600 s; 400 s are left, more than MIN_START
        pool.reap()
        pool.fill()
        assert pool.longest == 600.0 and starts == started
