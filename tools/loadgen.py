"""The serving benchmarks' load generator and measuring tools: openai-client streams, statistics,
the servers' metrics and logs, and the resident memory of a process tree.

    results, wall = run_clients(url, "bench", prompts(16), clients=16, requests=2,
                                max_tokens=32)
    summary(results, wall)      # tokens_per_s, ttft_p50, ttft_p99, ...

One load generator drives every server (ours and the peers) through the same openai client,
so a difference in the numbers is the server's. Time to first token (TTFT) is taken on the
client, from just before the request is sent to the first chunk with non-empty content: a
server's role-only first chunk and its keep-alive comments do not count. Only the openai
client needs installing; everything else here is the standard library.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import time
import urllib.request
from dataclasses import asdict, dataclass

__all__ = ["Result", "cold_split", "http_json", "metric", "parse_cold_start", "parse_metrics",
           "percentile", "process_tree", "prompts", "run_clients", "summary", "tree_memory"]

#: words the prompts are made of (fixed, so every run and every server gets the same prompts)
_WORDS = ("the quick brown fox jumps over a lazy dog while seven bold engineers measure how "
          "long each server takes to answer one simple question about storage tiers memory "
          "disks and networks").split()


def prompts(n: int, words: int = 48) -> list[str]:
    """n different prompts of `words` words each, the same on every call."""
    out = []
    for i in range(n):
        body = " ".join(_WORDS[(i * 7 + j) % len(_WORDS)] for j in range(words))
        out.append(f"Request {i}: {body}")
    return out


@dataclass
class Result:
    """One streamed request as the client saw it. ttft and seconds from just before the send;
    sent_at: time.time() of the send (to line up with a server's own clock)."""

    ok: bool
    ttft: float | None = None
    seconds: float | None = None
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    sent_at: float | None = None
    text: str = ""
    error: str | None = None


async def _stream_one(client, model: str, prompt: str, max_tokens: int,
                      include_usage: bool) -> Result:
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    sent_at = time.time()
    start = time.perf_counter()
    res = Result(ok=False, sent_at=sent_at)
    parts = []
    try:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
            temperature=0.0, stream=True, **extra)
        async for chunk in stream:
            for choice in chunk.choices or ():
                content = choice.delta.content if choice.delta is not None else None
                if content:
                    if res.ttft is None:
                        res.ttft = time.perf_counter() - start
                    parts.append(content)
                if choice.finish_reason:
                    res.finish_reason = choice.finish_reason
            if chunk.usage is not None:
                res.output_tokens = chunk.usage.completion_tokens
                res.prompt_tokens = chunk.usage.prompt_tokens
        res.ok = res.ttft is not None
        if not res.ok:
            res.error = "the stream ended without any content"
    except Exception as exc:  # noqa: BLE001 - one failed request is a result, not a crash
        res.error = f"{type(exc).__name__}: {exc}"[-500:]
    res.seconds = time.perf_counter() - start
    res.text = "".join(parts)
    return res


async def _clients(base_url: str, model: str, texts: list[str], clients: int, requests: int,
                   max_tokens: int, include_usage: bool, timeout: float):
    import openai

    client = openai.AsyncOpenAI(base_url=base_url.rstrip("/") + "/v1", api_key="bench",
                                max_retries=0, timeout=timeout)

    async def one_client(c: int) -> list[Result]:
        out = []
        for k in range(requests):
            prompt = texts[(c * requests + k) % len(texts)]
            out.append(await _stream_one(client, model, prompt, max_tokens, include_usage))
        return out

    try:
        start = time.perf_counter()
        per_client = await asyncio.gather(*(one_client(c) for c in range(clients)))
        wall = time.perf_counter() - start
    finally:
        await client.close()
    return [r for rs in per_client for r in rs], wall


def run_clients(base_url: str, model: str, texts: list[str], *, clients: int = 1,
                requests: int = 1, max_tokens: int = 16, include_usage: bool = False,
                timeout: float = 900.0) -> tuple[list[Result], float]:
    """clients concurrent streaming clients, each sending `requests` requests one after the
    other (client c's k-th prompt is texts[(c * requests + k) % len(texts)]), greedy
    (temperature 0); (every Result, wall seconds from the first send to the last end).
    include_usage asks for the usage chunk (stream_options) where the server needs asking."""
    return asyncio.run(_clients(base_url, model, texts, clients, requests, max_tokens,
                                include_usage, timeout))


def percentile(values, q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between closest ranks (numpy's
    default); None for no values."""
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not between 0 and 100")
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(results: list[Result], wall: float, max_tokens: int | None = None) -> dict:
    """A round's numbers: requests, failed, output tokens, tokens/s over the wall time, TTFT
    p50/p99/max, whether every request gave exactly max_tokens tokens (equal_lengths), and a
    digest of every request's text in order (output_digest)."""
    ok = [r for r in results if r.ok]
    tokens = [r.output_tokens for r in ok]
    total = sum(t for t in tokens if t is not None) if all(t is not None for t in tokens) else None
    ttfts = [r.ttft for r in ok]
    out = dict(requests=len(results), failed=len(results) - len(ok), output_tokens=total,
               tokens_per_s=round(total / wall, 3) if total and wall > 0 else None,
               ttft_p50=percentile(ttfts, 50), ttft_p99=percentile(ttfts, 99),
               ttft_max=max(ttfts) if ttfts else None,
               request_seconds_p50=percentile([r.seconds for r in ok], 50))
    if max_tokens is not None:
        out["equal_lengths"] = bool(ok) and len(ok) == len(results) and all(
            t == max_tokens for t in tokens)
    # the same digest on two servers: they gave the same text to every request. A last token
    # that ends inside a UTF-8 character is flushed as U+FFFD by ours and dropped by
    # transformers serve: the same tokens, so such a trailing U+FFFD is left out
    texts = "\0".join(r.text.rstrip("\ufffd") for r in results)
    out["output_digest"] = hashlib.sha256(texts.encode()).hexdigest()[:16]
    errors = [r.error for r in results if r.error]
    if errors:
        out["error"] = f"{len(errors)} failed, first: {errors[0]}"
    return out


def result_dict(result: Result) -> dict:
    """A Result as plain data, without its text."""
    d = asdict(result)
    d.pop("text")
    return d


# -- what the servers report -----------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text exposition -> {(name, frozenset of (label, value)): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = frozenset(_LABEL.findall(m.group(3) or ""))
        try:
            out[(m.group(1), labels)] = float(m.group(4))
        except ValueError:
            continue
    return out


def metric(samples: dict, name: str, **labels: str) -> float:
    """The sum of every sample of name whose labels include `labels` (0.0 if none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


_COLD = re.compile(r"cold start of (?P<model>\S+) on (?P<worker>\S+): from (?P<tier>\S+), "
                   r"load (?P<load>[0-9.]+) s, build (?P<build>[0-9.]+) s, first token "
                   r"(?P<first>[0-9.]+) s after the start")


def parse_cold_start(log: str, model: str) -> dict | None:
    """The last cold start of model that our controller logged in log (text), as
    {worker, tier, ckpt_load_seconds, build_seconds, instance_first_token_seconds}; None if
    there is none."""
    found = None
    for m in _COLD.finditer(log):
        if m.group("model") == model:
            found = m
    if found is None:
        return None
    return dict(worker=found.group("worker"), tier=found.group("tier"),
                ckpt_load_seconds=float(found.group("load")),
                build_seconds=float(found.group("build")),
                instance_first_token_seconds=float(found.group("first")))


def cold_split(ttft: float, load_seconds: float | None, *,
               server_wait: float | None = None, load_start_delay: float | None = None) -> dict:
    """A cold request's TTFT split into queue_wait + load_seconds + first_token_seconds.

    queue_wait: from the send to the start of the load. Either load_start_delay (a server's
    own time.time() of the load's start minus the client's send time) or server_wait (ours:
    its measured arrival-to-instance-start) gives it. first_token_seconds is the rest (the
    prompt's tokenization, prefill, the first decode step and HTTP both ways), so the three
    add up to ttft. Unknown parts are None (and then so is the rest).
    """
    wait = load_start_delay if load_start_delay is not None else server_wait
    rest = None
    if wait is not None and load_seconds is not None:
        rest = ttft - wait - load_seconds
    return dict(queue_wait=wait, load_seconds=load_seconds, first_token_seconds=rest)


def http_json(url: str, method: str = "GET", body: dict | None = None,
              timeout: float = 30.0):
    """The decoded JSON (or, for a text answer, the text) of one HTTP request."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as answer:
        raw = answer.read().decode()
        if answer.headers.get_content_type() == "application/json":
            return json.loads(raw)
        return raw


# -- resident memory ----------------------------------------------------------------------------


def process_tree(root: int, proc: str = "/proc") -> list[int]:
    """root and every live descendant of it (from the parent ids in /proc/PID/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "stat")) as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: fields start after the last ')'
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if os.path.exists(os.path.join(proc, str(pid))):
            out.append(pid)
            todo.extend(children.get(pid, ()))
    return sorted(out)


def _kib_field(path: str, field: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def tree_memory(pids: list[int], proc: str = "/proc") -> dict:
    """Summed resident memory of pids: rss (VmRSS; pages shared between them count once per
    process) and pss (smaps_rollup's proportional share: shared pages split, so the sum is
    what they hold together), in bytes; processes: how many were measured."""
    rss = pss = 0
    n = 0
    for pid in pids:
        r = _kib_field(os.path.join(proc, str(pid), "status"), "VmRSS")
        if r is None:
            continue
        n += 1
        rss += r
        pss += _kib_field(os.path.join(proc, str(pid), "smaps_rollup"), "Pss") or 0
    return dict(rss=rss, pss=pss, processes=n)
