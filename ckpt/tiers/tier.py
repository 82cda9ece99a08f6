"""The tier contract: one place where ckpt.Store keeps checkpoints (the whole contract, one file).

A tier holds checkpoints by key (a model name checked by ckpt.tiers.disk.check_name, or a key the
Store makes for a checkpoint outside the tiers). ckpt.Store sees tiers only through this
class: it never asks what kind a tier is, it reads the capabilities below. Adding a tier
(pmem, a peer server's DRAM, GPU memory) = one subclass + one TierConformance class
(ckpt/tier_conformance.py).

    with tier.open(key) as reader:          # never evicted while open
        held = reader.read(pool=pool, verify=None, stats=stats)
    faster.keep(key, held, droppable=...)   # promotion: a copy already in host memory
    tier.put(key, "/path/to/ckpt", droppable=...)  # a checkpoint directory, stored
    tier.remove(key)

Buffers are numpy uint8 arrays in the layout of their index (ckpt/host.py: read_host); the
Store turns them into tensors, so no tier needs torch. Every method taking a key raises
ModelNameError (a ValueError) for a key the tier cannot hold. Tiers are thread-safe.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np

from ckpt.format import Index
from ckpt.reader import LoadStats

__all__ = ["Droppable", "Held", "Sink", "Tier", "TierCapabilities", "TierReader"]

#: whether a tier may drop the copy of a key to make room (the Store says: no load of it is
#: under way, and a slower tier holds it whenever this tier might hold the only copy)
Droppable = Callable[[str], bool]


@dataclass(frozen=True)
class TierCapabilities:
    """What a Store may rely on; fixed when the tier is made.

    persistent: copies outlive the process (disk, remote); Store.put writes only to these,
        and a checkpoint outside the tiers (a path) is cached only in the others.
    evictable: the Store may remove copies (to make room, or an older version on put);
        false for an origin such as a registry.
    holds_only_copy: the tier may hold a model no slower tier holds, so it drops a copy only
        when the Store's Droppable says a slower tier has it; false for pure caches (DRAM).
    """

    persistent: bool
    evictable: bool
    holds_only_copy: bool


@dataclass
class Held:
    """A whole checkpoint in host memory: what a read gives and a promotion offers."""

    index: Index
    index_bytes: bytes  # the index file exactly (header + encoded index), for byte copies
    buf: np.ndarray  # every partition back to back, in the index's layout
    bytes_read: int = 0  # 0 when the tier handed out memory it already held


class Sink(ABC):
    """A copy being written while a packed stream arrives (ckpt.host.read_packed's sink)."""

    @abstractmethod
    def begin(self, index_bytes: bytes, index: Index) -> None:
        """The index is known; make room (or stay inactive when there is none)."""

    @abstractmethod
    def chunk(self, partition: int, offset: int, view) -> None:
        """A chunk that passed its CRC; view stays valid and unchanged."""

    @abstractmethod
    def commit(self) -> bool:
        """Publish the copy; whether there is one (an inactive or failed sink has none)."""

    @abstractmethod
    def abort(self) -> None:
        """Drop whatever was written; safe to call twice and after commit failed."""


class TierReader(ABC):
    """An open checkpoint of a tier (from Tier.open): its index and one read of its data."""

    index: Index

    @abstractmethod
    def read(self, *, pool=None, verify: bool | None = None, stats: LoadStats | None = None,
             progress: Callable[[int, int], None] | None = None,
             sink: Sink | None = None) -> Held:
        """The whole checkpoint in host memory.

        pool: the HostPool to borrow the buffer from (a tier serving its own memory ignores
        it). verify: check CRCs (None: the tier's default). sink: a faster tier's copy to
        feed while reading; a tier that cannot stream ignores it (the Store then offers the
        result with keep). Raises CheckpointError subclasses (ChecksumError,
        CheckpointIOError, ...); the tier is unchanged by a failed read.
        """


class Tier(ABC):
    """One level of the hierarchy. Subclasses set `name`, `capabilities` and `pool` in
    their constructor and implement the abstract methods below.

    pool: the HostPool that loads ending in this tier borrow their buffers from (None: plain
    allocations); the Store uses the first tier's that has one.
    """

    name: str
    capabilities: TierCapabilities
    pool = None

    @property
    def persistent(self) -> bool:
        return self.capabilities.persistent

    @property
    def evictable(self) -> bool:
        return self.capabilities.evictable

    @property
    def holds_only_copy(self) -> bool:
        return self.capabilities.holds_only_copy

    # -- queries -------------------------------------------------------------------------

    @abstractmethod
    def holds(self, key: str) -> bool:
        """Whether key is here now (an unreachable remote holds nothing)."""

    @abstractmethod
    def index(self, key: str) -> Index:
        """key's index, without reading its data. NotACheckpointError when absent."""

    @abstractmethod
    def names(self) -> list[str]:
        """Keys held, least recently used first where the tier keeps an order."""

    @abstractmethod
    def estimate(self, nbytes: int, ntensors: int, device: str = "cpu") -> float:
        """Seconds a load of a checkpoint of that size takes from here (a model, not a
        measurement; the scheduler compares tiers with it)."""

    # -- reading -------------------------------------------------------------------------

    @abstractmethod
    def open(self, key: str) -> AbstractContextManager[TierReader]:
        """A context giving a TierReader; key is never evicted while it is open and its use
        counts for the tier's LRU order. NotACheckpointError when absent."""

    # -- writing -------------------------------------------------------------------------

    @abstractmethod
    def keep(self, key: str, held: Held, *, droppable: Droppable) -> np.ndarray | None:
        """Store a copy of a checkpoint already in host memory (a promotion), room permitting.

        Returns the buffer loads of this copy should use from now on (a view of this tier's
        memory for a tier that serves loads from memory, else held.buf), or None when the
        tier did not keep it (no room even after dropping what droppable allows, an I/O
        error: a failed promotion costs speed later, never the load). A tier that never
        keeps copies returns None.
        """

    def sink(self, key: str, *, droppable: Droppable) -> Sink | None:
        """A Sink that copies a packed download here while it arrives, or None when this
        tier does not take streams (the Store then offers the finished copy to keep)."""
        return None

    @abstractmethod
    def put(self, key: str, src: str | Callable[[str], None], *, nbytes: int,
            droppable: Droppable) -> None:
        """Store a checkpoint under key, replacing any copy of it here.

        src: a checkpoint directory, or a function that writes one at the path it is given
        (a path this tier chose; the function publishes it atomically, as ckpt.save does).
        nbytes: the room to make first. Raises CheckpointError when there is no room,
        ValueError when the tier takes no such src (a cache takes no put; a remote takes
        directories only); a failure leaves the previous copy intact.
        """

    @abstractmethod
    def remove(self, key: str, *, force: bool = False) -> bool:
        """Drop key's copy; whether it is gone (True when it was not here).

        Without force a copy in use (pinned by live tensors) stays and False is returned;
        with force it leaves the tier now (its memory is freed when the last user ends).
        Readers already reading finish unharmed. ValueError when the tier is not evictable.
        """
