"""The cross-check's pure parts: the first-token fit, the calibrated cluster, the comparison
(a "measured" run that is the simulator itself agrees with it exactly), and the benchmark's
request stream and scale workload at a small size (no server is run)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from serving.sim import Simulator
from serving.sim.crosscheck import (
    TOLERANCE,
    Measured,
    calibrated_setup,
    compare,
    fit_first_token,
    format_rows,
)

TOOLS = os.path.join(os.path.dirname(__file__), "..", "..", "tools")
sys.path.insert(0, os.path.abspath(TOOLS))

import bench_sim  # noqa: E402
import benchkit  # noqa: E402


def test_fit_first_token_recovers_a_line_and_clamps():
    samples = [(w, 0.05 + 0.002 * w) for w in (4, 64, 4, 64)]
    assert fit_first_token(samples) == pytest.approx((0.05, 0.002))
    assert fit_first_token([(4, 0.3), (64, 0.2)]) == pytest.approx((0.25, 0.0))  # no slope
    over, per = fit_first_token([(4, 0.0), (64, 0.6)])  # through the origin
    assert over == 0.0 and per > 0
    assert fit_first_token([(8, 0.1), (8, 0.3)]) == pytest.approx((0.2, 0.0))


def _measured(ttft=None, cold=None) -> Measured:
    k = dict(bench_sim.knobs(), XC_REQUESTS=120, XC_RATE=1.5)
    w = bench_sim._stream(k, models=4, zipf=1.1, seed=0)
    return Measured(policy="locality", workers=3, models=4, model_bytes=64 << 20,
                    dram_bytes=1.65 * (64 << 20), disk_bytes=2.4 * (64 << 20),
                    initial={0: ["m0", "m1"], 1: ["m2", "m3"], 2: ["m0", "m1"]},
                    keep_alive=4.0, target_concurrency=8, max_instances=1,
                    load_seconds={"dram": 0.02, "local": 0.15, "registry": 0.9},
                    build_seconds=0.3, decode_seconds=0.05, prefill=0.001, overhead=0.08,
                    workload=w, ttft=np.zeros(len(w)) if ttft is None else ttft,
                    cold=cold or {})


def test_the_calibrated_cluster_mirrors_the_run():
    m = _measured()
    s = calibrated_setup(m)
    hw = s.hardware()
    assert (s.servers, s.gpus_per_server, s.slot_gpus()) == (3, 1, 1)
    assert hw.load_seconds("local", m.model_bytes) == pytest.approx(0.15, rel=1e-3)
    assert hw.load_seconds("registry", m.model_bytes) == pytest.approx(0.9, rel=1e-3)
    assert s.layout() == m.initial and hw.build == 0.3
    zoo = s.zoo()
    assert zoo[0].nbytes == m.model_bytes and zoo[0].prefill_seconds(10) == pytest.approx(0.09)


def test_a_run_that_is_the_simulator_agrees_with_it():
    m = _measured()
    res = Simulator(calibrated_setup(m), "locality").run(m.workload)
    same = _measured(ttft=res.ttft, cold=dict(res.cold))
    rows = compare(same, Simulator(calibrated_setup(same), "locality").run(same.workload))
    assert all(r["within"] and r["error"] == 0 for r in rows), format_rows(rows)
    off = _measured(ttft=res.ttft * 3, cold=dict(res.cold))  # errors of 2/3
    rows = compare(off, res)
    assert max(TOLERANCE.values()) < 2 / 3
    assert not any(r["within"] for r in rows if r["stat"].startswith("ttft"))
    assert "ttft_mean" in format_rows(rows)


def test_the_crosscheck_stream_scales_the_trace():
    k = dict(bench_sim.knobs(), XC_REQUESTS=300, XC_RATE=1.5, XC_MAX_TOKENS=16)
    w = bench_sim._stream(k, models=6, zipf=1.1, seed=0)
    assert len(w) == 300 and w.rate == pytest.approx(1.5)
    assert w.prompt.min() >= 4 and w.prompt.max() <= 64
    assert w.output.min() >= 1 and w.output.max() <= 16


def test_the_scale_workloads_are_registered_and_run_small(monkeypatch, tmp_path):
    for name in ("sim-scale-locality", "sim-scale-locality-migration", "sim-scale-serverless",
                 "sim-crosscheck"):
        assert benchkit.WORKLOADS[name].group == "sim"
    for key, value in dict(SERVERS=20, REQUESTS=3000, MODELS=40, RPS=10).items():
        monkeypatch.setenv(f"BAS_BENCH_SIM_{key}", str(value))
    ctx = benchkit.Context(device="", size=0, threads=1, workdir=str(tmp_path), cold=False,
                           repeat=1)
    (rec,) = list(benchkit.WORKLOADS["sim-scale-locality"].fn(ctx))
    assert rec["requests"] == 3000 and rec["servers"] == 20 and rec["slots"] == 80
    assert rec["decisions"] > 0 and rec["seconds"] > 0 and rec["examined_max"] >= 1
