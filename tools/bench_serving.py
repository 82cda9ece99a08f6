"""Serving workloads: our server (python -m serving.run) against `transformers serve` and a fresh
from_pretrained process, on the same model files, driven by one openai-client load generator.

    tools/bench compare serve-cold-dram peer-hf-serve-cold peer-hf-process-cold --size 512M \\
        --rounds 5 --device /var/tmp/bas-bench
    tools/bench compare serve-cold-disk peer-hf-serve-cold serve-cold-registry --cold ...
    tools/bench compare serve-warm peer-hf-serve-warm peer-hf-serve-warm-cb --size 512M ...
    tools/bench compare serve-memory peer-hf-serve-memory --size 512M --rounds 3 ...
    python tools/bench_serving.py ratios RESULTS.jsonl serve-warm     # ratios of other keys

The model is a Llama with random weights (serving.demo's tokenizer and layout) in float32,
sized to --size bytes of weights, written once as a Hugging Face directory under
$BAS_BENCH_DATA (default: the parent of the --device directory)/bas-bench-serving/llama-SIZE
and deployed once into a registry beside it; our servers read that registry, the peers the
Hugging Face directory. The output layer's rows of the four special tokens (bos, eos, the
chat markers) are zero, so greedy decoding never picks them (their logit is 0, below the
largest of ~8000 random ones): every request runs to max_tokens on every server, which is how
the output lengths are made equal (neither server has ignore_eos); each run checks it.

Cold rows time one request (max_tokens 1) for a model that is not loaded, as TTFT on the
client, split into queue_wait (send to the start of the load), load_seconds and
first_token_seconds (the rest). Warm rows time CLIENTS streaming clients sending REQUESTS
requests each against a loaded model. Memory rows read the server's processes' RSS and PSS
with the model loaded and after it was unloaded. Knobs (environment): BAS_BENCH_SERVING_CLIENTS
(16), _REQUESTS (2 per client per round), _MAX_TOKENS (32), _PROMPT_WORDS (48).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from benchkit import Context, evict, prepare_cache, run_child, workload
from loadgen import cold_split, metric, parse_cold_start, prompts, run_clients, summary
from serveproc import MODEL, HFServe, Ours

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SPECIAL_IDS = 4  # serving.demo.SPECIAL_TOKENS: ids 0-3
KEEP_ALIVE = 1.0  # cold and memory rows: seconds an idle instance of ours stays loaded
# the same for transformers serve (--model-timeout, whole seconds). Longer than ours: its timer
# runs from the end of the load, not of the request, and must not fire before the first token
HF_TIMEOUT = 5


def knob(name: str, default: int) -> int:
    """An integer setting from $BAS_BENCH_SERVING_<NAME>, else default."""
    value = os.environ.get(f"BAS_BENCH_SERVING_{name}")
    if value is None:
        return default
    number = int(value)
    if number < 1:
        raise ValueError(f"BAS_BENCH_SERVING_{name} must be at least 1, got {value}")
    return number


# -- the model ---------------------------------------------------------------------------------


def model_config(size: int) -> dict:
    """LlamaConfig overrides of serving.demo's model for about size bytes of float32 weights:
    width by size (64 under 64 MiB, 1024 under 1 GiB, else 2048), layers added to fill it."""
    vocab = 8192
    hidden, ffn, heads = ((64, 176, 4) if size < 64 << 20 else
                          (1024, 2816, 16) if size < 1 << 30 else (2048, 5632, 16))
    per_layer = 4 * hidden * hidden + 3 * hidden * ffn + 2 * hidden
    params = size // 4
    layers = max(1, round((params - 2 * vocab * hidden) / per_layer))
    return dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                tie_word_embeddings=False)


def data_dir(ctx: Context) -> str:
    root = os.environ.get("BAS_BENCH_DATA") or os.path.dirname(os.path.abspath(ctx.workdir))
    return os.path.join(root, "bas-bench-serving", f"llama-{ctx.size}")


def model_dir(ctx: Context) -> str:
    """The Hugging Face directory of the model (built once, in a child process)."""
    path = os.path.join(data_dir(ctx), "hf")
    if not os.path.exists(os.path.join(path, "bench.json")):
        _child([sys.executable, __file__, "build", path, str(ctx.size)], "building the model")
    return path


def model_info(path: str) -> dict:
    with open(os.path.join(path, "bench.json")) as f:
        return json.load(f)


def registry_dir(ctx: Context) -> str:
    """The registry holding the model as MODEL (deployed once; again when serving/registry.py
    changed, since its format may have)."""
    hf = model_dir(ctx)
    path = os.path.join(data_dir(ctx), "registry")
    marker = os.path.join(data_dir(ctx), "registry.json")
    want = {"model": model_info(hf), "registry_code": _digest(
        os.path.join(REPO, "serving", "registry.py"))}
    try:
        with open(marker) as f:
            if json.load(f) == want:
                return path
    except (OSError, ValueError):
        pass
    shutil.rmtree(path, ignore_errors=True)
    _child([sys.executable, __file__, "deploy", path, hf], "deploying the model")
    with open(marker, "w") as f:
        json.dump(want, f)
    return path


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def _child(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr[-2000:]}")


def _build(path: str, size: int) -> None:
    """Write the model directory at path: serving.demo's model with model_config(size) and
    the special tokens' output rows zeroed; bench.json last (it marks the build complete)."""
    from safetensors.torch import load_file, save_file

    from serving.demo import SPECIAL_TOKENS, make_demo

    assert len(SPECIAL_TOKENS) == SPECIAL_IDS
    config = model_config(size)
    tmp = f"{path}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    make_demo(tmp, config_overrides=config)
    weights = os.path.join(tmp, "model.safetensors")
    tensors = load_file(weights)
    tensors["lm_head.weight"][:SPECIAL_IDS] = 0
    save_file(tensors, weights, metadata={"format": "pt"})
    info = dict(config=config, dtype="float32", zeroed_output_rows=list(range(SPECIAL_IDS)),
                parameters=sum(t.numel() for t in tensors.values()),
                bytes=os.path.getsize(weights))
    with open(os.path.join(tmp, "bench.json"), "w") as f:
        json.dump(info, f, indent=1)
    shutil.rmtree(path, ignore_errors=True)
    os.rename(tmp, path)


def _files(*roots: str) -> list[str]:
    out = []
    for root in roots:
        for top, _, names in os.walk(root):
            out += [os.path.join(top, n) for n in sorted(names)]
    return out


def _scratch(ctx: Context, prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir=ctx.workdir)


def _base(name: str, ctx: Context, role: str, tuned: str | None, group: str) -> dict:
    """What every record carries; device: where the server reads the model (ours: the
    registry; peers: the Hugging Face directory)."""
    hf = model_dir(ctx)
    info = model_info(hf)
    source = registry_dir(ctx) if role == "ours" else hf
    return dict(workload=name, role=role, tuned=tuned, group=group, size=ctx.size,
                model_bytes=info["bytes"], parameters=info["parameters"], dtype=info["dtype"],
                device=f"file://{source}", is_pmem=False, bytes_written=0, process_seconds=None)


# -- cold ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """What a tuned row of ours changes from the defaults: Config fields and ModelSpec fields."""

    settings: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    note: str | None = None


DEFAULTS = Variant()
ONE_WORKER = Variant({"workers": 1}, note="workers=1 (one worker with every core)")
ONE_WORKER_BATCH = Variant({"workers": 1}, {"target_concurrency": 16},
                           note="workers=1 (every core), target_concurrency=16 (one batch)")


def _cold_ours(name: str, ctx: Context, tier: str, variant: Variant):
    """Yield one record per round of a cold start of ours from tier ("dram", "local" or
    "registry"): an idle deployment (scaled to zero after KEEP_ALIVE s) gets one request."""
    registry = registry_dir(ctx)
    settings = dict(variant.settings)
    if tier == "local":
        settings["dram_per_worker"] = 0  # the disk tier is then the fastest that holds it
    model = {"keep_alive": KEEP_ALIVE, **variant.model}
    prompt = prompts(1, knob("PROMPT_WORDS", 48))
    server = None
    try:
        for _ in range(ctx.repeat):
            if server is None or tier == "registry":  # the registry tier: a fresh store
                if server is not None:
                    server.stop()
                    shutil.rmtree(server.store, ignore_errors=True)
                server = Ours(ctx.workdir, _scratch(ctx, "store-"), registry, settings,
                              model).start()
                if tier != "registry":  # the first load fills the worker's local tiers
                    _one(server.url, MODEL, prompt, include_usage=True, timeout=ctx.timeout,
                         check=True)
            server.wait_unloaded(None if tier == "registry" else tier)
            if tier == "local":
                for path in _files(os.path.join(server.store, "workers")):
                    evict(path)
                cache = "cold"
            elif tier == "registry":
                cache = prepare_cache(_files(registry), ctx)
            else:
                cache = "dram"
            before = server.metrics()
            server.server.new_output()
            result = _one(server.url, MODEL, prompt, include_usage=True, timeout=ctx.timeout)
            after = server.metrics()
            logged = parse_cold_start(server.server.new_output(), MODEL) or {}
            yield {**_base(name, ctx, "ours", variant.note, "cold"),
                   **_cold_record_ours(result, before, after, logged, tier),
                   "cache": cache, "workers": settings.get("workers", 2),
                   "keep_alive": KEEP_ALIVE}
    finally:
        if server is not None:
            server.stop()


def _cold_record_ours(result, before: dict, after: dict, logged: dict, tier: str) -> dict:
    """A cold round's fields from the request, the metrics before and after it, and the
    controller's log line of the cold start."""
    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    tiers = [t for t in ("dram", "local", "registry")
             if delta("serving_cold_starts_total", model=MODEL, tier=t) >= 1]
    actual = tiers[0] if len(tiers) == 1 else logged.get("tier")
    ttfts = delta("serving_time_to_first_token_seconds_count", model=MODEL)
    server_ttft = (delta("serving_time_to_first_token_seconds_sum", model=MODEL)
                   if ttfts == 1 else None)
    ckpt_load = delta("serving_load_seconds_sum", tier=actual) if actual else None
    build = logged.get("build_seconds")
    first = logged.get("instance_first_token_seconds")
    load = ckpt_load + build if ckpt_load is not None and build is not None else ckpt_load
    wait = server_ttft - first if server_ttft is not None and first is not None else None
    split = cold_split(result.ttft, load, server_wait=wait) if result.ok else {}
    return dict(tier_expected=tier, tier=actual, valid=result.ok and actual == tier,
                ttft=result.ttft, seconds=result.ttft, server_ttft=server_ttft,
                ckpt_load_seconds=ckpt_load, build_seconds=build,
                instance_first_token_seconds=first, output_tokens=result.output_tokens,
                **split, **({"error": result.error} if result.error else {}))


def _one(url: str, model: str, prompt: list[str], *, include_usage: bool,
         timeout: float | None, max_tokens: int = 1, check: bool = False):
    """One streamed request's Result; check: raise when it failed (set-up requests)."""
    results, _ = run_clients(url, model, prompt, max_tokens=max_tokens,
                             include_usage=include_usage, timeout=timeout or 1800.0)
    if check and not results[0].ok:
        raise RuntimeError(f"a set-up request to {url} failed: {results[0].error}")
    return results[0]


def _cold_hf_serve(name: str, ctx: Context):
    """Yield one record per round of transformers serve loading the model on demand: the
    model was unloaded by --model-timeout, its files are put in the --cold / cached state."""
    hf = model_dir(ctx)
    prompt = prompts(1, knob("PROMPT_WORDS", 48))
    server = HFServe(ctx.workdir, HF_TIMEOUT).start()
    try:
        for _ in range(ctx.repeat):
            server.wait_unloaded()
            cache = prepare_cache(_files(hf), ctx)
            result = _one(server.url, hf, prompt, include_usage=False, timeout=ctx.timeout)
            loads = [doc for tag, doc in server.events() if tag == "BENCH-LOAD"]
            record = {**_base(name, ctx, "peer", None, "cold"), "cache": cache,
                      "model_timeout": HF_TIMEOUT, "ttft": result.ttft, "seconds": result.ttft,
                      "output_tokens": result.output_tokens,
                      "valid": result.ok and len(loads) == 1}
            if result.ok and loads:
                record.update(cold_split(result.ttft, loads[0]["end"] - loads[0]["start"],
                                         load_start_delay=loads[0]["start"] - result.sent_at))
            if result.error:
                record["error"] = result.error
            yield record
    finally:
        server.stop()


def _cold_hf_process(name: str, ctx: Context):
    """Yield one record per run of a fresh process: from_pretrained + one generate step."""
    hf = model_dir(ctx)
    prompt = prompts(1, knob("PROMPT_WORDS", 48))
    for _ in range(ctx.repeat):
        cache = prepare_cache(_files(hf), ctx)
        spawned = time.time()
        child = run_child([sys.executable, os.path.join(HERE, "servepeer.py"), "hf-process", hf,
                           "1", repr(spawned), prompt[0]], ctx)
        result = child.result()
        record = {**_base(name, ctx, "peer", None, "cold"), "cache": cache, "seconds": None,
                  **child.fields(), **result}
        record["valid"] = child.status == "ok" and result.get("output_tokens") == 1
        if child.status == "ok":  # the wait: interpreter start-up and imports
            record["queue_wait"] = record["ttft"] - record["seconds"]
        yield record


# -- warm ----------------------------------------------------------------------------------------


def _warm_round(ctx: Context, url: str, model: str, include_usage: bool,
                base: dict) -> dict:
    clients, requests = knob("CLIENTS", 16), knob("REQUESTS", 2)
    max_tokens, words = knob("MAX_TOKENS", 32), knob("PROMPT_WORDS", 48)
    texts = prompts(clients * requests, words)
    # the model is loaded before every round (a 1-token request, not timed): a round measures
    # a loaded model even if the peer's round in between took longer than an idle timeout
    _one(url, model, texts[:1], include_usage=include_usage, timeout=ctx.timeout, check=True)
    results, wall = run_clients(url, model, texts, clients=clients, requests=requests,
                                max_tokens=max_tokens, include_usage=include_usage,
                                timeout=ctx.timeout or 1800.0)
    stats = summary(results, wall, max_tokens)
    return {**base, **stats, "seconds": wall, "clients": clients,
            "requests_per_client": requests, "max_tokens": max_tokens, "prompt_words": words,
            "prompt_tokens": sum(r.prompt_tokens or 0 for r in results),
            "valid": stats["failed"] == 0 and stats["equal_lengths"]}


def _warm_ours(name: str, ctx: Context, variant: Variant):
    """Yield one record per round of CLIENTS streaming clients against our loaded model."""
    model = {"keep_alive": 3600.0, **variant.model}  # stays loaded between rounds
    server = Ours(ctx.workdir, _scratch(ctx, "store-"), registry_dir(ctx), variant.settings,
                  model).start()
    try:
        for _ in range(ctx.repeat):
            base = {**_base(name, ctx, "ours", variant.note, "warm"),
                    "workers": variant.settings.get("workers", 2)}
            yield _warm_round(ctx, server.url, MODEL, True, base)
    finally:
        server.stop()


def _warm_hf(name: str, ctx: Context, continuous_batching: bool):
    """Yield one record per round of CLIENTS streaming clients against transformers serve."""
    hf = model_dir(ctx)
    server = HFServe(ctx.workdir, -1, continuous_batching).start()  # -1: never unloads
    try:
        for _ in range(ctx.repeat):
            base = {**_base(name, ctx, "peer", None, "warm"),
                    "continuous_batching": continuous_batching}
            yield _warm_round(ctx, server.url, hf, False, base)
    finally:
        server.stop()


# -- memory --------------------------------------------------------------------------------------


def _memory_ours(name: str, ctx: Context):
    """Yield one record per round: memory of our server with the model loaded, then idle
    after scale-to-zero (keep_alive KEEP_ALIVE s; the DRAM tier keeps the checkpoint)."""
    server = Ours(ctx.workdir, _scratch(ctx, "store-"), registry_dir(ctx), {},
                  {"keep_alive": KEEP_ALIVE}).start()
    prompt = prompts(1, knob("PROMPT_WORDS", 48))
    try:
        started = server.memory()
        for _ in range(ctx.repeat):
            server.wait_unloaded()
            result = _one(server.url, MODEL, prompt, include_usage=True, timeout=ctx.timeout)
            loaded = server.memory()
            status = server.wait_unloaded()
            time.sleep(0.5)  # the worker's unload returns before its memory is handed back
            idle = server.memory()
            tiers = sorted({t for w in status["workers"] for t, ms in w["tiers"].items()
                            if MODEL in ms})
            yield {**_base(name, ctx, "ours", None, "memory"), **_memory_fields(
                started, loaded, idle), "seconds": None, "valid": result.ok,
                "idle_tiers_holding": tiers, "keep_alive": KEEP_ALIVE}
    finally:
        server.stop()


def _memory_hf(name: str, ctx: Context):
    """Yield one record per round: memory of transformers serve with the model loaded, then
    after --model-timeout unloaded it."""
    hf = model_dir(ctx)
    server = HFServe(ctx.workdir, HF_TIMEOUT).start()
    prompt = prompts(1, knob("PROMPT_WORDS", 48))
    try:
        started = server.memory()
        for _ in range(ctx.repeat):
            server.wait_unloaded()
            result = _one(server.url, hf, prompt, include_usage=False, timeout=ctx.timeout)
            loaded = server.memory()
            server.wait_unloaded()
            time.sleep(0.5)
            idle = server.memory()
            yield {**_base(name, ctx, "peer", None, "memory"), **_memory_fields(
                started, loaded, idle), "seconds": None, "valid": result.ok,
                "model_timeout": HF_TIMEOUT}
    finally:
        server.stop()


def _memory_fields(started: dict, loaded: dict, idle: dict) -> dict:
    out = {}
    for when, mem in (("started", started), ("loaded", loaded), ("idle", idle)):
        for key in ("rss", "pss", "rss_workers", "pss_workers"):
            out[f"{key}_{when}"] = mem[key]
    out["processes"] = loaded["processes"]
    return out


# -- registration --------------------------------------------------------------------------------


def _register(name: str, doc: str, fn, *args) -> None:
    def run(ctx: Context):
        yield from fn(name, ctx, *args)

    run.__doc__ = doc
    workload(name, "serving", process=True)(run)


for _tier, _what in (("dram", "DRAM tier"), ("disk", "local disk tier, page cache evicted"),
                     ("registry", "registry tier, fresh worker store")):
    _t = "local" if _tier == "disk" else _tier
    _register(f"serve-cold-{_tier}", f"ours: TTFT of a scaled-to-zero model from the {_what}",
              _cold_ours, _t, DEFAULTS)
    _register(f"serve-cold-{_tier}-tuned-1worker",
              f"ours, tuned {ONE_WORKER.note}: cold start from the {_what}",
              _cold_ours, _t, ONE_WORKER)
_register("peer-hf-serve-cold", "peer: transformers serve, TTFT of a model it must load",
          _cold_hf_serve)
_register("peer-hf-process-cold",
          "peer: fresh process, from_pretrained + generate(max_new_tokens=1)", _cold_hf_process)
_register("serve-warm", "ours: 16 streaming clients on a loaded model, tokens/s, TTFT p50/p99",
          _warm_ours, DEFAULTS)
_register("serve-warm-tuned-1worker", f"ours, tuned {ONE_WORKER_BATCH.note}: 16 clients",
          _warm_ours, ONE_WORKER_BATCH)
_register("peer-hf-serve-warm", "peer: transformers serve, 16 streaming clients", _warm_hf,
          False)
_register("peer-hf-serve-warm-cb",
          "peer: transformers serve --continuous-batching, 16 streaming clients", _warm_hf, True)
_register("serve-memory", "ours: RSS/PSS loaded and idle after scale-to-zero", _memory_ours)
_register("peer-hf-serve-memory", "peer: transformers serve RSS/PSS loaded and after unload",
          _memory_hf)


# -- ratios of other keys ----------------------------------------------------------------------

#: keys `ratios` reports by default (those present in the records)
RATIO_KEYS = ("ttft", "queue_wait", "load_seconds", "first_token_seconds", "tokens_per_s",
              "ttft_p50", "ttft_p99", "rss_loaded", "rss_idle", "pss_loaded", "pss_idle")


def read_records(lines) -> list[dict]:
    """The JSON records among lines (other lines, e.g. a summary, are skipped)."""
    out = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def paired(records: list[dict], reference: str, other: str,
           key: str) -> list[tuple[int, float | None]]:
    """(round, other's key / reference's key) for every measured round holding either; None
    where a run failed, is invalid or lacks a positive value of key."""
    def usable(r):
        return (r is not None and r.get("status", "ok") == "ok" and r.get("valid", True)
                is not False and isinstance(r.get(key), int | float) and r[key] > 0)

    rounds: dict[int, dict[str, dict]] = {}
    for r in records:
        if not r.get("warmup") and "round" in r:
            rounds.setdefault(r["round"], {})[r["workload"]] = r
    out = []
    for number in sorted(rounds):
        ref, oth = rounds[number].get(reference), rounds[number].get(other)
        if ref is None and oth is None:
            continue
        out.append((number, oth[key] / ref[key] if usable(ref) and usable(oth) else None))
    return out


def same_outputs(records: list[dict], reference: str, other: str) -> tuple[int, int]:
    """(rounds where other's output_digest equals the reference's, rounds where both have
    one): the two servers gave the same text to every request."""
    digests: dict[int, dict[str, str]] = {}
    for r in records:
        if not r.get("warmup") and r.get("output_digest") and "round" in r:
            digests.setdefault(r["round"], {})[r["workload"]] = r["output_digest"]
    both = [d for d in digests.values() if reference in d and other in d]
    return sum(d[reference] == d[other] for d in both), len(both)


def ratio_report(records: list[dict], reference: str, keys=RATIO_KEYS, stream=sys.stdout):
    names = list(dict.fromkeys(r["workload"] for r in records if "workload" in r))
    for other in names:
        same, both = same_outputs(records, reference, other)
        if other != reference and both:
            stream.write(f"{other}: the same outputs as {reference} in {same} of {both} "
                         f"rounds\n")
    for key in keys:
        if not any(isinstance(r.get(key), int | float) for r in records
                   if r.get("workload") == reference):
            continue
        higher = " (higher is better)" if key == "tokens_per_s" else ""
        stream.write(f"\n{key}: other / {reference}{higher}\n")
        for other in names:
            if other == reference:
                continue
            ratios = paired(records, reference, other, key)
            values = sorted(v for _, v in ratios if v is not None)
            if not values:
                stream.write(f"  {other:34} no complete pair\n")
                continue
            per = " ".join(f"{v:.2f}" if v is not None else "-" for _, v in ratios)
            median = values[len(values) // 2] if len(values) % 2 else (
                values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
            stream.write(f"  {other:34} median {median:.2f}x [{values[0]:.2f}-{values[-1]:.2f}]"
                         f" over {len(values)} pairs; per round: {per}\n")


def main(argv: list[str]) -> int:
    sys.path.insert(0, REPO)
    if argv[:1] == ["build"] and len(argv) == 3:
        _build(argv[1], int(argv[2]))
    elif argv[:1] == ["deploy"] and len(argv) == 3:
        from serving.registry import Registry

        Registry(argv[1]).deploy(MODEL, argv[2])
    elif argv[:1] == ["ratios"] and len(argv) >= 3:
        with open(argv[1]) as f:
            records = read_records(f)
        ratio_report(records, argv[2], tuple(argv[3:]) or RATIO_KEYS)
    else:
        print("usage: bench_serving.py build DIR SIZE | deploy REGISTRY HF_DIR | "
              "ratios RESULTS.jsonl REFERENCE [KEY ...]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
