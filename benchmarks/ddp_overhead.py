"""What the distributed code path costs: one plain process against torchrun with 1 (and N) processes.

    python benchmarks/ddp_overhead.py [--device cpu|cuda] [--nproc 2] [--batch-size 128]
                                      [--max-images 64000] [--data fashion-mnist] [--image-size 64]
    python benchmarks/ddp_overhead.py --quick --data npz:fake.npz --batch-size 8   # smoke test

Each configuration is `gankit train` as a user starts it (a fresh process; with torchrun, the
DDP-wrapped G and D, the all-reduce of the statistics and, with synchronised batch norm, its
collectives), on the same model (DCGAN, widths 64 at --image-size), data, global batch and
seed. Steady-state images/s come from the `time` column of metrics.jsonl: from the row at a
fifth of the run to the last row, so start-up (imports, data, rendezvous) is left out.

Prints one line per configuration, then `ratio ddp1/plain: X.XX` (the cost of the DDP code path
with one process: 1.00 is none) as its last line. On a 2-core CPU, N = 2 processes share the
same two cores as one process, so their line shows the collectives' cost, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path


def steady_rate(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "event" not in r]
    first = rows[len(rows) // 5]
    last = rows[-1]
    return (last["images"] - first["images"]) / max(last["time"] - first["time"], 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--nproc", type=int, default=2, help="processes of the last configuration (0: skip it)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-images", type=int, default=64_000)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=64, help="--g-width and --d-width")
    parser.add_argument("--sync-bn", default="on", choices=("on", "off"))
    parser.add_argument("--quick", action="store_true", help="a few iterations at 16x16: a smoke test")
    parser.add_argument("--train-args", default="", help="more `gankit train` flags for every configuration, "
                        "e.g. \"--memory-format contiguous\"")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_images, args.image_size, args.width = 20 * args.batch_size, 16, 8

    train = ["train", "--data", args.data, "--model", "dcgan", "--image-size", str(args.image_size),
             "--g-width", str(args.width), "--d-width", str(args.width), "--batch-size", str(args.batch_size),
             "--max-images", str(args.max_images), "--device", args.device, "--sync-bn", args.sync_bn,
             "--snapshot-every", str(10**9), "--checkpoint-every", str(10**9), *shlex.split(args.train_args)]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    configs = [("plain", [sys.executable, "-m", "gankit"]), ("ddp1", [*launch, "--nproc_per_node=1", "-m", "gankit"])]
    if args.nproc > 1:
        configs.append((f"ddp{args.nproc}", [*launch, f"--nproc_per_node={args.nproc}", "-m", "gankit"]))
    # the same threads for every configuration: all cores to the one process, shared out among N
    cores = os.cpu_count() or 1
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, command in configs:
            nproc = 1 if name in ("plain", "ddp1") else args.nproc
            env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // nproc))}
            out = Path(tmp) / name
            proc = subprocess.run([*command, *train, "--out", str(out)], env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-3000:])
                raise SystemExit(f"{name} failed (exit status {proc.returncode})")
            rates[name] = steady_rate(out)
            print(f"{name:>6}: {rates[name]:9.0f} images/s (steady state, batch {args.batch_size}, "
                  f"{args.image_size}x{args.image_size}, {args.device})", flush=True)
    print(f"ratio ddp1/plain: {rates['ddp1'] / rates['plain']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
