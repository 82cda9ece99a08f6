"""ckpt.Store: checkpoints by name over a hierarchy of tiers, fastest first.

    store = ckpt.Store([ckpt.DramTier(16 << 30, pool=ckpt.HostPool(16 << 30)),
                        ckpt.DiskTier("/nvme/ckpt", 500 << 30),
                        ckpt.RemoteTier("http://models.internal/ckpt")])
    got = store.load("llama-1b")        # got.tensors, got.tier ("dram", "local", "remote"),
                                        # got.index (its metadata too)
    store.estimate_load_time("llama-1b") # {"dram": 0.001, "local": 0.5, "remote": 1.8}

The Store sees its tiers only through the contract of ckpt/tiers/tier.py (it branches on
capabilities, never on a kind). A load takes the model from the fastest tier that holds it
and promotes it into every faster tier with room: a remote miss streams the packed object
once, loading it into memory and writing it into the fastest disk tier at the same time
(published only when every chunk arrived and passed its CRC), then caches it in DRAM. Disk
tiers are caches too: a checkpoint is evicted from one only when a slower tier (disk or
remote) also holds it, so `put` never loses the only copy. Models are named ("llama-1b",
"org/model"; every verb checks a name with ckpt.tiers.disk.check_name and raises ModelNameError, a
ValueError, for a bad one); an absolute or ./ path to a checkpoint directory, or a URL of a
packed checkpoint, works as well. A disk tier is charged what a checkpoint occupies there
(ckpt.tiers.disk.checkpoint_bytes): `put` reserves the size of the index it will write before
writing, and charges what was written.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

import torch

from ckpt.errors import NotACheckpointError, SchemaError
from ckpt.format import (
    BLOCK,
    DEFAULT_ALIGNMENT,
    DEFAULT_CHUNK_SIZE,
    INDEX_FILE,
    Index,
    Partition,
    TensorEntry,
    align_up,
    partition_file_name,
)
from ckpt.reader import LoadStats
from ckpt.source import open_source, resolve_dir
from ckpt.tiers.disk import DirectoryReader, check_name, checkpoint_bytes, disk_bytes
from ckpt.tiers.dram import PATH_KEY
from ckpt.tiers.remote import open_packed
from ckpt.tiers.tier import Droppable, Tier, TierReader
from ckpt.torch.cuda import check_cuda, host_to_cuda
from ckpt.torch.loader import as_tensor
from ckpt.torch.tensors import dtype_name, plan, save, views
from ckpt.writer import DEFAULT_PARTITION_SIZE

__all__ = ["URL_PREFIX", "Loaded", "Store"]

#: names of disk copies of models loaded by URL (the URL is their origin: always evictable)
URL_PREFIX = "url-"


@dataclass
class Loaded:
    """What `Store.load` returns: the tensors and where they came from."""

    tensors: dict[str, torch.Tensor]
    tier: str  # name of the tier that served the bytes ("path" / "url" outside the tiers)
    key: str  # the name the tiers know the model by
    nbytes: int  # bytes of the checkpoint's data
    seconds: float
    stats: LoadStats = field(default_factory=LoadStats)  # bytes_read == 0 on a DRAM hit
    promoted: list[str] = field(default_factory=list)  # tiers it was copied into
    index: Index | None = None  # the checkpoint's index (metadata, tensor entries)


@dataclass(frozen=True)
class _Target:
    key: str
    path: str | None = None  # a checkpoint directory outside the tiers
    url: str | None = None  # a packed checkpoint outside the tiers


class Store:
    """Tiers fastest first: caches (not persistent, e.g. DramTier), then persistent tiers the
    store may evict from (DiskTier), then origins (RemoteTier). Any ckpt.tiers.tier.Tier works.

    verify: check CRCs of disk and path loads (default on); remote bytes are always checked
    unless verify is False.
    """

    def __init__(self, tiers: Sequence[Tier], *, verify: bool | None = None):
        self.tiers = list(tiers)
        for t in self.tiers:
            if not isinstance(t, Tier):
                raise TypeError(f"a tier is a ckpt.tiers.tier.Tier, got {type(t).__name__}")
        ranks = [_rank(t) for t in self.tiers]
        if ranks != sorted(ranks):
            raise ValueError(f"tiers go fastest first: caches, then persistent tiers the store "
                             f"may evict from, then origins; got {[t.name for t in self.tiers]}")
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        self.pool = next((t.pool for t in self.tiers if t.pool is not None), None)
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
        first = self.tiers[0] if self.tiers else None
        if first is not None and not first.persistent:
            # a cache hit never waits behind another key's load, nor takes the flight lock
            got = self._read(first, target, [], LoadStats(), progress)
            if got is not None:
                return self._loaded(target, got, first.name, device, start)
        with self._flight(target.key):
            stats = LoadStats()
            for i, tier in enumerate(self.tiers):
                faster = [t for t in self.tiers[:i] if _may_hold(t, target)]
                got = self._read(tier, target, faster, stats, progress)
                if got is not None:
                    return self._loaded(target, got, tier.name, device, start, stats)
            outside = self._outside(target)
            if outside is not None:
                name, opener = outside
                faster = [t for t in self.tiers if _may_hold(t, target)]
                got = self._copy(opener(), target.key, faster, stats, progress)
                return self._loaded(target, got, name, device, start, stats)
        raise NotACheckpointError(2, f"{target.path or target.url or target.key}: in none of "
                                  f"the tiers {[t.name for t in self.tiers]}", target.key)

    def _read(self, tier: Tier, target: _Target, faster: list[Tier], stats, progress):
        """(held, buffer to view, promoted) from tier, or None when it does not hold target."""
        if not _may_hold(tier, target):
            return None
        try:  # open says NotACheckpointError when absent: no separate holds() round trip
            return self._copy(tier.open(target.key), target.key, faster, stats, progress)
        except NotACheckpointError:
            return None  # removed behind our back: try the slower tiers

    def _copy(self, opened: AbstractContextManager[TierReader], key: str, faster: list[Tier],
              stats, progress):
        """Read from an opened reader into host memory, streaming into the first faster tier
        that takes streams, then offer the copy to the other faster tiers (slowest first, so
        the fastest one's buffer is the one handed out)."""
        sink_tier, sink = None, None
        for t in faster:
            sink = t.sink(key, droppable=self._droppable(t))
            if sink is not None:
                sink_tier = t
                break
        try:
            with opened as reader:
                held = reader.read(pool=self.pool, verify=self.verify, stats=stats,
                                   progress=progress, sink=sink)
            streamed = sink is not None and sink.commit()
        except BaseException:
            if sink is not None:
                sink.abort()
            raise
        promoted = [sink_tier.name] if streamed else []
        buf = held.buf
        for t in reversed(faster):
            if t is sink_tier and streamed:
                continue
            kept = t.keep(key, held, droppable=self._droppable(t))
            if kept is not None:
                buf = kept
                promoted.append(t.name)
        return held, buf, promoted

    def _loaded(self, target: _Target, got, tier: str, device, start: float,
                stats: LoadStats | None = None) -> Loaded:
        held, buf, promoted = got
        flat = host_to_cuda(buf, device) if device.type != "cpu" else as_tensor(buf)
        tensors = views(held.index, flat)  # the storage keeps a cache lease alive
        return Loaded(tensors, tier, target.key, held.index.total_bytes,
                      time.perf_counter() - start, stats or LoadStats(), promoted, held.index)

    def _outside(self, target: _Target):
        """(source name, opener) of a checkpoint outside the tiers, or None."""
        if target.path is not None:
            return "path", lambda: _open_directory(target.path)
        if target.url is not None:
            return "url", lambda: open_packed(target.url)
        return None

    # -- storing -------------------------------------------------------------------------

    def put(self, name: str, src, *, tier: str | None = None) -> str:
        """Store src (a checkpoint directory or a state dict) as name; the tier written.

        tier: a persistent tier's name (default: the fastest persistent tier the store may
        evict from, a disk). Copies of name with another index in other tiers are older
        versions and are removed, so later loads see the new one. Raises CheckpointError
        when the tier has no room even after evicting what slower tiers also hold,
        ModelNameError for a bad name (names starting with URL_PREFIX are the store's own,
        for models loaded by URL), ValueError for a tier that takes no such src.
        """
        check_name(name, reserved=(URL_PREFIX,))
        dest = (self.tier(tier) if tier
                else next((t for t in self.tiers if t.persistent and t.evictable), None))
        if dest is None or not dest.persistent:
            raise ValueError("put needs a persistent tier (a disk or remote tier)")
        if isinstance(src, Mapping):
            nbytes, write = _planned_bytes(src), (lambda path: save(src, path))
        else:
            write = resolve_dir(src)
            nbytes = disk_bytes(write)
        with self._flight(name):  # no load of name runs while its versions change
            dest.put(name, write, nbytes=nbytes, droppable=self._droppable(dest))
            new_index = dest.index(name)
            for t in self.tiers:
                if t is not dest and t.evictable and t.holds(name) and _stale(t, name, new_index):
                    t.remove(name, force=True)
        return dest.name

    def evict(self, model: str, tier: str | None = None) -> bool:
        """Drop the model from the named tier, or from the caches (unless pinned); whether
        it is gone. ValueError for a tier the store may not evict from (an origin)."""
        found = _target(model)
        targets = ([self.tier(tier)] if tier
                   else [t for t in self.tiers if not t.persistent])
        gone = True
        for t in targets:
            if not t.evictable:
                raise ValueError(f"tier {t.name} is an origin: the store does not delete "
                                 f"from it")
            if _may_hold(t, found):
                gone = t.remove(found.key) and gone
        return gone

    # -- for the scheduler ---------------------------------------------------------------

    def locate(self, model: str | os.PathLike) -> list[str]:
        """Names of the tiers that hold the model, fastest first."""
        return [t.name for t in self._holders(_target(model))]

    def index(self, model: str | os.PathLike) -> Index:
        """The model's index (its metadata, tensors) from the fastest tier holding it,
        without loading its data. NotACheckpointError when none does."""
        return self._index(_target(model))

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

    def _index(self, target: _Target) -> Index:
        for holder in self._holders(target):
            try:
                return holder.index(target.key)
            except NotACheckpointError:
                continue
        if target.path is not None:
            with open_source(target.path) as source:
                return source.index
        raise NotACheckpointError(2, f"{target.key}: in none of the tiers", target.key)

    # -- internals -----------------------------------------------------------------------

    def _holders(self, target: _Target) -> Iterator[Tier]:
        """The tiers holding target, fastest first."""
        return (t for t in self.tiers if _may_hold(t, target) and t.holds(target.key))

    def tier(self, name: str) -> Tier:
        """The tier of that name (ValueError when there is none)."""
        for t in self.tiers:
            if t.name == name:
                return t
        raise ValueError(f"no tier named {name!r}; tiers: {[t.name for t in self.tiers]}")

    def _droppable(self, tier: Tier) -> Droppable:
        """Whether tier may evict a key: no load or put of it is under way (its copy may be
        being published now), and, when tier may hold the only copy, a slower tier holds it
        or its URL does."""
        slower = self.tiers[self.tiers.index(tier) + 1:]
        if not tier.holds_only_copy:
            return lambda key: not self._busy(key)
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


def _rank(tier: Tier) -> int:
    """Where a tier may stand: caches, then evictable persistent tiers, then origins."""
    if not tier.persistent:
        return 0
    return 1 if tier.evictable else 2


def _may_hold(tier: Tier, target: _Target) -> bool:
    """A checkpoint directory outside the tiers is cached only where copies die with the
    process (a persistent copy of a local path is no faster than the path); a URL's copies
    go into any tier the store may evict from."""
    if target.path is not None:
        return not tier.persistent
    if target.url is not None:
        return tier.evictable
    return True


def _stale(tier: Tier, name: str, index: Index) -> bool:
    try:
        return tier.index(name) != index
    except NotACheckpointError:
        return False


@contextmanager
def _open_directory(path: str):
    with open_source(path) as source:
        yield DirectoryReader(source)


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
