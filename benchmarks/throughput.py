"""Training throughput: gankit's trainer against the classic DCGAN loop, same model, data and batch.

    python benchmarks/throughput.py [--device cpu|cuda] [--batch-size 128] [--precision tf32]
                                    [--iterations N] [--warmup W] [--workers 2] [--data fashion-mnist]
    python benchmarks/throughput.py --quick --data npz:fake.npz --batch-size 8   # smoke test (CI)
    python benchmarks/throughput.py --device cuda --settings tf32,tf32+graphs,bf16,bf16+graphs
                                    # the classic loop once, gankit in each setting

Model: the DCGAN of pytorch/examples at 64x64 (ngf = ndf = 64, nz = 100, the data's channels:
1 for Fashion-MNIST), which is gankit's `--model dcgan --image-size 64`. Data: the same images
for both, upsampled to 64x64.

- gankit: `gankit.train.train` itself, as `gankit train` runs it (data held on the device as
  uint8, statistics read every --sync-every iterations, the fast path of fastpath.py).
  Steady-state images/s come from the `time` column of metrics.jsonl (when each iteration was
  queued), between the end of the warm-up and the last iteration; the warm-up and the count are
  rounded up to whole blocks of --sync-every (and --log-every) iterations, so both ends are
  logged rows at read-back points, where the queue is in the same state.
- classic: a loop written after pytorch/examples `dcgan/main.py` (our own code, same steps): a
  DataLoader with --workers worker processes over a Dataset that makes each image a PIL image,
  resizes it to 64 (bilinear), turns it into a tensor and normalises it to [-1, 1]
  (torchvision.transforms when it imports, else the same steps with PIL and NumPy); D ends in a
  Sigmoid and is trained with nn.BCELoss on real/fake label tensors; D is stepped on the real and
  the detached fake batch, then G through D on the same fake batch; `.item()` of the losses and
  means every step, as the example prints them; a sample grid every 100 iterations and the
  weights saved at each epoch's end; cudnn.benchmark on, PyTorch's default precision.
  Steady-state images/s: wall time over the iterations after the warm-up.

Prints a table, then as its last line `ratio gankit/classic: X.XX` (steady-state images/s). With
--settings, one gankit row per setting (PRECISION, or PRECISION+graphs for --cuda-graphs auto) and
one `ratio gankit/classic, SETTING: X.XX` line each; the last line is then the first setting's.
A CUDA-graph row says whether the graph was captured and replayed or the run fell back to eager.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from gankit import runs
from gankit.config import PRECISIONS, TrainConfig
from gankit.data import ImageDataset, load_dataset
from gankit.fastpath import fast_path_plan
from gankit.imagegrid import save_grid
from gankit.models import build_models
from gankit.train import train

IMAGE_SIZE, NZ, NGF, NDF = 64, 100, 64, 64
SNAPSHOT_EVERY = 100  # the example saves a sample grid every 100 iterations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", default="tf32", choices=PRECISIONS, help="gankit's --precision")
    parser.add_argument("--cuda-graphs", default="off", choices=("auto", "off"), help="gankit's --cuda-graphs")
    parser.add_argument("--log-every", type=int, default=1,
                        help="gankit's --log-every (above 1, D(G(z)) after the G step is measured on logged rows only)")
    parser.add_argument("--iterations", type=int, help="timed iterations (default: 10 on cpu, 500 on cuda)")
    parser.add_argument("--warmup", type=int, help="untimed iterations first (default: 2 on cpu, 50 on cuda)")
    parser.add_argument("--workers", type=int, default=2, help="classic loop's DataLoader workers (example: 2)")
    parser.add_argument("--data", default="fashion-mnist", help="gankit --data name (fashion-mnist, npz:PATH, ...)")
    parser.add_argument("--data-dir", help="folder holding the IDX files")
    parser.add_argument("--settings",
                        help="several gankit settings against one classic run, e.g. tf32,tf32+graphs,bf16+graphs "
                             "(instead of --precision and --cuda-graphs)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 warm-up and 2 timed iterations each; the figures mean nothing")
    args = parser.parse_args(argv)
    settings = [(args.precision, args.cuda_graphs)]
    if args.settings:
        settings = []
        for name in args.settings.split(","):
            precision, _, graphs = name.strip().partition("+")
            if precision not in PRECISIONS or graphs not in ("", "graphs"):
                parser.error(f"--settings: {name!r} is not PRECISION or PRECISION+graphs "
                             f"(PRECISION one of {', '.join(PRECISIONS)})")
            settings.append((precision, "auto" if graphs else "off"))
    if args.batch_size < 1:
        parser.error(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was given, but PyTorch sees no CUDA GPU here; use --device cpu")
    cuda = args.device == "cuda"
    warmup = 1 if args.quick else args.warmup if args.warmup is not None else (50 if cuda else 2)
    iterations = 2 if args.quick else args.iterations if args.iterations is not None else (500 if cuda else 10)
    if warmup < 1 or iterations < 1 or args.log_every < 1:
        parser.error("--warmup, --iterations and --log-every must be at least 1")
    device = torch.device(args.device)

    # The same images for both: the classic loop gets them at their own size and resizes each one
    # with PIL on every access; gankit resizes the whole set once when it loads it.
    native = load_dataset(args.data, data_dir=args.data_dir)
    if not isinstance(native, ImageDataset):
        parser.error(f"--data {args.data} is not an image dataset")
    channels = native.shape[0]
    config = TrainConfig(data=args.data, data_dir=args.data_dir, model="dcgan", image_size=IMAGE_SIZE,
                         batch_size=args.batch_size, precision=args.precision, cuda_graphs=args.cuda_graphs,
                         log_every=args.log_every, device=args.device, max_images=1)
    G, D = build_models(config, (channels, IMAGE_SIZE, IMAGE_SIZE))
    nG, nD = ClassicGenerator(channels), ClassicDiscriminator(channels)
    counts = [sum(p.numel() for p in net.parameters()) for net in (G, D, nG, nD)]
    if counts[:2] != counts[2:]:
        raise SystemExit(f"the two loops would train different models: parameters {counts}")

    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, {_device_name(device)}, "
          f"{os.cpu_count()} CPU cores")
    print(f"# DCGAN 64x64, {channels} channel(s), G {counts[0]:,} / D {counts[1]:,} parameters in both loops; "
          f"data {args.data} ({len(native):,} images); batch {args.batch_size}; "
          f"{warmup} warm-up + {iterations} timed iterations each")
    with tempfile.TemporaryDirectory() as tmp:
        classic = run_classic(native.images, args.batch_size, args.workers, device, warmup, iterations, Path(tmp))
        ours = [run_gankit(TrainConfig(**{**config.to_dict(), "precision": precision, "cuda_graphs": graphs}),
                           warmup, iterations, Path(tmp) / "run") for precision, graphs in settings]
    rows = [("classic (pytorch/examples dcgan)", f"fp32 defaults, {args.workers} workers", classic)]
    rows += [("gankit train", r.pop("settings"), r) for r in ours]
    print("| loop | settings | images/s (steady) | timed iterations | wall s (whole run) |")
    print("| --- | --- | --- | --- | --- |")
    for name, text, r in rows:
        print(f"| {name} | {text} | {r['rate']:,.1f} | {r['iterations']} | {r['wall']:.1f} |")
    if args.quick:
        print("# --quick: a smoke test of both loops; these figures are not measurements")
    if args.settings:
        for (precision, graphs), r in zip(settings, ours, strict=True):
            name = precision + ("+graphs" if graphs == "auto" else "")
            print(f"ratio gankit/classic, {name}: {r['rate'] / classic['rate']:.2f}")
    print(f"ratio gankit/classic: {ours[0]['rate'] / classic['rate']:.2f}")
    return 0


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "CPU"


# --- gankit ------------------------------------------------------------------------------------

def run_gankit(config: TrainConfig, warmup: int, iterations: int, run_dir: Path) -> dict:
    plan = fast_path_plan(config, config.device)
    # Rows are read back in blocks of sync_every and written every log_every iterations:
    # measure between rows that are both written and at the end of a block.
    block = math.lcm(plan.sync_every, config.log_every)
    warmup, iterations = _round_up(warmup, block), _round_up(iterations, block)
    m = config.batch_size
    config = TrainConfig(**{**config.to_dict(), "max_images": (warmup + iterations) * m,
                            "snapshot_every": 10**15, "checkpoint_every": 10**15})
    t0 = time.perf_counter()
    train(config, run_dir, overwrite=True, stream=io.StringIO())
    wall = time.perf_counter() - t0
    records = runs.read_metrics(run_dir)
    rows = {r["iteration"]: r for r in records if "event" not in r}
    start, end = rows[warmup], rows[warmup + iterations]
    rate = (end["images"] - start["images"]) / max(end["time"] - start["time"], 1e-9)
    layout = json.loads((run_dir / "config.json").read_text())["speed"]  # as the run chose it (--memory-format)
    settings = (f"{plan.precision}, " + ("fused, " if plan.fused else "")
                + (("channels_last, " if layout["channels_last"] else "contiguous, ") if config.model == "dcgan" else "")
                + (_graph_used(records) if plan.graphs else "")
                + ("no CUDA graph on this device, " if config.cuda_graphs == "auto" and not plan.graphs else "")
                + f"sync every {plan.sync_every}"
                + (f", log every {config.log_every}" if config.log_every > 1 else ""))
    return {"rate": rate, "iterations": iterations, "wall": wall, "settings": settings}


def _graph_used(records: list[dict]) -> str:
    """What the run's cuda_graph event says: a graph's row must not be an eager run in disguise."""
    event = next((r for r in records if r.get("event") == "cuda_graph"), None)
    if event is None:
        return "CUDA graph (no record of its use), "
    if event["failed"] is not None:
        return f"CUDA graph FAILED, eager ({event['failed'][:80]}), "
    return f"CUDA graph ({event['captures']} capture, {event['replays']} replays), "


def _round_up(n: int, block: int) -> int:
    return math.ceil(n / block) * block


# --- the classic loop, after pytorch/examples dcgan/main.py ---------------------------------------

class ClassicGenerator(nn.Module):
    def __init__(self, nc: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(NZ, NGF * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(NGF * 8), nn.ReLU(True),
            # (ngf*8) x 4 x 4
            nn.ConvTranspose2d(NGF * 8, NGF * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF * 4), nn.ReLU(True),
            # (ngf*4) x 8 x 8
            nn.ConvTranspose2d(NGF * 4, NGF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF * 2), nn.ReLU(True),
            # (ngf*2) x 16 x 16
            nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF), nn.ReLU(True),
            # ngf x 32 x 32
            nn.ConvTranspose2d(NGF, nc, 4, 2, 1, bias=False), nn.Tanh(),
            # nc x 64 x 64
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class ClassicDiscriminator(nn.Module):
    def __init__(self, nc: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, NDF, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            # ndf x 32 x 32
            nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 2), nn.LeakyReLU(0.2, inplace=True),
            # (ndf*2) x 16 x 16
            nn.Conv2d(NDF * 2, NDF * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 4), nn.LeakyReLU(0.2, inplace=True),
            # (ndf*4) x 8 x 8
            nn.Conv2d(NDF * 4, NDF * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 8), nn.LeakyReLU(0.2, inplace=True),
            # (ndf*8) x 4 x 4
            nn.Conv2d(NDF * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1, 1).squeeze(1)


def classic_init(m: nn.Module) -> None:
    name = m.__class__.__name__
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def classic_transform(channels: int):
    """Resize(64) -> ToTensor -> Normalize(0.5, 0.5) on a PIL image, as the example's MNIST transform."""
    try:
        import torchvision.transforms as T
    except Exception:  # not installed (our CPU machines), or not importable beside this torch
        return _PILTransform(channels)
    return T.Compose([T.Resize(IMAGE_SIZE), T.ToTensor(), T.Normalize((0.5,) * channels, (0.5,) * channels)])


class _PILTransform:
    """The same steps without torchvision: PIL bilinear resize, HWC uint8 -> CHW float in [0, 1],
    then (x - 0.5) / 0.5."""

    def __init__(self, channels: int):
        self.channels = channels

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        if array.ndim == 2:
            array = array[:, :, None]
        x = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255)
        return (x - 0.5) / 0.5


class ClassicDataset(torch.utils.data.Dataset):
    """(image, label) pairs, each image a PIL image transformed on access, like torchvision's MNIST."""

    def __init__(self, images: torch.Tensor):
        if images.dtype != torch.uint8:  # float in [-1, 1] -> uint8, as a PIL image needs
            images = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        self.images = np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())  # (N, H, W, C)
        self.transform = classic_transform(images.shape[1])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        array = self.images[i]
        image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        return self.transform(image), 0


def run_classic(images: torch.Tensor, batch_size: int, workers: int, device: torch.device,
                warmup: int, iterations: int, tmp: Path) -> dict:
    saved_cudnn = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # as the example sets it
    torch.manual_seed(0)
    t0 = time.perf_counter()
    nc = images.shape[1]
    loader = torch.utils.data.DataLoader(ClassicDataset(images), batch_size=batch_size, shuffle=True,
                                         num_workers=workers)
    netG, netD = ClassicGenerator(nc).to(device), ClassicDiscriminator(nc).to(device)
    netG.apply(classic_init)
    netD.apply(classic_init)
    criterion = nn.BCELoss()
    fixed_noise = torch.randn(batch_size, NZ, 1, 1, device=device)
    real_label, fake_label = 1, 0
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    log = open(os.devnull, "w")  # the example prints a line per iteration
    done, timed_from, timed_images = 0, None, 0
    try:
        epoch = 0
        while done < warmup + iterations:
            for i, data in enumerate(loader):
                # (1) D: maximise log D(x) + log(1 - D(G(z)))
                netD.zero_grad()
                real = data[0].to(device)
                b = real.size(0)
                label = torch.full((b,), real_label, dtype=real.dtype, device=device)
                output = netD(real)
                errD_real = criterion(output, label)
                errD_real.backward()
                D_x = output.mean().item()
                noise = torch.randn(b, NZ, 1, 1, device=device)
                fake = netG(noise)
                label.fill_(fake_label)
                output = netD(fake.detach())
                errD_fake = criterion(output, label)
                errD_fake.backward()
                D_G_z1 = output.mean().item()
                errD = errD_real + errD_fake
                optimizerD.step()
                # (2) G: maximise log D(G(z))
                netG.zero_grad()
                label.fill_(real_label)
                output = netD(fake)
                errG = criterion(output, label)
                errG.backward()
                D_G_z2 = output.mean().item()
                optimizerG.step()
                print(f"[{epoch}][{i}/{len(loader)}] Loss_D: {errD.item():.4f} Loss_G: {errG.item():.4f} "
                      f"D(x): {D_x:.4f} D(G(z)): {D_G_z1:.4f} / {D_G_z2:.4f}", file=log)
                if i % SNAPSHOT_EVERY == 0:
                    save_grid(real, tmp / "real_samples.png")
                    fake = netG(fixed_noise)
                    save_grid(fake.detach(), tmp / f"fake_samples_epoch_{epoch:03d}.png")
                done += 1
                if done > warmup:
                    timed_images += b  # an epoch's last batch may be short (no drop_last)
                if done == warmup:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    timed_from = time.perf_counter()
                if done == warmup + iterations:
                    break
            else:  # a whole epoch: the example saves both networks
                torch.save(netG.state_dict(), tmp / f"netG_epoch_{epoch}.pth")
                torch.save(netD.state_dict(), tmp / f"netD_epoch_{epoch}.pth")
            epoch += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        end = time.perf_counter()
    finally:
        log.close()
        torch.backends.cudnn.benchmark = saved_cudnn
    return {"rate": timed_images / (end - timed_from), "iterations": iterations,
            "wall": end - t0}


if __name__ == "__main__":
    sys.exit(main())
