"""PacGAN's Table 1 a trial at a time, for a session without a GPU: each CPU core trains the next
missing trial of a row at the published length, and each finished trial joins
docs/theory/pacgan-cpu/, where the table of every trial so far is kept.

    python benchmarks/pacgan_cpu.py --stop-after 6000                    # GAN, both G losses, grid
    python benchmarks/pacgan_cpu.py --rows grid25:2:ns --jobs 1          # PacGAN2's next trial

Why: one trial is 400,000 updates, 13-17 ms each on one core of the 2-core machine (1.5-2 h), and
a row is 10 trials; a GPU session, which would run a row in minutes, is lent to few sessions. So
a CPU session adds a trial per core, and the rows fill in over sessions.

A row is DATA:M:LOSS (ring8 or grid25; M = 1 for the GAN, 2-4 for PacGANM; ns or sat for the G
loss). Its next trial is the lowest seed it does not yet hold in --units; with more --jobs than
rows, a row takes several seeds. Each trial is `gankit bench modes --protocol pacgan --seed S
--trials 1` in --work/NAME (scored every 5,000 updates from G and two EMAs of G), with its own
log; one stopped by --stop-after or Ctrl-C keeps its checkpoint, and the same command continues
it (exit status 3). A finished trial is added with `pacgan_merge.py --add-run`, which rewrites
the table (table.txt, results.json, curves.png in --units).
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
    """Up to `jobs` trials (data, M, G loss, seed): the rows in turn, each its lowest seeds not held,
    until a row has `trials`."""
    taken, chosen = set(held), []
    while len(chosen) < jobs:
        before = len(chosen)
        for data, m, loss in rows:
            seeds = [s for d, mm, g, s in taken if (d, mm, g) == (data, m, loss)]
            if len(chosen) < jobs and len(seeds) < trials:
                seed = next(s for s in range(len(seeds) + 1) if s not in seeds)
                taken.add((data, m, loss, seed))
                chosen.append((data, m, loss, seed))
        if len(chosen) == before:
            break
    return chosen


def folder_of(trial: tuple[str, int, str, int], work: Path) -> Path:
    """work/pack1-sat-grid25-seed3: pacgan_merge.py --add-run's name for the trial's unit."""
    data, m, loss, seed = trial
    return work / pacgan.unit_name([m], [loss], [data], [seed])


def command(trial: tuple[str, int, str, int], out: Path, args) -> list[str]:
    data, m, loss, seed = trial
    return [sys.executable, "-m", "gankit", "bench", "modes", "--protocol", "pacgan", "--datasets", data,
            "--packs", str(m), "--g-loss", loss, "--seed", str(seed), "--trials", "1",
            "--iterations", str(args.iterations), "--score-every", str(args.score_every),
            "--g-ema", "10000,100000", "--jobs", "1", "--device", "cpu", "--stop-after", str(args.stop_after),
            "--out", str(out)]


def describe(trial: tuple[str, int, str, int], args) -> str:
    folder = folder_of(trial, args.work)
    return f"{folder.name}: python {' '.join(command(trial, folder / 'out', args)[1:])}"


def run(trials: list[tuple], args) -> dict[tuple, int]:
    """Each trial in its own process on one thread; their last progress line every --every s.
    Ctrl-C reaches the trials from the terminal; a SIGTERM is passed on. Either way each trial
    checkpoints at its next update and stops (exit status 130 or 143), and this waits for them."""
    procs = {}
    for trial in trials:
        folder = folder_of(trial, args.work)
        folder.mkdir(parents=True, exist_ok=True)
        log = (folder / "run.log").open("a")
        print(f"{describe(trial, args)}\n  log: {folder / 'run.log'}", flush=True)
        procs[trial] = (subprocess.Popen(command(trial, folder / "out", args), stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "OMP_NUM_THREADS": "1"}), folder)
    signal.signal(signal.SIGTERM, lambda *_: [p.send_signal(signal.SIGTERM) for p, _ in procs.values()])
    while any(p.poll() is None for p, _ in procs.values()):
        try:
            wait(procs, args.every)
        except KeyboardInterrupt:
            print("Ctrl-C: the trials checkpoint and stop", flush=True)
            continue
        for _, folder in procs.values():
            print(f"{folder.name}: {_last_progress(folder / 'run.log')}", flush=True)
    return {trial: p.returncode for trial, (p, _) in procs.items()}


def wait(procs: dict, seconds: float) -> None:
    """Sleep up to `seconds`, a second at a time, so that a stop (or the trials' end) is seen within
    a second rather than at the end of a 5-minute --every."""
    deadline = time.monotonic() + seconds
    while any(p.poll() is None for p, _ in procs.values()):
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(1.0, left))


def _last_progress(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if ": update " in line]
    return lines[-1] if lines else "starting"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="grid25:1:ns,grid25:1:sat", help="comma-separated DATA:M:LOSS (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="trials at once, one core each (default: the CPU count)")
    parser.add_argument("--trials", type=int, default=10, help="a row is full at this many trials (default: 10, as published)")
    parser.add_argument("--stop-after", type=float, default=6000, help="seconds before the trials checkpoint and stop (default: %(default)s)")
    parser.add_argument("--units", type=Path, default=Path("docs/theory/pacgan-cpu"), help="finished trials (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=Path("build/pacgan-cpu"), help="the trials' runs (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=pacgan.ITERATIONS, help="updates a trial (default: the published %(default)s)")
    parser.add_argument("--score-every", type=int, default=5000, help="updates between scorings (default: %(default)s)")
    parser.add_argument("--every", type=float, default=300, help="seconds between progress lines (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="print the trials' commands and stop")
    args = parser.parse_args(argv)
    try:
        rows = parse_rows(args.rows)
    except ValueError as e:
        parser.error(str(e))
    trials = plan(rows, seeds_held(args.units, args.iterations), max(1, args.jobs), args.trials)
    if not trials:
        print(f"every row in --rows has {args.trials} trials in {args.units}: nothing to run")
        return 0
    if args.dry_run:
        print("\n".join(describe(trial, args) for trial in trials))
        return 0
    codes = run(trials, args)
    return _collect(codes, args)


def _collect(codes: dict[tuple, int], args) -> int:
    """Add the finished trials to --units and say what stopped or failed: 0 all added, 3 some
    stopped with their checkpoints (the same command continues), 1 something failed."""
    outcomes = set()
    for trial, code in codes.items():
        folder = folder_of(trial, args.work)
        if code == 0:
            merge = [sys.executable, str(HERE / "pacgan_merge.py"), "--units", str(args.units), "--add-run", str(folder / "out")]
            added = subprocess.run(merge, capture_output=True, text=True)
            print(added.stdout.splitlines()[0] if added.returncode == 0 else added.stderr.strip(), flush=True)
            outcomes.add("added" if added.returncode == 0 else "failed")
        elif code in (STOPPED, 130, 143):
            print(f"{folder.name}: stopped (exit status {code}); the same command continues it from its last checkpoint", flush=True)
            outcomes.add("stopped")
        else:
            print(f"{folder.name}: failed (exit status {code}); see {folder / 'run.log'}", file=sys.stderr, flush=True)
            outcomes.add("failed")
    return 1 if "failed" in outcomes else STOPPED if "stopped" in outcomes else 0


if __name__ == "__main__":
    raise SystemExit(main())
