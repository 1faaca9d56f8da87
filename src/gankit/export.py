"""`gankit export`: the generator alone, for use outside gankit, in a folder of its own.

    DIR/generator.onnx | generator.pt (TorchScript) | generator.safetensors
    DIR/config.json     what the generator is and how to rebuild it, its input and output contract
    DIR/MODEL_CARD.md   dataset, images trained, the last evaluation with its protocol, data licence

The contract: z ~ N(0, I), float32 (batch, latent_dim), any batch size; images out as float32
(batch, C, H, W) (NCHW) in [-1, 1] (tanh), 8-bit pixels being round((x + 1) * 127.5); toy
generators give float32 (batch, dim) points, unbounded. G is exported in eval mode (batch norm
with its running statistics), so each sample depends on its own z only. A run has no EMA
generator (gankit keeps none), so the weights are the checkpoint's G.

- ONNX: torch.onnx's exporter (torch.export; needs onnx and onnxscript), the batch dimension
  dynamic; the export is run in onnxruntime on two batch sizes and compared with PyTorch on the
  same z (max |difference| <= 1e-5, recorded in config.json), or nothing is written.
- TorchScript: torch.jit.trace, so `torch.jit.load` runs it with torch alone, without gankit
  (TorchScript is deprecated in recent torch; prefer ONNX or safetensors for new uses).
- safetensors: the state dict, bit for bit; `gankit sample DIR` (and `gankit eval DIR`) rebuild G
  from config.json and read it.

The folder is written whole or not at all: built beside DIR under a temporary name, then renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

import gankit
from gankit import checkpoint, runs
from gankit.config import TrainConfig
from gankit.errors import GankitError
from gankit.files import sha256
from gankit.models import DEFAULT_WIDTH, build_models

FORMATS = ("onnx", "torchscript", "safetensors")
FILES = {"onnx": "generator.onnx", "torchscript": "generator.pt", "safetensors": "generator.safetensors"}
FORMAT = "gankit.generator"
FORMAT_VERSION = 1
CONFIG = "config.json"
CARD = "MODEL_CARD.md"
ONNX_TOLERANCE = 1e-5
INSTALL = "pip install 'gankit[export]'"
LICENCES = {
    "fashion-mnist": "MIT (Fashion-MNIST, Zalando Research: https://github.com/zalandoresearch/fashion-mnist)",
    "mnist": "see the dataset's terms (MNIST, LeCun, Cortes and Burges: http://yann.lecun.com/exdb/mnist/)",
}


def _require(*modules: str) -> None:
    import importlib

    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise GankitError(f"this needs {', '.join(missing)}, which is not installed; "
                          f"install the export extra: {INSTALL}")


def is_export(path: str | os.PathLike) -> bool:
    """Whether path is a folder written by `gankit export` (its config.json says so)."""
    config = Path(path) / CONFIG
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def export(path_or_run: str | os.PathLike, fmt: str, out: str | os.PathLike) -> Path:
    """Export the generator of a checkpoint (or run folder) to the folder out; returns out."""
    if fmt not in FORMATS:
        raise GankitError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GankitError(f"--out {out} exists and is not an empty folder; choose a new or empty folder")
    _require(*{"onnx": ("onnx", "onnxscript", "onnxruntime"), "safetensors": ("safetensors",)}.get(fmt, ()))
    from gankit.sample import load_generator

    G, info = load_generator(path_or_run, "cpu")
    if info.get("classes") is not None:
        raise GankitError(f"{path_or_run} is a conditional run; gankit export does not yet export conditional "
                          "generators (its contract is z -> images); sample it with gankit sample --class")
    G.requires_grad_(False)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        check = {"onnx": _onnx, "torchscript": _torchscript, "safetensors": _safetensors}[fmt](
            G, info, tmp / FILES[fmt])
        record = _config_record(G, info, fmt, check)
        (tmp / CONFIG).write_text(json.dumps(record, indent=2) + "\n")
        (tmp / CARD).write_text(model_card(record, _last_eval(info)))
        if out.is_dir():
            out.rmdir()  # empty (checked above): the rename takes its place
        os.replace(tmp, out)
    except OSError as exc:
        raise GankitError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _example(info: dict, batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, info["config"].latent_dim, generator=torch.Generator().manual_seed(seed))


def _onnx(G: torch.nn.Module, info: dict, path: Path) -> dict:
    import logging

    import onnxruntime

    batch = torch.export.Dim("batch", min=1)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(G, (_example(info, 2),), dynamo=True, verbose=False,
                                        input_names=["z"], output_names=["x"],
                                        dynamic_shapes={"z": {0: batch}}, external_data=False)
        program.save(str(path), external_data=False)
    except OSError:
        raise
    except Exception as exc:  # the exporter's own errors: many kinds
        raise GankitError(f"the ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None
    finally:
        quiet.setLevel(level)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for n in (1, 5):
        z = _example(info, n, seed=n)
        with torch.no_grad():
            expected = G(z).numpy()
        got = session.run(None, {"z": z.numpy()})[0]
        if got.shape != expected.shape:
            raise GankitError(f"the ONNX export gives shape {got.shape} for batch {n}, PyTorch {expected.shape}")
        worst = max(worst, float(abs(got - expected).max()))
    if worst > ONNX_TOLERANCE:
        raise GankitError(f"the ONNX export differs from PyTorch by {worst:.3g} (> {ONNX_TOLERANCE}); "
                          "nothing was written")
    return {"onnxruntime": onnxruntime.__version__, "batch_sizes": [1, 5],
            "max_abs_difference_vs_pytorch": worst, "tolerance": ONNX_TOLERANCE}


def _torchscript(G: torch.nn.Module, info: dict, path: Path) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in recent torch
        traced = torch.jit.trace(G, (_example(info, 2),), check_trace=False)
        traced.save(str(path))
        loaded = torch.jit.load(str(path))
    z = _example(info, 5, seed=5)  # another batch size than traced with: the batch is not baked in
    with torch.no_grad():
        worst = float((loaded(z) - G(z)).abs().max())
    return {"batch_sizes": [5], "max_abs_difference_vs_pytorch": worst}


def _safetensors(G: torch.nn.Module, info: dict, path: Path) -> dict:
    from safetensors.torch import load_file, save_file

    state = {k: v.detach().contiguous() for k, v in G.state_dict().items()}
    save_file(state, str(path), metadata={"format": FORMAT})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # safetensors creates it private (0600); like the other files
    back = load_file(str(path))
    exact = back.keys() == state.keys() and all(
        back[k].dtype == v.dtype and torch.equal(back[k], v) for k, v in state.items())
    if not exact:
        raise GankitError("the safetensors file does not read back bit for bit; nothing was written")
    return {"bit_exact_round_trip": True, "tensors": len(state)}


def _config_record(G: torch.nn.Module, info: dict, fmt: str, check: dict) -> dict[str, Any]:
    config: TrainConfig = info["config"]
    shape = list(info["shape"])
    images = len(shape) == 3
    output = ({"name": "x", "shape": ["batch", *shape], "dtype": "float32", "layout": "NCHW",
               "range": [-1.0, 1.0], "to_uint8": "round((x + 1) * 127.5), clipped to 0..255"}
              if images else
              {"name": "x", "shape": ["batch", *shape], "dtype": "float32", "range": None,
               "note": "toy points, linear output (unbounded)"})
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "export_format": fmt, "file": FILES[fmt],
        "generator": {"family": config.model, "class": type(G).__name__,
                      "latent_dim": config.latent_dim, "data_shape": shape,
                      "width": config.g_width or DEFAULT_WIDTH[config.model],
                      "parameters": sum(p.numel() for p in G.parameters()),
                      "mode": "eval (batch norm uses its running statistics)", "ema": False},
        "input": {"name": "z", "shape": ["batch", config.latent_dim], "dtype": "float32",
                  "distribution": "N(0, I): torch.randn(batch, latent_dim)", "batch": "any size >= 1"},
        "output": output,
        "train_config": config.to_dict(),
        "dataset": config.data,
        "images_seen": int(info["progress"]["images_seen"]),
        "source": {"checkpoint": str(info["path"]), "sha256": sha256(info["path"])},
        "check": check,
        "gankit_version": gankit.__version__,
        "torch_version": torch.__version__,
    }


def _last_eval(info: dict) -> dict | None:
    """The run's last evaluation event (metrics.jsonl) up to the exported checkpoint, if any."""
    path = Path(info["path"])
    if path.parent.name != runs.CHECKPOINTS:
        return None
    try:
        rows = runs.read_metrics(path.parent.parent)
    except (OSError, ValueError):
        return None
    seen = int(info["progress"]["images_seen"])
    evals = [r for r in rows if r.get("event") == "eval" and r.get("images", 0) <= seen]
    return evals[-1] if evals else None


def model_card(record: dict, evaluation: dict | None) -> str:
    g, config = record["generator"], record["train_config"]
    data = record["dataset"]
    images = len(g["data_shape"]) == 3
    licence = LICENCES.get(data) or (
        "synthetic points drawn by gankit (no licence restrictions)" if data.startswith("toy:")
        else "your own data: state its licence here before sharing this model")
    size = "x".join(str(d) for d in g["data_shape"])
    lines = [
        f"# {g['family'].upper()} generator trained by gankit on {data}",
        "",
        f"- **Dataset**: {data} ({size}); data licence: {licence}.",
        f"- **Trained on**: {record['images_seen']:,} images shown to D (batch {config['batch_size']}, "
        f"k = {config['k']}, {config['g_loss']} G loss, {config['optimizer']}, seed {config['seed']}).",
        f"- **Model**: {g['class']}, width {g['width']}, {g['parameters']:,} parameters, "
        f"exported in eval mode; no EMA weights (gankit keeps none).",
        f"- **File**: `{record['file']}` ({record['export_format']}); `{CONFIG}` rebuilds it and "
        "states the contract below.",
        "",
        "## Input and output",
        "",
        f"- **Input** `z`: float32, shape (batch, {g['latent_dim']}), z ~ N(0, I) "
        f"(`torch.randn(batch, {g['latent_dim']})`); any batch size.",
    ]
    if images:
        lines.append(f"- **Output** `x`: float32, shape (batch, {', '.join(map(str, g['data_shape']))}), "
                     "layout NCHW, range [-1, 1] (tanh); 8-bit pixels: round((x + 1) * 127.5).")
    else:
        lines.append(f"- **Output** `x`: float32 points, shape (batch, {g['data_shape'][0]}), unbounded.")
    lines += ["", "## Evaluation", ""]
    if evaluation is None:
        lines.append("No evaluation was recorded in the run's metrics.jsonl up to this checkpoint; "
                     "score it with `gankit eval`.")
    else:
        protocol = evaluation.get("protocol", {})
        skip = {"event", "images", "time", "seconds", "protocol"}
        metrics = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in evaluation.items() if k not in skip)
        lines += [
            f"At {evaluation['images']:,} images (the run's last evaluation, metrics.jsonl): {metrics}.",
            "",
            f"Protocol: {json.dumps(protocol, sort_keys=True)}.",
        ]
        if images and protocol.get("features", "classifier") == "classifier":
            lines.append("The features are gankit's own classifier's: comparable only with other "
                         "gankit classifier-feature results on the same dataset, not with Inception FIDs.")
    lines += ["", "## Use", ""]
    fmt = record["export_format"]
    if fmt == "onnx":
        check = record["check"]
        lines += ["```python", "import numpy as np, onnxruntime",
                  f"session = onnxruntime.InferenceSession('{record['file']}')",
                  f"x = session.run(None, {{'z': np.random.randn(16, {g['latent_dim']}).astype(np.float32)}})[0]",
                  "```", "",
                  f"Checked at export in onnxruntime {check['onnxruntime']} against PyTorch on the same z: "
                  f"max |difference| {check['max_abs_difference_vs_pytorch']:.2g} (batches 1 and 5)."]
    elif fmt == "torchscript":
        lines += ["```python", "import torch",
                  f"G = torch.jit.load('{record['file']}')  # needs torch only, not gankit",
                  f"x = G(torch.randn(16, {g['latent_dim']}))", "```"]
    else:
        lines += ["```", "gankit sample THIS_FOLDER -n 64 --out grid.png", "```", "",
                  "or, in Python: `gankit.sample.load_generator('THIS_FOLDER')`; the file is the "
                  "generator's state dict (safetensors), rebuilt from config.json's train_config."]
    lines += ["", "## Limitations", "",
              "A GAN can reproduce training images; check with `gankit nearest` before sharing samples. "
              "Samples inherit the biases of the training data.", ""]
    return "\n".join(lines)


def load_export(path: str | os.PathLike, device: str = "auto") -> tuple[torch.nn.Module, dict]:
    """A safetensors export as `sample.load_generator` returns a checkpoint's generator."""
    from gankit.devices import resolve_device

    folder = Path(path)
    record = json.loads((folder / CONFIG).read_text())
    if record.get("format_version", 0) > FORMAT_VERSION:
        raise GankitError(f"{folder} is an export of format version {record['format_version']}, newer "
                          f"than this gankit reads ({FORMAT_VERSION}); upgrade gankit")
    if record.get("export_format") != "safetensors":
        raise GankitError(f"{folder} holds a {record.get('export_format')} export; gankit reads its "
                          "safetensors exports only (gankit export --format safetensors)")
    _require("safetensors")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = TrainConfig.from_dict(record["train_config"], source=f"{folder / CONFIG} (train_config)")
    shape = tuple(int(d) for d in record["generator"]["data_shape"])
    G, _ = build_models(config, shape)
    weights = folder / record["file"]
    try:
        state = load_file(str(weights))
    except (OSError, SafetensorError) as exc:
        raise GankitError(f"cannot read {weights}: {exc}") from None
    checkpoint.load_state(G, state, "the generator", weights)
    G.to(resolve_device(device)).eval()
    return G, {"config": config, "shape": shape, "path": weights,
               "progress": {"images_seen": record.get("images_seen", 0)}, "classes": None}
