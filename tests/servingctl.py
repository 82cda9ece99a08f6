"""Shared set-up of the serving controller tests: a tiny model, a controller in a loop thread."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading

from serving.config import load_config
from serving.controller import Controller
from serving.demo import make_demo
from serving.protocol import Event, GenerateRequest, SamplingParams

#: a tiny Llama: milliseconds a token on one core; a long context for long generations
TINY = {"vocab_size": 320, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096}


def tiny_model(root) -> str:
    """A tiny Hugging Face model directory with no end-of-sequence token, so every greedy
    generation runs to max_tokens (tests need requests that are still running)."""
    demo = make_demo(os.path.join(root, "demo"), config_overrides=TINY, text_bytes=64 << 10)
    path = os.path.join(root, "tiny")
    shutil.copytree(demo, path)
    _edit(path, "config.json", lambda d: d.update(eos_token_id=None))
    _edit(path, "generation_config.json", lambda d: d.update(eos_token_id=None))
    _edit(path, "tokenizer_config.json", lambda d: d.pop("eos_token", None))
    return path


def _edit(path, name, change) -> None:
    file = os.path.join(path, name)
    with open(file) as f:
        doc = json.load(f)
    change(doc)
    with open(file, "w") as f:
        json.dump(doc, f)


class Loop:
    """An asyncio loop in a thread: tests drive the controller from plain functions."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float = 120.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args):
        async def call():
            return fn(*args)

        return self.run(call())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Harness:
    """A started Controller on a Loop; close() stops it and kills any worker left."""

    def __init__(self, store, models, *, worker_factory=None, **settings):
        settings.setdefault("workers", 2)
        settings.setdefault("heartbeat", 0.2)
        settings.setdefault("dram_per_worker", "64MiB")
        settings.setdefault("disk_per_worker", "1GiB")
        settings.setdefault("threads_per_worker", 1)
        self.config = load_config(None, store=str(store), models=models, **settings)
        self.loop = Loop()
        self.controller = (Controller(self.config) if worker_factory is None else
                           Controller(self.config, worker_factory=worker_factory))
        try:
            self.loop.run(self.controller.start(), timeout=300)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            self.loop.run(self.controller.stop(1.0), timeout=60)
        finally:
            for w in self.controller._workers:
                w.kill()
            self.loop.close()

    # -- requests ------------------------------------------------------------------------

    def open(self, model, prompt="Once upon a time", *, max_tokens=8, rid="req", **params):
        """A Stream: the controller's generator for one request, stepped from the test."""
        params.setdefault("temperature", 0.0)
        req = GenerateRequest(rid, model, SamplingParams(max_tokens=max_tokens, **params),
                              prompt=prompt)
        return Stream(self, self.controller.generate(req))

    def complete(self, model, prompt="Once upon a time", **kw) -> list[Event]:
        stream = self.open(model, prompt, **kw)
        return stream.rest()

    def status(self) -> dict:
        return self.loop.call(self.controller.status)

    def deployment(self, name) -> dict:
        return next(d for d in self.status()["deployments"] if d["name"] == name)

    def worker_of(self, name) -> dict:
        return next(w for w in self.status()["workers"] if w["instance"] == name)


class Stream:
    def __init__(self, harness: Harness, agen):
        self.h = harness
        self.agen = agen
        self.events: list[Event] = []

    def next(self, timeout: float = 60.0) -> Event:
        event = self.h.loop.run(self.agen.__anext__(), timeout)
        self.events.append(event)
        return event

    def until(self, kind: str, timeout: float = 60.0) -> Event:
        while True:
            event = self.next(timeout)
            if event.kind == kind or event.kind in ("done", "error"):
                return event

    def rest(self, timeout: float = 120.0) -> list[Event]:
        while not self.events or self.events[-1].kind not in ("done", "error"):
            self.next(timeout)
        return self.events

    def close(self) -> None:
        self.h.loop.run(self.agen.aclose())


def tokens(events) -> list[int]:
    return [t for e in events if e.kind == "token" for t in e.token_ids]


def kinds(events) -> list[str]:
    return [e.kind for e in events]
