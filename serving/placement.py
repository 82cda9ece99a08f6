"""Where a cold start goes: pure choices over a snapshot of the workers (no I/O, no clocks).

    views = [WorkerView(0, free=True, tiers={"dram": ["a"], "local": ["a", "b"]}), ...]
    choice = place("b", views)       # Choice(worker=0, tier="local", candidates=[...])
    victim = choose_victim(views)    # the least recently used idle instance, or None

This issue's policy: a free worker whose tiers already hold the checkpoint, the fastest tier
first (tiers are listed fastest first), else any free worker (its load comes from the
registry). The next issue replaces `place` with a pluggable policy fed startup-time
estimates; the controller only hands it a snapshot and starts what it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Choice", "WorkerView", "choose_victim", "place"]

#: the tier name of a load that no local tier can serve
REGISTRY = "registry"


@dataclass(frozen=True)
class WorkerView:
    """One worker as placement sees it.

    free: alive and holding no instance. tiers: its local tiers' contents, fastest first.
    model: the instance it holds (None when free); idle: that instance serves no request
    and may be unloaded to make room (it is above its model's min_instances); last_used:
    when that instance last finished a request (loop clock).
    """

    index: int
    free: bool
    tiers: dict[str, list[str]] = field(default_factory=dict)
    model: str | None = None
    idle: bool = False
    last_used: float = 0.0


@dataclass(frozen=True)
class Choice:
    """A worker for a cold start, the tier expected to serve it, and every candidate ranked
    ((worker index, tier) pairs, best first) for the log."""

    worker: int
    tier: str
    candidates: list[tuple[int, str]]


def place(model: str, workers: Sequence[WorkerView]) -> Choice | None:
    """The free worker that loads model fastest (see the module docstring); None if none
    is free."""
    ranked = []
    for w in workers:
        if not w.free:
            continue
        tier_names = list(w.tiers)
        rank, tier = len(tier_names), REGISTRY
        for i, name in enumerate(tier_names):
            if model in w.tiers[name]:
                rank, tier = i, name
                break
        ranked.append((rank, w.index, tier))
    if not ranked:
        return None
    ranked.sort()
    return Choice(ranked[0][1], ranked[0][2], [(i, t) for _, i, t in ranked])


def choose_victim(workers: Sequence[WorkerView], model: str | None = None) -> int | None:
    """The worker whose idle instance was used least recently (not one of model); None."""
    idle = [w for w in workers if w.idle and w.model is not None and w.model != model]
    if not idle:
        return None
    return min(idle, key=lambda w: (w.last_used, w.index)).index
