"""What every test gets: a user cache of its own.

gankit caches downloaded datasets, trained feature classifiers, reference statistics and the
Inception weights under $XDG_CACHE_HOME/gankit (default ~/.cache/gankit). Each test gets an
empty one in its tmp_path, so that no test reads what another test (or the developer's own
runs) left there and none writes into the developer's home; subprocesses inherit it. $GANKIT_DATA
is unset for the same reason. The system copies of the datasets (mnist.SYSTEM_DIRS, e.g. Debian's
/usr/share/datasets/fashion-mnist) are left alone: they are read-only and tests may rely on them.

The shared training configurations are plain constants in configs.py; the `slow` marker
(pyproject.toml) marks the tests that `make test-fast` / `pytest -m "not slow"` leave out.
"""

import pytest

from configs import TOY_ARGS
from gankit.cli import main


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """$XDG_CACHE_HOME is tmp_path/cache (created only when something is cached); no $GANKIT_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GANKIT_DATA", raising=False)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A finished 64-image ring-of-8 run, shared by the tests of one module (read, not changed)."""
    run = tmp_path_factory.mktemp("toy") / "run"
    assert main(["train", *TOY_ARGS, "--max-images", "64", "--device", "cpu", "--out", str(run)]) == 0
    return run
