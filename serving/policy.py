"""Placement policies: pure, named choices of where a cold start goes, over a cluster snapshot.

    snap = Snapshot.of(servers, models)                 # frozen; indexes built once
    policy = get_policy("locality")                     # or "locality+migration", "random",
    decision = policy.place("llama-7b", snap)           #    "least-loaded"
    decision.server, decision.candidates[0].seconds, decision.migration

No torch, no Ray, no HTTP, no asyncio and no clocks: the controller hands a policy a Snapshot
and starts what the Decision says; the simulator of the next issue runs the same objects.

The estimate (ServerlessLLM): a server's startup time for a model = its load queue's wait +
the load from the fastest tier holding the checkpoint there (tier latency + model bytes / the
tier's bandwidth), the registry when no local tier holds it. Bandwidths come from
serving.estimates (seeded by the worker's ckpt tiers, corrected by the loads observed).

Who may take a cold start: a *free* server (alive, no instance); when none is free, a
*reclaimable* one (its idle instance, above its model's min_instances, is unloaded first:
Candidate.evict names that model). A busy server (an instance loading, or serving
inferences) takes none now, but the locality policies may *wait* for one: a busy server
holding the model locally, expected idle in ServerView.busy_for seconds, is a candidate of
busy_for + its load (Candidate.wait), the start goes there once it idles when that beats
every start now, unless the request already waited that long (ModelInfo.waited: waiting
is then no longer trusted, estimates of when a server idles being the least reliable).
`locality+migration` may also propose moving a busy server's inferences away.

Decision contract (what the controller, and serving.migration, rely on):

- `Decision.server` never needs a migration: it is free (or reclaimable, `chosen.evict`
  set), or None when nothing can start now or waiting is faster (the controller waits for a
  server; `candidates[0].wait` then names the busy server worth waiting for, and when).
- `Decision.migration` (only from `locality+migration`) is an optional, better plan: move
  every inference running on `migration.source` (ids `request_ids`, all of the one instance
  of `migration.model` there) to the free server `migration.destination`, which first loads
  `migration.model` (expected from `migration.tier`); once the source is freed, start the
  decision's model on the source (`migration.start`, whose seconds include the migration).
  A controller that cannot migrate, or whose migration fails, uses `Decision.server`.
- Migration cost model, per inference: `a * tokens + b` seconds (ModelInfo.cost_a/cost_b of
  the migrated model; tokens = prompt + generated so far, recomputed at the destination),
  summed over the source's inferences, plus the destination's load estimate. The
  destination is the free server minimising that cost; the source is the busy server
  holding the model locally whose start (cost + its own load) is lowest, and the proposal is
  made only when that beats the best start without migration.

Cost per decision: the policies read only the servers indexed under the model (Snapshot
.holders), the first free servers in the registry-start order (a bound stops the scan), and
for a migration the holders of the migrated model; Decision.examined counts the server
estimates computed, so tests assert that servers unrelated to a decision cost nothing.
"""

from __future__ import annotations

import random as _random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["POLICIES", "Candidate", "Decision", "Inference", "LeastLoaded", "Locality",
           "LocalityMigration", "Migration", "ModelInfo", "Policy", "PolicyError", "Random",
           "ServerView", "Snapshot", "TierView", "get_policy"]

#: the name of the tier every server can load from (the origin of every checkpoint)
REGISTRY = "registry"


class PolicyError(ValueError):
    """An unknown policy name, bad policy options, or a snapshot a policy cannot use."""


# -- the snapshot -------------------------------------------------------------------------


@dataclass(frozen=True)
class TierView:
    """One tier of a server: what it holds and how fast it loads.

    models: names held (the registry's view leaves it empty: it holds every model).
    bandwidth: estimated bytes/s of a load from here; latency: seconds before the first byte.
    """

    name: str
    bandwidth: float
    latency: float = 0.0
    models: frozenset[str] = frozenset()

    def seconds(self, nbytes: int) -> float:
        """Estimated seconds to load nbytes from this tier."""
        return self.latency + nbytes / self.bandwidth


@dataclass(frozen=True)
class Inference:
    """One request running on a server: what a migration would move."""

    request_id: str
    model: str
    tokens: int  # prompt + generated so far: what the destination recomputes


@dataclass(frozen=True)
class ServerView:
    """One server (worker) as policies see it.

    free: alive and holding no instance. model: its instance's model (loading or ready),
    None when free. running: the inferences its instance serves now. reclaimable: its
    instance is idle and may be unloaded to make room (last_used orders those, least
    recently used first). load: requests running or queued for it (least-loaded's key).
    queue_wait: seconds before its load queue could start another load. busy_for: seconds
    until its busy instance is expected to idle (None: unknown, never waited for). tiers:
    its local tiers, fastest first; registry: its view of the registry (bandwidth from it).
    """

    index: int
    name: str = ""
    alive: bool = True
    free: bool = True
    model: str | None = None
    running: tuple[Inference, ...] = ()
    reclaimable: bool = False
    last_used: float = 0.0
    load: int = 0
    queue_wait: float = 0.0
    busy_for: float | None = None
    tiers: tuple[TierView, ...] = ()
    registry: TierView = TierView(REGISTRY, 100e6)

    def estimate(self, model: ModelInfo) -> tuple[float, TierView]:
        """(load seconds, the tier serving it) for model here, queue wait not included."""
        best, where = self.registry.seconds(model.nbytes), self.registry
        for tier in self.tiers:
            if model.name in tier.models:
                s = tier.seconds(model.nbytes)
                if s < best:
                    best, where = s, tier
        return best, where

    def holds(self, model: str) -> bool:
        return any(model in t.models for t in self.tiers)


@dataclass(frozen=True)
class ModelInfo:
    """A deployed model: its checkpoint's size, its migration cost model (seconds per
    inference = cost_a * tokens + cost_b, measured per model at deploy time) and how long
    its oldest request has waited for a start (bounds waiting for a busy server)."""

    name: str
    nbytes: int
    ntensors: int = 1
    cost_a: float = 0.0
    cost_b: float = 0.0
    waited: float = 0.0  # seconds its oldest request waiting for a start has waited


@dataclass(frozen=True)
class Snapshot:
    """The cluster at one moment, with the indexes policies use (build it with `of`, or,
    as serving.sim does, directly from indexes kept up to date: any sequences with these
    orders, read only during one place() call).

    servers: by index (servers[i].index == i). holders: model -> indices of alive servers
    whose local tiers hold it. free: free servers in registry-start order (queue wait +
    registry latency, then index); max_registry_bandwidth bounds a scan of them.
    reclaimable: reclaimable servers, least recently used first. by_load: free servers by
    (load, queue wait, index).
    """

    servers: tuple[ServerView, ...]
    models: Mapping[str, ModelInfo]
    holders: Mapping[str, tuple[int, ...]]
    free: tuple[int, ...]
    reclaimable: tuple[int, ...]
    by_load: tuple[int, ...]
    max_registry_bandwidth: float = 0.0

    @classmethod
    def of(cls, servers: Iterable[ServerView], models: Iterable[ModelInfo]) -> Snapshot:
        """A snapshot with its indexes (O(servers x tiers), once per cluster state)."""
        servers = tuple(servers)
        for i, s in enumerate(servers):
            if s.index != i:
                raise PolicyError(f"servers[{i}] has index {s.index}; servers must be listed "
                                  f"by index")
        holders: dict[str, list[int]] = {}
        for s in servers:
            if s.alive:
                for name in {m for t in s.tiers for m in t.models}:
                    holders.setdefault(name, []).append(s.index)
        free = [s for s in servers if s.alive and s.free]
        return cls(
            servers=servers,
            models=MappingProxyType({m.name: m for m in models}),
            holders=MappingProxyType({k: tuple(v) for k, v in holders.items()}),
            free=tuple(s.index for s in sorted(
                free, key=lambda s: (s.queue_wait + s.registry.latency, s.index))),
            reclaimable=tuple(s.index for s in sorted(
                (s for s in servers if s.alive and not s.free and s.reclaimable),
                key=lambda s: (s.last_used, s.index))),
            by_load=tuple(s.index for s in sorted(
                free, key=lambda s: (s.load, s.queue_wait, s.index))),
            max_registry_bandwidth=max((s.registry.bandwidth for s in free), default=0.0))

    def model(self, name: str) -> ModelInfo:
        """The model's info; PolicyError when the snapshot does not know it."""
        info = self.models.get(name)
        if info is None:
            raise PolicyError(f"model {name!r} is not in the snapshot; it has "
                              f"{sorted(self.models)}")
        return info


# -- decisions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A server for a start and why: seconds = queue + load from tier (estimates).

    evict: the model of the instance to unload first (a reclaimable server, or a busy one
    waited for), else None; penalty: that model's own reload there (what unloading it may
    cost its next request), added to seconds when candidates are ranked. wait: the server
    is busy; the start waits for it to idle (queue: the expected wait).
    """

    server: int
    seconds: float
    tier: str
    queue: float = 0.0
    why: str = ""
    evict: str | None = None
    wait: bool = False
    penalty: float = 0.0

    @property
    def load_seconds(self) -> float:
        """The load alone (what a LoadReport's load_seconds is compared with)."""
        return self.seconds - self.queue


@dataclass(frozen=True)
class Migration:
    """A proposal to free a busy server by moving its inferences (see the module docstring).

    cost = load_seconds (destination's start of model) + recompute_seconds (sum of
    a * tokens + b over request_ids). start: the decision's model on source afterwards.
    """

    source: int
    destination: int
    model: str
    request_ids: tuple[str, ...]
    tier: str
    load_seconds: float
    recompute_seconds: float
    cost: float
    start: Candidate


@dataclass(frozen=True)
class Decision:
    """Where model starts (server None: wait), every candidate considered ranked best first
    with its estimate, an optional migration proposal, and how many server estimates it took.
    """

    policy: str
    model: str
    server: int | None
    candidates: tuple[Candidate, ...] = ()
    migration: Migration | None = None
    examined: int = 0

    @property
    def chosen(self) -> Candidate | None:
        """The candidate of server (None when waiting)."""
        return next((c for c in self.candidates if c.server == self.server), None)


# -- policies -----------------------------------------------------------------------------


class Policy(ABC):
    """A named placement policy. Subclasses set `name` and implement `_place`.

    place() is pure apart from a policy's own explicit state (Random's generator): the same
    snapshot gives the same decision.
    """

    name: str = ""

    def place(self, model: str, snapshot: Snapshot) -> Decision:
        """Where a cold start of model goes. PolicyError when the snapshot lacks model."""
        return self._place(snapshot.model(model), snapshot)

    @abstractmethod
    def _place(self, model: ModelInfo, snap: Snapshot) -> Decision:
        """The decision for model (known to the snapshot)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _candidate(server: ServerView, model: ModelInfo, snap: Snapshot | None = None
               ) -> Candidate:
    """server's estimate for model, with the reason in words (and, given snap, the reload
    penalty of the instance it would unload)."""
    load, tier = server.estimate(model)
    holds = "" if tier.name == REGISTRY else f"{tier.name} holds it; "
    text = (f"{holds}{server.queue_wait:.3f} s queue + {tier.latency:.3f} s + "
            f"{model.nbytes / 1e6:.1f} MB at {tier.bandwidth / 1e6:.1f} MB/s from {tier.name}")
    evict = None if server.free else server.model
    return Candidate(server.index, server.queue_wait + load, tier.name, server.queue_wait,
                     text, evict, penalty=_reload(server, evict, snap))


def _reload(server: ServerView, evict: str | None, snap: Snapshot | None) -> float:
    """Seconds to load evict again on server (0 for nothing evicted or an unknown model)."""
    info = snap.models.get(evict) if snap is not None and evict is not None else None
    return server.estimate(info)[0] if info is not None else 0.0


def _ranked(cands: Iterable[Candidate]) -> tuple[Candidate, ...]:
    return tuple(sorted(cands, key=lambda c: (c.seconds + c.penalty, c.server)))


class Locality(Policy):
    """The lowest estimated startup time (queue wait + load from the fastest tier holding
    the checkpoint there); free servers first, reclaimable ones when none is free."""

    name = "locality"

    def _place(self, model: ModelInfo, snap: Snapshot) -> Decision:
        cands, examined = self._starts(model, snap)
        waits = _waits(model, snap, cands)
        ranked = _ranked(cands + waits)
        server = ranked[0].server if ranked and not ranked[0].wait else None
        return Decision(self.name, model.name, server, ranked,
                        examined=examined + len(waits))

    def _starts(self, model: ModelInfo, snap: Snapshot) -> tuple[list[Candidate], int]:
        """Candidates: the free servers worth a look (_best_free), the reclaimable ones
        holding the model (ranked with their reload penalty, so an idle instance is unloaded
        only when that saves more than reloading it costs), and, when none is free, the
        least recently used reclaimable one; and the count of estimates made."""
        servers = snap.servers
        cands, examined = _best_free(model, snap, exclude=None) if snap.free else ([], 0)
        picks = {i for i in snap.holders.get(model.name, ()) if servers[i].reclaimable
                 and not servers[i].free and servers[i].model != model.name}
        lru = None if snap.free else next(_reclaimable(snap, model), None)
        if lru is not None:
            picks.add(lru)
        cands += [_candidate(servers[i], model, snap) for i in sorted(picks)]
        return cands, examined + len(picks)


def _waits(model: ModelInfo, snap: Snapshot, starts: list[Candidate]) -> list[Candidate]:
    """Busy servers holding model locally that are worth waiting for: expected idle
    (busy_for) and ranked before every start now (with reload penalties), which the request
    has not already waited for (past that, waiting is not trusted: see the module
    docstring)."""
    now = min((c.seconds for c in starts), default=float("inf"))
    if model.waited >= now:
        return []
    bar = min((c.seconds + c.penalty for c in starts), default=float("inf"))
    out = []
    for i in snap.holders.get(model.name, ()):
        s = snap.servers[i]
        if s.free or s.reclaimable or s.busy_for is None or s.model == model.name:
            continue
        load, tier = s.estimate(model)
        penalty = _reload(s, s.model, snap)
        if s.busy_for + load + penalty < bar:
            out.append(Candidate(i, s.busy_for + load, tier.name, s.busy_for,
                                 f"busy with {s.model} for ~{s.busy_for:.3f} s, then "
                                 f"{load:.3f} s from {tier.name}", s.model, wait=True,
                                 penalty=penalty))
    return out


def _reclaimable(snap: Snapshot, model: ModelInfo) -> Iterator[int]:
    """Reclaimable servers, least recently used first, but not those running model itself
    (unloading an instance to load the same model again gains nothing); lazily, so taking
    the first costs one server, not all of them."""
    return (i for i in snap.reclaimable if snap.servers[i].model != model.name)


def _best_free(model: ModelInfo, snap: Snapshot, exclude: int | None
               ) -> tuple[list[Candidate], int]:
    """Free holders of model and the best free server loading from the registry (a scan of
    snap.free in registry-start order that stops once no later server can be faster)."""
    servers = snap.servers
    cands = [_candidate(servers[i], model) for i in snap.holders.get(model.name, ())
             if servers[i].free and i != exclude]
    examined = len(cands)
    best = None
    floor = model.nbytes / snap.max_registry_bandwidth if snap.max_registry_bandwidth else 0.0
    for i in snap.free:
        s = servers[i]
        if i == exclude:
            continue
        if best is not None and s.queue_wait + s.registry.latency + floor >= best.seconds:
            break
        examined += 1
        c = _candidate(s, model)
        if best is None or c.seconds < best.seconds:
            best = c
    if best is not None and all(c.server != best.server for c in cands):
        cands.append(best)
    return cands, examined


class LocalityMigration(Locality):
    """Locality, plus a migration proposal when a busy server holding the model locally
    would start it sooner once its inferences move to the free server where moving them
    costs least (see the module docstring)."""

    name = "locality+migration"

    def _place(self, model: ModelInfo, snap: Snapshot) -> Decision:
        plain = super()._place(model, snap)
        best = plain.candidates[0].seconds if plain.candidates else float("inf")
        examined = plain.examined
        proposal = None
        servers = snap.servers
        for i in snap.holders.get(model.name, ()):
            src = servers[i]
            if src.free or src.model is None or src.model == model.name or not src.running:
                continue
            moved = snap.models.get(src.model)
            if moved is None:
                continue
            examined += 1
            recompute = sum(moved.cost_a * r.tokens + moved.cost_b for r in src.running)
            dests, n = _best_free(moved, snap, exclude=i)
            examined += n
            if not dests:
                continue
            dest = min(dests, key=lambda c: (c.seconds, c.server))
            cost = dest.seconds + recompute
            load, tier = src.estimate(model)
            start = Candidate(i, cost + src.queue_wait + load, tier.name, cost + src.queue_wait,
                              f"after migrating {len(src.running)} inference(s) of {src.model} "
                              f"to server {dest.server} ({cost:.3f} s): {tier.name} holds it, "
                              f"{load:.3f} s to load")
            key = (start.seconds, cost, i)
            if start.seconds < best and (proposal is None or key < (
                    proposal.start.seconds, proposal.cost, proposal.source)):
                proposal = Migration(i, dest.server, src.model,
                                     tuple(r.request_id for r in src.running), dest.tier,
                                     dest.seconds, recompute, cost, start)
        return Decision(self.name, model.name, plain.server, plain.candidates, proposal,
                        examined)


@dataclass(eq=False)
class Random(Policy):
    """A uniformly random free server (reclaimable when none is free), ignoring locality;
    seeded, so a run is reproducible."""

    seed: int = 0
    _rng: _random.Random = field(init=False, repr=False)
    name = "random"

    def __post_init__(self) -> None:
        self._rng = _random.Random(self.seed)

    def _place(self, model: ModelInfo, snap: Snapshot) -> Decision:
        pool = snap.free or list(_reclaimable(snap, model))
        if not pool:
            return Decision(self.name, model.name, None)
        server = snap.servers[pool[self._rng.randrange(len(pool))]]
        return Decision(self.name, model.name, server.index,
                        (_candidate(server, model),), examined=1)


class LeastLoaded(Policy):
    """The free server with the fewest running or queued requests (then the shortest load
    queue, then the lowest index); the least recently used reclaimable one when none is
    free. Ignores locality."""

    name = "least-loaded"

    def _place(self, model: ModelInfo, snap: Snapshot) -> Decision:
        first = snap.by_load[0] if snap.by_load else next(_reclaimable(snap, model), None)
        if first is None:
            return Decision(self.name, model.name, None)
        server = snap.servers[first]
        return Decision(self.name, model.name, server.index,
                        (_candidate(server, model),), examined=1)


#: name -> policy class; get_policy makes one
POLICIES: Mapping[str, type[Policy]] = MappingProxyType({
    p.name: p for p in (Locality, LocalityMigration, Random, LeastLoaded)})


def get_policy(name: str, **options) -> Policy:
    """A new policy by name (options: seed for "random"). PolicyError names the known ones."""
    cls = POLICIES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise PolicyError(f"unknown placement policy {name!r}; known: {sorted(POLICIES)}")
    try:
        return cls(**options)
    except TypeError as exc:
        raise PolicyError(f"policy {name!r}: bad options {sorted(options)}: {exc}") from None
