"""ckpt.Store: checkpoints by name over a hierarchy of tiers, fastest first.

    store = ckpt.Store([ckpt.DramTier(16 << 30, pool=ckpt.HostPool(16 << 30)),
                        ckpt.DiskTier("/nvme/ckpt", 500 << 30),
                        ckpt.RemoteTier("http://models.internal/ckpt")])
    got = store.load("llama-1b")        # got.tensors, got.tier ("dram", "local", "remote")
    store.estimate_load_time("llama-1b") # {"dram": 0.001, "local": 0.5, "remote": 1.8}

A load takes the model from the fastest tier that holds it and promotes it into every faster
tier with room: a remote miss streams the packed object once, loading it into memory and
writing it into the fastest disk tier at the same time (published only when every chunk
arrived and passed its CRC), then caches it in DRAM. Disk tiers are caches too: a checkpoint
is evicted from one only when a slower tier (disk or remote) also holds it, so `put` never
loses the only copy. Models are named ("llama-1b", "org/model"; every verb checks a name with
ckpt.disk.check_name and raises ModelNameError, a ValueError, for a bad one); an absolute or
./ path to a checkpoint directory, or a URL of a packed checkpoint, works as well. A disk tier
is charged what a checkpoint occupies there (ckpt.disk.checkpoint_bytes): `put` reserves the
size of the index it will write before writing, and charges what was written.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ckpt.cuda import check_cuda, host_to_cuda
from ckpt.disk import DiskTier, check_name, checkpoint_bytes, disk_bytes
from ckpt.dram import PATH_KEY, DramTier
from ckpt.errors import CheckpointError, NotACheckpointError, SchemaError
from ckpt.format import (
    BLOCK,
    DEFAULT_ALIGNMENT,
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    INDEX_FILE,
    MAX_INDEX_BYTES,
    Index,
    Partition,
    TensorEntry,
    align_up,
    partition_file_name,
)
from ckpt.loader import as_tensor, read_host, read_packed
from ckpt.reader import LoadStats
from ckpt.remote import RemoteTier, open_url
from ckpt.safeopen import read_regular
from ckpt.source import open_source, resolve_dir
from ckpt.tensors import dtype_name, plan, save, views
from ckpt.unpack import copy_buffer, copy_dir
from ckpt.writer import DEFAULT_PARTITION_SIZE

__all__ = ["URL_PREFIX", "Loaded", "Store"]

#: names of disk copies of models loaded by URL (the URL is their origin: always evictable)
URL_PREFIX = "url-"


@dataclass
class Loaded:
    """What `Store.load` returns: the tensors and where they came from."""

    tensors: dict[str, torch.Tensor]
    tier: str  # name of the tier that served the bytes ("path" for a plain directory)
    key: str  # the name the tiers know the model by
    nbytes: int  # bytes of the checkpoint's data
    seconds: float
    stats: LoadStats = field(default_factory=LoadStats)  # bytes_read == 0 on a DRAM hit
    promoted: list[str] = field(default_factory=list)  # tiers it was copied into


@dataclass(frozen=True)
class _Target:
    key: str
    path: str | None = None  # a checkpoint directory outside the tiers
    url: str | None = None  # a packed checkpoint outside the tiers


class Store:
    """Tiers fastest first: at most one DramTier (first), DiskTiers, then RemoteTiers.

    verify: check CRCs of disk and path loads (default on); remote bytes are always checked
    unless verify is False.
    """

    def __init__(self, tiers: Sequence, *, verify: bool | None = None):
        self.tiers = list(tiers)
        kinds = [t.kind for t in self.tiers]
        if kinds != sorted(kinds, key=["dram", "disk", "remote"].index) or kinds.count(
                "dram") > 1:
            raise ValueError(f"tiers must be: at most one dram, then disks, then remotes; got "
                             f"{kinds}")
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        self.dram: DramTier | None = self.tiers[0] if kinds[:1] == ["dram"] else None
        self.disks: list[DiskTier] = [t for t in self.tiers if t.kind == "disk"]
        self.remotes: list[RemoteTier] = [t for t in self.tiers if t.kind == "remote"]
        self.verify = verify
        self._lock = threading.Lock()
        self._flights: dict[str, threading.Lock] = {}

    # -- loading -------------------------------------------------------------------------

    def load(self, model: str | os.PathLike, device: str | torch.device = "cpu", *,
             progress: Callable[[int, int], None] | None = None) -> Loaded:
        """The model's tensors from the fastest tier holding it; promoted into faster tiers.

        NotACheckpointError when no tier holds it. Tensors of a DRAM hit are zero-copy views
        of the cached buffer (a hit reads no bytes and costs O(number of tensors)).
        """
        start = time.perf_counter()
        device = check_cuda(device)  # before anything is read or cached
        target = _target(model)
        hit = self._hit(target.key, device, start)
        if hit is not None:
            return hit
        with self._flight(target.key):
            hit = self._hit(target.key, device, start)  # another thread may have loaded it
            if hit is not None:
                return hit
            stats = LoadStats()
            index, buf, tier, promoted = self._miss(target, stats, progress)
            tensors = None
            if self.dram is not None:
                tensors = self.dram.insert(target.key, index, buf, device)
                if tensors is not None:
                    promoted.append(self.dram.name)
            if tensors is None:
                flat = host_to_cuda(buf, device) if device.type != "cpu" else as_tensor(buf)
                tensors = views(index, flat)
        return Loaded(tensors, tier, target.key, index.total_bytes,
                      time.perf_counter() - start, stats, promoted)

    def _hit(self, key: str, device, start: float) -> Loaded | None:
        if self.dram is None:
            return None
        tensors = self.dram.lookup(key, device)
        if tensors is None:
            return None
        index = self.dram.index(key)
        nbytes = index.total_bytes if index is not None else 0
        return Loaded(tensors, self.dram.name, key, nbytes, time.perf_counter() - start)

    def _miss(self, target: _Target, stats: LoadStats, progress):
        pool = self.dram.pool if self.dram is not None else None
        verify = self.verify
        if target.path is not None:
            with open_source(target.path) as source:
                buf = read_host(source, verify=verify, progress=progress, pool=pool,
                                stats=stats)
            return source.index, buf, "path", []
        for i, disk in enumerate(self.disks):
            if not disk.holds(target.key):
                continue
            try:
                with disk.open(target.key) as source:
                    buf = read_host(source, verify=verify, progress=progress, pool=pool,
                                    stats=stats, profile=disk.profile)
                    index_bytes = _index_file(source.name)
            except NotACheckpointError:
                continue  # removed behind our back: try the slower tiers
            promoted = self._promote(target.key, source.index, index_bytes, buf, self.disks[:i])
            return source.index, buf, disk.name, promoted
        for remote, opener in self._remote_openers(target):
            try:
                with opener() as stream:
                    return self._download(target.key, stream, remote, stats, progress, pool)
            except NotACheckpointError:
                continue
        raise NotACheckpointError(2, f"{target.path or target.url or target.key}: in none of "
                                  f"the tiers {[t.name for t in self.tiers]}", target.key)

    def _download(self, key, stream, remote_name, stats, progress, pool):
        """Stream a packed checkpoint into memory and, at the same time, into the first disk."""
        sink = self.disks[0].sink(key, self._droppable(0)) if self.disks else None
        try:
            index, buf = read_packed(stream, verify=self.verify is not False, progress=progress,
                                     pool=pool, stats=stats, sink=sink)
            promoted = [sink.commit()] if sink is not None and sink.active else []
        except BaseException:
            if sink is not None:
                sink.abort()
            raise
        return index, buf, remote_name, [p for p in promoted if p]

    def _remote_openers(self, target: _Target):
        if target.url is not None:
            yield "url", lambda: open_url(target.url)
            return
        for remote in self.remotes:
            yield remote.name, lambda r=remote: r.open(target.key)

    def _promote(self, key, index, index_bytes, buf, faster: list[DiskTier]) -> list[str]:
        done = []
        nbytes = checkpoint_bytes(len(index_bytes), index)  # exactly what the copy writes
        for disk in faster:
            i = self.disks.index(disk)
            if not disk.reserve(nbytes, self._droppable(i)):
                continue
            try:
                copy_buffer(index, index_bytes, buf, disk.path(key))
            except CheckpointError:
                disk.unreserve(nbytes)
                continue  # a failed promotion costs speed later, not this load
            disk.added(key, nbytes, reserved=nbytes)
            done.append(disk.name)
        return done

    # -- storing -------------------------------------------------------------------------

    def put(self, name: str, src, *, tier: str | None = None) -> str:
        """Store src (a checkpoint directory or a state dict) as name; the tier written.

        tier: a disk or remote tier's name (default: the fastest disk tier). A DRAM entry of
        the same name is discarded, so later loads see the new version. Raises
        CheckpointError when the disk tier has no room even after evicting what slower tiers
        also hold, ModelNameError for a bad name (names starting with URL_PREFIX are the
        store's own, for models loaded by URL).
        """
        check_name(name, reserved=(URL_PREFIX,))
        dest = self._tier(tier) if tier else (self.disks[0] if self.disks else None)
        if dest is None or dest.kind == "dram":
            raise ValueError("put needs a disk or remote tier")
        with self._flight(name):  # no load of name runs while its versions change
            if dest.kind == "remote":
                if isinstance(src, Mapping):
                    raise ValueError("put a state dict into a disk tier first, then upload its "
                                     "directory to a remote tier")
                dest.put(name, resolve_dir(src))
            else:
                self._put_disk(dest, name, src)
            # a copy with another index is an older version: no later load may serve it
            new_index = _index_file(resolve_dir(src) if dest.kind == "remote"
                                    else dest.path(name))
            if self.dram is not None:
                self.dram.discard(name)
            for disk in self.disks:
                if (disk is not dest and disk.holds(name)
                        and _index_file(disk.path(name)) != new_index):
                    disk.remove(name)
        return dest.name

    def _put_disk(self, dest, name: str, src) -> None:
        droppable = self._droppable(self.disks.index(dest))
        want = _planned_bytes(src) if isinstance(src, Mapping) else disk_bytes(resolve_dir(src))
        if not dest.reserve(want, droppable):
            raise _no_room(name, want, dest)
        try:
            if isinstance(src, Mapping):
                save(src, dest.path(name))
            else:
                copy_dir(src, dest.path(name))
            got = disk_bytes(dest.path(name))
            if got > want:  # the plan fell short: charge what was written, or take it back
                if not dest.reserve(got - want, droppable):
                    dest.remove(name)
                    raise _no_room(name, got, dest)
                want = got
        except BaseException:
            dest.unreserve(want)
            raise
        dest.added(name, got, reserved=want)

    def evict(self, model: str, tier: str | None = None) -> None:
        """Drop the model from the DRAM tier (unless pinned) or from the named tier."""
        found = _target(model)
        key = found.key
        target = self._tier(tier) if tier else self.dram
        if target is None or (found.path is not None and target.kind != "dram"):
            return  # only the DRAM tier caches checkpoints outside the tiers
        if target.kind == "dram":
            target.evict(key)
        elif target.kind == "disk":
            target.remove(key)
        else:
            raise ValueError("the store does not delete from remote tiers")

    # -- for the scheduler ---------------------------------------------------------------

    def locate(self, model: str | os.PathLike) -> list[str]:
        """Names of the tiers that hold the model, fastest first."""
        return [t.name for t in self._holders(_target(model))]

    def estimate_load_time(self, model: str | os.PathLike, device: str = "cpu", *,
                           nbytes: int | None = None, ntensors: int | None = None
                           ) -> dict[str, float]:
        """Estimated seconds to load the model from each tier (fastest tiers first).

        Sizes come from the first tier holding the model (or nbytes/ntensors when none
        does). A scheduler takes the minimum over `locate(model)`.
        """
        if nbytes is None:
            index = self._index(_target(model))
            nbytes, ntensors = index.total_bytes, len(index.tensors) + len(index.aliases)
        ntensors = ntensors if ntensors is not None else max(1, nbytes >> 23)
        return {t.name: t.estimate(nbytes, ntensors, device) for t in self.tiers}

    def _index(self, target: _Target):
        if target.path is not None:
            with open_source(target.path) as source:
                return source.index
        holder = next(self._holders(target), None)
        if holder is not None:
            return holder.index(target.key)
        raise NotACheckpointError(2, f"{target.key}: in none of the tiers", target.key)

    # -- internals -----------------------------------------------------------------------

    def _holders(self, target: _Target) -> Iterator:
        """The tiers holding target, fastest first (a path's checkpoint only in DRAM)."""
        tiers = self.tiers
        if target.path is not None:
            tiers = [self.dram] if self.dram is not None else []
        return (t for t in tiers if t.holds(target.key))

    def _tier(self, name: str):
        for t in self.tiers:
            if t.name == name:
                return t
        raise ValueError(f"no tier named {name!r}; tiers: {[t.name for t in self.tiers]}")

    def _droppable(self, i: int) -> Callable[[str], bool]:
        """Whether disk tier i may evict a key: a slower tier holds it, or its URL does, and
        no load or put of that key is under way (its copy may be being published now)."""
        slower = self.disks[i + 1:] + self.remotes
        return lambda key: (not self._busy(key)
                            and (key.startswith(URL_PREFIX) or any(t.holds(key) for t in slower)))

    def _busy(self, key: str) -> bool:
        with self._lock:
            lock = self._flights.get(key)
        return lock is not None and lock.locked()

    @contextmanager
    def _flight(self, key: str):
        with self._lock:
            lock = self._flights.setdefault(key, threading.Lock())
        with lock:
            yield


def _target(model) -> _Target:
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str):
        raise TypeError(f"a model is a name, a path or a URL, got {type(model).__name__}")
    if "://" in model:
        digest = hashlib.sha256(model.encode()).hexdigest()[:20]
        return _Target(f"{URL_PREFIX}{digest}", url=model)
    if os.path.isabs(model) or model.startswith(("./", "../")):
        path = os.path.abspath(model)
        # the index file's identity is in the key: a save replaces the directory, so a cached
        # copy of the old version is never served for the new one
        try:
            st = os.stat(os.path.join(path, INDEX_FILE))
            version = f"@{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}"
        except OSError:
            version = ""
        return _Target(f"{PATH_KEY}{path}{version}", path=path)
    return _Target(check_name(model))


def _index_file(directory: str) -> bytes:
    """The bytes of a checkpoint directory's index file (bounded, never through a link)."""
    return read_regular(os.path.join(directory, INDEX_FILE), HEADER_SIZE + MAX_INDEX_BYTES,
                        missing=NotACheckpointError)


def _no_room(name: str, nbytes: int, disk: DiskTier) -> CheckpointError:
    return CheckpointError(f"{name}: {nbytes} bytes do not fit in tier {disk.name} "
                           f"({disk.used} of {disk.capacity} used by checkpoints no slower "
                           f"tier holds)")


def _planned_bytes(state: Mapping) -> int:
    """checkpoint_bytes of `save(state)` in a disk tier, from the index it will write.

    The layout is the writer's (ckpt/writer.py, default options): each tensor at the next
    multiple of the alignment, a new partition when one would pass DEFAULT_PARTITION_SIZE,
    partitions padded to BLOCK. CRCs are taken at their widest, so the encoded index is never
    shorter than the one written. A bad state dict raises what save would, before any write.
    """
    stored, aliases = plan(state)
    tensors, sizes, pos = [], [], None  # pos: end of the partition being filled, if any
    for name in stored:
        t = state[name]
        if not isinstance(t, torch.Tensor):
            raise SchemaError(f"{name!r} is a {type(t).__name__}, not a tensor")
        nbytes = t.numel() * t.element_size()
        if pos and align_up(pos, DEFAULT_ALIGNMENT) + nbytes > DEFAULT_PARTITION_SIZE:
            sizes.append(align_up(pos, BLOCK))
            pos = None
        offset = align_up(pos or 0, DEFAULT_ALIGNMENT)
        tensors.append(TensorEntry(name, dtype_name(t.dtype), tuple(t.shape), len(sizes),
                                   offset, nbytes))
        pos = offset + nbytes
    if pos is not None:
        sizes.append(align_up(pos, BLOCK))
    parts = tuple(Partition(partition_file_name(i), size,
                            (0xFFFFFFFF,) * -(-size // DEFAULT_CHUNK_SIZE))
                  for i, size in enumerate(sizes))
    index = Index(DEFAULT_ALIGNMENT, DEFAULT_CHUNK_SIZE, parts, tuple(tensors), dict(aliases))
    return checkpoint_bytes(len(index.encode()), index)
