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
max_instances) on the worker serving.placement picks (tiers already holding the checkpoint
first), or on a worker freed by unloading the least recently used idle instance of another
model. An instance idle for keep_alive seconds is unloaded (down to min_instances; a timer,
no polling). A dead worker's requests get 503 error events, its instance is forgotten, and a
fresh worker replaces it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from serving.config import Config, ConfigError, ModelSpec
from serving.deployments import Deployments
from serving.metrics import Metrics
from serving.placement import WorkerView, choose_victim, place
from serving.process import ProcessWorker
from serving.protocol import Event, GenerateRequest, ServingError
from serving.worker import LoadReport, Worker, WorkerDied, WorkerError, WorkerSpec

__all__ = ["Controller"]

log = logging.getLogger("serving.controller")

#: a model whose instance kills its worker this many times in a row stops being retried
MAX_LOAD_DEATHS = 2


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

    def live(self) -> list[_Instance]:
        return [i for i in self.instances if i.state in ("loading", "ready")]


class Controller:
    """Serves deployed models on workers; see the module docstring. Not thread-safe: every
    method runs in the event loop that ran start()."""

    def __init__(self, config: Config, *, worker_factory=ProcessWorker):
        self.config = config
        self.metrics = Metrics()
        self._factory = worker_factory
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
            self._models[spec.name] = _Deployment(spec, version, int(time.time()))
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
            self.metrics.token_interval(name, now - r.last_token)
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
        if r.state == "ended":
            return
        if event.kind in ("done", "error"):
            self._end(r, event)
        else:
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
        for dep in list(self._models.values()):
            self._pump(dep)

    def _scale_up(self, dep: _Deployment) -> bool:
        """Start one instance of dep on a free worker, or on one freed by unloading an
        idle instance of another model; False when there is none."""
        name = dep.spec.name
        views = self._views()
        choice = place(name, views)
        victim = None
        if choice is None:
            index = choose_victim(views, name)
            if index is None:
                log.debug("%s: no free worker and no idle instance to replace", name)
                return False
            victim = self._assigned[index]
            worker = victim.worker
            log.info("%s: unloading idle %s on %s (least recently used) to make room", name,
                     victim.model, worker.name)
            self._retire(victim)
        else:
            worker = self._workers[choice.worker]
            log.info("%s: cold start on %s (expected tier %s); candidates %s", name,
                     worker.name, choice.tier,
                     [(self._workers[i].name, t) for i, t in choice.candidates])
        inst = _Instance(name, worker)
        inst.started = self._loop.time()
        dep.instances.append(inst)
        self._assigned[worker.spec.index] = inst
        self._spawn(self._cold_start(dep, inst, victim))
        return True

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
            self._fail_queue(dep, 503, f"model {name!r} failed to load: {exc}")
            self._pump_all()
            return
        dep.load_deaths = 0
        inst.report = report
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

    def _expire(self, dep: _Deployment, inst: _Instance) -> None:
        inst.timer = None
        dep = self._models.get(inst.model, dep)  # the spec may have been redeployed
        if inst.active or inst.state != "ready":
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

    def _views(self) -> list[WorkerView]:
        views = []
        for w in self._workers:
            inst = self._assigned.get(w.spec.index)
            idle = False
            if inst is not None and inst.state == "ready" and not inst.active:
                dep = self._models.get(inst.model)
                ready = sum(i.state == "ready" for i in dep.instances) if dep else 0
                idle = dep is None or ready > dep.spec.min_instances
            views.append(WorkerView(w.spec.index, w.alive and inst is None, dict(w.tiers),
                                    inst.model if inst is not None else None, idle,
                                    inst.last_used if inst is not None else 0.0))
        return views

    # -- workers -------------------------------------------------------------------------

    def _spec(self, index: int) -> WorkerSpec:
        c = self.config
        return WorkerSpec(index=index, disk_dir=c.worker_dir(index),
                          registry=c.registry_location, dram_bytes=c.dram_per_worker,
                          disk_bytes=c.disk_per_worker, threads=c.threads(), device=c.device)

    async def _start_worker(self, worker: Worker) -> None:
        worker.on_death = self._on_death
        await worker.start()
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

    def _spawn(self, coro) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("controller task failed", exc_info=task.exception())

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


def _free_instance(dep: _Deployment) -> _Instance | None:
    """The ready instance with the fewest requests, if it has room for one more."""
    ready = [i for i in dep.instances if i.state == "ready"
             and len(i.active) < dep.spec.target_concurrency]
    return min(ready, key=lambda i: len(i.active), default=None)

