"""gankit against the real pytorch/examples dcgan/main.py, side by side: speed and time to its FID.

    git clone https://github.com/pytorch/examples build/pytorch-examples   # an ignored folder
    python benchmarks/vs_examples.py --examples build/pytorch-examples --device cuda --workers 16
    python benchmarks/vs_examples.py --examples build/pytorch-examples --device cpu --iterations 60

The example's own script runs unchanged, as its README runs it (`python main.py --dataset mnist
... [--accel]`), then `gankit train` with the same model (DCGAN 64x64, ngf = ndf = 64, nz = 100),
data, batch size, seed and length, one after the other on the same machine. Its Python must have
torchvision (--examples-python; default: this one). Fashion-MNIST reaches the example through its
`--dataset mnist` loader: the files have MNIST's names and format, so they are unpacked into
OUT/data/MNIST/raw/, where torchvision looks first (nothing is downloaded).

Two modes:
- full (default): both train --epochs passes (the example's default, 25). Every epoch the
  example saves netG_epoch_E.pth; gankit evaluates itself every --eval-every images. Both are
  scored with the one protocol of gankit's evaluation during training (--fid-samples samples,
  classifier features, the test split, the same seed), the example's checkpoints afterwards.
  Time to FID: from launch (start-up included) to the end of the first epoch (example) or
  evaluation (gankit) whose FID is at most the example's final one; gankit's own evaluations
  are not counted (their duration is in metrics.jsonl), nor are the example's, which run after
  it. The last line is `time-to-FID ratio example/gankit: X.XX`.
- --iterations N: speed only; the example is stopped after N iterations and gankit trains the
  same N minibatches; no FID. The last line is `ratio gankit/example: X.XX`.

Steady-state images/s: the example prints a line after every iteration (it reads the losses with
.item(), so the line marks the iteration's end); gankit's metrics.jsonl says when each iteration
was queued. Both are counted after the warm-up (full mode: the first epoch, as the issue's
"epochs 2-25"; --iterations: --warmup iterations), gankit without the intervals that hold an
evaluation.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing gankit

from gankit import runs  # noqa: E402
from gankit.data import mnist  # noqa: E402
from gankit.errors import DataError  # noqa: E402
from gankit.evaluate import EvalProtocol, score  # noqa: E402
from gankit.models.dcgan import DCGANGenerator  # noqa: E402
from gankit.sample import load_generator  # noqa: E402

IMAGE_SIZE, NZ, WIDTH = 64, 100, 64
# '[0/25][12/469] Loss_D: ...', printed by the example after each iteration
EXAMPLE_LINE = re.compile(r"^\[(\d+)/(\d+)\]\[(\d+)/(\d+)\] Loss_D")
EVAL_LINE = re.compile(r"gankit: eval at (\d+) images")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", required=True, type=Path,
                        help="a checkout of github.com/pytorch/examples (holds dcgan/main.py)")
    parser.add_argument("--examples-python", default=sys.executable,
                        help="the Python that runs the example; needs torch and torchvision (default: this one)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="the example's --workers (its default: 2)")
    parser.add_argument("--epochs", type=int, default=25, help="the example's --niter and gankit's --epochs")
    parser.add_argument("--iterations", type=int, help="speed only: stop both after this many iterations")
    parser.add_argument("--warmup", type=int, default=5, help="with --iterations: untimed iterations first (at least 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fid-samples", type=int, default=5000, help="samples per FID (gankit's --eval-samples)")
    parser.add_argument("--eval-every", type=int, help="gankit's --eval-every in images (default: one epoch)")
    parser.add_argument("--train-images", type=int,
                        help="give both programs only the first N training images (to check this script on a "
                             "CPU in minutes; the classifier for the FIDs is then trained on those N too)")
    parser.add_argument("--example-epochs", default="all",
                        help="which of the example's epochs to score: all, or a list such as 1,5,25 "
                             "(the last one is always scored: it is the target)")
    parser.add_argument("--gankit-args", default="", help="more `gankit train` flags, e.g. '--precision bf16'")
    parser.add_argument("--data-dir", help="folder holding the Fashion-MNIST IDX files (default: gankit's search)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "vs-examples", help="work folder")
    args = parser.parse_args(argv)
    # Stopped from outside (benchmarks/gpu_check.sh's time limit): end like Ctrl-C, so that the
    # `finally` of run_example stops the example, which runs in a session of its own.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    main_py = args.examples / "dcgan" / "main.py"
    if not main_py.is_file():
        parser.error(f"--examples {args.examples}: no dcgan/main.py there; clone "
                     "https://github.com/pytorch/examples and give its folder")
    if min(args.batch_size, args.epochs, args.fid_samples, args.warmup, args.eval_every or 1,
           args.train_images or 1) < 1:
        parser.error("--batch-size, --epochs, --fid-samples, --eval-every, --train-images and --warmup "
                     "must be positive")
    if args.iterations is not None and args.iterations <= args.warmup:
        parser.error(f"--iterations ({args.iterations}) must be larger than --warmup ({args.warmup})")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was given, but PyTorch sees no CUDA GPU here; use --device cpu")
    full = args.iterations is None
    example_epochs = _epochs(args.example_epochs, args.epochs) if full else []
    args.out.mkdir(parents=True, exist_ok=True)
    dataroot, n_train = unpack_as_mnist(args.data_dir, args.out / "data", args.train_images)
    per_epoch = -(-n_train // args.batch_size)
    args.eval_every = args.eval_every or n_train
    print(f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {_device_name(args.device)}, {os.cpu_count()} CPU cores; "
          f"gankit's torch {torch.__version__}; example: {_versions(args.examples_python)}, "
          f"{_commit(args.examples)}")
    print(f"# DCGAN 64x64 (ngf = ndf = 64, nz = 100), Fashion-MNIST train ({n_train:,} images), batch "
          f"{args.batch_size}, seed {args.seed}, "
          + (f"{args.epochs} epochs" if full else f"{args.iterations} iterations ({args.warmup} untimed)"))

    example = run_example(args, main_py, dataroot, args.out / "example", n_train)
    warm_images = (per_epoch if full else args.warmup) * args.batch_size
    ours = run_gankit(args, args.out / "gankit", dataroot / "MNIST" / "raw", n_train)
    rows = [("pytorch/examples dcgan/main.py", f"{args.workers} workers" + (", --accel" if args.device == "cuda" else ""),
             example.wall, example.steady(args.batch_size, per_epoch if full else args.warmup)),
            ("gankit train", " ".join(["defaults"] if not args.gankit_args else shlex.split(args.gankit_args)),
             ours.wall, ours.steady(warm_images))]
    print("| program | settings | wall s (launch to exit; --iterations: example to its last iteration) | images/s (steady) |")
    print("| --- | --- | --- | --- |")
    for name, settings, wall, rate in rows:
        print(f"| {name} | {settings} | {wall:.1f} | {rate:,.{1 if rate < 100 else 0}f} |")
    record = {"args": {k: str(v) for k, v in vars(args).items()},
              "example": {"wall": example.wall, "steady": rows[0][3]},
              "gankit": {"wall": ours.wall, "steady": rows[1][3]}}
    if not full:
        (args.out / "vs_examples.json").write_text(json.dumps(record, indent=1))
        print(f"ratio gankit/example: {rows[1][3] / rows[0][3]:.2f}")
        return 0

    # Time to the example's final FID.
    config = load_generator(args.out / "gankit", "cpu")[1]["config"]
    fids = score_example(args, config, example_epochs)
    target = fids[args.epochs]
    print(f"# FID (classifier features, {args.fid_samples} samples against the test split, seed {args.seed})")
    print("| after | example: FID | example: s from launch | gankit: FID | gankit: s from launch (evaluations not counted) |")
    print("| --- | --- | --- | --- | --- |")
    gankit_at = ours.fids()
    for epoch in range(1, args.epochs + 1):
        images = epoch * n_train
        ex = (f"{fids[epoch]:.2f}", f"{example.epoch_end(epoch):.1f}") if epoch in fids else ("", "")
        near = [e for e in gankit_at if abs(e["images"] - images) < args.eval_every / 2 + 1]
        ours_cols = (f"{near[0]['fid']:.2f}", f"{near[0]['at']:.1f}") if near else ("", "")
        if epoch in fids or near:
            print(f"| {epoch} epoch{'s' if epoch > 1 else ''} | {ex[0]} | {ex[1]} | {ours_cols[0]} | {ours_cols[1]} |")
    t_example = example.epoch_end(args.epochs)
    reached = next((e for e in gankit_at if e["fid"] <= target), None)
    record.update({"target_fid": target, "example_fids": fids, "gankit_evals": gankit_at,
                   "time_to_fid": {"example": t_example, "gankit": reached and reached["at"]}})
    (args.out / "vs_examples.json").write_text(json.dumps(record, indent=1))
    print(f"# target: the example's FID after {args.epochs} epochs, {target:.2f}; it got there "
          f"{t_example:.1f} s after launch")
    if reached is None:
        print(f"# gankit did not reach it in {args.epochs} epochs (best {min(e['fid'] for e in gankit_at):.2f})")
        print("time-to-FID ratio example/gankit: n/a")
        return 1
    print(f"# gankit: {reached['at']:.1f} s after launch, at {reached['images']:,} images")
    print(f"time-to-FID ratio example/gankit: {t_example / reached['at']:.2f}")
    return 0


# --- data ---------------------------------------------------------------------------------------

def unpack_as_mnist(data_dir: str | None, root: Path, train_images: int | None = None) -> tuple[Path, int]:
    """Fashion-MNIST's four IDX files, uncompressed, in ROOT/MNIST/raw/ (torchvision's MNIST
    layout), the training split cut to its first `train_images`; returns (ROOT, training images).
    gankit reads the same files (its --data-dir)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, (image_stem, label_stem) in mnist.FILES.items():
        try:
            images, labels, _ = mnist.load_split("fashion-mnist", split, data_dir, download=False)
        except DataError as exc:
            raise SystemExit(f"{exc}\n(run `make data`, or give --data-dir)") from None
        if split == "train" and train_images is not None:
            if train_images > len(images):
                raise SystemExit(f"--train-images {train_images}: the training split has {len(images)} images")
            images, labels = images[:train_images], labels[:train_images]
        write_idx(raw / image_stem, images, 0x08)
        write_idx(raw / label_stem, labels, 0x08)
        if split == "train":
            n_train = len(images)
    return root, n_train


def write_idx(path: Path, array: np.ndarray, code: int) -> None:
    """An uncompressed IDX file (big-endian header: 0, type code, rank, dims), written whole or not at all."""
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as out:
        out.write(struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
        out.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    tmp.replace(path)


# --- the example --------------------------------------------------------------------------------

@dataclass
class ExampleRun:
    """The iterations the example printed: (epoch, i, per_epoch, seconds since launch)."""
    lines: list[tuple[int, int, int, float]]
    wall: float
    n_train: int

    def images(self, batch: int, index: int) -> int:
        """Images in iteration `index`: a full batch, or the rest of the set at an epoch's end."""
        _, i, n, _ = self.lines[index]
        return batch if i < n - 1 else self.n_train - (n - 1) * batch

    def steady(self, batch: int, warmup: int) -> float:
        """Images/s over the iterations after the first `warmup` ones (at least 1), timed from
        the end of the last warm-up iteration."""
        if len(self.lines) <= warmup:
            raise SystemExit(f"the example printed {len(self.lines)} iterations; too few to time after {warmup}")
        images = sum(self.images(batch, j) for j in range(warmup, len(self.lines)))
        return images / (self.lines[-1][3] - self.lines[warmup - 1][3])

    def epoch_end(self, epoch: int) -> float:
        """Seconds from launch to the last iteration of epoch `epoch` (1-based)."""
        return max(t for e, _, _, t in self.lines if e == epoch - 1)


def parse_example_line(line: str) -> tuple[int, int, int] | None:
    """(epoch, iteration, iterations per epoch) of one of the example's progress lines."""
    m = EXAMPLE_LINE.match(line)
    return (int(m[1]), int(m[3]), int(m[4])) if m else None


def run_example(args, main_py: Path, dataroot: Path, out: Path, n_train: int) -> ExampleRun:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    niter = args.epochs if args.iterations is None else -(-args.iterations // -(-n_train // args.batch_size))
    cmd = [args.examples_python, str(main_py.resolve()), "--dataset", "mnist", "--dataroot", str(dataroot.resolve()),
           "--batchSize", str(args.batch_size), "--workers", str(args.workers), "--niter", str(niter),
           "--manualSeed", str(args.seed), "--outf", str(out.resolve())]
    if args.device == "cuda":
        cmd.append("--accel")
    print("# example: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    lines, tail, stopped = [], [], False
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own group: stopping it stops its loader workers
    try:
        for line in proc.stdout:
            parsed = parse_example_line(line)
            if parsed is None:
                tail = (tail + [line.rstrip()])[-30:]
                continue
            lines.append((*parsed, time.monotonic() - t0))
            if args.iterations is not None and len(lines) >= args.iterations:
                os.killpg(proc.pid, signal.SIGTERM)
                stopped = True
                break
    finally:
        if proc.poll() is None and not stopped:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.stdout.close()
        rc = proc.wait()
    wall = time.monotonic() - t0
    if not stopped and rc != 0:
        raise SystemExit(f"the example exited with status {rc}; its last lines:\n" + "\n".join(tail))
    if not lines:
        raise SystemExit("the example printed no iterations; its last lines:\n" + "\n".join(tail))
    return ExampleRun(lines, lines[-1][3] if stopped else wall, n_train)


def example_generator(path: Path) -> DCGANGenerator:
    """The example's saved netG (a plain state dict, loaded without unpickling code) in gankit's
    DCGAN generator: the same layers in the same order, `main.N` there, `net.N` here."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    G = DCGANGenerator(NZ, 1, IMAGE_SIZE, WIDTH)
    renamed = {("net." + k[len("main."):] if k.startswith("main.") else k): v for k, v in state.items()}
    G.load_state_dict(renamed, strict=True)
    return G.eval()


def score_example(args, config, epochs: list[int]) -> dict[int, float]:
    """{epoch (1-based): FID} of the example's saved generators, by gankit's in-training protocol."""
    device = torch.device(args.device)
    protocol = replace(EvalProtocol.for_training(config), n_samples=args.fid_samples)
    fids = {}
    for epoch in epochs:
        G = example_generator(args.out / "example" / f"netG_epoch_{epoch - 1}.pth").to(device)
        metrics, _ = score(G, config, protocol, log=io.StringIO())
        fids[epoch] = metrics["fid"]
        print(f"# example after {epoch} epochs: FID {metrics['fid']:.2f}", flush=True)
    return fids


# --- gankit -------------------------------------------------------------------------------------

@dataclass
class GankitRun:
    run_dir: Path
    wall: float
    eval_lines: dict[int, float] = field(default_factory=dict)  # images -> s from launch to its message

    def steady(self, warm_images: int) -> float:
        """Images/s after `warm_images`, from metrics.jsonl, without the intervals holding an evaluation."""
        records = runs.read_metrics(self.run_dir)
        rows = [r for r in records if "iteration" in r and r["images"] >= warm_images]
        evals = [(e["time"], e["time"] + e["seconds"]) for e in records if e.get("event") == "eval"]
        images = seconds = 0.0
        for a, b in zip(rows, rows[1:], strict=False):
            if any(a["time"] <= start < b["time"] for start, _ in evals):
                continue
            images += b["images"] - a["images"]
            seconds += b["time"] - a["time"]
        if seconds <= 0:
            raise SystemExit("gankit logged too few iterations after the warm-up to time")
        return images / seconds

    def fids(self) -> list[dict]:
        """Each evaluation: images, FID, and seconds from launch to its start less the time of the
        evaluations before it (the run's own evaluations are not training)."""
        evals = [e for e in runs.read_metrics(self.run_dir) if e.get("event") == "eval"]
        out, spent = [], 0.0
        for e in evals:
            if e["images"] not in self.eval_lines:
                raise SystemExit(f"gankit's message for its evaluation at {e['images']} images was not seen")
            began = self.eval_lines[e["images"]] - e["seconds"]  # the message comes at its end
            out.append({"images": e["images"], "fid": e["fid"], "at": began - spent})
            spent += e["seconds"]
        return out


def run_gankit(args, run_dir: Path, data_dir: Path, n_train: int) -> GankitRun:
    cmd = [sys.executable, "-m", "gankit", "train", "--data", "fashion-mnist", "--image-size", str(IMAGE_SIZE),
           "--model", "dcgan", "--latent-dim", str(NZ), "--g-width", str(WIDTH), "--d-width", str(WIDTH),
           "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--device", args.device,
           # as the example: a sample grid every 100 iterations, the weights after every epoch
           "--snapshot-every", str(100 * args.batch_size), "--checkpoint-every", str(n_train),
           "--data-dir", str(data_dir), "--out", str(run_dir), "--overwrite"]
    if args.iterations is None:
        cmd += ["--epochs", str(args.epochs), "--eval-every", str(args.eval_every),
                "--eval-samples", str(args.fid_samples)]
    else:
        cmd += ["--max-images", str(args.iterations * args.batch_size)]
    cmd += shlex.split(args.gankit_args)
    print("# gankit: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    eval_lines, tail = {}, []
    t0 = time.monotonic()
    # text mode reads '\r' as a line end, so progress-line updates arrive one by one
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:
        m = EVAL_LINE.search(line)
        if m:
            eval_lines[int(m[1])] = time.monotonic() - t0
        if line.strip():
            tail = (tail + [line.rstrip()])[-30:]
    rc = proc.wait()
    wall = time.monotonic() - t0
    if rc != 0:
        raise SystemExit(f"gankit train exited with status {rc}; its last lines:\n" + "\n".join(tail))
    return GankitRun(run_dir, wall, eval_lines)


# --- small things -------------------------------------------------------------------------------

def _epochs(spec: str, last: int) -> list[int]:
    if spec == "all":
        return list(range(1, last + 1))
    try:
        chosen = {int(s) for s in spec.split(",") if s.strip()}
    except ValueError:
        raise SystemExit(f"--example-epochs must be 'all' or numbers such as 1,5,25; got {spec!r}") from None
    if any(not 1 <= e <= last for e in chosen):
        raise SystemExit(f"--example-epochs: epochs run from 1 to --epochs ({last}); got {spec!r}")
    return sorted(chosen | {last})


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "CPU"


def _versions(python: str) -> str:
    code = "import torch, torchvision; print(f'torch {torch.__version__}, torchvision {torchvision.__version__}')"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"--examples-python {python} cannot import torch and torchvision, which the example "
                         f"needs:\n{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}")
    return proc.stdout.strip()


def _commit(checkout: Path) -> str:
    """The example's commit: from the COMMIT file of benchmarks/gpu_bundle.sh, or of its own git
    checkout (not of a repository that merely contains the folder, such as this one)."""
    stamp = checkout / "COMMIT"
    if stamp.is_file():
        return f"pytorch/examples {stamp.read_text().strip()[:12]}"
    proc = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--show-toplevel", "HEAD"],
                          capture_output=True, text=True)
    lines = proc.stdout.split()
    if proc.returncode == 0 and len(lines) == 2 and Path(lines[0]).resolve() == checkout.resolve():
        return f"pytorch/examples {lines[1][:12]}"
    return f"pytorch/examples at {checkout} (commit unknown)"


if __name__ == "__main__":
    sys.exit(main())
