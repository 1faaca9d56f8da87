"""`gankit data prepare`: a folder of images decoded, resized and centre-cropped once, in worker
processes, into a prepared dataset (the format of data/prepared.py).

Atomic: the dataset is built in a temporary folder beside DATASET (.NAME.tmp-PID) and renamed to
DATASET at the end, after its manifest, written last. A killed prepare leaves at most that
temporary folder, which has no manifest and is not at DATASET; the next prepare removes it.
Workers decode chunks of files straight into the memory-mapped output array, so no pixels pass
through pipes; each image is decoded by images.decode_resized, as the folder: loader does.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from gankit.data.images import (
    check_options,
    decode_resized,
    header,
    labels_of_paths,
    output_shape,
    scan_images,
)
from gankit.data.prepared import IMAGES, LABELS, SKIPPED, write_manifest
from gankit.errors import DataError

ON_BAD_FILE = ("fail", "skip")
CHUNK = 64  # files per worker task: even load across workers, a smooth progress line
IN_PROCESS_BELOW = 256  # fewer files are decoded here: starting worker processes costs more
PROGRESS_EVERY_S = 2.0
_DELAY_ENV = "_GANKIT_PREPARE_DELAY"  # tests only: seconds each task sleeps, so one can kill a prepare mid-way


def default_jobs() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def listing(scanned: list[tuple[str, os.stat_result]]) -> str:
    """One line "path<TAB>size<TAB>mtime_ns" per file (images.scan_images): what the folder cache
    is keyed by, and whose SHA-256 the manifest records as files_sha256. (json.dumps of the same
    rows took five times as long for 100,000 files.)"""
    return "\n".join(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}" for rel, st in scanned)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def prepare_folder(source: str | os.PathLike, out: str | os.PathLike, *, image_size: int | None,
                   channels: int | None = None, on_bad_file: str = "fail", jobs: int | None = None,
                   log: TextIO | None = None, name: str | None = None) -> dict:
    """Prepare the images under source into the dataset folder out; returns its manifest.

    on_bad_file "fail": a DataError naming the first unreadable file; "skip": leave it out and
    list it, with the reason, in out/skipped.txt. jobs: worker processes (default: the cores)."""
    root, out, log = Path(source), Path(out), log or sys.stderr
    name = name or f"folder:{source}"
    check_options(image_size, channels, name)
    if on_bad_file not in ON_BAD_FILE:
        raise DataError(f"--on-bad-file must be one of {', '.join(ON_BAD_FILE)}, got {on_bad_file!r}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise DataError(f"--jobs must be a positive integer, got {jobs!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"--out {out} already exists; remove it or choose another folder")
    scanned = scan_images(root, name)
    files = [os.path.join(root, rel) for rel, _ in scanned]  # str: 100,000 Path joins took 0.3 s
    files_sha256 = text_sha256(listing(scanned))  # before decoding: a file changed meanwhile makes it stale, not wrong
    rels = [rel for rel, _ in scanned]
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    remove_stale_builds(out)
    shutil.rmtree(tmp, ignore_errors=True)  # a dead process's, whose PID this one reuses
    tmp.mkdir(parents=True)
    try:
        jobs = min(jobs or default_jobs(), max(1, len(files) // CHUNK))
        with _workers(jobs if len(files) >= IN_PROCESS_BELOW else 1) as pool:
            built = _build(pool, root, files, tmp, name, image_size, channels, on_bad_file, log)
        manifest = _finish(tmp, root, rels, files_sha256, built, image_size, channels, on_bad_file)
        os.rename(tmp, out)  # the dataset appears whole, manifest included, or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def remove_stale_builds(out: Path) -> None:
    """Remove the temporary folders that killed prepares of out left (their process is gone)."""
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _workers:
    """A process pool (None for jobs == 1: everything runs in this process). Forked where the
    platform can, as DataLoader's workers are, and like them one intra-op thread each (so no
    OpenMP pool inherited from the parent is used); spawn, which re-imports __main__ and so
    fails for a program read from stdin, only where fork does not exist."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.pool = None
        self.threads = torch.get_num_threads()

    def __enter__(self):
        if self.jobs > 1:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            self.pool = multiprocessing.get_context(method).Pool(self.jobs, initializer=_init_worker)
        else:
            # Here too one intra-op thread: resizing one small image gains nothing from more, and
            # an OpenMP team waiting on a core another program holds makes each resize slow.
            torch.set_num_threads(1)
        return self.pool

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.threads)
        if self.pool is not None:
            self.pool.terminate()  # on an error, stops the other chunks at once
            self.pool.join()


def _init_worker() -> None:
    torch.set_num_threads(1)  # one process per core already


def _run(pool, task, chunks: list[tuple]):
    """Yields (chunk, its result) as tasks finish: in the pool in any order, else in order here."""
    if pool is None:
        for chunk in chunks:
            yield chunk, task(chunk)
    else:
        yield from pool.imap_unordered(_with_chunk, [(task, chunk) for chunk in chunks])


def _with_chunk(args: tuple):
    task, chunk = args
    return chunk, task(chunk)


def _headers(chunk: tuple) -> list:
    """Worker task: (mode, size) or the reason it cannot be read, for each file of the chunk."""
    _start_files, files = chunk
    return [_try(header, file) for file in files]


def _decode_into(chunk: tuple) -> list:
    """Worker task: decode each file into its row of the output array; per file None or the reason."""
    (start, files), path, channels, image_size = chunk
    delay = float(os.environ.get(_DELAY_ENV) or 0)
    if delay:
        time.sleep(delay)
    out = np.load(path, mmap_mode="r+")  # (N, C, H, W) uint8, shared with the other workers
    errors = []
    for i, file in enumerate(files):
        row = _try(decode_resized, file, channels, image_size)
        if isinstance(row, str):
            errors.append(row)
        else:
            out[start + i] = row.numpy()
            errors.append(None)
    del out  # flushes to the page cache, which the parent reads
    return errors


def _try(fn, *args):
    try:
        return fn(*args)
    except DataError as exc:
        return str(exc)
    except OSError as exc:  # a file gone or unreadable between listing and decoding
        return f"cannot read image {args[0]}: {exc.strerror or exc}; fix or remove the file"


def _chunks(files: list[str], indices: list[int]) -> list[tuple[int, list[str]]]:
    return [(s, [files[i] for i in indices[s:s + CHUNK]]) for s in range(0, len(indices), CHUNK)]


def _build(pool, root: Path, files: list[str], tmp: Path, name: str, image_size: int | None,
           channels: int | None, on_bad_file: str, log: TextIO) -> dict:
    """Headers (when the channels or size must be found), then the pixels, into tmp/images.npy.
    Returns what _finish needs: the kept files' indices, the skipped ones, the array's shape."""
    bad: dict[int, str] = {}
    kept = list(range(len(files)))
    if channels is None or image_size is None:
        heads: dict[int, tuple] = {}
        for (start, _files), results in _run(pool, _headers, _chunks(files, kept)):
            for i, result in enumerate(results, start):
                (bad if isinstance(result, str) else heads)[i] = result
            _check_bad(bad, on_bad_file)
        kept = sorted(heads)
        if not kept:
            raise DataError(f"{name}: none of the {len(files)} images could be read (see {SKIPPED})")
        channels, hw = output_shape(name, [files[i] for i in kept], [heads[i] for i in kept], image_size, channels)
    else:
        hw = (image_size, image_size)
    shape = (len(kept), channels, *hw)
    np.lib.format.open_memmap(tmp / IMAGES, mode="w+", dtype=np.uint8, shape=shape).flush()
    progress = Progress(len(kept), log, name)
    tasks = [(chunk, tmp / IMAGES, channels, image_size) for chunk in _chunks(files, kept)]
    with RowHasher(tmp / IMAGES, shape) as hasher:
        for ((start, chunk), *_), results in _run(pool, _decode_into, tasks):
            for i, result in enumerate(results, start):
                if result is not None:
                    bad[kept[i]] = result  # i is the row; kept[i] the file
            _check_bad(bad, on_bad_file)
            hasher.rows_done(start, len(chunk))
            progress.update(len(chunk))
        progress.done()
        digest = hasher.hexdigest()
    return {"kept": kept, "bad": bad, "shape": shape, "images_sha256": digest}


class RowHasher:
    """SHA-256 of an .npy file whose rows worker processes are filling, computed as they go: when
    the rows from the first one not yet hashed are done, they are read back (from the page cache)
    and hashed, so that hashing overlaps decoding instead of following it. Chunks finish in any
    order; the bytes are hashed in file order, so the digest is the file's plain SHA-256."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.row_bytes = int(np.prod(shape[1:]))
        self.header_bytes = path.stat().st_size - shape[0] * self.row_bytes
        self.file = open(path, "rb", buffering=0)  # a buffer would read ahead rows not yet written
        self.digest = hashlib.sha256()
        self.next_row, self.finished = 0, {}  # finished: first row -> rows, of chunks not yet hashed
        self._hash(self.header_bytes)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    def rows_done(self, start: int, count: int) -> None:
        self.finished[start] = count
        while self.next_row in self.finished:
            count = self.finished.pop(self.next_row)
            self._hash(count * self.row_bytes)
            self.next_row += count

    def hexdigest(self) -> str:
        if self.finished:  # a chunk before them never reported: a bug, not a bad file
            raise RuntimeError(f"rows from {self.next_row} were never reported done")
        return self.digest.hexdigest()

    def _hash(self, nbytes: int) -> None:
        while nbytes > 0:
            block = self.file.read(min(nbytes, 1 << 20))
            if not block:
                raise OSError(f"{self.file.name}: shorter than its header says")
            self.digest.update(block)
            nbytes -= len(block)


def _check_bad(bad: dict[int, str], on_bad_file: str) -> None:
    if bad and on_bad_file == "fail":
        raise DataError(bad[min(bad)])  # the first bad file in the dataset's order


def _finish(tmp: Path, root: Path, rels: list[str], files_sha256: str, built: dict,
            image_size: int | None, channels: int | None, on_bad_file: str) -> dict:
    """Drop the rows of files that failed to decode, write the labels, the skipped-files list
    and, last, the manifest."""
    kept, bad, shape, digest = built["kept"], built["bad"], built["shape"], built["images_sha256"]
    rows = [r for r, i in enumerate(kept) if i not in bad]  # rows of the array that hold an image
    if not rows:
        raise DataError(f"none of the {len(rels)} images under {root} could be read (first: {bad[min(bad)]})")
    if len(rows) < len(kept):
        shape = (len(rows), *shape[1:])
        _compact(tmp / IMAGES, rows, shape)
        digest = None  # the file changed: write_manifest hashes it again
    labelled = labels_of_paths([rels[kept[r]] for r in rows])
    classes = None
    if labelled is not None:
        labels, classes = labelled
        np.save(tmp / LABELS, labels.numpy())
    if bad:
        lines = [f"{rels[i]}\t{bad[i]}\n" for i in sorted(bad)]
        (tmp / SKIPPED).write_text("".join(lines))
    options = {"image_size": image_size, "channels": channels, "on_bad_file": on_bad_file}
    return write_manifest(tmp, source=str(root.resolve()), files_sha256=files_sha256,
                          options=options, shape=shape, classes=classes, skipped=len(bad),
                          images_sha256=digest)


def _compact(path: Path, rows: list[int], shape: tuple[int, ...]) -> None:
    """Rewrite the array at path with only the given rows (rare: some files were skipped)."""
    full = np.load(path, mmap_mode="r")
    part = path.with_name("compact-" + path.name)
    out = np.lib.format.open_memmap(part, mode="w+", dtype=np.uint8, shape=shape)
    for s in range(0, len(rows), 4096):
        out[s:s + 4096] = full[rows[s:s + 4096]]
    out.flush()
    del out, full
    os.replace(part, path)


class Progress:
    """The prepare's progress line on stderr: images, images/s, ETA. Rewritten in place on a
    terminal; elsewhere one line at the first chunk and every PROGRESS_EVERY_S seconds."""

    def __init__(self, total: int, stream: TextIO, name: str):
        self.total, self.stream, self.name = total, stream, name
        self.count, self.start, self.last = 0, time.monotonic(), None
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def update(self, n: int) -> None:
        self.count += n
        now = time.monotonic()
        if self.last is None or now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            self._print(now)

    def done(self) -> None:
        self._print(time.monotonic())
        if self.tty:
            print(file=self.stream, flush=True)

    def _print(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.count / elapsed
        eta = (self.total - self.count) / rate if rate > 0 else float("inf")
        line = (f"gankit: preparing {self.name}: {self.count:,}/{self.total:,} images, "
                f"{rate:,.0f} images/s, " + (f"ETA {eta:.0f} s" if self.count < self.total else f"{elapsed:.1f} s"))
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=self.stream, flush=True)
