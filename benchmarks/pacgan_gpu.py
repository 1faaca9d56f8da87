"""PacGAN's Table 1 on a GPU, a few rows a session: each row finished at the published length
comes back and is kept in the repository, and the next session runs the rows still missing.

    python benchmarks/pacgan_gpu.py --budget 540 --fit 650 --out build/pacgan-gpu       # first call
    python benchmarks/pacgan_gpu.py --budget 240 --out build/pacgan-gpu --run-only      # the next one

Why rows: the full table is about 32 minutes of an H200 (all 80 trials in one batch, 4.8 ms an
update, 2026-11-30), a session lends 15, and a run's checkpoints (15 MB a trial: the players,
Adam's moments, the EMAs) cannot come back from the device machine. So a session runs whole
*units* that fit: a pack's 10 trials for one or both G losses on one or both datasets, each unit
one batch of one M (trials of one M batch without padding: one batch of the GAN's two losses
costs less than two).

1. graph check: 20 updates of 4 trials of mixed packs, eager and as a CUDA graph on the same
   inputs; prints the largest parameter difference (the graph replays the eager kernels: 0);
2. timing: ms per update of each candidate unit (its trials in one batch), from the difference
   of a 200- and a 600-update run (set-up and scoring left out); and, for a later plan, whether
   two units' graphs replayed on two streams at once beat one after the other (stream_check);
3. the plan: the rows (M, G loss, dataset) not yet done - done: in a DONE/*/results.json of the
   same length; DONE defaults to docs/theory/pacgan-gpu, where finished units are committed - in
   the order GAN, PacGAN2, PacGAN3, PacGAN4, then the same with the saturating G loss
   (--g-losses); for each, the candidates with the same M's later loss, alone, then each dataset
   alone, and the first whose estimated time (10% added for scoring and checkpoints) fits what
   is left of --fit seconds is taken; if none fits, the first, as far as it goes;
4. the run: `gankit bench modes --protocol pacgan` for each planned unit in turn (10 trials,
   400,000 updates, the batched engine), stopped with its checkpoint when the budget ends (exit
   status 3); the next call with --run-only follows the same plan and continues from --out,
   which stays on a device machine held between calls (build/ is not sent again). Every trial is
   also scored from EMAs of G (--g-ema).

Each finished unit's folder (results.json, table.txt, collapse.png, curves.png) is packed into
$OUT/pacgan/units.tar.gz with the timing and the plan (timing.json); `python
benchmarks/pacgan_merge.py --add units.tar.gz` adds them to docs/theory/pacgan-gpu/ and makes the
table of every unit so far.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

import torch

from gankit.theory import pacgan
from gankit.theory import pacgan_batched as pb

DONE = Path("docs/theory/pacgan-gpu")
OVERHEAD = 1.1  # scoring 20 times a run and the 5-minute checkpoints, on top of the updates


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


def stream_check(device: str, precision: str = "tf32", updates: int = 600) -> dict:
    """Whether two units would train faster side by side (a measurement for a later plan, not used
    by this one): ms an update of a GAN and a PacGAN2 batch (20 trials each, G's two EMAs, CUDA
    graphs), replayed one after the other on one stream, and interleaved on two streams, where
    the GPU may run the two graphs' small kernels at once. Fixed inputs: timing only. In the
    run's precision (run_batch sets the same switch), so that its figures price the run's updates."""
    if device != "cuda":
        return {}
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    units = []
    for m in (1, 2):
        players = pb.initial_players(m, list(range(20)), device)
        pb.add_emas(players, [10_000.0, 100_000.0])
        update = pb.Update(players, graph=True)
        g = torch.Generator(device=device).manual_seed(m)
        real = torch.randn(20, 100 * m, 2, generator=g, device=device)  # (T, P*M, 2)
        zs = torch.randn(20, m, 100, 2, generator=g, device=device)  # (T, M, P, 2)
        for _ in range(5):  # the warm-up, then the capture
            update(real, zs)
        units.append((update, real, zs))

    def timed(streams: list) -> float:
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(updates):
            for (update, real, zs), stream in zip(units, streams, strict=True):
                with torch.cuda.stream(stream):
                    update(real, zs)
        torch.cuda.synchronize()
        return 1000 * (time.perf_counter() - started) / updates

    main, sides = torch.cuda.current_stream(), [torch.cuda.Stream(), torch.cuda.Stream()]
    report = {"precision": precision, "captured": [u.captured for u, _, _ in units], "one_stream_ms": timed([main, main]),
              "two_streams_ms": timed(sides), "one_stream_again_ms": timed([main, main])}
    print(f"streams ({precision}): a GAN and a PacGAN2 update, one stream {report['one_stream_ms']:.3f} ms "
          f"(again {report['one_stream_again_ms']:.3f}), two streams {report['two_streams_ms']:.3f} ms", flush=True)
    return report


def ms_per_update(unit: tuple, precision: str, device: str, short: int, long: int) -> float:
    """ms per update of one unit's batch: 10 trials of pack M for each of its G losses and datasets."""
    m, losses, datasets = unit
    trials = [(d, loss, t) for loss in losses for d in datasets for t in range(10)]
    seconds = []
    for n in (short, long):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        pb.run_batch([d for d, _, _ in trials], [m] * len(trials), [t for _, _, t in trials], n, device,
                     precision=precision, score_every=n, g_loss=[loss for _, loss, _ in trials])  # scored at the end
        seconds.append(time.perf_counter() - started)
    return 1000 * (seconds[1] - seconds[0]) / (long - short)


def unit_name(unit: tuple) -> str:
    """(M, G losses, datasets) -> "pack1-ring8-grid25" (PacGAN's loss), "pack2-sat-grid25",
    "pack1-ns-sat-ring8-grid25" (both losses' trials in one batch)."""
    m, losses, datasets = unit
    return pacgan.unit_name([m], losses, datasets)


def done_rows(folder: Path, iterations: int) -> set[tuple[int, str, str]]:
    """(M, G loss, dataset) of every finished unit in folder/*/results.json of this length."""
    done = set()
    for path in sorted(folder.glob("*/results.json")):
        record = json.loads(path.read_text())
        if record.get("iterations") != iterations:
            print(f"  {path}: {record.get('iterations')} updates, not {iterations}: not counted as done", flush=True)
            continue
        done |= {(r["pack"], r.get("g_loss", "non-saturating"), r["data"]) for r in record.get("trial_results", [])}
    return done


def plan(variants: list[tuple[int, str]], done: set[tuple[int, str, str]], fit: float | None, iterations: int,
         timed) -> tuple[list, dict]:
    """The units to run, in order, and each candidate's ms an update. variants: (M, G loss) in the
    table's order; done: (M, G loss, dataset) finished; timed(unit) -> ms an update. For each
    variant with datasets to do, the candidates are: with the same M's later losses (one batch of
    one M, no padding: cheaper than two), alone, then each dataset alone; the first that fits the
    time left is taken (every candidate, without --fit). A candidate of no smaller M and no fewer
    trials than one timed that does not fit is not timed (more passes of G cost more)."""
    chosen, timing, left, first = [], {}, fit, None
    taken = set(done)
    measured: list[tuple[int, int, float]] = []  # (M, trials, seconds needed) of each unit timed
    for i, (m, loss) in enumerate(variants):
        todo = tuple(d for d in pacgan.DATASETS if (m, loss, d) not in taken)
        if not todo:
            continue
        partners = tuple(g for n, g in variants[i + 1:] if n == m and all((m, g, d) not in taken for d in todo))
        options = ([(m, (loss, *partners), todo)] if partners else []) + [(m, (loss,), todo)]
        options += [(m, (loss,), (d,)) for d in todo] if len(todo) > 1 else []
        for unit in options:
            if any((m, g, d) in taken for g in unit[1] for d in unit[2]):
                continue  # a single dataset after its pack's both were taken
            if left is not None:
                trials = 10 * len(unit[1]) * len(unit[2])
                if any(m >= n and trials >= k and need > left for n, k, need in measured):
                    continue  # no smaller M with no fewer trials fitted: not worth its timing's GPU seconds
                ms = timing[unit_name(unit)] = timed(unit)
                first = first or unit
                need = OVERHEAD * ms * iterations / 1000
                measured.append((m, trials, need))
                print(f"  {unit_name(unit)}: {ms:.3f} ms an update, about {need:.0f} s; {left:.0f} s left of --fit",
                      flush=True)
                if need > left:
                    continue
                left -= need
            chosen.append(unit)
            taken |= {(m, g, d) for g in unit[1] for d in unit[2]}
    if not chosen and first:
        print(f"  no unit fits in --fit {fit:.0f} s: {unit_name(first)}, as far as the budget goes", flush=True)
        chosen = [first]
    return chosen, timing


def checks(variants: list[tuple[int, str]], precision: str, device: str, fit: float | None, iterations: int,
           done: set[tuple[int, str, str]]) -> dict:
    """The graph check, the streams measurement (on a GPU), each candidate unit's time and the plan."""
    gpu = device == "cuda"
    report: dict = {"device": torch.cuda.get_device_name() if gpu else "cpu", "torch": torch.__version__,
                    "precision": precision, "iterations": iterations, "fit_s": fit,
                    "done_before": [list(x) for x in sorted(done)]}
    report["graph_check_max_abs_diff"] = graph_check(device) if gpu else float("nan")
    print(f"graph check (mixed packs): largest |eager - graph| after 20 updates: {report['graph_check_max_abs_diff']:.3g}",
          flush=True)
    if gpu:
        try:
            report["streams"] = stream_check(device, precision)
        except Exception as exc:  # a measurement for later: its failure must not cost the run
            report["streams"] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"streams: not measured ({report['streams']['error']})", flush=True)
    lengths = (200, 600) if gpu else (4, 8)
    units, timing = plan(variants, done, fit, iterations, lambda unit: ms_per_update(unit, precision, device, *lengths))
    report.update(ms_per_update=timing, plan=[[m, list(losses), list(ds)] for m, losses, ds in units])
    print(f"{precision}: the plan: {', '.join(unit_name(u) for u in units) or 'nothing left to run'}", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=540, help="seconds for this call, checks and run together")
    parser.add_argument("--packs", default="1,2,3,4", help="the table's packs, in the order they are run")
    parser.add_argument("--g-losses", default="non-saturating,saturating",
                        help="G's losses, in the order they are run: every pack of the first, then of the next "
                             "(non-saturating is PacGAN's; saturating: the loss lever, rows of its own)")
    parser.add_argument("--fit", type=float, default=None,
                        help="seconds of training this session's calls leave: plan only the units that fit "
                             "(default: every unit not done)")
    parser.add_argument("--done", default=str(DONE), help="folder of finished units, one folder each (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=pacgan.ITERATIONS, help="updates (default: as published)")
    parser.add_argument("--precision", default="tf32", choices=("fp32", "tf32"))
    parser.add_argument("--g-ema", default="10000,100000",
                        help="the run's trials are also scored from EMAs of G of these half-lives (nearly free: a "
                             "few lerps in the update); '' for none")
    parser.add_argument("--score-every", type=int, default=None,
                        help="score every trial every so many updates (default: 20 times a run)")
    parser.add_argument("--out", default="build/pacgan-gpu")
    parser.add_argument("--run-only", action="store_true", help="no checks: follow the first call's plan in --out")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script (no graph check, tiny sizes)")
    args = parser.parse_args(argv)
    deadline = time.time() + args.budget
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.run_only:
        if not (out / "timing.json").is_file():
            raise SystemExit(f"pacgan_gpu: --run-only: no {out / 'timing.json'}; run once without --run-only first")
        report = json.loads((out / "timing.json").read_text())
    else:
        losses = args.g_losses.split(",")
        if not set(losses) <= set(pacgan.G_LOSSES):
            parser.error(f"--g-losses must list {' or '.join(pacgan.G_LOSSES)}, got {args.g_losses!r}")
        variants = [(int(m), loss) for loss in losses for m in args.packs.split(",")]
        report = checks(variants, args.precision, args.device, args.fit, args.iterations,
                        done_rows(Path(args.done), args.iterations))
        (out / "timing.json").write_text(json.dumps(report, indent=1))
    try:
        stopped = run_plan(out, [(m, tuple(losses), tuple(ds)) for m, losses, ds in report["plan"]], args, deadline)
    finally:  # a unit that failed does not keep the finished ones from coming back
        _hand_back(out)
    return 3 if stopped else 0


def run_plan(out: Path, units: list, args, deadline: float) -> bool:
    """Each unit in turn, skipping those finished in --out; True when the budget stopped one."""
    for unit in units:
        folder = out / unit_name(unit)
        if (folder / "results.json").is_file():
            earlier = json.loads((folder / "results.json").read_text()).get("iterations")
            if earlier != args.iterations:
                raise SystemExit(f"pacgan_gpu: {folder} holds a run of {earlier} updates, this call asks for "
                                 f"{args.iterations}: choose another --out, or move that folder away")
            continue
        left = deadline - time.time() - 20  # the scoring, the figures, the table, the hand-back
        if left < 5:
            return True
        print(f"the run: {unit_name(unit)}, {args.iterations:,} updates, {args.precision}, stopping after {left:.0f} s",
              flush=True)
        m, losses, datasets = unit
        record = pacgan.run(folder, 0, 10, (m,), datasets, args.iterations, 1, args.device, log=sys.stdout, g_losses=losses,
                            engine="batched", precision=args.precision if args.device == "cuda" else "fp32",
                            stop_after=left, one_batch=False, score_every=args.score_every,
                            g_emas=tuple(float(h) for h in args.g_ema.split(",") if h))
        if record.get("stopped"):
            return True
    return False


def _hand_back(out: Path) -> None:
    """On the device machine ($OUT set): timing.json and one archive of the finished units' folders
    (without their checkpoints) to $OUT/pacgan/, whose files come back; the device lends 8 files."""
    if not os.environ.get("OUT"):
        return
    dest = Path(os.environ["OUT"]) / "pacgan"
    dest.mkdir(parents=True, exist_ok=True)
    if (out / "timing.json").is_file():
        shutil.copyfile(out / "timing.json", dest / "timing.json")
    finished = sorted(p.parent for p in out.glob("*/results.json"))
    if finished:
        with tarfile.open(dest / "units.tar.gz", "w:gz") as tar:
            for folder in finished:
                for name in ("results.json", "table.txt", "collapse.png", "curves.png"):
                    if (folder / name).is_file():
                        tar.add(folder / name, arcname=f"{folder.name}/{name}")


if __name__ == "__main__":
    raise SystemExit(main())
