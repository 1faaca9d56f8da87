"""The small training configurations the tests share, so that each is written once: a toy MLP on
the ring of 8 Gaussians and a tiny DCGAN on random squares, as TrainConfig keyword arguments and
as `gankit train` flags. Importable like fakes.py and runchecks.py (tests/ is on sys.path)."""

from pathlib import Path

from fakes import make_npz

# TrainConfig(**TOY, ...): a 16-wide MLP pair on toy:ring8, on the CPU.
TOY = dict(data="toy:ring8", model="mlp", g_width=16, d_width=16, latent_dim=4, device="cpu")

# `gankit train` flags of a toy run: the 16-wide MLP pair on toy:ring8, batches of 16.
TOY_ARGS = ["--data", "toy:ring8", "--model", "mlp", "--g-width", "16", "--d-width", "16",
            "--batch-size", "16"]

# `gankit train` flags of the tiniest DCGAN (4 base channels, 8 latent dimensions); the tests add
# the data, the batch size and the device.
TINY_DCGAN_ARGS = ["--model", "dcgan", "--g-width", "4", "--d-width", "4", "--latent-dim", "8"]


def tiny_images(tmp_path: Path) -> dict:
    """TrainConfig keyword arguments of the tiny DCGAN on 40 28x28 squares written to tmp_path."""
    return dict(data=f"npz:{make_npz(tmp_path / 'data.npz', n=40)}", model="dcgan", g_width=4,
                d_width=4, latent_dim=8, device="cpu")
