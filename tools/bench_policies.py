"""Placement policies side by side: one machine, several workers, more models than their DRAM
holds, a bursty stream of requests; time to first token and cold starts per tier per policy.

    tools/bench compare policy-random policy-locality policy-locality-migration \\
        policy-least-loaded --size 64M --rounds 3 --device /var/tmp/bas-bench

Each round runs the same seeded request stream against a fresh server per policy (workloads
interleaved, so drift falls on all alike): Gamma inter-arrival times with coefficient of
variation CV (bursts), models drawn with Zipf-skewed popularity. The models are serving.demo
Llamas with random weights of --size bytes each (tools/bench_serving's model, deployed MODELS
times as m0, m1, ... into one registry, built once under $BAS_BENCH_DATA). Every round starts
from the same tiers: each worker's disk holds DISK_MODELS of the models (model i on worker
i mod WORKERS, and on), its DRAM nothing, and its disk tier carries a bas profile measured on
the tiers' directory (serving.runtime.measure_disk_profile). DRAM holds DRAM_MODELS models per
worker, so the models do not all fit. The registry is served over HTTP from 127.0.0.1 behind an
emulated network link of REGISTRY_RATE bytes/s shared by all downloads (tools/linkserver.py): on
one machine a plain directory would "download" at page-cache speed, and a server holding a
checkpoint locally would gain nothing over one fetching it; the servers are told the link's rate
(registry_bandwidth), as an operator would. A record's `seconds` is the round's p99 TTFT (the
ratios compare it); it also has mean/p50/p90 TTFT, cold starts per tier and migrations.

Knobs (environment, BAS_BENCH_POLICY_<NAME>): MODELS (8), WORKERS (4), DRAM_MODELS (1.5),
DISK_MODELS (2: models on each worker's disk at the start), DISK_ROOM (3: models each disk tier
has room for; 0: DISK_MODELS), REQUESTS (100), RATE (requests/s, 0.4), CV (2), ZIPF (1.1),
MAX_TOKENS (8), PROMPT_WORDS (16), KEEP_ALIVE (s, 2), REGISTRY_RATE (bytes/s, 125e6: 1 Gbit/s),
SEED (0); BAS_BENCH_POLICY_LOGS: a directory where each round's server log is kept (placements
with their candidates, loads with their tiers).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench_serving import data_dir, model_dir, model_info
from benchkit import Context, workload
from loadgen import Result, metric, percentile, prompts
from serveproc import Ours

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
POLICIES = {"policy-locality": "locality", "policy-locality-migration": "locality+migration",
            "policy-random": "random", "policy-least-loaded": "least-loaded"}
TIERS = ("dram", "local", "registry")
_KNOBS = dict(MODELS=8, WORKERS=4, DRAM_MODELS=1.5, DISK_MODELS=2, DISK_ROOM=3.0,
              REQUESTS=100, RATE=0.4, CV=2.0, ZIPF=1.1, MAX_TOKENS=8, PROMPT_WORDS=16,
              KEEP_ALIVE=2.0, REGISTRY_RATE=125e6, SEED=0)
_MIGRATION = re.compile(r": moving \d+ inference")


def knobs() -> dict:
    """The knobs, from $BAS_BENCH_POLICY_<NAME> where set (same type as the default)."""
    out = {}
    for name, default in _KNOBS.items():
        text = os.environ.get(f"BAS_BENCH_POLICY_{name}")
        value = default if text is None else type(default)(text)
        if value < 0 or (value == 0 and name not in ("SEED", "KEEP_ALIVE", "DISK_ROOM")):
            raise ValueError(f"BAS_BENCH_POLICY_{name} must be more than 0, got {text}")
        out[name] = value
    return out


# -- the request stream ------------------------------------------------------------------------


def arrivals(n: int, rate: float, cv: float, zipf: float, models: int,
             seed: int) -> list[tuple[float, int]]:
    """n (seconds from the start, model number) pairs: Gamma inter-arrival times of mean
    1/rate and coefficient of variation cv (1: Poisson; more: burstier), popularity Zipf(zipf)
    over the models in a seeded random order. The same arguments give the same stream."""
    rng = random.Random(seed)
    shape = 1.0 / (cv * cv)
    scale = 1.0 / rate / shape
    order = list(range(models))
    rng.shuffle(order)
    weights = [1.0 / (rank + 1) ** zipf for rank in range(models)]
    t, out = 0.0, []
    for _ in range(n):
        t += rng.gammavariate(shape, scale)
        out.append((t, order[rng.choices(range(models), weights)[0]]))
    return out


async def _send(client, model: str, prompt: str, max_tokens: int) -> Result:
    start = time.perf_counter()
    res = Result(ok=False, sent_at=time.time())
    try:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens, temperature=0.0, stream=True)
        async for chunk in stream:
            for choice in chunk.choices or ():
                if choice.delta is not None and choice.delta.content and res.ttft is None:
                    res.ttft = time.perf_counter() - start
        res.ok = res.ttft is not None
        if not res.ok:
            res.error = "the stream ended without any content"
    except Exception as exc:  # noqa: BLE001 - one failed request is a result
        res.error = f"{type(exc).__name__}: {exc}"[-500:]
    res.seconds = time.perf_counter() - start
    return res


async def _drive(url: str, stream: list[tuple[float, int]], k: dict) -> list[Result]:
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=0,
                                timeout=1800.0)
    texts = prompts(len(stream), k["PROMPT_WORDS"])
    begin = time.perf_counter()

    async def one(i: int, at: float, m: int) -> Result:
        await asyncio.sleep(max(0.0, at - (time.perf_counter() - begin)))
        return await _send(client, f"m{m}", texts[i], k["MAX_TOKENS"])

    try:
        return list(await asyncio.gather(*(one(i, at, m) for i, (at, m) in enumerate(stream))))
    finally:
        await client.close()


# -- the models and the starting tiers ---------------------------------------------------------


def _child(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr[-2000:]}")


def _prepared(path: str, want: dict, make) -> str:
    """path, made by make(path) unless its marker says it was made with want."""
    marker = path + ".json"
    try:
        with open(marker) as f:
            if json.load(f) == want:
                return path
    except (OSError, ValueError):
        pass
    shutil.rmtree(path, ignore_errors=True)
    make(path)
    with open(marker, "w") as f:
        json.dump(want, f)
    return path


def registry(ctx: Context, k: dict) -> str:
    """A registry holding the model as m0 .. m{MODELS-1} (deployed once)."""
    hf = model_dir(ctx)
    want = {"model": model_info(hf), "models": k["MODELS"]}
    return _prepared(os.path.join(data_dir(ctx), f"policy-registry-{k['MODELS']}"), want,
                     lambda path: _child([sys.executable, __file__, "deploy", path, hf,
                                          str(k["MODELS"])], "deploying the models"))


def layout(models: int, workers: int, per_worker: int) -> dict[int, list[str]]:
    """Which models each worker's disk holds at the start: worker w the per_worker models
    from m{w * per_worker} on (mod models), so the models spread over the workers."""
    return {w: sorted({f"m{(w * per_worker + j) % models}" for j in range(per_worker)})
            for w in range(workers)}


def seed_tiers(ctx: Context, k: dict, reg: str, disk_bytes: int) -> str:
    """Worker directories whose disk tiers hold `layout`'s models and a measured profile
    (made once; every round starts from a copy)."""
    held = layout(k["MODELS"], k["WORKERS"], k["DISK_MODELS"])
    want = {"registry": reg, "held": {str(w): ms for w, ms in held.items()},
            "disk_bytes": disk_bytes, "code": 1}
    path = os.path.join(data_dir(ctx), f"policy-tiers-{k['MODELS']}-{k['WORKERS']}-"
                        f"{k['DISK_MODELS']}")
    return _prepared(path, want, lambda p: _child(
        [sys.executable, __file__, "seed", p, reg, str(disk_bytes), json.dumps(held)],
        "filling the workers' disk tiers"))


def _seed(path: str, reg: str, disk_bytes: int, held: dict) -> None:
    import ckpt
    from serving.registry import Registry
    from serving.runtime import PROFILE_FILE, measure_disk_profile

    workers = os.path.join(path, "workers")
    profile = measure_disk_profile(os.path.join(workers, "0"))
    for w, names in sorted(held.items()):
        disk = os.path.join(workers, w)
        os.makedirs(disk, exist_ok=True)
        if w != "0":
            shutil.copy(profile, os.path.join(disk, PROFILE_FILE))
        store = ckpt.Store([ckpt.DiskTier(disk, disk_bytes), Registry(reg).tier()])
        for name in names:
            del store.load(name, "cpu").tensors  # streams the registry's copy into the disk


class _Link:
    """tools/linkserver.py serving directory at rate bytes/s, in a process of its own."""

    def __init__(self, directory: str, rate: float, workdir: str):
        port_file = tempfile.mktemp(prefix="link-port-", dir=workdir)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "linkserver.py"), directory, "--rate",
             str(rate), "--port-file", port_file], start_new_session=True)
        deadline = time.monotonic() + 30.0
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the registry's link server did not start")
            time.sleep(0.05)
        with open(port_file) as f:
            self.url = f"http://127.0.0.1:{int(f.read())}"
        os.unlink(port_file)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- the workloads -----------------------------------------------------------------------------


def _run_policy(name: str, ctx: Context):
    """Yield one record per round: the request stream against a fresh server whose cold
    starts the policy places."""
    policy, k = POLICIES[name], knobs()
    reg = registry(ctx, k)
    nbytes = model_info(model_dir(ctx))["bytes"]
    dram = int(nbytes * k["DRAM_MODELS"] * 1.1)  # room for the index and alignment
    disk = int(nbytes * (k["DISK_ROOM"] or k["DISK_MODELS"]) * 1.2)
    seed = seed_tiers(ctx, k, reg, disk)
    stream = arrivals(k["REQUESTS"], k["RATE"], k["CV"], k["ZIPF"], k["MODELS"], k["SEED"])
    settings = {"workers": k["WORKERS"], "dram_per_worker": dram, "disk_per_worker": disk,
                "policy": policy, "heartbeat": 1.0,
                "registry_bandwidth": int(k["REGISTRY_RATE"])}
    models = [{"name": f"m{i}", "keep_alive": k["KEEP_ALIVE"], "queue_limit": 100_000,
               "max_instances": 1} for i in range(k["MODELS"])]
    for _ in range(ctx.repeat):
        store = tempfile.mkdtemp(prefix="store-", dir=ctx.workdir)
        shutil.copytree(os.path.join(seed, "workers"), os.path.join(store, "workers"))
        link = _Link(reg, k["REGISTRY_RATE"], ctx.workdir)
        try:
            server = Ours(ctx.workdir, store, link.url, settings, models=models).start()
        except BaseException:
            link.stop()
            raise
        try:
            before = server.metrics()
            server.server.new_output()
            start = time.perf_counter()
            results = asyncio.run(_drive(server.url, stream, k))
            wall = time.perf_counter() - start
            after = server.metrics()
            log = server.server.new_output()
        finally:
            server.stop()
            link.stop()
            shutil.rmtree(store, ignore_errors=True)
        keep = os.environ.get("BAS_BENCH_POLICY_LOGS")  # a directory for the servers' logs
        if keep:
            os.makedirs(keep, exist_ok=True)
            with open(os.path.join(keep, f"{name}-{time.strftime('%H%M%S')}.log"), "w") as f:
                f.write(log)
        yield _record(name, policy, ctx, k, nbytes, reg, results, wall, before, after, log)


def _record(name, policy, ctx, k, nbytes, reg, results, wall, before, after, log) -> dict:
    def delta(metric_name, **labels):
        return metric(after, metric_name, **labels) - metric(before, metric_name, **labels)

    cold = {t: int(delta("serving_cold_starts_total", tier=t)) for t in TIERS}
    ttfts = [r.ttft for r in results if r.ok]
    errors = [r.error for r in results if r.error]
    p99 = percentile(ttfts, 99)
    return dict(
        workload=name, group="policy", role="ours", policy=policy, tuned=None,
        device=f"file://{reg}", is_pmem=False, bytes_written=0, size=ctx.size,
        model_bytes=nbytes, models=k["MODELS"], workers=k["WORKERS"],
        dram_models=k["DRAM_MODELS"], disk_models=k["DISK_MODELS"], rate=k["RATE"],
        cv=k["CV"], zipf=k["ZIPF"], seed=k["SEED"], max_tokens=k["MAX_TOKENS"],
        keep_alive=k["KEEP_ALIVE"], registry_rate=k["REGISTRY_RATE"],
        requests=len(results), failed=len(results) - len(ttfts),
        seconds=p99, ttft_mean=statistics.fmean(ttfts) if ttfts else None,
        ttft_p50=percentile(ttfts, 50), ttft_p90=percentile(ttfts, 90), ttft_p99=p99,
        ttft_max=max(ttfts, default=None), wall=wall,
        ttfts=[None if r.ttft is None else round(r.ttft, 4) for r in results], cold_starts=cold,
        cold_starts_total=sum(cold.values()), migrations=len(_MIGRATION.findall(log)),
        valid=not errors, **({"error": f"{len(errors)} failed, first: {errors[0]}"}
                             if errors else {}))


def _register(name: str, policy: str) -> None:
    def run(ctx: Context):
        return _run_policy(name, ctx)

    run.__doc__ = f"the bursty multi-model stream, cold starts placed by {policy!r}"
    workload(name, "policy")(run)


for _name, _policy in POLICIES.items():
    _register(_name, _policy)


def main(argv: list[str]) -> int:
    sys.path.insert(0, REPO)
    if argv[:1] == ["deploy"] and len(argv) == 4:
        from serving.registry import Registry

        for i in range(int(argv[3])):
            Registry(argv[1]).deploy(f"m{i}", argv[2])
    elif argv[:1] == ["seed"] and len(argv) == 5:
        _seed(argv[1], argv[2], int(argv[3]), json.loads(argv[4]))
    elif argv[:1] == ["stream"] and len(argv) == 1:
        k = knobs()
        for at, m in arrivals(k["REQUESTS"], k["RATE"], k["CV"], k["ZIPF"], k["MODELS"],
                              k["SEED"]):
            print(f"{at:10.3f} m{m}")
    else:
        print("usage: bench_policies.py deploy REGISTRY HF_DIR N | seed DIR REGISTRY "
              "DISK_BYTES HELD_JSON | stream", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
