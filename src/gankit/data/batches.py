"""Minibatches of real samples for Algorithm 1, with a state small enough to checkpoint.

Images are drawn without replacement within an epoch; epoch e uses the permutation seeded by
(seed, e), so the whole data order is one counter (images consumed) and resumes exactly.
Toy distributions are sampled afresh from a generator whose state is checkpointed.

On CUDA the images live on the GPU as uint8 when they fit (ImageBatches); a dataset larger than
half the free GPU memory stays in pinned host memory and a background thread gathers the next
minibatches ahead of the step (StreamedImageBatches): same data order, same checkpoint state.
A memory-mapped dataset (a prepared one larger than memory, ImageDataset.mapping) is served by
that thread on the CPU too (and on CUDA unless it fits on the device): it gathers the rows from
the map into small batches and every RELEASE_BYTES hands the mapped pages back, so the process's
memory stays bounded.
With conditional=True (--conditional) every minibatch carries its labels as one more channel
(models/conditional.attach): the labels are gathered with the images, by the same index.
Every generator here is a CPU one (toy samples are copied to the device), so the data stream is
the same on every device and a checkpoint's state resumes on any device.
"""

from __future__ import annotations

import mmap
import queue
import threading

import torch

from gankit.data import ImageDataset, ToyDataset
from gankit.models.conditional import attach

RELEASE_BYTES = 64 << 20  # memory a memory map may take up between releases of its pages
# Linux maps up to this much of the page cache around each page a read touches (fault-around,
# the kernel's fault_around_bytes), MADV_RANDOM or not: a 12 KiB row costs up to 76 KiB of the
# process's resident memory until the pages are released. Counting only the rows' own bytes let
# the map take 5x RELEASE_BYTES (benchmarks/prepare.py's RSS runs).
FAULT_AROUND_BYTES = 64 << 10


class ImageBatches:
    def __init__(self, dataset: ImageDataset, seed: int, device: torch.device, conditional: bool = False):
        self.dataset = dataset
        self.images = dataset.images.to(device)  # (N, C, H, W), uint8 or float in [-1, 1]
        self.labels = dataset.labels.to(device) if conditional else None  # (N,) int64
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
        index = self._index(self.position, m, share)
        self.position += m
        # index_select, not self.images[index]: the same rows, but a plain row copy rather than
        # advanced indexing's general kernel (about 100x faster on the CPU for uint8 images).
        x = self.dataset.to_float(self.images.index_select(0, index))
        return x if self.labels is None else attach(x, self.labels[index])

    def _index(self, position: int, m: int, share: slice | None) -> torch.Tensor:
        """Dataset indices of the m images from `position` on (the `share` rows of them)."""
        n = len(self.images)
        parts, need = [], m
        while need > 0:
            epoch, offset = divmod(position, n)
            take = min(need, n - offset)
            parts.append(self._permutation(epoch)[offset:offset + take])
            position += take
            need -= take
        index = parts[0] if len(parts) == 1 else torch.cat(parts)
        return index if share is None else index[share]

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])

    def close(self) -> None:
        """Nothing to release (StreamedImageBatches stops its thread)."""


class StreamedImageBatches(ImageBatches):
    """ImageBatches for a dataset that does not fit on the device: the images stay in host memory
    (pinned on CUDA, so copies run asynchronously), and a background thread gathers the rows of
    the next `depth` minibatches ahead of time (index_select releases the GIL). The main thread
    only starts each copy to the device. The order, the shares and the state are ImageBatches'.
    """

    def __init__(self, dataset: ImageDataset, seed: int, device: torch.device, conditional: bool = False,
                 depth: int = 3):
        self.dataset = dataset
        self.labels = dataset.labels if conditional else None  # (N,) int64, host
        self.device = device
        self.pinned = device.type == "cuda"
        self.mapping = dataset.mapping  # an mmap.mmap, or None for images in host memory
        if self.pinned and self.mapping is None and not dataset.images.is_pinned():
            # The dataset keeps the pinned copy in place of its pageable one (which is freed), so
            # the images are held in host memory once, not twice.
            dataset.images = dataset.images.pin_memory()
        self.images = dataset.images  # (N, C, H, W), host
        self.seed = seed
        self.position = 0
        self.depth = depth
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)
        self._worker: threading.Thread | None = None
        self._key: tuple | None = None  # (m, share) the worker is gathering for

    def next(self, m: int, share: slice | None = None) -> torch.Tensor:
        key = (m, None if share is None else (share.start, share.stop))
        if self._worker is None or key != self._key:
            self._start(m, share, key)
        item = self._ready.get()
        if isinstance(item, BaseException):
            self._worker = None
            raise item
        rows, labels = item
        self.position += m
        x = self.dataset.to_float(rows.to(self.device, non_blocking=self.pinned))
        return x if labels is None else attach(x, labels.to(self.device, non_blocking=self.pinned))

    def _start(self, m: int, share: slice | None, key: tuple) -> None:
        self.close()
        self._key = key
        self._ready: queue.Queue = queue.Queue(maxsize=self.depth)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._gather, args=(m, share, self.position, self._stop, self._ready),
                                        name="gankit-batches", daemon=True)
        self._worker.start()

    def _gather(self, m: int, share: slice | None, position: int, stop: threading.Event, ready: queue.Queue) -> None:
        gathered = 0  # bytes the memory map may have taken up since its pages were last released
        try:
            while not stop.is_set():
                index = self._index(position, m, share)
                position += m
                # A fresh (cached) pinned block per batch: PyTorch's pinned allocator does not hand
                # it out again until the copy that reads it has finished.
                rows = torch.empty((len(index), *self.images.shape[1:]), dtype=self.images.dtype,
                                   pin_memory=self.pinned)
                torch.index_select(self.images, 0, index, out=rows)
                labels = None if self.labels is None else self.labels[index].pin_memory() if self.pinned \
                    else self.labels[index]
                gathered += len(index) * (rows[0].numel() * rows.element_size() + FAULT_AROUND_BYTES)
                if self.mapping is not None and gathered >= RELEASE_BYTES and hasattr(mmap, "MADV_DONTNEED"):
                    # The pages stay in the page cache (re-read from there if needed again); the
                    # process stops holding them, so its resident memory does not grow with the file.
                    self.mapping.madvise(mmap.MADV_DONTNEED)
                    gathered = 0
                _offer(ready, (rows, labels), stop)
        except BaseException as exc:  # handed to the training loop, which raises it
            _offer(ready, exc, stop)

    def load_state_dict(self, state: dict) -> None:
        self.close()  # the batches gathered ahead belong to the old position
        super().load_state_dict(state)

    def close(self) -> None:
        if self._worker is not None:
            self._stop.set()
            self._worker.join()
            self._worker = None


def _offer(ready: queue.Queue, item, stop: threading.Event) -> None:
    """Put item in the queue, unless the consumer stops waiting for it (then close() can join)."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def toy_seed(seed: int) -> int:
    """The toy batches' generator's seed for --seed."""
    return seed * 1_000_003 + 7


class ToyBatches:
    """Samples of a toy distribution, drawn on the CPU (a few numbers per row) and copied to the
    device from pinned memory without waiting."""

    def __init__(self, dataset: ToyDataset, seed: int, device: torch.device, conditional: bool = False):
        self.dataset = dataset
        self.device = device
        self.conditional = conditional  # each point labelled with its mixture component
        self.generator = torch.Generator().manual_seed(toy_seed(seed))

    def next(self, m: int, share: slice | None = None) -> torch.Tensor:
        if self.conditional:
            x = attach(*self.dataset.sample_labelled(m, self.generator))  # (m, dim + 1), on the CPU
        else:
            x = self.dataset.sample(m, self.generator)  # (m, dim), on the CPU
        x = x if share is None else x[share]
        if self.device.type == "cpu":
            return x
        return x.pin_memory().to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def close(self) -> None:
        """Nothing to release."""


def batches_for(dataset: ImageDataset | ToyDataset, seed: int, device: torch.device,
                device_bytes: int | None = None, conditional: bool = False) -> ImageBatches | ToyBatches:
    """The batches of this dataset on this device. device_bytes: what the images may take on the
    device (default: half the free GPU memory on CUDA, unlimited on the CPU). conditional: with
    the labels attached. A memory-mapped dataset is streamed from its map on the CPU, and on
    CUDA when it does not fit on the device (else it is copied there once, as any other)."""
    if isinstance(dataset, ToyDataset):
        return ToyBatches(dataset, seed, device, conditional)
    if device_bytes is None and device.type == "cuda":
        device_bytes = torch.cuda.mem_get_info(device)[0] // 2
    size = dataset.images.numel() * dataset.images.element_size()
    if device_bytes is None and dataset.mapping is not None:
        device_bytes = 0  # larger than host memory, so never copied whole into it
    if device_bytes is not None and size > device_bytes:
        return StreamedImageBatches(dataset, seed, device, conditional)
    return ImageBatches(dataset, seed, device, conditional)
