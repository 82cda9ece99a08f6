"""ProcessWorker: a worker in a child process (multiprocessing spawn), driven through a pipe.

Parent -> child messages: ("call", id, op, args) for load/unload/evict/stage, answered by
("reply", id, ok, result-or-message) ("stage" is answered from the engine's thread once
computed, so the pipe is read on meanwhile); ("generate", request_id, model, ids, params),
("resume", request_id, model, prompt_ids, generated_ids, params, generator_state),
("handover", request_id) and ("cancel", request_id), answered by ("event", request_id,
Event) messages; ("stop",).
The child starts with ("ready", {"pid", "tiers", "estimates"}) or ("failed", message).

The parent reads the pipe in its event loop (loop.add_reader on the connection's file
descriptor): each message is dispatched the moment it arrives, with no thread hop and no
polling. The child runs a serving.runtime.Runtime: its main thread reads commands, the
engine's thread sends events (a lock keeps messages whole). The end of the pipe (EOF) is
the child's death; the exit code says how it died.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import signal
import threading
from concurrent.futures import Future
from typing import Any

from serving.protocol import Event
from serving.worker import Worker, WorkerDied, WorkerError, WorkerSpec

__all__ = ["ProcessWorker"]

log = logging.getLogger("serving.process")

_CALLS = ("load", "unload", "evict", "stage")
#: seconds a child may take to import torch and open its store
START_TIMEOUT = 300.0


class ProcessWorker(Worker):
    """A Worker whose server is a spawned child process (see the module docstring)."""

    def __init__(self, spec: WorkerSpec):
        super().__init__(spec)
        self._proc = None
        self._conn = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count()
        self._calls: dict[int, asyncio.Future] = {}
        self._ready: asyncio.Future | None = None
        self._reaping: asyncio.Task | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- primitives ----------------------------------------------------------------------

    async def _start(self) -> dict:
        self._loop = asyncio.get_running_loop()
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(target=_serve, args=(child, self.spec), daemon=True,
                                 name=f"serving-{self.name}")
        self._proc.start()
        child.close()  # the child holds the only other end: EOF here means it is gone
        self._conn = parent
        self._ready = self._loop.create_future()
        self._loop.add_reader(parent.fileno(), self._readable)
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)
        except TimeoutError:
            raise WorkerDied(f"{self.name}: not ready after {START_TIMEOUT} s") from None

    async def _call(self, op: str, *args: Any) -> Any:
        future = self._loop.create_future()
        call_id = next(self._ids)
        self._calls[call_id] = future
        try:
            self._conn.send(("call", call_id, op, args))
        except OSError as exc:
            self._calls.pop(call_id, None)
            raise WorkerDied(f"{self.name}: {exc}") from exc
        try:
            return await future
        finally:
            self._calls.pop(call_id, None)

    def _send(self, op: str, *args: Any) -> None:
        try:
            self._conn.send((op, *args))
        except OSError:
            pass  # the child is gone: the reader sees EOF and fails its requests

    async def _stop(self, grace: float) -> None:
        if self._conn is not None:
            self._send("stop")
        proc = self._proc
        if proc is not None:
            await asyncio.to_thread(proc.join, max(grace, 0.1))
        self._kill()

    def _kill(self) -> None:
        self._close_pipe()
        proc = self._proc
        if proc is not None and proc.pid is not None and proc.exitcode is None:
            proc.kill()
            proc.join(5)  # SIGKILL: reaped at once

    # -- the reader ----------------------------------------------------------------------

    def _readable(self) -> None:
        conn = self._conn
        try:
            while conn is not None and conn.poll():
                self._dispatch(conn.recv())
                conn = self._conn
        except (EOFError, OSError):
            self._eof()

    def _dispatch(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "event":
            self._event(msg[1], msg[2])
        elif kind == "reply":
            _, call_id, ok, payload = msg
            future = self._calls.get(call_id)
            if future is not None and not future.done():
                if ok:
                    future.set_result(payload)
                else:
                    future.set_exception(WorkerError(f"{self.name}: {payload}"))
        elif kind == "ready":
            if not self._ready.done():
                self._ready.set_result(msg[1])
        elif kind == "failed":
            if not self._ready.done():
                self._ready.set_exception(WorkerDied(f"{self.name} failed to start: {msg[1]}"))

    def _eof(self) -> None:
        self._close_pipe()
        if self._state in ("stopping", "dead"):
            return  # asked to go: _stop reaps it
        if self._reaping is None:
            self._reaping = self._loop.create_task(self._reap())

    async def _reap(self) -> None:
        proc = self._proc
        await asyncio.to_thread(proc.join, 5)  # the pipe closes a moment before the exit
        reason = f"pid {proc.pid} {_exit_text(proc.exitcode)}"
        dead = WorkerDied(f"{self.name} died: {reason}")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(dead)
        for future in list(self._calls.values()):
            if not future.done():
                future.set_exception(dead)
        if self._state not in ("stopping", "dead"):
            log.warning("%s died: %s", self.name, reason)
        self._died(reason)

    def _close_pipe(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(conn.fileno())
        except (OSError, ValueError):
            pass
        conn.close()


def _exit_text(code: int | None) -> str:
    if code is None:
        return "stopped answering (still running)"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


# -- the child --------------------------------------------------------------------------


def _serve(conn, spec: WorkerSpec) -> None:
    """The child's main: build a Runtime, then obey the pipe until "stop" or EOF."""
    # Ctrl-C reaches the whole process group: the controller, not the terminal, stops us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker-{spec.index} "
                        f"%(levelname)s %(name)s: %(message)s")
    lock = threading.Lock()

    def send(msg: tuple) -> None:
        with lock:
            try:
                conn.send(msg)
            except OSError:
                pass  # the controller is gone; the main loop sees EOF and exits

    from serving.runtime import Runtime

    try:
        runtime = Runtime(spec)
    except Exception as exc:  # noqa: BLE001 - reported to the controller, which logs it
        send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    send(("ready", {"pid": os.getpid(), "tiers": runtime.tiers(),
                   "estimates": runtime.estimates()}))
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            op = msg[0]
            if op == "generate":
                _, request_id, model, ids, params = msg
                try:
                    runtime.generate(request_id, model, ids, params,
                                     lambda ev, r=request_id: send(("event", r, ev)))
                except Exception as exc:  # noqa: BLE001
                    send(("event", request_id, Event("error", status=500,
                                                     message=f"{type(exc).__name__}: {exc}")))
            elif op == "resume":
                _, request_id, model, ids, generated, params, state = msg
                try:
                    runtime.resume(request_id, model, ids, generated, params, state,
                                   lambda ev, r=request_id: send(("event", r, ev)))
                except Exception as exc:  # noqa: BLE001
                    send(("event", request_id, Event("error", status=500,
                                                     message=f"{type(exc).__name__}: {exc}")))
            elif op == "cancel":
                runtime.cancel(msg[1])
            elif op == "handover":
                runtime.handover(msg[1])
            elif op == "call":
                _, call_id, name, args = msg
                _answer(send, runtime, call_id, name, args)
            elif op == "stop":
                break
    finally:
        runtime.close()
        conn.close()


def _answer(send, runtime, call_id: int, name: str, args: tuple) -> None:
    """Run one call on the runtime and send its reply; a Future result (stage) is answered
    when the engine thread completes it, so the pipe is read on meanwhile."""
    try:
        if name not in _CALLS:
            raise ValueError(f"no operation {name!r}")
        result = getattr(runtime, "stage_async" if name == "stage" else name)(*args)
    except Exception as exc:  # noqa: BLE001
        send(("reply", call_id, False, f"{type(exc).__name__}: {exc}"))
        return
    if isinstance(result, Future):
        result.add_done_callback(lambda done: _reply(send, call_id, done))
    else:
        send(("reply", call_id, True, result))


def _reply(send, call_id: int, done: Future) -> None:
    exc = done.exception()
    if exc is not None:
        send(("reply", call_id, False, f"{type(exc).__name__}: {exc}"))
    else:
        send(("reply", call_id, True, done.result()))
