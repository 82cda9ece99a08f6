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

    def forget(self, model: str) -> None:
        """Drop model's gauges (after its deployment is deleted), so no stale value remains."""
        for gauge in (self._queue_length, self._instances):
            try:
                gauge.remove(model)
            except KeyError:
                pass

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
