"""Quality parity: does a faster way of doing the arithmetic train the same model? FID of two
`gankit train` settings after the same number of images, over several seeds.

    python benchmarks/parity.py --device cuda --seeds 0,1,2,3 --max-images 600000 \\
        --a "--precision fp32 --cuda-graphs off" --b "--precision bf16 --cuda-graphs auto"
    python benchmarks/parity.py --device cpu --common "--data fashion-mnist --g-width 8 --d-width 8" \\
        --max-images 2048 --eval-samples 500 --seeds 0,1      # a smoke run; the figures mean little

Every run is `gankit train COMMON A|B --seed S --max-images N --eval-every N --eval-samples E`:
the same model, data, seed and length, one after another on one machine; its FID is the
evaluation at the end (gankit's protocol during training: classifier features for
Fashion-MNIST, E samples against the test split). Per setting: mean and standard deviation over
the seeds, and of precision, recall and (conditional runs) the class metrics. The difference of the means is compared with its standard error, sqrt(sd_a^2/n +
sd_b^2/n): within about two standard errors, the two settings are not distinguishable from seed
noise with this many seeds (which says nothing about smaller differences). The last line is
`parity: mean FID A X, B Y, difference D = Z standard errors`.

`--jobs N` trains up to N runs at once, each its own `gankit train` process (give each one
thread, e.g. OMP_NUM_THREADS=1, on a CPU); the tables are in the same order as with one job. A
run folder that holds a finished run of exactly the same command (OUT/NAME-seedS/
parity-command.json, written when a run ends) is read back, not trained again ("reused"), so
several comparisons against the same A can share one --out, B's folders named by `--b-name`.
The check is the command's words (the same --out spelling, the gankit code's version not
included), and a run still training is not seen: do not let two invocations train one folder.

    OMP_NUM_THREADS=1 python benchmarks/parity.py --device cpu --out build/parity-demo --jobs 2 \
        --a= --b=--conditional --b-name cond
    OMP_NUM_THREADS=1 python benchmarks/parity.py --device cpu --out build/parity-demo --jobs 2 \
        --a= --b "--d-norm spectral" --b-name spectral     # A-seed*: reused

`--wait-while PATH`: before starting each training, wait while PATH exists (runs already going
go on), for a machine whose owner asks for quiet now and then.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing gankit

from gankit import runs  # noqa: E402

DEFAULT_COMMON = "--data fashion-mnist --model dcgan --image-size 64 --batch-size 128"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", default="--precision fp32 --cuda-graphs off", help="setting A's flags")
    parser.add_argument("--b", default="--precision bf16 --cuda-graphs auto", help="setting B's flags")
    parser.add_argument("--common", default=DEFAULT_COMMON, help=f"flags of every run (default: {DEFAULT_COMMON!r})")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (at least 2)")
    parser.add_argument("--max-images", type=int, default=600_000, help="images each run trains on")
    parser.add_argument("--eval-samples", type=int, default=10_000, help="samples for each FID")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "parity", help="folder for the runs")
    parser.add_argument("--b-name", default="B", help="B's runs are OUT/NAME-seedS (A's: OUT/A-seedS)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (separate processes)")
    parser.add_argument("--wait-while", type=Path, help="before starting each training, wait while this file exists")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be integers separated by commas, got {args.seeds!r}")
    if len(set(seeds)) < 2:
        parser.error("--seeds: give at least two different seeds; one cannot show seed noise")
    if args.max_images < 1 or args.eval_samples < 2:
        parser.error("--max-images must be positive and --eval-samples at least 2")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if not args.b_name or args.b_name == "A" or "/" in args.b_name:
        parser.error("--b-name: a folder name other than A")
    settings = {"A": shlex.split(args.a), "B": shlex.split(args.b)}
    forbidden = {"--seed", "--max-images", "--epochs", "--eval-every", "--eval-samples", "--out", "--resume"}
    for name, flags in [("--a", settings["A"]), ("--b", settings["B"]), ("--common", shlex.split(args.common))]:
        clash = forbidden.intersection(f.split("=")[0] for f in flags)
        if clash:
            parser.error(f"{name} may not set {', '.join(sorted(clash))}: this script sets them for every run")

    print(f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; every run: gankit train {args.common} --device {args.device} "
          f"--max-images {args.max_images} --eval-samples {args.eval_samples}; seeds {seeds}")
    # alternating A, B per seed, so a drift of the machine hits both alike
    tasks = [(name, flags, seed) for seed in seeds for name, flags in settings.items()]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        record = list(pool.map(lambda task: run_or_reuse(args, *task), tasks))
    fids = {name: [r["fid"] for r in record if r["setting"] == name] for name in settings}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ("parity.json" if args.b_name == "B" else f"parity-{args.b_name}.json")).write_text(json.dumps(record, indent=1))

    print("| setting | flags | FID per seed | mean | sd |")
    print("| --- | --- | --- | --- | --- |")
    for name, flags in settings.items():
        values = fids[name]
        print(f"| {name} | `{' '.join(flags) or '(none)'}` | {', '.join(f'{v:.2f}' for v in values)} | "
              f"{statistics.mean(values):.2f} | {statistics.stdev(values):.2f} |")
    _other_metrics(record, settings)
    mean_a, mean_b = statistics.mean(fids["A"]), statistics.mean(fids["B"])
    se = math.sqrt(statistics.variance(fids["A"]) / len(seeds) + statistics.variance(fids["B"]) / len(seeds))
    diff = mean_b - mean_a
    ratio = abs(diff) / se if se > 0 else (0.0 if diff == 0 else math.inf)
    print(f"parity: mean FID A {mean_a:.2f}, B {mean_b:.2f}, difference {diff:+.2f} = {ratio:.1f} standard errors")
    return 0


OTHER = ("precision", "recall", "class_accuracy", "class_accuracy_real", "fid_per_class_mean")


def _other_metrics(record: list[dict], settings: dict) -> None:
    """Precision and recall (a lower FID bought with recall is no win), and a conditional run's
    class metrics: mean +- sd over the seeds, where every run of a setting has them."""
    print("| setting | " + " | ".join(OTHER) + " |")
    print("| --- |" + " --- |" * len(OTHER))
    for name in settings:
        rows = [r for r in record if r["setting"] == name]
        cells = [f"{statistics.mean(v):.3f} +- {statistics.stdev(v):.3f}"
                 if len(v := [r[m] for r in rows if m in r]) == len(rows) else "-" for m in OTHER]
        print(f"| {name} | " + " | ".join(cells) + " |")


def run_or_reuse(args, name: str, flags: list[str], seed: int) -> dict:
    """One run's record: read back when its folder holds a finished run of the same command,
    else trained (after --wait-while)."""
    run_dir = args.out / f"{name if name == 'A' else args.b_name}-seed{seed}"
    cmd = command(args, flags, seed, run_dir)
    done = finished(run_dir, cmd, args.max_images)
    if done is not None:
        final, wall, how = done[0], done[1], "reused"
    else:
        wait_while(args.wait_while)
        (run_dir / COMMAND_FILE).unlink(missing_ok=True)
        started, t0 = utc_now(), time.monotonic()
        final = run(args, cmd, run_dir)
        wall, how = time.monotonic() - t0, "trained"
        (run_dir / COMMAND_FILE).write_text(json.dumps({"command": cmd[1:], "wall": wall, "started": started,
                                                        "finished": utc_now()}))
    print(f"# {name} seed {seed}: FID {final['fid']:.2f} ({wall:.0f} s, {how}: {run_dir})", flush=True)
    return {"setting": name, "flags": flags, "seed": seed, "wall": wall, "reused": how == "reused", **final}


COMMAND_FILE = "parity-command.json"


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())


def command(args, flags: list[str], seed: int, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "gankit", "train", *shlex.split(args.common), *flags, "--device", args.device,
            "--seed", str(seed), "--max-images", str(args.max_images), "--eval-every", str(args.max_images),
            "--eval-samples", str(args.eval_samples), "--out", str(run_dir), "--overwrite"]


def finished(run_dir: Path, cmd: list[str], max_images: int) -> tuple[dict, float] | None:
    """(final evaluation, training seconds) of a finished run of `cmd` (the interpreter aside)
    in run_dir, or None."""
    try:
        stored = json.loads((run_dir / COMMAND_FILE).read_text())
    except (OSError, ValueError):
        return None
    if stored.get("command") != cmd[1:]:
        return None
    final = final_eval(run_dir, max_images)
    return None if final is None else (final, stored.get("wall", math.nan))


def wait_while(path: Path | None, poll: float = 20.0) -> None:
    if path is None or not path.exists():
        return
    print(f"# waiting for {path}", flush=True)
    t0 = time.monotonic()
    while path.exists():
        time.sleep(poll)
    print(f"# {path} gone after {time.monotonic() - t0:.0f} s", flush=True)


def run(args, cmd: list[str], run_dir: Path) -> dict:
    """Train one run and return its final evaluation row."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"this run failed (exit {proc.returncode}):\n  {shlex.join(cmd)}\n{tail}")
    final = final_eval(run_dir, args.max_images)
    if final is None:
        raise SystemExit(f"{run_dir}: no FID at the end of the run (is --data an image dataset with features?)")
    return final


def final_eval(run_dir: Path, max_images: int) -> dict | None:
    evals = [r for r in runs.read_metrics(run_dir) if r.get("event") == "eval" and r["images"] >= max_images]
    if not evals or "fid" not in evals[-1]:
        return None
    final = {k: v for k, v in evals[-1].items() if k not in ("event", "protocol", "time")}
    return {**final, "seconds_eval": final.pop("seconds", None)}


if __name__ == "__main__":
    sys.exit(main())
