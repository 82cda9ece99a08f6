"""Driving one controller.generate() stream for an HTTP request: a task that owns the generator,
a watcher that cancels it when the client disconnects, and the server-sent-events response.

The generator runs from start to end in one task of its own (Run), so whatever cancel scopes or
context managers the controller holds across its yields stay in the task that entered them;
cancelling that task is how a request is cancelled (timeout, disconnect, server bug).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from serving.protocol import Event, ServingError

__all__ = ["CANCELLED", "END", "EventStream", "Run", "sse", "watch_disconnect"]

log = logging.getLogger("serving.api")

END = "end"  # the generator finished after its "done"/"error" event
CANCELLED = "cancelled"  # Run.cancel() (or a disconnect) stopped it
DONE_LINE = b"data: [DONE]\n\n"


class Run:
    """One controller.generate() stream, pumped by a task of its own into a short queue.

    next() returns, in order, the generator's Events, then one outcome: END, CANCELLED, the
    ServingError it raised, or any other exception it raised (a server bug, logged here).
    """

    def __init__(self, events: AsyncIterator[Event]):
        self._events = events
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=8)  # backpressure on slow clients
        self._task = asyncio.get_running_loop().create_task(self._pump())

    async def next(self) -> Event | str | BaseException:
        return await self._queue.get()

    def cancel(self) -> None:
        """Cancel the request now (idempotent; returns before the generator has closed)."""
        self._task.cancel()

    async def close(self) -> None:
        """Cancel if still running and wait until the generator has closed."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _pump(self) -> None:
        outcome: str | BaseException = END
        try:
            async for event in self._events:
                await self._queue.put(event)
        except asyncio.CancelledError:
            outcome = CANCELLED
        except ServingError as exc:
            outcome = exc
        except Exception as exc:
            log.exception("controller.generate failed")
            outcome = exc
        try:
            # a generator left mid-way is closed here, in the task that ran it
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()
            if outcome is not CANCELLED:
                await self._queue.put(outcome)
                return
        except asyncio.CancelledError:  # cancelled again while closing or handing over
            pass
        except Exception as exc:
            log.exception("closing controller.generate failed")
            outcome = exc if outcome is END else outcome
        while self._queue.full():  # nobody may read any more: make room, never block
            self._queue.get_nowait()
        self._queue.put_nowait(CANCELLED if outcome is END else outcome)


async def watch_disconnect(receive: Receive, on_disconnect: Callable[[], None]) -> None:
    """Call on_disconnect once the client has gone (run as a task; cancel it when done)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            on_disconnect()
            return


def sse(data: dict) -> bytes:
    """One server-sent event carrying data as JSON."""
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class EventStream(Response):
    """A text/event-stream response whose body is chunks (ending with [DONE]).

    Unlike Starlette's StreamingResponse under ASGI 2.4, it watches for the client's disconnect
    while it waits for the next chunk, and then calls cancel at once (not at the next write);
    a failed write counts as a disconnect too. cancel is called at the end in any case (so
    a stream that never started still cancels its request); it must be idempotent.
    """

    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncIterator[bytes], cancel: Callable[[], None],
                 headers: dict[str, str] | None = None):
        self._chunks = chunks
        self._cancel = cancel
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                           **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.get_running_loop().create_task(
            watch_disconnect(receive, self._cancel))
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            async for chunk in self._chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away mid-write
            pass
        finally:
            watcher.cancel()
            self._cancel()
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()
