"""Checkpoints of one batch of PacGAN trials (`gankit bench modes --protocol pacgan`).

A batch that stops at its deadline (`--stop-after`) writes where it is: the stacked players,
Adam's state, the generator's state, the epoch's shuffle, the samples kept so far. A finished
batch writes its scored results instead, so a stopped benchmark never trains a finished batch
again. The same command continues from OUT/checkpoints/. Tensors, numbers and strings only,
read with torch.load(weights_only=True): loading a checkpoint never runs code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gankit.errors import ConfigError
from gankit.files import atomic_write

VERSION = 2  # 2: the scores along the way (--score-every)
PLAYER_FIELDS = ("g_weights", "g_bias", "bn_scale", "bn_shift", "bn_mean", "bn_var", "d_weights", "d_biases")


def _fields(players) -> tuple[str, ...]:
    """The players' tensors to keep: G's EMAs too where the batch has them (its key says so)."""
    return PLAYER_FIELDS + (("emas",) if players.emas else ())


def save_progress(path: Path, key: dict, players, adam: torch.optim.Optimizer, generator: torch.Generator,
                  progress) -> None:
    """A stopped batch: everything its next update needs (progress: pacgan_batched.Progress)."""
    _write(path, {
        "version": VERSION, "key": key, "done": False,
        "players": {f: _detached(getattr(players, f)) for f in _fields(players)},
        "adam": adam.state_dict(), "generator": generator.get_state(),
        "it": progress.it, "order": progress.order, "kept": progress.kept,
        "result": progress.result, "seconds": progress.seconds, "scores": progress.scores,
    })


def load_progress(path: Path, key: dict, players, adam: torch.optim.Optimizer, generator: torch.Generator):
    """(it, order, kept, result, seconds, scores) of a stopped batch, its players, Adam and generator
    restored in place (the tensors a CUDA graph or Adam refer to stay the same objects); None
    if there is no checkpoint."""
    state = _read(path, key)
    if state is None:
        return None
    if state["done"]:
        raise ConfigError(f"{path}: this batch has finished; read it with load_results")
    with torch.no_grad():
        for f in _fields(players):
            for a, b in zip(_flat(getattr(players, f)), _flat(state["players"][f]), strict=True):
                a.copy_(b)
    adam.load_state_dict(state["adam"])
    generator.set_state(state["generator"])
    return state["it"], state["order"], state["kept"], state["result"], state["seconds"], state["scores"]


def save_results(path: Path, key: dict, results: list[dict]) -> None:
    """A finished batch: its trials' results (numpy arrays stored as tensors)."""
    _write(path, {"version": VERSION, "key": key, "done": True, "results": _map_arrays(results, torch.from_numpy)})


def load_results(path: Path, key: dict) -> list[dict] | None:
    """The results of a finished batch, or None (no checkpoint, or a stopped one)."""
    state = _read(path, key)
    if state is None or not state["done"]:
        return None
    return _map_arrays(state["results"], lambda t: t.numpy())


def _read(path: Path, key: dict) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (any unreadable file gets the same advice)
        # torch's own message suggests weights_only=False, which would run the file's code: not given
        raise ConfigError(f"{path}: not a readable checkpoint of this benchmark (a safe load, tensors only, "
                          f"refused it: {type(e).__name__}); delete it to train that batch again") from None
    if not isinstance(state, dict) or state.get("version") != VERSION:
        raise ConfigError(f"{path}: not a checkpoint of this version of the benchmark; delete it to train that batch again")
    if state["key"] != key:
        raise ConfigError(f"{path} belongs to another command ({_describe(state['key'])}; this one: "
                          f"{_describe(key)}): use another --out, or delete the file")
    return state


def _write(path: Path, state: dict) -> None:
    with atomic_write(path, fsync=True) as tmp:
        torch.save(state, tmp)


def _detached(value):
    if isinstance(value, list):
        return [_detached(v) for v in value]
    return value.detach().cpu()


def _flat(value) -> list[torch.Tensor]:
    """A tensor, or nested lists of them, as one list."""
    return [t for v in value for t in _flat(v)] if isinstance(value, list) else [value]


def _map_arrays(value, convert):
    """value with every numpy array (or tensor) inside dicts and lists converted."""
    if isinstance(value, dict):
        return {k: _map_arrays(v, convert) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_arrays(v, convert) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return convert(value)
    return value


def _describe(key: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in key.items())
