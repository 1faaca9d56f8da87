"""Comparisons of two finished runs' checkpoints, shared by the training tests."""

from pathlib import Path

import torch

from gankit import checkpoint


def _close(a, b, atol: float) -> bool:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if atol == 0 or not a.is_floating_point():
        return torch.equal(a, b)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=0, atol=atol))


def same_state(a: Path, b: Path, atol: float = 0.0, rng: bool = True) -> None:
    """Runs a and b end with the same progress, weights and optimiser state (bit for bit when
    atol is 0) and, with rng, the same noise and data streams."""
    ra, rb = (checkpoint.load(p / "checkpoints" / "last.pt") for p in (a, b))
    assert ra["progress"] == rb["progress"]
    for net in ("G", "D"):
        assert ra[net].keys() == rb[net].keys()
        for key in ra[net]:
            assert _close(ra[net][key], rb[net][key], atol), f"{net}.{key} differs"
    for opt in ("opt_G", "opt_D"):
        for i, state in ra[opt]["state"].items():
            for key, value in state.items():
                assert _close(value, rb[opt]["state"][i][key], atol), f"{opt} state {i}.{key} differs"
    if rng:
        assert torch.equal(ra["rng"]["noise"], rb["rng"]["noise"])
        data_a, data_b = ra["rng"]["data"], rb["rng"]["data"]  # a position, or a toy generator's state
        assert data_a.keys() == data_b.keys()
        assert all(torch.equal(torch.as_tensor(data_a[k]), torch.as_tensor(data_b[k])) for k in data_a)
