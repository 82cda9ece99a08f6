"""A real uvicorn server on 127.0.0.1 in a thread, and a scripted controller to put behind it.

ScriptedController follows the controller contract of serving.api.make_app exactly; what its
generate() yields is chosen by the model name (see SCRIPTS), so a test picks a behaviour by
asking for a model. It records every request and which generators were closed before they
finished, so a test can see a disconnect or a timeout reach the controller.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import uvicorn

from serving.api import make_app
from serving.metrics import Metrics
from serving.protocol import Event, GenerateRequest, ServingError

__all__ = ["ScriptedController", "Server", "raw", "serve"]


def _echo(req: GenerateRequest) -> list:
    """The prompt's words back as tokens (the last message's, for chat), then done."""
    text = req.prompt if req.prompt is not None else req.messages[-1]["content"]
    words = text.split()[: req.params.max_tokens]
    tokens = [Event("token", text=w + " ", token_ids=(i,)) for i, w in enumerate(words)]
    reason = "length" if len(words) == req.params.max_tokens else "stop"
    return tokens + [Event("done", finish_reason=reason, prompt_tokens=len(text.split()),
                           completion_tokens=len(words))]


SCRIPTS = {
    "echo": _echo,
    "cold": lambda req: [Event("wait", info={"reason": "cold start"}), 0.05,
                         Event("wait", info={"reason": "loading\nfrom disk"}),
                         Event("token", text="hi"), Event("token", text=""),
                         Event("token", text=" there"),
                         Event("done", finish_reason="stop", prompt_tokens=3,
                               completion_tokens=2)],
    "busy": lambda req: [ServingError(429, "queue full", retry_after=2.5)],
    "gone": lambda req: [ServingError(503, "no worker is alive")],
    "fail-first": lambda req: [Event("error", status=503, message="worker died",
                                     retry_after=1)],
    "fail-later": lambda req: [Event("token", text="partial"),
                               Event("error", status=503, message="worker died")],
    "bug": lambda req: [Event("token", text="x"), RuntimeError("a bug in the controller")],
    "bug-first": lambda req: [RuntimeError("a bug in the controller")],
    "no-done": lambda req: [Event("token", text="x")],
    "hang": lambda req: [Event("token", text="first"), 3600.0],
    "hang-first": lambda req: [3600.0],
}


class ScriptedController:
    """The controller contract of serving.api, with scripted generate() behaviours."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self._accepting = True
        self.requests: list[GenerateRequest] = []
        self.closed: list[str] = []  # request ids whose generator ended before its script did
        self.closed_event = threading.Event()
        self.deployments: dict[str, dict] = {
            name: {"name": name, "path": f"/models/{name}", "instances": 0}
            for name in SCRIPTS}

    @property
    def accepting(self) -> bool:
        return self._accepting

    def models(self) -> list[dict]:
        return [{"id": n, "object": "model", "created": 0, "owned_by": "bas",
                 "max_tokens": 64} for n in self.deployments]

    async def generate(self, req: GenerateRequest):
        self.requests.append(req)
        if req.model not in self.deployments:
            raise ServingError(404, f"no model {req.model!r}")
        finished = False
        try:
            for step in SCRIPTS[req.model](req):
                if isinstance(step, BaseException):
                    raise step
                if isinstance(step, float):
                    await asyncio.sleep(step)
                    continue
                yield step
            finished = True
        finally:
            if not finished:
                self.closed.append(req.request_id)
                self.closed_event.set()

    async def deploy(self, name: str, path: str, **spec) -> dict:
        if name == "conflict":
            raise ServingError(409, "a deployment named conflict exists")
        self.deployments[name] = {"name": name, "path": path, "instances": 0, **spec}
        return self.deployments[name]

    async def delete(self, name: str) -> None:
        if name not in self.deployments:
            raise ServingError(404, f"no deployment named {name!r}")
        del self.deployments[name]

    def status(self) -> dict:
        return {"accepting": self._accepting, "deployments": list(self.deployments.values())}

    async def start(self) -> None:
        pass

    async def stop(self, grace: float) -> None:
        self._accepting = False


class Server:
    """A uvicorn server in a thread; url is http://127.0.0.1:PORT."""

    def __init__(self, app) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                lifespan="off", ws="none", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> Server:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(30)


@contextmanager
def serve(controller=None, **config) -> Iterator[SimpleNamespace]:
    """A server around make_app(controller, SimpleNamespace(**config))."""
    controller = controller or ScriptedController()
    app = make_app(controller, SimpleNamespace(**config))
    with Server(app) as server:
        yield SimpleNamespace(url=server.url, port=server.port, controller=controller,
                              app=app)


def raw(port: int, method: str, path: str, body: bytes | dict | None = None,
        headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, bytes]:
    """One HTTP request with http.client: (status, headers with lower-case names, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()
