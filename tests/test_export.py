"""`gankit export`: ONNX checked in onnxruntime with a dynamic batch, TorchScript loaded without
gankit, safetensors bit-exact and read back by `gankit sample`; config.json, the model card, and
errors that write nothing."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from configs import TINY_DCGAN_ARGS
from fakes import make_npz
from gankit import checkpoint, export
from gankit.cli import main
from gankit.sample import load_generator

EXTRA = "the export extra: pip install 'gankit[export]'"

EVAL = {"event": "eval", "images": 32, "time": 1.0, "fid": 12.5, "kid_mean": 0.01, "seconds": 2.0,
        "protocol": {"features": "classifier", "split": "test", "n_samples": 500, "seed": 0}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    data = make_npz(tmp / "data.npz", n=32, size=32, channels=3)
    run = tmp / "run"
    assert main(["train", "--data", f"npz:{data}", *TINY_DCGAN_ARGS, "--batch-size", "8", "--device", "cpu",
                 "--max-images", "32", "--snapshot-every", "32", "--out", str(run)]) == 0
    with open(run / "metrics.jsonl", "a") as f:  # as --eval-every would log it
        f.write(json.dumps(EVAL) + "\n")
    return run


def z_of(n, d, seed=123):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_safetensors_round_trips_bit_exactly_and_gankit_samples_from_it(run, tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch", reason=EXTRA)
    out = tmp_path / "exp"
    assert main(["export", str(run), "--format", "safetensors", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "config.json", "generator.safetensors"]
    stored = checkpoint.load(run / "checkpoints" / "last.pt")["G"]
    loaded = safetensors_torch.load_file(out / "generator.safetensors")
    assert loaded.keys() == stored.keys()
    for key, value in stored.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
    for name in ("a.npz", "b.npz"):
        source = run if name == "a.npz" else out
        assert main(["sample", str(source), "-n", "6", "--seed", "2", "--out", str(tmp_path / name)]) == 0
    assert np.array_equal(np.load(tmp_path / "a.npz")["images"], np.load(tmp_path / "b.npz")["images"])
    G, info = load_generator(out, "cpu")
    assert info["progress"]["images_seen"] == 32 and info["shape"] == (3, 32, 32)


def test_config_json_states_the_contract_and_the_card_the_evaluation(run, tmp_path):
    out = tmp_path / "exp"
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    record = json.loads((out / "config.json").read_text())
    assert record["format"] == "gankit.generator" and record["export_format"] == "torchscript"
    assert record["input"]["shape"] == ["batch", 8] and "N(0, I)" in record["input"]["distribution"]
    assert record["output"]["shape"] == ["batch", 3, 32, 32]
    assert record["output"]["layout"] == "NCHW" and record["output"]["range"] == [-1.0, 1.0]
    assert record["train_config"]["latent_dim"] == 8 and record["images_seen"] == 32
    card = (out / "MODEL_CARD.md").read_text()
    for text in ("Dataset", "32 images", "fid 12.5", '"features": "classifier"', "N(0, I)", "NCHW",
                 "[-1, 1]", "your own data"):
        assert text in card, text


def test_model_card_licences():
    base = json.loads(json.dumps({
        "generator": {"family": "dcgan", "class": "DCGANGenerator", "latent_dim": 100, "data_shape": [1, 28, 28],
                      "width": 64, "parameters": 10},
        "train_config": {"batch_size": 128, "k": 1, "g_loss": "non-saturating", "optimizer": "adam", "seed": 0},
        "images_seen": 1000, "file": "generator.pt", "export_format": "torchscript"}))
    assert "MIT" in export.model_card({**base, "dataset": "fashion-mnist"}, None)
    assert "see the dataset's terms" in export.model_card({**base, "dataset": "mnist"}, None)
    assert "No evaluation was recorded" in export.model_card({**base, "dataset": "mnist"}, None)


def test_torchscript_loads_without_gankit(run, tmp_path):
    out = tmp_path / "exp"
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    G, _ = load_generator(run, "cpu")
    z = z_of(7, 8)  # not the batch size it was traced with
    with torch.no_grad():
        np.save(tmp_path / "expected.npy", G(z).numpy())
    np.save(tmp_path / "z.npy", z.numpy())
    script = (
        "import sys; sys.modules['gankit'] = None\n"  # any import of gankit would now fail
        "import numpy as np, torch\n"
        f"G = torch.jit.load({str(out / 'generator.pt')!r})\n"
        f"x = G(torch.from_numpy(np.load({str(tmp_path / 'z.npy')!r}))).detach().numpy()\n"
        f"print(float(abs(x - np.load({str(tmp_path / 'expected.npy')!r})).max()))\n"
        "assert not any(m.startswith('gankit') for m in sys.modules if sys.modules[m] is not None)\n"
    )
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) <= 1e-6


def test_onnx_has_a_dynamic_batch_and_matches_pytorch(run, tmp_path):
    onnx = pytest.importorskip("onnx", reason=EXTRA)
    onnxruntime = pytest.importorskip("onnxruntime", reason=EXTRA)
    out = tmp_path / "exp"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    model = onnx.load(out / "generator.onnx")
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # symbolic: any batch size
    session = onnxruntime.InferenceSession(str(out / "generator.onnx"), providers=["CPUExecutionProvider"])
    G, _ = load_generator(run, "cpu")
    for n in (1, 3, 16):
        z = z_of(n, 8, seed=n)
        with torch.no_grad():
            expected = G(z).numpy()
        got = session.run(None, {"z": z.numpy()})[0]
        assert got.shape == (n, 3, 32, 32)
        assert np.abs(got - expected).max() <= 1e-5
    record = json.loads((out / "config.json").read_text())
    assert record["check"]["max_abs_difference_vs_pytorch"] <= 1e-5


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "safetensors"])
def test_toy_2d_generator_exports(toy_run, tmp_path, fmt):
    if fmt != "torchscript":
        pytest.importorskip({"onnx": "onnxruntime", "safetensors": "safetensors"}[fmt], reason=EXTRA)
    out = tmp_path / fmt
    assert main(["export", str(toy_run), "--format", fmt, "--out", str(out)]) == 0
    record = json.loads((out / "config.json").read_text())
    G, info = load_generator(toy_run, "cpu")
    d = info["config"].latent_dim
    assert record["output"]["shape"] == ["batch", 2] and record["input"]["shape"] == ["batch", d]
    assert "synthetic points" in (out / "MODEL_CARD.md").read_text()
    z = z_of(5, d)
    with torch.no_grad():
        expected = G(z).numpy()
    if fmt == "onnx":
        import onnxruntime

        got = onnxruntime.InferenceSession(str(out / "generator.onnx")).run(None, {"z": z.numpy()})[0]
    elif fmt == "torchscript":
        with warnings.catch_warnings():  # torch.jit is deprecated in recent torch; it still works
            warnings.simplefilter("ignore", DeprecationWarning)
            got = torch.jit.load(str(out / "generator.pt"))(z).detach().numpy()
    else:
        got = load_generator(out, "cpu")[0](z).detach().numpy()
    assert np.abs(got - expected).max() <= 1e-5


def test_errors_write_nothing(run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "exp"
    assert main(["export", str(tmp_path / "nosuch"), "--format", "torchscript", "--out", str(out)]) == 1
    assert "no such checkpoint or run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(run), "--format", "pickle", "--out", str(out)])
    assert exit_.value.code == 1 and "invalid choice" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert main(["export", str(run), "--format", "torchscript", "--out", str(busy)]) == 1
    assert "not an empty folder" in capsys.readouterr().err
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert main(["export", str(run), "--format", "torchscript", "--out", str(blocker / "exp")]) == 1
    assert "cannot write --out" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if the extra were not installed
    assert main(["export", str(run), "--format", "safetensors", "--out", str(out)]) == 1
    assert "pip install 'gankit[export]'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "busy"]


def test_gankit_sample_explains_other_exports(run, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["sample", str(out), "-n", "2", "--out", str(tmp_path / "s.png")]) == 1
    assert "safetensors exports only" in capsys.readouterr().err
