"""serving.estimates: seeded by the worker's tiers, corrected by the loads observed."""

import pytest

from serving.estimates import DEFAULTS, Estimates
from serving.policy import REGISTRY, Locality, ModelInfo, ServerView, Snapshot

MB = 10**6


def seeded():
    est = Estimates(alpha=0.5)
    est.seed(0, {"dram": {"bandwidth": 10e9, "latency": 0.0},
                 "local": {"bandwidth": 2e9, "latency": 0.001, "source": "profile"},
                 REGISTRY: {"bandwidth": 200e6, "latency": 0.01}})
    return est


def test_the_seed_is_the_workers_own_estimate():
    est = seeded()
    assert est.seconds(0, "local", 500 * MB) == pytest.approx(0.001 + 0.25)
    assert est.estimate(0, "local").source == "profile"
    assert est.estimate(0, "local").observed == 0


def test_the_first_observed_load_replaces_the_seed():
    est = seeded()
    est.observe(0, "local", 500 * MB, 1.001)  # the disk is 4x slower than its preset says
    assert est.seconds(0, "local", 500 * MB) == pytest.approx(1.001)
    assert est.estimate(0, "local").bandwidth == pytest.approx(500e6)


def test_estimates_converge_to_the_observed_loads():
    est = seeded()
    for _ in range(30):
        est.observe(0, REGISTRY, 800 * MB, 2.01)  # 400 MB/s observed, seeded 200 MB/s
    assert est.seconds(0, REGISTRY, 800 * MB) == pytest.approx(2.01, rel=1e-6)
    assert est.estimate(0, REGISTRY).observed == 30


def test_the_average_is_exponentially_weighted():
    est = seeded()
    est.observe(0, "local", 100 * MB, 1.001)  # 1e-8 s/B after the latency
    est.observe(0, "local", 100 * MB, 2.001)  # 2e-8 s/B: alpha 0.5 gives 1.5e-8
    assert est.estimate(0, "local").seconds_per_byte == pytest.approx(1.5e-8)
    errors = []
    for _ in range(10):  # a step change: the error halves with every load
        est.observe(0, "local", 100 * MB, 4.001)
        errors.append(abs(est.seconds(0, "local", 100 * MB) - 4.001))
    assert all(b == pytest.approx(a / 2) for a, b in zip(errors, errors[1:], strict=False))


def test_servers_and_tiers_are_corrected_independently():
    est = seeded()
    est.seed(1, {"local": {"bandwidth": 2e9, "latency": 0.001}})
    est.observe(0, "local", 500 * MB, 5.0)
    assert est.seconds(1, "local", 500 * MB) == pytest.approx(0.251)
    assert est.seconds(0, "dram", 500 * MB) == pytest.approx(0.05)


def test_loads_too_short_or_empty_say_nothing():
    est = seeded()
    before = est.estimate(0, "dram").seconds_per_byte
    est.observe(0, "dram", 500 * MB, 0.0)
    est.observe(0, "dram", 0, 1.0)
    assert est.estimate(0, "dram").seconds_per_byte == before
    assert est.estimate(0, "dram").observed == 0


def test_unseeded_tiers_use_defaults_ordered_by_speed():
    est = Estimates()
    bw = {t: est.estimate(3, t).bandwidth for t in ("dram", "local", REGISTRY)}
    assert bw["dram"] > bw["local"] > bw[REGISTRY]
    assert bw == pytest.approx({t: DEFAULTS[t][0] for t in bw})
    assert est.estimate(3, "pmem").bandwidth > 0


def test_a_reseeded_server_forgets_its_observations():
    est = seeded()
    est.observe(0, "local", 500 * MB, 5.0)
    est.seed(0, {"local": {"bandwidth": 2e9}, "bad": {"bandwidth": 0}})
    assert est.estimate(0, "local").observed == 0
    assert est.estimate(0, "bad").bandwidth == pytest.approx(100e6)  # a default, not 1/0


def test_alpha_is_checked():
    with pytest.raises(ValueError, match="alpha"):
        Estimates(alpha=0)


def test_an_observed_slow_dram_tier_changes_the_placement():
    """Estimates feed the policy: once server 0's DRAM loads are seen to be slow, the disk
    copy on server 1 wins."""
    est = Estimates()
    for s in (0, 1):
        est.seed(s, {"dram": {"bandwidth": 10e9}, "local": {"bandwidth": 1e9},
                     REGISTRY: {"bandwidth": 100e6}})

    def place():
        servers = [ServerView(s, tiers=(est.tier(s, "dram", ["m"] if s == 0 else []),
                                        est.tier(s, "local", ["m"] if s == 1 else [])),
                              registry=est.tier(s, REGISTRY)) for s in (0, 1)]
        return Locality().place("m", Snapshot.of(servers, [ModelInfo("m", 1000 * MB)])).server

    assert place() == 0
    est.observe(0, "dram", 1000 * MB, 3.0)  # 333 MB/s: slower than server 1's disk
    assert place() == 1
