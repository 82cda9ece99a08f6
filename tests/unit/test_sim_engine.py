"""serving.sim's engine on small hand-checked scenarios: cold starts per tier, keep-alive,
eviction, the DRAM cache, migration, determinism, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from serving.sim import Setup, Simulator, Workload, simulate, synthetic
from serving.sim.__main__ import main

GB = 1e9
# one 7B model: 13.48 GB; bandwidths chosen so load times are round numbers
BW = {"dram": 13.48, "local": 6.74, "registry": 1.348}  # GB/s: 1 s, 2 s, 10 s (+10 ms)


def _setup(**kw) -> Setup:
    base = dict(servers=1, gpus_per_server=1, models=2, dram_gb=20, ssd_gb=100,
                ssd_copies=0, keep_alive=30.0, bandwidths=BW)
    return Setup(**{**base, **kw})


def _requests(*rows) -> Workload:
    """rows of (arrival, model number, prompt, output)."""
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    return Workload(a[:, 0], a[:, 1].astype(np.int32), a[:, 2].astype(np.int32),
                    a[:, 3].astype(np.int32))


def test_a_cold_start_from_the_registry_then_warm_then_from_dram():
    w = _requests((0, 0, 100, 10), (1000, 0, 100, 10), (1005, 0, 100, 10))
    sim = Simulator(_setup(), "locality")
    res = sim.run(w)
    m = sim.zoo[0]
    assert m.nbytes == int(6.74e9 * 2)
    assert res.cold == {"registry": 1, "dram": 1}  # expired after 30 s, back from DRAM
    assert res.startup[0] == pytest.approx(10.01, abs=1e-3)
    assert res.startup[1] == pytest.approx(1.0, abs=1e-3)
    assert res.startup[2] == 0.0  # the instance was still there
    assert res.ttft[2] == pytest.approx(100 * m.prefill)


def test_keep_alive_decides_warm_or_cold():
    w = _requests((0, 0, 10, 1), (20, 0, 10, 1), (100, 0, 10, 1))
    res = simulate(_setup(keep_alive=30.0), w, "locality")
    assert sum(res.cold.values()) == 2  # t=20 warm (idle 10 s), t=100 cold
    res = simulate(_setup(keep_alive=5.0), w, "locality")
    assert sum(res.cold.values()) == 3


def test_gpu_seconds_count_load_serving_and_keep_alive():
    w = _requests((0, 0, 10, 1))
    res = simulate(_setup(keep_alive=30.0), w, "locality")
    prefill = Simulator(_setup(), "locality").zoo[0].prefill * 10
    # load 10.01 s, serve the prefill (one token), then idle 30 s
    assert res.gpu_seconds == pytest.approx(10.01 + prefill + 30.0, abs=1e-3)


def test_an_idle_instance_is_evicted_for_another_model_and_tiers_are_lru():
    # one slot; m0 then m1: m1 evicts idle m0; DRAM (20 GB) holds one of them
    w = _requests((0, 0, 10, 1), (15, 1, 10, 1), (30, 0, 10, 1))
    sim = Simulator(_setup(ssd_copies=0), "locality")
    res = sim.run(w)
    assert res.cold == {"registry": 2, "local": 1}  # m0 again: DRAM now holds m1
    assert res.startup[1] == pytest.approx(10.01, abs=1e-3)
    assert res.startup[2] == pytest.approx(2.0, abs=1e-3)
    machine = sim.cluster.machines[0]
    assert list(machine.dram.models) == ["m0"] and set(machine.ssd.models) == {"m0", "m1"}


def test_the_serverless_baseline_keeps_nothing_in_dram():
    w = _requests((0, 0, 10, 1), (100, 0, 10, 1))
    assert simulate(_setup(), w, "serverless").cold == {"registry": 1, "local": 1}
    assert simulate(_setup(), w, "random").cold == {"registry": 1, "dram": 1}


def test_loads_on_one_machine_queue_on_its_io():
    # two slots on one machine, two models at once: the second load waits for the first
    w = _requests((0, 0, 10, 1), (0, 1, 10, 1))
    res = simulate(_setup(gpus_per_server=2), w, "locality")
    assert sorted(res.startup) == pytest.approx([10.01, 20.02], abs=1e-3)


def test_locality_places_on_the_machine_holding_the_model():
    w = _requests((0, 1, 10, 1))
    sim = Simulator(_setup(servers=3, ssd_copies=1), "locality")  # m1 on machine 1's SSD
    res = sim.run(w)
    assert res.cold == {"local": 1} and res.startup[0] == pytest.approx(2.0, abs=1e-3)
    assert simulate(_setup(servers=3, ssd_copies=1), w, "least-loaded").cold == {
        "registry": 1}  # machine 0 first, ignoring locality


def test_a_migration_frees_the_server_holding_the_model():
    """Two one-GPU machines, both SSDs holding m0, machine 0's SSD holding m1 too. A long
    m0 request runs on machine 0; m1 arrives. Without migration m1 loads from the registry
    on machine 1 (10 s); with it, the m0 request moves to machine 1 (m0 from its SSD, 2 s,
    plus the recompute), then m1 starts on machine 0 from its SSD (2 s)."""
    w = _requests((0, 0, 10, 5000), (10, 1, 10, 1))
    res = {}
    for name in ("locality", "locality+migration"):
        sim = Simulator(_setup(servers=2), name)
        for machine, model in ((0, "m0"), (1, "m0"), (0, "m1")):
            sim.cluster.store(machine, "local", model)
        res[name] = sim.run(w)
        assert res[name].ttft[0] > 0  # the moved request was served
    plain, moved = res["locality"], res["locality+migration"]
    assert plain.migrations == 0 and moved.migrations == 1
    assert plain.startup[1] == pytest.approx(10.01, abs=1e-3)
    m0 = Simulator(_setup(), "locality").zoo[0]
    # recomputed once m0 is ready on machine 1 (t = 12): prompt + tokens decoded by then
    tokens = 10 + int((12 - 2 - 10 * m0.prefill) / m0.decode_seconds) + 1
    recompute = m0.cost_a * tokens + m0.cost_b
    assert moved.startup[1] == pytest.approx(2.0 + recompute + 2.0, abs=0.01)
    assert moved.cold == {"local": 3} and plain.cold == {"local": 1, "registry": 1}


def test_the_same_seed_gives_the_same_result():
    w = synthetic(2000, rps=2.0, cv=4.0, models=16, seed=7)
    for name in ("serverless", "locality+migration"):
        a = simulate(Setup(models=16, seed=3), w, name)
        b = simulate(Setup(models=16, seed=3), w, name)
        assert np.array_equal(a.startup, b.startup) and a.cold == b.cold
        assert a.summary()["gpu_seconds"] == b.summary()["gpu_seconds"]
    c = simulate(Setup(models=16, seed=4), w, "serverless")  # another draw of placements
    assert not np.array_equal(a.startup, c.startup) or a.cold != c.cold


def test_the_cli_prints_a_table_and_writes_csv_and_plots(tmp_path, capsys):
    rc = main(["--servers", "2", "--gpus-per-server", "2", "--models", "6", "--rps",
               "0.5,1", "--requests", "300", "--policy", "serverless,locality", "--quiet",
               "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "serverless" in out and "locality" in out and "startup mean" in out
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "sim.csv" in names and "rate-startup.png" in names
    assert any(n.startswith("cdf-ttft") for n in names)
    rows = (tmp_path / "sim.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[0].startswith("policy,rps,requests,startup_mean")


def test_a_model_waiting_for_a_slot_takes_one_as_soon_as_it_idles():
    """One slot busy with m0 when m1 arrives: as serving.controller, m1 is placed again the
    moment m0's instance goes idle (m0 unloaded for it), not when its keep-alive ends."""
    w = _requests((0, 0, 10, 100), (1, 1, 10, 1))
    m0 = Simulator(_setup(), "locality").zoo[0]
    idle = 10.01 + 10 * m0.prefill + 99 * m0.decode_seconds  # m0's request ends
    res = simulate(_setup(keep_alive=30.0), w, "locality")
    assert res.startup[1] == pytest.approx(idle + 10.01 - 1, abs=1e-2)


def test_locality_waits_for_a_busy_holder_that_idles_soon():
    """m0 and m1 on machine 0's SSD; m0 serves a request there when m1 arrives. Starting m1
    now means machine 1 and the registry (10 s); machine 0 idles in ~1.8 s, then loads m1
    from its SSD (2 s; m0's reload there, 1 s from DRAM, is the penalty): locality waits,
    and m1 starts there the moment m0 idles. Random does not wait."""
    w = _requests((0, 0, 10, 100), (3, 1, 10, 1))
    res = {}
    for name in ("locality", "random"):
        sim = Simulator(_setup(servers=2), name)
        sim.cluster.store(0, "local", "m0")
        sim.cluster.store(0, "local", "m1")
        res[name] = sim.run(w)
    m0 = sim.zoo[0]
    idle = 2.0 + 10 * m0.prefill + 99 * m0.decode_seconds
    assert res["locality"].cold == {"local": 2}
    assert res["locality"].startup[1] == pytest.approx(idle + 2.0 - 3, abs=1e-2)
    # random never waits: m1 starts at once, from the registry on the free machine, or
    # from machine 0's SSD when random had put m0 on machine 1
    assert min(abs(res["random"].startup[1] - s) for s in (10.01, 2.0)) < 1e-2


def test_policies_decide_on_the_controllers_estimates_which_loads_correct():
    """m0 on machine 0's SSD (2 s) and in machine 1's DRAM (1 s). The true speeds pick
    machine 1; seeds that think DRAM slow (0.01 GB/s) pick machine 0's SSD, and that load
    is observed. The load always comes from the fastest tier holding the model, whatever
    the estimate (as a worker's ckpt store reads its tiers in order)."""
    w = _requests((0, 0, 10, 1))
    res = {}
    for seeds in (None, {"dram": 0.01e9, "local": 6.74e9, "registry": 1.348e9}):
        sim = Simulator(_setup(servers=2, ssd_copies=1, estimates=seeds), "locality")
        sim.cluster.store(1, "dram", "m0")
        res[seeds is None] = (sim.run(w), sim.cluster.estimates)
    exact, _ = res[True]
    seeded, est = res[False]
    assert exact.cold == {"dram": 1} and seeded.cold == {"local": 1}
    assert est.estimate(0, "local").observed == 1
    assert est.estimate(1, "dram").bandwidth == pytest.approx(0.01e9)  # never observed
