"""serving.sim as benchmark workloads: the simulator's speed at scale, and the cross-check of
the simulator against a real serving.run.

    tools/bench sim-scale-locality --rounds 3                  # 1000 servers, 1M requests
    tools/bench compare sim-scale-locality sim-scale-serverless --rounds 3
    tools/bench sim-crosscheck --size 64M --rounds 1 --device /var/tmp/bas-bench

sim-scale-<policy>: a synthetic stream (Gamma arrivals, Zipf popularity, lengths from the
bundled Azure trace) through a cluster of SERVERS machines of GPUS A40s; `seconds` is the
simulation alone (the stream is generated before the clock starts), also per request and
per decision. Knobs (BAS_BENCH_SIM_<NAME>): SERVERS (1000), GPUS (4), REQUESTS (1000000),
MODELS (1000), RPS (300), CV (2), KEEP_ALIVE (60), MAX_INSTANCES (64), SEED (0).

sim-crosscheck: the first XC_REQUESTS requests of the bundled Azure LLM trace, time-scaled
to XC_RATE requests/s, given models by Zipf popularity, prompts of context/XC_WORDS words
(4..64) and outputs of generated/16 tokens (1..XC_MAX_TOKENS), against a real serving.run
set up as tools/bench_policies sets it up (its BAS_BENCH_POLICY_* knobs: MODELS, WORKERS,
DRAM_MODELS, DISK_MODELS, KEEP_ALIVE, ZIPF, SEED, and REGISTRY_RATE with its emulated
registry link where it has one) with XC_POLICY; then serving.sim calibrated
from that run (serving/sim/crosscheck.py) replays the same requests. The record has measured
and simulated TTFT (mean, p50, p99) and cold starts per tier, and whether each is within
serving.sim.crosscheck.TOLERANCE. Knobs: XC_REQUESTS (300), XC_RATE (1.5), XC_POLICY
(locality), XC_WORDS (32), XC_MAX_TOKENS (16).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
from benchkit import Context, workload

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from serving.sim import Setup, Simulator, Workload, read_llm_trace, synthetic  # noqa: E402
from serving.sim.crosscheck import (  # noqa: E402
    Measured,
    calibrated_setup,
    compare,
    fit_first_token,
    format_rows,
)
from serving.sim.setup import SIM_POLICIES  # noqa: E402
from serving.sim.workload import zipf_models  # noqa: E402

_KNOBS = dict(SERVERS=1000, GPUS=4, REQUESTS=1_000_000, MODELS=1000, RPS=300.0, CV=2.0,
              KEEP_ALIVE=60.0, MAX_INSTANCES=64, SEED=0, XC_REQUESTS=300, XC_RATE=1.5,
              XC_POLICY="locality", XC_WORDS=32, XC_MAX_TOKENS=16)
_BUILD = re.compile(r"ready on \S+: loaded from (\S+) in ([0-9.]+) s \(\+([0-9.]+) s build\)")


def knobs() -> dict:
    """The knobs, from $BAS_BENCH_SIM_<NAME> where set (same type as the default)."""
    return {k: type(v)(os.environ.get(f"BAS_BENCH_SIM_{k}", v)) for k, v in _KNOBS.items()}


# -- the simulator's speed ---------------------------------------------------------------------


def _scale_name(policy: str) -> str:
    return f"sim-scale-{policy.replace('+', '-')}"


def _scale(policy: str, ctx: Context):
    k = knobs()
    setup = Setup(servers=k["SERVERS"], gpus_per_server=k["GPUS"], models=k["MODELS"],
                  keep_alive=k["KEEP_ALIVE"], max_instances=k["MAX_INSTANCES"],
                  seed=k["SEED"])
    w = synthetic(k["REQUESTS"], rps=k["RPS"], cv=k["CV"], models=k["MODELS"], seed=k["SEED"])
    for _ in range(ctx.repeat):
        sim = Simulator(setup, policy)
        start = time.perf_counter()
        res = sim.run(w)
        seconds = time.perf_counter() - start
        s = res.summary()
        yield dict(workload=_scale_name(policy), group="sim", role="ours", policy=policy,
                   device="sim://", is_pmem=False, bytes_written=0, size=ctx.size,
                   seconds=seconds, servers=k["SERVERS"], gpus_per_server=k["GPUS"],
                   slots=len(sim.cluster.slots), requests=len(w), models=k["MODELS"],
                   rps=k["RPS"], us_per_request=seconds / len(w) * 1e6,
                   decisions=s["decisions"], examined_mean=s["examined_mean"],
                   examined_max=s["examined_max"], startup_mean=s["startup_mean"],
                   ttft_p99=s["ttft_p99"], cold_starts=res.cold, migrations=res.migrations,
                   simulated_seconds=res.simulated_seconds)


def _register_scale(policy: str) -> None:
    def run(ctx: Context):
        return _scale(policy, ctx)

    run.__doc__ = f"serving.sim at scale (1000 servers, 1M requests) with {policy!r}"
    workload(_scale_name(policy), "sim")(run)


for _policy in SIM_POLICIES:
    _register_scale(_policy)


# -- the cross-check against a real serving.run ------------------------------------------------


def _stream(k: dict, models: int, zipf: float, seed: int) -> Workload:
    t = read_llm_trace()
    n = min(k["XC_REQUESTS"], len(t.times))
    times = t.times[:n] * (((n - 1) / t.times[n - 1]) / k["XC_RATE"])
    words = np.clip(t.context[:n] // k["XC_WORDS"], 4, 64).astype(np.int32)
    out = np.clip(t.generated[:n] // 16, 1, k["XC_MAX_TOKENS"]).astype(np.int32)
    return Workload(times, zipf_models(n, models, zipf, np.random.default_rng(seed)), words,
                    out, "azure-llm-cpu")


def _text(i: int, words: int) -> str:
    from loadgen import prompts

    return prompts(i + 1, words)[i]


async def _drive(url: str, w: Workload) -> list:
    import openai
    from bench_policies import _send

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=0,
                                timeout=1800.0)
    begin = time.perf_counter()

    async def one(i: int):
        await asyncio.sleep(max(0.0, float(w.times[i]) - (time.perf_counter() - begin)))
        return await _send(client, f"m{int(w.models[i])}", _text(i, int(w.prompt[i])),
                           int(w.output[i]))

    try:
        return list(await asyncio.gather(*(one(i) for i in range(len(w)))))
    finally:
        await client.close()


async def _warm_samples(url: str, model: str) -> list[tuple[int, float]]:
    """(prompt words, TTFT) of warm requests sent one at a time (after one to load model)."""
    import openai
    from bench_policies import _send

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=0,
                                timeout=1800.0)
    try:
        await _send(client, model, _text(0, 4), 1)
        out = []
        for words in (4, 64, 4, 64, 4, 64):
            res = await _send(client, model, _text(1, words), 1)
            if res.ok:
                out.append((words, res.ttft))
        return out
    finally:
        await client.close()


def _measured(pk: dict, policy: str, nbytes: int, dram: int, disk: int, w: Workload,
              results: list, before: dict, after: dict, log: str, warm: list) -> Measured:
    """What the real run measured: per-operation means from its metrics and log (the
    deltas over the stream), and per-request TTFTs and cold starts per tier."""
    import bench_policies as bp
    from loadgen import metric

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    loads = {}
    for tier in bp.TIERS:
        n = delta("serving_load_seconds_count", tier=tier)
        if n:
            loads[tier] = delta("serving_load_seconds_sum", tier=tier) / n
    builds = [float(b) for _, _, b in _BUILD.findall(log)]
    tokens = delta("serving_time_per_output_token_seconds_count")
    overhead, prefill = fit_first_token(warm)
    return Measured(
        policy=policy, workers=pk["WORKERS"], models=pk["MODELS"], model_bytes=nbytes,
        dram_bytes=dram, disk_bytes=disk,
        initial=bp.layout(pk["MODELS"], pk["WORKERS"], pk["DISK_MODELS"]),
        keep_alive=pk["KEEP_ALIVE"], target_concurrency=8, max_instances=1,
        load_seconds=loads, build_seconds=statistics.fmean(builds) if builds else 0.0,
        decode_seconds=delta("serving_time_per_output_token_seconds_sum") / tokens
        if tokens else 0.0, prefill=prefill, overhead=overhead, workload=w,
        ttft=np.asarray([r.ttft if r.ok else np.nan for r in results]),
        cold={t: int(delta("serving_cold_starts_total", tier=t)) for t in bp.TIERS},
        estimates=_seeds(before, bp.TIERS))


def _seeds(samples: dict, tiers) -> dict:
    """tier -> the mean over workers of the bandwidth the controller estimated (before the
    stream: the workers' seeds)."""
    out = {}
    for tier in tiers:
        values = [v for (name, labels), v in samples.items()
                  if name == "serving_tier_bandwidth_bytes_per_second"
                  and ("tier", tier) in labels]
        if values:
            out[tier] = statistics.fmean(values)
    return out


def _crosscheck(ctx: Context):
    import bench_policies as bp
    from bench_serving import model_dir, model_info
    from serveproc import Ours

    k, pk = knobs(), bp.knobs()
    policy = k["XC_POLICY"]
    reg = bp.registry(ctx, pk)
    nbytes = model_info(model_dir(ctx))["bytes"]
    dram = int(nbytes * pk["DRAM_MODELS"] * 1.1)
    disk = int(nbytes * pk["DISK_MODELS"] * 1.2)
    seed = bp.seed_tiers(ctx, pk, reg, disk)
    w = _stream(k, pk["MODELS"], pk["ZIPF"], pk["SEED"])
    settings = {"workers": pk["WORKERS"], "dram_per_worker": dram, "disk_per_worker": disk,
                "policy": policy, "heartbeat": 1.0}
    link_rate = pk.get("REGISTRY_RATE")  # bench_policies' emulated registry link, if it has one
    if link_rate is not None:
        settings["registry_bandwidth"] = int(link_rate)
    specs = [{"name": f"m{i}", "keep_alive": pk["KEEP_ALIVE"], "queue_limit": 100_000,
              "max_instances": 1} for i in range(pk["MODELS"])]
    for _ in range(ctx.repeat):
        store = tempfile.mkdtemp(prefix="store-", dir=ctx.workdir)
        shutil.copytree(os.path.join(seed, "workers"), os.path.join(store, "workers"))
        link = bp._Link(reg, link_rate, ctx.workdir) if link_rate is not None else None
        try:
            server = Ours(ctx.workdir, store, link.url if link else reg, settings,
                          models=specs).start()
        except BaseException:
            if link is not None:
                link.stop()
            raise
        try:
            before = server.metrics()
            server.server.new_output()
            results = asyncio.run(_drive(server.url, w))
            after = server.metrics()
            log = server.server.new_output()
            top = int(np.bincount(w.models).argmax())
            warm = asyncio.run(_warm_samples(server.url, f"m{top}"))
        finally:
            server.stop()
            if link is not None:
                link.stop()
            shutil.rmtree(store, ignore_errors=True)

        run = _measured(pk, policy, nbytes, dram, disk, w, results, before, after, log, warm)
        res = Simulator(calibrated_setup(run), policy).run(w)
        rows = compare(run, res)
        print(format_rows(rows), file=sys.stderr)
        failed = sum(not r.ok for r in results)
        yield dict(workload="sim-crosscheck", group="sim", role="ours", policy=policy,
                   device=f"file://{reg}", is_pmem=False, bytes_written=0, size=ctx.size,
                   seconds=max(r["error"] for r in rows[:3]), requests=len(w),
                   failed=failed, rate=k["XC_RATE"], workers=pk["WORKERS"],
                   models=pk["MODELS"], model_bytes=nbytes,
                   calibration=dict(load_seconds=run.load_seconds,
                                    build_seconds=run.build_seconds,
                                    decode_seconds=run.decode_seconds, prefill=run.prefill,
                                    overhead=run.overhead, estimates=run.estimates),
                   compare=rows, within=all(r["within"] for r in rows), valid=not failed)


@workload("sim-crosscheck", "sim")
def crosscheck(ctx: Context):
    """serving.sim calibrated from a real serving.run, on the same trace requests"""
    return _crosscheck(ctx)
