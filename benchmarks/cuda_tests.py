"""A pytest plugin for benchmarks/gpu_check.sh: keep only the tests that need CUDA.

    PYTHONPATH=benchmarks:src python -m pytest -p cuda_tests tests

A test needs CUDA when it carries a skipif marker whose reason names CUDA: the suite's one
convention for them (`skipif(not torch.cuda.is_available(), reason="needs CUDA")`, the
`cuda_only` of tests/test_speed.py). Without a GPU they are all skipped, with one they all run;
the others are deselected either way, so a GPU's few minutes go to the tests only it can run.
"""

from __future__ import annotations


def needs_cuda(item) -> bool:
    return any("cuda" in str(mark.kwargs.get("reason", "")).lower() for mark in item.iter_markers("skipif"))


def pytest_collection_modifyitems(config, items):
    keep = [item for item in items if needs_cuda(item)]
    dropped = [item for item in items if not needs_cuda(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_report_header(config):
    return "cuda_tests: only the tests whose skipif reason names CUDA (benchmarks/cuda_tests.py)"
