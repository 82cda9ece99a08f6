"""Parallel chunked reads of a Source's partitions, with per-chunk CRC checks (framework-neutral).

Each checksummed chunk (index.chunk_size bytes, block aligned) is one task. `threads` workers
take tasks in load order; a task reads its chunk with the device (native pread, O_DIRECT when
the source has it, GIL released) straight into its place in the destination, then checks its
CRC-32 (ckpt.crc, GIL released) while the other workers keep reading: reading and verifying
overlap without a separate stage. The first error stops every worker and is raised.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bas import MAX_THREADS, DeviceError
from ckpt.crc import crc32
from ckpt.errors import CheckpointIOError, ChecksumError
from ckpt.format import Index
from ckpt.source import Source

__all__ = ["Chunk", "LoadStats", "Progress", "chunks_of", "default_threads", "read_chunks"]


@dataclass
class LoadStats:
    """What a load did: filled in by load functions when given one (for tiers and benchmarks)."""

    bytes_read: int = 0  # bytes moved from the source's devices (or stream)
    chunks: int = 0
    threads: int = 0
    direct: bool = False  # every partition was opened for O_DIRECT
    cached_bytes: int = 0  # of bytes_read, those taken from the page cache (direct=None)
    mapped: bool = False  # tensors are views of private file mappings (ckpt.torch.mapped)
    staging_pinned: bool = True  # CUDA loads: the host staging was page-locked
    staging_note: str = ""  # why it was not, when it was not
    verified: bool = False  # every chunk's CRC-32 was checked
    read_seconds: float = 0.0  # reading (and verifying, and copying to the device)
    seconds: float = 0.0  # the whole load, index to tensors

    @property
    def bandwidth(self) -> float:
        """Bytes per second while reading (0 when nothing was read)."""
        return self.bytes_read / self.read_seconds if self.read_seconds > 0 else 0.0


@dataclass(frozen=True)
class Chunk:
    partition: int
    offset: int  # within the partition
    length: int
    crc: int
    position: int  # where it lands when all partitions lie back to back


class Progress:
    """Thread-safe byte counter that calls callback(done, total) after each chunk."""

    def __init__(self, callback: Callable[[int, int], None] | None, total: int):
        self._callback = callback
        self._total = total
        self._done = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self._done += n
            if self._callback is not None:
                self._callback(self._done, self._total)


def chunks_of(index: Index) -> list[Chunk]:
    """Every chunk of every partition, in load order."""
    out = []
    for i, base in enumerate(index.partition_bases()):
        crcs = index.partitions[i].crc32
        for (off, n), crc in zip(index.chunks(i), crcs, strict=True):
            out.append(Chunk(i, off, n, crc, base + off))
    return out


def default_threads(source: Source, profile=None) -> int:
    """Reader threads: the profile's best sequential-read count when given, else a guess.

    profile: a bas.braid.profile.Profile measured on (or preset for) the source's storage. The
    guess is the CPU count but at least 4: readers mostly wait on the device with the GIL
    released, and an NVMe drive needs several requests in flight even on a 2-core machine.
    """
    if profile is not None:
        return max(1, int(profile.best_threads("read", "sequential",
                                               access_size=source.index.chunk_size)))
    return max(1, min(max(4, os.cpu_count() or 1), MAX_THREADS))


def read_chunk(source: Source, chunk: Chunk, view, verify: bool) -> None:
    """Read one chunk into view (a writable buffer of chunk.length bytes) and check it."""
    dev, base = source.parts[chunk.partition]
    try:
        dev.read_into(base + chunk.offset, view)
    except DeviceError as exc:
        name = source.index.partitions[chunk.partition].file
        raise CheckpointIOError(getattr(exc, "errno", 0) or 0,
                                f"{source.name}: reading {name} at {chunk.offset} failed: "
                                f"{exc}") from exc
    if verify and crc32(view) != chunk.crc:
        name = source.index.partitions[chunk.partition].file
        raise ChecksumError(f"{source.name}: {name} bytes [{chunk.offset}, "
                            f"{chunk.offset + chunk.length}) fail their CRC-32 (corrupted)")


def read_chunks(source: Source, dest: Callable[[Chunk], object], *, threads: int,
                verify: bool, progress: Progress | None = None,
                stats: LoadStats | None = None) -> None:
    """Read and check every chunk into dest(chunk) (a writable buffer of chunk.length bytes)."""
    tasks = chunks_of(source.index)

    def work(chunk: Chunk) -> None:
        read_chunk(source, chunk, dest(chunk), verify)
        if progress is not None:
            progress.add(chunk.length)

    start = time.perf_counter()
    devices = {id(dev): dev for dev, _ in source.parts}.values()
    cached = sum(getattr(dev, "cached_bytes", 0) for dev in devices)
    used = run_parallel(tasks, work, threads)
    if stats is not None:
        stats.read_seconds += time.perf_counter() - start
        stats.cached_bytes += sum(getattr(dev, "cached_bytes", 0) for dev in devices) - cached
        stats.bytes_read += sum(c.length for c in tasks)
        stats.chunks += len(tasks)
        stats.threads = used
        stats.verified = verify


def run_parallel(tasks: list, work: Callable, threads: int,
                 worker: Callable | None = None) -> int:
    """Run work(task) for every task on up to `threads` threads; the number used.

    worker(take) replaces the default worker loop when a worker needs its own state (CUDA
    streams, staging buffers): take() returns the next task or None when done.
    """
    n = max(1, min(threads, len(tasks)))
    lock = threading.Lock()
    it = iter(tasks)
    errors: list[BaseException] = []

    def take():
        with lock:
            return None if errors else next(it, None)

    def default(take_fn) -> None:
        while (task := take_fn()) is not None:
            work(task)

    def guarded() -> None:
        try:
            (worker or default)(take)
        except BaseException as exc:  # noqa: B036 - handed to the caller below
            with lock:
                errors.append(exc)

    if n == 1:
        guarded()
    else:
        pool = [threading.Thread(target=guarded, name=f"ckpt-read-{i}", daemon=True)
                for i in range(n)]
        for t in pool:
            t.start()
        try:
            for t in pool:
                t.join()
        except BaseException as exc:  # Ctrl-C while waiting: stop the workers, then raise,
            with lock:                # so no worker writes into a buffer the caller frees
                errors.append(exc)
            for t in pool:
                t.join()
            raise
    if errors:
        raise errors[0]
    return n
