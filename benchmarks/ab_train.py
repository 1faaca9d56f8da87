"""Training speed of two gankit source trees, or of two flag variants of one, alternating: is a
change to the loop (or an output setting) free?

    python benchmarks/ab_train.py --tree before=/tmp/old/src --tree after=src [--rounds 3]
                                  [--warmup 20] [-- gankit train flags]
    python benchmarks/ab_train.py --variant off="--tensorboard off" --variant on="--tensorboard on"
                                  [--tree src] [--rounds 3] [--abba] [-- gankit train flags]

Each round runs `python -m gankit train FLAGS` once per tree (or variant: FLAGS plus the
variant's own, on the one tree given, by default this checkout's src), in the order given, each
in a fresh process with PYTHONPATH set to that tree; alternating spreads any drift of the machine
(another job, the CPU's clock) over both. Images/s are steady-state, from the `time` column of
metrics.jsonl: from the end of iteration --warmup to the last iteration. The default flags are
the `make demo` job (DCGAN, widths 32, batch 64) cut to 300 iterations, with no snapshots or
checkpoints in between. Prints one row per run, then the median of each tree and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_FLAGS = ["--data", "fashion-mnist", "--model", "dcgan", "--g-width", "32", "--d-width", "32",
                 "--batch-size", "64", "--max-images", "19200", "--snapshot-every", "1000000",
                 "--checkpoint-every", "1000000", "--device", "cpu"]
HERE_SRC = Path(__file__).resolve().parents[1] / "src"


def images_per_second(run_dir: Path, warmup: int) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "event" not in r]
    if len(rows) <= warmup + 1:
        raise SystemExit(f"ab_train: {run_dir} has {len(rows)} iterations; give a longer run than --warmup {warmup}")
    first, last = rows[warmup - 1], rows[-1]
    return (last["images"] - first["images"]) / (last["time"] - first["time"])


def run_once(tree: Path, flags: list[str], out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    cmd = [sys.executable, "-m", "gankit", "train", *flags, "--out", str(out), "--overwrite"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"ab_train: {' '.join(cmd)} failed (PYTHONPATH={tree}):\n{proc.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    flags = argv[argv.index("--") + 1:] if "--" in argv else DEFAULT_FLAGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=SRC",
                        help="a name and a source folder holding the gankit package (give two or more; "
                        "with --variant, at most one, NAME= optional)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                        help="a name and the gankit train flags added for it (give two or more)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20, help="iterations left out of each figure")
    parser.add_argument("--abba", action="store_true",
                        help="reverse the order every other round (A B, B A, ...), so that a machine "
                        "growing busier or quieter does not favour whichever runs first")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.variant:
        if len(args.tree) > 1:
            parser.error("--variant compares flags on one tree: give at most one --tree")
        src = args.tree[0].split("=", 1)[-1] if args.tree else str(HERE_SRC)
        runs = {name: (src, shlex.split(extra)) for name, extra in (v.split("=", 1) for v in args.variant)}
        column = "variant"
    else:
        if not args.tree:
            parser.error("give two or more --tree NAME=SRC, or --variant NAME=FLAGS")
        runs = {name: (src, []) for name, src in (t.split("=", 1) for t in args.tree)}
        column = "tree"
    figures: dict[str, list[float]] = {name: [] for name in runs}
    print(f"CPU: {_cpu()}; {os.cpu_count()} cores; python {platform.python_version()}")
    print(f"flags: gankit train {' '.join(flags)}")
    for name, (src, extra) in runs.items():
        if column == "variant":
            print(f"variant {name}: {' '.join(extra)} (PYTHONPATH={src})")
    print(f"\n| round | {column} | images/s |\n| --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(1, args.rounds + 1):
            order = list(runs.items())
            for name, (src, extra) in (order[::-1] if args.abba and round_ % 2 == 0 else order):
                run_once(Path(src), flags + extra, Path(tmp) / name)
                figures[name].append(images_per_second(Path(tmp) / name, args.warmup))
                print(f"| {round_} | {name} | {figures[name][-1]:.1f} |", flush=True)
    medians = {name: statistics.median(values) for name, values in figures.items()}
    print("\n" + ", ".join(f"median {name}: {value:.1f} images/s" for name, value in medians.items()))
    names = list(runs)
    print(f"ratio {names[-1]}/{names[0]}: {medians[names[-1]] / medians[names[0]]:.3f}")
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
