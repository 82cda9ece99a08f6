"""Checkpoint bytes into host memory, framework-neutral: no torch here.

read_host fills one page-aligned buffer from a Source (the tiers' load path), read_packed
from a packed stream (remote tiers), pack writes the packed form, verify checks every CRC.
ckpt.torch.loader turns these buffers into tensors.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import numpy as np

from bas import DeviceError
from ckpt.crc import crc32
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

__all__ = ["host_buffer", "pack", "read_host", "read_packed", "verify"]


def read_host(source: Source, *, threads: int | None = None, verify: bool | None = None,
              progress: Callable[[int, int], None] | None = None,
              pool: HostPool | None = None, stats: LoadStats | None = None,
              profile=None) -> np.ndarray:
    """Every partition of source, back to back, in one page-aligned host buffer (for tiers).

    The buffer (a uint8 array, borrowed from pool when given) is what `load_from` wraps:
    `ckpt.torch.tensors.views(source.index, as_tensor(buf))` gives the tensors.
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
    buf = host_buffer(source.index.total_bytes, pool)
    read_chunks(source, lambda c: buf[c.position:c.position + c.length], threads=threads,
                verify=verify, progress=tracker, stats=stats)
    return buf


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
    buf = host_buffer(index.total_bytes, pool)
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


def host_buffer(nbytes: int, pool: HostPool | None):
    try:
        return pool.acquire(nbytes) if pool is not None else allocate(nbytes)
    except (OSError, OverflowError, ValueError) as exc:
        raise CheckpointIOError(getattr(exc, "errno", 0) or 0, f"cannot allocate a host "
                                f"buffer of {nbytes} bytes: {exc}") from exc


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

