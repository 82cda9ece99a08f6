"""Disk to GPU: reads overlap asynchronous host-to-device copies on several streams.

Each reader thread owns a CUDA stream and two pinned staging buffers of one chunk each
(double buffering): while the copy of chunk k runs on the stream from buffer A, the thread
reads and verifies chunk k+1 into buffer B; before reusing a buffer it waits only for the
event of that buffer's previous copy. Host memory is 2 x threads x chunk_size, never the
whole model. The destination is one device allocation; tensor offsets are multiples of the
index alignment (>= 256 bytes), so every tensor is aligned on the GPU as well.
"""

from __future__ import annotations

import time

import torch

from ckpt.pool import HostPool
from ckpt.reader import Chunk, LoadStats, Progress, chunks_of, read_chunk, run_parallel
from ckpt.source import Source

__all__ = ["read_to_cuda"]


def read_to_cuda(source: Source, device: torch.device, *, threads: int, verify: bool,
                 progress: Progress | None = None, stats: LoadStats | None = None,
                 pool: HostPool | None = None) -> torch.Tensor:
    """All partitions back to back in one uint8 tensor on device."""
    if not torch.cuda.is_available():
        raise RuntimeError(f"load to {device}: CUDA is not available")
    index = source.index
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    out = torch.empty(index.total_bytes, dtype=torch.uint8, device=device)
    tasks = chunks_of(index)
    staging_bytes = max((c.length for c in tasks), default=0)

    def worker(take) -> None:
        with torch.cuda.device(device):
            stream = torch.cuda.Stream(device=device)
            slots = [_staging(staging_bytes, pool) for _ in range(2)]
            events: list[torch.cuda.Event | None] = [None, None]
            k = 0
            try:
                while (chunk := take()) is not None:
                    slot = k % 2
                    k += 1
                    if events[slot] is not None:
                        events[slot].synchronize()  # the copy out of this buffer is done
                    _copy_chunk(source, chunk, slots[slot], out, stream, verify)
                    events[slot] = stream.record_event()
                    if progress is not None:
                        progress.add(chunk.length)
            finally:
                stream.synchronize()

    start = time.perf_counter()
    used = run_parallel(tasks, None, threads, worker=worker)
    if stats is not None:
        stats.read_seconds += time.perf_counter() - start
        stats.bytes_read += index.total_bytes
        stats.chunks += len(tasks)
        stats.threads = used
        stats.verified = verify
    return out


def _copy_chunk(source: Source, chunk: Chunk, host: torch.Tensor, out: torch.Tensor,
                stream: torch.cuda.Stream, verify: bool) -> None:
    view = host[:chunk.length]
    read_chunk(source, chunk, view.numpy(), verify)
    with torch.cuda.stream(stream):
        out[chunk.position:chunk.position + chunk.length].copy_(view, non_blocking=True)


def _staging(nbytes: int, pool: HostPool | None) -> torch.Tensor:
    """A pinned host buffer: from the pool (pinned there when CUDA exists) or from torch."""
    if pool is not None and pool.pin:
        return torch.from_numpy(pool.acquire(nbytes))
    return torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=True)
