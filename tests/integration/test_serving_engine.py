"""serving.engine end to end: a tiny Llama (and GPT-2) with random weights built by
serving.model, a tokenizer trained in the test; continuous batching must give each request
exactly what the model gives it alone (model.generate), whoever shares the batch."""

from __future__ import annotations

import threading

import pytest
import torch

from serving.engine import Engine
from serving.model import build_model
from serving.protocol import Event, SamplingParams, ServingError
from serving.text import Text
from tests import tinylm

GREEDY = SamplingParams(max_tokens=12, temperature=0)
PROMPTS = ["the", "storage engines persist bytes to devices and models decode",
           "naïve café 日本語", "a lazy dog jumps over the quick brown fox while", "models"]


@pytest.fixture(scope="module")
def text():
    return Text.from_metadata(tinylm.metadata())


@pytest.fixture(scope="module")
def llama():
    return build_model(tinylm.metadata(), tinylm.state_dict("llama"))


@pytest.fixture
def engine(llama, text):
    eng = Engine(llama, text, max_batch=8)
    yield eng
    eng.close()


def test_build_model_is_zero_copy_with_weights_tied_again():
    tensors = tinylm.state_dict("gpt2")
    del tensors["lm_head.weight"]  # a checkpoint holds one name of a tied group
    model = build_model(tinylm.metadata(arch="gpt2"), tensors)
    assert type(model).__name__ == "GPT2LMHeadModel" and not model.training
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.data_ptr() == tensors["transformer.wte.weight"].data_ptr()
    assert not any(p.requires_grad for p in model.parameters())
    llama = build_model(tinylm.metadata(), tinylm.state_dict())
    assert llama.model.rotary_emb.inv_freq.device.type == "cpu"  # computed, not left on meta
    with pytest.raises(ServingError) as info:
        build_model({}, tensors)
    assert info.value.status == 500


class Stream:
    """The events of one request; then() runs a callback (on the engine thread) after a
    given number of tokens."""

    def __init__(self, engine: Engine | None = None):
        self.events: list[Event] = []
        self.finished = threading.Event()
        self.hooks: dict[int, callable] = {}
        self.max_active = 0
        self.engine = engine

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if self.engine is not None:
            self.max_active = max(self.max_active, self.engine.active)
        if event.kind in ("done", "error"):
            self.finished.set()
        hook = self.hooks.pop(len(self.tokens), None) if event.kind == "token" else None
        if hook is not None:
            hook()

    def then(self, after_tokens: int, hook) -> Stream:
        self.hooks[after_tokens] = hook
        return self

    def wait(self, timeout: float = 60) -> Event:
        assert self.finished.wait(timeout), "request did not finish"
        assert [e.kind for e in self.events].count("done") + \
            [e.kind for e in self.events].count("error") == 1
        return self.events[-1]

    @property
    def tokens(self) -> list[int]:
        return [t for e in self.events if e.kind == "token" for t in e.token_ids]

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if e.kind == "token")


def reference(model, text: Text, ids: list[int], max_tokens: int) -> list[int]:
    """What model.generate gives this prompt alone, up to and with the first end token."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids], device=device),
                             attention_mask=torch.ones(1, len(ids), device=device),
                             max_new_tokens=max_tokens, do_sample=False, pad_token_id=1,
                             eos_token_id=None)
    new = out[0, len(ids):].tolist()
    for i, t in enumerate(new):
        if t in text.eos_ids:
            return new[:i + 1]
    return new


def check_greedy(model, text, prompt_ids, stream, max_tokens=GREEDY.max_tokens):
    done = stream.wait()
    expected = reference(model, text, prompt_ids, max_tokens)
    assert stream.tokens == expected
    assert done.kind == "done"
    assert done.finish_reason == ("stop" if expected[-1] in text.eos_ids else "length")
    assert (done.prompt_tokens, done.completion_tokens) == (len(prompt_ids), len(expected))
    assert stream.text == text.decode(expected)


def test_batched_greedy_equals_generate_alone(llama, text, engine):
    ids = [text.encode(p) for p in PROMPTS]
    streams = [Stream(engine) for _ in ids]
    gate = threading.Event()  # hold the engine until all are queued: one batch
    engine.submit("gate", ids[0], SamplingParams(max_tokens=2, temperature=0),
                  lambda e: gate.wait(30))
    for i, (p, s) in enumerate(zip(ids, streams, strict=True)):
        engine.submit(f"r{i}", p, GREEDY, s)
    gate.set()
    for p, s in zip(ids, streams, strict=True):
        check_greedy(llama, text, p, s)
    assert max(s.max_active for s in streams) >= len(PROMPTS)  # all in one batch


def test_requests_joining_and_leaving_midway_equal_generate(llama, text, engine):
    ids = [text.encode(p) for p in PROMPTS]
    long = SamplingParams(max_tokens=30, temperature=0)
    short = SamplingParams(max_tokens=4, temperature=0)
    late, later, last = Stream(engine), Stream(engine), Stream(engine)
    # a long request; a longer prompt joins after 3 of its tokens, leaves after 4 tokens of
    # its own; a third joins after the short one left (the cache's padding is trimmed then)
    first = Stream(engine).then(3, lambda: engine.submit("late", ids[3], short, late))
    late.then(4, lambda: engine.submit("later", ids[1], long, later))
    later.then(2, lambda: engine.submit("last", ids[2], GREEDY, last))
    engine.submit("first", ids[0], long, first)
    check_greedy(llama, text, ids[0], first, 30)
    check_greedy(llama, text, ids[3], late, 4)
    check_greedy(llama, text, ids[1], later, 30)
    check_greedy(llama, text, ids[2], last)
    assert later.max_active >= 2


def test_gpt2_batched_greedy_equals_generate(text):
    model = build_model(tinylm.metadata(arch="gpt2"), tinylm.state_dict("gpt2"))
    engine = Engine(model, text, max_batch=4)
    try:
        ids = [text.encode(p) for p in PROMPTS[:3]]
        streams = [Stream(engine) for _ in ids]
        streams[0].then(2, lambda: engine.submit("b", ids[1], GREEDY, streams[1]))
        streams[0].then(3, lambda: engine.submit("c", ids[2], GREEDY, streams[2]))
        engine.submit("a", ids[0], GREEDY, streams[0])
        for p, s in zip(ids, streams, strict=True):
            check_greedy(model, text, p, s)
    finally:
        engine.close()


def test_seeded_sampling_is_reproducible_whoever_shares_the_batch(text, engine):
    ids = text.encode(PROMPTS[1])
    params = SamplingParams(max_tokens=16, temperature=1.5, top_p=0.95, top_k=100, seed=42)

    def run(companions: int) -> list[int]:
        mine = Stream()
        others = [Stream() for _ in range(companions)]
        for i, s in enumerate(others):  # of other lengths, sampled and greedy
            other = SamplingParams(max_tokens=20, temperature=float(i % 2), seed=i)
            engine.submit(f"o{i}-{companions}", text.encode(PROMPTS[i % 5]), other, s)
        engine.submit(f"mine-{companions}", ids, params, mine)
        mine.wait()
        for s in others:
            s.wait()
        return mine.tokens

    alone = run(0)
    assert len(alone) == 16 or alone[-1] in text.eos_ids
    assert run(3) == alone
    assert run(5) == alone
    other_seed = Stream()
    engine.submit("seed43", ids, SamplingParams(**{**params.__dict__, "seed": 43}), other_seed)
    other_seed.wait()
    assert other_seed.tokens != alone


def test_stop_string_across_tokens_is_cut(llama, text, engine):
    ids = text.encode(PROMPTS[3])
    full = reference(llama, text, ids, 12)
    pieces = [text.decode(full[:i + 1])[len(text.decode(full[:i])):] for i in range(len(full))]
    k = next(i for i in range(2, len(full) - 1) if pieces[i] and pieces[i + 1])
    stop = pieces[k][-1] + pieces[k + 1][0]  # spans tokens k and k + 1
    whole = text.decode(full)
    cut = whole.index(stop)
    stream = Stream()
    engine.submit("s", ids, SamplingParams(max_tokens=12, temperature=0, stop=("zzz", stop)),
                  stream)
    done = stream.wait()
    assert done.finish_reason == "stop"
    assert stream.text == whole[:cut]
    assert all(stop not in e.text for e in stream.events)
    ends = [len(text.decode(full[:i + 1])) for i in range(len(full))]
    assert done.completion_tokens == next(i + 1 for i, e in enumerate(ends)
                                          if e >= cut + len(stop))


def test_max_tokens_and_usage(text, engine):
    ids = text.encode(PROMPTS[2])
    for n in (1, 3):
        stream = Stream()
        engine.submit(f"n{n}", ids, SamplingParams(max_tokens=n, temperature=0.7, seed=1),
                      stream)
        done = stream.wait()
        assert [e.kind for e in stream.events] == ["token"] * n + ["done"]
        assert (done.finish_reason, done.prompt_tokens, done.completion_tokens) == \
            ("length", len(ids), n)


def test_context_limit_ends_with_length(text, engine):
    ids = (text.encode(PROMPTS[1]) * 20)[:120]  # the model's context is 128 positions
    stream = Stream()
    engine.submit("long", ids, SamplingParams(max_tokens=50, temperature=0), stream)
    done = stream.wait()
    assert done.finish_reason == "stop" or done.completion_tokens == 8
    too_long = Stream()
    engine.submit("too-long", ids * 2, GREEDY, too_long)
    assert too_long.wait().status == 400


def test_bad_requests_get_400(text, engine):
    ok = text.encode("the")
    cases = {"empty": ([], GREEDY), "vocab": ([5, 10_000], GREEDY),
             "params": (ok, SamplingParams(max_tokens=0)), "top_p": (ok, SamplingParams(top_p=0))}
    for rid, (ids, params) in cases.items():
        stream = Stream()
        engine.submit(rid, ids, params, stream)
        assert stream.wait().status == 400, rid
    gate, first, dup = threading.Event(), Stream(), Stream()
    engine.submit("dup", ok, GREEDY, lambda e: (first(e), gate.wait(30)))
    engine.submit("dup", ok, GREEDY, dup)
    gate.set()
    assert dup.wait().status == 400 and first.wait().kind == "done"


def test_cancel_frees_the_slot_and_a_queued_request_starts(text, llama):
    engine = Engine(llama, text, max_batch=1)
    try:
        gate = threading.Event()
        runner, queued, waiting = Stream(), Stream(), Stream()
        first_token = threading.Event()

        def held(event):  # the engine thread waits here after the runner's first token
            runner(event)
            first_token.set()
            gate.wait(30)

        ids = text.encode(PROMPTS[0])
        engine.submit("runner", ids, SamplingParams(max_tokens=100, temperature=0), held)
        assert first_token.wait(30)
        engine.submit("queued", ids, GREEDY, queued)
        engine.submit("waiting", ids, SamplingParams(max_tokens=3, temperature=0), waiting)
        assert (engine.active, engine.queued) == (1, 2)
        engine.cancel("queued")  # leaves the queue at once
        assert engine.queued == 1
        engine.cancel("runner")
        engine.cancel("nobody")  # ignored
        gate.set()
        done = runner.wait()
        assert (done.kind, done.finish_reason) == ("done", "cancelled")
        assert 1 <= done.completion_tokens < 100
        q = queued.wait()
        assert (q.finish_reason, q.completion_tokens, len(queued.events)) == ("cancelled", 0, 1)
        assert waiting.wait().finish_reason == "length" and len(waiting.tokens) == 3
        assert (engine.active, engine.queued) == (0, 0)
    finally:
        engine.close()


def test_close_gives_503_to_running_and_queued(text, llama):
    engine = Engine(llama, text, max_batch=1)
    gate, started = threading.Event(), threading.Event()
    runner, queued = Stream(), Stream()

    def held(event):
        runner(event)
        started.set()
        gate.wait(30)

    ids = text.encode(PROMPTS[0])
    engine.submit("runner", ids, SamplingParams(max_tokens=100, temperature=0), held)
    assert started.wait(30)
    engine.submit("queued", ids, GREEDY, queued)
    closer = threading.Thread(target=engine.close)
    closer.start()
    gate.set()
    closer.join(30)
    assert not closer.is_alive()
    for stream in (runner, queued):
        end = stream.wait()
        assert (end.kind, end.status) == ("error", 503)
    after = Stream()
    engine.submit("after", ids, GREEDY, after)
    assert after.wait().status == 503


def test_failing_emit_drops_only_its_request(text, llama, engine):
    def broken(event):
        raise RuntimeError("client went away")

    good = Stream()
    ids = text.encode(PROMPTS[1])
    engine.submit("broken", ids, GREEDY, broken)
    engine.submit("good", ids, GREEDY, good)
    check_greedy(llama, text, ids, good)
    assert engine.active == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batched_greedy_and_seeded_sampling(text):
    tensors = {k: v.cuda() for k, v in tinylm.state_dict().items()}
    model = build_model(tinylm.metadata(), tensors, device="cuda")
    assert model.model.rotary_emb.inv_freq.is_cuda
    engine = Engine(model, text, max_batch=4, device="cuda")
    try:
        ids = [text.encode(p) for p in PROMPTS[:3]]
        streams = [Stream(engine) for _ in ids]
        streams[0].then(2, lambda: engine.submit("b", ids[1], GREEDY, streams[1]))
        engine.submit("a", ids[0], GREEDY, streams[0])
        engine.submit("c", ids[2], GREEDY, streams[2])
        for p, s in zip(ids, streams, strict=True):
            check_greedy(model, text, p, s)
        sampled = SamplingParams(max_tokens=8, temperature=1.0, top_p=0.9, seed=3)
        runs = [Stream(), Stream()]
        for i, s in enumerate(runs):
            engine.submit(f"s{i}", ids[1], sampled, s)
        assert runs[0].wait().kind == runs[1].wait().kind == "done"
        assert runs[0].tokens == runs[1].tokens
    finally:
        engine.close()
