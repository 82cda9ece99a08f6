"""The controller: deployments, their instances on workers, and every request's way through them.

    controller = Controller(config)
    await controller.start()                       # registry deploys, workers pre-warmed
    async for event in controller.generate(req):   # "wait"*, "token"*, then "done" or "error"
        ...
    await controller.stop(grace=30)

Runs in one asyncio loop (uvicorn's) and sees workers only through serving.worker.Worker, so
nothing here knows about processes. Lifecycle of a model: requests queue per deployment; an
instance (one worker holding the model) takes up to target_concurrency of them at a time;
when the queue outgrows the instances being started, another one cold-starts (up to
max_instances) where the configured serving.policy places it (by default the lowest
estimated startup time: load-queue wait + bytes / bandwidth of the fastest tier holding the
checkpoint, from serving.estimates, which each completed load corrects), on a free worker or
one freed by unloading an idle instance of another model; every placement's candidates and
estimates go to the log and /metrics. An instance idle for keep_alive seconds is unloaded
(down to min_instances; a timer, no polling). A dead worker's requests get 503 error events,
its instance is forgotten, and a fresh worker replaces it. A running request can move to
another worker by its token ids (serving.migration: `migrate`, `evacuate`, and the
`locality+migration` policy's proposals); the client's stream goes on without a gap.

Why one file of ~1000 lines: it is one state machine. A request, its instance and its worker
change state together on one loop thread (admission, scaling, keep-alive, death, migration
all move the same _Request/_Instance records), and splitting it by topic would spread one
invariant ("every request ends once; an instance is counted in exactly one state") over
several files. What needs no loop state lives elsewhere: placement (serving/policy.py,
pure), estimates (serving/estimates.py), migration mechanics (serving/migration.py), the
worker contract (serving/worker.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from serving.config import Config, ConfigError, ModelSpec
from serving.deployments import Deployments
from serving.estimates import Estimates
from serving.metrics import Metrics
from serving.migration import MigrationSettings, Move, measure_cost
from serving.policy import (
    REGISTRY,
    Candidate,
    Decision,
    Inference,
    Migration,
    ModelInfo,
    ServerView,
    Snapshot,
    get_policy,
)
from serving.process import ProcessWorker
from serving.protocol import Event, GenerateRequest, ServingError
from serving.worker import LoadReport, Worker, WorkerDied, WorkerError, WorkerSpec

__all__ = ["Controller"]

log = logging.getLogger("serving.controller")

#: a model whose instance kills its worker this many times in a row stops being retried
MAX_LOAD_DEATHS = 2
#: weight of a new token interval in a deployment's average seconds per output token
TPOT_ALPHA = 0.1


class _Request:
    def __init__(self, rid: str, req: GenerateRequest, ids: list[int], arrival: float):
        self.rid = rid  # unique here: the worker knows the request by it
        self.req = req
        self.ids = ids
        self.arrival = arrival
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.instance: _Instance | None = None
        self.state = "queued"  # queued -> running -> ended
        self.last_token: float | None = None
        self.generated = 0  # output tokens so far (a migration's cost grows with them)
        self.output: list[int] = []  # their ids, as relayed to the client
        self.migration: Move | None = None  # a live migration in progress


class _Instance:
    def __init__(self, model: str, worker: Worker):
        self.model = model
        self.worker = worker
        self.state = "loading"  # loading -> ready -> unloading -> gone
        self.active: set[_Request] = set()
        self.last_used = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.report: LoadReport | None = None
        self.started = 0.0  # loop time the cold start began
        self.first_token_logged = False
        self.estimate: Candidate | None = None  # the placement's, compared with the load
        self.draining = False  # its inferences are being migrated away: takes no more
        self.moving_in = 0  # migrations on their way here: keeps it from idling out
        self.loaded: asyncio.Task | None = None  # a migration destination's cold start
        self.destination = False  # started for a migration: no queue waits on its load
        self.measuring = False  # timing the migration cost: not reclaimed meanwhile
        self.measured = False  # that was tried here (once per instance)


class _Deployment:
    def __init__(self, spec: ModelSpec, version: str | None, created: int):
        self.spec = spec
        self.version = version
        self.created = created
        self.queue: deque[_Request] = deque()
        self.instances: list[_Instance] = []
        self.text: asyncio.Future | None = None
        self.cold_starts = 0
        self.load_deaths = 0
        self.nbytes = 0  # checkpoint bytes and tensors, for placement estimates
        self.ntensors = 1
        self.tpot: float | None = None  # seconds per output token (averaged), once observed
        self.measuring = False  # its migration cost is being timed
        self.wake: asyncio.TimerHandle | None = None  # re-place a start that waits

    def live(self) -> list[_Instance]:
        return [i for i in self.instances if i.state in ("loading", "ready")]


class Controller:
    """Serves deployed models on workers; see the module docstring. Not thread-safe: every
    method runs in the event loop that ran start()."""

    def __init__(self, config: Config, *, worker_factory=None):
        self.config = config
        self.metrics = Metrics()
        self._factory = worker_factory or _worker_factory(config)
        self._deployments = Deployments(config)
        self._models: dict[str, _Deployment] = {}
        self._workers: list[Worker] = []
        self._assigned: dict[int, _Instance] = {}  # worker index -> its instance
        self._requests: set[_Request] = set()
        self._ids = itertools.count()
        self._accepting = False
        self._stopping = False
        self._drained: asyncio.Event | None = None
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._policy = get_policy(config.policy)
        self._estimates = Estimates()
        self._migration_costs: dict[str, tuple[float, float]] = {}  # model -> (a, b)
        self.migration_settings = MigrationSettings()
        self._no_migration_until: dict[int, float] = {}  # source worker -> loop time
        self._tpot: float | None = None  # seconds per output token over every model

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """Whether new requests are taken (started and not stopping)."""
        return self._accepting

    async def start(self) -> None:
        """Deploy the configured models (unless deployed identically before), start the
        workers (torch imported in each before this returns) and min_instances of each model.
        """
        self._loop = asyncio.get_running_loop()
        self._drained = asyncio.Event()
        self._drained.set()
        for spec in self.config.models:
            version = await asyncio.to_thread(self._deployments.ensure, spec.name, spec.path)
            dep = self._models[spec.name] = _Deployment(spec, version, int(time.time()))
            dep.nbytes, dep.ntensors = await asyncio.to_thread(self._deployments.size,
                                                               spec.name)
        self._workers = [self._factory(self._spec(i)) for i in range(self.config.workers)]
        try:
            await asyncio.gather(*(self._start_worker(w) for w in self._workers))
        except BaseException:
            await asyncio.gather(*(w.stop(1.0) for w in self._workers),
                                 return_exceptions=True)
            raise
        self._accepting = True
        log.info("serving %s on %d workers", sorted(self._models), len(self._workers))
        for dep in self._models.values():
            self._pump(dep)

    def drain(self) -> None:
        """Refuse new requests from now on (503); stop() finishes the shutdown."""
        self._accepting = False

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new requests (503), let running and queued ones finish for up to grace
        seconds (default config.shutdown_grace), end the rest with 503 errors, stop the
        workers."""
        grace = self.config.shutdown_grace if grace is None else grace
        self._accepting = False
        if self._stopping:
            return
        self._stopping = True
        if self._requests:
            log.info("stopping: waiting up to %.1f s for %d requests", grace,
                     len(self._requests))
            try:
                await asyncio.wait_for(self._drained.wait(), grace)
            except TimeoutError:
                log.warning("stopping: %d requests cut off", len(self._requests))
        for r in list(self._requests):
            self._end(r, Event("error", status=503, message="the server is shutting down"))
        for dep in self._models.values():
            for inst in dep.instances:
                self._cancel_timer(inst)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(w.stop(min(grace, 5.0) or 0.1) for w in self._workers),
                             return_exceptions=True)
        log.info("stopped")

    # -- requests ------------------------------------------------------------------------

    def models(self) -> list[dict]:
        """The deployed models as OpenAI model objects (plus max_tokens, the deployment's
        cap, which the HTTP layer uses as a chat request's default)."""
        return [{"id": name, "object": "model", "created": dep.created, "owned_by": "serving",
                 "max_tokens": dep.spec.max_tokens}
                for name, dep in sorted(self._models.items())]

    async def generate(self, req: GenerateRequest) -> AsyncIterator[Event]:
        """The request's events: "wait"s while a cold start or the queue holds it up, then
        "token"s and one "done" or "error".

        Raises ServingError before the first event: 503 when not accepting, 404 for an
        unknown model, 400 for a prompt or max_tokens over the model's limits, 429 when its
        queue is full. Closing the generator cancels the request at its worker at once.
        """
        if not self._accepting:
            raise ServingError(503, "the server is shutting down" if self._stopping
                               else "the server is not started")
        dep = self._models.get(req.model)
        if dep is None:
            raise ServingError(404, f"model {req.model!r} is not deployed; deployed: "
                               f"{sorted(self._models)}")
        text, context = await self._text(dep)
        ids = list(text.chat(list(req.messages)) if req.messages is not None
                   else text.encode(req.prompt or ""))
        self._check_limits(dep, context, ids, req)
        if self._models.get(req.model) is not dep or not self._accepting:
            raise ServingError(503, f"model {req.model!r} is being removed or the server is "
                               f"shutting down")
        r = _Request(f"{req.request_id}#{next(self._ids)}", req, ids, self._loop.time())
        self._admit(dep, r)
        try:
            async for event in self._events(dep, r):
                yield event
        finally:
            self._close(dep, r)

    def _check_limits(self, dep: _Deployment, context: int | None, ids: list[int],
                      req: GenerateRequest) -> None:
        spec = dep.spec
        limit = spec.max_prompt_tokens or context
        if limit is not None and len(ids) > limit:
            raise ServingError(400, f"the prompt has {len(ids)} tokens; model {spec.name!r} "
                               f"takes at most {limit}")
        if req.params.max_tokens > spec.max_tokens:
            raise ServingError(400, f"max_tokens {req.params.max_tokens} is more than model "
                               f"{spec.name!r} allows ({spec.max_tokens})")

    def _admit(self, dep: _Deployment, r: _Request) -> None:
        inst = _free_instance(dep)
        if inst is None and len(dep.queue) >= dep.spec.queue_limit:
            if not dep.live() and self._accepting:
                self._scale_up(dep)  # queue_limit 0: a later try finds the instance
            raise ServingError(429, f"model {dep.spec.name!r}: {len(dep.queue)} requests "
                               f"already wait", retry_after=1.0)
        self._requests.add(r)
        self._drained.clear()
        if inst is not None:
            self._run(r, inst)
            return
        dep.queue.append(r)
        self._pump(dep)
        if r.state == "queued":
            r.events.put_nowait(Event("wait", info=self._wait_info(dep, r)))

    async def _events(self, dep: _Deployment, r: _Request) -> AsyncIterator[Event]:
        timeout = self.config.request_timeout
        deadline = r.arrival + timeout if timeout > 0 else None
        while True:
            wait = self.config.heartbeat if r.last_token is None else None
            if deadline is not None:
                left = deadline - self._loop.time()
                wait = left if wait is None else min(wait, left)
            try:
                event = (r.events.get_nowait() if not r.events.empty() else
                         await asyncio.wait_for(r.events.get(), max(wait, 0) if wait is not None
                                                else None))
            except TimeoutError:
                if deadline is not None and self._loop.time() >= deadline:
                    self._end(r, Event("error", status=504, message=f"request timed out "
                                       f"after {timeout:g} s"))
                    continue  # the next get returns that error
                yield Event("wait", info=self._wait_info(dep, r))
                continue
            if event.kind == "token":
                self._token(dep, r)
            yield event
            if event.kind in ("done", "error"):
                return

    def _token(self, dep: _Deployment, r: _Request) -> None:
        now = self._loop.time()
        name = dep.spec.name
        if r.last_token is None:
            self.metrics.first_token(name, now - r.arrival)
            inst = r.instance
            if inst is not None and not inst.first_token_logged and inst.report is not None:
                inst.first_token_logged = True
                rep = inst.report
                log.info("cold start of %s on %s: from %s, load %.3f s, build %.3f s, "
                         "first token %.3f s after the start", name, inst.worker.name,
                         rep.tier, rep.load_seconds, rep.build_seconds, now - inst.started)
        else:
            gap = now - r.last_token
            self.metrics.token_interval(name, gap)
            dep.tpot = _averaged(dep.tpot, gap)
            self._tpot = _averaged(self._tpot, gap)
        r.last_token = now

    def _wait_info(self, dep: _Deployment, r: _Request) -> dict:
        """Why r waits: "cold_start" (an instance is loading), "queue" (every instance is
        busy, or no worker is free yet) or "prefill" (running, no token yet)."""
        loading = any(i.state == "loading" for i in dep.instances)
        reason = ("prefill" if r.state == "running" else "cold_start" if loading
                  else "queue")
        info: dict[str, Any] = {"reason": reason, "model": dep.spec.name,
                                "queue": len(dep.queue)}
        loading = [i.worker.name for i in dep.instances if i.state == "loading"]
        if loading:
            info["workers"] = loading
        return info

    def _run(self, r: _Request, inst: _Instance) -> None:
        r.state = "running"
        r.instance = inst
        inst.active.add(r)
        self._cancel_timer(inst)
        inst.worker.generate(r.rid, inst.model, r.ids, r.req.params,
                             lambda event: self._on_event(r, event))

    def _on_event(self, r: _Request, event: Event) -> None:
        """The relay of r's events from whichever worker runs it (serving.migration)."""
        if r.state == "ended":
            return
        if event.kind == "done" and event.finish_reason == "migrated":
            if r.migration is not None:
                r.migration.handed_over(event)  # not the client's: the move goes on
                return
            event = Event("error", status=500, message="the worker handed the request over "
                          "to no one")
        if event.kind == "token" and event.index is not None and event.index != len(r.output):
            if event.index < len(r.output):
                log.error("%s: token %d relayed twice; dropped", r.rid, event.index)
                return
            event = Event("error", status=500, message=f"tokens {len(r.output)} to "
                          f"{event.index - 1} were lost")
        if event.kind in ("done", "error"):
            self._end(r, event)
        else:
            r.generated += len(event.token_ids)
            if event.kind == "token":
                r.output.extend(event.token_ids)
            r.events.put_nowait(event)

    def _end(self, r: _Request, event: Event) -> None:
        """r is over: queue its last event, free its slot (cancelling it at the worker)."""
        if r.state == "ended":
            return
        was, r.state = r.state, "ended"
        r.events.put_nowait(event)
        self._forget(r, was)

    def _close(self, dep: _Deployment, r: _Request) -> None:
        """The generator is closed: a request still going was abandoned by its client."""
        if r.state != "ended":
            was, r.state = r.state, "ended"
            self._forget(r, was)

    def _forget(self, r: _Request, was: str) -> None:
        dep = self._models.get(r.req.model)
        if was == "queued" and dep is not None:
            try:
                dep.queue.remove(r)
            except ValueError:
                pass
            self.metrics.queue_length(dep.spec.name, len(dep.queue))
        inst = r.instance
        if r.migration is not None:
            r.migration.ended()  # drops the destination's part
        if was == "running" and inst is not None:
            inst.worker.cancel(r.rid)  # no-op when the worker already ended it
            inst.active.discard(r)
            inst.last_used = self._loop.time()
        self._requests.discard(r)
        if not self._requests:
            self._drained.set()
        if inst is not None and dep is not None and inst.state == "ready":
            self._pump(dep)
            self._maybe_idle(dep, inst)
            if not inst.active:  # reclaimable now: a start waiting for a server may take it
                self._pump_all()

    # -- scaling -------------------------------------------------------------------------

    def _pump(self, dep: _Deployment) -> None:
        """Hand queued requests to instances with room, then start instances if needed."""
        while dep.queue:
            inst = _free_instance(dep)
            if inst is None:
                break
            self._run(dep.queue.popleft(), inst)
        self.metrics.queue_length(dep.spec.name, len(dep.queue))
        spec = dep.spec
        coming = sum(spec.target_concurrency for i in dep.instances if i.state == "loading")
        while (self._accepting or dep.queue) and len(dep.live()) < spec.max_instances and (
                len(dep.queue) > coming or len(dep.live()) < spec.min_instances):
            if self._models.get(spec.name) is not dep or not self._scale_up(dep):
                break
            coming += spec.target_concurrency

    def _pump_all(self) -> None:
        """Pump every deployment, the one whose first queued request waits longest first:
        a worker that just became free goes to the oldest request, whatever its model (in
        deployment order, a popular model deployed early would starve the others' queues)."""
        waiting = sorted((d for d in self._models.values()),
                         key=lambda d: d.queue[0].arrival if d.queue else math.inf)
        for dep in waiting:
            self._pump(dep)

    def _scale_up(self, dep: _Deployment) -> bool:
        """Start one instance of dep where the policy places it (a free worker, or one freed
        by unloading an idle instance of another model); False when there is none."""
        name = dep.spec.name
        decision = self._policy.place(name, self._snapshot())
        if decision.migration is not None and self._migrate_for(dep, decision.migration):
            return True
        chosen = decision.chosen
        if chosen is None:
            self._wait_for(dep, decision)
            return False
        worker = self._workers[chosen.server]
        victim = None
        if chosen.evict is not None:
            victim = self._assigned[chosen.server]
            log.info("%s: unloading idle %s on %s to make room", name, victim.model,
                     worker.name)
            self._retire(victim)
        self._log_placement(decision, chosen)
        inst = _Instance(name, worker)
        inst.started = self._loop.time()
        inst.estimate = chosen
        dep.instances.append(inst)
        self._assigned[worker.spec.index] = inst
        self._spawn(self._cold_start(dep, inst, victim))
        return True

    def _migrate_for(self, dep: _Deployment, migration: Migration) -> bool:
        """Carry out the policy's proposal to free migration.source for dep (see
        serving.policy's Decision contract); whether it was taken (False: the controller
        starts on Decision.server instead). Taken: the source's inferences move to the
        destination (loading their model there), then dep starts on the source; if any
        stays, dep's start goes where the policy places it without that source."""
        m, name = migration, dep.spec.name
        src = self._assigned.get(m.source)
        moved_dep = self._models.get(m.model)
        destination = self._workers[m.destination]
        if (src is None or src.state != "ready" or src.model != m.model or src.draining
                or not src.active or moved_dep is None or m.source == m.destination
                or self._assigned.get(m.destination) is not None or not destination.alive
                or self._loop.time() < self._no_migration_until.get(m.source, 0.0)):
            return False
        log.info("%s: moving %d inference(s) of %s off %s to %s (estimated %.3f s), then "
                 "starting there", name, len(src.active), m.model, src.worker.name,
                 destination.name, m.cost)
        dest = self._new_instance(moved_dep, destination)
        start = _Instance(name, src.worker)  # counted as coming; assigned once src is free
        start.started = self._loop.time()
        start.estimate = m.start
        dep.instances.append(start)
        src.draining = True
        self._spawn(self._evacuate_then_start(dep, start, src, dest))
        return True

    def _wait_for(self, dep: _Deployment, decision: Decision) -> None:
        """dep's start waits: for any server (none can take it), or for the busy server the
        policy expects to idle soon enough (candidates[0].wait). Idle instances pump every
        queue; the timer re-places the start in case that server stays busy longer than
        expected (the policy stops waiting once the request waited as long as starting
        elsewhere would have taken)."""
        name = dep.spec.name
        best = decision.candidates[0] if decision.candidates else None
        if best is None or not best.wait:
            log.debug("%s: no free worker and no idle instance to replace", name)
            return
        now = next((c.seconds for c in decision.candidates if not c.wait), None)
        log.info("%s: waiting for %s, expected %.3f s (%s)%s", name,
                 self._workers[best.server].name, best.seconds, best.why,
                 "" if now is None else f"; starting now would take {now:.3f} s")
        if dep.wake is not None:
            dep.wake.cancel()
        delay = best.queue if now is None else min(best.queue, now)
        dep.wake = self._loop.call_later(max(0.01, delay * 1.1), self._woken, dep)

    def _woken(self, dep: _Deployment) -> None:
        dep.wake = None
        if self._models.get(dep.spec.name) is dep:
            self._pump(dep)

    def _log_placement(self, decision: Decision, chosen: Candidate) -> None:
        name, worker = decision.model, self._workers[chosen.server]
        log.info("%s: cold start on %s by %s, expected %.3f s from %s; candidates %s", name,
                 worker.name, decision.policy, chosen.seconds, chosen.tier,
                 ", ".join(f"{self._workers[c.server].name} {c.seconds:.3f} s ({c.tier})"
                           for c in decision.candidates[:8]))
        log.debug("%s: why %s: %s", name, worker.name, chosen.why)
        self.metrics.placement(name, worker.name, decision.policy, chosen.tier,
                               [(self._workers[c.server].name, c.seconds)
                                for c in decision.candidates])

    def set_migration_cost(self, model: str, a: float, b: float) -> None:
        """The migration cost model of model: a * tokens + b seconds per moved inference
        (measured at deploy time by serving.migration); policies weigh migrations with it."""
        self._migration_costs[model] = (float(a), float(b))

    async def _cold_start(self, dep: _Deployment, inst: _Instance,
                          victim: _Instance | None) -> None:
        worker, name = inst.worker, dep.spec.name
        try:
            if victim is not None:
                await self._unload(victim)
            report = await worker.load(name, dep.version)
        except WorkerDied as exc:
            self._drop_instance(dep, inst)
            dep.load_deaths += 1
            if dep.load_deaths >= MAX_LOAD_DEATHS:
                self._fail_queue(dep, 503, f"model {name!r}: its workers died while loading "
                                 f"it ({exc})")
            self._pump_all()  # another free worker may take it; a new one pumps too
            return
        except WorkerError as exc:
            log.error("%s: cold start on %s failed: %s", name, worker.name, exc)
            self._drop_instance(dep, inst)
            if not inst.destination:
                self._fail_queue(dep, 503, f"model {name!r} failed to load: {exc}")
            self._pump_all()
            return
        dep.load_deaths = 0
        inst.report = report
        self._observe_load(inst, report)
        current = self._models.get(name)
        if inst.state != "loading" or current is None or inst not in current.instances:
            inst.state = "unloading"  # deleted or redeployed while it loaded
            await self._unload(inst)
            return
        dep = current  # a redeploy of the same version keeps its instances
        inst.state = "ready"
        inst.last_used = self._loop.time()
        dep.cold_starts += 1
        self.metrics.cold_start(name, report.tier, report.load_seconds)
        self.metrics.instances(name, sum(i.state == "ready" for i in dep.instances))
        log.info("%s ready on %s: loaded from %s in %.3f s (+%.3f s build), %d requests "
                 "waiting", name, worker.name, report.tier, report.load_seconds,
                 report.build_seconds, len(dep.queue))
        self._pump(dep)
        self._maybe_idle(dep, inst)

    def _maybe_idle(self, dep: _Deployment, inst: _Instance) -> None:
        """Arm the keep-alive timer of an instance that serves nothing."""
        if inst.active or inst.state != "ready" or inst.timer is not None:
            return
        inst.timer = self._loop.call_later(dep.spec.keep_alive, self._expire, dep, inst)
        self._maybe_measure(dep, inst)

    def _maybe_measure(self, dep: _Deployment, inst: _Instance) -> None:
        """Time dep's migration cost on inst once, when inst has nothing to do and no
        start waits for a server: measured on the first instance's worker right after its
        cold start, the three prefills delayed that start's own first requests."""
        if ("migration" not in self._policy.name or dep.spec.name in self._migration_costs
                or dep.measuring or inst.measured or inst.active or inst.state != "ready"
                or any(d.queue for d in self._models.values())):
            return
        dep.measuring = inst.measuring = inst.measured = True
        self._spawn(self._measure_cost(dep, inst))

    def _expire(self, dep: _Deployment, inst: _Instance) -> None:
        inst.timer = None
        dep = self._models.get(inst.model, dep)  # the spec may have been redeployed
        if inst.active or inst.moving_in or inst.measuring or inst.state != "ready":
            return
        ready = [i for i in dep.instances if i.state == "ready"]
        if len(ready) <= dep.spec.min_instances or self._stopping:
            return
        log.info("%s on %s idle for %.1f s: unloading", dep.spec.name, inst.worker.name,
                 dep.spec.keep_alive)
        self._retire(inst)
        self._spawn(self._unload(inst))

    def _retire(self, inst: _Instance) -> None:
        """Take inst out of service now (its worker stays taken until it is unloaded)."""
        inst.state = "unloading"
        self._cancel_timer(inst)
        dep = self._models.get(inst.model)
        if dep is not None:
            self.metrics.instances(inst.model, sum(i.state == "ready" for i in dep.instances))

    async def _unload(self, inst: _Instance) -> None:
        """Unload a retired instance and free its worker."""
        for r in list(inst.active):
            self._end(r, Event("error", status=503, message=f"instance of {inst.model} on "
                               f"{inst.worker.name} was unloaded"))
        try:
            await inst.worker.unload()
        except WorkerError as exc:  # a dead worker is replaced by the death handler
            log.warning("unloading %s from %s: %s", inst.model, inst.worker.name, exc)
        dep = self._models.get(inst.model)
        if dep is not None:
            self._drop_instance(dep, inst)
        elif self._assigned.get(inst.worker.spec.index) is inst:
            del self._assigned[inst.worker.spec.index]
        inst.state = "gone"
        self._pump_all()

    def _drop_instance(self, dep: _Deployment, inst: _Instance) -> None:
        inst.state = "gone"
        self._cancel_timer(inst)
        if inst in dep.instances:
            dep.instances.remove(inst)
        if self._assigned.get(inst.worker.spec.index) is inst:
            del self._assigned[inst.worker.spec.index]
        self.metrics.instances(dep.spec.name, sum(i.state == "ready" for i in dep.instances))

    def _fail_queue(self, dep: _Deployment, status: int, message: str) -> None:
        for r in list(dep.queue):
            self._end(r, Event("error", status=status, message=message))

    def _cancel_timer(self, inst: _Instance) -> None:
        if inst.timer is not None:
            inst.timer.cancel()
            inst.timer = None

    def _snapshot(self) -> Snapshot:
        """The cluster as policies see it (serving.policy). Every queue_wait is 0: a worker
        loads one instance at a time and is free only when nothing loads there."""
        servers = []
        for w in self._workers:
            index = w.spec.index
            inst = self._assigned.get(index)
            reclaimable, running, busy_for = False, (), None
            dep = self._models.get(inst.model) if inst is not None else None
            if inst is not None and inst.state == "ready":
                running = tuple(Inference(r.rid, inst.model, len(r.ids) + r.generated)
                                for r in inst.active)
                if not inst.active and not inst.moving_in and not inst.measuring:
                    ready = sum(i.state == "ready" for i in dep.instances) if dep else 0
                    reclaimable = dep is None or ready > dep.spec.min_instances
                elif dep is not None and not inst.moving_in and not inst.draining:
                    busy_for = self._busy_for(dep, inst)
            elif inst is not None and inst.state == "loading" and dep is not None and (
                    not inst.destination and inst.estimate is not None):
                busy_for = self._busy_for(dep, inst)
            servers.append(ServerView(
                index, w.name, alive=w.alive, free=w.alive and inst is None,
                model=inst.model if inst is not None else None, running=running,
                reclaimable=reclaimable, last_used=inst.last_used if inst is not None else 0.0,
                load=len(inst.active) if inst is not None else 0, busy_for=busy_for,
                tiers=tuple(self._estimates.tier(index, t, held) for t, held in w.tiers.items()),
                registry=self._estimates.tier(index, REGISTRY)))
        now = self._loop.time()
        models = [ModelInfo(name, dep.nbytes, dep.ntensors,
                            *self._migration_costs.get(name, (0.0, 0.0)),
                            waited=now - dep.queue[0].arrival if dep.queue else 0.0)
                  for name, dep in self._models.items()]
        return Snapshot.of(servers, models)

    def _busy_for(self, dep: _Deployment, inst: _Instance) -> float | None:
        """Seconds until inst (loading or serving dep) is expected to idle: what remains of
        its load, then its longest remaining generation among its requests and dep's queue,
        at dep's seconds per token (every model's before dep's were observed); None before
        any token interval was observed."""
        tpot = dep.tpot if dep.tpot is not None else self._tpot
        if tpot is None:
            return None
        longest = max((r.req.params.max_tokens - r.generated + (r.last_token is None)
                       for r in itertools.chain(inst.active, dep.queue)), default=0)
        loading = 0.0
        if inst.state == "loading":
            loading = max(0.0, inst.started + inst.estimate.load_seconds - self._loop.time())
        return loading + longest * tpot

    def _observe_load(self, inst: _Instance, report: LoadReport) -> None:
        """A load completed: correct the estimates of its worker's tier (event-driven)."""
        worker = inst.worker
        est = self._estimates.observe(worker.spec.index, report.tier, report.nbytes,
                                      report.load_seconds)
        self.metrics.bandwidth(worker.name, report.tier, est.bandwidth)
        dep = self._models.get(inst.model)
        if dep is not None and report.nbytes > 0:
            dep.nbytes = report.nbytes
        expected = inst.estimate
        if expected is not None and expected.tier == report.tier:
            self.metrics.load_estimate(report.tier, expected.load_seconds, report.load_seconds)
        elif expected is not None:
            log.info("%s on %s: expected a load from %s, served from %s", inst.model,
                     worker.name, expected.tier, report.tier)

    # -- workers -------------------------------------------------------------------------

    def _spec(self, index: int) -> WorkerSpec:
        c = self.config
        return WorkerSpec(index=index, disk_dir=c.worker_dir(index),
                          registry=c.registry_location, dram_bytes=c.dram_per_worker,
                          disk_bytes=c.disk_per_worker, threads=c.threads(), device=c.device,
                          registry_bandwidth=c.registry_bandwidth)

    async def _start_worker(self, worker: Worker) -> None:
        worker.on_death = self._on_death
        await worker.start()
        self._estimates.seed(worker.spec.index, worker.estimates)
        for tier, est in self._estimates.table().items():
            if tier[0] == worker.spec.index:
                self.metrics.bandwidth(worker.name, tier[1], est.bandwidth)
        log.info("%s ready (pid %s, tiers %s)", worker.name, worker.pid, worker.tiers)

    def _on_death(self, worker: Worker, reason: str) -> None:
        """A worker died: its requests already got their errors; forget its instance and
        start a fresh worker in its place."""
        index = worker.spec.index
        inst = self._assigned.pop(index, None)
        if inst is not None:
            dep = self._models.get(inst.model)
            if dep is not None:
                self._drop_instance(dep, inst)
            inst.state = "gone"
        log.error("%s died (%s)%s; starting a replacement", worker.name, reason,
                  f", losing its instance of {inst.model}" if inst is not None else "")
        if not self._stopping:
            self._spawn(self._replace(worker))
            self._pump_all()  # other free workers may take over its queued work

    async def _replace(self, dead: Worker) -> None:
        index = dead.spec.index
        fresh = self._factory(self._spec(index))
        self._workers[index] = fresh
        try:
            await self._start_worker(fresh)
        except WorkerError as exc:
            log.error("%s could not be replaced: %s", dead.name, exc)
            return
        if self._stopping:
            await fresh.stop(1.0)
            return
        self._pump_all()

    def _spawn(self, coro) -> asyncio.Task:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("controller task failed", exc_info=task.exception())

    # -- live migration (serving.migration) ----------------------------------------------

    async def migrate(self, request_id: str, destination: int) -> bool:
        """Move a running request (the id its worker knows it by) to worker destination,
        token based; True once it runs there, False when it stays where it was (the client
        notices nothing either way). A free destination first loads the model; one holding
        a ready instance of it with room takes it directly."""
        r = next((x for x in self._requests if x.rid == request_id), None)
        if r is None or r.state != "running" or r.migration is not None:
            return False
        src = r.instance
        if src is None or src.state != "ready" or destination == src.worker.spec.index:
            return False
        dest = self._assigned.get(destination)
        if dest is None:
            worker = self._workers[destination]
            dep = self._models.get(src.model)
            if not worker.alive or dep is None:
                return False
            dest = self._new_instance(dep, worker)
        else:
            dep = self._models.get(src.model)
            if (dep is None or dest.model != src.model or dest.state != "ready"
                    or len(dest.active) + dest.moving_in >= dep.spec.target_concurrency):
                return False
        return await self._migrate_to(r, dest)

    async def evacuate(self, source: int, destination: int) -> bool:
        """Move every request running on worker source's instance to worker destination
        (see migrate); True when none is left on the source."""
        src, dest = self._assigned.get(source), self._assigned.get(destination)
        dep = self._models.get(src.model) if src is not None else None
        if src is None or src.state != "ready" or dep is None or source == destination:
            return False
        if dest is None and self._workers[destination].alive:
            dest = self._new_instance(dep, self._workers[destination])
        elif dest is None or dest.model != src.model:
            return False
        was, src.draining = src.draining, True
        try:
            await asyncio.gather(*(self._migrate_to(r, dest) for r in list(src.active)))
        finally:
            src.draining = was
        return not src.active

    def _new_instance(self, dep: _Deployment, worker: Worker) -> _Instance:
        """A loading instance of dep on a free worker, in the books (a destination)."""
        inst = _Instance(dep.spec.name, worker)
        inst.started = self._loop.time()
        inst.destination = True
        dep.instances.append(inst)
        self._assigned[worker.spec.index] = inst
        inst.loaded = self._spawn(self._cold_start(dep, inst, None))
        return inst

    async def _migrate_to(self, r: _Request, dest: _Instance) -> bool:
        src = r.instance
        dest.moving_in += 1
        try:
            if dest.loaded is not None:
                await asyncio.shield(dest.loaded)
            if (dest.state != "ready" or r.state != "running" or r.instance is not src
                    or r.migration is not None):
                return False
            move = Move(r.rid, r.ids, r.req.params, src.model, src.worker, dest.worker,
                        self.migration_settings)
            r.migration = move

            def commit() -> None:  # the destination's first token is about to be relayed
                src.active.discard(r)
                src.last_used = self._loop.time()
                r.instance = dest
                r.migration = None
                dest.active.add(r)
                self._cancel_timer(dest)

            try:
                moved = await move.run(lambda: r.output, lambda ev: self._on_event(r, ev),
                                       commit)
            finally:
                if r.migration is move:
                    r.migration = None
        finally:
            dest.moving_in -= 1
        dep = self._models.get(src.model)
        if dep is not None:
            self._maybe_idle(dep, dest)
            if moved and not src.draining:
                self._pump(dep)
                self._maybe_idle(dep, src)
        return moved

    async def _evacuate_then_start(self, dep: _Deployment, start: _Instance, src: _Instance,
                                   dest: _Instance) -> None:
        """The policy's migration: empty src into dest, then start dep's instance on src's
        worker (src is unloaded first); when src keeps an inference, start dep elsewhere."""
        index = src.worker.spec.index
        try:
            await asyncio.gather(*(self._migrate_to(r, dest) for r in list(src.active)))
        finally:
            src.draining = False
        if start.state != "loading" or self._models.get(dep.spec.name) is not dep:
            self._drop_instance(dep, start)  # deleted or redeployed meanwhile
        elif src.active or src.state != "ready" or self._assigned.get(index) is not src:
            self._no_migration_until[index] = self._loop.time() + 10.0
            log.warning("%s: %s could not be emptied; starting elsewhere", dep.spec.name,
                        src.worker.name)
            self._drop_instance(dep, start)
        else:
            self._retire(src)
            self._assigned[index] = start
            await self._cold_start(dep, start, src)
            return
        moved = self._models.get(src.model)
        if moved is not None and src.state == "ready":
            self._pump(moved)
            self._maybe_idle(moved, src)
        self._pump(dep)

    async def _measure_cost(self, dep: _Deployment, inst: _Instance) -> None:
        """The migration cost model of dep's model, timed on inst's worker (tried once per
        instance: a failure is logged, and another instance of the model tries again)."""
        name = dep.spec.name
        try:
            text, context = await self._text(dep)
            sample = text.encode("The quick brown fox jumps over the lazy dog. " * 4)
            a, b = await measure_cost(inst.worker, name, sample, context)
            self.set_migration_cost(name, a, b)
            log.info("%s: migration cost %.6f s/token + %.4f s (on %s)", name, a, b,
                     inst.worker.name)
        except (WorkerError, ServingError) as exc:
            log.warning("%s: migration cost not measured: %s", name, exc)
        finally:
            dep.measuring = inst.measuring = False
            if inst.state == "ready":
                self._maybe_idle(dep, inst)  # its keep-alive, if it expired meanwhile
                self._pump_all()  # it is reclaimable again

    # -- deployments ---------------------------------------------------------------------

    async def _text(self, dep: _Deployment):
        """The deployment's (Text, context length), built once per version."""
        if dep.text is None:
            dep.text = self._loop.create_future()
            try:
                text = await asyncio.to_thread(self._deployments.text, dep.spec.name)
            except BaseException as exc:
                fut, dep.text = dep.text, None
                fut.set_exception(ServingError(503, f"model {dep.spec.name!r}: cannot read "
                                               f"its tokenizer: {exc}"))
                fut.exception()  # retrieved: nobody else may be waiting
                raise fut.exception() from exc
            dep.text.set_result(text)
            return text
        return await asyncio.shield(dep.text)

    async def deploy(self, name: str, path: str, **spec: Any) -> dict:
        """Publish the model at path as name (converting it once) with the ModelSpec
        settings in spec; replaces a deployment of name (its instances are unloaded and
        workers drop old copies). Its status(). ServingError 400 for bad settings or input.
        """
        try:
            new = ModelSpec(name=name, path=path, **spec)
        except (ConfigError, TypeError) as exc:
            raise ServingError(400, str(exc)) from exc
        try:
            version = await asyncio.to_thread(self._deployments.ensure, name, path)
        except (ValueError, OSError) as exc:  # DeployError is a ValueError
            raise ServingError(400, f"cannot deploy {name!r}: {exc}") from exc
        old = self._models.get(name)
        dep = _Deployment(new, version, int(time.time()))
        dep.nbytes, dep.ntensors = await asyncio.to_thread(self._deployments.size, name)
        if old is not None:
            dep.created = old.created
            dep.queue = old.queue
            if old.version == version:
                dep.instances, dep.text = old.instances, old.text
            else:
                await self._take_down(old, f"model {name!r} was redeployed", keep_queue=True)
        self._models[name] = dep
        log.info("deployed %s (version %s) from %s", name, version, path)
        self._pump(dep)
        return self._model_status(name, dep)

    async def delete(self, name: str) -> None:
        """Remove the deployment: its requests end with 404 errors, its instances are
        unloaded, workers drop its copies, the registry forgets it. ServingError 404 if
        there is none."""
        dep = self._models.pop(name, None)
        if dep is None:
            raise ServingError(404, f"model {name!r} is not deployed")
        await self._take_down(dep, f"model {name!r} was deleted", status=404)
        await asyncio.to_thread(self._deployments.remove, name)
        self.metrics.forget(name)
        log.info("deleted %s", name)

    async def _take_down(self, dep: _Deployment, why: str, *, status: int = 503,
                         keep_queue: bool = False) -> None:
        if not keep_queue:
            self._fail_queue(dep, status, why)
        insts = list(dep.instances)
        for inst in insts:
            for r in list(inst.active):
                self._end(r, Event("error", status=status, message=why))
            if inst.state == "loading":
                inst.state = "gone"  # _cold_start unloads it when the load returns
            elif inst.state == "ready":
                self._retire(inst)
        await asyncio.gather(*(self._unload(i) for i in insts if i.state == "unloading"),
                             return_exceptions=True)
        await asyncio.gather(*(w.evict(dep.spec.name) for w in self._workers if w.alive),
                             return_exceptions=True)

    # -- status --------------------------------------------------------------------------

    def status(self) -> dict:
        """Per model: spec, state, queue, instances and where; per worker: pid, alive,
        instance, running requests and its tiers' contents."""
        return {
            "accepting": self._accepting,
            "deployments": [self._model_status(name, dep)
                            for name, dep in sorted(self._models.items())],
            "workers": [{
                "name": w.name, "index": w.spec.index, "pid": w.pid, "alive": w.alive,
                "instance": (self._assigned[w.spec.index].model
                             if w.spec.index in self._assigned else None),
                "running": len(w.running), "tiers": dict(w.tiers), "death": w.death,
            } for w in self._workers],
        }

    def _model_status(self, name: str, dep: _Deployment) -> dict:
        states = {i.state for i in dep.instances}
        state = ("ready" if "ready" in states else "starting" if "loading" in states
                 else "unloading" if "unloading" in states else "cold")
        return {
            "name": name, "spec": dataclasses.asdict(dep.spec), "version": dep.version,
            "state": state,
            "queue": len(dep.queue), "active": sum(len(i.active) for i in dep.instances),
            "cold_starts": dep.cold_starts,
            "instances": [{
                "worker": i.worker.name, "state": i.state, "active": len(i.active),
                "tier": i.report.tier if i.report else None,
                "load_seconds": i.report.load_seconds if i.report else None,
            } for i in dep.instances],
        }


def _averaged(average: float | None, sample: float) -> float:
    return sample if average is None else TPOT_ALPHA * sample + (1 - TPOT_ALPHA) * average


def _free_instance(dep: _Deployment) -> _Instance | None:
    """The ready instance with the fewest requests, if it has room for one more."""
    ready = [i for i in dep.instances if i.state == "ready" and not i.draining
             and len(i.active) < dep.spec.target_concurrency]
    return min(ready, key=lambda i: len(i.active), default=None)


def _worker_factory(config: Config):
    """config.backend's worker factory: ProcessWorker ("local"), or RayWorkers ("ray";
    imported only then, Ray being an optional extra)."""
    if config.backend == "ray":
        from serving.rayworker import RayWorkers

        return RayWorkers(config)
    return ProcessWorker
