"""What a simulation reports: per-request latencies, summaries, the table and the CSV.

    res.summary()                  # mean / p50 / p99 startup and TTFT, GPU-s, cold starts
    print(table(results)); write_csv(path, results)

Startup latency: from a request's arrival until an instance starts serving it (queueing and
any cold start); time to first token (TTFT): startup + the prompt's prefill. Cold starts are
counted by the tier the load came from ("dram", "local" = the SSD, "registry"), migration
destinations' loads included. GPU-seconds: the GPUs of every instance's slot from the start
of its load until it was unloaded (idle keep-alive time included).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

import numpy as np

__all__ = ["COLUMNS", "Result", "table", "write_csv"]

TIERS = ("dram", "local", "registry")
COLUMNS = ("policy", "rps", "requests", "startup_mean", "startup_p50", "startup_p99",
           "ttft_mean", "ttft_p50", "ttft_p99", "gpu_seconds", "cold_dram", "cold_local",
           "cold_registry", "migrations", "decisions", "examined_mean", "examined_max",
           "simulated_seconds", "wall_seconds")


@dataclass
class Result:
    """One run's record (filled in by serving.sim.engine)."""

    policy: str
    rps: float = 0.0
    startup: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ttft: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gpu_seconds: float = 0.0
    cold: dict[str, int] = field(default_factory=dict)
    migrations: int = 0
    decisions: int = 0
    examined: int = 0
    examined_max: int = 0
    simulated_seconds: float = 0.0
    wall_seconds: float = 0.0
    _start: list = field(default_factory=list, repr=False)
    _first: list = field(default_factory=list, repr=False)
    _arrival: list = field(default_factory=list, repr=False)

    def begin(self, n: int) -> None:
        self._start, self._first, self._arrival = [0.0] * n, [0.0] * n, [0.0] * n

    def served(self, i: int, arrival: float, start: float, first: float) -> None:
        self._arrival[i], self._start[i], self._first[i] = arrival, start, first

    def decided(self, examined: int) -> None:
        self.decisions += 1
        self.examined += examined
        if examined > self.examined_max:
            self.examined_max = examined

    def end(self, now: float, rps: float) -> None:
        arrival = np.asarray(self._arrival)
        self.startup = np.asarray(self._start) - arrival
        self.ttft = np.asarray(self._first) - arrival
        self._start, self._first, self._arrival = [], [], []
        self.simulated_seconds, self.rps = now, rps

    def summary(self) -> dict:
        """One row of COLUMNS."""
        def stat(a: np.ndarray, q: float | None) -> float:
            if not len(a):
                return float("nan")
            return float(a.mean() if q is None else np.percentile(a, q))

        return dict(
            policy=self.policy, rps=round(self.rps, 6), requests=len(self.startup),
            startup_mean=stat(self.startup, None), startup_p50=stat(self.startup, 50),
            startup_p99=stat(self.startup, 99), ttft_mean=stat(self.ttft, None),
            ttft_p50=stat(self.ttft, 50), ttft_p99=stat(self.ttft, 99),
            gpu_seconds=self.gpu_seconds,
            **{f"cold_{t}": self.cold.get(t, 0) for t in TIERS},
            migrations=self.migrations, decisions=self.decisions,
            examined_mean=self.examined / self.decisions if self.decisions else 0.0,
            examined_max=self.examined_max, simulated_seconds=self.simulated_seconds,
            wall_seconds=self.wall_seconds)


def table(results: list[Result], baseline: str = "serverless") -> str:
    """A text table, one row per result; `x base` is the baseline's mean startup latency
    (same request rate) over the row's."""
    base = {r.rps: r.summary()["startup_mean"] for r in results if r.policy == baseline}
    head = (f"{'policy':<19}{'rps':>7}{'reqs':>8}{'startup mean':>13}{'p50':>8}{'p99':>8}"
            f"{'TTFT mean':>10}{'p50':>8}{'p99':>8}{'GPU-s':>10}{'cold d/l/r':>16}"
            f"{'migr':>6}{'x base':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        s = r.summary()
        b = base.get(r.rps)
        ratio = f"{b / s['startup_mean']:.1f}" if b and s["startup_mean"] > 0 else "-"
        cold = f"{s['cold_dram']}/{s['cold_local']}/{s['cold_registry']}"
        lines.append(
            f"{s['policy']:<19}{s['rps']:>7.3g}{s['requests']:>8}{s['startup_mean']:>13.3f}"
            f"{s['startup_p50']:>8.3f}{s['startup_p99']:>8.2f}{s['ttft_mean']:>10.3f}"
            f"{s['ttft_p50']:>8.3f}{s['ttft_p99']:>8.2f}{s['gpu_seconds']:>10.0f}"
            f"{cold:>16}{s['migrations']:>6}{ratio:>8}")
    return "\n".join(lines)


def write_csv(path: str, results: list[Result]) -> None:
    """One row of COLUMNS per result."""
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=COLUMNS)
        out.writeheader()
        for r in results:
            out.writerow(r.summary())
