"""Host to GPU: bounded pinned staging, copies on side streams ordered after the caller's work.

Stream rules (torch's caching allocator is stream-ordered): the destination is allocated on
the caller's current stream, which may still have kernels queued that use the memory the
allocator just handed out. So an event recorded on the caller's stream after the allocation
gates every copy stream before its first copy, and the caller's stream waits on every copy
stream's last event before the tensors are handed back: they are usable on the caller's
stream at once, and on other streams after a synchronize, as torch's own copies are.

Staging is pinned, bounded and reused: one process-wide set of pinned slots of SLOT bytes
(at most STAGING_CAP in all, made on first use and kept), from which each load takes two
slots per reader thread (double buffering) and gives them back when its copies are done.
A chunk larger than a slot goes through in slot-sized pieces, its CRC-32 accumulated. If
pinning is refused, the load says so in its stats (`staging_pinned`, `staging_note`) and
copies synchronously from pageable memory instead of silently losing the overlap.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import numpy as np
import torch

from bas import DeviceError
from ckpt.crc import crc32
from ckpt.errors import CheckpointIOError, ChecksumError
from ckpt.reader import Chunk, LoadStats, Progress, chunks_of, run_parallel
from ckpt.source import Source

__all__ = ["SLOT", "STAGING_CAP", "check_cuda", "host_to_cuda", "read_to_cuda"]

SLOT = 16 << 20  # the format's default chunk: most chunks are one slot
STAGING_CAP = 256 << 20  # pinned staging of the whole process, whatever the model's size
COPY_PIECE = 64 << 20  # host-to-device copies of cached buffers go in pieces this large


def check_cuda(device) -> torch.device:
    """The torch.device for device; raises before anything is read when CUDA is missing."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"{dev}: CUDA is not available on this machine (torch "
                               f"{torch.__version__}, cuda build {torch.version.cuda})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"{dev}: there are only {torch.cuda.device_count()} CUDA "
                               f"devices")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise ValueError(f"device {dev} is not supported (use 'cpu' or 'cuda[:N]')")
    return dev


class _Staging:
    """Process-wide pinned slots: at most STAGING_CAP bytes, made once, lent per load."""

    def __init__(self):
        self._cond = threading.Condition()
        self._free: list[torch.Tensor] = []
        self._made = 0
        self.pinned = True
        self.note = ""

    def take(self, n: int) -> list[torch.Tensor]:
        """n slots (n <= the cap's count), waiting for other loads to give theirs back."""
        n = max(1, min(n, STAGING_CAP // SLOT))
        with self._cond:
            while len(self._free) + (STAGING_CAP // SLOT - self._made) < n:
                self._cond.wait()
            while len(self._free) < n:
                self._free.append(self._make())
                self._made += 1
            taken, self._free = self._free[:n], self._free[n:]
            return taken

    def give(self, slots: list[torch.Tensor]) -> None:
        with self._cond:
            self._free.extend(slots)
            self._cond.notify_all()

    def _make(self) -> torch.Tensor:
        try:
            return torch.empty(SLOT, dtype=torch.uint8, pin_memory=True)
        except RuntimeError as exc:  # pinning refused (locked-memory limit): say so, go on
            self.pinned = False  # for good: the pageable slot stays in the set
            self.note = f"pinned staging refused ({exc}); those copies are synchronous"
            return torch.empty(SLOT, dtype=torch.uint8)


_staging = _Staging()


@contextmanager
def _lent(stream, n: int):
    """n staging slots for copies on stream, given back however the block ends.

    A Ctrl-C can land anywhere, even while the copies out of the slots are being waited
    for: the stream is then drained (again) before the slots go back, so no slot is lost and
    no later load finds them still being read by the GPU.
    """
    slots = _staging.take(n)
    try:
        yield slots
    finally:
        try:
            stream.synchronize()
        finally:
            _staging.give(slots)


def read_to_cuda(source: Source, device: torch.device, *, threads: int, verify: bool,
                 progress: Progress | None = None, stats: LoadStats | None = None,
                 pool=None) -> torch.Tensor:
    """All partitions back to back in one uint8 tensor on device (pool: unused, staging is
    the process's own bounded pinned set)."""
    device = check_cuda(device)
    index = source.index
    tasks = chunks_of(index)
    threads = max(1, min(threads, len(tasks) or 1, STAGING_CAP // SLOT // 2))
    with torch.cuda.device(device):
        out = torch.empty(index.total_bytes, dtype=torch.uint8, device=device)
        ready = torch.cuda.current_stream(device).record_event()
    done_events: list[torch.cuda.Event] = []
    lock = threading.Lock()

    def worker(take) -> None:
        with torch.cuda.device(device):
            stream = torch.cuda.Stream(device=device)
            stream.wait_event(ready)  # the caller's queued work on out's memory comes first
            with _lent(stream, 2) as slots:
                pipe = _Pipe(stream, slots, progress)
                try:
                    while (chunk := take()) is not None:
                        _stage_chunk(source, chunk, out, pipe, verify)
                finally:
                    pipe.finish()  # every copy out of our slots is done: they can go back
                    with lock:
                        done_events.append(pipe.last)

    start = time.perf_counter()
    try:
        used = run_parallel(tasks, None, threads, worker=worker)
    finally:
        caller = torch.cuda.current_stream(device)
        for event in done_events:
            if event is not None:
                caller.wait_event(event)
    if stats is not None:
        stats.read_seconds += time.perf_counter() - start
        stats.bytes_read += index.total_bytes
        stats.chunks += len(tasks)
        stats.threads = used
        stats.verified = verify
        stats.staging_pinned = _staging.pinned
        stats.staging_note = _staging.note
    return out


class _Pipe:
    """Double-buffered copies on one stream: a slot is refilled only after its copy ended;
    progress counts bytes whose copy has ended."""

    def __init__(self, stream, slots, progress):
        self.stream, self.slots, self.progress = stream, slots, progress
        self.events: list = [None] * len(slots)
        self.pending = [0] * len(slots)
        self.k = 0
        self.last = None

    def slot(self) -> tuple[int, torch.Tensor]:
        i = self.k % len(self.slots)
        self.k += 1
        self._wait(i)
        return i, self.slots[i]

    def copy(self, i: int, host: torch.Tensor, dst: torch.Tensor) -> None:
        with torch.cuda.stream(self.stream):
            dst.copy_(host, non_blocking=True)
        self.events[i] = self.last = self.stream.record_event()
        self.pending[i] = host.numel()

    def finish(self) -> None:
        for i in range(len(self.slots)):
            self._wait(i)
        self.stream.synchronize()

    def _wait(self, i: int) -> None:
        if self.events[i] is not None:
            self.events[i].synchronize()
            self.events[i] = None
        if self.pending[i] and self.progress is not None:
            self.progress.add(self.pending[i])
        self.pending[i] = 0


def _stage_chunk(source: Source, chunk: Chunk, out: torch.Tensor, pipe: _Pipe,
                 verify: bool) -> None:
    """Read one chunk through the slots in pieces, checking its CRC-32 over all of them."""
    dev, base = source.parts[chunk.partition]
    crc, done = 0, 0
    while done < chunk.length:
        n = min(SLOT, chunk.length - done)
        i, slot = pipe.slot()
        view = slot[:n]
        try:
            dev.read_into(base + chunk.offset + done, view.numpy())
        except DeviceError as exc:
            name = source.index.partitions[chunk.partition].file
            raise CheckpointIOError(getattr(exc, "errno", 0) or 0,
                                    f"{source.name}: reading {name} at "
                                    f"{chunk.offset + done} failed: {exc}") from exc
        if verify:
            crc = crc32(view.numpy(), crc)
        pos = chunk.position + done
        pipe.copy(i, view, out[pos:pos + n])
        done += n
    if verify and crc != chunk.crc:
        name = source.index.partitions[chunk.partition].file
        raise ChecksumError(f"{source.name}: {name} bytes [{chunk.offset}, "
                            f"{chunk.offset + chunk.length}) fail their CRC-32 (corrupted)")


def host_to_cuda(host, device: torch.device) -> torch.Tensor:
    """A uint8 CUDA copy of a host buffer (numpy array or CPU tensor), in pieces on a side
    stream: straight from the buffer when it is pinned, else through the pinned slots.

    Returns when the copies are done (so the host buffer may be reused or released at once);
    the caller's stream is ordered after them.
    """
    device = check_cuda(device)
    src = torch.from_numpy(host) if isinstance(host, np.ndarray) else host
    src = src.reshape(-1).view(torch.uint8)
    with torch.cuda.device(device):
        out = torch.empty(src.numel(), dtype=torch.uint8, device=device)
        caller = torch.cuda.current_stream(device)
        stream = torch.cuda.Stream(device=device)
        stream.wait_event(caller.record_event())
        if src.is_pinned():
            with torch.cuda.stream(stream):
                for pos in range(0, src.numel(), COPY_PIECE):
                    end = min(pos + COPY_PIECE, src.numel())
                    out[pos:end].copy_(src[pos:end], non_blocking=True)
            stream.synchronize()
        else:
            with _lent(stream, 2) as slots:
                pipe = _Pipe(stream, slots, None)
                try:
                    for pos in range(0, src.numel(), SLOT):
                        end = min(pos + SLOT, src.numel())
                        i, slot = pipe.slot()
                        slot[:end - pos].copy_(src[pos:end])
                        pipe.copy(i, slot[:end - pos], out[pos:end])
                finally:
                    pipe.finish()
        caller.wait_stream(stream)
    return out
