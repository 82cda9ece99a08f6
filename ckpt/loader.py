"""Load a checkpoint into tensors that are zero-copy views of one aligned buffer.

    tensors = ckpt.load("model.ckpt")                     # CPU, O_DIRECT, CRCs checked
    tensors = ckpt.load("model.ckpt", "cuda:0")           # disk -> pinned staging -> GPU

Buffer ownership: all partitions are read back to back into ONE buffer (a page-aligned
anonymous mapping, or a buffer borrowed from a HostPool); torch wraps it in one storage and
every tensor is a view of it. The storage holds the only reference to the buffer, so the
buffer is freed (or goes back to the pool) when the last tensor is dropped; no tensor holds
any memory beyond that shared storage.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from bas import DeviceError
from ckpt.crc import crc32
from ckpt.cuda import check_cuda, host_to_cuda, read_to_cuda
from ckpt.errors import CheckpointIOError, ChecksumError, PartitionSizeError
from ckpt.format import BLOCK, HEADER_SIZE, Index, align_up, decode_header
from ckpt.pool import HostPool, allocate
from ckpt.reader import (
    Chunk,
    LoadStats,
    Progress,
    chunks_of,
    default_threads,
    read_chunks,
)
from ckpt.source import Source, open_source
from ckpt.tensors import views

__all__ = ["as_tensor", "load", "load_from", "load_stream", "pack", "read_host", "read_packed",
           "verify"]

Tensors = dict[str, torch.Tensor]


def load(path: str | os.PathLike, device: str | torch.device = "cpu", *,
         threads: int | None = None, verify: bool | None = None,
         progress: Callable[[int, int], None] | None = None, pool: HostPool | None = None,
         stats: LoadStats | None = None, direct: bool | None = None, profile=None,
         mmap: bool | None = None) -> Tensors:
    """Every tensor of the checkpoint directory at path, on device ("cpu" or "cuda[:N]").

    mmap: None (default) gives CPU tensors as views of private copy-on-write mappings of the
    partition files when no pool or direct= is given (no copy: see ckpt/mapped.py for the
    trade-off), and reads into one anonymous buffer otherwise; False always reads (private
    memory, e.g. for pinning or when the files may be changed by others); True always maps.

    threads: reader threads (default: profile.best_threads, else the CPU count).
    verify: check every chunk's CRC-32 (default on). progress(done_bytes, total_bytes) is
    called from reader threads, serialised; on CUDA it counts bytes whose copy has ended.
    pool: borrow the host buffer (CPU) from it; CUDA loads stage through the process's own
    bounded pinned slots (ckpt/cuda.py). stats: filled with bytes, threads and times. direct:
    None (default) takes each chunk from the page cache when it is there and reads the rest
    with O_DIRECT; True always O_DIRECT, False always the page cache (see open_source).
    profile: a bas.profile.Profile of the disk.
    """
    start = time.perf_counter()
    device = check_cuda(device)  # a CUDA request without CUDA fails before anything is read
    cpu = device.type == "cpu"
    if mmap and (pool is not None or not cpu or direct is not None):
        raise ValueError("load: mmap=True gives CPU tensors backed by the files; it takes no "
                         "pool, direct= or other device")
    if mmap is None:
        # a private mapping costs no copy and no fresh memory: measured here, faulting in
        # fresh anonymous memory alone costs more than reading a cached checkpoint
        # (docs/BENCHMARKS.md). A pool (memory already faulted) or direct= asks for a copy.
        mmap = cpu and pool is None and direct is None
    if mmap:
        from ckpt.mapped import load_mapped

        return load_mapped(path, threads=threads or max(2, os.cpu_count() or 1),
                           verify=True if verify is None else bool(verify),
                           progress=progress, stats=stats)
    with open_source(path, direct=direct) as source:
        out = load_from(source, device, threads=threads, verify=verify, progress=progress,
                        pool=pool, stats=stats, profile=profile)
    if stats is not None:
        stats.seconds = time.perf_counter() - start
    return out


def load_from(source: Source, device: str | torch.device = "cpu", *,
              threads: int | None = None, verify: bool | None = None,
              progress: Callable[[int, int], None] | None = None,
              pool: HostPool | None = None, stats: LoadStats | None = None,
              profile=None) -> Tensors:
    """Load from an open Source (devices already open: a DRAM tier, a file, a PMem pool)."""
    start = time.perf_counter()
    index = source.index
    dev = check_cuda(device)
    threads = threads or default_threads(source, profile)
    verify = True if verify is None else bool(verify)
    tracker = Progress(progress, index.total_bytes)
    if stats is not None:
        stats.direct = source.direct
    if dev.type == "cuda":
        flat = read_to_cuda(source, dev, threads=threads, verify=verify, progress=tracker,
                            stats=stats, pool=pool)
    elif dev.type == "cpu":
        flat = as_tensor(_read_host(source, threads, verify, tracker, pool, stats))
    else:
        raise ValueError(f"load: device {dev} is not supported (use 'cpu' or 'cuda[:N]')")
    tensors = views(index, flat)
    if stats is not None:
        stats.seconds = time.perf_counter() - start
    return tensors


def read_host(source: Source, *, threads: int | None = None, verify: bool | None = None,
              progress: Callable[[int, int], None] | None = None,
              pool: HostPool | None = None, stats: LoadStats | None = None,
              profile=None) -> np.ndarray:
    """Every partition of source, back to back, in one page-aligned host buffer (for tiers).

    The buffer (a uint8 array, borrowed from pool when given) is what `load_from` wraps:
    `ckpt.tensors.views(source.index, as_tensor(buf))` gives the tensors.
    """
    start = time.perf_counter()
    if stats is not None:
        stats.direct = source.direct
    buf = _read_host(source, threads or default_threads(source, profile),
                     True if verify is None else bool(verify),
                     Progress(progress, source.index.total_bytes), pool, stats)
    if stats is not None:
        stats.seconds = time.perf_counter() - start
    return buf


def _read_host(source: Source, threads: int, verify: bool, tracker: Progress,
               pool: HostPool | None, stats: LoadStats | None) -> np.ndarray:
    buf = _host_buffer(source.index.total_bytes, pool)
    read_chunks(source, lambda c: buf[c.position:c.position + c.length], threads=threads,
                verify=verify, progress=tracker, stats=stats)
    return buf


def load_stream(stream, device: str | torch.device = "cpu", *, verify: bool | None = None,
                progress: Callable[[int, int], None] | None = None,
                pool: HostPool | None = None, stats: LoadStats | None = None,
                max_bytes: int | None = None) -> Tensors:
    """Load the packed form (see `pack`) from a readable byte stream, in one sequential pass.

    For remote tiers: the stream is read once, front to back; chunks are checked as they
    arrive. A stream that ends early raises PartitionSizeError, one whose index announces
    more than max_bytes of data (when given) is refused before anything is allocated.
    """
    start = time.perf_counter()
    dev = check_cuda(device)  # before the stream is read
    index, buf = read_packed(stream, verify=verify, progress=progress, pool=pool, stats=stats,
                             max_bytes=max_bytes)
    flat = host_to_cuda(buf, dev) if dev.type != "cpu" else as_tensor(buf)
    tensors = views(index, flat)
    if stats is not None:
        stats.seconds = time.perf_counter() - start
    return tensors


def read_packed(stream, *, verify: bool | None = None,
                progress: Callable[[int, int], None] | None = None,
                pool: HostPool | None = None, stats: LoadStats | None = None,
                max_bytes: int | None = None, sink=None) -> tuple[Index, np.ndarray]:
    """(index, host buffer of every partition) from a packed stream, in one pass.

    sink (for tiers that keep a copy while loading): sink.begin(index_bytes, index) once the
    index is known and checked against max_bytes, then sink.chunk(partition, offset, view)
    for every chunk after its CRC-32 passed (when verifying); view is a slice of the returned
    buffer, so it stays valid and unchanged. The caller commits or aborts the sink.
    """
    start = time.perf_counter()
    head = _read_stream(stream, HEADER_SIZE, "stream header")
    _, length, _ = decode_header(head, "stream")
    body = _read_stream(stream, length, "stream index")
    index = Index.decode(head + body, "stream")
    _read_stream(stream, align_up(HEADER_SIZE + length, BLOCK) - HEADER_SIZE - length,
                 "stream padding")
    if max_bytes is not None and index.total_bytes > max_bytes:
        raise PartitionSizeError(f"stream: {index.total_bytes} bytes of data exceed the "
                                 f"limit of {max_bytes}")
    if sink is not None:
        sink.begin(head + body, index)
    buf = _host_buffer(index.total_bytes, pool)
    tracker = Progress(progress, index.total_bytes)
    chunks = chunks_of(index)
    verify = True if verify is None else bool(verify)
    read_start = time.perf_counter()
    for c in chunks:
        view = buf[c.position:c.position + c.length]
        _readinto_stream(stream, view, f"partition {index.partitions[c.partition].file}")
        if verify:
            _check_crc(index, c, view)
        if sink is not None:
            sink.chunk(c.partition, c.offset, view)
        tracker.add(c.length)
    if stats is not None:
        stats.read_seconds += time.perf_counter() - read_start
        stats.bytes_read += index.total_bytes + align_up(HEADER_SIZE + length, BLOCK)
        stats.chunks += len(chunks)
        stats.threads, stats.verified = 1, verify
        stats.seconds = time.perf_counter() - start
    return index, buf


def pack(path: str | os.PathLike, out) -> int:
    """Write the checkpoint at path to the writable stream out in the packed form.

    Packed form: the index file, zero padding to a multiple of 4096, then every partition
    in index order. Returns the bytes written.
    """
    # one open: the index and partitions of one version, read through checked descriptors
    with open_source(path, direct=False) as src:
        data = src.index.encode()
        out.write(data + bytes(align_up(len(data), BLOCK) - len(data)))
        written = align_up(len(data), BLOCK)
        block = bytearray(8 << 20)
        for (dev, base), p in zip(src.parts, src.index.partitions, strict=True):
            for off in range(0, p.size, len(block)):
                piece = memoryview(block)[:min(len(block), p.size - off)]
                try:
                    dev.read_into(base + off, piece)
                except DeviceError as exc:
                    raise CheckpointIOError(getattr(exc, "errno", 0) or 0,
                                            f"{src.name}/{p.file}: {exc}") from exc
                out.write(piece)
                written += len(piece)
    return written


def verify(path: str | os.PathLike, *, threads: int | None = None,
           progress: Callable[[int, int], None] | None = None,
           stats: LoadStats | None = None) -> Index:
    """Check every chunk of every partition against its CRC-32; the index when all match.

    Needs no framework and only one chunk of memory per thread.
    """
    with open_source(path) as source:
        n = threads or default_threads(source)
        local = threading.local()
        size = source.index.chunk_size

        def scratch(c: Chunk):
            if not hasattr(local, "buf"):
                local.buf = allocate(size)
            return local.buf[:c.length]

        read_chunks(source, scratch, threads=n, verify=True,
                    progress=Progress(progress, source.index.total_bytes), stats=stats)
        return source.index


def _host_buffer(nbytes: int, pool: HostPool | None):
    try:
        return pool.acquire(nbytes) if pool is not None else allocate(nbytes)
    except (OSError, OverflowError, ValueError) as exc:
        raise CheckpointIOError(getattr(exc, "errno", 0) or 0, f"cannot allocate a host "
                                f"buffer of {nbytes} bytes: {exc}") from exc


def as_tensor(buf) -> torch.Tensor:
    """One uint8 tensor over a host buffer; its storage keeps buf alive (one owner)."""
    if not buf.nbytes:
        return torch.empty(0, dtype=torch.uint8)
    return torch.frombuffer(buf, dtype=torch.uint8)  # holds buf: one storage, one owner


def _check_crc(index: Index, c: Chunk, view) -> None:
    if crc32(view) != c.crc:
        raise ChecksumError(f"stream: {index.partitions[c.partition].file} bytes "
                            f"[{c.offset}, {c.offset + c.length}) fail their CRC-32")


def _read_stream(stream, n: int, what: str) -> bytes:
    buf = bytearray(n)
    _readinto_stream(stream, memoryview(buf), what)
    return bytes(buf)


def _readinto_stream(stream, view, what: str) -> None:
    view = memoryview(view).cast("B")
    got = 0
    while got < view.nbytes:
        try:
            if hasattr(stream, "readinto"):
                n = stream.readinto(view[got:])
            else:
                data = stream.read(view.nbytes - got)
                n = len(data)
                view[got:got + n] = data
        except OSError as exc:
            raise CheckpointIOError(exc.errno, f"stream: reading {what} failed: {exc}") from exc
        if not n:
            raise PartitionSizeError(f"stream: {what} truncated after {got} of {view.nbytes} "
                                     f"bytes")
        got += n

