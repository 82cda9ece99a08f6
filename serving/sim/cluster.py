"""The simulated cluster's state, and the serving.policy Snapshot of it built in O(decision).

    c = Cluster(hw, servers=4, slot_gpus=1, models=zoo)
    snap = c.snapshot(now)               # a serving.policy.Snapshot; valid until c changes
    c.view(i, now)                       # the ServerView of slot i (what Snapshot.of takes)

Mapping onto serving.policy: a policy "server" is a *slot*: slot_gpus GPUs of one machine
(the most GPUs any model of the zoo needs), holding at most one instance. A machine's slots
share its DRAM and SSD checkpoint caches (so a tier holding a model makes every slot of
that machine a holder) and its load queue (one load at a time per machine, FIFO:
queue_wait is the time until the machine's I/O is free, ServerlessLLM's estimate).

Indexes are kept up to date as the state changes, so a snapshot costs what a decision
reads: `servers` builds a slot's ServerView when a policy reads it, `holders` is the live
model -> slots index, `free` orders the free slots lazily (registry-start order: the slots
of machines whose I/O is idle by index, then those waiting on their I/O), `reclaimable`
keeps idle instances least recently used first. A test checks that decisions on it equal
decisions on Snapshot.of over every view.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

from serving.estimates import Estimates
from serving.policy import REGISTRY, Inference, ModelInfo, ServerView, Snapshot, TierView
from serving.sim.timing import Hardware, SimModel

__all__ = ["Cluster", "Instance", "Machine", "Slot"]


class _Cache:
    """One checkpoint tier of a machine: an LRU of models within a byte capacity."""

    __slots__ = ("capacity", "used", "models")

    def __init__(self, capacity: float):
        self.capacity = capacity
        self.used = 0
        self.models: dict[str, int] = {}  # insertion order = least recently used first

    def touch(self, name: str) -> None:
        self.models[name] = self.models.pop(name)

    def add(self, name: str, nbytes: int) -> list[str]:
        """Cache name (most recently used); the models evicted for it. A model larger than
        the capacity is not cached."""
        if name in self.models:
            self.touch(name)
            return []
        if nbytes > self.capacity:
            return []
        evicted = []
        while self.used + nbytes > self.capacity:
            old, size = next(iter(self.models.items()))
            del self.models[old]
            self.used -= size
            evicted.append(old)
        self.models[name] = nbytes
        self.used += nbytes
        return evicted


class Machine:
    __slots__ = ("index", "dram", "ssd", "io_free_at", "slots", "tiers", "registry")

    def __init__(self, index: int, hw: Hardware, slots: list[int]):
        self.index = index
        self.dram = _Cache(hw.dram_bytes)
        self.ssd = _Cache(hw.ssd_bytes)
        self.io_free_at = 0.0
        self.slots = slots
        self.tiers: tuple[TierView, ...] | None = None  # cached views, None when stale
        self.registry: TierView | None = None


class Instance:
    """A model instance on a slot: loading -> ready (-> draining, migrating away) -> gone."""

    __slots__ = ("model", "slot", "state", "active", "last_used", "started", "epoch",
                 "tier", "load_seconds")

    def __init__(self, model: SimModel, slot: int, started: float, tier: str):
        self.model = model
        self.slot = slot
        self.state = "loading"
        self.active: dict = {}  # request id -> request
        self.last_used = started
        self.started = started  # when it took the slot (GPU time counts from here)
        self.epoch = 0  # bumped whenever it gets busy: a stale keep-alive timer sees it
        self.tier = tier
        self.load_seconds = 0.0  # the load's own time (queue wait excluded)


class Slot:
    __slots__ = ("index", "machine", "name", "instance", "cached")

    def __init__(self, index: int, machine: int, name: str):
        self.index = index
        self.machine = machine
        self.name = name
        self.instance: Instance | None = None
        self.cached: ServerView | None = None  # its view while free with idle I/O


class Cluster:
    """Machines, slots and instances, with the indexes a Snapshot needs (module docstring).

    dram_cache False: loads leave nothing in DRAM (the serverless baseline's machines).
    estimates: what the policies see of the tiers' speeds (serving.estimates, by machine,
    corrected by `observe` as the controller corrects them); None: the true speeds (hw).
    """

    def __init__(self, hw: Hardware, servers: int, slot_gpus: int, models: list[SimModel],
                 *, dram_cache: bool = True, estimates: Estimates | None = None):
        if servers < 1 or hw.gpus % slot_gpus:
            raise ValueError(f"{servers} servers of {hw.gpus} GPUs cannot hold slots of "
                             f"{slot_gpus} GPUs")
        self.hw = hw
        self.slot_gpus = slot_gpus
        self.dram_cache = dram_cache
        per = hw.gpus // slot_gpus
        self.machines = [Machine(m, hw, list(range(m * per, (m + 1) * per)))
                         for m in range(servers)]
        self.slots = [Slot(i, i // per, f"s{i // per}g{(i % per) * slot_gpus}")
                      for i in range(servers * per)]
        self.models = {m.name: m for m in models}
        self.infos = MappingProxyType({m.name: ModelInfo(m.name, m.nbytes, 1, m.cost_a,
                                                         m.cost_b) for m in models})
        self.free: list[int] = list(range(len(self.slots)))  # sorted by index
        self.reclaimable: dict[int, float] = {}  # slot -> last_used, LRU first
        self.holders: dict[str, set[int]] = {}
        self.io_busy: set[int] = set()  # machines whose I/O may be busy
        self.registry = TierView(REGISTRY, hw.registry_bandwidth, hw.registry_latency)
        self._holders = MappingProxyType(self.holders)
        self.estimates = estimates
        # set by the engine: when a busy instance should idle (ServerView.busy_for), how long
        # a model's oldest queued request has waited (ModelInfo.waited)
        self.busy_for: Callable[[Instance, float], float | None] = lambda inst, now: None
        self.waited: Callable[[str], float] = lambda name: 0.0
        # free slots by the registry bandwidth their machine sees (the most: Snapshot's
        # max_registry_bandwidth, which bounds a scan for the fastest registry start)
        self._free_bw = Counter(self._registry(self.machines[s.machine]).bandwidth
                                for s in self.slots)

    # -- tiers ------------------------------------------------------------------------------

    def store(self, machine: int, tier: str, name: str) -> None:
        """A load of name passed through tier on machine: cache it there (LRU), evicting
        as needed, and keep the holders index in step."""
        m = self.machines[machine]
        cache = m.dram if tier == "dram" else m.ssd
        if tier == "dram" and not self.dram_cache:
            return
        held = name in m.dram.models or name in m.ssd.models
        evicted = cache.add(name, self.models[name].nbytes)
        self._invalidate(m)
        for old in evicted:
            if old not in m.dram.models and old not in m.ssd.models:
                self.holders[old].difference_update(m.slots)
        if not held and name in cache.models:
            self.holders.setdefault(name, set()).update(m.slots)

    def source(self, machine: int, name: str) -> str:
        """The fastest tier of machine holding name ("registry" when none does)."""
        m = self.machines[machine]
        return "dram" if name in m.dram.models else "local" if name in m.ssd.models \
            else REGISTRY

    def observe(self, machine: int, tier: str, nbytes: int, seconds: float) -> None:
        """A load of nbytes from tier took seconds on machine: correct the estimates."""
        if self.estimates is None:
            return
        m = self.machines[machine]
        free = [s for s in m.slots if self.slots[s].instance is None]
        for _ in free:
            self._count_free(m, -1)
        self.estimates.observe(machine, tier, nbytes, seconds)
        self._invalidate(m)
        for _ in free:
            self._count_free(m, +1)

    def _count_free(self, m: Machine, delta: int) -> None:
        bw = self._registry(m).bandwidth
        self._free_bw[bw] += delta
        if not self._free_bw[bw]:
            del self._free_bw[bw]

    def _registry(self, m: Machine) -> TierView:
        if m.registry is None:
            m.registry = (self.registry if self.estimates is None
                          else self.estimates.tier(m.index, REGISTRY))
        return m.registry

    def _invalidate(self, m: Machine) -> None:
        m.tiers = m.registry = None
        for s in m.slots:
            self.slots[s].cached = None

    def reserve_io(self, machine: int, now: float, seconds: float) -> float:
        """Queue a load of seconds on machine's I/O; when it completes."""
        m = self.machines[machine]
        start = m.io_free_at if m.io_free_at > now else now
        m.io_free_at = start + seconds
        self.io_busy.add(machine)
        for s in m.slots:
            self.slots[s].cached = None  # their queue_wait changed
        return m.io_free_at

    # -- slots ------------------------------------------------------------------------------

    def occupy(self, inst: Instance) -> None:
        s = self.slots[inst.slot]
        if s.instance is not None:
            raise RuntimeError(f"slot {s.name} is taken")
        s.instance, s.cached = inst, None
        self.free.pop(bisect_left(self.free, s.index))
        self._count_free(self.machines[s.machine], -1)

    def release(self, slot: int) -> None:
        s = self.slots[slot]
        self.set_reclaimable(slot, False)
        s.instance, s.cached = None, None
        insort(self.free, slot)
        self._count_free(self.machines[s.machine], +1)

    def set_reclaimable(self, slot: int, on: bool, now: float = 0.0) -> None:
        """Mark slot's instance idle (reclaimable, least recently used first) or not."""
        rec = self.reclaimable
        if not on:
            rec.pop(slot, None)
            return
        if slot in rec:
            return
        tail = []  # ties at `now` stay ordered by slot index, as Snapshot.of sorts them
        while rec:
            last = next(reversed(rec))
            if rec[last] < now or last < slot:
                break
            tail.append((last, rec.pop(last)))
        rec[slot] = now
        for k, v in reversed(tail):
            rec[k] = v

    # -- the policies' view -----------------------------------------------------------------

    def view(self, i: int, now: float) -> ServerView:
        """Slot i as serving.policy sees it at time now."""
        s = self.slots[i]
        m = self.machines[s.machine]
        inst = s.instance
        wait = m.io_free_at - now
        if inst is None and wait <= 0.0 and s.cached is not None:
            return s.cached
        if m.tiers is None:
            est, hw = self.estimates, self.hw
            m.tiers = (
                (TierView("dram", hw.dram_bandwidth, hw.dram_latency, frozenset(m.dram.models)),
                 TierView("local", hw.ssd_bandwidth, hw.ssd_latency, frozenset(m.ssd.models)))
                if est is None else (est.tier(m.index, "dram", m.dram.models),
                                     est.tier(m.index, "local", m.ssd.models)))
        registry = self._registry(m)
        wait = wait if wait > 0.0 else 0.0
        if inst is None:
            v = ServerView(i, s.name, queue_wait=wait, tiers=m.tiers, registry=registry)
            if wait == 0.0:
                s.cached = v
            return v
        running = ()  # a draining instance's too, as serving.controller's snapshot has them
        if inst.state != "loading" and inst.active:
            running = tuple(Inference(r.rid, inst.model.name, r.tokens(now))
                            for r in inst.active.values())
        return ServerView(i, s.name, free=False, model=inst.model.name, running=running,
                          reclaimable=i in self.reclaimable, last_used=inst.last_used,
                          load=len(inst.active), queue_wait=wait,
                          busy_for=self.busy_for(inst, now), tiers=m.tiers,
                          registry=registry)

    def snapshot(self, now: float) -> Snapshot:
        """The policies' Snapshot at now, its indexes the cluster's own (module docstring):
        valid until the cluster next changes."""
        if self.io_busy:
            self.io_busy = {m for m in self.io_busy if self.machines[m].io_free_at > now}
        free = _Free(self, now)
        return Snapshot(servers=_Servers(self, now), models=_Models(self), holders=self._holders,
                        free=free, reclaimable=tuple(self.reclaimable), by_load=free,
                        max_registry_bandwidth=max(self._free_bw, default=0.0))


class _Models(Mapping):
    """The zoo's ModelInfo, each with how long its oldest queued request has waited."""

    def __init__(self, cluster: Cluster):
        self._c = cluster

    def __getitem__(self, name: str) -> ModelInfo:
        info = self._c.infos[name]
        waited = self._c.waited(name)
        return replace(info, waited=waited) if waited else info

    def __iter__(self):
        return iter(self._c.infos)

    def __len__(self) -> int:
        return len(self._c.infos)


class _Servers(Sequence):
    """Every slot's ServerView, built when first read (a snapshot is one instant)."""

    def __init__(self, cluster: Cluster, now: float):
        self._c, self._now = cluster, now
        self._views: dict[int, ServerView] = {}

    def __len__(self) -> int:
        return len(self._c.slots)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._c.view(j, self._now) for j in range(len(self))[i]]
        if i < 0:
            i += len(self)
        v = self._views.get(i)
        if v is None:
            if not 0 <= i < len(self._c.slots):
                raise IndexError(i)
            v = self._views[i] = self._c.view(i, self._now)
        return v


class _Free(Sequence):
    """The free slots in registry-start order (queue wait, then index), ordered lazily: the
    idle machines' free slots are the cluster's sorted free list minus the few slots of
    machines whose I/O is busy, which come after, by when their I/O frees."""

    def __init__(self, cluster: Cluster, now: float):
        self._c, self._now = cluster, now
        self._busy: list[int] | None = None
        self._skip: set[int] = set()

    def _waiting(self) -> list[int]:
        if self._busy is None:
            c = self._c
            slots = [s for m in c.io_busy for s in c.machines[m].slots
                     if c.slots[s].instance is None]
            slots.sort(key=lambda s: (c.machines[c.slots[s].machine].io_free_at, s))
            self._busy, self._skip = slots, set(slots)
        return self._busy

    def __len__(self) -> int:
        return len(self._c.free)

    def __bool__(self) -> bool:
        return bool(self._c.free)

    def __iter__(self):
        busy = self._waiting()
        skip = self._skip
        for s in self._c.free:
            if s not in skip:
                yield s
        yield from busy

    def __getitem__(self, k):
        if isinstance(k, slice):
            return list(self)[k]
        free, busy = self._c.free, self._waiting()
        if k < 0:
            k += len(free)
        if not 0 <= k < len(free):
            raise IndexError(k)
        idle = len(free) - len(busy)
        if k >= idle:
            return busy[k - idle]
        p = k  # the k-th free slot not waiting on I/O: step over the waiting ones before it
        for pos in sorted(bisect_left(free, s) for s in busy):
            if pos > p:
                break
            p += 1
        return free[p]
