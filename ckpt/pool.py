"""A long-lived pool of aligned, pre-faulted host buffers that loads borrow and give back.

Buffers are anonymous mmaps (page aligned, so O_DIRECT reads land in them directly), rounded
up to 2 MiB and advised onto transparent huge pages. They are made on demand, never up front
(`reserve` warms one ahead of a load when the caller wants), faulted in once with
MAP_POPULATE, and pinned for DMA (cudaHostRegister) only when `pin` says so, which by
default means an accelerator is present. The pool never holds more than `capacity` bytes: a
request that does not fit after dropping idle buffers gets a plain, unpooled buffer instead.

A borrowed buffer is a numpy uint8 array; it goes back to the pool by itself when the array
(and so every tensor viewing it) is garbage. Thread-safe.
"""

from __future__ import annotations

import mmap
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["SLAB", "HostPool", "PoolStats", "accelerator_present", "allocate",
           "huge_pages_pay"]

SLAB = 2 << 20  # size granule: one transparent huge page


@dataclass
class PoolStats:
    allocated: int = 0  # bytes held by the pool, in use or idle
    in_use: int = 0  # bytes lent out right now
    hits: int = 0  # requests served by an idle buffer
    misses: int = 0  # requests that made a new buffer
    overflows: int = 0  # requests served outside the pool (would exceed capacity)
    pin_refused: int = 0  # buffers CUDA would not page-lock (left pageable)


class _Slab:
    def __init__(self, size: int, populate: bool):
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
        if populate and hasattr(mmap, "MAP_POPULATE"):
            flags |= mmap.MAP_POPULATE
        self.mem = mmap.mmap(-1, size, flags=flags)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            self.mem.madvise(mmap.MADV_HUGEPAGE)
        self.size = size
        self.pinned = False


class HostPool:
    """Reusable host buffers for loads. capacity: the most bytes the pool may hold."""

    def __init__(self, capacity: int, *, pin: bool | None = None, populate: bool = True):
        if capacity < 0:
            raise ValueError(f"capacity must not be negative, got {capacity}")
        self.capacity = capacity
        self.pin = _accelerator_present() if pin is None else pin
        self._populate = populate
        self._lock = threading.Lock()
        # slabs whose arrays died: finalizers only append here (never wait for the lock, which
        # a garbage collection inside a locked section would deadlock on); drained under it
        self._returned: deque[_Slab] = deque()
        self._idle: list[_Slab] = []
        self._stats = PoolStats()
        self._closed = False

    @property
    def stats(self) -> PoolStats:
        with self._lock:
            self._drain()
            return PoolStats(**vars(self._stats))

    def acquire(self, nbytes: int) -> np.ndarray:
        """A writable, page-aligned uint8 array of nbytes; back to the pool when garbage."""
        if nbytes < 0:
            raise ValueError(f"nbytes must not be negative, got {nbytes}")
        size = max(SLAB, -(-nbytes // SLAB) * SLAB)
        with self._lock:
            self._drain()
            slab = self._take_idle(nbytes)
            if slab is None:
                if self._closed or not self._make_room(size):
                    self._stats.overflows += 1
                    return allocate(nbytes)
                self._stats.misses += 1
                self._stats.allocated += size
                self._stats.in_use += size
        if slab is None:
            try:
                slab = self._new_slab(size)
            except BaseException:
                with self._lock:
                    self._stats.allocated -= size
                    self._stats.in_use -= size
                raise
        array = np.frombuffer(slab.mem, dtype=np.uint8, count=nbytes)
        weakref.finalize(array, self._release, slab)
        return array

    def reserve(self, nbytes: int) -> None:
        """Make (and fault in) an idle buffer of at least nbytes now, ahead of a load."""
        self.acquire(nbytes)  # dropped at once: the buffer goes straight back, idle

    def trim(self) -> int:
        """Unmap every idle buffer; the bytes given back to the OS."""
        with self._lock:
            self._drain()
            idle, self._idle = self._idle, []
            freed = sum(s.size for s in idle)
            self._stats.allocated -= freed
        for slab in idle:
            _free(slab)
        return freed

    def close(self) -> None:
        """Give idle memory back; buffers still lent are freed when their arrays die."""
        with self._lock:
            self._closed = True
        self.trim()

    # -- internals (called with the lock held unless said otherwise) ---------------------

    def _take_idle(self, nbytes: int) -> _Slab | None:
        fits = [s for s in self._idle if s.size >= nbytes and s.size <= 2 * max(nbytes, SLAB)]
        if not fits:
            return None
        slab = min(fits, key=lambda s: s.size)
        self._idle.remove(slab)
        self._stats.hits += 1
        self._stats.in_use += slab.size
        return slab

    def _make_room(self, size: int) -> bool:
        if size > self.capacity:
            return False
        self._idle.sort(key=lambda s: s.size)
        while self._idle and self._stats.allocated + size > self.capacity:
            slab = self._idle.pop()
            self._stats.allocated -= slab.size
            _free(slab)
        return self._stats.allocated + size <= self.capacity

    def _new_slab(self, size: int) -> _Slab:  # without the lock: faulting takes a while
        slab = _Slab(size, self._populate)
        if self.pin:
            slab.pinned = _pin(slab)
            if not slab.pinned:
                with self._lock:
                    self._stats.pin_refused += 1
        return slab

    def _release(self, slab: _Slab) -> None:
        """Finalizer of a lent array: hand the slab back without ever blocking on the lock."""
        self._returned.append(slab)
        if self._lock.acquire(blocking=False):
            try:
                self._drain()
            finally:
                self._lock.release()

    def _drain(self) -> None:
        """Take back the slabs of dead arrays (lock held)."""
        while self._returned:
            slab = self._returned.popleft()
            self._stats.in_use -= slab.size
            if self._closed:
                self._stats.allocated -= slab.size
                _free(slab)
            else:
                self._idle.append(slab)


def allocate(nbytes: int) -> np.ndarray:
    """A fresh page-aligned uint8 array of nbytes outside any pool (freed when garbage).

    Advised onto transparent huge pages only where a measurement in this process showed
    that they fault in faster (huge_pages_pay): on some VMs their faults stall on compaction.
    """
    mem = mmap.mmap(-1, max(nbytes, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if nbytes >= _PROBE_BYTES and huge_pages_pay():
        mem.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(mem, dtype=np.uint8, count=nbytes)


_PROBE_BYTES = 16 << 20  # per page size; buffers smaller than this never ask for huge pages
_huge_pages_pay: list[bool] = []  # the measurement, once per process (a machine property)


def huge_pages_pay() -> bool:
    """Whether fresh memory faults in at least 1.5x faster on transparent huge pages.

    Measured once per process by faulting _PROBE_BYTES each way (best of 2): the answer
    depends on the kernel's THP settings, fragmentation and the hypervisor, so it is not
    assumed.
    """
    if not _huge_pages_pay:
        if not hasattr(mmap, "MADV_HUGEPAGE"):
            _huge_pages_pay.append(False)
        else:
            plain = min(_fault_seconds(False) for _ in range(2))
            huge = min(_fault_seconds(True) for _ in range(2))
            _huge_pages_pay.append(huge * 1.5 < plain)
    return _huge_pages_pay[0]


def _fault_seconds(huge: bool) -> float:
    mem = mmap.mmap(-1, _PROBE_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        if huge:
            mem.madvise(mmap.MADV_HUGEPAGE)
        page = mmap.PAGESIZE
        start = time.perf_counter()
        for off in range(0, _PROBE_BYTES, page):
            mem[off] = 1
        return time.perf_counter() - start
    finally:
        mem.close()


def _free(slab: _Slab) -> None:
    if slab.pinned:
        _unpin(slab)
        slab.pinned = False
    try:
        slab.mem.close()
    except BufferError:
        pass  # a dying array still exports it: the mapping goes when that export does


def accelerator_present() -> bool:
    """Whether torch sees a CUDA device (torch need not be imported before)."""
    return _accelerator_present()


def _accelerator_present() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _pin(slab: _Slab) -> bool:
    """Page-lock the slab for DMA; False (left pageable, and counted) when CUDA refuses.

    A refused registration leaves CUDA's last error set for this thread, and the next kernel
    launch would report it as its own failure: it is cleared here.
    """
    import torch

    # cudaHostRegisterPortable: pinned for every device, not just the current one
    ok = int(torch.cuda.cudart().cudaHostRegister(_address(slab), slab.size, 1)) == 0
    if not ok:
        _clear_cuda_error()
    return ok


def _unpin(slab: _Slab) -> None:
    import torch

    if int(torch.cuda.cudart().cudaHostUnregister(_address(slab))) != 0:
        _clear_cuda_error()


def _clear_cuda_error() -> None:
    """cudaGetLastError() of the libcudart this process has loaded: reads and resets the
    calling thread's last error (torch's cudart binding does not offer it)."""
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "libcudart" in line}
    except OSError:
        paths = set()
    for path in sorted(paths):
        try:
            ctypes.CDLL(path).cudaGetLastError()  # already loaded: the same handle
            return
        except (OSError, AttributeError):
            continue
    # no dynamic libcudart (static or ROCm builds): nothing to clear it with; the refusal is
    # still counted (PoolStats.pin_refused) and the buffer stays pageable


def _address(slab: _Slab) -> int:
    """The slab's first byte, for CUDA's registration calls (which take addresses)."""
    return int(np.frombuffer(slab.mem, dtype=np.uint8).ctypes.data)
