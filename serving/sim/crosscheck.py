"""The simulator held against a measured serving.run: calibrate from the run, replay, compare.

    setup = calibrated_setup(run)                       # run: Measured (tools/bench_sim.py)
    res = simulate(setup, run.workload, run.policy)
    rows = compare(run, res)                            # measured, simulated, error, within

What is calibrated, from numbers the run measured per operation (never from its TTFTs):
each tier's load bandwidth (model bytes / the mean load seconds of that tier's cold starts;
a tier the run never loaded from keeps serving.estimates' default), the bandwidths the
controller's estimates started from (its workers' seeds, which the policies decide on until
loads correct them), the build seconds after a load, the decode step (the mean time per
output token), and the first-token cost of a warm request (a line fitted through TTFTs of
warm requests at two prompt lengths, sent after the measured stream). The cluster mirrors
the run: one machine with one slot per worker (each worker has its own DRAM and disk
tiers), the same capacities, the same models on the same disks at the start, the same
keep-alive, concurrency and instance bounds, the same requests. What is then compared is
what scheduling and queueing make of them: TTFT (mean, p50, p99) and cold starts per tier,
against TOLERANCE (docs/SIMULATOR.md says why).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.estimates import DEFAULTS
from serving.sim.report import TIERS, Result
from serving.sim.setup import Setup
from serving.sim.timing import GPUS, Hardware

__all__ = ["TOLERANCE", "Measured", "calibrated_setup", "compare", "fit_first_token",
           "format_rows"]

#: relative error allowed per statistic; cold starts per tier: that share or COLD_SLACK
TOLERANCE = {"ttft_mean": 0.25, "ttft_p50": 0.25, "ttft_p99": 0.5, "cold": 0.2}
COLD_SLACK = 2


@dataclass(frozen=True)
class Measured:
    """A real run: its cluster, its requests, what it measured per operation and what the
    clients saw (ttft per request of workload, cold starts per tier)."""

    policy: str
    workers: int
    models: int
    model_bytes: int
    dram_bytes: float
    disk_bytes: float
    initial: dict
    keep_alive: float
    target_concurrency: int
    max_instances: int
    load_seconds: dict  # tier -> mean seconds of its loads
    build_seconds: float
    decode_seconds: float
    prefill: float  # seconds per prompt token of a warm request
    overhead: float  # a warm request's fixed seconds to its first token
    workload: object  # serving.sim.workload.Workload
    ttft: np.ndarray
    cold: dict
    estimates: dict | None = None  # tier -> bytes/s the controller started from (seeds)


def fit_first_token(samples: list[tuple[int, float]]) -> tuple[float, float]:
    """(overhead s, prefill s per token) of TTFT = overhead + prefill * tokens, least
    squares over (prompt tokens, ttft) samples of warm requests; neither below 0."""
    x = np.asarray([s[0] for s in samples], dtype=np.float64)
    y = np.asarray([s[1] for s in samples], dtype=np.float64)
    if len(set(x.tolist())) < 2:
        return float(max(y.mean(), 0.0)), 0.0
    slope, icept = (float(v) for v in np.polyfit(x, y, 1))
    if slope < 0:  # noise: no measurable prefill
        return float(max(y.mean(), 0.0)), 0.0
    if icept < 0:  # no measurable fixed cost: a line through the origin
        return 0.0, float((x @ y) / (x @ x))
    return icept, slope


def calibrated_setup(m: Measured) -> Setup:
    """The simulated cluster of run m (see the module docstring)."""
    lat = Hardware.from_presets(GPUS["cpu"], gpus=1)
    bandwidths = {}
    for tier in TIERS:
        seconds = m.load_seconds.get(tier)
        if seconds:
            _, latency = lat.tier(tier)
            bandwidths[tier] = m.model_bytes / max(seconds - latency, seconds * 0.5) / 1e9
        else:
            bandwidths[tier] = DEFAULTS[tier][0] / 1e9
    return Setup(servers=m.workers, gpus_per_server=1, gpu="cpu", models=m.models,
                 dram_gb=m.dram_bytes / 1e9, ssd_gb=m.disk_bytes / 1e9,
                 initial={int(k): list(v) for k, v in m.initial.items()},
                 keep_alive=m.keep_alive, target_concurrency=m.target_concurrency,
                 max_instances=m.max_instances, build=m.build_seconds,
                 bandwidths=bandwidths, estimates=m.estimates or None,
                 measured={"nbytes": m.model_bytes, "prefill": m.prefill,
                           "decode": m.decode_seconds, "overhead": m.overhead})


def _error(measured: float, simulated: float) -> float:
    return abs(simulated - measured) / measured if measured > 0 else float(simulated != 0)


def compare(m: Measured, res: Result) -> list[dict]:
    """One row per statistic: measured, simulated, relative error, within TOLERANCE."""
    rows = []
    ok = ~np.isnan(m.ttft)
    for name, q in (("ttft_mean", None), ("ttft_p50", 50), ("ttft_p99", 99)):
        def stat(a, q=q):
            return float(a.mean() if q is None else np.percentile(a, q))

        got, want = stat(res.ttft[ok]), stat(m.ttft[ok])
        err = _error(want, got)
        rows.append(dict(stat=name, measured=want, simulated=got, error=err,
                         within=err <= TOLERANCE[name]))
    for tier in (*TIERS, "total"):
        want = sum(m.cold.values()) if tier == "total" else m.cold.get(tier, 0)
        got = sum(res.cold.values()) if tier == "total" else res.cold.get(tier, 0)
        err = _error(want, got)
        rows.append(dict(stat=f"cold_{tier}", measured=want, simulated=got, error=err,
                         within=abs(got - want) <= max(COLD_SLACK, TOLERANCE["cold"] * want)))
    return rows


def format_rows(rows: list[dict]) -> str:
    """The comparison as a text table."""
    lines = [f"{'':<14}{'measured':>10}{'simulated':>11}{'error':>8}  within"]
    for r in rows:
        lines.append(f"{r['stat']:<14}{r['measured']:>10.3f}{r['simulated']:>11.3f}"
                     f"{r['error']:>8.1%}  {'yes' if r['within'] else 'NO'}")
    return "\n".join(lines)
