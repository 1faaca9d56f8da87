"""The `gankit` command: parse flags -> config -> call the library. No training logic here."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import gankit
from gankit.config import DEVICES, MODELS, ON_NAN, OPTIMIZERS, SYNC_BN, TENSORBOARD, TrainConfig
from gankit.errors import GankitError
from gankit.losses import G_LOSSES

DATA_HELP = ("fashion-mnist, mnist, folder:PATH, prepared:PATH, npz:PATH, toy:gauss1d, toy:mixture1d, "
             "toy:ring8 or toy:grid25")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    args.argv = argv
    try:
        return args.run(args) or 0
    except GankitError as exc:
        rank, size = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        if rank is None or size is None:
            print(f"gankit: error: {exc}", file=sys.stderr)
        elif rank == "0" or not exc.every_process:  # not once per process
            print(f"gankit: error (process {rank} of {size}): {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gankit: interrupted", file=sys.stderr)
        return 130


class _Parser(argparse.ArgumentParser):
    """Flag errors are user errors: usage line, one message, exit status 1 (argparse uses 2)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(1, f"gankit: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gankit", description="Train, sample and evaluate generative adversarial networks.")
    parser.add_argument("--version", action="version", version=f"gankit {gankit.__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_train(commands)
    _add_sample(commands)
    _add_after_training(commands)
    _add_eval(commands)
    _add_report(commands)
    _add_tensorboard(commands)
    _add_data(commands)
    _add_theory(commands)
    _add_bench(commands)
    return parser


# --- train -------------------------------------------------------------------------------------

def _add_train(commands) -> None:
    from gankit.config import AUGMENTS, CUDA_GRAPHS, D_NORMS, MEMORY_FORMATS, PRECISIONS

    p = commands.add_parser(
        "train", help="train a GAN (Algorithm 1)",
        description="Train a GAN with Algorithm 1 of Goodfellow et al.: k D steps per G step. "
        "Unset flags take the defaults shown; with --resume, the run's stored values.",
        argument_default=argparse.SUPPRESS)  # only flags the user typed reach the config
    d = TrainConfig.__dataclass_fields__

    def opt(name: str, type_, help_: str, **kw) -> None:
        default = d[name].default
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=type_,
                       help=f"{help_} (default: {default})", **kw)

    g = p.add_argument_group("data")
    opt("data", str, f"dataset: {DATA_HELP}")
    opt("data_dir", str, "folder holding the IDX files of fashion-mnist / mnist")
    opt("image_size", int, "resize images to this size (DCGAN: 28, 32, 64, ...)")
    opt("channels", int, "1 (grey) or 3 (RGB)")
    g = p.add_argument_group("models")
    opt("model", str, "model family", choices=MODELS)
    opt("latent_dim", int, "size d of the noise z ~ N(0, I)")
    opt("g_width", int, "G width: DCGAN base channels (64) or MLP hidden units (512)")
    opt("d_width", int, "D width, likewise")
    g.add_argument("--conditional", dest="conditional", action="store_const", const=True,
                   help="class-conditional G and D (class one-hot joined to z; projection D), trained on "
                   "the data's labels; sample a class with gankit sample --class (default: False)")
    opt("pack", int, "PacGAN packing: D judges M samples at once, concatenated (--batch-size must divide by M)")
    opt("d_norm", str, "D's normalisation: batch (DCGAN), spectral (spectral norm on every layer, no batch "
        "norm) or none", choices=D_NORMS)
    g = p.add_argument_group("quality levers (docs/quality.md)")
    opt("g_ema", float, "half-life in images of an exponential moving average of G's weights, which "
        "snapshots, evaluations and gankit sample/eval then use; 0: off")
    opt("g_ema_rampup", float, "with --g-ema: the half-life is at most images seen x this at the start "
        "(stylegan2-ada's ramp-up, e.g. 0.05); 0: none")
    opt("augment", str, "diffaug: DiffAugment (translation, cutout, colour for RGB) on D's real and fake "
        "inputs in every step", choices=AUGMENTS)
    opt("max_train_images", int, "train on a fixed subset: the first N images of the training set, shuffled "
        "once (the same N for every --seed)")
    g = p.add_argument_group("Algorithm 1")
    opt("g_loss", str, "generator loss", choices=G_LOSSES)
    opt("k", int, "discriminator steps per generator step")
    opt("batch_size", int, "minibatch size m")
    opt("optimizer", str, "optimiser for both players", choices=OPTIMIZERS)
    opt("lr_g", float, "G learning rate; unset: 2e-4 for adam, 0.01 for sgd")
    opt("lr_d", float, "D learning rate; unset: as for G")
    opt("beta1", float, "Adam beta1")
    opt("beta2", float, "Adam beta2")
    opt("momentum", float, "SGD momentum")
    opt("seed", int, "random seed")
    opt("device", str, "device", choices=DEVICES)
    g = p.add_argument_group("length and output")
    opt("max_images", int, "train until this many real images were shown to D "
        f"(unset and no --epochs: {600_000})")
    opt("epochs", float, "alternative to --max-images: passes over the training set")
    opt("snapshot_every", int, "images between sample grids")
    opt("checkpoint_every", int, "images between checkpoints")
    opt("log_every", int, "iterations between rows of metrics.jsonl")
    opt("grid_size", int, "samples in each snapshot grid")
    opt("on_nan", str, "on a NaN/Inf loss or gradient: stop, or roll back to the last checkpoint "
        "with halved learning rates (at most 3 times)", choices=ON_NAN)
    opt("eval_every", int, "images between evaluations (FID etc. for images, mode metrics for toys); "
        "the run keeps checkpoints/best.pt by FID next to last.pt")
    opt("eval_samples", int, "generated samples per evaluation during training")
    opt("tensorboard", str, "on: TensorBoard event files in RUN/tensorboard/ when tensorboard is installed "
        "(pip install 'gankit[tensorboard]'); off: none", choices=TENSORBOARD)
    g = p.add_argument_group("speed (how the arithmetic is done, not what is trained)")
    opt("precision", str, "fp32; tf32: TF32 tensor cores on CUDA, plain fp32 on the CPU; "
        "bf16: bfloat16 autocast for the forward passes, losses in fp32", choices=PRECISIONS)
    opt("sync_every", int, "iterations between reads of the statistics from the device; "
        "unset: 1 on the CPU, 50 on CUDA")
    opt("cuda_graphs", str, "auto (default): on CUDA, capture the whole iteration as a CUDA graph where the "
        "configuration allows it (2.5x at batch 128 on an H200); off: eager", choices=CUDA_GRAPHS)
    opt("memory_format", str, "the DCGAN pair's layout; auto: channels_last on CUDA, on the CPU whichever of "
        "channels_last and contiguous a short measurement at start-up finds faster (cached per machine); "
        "on --resume, auto keeps the run's recorded layout", choices=MEMORY_FORMATS)
    g = p.add_argument_group("several processes (torch.distributed; see README)")
    g.add_argument("--nproc", type=int, metavar="N",
                   help="train with N processes on this machine (one per GPU): runs torchrun for you; "
                   "--batch-size stays the global batch")
    opt("sync_bn", str, "with several processes, on: batch norm over the global batch (the same model "
        "as one process); off: over each process's share (faster on many GPUs)", choices=SYNC_BN)
    p.add_argument("--out", type=Path, help="run folder (default: runs/DATA-MODEL-TIME)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue this run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder given as --out")
    p.set_defaults(run=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from gankit import distributed, train

    if getattr(args, "nproc", None) is not None:
        if distributed.launched_by_torchrun():
            raise GankitError("--nproc starts torchrun itself; under torchrun, give torchrun "
                              "--nproc_per_node instead")
        return _launch(distributed.torchrun_command(args.nproc, args.argv), args.nproc)

    values = {k: v for k, v in vars(args).items()
              if k in TrainConfig.__dataclass_fields__}
    if getattr(args, "resume", None) is not None:
        if getattr(args, "out", None) is not None and args.out.resolve() != args.resume.resolve():
            raise GankitError("--resume RUN_DIR continues that folder; do not also give a different --out")
        if getattr(args, "overwrite", False):
            raise GankitError("--overwrite and --resume contradict each other; choose one")
        train.resume(args.resume, values)
        return 0
    config = TrainConfig(**values)
    out = getattr(args, "out", None) or Path("runs") / (
        f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', config.data).strip('-')}-{config.model}-"
        f"{time.strftime('%Y%m%d-%H%M%S')}")
    train.train(config, out, overwrite=getattr(args, "overwrite", False))
    return 0


def _launch(command: list[str], nproc: int) -> int:
    """Run torchrun (with nproc workers) and wait for it. Ctrl-C reaches its workers straight from
    the terminal (each saves a checkpoint and stops), so here it only waits; a SIGTERM is passed on."""
    env = dict(os.environ)
    # torchrun sets 1 thread per worker when unset (and says so); the CPU cores shared out is better.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    proc = subprocess.Popen(command, env=env)
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, lambda s, f: None),
                signal.SIGTERM: signal.signal(signal.SIGTERM, lambda s, f: proc.send_signal(s))}
    try:
        return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# --- sample ------------------------------------------------------------------------------------

def _add_sample(commands) -> None:
    p = commands.add_parser("sample", help="draw samples from a trained generator",
                            description="Draw samples from a checkpoint or a run folder's last checkpoint.")
    p.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN_DIR")
    p.add_argument("-n", type=int, default=64, help="number of samples (default: 64)")
    p.add_argument("--out", type=Path, required=True,
                   help="FILE.png (one grid), FILE.npz (uint8 images or float points) or DIR (one PNG each)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    p.add_argument("--class", dest="class_", metavar="NAME|INDEX|all",
                   help="a conditional run: samples of this class (name, any case, or index); all: -n of "
                   "each class, a grid with one labelled row per class")
    _generator_flag(p)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.set_defaults(run=_cmd_sample)


def _generator_flag(p) -> None:
    p.add_argument("--generator", choices=("ema", "raw"), default=None,
                   help="ema: the moving average of G's weights (a run trained with --g-ema); raw: G as "
                   "trained (default: ema where the checkpoint has one, else raw)")


def _cmd_sample(args: argparse.Namespace) -> int:
    from gankit.sample import sample

    out = sample(args.checkpoint, args.n, args.out, seed=args.seed, device=args.device, class_=args.class_,
                 generator=args.generator)
    what = f"{args.n} samples" + (" of each class" if args.class_ == "all" else
                                  f" of class {args.class_}" if args.class_ else "")
    print(f"wrote {what} to {out}")
    return 0


# --- after training: interpolate, animate, export, nearest (issue 18) ---------------------------

def _add_after_training(commands) -> None:
    p = commands.add_parser(
        "interpolate", help="a walk through z between the noise of some seeds (GIF, PNG or npz)",
        description="Walk through the noise space from seed to seed. Seed s is the noise of "
        "`gankit sample --seed s -n 1`, so a key frame is that sample pixel for pixel. "
        "A GIF loops back to the first seed; a PNG has one row per pair of seeds, both ends included.")
    p.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN_DIR")
    p.add_argument("--seeds", default="0,1,2,3", help="comma-separated seeds to visit (default: 0,1,2,3)")
    p.add_argument("--frames", type=int, default=48, help="frames from one seed to the next (default: 48)")
    p.add_argument("--out", type=Path, required=True,
                   help="FILE.gif (looping animation), FILE.png (grid) or FILE.npz (frames, z)")
    p.add_argument("--linear", action="store_true", help="linear interpolation (default: spherical)")
    p.add_argument("--fps", type=float, default=12.0, help="GIF frames per second (default: 12)")
    p.add_argument("--class", dest="class_", metavar="NAME|INDEX",
                   help="a conditional run: walk within this class (required for one)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.set_defaults(run=_cmd_interpolate)

    p = commands.add_parser(
        "animate", help="the run's snapshot grids as a GIF, labelled with the images seen",
        description="One looping GIF of RUN/samples/*.png (G of the same noise at each snapshot), "
        "each frame labelled with the images seen when it was drawn.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", type=Path, required=True, help="FILE.gif")
    p.add_argument("--fps", type=float, default=2.0, help="frames per second (default: 2)")
    p.set_defaults(run=_cmd_animate)

    p = commands.add_parser(
        "export", help="the generator alone (ONNX, TorchScript or safetensors) with config and model card",
        description="Write the generator to a new folder: the model file, config.json (how to rebuild "
        "it; input z ~ N(0, I) of latent_dim, output NCHW in [-1, 1]) and MODEL_CARD.md. "
        "onnx and safetensors need the export extra: pip install 'gankit[export]'.")
    p.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN_DIR")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "safetensors"))
    p.add_argument("--out", type=Path, required=True, help="a new (or empty) folder")
    p.set_defaults(run=_cmd_export)

    p = commands.add_parser(
        "nearest", help="each sample beside its nearest training images (does G copy them?)",
        description="Samples (as `gankit sample --seed S`) beside their k nearest training images, "
        "searched in the evaluation's feature space and in pixel space; the header says which is "
        "which, and the summary compares the distances with held-out real images'.")
    p.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN_DIR")
    p.add_argument("-n", type=int, default=16, help="samples (default: 16)")
    p.add_argument("-k", type=int, default=3, help="neighbours per sample in each space (default: 3)")
    p.add_argument("--out", type=Path, required=True, help="FILE.png")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    p.add_argument("--features", default="classifier", choices=("classifier", "inception"),
                   help="feature space: classifier (fashion-mnist, mnist) or inception (default: classifier)")
    p.add_argument("--inception-weights", metavar="PATH", help="as for gankit eval")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.set_defaults(run=_cmd_nearest)


def _cmd_interpolate(args: argparse.Namespace) -> int:
    from gankit.interpolate import interpolate

    out = interpolate(args.checkpoint, args.seeds, args.frames, args.out, linear=args.linear,
                      fps=args.fps, device=args.device, class_=args.class_)
    print(f"wrote {out}")
    return 0


def _cmd_animate(args: argparse.Namespace) -> int:
    from gankit.animate import animate

    print(f"wrote {animate(args.run_dir, args.out, fps=args.fps)}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from gankit.export import FILES, export

    out = export(args.checkpoint, args.format, args.out)
    print(f"wrote {out / FILES[args.format]}, {out / 'config.json'} and {out / 'MODEL_CARD.md'}")
    return 0


def _cmd_nearest(args: argparse.Namespace) -> int:
    from gankit.nearest import nearest, summary

    found = nearest(args.checkpoint, args.n, args.out, k=args.k, seed=args.seed, features=args.features,
                    inception_weights=args.inception_weights, device=args.device)
    print(summary(found))
    print(f"wrote {args.out}: per row the sample, its {args.k} nearest training images in "
          f"{args.features} features, then in pixels")
    return 0


# --- eval --------------------------------------------------------------------------------------

def _add_eval(commands) -> None:
    from gankit.evaluate import FEATURES

    p = commands.add_parser(
        "eval", help="score a trained generator (FID, KID, precision/recall, density/coverage)",
        description="Generate samples and compare them with the dataset's reference split in the "
        "features of an extractor; toy runs get the mode metrics or the 1-D JSD instead. "
        "With --samples PATH --data NAME: score images made by any program (a folder of images "
        "or an .npz (N, H, W[, C])) the same way; the Inception features add the Inception Score.")
    p.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN_DIR", nargs="?")
    p.add_argument("--samples", type=Path, metavar="PATH",
                   help="instead of a checkpoint: a folder of images or an .npz/.npy array to score")
    p.add_argument("--data", metavar="NAME", help="with --samples: the reference dataset, fashion-mnist or mnist")
    p.add_argument("--n-samples", type=int, default=None,
                   help="generated samples (default: 10,000 for images, 2,500 for toy data)")
    p.add_argument("--features", default="classifier", choices=FEATURES,
                   help="feature extractor: classifier (default; gankit's own CNN, fashion-mnist and "
                   "mnist only, offline) or inception (the standard FID network)")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="pt_inception-2015-12-05 weights file (default: cache, else download)")
    p.add_argument("--split", default="test", choices=("test", "train"), help="reference split (default: test)")
    p.add_argument("--seed", type=int, default=0, help="noise and subset seed (default: 0)")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--data-dir", help="folder holding the IDX files")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--json", type=Path, metavar="OUT.json", help="also write the record here")
    _generator_flag(p)
    p.set_defaults(run=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from gankit.evaluate import EvalProtocol, evaluate, evaluate_samples
    from gankit.files import write_json

    if (args.checkpoint is None) == (args.samples is None):
        raise GankitError("give a CHECKPOINT_OR_RUN_DIR to score, or --samples PATH --data NAME; not both")
    if (args.samples is None) != (args.data is None):
        raise GankitError("--samples PATH and --data NAME go together (--data: the reference dataset)")

    protocol = EvalProtocol(features=args.features, split=args.split, n_samples=args.n_samples,
                            seed=args.seed, kid_subsets=args.kid_subsets,
                            kid_subset_size=args.kid_subset_size, data_dir=args.data_dir,
                            inception_weights=args.inception_weights)
    record = evaluate_samples(args.samples, args.data, protocol) if args.samples is not None else \
        evaluate(args.checkpoint, protocol, args.device, generator=args.generator)
    for name, value in record["metrics"].items():
        print(f"{name:>14}: {value:.6g}" if isinstance(value, float) else f"{name:>14}: {value}")
    extractor = record["protocol"].get("extractor", {})
    if "test_accuracy" in extractor:
        print(f"{'features':>14}: classifier, test accuracy "
              f"{100 * extractor['test_accuracy']:.2f}% (not comparable with Inception FID)")
    elif extractor:
        print(f"{'features':>14}: {extractor['name']}, weights sha256 {extractor['weights_sha256'][:16]}...")
    if args.json:
        write_json(args.json, record)
        print(f"wrote {args.json}")
    return 0


# --- tensorboard -------------------------------------------------------------------------------

def _add_tensorboard(commands) -> None:
    p = commands.add_parser(
        "tensorboard", help="write the TensorBoard event files of a run trained without them",
        description="Write RUN/tensorboard/ from the run's metrics.jsonl, samples/ and config.json "
        "(what --tensorboard on writes while training); then: tensorboard --logdir RUN/..")
    p.add_argument("run_dir", metavar="RUN", type=Path)
    p.set_defaults(run=_cmd_tensorboard)


def _cmd_tensorboard(args: argparse.Namespace) -> int:
    from gankit import tblog

    path = tblog.write_for_run(args.run_dir)
    print(f"wrote {path}; view it with: tensorboard --logdir {args.run_dir.parent}")
    return 0


# --- report ------------------------------------------------------------------------------------

def _add_report(commands) -> None:
    p = commands.add_parser(
        "report", help="one self-contained HTML file: curves, evaluations, snapshot timeline",
        description="Write one HTML file about a run (or several, overlaid): config, training curves, "
        "evaluations and snapshot grids, everything inline (no network), for a browser or a mail. "
        "Works on a run that is still training.")
    p.add_argument("run_dirs", metavar="RUN", nargs="+", type=Path, help="run folder(s)")
    p.add_argument("--out", type=Path, metavar="FILE.html",
                   help="where to write it (default: RUN/report.html; required with several runs)")
    p.set_defaults(run=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from gankit.report import write_report

    out = write_report(args.run_dirs, args.out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); open it in a browser: file://{out.resolve()}")
    return 0


# --- data --------------------------------------------------------------------------------------

def _add_data(commands) -> None:
    p = commands.add_parser("data", help="find, download or describe a dataset")
    p.set_defaults(run=lambda args: p.print_help() or 2)
    sub = p.add_subparsers(title="data commands", metavar="ACTION")
    for action, help_ in (("fetch", "find the dataset or download it (SHA-256 checked)"),
                          ("info", "say where the dataset is and what it holds")):
        q = sub.add_parser(action, help=help_)
        q.add_argument("name", metavar="NAME", help="fashion-mnist or mnist"
                       + (", or prepared:DATASET (a gankit data prepare output)" if action == "info" else ""))
        q.add_argument("--data-dir", help="folder to look in (and download to)")
        q.set_defaults(run=_cmd_data, action=action)
    q = sub.add_parser("prepare", help="decode a folder of images once into a prepared dataset "
                       "(train on it with --data prepared:DATASET)")
    q.add_argument("source", metavar="SOURCE", help="folder of .png/.jpg images (class subfolders give labels)")
    q.add_argument("--image-size", type=int, required=True, help="shorter side resized to N, centre crop N x N")
    q.add_argument("--channels", type=int, choices=(1, 3), help="1 (grey) or 3 (RGB) (default: 1 if all are grey)")
    q.add_argument("--out", type=Path, required=True, metavar="DATASET", help="the folder to create")
    q.add_argument("--on-bad-file", choices=("fail", "skip"), default="fail",
                   help="an unreadable file: stop and name it, or leave it out and list it in "
                        "DATASET/skipped.txt (default: fail)")
    q.add_argument("--jobs", type=int, help="worker processes (default: the cores)")
    q.set_defaults(run=_cmd_prepare)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from gankit.data.prepare import prepare_folder

    manifest = prepare_folder(args.source, args.out, image_size=args.image_size, channels=args.channels,
                              on_bad_file=args.on_bad_file, jobs=args.jobs)
    n, c, h, w = manifest["shape"]
    classes = f", {len(manifest['classes'])} classes" if manifest["classes"] else ""
    skipped = f"; skipped {manifest['skipped']} unreadable file(s), listed in {args.out / 'skipped.txt'}" \
        if manifest["skipped"] else ""
    print(f"prepared {n:,} images ({c} x {h} x {w}{classes}) in {args.out}{skipped}; train with "
          f"--data prepared:{args.out}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from gankit.data import mnist, prepared

    if args.action == "info" and args.name.startswith("prepared:"):
        print(json.dumps(prepared.info(args.name.partition(":")[2]), indent=2))
        return 0
    if args.name not in ("fashion-mnist", "mnist"):
        raise GankitError(f"data {args.action}: unknown dataset {args.name!r}; use fashion-mnist or mnist"
                          + (", or prepared:DATASET" if args.action == "info" else ""))
    if args.action == "fetch":
        path = mnist.fetch(args.name, args.data_dir)
        print(f"{args.name}: files in {path}")
    else:
        print(json.dumps(mnist.info(args.name, args.data_dir), indent=2, default=str))
    return 0


# --- theory and bench --------------------------------------------------------------------------

def _add_theory(commands) -> None:
    p = commands.add_parser(
        "theory", help="check the paper's theory: optimal D, the game, the two G losses",
        description="Each command writes PNG figures and OUT/results.json with the numbers.")
    p.set_defaults(run=lambda args: p.print_help() or 2)
    sub = p.add_subparsers(title="theory commands", metavar="COMMAND")

    q = sub.add_parser("optimal-d", help="train D against a frozen G; compare with D* = p_data / (p_data + p_G)")
    q.add_argument("--data", default="mixture1d", choices=("gauss1d", "mixture1d"), help="1-D data (default: mixture1d)")
    q.add_argument("--generator", default="affine", choices=("affine", "mlp"),
                   help="frozen G: affine (exact p_G) or a random MLP (p_G from a histogram) (default: affine)")
    q.add_argument("--steps", type=int, default=3000, help="D training steps (default: 3000)")
    q.add_argument("--batch-size", type=int, default=2048, help="real and fake samples per D step (default: 2048)")
    q.add_argument("--conditional", action="store_true",
                   help="each Gaussian of mixture1d is a class: D(x, y) against D*(x|y), per class")
    _theory_common(q, "optimal-d")
    q.set_defaults(run=_cmd_theory, theory="optimal-d")

    q = sub.add_parser("game", help="a 1-D training run drawn as the four panels of the paper's Fig. 1")
    q.add_argument("--data", default="gauss1d", choices=("gauss1d", "mixture1d"), help="1-D data (default: gauss1d)")
    q.add_argument("--iterations", type=int, default=3000, help="iterations of Algorithm 1 (default: 3000)")
    q.add_argument("--k", type=int, default=1, help="D steps per G step (default: 1)")
    q.add_argument("--g-loss", default="non-saturating", choices=G_LOSSES)
    _theory_common(q, "game")
    q.set_defaults(run=_cmd_theory, theory="game")

    q = sub.add_parser("saturation", help="the saturating and non-saturating G losses: curves, "
                       "measured gradient norms, outcomes")
    q.add_argument("--seeds", type=int, default=3, help="training seeds per loss (default: 3)")
    q.add_argument("--toy-iterations", type=int, default=2000, help="G steps of each ring8 run (default: 2000)")
    q.add_argument("--image-data", default="fashion-mnist",
                   help="image dataset for the DCGAN runs, or 'none' to skip them (default: fashion-mnist)")
    q.add_argument("--image-images", type=int, default=32_000, help="length of each image run in images (default: 32000)")
    q.add_argument("--first", type=int, default=200, help="early iterations whose gradient norms are reported (default: 200)")
    q.add_argument("--data-dir", help="folder holding the IDX files")
    _theory_common(q, "saturation")
    q.set_defaults(run=_cmd_theory, theory="saturation")


def _theory_common(q, name: str) -> None:
    q.add_argument("--out", type=Path, default=Path("runs") / f"theory-{name}",
                   help=f"output folder (default: runs/theory-{name})")
    q.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _cmd_theory(args: argparse.Namespace) -> int:
    _check_seed(args.seed)
    if args.theory == "optimal-d":
        from gankit.theory import optimal_d

        optimal_d.run(args.out, args.seed, args.data, args.generator, args.steps, args.batch_size, log=sys.stdout,
                      conditional=args.conditional)
    elif args.theory == "game":
        from gankit.theory import game

        game.run(args.out, args.seed, args.data, args.iterations, args.k, g_loss=args.g_loss, log=sys.stdout)
    else:
        from gankit.theory import saturation

        image_data = None if args.image_data == "none" else args.image_data
        saturation.run(args.out, args.seed, args.seeds, args.toy_iterations, image_data,
                       args.image_images, args.first, args.data_dir, log=sys.stdout)
    return 0


def _add_bench(commands) -> None:
    p = commands.add_parser("bench", help="benchmarks with published reference figures")
    p.set_defaults(run=lambda args: p.print_help() or 2)
    sub = p.add_subparsers(title="bench commands", metavar="COMMAND")
    q = sub.add_parser("modes", help="the 2-D mode-collapse benchmark (ring of 8, grid of 25), PacGAN's table",
                       description="--protocol quick: gankit's own trainer and MLPs, a few minutes on a CPU; the "
                       "levers packing (--packs) and an EMA generator (--g-ema) compare on the same budget. "
                       "--protocol pacgan: PacGAN's published set-up (Lin et al. 2018, Table 1) for the GAN "
                       "and PacGAN2-4, 10 trials each, with the published rows beside ours; the levers --g-ema and "
                       "--g-loss add rows of their own.")
    q.add_argument("--protocol", default="quick", choices=("quick", "pacgan"),
                   help="quick (gankit's trainer, short runs) or pacgan (the published set-up) (default: quick)")
    q.add_argument("--datasets", default="ring8,grid25", help="comma-separated: ring8, grid25 (default: both)")
    q.add_argument("--seeds", type=int, default=None, help="quick: seeds per configuration (default: 5)")
    q.add_argument("--k", default=None, help="quick: comma-separated D steps per G step (default: 1,5)")
    q.add_argument("--g-loss", default=None,
                   help="comma-separated generator losses: non-saturating, saturating (default: quick both; pacgan "
                        "non-saturating, as published)")
    q.add_argument("--packs", default=None,
                   help="comma-separated packing degrees M (D judges M samples at once), 1 = the GAN; quick: M "
                   "must divide the batch of 100 (default: quick 1; pacgan 1,2,3,4)")
    q.add_argument("--g-ema", default=None,
                   help="comma-separated half-lives in images of an EMA of G's weights, 0 = off; an EMA run is "
                   "scored from its EMA generator; pacgan: every trial is scored from G and from each EMA (the same "
                   "runs, a paired difference), images are generated examples of its minibatch, 100 an update "
                   "(default: 0)")
    q.add_argument("--trials", type=int, default=None, help="pacgan: trials per row (default: 10, as published)")
    q.add_argument("--iterations", type=int, default=None,
                   help="updates per run (default: quick 2000; pacgan 400000 = 400 epochs of 1000, as published)")
    q.add_argument("--jobs", type=int, default=None, help="parallel training processes (default: 2 or the CPU count)")
    q.add_argument("--device", default=None, choices=DEVICES,
                   help="pacgan: where the trials train; the --jobs processes share a GPU (default: auto)")
    q.add_argument("--stop-after", type=float, default=None, metavar="SECONDS",
                   help="pacgan, batched engine: stop after SECONDS with every batch checkpointed in OUT/checkpoints "
                        "(exit status 3); the same command continues (finished batches are reused)")
    q.add_argument("--score-every", type=int, default=None, metavar="UPDATES",
                   help="pacgan: score every trial every UPDATES updates, with a progress line; the scores go to "
                        "results.json (each trial's curve) and curves.png (default: 20 times a run)")
    q.add_argument("--precision", default=None, choices=("fp32", "tf32"),
                   help="pacgan: fp32 (as published; default) or tf32 (the batched engine's matrix products on CUDA)")
    q.add_argument("--engine", default=None, choices=("auto", "batched", "loop"),
                   help="pacgan: loop (one trial at a time per process) or batched (a pack's trials trained "
                   "together as stacked tensors, the faster on a GPU and on a CPU) (default: auto = batched)")
    _theory_common(q, "modes")
    q.set_defaults(run=_cmd_bench_modes)


def _cmd_bench_modes(args: argparse.Namespace) -> int:
    _check_seed(args.seed)
    if args.jobs is not None and args.jobs <= 0:
        raise GankitError(f"--jobs must be a positive integer, got {args.jobs}")
    datasets = tuple(args.datasets.split(","))
    if args.protocol == "pacgan":
        from gankit.theory import pacgan

        given = [f for f, v in (("--seeds", args.seeds), ("--k", args.k)) if v is not None]
        if given:
            raise GankitError(f"{', '.join(given)}: for --protocol quick only; the pacgan protocol is the published "
                              f"set-up, whose update has no k (use --packs, --g-loss, --g-ema, --trials, --iterations)")
        packs = _int_list("--packs", args.packs or "1,2,3,4", "1,2")
        record = pacgan.run(args.out, args.seed, pacgan.SETUP["trials"] if args.trials is None else args.trials,
                            packs, datasets, pacgan.ITERATIONS if args.iterations is None else args.iterations,
                            args.jobs, args.device or "auto", log=sys.stdout, engine=args.engine or "auto",
                            precision=args.precision or "fp32", stop_after=args.stop_after,
                            score_every=args.score_every, g_emas=_float_list("--g-ema", args.g_ema or "0", "0,10000"),
                            g_losses=tuple((args.g_loss or "non-saturating").split(",")))
        if record.get("stopped"):  # --stop-after: 3; a signal: 128 + its number, as a shell reports it
            return 128 + record["signal"] if record.get("signal") else 3
        return 0
    from gankit.theory import modes

    given = [f for f, v in (("--trials", args.trials), ("--device", args.device), ("--engine", args.engine),
                            ("--precision", args.precision), ("--stop-after", args.stop_after),
                            ("--score-every", args.score_every)) if v is not None]
    if given:
        raise GankitError(f"{', '.join(given)}: for --protocol pacgan only (the quick protocol takes "
                          f"--seeds, --k, --g-loss, --packs, --g-ema, --iterations)")
    ks = _int_list("--k", args.k or "1,5", "1,5")
    packs = _int_list("--packs", args.packs or "1", "1,2,4")
    g_emas = _float_list("--g-ema", args.g_ema or "0", "0,10000")
    modes.run(args.out, args.seed, 5 if args.seeds is None else args.seeds, ks,
              tuple((args.g_loss or ",".join(G_LOSSES)).split(",")), datasets,
              2000 if args.iterations is None else args.iterations, args.jobs, log=sys.stdout,
              packs=packs, g_emas=g_emas)
    return 0


def _int_list(flag: str, text: str, example: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise GankitError(f"{flag} must be comma-separated integers such as {example}; got {text!r}") from None


def _float_list(flag: str, text: str, example: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise GankitError(f"{flag} must be comma-separated numbers such as {example}; got {text!r}") from None


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise GankitError(f"--seed must be a non-negative integer, got {seed}")
