"""serving.engine's side of live migration: a request handed over by one engine and resumed by
another (its KV cache staged in rounds, or not at all) gives exactly the tokens, text, usage
and token indices of an uninterrupted run, greedy or seeded, stop strings included."""

from __future__ import annotations

import threading

import pytest
import torch

from serving.engine import Engine
from serving.model import build_model
from serving.protocol import Event, SamplingParams
from serving.text import Text
from tests import tinylm

PROMPT = "a lazy dog jumps over the quick brown fox while"
GREEDY = SamplingParams(max_tokens=40, temperature=0)
SEEDED = SamplingParams(max_tokens=40, temperature=1.2, top_p=0.95, top_k=50, seed=11)


@pytest.fixture(scope="module")
def text():
    return Text.from_metadata(tinylm.metadata())


def _engine(text, max_batch=4):
    return Engine(build_model(tinylm.metadata(), tinylm.state_dict()), text,
                  max_batch=max_batch)


@pytest.fixture
def pair(text):
    """(source, destination): two engines, each with its own copy of the same model."""
    src, dst = _engine(text), _engine(text)
    yield src, dst
    src.close()
    dst.close()


class Stream:
    """A request's events; hand(engine, rid, after) hands it over after that many tokens."""

    def __init__(self):
        self.events: list[Event] = []
        self.finished = threading.Event()
        self.hook = None

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if event.kind in ("done", "error"):
            self.finished.set()
        if self.hook is not None and event.kind == "token" and len(self.tokens) == self.hook[0]:
            self.hook[1]()

    def hand(self, engine: Engine, rid: str, after: int) -> Stream:
        self.hook = (after, lambda: engine.handover(rid))
        return self

    def wait(self, timeout: float = 60) -> Event:
        assert self.finished.wait(timeout), "request did not finish"
        return self.events[-1]

    @property
    def tokens(self) -> list[int]:
        return [t for e in self.events if e.kind == "token" for t in e.token_ids]

    @property
    def indices(self) -> list[int]:
        return [e.index for e in self.events if e.kind == "token"]

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if e.kind == "token")


def _whole(engine: Engine, ids: list[int], params: SamplingParams, rid="whole") -> Stream:
    stream = Stream()
    engine.submit(rid, ids, params, stream)
    assert stream.wait().kind == "done"
    return stream


def _move(src: Engine, dst: Engine, ids, params, after: int, staging: str,
          rid="moved") -> tuple[Stream, Stream, Event]:
    """Run on src, hand over after `after` tokens, resume on dst (staged as named)."""
    first = Stream().hand(src, rid, after)
    src.submit(rid, ids, params, first)
    handed = first.wait()
    assert (handed.kind, handed.finish_reason) == ("done", "migrated")
    generated = list(handed.token_ids)
    # at the next token boundary: the prefill's step decodes one more token before it
    assert generated == first.tokens and handed.completion_tokens == len(generated)
    assert after <= len(generated) <= after + (after == 1)
    assert src.active == 0  # the slot is free at once
    context = ids + generated
    if staging == "rounds":  # what the source had made by each round; the last ids come after
        half = len(ids) + after // 2
        assert dst.stage(rid, context[:half]).result(30) == half
        assert dst.stage(rid, context[half:-1]).result(30) == len(context) - 1
    elif staging == "all":
        assert dst.stage(rid, context).result(30) == len(context)
    second = Stream()
    dst.submit(rid, ids, params, second, generated_ids=generated,
               generator_state=handed.info["generator"])
    second.wait()
    return first, second, handed


@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded"])
@pytest.mark.parametrize("staging", ["none", "rounds", "all"])
def test_resume_equals_uninterrupted(pair, text, params, staging):
    src, dst = pair
    ids = text.encode(PROMPT)
    whole = _whole(src, ids, params)
    n = len(whole.tokens)
    assert n > 8, "the reference ends too early to move it"
    for after in (1, n // 2, n - 1):
        first, second, _ = _move(src, dst, ids, params, after, staging, rid=f"m{after}")
        assert first.tokens + second.tokens == whole.tokens
        assert first.indices + second.indices == list(range(n))  # no gap, no duplicate
        assert first.text + second.text == whole.text
        done, expected = second.events[-1], whole.events[-1]
        assert (done.kind, done.finish_reason, done.prompt_tokens, done.completion_tokens) == (
            "done", expected.finish_reason, expected.prompt_tokens, expected.completion_tokens)


def test_resume_joins_a_busy_batch_and_equals_uninterrupted(pair, text):
    src, dst = pair
    ids = text.encode(PROMPT)
    whole = _whole(src, ids, GREEDY)
    others = [Stream() for _ in range(3)]
    for i, s in enumerate(others):  # the destination is busy with requests of its own
        dst.submit(f"other{i}", text.encode(tinylm.corpus(60, seed=i)),
                   SamplingParams(max_tokens=30, temperature=float(i % 2), seed=i), s)
    first, second, _ = _move(src, dst, ids, GREEDY, 7, "rounds")
    assert first.tokens + second.tokens == whole.tokens
    for s in others:
        assert s.wait().kind == "done"


def test_stop_string_held_across_the_handover(pair, text):
    src, dst = pair
    ids = text.encode(PROMPT)
    full = _whole(src, ids, SamplingParams(max_tokens=30, temperature=0)).tokens
    pieces = [text.decode(full[:i + 1])[len(text.decode(full[:i])):] for i in range(len(full))]
    k = next(i for i in range(2, len(full) - 1) if pieces[i] and pieces[i + 1])
    stop = pieces[k][-1] + pieces[k + 1][0]  # spans tokens k and k + 1
    params = SamplingParams(max_tokens=30, temperature=0, stop=("zzz", stop))
    whole = _whole(src, ids, params, rid="stop-whole")
    done = whole.events[-1]
    assert done.finish_reason == "stop" and done.completion_tokens >= 2
    # handed over just before the token that completes the stop string: the source holds
    # back the text that may start it, the destination must hold it back too
    first, second, _ = _move(src, dst, ids, params, done.completion_tokens - 1, "none",
                             rid="stop")
    assert first.text + second.text == whole.text
    assert stop not in first.text + second.text
    assert second.events[-1].finish_reason == "stop"
    assert second.events[-1].completion_tokens == whole.events[-1].completion_tokens


def test_max_tokens_counts_on_from_the_source(pair, text):
    src, dst = pair
    ids = text.encode(PROMPT)
    params = SamplingParams(max_tokens=6, temperature=0)
    first, second, _ = _move(src, dst, ids, params, 4, "none")
    assert len(second.tokens) == 2 and second.indices == [4, 5]
    assert (second.events[-1].finish_reason, second.events[-1].completion_tokens) == (
        "length", 6)
    late = Stream()  # nothing left to generate: refused
    dst.submit("late", ids, params, late, generated_ids=first.tokens + second.tokens)
    assert late.wait().status == 400


def test_handover_frees_the_slot_for_the_queue(text):
    src = _engine(text, max_batch=1)
    try:
        ids = text.encode(PROMPT)
        gate, started = threading.Event(), threading.Event()
        runner, queued = Stream(), Stream()

        def held(event):  # the engine thread waits here after the runner's first token
            runner(event)
            started.set()
            gate.wait(30)

        src.submit("runner", ids, SamplingParams(max_tokens=30, temperature=0), held)
        assert started.wait(30)
        src.submit("queued", ids, SamplingParams(max_tokens=3, temperature=0), queued)
        assert (src.active, src.queued) == (1, 1)
        src.handover("runner")
        src.handover("nobody")  # ignored
        gate.set()
        handed = runner.wait()
        assert handed.finish_reason == "migrated" and len(handed.token_ids) >= 1
        assert queued.wait().finish_reason == "length" and len(queued.tokens) == 3
        assert (src.active, src.queued) == (0, 0)
    finally:
        src.close()


def test_handover_of_a_queued_request_hands_over_nothing(text):
    src = _engine(text, max_batch=1)
    try:
        ids = text.encode(PROMPT)
        gate, started = threading.Event(), threading.Event()

        def held(event):
            started.set()
            gate.wait(30)

        src.submit("runner", ids, SamplingParams(max_tokens=5, temperature=0), held)
        assert started.wait(30)
        waiting = Stream()
        src.submit("waiting", ids, SEEDED, waiting)
        src.handover("waiting")  # leaves the queue at once
        assert src.queued == 0
        gate.set()
        handed = waiting.wait()
        assert (handed.finish_reason, handed.token_ids, handed.completion_tokens) == (
            "migrated", (), 0)
    finally:
        src.close()


def test_stage_is_checked_and_cancel_drops_it(pair, text):
    _, dst = pair
    ids = text.encode(PROMPT)
    assert dst.stage("s", ids).result(30) == len(ids)
    assert dst.stage("s", ids[:3]).result(30) == len(ids) + 3
    dst.cancel("s")
    assert dst.stage("s", ids).result(30) == len(ids)  # a fresh cache
    with pytest.raises(ValueError):
        dst.stage("bad", [10_000]).result(30)
    with pytest.raises(ValueError):
        dst.stage("s", ids * 20).result(30)  # past the model's 128 positions
    dst.cancel("s")
    whole = _whole(dst, ids, GREEDY, rid="after")  # a stale cache never leaks into others
    staged = Stream()
    assert dst.stage("wrong", ids[:-1] + [5]).result(30) == len(ids)  # not this request's ids
    dst.submit("wrong", ids, GREEDY, staged)
    staged.wait()
    assert staged.tokens == whole.tokens


def test_close_fails_pending_stages(text):
    dst = _engine(text)
    dst.close()
    with pytest.raises(RuntimeError):
        dst.stage("s", [5, 6]).result(30)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_resume_equals_uninterrupted_with_the_cuda_generator_state(text):
    def engine():
        tensors = {k: v.cuda() for k, v in tinylm.state_dict().items()}
        return Engine(build_model(tinylm.metadata(), tensors, device="cuda"), text,
                      max_batch=4, device="cuda")

    src, dst = engine(), engine()
    try:
        ids = text.encode(PROMPT)
        for params in (GREEDY, SEEDED):
            whole = _whole(src, ids, params, rid=f"w{params.temperature}")
            first, second, _ = _move(src, dst, ids, params, 5, "rounds",
                                     rid=f"m{params.temperature}")
            assert first.tokens + second.tokens == whole.tokens
    finally:
        src.close()
        dst.close()
