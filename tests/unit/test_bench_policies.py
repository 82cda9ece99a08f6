"""The policy benchmark's harness logic: the seeded bursty stream, the starting layout of the
disk tiers, its knobs and its records (no server is run)."""

import os
import statistics
import sys
from collections import Counter

import pytest

TOOLS = os.path.join(os.path.dirname(__file__), "..", "..", "tools")
sys.path.insert(0, os.path.abspath(TOOLS))

import bench_policies  # noqa: E402
import benchkit  # noqa: E402
from loadgen import Result  # noqa: E402


def test_the_stream_is_seeded_bursty_and_skewed():
    a = bench_policies.arrivals(4000, rate=2.0, cv=4.0, zipf=1.1, models=6, seed=3)
    assert a == bench_policies.arrivals(4000, rate=2.0, cv=4.0, zipf=1.1, models=6, seed=3)
    assert a != bench_policies.arrivals(4000, rate=2.0, cv=4.0, zipf=1.1, models=6, seed=4)
    times = [t for t, _ in a]
    assert times == sorted(times)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(0.5, rel=0.2)
    assert statistics.pstdev(gaps) / mean == pytest.approx(4.0, rel=0.3)
    counts = Counter(m for _, m in a).most_common()
    assert len(counts) == 6 and counts[0][1] > 4 * counts[-1][1]  # Zipf: a popular head


def test_a_cv_of_one_is_poisson_like():
    a = bench_policies.arrivals(4000, rate=1.0, cv=1.0, zipf=0.0, models=3, seed=0)
    gaps = [b[0] - x[0] for x, b in zip(a, a[1:], strict=False)]
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, rel=0.1)


def test_the_disk_layout_spreads_the_models_over_the_workers():
    assert bench_policies.layout(6, 3, 2) == {0: ["m0", "m1"], 1: ["m2", "m3"],
                                              2: ["m4", "m5"]}
    held = bench_policies.layout(6, 3, 3)
    assert all(len(ms) == 3 for ms in held.values())
    assert {m for ms in held.values() for m in ms} == {f"m{i}" for i in range(6)}


def test_knobs_read_the_environment(monkeypatch):
    monkeypatch.setenv("BAS_BENCH_POLICY_RATE", "0.5")
    monkeypatch.setenv("BAS_BENCH_POLICY_WORKERS", "4")
    k = bench_policies.knobs()
    assert k["RATE"] == 0.5 and k["WORKERS"] == 4 and k["MODELS"] == 8  # the default
    monkeypatch.setenv("BAS_BENCH_POLICY_MODELS", "0")
    with pytest.raises(ValueError, match="MODELS"):
        bench_policies.knobs()


def test_every_policy_is_a_registered_workload():
    for name in ("policy-locality", "policy-locality-migration", "policy-random",
                 "policy-least-loaded"):
        assert benchkit.WORKLOADS[name].group == "policy"
        assert bench_policies.POLICIES[name] in benchkit.WORKLOADS[name].doc


def test_a_record_has_the_ttft_percentiles_and_cold_starts_per_tier():
    k = bench_policies.knobs()
    label = frozenset({("model", "m0"), ("tier", "dram")})
    before = {("serving_cold_starts_total", label): 1.0}
    after = {("serving_cold_starts_total", label): 3.0,
             ("serving_cold_starts_total", frozenset({("model", "m1"), ("tier", "local")})): 1.0}
    results = [Result(ok=True, ttft=t) for t in (0.1, 0.2, 0.3, 4.0)] + [
        Result(ok=False, error="HTTP 503")]
    ctx = benchkit.Context(device="/tmp", size=1, threads=1, workdir="/tmp", cold=False)
    r = bench_policies._record("policy-random", "random", ctx, k, 100, "/reg", results, 9.0,
                               before, after, "x: moving 2 inference(s) of m1 off worker-0")
    assert r["cold_starts"] == {"dram": 2, "local": 1, "registry": 0}
    assert r["cold_starts_total"] == 3 and r["migrations"] == 1
    assert r["requests"] == 5 and r["failed"] == 1 and not r["valid"]
    assert r["seconds"] == r["ttft_p99"] and r["ttft_max"] == 4.0
    assert r["ttft_mean"] == pytest.approx(1.15)
