"""RayWorker: a worker as a Ray actor holding one server slot of a node (the Ray backend).

    controller = Controller(config)        # config.backend "ray": RayWorkers(config) makes them

Every node offers server slots as the custom resource "bas_server_slot" (`ray start
--resources '{"bas_server_slot": 1}'`); each worker is one actor that takes one slot and so
stays on that node for life (no restarts: a lost actor is a dead worker, and the controller
starts a replacement, which Ray places on any node with a free slot, waiting until one has).
The actor runs a serving.runtime.Runtime whose disk tier lives on its node, under
STORE/nodes/NODE/slot-K (NODE: the node's name, its IP by default; K: the first slot
directory no other actor there holds), so every node keeps its own tiers; the registry must
be reachable from every node (a shared directory or a URL).

Controller -> actor: every command is one remote call `do(seq, op, args)`; seq numbers put
them back in the order they were sent (an async actor may start calls out of order), and
they run one at a time on one thread, as in the process worker ("stage" runs on a thread of
its own, so it does not hold up the others). Actor -> controller: events travel by long
poll: one `events()` call is always outstanding, and it returns the moment the engine emits
anything, with everything emitted since the last one (one round trip per batch, no polling
interval). That same outstanding call is how death is seen: when the actor's process or its
node dies it fails with RayActorError, and the worker dies through the base's death path
(503 for its requests, on_death for the controller).
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import itertools
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from serving.protocol import Event
from serving.worker import Worker, WorkerDied, WorkerError, WorkerSpec

__all__ = ["SLOT", "RayWorker", "RayWorkers"]

log = logging.getLogger("serving.rayworker")

#: the custom resource of one server slot; a node offers as many as it has servers (GPUs)
SLOT = "bas_server_slot"
#: seconds a new worker waits for a free slot before the wait is logged (it waits on)
SLOT_WAIT_LOG = 10.0

_CALLS = ("load", "unload", "evict", "stage")
_EMITTING = ("generate", "resume")  # their last argument is the emit callback
_SENDS = ("cancel", "handover")


class RayWorkers:
    """The controller's worker factory in Ray mode: `RayWorkers(config)(spec)` is a RayWorker.

    Connects to Ray on the first worker's start (config.address; None starts a Ray instance
    on this machine, bound to 127.0.0.1, with config.workers slots) and checks once that the
    cluster offers config.workers slots. A driver already connected (ray.is_initialized())
    is used as it is. A Ray instance it started is shut down once every worker stopped.
    """

    def __init__(self, config):
        self.address: str | None = config.address
        self.workers: int = config.workers
        self.store = os.path.abspath(config.store)
        self.fixed_threads = config.threads_per_worker is not None
        self._actor_class = None
        self._owns_ray = False  # we started the Ray instance: shut it down with the workers
        self._running: set[RayWorker] = set()  # started, not yet stopped or dead

    def __call__(self, spec: WorkerSpec) -> RayWorker:
        if "://" not in spec.registry:  # the actors' working directory is not ours
            spec = dataclasses.replace(spec, registry=os.path.abspath(spec.registry))
        return RayWorker(spec, self)

    async def actor_class(self):
        """The actor class, once connected (the first call connects)."""
        if self._actor_class is None:
            # in the loop's thread, not a passing one: the processes of a Ray instance started
            # here die with the thread that started them (PR_SET_PDEATHSIG); seconds, once,
            # while the controller starts (before it serves anything)
            self._actor_class = self._connect()
        return self._actor_class

    def _connect(self):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if self.address in (None, "local") and "ray" not in sys.modules:
            # read at Ray's import; without it Ray binds the machine's outward address, not
            # the 127.0.0.1 asked for below (its nodes' processes inherit it too)
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            import ray
        except ImportError as exc:
            raise WorkerDied(f"the Ray backend needs Ray: pip install 'bas[ray]' ({exc})") \
                from None
        if not ray.is_initialized():
            if self.address in (None, "local"):
                ray.init(address="local", resources={SLOT: self.workers},
                         include_dashboard=False, log_to_driver=False,
                         _node_ip_address="127.0.0.1")
                self._owns_ray = True
            else:
                ray.init(address=self.address, log_to_driver=False)
        slots = ray.cluster_resources().get(SLOT, 0)
        if slots < self.workers:
            raise WorkerDied(
                f"the Ray cluster offers {slots:g} server slots (resource {SLOT!r}), fewer than "
                f"workers={self.workers}: start nodes with `ray start --resources "
                f"'{{\"{SLOT}\": 1}}'` or lower workers")
        log.info("Ray cluster: %g server slots, %d nodes", slots,
                 sum(n["Alive"] for n in ray.nodes()))
        return ray.remote(_Server)

    def _release(self, worker: RayWorker, stopped: bool) -> None:
        """worker's actor is gone; once every worker was stopped, a Ray instance started
        here is shut down (in the loop's thread, which started it)."""
        self._running.discard(worker)
        if stopped and self._owns_ray and not self._running:
            import ray

            self._owns_ray = False
            ray.shutdown()


class RayWorker(Worker):
    """A Worker whose server is a Ray actor (see the module docstring). Once started: node
    (the node's id), node_name and actor_pid (the actor's process id on that node)."""

    def __init__(self, spec: WorkerSpec, backend: RayWorkers):
        super().__init__(spec)
        self._backend = backend
        self._actor = None
        self._seq = itertools.count()
        self._reader: asyncio.Task | None = None
        self.node: str | None = None
        self.node_name: str | None = None
        self.actor_pid: int | None = None

    @property
    def pid(self) -> int | None:
        return None  # not a local process: see node and actor_pid

    # -- primitives ----------------------------------------------------------------------

    async def _start(self) -> dict:
        cls = await self._backend.actor_class()  # imports Ray: not before (see _connect)
        import ray

        self._backend._running.add(self)
        try:
            self._actor = cls.options(resources={SLOT: 1}, num_cpus=0, max_restarts=0,
                                      max_task_retries=0).remote(
                self.spec, self._backend.store, self._backend.fixed_threads)
        except Exception as exc:  # noqa: BLE001 - Ray refused: no worker to talk to
            raise WorkerDied(f"{self.name} failed to start: {exc}") from exc
        placed = asyncio.ensure_future(self._actor.where.remote())
        try:
            done, _ = await asyncio.wait({placed}, timeout=SLOT_WAIT_LOG)
            if not done:
                log.warning("%s waits for a free server slot (resource %r) in the Ray "
                            "cluster", self.name, SLOT)
            await placed
            ok, info = await self._actor.ready.remote()  # torch imported, store open
        except ray.exceptions.RayError as exc:
            raise WorkerDied(f"{self.name} failed to start: {_why(exc)}") from None
        finally:
            placed.cancel()
        if not ok:
            raise WorkerDied(f"{self.name} failed to start: {info}")
        self.node, self.node_name, self.actor_pid = info["node"], info["node_name"], info["pid"]
        log.info("%s is an actor on node %s (%s, pid %d); disk tier %s", self.name,
                 self.node_name, self.node[:12], self.actor_pid, info["disk_dir"])
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return info

    async def _call(self, op: str, *args: Any) -> Any:
        import ray

        try:
            ok, payload = await self._actor.do.remote(next(self._seq), op, args)
        except ray.exceptions.RayError as exc:
            raise WorkerDied(f"{self.name} died: {_why(exc)}") from None
        if not ok:
            raise WorkerError(f"{self.name}: {payload}")
        return payload

    def _send(self, op: str, *args: Any) -> None:
        try:
            self._actor.do.remote(next(self._seq), op, args)  # its reply: None, not awaited
        except Exception:  # noqa: BLE001 - a dead actor: the reader fails its requests
            pass

    async def _stop(self, grace: float) -> None:
        import ray

        if self._actor is not None and self._reader is not None:
            try:
                await asyncio.wait_for(self._actor.do.remote(next(self._seq), "close", ()),
                                       max(grace, 0.1))
            except (TimeoutError, ray.exceptions.RayError):
                pass
        self._kill()
        self._backend._release(self, stopped=True)

    def _kill(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
        actor, self._actor = self._actor, None
        if actor is not None:
            import ray

            try:
                ray.kill(actor, no_restart=True)  # frees its slot (also while still pending)
            except Exception as exc:  # noqa: BLE001 - already gone, or Ray shut down
                log.debug("%s: ray.kill: %s", self.name, exc)
        self._backend._release(self, stopped=False)

    # -- the event stream ----------------------------------------------------------------

    async def _read(self) -> None:
        """Long-poll the actor's events until it closes; its failure is the worker's death."""
        import ray

        actor = self._actor
        try:
            while True:
                batch = await actor.events.remote()
                if batch is None:
                    return  # closed by _stop
                for request_id, event in batch:
                    self._event(request_id, event)
        except ray.exceptions.RayError as exc:
            reason = _why(exc)
        if self._state not in ("stopping", "dead"):
            log.warning("%s died: %s", self.name, reason)
        self._reader = None
        self._kill()  # the actor may live on after a failed call: free its slot
        self._died(reason)


def _why(exc: BaseException) -> str:
    """One line from a Ray error: its cause, without the actor ids and tracebacks."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    keep = [ln for ln in lines if ln and not ln.startswith(("class_name:", "actor_id:", "pid:",
                                                           "name:", "namespace:", "ip:"))]
    text = " ".join(k for k in keep if k != "The actor died unexpectedly before finishing "
                    "this task.") or (keep[0] if keep else type(exc).__name__)
    return text if len(text) <= 300 else text[:297] + "..."


# -- the actor --------------------------------------------------------------------------


class _Server:
    """The actor (an asyncio actor: its methods run on Ray's event loop for it): one
    Runtime, commands in seq order on one thread, events buffered for the long poll.
    Created in a moment (where() answers as soon as it has a node and a slot); ready()
    builds the Runtime."""

    def __init__(self, spec: WorkerSpec, store: str, fixed_threads: bool):
        import ray

        logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker-{spec.index} "
                            f"%(levelname)s %(name)s: %(message)s")  # Ray's worker log files
        self._mutex = threading.Lock()
        self._pending: list[tuple[str, Event]] = []  # emitted, not yet fetched
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._held: dict[int, tuple] = {}  # commands that arrived before their turn
        self._next = 0
        self._serial = ThreadPoolExecutor(1, thread_name_prefix="runtime")
        self.runtime = None
        node_id = ray.get_runtime_context().get_node_id()
        node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
        node_name = node.get("NodeName") or node["NodeManagerAddress"]
        slots = max(1, int(node["Resources"].get(SLOT, 1)))
        root = os.path.join(store, "nodes", node_name.replace(os.sep, "_"))
        disk_dir, self._slot_lock = _claim_slot(root)
        threads = spec.threads if fixed_threads else max(1, _cores() // slots)
        self.spec = dataclasses.replace(spec, disk_dir=disk_dir, threads=threads)
        self.info = {"node": node_id, "node_name": node_name, "pid": os.getpid(),
                     "disk_dir": disk_dir}

    async def where(self) -> dict:
        """{"node", "node_name", "pid", "disk_dir"}."""
        return self.info

    async def ready(self) -> tuple[bool, Any]:
        """Build the Runtime (seconds: torch); (True, {"tiers", "estimates", "node", ...})
        or (False, why it failed)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        return await self._loop.run_in_executor(self._serial, self._open)

    def _open(self) -> tuple[bool, Any]:
        try:
            from serving.runtime import Runtime

            self.runtime = Runtime(self.spec)
        except Exception as exc:  # noqa: BLE001 - reported to the controller
            return False, f"{type(exc).__name__}: {exc}"
        return True, {**self.info, "tiers": self.runtime.tiers(),
                      "estimates": self.runtime.estimates()}

    async def do(self, seq: int, op: str, args: tuple) -> tuple[bool, Any] | None:
        """Run command seq once every earlier one started; calls answer (ok, result)."""
        mine = self._loop.create_future()
        self._held[seq] = (op, args, mine)
        while self._next in self._held:
            op_, args_, future = self._held.pop(self._next)
            self._next += 1
            pool = None if op_ == "stage" else self._serial  # stage waits for the engine
            done = self._loop.run_in_executor(pool, self._apply, op_, args_)
            done.add_done_callback(lambda d, f=future: f.set_result(d.result()))
        return await mine

    async def events(self) -> list[tuple[str, Event]] | None:
        """Everything emitted since the last call, as soon as there is anything; None once
        closed."""
        while True:
            with self._mutex:
                if self._pending:
                    batch, self._pending = self._pending, []
                    return batch
                if self._closed:
                    return None
                self._wake.clear()
            await self._wake.wait()

    def _apply(self, op: str, args: tuple) -> tuple[bool, Any] | None:
        try:
            if op in _EMITTING:
                request_id = args[0]
                getattr(self.runtime, op)(*args, lambda ev, r=request_id: self._emit(r, ev))
            elif op in _SENDS:
                getattr(self.runtime, op)(*args)
            elif op in _CALLS:
                return True, getattr(self.runtime, op)(*args)
            elif op == "close":
                self.runtime.close()
                with self._mutex:
                    self._closed = True
                self._loop.call_soon_threadsafe(self._wake.set)
            else:
                raise ValueError(f"no operation {op!r}")
        except Exception as exc:  # noqa: BLE001 - reported to the controller
            message = f"{type(exc).__name__}: {exc}"
            if op in _EMITTING:
                self._emit(args[0], Event("error", status=500, message=message))
            return False, message
        return None

    def _emit(self, request_id: str, event: Event) -> None:
        """From the engine's thread: buffer the event and wake the long poll."""
        with self._mutex:
            self._pending.append((request_id, event))
            first = len(self._pending) == 1
        if first:
            self._loop.call_soon_threadsafe(self._wake.set)


def _claim_slot(root: str) -> tuple[str, int]:
    """The first ROOT/slot-K no live process on this node holds (an flock that the OS
    releases when the holder dies), and the open lock file's descriptor."""
    os.makedirs(root, exist_ok=True)
    for k in itertools.count():
        fd = os.open(os.path.join(root, f"slot-{k}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return os.path.join(root, f"slot-{k}"), fd
    raise AssertionError("unreachable")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
