"""PacGAN's Table 1 on a GPU, over as many device calls as it takes (the batched engine, its
update one CUDA graph, checkpoints between calls).

    python benchmarks/pacgan_gpu.py --budget 540 --out build/pacgan-gpu             # first call
    python benchmarks/pacgan_gpu.py --budget 540 --out build/pacgan-gpu --run-only  # each next one

1. graph check: 20 updates of 4 trials of mixed packs, eager and as a CUDA graph on the same
   inputs; prints the largest parameter difference (the graph replays the eager kernels: 0);
2. timing: ms per update of a batch per pack (10 ring8 and 10 grid25 trials each) and of one
   batch of every pack's trials (packs mixed, pacgan_batched.stack_players), from the difference
   of a 200- and a 600-update run (set-up and scoring left out);
3. the run: `gankit bench modes --protocol pacgan` (all rows, 10 trials, 400,000 updates) in the
   faster layout; with --fit SECONDS, when all four rows would not fit in that many seconds of
   training but the goals' rows (GAN and PacGAN2) in one batch would, only those (timed too), stopped with every batch checkpointed when the budget ends (exit status 3); the
   next call with --run-only continues from --out, which stays on a device machine held between
   calls (build/ is not sent again). Every trial is scored from G and from EMAs of G (--g-ema).
   table.txt, results.json, collapse.png and curves.png in --out at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from gankit.theory import pacgan
from gankit.theory import pacgan_batched as pb


def graph_check(device: str) -> float:
    """Largest |eager - graph| over every parameter and G's EMAs (half-lives 10,000 and 100,000,
    updated inside the graph) after 20 updates of 4 trials of mixed packs (1, 2, 1, 2) on the same
    inputs."""
    seeds, packs = [0, 1, 2, 3], [1, 2, 1, 2]
    g = torch.Generator(device=device).manual_seed(0)
    inputs = [(torch.randn(4, 200, 2, generator=g, device=device),
               torch.randn(4, 2, 100, 2, generator=g, device=device)) for _ in range(20)]
    ends = []
    for graph in (False, True):
        players = pb.initial_players(packs, seeds, device)
        pb.add_emas(players, [10_000.0, 100_000.0])
        update = pb.Update(players, graph=graph)
        for real, zs in inputs:
            update(real, zs)
        assert update.captured == graph
        ends.append([p.detach() for p in players.d_params() + players.g_params() + [e for ema in players.emas for e in ema]])
    return max((a - b).abs().max().item() for a, b in zip(*ends, strict=True))


def ms_per_update(packs: list[int], precision: str, device: str, short: int, long: int) -> float:
    """ms per update of one batch: 10 ring8 and 10 grid25 trials of each pack in `packs`."""
    trials = [(m, d, t) for m in packs for d in ("ring8", "grid25") for t in range(10)]
    datas, ms, seeds = [d for _, d, _ in trials], [m for m, _, _ in trials], [t for _, _, t in trials]
    seconds = []
    for n in (short, long):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        pb.run_batch(datas, ms, seeds, n, device, precision=precision, score_every=n)  # scored once, at the end
        seconds.append(time.perf_counter() - started)
    return 1000 * (seconds[1] - seconds[0]) / (long - short)


def checks(packs: list[int], precision: str, device: str) -> dict:
    """The graph check and the two layouts' times: a batch per pack, and one batch of all."""
    gpu = device == "cuda"
    report: dict = {"device": torch.cuda.get_device_name() if gpu else "cpu", "torch": torch.__version__}
    report["graph_check_max_abs_diff"] = graph_check(device) if gpu else float("nan")
    print(f"graph check (mixed packs): largest |eager - graph| after 20 updates: {report['graph_check_max_abs_diff']:.3g}",
          flush=True)
    lengths = (200, 600) if gpu else (4, 8)
    per_pack = {m: ms_per_update([m], precision, device, *lengths) for m in packs}
    one = ms_per_update(packs, precision, device, *lengths)
    report.update(precision=precision, ms_per_update_per_pack=per_pack, ms_per_update_per_pack_sum=sum(per_pack.values()),
                  ms_per_update_one_batch=one, one_batch=one < sum(per_pack.values()))
    print(f"{precision}: ms per update, a batch per pack {', '.join(f'M={m} {v:.3f}' for m, v in per_pack.items())} "
          f"(sum {sum(per_pack.values()):.3f}); one batch of all {one:.3f}", flush=True)
    return report


def choose_run(report: dict, packs: list[int], iterations: int, fit: float | None, precision: str,
               device: str) -> tuple[list[int], bool]:
    """The packs and layout of the run: all of `packs` in the faster layout, unless `fit` seconds
    (what this session's calls leave for training) are too few for them but enough for the GAN and
    PacGAN2 rows in one batch, timed here; scoring and checkpoints are reckoned at 10%."""
    def seconds(ms: float) -> float:
        return 1.1 * ms * iterations / 1000
    best = min(report["ms_per_update_one_batch"], report["ms_per_update_per_pack_sum"])
    report["fit_s"], report["estimate_s"] = fit, seconds(best)
    if fit is None or seconds(best) <= fit or packs == [1, 2] or not {1, 2} <= set(packs):
        return packs, report["one_batch"]
    gpu = device == "cuda"
    goals = ms_per_update([1, 2], precision, device, *((200, 600) if gpu else (4, 8)))
    report["ms_per_update_goals_one_batch"], report["estimate_goals_s"] = goals, seconds(goals)
    print(f"all four rows need about {seconds(best):.0f} s, more than --fit {fit:.0f}; the GAN and PacGAN2 rows "
          f"in one batch: {goals:.3f} ms per update, about {seconds(goals):.0f} s", flush=True)
    if seconds(goals) <= fit:
        return [1, 2], True
    return packs, report["one_batch"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=540, help="seconds for this call, checks and run together")
    parser.add_argument("--packs", default=None,
                        help="the run's packs (default: all four rows, or with --run-only those the first call chose)")
    parser.add_argument("--fit", type=float, default=None,
                        help="seconds of training this session's calls leave for the run: when all four rows would "
                             "not fit but the GAN and PacGAN2 rows would, run only those")
    parser.add_argument("--iterations", type=int, default=pacgan.ITERATIONS, help="updates (default: as published)")
    parser.add_argument("--precision", default="tf32", choices=("fp32", "tf32"))
    parser.add_argument("--g-ema", default="10000,100000",
                        help="the run's trials are also scored from EMAs of G of these half-lives (nearly free: a "
                             "few lerps in the update); '' for none")
    parser.add_argument("--score-every", type=int, default=None,
                        help="score every trial every so many updates (default: 20 times a run)")
    parser.add_argument("--out", default="build/pacgan-gpu")
    parser.add_argument("--run-only", action="store_true", help="no checks: continue the run in --out")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script (no graph check, tiny sizes)")
    args = parser.parse_args(argv)
    deadline = time.time() + args.budget
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    packs = [int(m) for m in (args.packs or "1,2,3,4").split(",")]
    one_batch = None
    if not args.run_only:
        report = checks(packs, args.precision, args.device)
        packs, one_batch = choose_run(report, packs, args.iterations, args.fit, args.precision, args.device)
        report.update(run_packs=packs, run_one_batch=one_batch)
        (out / "timing.json").write_text(json.dumps(report, indent=1))
    elif (out / "timing.json").is_file():
        report = json.loads((out / "timing.json").read_text())
        one_batch = report.get("run_one_batch", report["one_batch"])
        packs = [int(m) for m in args.packs.split(",")] if args.packs else report.get("run_packs", packs)
    left = deadline - time.time() - 20  # the scoring, the figure, the table
    print(f"the run: packs {packs}, {args.iterations:,} updates, {args.precision}, "
          f"{'one batch' if one_batch else 'a batch per pack'}, stopping after {left:.0f} s", flush=True)
    record = pacgan.run(out, 0, 10, tuple(packs), pacgan.DATASETS, args.iterations, 1, args.device, log=sys.stdout,
                        engine="batched", precision=args.precision if args.device == "cuda" else "fp32",
                        stop_after=max(left, 1.0), one_batch=one_batch, score_every=args.score_every,
                        g_emas=tuple(float(h) for h in args.g_ema.split(",") if h))
    _hand_back(out)
    return 3 if record.get("stopped") else 0


def _hand_back(out: Path) -> None:
    """On the device machine ($OUT set): copy what there is of the results to $OUT/pacgan/, the
    folder whose files come back (the checkpoints stay behind for the next call)."""
    if not os.environ.get("OUT"):
        return
    dest = Path(os.environ["OUT"]) / "pacgan"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("timing.json", "table.txt", "results.json", "collapse.png", "curves.png"):
        if (out / name).is_file():
            shutil.copyfile(out / name, dest / name)


if __name__ == "__main__":
    raise SystemExit(main())
