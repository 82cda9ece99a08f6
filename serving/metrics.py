"""Prometheus metrics of the serving layer, in a registry of their own (one per Metrics).

Every method is thread-safe (prometheus_client's metrics lock internally), so the controller,
its worker threads and the HTTP layer may all record into one Metrics.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["Metrics"]

# seconds: a cold start from DRAM takes well under a second, from remote storage minutes
_LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2)
# observed / estimated load seconds: 1 is a perfect estimate
_RATIO_BUCKETS = (0.1, 0.25, 0.5, 0.8, 0.9, 1.1, 1.25, 2, 4, 10)


class Metrics:
    """The serving layer's metrics; render() gives the Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._cold_starts = Counter(
            "serving_cold_starts", "Model instances started, by model and by the tier loaded from",
            ["model", "tier"], registry=r)
        self._load_seconds = Histogram(
            "serving_load_seconds", "Seconds to load a model instance, by tier",
            ["tier"], buckets=_LOAD_BUCKETS, registry=r)
        self._first_token = Histogram(
            "serving_time_to_first_token_seconds",
            "Seconds from a request's arrival to its first output token",
            ["model"], buckets=_TTFT_BUCKETS, registry=r)
        self._token_interval = Histogram(
            "serving_time_per_output_token_seconds", "Seconds between output tokens",
            ["model"], buckets=_TPOT_BUCKETS, registry=r)
        self._queue_length = Gauge(
            "serving_queue_length", "Requests waiting for an instance", ["model"], registry=r)
        self._instances = Gauge(
            "serving_instances", "Model instances running", ["model"], registry=r)
        self._requests = Counter(
            "serving_requests", "Requests finished, by model and HTTP status",
            ["model", "status"], registry=r)
        self._placements = Counter(
            "serving_placements", "Cold starts placed, by model, server, policy and the "
            "tier expected to serve the load", ["model", "server", "policy", "tier"],
            registry=r)
        self._candidate = Gauge(
            "serving_placement_estimate_seconds", "Estimated startup seconds of each "
            "candidate server at the model's last placement", ["model", "server"], registry=r)
        self._estimate_ratio = Histogram(
            "serving_load_estimate_ratio", "Observed / estimated load seconds of a cold start, "
            "by the tier that served it", ["tier"], buckets=_RATIO_BUCKETS, registry=r)
        self._bandwidth = Gauge(
            "serving_tier_bandwidth_bytes_per_second", "Estimated load bandwidth per server "
            "and tier (seeded by the worker's tiers, corrected by observed loads)",
            ["server", "tier"], registry=r)
        self._candidates: dict[str, list[str]] = {}  # model -> servers in _candidate

    def cold_start(self, model: str, tier: str, load_seconds: float) -> None:
        """Count one instance of model started from tier, which took load_seconds to load."""
        self._cold_starts.labels(model=model, tier=tier).inc()
        self._load_seconds.labels(tier=tier).observe(load_seconds)

    def first_token(self, model: str, seconds: float) -> None:
        """Record one request's time to first token."""
        self._first_token.labels(model=model).observe(seconds)

    def token_interval(self, model: str, seconds: float) -> None:
        """Record the time one output token took (after the first)."""
        self._token_interval.labels(model=model).observe(seconds)

    def queue_length(self, model: str, n: int) -> None:
        """Set how many requests for model wait now."""
        self._queue_length.labels(model=model).set(n)

    def instances(self, model: str, n: int) -> None:
        """Set how many instances of model run now."""
        self._instances.labels(model=model).set(n)

    def request_done(self, model: str, status: int | str) -> None:
        """Count one finished request with the HTTP status its client saw."""
        self._requests.labels(model=model, status=str(status)).inc()

    def placement(self, model: str, server: str, policy: str, tier: str,
                  candidates: list[tuple[str, float]]) -> None:
        """Count one cold start of model placed on server by policy (expected from tier) and
        set the estimates of every candidate (server name, seconds) it was chosen from
        (from the controller's loop only: the candidate books are not locked)."""
        self._placements.labels(model=model, server=server, policy=policy, tier=tier).inc()
        for old in self._candidates.pop(model, []):
            self._candidate.remove(model, old)
        for name, seconds in candidates:
            self._candidate.labels(model=model, server=name).set(seconds)
        self._candidates[model] = [name for name, _ in candidates]

    def load_estimate(self, tier: str, estimated: float, observed: float) -> None:
        """Record how a load's observed seconds compare with its estimate."""
        if estimated > 0:
            self._estimate_ratio.labels(tier=tier).observe(observed / estimated)

    def bandwidth(self, server: str, tier: str, bytes_per_second: float) -> None:
        """Set the load bandwidth now estimated for server's tier."""
        self._bandwidth.labels(server=server, tier=tier).set(bytes_per_second)

    def forget(self, model: str) -> None:
        """Drop model's gauges (after its deployment is deleted), so no stale value remains."""
        for gauge in (self._queue_length, self._instances):
            try:
                gauge.remove(model)
            except KeyError:
                pass
        for old in self._candidates.pop(model, []):
            self._candidate.remove(model, old)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
