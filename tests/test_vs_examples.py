"""benchmarks/vs_examples.py's bookkeeping, without the example (it needs torchvision, which the
test environment does not have): its progress lines, timing, the example's saved generator in
gankit's, and the data it hands both programs."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import fake_mnist
from gankit.data.idx import read_idx_images, read_idx_labels
from gankit.models.dcgan import DCGANGenerator

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("vs_examples", ROOT / "benchmarks" / "vs_examples.py")
vs = importlib.util.module_from_spec(spec)
sys.modules["vs_examples"] = vs  # its dataclasses look their module up there
spec.loader.exec_module(vs)

# The example's print statement, as in dcgan/main.py
EXAMPLE_FORMAT = "[%d/%d][%d/%d] Loss_D: %.4f Loss_G: %.4f D(x): %.4f D(G(z)): %.4f / %.4f"


def test_the_example_progress_line_is_parsed():
    line = EXAMPLE_FORMAT % (3, 25, 468, 469, 0.1234, 2.5, 0.9, 0.1, 0.08) + "\n"
    assert vs.parse_example_line(line) == (3, 468, 469)
    assert vs.parse_example_line("Random Seed:  1\n") is None
    assert vs.parse_example_line("Using device: cpu\n") is None


def example_run(rate: float, n_train: int, batch: int, epochs: int, startup: float = 7.0):
    """Iteration lines at `rate` images/s after `startup` seconds, the last batch of each epoch short."""
    per_epoch = -(-n_train // batch)
    lines, t = [], startup
    for e in range(epochs):
        for i in range(per_epoch):
            t += (batch if i < per_epoch - 1 else n_train - (per_epoch - 1) * batch) / rate
            lines.append((e, i, per_epoch, t))
    return vs.ExampleRun(lines, t + 1.0, n_train)


def test_example_timing_counts_the_short_last_batch_and_skips_the_warm_up():
    run = example_run(rate=100.0, n_train=300, batch=128, epochs=3)  # 128 + 128 + 44 per epoch
    assert [run.images(128, j) for j in range(3)] == [128, 128, 44]
    assert run.steady(128, warmup=3) == pytest.approx(100.0)
    assert run.epoch_end(1) == pytest.approx(7.0 + 3.0)
    assert run.epoch_end(3) == pytest.approx(7.0 + 9.0)
    # a slow first epoch (start-up, autotuning) is what the warm-up leaves out
    slow = vs.ExampleRun([(0, 0, 3, 20.0)] + run.lines[1:], run.wall, 300)
    assert slow.steady(128, warmup=3) == pytest.approx(100.0)
    assert slow.steady(128, warmup=1) < 80.0
    with pytest.raises(SystemExit, match="too few"):
        run.steady(128, warmup=9)


def write_gankit_run(run_dir: Path, rate: float, batch: int, iterations: int, evals: dict[int, float]) -> None:
    """metrics.jsonl of a run at `rate` images/s whose evaluations (after iteration -> seconds) pause it."""
    run_dir.mkdir(parents=True)
    rows, t = [], 0.0
    for it in range(1, iterations + 1):
        t += batch / rate
        rows.append({"iteration": it, "images": it * batch, "time": round(t, 6), "loss_d": 1.0})
        if it in evals:
            rows.append({"event": "eval", "images": it * batch, "time": round(t + 0.01, 6),
                         "fid": 100.0 / it, "seconds": evals[it]})
            t += 0.01 + evals[it]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_gankit_timing_leaves_out_its_own_evaluations(tmp_path):
    write_gankit_run(tmp_path / "run", rate=1000.0, batch=100, iterations=40, evals={10: 30.0, 20: 30.0, 40: 30.0})
    startup = 4.0  # launch to the first iteration: each evaluation's message comes at its end
    lines = {it * 100: startup + it * 0.1 + 0.01 + secs + sum(s for j, s in ((10, 30.0), (20, 30.0)) if j < it)
             for it, secs in ((10, 30.0), (20, 30.0), (40, 30.0))}
    run = vs.GankitRun(tmp_path / "run", wall=100.0, eval_lines=lines)
    assert run.steady(warm_images=500) == pytest.approx(1000.0, rel=1e-3)
    fids = run.fids()
    assert [f["images"] for f in fids] == [1000, 2000, 4000]
    assert [f["fid"] for f in fids] == [10.0, 5.0, 2.5]
    # from launch, without the evaluations: start-up + training time (+ the 10 ms before each)
    for f, it in zip(fids, (10, 20, 40), strict=True):
        assert f["at"] == pytest.approx(startup + it * 0.1 + 0.01, abs=1e-6)
    missing = vs.GankitRun(tmp_path / "run", wall=100.0, eval_lines={1000: 1.0})
    with pytest.raises(SystemExit, match="2000 images was not seen"):
        missing.fids()


def test_the_examples_generator_loads_into_gankits(tmp_path):
    torch.manual_seed(0)
    G = DCGANGenerator(100, 1, 64, 64).eval()
    # what the example saves: its Sequential is called `main`, ours `net`; the same layers
    saved = {k.replace("net.", "main.", 1): v for k, v in G.state_dict().items()}
    torch.save(saved, tmp_path / "netG_epoch_0.pth")
    loaded = vs.example_generator(tmp_path / "netG_epoch_0.pth")
    z = torch.randn(4, 100)
    with torch.no_grad():
        assert torch.equal(loaded(z), G(z))
    other = {k: v for k, v in saved.items() if not k.startswith("main.0.")}
    torch.save(other, tmp_path / "wrong.pth")
    with pytest.raises(RuntimeError, match="main.0.weight|net.0.weight"):
        vs.example_generator(tmp_path / "wrong.pth")


def test_both_programs_get_the_same_files_in_torchvisions_layout(tmp_path):
    data = fake_mnist(tmp_path / "fm", n_train=50, n_test=20)
    root, n = vs.unpack_as_mnist(str(data), tmp_path / "out", train_images=30)
    raw = root / "MNIST" / "raw"
    assert n == 30
    train = read_idx_images(raw / "train-images-idx3-ubyte")
    assert train.shape == (30, 28, 28)
    assert np.array_equal(train, read_idx_images(data / "train-images-idx3-ubyte.gz")[:30])
    assert np.array_equal(read_idx_labels(raw / "train-labels-idx1-ubyte"),
                          read_idx_labels(data / "train-labels-idx1-ubyte.gz")[:30])
    assert read_idx_images(raw / "t10k-images-idx3-ubyte").shape == (20, 28, 28)  # the test split whole
    assert not list(raw.glob("*.part"))
    with pytest.raises(SystemExit, match="--train-images 99: the training split has 50"):
        vs.unpack_as_mnist(str(data), tmp_path / "out2", train_images=99)


def test_a_folder_without_the_example_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        vs.main(["--examples", str(tmp_path), "--device", "cpu"])
    assert "--examples" in capsys.readouterr().err


@pytest.mark.slow  # four training runs, a classifier and four evaluations: about 30 s
def test_parity_runs_both_settings_over_the_seeds(tmp_path, capsys):
    """benchmarks/parity.py end to end on a tiny DCGAN: on the CPU tf32 is plain fp32, so the two
    settings must give the very same FID seed by seed (0 standard errors), and seeds must differ."""
    spec = importlib.util.spec_from_file_location("parity", ROOT / "benchmarks" / "parity.py")
    parity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parity)
    data = fake_mnist(tmp_path / "fm", n_train=128, n_test=64, gz=False)
    common = (f"--data fashion-mnist --data-dir {data} --model dcgan --g-width 4 --d-width 4 "
              "--latent-dim 8 --batch-size 16")
    assert parity.main(["--device", "cpu", "--common", common, "--a", "--precision fp32",
                        "--b", "--precision tf32", "--seeds", "0,1", "--max-images", "32",
                        "--eval-samples", "40", "--out", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "runs" / "parity.json").read_text())
    fid = {(r["setting"], r["seed"]): r["fid"] for r in record}
    assert fid[("A", 0)] == fid[("B", 0)] and fid[("A", 1)] == fid[("B", 1)]
    assert fid[("A", 0)] != fid[("A", 1)]
    assert out.splitlines()[-1].endswith("difference +0.00 = 0.0 standard errors")
    with pytest.raises(SystemExit):
        parity.main(["--a", "--seed 3"])
    assert "--a may not set --seed" in capsys.readouterr().err
