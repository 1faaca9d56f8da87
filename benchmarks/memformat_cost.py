"""What `--memory-format auto` costs at start-up on the CPU (memformat.py), and what it chose.

    PYTHONPATH=src python benchmarks/memformat_cost.py            # make demo's model: 28x28, widths 32, batch 64
    PYTHONPATH=src python benchmarks/memformat_cost.py --image-size 64 --width 64 --batch-size 128

Each repeat calls memformat.choose with an empty cache (the whole cost: the throwaway players,
their copies, the warm-up and the timed rounds) and then again with the cache it wrote; one JSON
line each, with the medians it measured and the layout it chose. The first repeat also pays the
process's first convolutions (oneDNN's set-up), as a run's start does. `uptime` before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time

import torch

from gankit import distributed, memformat
from gankit.config import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--width", type=int, default=32, help="--g-width and --d-width")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="tf32")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = TrainConfig(model="dcgan", g_width=args.width, d_width=args.width, batch_size=args.batch_size,
                         precision=args.precision, device="cpu")
    shape = (args.channels, args.image_size, args.image_size)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["XDG_CACHE_HOME"] = cache
            began = time.perf_counter()
            _, measured = memformat.choose(config, shape, None, distributed.World())
            cost = time.perf_counter() - began
            began = time.perf_counter()
            _, cached = memformat.choose(config, shape, None, distributed.World())
            print(json.dumps({"repeat": repeat, "threads": torch.get_num_threads(), "shape": list(shape),
                              "width": args.width, "batch": args.batch_size, "measure_s": round(cost, 3),
                              "second_start_s": round(time.perf_counter() - began, 4), "chose": measured.layout,
                              "ms_per_step": measured.ms, "second_start": cached.how}))
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
