"""The inference engine of one worker: continuous batching over a causal LM with a KV cache.

    engine = Engine(model, text, max_batch=16, device="cuda")
    engine.submit("req-1", text.encode("Once upon"), SamplingParams(max_tokens=32), emit)
    ...                                     # emit(Event) is called from the engine's thread
    engine.close()

One background thread runs the loop. At each token boundary it ends cancelled requests,
prefills requests from the queue while the batch has room (each alone, so a prompt is
computed exactly as if it ran by itself) and merges their KV caches into the running batch,
then runs one decode step for the whole batch. Sequences of different lengths share the
cache left-padded: each row has its own attention mask and position ids, so padding changes
nothing that a row computes. Finished rows leave the batch at once and padding columns that
no row needs any more are dropped.

Events per request, in order: "token" per generated token (text is the new text, possibly ""
while a stop string may still match or a character is incomplete; the end-of-sequence token
and the token that completes a stop string have events too, so completion_tokens counts
events; index numbers them from 0), then exactly one of "done" (finish_reason "stop",
"length", "cancelled" or "migrated") or "error" (400 bad request, 429 queue full, 500 model
failure, 503 engine closed).

Live migration (serving.migration) moves a running request between engines by its token ids:

    dst.stage("r1", prompt + generated_so_far)     # rounds: KV cache built off the batch
    dst.stage("r1", generated_since)               # ... each round appends what came since
    src.handover("r1")     # ends with done "migrated": token_ids = all generated, generator
    dst.submit("r1", prompt, params, emit, generated_ids=..., generator_state=...)

A resumed request prefills prompt + generated ids (on top of its staged cache, so only the
ids not staged yet are computed), re-feeds the generated ids to a fresh detokenizer and stop
matcher without emitting (their state is a function of the ids fed), restores the sampler's
generator state, and counts max_tokens, usage and token indices on from the source's.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from serving.protocol import Event, SamplingParams
from serving.sampling import check_params, new_generator, pick
from serving.text import Detokenizer, StopStrings, Text

__all__ = ["Engine"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Request:
    rid: str
    prompt: list[int]
    params: SamplingParams
    emit: Callable[[Event], None]
    detok: Detokenizer | None = None
    stops: StopStrings | None = None
    gen: torch.Generator | None = None
    generated: list[int] = field(default_factory=list)  # output ids (a resume's included)
    state_in: bytes | None = None  # a resume's generator state
    context: int = 0  # ids in the cache its prefill made
    last: int = 0  # the token fed at the next decode step
    completion: int = 0
    broken: bool = False  # emit raised: the request is dropped without further events
    done: bool = False


@dataclass(eq=False)
class _Staged:
    """A KV cache built for a request that is not here yet (a migration's rounds)."""

    ids: list[int] = field(default_factory=list)
    cache: object = None  # a transformers DynamicCache over ids
    logits: torch.Tensor | None = None  # next-token logits after ids


class Engine:
    """Generates tokens for many requests at once with one model (see the module docstring).

    submit, cancel, close and the counts are thread-safe; emit callbacks run on the engine's
    thread and must not block for long (they hold up every request in the batch).
    """

    def __init__(self, model: torch.nn.Module, text: Text, *, max_batch: int = 16,
                 max_queue: int | None = None, device: str | torch.device = "cpu"):
        """model: a causal LM from serving.model.build_model, already on device. max_queue:
        requests waiting beyond it get error 429 (None: no limit)."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch}")
        self._model = model
        self._text = text
        self._device = torch.device(device)
        self._max_batch = max_batch
        self._max_queue = max_queue
        config = model.config
        self._vocab = min(config.get_text_config().vocab_size, text.vocab_size)
        self._max_len = _max_positions(config)
        params = inspect.signature(model.forward).parameters
        self._logits_kw = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._known: dict[str, _Request] = {}  # queued and running, by id
        self._cancel: set[str] = set()
        self._handover: set[str] = set()
        self._stages: deque[tuple[str, list[int], Future]] = deque()  # for the engine thread
        self._staged: dict[str, _Staged] = {}
        self._notices: list[tuple[_Request, Event]] = []  # final events the thread delivers
        self._active = 0
        self._closing = False
        self._closed = False
        self._batch = _Batch(self._device)
        self._thread = threading.Thread(target=self._run, name="serving-engine", daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        """Requests in the running batch."""
        with self._cond:
            return self._active

    @property
    def queued(self) -> int:
        """Requests waiting for room in the batch."""
        with self._cond:
            return len(self._queue)

    def submit(self, request_id: str, prompt_ids: list[int], params: SamplingParams,
               emit: Callable[[Event], None], *, generated_ids: Sequence[int] = (),
               generator_state: bytes | None = None) -> None:
        """Queue a request; its events go to emit. Never raises for bad input: the request
        gets an error event instead (from the engine thread; from the caller's thread only
        when the engine is closed, as no engine thread is left).

        generated_ids: resume a request that generated these ids elsewhere (its next token
        event has index len(generated_ids)); generator_state: the sampler's state there, from
        its "migrated" event (None: a fresh generator, seeded from params).
        """
        req = _Request(request_id, list(prompt_ids), params, emit,
                       generated=list(generated_ids), state_in=generator_state,
                       completion=len(generated_ids))
        with self._cond:
            if self._closed or self._closing:
                closed = True
            else:
                closed = False
                problem = self._check(req)
                if problem is not None:
                    self._notices.append((req, problem))
                else:
                    self._known[request_id] = req
                    self._queue.append(req)
                self._cond.notify()
        if closed:
            _send(req, Event(kind="error", status=503, message="engine closed"))

    def cancel(self, request_id: str) -> None:
        """Stop a request: a queued one leaves the queue at once, a running one frees its
        batch slot at the next token boundary. It then gets done with finish_reason
        "cancelled" (and usage so far). A cache staged for it is dropped. Unknown or finished
        ids are ignored."""
        with self._cond:
            self._staged.pop(request_id, None)
            dropped = [op for op in self._stages if op[0] == request_id]
            for op in dropped:
                self._stages.remove(op)
            req = self._known.get(request_id)
            if req is not None:
                if req in self._queue:
                    self._queue.remove(req)
                    del self._known[request_id]
                    self._notices.append((req, _done(req, "cancelled")))
                else:
                    self._cancel.add(request_id)
                self._cond.notify()
        for _, _, future in dropped:  # outside the lock: callbacks may send messages
            future.set_exception(RuntimeError(f"stage of {request_id} cancelled"))

    def stage(self, request_id: str, token_ids: Sequence[int]) -> Future:
        """Extend the KV cache staged for request_id with token_ids, at the next token
        boundary, off the batch (a migration's round). The future's result: how many ids are
        staged now; ValueError for bad ids, RuntimeError when the engine closes first.

        A later submit of request_id whose prompt + generated ids start with the staged ids
        uses the cache; cancel(request_id) drops it.
        """
        future: Future = Future()
        with self._cond:
            closed = self._closed or self._closing
            if not closed:
                self._stages.append((request_id, list(token_ids), future))
                self._cond.notify()
        if closed:
            future.set_exception(RuntimeError("engine closed"))
        return future

    def handover(self, request_id: str) -> None:
        """End a request so that another engine can resume it: at the next token boundary
        (a queued one at once) its slot is freed and it gets done with finish_reason
        "migrated", token_ids every id generated so far, info["generator"] the state of its
        sampler's generator (bytes; None when greedy). Unknown or finished ids are ignored
        (a request that ends first gets its usual done)."""
        with self._cond:
            req = self._known.get(request_id)
            if req is None:
                return
            if req in self._queue:
                self._queue.remove(req)
                del self._known[request_id]
                self._notices.append((req, _migrated(req)))
            else:
                self._handover.add(request_id)
            self._cond.notify()

    def close(self, timeout: float | None = None) -> None:
        """Stop the thread after the current step; unfinished requests get error 503."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _check(self, req: _Request) -> Event | None:
        def bad(message):
            return Event(kind="error", status=400, message=message)

        if req.rid in self._known:
            return bad(f"request id {req.rid!r} is already running")
        problem = check_params(req.params)
        if problem is not None:
            return bad(problem)
        if not req.prompt:
            return bad("empty prompt")
        if not self._valid(req.prompt):
            return bad(f"prompt token ids must be in [0, {self._vocab})")
        if not self._valid(req.generated, empty=True):
            return bad(f"generated token ids must be in [0, {self._vocab})")
        total = len(req.prompt) + len(req.generated)
        if self._max_len is not None and total >= self._max_len:
            return bad(f"prompt of {total} tokens leaves no room in the model's "
                       f"context of {self._max_len}")
        if req.completion >= req.params.max_tokens:
            return bad(f"{req.completion} tokens generated already: max_tokens reached")
        if req.state_in is not None and not isinstance(req.state_in, bytes):
            return bad("generator_state must be bytes")
        if self._max_queue is not None and len(self._queue) >= self._max_queue:
            return Event(kind="error", status=429, message="queue full", retry_after=1.0)
        return None

    def _valid(self, ids: list[int], *, empty: bool = False) -> bool:
        return (empty or bool(ids)) and all(
            isinstance(t, int) and 0 <= t < self._vocab for t in ids)

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while self._step():
                    pass
        except BaseException:  # noqa: BLE001 -- a dead loop must still answer everyone
            log.exception("serving engine loop failed")
        finally:
            with self._cond:
                self._closed = True
                notices, self._notices = self._notices, []
                left = [r for r in self._known.values() if not r.done]
                self._known.clear()
                self._queue.clear()
                self._active = 0
                stages, self._stages = self._stages, deque()
                self._staged.clear()
            for _, _, future in stages:
                future.set_exception(RuntimeError("engine closed"))
            for req, event in notices:
                _send(req, event)
            for req in left:
                _send(req, Event(kind="error", status=503, message="engine closed"))

    def _step(self) -> bool:
        """One token boundary and one decode step; False when the engine is closing."""
        running = self._batch.rows
        with self._cond:
            while not (self._closing or self._queue or running or self._notices
                       or self._stages):
                self._cond.wait()
            if self._closing:
                return False
            notices, self._notices = self._notices, []
            cancelled = {r for r in running if r.rid in self._cancel}
            self._cancel.clear()  # ids not running any more are stale
            handed = {r for r in running if r.rid in self._handover} - cancelled
            self._handover.clear()
            stages, self._stages = self._stages, deque()
            room = self._max_batch - len(running) + len(cancelled) + len(handed)
            admitted = [self._queue.popleft() for _ in range(min(room, len(self._queue)))]
            self._active = len(running) + len(admitted)  # _finish counts the ends
        for req, event in notices:
            _send(req, event)
        for req in cancelled:
            self._finish(req, _done(req, "cancelled"))
        for req in handed:
            self._finish(req, _migrated(req))
        self._batch.remove(cancelled | handed)
        for rid, ids, future in stages:
            self._stage(rid, ids, future)
        self._prefill(admitted)
        if self._batch.rows:
            self._decode()
        return True

    def _stage(self, rid: str, ids: list[int], future: Future) -> None:
        with self._cond:
            staged = self._staged.get(rid) or _Staged()
            total = len(staged.ids) + len(ids)
            good = self._valid(ids) and (self._max_len is None or total < self._max_len)
            if good:
                self._staged[rid] = staged
        if not good:
            future.set_exception(ValueError(f"stage of {rid}: {len(ids)} ids not in "
                                            f"[0, {self._vocab}) or past the context"))
            return
        try:
            staged.cache, staged.logits = self._extend(staged.cache, ids, len(staged.ids))
        except Exception as exc:  # noqa: BLE001 -- only the migration fails
            log.exception("stage of %s failed", rid)
            with self._cond:
                if self._staged.get(rid) is staged:
                    del self._staged[rid]
            future.set_exception(RuntimeError(f"stage of {rid}: {exc}"))
            return
        staged.ids += ids
        future.set_result(len(staged.ids))

    def _prefill(self, admitted: list[_Request]) -> None:
        joining = []
        for req in admitted:
            req.detok = self._text.detokenizer(req.prompt)
            req.stops = StopStrings(req.params.stop)
            for token in req.generated:  # a resume: the state the source had, given out there
                req.stops.feed(req.detok.feed(token))
            req.gen = new_generator(req.params, self._device)
            with self._cond:
                staged = self._staged.pop(req.rid, None)
            ids = req.prompt + req.generated
            try:
                if req.gen is not None and req.state_in is not None:
                    req.gen.set_state(torch.frombuffer(bytearray(req.state_in),
                                                       dtype=torch.uint8))
                if staged is not None and staged.ids == ids[:len(staged.ids)]:
                    tail = ids[len(staged.ids):]
                    cache, logits = ((staged.cache, staged.logits) if not tail else
                                     self._extend(staged.cache, tail, len(staged.ids)))
                else:
                    cache, logits = self._extend(None, ids, 0)
                token = pick(logits, [req.params], [req.gen])[0]
            except Exception as exc:  # noqa: BLE001 -- this request fails, the others go on
                log.exception("prefill of %s failed", req.rid)
                self._finish(req, Event(kind="error", status=500, message=f"prefill: {exc}"))
                continue
            req.context = len(ids)
            self._advance(req, token)
            if not req.done:
                joining.append((req, cache))
        self._batch.add(joining)

    def _extend(self, cache, ids: list[int], start: int):
        """Run ids at positions start... on top of cache (None: a new one holding start ids
        = none); the cache (extended in place) and the logits after the last id."""
        from transformers import DynamicCache

        if cache is None:
            cache = DynamicCache()
        n = start + len(ids)
        tensor = torch.tensor([ids], dtype=torch.long, device=self._device)
        out = self._model(input_ids=tensor,
                          attention_mask=torch.ones(1, n, dtype=torch.long, device=self._device),
                          position_ids=torch.arange(start, n, device=self._device)[None],
                          past_key_values=cache, use_cache=True, **self._logits_kw)
        return cache, out.logits[:, -1]

    def _decode(self) -> None:
        rows = self._batch.rows
        try:
            logits = self._batch.step(self._model, self._logits_kw)
            tokens = pick(logits, [r.params for r in rows], [r.gen for r in rows])
        except Exception as exc:  # noqa: BLE001 -- the batch's state is unknown: end it
            log.exception("decode step failed")
            for req in rows:
                self._finish(req, Event(kind="error", status=500, message=f"decode: {exc}"))
            self._batch.clear()
            return
        for req, token in zip(rows, tokens, strict=True):
            self._advance(req, token)
        self._batch.remove({r for r in rows if r.done})

    def _advance(self, req: _Request, token: int) -> None:
        """Give out token; finish the request when it ends the output."""
        req.completion += 1
        req.last = token
        req.generated.append(token)
        text = req.stops.feed(req.detok.feed(token))
        reason = None
        if req.stops.hit is not None or token in self._text.eos_ids:
            reason = "stop"
        elif req.completion >= req.params.max_tokens or (
                self._max_len is not None and len(req.prompt) + req.completion >= self._max_len):
            reason = "length"
        if reason is not None and req.stops.hit is None:
            text += req.stops.feed(req.detok.flush())
            text += req.stops.flush()
        _send(req, Event(kind="token", text=text, token_ids=(token,), index=req.completion - 1))
        if reason is not None:
            self._finish(req, _done(req, reason))
        elif req.broken:
            self._finish(req, None)

    def _finish(self, req: _Request, event: Event | None) -> None:
        """End a running request (REQUIRES: admitted, not yet finished)."""
        req.done = True
        with self._cond:
            if self._known.get(req.rid) is req:
                del self._known[req.rid]
            self._active -= 1
        if event is not None and not req.broken:
            _send(req, event)


def _done(req: _Request, reason: str) -> Event:
    return Event(kind="done", finish_reason=reason, prompt_tokens=len(req.prompt),
                 completion_tokens=req.completion)


def _migrated(req: _Request) -> Event:
    if req.gen is not None:
        state = req.gen.get_state().numpy().tobytes()
    else:
        state = req.state_in if req.params.temperature > 0 else None  # never admitted here
    return Event(kind="done", finish_reason="migrated", prompt_tokens=len(req.prompt),
                 completion_tokens=req.completion, token_ids=tuple(req.generated),
                 info={"generator": state})


def _send(req: _Request, event: Event) -> None:
    if req.broken:
        return
    try:
        req.emit(event)
    except Exception:  # noqa: BLE001 -- a failing consumer must not stop the engine
        log.exception("emit for %s failed; dropping the request", req.rid)
        req.broken = True


def _max_positions(config) -> int | None:
    text = config.get_text_config()
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class _Batch:
    """The running sequences: one KV cache left-padded to a common length, and its mask."""

    def __init__(self, device: torch.device):
        self._device = device
        self.clear()

    def clear(self) -> None:
        self.rows: list[_Request] = []
        self._cache = None  # a transformers DynamicCache, layers [B, heads, L, head_dim]
        self._mask: torch.Tensor | None = None  # [B, L], 1 where a row has a token
        self._pos: torch.Tensor | None = None  # [B], position of each row's next token

    def add(self, joining: list) -> None:
        """Merge sequences prefilled alone ([(request, its DynamicCache)]) into the batch."""
        if not joining:
            return
        parts = []  # (kv per layer, mask, positions) of the batch and of each newcomer
        if self.rows:
            parts.append((_layers(self._cache), self._mask, self._pos))
        for req, cache in joining:
            n = req.context
            parts.append((_layers(cache), torch.ones(1, n, dtype=torch.long, device=self._device),
                          torch.tensor([n], device=self._device)))
        width = max(mask.shape[1] for _, mask, _ in parts)
        self._cache = _cache([
            [torch.cat([_pad_left(kv[layer][i], width) for kv, _, _ in parts]) for i in (0, 1)]
            for layer in range(len(parts[0][0]))
        ])
        self._mask = torch.cat([_pad_left(mask, width) for _, mask, _ in parts])
        self._pos = torch.cat([pos for _, _, pos in parts])
        self.rows = self.rows + [req for req, _ in joining]

    def remove(self, gone: set) -> None:
        """Drop rows of requests in gone, and padding columns no remaining row uses."""
        if not gone:
            return
        keep = [i for i, r in enumerate(self.rows) if r not in gone]
        if not keep:
            self.clear()
            return
        index = torch.tensor(keep, device=self._device)
        mask = self._mask.index_select(0, index)
        start = int(mask.any(dim=0).long().argmax())  # first column some row still uses
        self._cache = _cache([[t.index_select(0, index)[:, :, start:] for t in kv]
                              for kv in _layers(self._cache)])
        self._mask = mask[:, start:]
        self._pos = self._pos.index_select(0, index)
        self.rows = [self.rows[i] for i in keep]

    def step(self, model, logits_kw: dict) -> torch.Tensor:
        """Feed each row's last token; returns the next-token logits [B, vocab]."""
        ids = torch.tensor([[r.last] for r in self.rows], dtype=torch.long, device=self._device)
        mask = torch.cat([self._mask, torch.ones_like(ids)], dim=1)
        out = model(input_ids=ids, attention_mask=mask, position_ids=self._pos[:, None],
                    past_key_values=self._cache, use_cache=True, **logits_kw)
        self._mask = mask
        self._pos = self._pos + 1
        return out.logits[:, -1]


def _layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A DynamicCache's (keys, values) per layer."""
    return [(k, v) for k, v, *_ in cache]


def _cache(layers):
    """A DynamicCache holding (keys, values) per layer."""
    from transformers import DynamicCache

    return DynamicCache([tuple(kv) for kv in layers])


def _pad_left(t: torch.Tensor, width: int) -> torch.Tensor:
    """t [..., L] or [B, H, L, D] with zeros in front up to width along the sequence dim."""
    dim = 1 if t.dim() == 2 else 2
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)
