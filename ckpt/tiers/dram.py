"""The DRAM tier: loaded checkpoints kept in host memory, LRU, handed out as zero-copy views.

An entry is the index and the one host buffer a load filled. A hit costs O(number of
tensors), never O(bytes): it hands out a lease (a numpy view of the cached buffer, no copy)
that ckpt.Store wraps in one torch storage and slices the tensors out of. The lease is alive
as long as anything viewing it is (every tensor of that hit), and while an entry has live
leases it is pinned: eviction skips it, so a buffer that tensors still point at is never
dropped and the bytes counted against the capacity are the bytes really held. Leases end by
themselves when their tensors are garbage (weakref.finalize), so callers never have to
release anything.

Tensors of a hit share memory with the cache: writing into them changes what later hits
see (load a private copy with `clone()` when that matters). Entries are keyed by model name
(checked by ckpt.tiers.disk.check_name, as in every tier) or by the key ckpt.Store gives a
checkpoint directory outside the tiers (`check_key`). Thread-safe.
"""

from __future__ import annotations

import errno
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ckpt.errors import NotACheckpointError
from ckpt.format import Index
from ckpt.pool import HostPool
from ckpt.tiers.disk import check_name
from ckpt.tiers.tier import Held, Tier, TierCapabilities, TierReader

__all__ = ["PATH_KEY", "TENSOR_SECONDS", "DramTier", "check_key"]

#: prefix of the key of a checkpoint directory outside the tiers ("path:" + absolute path)
PATH_KEY = "path:"

#: time to slice out one tensor view on a hit (measured: ~4 us per tensor, Python + torch)
TENSOR_SECONDS = 5e-6
#: host-to-device copy bandwidth assumed for estimates when a hit must go to an accelerator
COPY_BANDWIDTH = 20e9


@dataclass
class _Entry:
    index: Index
    index_bytes: bytes
    buf: np.ndarray
    leases: int = 0
    discarded: bool = False  # out of the cache, still counted until its last lease ends

    @property
    def nbytes(self) -> int:
        """Bytes really held: a pool slab may be larger than the checkpoint in it."""
        return held_bytes(self.buf)


class DramTier(Tier):
    """Host-memory cache of loaded checkpoints holding at most `capacity` bytes.

    pool: the HostPool that loads borrow their buffers from (buffers of evicted entries go
    back to it once no tensor views them). For hits that go to a GPU pass a pinned pool
    (`HostPool(capacity)` pins where an accelerator exists): the copy then runs straight
    from the cache at full speed; without one it goes through the pinned staging slots.
    Nothing here touches CUDA until a CUDA load asks for it. copy_bandwidth: bytes/s of the
    copy to a non-CPU device, for estimates.
    """

    def __init__(self, capacity: int, *, name: str = "dram", pool: HostPool | None = None,
                 copy_bandwidth: float = COPY_BANDWIDTH):
        if capacity < 0:
            raise ValueError(f"capacity must not be negative, got {capacity}")
        self.name = name
        # a cache: gone with the process, any unpinned entry may go (the load's origin stays)
        self.capabilities = TierCapabilities(persistent=False, evictable=True,
                                             holds_only_copy=False)
        self.capacity = capacity
        self.pool = pool
        self.copy_bandwidth = copy_bandwidth
        self._lock = threading.RLock()
        self._ended: deque = deque()  # leases whose tensors died, settled under the lock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._used = 0

    # -- queries -------------------------------------------------------------------------

    @property
    def used(self) -> int:
        """Bytes held by cached entries."""
        with self._lock:
            self._settle()
            return self._used

    def names(self) -> list[str]:
        """Cached names, least recently used first."""
        with self._lock:
            self._settle()
            return list(self._entries)

    def holds(self, name: str) -> bool:
        check_key(name)
        with self._lock:
            self._settle()
            return name in self._entries

    def pins(self, name: str) -> int:
        """Live leases of name (0 when not cached): pinned entries are never evicted."""
        check_key(name)
        with self._lock:
            self._settle()
            entry = self._entries.get(name)
            return entry.leases if entry is not None else 0

    def index(self, name: str) -> Index:
        return self._entry(name).index

    def estimate(self, nbytes: int, ntensors: int, device: str = "cpu") -> float:
        """Seconds a hit takes: slicing the views, plus the copy when device is not the CPU."""
        seconds = ntensors * TENSOR_SECONDS
        if str(device).partition(":")[0] != "cpu":
            seconds += nbytes / self.copy_bandwidth
        return seconds

    # -- hits and inserts ----------------------------------------------------------------

    @contextmanager
    def open(self, name: str) -> Iterator[TierReader]:
        """A reader whose read hands out a lease of the cached buffer (no bytes read)."""
        with self._lock:
            entry = self._entry(name)
            self._entries.move_to_end(name)
            lease = self._lease(entry)
        yield _Lease(Held(entry.index, entry.index_bytes, lease))

    def keep(self, name: str, held: Held, *, droppable=None) -> np.ndarray | None:
        """Cache held.buf (filled by a load) as name; a lease of it, or None when it cannot
        fit even after evicting every unpinned entry. An older entry of the name is dropped.

        droppable is not consulted: every entry here is a copy of one its origin still has.
        """
        check_key(name)
        with self._lock:
            self._settle()
            if name in self._entries:
                self.remove(name, force=True)
            if not self._make_room(held_bytes(held.buf)):
                return None
            entry = _Entry(held.index, held.index_bytes, held.buf)
            self._entries[name] = entry
            self._used += entry.nbytes
            return self._lease(entry)

    def put(self, name, src, *, nbytes=0, droppable=None) -> None:
        raise ValueError(f"tier {self.name} is a cache: put checkpoints into a disk or remote "
                         f"tier; loads fill this one")

    def remove(self, name: str, *, force: bool = False) -> bool:
        """Drop name; a pinned entry stays (False) unless force.

        With force a pinned entry leaves the cache now (a newer version replaces it) and its
        bytes stay counted in `used` until its last tensor is garbage: they are still held,
        so the capacity stays honest.
        """
        check_key(name)
        with self._lock:
            self._settle()
            entry = self._entries.get(name)
            if entry is None:
                return True
            if not entry.leases:
                self._drop(name)
                return True
            if not force:
                return False
            del self._entries[name]
            entry.discarded = True
            return True

    def clear(self) -> int:
        """Evict every unpinned entry; the bytes freed."""
        with self._lock:
            self._settle()
            before = self._used
            for name in [n for n, e in self._entries.items() if not e.leases]:
                self._drop(name)
            return before - self._used

    # -- internals -----------------------------------------------------------------------

    def _entry(self, name: str) -> _Entry:
        check_key(name)
        with self._lock:
            self._settle()
            entry = self._entries.get(name)
        if entry is None:
            raise NotACheckpointError(errno.ENOENT, f"{name}: not in the {self.name} tier", name)
        return entry

    def _make_room(self, nbytes: int) -> bool:
        if nbytes > self.capacity:
            return False
        for name in [n for n, e in self._entries.items() if not e.leases]:
            if self._used + nbytes <= self.capacity:
                break
            self._drop(name)
        return self._used + nbytes <= self.capacity

    def _drop(self, name: str) -> None:
        entry = self._entries.pop(name)
        self._used -= entry.nbytes

    def _lease(self, entry: _Entry) -> np.ndarray:
        lease = entry.buf[:]  # a new array object over the same memory: no copy
        entry.leases += 1
        weakref.finalize(lease, self._release, entry)
        return lease

    def _release(self, entry: _Entry) -> None:
        """Finalizer of a lease: never waits for the lock (a collection may run while another
        thread holds it, or inside the pool's lock); ended leases are settled under it."""
        self._ended.append(entry)
        if self._lock.acquire(blocking=False):
            try:
                self._settle()
            finally:
                self._lock.release()

    def _settle(self) -> None:
        """Count ended leases (lock held)."""
        while self._ended:
            entry = self._ended.popleft()
            entry.leases -= 1
            if entry.discarded and not entry.leases:
                self._used -= entry.nbytes


def check_key(key: str) -> str:
    """key if the DRAM tier may cache under it: a model name (check_name), or PATH_KEY and an
    absolute path; ModelNameError if neither."""
    if isinstance(key, str) and key.startswith(PATH_KEY + "/") and "\0" not in key:
        return key
    return check_name(key)


def held_bytes(buf: np.ndarray) -> int:
    """The size of the memory behind buf (its root buffer), at least buf.nbytes."""
    root = buf
    while isinstance(root, np.ndarray) and root.base is not None:
        root = root.base
    try:
        size = memoryview(root).nbytes
    except TypeError:
        size = 0
    return max(int(buf.nbytes), size)


class _Lease(TierReader):
    def __init__(self, held: Held):
        self.held = held

    def read(self, **_) -> Held:
        return self.held
