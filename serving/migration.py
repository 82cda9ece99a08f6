"""Live migration of one running inference between workers, by its token ids (ServerlessLLM).

    move = Move(request_id, prompt_ids, params, model, source, destination, settings)
    moved = await move.run(generated, deliver, commit)   # the controller's side: Controller.migrate

No KV tensors or weights cross: only token ids and the sampler's state, in plain messages of
the Worker contract (stage, handover, resume), so any transport carries a migration. The
handover protocol, step by step (the source keeps generating until step 3, and the client's
stream is relayed from the source until the destination's first token):

1. Rounds: the destination stages (prefills, off its batch) prompt + generated ids so far;
   each next round stages only the ids generated since. Rounds end when fewer than
   `settings.min_tokens` ids are left to stage, or after `settings.max_rounds`.
2. Handover: the source ends the request at its next token boundary (its batch slot is
   freed) with a done "migrated" event carrying every id generated and the generator state.
   The controller's relay has passed on every token event before it (one ordered channel).
3. Resume: the destination continues from those ids (prefilling only the few not staged,
   counting max_tokens, stop strings and token indices on from the source's). Its first
   token event commits the migration: the relay switches to the destination at exactly that
   token index (events are numbered; a wrong index is refused, never passed on).

Failure at any step leaves the inference where it was, unseen by the client: before the
handover the destination's staged cache is dropped and the source never stopped; after it
(destination dead, refusing, or no first token within settings.resume_timeout) the
destination's request is cancelled and the source resumes the request itself from the same
ids and generator state. A request that ends on its own meanwhile ends normally.

Seeded sampling continues exactly: the generator's state crosses with the ids (CPU and CUDA
generator states differ, so a move between device types would not be reproducible; the
controller only moves between workers of one config). Greedy output equals an unmoved run
as long as the recomputed logits pick the same tokens (fp32: 1e-6 apart, see
../shared/specs/serverless.md).

Cost model: `a * tokens + b` seconds per inference, measured per model by `measure_cost` on
the first worker that loads it (two stage calls of different lengths, through the worker's
own transport, so b holds the messaging too).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from serving.protocol import Event, SamplingParams
from serving.worker import Worker, WorkerError

__all__ = ["MigrationSettings", "Move", "measure_cost"]

log = logging.getLogger("serving.migration")


@dataclass(frozen=True)
class MigrationSettings:
    """min_tokens: hand over once fewer ids than this are left to stage (20 in ServerlessLLM).
    max_rounds: stage rounds at most before handing over anyway. round_timeout: seconds one
    stage round may take. resume_timeout: seconds from the handover to the destination's
    first token, after which the source takes the request back."""

    min_tokens: int = 20
    max_rounds: int = 8
    round_timeout: float = 60.0
    resume_timeout: float = 60.0


class Move:
    """One request's live migration. Runs in the controller's loop; the controller routes
    the source's "migrated" event to `handed_over` and calls `ended` when the request ends
    for any other reason (see the module docstring for the protocol)."""

    def __init__(self, request_id: str, prompt_ids: list[int], params: SamplingParams,
                 model: str, source: Worker, destination: Worker,
                 settings: MigrationSettings):
        self.request_id = request_id
        self.prompt = list(prompt_ids)
        self.params = params
        self.model = model
        self.source = source
        self.destination = destination
        self.settings = settings
        self.rounds = 0
        self.staged = 0  # ids staged at the destination
        self.state = "staging"  # staging -> handing -> resuming -> moved | failed | ended
        loop = asyncio.get_running_loop()
        self._handed: asyncio.Future[Event | None] = loop.create_future()
        self._first: asyncio.Future[bool] = loop.create_future()

    # -- the controller's relay calls these ----------------------------------------------

    def handed_over(self, event: Event) -> None:
        """The source's done "migrated" arrived: step 3 may start."""
        if not self._handed.done():
            self._handed.set_result(event)

    def ended(self) -> None:
        """The request is over (done, error, client gone): stop, drop the destination's part."""
        if self.state in ("moved", "failed", "ended"):
            return
        self.state = "ended"
        self.destination.cancel(self.request_id)
        for future, value in ((self._handed, None), (self._first, False)):
            if not future.done():
                future.set_result(value)

    # -- the procedure -------------------------------------------------------------------

    async def run(self, generated: Callable[[], list[int]],
                  deliver: Callable[[Event], None], commit: Callable[[], None]) -> bool:
        """Move the request; True once it runs at the destination, False when it stayed
        (or ended). generated(): ids the client got so far; deliver(event): the relay to
        the client; commit(): switch the request's books to the destination (called just
        before its first token is delivered)."""
        src, dst, rid = self.source, self.destination, self.request_id
        try:
            while self.state == "staging":
                ids = self.prompt + generated()
                self.staged = await asyncio.wait_for(
                    dst.stage(rid, self.model, ids[self.staged:]), self.settings.round_timeout)
                self.rounds += 1
                behind = len(self.prompt) + len(generated()) - self.staged
                if behind < self.settings.min_tokens or self.rounds >= self.settings.max_rounds:
                    break
        except (WorkerError, TimeoutError) as exc:
            return self._fail(f"staging on {dst.name}: {exc or 'timed out'}")
        if self.state != "staging":
            return False
        self.state = "handing"
        src.handover(rid)
        event = await self._handed  # the source's next token boundary (or the request's end)
        if event is None or self.state != "handing":
            return False
        ids = list(event.token_ids)
        state = event.info.get("generator")
        if ids != generated():  # cannot happen on an ordered channel; never risk the stream
            log.error("migration of %s: the source handed over %d ids, the client got %d",
                      rid, len(ids), len(generated()))
            return self._take_back(ids, state, deliver, "the handover disagrees")
        self.state = "resuming"

        def first(ev: Event) -> None:  # the destination's events
            if self.state == "moved":
                deliver(ev)
            elif self.state == "resuming" and not self._first.done():
                if ev.kind == "token":
                    self.state = "moved"
                    commit()
                    self._first.set_result(True)
                    deliver(ev)
                else:  # an error (or an end) before any token: the source takes it back
                    self._first.set_result(False)

        try:
            dst.resume(rid, self.model, self.prompt, ids, self.params, first, state)
            moved = await asyncio.wait_for(asyncio.shield(self._first),
                                           self.settings.resume_timeout)
        except (RuntimeError, TimeoutError):  # no longer holds the model / no first token
            moved = False
        if moved:
            log.info("migrated %s from %s to %s after %d tokens (%d rounds)", rid, src.name,
                     dst.name, len(ids), self.rounds)
            return True
        if self.state == "ended":
            return False
        return self._take_back(ids, state, deliver, f"{dst.name} did not resume it")

    def _take_back(self, ids: list[int], state: bytes | None, deliver, why: str) -> bool:
        """After the handover: the source resumes the request itself."""
        self.destination.cancel(self.request_id)
        self.state = "failed"
        log.warning("migration of %s failed (%s); resuming it on %s", self.request_id, why,
                    self.source.name)
        try:
            self.source.resume(self.request_id, self.model, self.prompt, ids, self.params,
                               deliver, state)
        except RuntimeError as exc:  # the source lost its instance too: the request is over
            deliver(Event("error", status=503, message=f"migration failed and "
                          f"{self.source.name} cannot resume the request: {exc}"))
        return False

    def _fail(self, why: str) -> bool:
        """Before the handover: drop the destination's part; the source never stopped."""
        if self.state == "staging":
            self.state = "failed"
            self.destination.cancel(self.request_id)
            log.warning("migration of %s abandoned: %s", self.request_id, why)
        return False


async def measure_cost(worker: Worker, model: str, sample_ids: list[int], context: int | None,
                       lengths: tuple[int, int] = (16, 128)) -> tuple[float, float]:
    """(a, b) of the model's migration cost a * tokens + b seconds, timed on a worker that
    holds model: one warm-up stage, then one stage of each length (sample_ids, the ids of
    some text, repeated), each through the worker's transport. Raises WorkerError when
    staging fails."""
    loop = asyncio.get_running_loop()
    top = (context - 1) if context else max(lengths)
    short, long = (min(n, top) for n in lengths)
    times = []
    for i, n in enumerate((4, short, long)):
        rid = f"#cost-{model}-{i}"
        ids = (sample_ids * (n // max(len(sample_ids), 1) + 1))[:n]
        start = loop.time()
        try:
            await worker.stage(rid, model, ids)
        finally:
            worker.cancel(rid)
        times.append(loop.time() - start)
    _, t1, t2 = times
    a = max(t2 - t1, 0.0) / max(long - short, 1)
    b = max(t1 - a * short, 0.0)
    return a, b
