"""Training speed of two gankit source trees, alternating: is a change to the loop free?

    python benchmarks/ab_train.py --tree before=/tmp/old/src --tree after=src [--rounds 3]
                                  [--warmup 20] [-- gankit train flags]

Each round runs `python -m gankit train FLAGS` once per tree, in the order given, each in a fresh
process with PYTHONPATH set to that tree; alternating spreads any drift of the machine (another
job, the CPU's clock) over both. Images/s are steady-state, from the `time` column of
metrics.jsonl: from the end of iteration --warmup to the last iteration. The default flags are
the `make demo` job (DCGAN, widths 32, batch 64) cut to 300 iterations, with no snapshots or
checkpoints in between. Prints one row per run, then the median of each tree and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_FLAGS = ["--data", "fashion-mnist", "--model", "dcgan", "--g-width", "32", "--d-width", "32",
                 "--batch-size", "64", "--max-images", "19200", "--snapshot-every", "1000000",
                 "--checkpoint-every", "1000000", "--device", "cpu"]


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
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=SRC",
                        help="a name and a source folder holding the gankit package (give two or more)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20, help="iterations left out of each figure")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    trees = dict(t.split("=", 1) for t in args.tree)
    figures: dict[str, list[float]] = {name: [] for name in trees}
    print(f"CPU: {_cpu()}; {os.cpu_count()} cores; python {platform.python_version()}")
    print(f"flags: gankit train {' '.join(flags)}\n\n| round | tree | images/s |\n| --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(1, args.rounds + 1):
            for name, src in trees.items():
                run_once(Path(src), flags, Path(tmp) / name)
                figures[name].append(images_per_second(Path(tmp) / name, args.warmup))
                print(f"| {round_} | {name} | {figures[name][-1]:.1f} |", flush=True)
    medians = {name: statistics.median(values) for name, values in figures.items()}
    print("\n" + ", ".join(f"median {name}: {value:.1f} images/s" for name, value in medians.items()))
    names = list(trees)
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
