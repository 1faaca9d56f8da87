"""The user cache: downloaded datasets and weights, trained feature classifiers, reference statistics."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(name: str) -> Path:
    """The user cache for `name`: $XDG_CACHE_HOME/gankit/NAME, default ~/.cache/gankit/NAME."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):  # the XDG spec says to ignore relative paths
        base = Path.home() / ".cache"
    return Path(base) / "gankit" / name
