"""PacGAN's Table 1 on a GPU within a time budget (the batched engine, its update a CUDA graph).

    python benchmarks/pacgan_gpu.py --budget 380 --out $OUT/pacgan

1. graph check: 20 updates of 4 trials (pack 2), eager and as a CUDA graph on the same inputs;
   prints the largest parameter difference (the graph replays the eager kernels: ~0);
2. timing: ms per update of the 20 trials of each pack (2 datasets x 10 trials), fp32 and tf32,
   from two lengths (the difference leaves set-up and scoring out);
3. the run: `gankit bench modes --protocol pacgan` for --packs with as many updates as fit in
   what is left of the budget (at most the published 400,000), in the faster precision; its
   table.txt, results.json and collapse.png in --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from gankit.theory import pacgan
from gankit.theory import pacgan_batched as pb


def graph_check(device: str) -> float:
    """Largest |eager - graph| over every parameter after 20 updates on the same inputs."""
    seeds, pack = [0, 1, 2, 3], 2
    g = torch.Generator(device=device).manual_seed(0)
    inputs = [(torch.randn(4, 100 * pack, 2, generator=g, device=device),
               torch.randn(4, pack, 100, 2, generator=g, device=device)) for _ in range(20)]
    ends = []
    for graph in (False, True):
        players = pb.initial_players(pack, seeds, device)
        update = pb.Update(players, graph=graph)
        for real, zs in inputs:
            update(real, zs)
        assert (update.replay is not None) == graph
        ends.append([p.detach() for p in players.d_params() + players.g_params()])
    return max((a - b).abs().max().item() for a, b in zip(*ends, strict=True))


def ms_per_update(pack: int, precision: str, device: str, short: int = 200, long: int = 600) -> float:
    """ms per update of 20 trials (ring8 and grid25, 10 each) of one pack."""
    datas = ["ring8"] * 10 + ["grid25"] * 10
    seeds = list(range(20))
    seconds = []
    for n in (short, long):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        pb.run_batch(datas, pack, seeds, n, device, precision=precision)
        seconds.append(time.perf_counter() - started)
    return 1000 * (seconds[1] - seconds[0]) / (long - short)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=380, help="seconds for all three parts")
    parser.add_argument("--packs", default="1,2", help="the run's packs (default: 1,2, the goals' rows)")
    parser.add_argument("--out", default="build/pacgan-gpu")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script (no graph check, tiny timings)")
    args = parser.parse_args(argv)
    deadline = time.perf_counter() + args.budget
    device = args.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = device == "cuda"
    report: dict = {"device": torch.cuda.get_device_name() if gpu else "cpu", "torch": torch.__version__}
    report["graph_check_max_abs_diff"] = graph_check(device) if gpu else float("nan")
    print(f"graph check: largest |eager - graph| after 20 updates: {report['graph_check_max_abs_diff']:.3g}", flush=True)
    packs = [int(m) for m in args.packs.split(",")]
    lengths = (200, 600) if gpu else (4, 8)
    timing = {p: {m: ms_per_update(m, p, device, *lengths) for m in (1, 2, 3, 4)} for p in ("fp32", "tf32")}
    report["ms_per_update_of_20_trials"] = timing
    for p, row in timing.items():
        print(f"{p}: ms per update of 20 trials, packs 1-4: " + ", ".join(f"{v:.3f}" for v in row.values()), flush=True)
    precision = min(timing, key=lambda p: sum(timing[p][m] for m in packs))
    per_update = sum(timing[precision][m] for m in packs) / 1000
    left = deadline - time.perf_counter() - 25 - 6 * len(packs)  # scoring, the figure, set-up per pack
    step = 1000 if gpu else 1
    iterations = int(min(pacgan.ITERATIONS, left / per_update) // step * step)
    report.update(run_precision=precision, run_iterations=iterations, run_packs=packs)
    (out / "timing.json").write_text(json.dumps(report, indent=1))
    print(f"the run: packs {packs}, {iterations:,} updates, {precision} ({per_update * 1000:.3f} ms per update of all)", flush=True)
    if iterations < step:
        print("no time left for the run", flush=True)
        return 1
    pacgan.run(out, 0, 10, tuple(packs), pacgan.DATASETS, iterations, 1, device, log=sys.stdout,
               engine="batched", precision=precision if gpu else "fp32")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
