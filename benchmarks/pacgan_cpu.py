"""PacGAN's Table 1 a trial at a time, for a session without a GPU: each CPU core trains the next
missing trial of a row at the published length, and each finished trial joins
docs/theory/pacgan-cpu/, where the table of every trial so far is kept.

    python benchmarks/pacgan_cpu.py --stop-after 9000                    # GAN, both G losses, grid
    python benchmarks/pacgan_cpu.py --rows grid25:2:ns --jobs 1          # PacGAN2's next trials

Why: one trial is 400,000 updates, 13-17 ms each on one core of the 2-core machine (1.5-2 h), and
a row is 10 trials; a GPU session, which would run a row in minutes, is lent to few sessions. So
a CPU session adds a trial or two per core, and the rows fill in over sessions.

A row is DATA:M:LOSS (ring8 or grid25; M = 1 for the GAN, 2-4 for PacGANM; ns or sat for the G
loss). Each trial goes to the row holding the fewest (held in --units or running), as that row's
lowest seed not held. Each trial is `gankit bench modes --protocol pacgan --seed S --trials 1` in
--work/NAME (scored every 5,000 updates from G and two EMAs of G), with its own log. A trial that
finishes is added at once with `pacgan_merge.py --add-run`, which rewrites the table (table.txt,
results.json, curves.png in --units), and its core takes the next missing trial while a minute
or more of --stop-after is left. At --stop-after (the whole command's seconds) or on Ctrl-C the
trials checkpoint and stop, and the same command continues them (exit status 3). A SIGUSR1
(`kill -USR1 PID`) lets the running trials finish and be added but starts no more: the way to
hand the cores to other rows without stopping a trial near its end. With --whole-trials a freed
core starts a trial only when a trial as long as the longest one this command has added would
finish before --stop-after: for a session whose checkpoints may not outlive its machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gankit.theory import pacgan

HERE = Path(__file__).resolve().parent
LOSSES = {**{tag: g for g, tag in pacgan.LOSS_TAGS.items()}, **{g: g for g in pacgan.LOSS_TAGS}}  # ns, sat or in full
STOPPED = 3  # gankit bench modes --stop-after: checkpointed, the same command continues


def parse_rows(text: str) -> list[tuple[str, int, str]]:
    """"grid25:1:ns,grid25:1:sat" -> [("grid25", 1, "non-saturating"), ("grid25", 1, "saturating")]."""
    rows = []
    for part in filter(None, text.split(",")):
        fields = part.strip().split(":")
        if (len(fields) != 3 or fields[0] not in pacgan.DATASETS or not fields[1].isdigit()
                or not 1 <= int(fields[1]) <= 4 or fields[2] not in LOSSES):
            raise ValueError(f"--rows: {part!r} is not DATA:M:LOSS (DATA ring8 or grid25, M 1-4, LOSS ns or sat)")
        rows.append((fields[0], int(fields[1]), LOSSES[fields[2]]))
    if not rows:
        raise ValueError("--rows names no row")
    return rows


def seeds_held(units: Path, iterations: int) -> set[tuple[str, int, str, int]]:
    """(data, M, G loss, seed) of every trial in units/*/results.json of this length."""
    held = set()
    for path in sorted(units.glob("*/results.json")):
        record = json.loads(path.read_text())
        if record.get("iterations") == iterations:
            held |= {(r["data"], r["pack"], r.get("g_loss", "non-saturating"), r["seed"])
                     for r in record.get("trial_results", [])}
    return held


def plan(rows: list[tuple[str, int, str]], held: set, jobs: int, trials: int) -> list[tuple[str, int, str, int]]:
    """Up to `jobs` trials (data, M, G loss, seed), one at a time to the row holding the fewest
    (the earlier row on a tie), each its lowest seed not held, until every row has `trials`."""
    taken, chosen = set(held), []
    while len(chosen) < jobs:
        counts = {row: sum(1 for t in taken if t[:3] == row) for row in rows}
        open_rows = [row for row in rows if counts[row] < trials]
        if not open_rows:
            break
        row = min(open_rows, key=counts.get)  # min keeps the first of equals: the rows' order
        seed = next(s for s in range(counts[row] + 1) if (*row, s) not in taken)
        taken.add((*row, seed))
        chosen.append((*row, seed))
    return chosen


def folder_of(trial: tuple[str, int, str, int], work: Path) -> Path:
    """work/pack1-sat-grid25-seed3: pacgan_merge.py --add-run's name for the trial's unit."""
    data, m, loss, seed = trial
    return work / pacgan.unit_name([m], [loss], [data], [seed])


def command(trial: tuple[str, int, str, int], out: Path, args, seconds: float) -> list[str]:
    data, m, loss, seed = trial
    return [sys.executable, "-m", "gankit", "bench", "modes", "--protocol", "pacgan", "--datasets", data,
            "--packs", str(m), "--g-loss", loss, "--seed", str(seed), "--trials", "1",
            "--iterations", str(args.iterations), "--score-every", str(args.score_every),
            "--g-ema", "10000,100000", "--jobs", "1", "--device", "cpu", "--stop-after", f"{seconds:g}",
            "--out", str(out)]


def describe(trial: tuple[str, int, str, int], args, seconds: float) -> str:
    folder = folder_of(trial, args.work)
    return f"{folder.name}: python {' '.join(command(trial, folder / 'out', args, seconds)[1:])}"


class Pool:
    """The trials running, a core each, until --stop-after's deadline: a core whose trial ends
    (its trial added to --units at once) takes the next missing trial while at least MIN_START
    seconds are left, so neither core idles while the other finishes. After a SIGTERM or Ctrl-C, or
    once a trial has failed, no trial is started."""

    MIN_START = 60  # a trial started with less would stop before it got anywhere

    def __init__(self, rows: list[tuple], args):
        self.rows, self.args = rows, args
        self.deadline = time.monotonic() + args.stop_after
        self.running: dict[tuple, tuple[subprocess.Popen, Path]] = {}
        self.outcomes: dict[tuple, str] = {}  # added, stopped or failed: none of them is planned again
        self.stopping = False
        self.started: dict[tuple, float] = {}
        self.longest = 0.0  # seconds of the longest trial this command has added

    def next_trial(self) -> tuple | None:
        taken = seeds_held(self.args.units, self.args.iterations) | set(self.running) | set(self.outcomes)
        trials = plan(self.rows, taken, 1, self.args.trials)
        return trials[0] if trials else None

    def fill(self) -> None:
        while not self.stopping and len(self.running) < self.args.jobs:
            seconds = max(self.deadline - time.monotonic(), 0.001)
            # the first trials start whatever the time; with --whole-trials a later one only if a
            # trial as long as the longest so far would finish before the deadline
            short = seconds < self.MIN_START or (self.args.whole_trials and seconds < self.longest)
            late = short and self.outcomes
            trial = None if late else self.next_trial()
            if trial is None:
                return
            self.start(trial, seconds)

    def start(self, trial: tuple, seconds: float) -> None:
        folder = folder_of(trial, self.args.work)
        folder.mkdir(parents=True, exist_ok=True)
        log = (folder / "run.log").open("a")
        print(f"{describe(trial, self.args, seconds)}\n  log: {folder / 'run.log'}", flush=True)
        process = subprocess.Popen(command(trial, folder / "out", self.args, seconds), stdout=log,
                                   stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.running[trial] = (process, folder)
        self.started[trial] = time.monotonic()

    def reap(self) -> None:
        """Each trial that has exited: added to --units (exit 0), or said to be stopped or failed."""
        for trial, (process, _) in list(self.running.items()):
            if process.poll() is not None:
                del self.running[trial]
                self.outcomes[trial] = finish(trial, process.returncode, self.args)
                if self.outcomes[trial] == "added":
                    self.longest = max(self.longest, time.monotonic() - self.started.pop(trial))
                # a failure (a broken install, a full disk) would fail the next trial too: start none
                self.stopping |= self.outcomes[trial] == "failed"

    def stop(self, *_) -> None:
        """SIGTERM: passed on to the trials, which checkpoint at their next update; none is started."""
        self.stopping = True
        for process, _ in self.running.values():
            process.send_signal(signal.SIGTERM)

    def drain(self, *_) -> None:
        """SIGUSR1: the running trials go on to their end or the deadline; none is started."""
        self.stopping = True
        print("SIGUSR1: the running trials finish and are added; no trial is started", flush=True)

    def progress(self) -> None:
        for _, folder in self.running.values():
            print(f"{folder.name}: {_last_progress(folder / 'run.log')}", flush=True)


def run(rows: list[tuple], args) -> dict[tuple, str]:
    """The pool's trials to the deadline, with their last progress line every --every s. Ctrl-C
    reaches the trials from the terminal; a SIGTERM is passed on. Either way each trial
    checkpoints at its next update and stops (exit status 130 or 143), and this waits for them."""
    pool = Pool(rows, args)
    signal.signal(signal.SIGTERM, pool.stop)
    signal.signal(signal.SIGUSR1, pool.drain)
    pool.fill()
    while pool.running:
        try:
            wait(pool.running, args.every)
        except KeyboardInterrupt:
            print("Ctrl-C: the trials checkpoint and stop", flush=True)
            pool.stopping = True
            continue
        pool.reap()
        pool.fill()
        pool.progress()
    return pool.outcomes


def wait(procs: dict, seconds: float) -> None:
    """Sleep up to `seconds`, a second at a time, until one of the trials exits, so that a freed
    core (or a stop) is seen within a second rather than at the end of a 5-minute --every."""
    deadline = time.monotonic() + seconds
    while all(p.poll() is None for p, _ in procs.values()):
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(1.0, left))


def _so_far(trial: tuple, args) -> str:
    """Where an earlier, stopped run of the trial got to (its log's last progress line), if any."""
    log = folder_of(trial, args.work) / "run.log"
    return f"\n  so far: {_last_progress(log)}" if log.exists() else ""


def _last_progress(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if ": update " in line]
    return lines[-1] if lines else "starting"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="grid25:1:ns,grid25:1:sat", help="comma-separated DATA:M:LOSS (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="trials at once, one core each (default: the CPU count)")
    parser.add_argument("--trials", type=int, default=10, help="a row is full at this many trials (default: 10, as published)")
    parser.add_argument("--stop-after", type=float, default=6000, help="the command's seconds: then its trials checkpoint and stop, and a freed core starts "
                        "none with under a minute left (default: %(default)s)")
    parser.add_argument("--units", type=Path, default=Path("docs/theory/pacgan-cpu"), help="finished trials (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=Path("build/pacgan-cpu"), help="the trials' runs (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=pacgan.ITERATIONS, help="updates a trial (default: the published %(default)s)")
    parser.add_argument("--score-every", type=int, default=5000, help="updates between scorings (default: %(default)s)")
    parser.add_argument("--every", type=float, default=300, help="seconds between progress lines (default: %(default)s)")
    parser.add_argument("--whole-trials", action="store_true", help="a freed core starts a trial only if the time left "
                        "is at least the longest trial this command has added (for a machine whose build/ may not outlive it)")
    parser.add_argument("--dry-run", action="store_true", help="print the trials' commands, and how far any earlier run of each got, and stop")
    args = parser.parse_args(argv)
    try:
        rows = parse_rows(args.rows)
    except ValueError as e:
        parser.error(str(e))
    args.jobs = max(1, args.jobs)
    trials = plan(rows, seeds_held(args.units, args.iterations), args.jobs, args.trials)
    if not trials:
        print(f"every row in --rows has {args.trials} trials in {args.units}: nothing to run")
        return 0
    if args.dry_run:
        print("\n".join(describe(trial, args, args.stop_after) + _so_far(trial, args) for trial in trials))
        return 0
    outcomes = set(run(rows, args).values())
    return 1 if "failed" in outcomes else STOPPED if "stopped" in outcomes else 0


def finish(trial: tuple, code: int, args) -> str:
    """A trial's exit: added to --units (0), stopped with its checkpoint (3, 130, 143: the same
    command continues it) or failed; returns which."""
    folder = folder_of(trial, args.work)
    if code == 0:
        merge = [sys.executable, str(HERE / "pacgan_merge.py"), "--units", str(args.units), "--add-run", str(folder / "out")]
        added = subprocess.run(merge, capture_output=True, text=True)
        print(added.stdout.splitlines()[0] if added.returncode == 0 else added.stderr.strip(), flush=True)
        return "added" if added.returncode == 0 else "failed"
    if code in (STOPPED, 130, 143):
        print(f"{folder.name}: stopped (exit status {code}); the same command continues it from its last checkpoint", flush=True)
        return "stopped"
    print(f"{folder.name}: failed (exit status {code}); see {folder / 'run.log'}", file=sys.stderr, flush=True)
    return "failed"


if __name__ == "__main__":
    raise SystemExit(main())
