"""serving.controller with real worker processes: cold and warm starts, keep-alive, queue
limits, cancellation, a worker killed mid-stream, graceful stop.

One controller (two workers) serves the whole module; the tests run in file order and each
leaves it quiet (the last one stops it).
"""

import asyncio
import os
import signal
import time

import pytest
import torch

from serving.protocol import ServingError
from serving.text import Text
from tests.servingctl import Harness, kinds, tiny_model, tokens

pytestmark = pytest.mark.slow

LONG = 3000  # tokens: a request that runs for seconds


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return tiny_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def h(tiny, tmp_path_factory):
    models = [
        {"name": "tiny", "path": tiny, "keep_alive": 60, "target_concurrency": 1,
         "max_instances": 1, "queue_limit": 1, "max_prompt_tokens": 64, "max_tokens": LONG},
        {"name": "brief", "path": tiny, "keep_alive": 0.5, "max_instances": 1,
         "max_tokens": LONG},
    ]
    harness = Harness(tmp_path_factory.mktemp("store"), models)
    yield harness
    harness.close()


def _refused(h, model, **kw) -> ServingError:
    stream = h.open(model, **kw)
    with pytest.raises(ServingError) as info:
        stream.next()
    return info.value


def _wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _greedy(path, prompt, n) -> list[int]:
    """The reference: transformers' model, full recomputation each step, argmax."""
    from transformers import AutoModelForCausalLM

    with open(os.path.join(path, "tokenizer.json")) as f:
        text = Text(f.read())
    ids = text.encode(prompt)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids + out])).logits[0, -1]
            out.append(int(logits.argmax()))
    return out


def test_refusals_come_before_the_first_event(h):
    assert _refused(h, "nope").status == 404
    assert _refused(h, "tiny", prompt="word " * 200).status == 400
    assert _refused(h, "tiny", max_tokens=LONG + 1).status == 400
    assert h.deployment("tiny")["state"] == "cold"  # nothing was started for them


def test_cold_start_streams_the_greedy_tokens_then_a_warm_start(h, tiny):
    events = h.complete("tiny", "Once upon a time", max_tokens=12)
    assert events[0].kind == "wait" and events[0].info["reason"] == "cold_start"
    assert kinds(events)[-1] == "done" and events[-1].completion_tokens == 12
    assert tokens(events) == _greedy(tiny, "Once upon a time", 12)
    dep = h.deployment("tiny")
    assert dep["cold_starts"] == 1 and dep["instances"][0]["tier"] == "registry"

    again = h.complete("tiny", "Once upon a time", max_tokens=12)
    assert "wait" not in kinds(again)
    assert tokens(again) == tokens(events)
    assert h.deployment("tiny")["cold_starts"] == 1
    body = h.controller.metrics.render()[0].decode()
    assert 'serving_cold_starts_total{model="tiny",tier="registry"} 1.0' in body


def test_keep_alive_scales_to_zero_and_the_next_cold_start_comes_from_dram(h):
    first = h.complete("brief", max_tokens=4)
    assert first[-1].kind == "done"
    worker = h.worker_of("brief")
    assert "brief" in worker["tiers"]["dram"] and "brief" in worker["tiers"]["local"]
    _wait_for(lambda: h.deployment("brief")["state"] == "cold")  # keep_alive 0.5 s
    assert h.deployment("brief")["instances"] == []

    # two requests during the cold start: both wait, then both stream
    a, b = h.open("brief", max_tokens=4, rid="a"), h.open("brief", max_tokens=4, rid="b")
    assert a.next().kind == "wait" and b.next().kind == "wait"
    assert a.rest()[-1].kind == "done" and b.rest()[-1].kind == "done"
    assert tokens(a.events) == tokens(b.events) == tokens(first)
    dep = h.deployment("brief")
    assert dep["cold_starts"] == 2 and dep["instances"][0]["tier"] == "dram"
    assert h.worker_of("brief")["name"] == worker["name"]  # placed where the tiers hold it


def test_a_full_queue_refuses_with_429(h):
    running = h.open("tiny", max_tokens=LONG, rid="running")
    assert running.until("token").kind == "token"
    queued = h.open("tiny", rid="queued")
    wait = queued.next()
    assert wait.kind == "wait" and wait.info["reason"] == "queue"
    refused = _refused(h, "tiny")
    assert refused.status == 429 and refused.retry_after > 0
    running.close()
    assert queued.rest()[-1].kind == "done"


def test_closing_a_stream_cancels_it_and_frees_its_slot(h):
    first = h.open("tiny", max_tokens=LONG, rid="first")
    first.until("token")
    second = h.open("tiny", max_tokens=4, rid="second")
    assert second.next().kind == "wait"  # target_concurrency 1: it queues
    start = time.monotonic()
    first.close()
    assert second.rest()[-1].kind == "done"
    assert time.monotonic() - start < 10  # not after the LONG tokens of first
    _wait_for(lambda: h.worker_of("tiny")["running"] == 0)
    assert h.deployment("tiny")["active"] == 0


def test_a_worker_killed_mid_stream_fails_its_request_and_is_replaced(h):
    victim = h.open("tiny", max_tokens=LONG, rid="victim")
    victim.until("token")
    other = h.open("brief", max_tokens=200, rid="other")
    other.until("token")
    dead = h.worker_of("tiny")
    assert dead["name"] != h.worker_of("brief")["name"]
    os.kill(dead["pid"], signal.SIGKILL)

    last = victim.rest()[-1]
    assert last.kind == "error" and last.status == 503
    assert "died" in last.message and "SIGKILL" in last.message
    assert other.rest()[-1].kind == "done"  # the other model's worker is untouched
    assert other.events[-1].completion_tokens == 200

    def replaced():
        w = h.status()["workers"][dead["index"]]
        return w["alive"] and w["pid"] != dead["pid"]

    _wait_for(replaced, timeout=120)
    after = h.complete("tiny", max_tokens=4)
    assert after[-1].kind == "done"
    assert h.deployment("tiny")["instances"][0]["tier"] in ("local", "dram")


def test_graceful_stop_finishes_running_requests_and_refuses_new_ones(h):
    running = h.open("tiny", max_tokens=300, rid="running")
    running.until("token")
    pids = [w["pid"] for w in h.status()["workers"]]
    stopping = asyncio.run_coroutine_threadsafe(h.controller.stop(60), h.loop.loop)
    _wait_for(lambda: not h.loop.call(lambda: h.controller.accepting))
    assert _refused(h, "tiny").status == 503
    last = running.rest()[-1]
    assert last.kind == "done" and last.completion_tokens == 300
    stopping.result(60)
    assert not any(w["alive"] for w in h.status()["workers"])
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
