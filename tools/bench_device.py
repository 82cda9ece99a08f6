"""Device workloads: sequential and random reads and writes, and mixed read+write traffic.

Ours go through bas devices (native, multi-threaded, GIL released); the peers do the same job
the way Python code usually does it (os.pread in a loop, numpy memmap fancy indexing), in the
same run, so the ratios say what the native layer buys.
"""

from __future__ import annotations

import mmap
import os
import threading

import numpy as np
from benchkit import Context, Timer, evict, workload

from bas import open_device

CHUNK = 1 << 20
RANDOM_OPS = 200_000


def _open(ctx: Context, create: bool = True):
    url = ctx.device
    if "://" not in url:
        url = f"file://{os.path.join(ctx.workdir, 'bench-device.bin')}?size={ctx.size}"
    return open_device(url, size=ctx.size) if create and "size=" not in url else open_device(url)


def _prepare(dev) -> None:
    """Fill the device with non-zero data so reads touch real blocks."""
    block = np.random.default_rng(0).integers(0, 256, CHUNK, dtype=np.uint8)
    n = dev.size // CHUNK
    for start in range(0, n, 64):
        count = min(64, n - start)
        dev.write_many(np.arange(start, start + count) * CHUNK, CHUNK,
                       np.tile(block, count), threads=2)
    dev.persist()


def _make_cold(dev, ctx: Context) -> None:
    if ctx.cold:
        dev.drop_caches()


def _record(name: str, dev, ctx: Context, t: Timer, read: int = 0, written: int = 0, **extra):
    virtual = None if t.clock0 is None else dev.clock - t.clock0
    return dict(workload=name, device=dev.url, is_pmem=dev.is_pmem,
                media_is_pmem=dev.media_is_pmem, direct_io=dev.direct_io,
                size=dev.size, threads=ctx.threads, cold=ctx.cold, seconds=t.seconds,
                bytes=read + written, bytes_read=read, bytes_written=written,
                virtual_seconds=virtual, **extra)


class _Timed(Timer):
    """Wall time, and modelled time on emulated devices (their clock's advance)."""

    def __init__(self, dev):
        self.dev = dev

    def __enter__(self):
        self.clock0 = self.dev.clock
        return super().__enter__()


@workload("seq-read", "device")
def seq_read(ctx: Context):
    """Whole device in 1 MiB pieces, 64 pieces per read_many call."""
    with _open(ctx) as dev:
        _prepare(dev)
        offsets = np.arange(dev.size // CHUNK) * CHUNK
        out = np.empty(min(len(offsets), 64) * CHUNK, dtype=np.uint8)
        for _ in range(ctx.repeat):
            _make_cold(dev, ctx)
            with _Timed(dev) as t:
                for i in range(0, len(offsets), 64):
                    part = offsets[i:i + 64]
                    dev.read_many(part, CHUNK, out[:len(part) * CHUNK], threads=ctx.threads)
            yield _record("seq-read", dev, ctx, t, read=len(offsets) * CHUNK)


@workload("seq-write", "device")
def seq_write(ctx: Context):
    """Whole device in 1 MiB pieces, then persist (fdatasync / msync)."""
    with _open(ctx) as dev:
        offsets = np.arange(dev.size // CHUNK) * CHUNK
        data = np.random.default_rng(1).integers(0, 256, 64 * CHUNK, dtype=np.uint8)
        for _ in range(ctx.repeat):
            with _Timed(dev) as t:
                for i in range(0, len(offsets), 64):
                    part = offsets[i:i + 64]
                    dev.write_many(part, CHUNK, data[:len(part) * CHUNK], threads=ctx.threads)
                dev.persist()
            yield _record("seq-write", dev, ctx, t, written=len(offsets) * CHUNK)


def _random_offsets(size: int, length: int) -> np.ndarray:
    rng = np.random.default_rng(2)
    return rng.integers(0, (size - length) // length, RANDOM_OPS) * length


def _random_read(name: str, length: int, ctx: Context):
    kept = _open(ctx)
    _prepare(kept)
    if kept.persistent:
        # open per run: a device left open between runs keeps its read mapping, and pages
        # mapped by a process survive the eviction of the workloads interleaved with it
        kept.close()
        kept = None
    out = np.empty(RANDOM_OPS * length, dtype=np.uint8)
    try:
        for _ in range(ctx.repeat):
            dev = kept or _open(ctx, create=False)
            try:
                offsets = _random_offsets(dev.size, length)
                _make_cold(dev, ctx)
                with _Timed(dev) as t:
                    dev.read_many(offsets, length, out, threads=ctx.threads)
                record = _record(name, dev, ctx, t, read=RANDOM_OPS * length, ops=RANDOM_OPS)
            finally:
                if dev is not kept:
                    dev.close()
            yield record
    finally:
        if kept is not None:
            kept.close()


@workload("rand-read-100", "device")
def rand_read_100(ctx: Context):
    """200k random 100-byte reads in one native gather (sort-record size)."""
    yield from _random_read("rand-read-100", 100, ctx)


@workload("rand-read-4k", "device")
def rand_read_4k(ctx: Context):
    """200k random 4 KiB reads in one native gather (page size)."""
    yield from _random_read("rand-read-4k", 4096, ctx)


@workload("mixed", "device")
def mixed(ctx: Context):
    """Random 4 KiB reads of the first half while sequential writes fill the second half."""
    with _open(ctx) as dev:
        _prepare(dev)
        half = dev.size // 2
        offsets = _random_offsets(half, 4096)[: RANDOM_OPS // 4]
        out = np.empty(len(offsets) * 4096, dtype=np.uint8)
        w_offsets = half + np.arange(half // CHUNK) * CHUNK
        data = np.random.default_rng(3).integers(0, 256, len(w_offsets) * CHUNK, dtype=np.uint8)
        threads = max(1, ctx.threads // 2)
        for _ in range(ctx.repeat):
            _make_cold(dev, ctx)
            writer = threading.Thread(target=dev.write_many, args=(w_offsets, CHUNK, data),
                                      kwargs={"threads": threads})
            with _Timed(dev) as t:
                with dev.overlap():  # emulated devices charge the interference
                    writer.start()
                    dev.read_many(offsets, 4096, out, threads=threads)
                    writer.join()
                dev.persist()
            yield _record("mixed", dev, ctx, t, read=out.nbytes, written=data.nbytes)


# -- peers: the same jobs done the usual Python way --------------------------------------

def _peer_file(ctx: Context) -> str:
    with _open(ctx) as dev:
        _prepare(dev)
        path = getattr(dev, "path", None)
    if path is None:
        raise SystemExit("peer workloads need a file device (give a file:// URL or a directory)")
    return path


def _peer_record(name, path, ctx, t, read):
    return dict(workload=name, device=f"file://{path}", is_pmem=False, direct_io=False,
                size=os.path.getsize(path), threads=1, cold=ctx.cold, seconds=t.seconds,
                bytes=read, bytes_read=read, bytes_written=0, ops=RANDOM_OPS)


@workload("peer-pread-loop-100", "device")
def peer_pread_loop(ctx: Context):
    """os.pread per record from Python: what a pure-Python gather costs."""
    path = _peer_file(ctx)
    offsets = _random_offsets(os.path.getsize(path), 100).tolist()
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(ctx.repeat):
            if ctx.cold:
                evict(path)
            with Timer() as t:
                parts = [os.pread(fd, 100, off) for off in offsets]
                b"".join(parts)
            yield _peer_record("peer-pread-loop-100", path, ctx, t, RANDOM_OPS * 100)
    finally:
        os.close(fd)


@workload("peer-mmap-numpy-100", "device")
def peer_mmap_numpy(ctx: Context):
    """numpy fancy indexing over an mmap of the file: the usual vectorized gather."""
    path = _peer_file(ctx)
    size = os.path.getsize(path)
    offsets = _random_offsets(size, 100)
    idx = (offsets[:, None] + np.arange(100)).ravel()
    for _ in range(ctx.repeat):
        if ctx.cold:  # evict before mapping: pages mapped by a process are not dropped
            evict(path)
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
            arr = np.frombuffer(mm, dtype=np.uint8)
            with Timer() as t:
                arr[idx].copy()
            del arr
        yield _peer_record("peer-mmap-numpy-100", path, ctx, t, RANDOM_OPS * 100)
