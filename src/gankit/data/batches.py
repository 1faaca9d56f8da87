"""Minibatches of real samples for Algorithm 1, with a state small enough to checkpoint.

Images are drawn without replacement within an epoch; epoch e uses the permutation seeded by
(seed, e), so the whole data order is one counter (images consumed) and resumes exactly.
Toy distributions are sampled afresh from a generator whose state is checkpointed.
"""

from __future__ import annotations

import torch

from gankit.data import ImageDataset, ToyDataset


class ImageBatches:
    def __init__(self, dataset: ImageDataset, seed: int, device: torch.device):
        self.dataset = dataset
        self.images = dataset.images.to(device)  # (N, C, H, W), uint8 or float in [-1, 1]
        self.seed = seed
        self.position = 0  # images consumed since the start of training
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            # Drawn on the CPU, so the data order is the same on every device.
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(len(self.images), generator=g)
            if self.images.device.type == "cuda":
                # From pinned memory without blocking: a copy from pageable memory would make the
                # host wait for the GPU to finish everything queued, once an epoch. The pinned
                # copy is kept until the next epoch, well after the transfer has finished.
                self._perm_host = perm.pin_memory()
                self._perm = self._perm_host.to(self.images.device, non_blocking=True)
            else:
                self._perm = perm
            self._perm_epoch = epoch
        return self._perm

    def next(self, m: int, share: slice | None = None) -> torch.Tensor:
        """The next m images as float (m, C, H, W) in [-1, 1]; crosses epoch boundaries. With
        `share`, only those rows of the m (one process's part of a global minibatch)."""
        n = len(self.images)
        parts, need = [], m
        while need > 0:
            epoch, offset = divmod(self.position, n)
            take = min(need, n - offset)
            parts.append(self._permutation(epoch)[offset:offset + take])
            self.position += take
            need -= take
        index = parts[0] if len(parts) == 1 else torch.cat(parts)
        if share is not None:
            index = index[share]
        return self.dataset.to_float(self.images[index])

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])


class ToyBatches:
    def __init__(self, dataset: ToyDataset, seed: int, device: torch.device):
        self.dataset = dataset
        self.generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + 7)

    def next(self, m: int, share: slice | None = None) -> torch.Tensor:
        x = self.dataset.sample(m, self.generator)  # (m, dim)
        return x if share is None else x[share]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def batches_for(dataset: ImageDataset | ToyDataset, seed: int,
                device: torch.device) -> ImageBatches | ToyBatches:
    if isinstance(dataset, ToyDataset):
        return ToyBatches(dataset, seed, device)
    return ImageBatches(dataset, seed, device)
