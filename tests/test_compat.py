"""Run folders written by gankit before the run state became one object (commit 0482d91) resume
with today's code, to the same end as the old code's uninterrupted run (fixtures/make_old_runs.py)."""

import shutil
from pathlib import Path

import pytest

from gankit import runs
from gankit.train import resume
from runchecks import same_state

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("kind", ["toy-mlp", "images-dcgan"])
def test_an_old_run_folder_resumes_to_the_old_codes_end(tmp_path, monkeypatch, kind):
    shutil.copy(FIXTURES / "data.npz", tmp_path / "data.npz")  # the image run's data: npz:data.npz
    shutil.copytree(FIXTURES / kind / "split", tmp_path / "split")
    monkeypatch.chdir(tmp_path)
    result = resume(tmp_path / "split", {"max_images": 160})
    assert (result.images_seen, result.iterations) == (160, 10)
    same_state(FIXTURES / kind / "straight", tmp_path / "split")

    def rows(run):  # per-iteration rows without wall time
        return [{k: v for k, v in r.items() if k != "time"} for r in runs.read_metrics(run) if "event" not in r]

    assert rows(tmp_path / "split") == rows(FIXTURES / kind / "straight")
