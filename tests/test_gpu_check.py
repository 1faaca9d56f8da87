"""benchmarks/gpu_check.sh, the first GPU run prepared: its dry run on the CPU goes through every
step and writes one summary that names each step with the command it runs on the GPU; a budget
too short for a step skips it, and a stopped run still leaves its summary."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ("cuda-tests", "pacgan", "torchrun-nccl", "throughput-b128", "vs-examples", "throughput-b1024", "ddp-overhead",
         "vs-examples-bf16-graphs", "parity")


def _command(tmp_path, *args):
    return ["bash", str(SCRIPT), "--dry-run", "--summary", str(tmp_path / "out" / "summary.md"),
            "--work", str(tmp_path / "work"), *args]


def _env():
    return {**os.environ, "PY": sys.executable, "PYTHONPATH": ""}


def _table(summary: str) -> dict[str, list[str]]:
    """step -> [what, status, seconds, result] from the summary's table."""
    lines = [line for line in summary.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    assert lines[0].startswith("| step | what | status | seconds | result |")
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split(" | ")] for line in lines[1:])}


def _examples_available() -> bool:
    checkout = any((ROOT / folder / "dcgan" / "main.py").is_file()
                   for folder in ("build/gpu/pytorch-examples", "build/pytorch-examples"))
    torchvision = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True).returncode == 0
    return checkout and torchvision


@pytest.mark.slow
def test_the_dry_run_goes_through_every_step_and_names_it_in_the_summary(tmp_path):
    proc = subprocess.run(_command(tmp_path), capture_output=True, text=True, env=_env(), timeout=900)
    summary_file = tmp_path / "out" / "summary.md"
    summary = summary_file.read_text()
    assert proc.returncode == 0, proc.stderr + summary
    assert sorted(p.name for p in summary_file.parent.iterdir()) == ["gpu_check.log", "summary.md"]
    table = _table(summary)
    assert list(table) == list(STEPS), "every step, in the order it runs"
    for name, (_, status, _, _) in table.items():
        if name.startswith("vs-examples") and not _examples_available():
            assert status.startswith("SKIPPED (dry run: "), (name, status)
        else:
            assert status == "ok", (name, status, summary)
    for name in STEPS:  # each step's section shows the exact command it runs on the GPU
        section = summary.split(f"\n## {name}: ", 1)[1].split("\n## ", 1)[0]
        gpu_command = section.split("On the GPU:\n\n    ", 1)[1].splitlines()[0]
        assert gpu_command.startswith(("python3 ", "NCCL_DEBUG=VERSION python3 ", "PYTHONPATH=benchmarks:")), gpu_command
        assert "--device cuda" in gpu_command or "-p cuda_tests" in gpu_command, gpu_command
    # What each step that ran found, in the table's result column.
    results = {name: cells[3] for name, cells in table.items()}
    skipped = int(results["cuda-tests"].split(" skipped")[0].split()[-1])
    assert skipped >= 8 and "passed" not in results["cuda-tests"], "the CUDA tests only, each skipped on the CPU"
    assert "graph check" in results["pacgan"] and "wrote " in results["pacgan"], results["pacgan"]
    assert "gankit: done" in results["torchrun-nccl"]
    for name in ("throughput-b128", "throughput-b1024"):
        for setting in ("tf32", "tf32+graphs", "bf16", "bf16+graphs"):
            assert f"ratio gankit/classic, {setting}: " in results[name], (name, results[name])
    assert "ratio ddp1/plain: " in results["ddp-overhead"]
    assert results["parity"].startswith("parity: mean FID A ")


def test_a_budget_too_short_for_the_steps_skips_them_and_writes_the_summary(tmp_path):
    proc = subprocess.run(_command(tmp_path, "--budget", "20"), capture_output=True, text=True, env=_env(),
                          timeout=300)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert proc.returncode == 0, proc.stderr + summary
    table = _table(summary)
    assert list(table) == list(STEPS)
    for _, status, seconds, _ in table.values():
        assert status.startswith("SKIPPED (out of time: ") or status.startswith("SKIPPED (dry run: "), status
        assert seconds == "0"
    assert "python3 benchmarks/parity.py --device cuda" in summary, "the commands are listed all the same"


def test_a_stopped_run_still_writes_its_summary(tmp_path):
    summary_file = tmp_path / "out" / "summary.md"
    proc = subprocess.Popen(_command(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=_env())
    try:
        deadline = time.monotonic() + 120
        while not (summary_file.is_file() and "running (limit" in summary_file.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "the first step did not start"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    summary = summary_file.read_text()
    assert "**stopped early**: stopped by SIGTERM" in summary
    table = _table(summary)
    assert len(table) < len(STEPS) and list(table) == list(STEPS[:len(table)]), "no step after the stop"
    assert "running" not in " ".join(status for _, status, _, _ in table.values()), "the stopped step says so"
