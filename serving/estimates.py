"""Startup-time estimates per server and tier: seeded by the worker's tiers, corrected by loads.

    est = Estimates()
    est.seed(0, {"dram": {"bandwidth": 2e10, "latency": 0.0}, "local": {...}, ...})
    est.seconds(0, "local", 512 << 20)         # latency + bytes / bandwidth
    est.observe(0, "local", 512 << 20, 0.8)    # a LoadReport came back: correct the bandwidth
    est.tier(0, "local")                       # serving.policy.TierView for a snapshot

Seeds come from the worker itself (serving.runtime.Runtime.estimates: each ckpt tier's own
`estimate()`, the disk tier's from a bas profile measured on the tier's directory when one
was saved there, else its preset), so nothing here measures anything. Each load a worker
reports replaces the seed of its (server, tier) by what was observed, and later loads move
it by an exponentially weighted average. Pure and event-driven: it changes only when
seed/observe are called (the controller calls observe when a load completes), no clocks,
no polling. Not thread-safe (the controller's loop owns it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from serving.policy import REGISTRY, TierView

__all__ = ["DEFAULTS", "Estimates", "TierEstimate"]

#: bytes/s and latency for a tier a worker did not describe (a worker without estimates,
#: e.g. a test's fake): DRAM faster than a local disk, faster than the registry
DEFAULTS: Mapping[str, tuple[float, float]] = {
    "dram": (10e9, 0.0), "local": (1e9, 0.001), REGISTRY: (100e6, 0.01)}
_UNKNOWN = (100e6, 0.01)
#: weight of a new observation once the first one replaced the seed
ALPHA = 0.3
#: loads shorter than this say nothing about bandwidth (timer noise, a DRAM hit's slicing)
MIN_SECONDS = 1e-4


@dataclass
class TierEstimate:
    """One (server, tier): seconds per byte (the averaged quantity: an average of times
    weighs a slow load as much as it costs, an average of bandwidths would not), latency,
    how many loads corrected it and where the seed came from."""

    seconds_per_byte: float
    latency: float
    observed: int = 0
    source: str = "default"

    @property
    def bandwidth(self) -> float:
        return 1.0 / self.seconds_per_byte


class Estimates:
    """Bandwidth per (server index, tier name); see the module docstring."""

    def __init__(self, alpha: float = ALPHA):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self._tiers: dict[tuple[int, str], TierEstimate] = {}

    def seed(self, server: int, tiers: Mapping[str, Mapping[str, float]]) -> None:
        """Start server's estimates afresh from its worker's report: tier name ->
        {"bandwidth": bytes/s, "latency": s, "source": ...}. A (re)started worker forgets
        what its predecessor observed (it may run elsewhere)."""
        for key in [k for k in self._tiers if k[0] == server]:
            del self._tiers[key]
        for name, est in tiers.items():
            bw = float(est.get("bandwidth", 0.0))
            if not bw > 0.0:
                continue  # an unusable seed: the default for the tier stands
            self._tiers[(server, name)] = TierEstimate(
                1.0 / bw, max(0.0, float(est.get("latency", 0.0))),
                source=str(est.get("source", "worker")))

    def observe(self, server: int, tier: str, nbytes: int, seconds: float) -> TierEstimate:
        """A load of nbytes from tier took seconds on server: correct its bandwidth (the
        first observation replaces the seed, later ones are averaged with weight alpha)."""
        est = self._get(server, tier)
        if nbytes <= 0 or not seconds >= MIN_SECONDS:
            return est
        spb = max(seconds - est.latency, seconds * 0.5) / nbytes
        est.seconds_per_byte = spb if est.observed == 0 else (
            self.alpha * spb + (1.0 - self.alpha) * est.seconds_per_byte)
        est.observed += 1
        return est

    def estimate(self, server: int, tier: str) -> TierEstimate:
        """The current estimate of (server, tier) (a default when never seeded)."""
        return self._get(server, tier)

    def seconds(self, server: int, tier: str, nbytes: int) -> float:
        """Estimated seconds to load nbytes from tier on server."""
        est = self._get(server, tier)
        return est.latency + nbytes * est.seconds_per_byte

    def tier(self, server: int, tier: str, models=()) -> TierView:
        """The policy's view of (server, tier), holding models."""
        est = self._get(server, tier)
        return TierView(tier, est.bandwidth, est.latency, frozenset(models))

    def table(self) -> dict[tuple[int, str], TierEstimate]:
        """Every (server, tier) estimate made so far (for metrics and status)."""
        return dict(self._tiers)

    def _get(self, server: int, tier: str) -> TierEstimate:
        est = self._tiers.get((server, tier))
        if est is None:
            bw, latency = DEFAULTS.get(tier, _UNKNOWN)
            est = self._tiers[(server, tier)] = TierEstimate(1.0 / bw, latency)
        return est
