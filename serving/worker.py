"""The worker contract: what the controller needs from one server (the whole contract, one file).

A worker stands for one inference server (one GPU, or a share of the CPU cores): it holds at
most one model instance at a time, its own checkpoint tiers (DRAM, local disk, then the
registry), and runs an engine that batches the requests of its instance. The controller sees
workers only through this class; serving.process.ProcessWorker implements it with a child
process and a pipe, serving.rayworker.RayWorker with a Ray actor.

    worker = ProcessWorker(spec)
    worker.on_death = controller_callback          # before start
    await worker.start()                           # torch imported, store ready
    report = await worker.load("tiny")             # LoadReport(tier="remote", ...)
    worker.generate("req-1", "tiny", ids, params, emit)   # emit(Event) ... "done"/"error"
    worker.cancel("req-1")
    await worker.unload()
    await worker.stop(grace=5)

Live migration (serving.migration) adds three plain messages, so any transport carries it:
`stage` (a call: build a KV cache for a request from token ids, in rounds), `handover` (the
source ends a request with done "migrated", carrying its ids and sampler state) and `resume`
(the destination continues it from those ids).

Threading: every method is called from the controller's event loop thread, and every callback
(emit, on_death) runs in that thread too; none of them may block. Implementations call
`_event` and `_died` from the loop thread (loop.call_soon_threadsafe when a reader thread
receives them).

Subclasses implement the primitives `_start`, `_call`, `_send`, `_stop` and `_kill` and the
`pid` property; the public methods here check state and arguments, keep the books of running
requests and of the tiers' contents, and turn a death into errors for whoever waits.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from serving.protocol import Event, SamplingParams

__all__ = ["LoadReport", "Worker", "WorkerDied", "WorkerError", "WorkerSpec", "version_of"]

Emit = Callable[[Event], None]


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build its server (plain data: it crosses process boundaries).

    dram_bytes 0: no DRAM tier. registry: the registry's directory or URL (serving.registry),
    the slowest tier; registry_bandwidth: its link's bytes/s for estimates (None: default).
    threads: torch threads (cores // workers). max_batch: the engine's.
    """

    index: int
    disk_dir: str
    registry: str
    dram_bytes: int = 0
    disk_bytes: int = 1 << 40
    threads: int = 1
    device: str = "cpu"
    max_batch: int = 16
    registry_bandwidth: int | None = None


@dataclass(frozen=True)
class LoadReport:
    """How an instance started: the tier that served the checkpoint and the times it took.

    load_seconds: the checkpoint load (ckpt.Store); build_seconds: model and engine after it.
    tiers: every tier's contents after the load (tier name -> model names).
    """

    model: str
    tier: str
    load_seconds: float
    build_seconds: float
    nbytes: int
    tiers: dict[str, list[str]] = field(default_factory=dict)


class WorkerError(Exception):
    """An operation failed inside the worker (the worker itself lives on)."""


class WorkerDied(WorkerError):
    """The worker is gone (crashed, killed or stopped); it serves nothing more."""


class Worker(ABC):
    """One server; see the module docstring for the contract.

    on_death(worker, reason): called once, in the loop thread, when the worker dies without
    being asked to stop (after every running request got its error event). name: for logs.
    """

    def __init__(self, spec: WorkerSpec):
        self.spec = spec
        self.name = f"worker-{spec.index}"
        self.on_death: Callable[[Worker, str], None] | None = None
        self.tiers: dict[str, list[str]] = {}  # last known contents, tier name -> models
        # its tiers' own load estimates (Runtime.estimates), from the ready message
        self.estimates: dict[str, dict] = {}
        self.model: str | None = None  # the loaded instance's model
        self._requests: dict[str, Emit] = {}
        self._staged: set[str] = set()  # ids with a KV cache staged by stage()
        self._state = "new"  # new -> starting -> ready -> stopping -> dead
        self._death: str | None = None

    # -- state ---------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Started and neither stopped nor dead."""
        return self._state == "ready"

    @property
    def death(self) -> str | None:
        """Why the worker died (None while it lives or when it was stopped)."""
        return self._death

    @property
    def running(self) -> list[str]:
        """Ids of the requests it runs now."""
        return list(self._requests)

    @property
    @abstractmethod
    def pid(self) -> int | None:
        """The server's process id (None before start or when not a local process)."""

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the server and wait until it can load models (torch imported, store open).

        REQUIRES: not started before. Raises WorkerDied when it fails to start.
        """
        if self._state != "new":
            raise RuntimeError(f"{self.name}: started twice")
        self._state = "starting"
        try:
            info = await self._start()
        except BaseException:
            self._state = "dead"
            self._kill()
            raise
        if self._state == "starting":
            self.tiers = dict(info.get("tiers", {}))
            self.estimates = dict(info.get("estimates", {}))
            self._state = "ready"
        if self._state != "ready":
            raise WorkerDied(f"{self.name}: died while starting: {self._death}")

    async def stop(self, grace: float = 5.0) -> None:
        """Ask the server to finish and exit; kill it when it has not after grace seconds.

        Running requests are not waited for (the controller drains them first); they get an
        error event. Idempotent; on_death is not called.
        """
        if self._state in ("stopping", "dead"):
            return
        was = self._state
        self._state = "stopping"
        self._fail_requests(503, f"{self.name} stopped")
        if was != "new":
            await self._stop(grace)
        self._state = "dead"

    def kill(self) -> None:
        """Kill the server at once (no on_death callback)."""
        self._state = "dead"
        self._fail_requests(503, f"{self.name} killed")
        self._kill()

    # -- models --------------------------------------------------------------------------

    async def load(self, model: str, version: str | None = None) -> LoadReport:
        """Load model's checkpoint from the fastest tier holding it and start an engine.

        version: the deployment's `version_of` its index; local copies of another version
        are dropped first (a redeploy, or tiers left by an earlier run).
        REQUIRES: alive, no instance loaded. Raises WorkerError when the load fails (the
        worker then holds no instance), WorkerDied when the worker dies meanwhile.
        """
        self._check_alive()
        if self.model is not None:
            raise RuntimeError(f"{self.name}: holds {self.model}; unload it first")
        self.model = model
        try:
            report = await self._call("load", model, version)
        except BaseException:
            self.model = None
            raise
        self.tiers = dict(report.tiers)
        return report

    async def unload(self) -> None:
        """Drop the instance (engine and model); the DRAM tier may keep the checkpoint.

        REQUIRES: alive. Running requests of the instance end with an error event.
        """
        self._check_alive()
        self._fail_requests(503, f"{self.name}: instance of {self.model} unloaded")
        self._staged.clear()
        self.model = None
        self.tiers = dict(await self._call("unload"))

    async def evict(self, model: str, tier: str | None = None) -> None:
        """Drop model's checkpoint from the named tier (None: every local tier)."""
        self._check_alive()
        self.tiers = dict(await self._call("evict", model, tier))

    # -- requests ------------------------------------------------------------------------

    def generate(self, request_id: str, model: str, prompt_ids: list[int],
                 params: SamplingParams, emit: Emit) -> None:
        """Start a request on the loaded instance; emit gets its events, in the loop thread.

        emit is called with "token" events and exactly one "done" or "error" at the end,
        also when the worker dies (status 503, naming the death). REQUIRES: alive, model
        loaded, request_id not running here.
        """
        if self._admit(request_id, model, emit):
            self._send("generate", request_id, model, list(prompt_ids), params)

    def cancel(self, request_id: str) -> None:
        """Stop a request now (its batch slot is freed); no more events reach its emit. A
        cache staged for it is dropped too."""
        running = self._requests.pop(request_id, None) is not None
        staged = request_id in self._staged
        self._staged.discard(request_id)
        if (running or staged) and self.alive:
            self._send("cancel", request_id)

    # -- live migration (serving.migration) ----------------------------------------------

    async def stage(self, request_id: str, model: str, token_ids: list[int]) -> int:
        """Append token_ids to the KV cache staged for request_id (a migration round; the
        first call starts it with the prompt); how many ids are staged now. The batch runs
        on meanwhile. cancel(request_id) drops the cache; resume uses it.

        REQUIRES: alive, model loaded. Raises WorkerError when the ids are refused or the
        prefill fails, WorkerDied when the worker dies first.
        """
        self._check_alive()
        if model != self.model:
            raise WorkerError(f"{self.name}: holds {self.model}, not {model}")
        self._staged.add(request_id)
        return await self._call("stage", request_id, model, list(token_ids))

    def handover(self, request_id: str) -> None:
        """Ask a running request to stop for a migration: at its next token boundary its
        slot is freed and its emit gets done with finish_reason "migrated" (token_ids: every
        id generated; info["generator"]: the sampler's state, bytes or None). A request that
        ends first gets its usual done or error. Ignored when not running here."""
        if request_id in self._requests and self.alive:
            self._send("handover", request_id)

    def resume(self, request_id: str, model: str, prompt_ids: list[int],
               generated_ids: list[int], params: SamplingParams, emit: Emit,
               generator_state: bytes | None = None) -> None:
        """generate, continuing a request that generated generated_ids elsewhere: its first
        token event has index len(generated_ids); a cache staged for request_id is used.
        Same contract as generate otherwise."""
        if not self._admit(request_id, model, emit):
            return
        self._staged.discard(request_id)
        self._send("resume", request_id, model, list(prompt_ids), list(generated_ids), params,
                   generator_state)

    # -- for implementations -------------------------------------------------------------

    def _admit(self, request_id: str, model: str, emit: Emit) -> bool:
        """Book a request that generate or resume starts; False (after a 503 error event)
        when the worker is not running. RuntimeError for a model it does not hold or an id
        already running here."""
        if not self.alive:
            emit(Event("error", status=503, message=f"{self.name} is not running "
                       f"({self._death or self._state})"))
            return False
        if model != self.model:
            raise RuntimeError(f"{self.name}: holds {self.model}, not {model}")
        if request_id in self._requests:
            raise RuntimeError(f"{self.name}: request {request_id} already running")
        self._requests[request_id] = emit
        return True


    def _event(self, request_id: str, event: Event) -> None:
        """Route one event of a request to its emit (drops events of cancelled requests)."""
        emit = self._requests.get(request_id)
        if emit is None:
            return
        if event.kind in ("done", "error"):
            del self._requests[request_id]
        emit(event)

    def _died(self, reason: str) -> None:
        """The server is gone: fail its requests and tell the controller (once)."""
        if self._state in ("dead",):
            return
        stopping = self._state == "stopping"
        self._state = "dead"
        if stopping:
            return
        self._death = reason
        self.model = None
        self._fail_requests(503, f"{self.name} died: {reason}")
        if self.on_death is not None:
            self.on_death(self, reason)

    def _fail_requests(self, status: int, message: str) -> None:
        requests, self._requests = self._requests, {}
        for emit in requests.values():
            emit(Event("error", status=status, message=message))

    def _check_alive(self) -> None:
        if not self.alive:
            raise WorkerDied(f"{self.name} is not running ({self._death or self._state})")

    # -- primitives ----------------------------------------------------------------------

    @abstractmethod
    async def _start(self) -> dict:
        """Start the server; return its ready message ({"pid": ..., "tiers": ...,
        "estimates": ...}: Runtime.tiers() and Runtime.estimates())."""

    @abstractmethod
    async def _call(self, op: str, *args: Any) -> Any:
        """Run op ("load", "unload", "evict", "stage") in the server; its result. "stage"
        must not hold up the server's other messages while the engine computes it.

        Raises WorkerError with the server's message when op failed there, WorkerDied when
        the server dies first.
        """

    @abstractmethod
    def _send(self, op: str, *args: Any) -> None:
        """Send op ("generate", "cancel", "handover", "resume") without waiting; events
        come back via `_event`."""

    @abstractmethod
    async def _stop(self, grace: float) -> None:
        """Stop the server, waiting up to grace seconds before killing it."""

    @abstractmethod
    def _kill(self) -> None:
        """Kill the server now (no-op when it is gone)."""



def version_of(index) -> str:
    """A deployment's version: the digest of its checkpoint index (which holds every
    partition's CRCs and the metadata), the same in every tier that holds a copy."""
    return hashlib.sha256(index.encode()).hexdigest()[:16]
