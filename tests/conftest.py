"""What every test gets: a user cache of its own.

gankit caches downloaded datasets, trained feature classifiers, reference statistics and the
Inception weights under $XDG_CACHE_HOME/gankit (default ~/.cache/gankit). Each test gets an
empty one in its tmp_path, so that no test reads what another test (or the developer's own
runs) left there and none writes into the developer's home; subprocesses inherit it. $GANKIT_DATA
is unset for the same reason. The system copies of the datasets (mnist.SYSTEM_DIRS, e.g. Debian's
/usr/share/datasets/fashion-mnist) are left alone: they are read-only and tests may rely on them.

--memory-format auto times both layouts on the CPU (memformat.time_layouts). In the tests it is
replaced by a fixed answer, channels_last faster (as on our machine, and the layout the tests'
fixtures and expected numbers were made with), so that no test depends on a real timing; the
subprocess runs that compare numbers give --memory-format channels_last. test_memformat.py tests
the real measurement and the choice.

The shared training configurations are plain constants in configs.py; the `slow` marker
(pyproject.toml) marks the tests that `make test-fast` / `pytest -m "not slow"` leave out.
"""

import pytest

from configs import TOY_ARGS
from gankit import memformat
from gankit.cli import main


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """$XDG_CACHE_HOME is tmp_path/cache (created only when something is cached); no $GANKIT_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GANKIT_DATA", raising=False)
    return tmp_path / "cache"


def channels_last_faster(config, data_shape, num_classes, batch):
    """memformat.time_layouts' answer in the tests: seconds per step, channels_last faster."""
    return {"channels_last": [0.010, 0.011, 0.010], "contiguous": [0.014, 0.013, 0.014]}


@pytest.fixture(autouse=True, scope="session")
def no_layout_timing():
    """--memory-format auto on the CPU chooses channels_last here without timing anything (for
    the whole session, so the module-scoped runs below are covered too)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(memformat, "time_layouts", channels_last_faster)
        yield


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A finished 64-image ring-of-8 run, shared by the tests of one module (read, not changed)."""
    run = tmp_path_factory.mktemp("toy") / "run"
    assert main(["train", *TOY_ARGS, "--max-images", "64", "--device", "cpu", "--out", str(run)]) == 0
    return run
