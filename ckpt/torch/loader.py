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
import time
from collections.abc import Callable

import torch

from ckpt.host import (  # noqa: F401 - pack, read_host, verify: part of ckpt.torch.loader's API
    _read_host,
    host_buffer,
    pack,
    read_host,
    read_packed,
    verify,
)
from ckpt.pool import HostPool
from ckpt.reader import (
    LoadStats,
    Progress,
    default_threads,
)
from ckpt.source import Source, open_source
from ckpt.torch.cuda import check_cuda, host_to_cuda, read_to_cuda
from ckpt.torch.tensors import views

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
    partition files when no pool or direct= is given (no copy: see ckpt/torch/mapped.py for the
    trade-off), and reads into one anonymous buffer otherwise; False always reads (private
    memory, e.g. for pinning or when the files may be changed by others); True always maps.

    threads: reader threads (default: profile.best_threads, else the CPU count).
    verify: check every chunk's CRC-32 (default on). progress(done_bytes, total_bytes) is
    called from reader threads, serialised; on CUDA it counts bytes whose copy has ended.
    pool: borrow the host buffer (CPU) from it; CUDA loads stage through the process's own
    bounded pinned slots (ckpt/torch/cuda.py). stats: filled with bytes, threads and times. direct:
    None (default) takes each chunk from the page cache when it is there and reads the rest
    with O_DIRECT; True always O_DIRECT, False always the page cache (see open_source).
    profile: a bas.braid.profile.Profile of the disk.
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
        from ckpt.torch.mapped import load_mapped

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


def as_tensor(buf) -> torch.Tensor:
    """One uint8 tensor over a host buffer; its storage keeps buf alive (one owner)."""
    if not buf.nbytes:
        return torch.empty(0, dtype=torch.uint8)
    return torch.frombuffer(buf, dtype=torch.uint8)  # holds buf: one storage, one owner


